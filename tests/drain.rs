//! The shutdown sequence (SIGTERM; Ctrl-C and Windows console events start the same drain):
//! readiness fails at once, `--shutdown-delay` keeps serving with `Connection: close`, then the
//! listener and idle connections close while everything accepted is finished; only what is
//! left at `--graceful-timeout` is cancelled.
#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_finishes_every_accepted_request_queued_ones_included() {
    let mut srv = ServerProc::start(&["--threads", "8", "--graceful-timeout", "30"]);
    let (addr, admin) = (srv.addr, srv.admin());
    let reqs: Vec<_> = (0..40).map(|_| thread::spawn(move || get(addr, "/sleep?ms=200"))).collect();
    // All 40 read: 8 running, 32 queued.
    assert!(wait_for(Duration::from_secs(10), || metric(admin, "vigil_requests_in_flight") == 40.0));
    srv.terminate();
    let statuses: Vec<u16> = reqs.into_iter().map(|r| r.join().unwrap().status).collect();
    assert_eq!(statuses, vec![200; 40]);
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_response_being_written_at_sigterm_is_written_to_the_end() {
    let mut srv = ServerProc::start(&["--threads", "2"]);
    let n = 50_000_000usize;
    let mut s = connect(srv.addr);
    s.write_all(format!("GET /bytes?n={n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut signalled = false;
    let mut head_len = None;
    loop {
        let k = s.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k;
        if head_len.is_none() {
            head_len = buf[..k].windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if !signalled && got > 2_000_000 {
            srv.terminate(); // mid-response, the client reading at its own pace
            signalled = true;
        }
        if got >= n + head_len.unwrap_or(usize::MAX) {
            break;
        }
    }
    assert!(signalled);
    assert_eq!(got - head_len.unwrap(), n, "the whole body arrived");
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn a_request_whose_body_is_still_arriving_at_sigterm_is_read_and_answered() {
    let mut srv = ServerProc::start(&["--threads", "2"]);
    let admin = srv.admin();
    let mut s = connect(srv.addr);
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello").unwrap();
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_connections_busy") >= 1.0));
    srv.terminate();
    assert!(wait_for(Duration::from_secs(5), || get(admin, "/readyz").status == 503), "the drain began");
    s.write_all(b"world").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "helloworld"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn during_the_shutdown_delay_everything_is_served_with_connection_close_then_the_listener_closes() {
    let mut srv = ServerProc::start(&["--threads", "2", "--shutdown-delay", "1.5", "--keepalive", "60"]);
    let (addr, admin) = (srv.addr, srv.admin());
    let mut kept = connect(addr);
    kept.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut kept, false).unwrap().header("connection"), None, "kept alive");
    let t0 = Instant::now();
    srv.terminate();
    assert!(wait_for(Duration::from_secs(1), || get(admin, "/readyz").status == 503), "not ready at once");
    assert_eq!(get(admin, "/healthz").status, 200, "but alive");
    // An open keep-alive connection is served, and told to close.
    kept.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut kept, false).unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    // New connections are still accepted and served during the delay.
    let r = get(addr, "/");
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(t0.elapsed() < Duration::from_millis(1500), "the checks above ran within the delay");
    // After the delay, the listener is closed: connection refused.
    assert!(wait_for(Duration::from_secs(5), || TcpStream::connect(addr).is_err()));
    assert!(t0.elapsed() >= Duration::from_millis(1400), "closed after the delay, not before: {:?}", t0.elapsed());
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn idle_keepalive_connections_are_closed_when_the_listener_closes() {
    let mut srv = ServerProc::start(&["--threads", "2", "--keepalive", "60"]);
    let mut idle = connect(srv.addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle, false).unwrap().status, 200);
    let t0 = Instant::now();
    srv.terminate();
    // Closed by the drain (a clean end of stream), long before its 60 s keep-alive timeout.
    assert_closed(&mut idle);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn at_the_graceful_timeout_queued_requests_get_503_and_running_ones_504() {
    let mut srv = ServerProc::start(&["--threads", "1", "--graceful-timeout", "1", "--timeout", "30"]);
    let (addr, admin) = (srv.addr, srv.admin());
    let running = thread::spawn(move || timed_get(addr, "/sleep?ms=10000"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    let queued = thread::spawn(move || get(addr, "/sleep?ms=10"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_queue_depth") == 1.0));
    srv.terminate();
    let (r, d) = running.join().unwrap();
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_secs(5), "{d:?}");
    let q = queued.join().unwrap();
    assert_eq!(q.status, 503);
    assert_eq!(q.header("retry-after"), Some("1"));
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut srv = ServerProc::start(&["--threads", "1", "--graceful-timeout", "30"]);
    let (addr, admin) = (srv.addr, srv.admin());
    let _hung = thread::spawn(move || get(addr, "/sleep?ms=20000"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    srv.terminate();
    assert!(wait_for(Duration::from_secs(5), || get(admin, "/readyz").status == 503));
    srv.terminate();
    assert_eq!(srv.wait_exit(Duration::from_secs(5)), Some(1));
}

#[test]
fn a_connection_that_never_sends_a_request_holds_the_drain_for_5_s_not_its_header_timeout() {
    let mut srv = ServerProc::start(&["--threads", "2", "--header-timeout", "30"]);
    let admin = srv.admin();
    let mut silent = connect(srv.addr); // a preconnect: sends nothing
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_connections_busy") >= 1.0));
    let t0 = Instant::now();
    srv.terminate();
    assert_closed(&mut silent);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    // FRESH_GRACE (5 s) after the listener closed, not --header-timeout (30 s here).
    assert!(t0.elapsed() < Duration::from_secs(12), "the drain waited {:?}", t0.elapsed());
}
