//! The [`Watchlist`]: the requests the watchdog times, from the moment they are queued until
//! they are done.
//!
//! It holds a `Weak` reference to each request (the connection, the queue and the worker own
//! it), in shards: each thread that lists requests (in the server, one of may's threads) has a
//! shard of its own, a slab behind a lock that only the watchdog's sweep (once a tick) and a
//! request leaving its shard from another thread ever contend for. Listing and unlisting a
//! request are O(1): the request remembers where it is listed.
//!
//! A request leaves the list when the watchdog's sweep finds it done (or gone), or earlier, when
//! its connection has its answer and the request is done ([`remove`](Watchlist::remove)):
//! then no reference to a finished request is left on the list, so the request is freed by its
//! connection (on the thread that allocated it, which keeps malloc on its fast path) and the
//! sweep only looks at requests that are still in flight. Before, every request went to the
//! watchdog over a channel and stayed listed until the next tick, and the watchdog's `Weak` was
//! the last reference to every record: each one was freed on the watchdog's thread.

use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::runtime::inflight::{Inflight, NOT_LISTED};
use crate::runtime::shard::thread_shard;

/// Shards of the list: threads are spread over them in turn. More than may has threads (one
/// per CPU) on any machine vigil is likely to run on; tests and other threads share them.
const SHARDS: usize = 16;

/// A shard past this many slots, found empty by a sweep, gives its memory back.
const SHRINK_ABOVE: usize = 1024;

/// One shard, on a cache line (two) of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Slab>);

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Weak<Inflight>>>,
    /// Empty slots, reused last-freed first.
    free: Vec<u32>,
}

impl Slab {
    fn release(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.free.push(slot as u32);
    }
}

pub(crate) struct Watchlist {
    shards: Box<[Shard]>,
}

/// What the sweep does with a request still in flight.
pub(crate) enum Keep {
    /// Leave it listed.
    Yes,
    /// Take it off the list (it is done).
    No,
}

impl Watchlist {
    pub fn new() -> Watchlist {
        Watchlist { shards: (0..SHARDS).map(|_| Shard::default()).collect() }
    }

    /// Lists `job` (in the calling thread's shard).
    pub fn insert(&self, job: &Arc<Inflight>) {
        let shard = thread_shard(SHARDS);
        let weak = Arc::downgrade(job);
        let mut s = self.shards[shard].0.lock();
        let slot = match s.free.pop() {
            Some(i) => {
                s.slots[i as usize] = Some(weak);
                i as usize
            }
            None => {
                s.slots.push(Some(weak));
                s.slots.len() - 1
            }
        };
        job.listing.store((shard as u64) << 32 | slot as u64, Release);
    }

    /// Takes `job` off the list, if it is still on it.
    pub fn remove(&self, job: &Inflight) {
        let at = job.listing.swap(NOT_LISTED, AcqRel);
        if at == NOT_LISTED {
            return;
        }
        let (shard, slot) = ((at >> 32) as usize, (at & u64::from(u32::MAX)) as usize);
        let mut s = self.shards[shard].0.lock();
        // The sweep may have taken it off already, and the slot been given to another request.
        if s.slots[slot].as_ref().is_some_and(|w| std::ptr::eq(w.as_ptr(), job)) {
            s.release(slot);
        }
    }

    /// Calls `f` with every listed request still alive, shard by shard under the shard's lock
    /// (so `f` must be quick), and takes off the list those that are gone or that `f` does not
    /// keep. Returns how many it kept.
    pub fn sweep(&self, mut f: impl FnMut(&Arc<Inflight>) -> Keep) -> usize {
        let mut kept = 0;
        for shard in self.shards.iter() {
            let mut s = shard.0.lock();
            let mut occupied = 0;
            for i in 0..s.slots.len() {
                let Some(w) = &s.slots[i] else { continue };
                let keep = match w.upgrade() {
                    None => Keep::No,
                    Some(r) => match f(&r) {
                        Keep::Yes => Keep::Yes,
                        Keep::No => {
                            r.listing.store(NOT_LISTED, Release);
                            Keep::No
                        }
                    },
                };
                match keep {
                    Keep::Yes => occupied += 1,
                    Keep::No => s.release(i),
                }
            }
            if occupied == 0 && s.slots.len() > SHRINK_ABOVE {
                *s = Slab::default();
            }
            kept += occupied;
        }
        kept
    }

    /// The listed requests still alive (each shard's lock is held only for its copy).
    pub fn snapshot(&self) -> Vec<Arc<Inflight>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.0.lock().slots.iter().flatten().filter_map(Weak::upgrade));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::inflight::tests::record;
    use std::time::Duration;

    fn listed(l: &Watchlist) -> usize {
        l.snapshot().len()
    }

    #[test]
    fn a_request_removed_by_its_connection_or_by_the_sweep_leaves_no_reference_behind() {
        let l = Watchlist::new();
        let a = Arc::new(record(Duration::from_secs(1)));
        let b = Arc::new(record(Duration::from_secs(1)));
        l.insert(&a);
        l.insert(&b);
        assert_eq!(listed(&l), 2);
        l.remove(&a);
        l.remove(&a); // twice: harmless
        assert_eq!((Arc::weak_count(&a), listed(&l)), (0, 1), "no Weak left: the owner frees it");
        let kept = l.sweep(|r| if Arc::ptr_eq(r, &b) { Keep::No } else { Keep::Yes });
        assert_eq!((kept, Arc::weak_count(&b), listed(&l)), (0, 0, 0));
        l.remove(&b); // after the sweep took it: nothing happens
    }

    #[test]
    fn a_slot_freed_by_the_sweep_and_reused_is_not_removed_by_the_old_request() {
        let l = Watchlist::new();
        let old = Arc::new(record(Duration::from_secs(1)));
        l.insert(&old);
        let stale = old.listing.load(Acquire);
        assert_eq!(l.sweep(|_| Keep::No), 0);
        let new = Arc::new(record(Duration::from_secs(1)));
        l.insert(&new);
        assert_eq!(new.listing.load(Acquire), stale, "the freed slot is reused");
        old.listing.store(stale, Release); // as if the old request still thought it was listed
        l.remove(&old);
        assert_eq!(listed(&l), 1, "the new request is still listed");
        assert!(Arc::ptr_eq(&l.snapshot()[0], &new));
    }

    #[test]
    fn requests_whose_owners_are_gone_leave_at_the_next_sweep_and_an_empty_big_shard_shrinks() {
        let l = Watchlist::new();
        let jobs: Vec<_> = (0..SHRINK_ABOVE + 1).map(|_| Arc::new(record(Duration::from_secs(1)))).collect();
        for j in &jobs {
            l.insert(j);
        }
        let keep = Arc::clone(&jobs[7]);
        drop(jobs);
        let mut seen = 0;
        assert_eq!(
            l.sweep(|_| {
                seen += 1;
                Keep::Yes
            }),
            1
        );
        assert_eq!(seen, 1, "the gone ones are not handed to the sweep");
        l.remove(&keep);
        assert_eq!(l.sweep(|_| Keep::Yes), 0);
        assert!(l.shards.iter().all(|s| s.0.lock().slots.len() <= SHRINK_ABOVE));
    }
}
