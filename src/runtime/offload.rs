//! Work the watchdog hands off because it might block: the `on_cancel` callbacks of the
//! requests it cancels, and its log records (a logger is user code too: an app may install one
//! that writes synchronously to a stalled pipe).
//!
//! A few "vigil-offload" threads take tasks from an unbounded channel. Normally one thread does
//! it all. When every thread has been stuck on one task for longer than [`STUCK`] while tasks
//! wait, the watchdog's tick ([`Offload::check`]) starts another (up to [`MAX_THREADS`]), so a
//! callback that blocks for 10 s delays the others by about [`STUCK`], and no 504 at all (the
//! watchdog answers before it hands the callbacks over). Extra threads exit after
//! [`IDLE_EXIT`] without work.
//!
//! Callbacks are never dropped (there is at most one set per request). Log tasks are: past
//! [`MAX_QUEUED_LOGS`] waiting, new ones are counted in `dropped_logs` and discarded.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::runtime::clock;
use crate::runtime::token::Callbacks;

/// How long every offload thread must have been on its current task, with more waiting, before
/// another thread starts.
pub(crate) const STUCK: Duration = Duration::from_millis(50);
/// At most this many offload threads (each one is stuck on a task when the next one starts).
pub(crate) const MAX_THREADS: usize = 8;
/// An extra offload thread exits after this long without a task.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(2);
/// Log tasks waiting beyond this many are dropped (and counted).
pub(crate) const MAX_QUEUED_LOGS: usize = 10_000;

enum Task {
    Callbacks(Callbacks),
    Log(Box<dyn FnOnce() + Send>),
}

struct Counts {
    threads: AtomicUsize,
    busy: AtomicUsize,
    /// Clock ns when a thread last took or finished a task.
    last_progress_ns: AtomicU64,
    queued_logs: AtomicUsize,
    dropped_logs: AtomicU64,
    next_id: AtomicU32,
}

/// The offload threads and their queue. Dropping it lets the threads finish what is queued,
/// then exit.
pub(crate) struct Offload {
    tx: Sender<Task>,
    rx: Receiver<Task>,
    counts: Arc<Counts>,
}

impl Offload {
    /// Starts the first offload thread.
    pub fn start() -> std::io::Result<Offload> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(Counts {
            threads: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            last_progress_ns: AtomicU64::new(clock::now_ns()),
            queued_logs: AtomicUsize::new(0),
            dropped_logs: AtomicU64::new(0),
            next_id: AtomicU32::new(0),
        });
        let me = Offload { tx, rx, counts };
        me.spawn_thread()?;
        Ok(me)
    }

    /// Runs `callbacks` on an offload thread.
    pub fn run_callbacks(&self, callbacks: Callbacks) {
        if !callbacks.is_empty() {
            // The receiver lives in `self`, so the channel is never disconnected here.
            let _ = self.tx.send(Task::Callbacks(callbacks));
        }
    }

    /// Runs `log` (which emits log records) on an offload thread, unless too many are waiting.
    pub fn log(&self, log: impl FnOnce() + Send + 'static) {
        if self.counts.queued_logs.fetch_add(1, Relaxed) >= MAX_QUEUED_LOGS {
            self.counts.queued_logs.fetch_sub(1, Relaxed);
            self.counts.dropped_logs.fetch_add(1, Relaxed);
            return;
        }
        let _ = self.tx.send(Task::Log(Box::new(log)));
    }

    /// Called every watchdog tick: starts another thread when every one is stuck and tasks
    /// wait (or when none is running, after a failed start). Never blocks.
    pub fn check(&self, now: u64) {
        let c = &self.counts;
        let threads = c.threads.load(Acquire);
        let stuck = !self.rx.is_empty()
            && c.busy.load(Acquire) >= threads
            && now.saturating_sub(c.last_progress_ns.load(Acquire)) >= clock::ns(STUCK);
        if threads == 0 || (stuck && threads < MAX_THREADS) {
            c.last_progress_ns.store(now, Release); // at most one start per STUCK
            let _ = self.spawn_thread();
        }
    }

    /// Offload threads running now.
    pub fn threads(&self) -> usize {
        self.counts.threads.load(Relaxed)
    }

    /// Log tasks dropped because too many were waiting.
    pub fn dropped_logs(&self) -> u64 {
        self.counts.dropped_logs.load(Relaxed)
    }

    fn spawn_thread(&self) -> std::io::Result<()> {
        let c = &self.counts;
        let id = c.next_id.fetch_add(1, Relaxed) + 1;
        c.threads.fetch_add(1, AcqRel);
        let (rx, counts) = (self.rx.clone(), Arc::clone(&self.counts));
        let spawned =
            std::thread::Builder::new().name(format!("vigil-offload-{id}")).spawn(move || offload_thread(rx, counts));
        if let Err(e) = &spawned {
            c.threads.fetch_sub(1, AcqRel);
            log::error!(target: "vigil::watchdog", "could not start an offload thread: {e}");
        }
        spawned.map(drop)
    }
}

fn offload_thread(rx: Receiver<Task>, c: Arc<Counts>) {
    loop {
        let task = match rx.recv_timeout(IDLE_EXIT) {
            Ok(t) => t,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Extra threads leave when idle; the last one stays.
                let n = c.threads.load(Acquire);
                if n > 1 && c.threads.compare_exchange(n, n - 1, AcqRel, Acquire).is_ok() {
                    return;
                }
                continue;
            }
        };
        c.busy.fetch_add(1, AcqRel);
        c.last_progress_ns.store(clock::now_ns(), Release);
        match task {
            Task::Callbacks(cbs) => cbs.run(),
            Task::Log(f) => {
                c.queued_logs.fetch_sub(1, Relaxed);
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                    // A logger that panics: nothing more to say, and nowhere to say it.
                }
            }
        }
        c.last_progress_ns.store(clock::now_ns(), Release);
        c.busy.fetch_sub(1, AcqRel);
    }
    c.threads.fetch_sub(1, AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::token::Token;
    use std::sync::mpsc;
    use std::time::Instant;

    fn callbacks(f: impl FnOnce() + Send + 'static) -> Callbacks {
        let t = Token::new();
        assert!(matches!(t.on_cancel(Box::new(f)), crate::runtime::token::Registered::Armed(_)));
        t.fire()
    }

    fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::yield_now();
        }
        f()
    }

    #[test]
    fn a_blocked_callback_gets_a_second_thread_for_the_next_one() {
        let off = Offload::start().unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        off.run_callbacks(callbacks(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv(); // blocks until the test releases it
        }));
        started_rx.recv_timeout(Duration::from_secs(10)).expect("first callback started");
        let (done_tx, done_rx) = mpsc::channel();
        off.run_callbacks(callbacks(move || done_tx.send(()).unwrap()));
        // The watchdog's tick: nothing is stuck yet, then (past STUCK) the second thread starts.
        off.check(clock::now_ns());
        let stuck_at = clock::now_ns() + clock::ns(STUCK);
        assert!(wait_until(Duration::from_secs(10), || {
            off.check(clock::now_ns().max(stuck_at));
            off.threads() >= 2
        }));
        done_rx.recv_timeout(Duration::from_secs(10)).expect("second callback ran while the first was blocked");
        release_tx.send(()).unwrap();
    }

    #[test]
    fn log_tasks_beyond_the_bound_are_dropped_and_counted() {
        let off = Offload::start().unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel();
        off.log(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        for _ in 0..MAX_QUEUED_LOGS + 5 {
            off.log(|| {});
        }
        assert_eq!(off.dropped_logs(), 5);
        release_tx.send(()).unwrap();
    }
}
