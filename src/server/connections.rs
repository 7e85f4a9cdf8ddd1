//! The server's open connections, as a drain sees them: which are busy (a request on its way in,
//! being handled, or its response being written — or a fresh connection that has not sent its
//! first request yet) and must be finished, and which are idle keep-alive connections that can
//! be closed.
//!
//! Each connection registers once (a lock per connection, none per request) and flips its own
//! phase with one atomic operation per request (plus, falling idle, a store of the time); the
//! count of busy connections a drain waits for is counted from the registry when asked for, so
//! no counter is shared by all connections on the request path.
//!
//! The registry also closes idle connections past `--keepalive` ([`close_expired_idle`], run
//! every [`reap_period`] by the lifecycle thread): a connection waiting for its next request
//! sets no read timeout on its socket, whose wait would cost a may timer per request (added
//! and cancelled on every idle wait, ~2 % of the server's CPU under load; BENCHMARKS.md,
//! round 4).
//!
//! [`close_expired_idle`]: Connections::close_expired_idle

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::platform::PeerProbe;

/// How long a drain waits, once its listener is closed, for connections accepted before that
/// to send their first request, before closing the ones that have not. Go's `Server.Shutdown`
/// gives a new connection 5 s too: a proxy sends its request right after connecting, but on a
/// starved machine "right after" has been seen to take over a second (a rolling restart under
/// CI load lost three POSTs with 1 s here).
pub(crate) const FRESH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
use crate::runtime::state::{u8_enum, AtomicEnum};

u8_enum! {
    /// What a connection is doing, for the drain.
    pub(crate) enum ConnPhase {
        /// Accepted; no byte of a request has arrived yet. Counted as busy: its client is about
        /// to send a request, so a drain gives it a moment (`FRESH_GRACE`) before closing it.
        Fresh = 0 => "fresh",
        /// A request between its first byte and its written response.
        Busy = 1 => "busy",
        /// Waiting for the next request on a kept-alive connection.
        Idle = 2 => "idle",
        /// Closed by the drain (it was idle, or fresh past the grace): its read side is shut.
        Closing = 3 => "closing",
    }
}

/// One connection's entry.
pub(crate) struct ConnSlot {
    id: u64,
    phase: AtomicEnum<ConnPhase>,
    /// When it last fell idle (clock ns).
    idle_since_ns: AtomicU64,
    socket: Option<PeerProbe>,
}

pub(crate) struct Connections {
    /// Open client connections (refused ones included while their 503 is written).
    pub open: AtomicUsize,
    /// The accept coroutine has stopped for good (set as it ends).
    pub accept_stopped: AtomicBool,
    /// Failed `accept` calls on the public listener (descriptors exhausted, mostly).
    pub accept_errors: AtomicU64,
    next_id: AtomicU64,
    registered: Mutex<HashMap<u64, Arc<ConnSlot>>>,
    /// Read buffers of connections that fell idle or closed, for the next one that gets bytes.
    pub read_bufs: SpareReadBufs,
}

/// How often idle connections past `keepalive` are closed: a twentieth of it, between 10 ms and
/// 100 ms (so a connection is closed at most 100 ms, and 5 %, past its keep-alive timeout; a
/// sweep of 10,000 connections takes a few tens of microseconds).
pub(crate) fn reap_period(keepalive: std::time::Duration) -> std::time::Duration {
    (keepalive / 20).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_millis(100))
}

/// How many spare read buffers a server keeps (of `READ_BUF` bytes each: 256 KiB in all).
const SPARE_READ_BUFS: usize = 64;

/// Read buffers of connections that fell idle (an idle connection holds none) or closed, for
/// the next connection that needs one: a new connection, or a request whose head did not come
/// whole in the first read after an idle wait (those that do need none: `conn::wait_idle`).
/// Without them such a request cost a 4 KiB `malloc` (with glibc: a large-bin request, which
/// first consolidates the small free chunks), a `memset` and a `free`, usually on another of
/// may's threads than the `malloc` (BENCHMARKS.md, round 4). Lock-free, shared by the server's
/// connections: a coroutine may fall idle on one thread and get its next bytes on another.
pub(crate) struct SpareReadBufs {
    spares: crossbeam_queue::ArrayQueue<Vec<u8>>,
    /// The size of every buffer handed out and kept.
    size: usize,
}

impl SpareReadBufs {
    pub fn new(size: usize) -> Self {
        SpareReadBufs { spares: crossbeam_queue::ArrayQueue::new(SPARE_READ_BUFS), size }
    }

    /// A buffer of `size` bytes (a spare one's old contents, or zeros). Out of line, as is
    /// `give`: they run on the connection coroutine's small stack.
    #[inline(never)]
    pub fn take(&self) -> Vec<u8> {
        self.spares.pop().unwrap_or_else(|| vec![0; self.size])
    }

    /// Keeps `buf` for [`take`](SpareReadBufs::take) if it is of the usual size (one grown for
    /// a long head is freed) and there is room.
    #[inline(never)]
    pub fn give(&self, buf: Vec<u8>) {
        if buf.len() == self.size && buf.capacity() == self.size {
            let _ = self.spares.push(buf);
        }
    }
}

impl Connections {
    /// No connections yet; read buffers of `read_buf` bytes.
    pub fn new(read_buf: usize) -> Self {
        Connections {
            open: AtomicUsize::new(0),
            accept_stopped: AtomicBool::new(false),
            accept_errors: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            registered: Mutex::new(HashMap::new()),
            read_bufs: SpareReadBufs::new(read_buf),
        }
    }

    /// A new connection, fresh (counted as busy) until its first request has been answered.
    pub fn register(&self, socket: Option<PeerProbe>) -> Arc<ConnSlot> {
        let id = self.next_id.fetch_add(1, Relaxed);
        let slot = Arc::new(ConnSlot {
            id,
            phase: AtomicEnum::new(ConnPhase::Fresh),
            idle_since_ns: AtomicU64::new(0),
            socket,
        });
        self.registered.lock().insert(id, Arc::clone(&slot));
        slot
    }

    /// The connection ends. Call before its socket is closed.
    pub fn unregister(&self, slot: &ConnSlot) {
        self.registered.lock().remove(&slot.id);
        slot.phase.store(ConnPhase::Closing, Release);
    }

    /// The connection waits for its next request (from `now`, clock ns).
    pub fn idle(&self, slot: &ConnSlot, now: u64) {
        slot.idle_since_ns.store(now, Relaxed);
        slot.phase.transition(ConnPhase::Busy, ConnPhase::Idle);
    }

    /// Bytes of a request arrived. `false`: the drain closed the connection meanwhile (its
    /// read side is shut): nothing more will come, and the request is not served.
    pub fn busy(&self, slot: &ConnSlot) -> bool {
        if slot.phase.transition(ConnPhase::Idle, ConnPhase::Busy) {
            return true;
        }
        slot.phase.transition(ConnPhase::Fresh, ConnPhase::Busy) || slot.phase.load(Acquire) == ConnPhase::Busy
    }

    /// Connections that must be finished before the server may stop: those `Fresh` or `Busy`
    /// (counted under the registry's lock: for the drain and metrics scrapes, not per request).
    pub fn busy_count(&self) -> usize {
        let registered = self.registered.lock();
        registered.values().filter(|s| matches!(s.phase.load(Acquire), ConnPhase::Fresh | ConnPhase::Busy)).count()
    }

    /// Closes every idle connection (its coroutine wakes to end-of-file and ends quietly).
    /// Returns how many.
    pub fn close_idle(&self) -> usize {
        self.close(ConnPhase::Idle, |_| true)
    }

    /// Closes every connection that has still not sent a byte of a request (a drain does so
    /// [`FRESH_GRACE`] after closing its listener). Returns how many.
    pub fn close_fresh(&self) -> usize {
        self.close(ConnPhase::Fresh, |_| true)
    }

    /// Closes the connections idle since before `idle_before` (clock ns): past `--keepalive`.
    /// Their coroutines wake to end-of-file and end quietly, as they would at a read timeout.
    /// Returns how many.
    pub fn close_expired_idle(&self, idle_before: u64) -> usize {
        self.close(ConnPhase::Idle, |s| s.idle_since_ns.load(Relaxed) < idle_before)
    }

    fn close(&self, phase: ConnPhase, expired: impl Fn(&ConnSlot) -> bool) -> usize {
        let registered = self.registered.lock();
        let mut closed = 0;
        for slot in registered.values() {
            if slot.phase.load(Acquire) == phase && expired(slot) && slot.phase.transition(phase, ConnPhase::Closing) {
                if let Some(s) = &slot.socket {
                    s.shutdown_read();
                }
                closed += 1;
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_fresh_and_working_connections_but_not_idle_or_closed_ones() {
        let c = Connections::new(64);
        let a = c.register(None);
        let b = c.register(None);
        assert_eq!(c.busy_count(), 2, "fresh connections count as busy");
        assert!(c.busy(&a) && c.busy(&a), "first bytes: busy, counted once");
        assert_eq!(c.busy_count(), 2);
        c.idle(&a, 1);
        assert_eq!(c.busy_count(), 1);
        assert_eq!(c.close_idle(), 1);
        assert!(!c.busy(&a), "a closed connection does not become busy again");
        assert_eq!(c.busy_count(), 1);
        c.unregister(&a);
        c.unregister(&b);
        assert_eq!(c.busy_count(), 0);
        assert!(c.registered.lock().is_empty());
    }

    #[test]
    fn a_fresh_connection_is_closed_only_by_close_fresh_and_then_not_counted() {
        let c = Connections::new(64);
        let a = c.register(None);
        assert_eq!(c.close_idle(), 0);
        assert_eq!(c.close_fresh(), 1);
        assert_eq!(c.busy_count(), 0);
        assert!(!c.busy(&a), "its late first bytes are not served");
        c.unregister(&a);
        assert_eq!(c.busy_count(), 0);
    }

    #[test]
    fn an_idle_connection_that_gets_a_request_before_the_drain_is_not_closed() {
        let c = Connections::new(64);
        let a = c.register(None);
        c.idle(&a, 1);
        assert!(c.busy(&a));
        assert_eq!(c.close_idle(), 0);
        assert_eq!(c.busy_count(), 1);
        c.unregister(&a);
        assert_eq!(c.busy_count(), 0);
    }

    #[test]
    fn only_connections_idle_past_the_keepalive_are_closed_by_the_reaper() {
        let c = Connections::new(64);
        let (old, recent, busy) = (c.register(None), c.register(None), c.register(None));
        assert!(c.busy(&old) && c.busy(&recent) && c.busy(&busy));
        c.idle(&old, 1_000);
        c.idle(&recent, 5_000);
        assert_eq!(c.close_expired_idle(2_000), 1);
        assert_eq!(old.phase.load(Acquire), ConnPhase::Closing);
        assert!(!c.busy(&old), "its late request is not served: the client retries elsewhere");
        assert_eq!(recent.phase.load(Acquire), ConnPhase::Idle);
        assert!(c.busy(&recent), "a recent idle connection serves its next request");
        assert_eq!(c.close_expired_idle(u64::MAX), 0, "busy and fresh connections are never reaped");
        assert_eq!(c.busy_count(), 2);
        assert_eq!(reap_period(std::time::Duration::from_secs(5)), std::time::Duration::from_millis(100));
        assert_eq!(reap_period(std::time::Duration::from_millis(300)), std::time::Duration::from_millis(15));
        for s in [old, recent, busy] {
            c.unregister(&s);
        }
        assert_eq!(c.busy_count(), 0);
    }

    #[test]
    fn spare_read_buffers_are_reused_up_to_a_bound_and_only_at_their_size() {
        let bufs = SpareReadBufs::new(64);
        let mut a = bufs.take();
        assert_eq!(a.len(), 64);
        a[0] = 7;
        let ptr = a.as_ptr();
        bufs.give(a);
        let b = bufs.take();
        assert_eq!((b.as_ptr(), b[0]), (ptr, 7), "the spare is handed out again");
        let mut grown = b;
        grown.resize(128, 0);
        bufs.give(grown);
        assert_ne!(bufs.take().len(), 128, "a grown buffer is not kept");
        for _ in 0..SPARE_READ_BUFS + 5 {
            bufs.give(vec![0; 64]);
        }
        assert_eq!(bufs.spares.len(), SPARE_READ_BUFS);
    }
}
