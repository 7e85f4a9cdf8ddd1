//! Connection hardening: slow, silent, greedy and vanishing clients must not cost other clients
//! their answers, and every connection they hold ends within its timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_closed, assert_closing_error, connect, demo_server, metric, read_response, settings, wait_for,
    wait_readable, wait_write_stalled,
};
use vigil::{Server, ServerHandle};

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
                // The behaviour under test: one byte per client every 100 ms.
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Every slow client has been accepted (and is trickling) before the normal client comes.
    assert!(
        wait_for(Duration::from_secs(5), || metric(&srv, "vigil_connections_open") >= SLOW as f64),
        "{} of {SLOW} slow clients accepted",
        metric(&srv, "vigil_connections_open")
    );
    let started = Instant::now();
    let mut normal = connect(addr);
    normal.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_response(&mut normal, false).expect("the normal client is answered");
    let took = started.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert!(took < Duration::from_secs(2), "a normal request took {took:?} next to {SLOW} slow clients");
    assert!(metric(&srv, "vigil_connections_open") >= SLOW as f64, "the slow clients are still connected");

    // The behaviour under test: the clients trickle for most of the header timeout (which the
    // trickle must not extend). They stop shortly before it so no late byte races the close.
    thread::sleep((header_timeout - Duration::from_millis(400)).saturating_sub(t0.elapsed()));
    trickling.store(false, Ordering::SeqCst);
    trickler.join().unwrap();
    for s in &mut slow {
        assert_closing_error(s, 408);
    }
    let all_done = t0.elapsed();
    assert!(all_done >= header_timeout, "408 before the header timeout: {all_done:?}");
    assert!(
        wait_for(Duration::from_secs(3), || metric(&srv, "vigil_connections_open") == 0.0),
        "{} open",
        metric(&srv, "vigil_connections_open")
    );
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
    wait_readable(&s);
    assert!(t.elapsed() >= Duration::from_millis(400), "answered after {:?}", t.elapsed());
    assert_closing_error(&mut s, 408);
    srv.stop();
}

#[test]
fn slow_chunked_body_gets_408_after_body_timeout() {
    let srv = demo_server(settings().body_timeout(Duration::from_millis(400)));
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhel").unwrap();
    // Trickling does not extend the body timeout: it bounds the whole body. (The sleeps are the
    // behaviour under test: one more body byte every 100 ms.)
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(100));
        let _ = s.write_all(b"l");
    }
    assert_closing_error(&mut s, 408);
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
        assert_closing_error(s, 408);
    }
    srv.stop();
}

#[test]
fn client_that_never_reads_is_dropped_after_write_timeout() {
    let srv = demo_server(settings().write_timeout(Duration::from_secs(1)));
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET /bytes?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Still open while the write is merely stalled...
    let waiting = wait_write_stalled(&s, Duration::from_secs(5));
    assert_eq!(metric(&srv, "vigil_connections_open"), 1.0, "dropped as soon as {waiting} bytes were waiting");
    // ...and dropped once it has stalled for --write-timeout.
    assert!(
        wait_for(Duration::from_secs(10), || metric(&srv, "vigil_connections_open") == 0.0),
        "connection still open: {}",
        metric(&srv, "vigil_connections_open")
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
        let r = assert_closing_error(&mut extra, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    for s in &mut kept {
        s.write_all(hello).unwrap();
        assert_eq!(read_response(s, false).unwrap().status, 200);
    }
    // A slot that frees up is available again.
    drop(kept.pop());
    assert!(
        wait_for(Duration::from_secs(3), || metric(&srv, "vigil_connections_open") == 1.0),
        "{}",
        metric(&srv, "vigil_connections_open")
    );
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
    // The extra bytes have reached the server (acknowledged: they wait unread in its receive
    // queue) before we hang up.
    #[cfg(target_os = "linux")]
    assert!(
        wait_for(Duration::from_secs(5), || common::unacked_bytes(&s) == 0),
        "the server never acknowledged our {} bytes",
        more.len()
    );
    #[cfg(not(target_os = "linux"))]
    assert!(more.is_empty(), "only Linux can tell when the extra bytes have arrived");
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
    // The server has answered; the client, not reading yet, goes on uploading (the sleep between
    // the pieces is the behaviour under test: an upload still trickling in).
    wait_readable(&extra);
    extra.write_all(&[b'u'; 1000]).expect("upload not reset");
    thread::sleep(Duration::from_millis(60));
    extra.write_all(&[b'u'; 1000]).expect("upload not reset");
    assert_closing_error(&mut extra, 503);
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
        // The behaviour under test: an idle gap between requests; the four add up to more than
        // the header timeout.
        thread::sleep(Duration::from_millis(150));
    }
    srv.stop();
}
