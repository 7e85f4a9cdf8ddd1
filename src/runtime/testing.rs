//! Test fixtures for the runtime: a pool and a watchdog with no server around them, driven by
//! the test (the watchdog's ticks with a clock value of the test's choosing; workers' steps
//! taken one at a time).

use std::sync::Arc;
use std::time::Duration;

use crate::http::request::Request;
use crate::http::response::Response;
use crate::runtime::clock;
use crate::runtime::inflight::{Arrival, Inflight};
use crate::runtime::pool::{Pool, PoolConfig, PoolStats, Runner};
use crate::runtime::reply::ReplySlot;
use crate::runtime::routes::{RouteId, RouteInfo, RouteTable};
use crate::runtime::watchdog::{Sweep, Watchdog, WatchdogConfig};

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A runner whose handler is a closure of the test's.
pub(crate) struct FnRunner<F>(pub F);

impl<F: Fn(&Arc<Inflight>) -> Response + Send + Sync + 'static> Runner for FnRunner<F> {
    fn run(&self, job: &Arc<Inflight>) -> Response {
        (self.0)(job)
    }
}

pub(crate) struct Fixture {
    pub pool: Arc<Pool>,
    pub wd: Arc<Watchdog>,
    pub routes: Arc<RouteTable>,
    pub sweep: Sweep,
    next_uid: u64,
}

impl Fixture {
    /// A pool of `threads` (none started: tests adopt them or call `start`) whose one route
    /// times out after `timeout`, and a watchdog with `grace`, not spawned.
    pub fn new(threads: usize, timeout: Duration, grace: Duration) -> Fixture {
        Self::with_runner(threads, timeout, grace, Arc::new(FnRunner(|_: &Arc<Inflight>| Response::text("ran"))))
    }

    pub fn with_runner(threads: usize, timeout: Duration, grace: Duration, runner: Arc<dyn Runner>) -> Fixture {
        Self::with_config(PoolConfig::new(threads, 64), timeout, grace, runner)
    }

    pub fn with_config(config: PoolConfig, timeout: Duration, grace: Duration, runner: Arc<dyn Runner>) -> Fixture {
        let wd = WatchdogConfig::new(grace, config.threads);
        Self::with_configs(config, wd, timeout, runner)
    }

    /// A pool and a watchdog with the configs given; the one route times out after `timeout`.
    pub fn with_configs(config: PoolConfig, wd: WatchdogConfig, timeout: Duration, runner: Arc<dyn Runner>) -> Fixture {
        let routes = Arc::new(RouteTable::new(vec![RouteInfo {
            method: "GET".into(),
            pattern: "/t".into(),
            timeout,
            stall: None,
        }]));
        let pool = Pool::new(config, runner, Arc::clone(&routes));
        let wd = Watchdog::new(wd, Arc::clone(&routes), Arc::clone(&pool)).expect("watchdog");
        Fixture { pool, wd, routes, sweep: Sweep::default(), next_uid: 1 }
    }

    /// A request read just now, registered with the watchdog (not queued), and where its
    /// answer arrives.
    pub fn job(&mut self) -> (Arc<Inflight>, Arc<ReplySlot>) {
        self.job_with(Request::builder("GET", "/t").build())
    }

    pub fn job_with(&mut self, req: Request) -> (Arc<Inflight>, Arc<ReplySlot>) {
        let slot = ReplySlot::new();
        let uid = self.next_uid;
        self.next_uid += 1;
        let arrival = Arrival {
            req,
            route: RouteId::new(0),
            uid,
            seq: uid,
            start_ns: clock::now_ns(),
            upstream_timeout: None,
            reply: Some(Arc::clone(&slot)),
            peer: None,
        };
        let job = Arc::new(Inflight::new(arrival, self.routes.get(RouteId::new(0))));
        self.wd.register(&job);
        (job, slot)
    }

    /// One watchdog sweep at clock value `now`.
    pub fn tick(&mut self, now: u64) {
        self.wd.tick(&mut self.sweep, now);
    }

    /// The clock value at which `job`'s deadline has passed.
    pub fn past_deadline(&self, job: &Inflight) -> u64 {
        job.deadline_ns
    }

    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Stand-ins and healed workers are real threads waiting on the queue: let them go.
        self.pool.stop();
    }
}

/// The status of the one answer `slot` received, if any (and that there was no second).
pub(crate) fn answer(slot: &ReplySlot) -> Option<u16> {
    slot.try_take().map(|(_, r)| r.status())
}

/// Polls `f` (yielding) until it holds or `limit` passes.
pub(crate) fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}
