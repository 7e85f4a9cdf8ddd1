//! Counters and histograms, updated with relaxed atomics on the hot path (no lock, no syscall)
//! and encoded in the Prometheus text format by `prometheus-client` at scrape time.
//!
//! Why not the crate's own `Counter`/`Family`/`Histogram` types on the hot path: its `Family`
//! takes a read lock and hashes the label set on every `get_or_create`, and its `Histogram`
//! takes a lock per observation. Routes and statuses are known up front here, so plain atomics
//! indexed by route and status do the counting, and a [`Collector`] hands the values to the
//! crate's encoder once per scrape.
//!
//! The per-request counts are kept in [`SHARDS`] shards, each thread counting in its own (may's
//! threads: one per CPU), and summed at scrape time: a counter that every request of every
//! thread increments moves its cache line between the CPUs on every request. A shard counts
//! each series' first few statuses in slots of its own; further statuses of a series (rare)
//! go to counters all threads share.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::runtime::pool::PoolStats;
use crate::runtime::routes::{RouteId, RouteTable};
use crate::runtime::shard::thread_shard;
use crate::runtime::state::TimeoutReason;
use crate::runtime::watchdog::WatchdogStats;

/// Why a request or connection was refused before any handler ran (`vigil_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    QueueFull = 0,
    Draining = 1,
    MaxConnections = 2,
    BadRequest = 3,
    Timeout = 4,
    BodyMemory = 5,
}

impl Rejected {
    const ALL: [Rejected; 6] =
        [Self::QueueFull, Self::Draining, Self::MaxConnections, Self::BadRequest, Self::Timeout, Self::BodyMemory];
    fn label(self) -> &'static str {
        ["queue_full", "draining", "max_connections", "bad_request", "read_timeout", "body_memory"][self as usize]
    }
}

/// A fixed-bucket histogram of seconds (or ratios) with atomic buckets.
pub(crate) struct Histogram {
    bounds: Arc<[f64]>,
    buckets: Box<[AtomicU64]>,
    /// Sum in micro-units, to stay an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((v.max(0.0) * 1e6) as u64, Relaxed);
    }

    /// Observations so far.
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The snapshot of these histograms (the same bounds) added up.
    fn snapshot<'a>(all: impl IntoIterator<Item = &'a Histogram>) -> HistogramSnapshot {
        let mut all = all.into_iter().peekable();
        let bounds = all.peek().map(|h| Arc::clone(&h.bounds)).unwrap_or_else(|| Arc::from([]));
        let mut counts = vec![0u64; bounds.len() + 1];
        let mut sum_micros = 0u64;
        for h in all {
            for (c, b) in counts.iter_mut().zip(h.buckets.iter()) {
                *c += b.load(Relaxed);
            }
            sum_micros += h.sum_micros.load(Relaxed);
        }
        HistogramSnapshot {
            sum: sum_micros as f64 / 1e6,
            count: counts.iter().sum(),
            buckets: bounds.iter().copied().zip(counts).collect(),
        }
    }
}

/// How many shards the per-request counts are kept in (threads are spread over them in turn).
const SHARDS: usize = 4;

/// Statuses a series counts in slots of its own, per shard; more go to the shared counters.
const STATUS_SLOTS: usize = 6;

/// A status and how many responses had it; code 0: free.
#[derive(Default)]
struct StatusSlot {
    code: AtomicU16,
    count: AtomicU64,
}

/// One series' counts in one shard.
struct SeriesCounts {
    statuses: [StatusSlot; STATUS_SLOTS],
    duration: Histogram,
    budget: Histogram,
}

impl SeriesCounts {
    /// Counts a response with `status` in a slot of this shard; `false` if every slot holds
    /// another status.
    fn status(&self, status: u16) -> bool {
        for slot in &self.statuses {
            let code = slot.code.load(Relaxed);
            let mine = code == status
                || (code == 0
                    && match slot.code.compare_exchange(0, status, Relaxed, Relaxed) {
                        Ok(_) => true,
                        Err(other) => other == status,
                    });
            if mine {
                slot.count.fetch_add(1, Relaxed);
                return true;
            }
        }
        false
    }
}

/// What one shard counts.
struct Shard {
    series: Box<[SeriesCounts]>,
    queue_wait: Histogram,
}

/// Buckets for a route whose deadline is `timeout`: fine below 100 ms, then fractions of the
/// deadline so "how close to timing out" is visible.
fn duration_bounds(timeout: Duration) -> Vec<f64> {
    let t = timeout.as_secs_f64();
    let mut b = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
    for f in [0.25, 0.5, 0.8, 0.9, 1.0, 1.5] {
        b.push(t * f);
    }
    b.retain(|v| *v > 0.0);
    b.sort_by(|a, c| a.partial_cmp(c).unwrap());
    b.dedup_by(|a, c| (*a - *c).abs() < 1e-9);
    b
}

/// The methods that get their own `unmatched` series; any other is counted as `other` (the
/// method is the client's to choose: the label set stays bounded).
const UNMATCHED_METHODS: [&str; 10] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"];

/// A series' labels, and the counts of statuses beyond the shards' slots.
struct RouteMetrics {
    method: String,
    label: String,
    /// Responses by status code (100..=599), indexed by `status - 100`, for the statuses a
    /// shard had no slot left for.
    statuses: Box<[AtomicU64]>,
}

/// What the components own, read once per scrape (metrics observe; they never decide).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub pool: PoolStats,
    pub watchdog: WatchdogStats,
    /// Timeouts by route and reason (the watchdog's counts).
    pub timeouts: Vec<(RouteId, TimeoutReason, u64)>,
    pub connections_open: usize,
    /// Connections a drain would wait for (a request on its way in, handled or being written).
    pub connections_busy: usize,
    /// Requests queued or running (cancelled ones still running included).
    pub requests_in_flight: usize,
    /// Log records dropped by the log writer's queue and by the watchdog's offload queue.
    pub log_records_dropped: u64,
    /// Failed `accept` calls on the public listener.
    pub accept_errors: u64,
    /// Bytes request bodies hold of `--max-body-memory`, and that budget.
    pub body_memory_bytes: u64,
    pub body_memory_limit_bytes: u64,
}

/// The request counters and histograms of one server, bumped on the hot path. Series are
/// labelled by method and route pattern, so `GET /users` and `POST /users` are two series.
pub(crate) struct Metrics {
    /// One per app route, then one per `UNMATCHED_METHODS` entry for requests that matched none.
    routes: Vec<RouteMetrics>,
    /// Index of the first "unmatched" entry.
    unmatched: usize,
    /// The per-request counts, by thread (summed at scrape time).
    shards: Box<[Shard]>,
    rejected: [AtomicU64; Rejected::ALL.len()],
    start_time: f64,
}

impl Metrics {
    pub fn new(routes: &RouteTable, default_timeout: Duration) -> Self {
        let mk = |method: &str, label: &str| RouteMetrics {
            method: method.to_string(),
            label: label.to_string(),
            statuses: (100..600).map(|_| AtomicU64::new(0)).collect(),
        };
        let app_routes: Vec<_> = routes.iter().filter(|(id, _)| routes.is_app_route(*id)).map(|(_, r)| r).collect();
        let mut rm: Vec<RouteMetrics> = app_routes.iter().map(|r| mk(&r.method, &r.pattern)).collect();
        let unmatched = rm.len();
        rm.extend(UNMATCHED_METHODS.iter().map(|m| mk(m, RouteTable::UNMATCHED)));
        // Every series' duration buckets (its deadline's), shared by the shards.
        let durations: Vec<Arc<[f64]>> = app_routes
            .iter()
            .map(|r| r.timeout)
            .chain(UNMATCHED_METHODS.iter().map(|_| default_timeout))
            .map(|t| Arc::from(duration_bounds(t)))
            .collect();
        let budget: Arc<[f64]> = Arc::from(&[0.1, 0.25, 0.5, 0.8, 0.9, 1.0, 1.25][..]);
        let queue_wait: Arc<[f64]> = Arc::from(&[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0][..]);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                series: durations
                    .iter()
                    .map(|d| SeriesCounts {
                        statuses: Default::default(),
                        duration: Histogram::new(Arc::clone(d)),
                        budget: Histogram::new(Arc::clone(&budget)),
                    })
                    .collect(),
                queue_wait: Histogram::new(Arc::clone(&queue_wait)),
            })
            .collect();
        let start_time =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Metrics { routes: rm, unmatched, shards, rejected: Default::default(), start_time }
    }

    /// The series index of `route`, or for a request that matched none, of its `method`.
    fn series(&self, id: Option<RouteId>, method: &str) -> usize {
        match id {
            Some(id) if id.index() < self.unmatched => id.index(),
            _ => {
                let m = UNMATCHED_METHODS.iter().position(|&m| m == method).unwrap_or(UNMATCHED_METHODS.len() - 1);
                self.unmatched + m
            }
        }
    }

    /// Counts a response sent for `route` (`None`: matched no route; then `method`, the
    /// request's, picks the series). `budget`: elapsed / deadline.
    pub fn response(&self, route: Option<RouteId>, method: &str, status: u16, elapsed: Duration, budget: Option<f64>) {
        let i = self.series(route, method);
        let counts = &self.shards[thread_shard(SHARDS)].series[i];
        if (100..600).contains(&status) && !counts.status(status) {
            self.routes[i].statuses[(status - 100) as usize].fetch_add(1, Relaxed);
        }
        counts.duration.observe(elapsed.as_secs_f64());
        if let Some(b) = budget {
            counts.budget.observe(b);
        }
    }

    pub fn reject(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// How long a request waited in the queue before a worker started it.
    pub fn queue_wait(&self, d: Duration) {
        self.shards[thread_shard(SHARDS)].queue_wait.observe(d.as_secs_f64());
    }

    /// Seconds since the metrics (and so the server) started.
    pub fn uptime_secs(&self) -> f64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        (now - self.start_time).max(0.0)
    }

    /// Requests answered with `status`, over all routes (for tests and the dashboard).
    pub fn status_count(&self, status: u16) -> u64 {
        (0..self.routes.len()).map(|i| self.series_status(i, status)).sum()
    }

    /// Responses of series `i` with `status`: the shared counter and every shard's slot.
    fn series_status(&self, i: usize, status: u16) -> u64 {
        let shared = self.routes[i].statuses.get((status as usize).wrapping_sub(100)).map_or(0, |c| c.load(Relaxed));
        let slots = self.shards.iter().flat_map(|s| s.series[i].statuses.iter());
        shared
            + slots.filter(|slot| slot.code.load(Relaxed) == status).map(|slot| slot.count.load(Relaxed)).sum::<u64>()
    }

    /// Responses of series `i` by status, summed over the shards (statuses with none left out).
    fn series_statuses(&self, i: usize) -> Vec<(u16, u64)> {
        let mut counts: Vec<u64> = self.routes[i].statuses.iter().map(|c| c.load(Relaxed)).collect();
        for slot in self.shards.iter().flat_map(|s| s.series[i].statuses.iter()) {
            let code = slot.code.load(Relaxed);
            if (100..600).contains(&code) {
                counts[usize::from(code - 100)] += slot.count.load(Relaxed);
            }
        }
        counts.into_iter().enumerate().filter(|&(_, n)| n > 0).map(|(k, n)| (k as u16 + 100, n)).collect()
    }

    fn duration(&self, i: usize) -> HistogramSnapshot {
        Histogram::snapshot(self.shards.iter().map(|s| &s.series[i].duration))
    }

    fn budget(&self, i: usize) -> HistogramSnapshot {
        Histogram::snapshot(self.shards.iter().map(|s| &s.series[i].budget))
    }

    /// Whether series `i` has counted a request.
    fn used(&self, i: usize) -> bool {
        self.shards.iter().any(|s| s.series[i].duration.count() > 0)
    }

    /// The Prometheus text exposition (format 0.0.4), encoded by `prometheus-client`.
    ///
    /// The hot path only bumps atomics; this reads them once, with the components' own counts
    /// in `snap`, and lets the crate's Prometheus text encoder write names, labels (escaped),
    /// `le` bounds and values.
    pub fn render(&self, snap: &Snapshot) -> String {
        let scrape = self.scrape(snap);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("encoding into a String cannot fail");
        out
    }

    /// Every family, in exposition order.
    fn scrape(&self, snap: &Snapshot) -> Scrape {
        let route = |r: &RouteMetrics| vec![("method", r.method.clone()), ("route", r.label.clone())];
        // Series with no request yet are left out (an unmatched method nobody sent, say).
        let used: Vec<usize> = (0..self.routes.len()).filter(|&i| self.used(i)).collect();
        let mut f = Vec::with_capacity(32);
        let mut requests = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            for (status, n) in self.series_statuses(i) {
                let mut labels = route(r);
                labels.push(("status", status.to_string()));
                requests.push((labels, n));
            }
        }
        f.push(Family::counter("vigil_requests_total", "Responses sent, by method, route and status.", requests));
        f.push(Family::histograms(
            "vigil_request_duration_seconds",
            "Time from request read to response, by method and route.",
            used.iter().map(|&i| (route(&self.routes[i]), self.duration(i))).collect(),
        ));
        f.push(Family::histograms(
            "vigil_budget_used_ratio",
            "Time from request read to response over the route's deadline, by method and route (1 = the whole budget).",
            used.iter().filter(|&&i| i < self.unmatched).map(|&i| (route(&self.routes[i]), self.budget(i))).collect(),
        ));
        let timeouts = snap
            .timeouts
            .iter()
            .map(|&(id, reason, n)| {
                let mut labels = route(&self.routes[self.series(Some(id), "")]);
                labels.push(("reason", reason.label().to_string()));
                (labels, n)
            })
            .collect();
        f.push(Family::counter(
            "vigil_request_timeouts_total",
            "Requests timed out by the watchdog, by method, route and reason (deadline, stall, queue, shutdown).",
            timeouts,
        ));
        f.push(Family::counter(
            "vigil_rejected_total",
            "Requests or connections refused before a handler ran, by reason.",
            Rejected::ALL
                .iter()
                .map(|&why| (vec![("reason", why.label().to_string())], self.rejected[why as usize].load(Relaxed)))
                .collect(),
        ));
        f.push(Family::histograms(
            "vigil_queue_wait_seconds",
            "Time requests waited in the queue for a worker thread.",
            vec![(Vec::new(), Histogram::snapshot(self.shards.iter().map(|s| &s.queue_wait)))],
        ));
        let (p, w) = (&snap.pool, &snap.watchdog);
        let counters: [(&'static str, &'static str, u64); 11] = [
            (
                "vigil_cancellations_honored_total",
                "Cancelled handlers that returned within the grace period.",
                w.cancellations_honored_total,
            ),
            (
                "vigil_threads_abandoned_total",
                "Worker threads given up because their handler ignored cancellation.",
                p.abandoned_total,
            ),
            (
                "vigil_threads_replaced_total",
                "Worker threads started to stand in for cancelled ones or to top up a short pool.",
                p.replaced_total,
            ),
            ("vigil_threads_retired_total", "Worker threads retired after --max-requests.", p.retired_total),
            (
                "vigil_thread_spawn_failures_total",
                "Worker threads that could not be started (retried every watchdog tick).",
                p.spawn_failures_total,
            ),
            (
                "vigil_thread_ceiling_refusals_total",
                "Cancelled requests whose thread got no stand-in because --max-threads handler threads were alive.",
                p.ceiling_refusals_total,
            ),
            ("vigil_handler_panics_total", "Handler panics (each answered 500).", p.panics_total),
            (
                "vigil_accept_errors_total",
                "Failed accepts on the public listener (e.g. no file descriptors left); accepting backs off from 5 ms to 1 s.",
                snap.accept_errors,
            ),
            (
                "vigil_client_disconnects_total",
                "Requests whose client went away while the handler ran (their token was fired).",
                w.clients_gone_total,
            ),
            (
                "vigil_log_records_dropped_total",
                "Log records dropped because the log sink did not keep up.",
                snap.log_records_dropped,
            ),
            (
                "vigil_offload_threads",
                "Threads running on_cancel callbacks and the watchdog's log records.",
                w.offload_threads as u64,
            ),
        ];
        for (name, help, v) in counters {
            if name.ends_with("_total") {
                f.push(Family::counter(name, help, vec![(Vec::new(), v)]));
            } else {
                f.push(Family::gauge(name, help, Num::Int(v as i64)));
            }
        }
        f.push(Family {
            name: "vigil_abandoned_cpu_seconds_total",
            help: "CPU time abandoned threads used after they were abandoned (the running ones read at scrape time).",
            series: Series::CounterFloat(p.abandoned_cpu.as_secs_f64()),
        });
        let gauges: [(&'static str, &'static str, usize); 10] = [
            ("vigil_threads_abandoned_alive", "Abandoned threads still running their handler.", p.abandoned_alive),
            (
                "vigil_handler_threads",
                "Handler threads alive: live workers plus cancelled and abandoned threads (at most vigil_thread_ceiling).",
                p.alive,
            ),
            ("vigil_thread_ceiling", "Most handler threads alive at once (--max-threads).", p.max_threads),
            ("vigil_worker_threads", "Live worker threads in the pool.", p.live),
            ("vigil_worker_threads_busy", "Worker threads running a handler.", p.busy),
            (
                "vigil_threads_cancelled_alive",
                "Threads taken out of the pool when their request was cancelled, still running its handler (abandoned ones included).",
                p.detached,
            ),
            (
                "vigil_requests_in_flight",
                "Requests queued for a worker or running (cancelled ones still running included).",
                snap.requests_in_flight,
            ),
            (
                "vigil_connections_busy",
                "Connections with a request being read, handled or written (or no request yet): what a drain waits for.",
                snap.connections_busy,
            ),
            ("vigil_queue_depth", "Requests waiting for a worker thread.", p.queue_depth),
            ("vigil_connections_open", "Open client connections.", snap.connections_open),
        ];
        for (name, help, v) in gauges {
            f.push(Family::gauge(name, help, Num::Int(v as i64)));
        }
        f.push(Family::gauge(
            "vigil_body_memory_bytes",
            "Bytes request bodies hold in memory now (reserved from --max-body-memory).",
            Num::Int(snap.body_memory_bytes as i64),
        ));
        f.push(Family::gauge(
            "vigil_body_memory_limit_bytes",
            "The memory budget of request bodies (--max-body-memory).",
            Num::Int(snap.body_memory_limit_bytes as i64),
        ));
        if let Some(rss) = crate::platform::resident_memory_bytes() {
            f.push(Family::gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Num::Int(rss as i64),
            ));
        }
        f.push(Family::gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Num::Float(self.start_time),
        ));
        Scrape { families: f }
    }
}

/// The label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// A histogram read at scrape time: per-bucket (not cumulative) counts by upper bound, without
/// the `+Inf` bucket, which the encoder writes from `count`.
#[derive(Debug)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

#[derive(Debug)]
enum Series {
    Counter(Vec<(Labels, u64)>),
    /// A counter of seconds, without labels.
    CounterFloat(f64),
    Gauge(Num),
    Histogram(Vec<(Labels, HistogramSnapshot)>),
}

/// One metric family, as read at scrape time.
#[derive(Debug)]
struct Family {
    /// The full name (counters with their `_total`, which the encoder adds back).
    name: &'static str,
    help: &'static str,
    series: Series,
}

impl Family {
    fn counter(name: &'static str, help: &'static str, series: Vec<(Labels, u64)>) -> Self {
        Family { name, help, series: Series::Counter(series) }
    }
    fn gauge(name: &'static str, help: &'static str, v: Num) -> Self {
        Family { name, help, series: Series::Gauge(v) }
    }
    fn histograms(name: &'static str, help: &'static str, series: Vec<(Labels, HistogramSnapshot)>) -> Self {
        Family { name, help, series: Series::Histogram(series) }
    }
}

/// Every family of one scrape, handed to `prometheus-client`'s encoder as a [`Collector`].
#[derive(Debug)]
struct Scrape {
    families: Vec<Family>,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in &self.families {
            match &fam.series {
                Series::Counter(series) => {
                    // The encoder appends `_total` to counter names itself.
                    let name = fam.name.strip_suffix("_total").unwrap_or(fam.name);
                    let mut m = encoder.encode_descriptor(name, fam.help, None, MetricType::Counter)?;
                    for (labels, v) in series {
                        m.encode_family(labels)?.encode_counter::<NoLabelSet, u64, u64>(v, None)?;
                    }
                }
                Series::CounterFloat(v) => {
                    let name = fam.name.strip_suffix("_total").unwrap_or(fam.name);
                    let mut m = encoder.encode_descriptor(name, fam.help, None, MetricType::Counter)?;
                    m.encode_counter::<NoLabelSet, f64, f64>(v, None)?;
                }
                Series::Gauge(v) => {
                    let mut m = encoder.encode_descriptor(fam.name, fam.help, None, MetricType::Gauge)?;
                    match *v {
                        Num::Int(i) => m.encode_gauge(&i)?,
                        Num::Float(x) => m.encode_gauge(&x)?,
                    }
                }
                Series::Histogram(series) => {
                    let mut m = encoder.encode_descriptor(fam.name, fam.help, None, MetricType::Histogram)?;
                    for (labels, h) in series {
                        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_and_more_statuses_than_slots_add_up_at_scrape_time() {
        use crate::runtime::routes::RouteInfo;
        let routes = RouteTable::new(vec![RouteInfo {
            method: "GET".into(),
            pattern: "/r".into(),
            timeout: Duration::from_secs(1),
            stall: None,
        }]);
        let m = Metrics::new(&routes, Duration::from_secs(30));
        let statuses: Vec<u16> = (200..200 + 2 * STATUS_SLOTS as u16).collect();
        std::thread::scope(|s| {
            for _ in 0..2 * SHARDS {
                s.spawn(|| {
                    for &status in &statuses {
                        for _ in 0..3 {
                            m.response(Some(RouteId::new(0)), "GET", status, Duration::from_millis(2), Some(0.5));
                        }
                    }
                    m.queue_wait(Duration::from_millis(1));
                });
            }
        });
        let threads = 2 * SHARDS as u64;
        for &status in &statuses {
            assert_eq!(m.status_count(status), 3 * threads, "status {status}");
        }
        let text = m.render(&Snapshot::default());
        let n = 3 * threads;
        assert!(
            text.contains(&format!("vigil_requests_total{{method=\"GET\",route=\"/r\",status=\"211\"}} {n}")),
            "{text}"
        );
        let all = threads * 3 * statuses.len() as u64;
        assert!(
            text.contains(&format!("vigil_request_duration_seconds_count{{method=\"GET\",route=\"/r\"}} {all}")),
            "{text}"
        );
        assert!(text.contains(&format!("vigil_queue_wait_seconds_count {threads}")), "{text}");
    }

    #[test]
    fn render_counts_by_method_route_and_status_with_cumulative_buckets_and_escaped_labels() {
        use crate::runtime::routes::RouteInfo;
        let route = |method: &str, pattern: &str| RouteInfo {
            method: method.into(),
            pattern: pattern.into(),
            timeout: Duration::from_secs(2),
            stall: None,
        };
        let routes = RouteTable::new(vec![route("GET", "/a\"b"), route("POST", "/a\"b")]);
        let (get, post) = (Some(RouteId::new(0)), Some(RouteId::new(1)));
        let m = Metrics::new(&routes, Duration::from_secs(30));
        m.response(get, "GET", 200, Duration::from_millis(3), Some(0.0015));
        m.response(get, "HEAD", 200, Duration::from_millis(1500), Some(0.75));
        m.response(post, "POST", 201, Duration::from_millis(3), Some(0.0015));
        m.response(None, "GET", 404, Duration::from_micros(50), None);
        m.response(None, "BREW", 404, Duration::from_micros(50), None);
        m.reject(Rejected::QueueFull);
        let snap = Snapshot {
            timeouts: vec![(RouteId::new(1), TimeoutReason::Stall, 1)],
            pool: PoolStats { queue_depth: 3, live: 4, ..Default::default() },
            log_records_dropped: 9,
            ..Default::default()
        };
        let text = m.render(&snap);
        for line in [
            "# TYPE vigil_requests_total counter",
            "vigil_requests_total{method=\"GET\",route=\"/a\\\"b\",status=\"200\"} 2",
            "vigil_requests_total{method=\"POST\",route=\"/a\\\"b\",status=\"201\"} 1",
            "vigil_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
            "vigil_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1",
            "vigil_request_duration_seconds_bucket{method=\"GET\",route=\"/a\\\"b\",le=\"0.005\"} 1",
            "vigil_request_duration_seconds_bucket{method=\"GET\",route=\"/a\\\"b\",le=\"1.6\"} 2",
            "vigil_request_duration_seconds_bucket{method=\"GET\",route=\"/a\\\"b\",le=\"+Inf\"} 2",
            "vigil_request_duration_seconds_count{method=\"GET\",route=\"/a\\\"b\"} 2",
            "vigil_request_duration_seconds_count{method=\"POST\",route=\"/a\\\"b\"} 1",
            "vigil_request_timeouts_total{method=\"POST\",route=\"/a\\\"b\",reason=\"stall\"} 1",
            "vigil_rejected_total{reason=\"queue_full\"} 1",
            "# TYPE vigil_queue_wait_seconds histogram",
            "vigil_queue_depth 3",
            "vigil_worker_threads 4",
            "vigil_log_records_dropped_total 9",
            "vigil_abandoned_cpu_seconds_total 0.0",
            "vigil_thread_ceiling 0",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // A route's duration buckets reach past its deadline (2 s: 0.5, 1, 1.6, 1.8, 2, 3 s).
        assert!(text.contains("{method=\"GET\",route=\"/a\\\"b\",le=\"3\"} 2"), "{text}");
        // No series twice: every sample line (name and labels) is unique.
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let series = l.rsplit_once(' ').unwrap().0;
            assert!(seen.insert(series), "duplicate series {series}");
        }
        // Unmatched methods nobody sent have no series.
        assert!(!text.contains("method=\"PUT\""), "{text}");
    }
}
