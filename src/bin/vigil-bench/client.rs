//! The load engine of `vigil-bench`: blocking HTTP/1.1 keep-alive connections, one OS thread each.
//!
//! Every exchange ends in one [`Outcome`]: a complete response (status, whether the server asked to
//! close), or one of the failures the server must never cause and that the report keeps apart:
//! an *empty reply* (the connection closed before a single response byte, curl's
//! `(52) Empty reply from server`), a *reset* (ECONNRESET / EPIPE / ECONNABORTED before any response
//! byte), a *truncated* response (the connection ended partway through one), a client-side
//! timeout, or another I/O error. After any failure the worker reconnects and goes on.
//!
//! This file is also compiled into `benches/compare.rs` (with `#[path]`), so both drive servers
//! the same way.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Where requests go: a loopback address, and the `Host` header and path to send.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parses `http://HOST:PORT/PATH` (or `HOST:PORT[/PATH]`) and refuses anything that does not
    /// resolve to loopback only: this tool is for measuring a server on this machine.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!("{url}: https is not supported (plain HTTP/1.1 only)"));
        } else if url.contains("://") {
            return Err(format!("{url}: only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else if authority.starts_with('[') && authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            return Err(format!("{url}: bad port"));
        };
        let addrs: Vec<SocketAddr> =
            with_port.to_socket_addrs().map_err(|e| format!("{url}: cannot resolve {authority}: {e}"))?.collect();
        let Some(&addr) = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) else {
            return Err(format!("{url}: {authority} resolves to no address"));
        };
        if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
            return Err(format!(
                "{url}: {authority} resolves to {}, which is not a loopback address; vigil-bench only loads servers on this machine (127.0.0.0/8 or ::1)",
                bad.ip()
            ));
        }
        Ok(Target { addr, host: authority.to_string(), path: path.to_string() })
    }

    /// The same server, another path (`/block?ms=20`).
    pub fn with_path(&self, path: &str) -> Target {
        Target { path: path.to_string(), ..self.clone() }
    }

    /// A keep-alive GET for this target.
    pub fn get_request(&self) -> Vec<u8> {
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host).into_bytes()
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// How one request/response exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response; `close`: the server said it closes the connection after it.
    Response { status: u16, close: bool },
    /// The connection ended before any response byte (curl's "Empty reply from server").
    Empty,
    /// The connection was reset (or the write hit a closed socket) before any response byte.
    Reset,
    /// The connection ended (EOF or reset) partway through a response.
    Truncated,
    /// No complete response within the client timeout.
    Timeout,
    /// Any other I/O error (or an unparsable response).
    Error,
}

/// Counters and a latency histogram for one class of requests.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of complete responses (any status), in microseconds.
    pub latency_us: Histogram<u64>,
    /// Latency of `504` responses only (for time-to-504), in microseconds.
    pub latency_504_us: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub empty_replies: u64,
    pub resets: u64,
    pub truncated: u64,
    pub timeouts: u64,
    pub other_errors: u64,
    pub connect_errors: u64,
    /// Connections opened (the first one per worker, and every reconnect).
    pub connects: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            // 1 µs .. 10 min, 3 significant digits.
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            latency_504_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
            statuses: BTreeMap::new(),
            empty_replies: 0,
            resets: 0,
            truncated: 0,
            timeouts: 0,
            other_errors: 0,
            connect_errors: 0,
            connects: 0,
        }
    }
}

impl Stats {
    /// Counts one outcome; `latency` is recorded for complete responses.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Response { status, .. } => {
                *self.statuses.entry(status).or_insert(0) += 1;
                let us = (latency.as_micros() as u64).clamp(1, 600_000_000);
                let _ = self.latency_us.record(us);
                if status == 504 {
                    let _ = self.latency_504_us.record(us);
                }
            }
            Outcome::Empty => self.empty_replies += 1,
            Outcome::Reset => self.resets += 1,
            Outcome::Truncated => self.truncated += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Error => self.other_errors += 1,
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        let _ = self.latency_us.add(&o.latency_us);
        let _ = self.latency_504_us.add(&o.latency_504_us);
        for (s, n) in &o.statuses {
            *self.statuses.entry(*s).or_insert(0) += n;
        }
        self.empty_replies += o.empty_replies;
        self.resets += o.resets;
        self.truncated += o.truncated;
        self.timeouts += o.timeouts;
        self.other_errors += o.other_errors;
        self.connect_errors += o.connect_errors;
        self.connects += o.connects;
    }

    /// Complete responses, whatever their status.
    pub fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Responses with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.statuses.range(200..300).map(|(_, n)| n).sum()
    }

    /// Exchanges that did not end in a complete response.
    pub fn failures(&self) -> u64 {
        self.empty_replies + self.resets + self.truncated + self.timeouts + self.other_errors
    }

    /// Latency percentile in milliseconds (0 without samples).
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            0.0
        } else {
            self.latency_us.value_at_quantile(q) as f64 / 1000.0
        }
    }

    /// The stats as JSON; `elapsed` zero: no rate (the requests were not a timed load).
    pub fn json(&self, elapsed: Duration) -> serde_json::Value {
        let h = &self.latency_us;
        let rate = (!elapsed.is_zero()).then(|| self.responses() as f64 / elapsed.as_secs_f64());
        let statuses: serde_json::Map<String, serde_json::Value> =
            self.statuses.iter().map(|(s, n)| (s.to_string(), (*n).into())).collect();
        serde_json::json!({
            "requests": self.responses(),
            "requests_per_sec": rate,
            "ok_per_sec": (!elapsed.is_zero()).then(|| self.ok() as f64 / elapsed.as_secs_f64()),
            "ok": self.ok(),
            "statuses": statuses,
            "empty_replies": self.empty_replies,
            "resets": self.resets,
            "truncated": self.truncated,
            "timeouts": self.timeouts,
            "other_errors": self.other_errors,
            "connect_errors": self.connect_errors,
            "connects": self.connects,
            "latency_ms": {
                "mean": if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                "p50": self.pct_ms(0.50),
                "p90": self.pct_ms(0.90),
                "p99": self.pct_ms(0.99),
                "p99_9": self.pct_ms(0.999),
                "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
            },
        })
    }

    /// A human-readable block: rate (unless `elapsed` is zero), latency, statuses, failures.
    pub fn text(&self, label: &str, elapsed: Duration) -> String {
        let h = &self.latency_us;
        let mut out = if elapsed.is_zero() {
            format!("{label}: {} responses\n", self.responses())
        } else {
            format!(
                "{label}: {} responses in {:.2}s = {:.0} req/s ({:.0} 2xx/s)\n",
                self.responses(),
                elapsed.as_secs_f64(),
                self.responses() as f64 / elapsed.as_secs_f64(),
                self.ok() as f64 / elapsed.as_secs_f64()
            )
        };
        if !h.is_empty() {
            out += &format!(
                "  latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
                h.mean() / 1000.0,
                self.pct_ms(0.5),
                self.pct_ms(0.9),
                self.pct_ms(0.99),
                self.pct_ms(0.999),
                h.max() as f64 / 1000.0
            );
        }
        let st: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        out += &format!("  statuses: {}\n", if st.is_empty() { "none".into() } else { st.join(", ") });
        out += &format!(
            "  empty replies: {}  resets: {}  truncated: {}  timeouts: {}  other errors: {}  connect errors: {}  connections opened: {}\n",
            self.empty_replies, self.resets, self.truncated, self.timeouts, self.other_errors, self.connect_errors, self.connects
        );
        out
    }
}

/// One client connection with its read buffer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (with `TCP_NODELAY`) and sets the client timeout on reads and writes.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { stream, buf: Vec::with_capacity(16 * 1024) })
    }

    /// Sends `req` and reads one response. `head_only`: the request was a HEAD (no body follows).
    pub fn exchange(&mut self, req: &[u8], head_only: bool) -> Outcome {
        if let Err(e) = self.stream.write_all(req) {
            return classify(&e, 0);
        }
        self.read_response(head_only)
    }

    /// Reads one complete response (skipping 1xx interim responses).
    pub fn read_response(&mut self, head_only: bool) -> Outcome {
        self.buf.clear();
        let mut got = 0usize; // response bytes seen in total, for empty vs truncated
        loop {
            // Parse what we have.
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let mut length = None;
                        let mut chunked = false;
                        let mut close = resp.version == Some(0);
                        for h in resp.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                                if v.contains("close") {
                                    close = true;
                                } else if v.contains("keep-alive") {
                                    close = false;
                                }
                            }
                        }
                        Some((n, status, length, chunked, close))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => return Outcome::Error,
                }
            };
            if let Some((n, status, length, chunked, close)) = parsed {
                if (100..200).contains(&status) {
                    self.buf.drain(..n);
                    continue;
                }
                let no_body = head_only || status == 204 || status == 304;
                let body = if no_body {
                    Ok(())
                } else if chunked {
                    self.read_chunked(n, &mut got)
                } else if let Some(len) = length {
                    self.read_exact_body(n, len, &mut got)
                } else {
                    // Delimited by the end of the connection.
                    self.read_to_eof(&mut got)
                };
                return match body {
                    Ok(()) => Outcome::Response { status, close: close || (!no_body && !chunked && length.is_none()) },
                    Err(o) => o,
                };
            }
            match self.fill(&mut got) {
                Ok(()) => {}
                Err(o) => return o,
            }
        }
    }

    /// Reads more bytes into the buffer; an EOF or error becomes the matching outcome.
    fn fill(&mut self, got: &mut usize) -> Result<(), Outcome> {
        let old = self.buf.len();
        if self.buf.capacity() - old < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let cap = self.buf.capacity();
        self.buf.resize(cap, 0);
        let r = self.stream.read(&mut self.buf[old..]);
        match r {
            Ok(0) => {
                self.buf.truncate(old);
                Err(if *got == 0 { Outcome::Empty } else { Outcome::Truncated })
            }
            Ok(k) => {
                self.buf.truncate(old + k);
                *got += k;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(classify(&e, *got))
            }
        }
    }

    fn read_exact_body(&mut self, head: usize, len: usize, got: &mut usize) -> Result<(), Outcome> {
        while self.buf.len() < head + len {
            self.fill(got)?;
        }
        self.buf.drain(..head + len);
        Ok(())
    }

    fn read_to_eof(&mut self, got: &mut usize) -> Result<(), Outcome> {
        loop {
            match self.fill(got) {
                Ok(()) => {}
                Err(Outcome::Truncated) => return Ok(()),
                Err(o) => return Err(o),
            }
        }
    }

    /// Skips a chunked body (chunk sizes, data, trailers) starting at `pos`.
    fn read_chunked(&mut self, mut pos: usize, got: &mut usize) -> Result<(), Outcome> {
        loop {
            // A chunk-size line.
            let line_end = loop {
                if let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                self.fill(got)?;
            };
            let line = &self.buf[pos..line_end];
            let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or(Outcome::Error)?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                            break pos + i;
                        }
                        self.fill(got)?;
                    };
                    let empty = end == pos;
                    pos = end + 2;
                    if empty {
                        self.buf.drain(..pos);
                        return Ok(());
                    }
                }
            }
            while self.buf.len() < pos + size + 2 {
                self.fill(got)?;
            }
            pos += size + 2;
        }
    }
}

/// Maps an I/O error to an outcome; `got` response bytes had arrived before it.
pub fn classify(e: &io::Error, got: usize) -> Outcome {
    use io::ErrorKind::*;
    match e.kind() {
        WouldBlock | TimedOut => Outcome::Timeout,
        ConnectionReset | ConnectionAborted | BrokenPipe if got == 0 => Outcome::Reset,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Outcome::Truncated,
        _ => Outcome::Error,
    }
}

/// One kind of request in a load: the bytes to send.
#[derive(Clone, Debug)]
pub struct RequestClass {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A closed-loop load: `connections` workers, each sending its next request as soon as the
/// previous answer arrived, until `duration` is over or `max_requests` have been sent.
#[derive(Clone, Debug)]
pub struct Load {
    pub connections: usize,
    pub duration: Duration,
    /// Run this long first without recording (connections stay open).
    pub warmup: Duration,
    pub max_requests: Option<u64>,
    /// Client-side timeout for connecting and for each read/write.
    pub timeout: Duration,
}

/// What a load measured: per-class stats and the length of the measured window.
#[derive(Debug)]
pub struct LoadResult {
    pub classes: Vec<(String, Stats)>,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn total(&self) -> Stats {
        let mut t = Stats::default();
        for (_, s) in &self.classes {
            t.merge(s);
        }
        t
    }

    /// 2xx responses per second (a 503 "queue full" is fast, but not served).
    pub fn ok_rps(&self) -> f64 {
        self.total().ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `load` against `addr`. `pick(connection, n)` chooses the class (index into `classes`) of
/// the `n`-th request of a connection. `stop` ends the run early when set.
pub fn run<F>(addr: SocketAddr, load: &Load, classes: &[RequestClass], pick: F, stop: &AtomicBool) -> LoadResult
where
    F: Fn(usize, u64) -> usize + Sync,
{
    let connections = load.connections.max(1);
    let barrier = Barrier::new(connections + 1);
    let sent = AtomicU64::new(0);
    let start_cell = std::sync::OnceLock::<Instant>::new();
    let results: Vec<(Vec<Stats>, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|ci| {
                let (barrier, sent, pick, start_cell) = (&barrier, &sent, &pick, &start_cell);
                std::thread::Builder::new()
                    .name(format!("bench-conn-{ci}"))
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let mut stats: Vec<Stats> = classes.iter().map(|_| Stats::default()).collect();
                        let mut conn = Conn::connect(addr, load.timeout).ok();
                        let first_connect_ok = conn.is_some();
                        barrier.wait();
                        let t_start = *start_cell.get().expect("start set before the barrier");
                        let record_from = t_start + load.warmup;
                        let deadline = record_from + load.duration;
                        let first = pick(ci, 0).min(classes.len() - 1);
                        if first_connect_ok {
                            stats[first].connects += 1;
                        } else {
                            stats[first].connect_errors += 1;
                        }
                        let mut n: u64 = 0;
                        loop {
                            if stop.load(Relaxed) {
                                break;
                            }
                            let t0 = Instant::now();
                            if t0 >= deadline {
                                break;
                            }
                            let recording = t0 >= record_from;
                            if recording {
                                if let Some(max) = load.max_requests {
                                    if sent.fetch_add(1, Relaxed) >= max {
                                        break;
                                    }
                                }
                            }
                            let class = pick(ci, n).min(classes.len() - 1);
                            n += 1;
                            let c = match conn.as_mut() {
                                Some(c) => c,
                                None => match Conn::connect(addr, load.timeout) {
                                    Ok(c) => {
                                        stats[class].connects += 1;
                                        conn.insert(c)
                                    }
                                    Err(_) => {
                                        stats[class].connect_errors += 1;
                                        std::thread::sleep(Duration::from_millis(10));
                                        continue;
                                    }
                                },
                            };
                            let t0 = Instant::now();
                            let outcome = c.exchange(&classes[class].bytes, false);
                            let lat = t0.elapsed();
                            if recording {
                                stats[class].record(outcome, lat);
                            }
                            if !matches!(outcome, Outcome::Response { close: false, .. }) {
                                conn = None;
                            }
                        }
                        (stats, Instant::now())
                    })
                    .expect("spawn load thread")
            })
            .collect();
        let _ = start_cell.set(Instant::now());
        barrier.wait();
        handles.into_iter().map(|h| h.join().expect("load thread panicked")).collect()
    });
    let start = *start_cell.get().expect("start");
    let end = results.iter().map(|(_, t)| *t).max().unwrap_or(start);
    let mut merged: Vec<Stats> = classes.iter().map(|_| Stats::default()).collect();
    for (stats, _) in &results {
        for (m, s) in merged.iter_mut().zip(stats) {
            m.merge(s);
        }
    }
    LoadResult {
        classes: classes.iter().map(|c| c.name.clone()).zip(merged).collect(),
        elapsed: end.saturating_duration_since(start + load.warmup),
    }
}

/// Runs a single-class load (`plaintext`, `blocking`).
pub fn run_simple(target: &Target, load: &Load) -> LoadResult {
    let class = RequestClass { name: target.path.clone(), bytes: target.get_request() };
    run(target.addr, load, &[class], |_, _| 0, &Arc::new(AtomicBool::new(false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn targets_must_be_loopback() {
        let t = Target::parse("http://127.0.0.1:8080/block?ms=20").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str(), t.host.as_str()), (8080, "/block?ms=20", "127.0.0.1:8080"));
        assert_eq!(Target::parse("127.0.0.1:9").unwrap().path, "/");
        assert!(Target::parse("http://[::1]:8080/").unwrap().addr.ip().is_loopback());
        let err = Target::parse("http://192.0.2.1:80/").unwrap_err();
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(Target::parse("http://0.0.0.0:80/").is_err());
        assert!(Target::parse("https://127.0.0.1/").unwrap_err().contains("https"));
    }

    /// A one-shot server: reads one request head, writes `reply`, then closes (or resets).
    fn server(reply: &'static [u8], reset: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut b = [0u8; 256];
            while !buf.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let _ = s.write_all(reply);
            if reset {
                // SO_LINGER 0: close sends RST instead of FIN.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
        });
        addr
    }

    fn one(reply: &'static [u8], reset: bool) -> Outcome {
        let addr = server(reply, reset);
        let mut c = Conn::connect(addr, Duration::from_secs(5)).unwrap();
        c.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false)
    }

    #[test]
    fn a_close_before_any_byte_is_an_empty_reply() {
        assert_eq!(one(b"", false), Outcome::Empty);
    }

    #[cfg(unix)]
    #[test]
    fn a_reset_before_any_byte_is_a_reset() {
        assert_eq!(one(b"", true), Outcome::Reset);
    }

    #[test]
    fn a_close_inside_a_response_is_a_truncation() {
        assert_eq!(one(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", false), Outcome::Truncated);
    }

    #[test]
    fn complete_responses_report_status_and_close() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(one(ok, false), Outcome::Response { status: 200, close: false });
        let chunked = b"HTTP/1.1 504 Gateway Timeout\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(one(chunked, false), Outcome::Response { status: 504, close: true });
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(one(interim, false), Outcome::Response { status: 204, close: false });
        let until_eof = b"HTTP/1.0 200 OK\r\n\r\nbody until the end";
        assert_eq!(one(until_eof, false), Outcome::Response { status: 200, close: true });
    }

    #[test]
    fn stats_keep_failures_apart_from_statuses() {
        let mut s = Stats::default();
        s.record(Outcome::Response { status: 200, close: false }, Duration::from_millis(2));
        s.record(Outcome::Response { status: 504, close: false }, Duration::from_millis(1010));
        s.record(Outcome::Empty, Duration::ZERO);
        s.record(Outcome::Reset, Duration::ZERO);
        assert_eq!((s.responses(), s.ok(), s.failures()), (2, 1, 2));
        assert_eq!((s.empty_replies, s.resets), (1, 1));
        assert_eq!(s.latency_504_us.len(), 1);
        assert!((s.pct_ms(1.0) - 1010.0).abs() < 2.0);
    }
}
