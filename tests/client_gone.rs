//! Clients that go away before their answer: a close, a reset or a half-close while the handler
//! runs cancels it; nothing is written, the request is logged and counted as 499 and as a client
//! disconnect, never as a timeout or a 504. A request answered before the client's FIN still
//! gets its answer.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{connect, demo_server, metric, read_response, settings, wait_for};
use vigil::ServerHandle;

/// How the client leaves.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// `shutdown(SHUT_WR)`: the client says it will send nothing more (and could still read).
    HalfClose,
    /// `close()`: a FIN, as for a half-close; only a write would tell them apart.
    Close,
    /// `close()` with `SO_LINGER` 0: a reset.
    #[cfg(unix)]
    Reset,
}

fn leave(s: TcpStream, how: Leave) -> Option<TcpStream> {
    match how {
        Leave::HalfClose => {
            s.shutdown(Shutdown::Write).unwrap();
            Some(s)
        }
        Leave::Close => None,
        #[cfg(unix)]
        Leave::Reset => {
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
            None
        }
    }
}

/// Sends `requests` (the first one a 5 s cancellable sleep), waits until its handler runs, leaves
/// as told, and checks what the server made of it. Returns the socket if still open (half-close).
fn leave_while_the_handler_runs(srv: &ServerHandle, requests: &[u8], how: Leave) -> Option<TcpStream> {
    let mut s = connect(srv.local_addr());
    s.write_all(requests).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || metric(srv, "vigil_worker_threads_busy") == 1.0),
        "the handler never ran"
    );
    let left = leave(s, how);
    assert!(
        wait_for(Duration::from_secs(3), || metric(srv, "vigil_requests_total{status=\"499\"}") == 1.0),
        "{how:?}: no 499 counted:\n{}",
        srv.metrics_text()
    );
    assert_eq!(metric(srv, "vigil_client_disconnects_total"), 1.0, "{how:?}");
    // The handler was cancelled and honored it; nothing was counted as a timeout or a 504.
    assert!(
        wait_for(Duration::from_secs(3), || metric(srv, "vigil_cancellations_honored_total") == 1.0),
        "{how:?}: the handler's cancellation was not honored"
    );
    assert_eq!(metric(srv, "vigil_request_timeouts_total"), 0.0, "{how:?}");
    assert_eq!(metric(srv, "vigil_requests_total{status=\"504\"}"), 0.0, "{how:?}");
    left
}

const SLEEP: &[u8] = b"GET /sleep?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn client_that_closes_while_its_handler_runs_is_a_499_not_a_timeout() {
    let srv = demo_server(settings());
    leave_while_the_handler_runs(&srv, SLEEP, Leave::Close);
    srv.stop();
}

#[cfg(unix)]
#[test]
fn client_that_resets_while_its_handler_runs_is_a_499_not_a_timeout() {
    let srv = demo_server(settings());
    leave_while_the_handler_runs(&srv, SLEEP, Leave::Reset);
    srv.stop();
}

#[test]
fn client_that_half_closes_while_its_handler_runs_gets_a_clean_close_and_no_504() {
    // A FIN after the last request looks like a close until the server writes, so it counts
    // as the client leaving (README, "Clients that go away"): nothing is written, and the
    // connection ends with a clean close, not a reset.
    let srv = demo_server(settings());
    let mut s = leave_while_the_handler_runs(&srv, SLEEP, Leave::HalfClose).expect("half-closed socket");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close, not a reset");
    assert!(rest.is_empty(), "bytes written to a client that left: {:?}", String::from_utf8_lossy(&rest));
    srv.stop();
}

#[test]
fn pipelined_requests_then_a_half_close_get_no_invented_504_and_the_rest_is_not_run() {
    let srv = demo_server(settings());
    let mut both = SLEEP.to_vec();
    both.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut s = leave_while_the_handler_runs(&srv, &both, Leave::HalfClose).expect("half-closed socket");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close, not a reset");
    assert!(rest.is_empty(), "bytes written to a client that left: {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(metric(&srv, "vigil_requests_total{route=\"/\"}"), 0.0, "the second request ran");
    srv.stop();
}

#[test]
fn half_close_after_a_request_answered_before_the_probe_still_gets_its_answer() {
    // `nc -N`-style clients: the request, then SHUT_WR, then read. A handler that answers
    // before the watchdog's first look at the client (50 ms) is answered as usual.
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().text(), "hello");
    assert_eq!(read_response(&mut s, false).unwrap().text(), "hi");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close after the answers");
    assert!(rest.is_empty());
    assert_eq!(metric(&srv, "vigil_requests_total{status=\"499\"}"), 0.0);
    srv.stop();
}
