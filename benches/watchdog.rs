//! The watchdog's bookkeeping per request (target: at most 100 ns), measured on a standalone
//! model of the hot path, since `Inflight` and its helpers are crate-private.
//!
//! The model mirrors `src/watchdog.rs`, `src/conn.rs::handle` and `src/pool.rs::run_one` step
//! by step, with the same field types and orderings: clone the connection's reply slot, read the clock,
//! allocate the `Inflight` record in an `Arc`, count it in flight, hand a `Weak` of it to the
//! watchdog over the unbounded crossbeam channel; on the worker: read the clock, check answered/deadline, store
//! thread/run-start/progress, CAS queued→running, clone the `Arc` for the `Ctx`; after the
//! handler: swap to done, CAS `answered`, count it out of flight; on the
//! watchdog's tick: drain the channel into its list and `retain` the records still alive and not
//! done (the connection's drop frees the record; the watchdog's `Weak` frees only the shell). Excluded: the request itself (parsing, `Request`), the dispatch
//! hop (`benches/dispatch.rs`), metrics, and sending the reply.
//!
//! `bookkeeping/full` is the whole sequence on one thread with a watchdog tick every 64
//! requests; the other entries take pieces away to show where the time goes.

mod common;

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parking_lot::{Condvar, Mutex};

mod clock {
    use std::sync::OnceLock;

    fn clock() -> &'static (quanta::Clock, u64) {
        static CLOCK: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
        CLOCK.get_or_init(|| {
            let c = quanta::Clock::new();
            let start = c.raw();
            (c, start)
        })
    }

    /// As `vigil::watchdog::clock::now_ns`.
    pub fn now_ns() -> u64 {
        let (c, start) = clock();
        c.delta_as_nanos(*start, c.raw())
    }
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 4;

/// As `vigil::watchdog::Token`.
#[allow(dead_code)]
struct Token {
    cancelled: AtomicBool,
    callbacks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    wake: Condvar,
}

/// As `vigil::dispatch::ReplySlot` (the connection's, shared by its requests' records).
#[allow(dead_code)]
struct ReplySlot {
    reply: Mutex<Option<(u64, String)>>,
    blocker: may::sync::Blocker,
}

/// As `vigil::watchdog::Inflight`, the request replaced by a stand-in of the same size class.
#[allow(dead_code)]
struct Inflight {
    req: [u64; 24],
    route: usize,
    seq: u64,
    state: AtomicU8,
    answered: AtomicBool,
    start_ns: u64,
    deadline_ns: u64,
    stall_ns: u64,
    last_progress_ns: AtomicU64,
    run_start_ns: AtomicU64,
    cancel_ns: AtomicU64,
    timeout_reason: AtomicU8,
    thread: AtomicU32,
    stage: Mutex<Cow<'static, str>>,
    token: Token,
    reply: Option<Arc<ReplySlot>>,
    peer: Option<i32>,
}

impl Inflight {
    fn new(seq: u64, start_ns: u64, timeout: Duration, reply: Arc<ReplySlot>) -> Self {
        Inflight {
            req: [0; 24],
            route: 0,
            seq,
            state: AtomicU8::new(QUEUED),
            answered: AtomicBool::new(false),
            start_ns,
            deadline_ns: start_ns.saturating_add(timeout.as_nanos() as u64),
            stall_ns: 0,
            last_progress_ns: AtomicU64::new(start_ns),
            run_start_ns: AtomicU64::new(0),
            cancel_ns: AtomicU64::new(0),
            timeout_reason: AtomicU8::new(u8::MAX),
            thread: AtomicU32::new(0),
            stage: Mutex::new(Cow::Borrowed("")),
            token: Token { cancelled: AtomicBool::new(false), callbacks: Mutex::new(Vec::new()), wake: Condvar::new() },
            reply: Some(reply),
            peer: Some(7),
        }
    }
}

/// Which parts of the sequence run.
#[derive(Clone, Copy)]
struct Parts {
    clock: bool,
    register: bool,
}

struct Model {
    reply: Arc<ReplySlot>,
    register_tx: crossbeam_channel::Sender<Weak<Inflight>>,
    register_rx: crossbeam_channel::Receiver<Weak<Inflight>>,
    list: Vec<Weak<Inflight>>,
    in_flight: AtomicI64,
    seq: u64,
}

impl Model {
    fn new() -> Self {
        let reply = Arc::new(ReplySlot { reply: Mutex::new(None), blocker: may::sync::Blocker::new(false) });
        let (register_tx, register_rx) = crossbeam_channel::unbounded();
        Model { reply, register_tx, register_rx, list: Vec::new(), in_flight: AtomicI64::new(0), seq: 0 }
    }

    fn now(parts: Parts, fake: u64) -> u64 {
        if parts.clock {
            clock::now_ns()
        } else {
            black_box(fake)
        }
    }

    /// One request's bookkeeping, start to finish.
    #[inline(never)]
    fn request(&mut self, parts: Parts) {
        // conn.rs: handle
        let tx = Arc::clone(&self.reply);
        // conn.rs reuses the `t0` it reads for the response latency when the request had no
        // body; the model still counts that read, so it overstates a bodiless request slightly.
        let start_ns = Self::now(parts, 1_000);
        let seq = self.seq;
        self.seq += 1;
        let job = Arc::new(Inflight::new(seq, start_ns, Duration::from_secs(30), tx));
        self.in_flight.fetch_add(1, Relaxed);
        if parts.register {
            let _ = self.register_tx.send(Arc::downgrade(&job));
        } else {
            self.list.push(Arc::downgrade(&job));
        }
        // pool.rs: run_one (the worker holds the queue's clone)
        let worker = Arc::clone(&job);
        let now = Self::now(parts, 2_000);
        if worker.answered.load(Acquire) || now >= worker.deadline_ns {
            unreachable!("not timed out in this model");
        }
        worker.thread.store(1, Relaxed);
        worker.run_start_ns.store(now, Relaxed);
        worker.last_progress_ns.store(now.max(worker.last_progress_ns.load(Relaxed)), Relaxed);
        if worker.state.compare_exchange(QUEUED, RUNNING, AcqRel, Acquire).is_err() {
            unreachable!();
        }
        let ctx = Arc::clone(&worker);
        black_box(&ctx);
        drop(ctx);
        let prev = worker.state.swap(DONE, AcqRel);
        // pool.rs reads the clock here only when the request was cancelled (not in this model).
        black_box(prev);
        // Inflight::answer, without the reply send (the dispatch hop)
        if worker.answered.compare_exchange(false, true, AcqRel, Acquire).is_ok() {
            self.in_flight.fetch_sub(1, Relaxed);
        }
        drop(worker);
        drop(job); // the connection's reference
                   // The watchdog's tick, every 64 requests (at 10 ms ticks that is 6,400 req/s; busier
                   // servers drain more per tick, which only amortises better).
        if seq % 64 == 63 {
            self.tick();
        }
    }

    fn tick(&mut self) {
        self.list.extend(self.register_rx.try_iter());
        self.list.retain(|w| w.upgrade().is_some_and(|r| r.state.load(Acquire) != DONE));
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bookkeeping");
    g.throughput(Throughput::Elements(1));
    for (name, parts) in [
        ("full", Parts { clock: true, register: true }),
        ("without_clock_reads", Parts { clock: false, register: true }),
        ("without_register_channel", Parts { clock: true, register: false }),
        ("without_both", Parts { clock: false, register: false }),
    ] {
        let mut m = Model::new();
        g.bench_function(name, |b| b.iter(|| m.request(parts)));
        m.tick();
        assert!(m.list.is_empty());
    }
    g.finish();

    // The pieces on their own.
    let mut g = c.benchmark_group("bookkeeping_parts");
    g.bench_function("clock_now_ns", |b| b.iter(clock::now_ns));
    g.bench_function("instant_now", |b| b.iter(Instant::now));
    let tx = Arc::new(ReplySlot { reply: Mutex::new(None), blocker: may::sync::Blocker::new(false) });
    g.bench_function("arc_new_inflight_and_drop", |b| {
        b.iter(|| Arc::new(Inflight::new(black_box(1), 1_000, Duration::from_secs(30), Arc::clone(&tx))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
