//! What the watchdog does about one request, as a pure function of the request's state and the
//! clock: no IO, no locks, no side effects, so every rule is a unit test.
//!
//! The watchdog's sweep reads a [`View`] of each request under its list's lock, collects the
//! [`Action`]s [`decide`] returns, releases the lock, and only then acts. An action is advice:
//! acting starts with a compare-and-swap on the request's state, so a handler that returned (or
//! a worker that started the request) in the meantime wins and the action does nothing.

use crate::runtime::state::{RequestState, TimeoutReason};

/// A request has run at least this long before its client is probed for a hang-up.
pub(crate) const PROBE_AFTER_NS: u64 = 50_000_000;

/// What the watchdog reads of one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub state: RequestState,
    pub answered: bool,
    pub start_ns: u64,
    /// The route's ceiling.
    pub deadline_ns: u64,
    /// Last progress + stall timeout, for stall-watched routes.
    pub stall_deadline_ns: Option<u64>,
    /// When the token was fired for a timeout (while `Cancelling`).
    pub cancel_ns: u64,
    /// Whether the client's socket can be probed, and whether it was already found gone.
    pub has_peer: bool,
    pub client_gone: bool,
}

/// What holds for every request of this sweep.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Params {
    /// `--cancel-grace`.
    pub grace_ns: u64,
    /// During a drain: when what is still running gets cancelled (`--graceful-timeout`).
    pub drain_cancel_at_ns: Option<u64>,
    /// Whether this sweep probes clients (every tenth tick).
    pub probe_peers: bool,
}

/// What to do about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Answer 503 without running it (`Queued → Done`): its deadline passed while queued
    /// (`Queue`), or a drain's `--graceful-timeout` ran out before it started (`Shutdown`).
    Refuse(TimeoutReason),
    /// Fire its token, answer 504, start a stand-in (`Running → Cancelling`).
    Cancel(TimeoutReason),
    /// The grace period is over: give up its thread (`Cancelling → Abandoned`).
    Abandon,
    /// Ask its socket whether the client is still there (a hang-up cancels the handler).
    ProbePeer,
}

/// The one rule book of the watchdog.
pub(crate) fn decide(v: &View, now: u64, p: &Params) -> Option<Action> {
    use RequestState::*;
    match v.state {
        Queued if v.answered => None,
        Queued if now >= v.deadline_ns => Some(Action::Refuse(TimeoutReason::Queue)),
        Queued if p.drain_cancel_at_ns.is_some_and(|d| now >= d) => Some(Action::Refuse(TimeoutReason::Shutdown)),
        Running if now >= v.deadline_ns => Some(Action::Cancel(TimeoutReason::Deadline)),
        Running if v.stall_deadline_ns.is_some_and(|s| now >= s) => Some(Action::Cancel(TimeoutReason::Stall)),
        Running if p.drain_cancel_at_ns.is_some_and(|d| now >= d) => Some(Action::Cancel(TimeoutReason::Shutdown)),
        Running
            if p.probe_peers
                && v.has_peer
                && !v.client_gone
                && !v.answered
                && now.saturating_sub(v.start_ns) >= PROBE_AFTER_NS =>
        {
            Some(Action::ProbePeer)
        }
        Cancelling if now >= v.cancel_ns.saturating_add(p.grace_ns) => Some(Action::Abandon),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestState::*;

    const S: u64 = 1_000_000_000;

    fn view(state: RequestState) -> View {
        View {
            state,
            answered: false,
            start_ns: 0,
            deadline_ns: 10 * S,
            stall_deadline_ns: None,
            cancel_ns: 0,
            has_peer: true,
            client_gone: false,
        }
    }

    fn params() -> Params {
        Params { grace_ns: 2 * S, drain_cancel_at_ns: None, probe_peers: false }
    }

    #[test]
    fn queued_past_its_deadline_is_refused_and_before_it_is_left_alone() {
        assert_eq!(decide(&view(Queued), 10 * S - 1, &params()), None);
        assert_eq!(decide(&view(Queued), 10 * S, &params()), Some(Action::Refuse(TimeoutReason::Queue)));
        let answered = View { answered: true, ..view(Queued) };
        assert_eq!(decide(&answered, 11 * S, &params()), None);
    }

    #[test]
    fn running_past_its_ceiling_or_stall_is_cancelled() {
        assert_eq!(decide(&view(Running), 9 * S, &params()), None);
        assert_eq!(decide(&view(Running), 10 * S, &params()), Some(Action::Cancel(TimeoutReason::Deadline)));
        let stalled = View { stall_deadline_ns: Some(3 * S), ..view(Running) };
        assert_eq!(decide(&stalled, 2 * S, &params()), None);
        assert_eq!(decide(&stalled, 3 * S, &params()), Some(Action::Cancel(TimeoutReason::Stall)));
        // Past both: the ceiling is the reason given.
        assert_eq!(decide(&stalled, 10 * S, &params()), Some(Action::Cancel(TimeoutReason::Deadline)));
    }

    #[test]
    fn cancelled_past_the_grace_period_is_abandoned() {
        let c = View { cancel_ns: 10 * S, ..view(Cancelling) };
        assert_eq!(decide(&c, 12 * S - 1, &params()), None);
        assert_eq!(decide(&c, 12 * S, &params()), Some(Action::Abandon));
        // Abandoned and done requests need nothing more.
        assert_eq!(decide(&view(Abandoned), 100 * S, &params()), None);
        assert_eq!(decide(&view(Done), 100 * S, &params()), None);
    }

    #[test]
    fn a_drain_lets_queued_and_running_requests_go_on_until_its_deadline() {
        let p = Params { drain_cancel_at_ns: Some(5 * S), ..params() };
        assert_eq!(decide(&view(Queued), S, &p), None, "queued work runs during a drain");
        assert_eq!(decide(&view(Queued), 5 * S, &p), Some(Action::Refuse(TimeoutReason::Shutdown)));
        assert_eq!(decide(&view(Running), 5 * S - 1, &p), None);
        assert_eq!(decide(&view(Running), 5 * S, &p), Some(Action::Cancel(TimeoutReason::Shutdown)));
    }

    #[test]
    fn clients_are_probed_only_on_probing_sweeps_once_the_request_has_run_a_while() {
        let p = Params { probe_peers: true, ..params() };
        assert_eq!(decide(&view(Running), PROBE_AFTER_NS - 1, &p), None);
        assert_eq!(decide(&view(Running), PROBE_AFTER_NS, &p), Some(Action::ProbePeer));
        assert_eq!(decide(&view(Running), PROBE_AFTER_NS, &params()), None);
        for v in [
            View { client_gone: true, ..view(Running) },
            View { answered: true, ..view(Running) },
            View { has_peer: false, ..view(Running) },
        ] {
            assert_eq!(decide(&v, S, &p), None, "{v:?}");
        }
    }
}
