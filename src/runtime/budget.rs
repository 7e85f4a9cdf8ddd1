//! The memory budget of request bodies (`--max-body-memory`): every body held in memory, on
//! all connections together, reserves its bytes here before its buffer grows, and gives them
//! back when it is dropped.
//!
//! `--max-body` bounds one body; this bounds their sum, so that many uploads at once (or many
//! stalled one byte short of their length, held for `--body-timeout`) cannot take the process's
//! memory. A body whose buffer would take the total past the budget is not read further: the
//! connection answers 503 with `Retry-After` and closes. A [`Reservation`] is held by the body's
//! reader, then by the request's in-flight record, and released when that is dropped (the
//! request answered, or given up), which is also when the body's bytes are freed.

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

use crate::logging::OncePerSecond;

/// The budget shared by one server's connections.
pub(crate) struct BodyBudget {
    /// Bytes that may be reserved at once.
    limit: u64,
    /// Bytes reserved now.
    used: AtomicU64,
    /// Keeps the "budget exhausted" warning to one line per second.
    pub refusal_log: OncePerSecond,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget { limit, used: AtomicU64::new(0), refusal_log: OncePerSecond::new() })
    }

    /// An empty reservation, grown with [`Reservation::grow_to`].
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation { budget: Arc::clone(self), bytes: 0 }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Bytes one body holds against the budget; they are given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Grows the reservation to `total` bytes (a smaller `total` changes nothing). `false`, and
    /// nothing reserved, if that would take the budget past its limit.
    #[must_use]
    pub fn grow_to(&mut self, total: u64) -> bool {
        let Some(more) = total.checked_sub(self.bytes).filter(|&m| m > 0) else { return true };
        let limit = self.budget.limit;
        let ok =
            self.budget.used.fetch_update(AcqRel, Acquire, |u| u.checked_add(more).filter(|&t| t <= limit)).is_ok();
        if ok {
            self.bytes = total;
        }
        ok
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, AcqRel);
        }
    }
}

impl std::fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyBudget {{ used: {}, limit: {} }}", self.used(), self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_grow_within_the_limit_and_are_given_back_when_dropped() {
        let b = BodyBudget::new(100);
        let mut r1 = b.reservation();
        assert!(r1.grow_to(60));
        assert!(r1.grow_to(40), "shrinking asks nothing");
        assert_eq!((r1.bytes(), b.used()), (60, 60));
        let mut r2 = b.reservation();
        assert!(!r2.grow_to(41), "past the limit");
        assert_eq!((r2.bytes(), b.used()), (0, 60), "a refused growth reserves nothing");
        assert!(r2.grow_to(40));
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        assert!(r2.grow_to(100));
        drop(r2);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn racing_reservations_never_exceed_the_limit() {
        let b = BodyBudget::new(1000);
        let granted = AtomicU64::new(0);
        let all_tried = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut held = Vec::new();
                    for _ in 0..100 {
                        let mut r = b.reservation();
                        if r.grow_to(30) {
                            granted.fetch_add(30, Relaxed);
                            held.push(r);
                        }
                        assert!(b.used() <= 1000);
                    }
                    // Nothing is given back before every thread has tried.
                    all_tried.wait();
                });
            }
        });
        assert_eq!(granted.load(Relaxed), 990, "33 bodies of 30 fit in 1000");
        assert_eq!(b.used(), 0, "all given back when the threads dropped them");
    }
}
