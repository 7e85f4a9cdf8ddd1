//! Counters and histograms, updated with relaxed atomics on the hot path (no lock, no syscall)
//! and rendered in the Prometheus text format on the admin listener.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::watchdog::TimeoutReason;

/// Why a request or connection was refused before any handler ran (`vigil_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    QueueFull = 0,
    Draining = 1,
    MaxConnections = 2,
    BadRequest = 3,
    Timeout = 4,
}

impl Rejected {
    const ALL: [Rejected; 5] = [Self::QueueFull, Self::Draining, Self::MaxConnections, Self::BadRequest, Self::Timeout];
    fn label(self) -> &'static str {
        ["queue_full", "draining", "max_connections", "bad_request", "read_timeout"][self as usize]
    }
}

/// A fixed-bucket histogram of seconds (or ratios) with atomic buckets.
pub(crate) struct Histogram {
    bounds: Vec<f64>,
    buckets: Box<[AtomicU64]>,
    /// Sum in micro-units, to stay an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: Vec<f64>) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((v.max(0.0) * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
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

struct RouteMetrics {
    label: String,
    /// Responses by status code (100..=599), indexed by `status - 100`.
    statuses: Box<[AtomicU64]>,
    timeouts: [AtomicU64; 4],
    duration: Histogram,
    budget: Histogram,
}

/// Every metric of one server.
pub(crate) struct Metrics {
    /// One per app route, plus a last one for "unmatched".
    routes: Vec<RouteMetrics>,
    pub cancellations_honored: AtomicU64,
    pub threads_abandoned_total: AtomicU64,
    pub threads_replaced_total: AtomicU64,
    pub threads_retired_total: AtomicU64,
    pub threads_abandoned_alive: AtomicI64,
    pub worker_threads: AtomicI64,
    pub workers_busy: AtomicI64,
    pub requests_in_flight: AtomicI64,
    pub connections_open: AtomicI64,
    pub handler_panics: AtomicU64,
    rejected: [AtomicU64; 5],
    queue_wait: Histogram,
    pub watchdog_heartbeat_ns: AtomicU64,
    start_time: f64,
}

impl Metrics {
    /// `routes`: (label, deadline) for each app route.
    pub fn new(routes: Vec<(String, Duration)>, default_timeout: Duration) -> Self {
        let mk = |label: String, timeout: Duration| RouteMetrics {
            label,
            statuses: (100..600).map(|_| AtomicU64::new(0)).collect(),
            timeouts: Default::default(),
            duration: Histogram::new(duration_bounds(timeout)),
            budget: Histogram::new(vec![0.1, 0.25, 0.5, 0.8, 0.9, 1.0, 1.25]),
        };
        let mut rm: Vec<RouteMetrics> = routes.into_iter().map(|(l, t)| mk(l, t)).collect();
        rm.push(mk("unmatched".into(), default_timeout));
        let start_time =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        Metrics {
            routes: rm,
            cancellations_honored: AtomicU64::new(0),
            threads_abandoned_total: AtomicU64::new(0),
            threads_replaced_total: AtomicU64::new(0),
            threads_retired_total: AtomicU64::new(0),
            threads_abandoned_alive: AtomicI64::new(0),
            worker_threads: AtomicI64::new(0),
            workers_busy: AtomicI64::new(0),
            requests_in_flight: AtomicI64::new(0),
            connections_open: AtomicI64::new(0),
            handler_panics: AtomicU64::new(0),
            rejected: Default::default(),
            queue_wait: Histogram::new(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            watchdog_heartbeat_ns: AtomicU64::new(0),
            start_time,
        }
    }

    fn route(&self, idx: usize) -> &RouteMetrics {
        self.routes.get(idx).unwrap_or_else(|| self.routes.last().expect("unmatched route"))
    }

    /// Counts a response sent for route `idx` (usize::MAX: unmatched). `budget`: elapsed / deadline.
    pub fn response(&self, idx: usize, status: u16, elapsed: Duration, budget: Option<f64>) {
        let r = self.route(idx);
        if (100..600).contains(&status) {
            r.statuses[(status - 100) as usize].fetch_add(1, Relaxed);
        }
        r.duration.observe(elapsed.as_secs_f64());
        if let Some(b) = budget {
            r.budget.observe(b);
        }
    }

    pub fn timeout(&self, idx: usize, reason: TimeoutReason) {
        self.route(idx).timeouts[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn reject(&self, why: Rejected) {
        self.rejected[why as usize].fetch_add(1, Relaxed);
    }

    pub fn queue_wait(&self, d: Duration) {
        self.queue_wait.observe(d.as_secs_f64());
    }

    /// Requests answered with `status`, over all routes (for tests and the dashboard).
    pub fn status_count(&self, status: u16) -> u64 {
        self.routes
            .iter()
            .map(|r| r.statuses.get((status as usize).wrapping_sub(100)).map_or(0, |c| c.load(Relaxed)))
            .sum()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, queue_depth: usize) -> String {
        let mut o = String::with_capacity(8192);
        let help = |o: &mut String, name: &str, kind: &str, text: &str| {
            let _ = writeln!(o, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        help(&mut o, "vigil_requests_total", "counter", "Responses sent, by route and status.");
        for r in &self.routes {
            for (i, c) in r.statuses.iter().enumerate() {
                let n = c.load(Relaxed);
                if n > 0 {
                    let _ =
                        writeln!(o, "vigil_requests_total{{route=\"{}\",status=\"{}\"}} {n}", esc(&r.label), i + 100);
                }
            }
        }
        help(&mut o, "vigil_request_duration_seconds", "histogram", "Time from request read to response, by route.");
        for r in &self.routes {
            r.duration.render(&mut o, "vigil_request_duration_seconds", &format!("route=\"{}\"", esc(&r.label)));
        }
        help(&mut o, "vigil_budget_used_ratio", "histogram", "Elapsed time over the route's deadline, by route.");
        for r in &self.routes {
            r.budget.render(&mut o, "vigil_budget_used_ratio", &format!("route=\"{}\"", esc(&r.label)));
        }
        help(
            &mut o,
            "vigil_request_timeouts_total",
            "counter",
            "Requests timed out by the watchdog, by route and reason.",
        );
        for r in &self.routes {
            for reason in TimeoutReason::ALL {
                let _ = writeln!(
                    o,
                    "vigil_request_timeouts_total{{route=\"{}\",reason=\"{}\"}} {}",
                    esc(&r.label),
                    reason.label(),
                    r.timeouts[reason as usize].load(Relaxed)
                );
            }
        }
        help(
            &mut o,
            "vigil_rejected_total",
            "counter",
            "Requests or connections refused before a handler ran, by reason.",
        );
        for why in Rejected::ALL {
            let _ = writeln!(
                o,
                "vigil_rejected_total{{reason=\"{}\"}} {}",
                why.label(),
                self.rejected[why as usize].load(Relaxed)
            );
        }
        help(&mut o, "vigil_queue_wait_seconds", "histogram", "Time requests waited in the queue for a worker thread.");
        self.queue_wait.render(&mut o, "vigil_queue_wait_seconds", "");
        let counters: [(&str, &str, u64); 5] = [
            (
                "vigil_cancellations_honored_total",
                "Cancelled handlers that returned within the grace period.",
                self.cancellations_honored.load(Relaxed),
            ),
            (
                "vigil_threads_abandoned_total",
                "Worker threads given up because their handler ignored cancellation.",
                self.threads_abandoned_total.load(Relaxed),
            ),
            (
                "vigil_threads_replaced_total",
                "Worker threads spawned to replace abandoned ones.",
                self.threads_replaced_total.load(Relaxed),
            ),
            (
                "vigil_threads_retired_total",
                "Worker threads retired after --max-requests.",
                self.threads_retired_total.load(Relaxed),
            ),
            ("vigil_handler_panics_total", "Handler panics (each answered 500).", self.handler_panics.load(Relaxed)),
        ];
        for (name, text, v) in counters {
            help(&mut o, name, "counter", text);
            let _ = writeln!(o, "{name} {v}");
        }
        let gauges: [(&str, &str, i64); 6] = [
            (
                "vigil_threads_abandoned_alive",
                "Abandoned threads still running their handler.",
                self.threads_abandoned_alive.load(Relaxed),
            ),
            ("vigil_worker_threads", "Live worker threads in the pool.", self.worker_threads.load(Relaxed)),
            ("vigil_worker_threads_busy", "Worker threads running a handler.", self.workers_busy.load(Relaxed)),
            ("vigil_requests_in_flight", "Requests read and not yet answered.", self.requests_in_flight.load(Relaxed)),
            ("vigil_queue_depth", "Requests waiting for a worker thread.", queue_depth as i64),
            ("vigil_connections_open", "Open client connections.", self.connections_open.load(Relaxed)),
        ];
        for (name, text, v) in gauges {
            help(&mut o, name, "gauge", text);
            let _ = writeln!(o, "{name} {v}");
        }
        if let Some(rss) = crate::platform::resident_memory_bytes() {
            help(&mut o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            let _ = writeln!(o, "process_resident_memory_bytes {rss}");
        }
        help(
            &mut o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
        );
        let _ = writeln!(o, "process_start_time_seconds {}", self.start_time);
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
