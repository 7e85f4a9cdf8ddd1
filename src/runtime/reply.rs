//! The [`ReplySlot`]: where a connection's coroutine waits for the answer to its request, and
//! the [`Reply`] it gets: a response and who produced it ([`Source`]), or word that the client
//! went away.

use std::sync::Arc;

use crate::http::response::Response;
use crate::runtime::refusal::{Refusal, Source};

/// The status logged and counted for a request whose client went away before its answer
/// (nginx's "client closed request"); never sent.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The answer to one request, as its connection receives it.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send this response, produced by `Source`.
    Send(Response, Source),
    /// Send the server's own answer (rendered by the connection, in the app's format if it has
    /// one: the watchdog and the pool never run the app's renderer).
    Refused(Refusal),
    /// The client went away (the watchdog found its connection closed): send nothing, log and
    /// count the request as 499, and close the connection.
    ClientGone,
}

impl From<Refusal> for Reply {
    /// The server's own answer.
    fn from(r: Refusal) -> Reply {
        Reply::Refused(r)
    }
}

/// A handler's response.
impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Send(r, Source::Handler)
    }
}

impl Reply {
    /// The status the client gets (or, for `ClientGone`, the 499 that is logged).
    pub fn status(&self) -> u16 {
        match self {
            Reply::Send(r, _) => r.status(),
            Reply::Refused(r) => r.status(),
            Reply::ClientGone => CLIENT_CLOSED_REQUEST,
        }
    }
}

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
    reply: parking_lot::Mutex<Option<(u64, Reply)>>,
    blocker: may::sync::Blocker,
}

impl ReplySlot {
    /// Must be called on the coroutine (or thread) that will [`wait`](ReplySlot::wait).
    pub fn new() -> Arc<Self> {
        Arc::new(ReplySlot { reply: parking_lot::Mutex::new(None), blocker: may::sync::Blocker::new(false) })
    }

    /// Hands the answer to request `seq` to the waiting coroutine. Any thread may call it.
    pub fn put(&self, seq: u64, reply: Reply) {
        *self.reply.lock() = Some((seq, reply));
        self.blocker.unpark();
    }

    /// Takes the answer if one is in, without waiting (tests).
    #[cfg(test)]
    pub fn try_take(&self) -> Option<(u64, Reply)> {
        self.reply.lock().take()
    }

    /// Parks the calling coroutine until the answer to request `seq` is in.
    pub fn wait(&self, seq: u64) -> Reply {
        loop {
            match self.reply.lock().take() {
                Some((s, resp)) if s == seq => return resp,
                Some(_) => continue, // an answer to an earlier request: never sent, but harmless
                None => {}
            }
            // A wake-up left over from an earlier answer makes this return at once; the loop
            // then finds the slot empty and parks again.
            if self.blocker.park(None).is_err() {
                // Only a cancelled coroutine fails to park, which happens at process exit.
                return Refusal::Draining.into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_to_the_awaited_request_is_taken_and_a_stale_one_skipped() {
        let slot = ReplySlot::new();
        slot.put(0, Reply::Send(Response::text("old"), Source::Handler));
        let s2 = Arc::clone(&slot);
        // An OS thread parks on the blocker the way a coroutine would.
        let waiter = std::thread::spawn(move || s2.wait(1));
        slot.put(1, Reply::Send(Response::text("new"), Source::Handler));
        match waiter.join().unwrap() {
            Reply::Send(r, Source::Handler) => assert_eq!(r.body(), b"new"),
            other => panic!("{other:?}"),
        }
    }
}
