//! Test support shared by every integration test: a tiny raw HTTP/1.1 client, in-process servers
//! on port 0, a Prometheus metric reader, waits on conditions, and a way to run the `vigil`
//! binary or an example as a child process.
//!
//! `VIGIL_SERVER_CMD` replaces the binary with any command (e.g. `wine /path/vigil.exe`), so the
//! same end-to-end tests run against a Windows build under Wine.
#![allow(dead_code)]

use std::cell::OnceCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vigil::{App, Server, ServerHandle, Settings};

// ---------------------------------------------------------------------------------------------
// In-process servers
// ---------------------------------------------------------------------------------------------

/// The demo app (the `vigil` binary's routes: `/`, `/echo`, `/sleep`, `/block`, `/spin`, ...):
/// the binary's own file, so the tests serve exactly the routes the binary serves.
#[path = "../../src/demo.rs"]
pub mod demo;

/// Settings for an in-process test server: both listeners on 127.0.0.1 port 0 (read the
/// addresses back from the handle), two worker threads (the machine has two cores; tests that
/// need another count set it).
pub fn settings() -> Settings {
    Settings::default().bind("127.0.0.1:0".parse().unwrap()).admin_bind(Some("127.0.0.1:0".parse().unwrap())).threads(2)
}

/// Starts `app` in this process.
pub fn start(s: Settings, app: App) -> ServerHandle {
    Server::start(s, app).expect("start server")
}

/// Starts the demo app in this process (route timeout ceiling 30 s).
pub fn demo_server(s: Settings) -> ServerHandle {
    start(s, demo::app(Duration::from_secs(30)))
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A new connection to `addr` whose reads give up after 10 s (so a test that waits for an
/// answer that never comes fails instead of hanging).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response from `s` (Content-Length framed, or until EOF). `head_only`: no body.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes of head", buf.len()),
            ));
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut resp = Resp { status, headers, body: Vec::new() };
    if (100..200).contains(&status) {
        return read_response(s, head_only);
    }
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(n) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0u8; n];
        s.read_exact(&mut body)?;
        resp.body = body;
    } else {
        s.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(bytes)?;
    read_response(&mut s, bytes.starts_with(b"HEAD"))
}

/// `GET path` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `GET path`, returning the response and how long it took.
pub fn timed_get(addr: SocketAddr, path: &str) -> (Resp, Duration) {
    let t = Instant::now();
    let r = get(addr, path);
    (r, t.elapsed())
}

/// Sends `GET path` with `X-Request-Id: id` on a background thread (the id finds the request
/// again in /requests, /timeouts and the logs).
pub fn spawn_get_with_id(addr: SocketAddr, path: &str, id: &str) -> std::thread::JoinHandle<std::io::Result<Resp>> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || raw(addr, req.as_bytes()))
}

/// Asserts that the server closes `s` cleanly: no more bytes, no reset, no hang.
pub fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close, not a reset or a hang");
    assert!(rest.is_empty(), "bytes after the final answer: {:?}", String::from_utf8_lossy(&rest));
}

/// Reads the next response on `s` and asserts that it is an error the server itself answered
/// and that the connection ends with it: `status`; a `Date` in IMF-fixdate (ends in ` GMT`); a
/// `Content-Length` that matches a short, non-empty `text/plain` body ending in a newline;
/// `Connection: close`; then a clean close (no further bytes, no reset). Returns the response
/// for further checks (e.g. `Retry-After`).
pub fn assert_closing_error(s: &mut TcpStream, status: u16) -> Resp {
    let r = read_response(s, false).unwrap_or_else(|e| panic!("reading the {status} answer: {e}"));
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")), "no Date: {r:?}");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "{r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{r:?}");
    let text = r.text();
    assert!(!text.trim().is_empty() && text.len() < 200 && text.ends_with('\n'), "body {text:?}");
    assert_eq!(r.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("close"), "{r:?}");
    assert_closed(s);
    r
}

/// Waits until the server has started answering on `s` (at least one byte is waiting to be
/// read), without consuming anything. Panics after the socket's read timeout.
pub fn wait_readable(s: &TcpStream) {
    let mut one = [0u8; 1];
    let n = s.peek(&mut one).expect("the server answers");
    assert_eq!(n, 1, "the server closed without answering");
}

/// Waits until the server's write to `s` has stalled: bytes are waiting in our receive buffer
/// (we never read them) and their count has not grown for 60 ms, i.e. our receive window is
/// full and the server cannot send more. Returns how many bytes are waiting.
pub fn wait_write_stalled(s: &TcpStream, limit: Duration) -> usize {
    // Steady over this many polls (20 ms apart) counts as stalled.
    const STEADY: usize = 3;
    let mut buf = vec![0u8; 32 << 20];
    let mut last = (0usize, 0usize);
    assert!(
        wait_for(limit, || {
            let n = s.peek(&mut buf).expect("peek");
            last = if n > 0 && n == last.0 { (n, last.1 + 1) } else { (n, 0) };
            last.1 >= STEADY
        }),
        "the server's write never stalled: {} bytes waiting",
        last.0
    );
    last.0
}

/// Bytes written on `s` that the peer has not acknowledged yet (Linux: the socket's `tx_queue`
/// in /proc/net/tcp). Zero means everything we sent is in the peer's receive queue (or read).
#[cfg(target_os = "linux")]
pub fn unacked_bytes(s: &TcpStream) -> u64 {
    let (local, peer) = (s.local_addr().unwrap(), s.peer_addr().unwrap());
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(a) => format!("{:08X}:{:04X}", u32::from_ne_bytes(a.ip().octets()), a.port()),
        SocketAddr::V6(_) => panic!("unacked_bytes reads /proc/net/tcp (IPv4 only): {a}"),
    };
    let (local, peer) = (hex(local), hex(peer));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1] == local && f[2] == peer)
        .map(|f| u64::from_str_radix(f[4].split(':').next().unwrap(), 16).expect("tx_queue"))
        .unwrap_or_else(|| panic!("socket {local} -> {peer} not in /proc/net/tcp"))
}

// ---------------------------------------------------------------------------------------------
// Metrics and waits
// ---------------------------------------------------------------------------------------------

/// Where a test reads the Prometheus exposition: an admin address (`GET /metrics`) or an
/// in-process server ([`ServerHandle::metrics_text`], the same text without a request).
pub trait Scrape {
    fn scrape(&self) -> String;
}

impl Scrape for SocketAddr {
    fn scrape(&self) -> String {
        let r = get(*self, "/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        r.text()
    }
}

impl Scrape for ServerHandle {
    fn scrape(&self) -> String {
        self.metrics_text()
    }
}

impl<T: Scrape + ?Sized> Scrape for &T {
    fn scrape(&self) -> String {
        (**self).scrape()
    }
}

/// The value of `series` in the exposition `from` serves: see [`metric_in`].
///
/// ```text
/// metric(srv.admin(), "vigil_worker_threads")
/// metric(&handle, "vigil_request_timeouts_total{route=\"/report\",reason=\"stall\"}")
/// ```
pub fn metric(from: impl Scrape, series: &str) -> f64 {
    metric_in(&from.scrape(), series)
}

/// The value of `series` in the Prometheus text `text`, matched the way a PromQL selector is:
/// `name` or `name{label="value",...}` selects every sample of that name carrying those labels
/// (in any order, whatever other labels it has), and the result is their sum. So a reader does
/// not break when labels are reordered or added, and `vigil_requests_total{status="504"}` counts
/// 504s over all routes. A family that is exposed but has no matching sample yet (a labelled
/// counter never incremented) reads 0; a name that is not exposed at all panics, so a typo cannot
/// pass for a zero.
pub fn metric_in(text: &str, series: &str) -> f64 {
    let (name, want) = parse_series(series).unwrap_or_else(|| panic!("bad series selector {series:?}"));
    let mut known = false;
    let mut sum = 0.0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            // A histogram's samples are NAME_bucket, NAME_sum and NAME_count.
            let family = rest.split_whitespace().next().unwrap_or("");
            let suffix = name.strip_prefix(family);
            known |= suffix.is_some_and(|s| ["", "_total", "_bucket", "_sum", "_count", "_created"].contains(&s));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (sample, value) = split_sample(line).unwrap_or_else(|| panic!("unparsable sample line {line:?}"));
        let (sample_name, labels) = parse_series(sample).unwrap_or_else(|| panic!("unparsable sample {line:?}"));
        if sample_name != name {
            continue;
        }
        known = true;
        if want.iter().all(|w| labels.contains(w)) {
            let value = value.split_whitespace().next().unwrap_or("");
            sum += value.parse::<f64>().unwrap_or_else(|e| panic!("value of {line:?}: {e}"));
        }
    }
    assert!(known, "no metric named {name} in the exposition:\n{text}");
    sum
}

/// Splits a sample line into its series (`name{labels}`) and the rest (value, timestamp) at the
/// first space outside a quoted label value.
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => return Some((&line[..i], &line[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Splits `name{k="v",...}` into the name and its label pairs (escapes `\"`, `\\`, `\n` undone).
fn parse_series(s: &str) -> Option<(String, Vec<(String, String)>)> {
    let s = s.trim();
    let Some(open) = s.find('{') else {
        return (!s.is_empty() && !s.contains(char::is_whitespace)).then(|| (s.to_string(), Vec::new()));
    };
    let name = s[..open].to_string();
    let mut labels = Vec::new();
    let mut rest = s[open + 1..].strip_suffix('}')?;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return Some((name, labels));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = &after[end + 1..];
    }
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns whether it became true.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

// ---------------------------------------------------------------------------------------------
// Child processes: the binary and the examples
// ---------------------------------------------------------------------------------------------

/// The `vigil` binary (or `VIGIL_SERVER_CMD`) as a command without arguments, with no `VIGIL_*`
/// variable of ours in its environment: the server reads `VIGIL_<SETTING>` variables and refuses
/// to start on one that names no setting, and the test tools' own (`VIGIL_SERVER_CMD`,
/// `VIGIL_TEST_LOG`, `VIGIL_BLESS`, …) name none. `PORT` is removed too: it would move the bind;
/// and so are a supervisor's variables, in case the tests run under one (`LISTEN_*`: sockets that
/// are not the test's; `NOTIFY_SOCKET`, `WATCHDOG_*`: a manager that is not the test's).
pub fn vigil_command() -> Command {
    let mut cmd = match std::env::var("VIGIL_SERVER_CMD") {
        Ok(c) if !c.trim().is_empty() => {
            let mut parts = c.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap());
            cmd.args(parts);
            cmd
        }
        _ => Command::new(env!("CARGO_BIN_EXE_vigil")),
    };
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let supervisor = ["LISTEN_", "WATCHDOG_", "SYSTEMFD_"].iter().any(|p| key_text.starts_with(p));
        if key_text.starts_with("VIGIL_") || key == "PORT" || key == "NOTIFY_SOCKET" || supervisor {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// An address the server printed, as a client reaches it: an unspecified one (`0.0.0.0:N`, a
/// server bound to every interface) is reached on loopback.
fn reachable(printed: &str) -> SocketAddr {
    let mut addr: SocketAddr = printed.parse().unwrap_or_else(|e| panic!("address {printed:?}: {e}"));
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// A running `vigil` binary (or `VIGIL_SERVER_CMD`), or an example, killed on drop.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener, once its `admin on` line has been read.
    admin: OnceCell<SocketAddr>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl ServerProc {
    /// Starts the server with `args` (port 0 for both listeners unless given) and waits for its
    /// `listening on` / `admin on` lines.
    pub fn start(args: &[&str]) -> ServerProc {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.contains(&"--bind") {
            all.extend(["--bind".into(), "127.0.0.1:0".into()]);
        }
        if !args.contains(&"--admin-bind") {
            all.extend(["--admin-bind".into(), "127.0.0.1:0".into()]);
        }
        let srv = ServerProc::spawn(vigil_command(), &all);
        srv.admin();
        srv
    }

    /// Starts `cmd` (built on [`vigil_command`], e.g. through a wrapper that passes it sockets)
    /// with `args` and waits for its `listening on` line.
    pub fn start_command(cmd: Command, args: &[&str]) -> ServerProc {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ServerProc::spawn(cmd, &args)
    }

    /// Starts the server with exactly `args` and the extra environment `env` (nothing added:
    /// the settings must give the listeners port 0 themselves) and waits for its `listening on`
    /// line.
    pub fn start_exactly(args: &[&str], env: &[(&str, &str)]) -> ServerProc {
        let mut cmd = vigil_command();
        cmd.envs(env.iter().copied());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ServerProc::spawn(cmd, &args)
    }

    /// Starts the server as `cmd` (which runs the `vigil` binary in the end: `setpriv`,
    /// `prlimit`) with `args` (port 0 for both listeners unless given) and waits for its
    /// address lines.
    pub fn start_wrapped(cmd: Command, args: &[&str]) -> ServerProc {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.contains(&"--bind") {
            all.extend(["--bind".into(), "127.0.0.1:0".into()]);
        }
        if !args.contains(&"--admin-bind") {
            all.extend(["--admin-bind".into(), "127.0.0.1:0".into()]);
        }
        let srv = ServerProc::spawn(cmd, &all);
        srv.admin();
        srv
    }

    /// Starts the example `name` (built by `cargo test` next to the binary) with `args` and waits
    /// for its `listening on` line. [`admin`](ServerProc::admin) works if the example enables
    /// its admin listener.
    pub fn start_example(name: &str, args: &[&str]) -> ServerProc {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_vigil"));
        let path = bin.parent().unwrap().join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        // `cargo test` builds the examples; `cargo test --test examples` alone may not.
        assert!(path.exists(), "example {name} not built at {}: run `cargo build --examples` first", path.display());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ServerProc::spawn(Command::new(path), &args)
    }

    fn spawn(mut cmd: Command, args: &[String]) -> ServerProc {
        #[cfg(windows)]
        {
            // Its own process group, so that terminate()'s Ctrl-Break reaches it and not us.
            use std::os::windows::process::CommandExt;
            cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP);
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var("VIGIL_TEST_ECHO").is_ok() {
                    eprintln!("[server] {line}");
                }
                if etx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut srv = ServerProc {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: OnceCell::new(),
            stdout: rx,
            stderr: erx,
        };
        srv.addr = srv.address_line("listening on http://");
        srv
    }

    /// Reads stdout up to the line `prefix` ADDR (an `admin on` line on the way is kept).
    fn address_line(&mut self, prefix: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.stdout.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => {
                    let _ = self.child.kill();
                    let errs: Vec<String> = self.stderr.try_iter().collect();
                    panic!("no `{prefix}ADDR` line from the server ({e}); stderr: {errs:?}")
                }
            };
            let line = line.trim();
            if let Some(a) = line.strip_prefix(prefix) {
                return reachable(a);
            }
            if let Some(a) = line.strip_prefix("admin on http://") {
                let _ = self.admin.set(reachable(a));
            }
        }
    }

    /// The admin listener's address (waits for the server's `admin on` line; panics if it never
    /// prints one).
    pub fn admin(&self) -> SocketAddr {
        if let Some(a) = self.admin.get() {
            return *a;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.trim().strip_prefix("admin on http://") {
                        let a = reachable(a);
                        let _ = self.admin.set(a);
                        return a;
                    }
                }
                Err(e) => panic!("the server printed no `admin on ADDR` line ({e}): is its admin listener on?"),
            }
        }
    }

    /// Log lines printed since the last call (stderr).
    pub fn logs(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Waits until a log line satisfies `f` and returns it; every line read on the way is added
    /// to `seen`. `None` after `limit` (or if the server exits first).
    pub fn wait_log(&self, seen: &mut Vec<String>, limit: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + limit;
        seen.extend(self.logs());
        loop {
            if let Some(l) = seen.iter().find(|l| f(l)) {
                return Some(l.clone());
            }
            match self.stderr.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(_) => return None,
            }
        }
    }

    /// Every log line still to come, once the process has exited: reads stderr to its end.
    /// Panics if it does not end within `limit` (call it after [`wait_exit`](Self::wait_exit)).
    pub fn logs_to_end(&self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            match self.stderr.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open after {limit:?}: {lines:?}"),
            }
        }
    }

    /// Asks the server to drain: SIGTERM on Unix; Ctrl-Break on Windows (the server runs in its
    /// own process group, see [`start`]); and for a Windows build under Wine (`VIGIL_SERVER_CMD`
    /// naming a `.exe`) SIGINT, which Wine hands to the program as a Ctrl-C console event (on
    /// SIGTERM, Wine ends the program at once).
    ///
    /// [`start`]: ServerProc::start
    pub fn terminate(&self) {
        #[cfg(unix)]
        {
            let wine = std::env::var("VIGIL_SERVER_CMD").is_ok_and(|c| c.to_ascii_lowercase().contains(".exe"));
            let sig = if wine { "-INT" } else { "-TERM" };
            let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Console::{GenerateConsoleCtrlEvent, CTRL_BREAK_EVENT};
            // SAFETY: no pointers; the group id is the child's pid (it leads its own group).
            let ok = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, self.child.id()) };
            assert!(ok != 0, "Ctrl-Break to {}: {}", self.child.id(), std::io::Error::last_os_error());
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Resource limits and unprivileged users (Linux)
// ---------------------------------------------------------------------------------------------

/// A command that runs the `vigil` binary under a resource limit (`prlimit` options of
/// util-linux, e.g. `"--nofile=64"`), as whoever runs the tests. The args given to
/// [`ServerProc::start_wrapped`] are appended.
#[cfg(target_os = "linux")]
pub fn vigil_with_limits(limit: &str) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args([limit, env!("CARGO_BIN_EXE_vigil")]);
    cmd
}

/// A user of its own for one test: its uid (and gid) is unique to this test process and
/// `slot`, so `ulimit -u`, which counts a user's threads machine-wide, counts only this test's
/// server. Needs root (CI runs as root) and `setpriv` (util-linux).
#[cfg(target_os = "linux")]
pub struct Unprivileged {
    dir: PathBuf,
    bin: PathBuf,
    pub uid: u32,
}

#[cfg(target_os = "linux")]
impl Unprivileged {
    /// `None` (with a note on stderr) when not root or without `setpriv`: the caller says the
    /// test could not run here.
    pub fn new(slot: u32) -> Option<Unprivileged> {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let have = |tool: &str| ["/usr/bin", "/bin"].iter().any(|d| std::path::Path::new(d).join(tool).exists());
        if !root || !have("setpriv") || !have("prlimit") {
            eprintln!("NOT RUN: dropping to an unprivileged user needs root, setpriv and prlimit (CI has all three)");
            return None;
        }
        let uid = 61_000 + (std::process::id() % 2_000) * 8 + slot;
        // The binary must be readable and executable by that user: a copy in a 0755 directory.
        let dir = std::env::temp_dir().join(format!("vigil-unpriv-{}-{slot}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("vigil");
        std::fs::copy(env!("CARGO_BIN_EXE_vigil"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(Unprivileged { dir, bin, uid })
    }

    /// A command that runs the copied binary as this user, under a resource limit (`prlimit`
    /// options, e.g. `"--nproc=30"`: what `ulimit -u 30` sets).
    pub fn vigil(&self, limit: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.uid),
            "--clear-groups",
            "--",
            "prlimit",
            limit,
        ]);
        cmd.arg(&self.bin);
        cmd
    }
}

#[cfg(target_os = "linux")]
impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The threads of process `pid`: (tid, name), from /proc.
#[cfg(target_os = "linux")]
pub fn threads_of(pid: u32) -> Vec<(i32, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect()
}

/// Field `n` (1-based, as numbered in proc(5)) of /proc/PID/task/TID/stat: 19 is the nice
/// value, 41 the scheduling policy (0 normal, 5 `SCHED_IDLE`).
#[cfg(target_os = "linux")]
pub fn task_stat(pid: u32, tid: i32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}
