//! The races that decide who answers a request and who owns a thread, as deterministic
//! interleavings of the watchdog's steps (its sweep, or the compare-and-swaps a sweep performs)
//! and a worker's steps (`Pool::begin`, then `Pool::complete` when the handler returns), plus
//! one stress test that lets real threads race.
//!
//! Invariants checked every time: the client gets exactly one answer; once every handler has
//! returned, the pool has `--threads` live workers, none busy, none detached or abandoned.

use std::sync::Arc;
use std::time::Duration;

use crate::http::response::Response;
use crate::runtime::clock;
use crate::runtime::pool::{After, SpawnReason};
use crate::runtime::state::{Outcome, PoolSlot, RequestState};
use crate::runtime::testing::{answer, Fixture, HOUR};

const GRACE: Duration = Duration::from_secs(5);

fn settled(f: &Fixture, threads: usize) {
    let s = f.stats();
    assert_eq!((s.live, s.busy, s.detached, s.abandoned_alive), (threads, 0, 0, 0), "{s:?}");
}

#[test]
fn handler_returning_just_before_the_deadline_sweep_is_answered_by_the_handler() {
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    assert!(f.pool.begin(&job, w));
    assert_eq!(f.pool.complete(&job, w, Response::text("ok")), After::Serve);
    f.tick(f.past_deadline(&job));
    assert_eq!(answer(&slot), Some(200));
    assert_eq!(answer(&slot), None, "one answer only");
    assert_eq!(f.wd.timeouts_total(), 0);
    assert_eq!(f.stats().replaced_total, 0);
    settled(&f, 1);
}

#[test]
fn deadline_sweep_just_before_the_handler_returns_answers_504_and_the_late_response_is_dropped() {
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    assert!(f.pool.begin(&job, w));
    f.tick(f.past_deadline(&job));
    assert_eq!(job.state(), RequestState::Cancelling);
    assert_eq!(job.pool_slot.load(std::sync::atomic::Ordering::Acquire), PoolSlot::Detached);
    let standin = job.replaced_by.load(std::sync::atomic::Ordering::Acquire);
    assert!(standin.is_some(), "a stand-in started at the cancellation");
    // The handler honors the cancellation: its thread finds the stand-in in its place and exits.
    assert_eq!(f.pool.complete(&job, w, Response::text("late")), After::Exit);
    assert_eq!(answer(&slot), Some(504));
    assert_eq!(answer(&slot), None, "the late 200 never reaches the client");
    f.tick(f.past_deadline(&job) + 1);
    assert_eq!(f.wd.stats().cancellations_honored_total, 1);
    assert_eq!(f.wd.recent_timeouts()[0].outcome, Outcome::Honored);
    settled(&f, 1);
}

#[test]
fn cancellation_and_return_racing_for_the_thread_never_both_keep_and_replace_it() {
    // The watchdog's cancel flips the state, then detaches the thread; the handler returns
    // between the two: the thread keeps its place and the detach (so the stand-in) is off.
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, _slot) = f.job();
    assert!(f.pool.begin(&job, w));
    assert!(job.transition(RequestState::Running, RequestState::Cancelling));
    assert_eq!(f.pool.complete(&job, w, Response::text("ok")), After::Serve);
    assert!(!f.pool.detach(&job), "a kept thread cannot also be detached");
    assert_eq!(job.pool_slot.load(std::sync::atomic::Ordering::Acquire), PoolSlot::Kept);
    assert_eq!(f.stats().replaced_total, 0);
    settled(&f, 1);
}

#[test]
fn honored_cancellation_racing_the_stand_in_leaves_the_pool_at_its_size() {
    // Detached, but the handler returns before the stand-in is started: the thread takes its
    // place back, and the stand-in then finds the pool full and does not start.
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, _slot) = f.job();
    assert!(f.pool.begin(&job, w));
    assert!(job.transition(RequestState::Running, RequestState::Cancelling));
    assert!(f.pool.detach(&job));
    assert_eq!(f.stats().live, 0);
    assert_eq!(f.pool.complete(&job, w, Response::text("ok")), After::Serve, "rejoined the short pool");
    assert!(matches!(f.pool.spawn_worker(SpawnReason::StandIn), Err(crate::runtime::pool::SpawnError::NotNeeded)));
    settled(&f, 1);
}

#[test]
fn abandonment_then_a_late_return_leaves_one_stand_in_and_no_abandoned_thread() {
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    assert!(f.pool.begin(&job, w));
    let at = f.past_deadline(&job);
    f.tick(at);
    f.tick(at + clock::ns(GRACE));
    assert_eq!(job.state(), RequestState::Abandoned);
    assert_eq!((f.stats().abandoned_alive, f.stats().abandoned_total), (1, 1));
    assert_eq!(f.wd.recent_timeouts()[0].outcome, Outcome::Abandoned);
    // The handler returns at last: the stand-in holds its place, so the thread exits.
    assert_eq!(f.pool.complete(&job, w, Response::text("very late")), After::Exit);
    assert_eq!(answer(&slot), Some(504));
    f.tick(at + clock::ns(GRACE) + 1);
    assert_eq!(f.wd.stats().cancellations_honored_total, 0, "a late return is not an honored cancellation");
    settled(&f, 1);
}

#[test]
fn a_return_just_before_the_abandonment_is_an_honored_cancellation() {
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, _slot) = f.job();
    assert!(f.pool.begin(&job, w));
    let at = f.past_deadline(&job);
    f.tick(at);
    assert_eq!(f.pool.complete(&job, w, Response::text("ok")), After::Exit);
    // The sweep that decided to abandon it acts after the return: the abandonment is off.
    assert_eq!(f.pool.abandon(&job), None);
    f.tick(at + clock::ns(GRACE));
    assert_eq!((f.stats().abandoned_total, f.wd.stats().cancellations_honored_total), (0, 1));
    settled(&f, 1);
}

#[test]
fn a_drain_and_a_worker_racing_for_a_queued_request_answer_it_once() {
    // The sweep at the drain's deadline first: 503, and the worker may no longer start it.
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    let end = clock::now_ns();
    f.wd.begin_drain(end);
    f.tick(end);
    assert_eq!(answer(&slot), Some(503));
    assert!(!f.pool.begin(&job, w));
    assert_eq!(job.state(), RequestState::Done);

    // The worker first: the drain lets a running request finish (and a queued one start).
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    f.wd.begin_drain(clock::now_ns() + clock::ns(HOUR));
    f.tick(clock::now_ns());
    assert_eq!(answer(&slot), None, "a queued request is not refused before the drain's deadline");
    assert!(f.pool.begin(&job, w));
    f.tick(clock::now_ns());
    assert_eq!(answer(&slot), None);
    assert_eq!(f.pool.complete(&job, w, Response::text("ok")), After::Serve);
    assert_eq!(answer(&slot), Some(200));
    settled(&f, 1);
}

#[test]
fn the_end_of_a_drain_racing_a_return_answers_once_and_starts_no_stand_in() {
    let mut f = Fixture::new(1, HOUR, GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    assert!(f.pool.begin(&job, w));
    let end = clock::now_ns() + 1_000;
    f.wd.begin_drain(end);
    f.tick(end);
    assert_eq!(job.state(), RequestState::Cancelling);
    assert_eq!(
        job.pool_slot.load(std::sync::atomic::Ordering::Acquire),
        PoolSlot::Counted,
        "no stand-in while draining"
    );
    assert_eq!(f.pool.complete(&job, w, Response::text("late")), After::Serve);
    assert_eq!(answer(&slot), Some(504));
    assert_eq!(f.stats().replaced_total, 0);
    settled(&f, 1);
}

#[test]
fn a_queued_request_past_its_deadline_is_refused_by_the_watchdog_and_never_run() {
    let mut f = Fixture::new(1, Duration::from_millis(1), GRACE);
    let w = f.pool.adopt_test_worker();
    let (job, slot) = f.job();
    std::thread::sleep(Duration::from_millis(2)); // the request waits past its deadline
    assert!(!f.pool.begin(&job, w), "a worker leaves it to the watchdog");
    assert_eq!(answer(&slot), None);
    f.tick(clock::now_ns());
    assert_eq!(answer(&slot), Some(503));
    assert_eq!(f.wd.recent_timeouts()[0].outcome, Outcome::NotRun);
    settled(&f, 1);
}

#[test]
fn real_threads_racing_at_the_deadline_always_give_one_answer_and_a_settled_pool() {
    let mut answers = [0usize; 2];
    for i in 0..300u64 {
        let mut f = Fixture::new(1, HOUR, GRACE);
        let w = f.pool.adopt_test_worker();
        let (job, slot) = f.job();
        assert!(f.pool.begin(&job, w));
        let (pool, j) = (Arc::clone(&f.pool), Arc::clone(&job));
        let worker = std::thread::spawn(move || {
            for _ in 0..(i % 7) * 50 {
                std::hint::spin_loop();
            }
            pool.complete(&j, w, Response::text("ok"))
        });
        let at = f.past_deadline(&job);
        f.tick(at);
        let after = worker.join().unwrap();
        f.tick(at + 1);
        match answer(&slot) {
            Some(200) => {
                answers[0] += 1;
                assert_eq!(after, After::Serve);
            }
            Some(504) => answers[1] += 1,
            other => panic!("iteration {i}: answer {other:?}"),
        }
        assert_eq!(answer(&slot), None);
        // Whatever the order, the pool is back at one live worker, idle.
        assert!(crate::runtime::testing::eventually(Duration::from_secs(5), || f.stats().live == 1));
        settled(&f, 1);
    }
    println!("200 (handler first): {}, 504 (watchdog first): {}", answers[0], answers[1]);
}
