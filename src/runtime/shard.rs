//! Which shard of a structure sharded by thread the calling thread uses: the watchdog's list
//! ([`watchlist`](crate::runtime::watchlist)) and the per-request counts of `crate::metrics`.
//! Threads are numbered in the order they first ask; thread `n` uses shard `n % shards`, so the
//! few threads that count and list requests (may's, one per CPU) each have a shard of their own.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

thread_local! {
    // Only touched inside `thread_shard`, which never yields: sound on coroutine threads too.
    static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's shard among `shards` (the same one on every call).
pub(crate) fn thread_shard(shards: usize) -> usize {
    let number = NUMBER.with(|n| {
        if n.get() == usize::MAX {
            n.set(NEXT.fetch_add(1, Relaxed));
        }
        n.get()
    });
    number % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_the_next_thread_takes_another() {
        let mine = thread_shard(1 << 20);
        assert_eq!(thread_shard(1 << 20), mine);
        let other = std::thread::spawn(|| thread_shard(1 << 20)).join().unwrap();
        assert_ne!(other, mine);
        assert!(thread_shard(4) < 4);
    }
}
