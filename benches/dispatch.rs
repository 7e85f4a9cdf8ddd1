//! The dispatch hop, submit to reply: a connection coroutine `try_send`s a job on the bounded
//! crossbeam queue (as `src/dispatch.rs`), an OS worker thread `recv`s it and puts the answer in
//! the connection's reply slot (a copy of `vigil::dispatch::ReplySlot`: a mutex-guarded option
//! plus may's `Blocker`, as `Inflight::answer` does), and the coroutine, parked on the slot, takes
//! it. One request at a time: this is the latency of the hop, including waking the parked
//! worker thread and the parked coroutine.
//!
//! `coroutine/*` submits from a may coroutine as vigil's connections do; `thread/*` from a plain
//! thread (for comparison). `workers_N`: N OS threads wait on the queue, as the pool does.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// As `vigil::dispatch::ReplySlot`, with a `String` for the response.
struct ReplySlot {
    reply: parking_lot::Mutex<Option<(u64, String)>>,
    blocker: may::sync::Blocker,
}

impl ReplySlot {
    /// On the context that will wait.
    fn new() -> Arc<Self> {
        Arc::new(ReplySlot { reply: parking_lot::Mutex::new(None), blocker: may::sync::Blocker::new(false) })
    }

    fn put(&self, seq: u64, resp: String) {
        *self.reply.lock() = Some((seq, resp));
        self.blocker.unpark();
    }

    fn wait(&self, seq: u64) -> String {
        loop {
            match self.reply.lock().take() {
                Some((s, resp)) if s == seq => return resp,
                Some(_) => continue,
                None => {}
            }
            self.blocker.park(None).expect("park");
        }
    }
}

/// The queue's payload: what the worker needs to answer.
struct Job {
    seq: u64,
    reply: Arc<ReplySlot>,
}

enum Msg {
    Run(Arc<Job>),
    Stop,
}

struct Pool {
    tx: crossbeam_channel::Sender<Msg>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize, capacity: usize) -> Pool {
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(capacity);
        let threads = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    while let Ok(Msg::Run(job)) = rx.recv() {
                        // The handler's answer: a small allocated body, like Response::text.
                        job.reply.put(job.seq, String::from("hello"));
                    }
                })
            })
            .collect();
        Pool { tx, threads }
    }

    fn stop(self) {
        for _ in &self.threads {
            let _ = self.tx.send(Msg::Stop);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// `iters` round trips from the calling context; returns the time taken.
fn round_trips(tx: &crossbeam_channel::Sender<Msg>, iters: u64) -> Duration {
    let slot = ReplySlot::new();
    let t0 = Instant::now();
    for seq in 0..iters {
        let job = Arc::new(Job { seq, reply: Arc::clone(&slot) });
        if tx.try_send(Msg::Run(job)).is_err() {
            panic!("queue full");
        }
        std::hint::black_box(slot.wait(seq));
    }
    t0.elapsed()
}

fn bench(c: &mut Criterion) {
    may::config().set_workers(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut g = c.benchmark_group("dispatch_hop");
    g.throughput(Throughput::Elements(1));
    for workers in [1usize, 8] {
        let pool = Pool::new(workers, 16);
        g.bench_function(format!("coroutine/workers_{workers}"), |b| {
            b.iter_custom(|iters| {
                let tx = pool.tx.clone();
                // SAFETY (may's spawn contract): no thread-local storage held across yields, no
                // blocking of the scheduler thread except on may's own Blocker.
                let h = unsafe { may::coroutine::spawn(move || round_trips(&tx, iters)) };
                h.join().expect("coroutine")
            })
        });
        g.bench_function(format!("thread/workers_{workers}"), |b| b.iter_custom(|iters| round_trips(&pool.tx, iters)));
        pool.stop();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
