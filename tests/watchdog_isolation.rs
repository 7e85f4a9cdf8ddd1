//! Nothing a handler, a callback or a log sink does can stall the watchdog: every other
//! request still gets its 504 at its deadline (plus one tick) and ordinary requests are served.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;
// For the stalled-stderr test, which needs a pipe nobody reads and a process to hold it (Unix).
#[cfg(unix)]
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Instant,
};

use common::*;
use vigil::{App, Cancelled, Ctx, Request, Response, RouteOptions};

/// A 504 may come this much after its deadline here. The watchdog's tick is 10 ms and the
/// benchmarks measure the real lateness (BENCHMARKS.md: p99 about 11 ms); what these tests
/// guard against is a watchdog held up by a callback or a log sink, which costs seconds (the
/// callback blocks 10 s, the stalled sink forever), while scheduling noise on a loaded 2-core
/// machine running the whole suite at once has reached 0.65 s.
const LATE: Duration = Duration::from_secs(2);

#[test]
fn a_ten_second_on_cancel_callback_delays_no_other_requests_504() {
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let release_rx = Arc::new(release_rx);
    let (cb_started_tx, cb_started_rx) = crossbeam_channel::bounded::<()>(1);
    let timeout = Duration::from_millis(300);
    let app = App::new()
        .route("GET", "/slow-callback", RouteOptions::new().timeout(timeout), move |_: &Request, ctx: &Ctx| {
            let (rx, started) = (Arc::clone(&release_rx), cb_started_tx.clone());
            let _armed = ctx.on_cancel(move || {
                let _ = started.send(());
                // Blocks for 10 s (a socket shutdown that stalls, a mutex the handler holds),
                // unless the test releases it first.
                let _ = rx.recv_timeout(Duration::from_secs(10));
            });
            ctx.sleep(Duration::from_secs(30))?;
            Ok::<_, Cancelled>(Response::text("unreachable"))
        })
        .route("GET", "/hang", RouteOptions::new().timeout(timeout), |_: &Request, _: &Ctx| {
            thread::sleep(Duration::from_secs(2)); // ignores its token
            Response::text("late")
        })
        .get("/", |_: &Request, _: &Ctx| Response::text("ok"));
    let srv = start(settings().threads(2).cancel_grace(Duration::from_secs(5)), app);
    let (addr, admin) = (srv.local_addr(), srv.admin_addr().unwrap());

    let (first, d) = timed_get(addr, "/slow-callback");
    assert_eq!(first.status, 504);
    assert!(d < timeout + LATE, "{d:?}");
    cb_started_rx.recv_timeout(Duration::from_secs(5)).expect("the callback started");
    // The callback is blocked now. Another request's deadline passes meanwhile:
    let (second, d) = timed_get(addr, "/hang");
    assert_eq!(second.status, 504);
    assert!(d >= timeout && d < timeout + LATE, "the 504 came {d:?} after the request, deadline {timeout:?}");
    println!("with a callback blocked for 10 s, the next request's 504 came after {d:?} (deadline {timeout:?})");
    // The admin endpoints that read the watchdog's list answer too, and the server serves.
    let (r, d) = timed_get(admin, "/requests");
    assert_eq!(r.status, 200);
    assert!(d < Duration::from_secs(1), "/requests took {d:?}");
    assert_eq!(get(addr, "/").text(), "ok");
    release_tx.send(()).unwrap();
    srv.stop();
}

/// A `vigil` binary whose stderr is a pipe nobody reads (until the test decides to).
#[cfg(unix)]
struct StalledStderr {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

#[cfg(unix)]
impl StalledStderr {
    fn start(args: &[&str]) -> StalledStderr {
        use std::process::Stdio;
        let mut child = vigil_command()
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = |prefix: &str| -> SocketAddr {
            let l = lines.next().expect("an address line").expect("stdout");
            l.strip_prefix(prefix).unwrap_or_else(|| panic!("{l:?}")).parse().unwrap()
        };
        let addr = next("listening on http://");
        let admin = next("admin on http://");
        StalledStderr { child, addr, admin }
    }
}

#[cfg(unix)]
impl Drop for StalledStderr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `n` pipelined `GET /` on one connection and reads the `n` answers.
#[cfg(unix)]
fn pipelined_gets(addr: SocketAddr, n: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let reqs = "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(n);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || w.write_all(reqs.as_bytes()).unwrap());
    for _ in 0..n {
        assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    }
    writer.join().unwrap();
}

#[cfg(unix)]
#[test]
fn a_stalled_stderr_costs_log_lines_but_no_504_and_no_request() {
    let mut srv = StalledStderr::start(&["--timeout", "1", "--cancel-grace", "0.5", "--threads", "8", "--access-log"]);
    // Fill the pipe (64 KiB) with panic reports, then queue more records than the log queue
    // holds: the writer is stuck in write(2) from here on.
    for _ in 0..400 {
        assert_eq!(get(srv.addr, "/panic").status, 500);
    }
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn({
                let a = srv.addr;
                move || pipelined_gets(a, 2500)
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let dropped = metric(srv.admin, "vigil_log_records_dropped_total");
    assert!(dropped > 0.0, "the log queue never filled: {dropped}");

    // A hung request gets its 504 at the deadline; an ordinary one is served meanwhile.
    let addr = srv.addr;
    let hung = thread::spawn(move || timed_get(addr, "/spin?ms=5000"));
    let (ok, d) = timed_get(srv.addr, "/");
    assert_eq!(ok.status, 200);
    assert!(d < Duration::from_secs(1), "GET / took {d:?}");
    let (r, d) = hung.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    let deadline = Duration::from_secs(1);
    assert!(d >= deadline && d < deadline + LATE, "504 after {d:?}");
    println!("stalled stderr: {dropped} log records dropped; the hung request's 504 came after {d:?} (deadline 1 s)");
    assert_eq!(get(srv.admin, "/healthz").status, 200);

    // Once the sink moves again, one line says how many records were lost.
    let mut stderr = srv.child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&all).contains("log records dropped") {
                break;
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    // A record after the drain of the pipe, so the writer has a batch to write and report after.
    assert_eq!(get(srv.addr, "/").status, 200);
    let text = reader.join().unwrap();
    let notice = text
        .lines()
        .find(|l| l.contains("log records dropped"))
        .unwrap_or_else(|| panic!("no notice of the dropped records in {} bytes of stderr", text.len()));
    println!("notice: {notice}");
    let _ = srv.child.kill();
}
