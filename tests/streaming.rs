//! Streaming response bodies (`Response::from_reader`, `Response::from_chunks`) and the write
//! path: bodies are written from the response, chunked or with their length, produced on the
//! worker at the client's pace, cut off at the deadline, never read for HEAD or a bodiless
//! status; pipelined answers keep their order around a stream.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, demo_server, get, metric, raw, settings, start, wait_for, wait_write_stalled};
use vigil::{App, Ctx, Request, Response, RouteOptions};

/// What a client made of one response read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended as its framing said (last chunk, or `Content-Length` bytes); `false`
    /// when the connection closed first.
    complete: bool,
}

impl Wire {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response, whatever its framing (length, chunked, until close); a truncated body
/// is reported as incomplete rather than as an error.
fn read_wire(r: &mut BufReader<TcpStream>, head_only: bool) -> io::Result<Wire> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut w = Wire { status, headers, body: Vec::new(), complete: true };
    if head_only || status == 204 || status == 304 {
        return Ok(w);
    }
    if let Some(n) = w.header("content-length").map(|v| v.parse::<usize>().unwrap()) {
        let mut body = vec![0; n];
        let mut got = 0;
        while got < n {
            match r.read(&mut body[got..])? {
                0 => break,
                k => got += k,
            }
        }
        body.truncate(got);
        w.complete = got == n;
        w.body = body;
    } else if w.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        w.complete = false;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || !line.ends_with("\r\n") {
                break;
            }
            let size = usize::from_str_radix(line.trim_end(), 16).expect("chunk size");
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                w.complete = line == "\r\n";
                break;
            }
            let mut chunk = vec![0; size + 2];
            if r.read_exact(&mut chunk).is_err() {
                break;
            }
            assert!(chunk.ends_with(b"\r\n"), "chunk not followed by CRLF");
            w.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut w.body)?;
    }
    Ok(w)
}

fn send(addr: SocketAddr, request: &str) -> BufReader<TcpStream> {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    BufReader::new(s)
}

fn fetch(addr: SocketAddr, request: &str) -> Wire {
    let head_only = request.starts_with("HEAD");
    read_wire(&mut send(addr, request), head_only).unwrap()
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

/// A reader of `n` bytes (`i % 251` at offset i) that records how much has been read, whether
/// `read` was ever called and whether it was dropped.
struct Probe {
    n: u64,
    pos: u64,
    read: Arc<AtomicU64>,
    touched: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

#[derive(Clone, Default)]
struct ProbeState {
    read: Arc<AtomicU64>,
    touched: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
}

impl ProbeState {
    fn reader(&self, n: u64) -> Probe {
        Probe {
            n,
            pos: 0,
            read: Arc::clone(&self.read),
            touched: Arc::clone(&self.touched),
            dropped: Arc::clone(&self.dropped),
        }
    }
}

impl Read for Probe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.touched.store(true, SeqCst);
        let k = (buf.len() as u64).min(self.n - self.pos) as usize;
        for (i, b) in buf[..k].iter_mut().enumerate() {
            *b = ((self.pos + i as u64) % 251) as u8;
        }
        self.pos += k as u64;
        self.read.fetch_add(k as u64, SeqCst);
        Ok(k)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.store(true, SeqCst);
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_reader_body_is_sent_chunked_or_with_the_length_given() {
    let app = App::new()
        .get("/chunked", |_: &Request, _: &Ctx| Response::from_reader(io::Cursor::new(pattern(300_000))))
        .get("/sized", |_: &Request, _: &Ctx| {
            Response::from_reader(io::Cursor::new(pattern(300_000))).with_length(300_000).with_status(201)
        })
        .get("/rows", |_: &Request, _: &Ctx| {
            Response::from_chunks((0..5).map(|i| Ok::<_, io::Error>(format!("row {i}\n"))))
                .with_header("Content-Type", "text/plain")
        });
    let srv = start(settings(), app);
    let chunked = fetch(srv.local_addr(), &get_req("/chunked"));
    assert_eq!((chunked.status, chunked.header("transfer-encoding")), (200, Some("chunked")), "{:?}", chunked.headers);
    assert_eq!(chunked.header("content-length"), None);
    assert!(chunked.complete && chunked.body == pattern(300_000));
    let sized = fetch(srv.local_addr(), &get_req("/sized"));
    assert_eq!((sized.status, sized.header("content-length")), (201, Some("300000")));
    assert_eq!(sized.header("transfer-encoding"), None);
    assert!(sized.complete && sized.body == pattern(300_000));
    let rows = fetch(srv.local_addr(), &get_req("/rows"));
    assert_eq!(rows.header("content-type"), Some("text/plain"));
    assert_eq!(String::from_utf8(rows.body).unwrap(), "row 0\nrow 1\nrow 2\nrow 3\nrow 4\n");
    // The connection stays usable after a chunked body.
    let mut c = send(srv.local_addr(), "GET /rows HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(read_wire(&mut c, false).unwrap().complete);
    c.get_mut().write_all(get_req("/sized").as_bytes()).unwrap();
    assert_eq!(read_wire(&mut c, false).unwrap().body.len(), 300_000);
    srv.stop();
}

#[test]
fn head_and_bodiless_statuses_never_read_the_producer_and_drop_it_on_the_worker() {
    let head = ProbeState::default();
    let no_content = ProbeState::default();
    let (h, nc) = (head.clone(), no_content.clone());
    let app = App::new()
        .get("/file", move |_: &Request, _: &Ctx| Response::from_reader(h.reader(1000)).with_length(1000))
        .get("/open", |_: &Request, _: &Ctx| Response::from_reader(io::repeat(b'x')))
        .get("/none", move |_: &Request, _: &Ctx| Response::from_reader(nc.reader(1000)).with_status(204));
    let srv = start(settings(), app);
    let r = fetch(srv.local_addr(), "HEAD /file HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("1000")), "HEAD says what GET would send");
    let r = fetch(srv.local_addr(), "HEAD /open HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{:?}", r.headers);
    assert!(wait_for(Duration::from_secs(5), || head.dropped.load(SeqCst)), "the producer was never dropped");
    assert!(!head.touched.load(SeqCst), "a HEAD request read the body");
    // A HEAD answer carries no body: the next answer on the connection is framed right.
    let mut c = send(srv.local_addr(), "HEAD /file HTTP/1.1\r\nHost: t\r\n\r\nGET /none HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_wire(&mut c, true).unwrap().status, 200);
    let r = read_wire(&mut c, false).unwrap();
    assert_eq!((r.status, r.header("content-length"), r.header("transfer-encoding")), (204, None, None));
    assert!(wait_for(Duration::from_secs(5), || no_content.dropped.load(SeqCst)));
    assert!(!no_content.touched.load(SeqCst), "a 204's body was read");
    srv.stop();
}

#[test]
fn an_http10_client_gets_a_stream_delimited_by_the_close() {
    let srv = demo_server(settings());
    let mut c = send(srv.local_addr(), "GET /stream?n=100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = read_wire(&mut c, false).unwrap();
    assert_eq!((r.status, r.header("transfer-encoding"), r.header("content-length")), (200, None, None));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
    srv.stop();
}

#[test]
fn pipelined_answers_keep_their_order_around_bodies_and_streams() {
    let srv = demo_server(settings());
    let mut c = send(
        srv.local_addr(),
        "GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /stream?n=70000 HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /bytes?n=5 HTTP/1.1\r\nHost: t\r\n\r\nGET /bytes?n=200000 HTTP/1.1\r\nHost: t\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    let a = read_wire(&mut c, false).unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
    let b = read_wire(&mut c, false).unwrap();
    assert!(b.complete && b.body.len() == 70_000, "{:?}", b.headers);
    assert_eq!(read_wire(&mut c, false).unwrap().status, 404);
    let d = read_wire(&mut c, true).unwrap();
    assert_eq!(d.header("content-length"), Some("5"));
    assert_eq!(read_wire(&mut c, false).unwrap().body.len(), 200_000);
    let f = read_wire(&mut c, false).unwrap();
    assert_eq!(f.body, b"abc");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the last answer: {:?}", String::from_utf8_lossy(&rest));
    srv.stop();
}

#[test]
fn a_slow_client_holds_the_producer_back_and_then_gets_the_whole_body() {
    const N: u64 = 200 << 20;
    let state = ProbeState::default();
    let st = state.clone();
    let app = App::new().get("/big", move |_: &Request, _: &Ctx| Response::from_reader(st.reader(N)).with_length(N));
    let srv = start(settings(), app);
    let mut c = send(srv.local_addr(), &get_req("/big"));
    // Not reading: the socket buffers fill, then the pipe, then the producer waits.
    wait_write_stalled(c.get_ref(), Duration::from_secs(20));
    // The producer stops too: what it made no longer grows (polled 300 ms apart).
    let mut last = u64::MAX;
    assert!(
        wait_for(Duration::from_secs(20), || {
            let now = state.read.load(SeqCst);
            let steady = now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(300));
            steady
        }),
        "the producer went on while the client did not read"
    );
    let produced = state.read.load(SeqCst);
    assert!(produced < 64 << 20, "{produced} bytes produced for a client that read nothing");
    // Reading it all: the producer resumes and the body is complete.
    let r = read_wire(&mut c, false).unwrap();
    assert!(r.complete && r.body.len() as u64 == N);
    assert!(r.body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "the body is corrupt");
    assert!(wait_for(Duration::from_secs(5), || state.dropped.load(SeqCst)));
    srv.stop();
}

#[test]
fn a_client_that_stops_reading_a_stream_is_dropped_at_the_write_timeout_and_frees_the_worker() {
    let state = ProbeState::default();
    let st = state.clone();
    let app = App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello"))
        .get("/endless", move |_: &Request, _: &Ctx| Response::from_reader(st.reader(u64::MAX)));
    let srv = start(settings().threads(1).write_timeout(Duration::from_millis(500)), app);
    let c = send(srv.local_addr(), &get_req("/endless"));
    assert!(
        wait_for(Duration::from_secs(10), || state.dropped.load(SeqCst)),
        "the producer was not stopped after the write timeout"
    );
    // The one worker is free again.
    assert_eq!(get(srv.local_addr(), "/").status, 200);
    drop(c);
    srv.stop();
}

#[test]
fn a_stream_still_produced_at_its_deadline_is_cut_off_and_its_worker_replaced() {
    let stuck_returned = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&stuck_returned);
    let app = App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello"))
        .route("GET", "/ticker", RouteOptions::new().timeout(Duration::from_millis(400)), |_: &Request, _: &Ctx| {
            // One chunk every 50 ms, forever: the deadline ends it.
            Response::from_chunks(std::iter::repeat_with(|| {
                std::thread::sleep(Duration::from_millis(50));
                Ok::<_, io::Error>("tick\n")
            }))
        })
        .route(
            "GET",
            "/stuck",
            RouteOptions::new().timeout(Duration::from_millis(400)),
            move |_: &Request, _: &Ctx| {
                let h = Arc::clone(&h);
                // The second read takes 20 s (it ignores cancellation).
                let mut first = true;
                Response::from_chunks(std::iter::from_fn(move || {
                    if std::mem::take(&mut first) {
                        return Some(Ok::<_, io::Error>("start\n"));
                    }
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_secs(20) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    h.store(true, SeqCst);
                    None
                }))
            },
        );
    let srv = start(settings().threads(1).cancel_grace(Duration::from_secs(10)), app);
    let t0 = Instant::now();
    let r = fetch(srv.local_addr(), &get_req("/ticker"));
    assert_eq!(r.status, 200);
    assert!(!r.complete, "the stream ended as if complete");
    assert!(r.body.starts_with(b"tick\ntick\n"), "{:?}", String::from_utf8_lossy(&r.body));
    assert!(t0.elapsed() < Duration::from_secs(10), "cut off late: {:?}", t0.elapsed());
    // A producer stuck in user code: the connection is cut at the deadline all the same, and a
    // stand-in serves the next request while the stuck thread goes on.
    let t0 = Instant::now();
    let r = fetch(srv.local_addr(), &get_req("/stuck"));
    assert!(!r.complete && r.body == b"start\n", "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "not cut off at the deadline: {:?}", t0.elapsed());
    assert_eq!(get(srv.local_addr(), "/").status, 200, "no stand-in for the stuck producer");
    assert!(!stuck_returned.load(SeqCst), "the cut came from the producer ending, not the deadline");
    assert_eq!(metric(&srv, "vigil_request_timeouts_total{reason=\"deadline\"}"), 2.0);
    srv.stop();
}

#[test]
fn a_body_in_memory_is_written_whole_from_the_response() {
    let srv = demo_server(settings());
    let r = get(srv.local_addr(), "/bytes?n=5000000");
    assert_eq!(r.body.len(), 5_000_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
    let echoed = raw(
        srv.local_addr(),
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n{}",
            "e".repeat(100_000)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(echoed.body.len(), 100_000);
    srv.stop();
}

/// README's "Streaming responses" example, verbatim from `let app` to its `});` (checked below).
fn readme_example() -> App {
    let app = App::new()
        // A reader: a file, a child process's stdout, a decompressor...
        .get("/export", |_: &Request, _: &Ctx| -> Result<Response, vigil::Error> {
            let file = std::fs::File::open("/var/lib/app/export.csv")?;
            let len = file.metadata()?.len();
            Ok(Response::from_reader(file).with_length(len).with_header("Content-Type", "text/csv"))
        })
        // An iterator of chunks, each a `Result` (an `Err` ends the body early).
        .get("/rows", |_: &Request, _: &Ctx| {
            Response::from_chunks((0..1_000_000).map(|i| Ok::<_, std::io::Error>(format!("{i}\n"))))
        });
    app
}

#[test]
fn the_readme_streaming_example_is_this_code_and_serves_a_million_rows() {
    let this = include_str!("streaming.rs");
    let from = this.find("    let app = App::new()\n        // A reader").unwrap();
    let end = from + this[from..].find("        });\n").unwrap() + "        });\n".len();
    let code: String =
        this[from..end].lines().map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n").collect();
    assert!(include_str!("../README.md").contains(&code), "README's streaming example differs:\n{code}");
    let srv = start(settings(), readme_example());
    let r = fetch(srv.local_addr(), &get_req("/rows"));
    assert!(r.complete);
    assert_eq!(r.body.iter().filter(|&&b| b == b'\n').count(), 1_000_000);
    assert!(r.body.ends_with(b"999998\n999999\n"));
    assert_eq!(fetch(srv.local_addr(), &get_req("/export")).status, 500, "no such file here");
    srv.stop();
}
