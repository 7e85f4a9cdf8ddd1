//! The cancellation token of one request: a flag, a condvar that wakes `Ctx::sleep`, and the
//! callbacks registered with `Ctx::on_cancel`.
//!
//! Firing the token ([`Token::fire`]) never runs a callback: it hands them back as
//! [`Callbacks`], and the caller decides where they run. The watchdog sends them to the offload
//! threads (`runtime::offload`), so a callback that blocks can delay no other request's 504; a
//! handler that cancels its own request runs them on its own thread.

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A callback registered with `Ctx::on_cancel`.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

pub(crate) struct Token {
    cancelled: AtomicBool,
    /// Registered callbacks; also the mutex of `wake`.
    callbacks: Mutex<Registry>,
    wake: Condvar,
}

/// The callbacks still armed, each with the number `disarm` knows it by.
#[derive(Default)]
struct Registry {
    next: u64,
    armed: Vec<(u64, Callback)>,
}

/// What became of a callback handed to [`Token::on_cancel`].
pub(crate) enum Registered {
    /// Armed, under this number (see [`Token::disarm`]).
    Armed(u64),
    /// The token had fired already: the callback comes back for the caller to run.
    Fired(Callback),
}

/// The callbacks a fired token handed back, still to be run.
#[must_use = "callbacks of a fired token must be run (Callbacks::run) or handed to someone who will"]
pub(crate) struct Callbacks(Vec<Callback>);

impl Callbacks {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs each callback on the calling thread, a panic in one isolated from the others.
    pub fn run(self) {
        for cb in self.0 {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)).is_err() {
                log::error!(target: "vigil::ctx", "an on_cancel callback panicked");
            }
        }
    }
}

impl Token {
    pub fn new() -> Self {
        Token { cancelled: AtomicBool::new(false), callbacks: Mutex::new(Registry::default()), wake: Condvar::new() }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Acquire)
    }

    /// Fires the token: sets the flag and wakes sleepers. Returns the registered callbacks for
    /// the caller to run (empty when none were registered or the token had already fired).
    pub fn fire(&self) -> Callbacks {
        let mut g = self.callbacks.lock();
        if self.cancelled.swap(true, AcqRel) {
            return Callbacks(Vec::new());
        }
        self.wake.notify_all();
        Callbacks(std::mem::take(&mut g.armed).into_iter().map(|(_, cb)| cb).collect())
    }

    /// Registers `cb` to run when the token fires, unless disarmed first. If it has fired
    /// already, `cb` comes back for the caller to run at once.
    pub fn on_cancel(&self, cb: Callback) -> Registered {
        let mut g = self.callbacks.lock();
        if self.cancelled.load(Acquire) {
            return Registered::Fired(cb);
        }
        let id = g.next;
        g.next += 1;
        g.armed.push((id, cb));
        Registered::Armed(id)
    }

    /// Disarms callback `id`: it will not run. `false` if it is gone already (the token fired
    /// and handed it over, or it was disarmed before).
    pub fn disarm(&self, id: u64) -> bool {
        let mut g = self.callbacks.lock();
        let before = g.armed.len();
        g.armed.retain(|(i, _)| *i != id);
        g.armed.len() != before
    }

    /// Waits up to `d`; returns `true` if the token fired.
    pub fn wait(&self, d: Duration) -> bool {
        let end = Instant::now().checked_add(d);
        let mut g = self.callbacks.lock();
        while !self.cancelled.load(Acquire) {
            let timed_out = match end {
                Some(end) => self.wake.wait_until(&mut g, end).timed_out(),
                None => {
                    self.wake.wait(&mut g);
                    false
                }
            };
            if timed_out {
                break;
            }
        }
        self.cancelled.load(Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn firing_hands_back_the_callbacks_once_and_runs_none() {
        let t = Token::new();
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let ran = Arc::clone(&ran);
            let r = t.on_cancel(Box::new(move || {
                ran.fetch_add(1, SeqCst);
            }));
            assert!(matches!(r, Registered::Armed(_)));
        }
        let cbs = t.fire();
        assert!(t.is_cancelled());
        assert_eq!(ran.load(SeqCst), 0, "fire() itself runs no callback");
        assert!(t.fire().is_empty(), "a second fire hands back nothing");
        cbs.run();
        assert_eq!(ran.load(SeqCst), 2);
    }

    #[test]
    fn a_callback_registered_after_firing_comes_back_to_the_caller() {
        let t = Token::new();
        let _ = t.fire();
        assert!(matches!(t.on_cancel(Box::new(|| {})), Registered::Fired(_)));
    }

    #[test]
    fn a_disarmed_callback_never_runs() {
        let t = Token::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let Registered::Armed(id) = t.on_cancel(Box::new(move || {
            r.fetch_add(1, SeqCst);
        })) else {
            panic!("not fired yet")
        };
        assert!(t.disarm(id));
        assert!(!t.disarm(id), "disarmed once");
        let cbs = t.fire();
        assert!(cbs.is_empty());
        cbs.run();
        assert_eq!(ran.load(SeqCst), 0);
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others() {
        let t = Token::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let _ = t.on_cancel(Box::new(|| panic!("boom")));
        let r = Arc::clone(&ran);
        let _ = t.on_cancel(Box::new(move || {
            r.fetch_add(1, SeqCst);
        }));
        t.fire().run();
        assert_eq!(ran.load(SeqCst), 1);
    }

    #[test]
    fn wait_returns_early_when_fired_from_another_thread() {
        let t = Arc::new(Token::new());
        let t2 = Arc::clone(&t);
        // Fired before or during the wait, alike: the flag is checked under the condvar's lock.
        let firer = std::thread::spawn(move || drop(t2.fire()));
        assert!(t.wait(Duration::from_secs(30)));
        firer.join().unwrap();
        assert!(!Token::new().wait(Duration::from_millis(1)), "an unfired token times out");
    }
}
