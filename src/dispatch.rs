//! The dispatch queue: a bounded crossbeam channel from connection coroutines to worker threads.
//!
//! Coroutines only ever `try_send` (never parks a scheduler thread); a full queue is an answer
//! in itself: 503 with `Retry-After`, the handler not run.

use std::sync::Arc;

use crate::watchdog::Inflight;

/// What a worker thread receives.
pub(crate) enum Job {
    /// Run this request's handler.
    Run(Arc<Inflight>),
    /// Exit (sent once per worker at shutdown, after the queue drained).
    Stop,
}

/// Why a request could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue holds `--backlog` requests already.
    Full,
    /// The pool is gone (server stopped).
    Closed,
}

/// Both ends of the queue; workers clone the receiver.
pub(crate) struct Queue {
    pub tx: crossbeam_channel::Sender<Job>,
    pub rx: crossbeam_channel::Receiver<Job>,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        Queue { tx, rx }
    }

    /// Queues a request without ever blocking.
    pub fn submit(&self, job: Arc<Inflight>) -> Result<(), SubmitError> {
        self.tx.try_send(Job::Run(job)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => SubmitError::Full,
            crossbeam_channel::TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Requests waiting for a worker.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}
