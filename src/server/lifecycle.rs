//! The server's life: running, draining since a given moment (first for `--shutdown-delay`
//! with the listener still open, then closing: listener closed, accepted work finishing),
//! stopped. One state, owned here, instead of flags scattered over the components; the
//! transitions wake whoever waits for them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::runtime::clock;
use crate::runtime::state::{u8_enum, AtomicEnum};

/// The exit status of a `vigil` process that reached its thread ceiling and exited for its
/// supervisor to restart it (`--exit-on-thread-ceiling`): 75, `EX_TEMPFAIL` in sysexits.h
/// ("temporary failure, try again"), which no other path of vigil uses. So systemd
/// (`RestartForceExitStatus=75`), Kubernetes (the container's last `exitCode`), the Windows
/// service manager (`vigil::service::ExitStatus::ThreadCeiling`) and alerts can tell it from a
/// crash (101, Rust's panic status) or a bad configuration (1, 2).
///
/// ```
/// assert_eq!(vigil::EXIT_THREAD_CEILING, 75);
/// ```
pub const EXIT_THREAD_CEILING: u8 = 75;

/// Why a server stopped ([`ServerHandle::wait`](crate::ServerHandle::wait) returns it).
///
/// ```
/// use vigil::StopCause;
/// assert_eq!(StopCause::ThreadCeiling.exit_status(), vigil::EXIT_THREAD_CEILING);
/// assert_eq!(StopCause::Requested.exit_status(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopCause {
    /// A drain was asked for: a signal, a console event, `shutdown()`.
    Requested,
    /// The thread ceiling kept the pool short of workers for `--cancel-grace` and
    /// `--exit-on-thread-ceiling` is on: the server drained to be restarted.
    ThreadCeiling,
}

impl StopCause {
    /// The exit status the `vigil` binary (and [`Server::serve`](crate::Server::serve)) ends
    /// with: 0, or [`EXIT_THREAD_CEILING`](crate::EXIT_THREAD_CEILING).
    pub fn exit_status(self) -> u8 {
        match self {
            StopCause::Requested => 0,
            StopCause::ThreadCeiling => EXIT_THREAD_CEILING,
        }
    }
}

u8_enum! {
    /// Where the server is in its life.
    pub(crate) enum Phase {
        /// Serving.
        Running = 0 => "running",
        /// A drain began: readiness fails; for `--shutdown-delay` everything else works as
        /// usual, except that responses close their connection.
        Draining = 1 => "draining",
        /// The listener is closed and idle connections too; what was accepted is finished.
        Closing = 2 => "closing",
        /// The drain is over: workers and the watchdog have stopped.
        Stopped = 3 => "stopped",
    }
}

pub(crate) struct Lifecycle {
    phase: AtomicEnum<Phase>,
    /// Clock ns when the drain began (0 before).
    drain_started_ns: AtomicU64,
    /// Clock ns when what is still queued or running gets cancelled (`--graceful-timeout` after
    /// the drain began; `u64::MAX` before).
    cancel_at_ns: AtomicU64,
    /// The local address of the drain's own connection to the listener: once the accept loop
    /// gets it, every connection that reached the listener before it has been accepted.
    wake_up: parking_lot::Mutex<Option<SocketAddr>>,
    /// A drain has been asked for (by a signal, a handle, a service stop, the thread ceiling),
    /// and why: the first request's cause.
    requested: Mutex<Option<StopCause>>,
    /// Set with `requested`, readable without its lock (readiness fails from that moment).
    asked: AtomicBool,
    wake: Condvar,
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            phase: AtomicEnum::new(Phase::Running),
            drain_started_ns: AtomicU64::new(0),
            cancel_at_ns: AtomicU64::new(u64::MAX),
            wake_up: parking_lot::Mutex::new(None),
            requested: Mutex::new(None),
            asked: AtomicBool::new(false),
            wake: Condvar::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.load(Acquire)
    }

    /// `true` once a drain has begun (or the server stopped).
    pub fn is_draining(&self) -> bool {
        self.phase() != Phase::Running
    }

    /// When the drain began, if it has.
    pub fn drain_started_ns(&self) -> Option<u64> {
        Some(self.drain_started_ns.load(Acquire)).filter(|&t| t != 0)
    }

    /// Asks for a drain: wakes the server's lifecycle thread and returns at once. Idempotent
    /// (the first cause given stays); allocates nothing and starts no thread, so it is safe
    /// from a signal handler's thread and at the process's thread limit.
    pub fn request_drain(&self, cause: StopCause) {
        let mut r = self.requested.lock();
        r.get_or_insert(cause);
        self.asked.store(true, Release);
        self.wake.notify_all();
    }

    /// Whether a drain has been asked for (it may not have begun yet).
    pub fn drain_requested(&self) -> bool {
        self.asked.load(Acquire)
    }

    /// Blocks until a drain is asked for.
    pub fn wait_for_request(&self) {
        let mut r = self.requested.lock();
        while r.is_none() {
            self.wake.wait(&mut r);
        }
    }

    /// Blocks until a drain is asked for (`true`) or `d` has passed (`false`).
    pub fn wait_for_request_for(&self, d: Duration) -> bool {
        let mut r = self.requested.lock();
        if r.is_none() {
            self.wake.wait_for(&mut r, d);
        }
        r.is_some()
    }

    /// Why the drain was asked for (`Requested` if it was not).
    pub fn cause(&self) -> StopCause {
        self.requested.lock().unwrap_or(StopCause::Requested)
    }

    /// `Running → Draining`, stamping when, with what is left cancelled `graceful` later.
    /// Returns that moment (clock ns), or `None` if a drain had begun already.
    pub fn begin_drain(&self, graceful: Duration) -> Option<u64> {
        if !self.phase.transition(Phase::Running, Phase::Draining) {
            return None;
        }
        // Until these are stored, a reader sees a drain with no deadline yet: harmless.
        let now = clock::now_ns().max(1);
        let cancel_at = now.saturating_add(clock::ns(graceful));
        self.cancel_at_ns.store(cancel_at, Release);
        self.drain_started_ns.store(now, Release);
        Some(cancel_at)
    }

    /// `true` once the drain's `--graceful-timeout` has run out: new requests get 503.
    pub fn past_graceful_timeout(&self, now: u64) -> bool {
        self.is_draining() && now >= self.cancel_at_ns.load(Acquire)
    }

    /// `Draining → Closing`: the listener closes once the accept loop has taken everything that
    /// reached it before `wake_up`, the drain's own connection (whose local address this is).
    pub fn begin_closing(&self, wake_up: Option<SocketAddr>) {
        *self.wake_up.lock() = wake_up;
        self.phase.transition(Phase::Draining, Phase::Closing);
    }

    /// Whether `peer` is the drain's own wake-up connection.
    pub fn is_wake_up(&self, peer: SocketAddr) -> bool {
        *self.wake_up.lock() == Some(peer)
    }

    /// Waits `d` (the shutdown delay).
    pub fn pause(&self, d: Duration) {
        let mut r = self.requested.lock();
        let end = std::time::Instant::now() + d;
        while !self.wake.wait_until(&mut r, end).timed_out() {}
    }

    /// The drain is over: wakes every [`wait_stopped`](Lifecycle::wait_stopped).
    pub fn mark_stopped(&self) {
        let _r = self.requested.lock();
        self.phase.store(Phase::Stopped, Release);
        self.wake.notify_all();
    }

    /// Blocks until the server has stopped.
    pub fn wait_stopped(&self) {
        let mut r = self.requested.lock();
        while self.phase() != Phase::Stopped {
            self.wake.wait(&mut r);
        }
    }

    /// [`wait_stopped`](Lifecycle::wait_stopped) for at most `timeout`: `true` if the server
    /// has stopped. (A Windows service reports its drain's progress between two waits.)
    pub fn wait_stopped_for(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut r = self.requested.lock();
        while self.phase() != Phase::Stopped {
            if self.wake.wait_until(&mut r, deadline).timed_out() {
                return self.phase() == Phase::Stopped;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_drain_begins_once_and_waiters_wake_when_it_is_asked_for_and_when_it_ends() {
        let l = Arc::new(Lifecycle::new());
        assert_eq!(l.phase(), Phase::Running);
        assert!(!l.wait_stopped_for(Duration::from_millis(20)), "running: the wait times out");
        let l2 = Arc::clone(&l);
        let supervisor = std::thread::spawn(move || {
            l2.wait_for_request();
            assert!(l2.begin_drain(Duration::from_secs(30)).is_some());
            assert!(l2.begin_drain(Duration::from_secs(30)).is_none(), "a second drain does not begin");
            assert!(!l2.past_graceful_timeout(clock::now_ns()));
            assert!(l2.past_graceful_timeout(u64::MAX));
            l2.begin_closing(None);
            assert_eq!(l2.phase(), Phase::Closing);
            l2.mark_stopped();
        });
        l.request_drain(StopCause::ThreadCeiling);
        l.request_drain(StopCause::Requested); // idempotent: the first cause stays
        l.wait_stopped();
        assert!(l.wait_stopped_for(Duration::ZERO), "stopped: returns at once");
        supervisor.join().unwrap();
        assert_eq!(l.phase(), Phase::Stopped);
        assert_eq!(l.cause(), StopCause::ThreadCeiling);
        assert!(l.is_draining() && l.drain_started_ns().is_some());
    }
}
