//! The small typed states of the runtime, and the atomic cell that stores one of them.
//!
//! Each state is a `#[repr(u8)]` enum whose transitions are single atomic operations on an
//! [`AtomicEnum`]; races (the worker returning as the watchdog cancels, the stand-in racing a
//! honored cancellation) are decided by compare-and-swap, never by reading a gauge.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// A `#[repr(u8)]` enum that [`AtomicEnum`] can store.
pub(crate) trait U8Enum: Copy {
    fn to_u8(self) -> u8;
    /// The variant for `v`; only ever called with values `to_u8` produced.
    fn from_u8(v: u8) -> Self;
}

/// Declares a `#[repr(u8)]` enum with a label per variant (`label()`, `ALL`) and its [`U8Enum`].
macro_rules! u8_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        $vis enum $name { $( $(#[$vmeta])* $variant = $value, )+ }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in logs, JSON and metric labels.
            #[allow(dead_code)]
            pub fn label(self) -> &'static str {
                match self { $( $name::$variant => $label, )+ }
            }
        }

        impl $crate::runtime::state::U8Enum for $name {
            fn to_u8(self) -> u8 {
                self as u8
            }
            fn from_u8(v: u8) -> Self {
                match v {
                    $( $value => $name::$variant, )+
                    _ => unreachable!(concat!("not a ", stringify!($name), ": {}"), v),
                }
            }
        }
    };
}
pub(crate) use u8_enum;

/// An atomic cell holding a [`U8Enum`].
pub(crate) struct AtomicEnum<T> {
    v: AtomicU8,
    _t: std::marker::PhantomData<T>,
}

impl<T: U8Enum> AtomicEnum<T> {
    pub fn new(t: T) -> Self {
        AtomicEnum { v: AtomicU8::new(t.to_u8()), _t: std::marker::PhantomData }
    }
    pub fn load(&self, o: Ordering) -> T {
        T::from_u8(self.v.load(o))
    }
    pub fn store(&self, t: T, o: Ordering) {
        self.v.store(t.to_u8(), o)
    }
    pub fn swap(&self, t: T, o: Ordering) -> T {
        T::from_u8(self.v.swap(t.to_u8(), o))
    }
    /// `true` if the cell held `from` and now holds `to`.
    pub fn transition(&self, from: T, to: T) -> bool {
        self.v.compare_exchange(from.to_u8(), to.to_u8(), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

u8_enum! {
    /// Where a request is in its life. `Queued → Running → Cancelling → Abandoned`, any of them
    /// → `Done`; the watchdog and the worker decide races with compare-and-swap.
    pub(crate) enum RequestState {
        /// Read, waiting in the queue for a worker.
        Queued = 0 => "queued",
        /// A worker runs its handler.
        Running = 1 => "running",
        /// Token fired, 504 sent, the handler has not returned yet (within the grace period).
        Cancelling = 2 => "cancelling",
        /// Grace period over: the thread was given up (a stand-in replaced it).
        Abandoned = 3 => "abandoned",
        /// The handler returned, or the request was answered without running.
        Done = 4 => "done",
    }
}

u8_enum! {
    /// Whether the thread running a request still counts as one of the pool's workers. The
    /// watchdog (when it cancels) and the worker (when a cancelled handler returns) race for it
    /// with one compare-and-swap each, so a thread is never both replaced and kept.
    pub(crate) enum PoolSlot {
        /// Counted among the pool's live workers, as every running request's thread is.
        Counted = 0 => "counted",
        /// The watchdog took the thread out of the count and started a stand-in.
        Detached = 1 => "detached",
        /// The handler returned first: the thread stays in the pool, no stand-in.
        Kept = 2 => "kept",
    }
}

u8_enum! {
    /// Why the watchdog timed a request out (the `reason` label of
    /// `vigil_request_timeouts_total`).
    pub(crate) enum TimeoutReason {
        /// Running past its route's ceiling.
        Deadline = 0 => "deadline",
        /// No progress reported within its route's stall timeout.
        Stall = 1 => "stall",
        /// Its deadline passed while it waited in the queue.
        Queue = 2 => "queue",
        /// Cut by a drain (queued when it began, or running when `--graceful-timeout` ran out).
        Shutdown = 3 => "shutdown",
    }
}

u8_enum! {
    /// What became of a timed-out request's handler (the `outcome` of `/timeouts` and logs).
    pub(crate) enum Outcome {
        /// Answered while queued: the handler never ran.
        NotRun = 0 => "not_run",
        /// Cancelled; the handler has neither returned nor been abandoned yet.
        Pending = 1 => "pending",
        /// The handler returned within the grace period.
        Honored = 2 => "honored",
        /// The handler ignored the cancellation past the grace period; its thread was given up.
        Abandoned = 3 => "abandoned",
    }
}

/// A worker thread's number; displays as its thread name, `vigil-worker-N`.
///
/// ```ignore
/// assert_eq!(WorkerId::new(3).unwrap().to_string(), "vigil-worker-3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkerId(NonZeroU32);

impl WorkerId {
    /// The prefix of every worker thread's name.
    pub const THREAD_PREFIX: &'static str = "vigil-worker-";

    pub fn new(n: u32) -> Option<WorkerId> {
        NonZeroU32::new(n).map(WorkerId)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::THREAD_PREFIX, self.0)
    }
}

/// An atomic `Option<WorkerId>` (0 is none).
#[derive(Default)]
pub(crate) struct AtomicWorker(AtomicU32);

impl AtomicWorker {
    pub fn load(&self, o: Ordering) -> Option<WorkerId> {
        WorkerId::new(self.0.load(o))
    }
    pub fn store(&self, w: Option<WorkerId>, o: Ordering) {
        self.0.store(w.map_or(0, WorkerId::get), o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::*;

    #[test]
    fn transitions_succeed_only_from_the_expected_state() {
        let s = AtomicEnum::new(RequestState::Queued);
        assert!(!s.transition(RequestState::Running, RequestState::Cancelling));
        assert!(s.transition(RequestState::Queued, RequestState::Running));
        assert_eq!(s.swap(RequestState::Done, AcqRel), RequestState::Running);
        assert_eq!(s.load(Acquire), RequestState::Done);
    }

    #[test]
    fn labels_and_round_trips_cover_every_variant() {
        for &st in RequestState::ALL {
            assert_eq!(RequestState::from_u8(st.to_u8()), st);
        }
        let labels: Vec<_> = TimeoutReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["deadline", "stall", "queue", "shutdown"]);
        assert_eq!(Outcome::Honored.label(), "honored");
    }

    #[test]
    fn worker_ids_display_as_thread_names_and_zero_is_none() {
        assert_eq!(WorkerId::new(3).unwrap().to_string(), "vigil-worker-3");
        assert!(WorkerId::new(0).is_none());
        let a = AtomicWorker::default();
        assert_eq!(a.load(Relaxed), None);
        a.store(WorkerId::new(7), Relaxed);
        assert_eq!(a.load(Relaxed).map(WorkerId::get), Some(7));
    }
}
