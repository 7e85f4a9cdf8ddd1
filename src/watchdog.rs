//! The watchdog: one thread that owns the timing of every in-flight request.
//!
//! Each request gets an [`Inflight`] record when it has been read. The hot path only does atomic
//! stores on it (state, thread, progress); the record reaches the watchdog through a lock-free
//! channel. Every tick the watchdog:
//!
//! 1. `expire()`: a queued request past its deadline is answered 503; a running one past its
//!    deadline (or stalled past its route's stall timeout) has its token fired and is answered 504
//!    right then, whatever its handler does, and a stand-in worker starts at once (outside a
//!    drain), so the pool does not run short while the handler decides;
//! 2. `abandon()`: a cancelled request whose handler is still running after the grace period
//!    loses its thread for good; the stand-in stays (a handler that returns in time has its
//!    thread rejoin only a short pool, else the thread exits: `pool::rejoin`);
//! 3. during a drain past `--graceful-timeout`, cancels whatever is left.
//!
//! It reads timestamps, flips atomics and sends on channels; it never blocks on a handler.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::dispatch::ReplySlot;
use crate::request::Request;
use crate::response::Response;
use crate::server::Shared;

/// Monotonic nanoseconds since the first use in this process.
pub(crate) mod clock {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// `quanta` reads the CPU's time-stamp counter (about 10 ns here, against 25 ns for
    /// `Instant::now`) when it is invariant, and falls back to the OS's monotonic clock otherwise.
    /// The hot path reads this clock several times per request.
    fn clock() -> &'static (quanta::Clock, u64) {
        static CLOCK: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
        CLOCK.get_or_init(|| {
            let c = quanta::Clock::new();
            let start = c.raw();
            (c, start)
        })
    }

    /// Now, as nanoseconds since the process's clock base.
    pub fn now_ns() -> u64 {
        let (c, start) = clock();
        c.delta_as_nanos(*start, c.raw())
    }

    /// The `Instant` for a clock value, taken relative to now, so that the two clocks' rates
    /// never need to agree over long spans.
    pub fn instant_at(ns: u64) -> Instant {
        let (now, t) = (now_ns(), Instant::now());
        if ns >= now {
            t + Duration::from_nanos(ns - now)
        } else {
            t.checked_sub(Duration::from_nanos(now - ns)).unwrap_or(t)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn clock_moves_forward_at_the_rate_of_instant() {
            let (c0, i0) = (now_ns(), Instant::now());
            std::thread::sleep(Duration::from_millis(100));
            let (c1, i1) = (now_ns(), Instant::now());
            assert!(c1 > c0);
            // Loose: a preempted thread between the paired reads must not fail it; a clock in
            // the wrong unit or stuck would.
            let (dc, di) = ((c1 - c0) as i64, (i1 - i0).as_nanos() as i64);
            assert!((dc - di).abs() < 20_000_000, "clock advanced {dc} ns while Instant advanced {di} ns");
        }

        #[test]
        fn instant_at_maps_clock_values_to_instants() {
            let now = now_ns();
            let later = instant_at(now + 1_000_000_000);
            let d = later.saturating_duration_since(Instant::now());
            assert!(d > Duration::from_millis(900) && d <= Duration::from_secs(1), "{d:?}");
            assert!(instant_at(now.saturating_sub(1_000_000_000)) <= Instant::now());
        }
    }
}

/// Where a request is in its life. Transitions are one atomic each; the watchdog and the worker
/// decide races with compare-and-swap.
pub(crate) mod state {
    pub const QUEUED: u8 = 0;
    pub const RUNNING: u8 = 1;
    /// Token fired, 504 sent, the handler has not returned yet (within the grace period).
    pub const CANCELLING: u8 = 2;
    /// Grace period over: the thread was given up (its stand-in, or a new worker, replaces it).
    pub const ABANDONED: u8 = 3;
    pub const DONE: u8 = 4;

    pub fn name(s: u8) -> &'static str {
        ["queued", "running", "cancelling", "abandoned", "done"].get(s as usize).copied().unwrap_or("?")
    }
}

/// [`Inflight::pool_slot`]: whether the request's thread still counts as a worker. The watchdog
/// (at the cancellation) and the worker (when a cancelled handler returns) race for it with one
/// compare-and-swap each, so a thread is never both replaced and kept.
pub(crate) mod slot {
    /// Counted in `vigil_worker_threads`, as every running request's thread is.
    pub const COUNTED: u8 = 0;
    /// The watchdog took the thread out of the count and started a stand-in.
    pub const DETACHED: u8 = 1;
    /// The handler returned first: the thread stays in the pool, no stand-in.
    pub const KEPT: u8 = 2;
}

/// Why a request was timed out (also the `reason` label of `vigil_request_timeouts_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutReason {
    Deadline = 0,
    Stall = 1,
    Queue = 2,
    Shutdown = 3,
}

impl TimeoutReason {
    pub const ALL: [TimeoutReason; 4] = [Self::Deadline, Self::Stall, Self::Queue, Self::Shutdown];
    pub fn label(self) -> &'static str {
        ["deadline", "stall", "queue", "shutdown"][self as usize]
    }
}

/// The cancellation token: a flag, a condvar for [`Ctx::sleep`](crate::Ctx::sleep) and the
/// callbacks registered with `on_cancel`.
pub(crate) struct Token {
    cancelled: AtomicBool,
    callbacks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    wake: Condvar,
}

impl Token {
    fn new() -> Self {
        Token { cancelled: AtomicBool::new(false), callbacks: Mutex::new(Vec::new()), wake: Condvar::new() }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Acquire)
    }

    /// Fires the token: wakes sleepers and runs the callbacks (each isolated from panics).
    pub fn cancel(&self) {
        let callbacks = {
            let mut g = self.callbacks.lock();
            if self.cancelled.swap(true, AcqRel) {
                return;
            }
            self.wake.notify_all();
            std::mem::take(&mut *g)
        };
        for cb in callbacks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)).is_err() {
                error!("an on_cancel callback panicked");
            }
        }
    }

    pub fn on_cancel(&self, cb: Box<dyn FnOnce() + Send>) {
        let mut g = self.callbacks.lock();
        if self.cancelled.load(Acquire) {
            drop(g);
            cb();
        } else {
            g.push(cb);
        }
    }

    /// Waits up to `d`; returns `true` if cancelled.
    pub fn wait(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut g = self.callbacks.lock();
        while !self.cancelled.load(Acquire) {
            if self.wake.wait_until(&mut g, end).timed_out() {
                break;
            }
        }
        self.cancelled.load(Acquire)
    }
}

/// What the connection coroutine receives for request `seq`.
/// One request from the moment it has been read until its handler is gone.
pub(crate) struct Inflight {
    pub req: Request,
    /// Index of the route in the app (`usize::MAX` for none).
    pub route: usize,
    /// The connection's sequence number of this request, to match the reply.
    pub seq: u64,
    pub state: AtomicU8,
    /// Set by whoever answers the client first (worker, watchdog, drain).
    answered: AtomicBool,
    /// When the request had been read: the deadline clock starts here.
    pub start_ns: u64,
    /// The absolute ceiling.
    pub deadline_ns: u64,
    /// Stall timeout in ns, 0 for none.
    pub stall_ns: u64,
    pub last_progress_ns: AtomicU64,
    /// When a worker picked it up (0 while queued).
    pub run_start_ns: AtomicU64,
    /// When the token was fired (0 if not).
    pub cancel_ns: AtomicU64,
    pub timeout_reason: AtomicU8,
    /// Worker thread number (0 while queued).
    pub thread: AtomicU32,
    /// Whether the thread running this request still counts as a worker: see [`slot`].
    pub pool_slot: AtomicU8,
    /// The worker started to stand in for this request's thread when it was cancelled (0: none).
    pub replaced_by: AtomicU32,
    pub stage: Mutex<Cow<'static, str>>,
    pub token: Token,
    /// The connection's reply slot (`None` for a detached record).
    reply: Option<Arc<ReplySlot>>,
    /// The connection's socket, polled by the watchdog to notice a client that went away.
    pub peer: Option<crate::platform::PeerProbe>,
}

impl Inflight {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        req: Request,
        route: usize,
        seq: u64,
        start_ns: u64,
        timeout: Duration,
        stall: Option<Duration>,
        reply: Option<Arc<ReplySlot>>,
        peer: Option<crate::platform::PeerProbe>,
    ) -> Self {
        Inflight {
            req,
            route,
            seq,
            state: AtomicU8::new(state::QUEUED),
            answered: AtomicBool::new(false),
            start_ns,
            deadline_ns: start_ns.saturating_add(timeout.as_nanos() as u64),
            stall_ns: stall.map_or(0, |d| d.as_nanos() as u64),
            last_progress_ns: AtomicU64::new(start_ns),
            run_start_ns: AtomicU64::new(0),
            cancel_ns: AtomicU64::new(0),
            timeout_reason: AtomicU8::new(u8::MAX),
            thread: AtomicU32::new(0),
            pool_slot: AtomicU8::new(slot::COUNTED),
            replaced_by: AtomicU32::new(0),
            stage: Mutex::new(Cow::Borrowed("")),
            token: Token::new(),
            reply,
            peer,
        }
    }

    /// A record with no server behind it, for [`Ctx::detached`](crate::Ctx::detached).
    pub fn detached(timeout: Duration) -> Self {
        let now = clock::now_ns();
        let mut me =
            Inflight::new(crate::Request::builder("GET", "/").build(), usize::MAX, 0, now, timeout, None, None, None);
        me.state = AtomicU8::new(state::RUNNING);
        me
    }

    /// The sooner of the ceiling and (for stall-watched routes) last progress + stall timeout.
    pub fn effective_deadline_ns(&self) -> u64 {
        if self.stall_ns == 0 {
            self.deadline_ns
        } else {
            self.deadline_ns.min(self.last_progress_ns.load(Relaxed).saturating_add(self.stall_ns))
        }
    }

    pub fn is_answered(&self) -> bool {
        self.answered.load(Acquire)
    }

    /// Sends `resp` to the client unless someone already answered. Returns whether it did.
    pub fn answer(&self, resp: Response, shared: &Shared) -> bool {
        if self.answered.compare_exchange(false, true, AcqRel, Acquire).is_err() {
            return false;
        }
        shared.metrics.requests_in_flight.fetch_sub(1, Relaxed);
        if let Some(slot) = &self.reply {
            slot.put(self.seq, resp);
        }
        true
    }

    pub fn elapsed_secs(&self, now: u64) -> f64 {
        now.saturating_sub(self.start_ns) as f64 / 1e9
    }

    pub fn stage_string(&self) -> String {
        self.stage.lock().to_string()
    }

    pub fn route_name<'a>(&self, shared: &'a Shared) -> &'a str {
        shared.app.route_name(self.route)
    }
}

/// A timeout, kept for the dashboard's "recent timeouts".
#[derive(Clone, Debug)]
#[allow(dead_code)] // read by the admin dashboard
pub(crate) struct TimeoutRecord {
    pub at: std::time::SystemTime,
    pub id: String,
    pub method: String,
    pub path: String,
    pub route: String,
    pub reason: &'static str,
    pub elapsed: f64,
    pub deadline: f64,
    pub stage: String,
    pub thread: u32,
    /// Filled in later: "honored", "abandoned", or "" while undecided.
    pub outcome: &'static str,
}

/// Starts the watchdog thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: crossbeam_channel::Receiver<Weak<Inflight>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("vigil-watchdog".into())
        .spawn(move || run(shared, rx))
        .expect("spawn watchdog thread")
}

fn run(shared: Arc<Shared>, rx: crossbeam_channel::Receiver<Weak<Inflight>>) {
    let tick = shared.settings.watchdog_tick;
    let mut ticks: u64 = 0;
    loop {
        shared.metrics.watchdog_heartbeat_ns.store(clock::now_ns(), Relaxed);
        {
            let mut list = shared.inflight.lock();
            list.extend(rx.try_iter());
            let now = clock::now_ns();
            let grace = shared.settings.cancel_grace.as_nanos() as u64;
            let drain_at = shared.drain_deadline_ns.load(Acquire);
            let check_peers = ticks.is_multiple_of(10);
            list.retain(|w| {
                // Gone (every owner dropped it) or done: forget it. A weak reference can't keep
                // a finished request alive, so the watchdog never frees one.
                let Some(r) = w.upgrade().filter(|r| r.state.load(Acquire) != state::DONE) else {
                    return false;
                };
                expire(&shared, &r, now, drain_at);
                abandon(&shared, &r, now, grace);
                if check_peers {
                    notice_gone_client(&r, now);
                }
                true
            });
        }
        if shared.watchdog_stop.load(Acquire) {
            log_unfinished_at_stop(&shared);
            return;
        }
        ticks += 1;
        std::thread::sleep(tick);
    }
}

/// Pass 1: deadlines, stalls and the end of a drain.
fn expire(shared: &Arc<Shared>, r: &Inflight, now: u64, drain_at: u64) {
    let draining_over = drain_at != 0 && now >= drain_at;
    match r.state.load(Acquire) {
        state::QUEUED if r.is_answered() => {}
        // A drain answers queued requests at once (they never start); running ones get until
        // the drain deadline.
        state::QUEUED if now >= r.deadline_ns || drain_at != 0 => {
            let draining = drain_at != 0 && now < r.deadline_ns;
            let reason = if draining { TimeoutReason::Shutdown } else { TimeoutReason::Queue };
            let msg = if draining { "server shutting down" } else { "deadline passed while queued" };
            if r.answer(Response::error(503, msg).with_header("Retry-After", "1"), shared) {
                r.timeout_reason.store(reason as u8, Relaxed);
                shared.metrics.timeout(r.route, reason);
                let (elapsed, deadline) = (r.elapsed_secs(now), r.deadline_ns.saturating_sub(r.start_ns) as f64 / 1e9);
                warn!(
                    event = "timeout", id = r.req.id(), method = r.req.method(), path = r.req.path(),
                    route = r.route_name(shared), reason = reason.label(), elapsed, deadline, stage = "",
                    status = 503u16, outcome = "not_run";
                    "timeout id={} {} {} route={} reason={} elapsed={elapsed:.3}s deadline={deadline:.3}s: {msg}; answered 503, handler never ran",
                    r.req.id(),
                    r.req.method(),
                    r.req.path(),
                    r.route_name(shared),
                    reason.label(),
                );
                shared.record_timeout(r, reason, now);
            }
        }
        state::RUNNING => {
            let reason = if now >= r.deadline_ns {
                TimeoutReason::Deadline
            } else if r.stall_ns != 0 && now >= r.last_progress_ns.load(Relaxed).saturating_add(r.stall_ns) {
                TimeoutReason::Stall
            } else if draining_over {
                TimeoutReason::Shutdown
            } else {
                return;
            };
            if r.state.compare_exchange(state::RUNNING, state::CANCELLING, AcqRel, Acquire).is_err() {
                return; // the handler just returned
            }
            r.cancel_ns.store(now, Release);
            r.timeout_reason.store(reason as u8, Relaxed);
            shared.metrics.timeout(r.route, reason);
            let deadline = (r.effective_deadline_ns().saturating_sub(r.start_ns)) as f64 / 1e9;
            let (elapsed, stage) = (r.elapsed_secs(now), r.stage_string());
            let thread = format!("vigil-worker-{}", r.thread.load(Relaxed));
            warn!(
                event = "timeout", id = r.req.id(), method = r.req.method(), path = r.req.path(),
                route = r.route_name(shared), reason = reason.label(), elapsed, deadline, stage = stage.as_str(),
                thread = thread.as_str(), status = 504u16, outcome = "pending";
                "timeout id={} {} {} route={} reason={} elapsed={elapsed:.3}s deadline={deadline:.3}s stage={stage:?} thread={thread}: cancelling, answered 504 (outcome follows: honored or abandoned)",
                r.req.id(),
                r.req.method(),
                r.req.path(),
                r.route_name(shared),
                reason.label(),
            );
            let msg = match reason {
                TimeoutReason::Stall => "request stalled: no progress within the route's stall timeout",
                TimeoutReason::Shutdown => "server shutting down: request cancelled",
                _ => "request exceeded its deadline",
            };
            r.answer(Response::error(504, msg), shared);
            shared.record_timeout(r, reason, now);
            r.token.cancel();
            // The thread is lost to the pool until its handler returns, which may take the whole
            // grace period or forever: a stand-in starts now, so a burst of hung requests does
            // not leave the pool short for --cancel-grace. Not while draining: the pool is
            // stopping.
            if drain_at == 0 && r.pool_slot.compare_exchange(slot::COUNTED, slot::DETACHED, AcqRel, Acquire).is_ok() {
                shared.metrics.worker_threads.fetch_sub(1, Relaxed);
                r.replaced_by.store(crate::pool::spawn_worker(shared), Release);
            }
        }
        _ => {}
    }
}

/// Pass 2: a cancelled handler still running after the grace period loses its thread.
fn abandon(shared: &Arc<Shared>, r: &Inflight, now: u64, grace: u64) {
    if r.state.load(Acquire) != state::CANCELLING || now < r.cancel_ns.load(Acquire).saturating_add(grace) {
        return;
    }
    if r.state.compare_exchange(state::CANCELLING, state::ABANDONED, AcqRel, Acquire).is_err() {
        return; // it honored the cancellation just now
    }
    let m = &shared.metrics;
    m.threads_abandoned_total.fetch_add(1, Relaxed);
    let alive = m.threads_abandoned_alive.fetch_add(1, Relaxed) + 1;
    shared.set_timeout_outcome(r.req.id(), "abandoned");
    // Usually the thread was taken out of the count and given a stand-in at the cancellation
    // (see `expire`); otherwise (a cancellation by the drain) that happens now.
    let replacement = if r.pool_slot.load(Acquire) == slot::DETACHED {
        r.replaced_by.load(Acquire)
    } else {
        m.worker_threads.fetch_sub(1, Relaxed);
        crate::pool::spawn_worker(shared)
    };
    m.threads_replaced_total.fetch_add(1, Relaxed);
    let thread = format!("vigil-worker-{}", r.thread.load(Relaxed));
    let (stage, after) = (r.stage_string(), now.saturating_sub(r.cancel_ns.load(Relaxed)) as f64 / 1e9);
    warn!(
        event = "timeout_outcome", outcome = "abandoned", id = r.req.id(), route = r.route_name(shared),
        stage = stage.as_str(), thread = thread.as_str(), after_cancel = after, replacement, abandoned_alive = alive;
        "abandoned thread {thread} stuck in id={} route={} stage={stage:?} for {after:.3}s past its cancellation (still running); replaced by vigil-worker-{replacement}; abandoned threads alive: {alive}",
        r.req.id(),
        r.route_name(shared),
    );
    let max = shared.settings.effective_max_abandoned() as i64;
    if alive > max {
        error!(
            "abandoned threads alive ({alive}) exceed --max-abandoned ({max}): readiness now fails until some finish"
        );
    }
}

/// At shutdown, every timed-out handler still running gets its last word: no outcome line would
/// follow otherwise (the process exits with its thread).
fn log_unfinished_at_stop(shared: &Shared) {
    for r in shared.inflight.lock().iter().filter_map(Weak::upgrade) {
        let st = r.state.load(Acquire);
        if st != state::CANCELLING && st != state::ABANDONED {
            continue;
        }
        let thread = format!("vigil-worker-{}", r.thread.load(Relaxed));
        let stage = r.stage_string();
        // An abandoned one already had its outcome line; a cancelling one gets it now.
        let (event, why) = if st == state::ABANDONED {
            ("abandoned_at_exit", "abandoned earlier")
        } else {
            ("timeout_outcome", "cancelled, still within its grace period")
        };
        warn!(
            event, outcome = "still_running_at_exit", id = r.req.id(), route = r.route_name(shared),
            stage = stage.as_str(), thread = thread.as_str();
            "handler of id={} route={} on {thread} still running at shutdown ({why}, stage={stage:?}); it ends with the process",
            r.req.id(),
            r.route_name(shared),
        );
    }
}

/// Fires the token of a running request whose client has gone away (like Go's request context).
fn notice_gone_client(r: &Inflight, now: u64) {
    if r.state.load(Acquire) != state::RUNNING || now.saturating_sub(r.start_ns) < 50_000_000 || r.is_answered() {
        return;
    }
    if let Some(p) = &r.peer {
        if p.is_gone() {
            info!("client of id={} went away; cancelling its handler", r.req.id());
            r.token.cancel();
        }
    }
}
