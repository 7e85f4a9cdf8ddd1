//! The worker pool: OS threads that run handlers, and only they.
//!
//! A bounded crossbeam queue feeds `--threads` workers. A worker takes a job, leaves it to the
//! watchdog if its deadline already passed while it waited (the watchdog answers 503: one path
//! for that), marks it running, calls the handler under `catch_unwind` (a panic is a 500 and the
//! thread is kept), and finishes it with one atomic swap whose previous state says what
//! happened meanwhile: nothing (answer), a cancellation the handler honored, or an abandonment.
//!
//! The pool owns its counts, and its decisions read them, never a metrics gauge:
//! - `live`: workers counted towards `--threads` (the target), busy or idle;
//! - `busy`: counted workers running a handler;
//! - `detached`: threads the watchdog took out of the count when it cancelled their request
//!   (it starts a stand-in at once); `abandoned`: those past `--cancel-grace`;
//! - `alive`: every handler thread that exists (counted, detached or abandoned), which never
//!   exceeds `--max-threads`: a place is reserved by compare-and-swap before a thread is
//!   spawned, so at the ceiling no stand-in, healing or retirement replacement starts.
//!
//! Whether a cancelled request's thread stays counted is decided by one compare-and-swap on
//! its `pool_slot`: the watchdog's `detach` (Counted → Detached) or the worker's return
//! (Counted → Kept). A detached thread whose handler returns rejoins the pool only if it is
//! short (`rejoin`), else exits. `heal` (every watchdog tick) starts workers while the pool is
//! short, so a failed spawn is retried rather than shrinking the pool for good. A worker past
//! `--max-requests` starts its replacement first, then exits.
//!
//! Each worker registers itself with the thread registry (`runtime::threads`) when it starts,
//! so that the watchdog can lower the priority of a thread it abandons; an abandoned thread
//! whose handler returns gets its priority back before it serves again, or exits if the OS
//! refuses (a fresh worker takes its place at the next heal).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::{debug, error, info, warn};

use crate::http::response::Response;
use crate::logging::OncePerSecond;
use crate::runtime::clock;
use crate::runtime::inflight::Inflight;
use crate::runtime::refusal::{Refusal, Source};
use crate::runtime::reply::Reply;
use crate::runtime::routes::RouteTable;
use crate::runtime::state::{PoolSlot, RequestState, WorkerId};
use crate::runtime::threads::{AbandonedPriority, Demoted, Restored, ThreadRegistry};

/// What runs a request's handler: the app, seen from the pool.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Runs the handler of `job`'s route and returns its response. May panic (the pool
    /// catches it).
    fn run(&self, job: &Arc<Inflight>) -> Response;
}

/// The pool's settings.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    /// Workers the pool keeps (`--threads`).
    pub threads: usize,
    /// Requests that may wait for a worker (`--backlog`, resolved).
    pub backlog: usize,
    /// Requests a worker serves before it retires (0: never).
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Handler threads alive at most: workers, stand-ins, cancelled and abandoned threads
    /// (`--max-threads`, resolved; at least `threads`).
    pub max_threads: usize,
    /// What becomes of an abandoned thread's CPU priority (`--abandoned-priority`).
    pub abandoned_priority: AbandonedPriority,
    /// The share of one CPU all abandoned threads together may use (`--abandoned-cpu`; Linux).
    pub abandoned_cpu: Option<f64>,
}

#[cfg(any(test, feature = "bench-internals"))]
impl PoolConfig {
    /// `threads` workers, a queue of `backlog`, no retirement, a ceiling of twice the workers,
    /// abandoned threads demoted to idle priority.
    pub fn new(threads: usize, backlog: usize) -> PoolConfig {
        PoolConfig {
            threads,
            backlog,
            max_requests: 0,
            max_requests_jitter: 0,
            max_threads: threads * 2,
            abandoned_priority: AbandonedPriority::Idle,
            abandoned_cpu: None,
        }
    }
}

/// Why a request could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue holds `--backlog` requests already.
    Full,
    /// The pool is gone (server stopped).
    Closed,
}

/// Why no worker thread was started.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// The pool has `--threads` live workers (or is stopping): none is needed.
    NotNeeded,
    /// `--max-threads` handler threads are alive: the thread ceiling.
    Ceiling,
    /// The OS refused the thread (`EAGAIN` at the process's or user's thread limit).
    Os(io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::NotNeeded => f.write_str("the pool is full"),
            SpawnError::Ceiling => f.write_str("the thread ceiling (--max-threads) is reached"),
            SpawnError::Os(e) => write!(f, "{e}"),
        }
    }
}

/// Why a worker thread was started (for the counters and the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpawnReason {
    /// One of the first `--threads`.
    Start,
    /// Stands in for a cancelled request's thread.
    StandIn,
    /// Tops a short pool up (a failed spawn before, a thread lost).
    Heal,
    /// Replaces a worker retiring after `--max-requests`.
    Retire,
}

enum Job {
    Run(Arc<Inflight>),
    /// Exit (sent once per worker at shutdown, after the queue drained).
    Stop,
}

/// A snapshot of the pool's counts, for metrics and the admin endpoints.
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolStats {
    pub target: usize,
    /// `--max-threads`.
    pub max_threads: usize,
    /// Handler threads alive: live workers, cancelled and abandoned threads.
    pub alive: usize,
    pub live: usize,
    pub busy: usize,
    pub detached: usize,
    pub abandoned_alive: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub abandoned_total: u64,
    pub replaced_total: u64,
    pub retired_total: u64,
    pub panics_total: u64,
    pub spawn_failures_total: u64,
    /// Cancelled requests' threads that got no stand-in because of the ceiling.
    pub ceiling_refusals_total: u64,
    /// CPU time abandoned threads burnt while abandoned (read now for the running ones).
    pub abandoned_cpu: std::time::Duration,
}

pub(crate) struct Pool {
    config: PoolConfig,
    tx: Sender<Job>,
    rx: Receiver<Job>,
    runner: Arc<dyn Runner>,
    routes: Arc<RouteTable>,
    stopping: AtomicBool,
    /// During a drain: clock ns from which no queued job starts (`u64::MAX` otherwise).
    no_start_after_ns: AtomicU64,
    next_id: AtomicU32,
    // Signed: the watchdog's and a worker's updates of one thread's move between them may land
    // in either order, so a count can dip below zero for an instant; reads clamp at zero.
    live: AtomicIsize,
    busy: AtomicIsize,
    detached: AtomicIsize,
    abandoned: AtomicIsize,
    abandoned_total: AtomicU64,
    replaced_total: AtomicU64,
    retired_total: AtomicU64,
    panics_total: AtomicU64,
    spawn_failures_total: AtomicU64,
    /// Handler threads alive (counted, detached or abandoned): at most `max_threads`.
    alive: AtomicUsize,
    ceiling_refusals_total: AtomicU64,
    /// Clock ns when a worker last took a job off the queue, coarse: written only when it
    /// moved by more than [`TAKE_RESOLUTION_NS`], so the workers mostly read this cache line.
    last_take_ns: AtomicU64,
    threads: ThreadRegistry,
    /// One per route, plus one for requests without a route: keeps a route whose handler
    /// panics on every request to one log line per second.
    panic_logs: Box<[OncePerSecond]>,
}

/// The resolution of [`Pool::last_take`]: 1 ms.
const TAKE_RESOLUTION_NS: u64 = 1_000_000;

/// What a worker does after a job.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Take the next job.
    Serve,
    /// The thread no longer counts as a worker (detached, the pool is full): exit.
    Exit,
}

impl Pool {
    /// A pool with no threads yet: [`heal`](Pool::heal) starts them.
    pub fn new(config: PoolConfig, runner: Arc<dyn Runner>, routes: Arc<RouteTable>) -> Arc<Pool> {
        let (tx, rx) = crossbeam_channel::bounded(config.backlog.max(1));
        let panic_logs = (0..=routes.len()).map(|_| OncePerSecond::new()).collect();
        Arc::new(Pool {
            threads: ThreadRegistry::new(config.abandoned_priority, config.abandoned_cpu.is_some()),
            config,
            tx,
            rx,
            runner,
            routes,
            stopping: AtomicBool::new(false),
            no_start_after_ns: AtomicU64::new(u64::MAX),
            next_id: AtomicU32::new(0),
            live: AtomicIsize::new(0),
            busy: AtomicIsize::new(0),
            detached: AtomicIsize::new(0),
            abandoned: AtomicIsize::new(0),
            abandoned_total: AtomicU64::new(0),
            replaced_total: AtomicU64::new(0),
            retired_total: AtomicU64::new(0),
            panics_total: AtomicU64::new(0),
            spawn_failures_total: AtomicU64::new(0),
            alive: AtomicUsize::new(0),
            ceiling_refusals_total: AtomicU64::new(0),
            last_take_ns: AtomicU64::new(clock::now_ns()),
            panic_logs,
        })
    }

    /// Starts the first `--threads` workers; fails if not one could start (a short pool is
    /// topped up by [`heal`](Pool::heal) later).
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        install_panic_hook();
        if let Err(e) = crate::platform::set_cpu_budget(self.config.abandoned_cpu) {
            warn!(target: "vigil::pool", "the CPU budget of abandoned threads (--abandoned-cpu) is off: {e}");
        }
        match self.heal() {
            Err(e) if self.live() == 0 => Err(io::Error::other(format!("no worker thread could start: {e}"))),
            Err(e) => {
                warn!(
                    target: "vigil::pool",
                    "started {} of {} workers: {e}; retrying every watchdog tick",
                    self.live(),
                    self.config.threads
                );
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// Queues a request without ever blocking.
    pub fn submit(&self, job: Arc<Inflight>) -> Result<(), SubmitError> {
        self.tx.try_send(Job::Run(job)).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Workers counted towards `--threads`.
    pub fn live(&self) -> usize {
        count(&self.live)
    }

    pub fn target(&self) -> usize {
        self.config.threads
    }

    pub fn abandoned_alive(&self) -> usize {
        count(&self.abandoned)
    }

    /// Counted workers running a handler.
    pub fn busy(&self) -> usize {
        count(&self.busy)
    }

    /// Handler threads alive: live workers, cancelled and abandoned threads.
    pub fn alive(&self) -> usize {
        self.alive.load(Acquire)
    }

    /// `--max-threads`.
    pub fn max_threads(&self) -> usize {
        self.config.max_threads
    }

    /// Whether `--max-threads` handler threads are alive: no stand-in can start.
    pub fn at_ceiling(&self) -> bool {
        self.alive() >= self.config.max_threads
    }

    /// Requests waiting in the queue (refused ones included until a worker drops them).
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// When a worker last took a job off the queue (clock ns, to within a millisecond).
    pub fn last_take(&self) -> u64 {
        self.last_take_ns.load(Relaxed)
    }

    /// The CPU burnt since it was abandoned by the thread of `worker`, if that thread is
    /// abandoned now (read now).
    pub fn abandoned_cpu_of(&self, worker: WorkerId) -> Option<std::time::Duration> {
        self.threads.abandoned_cpu_of(worker)
    }

    /// Starts one worker thread (`vigil-worker-N`) if the pool needs it and the ceiling allows:
    /// for a stand-in or to heal, only while fewer than `--threads` are live (a place is
    /// reserved by compare-and-swap first, so a stand-in and a cancelled thread that rejoins
    /// never both take the same place); for a retirement, always (the retiring worker leaves
    /// right after). In every case a place under `--max-threads` is reserved the same way
    /// before the thread is spawned. A failed spawn changes no count but
    /// `spawn_failures_total`; a stand-in refused at the ceiling counts in
    /// `ceiling_refusals_total` (healing retries every tick and is not counted).
    pub fn spawn_worker(self: &Arc<Self>, why: SpawnReason) -> Result<WorkerId, SpawnError> {
        if why == SpawnReason::Retire {
            if !self.reserve_thread() {
                return Err(SpawnError::Ceiling);
            }
            self.live.fetch_add(1, AcqRel);
        } else {
            if !self.reserve() {
                return Err(SpawnError::NotNeeded);
            }
            if !self.reserve_thread() {
                self.live.fetch_sub(1, AcqRel);
                if why == SpawnReason::StandIn {
                    self.ceiling_refusals_total.fetch_add(1, Relaxed);
                }
                return Err(SpawnError::Ceiling);
            }
        }
        let id = WorkerId::new(self.next_id.fetch_add(1, Relaxed) + 1).expect("ids start at 1");
        let pool = Arc::clone(self);
        match std::thread::Builder::new().name(id.to_string()).spawn(move || worker(pool, id)) {
            Ok(_) => {
                if matches!(why, SpawnReason::StandIn | SpawnReason::Heal) {
                    self.replaced_total.fetch_add(1, Relaxed);
                }
                Ok(id)
            }
            Err(e) => {
                self.live.fetch_sub(1, AcqRel);
                self.alive.fetch_sub(1, AcqRel);
                self.spawn_failures_total.fetch_add(1, Relaxed);
                // Give the id back (unless another spawn took the next one meanwhile), so that
                // thread numbers count threads that ran, not attempts.
                let _ = self.next_id.compare_exchange(id.get(), id.get() - 1, Relaxed, Relaxed);
                Err(SpawnError::Os(e))
            }
        }
    }

    /// Starts workers while fewer than `--threads` are live (not while stopping). Returns how
    /// many started, or what stopped it short (`Ceiling` or `Os`; the next call retries).
    pub fn heal(self: &Arc<Self>) -> Result<usize, SpawnError> {
        let why = if self.next_id.load(Relaxed) == 0 { SpawnReason::Start } else { SpawnReason::Heal };
        let mut started = 0;
        loop {
            match self.spawn_worker(why) {
                Ok(_) => started += 1,
                Err(SpawnError::NotNeeded) => return Ok(started),
                Err(e) => return Err(e),
            }
        }
    }

    /// The watchdog cancelled `job`: take its thread out of the count (a stand-in is the
    /// caller's to start). `false` if the handler returned first and kept its place, or the
    /// thread was detached already.
    pub fn detach(&self, job: &Inflight) -> bool {
        if !job.pool_slot.transition(PoolSlot::Counted, PoolSlot::Detached) {
            return false;
        }
        self.live.fetch_sub(1, AcqRel);
        self.busy.fetch_sub(1, AcqRel);
        self.detached.fetch_add(1, AcqRel);
        true
    }

    /// The grace period of `job`'s cancellation is over: gives up its thread (`Cancelling →
    /// Abandoned`), which counts as abandoned until its handler returns. `None`: the handler
    /// returned just now (honored). `Some(true)`: the thread was still counted (a drain's
    /// cancellation detaches nothing), so the caller starts a stand-in.
    ///
    /// The thread is detached before the state changes, so the worker's return sees a
    /// consistent slot whichever way the race goes: honored and detached, it rejoins a short
    /// pool or exits like any detached thread.
    pub fn abandon(&self, job: &Inflight) -> Option<bool> {
        let detached_now = self.detach(job);
        self.abandoned.fetch_add(1, AcqRel);
        if job.transition(RequestState::Cancelling, RequestState::Abandoned) {
            self.abandoned_total.fetch_add(1, Relaxed);
            Some(detached_now)
        } else {
            self.abandoned.fetch_sub(1, AcqRel);
            None
        }
    }

    /// A drain began: from `cancel_at_ns` on, workers start no queued job (the watchdog refuses
    /// them 503).
    pub fn begin_drain(&self, cancel_at_ns: u64) {
        self.no_start_after_ns.store(cancel_at_ns, Release);
    }

    /// After [`abandon`](Pool::abandon): lowers the priority of `job`'s thread as
    /// `--abandoned-priority` says and starts counting the CPU it burns. `None` if its handler
    /// returned meanwhile. Quick syscalls only (see `runtime::threads`).
    pub fn demote(&self, job: &Inflight) -> Option<Demoted> {
        self.threads.demote(job)
    }

    /// Stops the workers once the queue is empty: each gets a `Stop`; detached threads exit when
    /// their handlers return.
    pub fn stop(&self) {
        self.stopping.store(true, Release);
        for _ in 0..self.live() {
            if self.tx.try_send(Job::Stop).is_err() {
                break;
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            target: self.config.threads,
            max_threads: self.config.max_threads,
            alive: self.alive(),
            live: count(&self.live),
            busy: count(&self.busy),
            detached: count(&self.detached),
            abandoned_alive: count(&self.abandoned),
            queue_depth: self.tx.len(),
            queue_capacity: self.config.backlog,
            abandoned_total: self.abandoned_total.load(Relaxed),
            replaced_total: self.replaced_total.load(Relaxed),
            retired_total: self.retired_total.load(Relaxed),
            panics_total: self.panics_total.load(Relaxed),
            spawn_failures_total: self.spawn_failures_total.load(Relaxed),
            ceiling_refusals_total: self.ceiling_refusals_total.load(Relaxed),
            abandoned_cpu: self.threads.abandoned_cpu(),
        }
    }

    /// For each route whose panic lines were held back and which has been quiet for a second:
    /// its label and how many were not logged (the watchdog logs a summary).
    pub fn panic_summaries(&self, now: u64) -> Vec<(String, u64)> {
        self.panic_logs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let held = l.summary(now)?;
                let route = (i < self.routes.len()).then(|| crate::runtime::routes::RouteId::new(i));
                Some((self.routes.label(route).to_string(), held))
            })
            .collect()
    }

    /// Counts the calling test as a live worker, returning its id: tests (and the bookkeeping
    /// bench) drive `begin` and `complete` themselves.
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn adopt_test_worker(&self) -> WorkerId {
        assert!(self.reserve(), "the pool is full");
        assert!(self.reserve_thread(), "the thread ceiling is reached");
        WorkerId::new(self.next_id.fetch_add(1, Relaxed) + 1).expect("ids start at 1")
    }

    /// Takes a place in a short pool: `live += 1` if it was below `--threads` (and the pool is
    /// not stopping). Used by a detached thread whose handler returned, and before starting a
    /// stand-in or healing thread.
    fn reserve(&self) -> bool {
        let mut n = self.live.load(Acquire);
        while n < self.config.threads as isize && !self.stopping.load(Acquire) {
            match self.live.compare_exchange_weak(n, n + 1, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// Takes a place under `--max-threads` for a thread about to be spawned.
    fn reserve_thread(&self) -> bool {
        let max = self.config.max_threads;
        self.alive.fetch_update(AcqRel, Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// How many requests worker `id` serves before retiring (0 = unlimited).
    fn retire_after(&self, id: WorkerId) -> u64 {
        let c = &self.config;
        if c.max_requests == 0 {
            return 0;
        }
        // A cheap per-thread spread in [0, jitter] (Gunicorn uses randint(0, jitter)).
        let jitter = if c.max_requests_jitter == 0 {
            0
        } else {
            let x = (u64::from(id.get()) ^ clock::now_ns()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (x >> 33) % (c.max_requests_jitter.saturating_add(1)).max(1)
        };
        c.max_requests.saturating_add(jitter)
    }

    /// Runs one job, and says whether this thread goes on serving.
    fn run_one(&self, job: &Arc<Inflight>, id: WorkerId) -> After {
        if !self.begin(job, id) {
            return After::Serve;
        }
        let reply = match catch_unwind(AssertUnwindSafe(|| self.runner.run(job))) {
            // A streaming body is produced here, on this worker, before the request is finished.
            Ok(r) => Reply::Send(crate::runtime::stream::deliver(job, r, &self.routes), Source::Handler),
            Err(panic) => {
                self.panics_total.fetch_add(1, Relaxed);
                let what = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| panic_text(&panic));
                self.log_panic(job, id, &what);
                Reply::Refused(Refusal::Panic)
            }
        };
        self.complete(job, id, reply)
    }

    /// One line per route and second (a handler that panics on every request must not flood
    /// the log); the next line, or the watchdog's summary, says how many were held back. The
    /// panic's message and location go on the same line.
    #[cold]
    fn log_panic(&self, job: &Inflight, id: WorkerId, what: &str) {
        let Some(held) = self.panic_logs[job.route.index().min(self.routes.len())].allow(clock::now_ns()) else {
            return;
        };
        let route = self.routes.label(Some(job.route));
        let what = what.replace('\n', " ");
        let more = if held > 0 {
            format!(" ({held} more panics of this route in the last second not logged)")
        } else {
            String::new()
        };
        error!(
            target: "vigil::pool",
            event = "panic", id = job.req.id(), route = route, thread:% = id, suppressed = held;
            "handler panicked id={} route={route} thread={id}: {what}; answered 500, thread kept{more}",
            job.req.id()
        );
    }

    /// A worker takes `job` (`Queued → Running`). `false`: leave it: its deadline (or a drain's)
    /// passed while it waited (the watchdog answers it 503 at its next tick: one path for that)
    /// or the watchdog refused it already.
    pub(crate) fn begin(&self, job: &Inflight, id: WorkerId) -> bool {
        let now = clock::now_ns();
        // Liveness reads this ("has any worker taken a request lately?"). Coarse, so that under
        // load the workers share this cache line for reading and rarely write it.
        if now.wrapping_sub(self.last_take_ns.load(Relaxed)) > TAKE_RESOLUTION_NS {
            self.last_take_ns.store(now, Relaxed);
        }
        let last_start = job.deadline_ns.min(self.no_start_after_ns.load(Acquire));
        if now >= last_start || !job.start_running(id, now) {
            return false;
        }
        self.busy.fetch_add(1, AcqRel);
        true
    }

    /// The handler of `job` returned `reply` (a response, or a panic's 500): finish the request
    /// (one swap says what happened meanwhile) and say whether this thread goes on serving.
    pub(crate) fn complete(&self, job: &Inflight, id: WorkerId, reply: impl Into<Reply>) -> After {
        let reply = reply.into();
        match job.finish(reply.status()) {
            RequestState::Cancelling => {
                // Honored (the watchdog logs and counts it). Either this thread keeps its place
                // (the watchdog has not detached it, and now will not), or a stand-in has it.
                if job.pool_slot.transition(PoolSlot::Counted, PoolSlot::Kept) {
                    self.busy.fetch_sub(1, AcqRel);
                    return After::Serve;
                }
                self.detached.fetch_sub(1, AcqRel);
                self.rejoin_or_exit(id, job)
            }
            RequestState::Abandoned => {
                let late = clock::secs(clock::now_ns().saturating_sub(job.cancel_ns.load(Acquire)));
                let (route, status) = (self.routes.label(Some(job.route)), reply.status());
                warn!(
                    target: "vigil::pool",
                    event = "abandoned_finished", id = job.req.id(), route = route, thread:% = id,
                    after_cancel = late, handler_status = status;
                    "abandoned thread {id} finished id={} route={route} {late:.3}s after cancellation; late result ({status}) discarded",
                    job.req.id(),
                );
                self.abandoned.fetch_sub(1, AcqRel);
                self.detached.fetch_sub(1, AcqRel);
                if self.threads.finish_abandoned(id) == Restored::StillDemoted {
                    debug!(target: "vigil::pool", "{id} exits: its CPU priority could not be restored; a new worker takes its place if the pool is short");
                    return After::Exit;
                }
                self.rejoin_or_exit(id, job)
            }
            _ => {
                job.answer(reply);
                self.busy.fetch_sub(1, AcqRel);
                After::Serve
            }
        }
    }

    fn rejoin_or_exit(&self, id: WorkerId, job: &Inflight) -> After {
        if self.reserve() {
            debug!(target: "vigil::pool", "{id} rejoins the pool after its cancelled handler returned");
            After::Serve
        } else {
            let by = job.replaced_by.load(Acquire).map_or_else(|| "a new worker".into(), |w| w.to_string());
            debug!(target: "vigil::pool", "{id} exits: {by} stood in for it");
            After::Exit
        }
    }
}

fn worker(pool: Arc<Pool>, id: WorkerId) {
    pool.threads.register_current(id);
    // Whatever way the thread ends, it leaves the registry and the count of alive threads.
    let _alive = AliveGuard { pool: &pool, id };
    let limit = pool.retire_after(id);
    let mut served: u64 = 0;
    while let Ok(Job::Run(job)) = pool.rx.recv() {
        if let After::Exit = pool.run_one(&job, id) {
            return; // already out of the count
        }
        drop(job);
        served += 1;
        if limit != 0 && served >= limit && !pool.stopping.load(Acquire) {
            match pool.spawn_worker(SpawnReason::Retire) {
                Ok(next) => {
                    pool.retired_total.fetch_add(1, Relaxed);
                    info!(target: "vigil::pool", "{id} retiring after {served} requests (--max-requests); replaced by {next}");
                    break;
                }
                // At the ceiling: stay, and try again after the next request.
                Err(SpawnError::Ceiling) => {}
                Err(SpawnError::NotNeeded) => break, // stopping
                Err(e) => {
                    warn!(target: "vigil::pool", "{id} stays past --max-requests: its replacement could not start: {e}");
                    served = 0;
                }
            }
        }
    }
    pool.live.fetch_sub(1, AcqRel);
}

/// Takes a worker thread out of the registry and the count of alive threads when it ends.
struct AliveGuard<'a> {
    pool: &'a Pool,
    id: WorkerId,
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.pool.threads.unregister(self.id);
        self.pool.alive.fetch_sub(1, AcqRel);
    }
}

/// A signed count read as a count (it may dip below zero for an instant, see `Pool::live`).
fn count(a: &AtomicIsize) -> usize {
    a.load(Acquire).max(0) as usize
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

thread_local! {
    /// The last panic message (with its location) on this worker thread, set by the panic hook.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps worker-thread panics out of stderr's
/// default report: the worker logs them itself, with the request id and route.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with(WorkerId::THREAD_PREFIX)) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Request;
    use crate::runtime::clock;
    use crate::runtime::testing::{eventually, Fixture, FnRunner, HOUR};
    use std::time::Duration;

    fn runner() -> Arc<dyn Runner> {
        Arc::new(FnRunner(|job: &Arc<Inflight>| {
            if job.req.header("x-panic").is_some() {
                panic!("test panic");
            }
            Response::text("ran")
        }))
    }

    fn config(threads: usize) -> PoolConfig {
        PoolConfig::new(threads, 4)
    }

    #[test]
    fn a_started_pool_runs_submitted_jobs_and_a_panic_is_a_500_that_keeps_the_thread() {
        let mut f = Fixture::with_config(config(2), HOUR, HOUR, runner());
        f.pool.start().unwrap();
        assert_eq!(f.stats().live, 2);
        let (job, slot) = f.job_with(Request::builder("GET", "/t").header("X-Panic", "1").build());
        f.pool.submit(Arc::clone(&job)).unwrap();
        assert_eq!(slot.wait(job.seq).status(), 500);
        let (job, slot) = f.job();
        f.pool.submit(Arc::clone(&job)).unwrap();
        assert_eq!(slot.wait(job.seq).status(), 200);
        let s = f.stats();
        assert_eq!((s.live, s.panics_total), (2, 1));
        assert!(eventually(Duration::from_secs(5), || f.stats().busy == 0));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let mut f = Fixture::with_config(config(1), HOUR, HOUR, runner());
        // No worker started: nothing takes jobs off the queue.
        for _ in 0..4 {
            let (job, _) = f.job();
            f.pool.submit(job).unwrap();
        }
        let (job, _) = f.job();
        assert_eq!(f.pool.submit(job), Err(SubmitError::Full));
        assert_eq!(f.stats().queue_depth, 4);
    }

    #[test]
    fn heal_tops_a_short_pool_up_and_never_past_its_size() {
        let f = Fixture::with_config(config(3), HOUR, HOUR, runner());
        assert_eq!(f.pool.heal().unwrap(), 3);
        assert_eq!(f.pool.heal().unwrap(), 0);
        assert!(matches!(f.pool.spawn_worker(SpawnReason::StandIn), Err(SpawnError::NotNeeded)));
        let s = f.stats();
        assert_eq!((s.live, s.replaced_total), (3, 0), "the first threads are not replacements");
    }

    #[test]
    fn a_worker_past_max_requests_retires_after_its_replacement_started() {
        let cfg = PoolConfig { max_requests: 2, ..PoolConfig::new(1, 4) };
        let mut f = Fixture::with_config(cfg, HOUR, HOUR, runner());
        f.pool.start().unwrap();
        for _ in 0..5 {
            let (job, slot) = f.job();
            f.pool.submit(Arc::clone(&job)).unwrap();
            assert_eq!(slot.wait(job.seq).status(), 200, "no request is dropped by a retirement");
        }
        assert!(eventually(Duration::from_secs(5), || f.stats().retired_total == 2));
        assert!(eventually(Duration::from_secs(5), || f.stats().live == 1));
    }

    /// A runner whose handlers block until the test releases them, one release per handler.
    fn blocking_runner() -> (Arc<dyn Runner>, crossbeam_channel::Sender<()>) {
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let runner = FnRunner(move |_: &Arc<Inflight>| {
            let _ = rx.recv_timeout(Duration::from_secs(30));
            Response::text("released")
        });
        (Arc::new(runner), tx)
    }

    #[test]
    fn at_the_thread_ceiling_no_stand_in_starts_until_a_thread_ends() {
        let (runner, release) = blocking_runner();
        let cfg = PoolConfig { max_threads: 2, ..PoolConfig::new(1, 8) };
        let mut f = Fixture::with_config(cfg, Duration::from_secs(60), HOUR, runner);
        f.pool.start().unwrap();
        let (a, a_slot) = f.job();
        f.pool.submit(Arc::clone(&a)).unwrap();
        assert!(eventually(Duration::from_secs(5), || a.state() == RequestState::Running));
        f.tick(f.past_deadline(&a)); // A cancelled: its thread detached, a stand-in starts
        assert_eq!(a_slot.wait(a.seq).status(), 504);
        let s = f.stats();
        assert_eq!((s.live, s.alive, s.replaced_total), (1, 2, 1), "{s:?}");
        let (b, b_slot) = f.job();
        f.pool.submit(Arc::clone(&b)).unwrap();
        assert!(eventually(Duration::from_secs(5), || b.state() == RequestState::Running));
        f.tick(f.past_deadline(&b)); // B cancelled: no room for a stand-in
        assert_eq!(b_slot.wait(b.seq).status(), 504);
        let s = f.stats();
        assert_eq!((s.live, s.alive, s.ceiling_refusals_total, s.replaced_total), (0, 2, 1, 1), "{s:?}");
        assert!(f.pool.at_ceiling());
        assert!(matches!(f.pool.heal(), Err(SpawnError::Ceiling)), "healing is refused too");
        // A's handler returns: its thread rejoins the (short) pool; no thread was added.
        release.send(()).unwrap();
        assert!(eventually(Duration::from_secs(5), || f.stats().live == 1));
        assert_eq!(f.stats().alive, 2);
        // B's returns too: the pool is full, so that thread ends and makes room.
        release.send(()).unwrap();
        assert!(eventually(Duration::from_secs(5), || f.stats().alive == 1));
        assert!(!f.pool.at_ceiling());
        assert_eq!(f.stats().live, 1);
    }

    #[test]
    fn a_retiring_worker_at_the_ceiling_stays_until_its_replacement_can_start() {
        let cfg = PoolConfig { max_requests: 1, max_threads: 1, ..PoolConfig::new(1, 8) };
        let mut f = Fixture::with_config(cfg, HOUR, HOUR, runner());
        f.pool.start().unwrap();
        for _ in 0..3 {
            let (job, slot) = f.job();
            f.pool.submit(Arc::clone(&job)).unwrap();
            assert_eq!(slot.wait(job.seq).status(), 200, "served by the one thread");
        }
        let s = f.stats();
        assert_eq!((s.retired_total, s.live, s.alive), (0, 1, 1), "{s:?}");
        assert!(s.ceiling_refusals_total == 0, "a retirement that waits is not a refusal: {s:?}");
    }

    #[test]
    fn a_panicking_route_logs_one_line_per_second_and_a_summary_of_the_rest() {
        let mut f = Fixture::with_config(config(1), HOUR, HOUR, runner());
        f.pool.start().unwrap();
        for _ in 0..5 {
            let (job, slot) = f.job_with(Request::builder("GET", "/t").header("X-Panic", "1").build());
            f.pool.submit(Arc::clone(&job)).unwrap();
            assert_eq!(slot.wait(job.seq).status(), 500);
        }
        assert_eq!(f.stats().panics_total, 5);
        assert_eq!(f.pool.panic_summaries(clock::now_ns()), vec![], "not a second yet");
        let later = clock::now_ns() + 2_000_000_000;
        assert_eq!(f.pool.panic_summaries(later), vec![("/t".to_string(), 4)]);
        assert_eq!(f.pool.panic_summaries(later + 2_000_000_000), vec![], "summarised once");
    }

    #[test]
    fn stop_ends_every_worker() {
        let f = Fixture::with_config(config(3), HOUR, HOUR, runner());
        f.pool.start().unwrap();
        f.pool.stop();
        assert!(eventually(Duration::from_secs(5), || f.stats().live == 0));
        assert_eq!(f.pool.heal().unwrap(), 0, "a stopping pool does not heal");
    }
}
