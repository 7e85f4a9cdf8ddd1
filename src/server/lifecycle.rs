//! The server's life: running, draining since a given moment, stopped. One state, owned here,
//! instead of flags scattered over the components; the transitions wake whoever waits for them.

use std::sync::atomic::{AtomicU64, Ordering::*};

use parking_lot::{Condvar, Mutex};

use crate::runtime::clock;
use crate::runtime::state::{u8_enum, AtomicEnum};

u8_enum! {
    /// Where the server is in its life.
    pub(crate) enum Phase {
        /// Serving.
        Running = 0 => "running",
        /// A drain began: readiness fails, the listener is closing, in-flight requests finish.
        Draining = 1 => "draining",
        /// The drain is over: workers and the watchdog have stopped.
        Stopped = 2 => "stopped",
    }
}

pub(crate) struct Lifecycle {
    phase: AtomicEnum<Phase>,
    /// Clock ns when the drain began (0 before).
    drain_started_ns: AtomicU64,
    /// A drain has been asked for (by a signal, a handle, a service stop) and not yet begun.
    requested: Mutex<bool>,
    wake: Condvar,
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            phase: AtomicEnum::new(Phase::Running),
            drain_started_ns: AtomicU64::new(0),
            requested: Mutex::new(false),
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

    /// Asks for a drain: wakes the server's lifecycle thread and returns at once. Idempotent;
    /// allocates nothing and starts no thread, so it is safe from a signal handler's thread and
    /// at the process's thread limit.
    pub fn request_drain(&self) {
        let mut r = self.requested.lock();
        *r = true;
        self.wake.notify_all();
    }

    /// Blocks until a drain is asked for.
    pub fn wait_for_request(&self) {
        let mut r = self.requested.lock();
        while !*r {
            self.wake.wait(&mut r);
        }
    }

    /// `Running → Draining`, stamping when. `false` if a drain had begun already.
    pub fn begin_drain(&self) -> bool {
        if !self.phase.transition(Phase::Running, Phase::Draining) {
            return false;
        }
        self.drain_started_ns.store(clock::now_ns().max(1), Release);
        true
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_drain_begins_once_and_waiters_wake_when_it_is_asked_for_and_when_it_ends() {
        let l = Arc::new(Lifecycle::new());
        assert_eq!(l.phase(), Phase::Running);
        let l2 = Arc::clone(&l);
        let supervisor = std::thread::spawn(move || {
            l2.wait_for_request();
            assert!(l2.begin_drain());
            assert!(!l2.begin_drain(), "a second drain does not begin");
            l2.mark_stopped();
        });
        l.request_drain();
        l.request_drain(); // idempotent
        l.wait_stopped();
        supervisor.join().unwrap();
        assert_eq!(l.phase(), Phase::Stopped);
        assert!(l.is_draining() && l.drain_started_ns().is_some());
    }
}
