//! The dispatch queue: a bounded crossbeam channel from connection coroutines to worker threads,
//! and the [`ReplySlot`] the answer comes back through.
//!
//! Coroutines only ever `try_send` (never parks a scheduler thread); a full queue is an answer
//! in itself: 503 with `Retry-After`, the handler not run.

use std::sync::Arc;

use crate::response::Response;
use crate::watchdog::Inflight;

/// Where a connection's coroutine waits for the answer to its current request: one per
/// connection, reused for each request. Whoever answers first (worker, watchdog, drain; see
/// `Inflight::answer`) puts the response in and unparks the coroutine with may's `Blocker`,
/// which parks a coroutine without blocking its scheduler thread and can be unparked from any
/// thread.
///
/// A channel would do too, but may's mpsc keeps two 2.3 KB queue blocks for as long as the
/// connection lives; this is a few hundred bytes (BENCHMARKS.md, idle connections). A
/// connection has at most one request awaiting an answer and each request is answered exactly
/// once, so one slot is enough; the sequence number only guards against a bug.
pub(crate) struct ReplySlot {
    reply: parking_lot::Mutex<Option<(u64, Response)>>,
    blocker: may::sync::Blocker,
}

impl ReplySlot {
    /// Must be called on the coroutine that will [`wait`](ReplySlot::wait).
    pub fn new() -> Arc<Self> {
        Arc::new(ReplySlot { reply: parking_lot::Mutex::new(None), blocker: may::sync::Blocker::new(false) })
    }

    /// Hands the answer to request `seq` to the waiting coroutine. Any thread may call it.
    pub fn put(&self, seq: u64, resp: Response) {
        *self.reply.lock() = Some((seq, resp));
        self.blocker.unpark();
    }

    /// Parks the calling coroutine until the answer to request `seq` is in.
    pub fn wait(&self, seq: u64) -> Response {
        loop {
            match self.reply.lock().take() {
                Some((s, resp)) if s == seq => return resp,
                Some(_) => continue, // an answer to an earlier request: never sent, but harmless
                None => {}
            }
            // A wake-up left over from an earlier answer makes this return at once; the loop
            // then finds the slot empty and parks again.
            if self.blocker.park(None).is_err() {
                return Response::error(503, "server shutting down");
            }
        }
    }
}

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
