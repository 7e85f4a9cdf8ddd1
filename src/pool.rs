//! The worker pool: OS threads that run handlers, and only they.
//!
//! A worker takes a job, skips it if it was already answered (timed out while queued), marks it
//! running, calls the handler under `catch_unwind`, and hands the response to the request's
//! `answer` (which loses the race if the watchdog already sent a 504). Whether the handler
//! honored a cancellation, or was abandoned meanwhile, is read from one atomic swap of the
//! request's state. The watchdog takes a cancelled request's thread out of the worker count and
//! starts a stand-in at once; if the handler then honors the cancellation, its thread rejoins
//! the pool only if the pool is short, else it exits (`rejoin`). An abandoned worker exits as
//! soon as its handler returns; the stand-in has taken its place. A worker that reached
//! `--max-requests` spawns its own replacement first, then exits, so no request is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};

use crate::ctx::Ctx;
use crate::dispatch::Job;
use crate::response::Response;
use crate::server::Shared;
use crate::watchdog::{clock, slot, state, Inflight};

thread_local! {
    /// The last panic message (with its location) on this worker thread, set by the panic hook.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps worker-thread panics out of stderr's
/// default report: the worker logs them itself, with the request id and route.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("vigil-worker-")) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Spawns one worker thread and returns its number (thread name `vigil-worker-N`).
pub(crate) fn spawn_worker(shared: &Arc<Shared>) -> u32 {
    let id = shared.next_worker_id.fetch_add(1, Relaxed) + 1;
    let shared2 = Arc::clone(shared);
    shared.metrics.worker_threads.fetch_add(1, Relaxed);
    let spawned = std::thread::Builder::new().name(format!("vigil-worker-{id}")).spawn(move || worker(shared2, id));
    if let Err(e) = spawned {
        shared.metrics.worker_threads.fetch_sub(1, Relaxed);
        error!("could not spawn worker thread vigil-worker-{id}: {e}");
    }
    id
}

/// How many requests this worker serves before retiring (0 = unlimited).
fn retire_after(shared: &Shared, id: u32) -> u64 {
    let s = &shared.settings;
    if s.max_requests == 0 {
        return 0;
    }
    // A cheap per-thread spread in [0, jitter] (Gunicorn uses randint(0, jitter)).
    let jitter = if s.max_requests_jitter == 0 {
        0
    } else {
        let x = (id as u64 ^ clock::now_ns()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 33) % (s.max_requests_jitter + 1)
    };
    s.max_requests + jitter
}

fn worker(shared: Arc<Shared>, id: u32) {
    let limit = retire_after(&shared, id);
    let mut served: u64 = 0;
    let rx = shared.queue.rx.clone();
    while let Ok(job) = rx.recv() {
        let job = match job {
            Job::Run(j) => j,
            Job::Stop => break,
        };
        shared.metrics.workers_busy.fetch_add(1, Relaxed);
        let next = run_one(&shared, &job, id);
        shared.metrics.workers_busy.fetch_sub(1, Relaxed);
        match next {
            Next::Serve => {}
            Next::ExitAbandoned => {
                shared.metrics.threads_abandoned_alive.fetch_sub(1, Relaxed);
                return;
            }
            Next::ExitUncounted => return,
        }
        served += 1;
        if limit != 0 && served >= limit {
            shared.metrics.threads_retired_total.fetch_add(1, Relaxed);
            let next = spawn_worker(&shared);
            info!(
                "vigil-worker-{id} retiring after {served} requests (--max-requests); replaced by vigil-worker-{next}"
            );
            break;
        }
    }
    shared.metrics.worker_threads.fetch_sub(1, Relaxed);
}

/// What a worker does after a job.
enum Next {
    /// Take the next job.
    Serve,
    /// The watchdog abandoned this thread (and took it out of the worker count): exit.
    ExitAbandoned,
    /// The handler honored its cancellation after the watchdog had given this thread a stand-in
    /// (and taken it out of the count), and the pool is full: exit.
    ExitUncounted,
}

/// A cancelled handler returned after the watchdog took its thread out of the worker count and
/// started a stand-in (`watchdog::expire`). The thread rejoins the pool if the pool is short
/// (a spawn failed, a retirement is under way), else it leaves. `true`: rejoined.
fn rejoin(shared: &Shared) -> bool {
    let target = shared.settings.threads as i64;
    let live = &shared.metrics.worker_threads;
    let mut n = live.load(Relaxed);
    while n < target {
        match live.compare_exchange_weak(n, n + 1, Relaxed, Relaxed) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

/// Runs one job, and says whether this thread goes on serving.
fn run_one(shared: &Arc<Shared>, job: &Arc<Inflight>, id: u32) -> Next {
    let now = clock::now_ns();
    shared.metrics.queue_wait(Duration::from_nanos(now.saturating_sub(job.start_ns)));
    if job.is_answered() {
        // Timed out (503) or drained while it waited.
        job.state.store(state::DONE, Release);
        return Next::Serve;
    }
    if now >= job.deadline_ns {
        let resp = Response::error(503, "deadline passed while queued").with_header("Retry-After", "1");
        if job.answer(resp, shared) {
            let reason = crate::watchdog::TimeoutReason::Queue;
            shared.metrics.timeout(job.route, reason);
            let (elapsed, deadline) =
                (job.elapsed_secs(now), job.deadline_ns.saturating_sub(job.start_ns) as f64 / 1e9);
            warn!(
                event = "timeout", id = job.req.id(), method = job.req.method(), path = job.req.path(),
                route = job.route_name(shared), reason = "queue", elapsed, deadline, stage = "",
                status = 503u16, outcome = "not_run";
                "timeout id={} {} {} route={} reason=queue elapsed={elapsed:.3}s deadline={deadline:.3}s: deadline passed while queued; answered 503, handler never ran",
                job.req.id(),
                job.req.method(),
                job.req.path(),
                job.route_name(shared)
            );
            shared.record_timeout(job, reason, now);
        }
        job.state.store(state::DONE, Release);
        return Next::Serve;
    }
    job.thread.store(id, Relaxed);
    job.run_start_ns.store(now, Relaxed);
    job.last_progress_ns.store(now.max(job.last_progress_ns.load(Relaxed)), Relaxed);
    if job.state.compare_exchange(state::QUEUED, state::RUNNING, AcqRel, Acquire).is_err() {
        job.state.store(state::DONE, Release);
        return Next::Serve;
    }
    let ctx = Ctx { inflight: Arc::clone(job) };
    let handler = &shared.app.routes()[job.route].handler;
    let resp = match catch_unwind(AssertUnwindSafe(|| handler.call(&job.req, &ctx))) {
        Ok(r) => r,
        Err(panic) => {
            shared.metrics.handler_panics.fetch_add(1, Relaxed);
            let what = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into())
            });
            error!(
                "handler panicked id={} route={} thread=vigil-worker-{id}: {what}; answered 500, thread kept",
                job.req.id(),
                job.route_name(shared)
            );
            Response::error(500, "internal server error")
        }
    };
    let status = resp.status();
    let prev = job.state.swap(state::DONE, AcqRel);
    // Only read the clock when a cancellation needs the figure: the normal path skips it.
    let late = || clock::now_ns().saturating_sub(job.cancel_ns.load(Acquire)) as f64 / 1e9;
    match prev {
        state::CANCELLING => {
            let late = late();
            shared.metrics.cancellations_honored.fetch_add(1, Relaxed);
            shared.set_timeout_outcome(job.req.id(), "honored");
            info!(
                event = "timeout_outcome", outcome = "honored", id = job.req.id(), route = job.route_name(shared),
                thread = format!("vigil-worker-{id}").as_str(), after_cancel = late, handler_status = status;
                "cancellation honored id={} route={} thread=vigil-worker-{id}: handler returned {late:.3}s after its token fired",
                job.req.id(),
                job.route_name(shared),
            );
            // Either this thread keeps its place (the watchdog has not detached it yet, and now
            // will not), or the watchdog already started a stand-in for it.
            if job.pool_slot.compare_exchange(slot::COUNTED, slot::KEPT, AcqRel, Acquire).is_ok() || rejoin(shared) {
                Next::Serve
            } else {
                debug!("vigil-worker-{id} exits: vigil-worker-{} stood in for it", job.replaced_by.load(Acquire));
                Next::ExitUncounted
            }
        }
        state::ABANDONED => {
            let late = late();
            warn!(
                event = "abandoned_finished", id = job.req.id(), route = job.route_name(shared),
                thread = format!("vigil-worker-{id}").as_str(), after_cancel = late, handler_status = status;
                "abandoned thread vigil-worker-{id} finished id={} route={} {late:.3}s after cancellation; late result ({status}) discarded; thread exits",
                job.req.id(),
                job.route_name(shared),
            );
            Next::ExitAbandoned
        }
        _ => {
            job.answer(resp, shared);
            Next::Serve
        }
    }
}
