//! The pool's threads as the OS sees them: each worker registers itself when it starts (its
//! id for `/proc` and its CPU clock on Linux, a thread handle on Windows), so that the watchdog
//! can lower the priority of a thread it abandons — the thread is running user code and cannot
//! be asked — and the admin endpoints can read the CPU time abandoned threads burn.
//!
//! A thread abandoned while it burns CPU is also put under the CPU budget of abandoned threads
//! (`--abandoned-cpu`, Linux): lower priority alone cannot stop such threads from taking the
//! CPUs whenever nothing else runs, which on a virtual machine whose host schedules its
//! vCPUs still costs every other thread latency (BENCHMARKS.md, "Abandoned spinners").
//!
//! Demotion and its undoing race: the watchdog demotes a thread right after it marks its
//! request abandoned, and the handler may return at that very moment. Both sides take the
//! thread's own small lock and decide under it: the watchdog demotes only if the request is
//! still abandoned (not done), and the worker restores whatever was applied before it serves
//! again. So a thread is never left demoted while it serves, and never demoted after it left
//! its abandoned request.
//!
//! Nothing here is on the request path: a worker registers once, when it starts.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::platform::{CpuThrottle, Demote, OsThread, SavedPriority};
use crate::runtime::inflight::Inflight;
use crate::runtime::state::{RequestState, WorkerId};

/// What happens to the CPU priority of a thread abandoned because its handler ignored its
/// cancellation (`--abandoned-priority`).
///
/// ```
/// use vigil::AbandonedPriority;
/// assert_eq!("idle".parse::<AbandonedPriority>(), Ok(AbandonedPriority::Idle));
/// assert_eq!(AbandonedPriority::Lowest.to_string(), "lowest");
/// assert!("high".parse::<AbandonedPriority>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbandonedPriority {
    /// The lowest there is: Linux `SCHED_IDLE` (the thread runs only on a CPU nothing else
    /// wants, and a waking thread preempts it at once); Windows `THREAD_PRIORITY_IDLE`.
    Idle,
    /// Linux nice 19; Windows `THREAD_PRIORITY_LOWEST`.
    Lowest,
    /// Left as it is.
    Unchanged,
}

impl AbandonedPriority {
    fn demotion(self) -> Option<Demote> {
        match self {
            AbandonedPriority::Idle => Some(Demote::Idle),
            AbandonedPriority::Lowest => Some(Demote::Lowest),
            AbandonedPriority::Unchanged => None,
        }
    }
}

impl fmt::Display for AbandonedPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AbandonedPriority::Idle => "idle",
            AbandonedPriority::Lowest => "lowest",
            AbandonedPriority::Unchanged => "unchanged",
        })
    }
}

impl FromStr for AbandonedPriority {
    type Err = String;

    /// `idle`, `lowest` or `unchanged`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "idle" => Ok(AbandonedPriority::Idle),
            "lowest" => Ok(AbandonedPriority::Lowest),
            "unchanged" => Ok(AbandonedPriority::Unchanged),
            _ => Err(format!("expected `idle`, `lowest` or `unchanged`, got {s:?}")),
        }
    }
}

/// The CPU time one abandoned thread burns from the moment it was abandoned until its handler
/// returns (then it is frozen).
pub(crate) struct AbandonedCpu {
    os: Option<Arc<OsThread>>,
    /// The thread's CPU time when it was abandoned (`None`: unreadable).
    base: Option<Duration>,
    /// Nanoseconds burnt by the time its handler returned; `u64::MAX` while it still runs.
    final_ns: AtomicU64,
}

impl fmt::Debug for AbandonedCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbandonedCpu").field("burnt", &self.burnt()).field("finished", &self.finished()).finish()
    }
}

impl AbandonedCpu {
    /// CPU time burnt since the thread was abandoned: read now while its handler runs, frozen
    /// once it returned. `None` where the platform does not tell.
    pub fn burnt(&self) -> Option<Duration> {
        match self.final_ns.load(Acquire) {
            u64::MAX => Some(self.os.as_ref()?.cpu_time()?.saturating_sub(self.base?)),
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Whether its handler has returned.
    pub fn finished(&self) -> bool {
        self.final_ns.load(Acquire) != u64::MAX
    }
}

/// One worker thread, registered by itself when it starts.
pub(crate) struct WorkerThread {
    os: Option<Arc<OsThread>>,
    demotion: Mutex<Demotion>,
}

/// What was done to a thread when it was abandoned, undone when its handler returns.
#[derive(Default)]
struct Demotion {
    /// Its priority before it was lowered (`None`: not lowered).
    saved: Option<SavedPriority>,
    /// Its part of the CPU budget of abandoned threads (`--abandoned-cpu`, Linux).
    throttle: Option<CpuThrottle>,
    /// The CPU it burns while abandoned.
    cpu: Option<Arc<AbandonedCpu>>,
}

/// What [`ThreadRegistry::demote`] did.
pub(crate) struct Demoted {
    /// The CPU the thread burns from now on.
    pub cpu: Arc<AbandonedCpu>,
    /// Whether its priority was lowered: `Ok(true)` yes, `Ok(false)` not asked
    /// (`--abandoned-priority unchanged`), `Err` the OS refused.
    pub lowered: std::io::Result<bool>,
    /// Whether it was put under the CPU budget: `Ok(true)` yes, `Ok(false)` no budget set
    /// (`--abandoned-cpu off`), `Err` not possible (not Linux, or the OS refused).
    pub throttled: std::io::Result<bool>,
}

/// What the thread of an abandoned request finds when its handler returns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Restored {
    /// Its priority was never lowered, or is back to what it was: it may serve again.
    Ready,
    /// The OS refused to give its priority back (Linux, unprivileged): it must not serve.
    StillDemoted,
}

/// Every live worker thread, by id, and the CPU abandoned threads burnt.
pub(crate) struct ThreadRegistry {
    priority: AbandonedPriority,
    /// Whether abandoned threads are put under the CPU budget.
    budget: bool,
    threads: Mutex<HashMap<WorkerId, Arc<WorkerThread>>>,
    /// CPU time burnt while abandoned by threads whose handler has returned, in ns.
    finished_ns: AtomicU64,
    /// The largest total reported so far, in ns: the total is a counter, and two reads racing
    /// a thread's finish could otherwise see it step back by a few microseconds.
    reported_ns: AtomicU64,
}

impl ThreadRegistry {
    pub fn new(priority: AbandonedPriority, budget: bool) -> Self {
        ThreadRegistry {
            priority,
            budget,
            threads: Mutex::new(HashMap::new()),
            finished_ns: AtomicU64::new(0),
            reported_ns: AtomicU64::new(0),
        }
    }

    /// Called by a worker thread as it starts: names it for the OS calls.
    pub fn register_current(&self, id: WorkerId) {
        let t = Arc::new(WorkerThread { os: OsThread::current().map(Arc::new), demotion: Mutex::default() });
        self.threads.lock().insert(id, t);
    }

    /// Called by a worker thread as it ends.
    pub fn unregister(&self, id: WorkerId) {
        self.threads.lock().remove(&id);
    }

    fn get(&self, id: WorkerId) -> Option<Arc<WorkerThread>> {
        self.threads.lock().get(&id).cloned()
    }

    /// The watchdog abandoned `job`: lower its thread's priority (as `--abandoned-priority`
    /// says) and start counting the CPU it burns. `None` if its handler returned meanwhile (or
    /// the thread is not registered: a test's). A few quick syscalls, under the thread's own
    /// lock, which its worker holds only for as long (see the module's header).
    pub fn demote(&self, job: &Inflight) -> Option<Demoted> {
        let t = self.get(job.worker.load(Relaxed)?)?;
        let mut d = t.demotion.lock();
        if job.state() != RequestState::Abandoned {
            return None; // the handler returned: the thread serves again, or has left
        }
        let cpu = Arc::new(AbandonedCpu {
            os: t.os.clone(),
            base: t.os.as_ref().and_then(|os| os.cpu_time()),
            final_ns: AtomicU64::new(u64::MAX),
        });
        d.cpu = Some(Arc::clone(&cpu));
        let lowered = match (self.priority.demotion(), &t.os) {
            (None, _) => Ok(false),
            (Some(_), None) => Err(std::io::ErrorKind::Unsupported.into()),
            (Some(how), Some(os)) => os.demote(how).map(|saved| {
                d.saved = Some(saved);
                true
            }),
        };
        let throttled = match (&t.os, self.budget) {
            (_, false) => Ok(false),
            (None, true) => Err(std::io::ErrorKind::Unsupported.into()),
            (Some(os), true) => os.throttle().map(|th| {
                d.throttle = Some(th);
                true
            }),
        };
        Some(Demoted { cpu, lowered, throttled })
    }

    /// Called by worker `id` when its abandoned handler returned: freezes the CPU count and
    /// gives the thread its priority back.
    pub fn finish_abandoned(&self, id: WorkerId) -> Restored {
        let Some(t) = self.get(id) else { return Restored::Ready };
        let mut d = t.demotion.lock();
        drop(d.throttle.take()); // on this thread: a pause still pending is skipped
        if let Some(cpu) = d.cpu.take() {
            let burnt = cpu.burnt().unwrap_or_default();
            let ns = u64::try_from(burnt.as_nanos()).unwrap_or(u64::MAX - 1).min(u64::MAX - 1);
            cpu.final_ns.store(ns, Release);
            self.finished_ns.fetch_add(ns, Relaxed);
        }
        match (d.saved.take(), &t.os) {
            (Some(saved), Some(os)) => match os.restore(saved) {
                Ok(()) => Restored::Ready,
                Err(_) => Restored::StillDemoted,
            },
            _ => Restored::Ready,
        }
    }

    /// The CPU abandoned threads burnt while abandoned: those whose handler returned, plus the
    /// ones still running, read now. Never less than a previous call returned.
    pub fn abandoned_cpu(&self) -> Duration {
        let threads: Vec<Arc<WorkerThread>> = self.threads.lock().values().cloned().collect();
        let running: Vec<Arc<AbandonedCpu>> = threads.iter().filter_map(|t| t.demotion.lock().cpu.clone()).collect();
        let live: Duration = running.iter().filter(|c| !c.finished()).filter_map(|c| c.burnt()).sum();
        let total = self.finished_ns.load(Relaxed).saturating_add(u64::try_from(live.as_nanos()).unwrap_or(u64::MAX));
        Duration::from_nanos(self.reported_ns.fetch_max(total, Relaxed).max(total))
    }

    /// The CPU burnt since it was abandoned by the thread of `worker`, if it is abandoned now.
    pub fn abandoned_cpu_of(&self, worker: WorkerId) -> Option<Duration> {
        let t = self.get(worker)?;
        let cpu = t.demotion.lock().cpu.clone()?;
        cpu.burnt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_names_parse_and_show_back() {
        for p in [AbandonedPriority::Idle, AbandonedPriority::Lowest, AbandonedPriority::Unchanged] {
            assert_eq!(p.to_string().parse::<AbandonedPriority>(), Ok(p));
        }
        assert_eq!(" IDLE ".parse::<AbandonedPriority>(), Ok(AbandonedPriority::Idle));
        assert!("nice".parse::<AbandonedPriority>().unwrap_err().contains("`idle`, `lowest` or `unchanged`"));
    }
}
