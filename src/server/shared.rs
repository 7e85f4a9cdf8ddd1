//! What a server's connections, listener, lifecycle thread and admin endpoints share: the
//! components, each owning its own state (the pool its threads and counts, the watchdog its
//! in-flight list and timeout log, the lifecycle its phase), plus the few counts that belong to
//! the server itself (connections, requests being served, request ids).

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::http::parse::Limits;
use crate::http::request::RequestId;
use crate::logging::OncePerSecond;
use crate::metrics::{Metrics, Snapshot};
use crate::runtime::budget::BodyBudget;
use crate::runtime::notify::{Message, Notifier};
use crate::runtime::pool::Pool;
use crate::runtime::routes::RouteTable;
use crate::runtime::state::TimeoutReason;
use crate::runtime::watchdog::Watchdog;
use crate::server::connections::Connections;
use crate::server::lifecycle::Lifecycle;
use crate::settings::Settings;

pub(crate) struct Shared {
    pub settings: Settings,
    /// Parser limits derived from the settings.
    pub limits: Limits,
    pub app: Arc<App>,
    pub routes: Arc<RouteTable>,
    pub pool: Arc<Pool>,
    pub watchdog: Arc<Watchdog>,
    pub lifecycle: Lifecycle,
    pub metrics: Metrics,
    pub conns: Connections,
    /// Request bodies held in memory, all connections together (`--max-body-memory`).
    pub body_budget: Arc<BodyBudget>,
    pub ids: RequestIds,
    /// Keeps the "queue full" warning to one line per second under overload.
    pub queue_full_log: OncePerSecond,
    /// The service manager (sd_notify), if one listens: `READY=1`, `STOPPING=1`.
    pub notifier: Option<Arc<Notifier>>,
}

/// Request ids: `<process prefix>-<counter>`, and the counter alone as the server-unique number.
pub(crate) struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new(seed: u64) -> Self {
        let prefix = format!("{:08x}", (clock_seed() ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32);
        RequestIds { prefix, next: AtomicU64::new(1) }
    }

    /// The next server-unique number.
    pub fn next_uid(&self) -> u64 {
        self.next.fetch_add(1, Relaxed)
    }

    /// The generated id for number `uid` (rendered inline: no allocation).
    pub fn render(&self, uid: u64) -> RequestId {
        RequestId::generated(&self.prefix, uid)
    }
}

fn clock_seed() -> u64 {
    crate::runtime::clock::now_ns() ^ u64::from(std::process::id())
}

impl Shared {
    /// Tells the service manager `message`, if there is one; never blocks (a message it has no
    /// room for is dropped, with a warning).
    pub fn notify(&self, message: Message) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.send(&message) {
                log::warn!("could not notify the service manager (NOTIFY_SOCKET) of {}: {e}", message.encode());
            }
        }
    }

    /// Readiness: `Err(reason)` while draining, at the thread ceiling, with too many abandoned
    /// threads, or while the pool is short of `--threads` workers (a failed spawn, retried
    /// every tick).
    pub fn ready(&self) -> Result<(), String> {
        if self.lifecycle.is_draining() || self.lifecycle.drain_requested() {
            return Err("draining: shutting down".into());
        }
        if self.pool.at_ceiling() {
            let p = &self.pool;
            return Err(format!(
                "thread ceiling reached: {} handler threads alive of --max-threads {} ({} of {} workers live, {} abandoned); no stand-in can start",
                p.alive(),
                p.max_threads(),
                p.live(),
                p.target(),
                p.abandoned_alive()
            ));
        }
        let alive = self.pool.abandoned_alive();
        let max = self.settings.effective_max_abandoned();
        if alive > max {
            return Err(format!("abandoned threads alive ({alive}) exceed --max-abandoned ({max})"));
        }
        let (live, target) = (self.pool.live(), self.pool.target());
        if live < target {
            return Err(format!("worker threads short: {live} of {target} live (starting more)"));
        }
        Ok(())
    }

    /// Liveness: the watchdog ticked recently, and requests do not wait with no worker taking
    /// any (or no worker live at all) for longer than `--timeout`: the server would answer
    /// nothing but 503s, and only a restart gives it its threads back.
    pub fn live(&self) -> Result<(), String> {
        let age = self.watchdog.silent_for();
        let limit = (self.watchdog.tick_interval() * 100).max(Duration::from_secs(2));
        if age > limit {
            return Err(format!("watchdog silent for {:.1}s", age.as_secs_f64()));
        }
        let after = self.watchdog.starved_after();
        if let Some(starved) = self.watchdog.starved_for().filter(|s| *s >= after) {
            let p = &self.pool;
            return Err(format!(
                "no worker has taken a request for {:.1}s (--timeout {}s): {} of {} workers live, {} busy, {} abandoned, {} requests queued",
                starved.as_secs_f64(),
                after.as_secs_f64(),
                p.live(),
                p.target(),
                p.busy(),
                p.abandoned_alive(),
                p.queue_depth()
            ));
        }
        Ok(())
    }

    /// The components' counts, for one metrics scrape.
    pub fn snapshot(&self) -> Snapshot {
        let watchdog = self.watchdog.stats();
        let timeouts = self
            .routes
            .iter()
            .flat_map(|(id, _)| TimeoutReason::ALL.iter().map(move |&r| (id, r)))
            .map(|(id, r)| (id, r, self.watchdog.timeouts(id, r)))
            .collect();
        let pool = self.pool.stats();
        Snapshot {
            requests_in_flight: pool.queue_depth + pool.busy + pool.detached,
            pool,
            log_records_dropped: crate::logging::dropped_records() + watchdog.offload_dropped_logs,
            watchdog,
            timeouts,
            connections_open: self.conns.open.load(Relaxed),
            connections_busy: self.conns.busy_count(),
            accept_errors: self.conns.accept_errors.load(Relaxed),
            body_memory_bytes: self.body_budget.used(),
            body_memory_limit_bytes: self.body_budget.limit(),
        }
    }
}
