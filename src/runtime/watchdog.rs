//! The watchdog: one thread that owns the timing of every in-flight request.
//!
//! Each request is put on its list (`runtime::watchlist`: weak references, in shards) when it
//! is queued, and taken off by its connection once it is done, or by the sweep.
//! Every `--watchdog-tick` the watchdog
//!
//! 1. **decides**: under the lock of each shard of its list it reads each request's state and asks
//!    the pure [`decide`](crate::runtime::decide::decide) what to do (refuse a request queued past
//!    its deadline, cancel one running past its deadline or stall timeout or the drain's end,
//!    abandon one cancelled past `--cancel-grace`, probe a client);
//! 2. with no lock held, **acts**: each action starts with a compare-and-swap on the
//!    request's state, answers 503/504 through the request's reply slot, fires its token, takes
//!    a cancelled thread out of the pool's count and starts a stand-in;
//! 3. follows the requests it cancelled (it holds them until their handler returns) to learn
//!    whether the cancellation was honored;
//! 4. tops the pool up if it is short (`Pool::heal`) and lets the offload threads grow if a
//!    callback is stuck;
//! 5. under a service manager (sd_notify), sends `WATCHDOG=1` when one is due, so that a
//!    watchdog that stops ticking gets the process restarted, and a `STATUS=` line every few
//!    seconds (requests in flight, abandoned threads). Both are non-blocking datagrams;
//! 6. keeps the pool's vital signs for the probes: whether it sits at its thread ceiling
//!    (`--max-threads`) short of workers — with `--exit-on-thread-ceiling`, for longer than
//!    `--cancel-grace`, it asks the server to drain and exit —, and since when requests wait
//!    with no worker taking any (liveness fails past `--timeout`).
//!
//! When it abandons a thread it lowers that thread's CPU priority (`--abandoned-priority`):
//! a quick syscall on the thread's id or handle, which the worker registered when it started.
//!
//! It never waits on anything: no user code (the `on_cancel` callbacks of the requests it
//! cancels, and its log records — a logger is user code too — go to the offload threads,
//! `runtime::offload`), no blocking IO (the client probe is a zero-timeout `poll`), no lock
//! held by anyone for longer than a copy (the admin endpoints snapshot the list and format
//! without it).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use log::{error, info, warn};
use parking_lot::Mutex;

use crate::logging::OncePerSecond;
use crate::runtime::clock;
use crate::runtime::decide::{decide, Action, Params, View};
use crate::runtime::inflight::Inflight;
use crate::runtime::notify::{Message, Supervisor};
use crate::runtime::offload::Offload;
use crate::runtime::pool::{Pool, SpawnError, SpawnReason};
use crate::runtime::refusal::Refusal;
use crate::runtime::reply::{Reply, CLIENT_CLOSED_REQUEST};
use crate::runtime::routes::{RouteId, RouteTable};
use crate::runtime::state::{Outcome, RequestState, TimeoutReason, WorkerId};
use crate::runtime::threads::AbandonedCpu;
use crate::runtime::watchlist::{Keep, Watchlist};

/// How many recent timeouts `/timeouts` and the dashboard keep.
pub(crate) const RECENT_TIMEOUTS: usize = 50;
/// Clients are probed every this many ticks.
const PROBE_EVERY_TICKS: u64 = 10;

/// The watchdog's settings.
#[derive(Clone, Debug)]
pub(crate) struct WatchdogConfig {
    /// `--watchdog-tick`: a 504 is late by at most this.
    pub tick: Duration,
    /// `--cancel-grace`.
    pub grace: Duration,
    /// `--max-abandoned`: past it, an error is logged (readiness fails elsewhere).
    pub max_abandoned: usize,
    /// The service manager to send `WATCHDOG=1` and `STATUS=` to, if one listens.
    pub supervisor: Option<Supervisor>,
    /// `--timeout`: requests that wait this long with no worker taking any make the server
    /// unhealthy ([`Watchdog::starved_for`]).
    pub starved_after: Duration,
    /// `--exit-on-thread-ceiling`: a pool kept short by the thread ceiling for longer than the
    /// grace period calls the hook set with [`Watchdog::on_ceiling_exit`].
    pub exit_at_ceiling: bool,
}

#[cfg(any(test, feature = "bench-internals"))]
impl WatchdogConfig {
    /// A 10 ms tick, `grace`, `--max-abandoned` and liveness after `--timeout` 30 s; no exit at
    /// the ceiling.
    pub fn new(grace: Duration, max_abandoned: usize) -> WatchdogConfig {
        WatchdogConfig {
            tick: Duration::from_millis(10),
            grace,
            max_abandoned,
            starved_after: Duration::from_secs(30),
            exit_at_ceiling: false,
            supervisor: None,
        }
    }
}

/// A timeout, kept for `/timeouts` and the dashboard.
#[derive(Clone, Debug)]
pub(crate) struct TimeoutRecord {
    pub at: SystemTime,
    /// The request's server-unique number (its id may repeat: clients choose it).
    pub uid: u64,
    pub id: String,
    pub method: String,
    pub path: String,
    pub route: String,
    pub reason: TimeoutReason,
    pub elapsed: f64,
    pub deadline: f64,
    pub stage: String,
    pub thread: Option<WorkerId>,
    pub outcome: Outcome,
    /// For an abandoned thread: the CPU it burnt since it was abandoned.
    pub abandoned_cpu: Option<Arc<AbandonedCpu>>,
}

/// Counts the watchdog owns, read at scrape time.
#[derive(Clone, Debug, Default)]
pub(crate) struct WatchdogStats {
    pub cancellations_honored_total: u64,
    pub clients_gone_total: u64,
    pub offload_threads: usize,
    pub offload_dropped_logs: u64,
}

pub(crate) struct Watchdog {
    config: WatchdogConfig,
    routes: Arc<RouteTable>,
    pool: Arc<Pool>,
    offload: Offload,
    /// Every request from the moment it is queued until it is done (`runtime::watchlist`: weak
    /// references, in shards; the connection takes its request off when it is done, so that it
    /// frees it itself).
    list: Watchlist,
    timeouts: Mutex<VecDeque<TimeoutRecord>>,
    /// Timeouts by route and reason.
    timeout_counts: Vec<[AtomicU64; 4]>,
    honored_total: AtomicU64,
    clients_gone_total: AtomicU64,
    heartbeat_ns: AtomicU64,
    /// During a drain: when what is still running gets cancelled (clock ns; 0: no drain).
    drain_cancel_at_ns: AtomicU64,
    stop: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Clock ns since which requests have waited (or no worker has been live) without a worker
    /// taking one; 0 while that is not so.
    starving_since_ns: AtomicU64,
    /// Called once when the pool has been short at the thread ceiling for the grace period
    /// (with `exit_at_ceiling`): the server's drain and exit.
    ceiling_hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Server-level warnings that could repeat every tick (a pool that cannot heal).
    heal_log: OncePerSecond,
    stand_in_log: OncePerSecond,
}

/// What only the watchdog thread touches between ticks.
#[derive(Default)]
pub(crate) struct Sweep {
    ticks: u64,
    /// This tick's decisions, acted on once the list's locks are released.
    actions: Vec<(Arc<Inflight>, Action)>,
    /// Requests it cancelled, held until their handler returns (or the process ends).
    watched: Vec<Arc<Inflight>>,
    /// Requests under watch and not done, as of this tick's sweep.
    in_flight: usize,
    /// When the next `WATCHDOG=1` and `STATUS=` are due (clock ns).
    next_ping_ns: u64,
    next_status_ns: u64,
    /// The last notification failed (logged once until one gets through again).
    notify_failing: bool,
    /// Whether the pool was at its thread ceiling at the last tick (to log the changes).
    at_ceiling: bool,
    /// Since when the pool has been short of workers at the ceiling (clock ns).
    short_at_ceiling_since: Option<u64>,
}

impl Watchdog {
    /// A watchdog that does nothing until [`spawn`](Watchdog::spawn)ed (tests call
    /// [`tick`](Watchdog::tick) themselves).
    pub fn new(config: WatchdogConfig, routes: Arc<RouteTable>, pool: Arc<Pool>) -> std::io::Result<Arc<Watchdog>> {
        let timeout_counts = (0..routes.len()).map(|_| Default::default()).collect();
        Ok(Arc::new(Watchdog {
            config,
            routes,
            pool,
            offload: Offload::start()?,
            list: Watchlist::new(),
            timeouts: Mutex::new(VecDeque::with_capacity(RECENT_TIMEOUTS)),
            timeout_counts,
            honored_total: AtomicU64::new(0),
            clients_gone_total: AtomicU64::new(0),
            heartbeat_ns: AtomicU64::new(clock::now_ns()),
            drain_cancel_at_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            starving_since_ns: AtomicU64::new(0),
            ceiling_hook: Mutex::new(None),
            heal_log: OncePerSecond::new(),
            stand_in_log: OncePerSecond::new(),
        }))
    }

    /// Sets what to do when the pool has been short at its thread ceiling for the grace period
    /// (with `exit_at_ceiling`; called once, on the watchdog thread: it must return at once).
    pub fn on_ceiling_exit(&self, hook: impl FnOnce() + Send + 'static) {
        *self.ceiling_hook.lock() = Some(Box::new(hook));
    }

    /// How long requests have waited with no worker taking one (or no worker has been live),
    /// if that is the case now; `None` while workers take requests, or nothing waits.
    pub fn starved_for(&self) -> Option<Duration> {
        let since = self.starving_since_ns.load(Acquire);
        if since == 0 {
            return None;
        }
        let since = since.max(self.pool.last_take());
        Some(Duration::from_nanos(clock::now_ns().saturating_sub(since)))
    }

    /// `--timeout`: how long starving may last before the server counts as unhealthy.
    pub fn starved_after(&self) -> Duration {
        self.config.starved_after
    }

    /// Starts the watchdog thread.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        let handle = std::thread::Builder::new().name("vigil-watchdog".into()).spawn(move || me.run())?;
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Puts a queued request under watch (an uncontended lock of the calling thread's shard).
    pub fn register(&self, job: &Arc<Inflight>) {
        self.list.insert(job);
    }

    /// Its connection has the answer to `job`: if the request is done, the watchdog has nothing
    /// left to do with it, and it leaves the list now rather than at the next sweep (the
    /// connection then holds the last reference and frees it). A request cancelled, or found
    /// with its client gone, stays until its handler has returned: the watchdog abandons its
    /// thread if it ignores the cancellation.
    pub fn answered(&self, job: &Inflight) {
        if job.state() == RequestState::Done {
            self.list.remove(job);
        }
    }

    /// A drain began: what is still queued at `cancel_at_ns` is refused (503), what still runs
    /// is cancelled (504). Until then requests run as usual, under their own deadlines.
    pub fn begin_drain(&self, cancel_at_ns: u64) {
        self.pool.begin_drain(cancel_at_ns);
        self.drain_cancel_at_ns.store(cancel_at_ns.max(1), Release);
    }

    /// Stops the thread after its current tick and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Release);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }

    /// How long ago the watchdog last ticked.
    pub fn silent_for(&self) -> Duration {
        Duration::from_nanos(clock::now_ns().saturating_sub(self.heartbeat_ns.load(Relaxed)))
    }

    pub fn tick_interval(&self) -> Duration {
        self.config.tick
    }

    /// The requests under watch that are not done, for the admin endpoints (the list's lock is
    /// held only for the copy).
    pub fn requests(&self) -> Vec<Arc<Inflight>> {
        let mut list = self.list.snapshot();
        list.retain(|r| r.state() != RequestState::Done);
        list
    }

    /// The recent timeouts, oldest first.
    pub fn recent_timeouts(&self) -> Vec<TimeoutRecord> {
        self.timeouts.lock().iter().cloned().collect()
    }

    /// Timeouts of `route` for `reason`.
    pub fn timeouts(&self, route: RouteId, reason: TimeoutReason) -> u64 {
        self.timeout_counts[route.index()][reason as usize].load(Relaxed)
    }

    /// Timeouts of every route and reason.
    pub fn timeouts_total(&self) -> u64 {
        self.timeout_counts.iter().flatten().map(|c| c.load(Relaxed)).sum()
    }

    pub fn stats(&self) -> WatchdogStats {
        WatchdogStats {
            cancellations_honored_total: self.honored_total.load(Relaxed),
            clients_gone_total: self.clients_gone_total.load(Relaxed),
            offload_threads: self.offload.threads(),
            offload_dropped_logs: self.offload.dropped_logs(),
        }
    }

    fn run(self: Arc<Self>) {
        let mut sweep = Sweep::default();
        while !self.stop.load(Acquire) {
            self.tick(&mut sweep, clock::now_ns());
            std::thread::sleep(self.config.tick);
        }
        self.log_unfinished_at_stop(&sweep);
    }

    /// One sweep: decide under the lock, then act, follow outcomes, heal the pool.
    pub(crate) fn tick(&self, sweep: &mut Sweep, now: u64) {
        self.heartbeat_ns.store(now, Relaxed);
        let drain = self.drain_cancel_at_ns.load(Acquire);
        let params = Params {
            grace_ns: clock::ns(self.config.grace),
            drain_cancel_at_ns: (drain != 0).then_some(drain),
            probe_peers: sweep.ticks.is_multiple_of(PROBE_EVERY_TICKS),
        };
        sweep.ticks += 1;
        let actions = &mut sweep.actions;
        sweep.in_flight = self.list.sweep(|r| {
            let v = view(r);
            // Done: forget it (gone ones the list forgets by itself).
            if v.state == RequestState::Done {
                return Keep::No;
            }
            if let Some(a) = decide(&v, now, &params) {
                actions.push((Arc::clone(r), a));
            }
            Keep::Yes
        });
        let draining = params.drain_cancel_at_ns.is_some();
        for (r, action) in std::mem::take(&mut sweep.actions) {
            match action {
                Action::Refuse(reason) => self.refuse(&r, reason, now),
                Action::Cancel(reason) => {
                    if self.cancel(&r, reason, now, draining) {
                        sweep.watched.push(r);
                    }
                }
                Action::Abandon => self.abandon(&r, now, draining),
                Action::ProbePeer => {
                    if self.probe(&r, now, draining) {
                        sweep.watched.push(r);
                    }
                }
            }
        }
        self.follow_outcomes(sweep);
        if draining {
            self.starving_since_ns.store(0, Release);
        } else {
            match self.pool.heal() {
                Ok(_) | Err(SpawnError::NotNeeded) | Err(SpawnError::Ceiling) => {}
                Err(SpawnError::Os(e)) => {
                    if let Some(held) = self.heal_log.allow(now) {
                        let (live, target) = (self.pool.live(), self.pool.target());
                        self.offload.log(move || {
                            warn!(
                                target: "vigil::pool", event = "spawn_failed", live = live, target = target, suppressed = held;
                                "the pool is short ({live} of {target} workers): a worker thread could not start: {e}; retrying every tick{}",
                                held_back(held, "failure")
                            )
                        });
                    }
                }
            }
            self.vitals(sweep, now);
        }
        for (route, held) in self.pool.panic_summaries(now) {
            self.offload.log(move || {
                error!(
                    target: "vigil::pool", event = "panic", route = route.as_str(), suppressed = held;
                    "{held} more handler panics of route={route} were not logged (one line per route and second); each was answered 500"
                )
            });
        }
        self.offload.check(now);
        if let Some(supervisor) = &self.config.supervisor {
            self.report(supervisor, sweep, now, draining);
        }
    }

    /// Tells the service manager that this tick happened (`WATCHDOG=1`) and, every few
    /// seconds, how things stand (`STATUS=`), when each is due. The sends never block: a
    /// message the manager has no room for is dropped, and the next one follows. While no
    /// worker has taken a request for `--timeout` (liveness fails), no `WATCHDOG=1` is sent,
    /// so that the manager restarts the process as a liveness probe would.
    fn report(&self, supervisor: &Supervisor, sweep: &mut Sweep, now: u64, draining: bool) {
        let starved = self.starved_for().is_some_and(|s| s >= self.config.starved_after);
        if let Some(every) = supervisor.ping_every {
            if now >= sweep.next_ping_ns && !starved {
                sweep.next_ping_ns = now.saturating_add(clock::ns(every));
                self.notify(supervisor, sweep, &Message::Watchdog);
            }
        }
        if now >= sweep.next_status_ns {
            sweep.next_status_ns = now.saturating_add(clock::ns(supervisor.status_every));
            let status = format!(
                "{}: {} requests in flight, {} abandoned threads still running{}",
                if draining { "draining" } else { "serving" },
                sweep.in_flight,
                self.pool.abandoned_alive(),
                match (starved, self.pool.at_ceiling()) {
                    (true, _) => "; no worker has taken a request for --timeout",
                    (false, true) => "; at the thread ceiling",
                    (false, false) => "",
                }
            );
            self.notify(supervisor, sweep, &Message::Status(status));
        }
    }

    fn notify(&self, supervisor: &Supervisor, sweep: &mut Sweep, message: &Message) {
        match supervisor.notifier.send(message) {
            Ok(()) => sweep.notify_failing = false,
            // The manager is behind: this one is dropped, the next one follows.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                if !std::mem::replace(&mut sweep.notify_failing, true) {
                    self.offload.log(move || {
                        warn!(target: "vigil::watchdog", "could not notify the service manager (NOTIFY_SOCKET): {e}")
                    });
                }
            }
        }
    }

    /// The pool's vital signs, once per tick outside a drain: the thread ceiling (logged when
    /// reached and left; with `exit_at_ceiling`, a pool kept short by it for the grace period
    /// calls the hook) and starvation (requests wait, no worker takes any).
    fn vitals(&self, sweep: &mut Sweep, now: u64) {
        let p = &self.pool;
        let at_ceiling = p.at_ceiling();
        if at_ceiling != sweep.at_ceiling {
            sweep.at_ceiling = at_ceiling;
            let (alive, max, live, target, abandoned) =
                (p.alive(), p.max_threads(), p.live(), p.target(), p.abandoned_alive());
            self.offload.log(move || {
                if at_ceiling {
                    warn!(
                        target: "vigil::watchdog", event = "thread_ceiling", reached = true, alive = alive, max_threads = max,
                        live = live, abandoned_alive = abandoned;
                        "thread ceiling reached: {alive} handler threads alive of --max-threads {max} ({live} of {target} workers live, {abandoned} abandoned): no stand-in starts until some end; readiness fails"
                    )
                } else {
                    info!(
                        target: "vigil::watchdog", event = "thread_ceiling", reached = false, alive = alive, max_threads = max;
                        "below the thread ceiling again: {alive} handler threads alive of --max-threads {max}"
                    )
                }
            });
        }
        let short = at_ceiling && p.live() < p.target();
        sweep.short_at_ceiling_since = if short { sweep.short_at_ceiling_since.or(Some(now)) } else { None };
        if let Some(since) = sweep.short_at_ceiling_since {
            let grace = clock::ns(self.config.grace).max(clock::ns(self.config.tick));
            if self.config.exit_at_ceiling && now.saturating_sub(since) >= grace {
                if let Some(hook) = self.ceiling_hook.lock().take() {
                    let (live, target, max) = (p.live(), p.target(), p.max_threads());
                    let secs = clock::secs(now - since);
                    self.offload.log(move || {
                        error!(
                            target: "vigil::watchdog", event = "thread_ceiling_exit", live = live, target = target, max_threads = max;
                            "the pool has been short ({live} of {target} workers) at the thread ceiling (--max-threads {max}) for {secs:.3}s: draining, then exiting for the supervisor to restart the process (--exit-on-thread-ceiling)"
                        )
                    });
                    hook();
                }
            }
        }
        let waiting = p.queue_depth() > 0 || p.live() == 0;
        let since = self.starving_since_ns.load(Relaxed);
        if !waiting {
            self.starving_since_ns.store(0, Release);
        } else if since == 0 {
            self.starving_since_ns.store(now.max(1), Release);
        }
    }

    /// Answers a request 503 without running it (`Queued → Done`).
    fn refuse(&self, r: &Inflight, reason: TimeoutReason, now: u64) {
        if !r.transition(RequestState::Queued, RequestState::Done) {
            return; // a worker took it just now
        }
        r.set_timeout_reason(reason);
        self.count_timeout(r.route, reason);
        let refusal = match Refusal::for_timeout(reason, true) {
            Refusal::QueuedPastDeadline if r.upstream_deadline => Refusal::UpstreamDeadline,
            other => other,
        };
        r.answer(refusal.into());
        let rec = self.record_timeout(r, reason, now, Outcome::NotRun);
        self.offload.log(move || {
            warn!(
                target: "vigil::watchdog",
                event = "timeout", id = rec.id.as_str(), method = rec.method.as_str(), path = rec.path.as_str(),
                route = rec.route.as_str(), reason = rec.reason.label(), elapsed = rec.elapsed, deadline = rec.deadline,
                stage = "", status = refusal.status(), outcome = "not_run";
                "timeout id={} {} {} route={} reason={} elapsed={:.3}s deadline={:.3}s: {}; answered {}, handler never ran",
                rec.id, rec.method, rec.path, rec.route, rec.reason.label(), rec.elapsed, rec.deadline, refusal.message(),
                refusal.status(),
            )
        });
    }

    /// Cancels a running request (`Running → Cancelling`): answers 504, fires its token (its
    /// callbacks go to the offload threads) and, outside a drain, takes its thread out of the
    /// pool's count and starts a stand-in. Returns whether it cancelled it.
    fn cancel(&self, r: &Inflight, reason: TimeoutReason, now: u64, draining: bool) -> bool {
        if !r.transition(RequestState::Running, RequestState::Cancelling) {
            return false; // the handler just returned
        }
        r.cancel_ns.store(now, Release);
        r.set_timeout_reason(reason);
        self.count_timeout(r.route, reason);
        // Not answered if its response is already on its way: a streaming body still being
        // produced, which the token's firing breaks off (`runtime::stream`).
        let answered = r.answer(Refusal::for_timeout(reason, false).into());
        self.offload.run_callbacks(r.token.fire());
        let rec = self.record_timeout(r, reason, now, Outcome::Pending);
        self.offload.log(move || {
            let thread = rec.thread.map(|t| t.to_string()).unwrap_or_default();
            let (status, what) = if answered { (504u16, "answered 504") } else { (0, "its answer already under way (a streaming body is cut off)") };
            warn!(
                target: "vigil::watchdog",
                event = "timeout", id = rec.id.as_str(), method = rec.method.as_str(), path = rec.path.as_str(),
                route = rec.route.as_str(), reason = rec.reason.label(), elapsed = rec.elapsed, deadline = rec.deadline,
                stage = rec.stage.as_str(), thread = thread.as_str(), status = status, outcome = "pending";
                "timeout id={} {} {} route={} reason={} elapsed={:.3}s deadline={:.3}s stage={:?} thread={thread}: cancelling, {what} (outcome follows: honored or abandoned)",
                rec.id, rec.method, rec.path, rec.route, rec.reason.label(), rec.elapsed, rec.deadline, rec.stage,
            )
        });
        // The thread is lost to the pool until its handler returns, which may take the whole
        // grace period or forever: a stand-in starts now, so a burst of hung requests does not
        // leave the pool short for --cancel-grace. Not while draining: the pool is stopping.
        if !draining && self.pool.detach(r) {
            self.start_stand_in(r);
        }
        true
    }

    /// Gives up a cancelled request's thread (`Cancelling → Abandoned`).
    fn abandon(&self, r: &Inflight, now: u64, draining: bool) {
        let Some(detached_now) = self.pool.abandon(r) else {
            return; // it honored the cancellation just now
        };
        // Usually the thread was detached and given a stand-in at the cancellation; after a
        // drain's cancellation that happens now (but no stand-in: the pool is stopping).
        if detached_now && !draining {
            self.start_stand_in(r);
        }
        let demoted = self.pool.demote(r);
        let priority = match demoted.as_ref().map(|d| (&d.lowered, &d.throttled)) {
            None => "unchanged (its handler returned)".to_string(),
            Some((lowered, throttled)) => {
                let p = match lowered {
                    Ok(true) => "lowered".to_string(),
                    Ok(false) => "unchanged".to_string(),
                    Err(e) => format!("not lowered ({e})"),
                };
                match throttled {
                    Ok(true) => p + ", CPU budget applied",
                    Ok(false) => p,
                    Err(e) => format!("{p}, no CPU budget ({e})"),
                }
            }
        };
        self.set_outcome(r.uid, Outcome::Abandoned, demoted.map(|d| d.cpu));
        let alive = self.pool.abandoned_alive();
        let max = self.config.max_abandoned;
        let (id, route, stage) =
            (r.req.id().to_string(), self.routes.label(Some(r.route)).to_string(), r.stage_string());
        let thread = r.worker.load(Relaxed).map(|t| t.to_string()).unwrap_or_default();
        let replacement = r.replaced_by.load(Acquire).map_or_else(|| "none".to_string(), |w| w.to_string());
        let after = clock::secs(now.saturating_sub(r.cancel_ns.load(Relaxed)));
        self.offload.log(move || {
            warn!(
                target: "vigil::watchdog",
                event = "timeout_outcome", outcome = "abandoned", id = id.as_str(), route = route.as_str(),
                stage = stage.as_str(), thread = thread.as_str(), after_cancel = after,
                replacement = replacement.as_str(), abandoned_alive = alive, priority = priority.as_str();
                "abandoned thread {thread} stuck in id={id} route={route} stage={stage:?} for {after:.3}s past its cancellation (still running); replaced by {replacement}; CPU priority {priority}; abandoned threads alive: {alive}",
            );
            if alive > max {
                error!(
                    target: "vigil::watchdog",
                    "abandoned threads alive ({alive}) exceed --max-abandoned ({max}): readiness now fails until some finish"
                );
            }
        });
    }

    fn start_stand_in(&self, r: &Inflight) {
        let e = match self.pool.spawn_worker(SpawnReason::StandIn) {
            Ok(id) => return r.replaced_by.store(Some(id), Release),
            Err(SpawnError::NotNeeded) => return,
            Err(e) => e,
        };
        // Both can repeat for every hung request: one line per second, with a count.
        if let Some(held) = self.stand_in_log.allow(clock::now_ns()) {
            let (live, target, alive, max) =
                (self.pool.live(), self.pool.target(), self.pool.alive(), self.pool.max_threads());
            self.offload.log(move || {
                warn!(
                    target: "vigil::pool", event = "stand_in_failed", live = live, target = target, alive = alive,
                    max_threads = max, suppressed = held;
                    "a stand-in worker could not start: {e} ({alive} handler threads alive of --max-threads {max}; {live} of {target} workers live); the pool heals as threads end{}",
                    held_back(held, "such failure")
                )
            });
        }
    }

    /// Cancels a running request whose client has gone away (like Go's request context; nginx
    /// logs such a request as 499): `Running → Cancelling`, the connection is told to send
    /// nothing (`Reply::ClientGone`: it logs and counts 499 and closes), the token is fired and,
    /// outside a drain, the thread gets a stand-in, as for a timeout; then the grace period and
    /// the outcome (honored or abandoned) follow as for a timeout. It is counted as a client
    /// disconnect, not a timeout. Returns whether it cancelled the request.
    ///
    /// "Gone" is what the probe can see: a reset, or the client's FIN. A half-close
    /// (`shutdown(SHUT_WR)`) after the request looks exactly like a close until the server
    /// writes, so it counts as the client leaving too (README, "Clients that go away").
    fn probe(&self, r: &Inflight, now: u64, draining: bool) -> bool {
        let Some(peer) = &r.peer else { return false };
        if r.is_answered() || !peer.is_gone() {
            return false;
        }
        // Answered meanwhile? Then the connection may have closed its socket and the descriptor
        // been reused: the probe said nothing about this request's client. The state's CAS
        // settles it: a handler that returned (or a timeout) got there first.
        if r.is_answered() || !r.transition(RequestState::Running, RequestState::Cancelling) {
            return false;
        }
        r.cancel_ns.store(now, Release);
        r.mark_client_gone();
        self.clients_gone_total.fetch_add(1, Relaxed);
        r.answer(Reply::ClientGone);
        self.offload.run_callbacks(r.token.fire());
        let (id, route) = (r.req.id().to_string(), self.routes.label(Some(r.route)).to_string());
        self.offload.log(move || {
            info!(
                target: "vigil::watchdog",
                event = "client_gone", id = id.as_str(), route = route.as_str(), status = CLIENT_CLOSED_REQUEST;
                "client of id={id} route={route} went away; cancelling its handler (logged as 499, nothing sent)"
            )
        });
        if !draining && self.pool.detach(r) {
            self.start_stand_in(r);
        }
        true
    }

    /// Learns what became of the requests it cancelled: honored (returned within the grace
    /// period) is logged and counted here; a late return of an abandoned one was logged by its
    /// worker.
    fn follow_outcomes(&self, sweep: &mut Sweep) {
        sweep.watched.retain(|r| {
            if r.state() != RequestState::Done {
                return true;
            }
            let Some((at, from, status)) = r.finished() else {
                return true; // the worker records it in a moment
            };
            if from == RequestState::Cancelling {
                self.honored_total.fetch_add(1, Relaxed);
                self.set_outcome(r.uid, Outcome::Honored, None);
                let after = clock::secs(at.saturating_sub(r.cancel_ns.load(Relaxed)));
                let (id, route) = (r.req.id().to_string(), self.routes.label(Some(r.route)).to_string());
                let thread = r.worker.load(Relaxed).map(|t| t.to_string()).unwrap_or_default();
                self.offload.log(move || {
                    info!(
                        target: "vigil::watchdog",
                        event = "timeout_outcome", outcome = "honored", id = id.as_str(), route = route.as_str(),
                        thread = thread.as_str(), after_cancel = after, handler_status = status;
                        "cancellation honored id={id} route={route} thread={thread}: handler returned {after:.3}s after its token fired",
                    )
                });
            }
            false
        });
    }

    fn count_timeout(&self, route: RouteId, reason: TimeoutReason) {
        self.timeout_counts[route.index()][reason as usize].fetch_add(1, Relaxed);
    }

    /// Remembers a timeout for `/timeouts`; returns the record (for the log line).
    fn record_timeout(&self, r: &Inflight, reason: TimeoutReason, now: u64, outcome: Outcome) -> TimeoutRecord {
        let rec = TimeoutRecord {
            at: SystemTime::now(),
            uid: r.uid,
            id: r.req.id().to_string(),
            method: r.req.method().to_string(),
            path: r.req.path().to_string(),
            route: self.routes.label(Some(r.route)).to_string(),
            reason,
            elapsed: r.elapsed_secs(now),
            deadline: r.deadline_secs(),
            stage: r.stage_string(),
            thread: r.worker.load(Relaxed),
            outcome,
            abandoned_cpu: None,
        };
        let mut q = self.timeouts.lock();
        if q.len() == RECENT_TIMEOUTS {
            q.pop_front();
        }
        q.push_back(rec.clone());
        rec
    }

    fn set_outcome(&self, uid: u64, outcome: Outcome, cpu: Option<Arc<AbandonedCpu>>) {
        if let Some(t) = self.timeouts.lock().iter_mut().rev().find(|t| t.uid == uid) {
            t.outcome = outcome;
            if cpu.is_some() {
                t.abandoned_cpu = cpu;
            }
        }
    }

    /// At shutdown, every timed-out handler still running gets its last word: no outcome line
    /// would follow otherwise (the process exits with its thread). Logged here, not offloaded:
    /// the watchdog has stopped, nothing waits on it.
    fn log_unfinished_at_stop(&self, sweep: &Sweep) {
        for r in &sweep.watched {
            let st = r.state();
            if st != RequestState::Cancelling && st != RequestState::Abandoned {
                continue;
            }
            let thread = r.worker.load(Relaxed).map(|t| t.to_string()).unwrap_or_default();
            let (stage, route) = (r.stage_string(), self.routes.label(Some(r.route)));
            // An abandoned one already had its outcome line; a cancelling one gets it now.
            let (event, why) = if st == RequestState::Abandoned {
                ("abandoned_at_exit", "abandoned earlier")
            } else {
                ("timeout_outcome", "cancelled, still within its grace period")
            };
            warn!(
                target: "vigil::watchdog",
                event = event, outcome = "still_running_at_exit", id = r.req.id(), route = route,
                stage = stage.as_str(), thread = thread.as_str();
                "handler of id={} route={route} on {thread} still running at shutdown ({why}, stage={stage:?}); it ends with the process",
                r.req.id(),
            );
        }
    }
}

/// `" (N more such failures in the last second)"`, or nothing.
fn held_back(n: u64, what: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!(" (1 more {what} in the last second not logged)"),
        n => format!(" ({n} more {what}s in the last second not logged)"),
    }
}

fn view(r: &Inflight) -> View {
    View {
        state: r.state(),
        answered: r.is_answered(),
        start_ns: r.start_ns,
        deadline_ns: r.deadline_ns,
        stall_deadline_ns: r.stall_ns().map(|s| r.last_progress_ns.load(Relaxed).saturating_add(s)),
        cancel_ns: r.cancel_ns.load(Acquire),
        has_peer: r.peer.is_some(),
        client_gone: r.client_gone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::Response;
    use crate::runtime::testing::{answer, eventually, Fixture, HOUR};
    use std::sync::mpsc;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn a_hung_request_gets_504_at_its_deadline_a_stand_in_at_once_and_is_abandoned_after_the_grace() {
        let mut f = Fixture::new(2, HOUR, GRACE);
        let (w1, w2) = (f.pool.adopt_test_worker(), f.pool.adopt_test_worker());
        let (hung, hung_slot) = f.job();
        let (fine, fine_slot) = f.job();
        assert!(f.pool.begin(&hung, w1) && f.pool.begin(&fine, w2));
        let at = f.past_deadline(&hung);
        f.tick(at - 1);
        assert_eq!(answer(&hung_slot), None, "nothing before the deadline");
        assert_eq!(f.pool.complete(&fine, w2, Response::text("ok")), crate::runtime::pool::After::Serve);
        assert_eq!(answer(&fine_slot), Some(200));
        f.tick(at);
        assert_eq!(answer(&hung_slot), Some(504));
        let s = f.stats();
        assert_eq!((s.live, s.detached, s.replaced_total), (2, 1, 1), "{s:?}");
        assert!(hung.token.is_cancelled());
        f.tick(at + clock::ns(GRACE) - 1);
        assert_eq!(hung.state(), RequestState::Cancelling, "still within its grace period");
        f.tick(at + clock::ns(GRACE));
        assert_eq!(hung.state(), RequestState::Abandoned);
        let s = f.stats();
        assert_eq!((s.live, s.abandoned_alive, s.abandoned_total), (2, 1, 1), "{s:?}");
        let t = &f.wd.recent_timeouts()[0];
        assert_eq!((t.reason, t.outcome, t.route.as_str()), (TimeoutReason::Deadline, Outcome::Abandoned, "/t"));
        assert_eq!(f.wd.timeouts(RouteId::new(0), TimeoutReason::Deadline), 1);
    }

    #[test]
    fn a_connection_with_its_answer_unlists_a_done_request_but_not_a_cancelled_one() {
        let mut f = Fixture::new(2, HOUR, GRACE);
        let (w1, w2) = (f.pool.adopt_test_worker(), f.pool.adopt_test_worker());
        let (fine, fine_slot) = f.job();
        let (hung, hung_slot) = f.job();
        assert!(f.pool.begin(&fine, w1) && f.pool.begin(&hung, w2));
        f.pool.complete(&fine, w1, Response::text("ok"));
        assert_eq!(answer(&fine_slot), Some(200));
        f.wd.answered(&fine);
        assert_eq!(Arc::weak_count(&fine), 0, "no reference left on the list: its connection frees it");
        let at = f.past_deadline(&hung);
        f.tick(at);
        assert_eq!(answer(&hung_slot), Some(504));
        f.wd.answered(&hung); // the connection has its 504; the handler still runs
        assert_eq!(f.wd.requests().len(), 1);
        f.tick(at + clock::ns(GRACE));
        assert_eq!(hung.state(), RequestState::Abandoned, "still followed: abandoned after the grace");
    }

    #[test]
    fn a_pool_kept_short_by_the_ceiling_for_the_grace_calls_the_exit_hook_once() {
        use crate::runtime::pool::PoolConfig;
        let grace = Duration::from_millis(300);
        let pool = PoolConfig { max_threads: 1, ..PoolConfig::new(1, 8) };
        let wd = WatchdogConfig { exit_at_ceiling: true, ..WatchdogConfig::new(grace, 1) };
        let mut f = Fixture::with_configs(
            pool,
            wd,
            HOUR,
            Arc::new(crate::runtime::testing::FnRunner(|_: &Arc<Inflight>| Response::text("ran"))),
        );
        let (fired_tx, fired_rx) = mpsc::channel();
        f.wd.on_ceiling_exit(move || fired_tx.send(()).unwrap());
        let w = f.pool.adopt_test_worker();
        let (hung, _slot) = f.job();
        assert!(f.pool.begin(&hung, w));
        let at = f.past_deadline(&hung);
        f.tick(at); // cancelled; no room for a stand-in: short at the ceiling from now
        assert!(f.pool.at_ceiling() && f.pool.live() == 0);
        f.tick(at + clock::ns(grace) - 1);
        assert!(fired_rx.try_recv().is_err(), "not before the grace period");
        f.tick(at + clock::ns(grace));
        fired_rx.try_recv().expect("the hook ran");
        f.tick(at + 2 * clock::ns(grace));
        assert!(fired_rx.try_recv().is_err(), "once");
    }

    #[test]
    fn starvation_is_how_long_requests_wait_with_no_worker_taking_one() {
        use crate::runtime::pool::PoolConfig;
        let mut f = Fixture::with_config(
            PoolConfig { max_threads: 1, ..PoolConfig::new(1, 8) },
            HOUR,
            GRACE,
            Arc::new(crate::runtime::testing::FnRunner(|_: &Arc<Inflight>| Response::text("ran"))),
        );
        let w = f.pool.adopt_test_worker(); // the test is the only worker: nothing takes jobs
        f.tick(clock::now_ns());
        assert_eq!(f.wd.starved_for(), None, "nothing waits");
        let (queued, _slot) = f.job();
        f.pool.submit(Arc::clone(&queued)).unwrap();
        std::thread::sleep(Duration::from_millis(3));
        f.tick(clock::now_ns());
        std::thread::sleep(Duration::from_millis(20));
        let starved = f.wd.starved_for().expect("a request waits");
        assert!(starved >= Duration::from_millis(20), "{starved:?}");
        // A worker takes a request: starvation counts from then.
        let (other, _s) = f.job();
        assert!(f.pool.begin(&other, w));
        assert!(f.wd.starved_for().unwrap() < starved);
    }

    #[test]
    fn a_blocking_on_cancel_callback_delays_no_other_requests_504_or_callback() {
        let mut f = Fixture::new(2, HOUR, GRACE);
        let (w1, w2) = (f.pool.adopt_test_worker(), f.pool.adopt_test_worker());
        let (a, a_slot) = f.job();
        std::thread::sleep(Duration::from_millis(2));
        let (b, b_slot) = f.job();
        assert!(f.pool.begin(&a, w1) && f.pool.begin(&b, w2));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (a_started_tx, a_started_rx) = mpsc::channel();
        let armed = a.token.on_cancel(Box::new(move || {
            a_started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10)); // a callback that blocks 10 s
        }));
        assert!(matches!(armed, crate::runtime::token::Registered::Armed(_)));
        let (b_ran_tx, b_ran_rx) = mpsc::channel();
        let armed = b.token.on_cancel(Box::new(move || b_ran_tx.send(()).unwrap()));
        assert!(matches!(armed, crate::runtime::token::Registered::Armed(_)));

        // A's deadline: answered at once; its callback runs (and blocks) elsewhere.
        f.tick(f.past_deadline(&a));
        assert_eq!(answer(&a_slot), Some(504));
        a_started_rx.recv_timeout(Duration::from_secs(10)).expect("A's callback started");
        // B's deadline, with A's callback still blocked: B is answered in that very sweep.
        let b_at = f.past_deadline(&b);
        f.tick(b_at);
        assert_eq!(answer(&b_slot), Some(504), "B's 504 does not wait for A's callback");
        // And B's own callback gets a second offload thread once A's has been stuck a while.
        let mut now = b_at;
        let ran = eventually(Duration::from_secs(10), || {
            now += clock::ns(crate::runtime::offload::STUCK);
            f.tick(now);
            b_ran_rx.try_recv().is_ok()
        });
        assert!(ran, "B's callback ran while A's was still blocked");
        assert!(f.wd.stats().offload_threads >= 2);
        release_tx.send(()).unwrap();
    }

    #[test]
    fn a_stalled_request_is_cut_by_its_stall_timeout_but_progress_keeps_it_alive() {
        let mut f = Fixture::new(1, HOUR, GRACE);
        let w = f.pool.adopt_test_worker();
        // A route with a stall timeout: built by hand (the fixture's route has none).
        let route = crate::runtime::routes::RouteInfo {
            method: "GET".into(),
            pattern: "/t".into(),
            timeout: HOUR,
            stall: Some(Duration::from_secs(1)),
        };
        let slot = crate::runtime::reply::ReplySlot::new();
        let start = clock::now_ns();
        let job = Arc::new(Inflight::new(
            crate::runtime::inflight::Arrival {
                req: crate::http::request::Request::builder("GET", "/t").build(),
                route: RouteId::new(0),
                uid: 99,
                seq: 0,
                start_ns: start,
                upstream_timeout: None,
                reply: Some(Arc::clone(&slot)),
                peer: None,
            },
            &route,
        ));
        f.wd.register(&job);
        assert!(f.pool.begin(&job, w));
        let s = clock::ns(Duration::from_secs(1));
        job.last_progress_ns.store(start + s / 2, Relaxed); // progress half-way
        f.tick(start + s);
        assert_eq!(answer(&slot), None, "progress moved the stall deadline");
        f.tick(start + s / 2 + s);
        assert_eq!(answer(&slot), Some(504));
        assert_eq!(f.wd.recent_timeouts()[0].reason, TimeoutReason::Stall);
    }

    #[test]
    fn the_timeout_log_keeps_the_most_recent_and_finds_outcomes_by_server_unique_number() {
        let mut f = Fixture::new(1, Duration::from_millis(1), GRACE);
        let w = f.pool.adopt_test_worker();
        let mut jobs = Vec::new();
        for _ in 0..RECENT_TIMEOUTS + 3 {
            jobs.push(f.job());
        }
        std::thread::sleep(Duration::from_millis(2));
        f.tick(clock::now_ns()); // all of them expire in the queue
        let log = f.wd.recent_timeouts();
        assert_eq!(log.len(), RECENT_TIMEOUTS);
        assert_eq!(log.last().unwrap().uid, jobs.last().unwrap().0.uid);
        assert!(log.iter().all(|t| t.outcome == Outcome::NotRun && t.reason == TimeoutReason::Queue));
        assert!(!f.pool.begin(&jobs[0].0, w));
    }
}
