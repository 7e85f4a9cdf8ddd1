//! The answers the server gives on its own, without (or instead of) a handler's: one enum,
//! one status map, one place for their wording.

use crate::runtime::state::TimeoutReason;

/// Who produced the answer to a request: the `source` of its access-log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The route's handler (a panic's 500 included).
    Handler,
    /// The router: 404, 405, `OPTIONS *`.
    Router,
    /// The parser: a framing error (400, 413, 414, 417, 431, 501, 505).
    Parser,
    /// The connection's read timeouts: 408.
    ReadTimeout,
    /// The watchdog: 504 at a deadline or stall, 503 for a request queued past its deadline.
    Watchdog,
    /// The drain: 503 to new requests, 504 to what outlived `--graceful-timeout`.
    Drain,
    /// Overload: 503 for a full queue or beyond `--max-connections`.
    Overload,
    /// The client went away before its answer: nothing is sent (499 in the log and metrics).
    Client,
}

impl Source {
    /// The name in the access log.
    pub fn label(self) -> &'static str {
        match self {
            Source::Handler => "handler",
            Source::Router => "router",
            Source::Parser => "parser",
            Source::ReadTimeout => "read_timeout",
            Source::Watchdog => "watchdog",
            Source::Drain => "drain",
            Source::Overload => "overload",
            Source::Client => "client",
        }
    }
}

/// A request the server answers itself because it would not, or could no longer, run its
/// handler to completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue holds `--backlog` requests already (503).
    QueueFull,
    /// A drain is under way: no new work (503).
    Draining,
    /// Beyond `--max-connections` (503).
    TooManyConnections,
    /// The request's deadline passed while it waited for a worker (503).
    QueuedPastDeadline,
    /// The deadline its upstream sent passed before a worker could start it (504: the
    /// upstream has given up on it).
    UpstreamDeadline,
    /// Its handler ran past the route's ceiling (504).
    Timeout,
    /// Its handler reported no progress within the route's stall timeout (504).
    Stall,
    /// Its handler was still running when the drain's `--graceful-timeout` ran out (504).
    ShutdownCancelled,
    /// Its handler panicked (500).
    Panic,
    /// Its body would take request bodies past `--max-body-memory` (503; the body is not read).
    BodyMemory,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 10] = [
        Refusal::QueueFull,
        Refusal::Draining,
        Refusal::TooManyConnections,
        Refusal::QueuedPastDeadline,
        Refusal::UpstreamDeadline,
        Refusal::Timeout,
        Refusal::Stall,
        Refusal::ShutdownCancelled,
        Refusal::Panic,
        Refusal::BodyMemory,
    ];

    /// The refusal for a request the watchdog timed out for `reason`: `queued` says whether
    /// its handler had started.
    pub fn for_timeout(reason: TimeoutReason, queued: bool) -> Refusal {
        match (reason, queued) {
            (TimeoutReason::Shutdown, true) => Refusal::Draining,
            (TimeoutReason::Shutdown, false) => Refusal::ShutdownCancelled,
            (_, true) => Refusal::QueuedPastDeadline,
            (TimeoutReason::Stall, false) => Refusal::Stall,
            (_, false) => Refusal::Timeout,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Refusal::QueueFull
            | Refusal::Draining
            | Refusal::TooManyConnections
            | Refusal::QueuedPastDeadline
            | Refusal::BodyMemory => 503,
            Refusal::UpstreamDeadline | Refusal::Timeout | Refusal::Stall | Refusal::ShutdownCancelled => 504,
            Refusal::Panic => 500,
        }
    }

    /// Who answers it (the access log's `source`).
    pub fn source(self) -> Source {
        match self {
            Refusal::QueueFull | Refusal::TooManyConnections | Refusal::BodyMemory => Source::Overload,
            Refusal::Draining | Refusal::ShutdownCancelled => Source::Drain,
            Refusal::QueuedPastDeadline | Refusal::UpstreamDeadline | Refusal::Timeout | Refusal::Stall => {
                Source::Watchdog
            }
            Refusal::Panic => Source::Handler,
        }
    }

    /// The short text body.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::QueueFull => "server busy: request queue full",
            Refusal::Draining => "server shutting down",
            Refusal::TooManyConnections => "too many connections",
            Refusal::QueuedPastDeadline => "deadline passed while queued",
            Refusal::UpstreamDeadline => "the upstream's deadline passed before the request could run",
            Refusal::Timeout => "request exceeded its deadline",
            Refusal::Stall => "request stalled: no progress within the route's stall timeout",
            Refusal::ShutdownCancelled => "server shutting down: request cancelled",
            Refusal::Panic => "internal server error",
            Refusal::BodyMemory => "server busy: too many request bodies in memory",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_map_to_503_before_the_handler_ran_and_504_after() {
        use TimeoutReason::*;
        assert_eq!(Refusal::for_timeout(Queue, true), Refusal::QueuedPastDeadline);
        assert_eq!(Refusal::for_timeout(Shutdown, true), Refusal::Draining);
        assert_eq!(Refusal::for_timeout(Deadline, false), Refusal::Timeout);
        assert_eq!(Refusal::for_timeout(Stall, false), Refusal::Stall);
        assert_eq!(Refusal::for_timeout(Shutdown, false), Refusal::ShutdownCancelled);
    }
}
