//! Test support: a tiny raw HTTP/1.1 client and a way to run the `vigil` binary.
//!
//! `VIGIL_SERVER_CMD` replaces the binary with any command (e.g. `wine /path/vigil.exe`), so the
//! same end-to-end tests run against a Windows build under Wine.
#![allow(dead_code)]

/// The demo app of the `vigil` binary, served in-process by the tests.
#[path = "../../src/demo.rs"]
pub mod demo;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// Value of a metric line `name` (exact series text, e.g. `vigil_worker_threads`), from /metrics.
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = get(admin, "/metrics").text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == series).map(|(_, v)| v.parse().unwrap()))
        .unwrap_or(0.0)
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

/// A running `vigil` binary (or `VIGIL_SERVER_CMD`), killed on drop.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
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
        let mut cmd = match std::env::var("VIGIL_SERVER_CMD") {
            Ok(c) if !c.trim().is_empty() => {
                let mut parts = c.split_whitespace();
                let mut cmd = Command::new(parts.next().unwrap());
                cmd.args(parts);
                cmd
            }
            _ => Command::new(env!("CARGO_BIN_EXE_vigil")),
        };
        #[cfg(windows)]
        {
            // Its own process group, so that terminate()'s Ctrl-Break reaches it and not us.
            use std::os::windows::process::CommandExt;
            cmd.creation_flags(windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP);
        }
        let mut child = cmd
            .args(&all)
            .env("RUST_LOG", std::env::var("VIGIL_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil");
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
        let mut addr = None;
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                let errs: Vec<String> = erx.try_iter().collect();
                panic!("server did not print its addresses; stderr: {errs:?}")
            });
            let line = line.trim().to_string();
            if let Some(a) = line.strip_prefix("listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("admin on http://") {
                admin = Some(a.parse().unwrap());
            }
        }
        ServerProc { child, addr: addr.unwrap(), admin: admin.unwrap(), stderr: erx }
    }

    /// Log lines printed so far (stderr).
    pub fn logs(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
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
