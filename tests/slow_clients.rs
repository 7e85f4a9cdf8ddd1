//! Connection hardening: slow, silent, greedy and vanishing clients must not cost other clients
//! their answers, and every connection they hold ends within its timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{read_response, wait_for, Resp};
use vigil::{Server, ServerHandle, Settings};

fn settings() -> Settings {
    Settings::default().bind("127.0.0.1:0".parse().unwrap()).admin_bind(None).threads(2)
}

fn demo_server(s: Settings) -> ServerHandle {
    Server::start(s, common::demo::app(Duration::from_secs(30))).expect("start server")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The `vigil_connections_open` gauge of `srv`.
fn connections_open(srv: &ServerHandle) -> i64 {
    let text = srv.metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .expect("vigil_connections_open in the metrics")
}

/// A server error that ends the connection: `Date`, `Content-Length`, a short text body and
/// `Connection: close`.
fn assert_closing_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.header("date").is_some(), "no Date: {r:?}");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()), "{r:?}");
    assert!(!r.body.is_empty() && r.body.len() < 200, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
}

/// Asserts that the server closes the connection cleanly: no more bytes, no reset, no hang.
fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close, not a reset or a hang");
    assert!(rest.is_empty(), "bytes after the final answer: {:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn slowloris_connections_get_408_while_a_normal_client_is_answered() {
    const SLOW: usize = 300;
    let header_timeout = Duration::from_millis(1500);
    let srv = demo_server(settings().header_timeout(header_timeout));
    let addr = srv.local_addr();

    // Each slow client sends part of a head, then one more header byte every 100 ms.
    let t0 = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| connect(addr)).collect();
    for s in &mut slow {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    }
    let trickling = Arc::new(AtomicBool::new(true));
    let trickler = {
        let mut socks: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        let trickling = Arc::clone(&trickling);
        thread::spawn(move || {
            while trickling.load(Ordering::SeqCst) {
                for s in &mut socks {
                    let _ = s.write_all(b"a");
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut normal = connect(addr);
    normal.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut normal, false).expect("the normal client is answered");
    let took = started.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert!(took < Duration::from_secs(2), "a normal request took {took:?} next to {SLOW} slow clients");
    assert!(connections_open(&srv) >= SLOW as i64, "the slow clients are still connected");

    // Stop trickling shortly before the header timeout so no late byte races the server's close.
    thread::sleep((header_timeout - Duration::from_millis(400)).saturating_sub(t0.elapsed()));
    trickling.store(false, Ordering::SeqCst);
    trickler.join().unwrap();
    for (i, s) in slow.iter_mut().enumerate() {
        let r = read_response(s, false).unwrap_or_else(|e| panic!("slow client {i}: {e}"));
        assert_closing_error(&r, 408);
        assert_closed(s);
    }
    let all_done = t0.elapsed();
    assert!(all_done >= header_timeout, "408 before the header timeout: {all_done:?}");
    assert!(wait_for(Duration::from_secs(3), || connections_open(&srv) == 0), "{} open", connections_open(&srv));
    srv.stop();
}

#[test]
fn client_that_sends_nothing_is_closed_silently_after_header_timeout() {
    let srv = demo_server(settings().header_timeout(Duration::from_millis(300)));
    let mut s = connect(srv.local_addr());
    // Nothing was asked, so nothing is answered: the connection just closes.
    assert_closed(&mut s);
    srv.stop();
}

#[test]
fn slow_content_length_body_gets_408_after_body_timeout() {
    let srv = demo_server(settings().body_timeout(Duration::from_millis(400)));
    let mut s = connect(srv.local_addr());
    let t = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_closing_error(&r, 408);
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    assert_closed(&mut s);
    srv.stop();
}

#[test]
fn slow_chunked_body_gets_408_after_body_timeout() {
    let srv = demo_server(settings().body_timeout(Duration::from_millis(400)));
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel").unwrap();
    // Trickling does not extend the body timeout: it bounds the whole body.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(100));
        let _ = s.write_all(b"l");
    }
    let r = read_response(&mut s, false).unwrap();
    assert_closing_error(&r, 408);
    assert_closed(&mut s);
    srv.stop();
}

#[test]
fn clients_announcing_large_bodies_they_never_send_get_408() {
    // Announcing a body up to --max-body and then sending next to nothing holds a connection
    // only until the body timeout; others are served meanwhile.
    let srv = demo_server(settings().body_timeout(Duration::from_millis(500)).max_body(100 << 20));
    let addr = srv.local_addr();
    let mut idle: Vec<TcpStream> = (0..50).map(|_| connect(addr)).collect();
    for s in &mut idle {
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nx").unwrap();
    }
    let r = common::get(addr, "/");
    assert_eq!(r.status, 200);
    for s in &mut idle {
        assert_closing_error(&read_response(s, false).unwrap(), 408);
    }
    srv.stop();
}

#[test]
fn client_that_never_reads_is_dropped_after_write_timeout() {
    let srv = demo_server(settings().write_timeout(Duration::from_secs(1)));
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Still open while the write is merely stalled...
    thread::sleep(Duration::from_millis(300));
    assert_eq!(connections_open(&srv), 1);
    // ...and dropped once it has stalled for --write-timeout.
    assert!(
        wait_for(Duration::from_secs(10), || connections_open(&srv) == 0),
        "connection still open: {}",
        connections_open(&srv)
    );
    // The client gets a truncated response, then the end of the stream (or a reset).
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {got} bytes: {e}"),
        }
    }
    assert!(got < 50_000_000, "the whole response arrived ({got} bytes)");
    srv.stop();
}

#[test]
fn connection_beyond_max_connections_gets_503_while_existing_ones_work() {
    let srv = demo_server(settings().max_connections(2));
    let addr = srv.local_addr();
    let hello = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut kept: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    for s in &mut kept {
        s.write_all(hello).unwrap();
        assert_eq!(read_response(s, false).unwrap().status, 200);
    }
    // A third client sends its request (with a body the server never reads) at once; the 503
    // must not be lost to a reset.
    let mut upload = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    upload.resize(upload.len() + 100_000, b'u');
    for _ in 0..3 {
        let mut extra = connect(addr);
        let _ = extra.write_all(&upload);
        let r = read_response(&mut extra, false).expect("the refused client reads its 503");
        assert_closing_error(&r, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_closed(&mut extra);
    }
    for s in &mut kept {
        s.write_all(hello).unwrap();
        assert_eq!(read_response(s, false).unwrap().status, 200);
    }
    // A slot that frees up is available again.
    drop(kept.pop());
    assert!(wait_for(Duration::from_secs(3), || connections_open(&srv) == 1), "{}", connections_open(&srv));
    let mut again = connect(addr);
    again.write_all(hello).unwrap();
    assert_eq!(read_response(&mut again, false).unwrap().status, 200);
    srv.stop();
}

/// A server whose `GET /wait` sleeps 10 s on its token; the flags say whether it started and
/// whether its sleep ended by cancellation.
#[cfg(any(unix, windows))]
fn waiting_server() -> (ServerHandle, Arc<AtomicBool>, Arc<AtomicBool>) {
    use vigil::{App, Ctx, Error, Request, Response};
    let cancelled = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let app = {
        let (cancelled, started) = (Arc::clone(&cancelled), Arc::clone(&started));
        App::new().get("/wait", move |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
            started.store(true, Ordering::SeqCst);
            let r = ctx.sleep(Duration::from_secs(10));
            cancelled.store(r.is_err(), Ordering::SeqCst);
            r?;
            Ok(Response::text("slept"))
        })
    };
    (Server::start(settings(), app).expect("start server"), started, cancelled)
}

/// Sends `GET /wait`, then `more` once its handler runs, then hangs up, and asserts that the
/// watchdog notices and cancels the handler within a second.
#[cfg(any(unix, windows))]
fn assert_hang_up_cancels_the_handler(more: &[u8]) {
    let (srv, started, cancelled) = waiting_server();
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(wait_for(Duration::from_secs(5), || started.load(Ordering::SeqCst)), "handler never ran");
    s.write_all(more).unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(s);
    let t = Instant::now();
    assert!(
        wait_for(Duration::from_secs(1), || cancelled.load(Ordering::SeqCst)),
        "handler not cancelled {:?} after the client left",
        t.elapsed()
    );
    srv.stop();
}

// Unix peeks (or polls, on Linux); Windows selects and peeks (src/platform.rs).
#[cfg(any(unix, windows))]
#[test]
fn client_disconnect_cancels_the_running_handler() {
    assert_hang_up_cancels_the_handler(b"");
}

// Other Unix systems and Windows peek, which cannot see a close behind unread bytes.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[test]
fn client_that_sends_more_bytes_then_disconnects_cancels_the_running_handler() {
    // Bytes the server has not read yet (an extra CRLF after a body, a pipelined request) must
    // not hide the client's close from the watchdog.
    assert_hang_up_cancels_the_handler(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

#[test]
fn refused_client_still_uploading_reads_its_503() {
    let srv = demo_server(settings().max_connections(1));
    let addr = srv.local_addr();
    let mut kept = connect(addr);
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut kept, false).unwrap().status, 200);
    // The refused client's upload goes on after the server has answered; the server drains it
    // for a moment instead of resetting, so the client's writes succeed and it reads the 503.
    let mut extra = connect(addr);
    extra.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n").unwrap();
    extra.write_all(&[b'u'; 1000]).unwrap();
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(60));
        extra.write_all(&[b'u'; 1000]).expect("upload not reset");
    }
    assert_closing_error(&read_response(&mut extra, false).unwrap(), 503);
    srv.stop();
}

#[test]
fn keepalive_client_sending_one_request_after_another_is_never_cut_by_header_timeout() {
    // The header timeout runs per request head, not per connection.
    let srv = demo_server(settings().header_timeout(Duration::from_millis(300)));
    let mut s = connect(srv.local_addr());
    for _ in 0..4 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s, false).unwrap().status, 200);
        thread::sleep(Duration::from_millis(150));
    }
    srv.stop();
}
