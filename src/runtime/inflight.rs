//! [`Inflight`]: one request from the moment it has been read until its handler is gone.
//!
//! The connection allocates it, the queue and the worker hold it while it runs, and the
//! watchdog holds a `Weak` reference to time it (a strong one only for the few requests it has
//! cancelled, until their outcome is known). The hot path only does atomic stores on it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::http::request::Request;
use crate::platform::PeerProbe;
use crate::runtime::budget::Reservation;
use crate::runtime::clock;
use crate::runtime::reply::{Reply, ReplySlot};
use crate::runtime::routes::{RouteId, RouteInfo};
use crate::runtime::state::{AtomicEnum, AtomicWorker, PoolSlot, RequestState, TimeoutReason, U8Enum, WorkerId};
use crate::runtime::token::Token;

/// One request from the moment it has been read until its handler is gone.
pub(crate) struct Inflight {
    pub req: Request,
    pub route: RouteId,
    /// Unique in this server (a client's `X-Request-Id` may repeat): keys the timeout log.
    pub uid: u64,
    /// The connection's sequence number of this request, to match the reply.
    pub seq: u64,
    state: AtomicEnum<RequestState>,
    /// Set by whoever answers the client first (worker, watchdog, drain).
    answered: AtomicBool,
    /// When the request had been read: the deadline clock starts here.
    pub start_ns: u64,
    /// The absolute ceiling: the route's, or an upstream's if that came sooner.
    pub deadline_ns: u64,
    /// Whether `deadline_ns` is an upstream's (`--trust-upstream-deadline`).
    pub upstream_deadline: bool,
    /// Stall timeout in ns, 0 for none.
    stall_ns: u64,
    pub last_progress_ns: AtomicU64,
    /// When a worker picked it up (0 while queued).
    pub run_start_ns: AtomicU64,
    /// When the watchdog fired the token for a timeout (0 if it did not).
    pub cancel_ns: AtomicU64,
    timeout_reason: AtomicEnum<Option<TimeoutReason>>,
    /// The worker running it (none while queued).
    pub worker: AtomicWorker,
    /// Whether the thread running this request still counts as a worker.
    pub pool_slot: AtomicEnum<PoolSlot>,
    /// The worker started to stand in for this request's thread when it was cancelled.
    pub replaced_by: AtomicWorker,
    /// Set by the worker when the handler returns after a cancellation: when, the state its
    /// return found (`Cancelling`: honored; `Abandoned`: late; `Queued` until recorded), and
    /// the status it produced.
    finished_ns: AtomicU64,
    finished_from: AtomicEnum<RequestState>,
    handler_status: AtomicU16,
    /// The client went away while the handler ran (noticed once, by the watchdog).
    client_gone: AtomicBool,
    stage: Mutex<Cow<'static, str>>,
    pub token: Token,
    /// The connection's reply slot (`None` for a detached record).
    reply: Option<Arc<ReplySlot>>,
    /// The connection's socket, polled by the watchdog to notice a client that went away.
    pub peer: Option<PeerProbe>,
    /// What the request's body holds of `--max-body-memory`: given back when the record (and
    /// with it the body) is dropped. Never read: it is held for its `Drop`.
    #[allow(dead_code)]
    body_memory: Option<Reservation>,
    /// Where the watchdog's list holds it (see `runtime::watchlist`).
    pub listing: Listing,
}

/// Where the watchdog's list holds a request (`runtime::watchlist`): `shard << 32 | slot`, or
/// [`NOT_LISTED`].
pub(crate) type Listing = AtomicU64;
pub(crate) const NOT_LISTED: u64 = u64::MAX;

impl U8Enum for Option<TimeoutReason> {
    fn to_u8(self) -> u8 {
        self.map_or(u8::MAX, |r| r as u8)
    }
    fn from_u8(v: u8) -> Self {
        (v != u8::MAX).then(|| TimeoutReason::from_u8(v))
    }
}

/// What a connection knows about a request when it hands it over.
pub(crate) struct Arrival {
    pub req: Request,
    pub route: RouteId,
    pub uid: u64,
    pub seq: u64,
    /// When the request had been read (clock ns).
    pub start_ns: u64,
    /// The time an upstream gave the request, if trusted: it can only shorten the route's.
    pub upstream_timeout: Option<Duration>,
    pub reply: Option<Arc<ReplySlot>>,
    pub peer: Option<PeerProbe>,
}

impl Inflight {
    /// A queued request of `route`, whose deadline runs from `a.start_ns`.
    pub fn new(a: Arrival, route: &RouteInfo) -> Self {
        Self::holding(a, route, None)
    }

    /// A queued request whose body holds `body_memory` of the memory budget: given back when
    /// the record (and with it the body) is dropped.
    #[inline]
    pub fn holding(a: Arrival, route: &RouteInfo, body_memory: Option<Reservation>) -> Self {
        let upstream_deadline = a.upstream_timeout.is_some_and(|u| u < route.timeout);
        let timeout = if upstream_deadline { a.upstream_timeout.unwrap_or(route.timeout) } else { route.timeout };
        Inflight {
            req: a.req,
            route: a.route,
            uid: a.uid,
            seq: a.seq,
            state: AtomicEnum::new(RequestState::Queued),
            answered: AtomicBool::new(false),
            start_ns: a.start_ns,
            deadline_ns: a.start_ns.saturating_add(clock::ns(timeout)),
            upstream_deadline,
            stall_ns: route.stall.map_or(0, clock::ns),
            last_progress_ns: AtomicU64::new(a.start_ns),
            run_start_ns: AtomicU64::new(0),
            cancel_ns: AtomicU64::new(0),
            timeout_reason: AtomicEnum::new(None),
            worker: AtomicWorker::default(),
            pool_slot: AtomicEnum::new(PoolSlot::Counted),
            replaced_by: AtomicWorker::default(),
            finished_ns: AtomicU64::new(0),
            finished_from: AtomicEnum::new(RequestState::Queued),
            handler_status: AtomicU16::new(0),
            client_gone: AtomicBool::new(false),
            stage: Mutex::new(Cow::Borrowed("")),
            token: Token::new(),
            reply: a.reply,
            peer: a.peer,
            body_memory,
            listing: Listing::new(NOT_LISTED),
        }
    }

    /// A running record of `route` with no server behind it, for `Ctx::detached` and
    /// `App::call`.
    pub fn detached(req: Request, route_id: RouteId, timeout: Duration) -> Self {
        let route = RouteInfo { method: "GET".into(), pattern: "".into(), timeout, stall: None };
        let a = Arrival {
            req,
            route: route_id,
            uid: 0,
            seq: 0,
            start_ns: clock::now_ns(),
            upstream_timeout: None,
            reply: None,
            peer: None,
        };
        let me = Inflight::new(a, &route);
        me.state.store(RequestState::Running, Relaxed);
        me
    }

    pub fn state(&self) -> RequestState {
        self.state.load(Acquire)
    }

    /// Moves the request from `from` to `to`; `false` if it was not in `from` (someone else won).
    pub fn transition(&self, from: RequestState, to: RequestState) -> bool {
        self.state.transition(from, to)
    }

    /// A worker takes the request: records the thread and the time, then `Queued → Running`.
    /// `false`: it was answered meanwhile (the watchdog refused it), so it must not run.
    pub fn start_running(&self, worker: WorkerId, now: u64) -> bool {
        self.worker.store(Some(worker), Relaxed);
        self.run_start_ns.store(now, Relaxed);
        self.last_progress_ns.fetch_max(now, Relaxed);
        self.transition(RequestState::Queued, RequestState::Running)
    }

    /// The handler returned with `status`: the request is done. Returns the state it was in,
    /// which says whether it ran normally (`Running`), honored a cancellation (`Cancelling`) or
    /// had been abandoned (`Abandoned`); the latter two are recorded for the watchdog
    /// ([`finished`](Inflight::finished)). The normal path reads no clock.
    pub fn finish(&self, status: u16) -> RequestState {
        let prev = self.state.swap(RequestState::Done, AcqRel);
        if prev != RequestState::Running {
            self.finished_ns.store(clock::now_ns(), Relaxed);
            self.handler_status.store(status, Relaxed);
            self.finished_from.store(prev, Release); // publishes the two stores above
        }
        prev
    }

    /// For a request whose handler returned after a cancellation: when it returned, the state
    /// its return found, and the status it produced. `None` until the worker has recorded it.
    pub fn finished(&self) -> Option<(u64, RequestState, u16)> {
        match self.finished_from.load(Acquire) {
            RequestState::Queued => None,
            from => Some((self.finished_ns.load(Relaxed), from, self.handler_status.load(Relaxed))),
        }
    }

    pub fn timeout_reason(&self) -> Option<TimeoutReason> {
        self.timeout_reason.load(Relaxed)
    }

    pub fn set_timeout_reason(&self, r: TimeoutReason) {
        self.timeout_reason.store(Some(r), Relaxed)
    }

    /// The stall timeout in ns, if the route watches for stalls.
    pub fn stall_ns(&self) -> Option<u64> {
        (self.stall_ns != 0).then_some(self.stall_ns)
    }

    /// The sooner of the ceiling and (for stall-watched routes) last progress + stall timeout.
    pub fn effective_deadline_ns(&self) -> u64 {
        match self.stall_ns() {
            None => self.deadline_ns,
            Some(s) => self.deadline_ns.min(self.last_progress_ns.load(Relaxed).saturating_add(s)),
        }
    }

    pub fn is_answered(&self) -> bool {
        self.answered.load(Acquire)
    }

    /// Hands `reply` to the connection unless someone already answered. Returns whether it did.
    pub fn answer(&self, reply: Reply) -> bool {
        if self.answered.compare_exchange(false, true, AcqRel, Acquire).is_err() {
            return false;
        }
        if let Some(slot) = &self.reply {
            slot.put(self.seq, reply);
        }
        true
    }

    /// Marks the client as gone (the watchdog, when it cancels the request for it).
    pub fn mark_client_gone(&self) {
        self.client_gone.store(true, Release);
    }

    pub fn client_gone(&self) -> bool {
        self.client_gone.load(Acquire)
    }

    pub fn elapsed_secs(&self, now: u64) -> f64 {
        clock::secs(now.saturating_sub(self.start_ns))
    }

    /// The ceiling or stall deadline in force, as seconds after the start.
    pub fn deadline_secs(&self) -> f64 {
        clock::secs(self.effective_deadline_ns().saturating_sub(self.start_ns))
    }

    pub fn stage_string(&self) -> String {
        self.stage.lock().to_string()
    }

    pub fn set_stage(&self, stage: Cow<'static, str>) {
        *self.stage.lock() = stage;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http::response::Response;

    pub(crate) fn record(timeout: Duration) -> Inflight {
        let route = RouteInfo { method: "GET".into(), pattern: "/t".into(), timeout, stall: None };
        let req = Request::builder("GET", "/t").build();
        Inflight::new(
            Arrival {
                req,
                route: RouteId::new(0),
                uid: 1,
                seq: 0,
                start_ns: 1_000,
                upstream_timeout: None,
                reply: None,
                peer: None,
            },
            &route,
        )
    }

    #[test]
    fn an_upstream_deadline_can_shorten_the_routes_but_never_extend_it() {
        let route =
            RouteInfo { method: "GET".into(), pattern: "/t".into(), timeout: Duration::from_secs(2), stall: None };
        let with = |upstream: Option<Duration>| {
            let req = Request::builder("GET", "/t").build();
            let a = Arrival {
                req,
                route: RouteId::new(0),
                uid: 1,
                seq: 0,
                start_ns: 0,
                upstream_timeout: upstream,
                reply: None,
                peer: None,
            };
            let r = Inflight::new(a, &route);
            (r.deadline_ns, r.upstream_deadline)
        };
        assert_eq!(with(None), (2_000_000_000, false));
        assert_eq!(with(Some(Duration::from_millis(500))), (500_000_000, true));
        assert_eq!(with(Some(Duration::from_secs(60))), (2_000_000_000, false));
    }

    #[test]
    fn only_the_first_answer_counts() {
        let r = record(Duration::from_secs(1));
        assert!(r.answer(Reply::Send(Response::text("a"), crate::runtime::refusal::Source::Handler)));
        assert!(!r.answer(Reply::ClientGone));
        assert!(r.is_answered());
    }

    #[test]
    fn a_worker_cannot_start_a_request_the_watchdog_refused() {
        let r = record(Duration::from_secs(1));
        assert!(r.transition(RequestState::Queued, RequestState::Done));
        assert!(!r.start_running(WorkerId::new(1).unwrap(), 5_000));
    }

    #[test]
    fn finishing_reports_the_state_the_return_found() {
        let normal = record(Duration::from_secs(1));
        assert!(normal.start_running(WorkerId::new(1).unwrap(), 2_000));
        assert_eq!(normal.finish(200), RequestState::Running);
        assert!(normal.finished().is_none(), "a normal return records nothing");
        let r = record(Duration::from_secs(1));
        assert!(r.start_running(WorkerId::new(1).unwrap(), 2_000));
        assert!(r.transition(RequestState::Running, RequestState::Cancelling));
        assert_eq!(r.finish(504), RequestState::Cancelling);
        let (at, from, status) = r.finished().expect("recorded");
        assert!(at > 0);
        assert_eq!((from, status), (RequestState::Cancelling, 504));
        assert_eq!(r.state(), RequestState::Done);
    }

    #[test]
    fn stall_deadline_follows_progress_and_never_passes_the_ceiling() {
        let route = RouteInfo {
            method: "GET".into(),
            pattern: "/r".into(),
            timeout: Duration::from_secs(10),
            stall: Some(Duration::from_secs(1)),
        };
        let req = Request::builder("GET", "/r").build();
        let r = Inflight::new(
            Arrival {
                req,
                route: RouteId::new(0),
                uid: 1,
                seq: 0,
                start_ns: 0,
                upstream_timeout: None,
                reply: None,
                peer: None,
            },
            &route,
        );
        assert_eq!(r.effective_deadline_ns(), 1_000_000_000);
        r.last_progress_ns.store(9_500_000_000, Relaxed);
        assert_eq!(r.effective_deadline_ns(), 10_000_000_000);
    }
}
