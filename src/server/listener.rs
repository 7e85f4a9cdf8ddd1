//! The public listener: binding it (or taking it from a supervisor, see `activation`), and the
//! accept coroutine, one per server, which spawns a connection coroutine per client and refuses
//! clients beyond `--max-connections` with a 503 written by a short-lived coroutine of its own.
//!
//! When `accept` fails for want of resources (no file descriptors left: `EMFILE`, `ENFILE`;
//! no memory), it backs off the way Go's `net/http` does: 5 ms, doubling up to 1 s while the
//! failures go on, back to none after a success ([`AcceptBackoff`], which the admin listener
//! uses too). So descriptor exhaustion costs at most one failed `accept` and one log line a
//! second, instead of a spinning loop and a flood of identical errors.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use socket2::{Domain, Protocol, Socket, Type};

use crate::http::response::{encode, Framing};
use crate::logging::OncePerSecond;
use crate::metrics::Rejected;
use crate::runtime::clock;
use crate::runtime::refusal::Refusal;
use crate::server::access::{self, AccessLine};
use crate::server::lifecycle::Phase;
use crate::server::shared::Shared;

/// Refusals answered at once beyond `--max-connections`; past this many more (a flood), new
/// connections are closed without an answer so that refusing costs nothing either.
const MAX_REFUSING: usize = 1024;

/// The listen backlog: connections the kernel completes before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds the public listener at `addr`. Like Go's net/http and nginx, and unlike may's own
/// `bind`, without `SO_REUSEPORT`: a second server on an address in use fails with "address in
/// use" instead of silently taking half its connections. `SO_REUSEADDR` (on Unix, as std sets
/// it) lets a restarted server bind while connections of the old one are in `TIME_WAIT`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The drain's own connection to the listener, which tells the accept loop that everything
/// queued before it has been accepted. Bound before it connects, so that its address can be
/// recorded before the accept loop can possibly see it.
pub(crate) struct WakeUp {
    socket: Socket,
    /// Its local address: the peer address the accept loop will see.
    pub local: SocketAddr,
}

impl WakeUp {
    /// A socket bound to an ephemeral port on the address it will use to reach `listener`.
    pub fn bind(listener: SocketAddr) -> io::Result<WakeUp> {
        let socket = Socket::new(Domain::for_address(listener), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(reachable(listener).ip(), 0).into())?;
        let local = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
        Ok(WakeUp { socket, local })
    }

    /// Connects (at most 200 ms), then closes.
    pub fn connect(self, listener: SocketAddr) {
        let _ = self.socket.connect_timeout(&reachable(listener).into(), Duration::from_millis(200));
    }
}

/// Where this host reaches a listener bound to `addr`: the loopback address of its family for
/// an unspecified one (`0.0.0.0`, `::`).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Hands a bound (or inherited) listener over to may's event loop.
pub(crate) fn into_coroutine_listener(listener: std::net::TcpListener) -> io::Result<may::net::TcpListener> {
    // may's own conversion panics if its event loop cannot take the socket; check the socket
    // can be made non-blocking first (what may does before registering it), so that a bad
    // descriptor is an error here.
    listener.set_nonblocking(true)?;
    #[cfg(unix)]
    {
        use std::os::unix::io::{FromRawFd, IntoRawFd};
        let fd = listener.into_raw_fd();
        // SAFETY: `into_raw_fd` gave up the only owner of this open listening socket, so `fd`
        // is valid and owned by nobody else; may's `from_raw_fd` takes ownership of it (it
        // closes it when its listener drops).
        Ok(unsafe { may::net::TcpListener::from_raw_fd(fd) })
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::{FromRawSocket, IntoRawSocket};
        let socket = listener.into_raw_socket();
        // SAFETY: `into_raw_socket` gave up the only owner of this open listening socket, so
        // `socket` is valid and owned by nobody else; may's `from_raw_socket` takes ownership.
        Ok(unsafe { may::net::TcpListener::from_raw_socket(socket) })
    }
}

/// Where the listening socket came from, which decides how the drain stops accepting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Bound by this server: the backlog dies with it, so the drain accepts everything that
    /// reached it before its own wake-up connection.
    Bound,
    /// Passed by a supervisor, which keeps its own copy: what is still in the backlog waits for
    /// the next process. Another process may be accepting from the same queue (a new one started
    /// while this one drains) and take the drain's wake-up connection, so the first connection
    /// accepted once the listener is closing is served and ends the accept loop.
    Inherited,
}

pub(crate) fn spawn(listener: may::net::TcpListener, source: Source, shared: Arc<Shared>) -> std::io::Result<()> {
    let builder = may::coroutine::Builder::new().name("vigil-accept".into());
    // SAFETY: may's contract for spawning a coroutine: the accept loop holds no thread-local
    // across a yield and never blocks its scheduler thread (may sockets, may's sleep; every
    // connection's work goes to coroutines of its own).
    unsafe { builder.spawn(move || accept_loop(listener, source, shared)) }?;
    Ok(())
}

fn accept_loop(listener: may::net::TcpListener, source: Source, shared: Arc<Shared>) {
    let mut backoff = AcceptBackoff::new("public");
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                if shared.lifecycle.phase() >= Phase::Closing {
                    break;
                }
                shared.conns.accept_errors.fetch_add(1, Relaxed);
                if let Some(delay) = backoff.failed(&e, clock::now_ns()) {
                    may::coroutine::sleep(delay);
                }
                continue;
            }
        };
        let closing = shared.lifecycle.phase() >= Phase::Closing;
        if closing && shared.lifecycle.is_wake_up(peer) {
            // The drain's own connection: everything that reached the listener before it has
            // been accepted (the backlog is first in, first out). Closing the listener now
            // refuses only what comes later.
            break;
        }
        let _ = stream.set_nodelay(true);
        let open = shared.conns.open.fetch_add(1, AcqRel) + 1;
        let shared2 = Arc::clone(&shared);
        if open > shared.settings.max_connections {
            shared.metrics.reject(Rejected::MaxConnections);
            if open > shared.settings.max_connections.saturating_add(MAX_REFUSING) {
                debug!("dropping {peer}: {open} connections open, too many to answer (--max-connections)");
                drop(stream);
                shared.conns.open.fetch_sub(1, AcqRel);
                continue;
            }
            debug!("refusing {peer}: {open} connections open (--max-connections)");
            may::go!(move || {
                refuse(stream, peer, &shared2);
                shared2.conns.open.fetch_sub(1, AcqRel);
            });
            continue;
        }
        // Accepted, also during a drain: served to the end.
        spawn_connection(stream, peer, shared2);
        if closing && source == Source::Inherited {
            break; // see Source::Inherited
        }
    }
    shared.conns.accept_stopped.store(true, Release);
    info!("stopped accepting connections");
}

/// One coroutine per connection: `conn::serve` runs it until it closes.
fn spawn_connection(stream: may::net::TcpStream, peer: std::net::SocketAddr, shared: Arc<Shared>) {
    // Registered (busy) here, in the accept loop, not in the coroutine: a drain that stops
    // accepting and then waits for busy connections cannot miss one accepted just before.
    let slot = shared.conns.register(crate::platform::PeerProbe::new(&stream));
    may::go!(move || {
        crate::server::conn::serve(stream, peer, slot, &shared);
        shared.conns.open.fetch_sub(1, AcqRel);
    });
}

/// Answers 503 without reading the request, then closes gracefully: whatever the client is
/// still sending is drained for a moment so the answer is not lost to a reset. Counted and
/// logged (access line with `-` for what was not read) like any answer.
fn refuse(mut stream: may::net::TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut out = Vec::with_capacity(256);
    let refusal = Refusal::TooManyConnections;
    let resp = shared.app.answers().refusal(refusal);
    encode(&resp, &Framing { head_only: false, close: true, http10: false, request_id: None }, &mut out);
    shared.metrics.response(None, "other", resp.status(), Duration::ZERO, None);
    if access::enabled(&shared.settings) {
        AccessLine {
            peer: peer.ip(),
            method: "-",
            path: "-",
            route: shared.routes.label(None),
            status: resp.status(),
            duration: Duration::ZERO,
            budget: None,
            id: "-",
            worker: None,
            source: refusal.source(),
        }
        .log();
    }
    if stream.write_all(&out).is_ok() {
        crate::server::conn::linger_close(&mut stream);
    }
}

/// The first wait after a failed accept.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between two accepts while they keep failing.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long to wait after a failed `accept`, as Go's `net/http` server does: 5 ms, doubling
/// while failures go on, at most 1 s; a success resets it. An error that concerns one
/// connection only (it was aborted or reset before we took it, or the call was interrupted) is
/// retried at once. Failures are logged at most once a second, with how many were not.
pub(crate) struct AcceptBackoff {
    /// Which listener, for the log: `public` or `admin`.
    listener: &'static str,
    delay: Duration,
    /// Failures since the last success.
    failing: u64,
    log: OncePerSecond,
}

impl AcceptBackoff {
    pub fn new(listener: &'static str) -> AcceptBackoff {
        AcceptBackoff { listener, delay: Duration::ZERO, failing: 0, log: OncePerSecond::new() }
    }

    /// An accept failed with `e`: how long to wait before the next (`None`: retry at once).
    pub fn failed(&mut self, e: &std::io::Error, now_ns: u64) -> Option<Duration> {
        use std::io::ErrorKind::*;
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            debug!("{} listener: accept: {e} (retrying)", self.listener);
            return None;
        }
        self.delay = if self.delay.is_zero() { ACCEPT_BACKOFF_MIN } else { (self.delay * 2).min(ACCEPT_BACKOFF_MAX) };
        self.failing += 1;
        if let Some(held) = self.log.allow(now_ns) {
            let more = if held > 0 { format!(" ({held} more failures not logged)") } else { String::new() };
            error!(
                event = "accept_failed", listener = self.listener, suppressed = held, retry_ms = self.delay.as_millis() as u64;
                "accept failed on the {} listener: {e}; retrying in {} ms{more}",
                self.listener,
                self.delay.as_millis()
            );
        }
        Some(self.delay)
    }

    /// An accept succeeded: no more waiting (and a line if failures had been logged).
    pub fn succeeded(&mut self) {
        if self.failing > 0 {
            warn!(
                event = "accept_recovered", listener = self.listener, failures = self.failing;
                "accepting on the {} listener again after {} failed accepts",
                self.listener,
                self.failing
            );
            self.failing = 0;
        }
        self.delay = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_5_ms_to_1_s_and_resets_on_success() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let mut b = AcceptBackoff::new("test");
        let delays: Vec<u64> = (0..10).map(|i| b.failed(&emfile, i).unwrap().as_millis() as u64).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&emfile, 11), Some(ACCEPT_BACKOFF_MIN));
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&aborted, 12), None, "one connection's error: retried at once");
    }
}
