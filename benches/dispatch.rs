//! The dispatch hop, submit to reply, through the real pool (`vigil::internals::bench::Hop`,
//! the `bench-internals` feature): a request's record is `try_send`-ed on the bounded crossbeam
//! queue, a worker thread takes it, runs a `hello` handler and answers into the connection's
//! `ReplySlot` (a mutex-guarded option plus may's `Blocker`), and the submitter, parked on the
//! slot, takes the answer. One request at a time: this is the latency of the hop, including
//! waking the parked worker thread and the parked coroutine.
//!
//! `coroutine/*` submits from a may coroutine as vigil's connections do; `thread/*` from a plain
//! thread (for comparison). `workers_N`: N OS threads wait on the queue, as the pool does.

mod common;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::internals::bench::Hop;

fn bench(c: &mut Criterion) {
    may::config().set_workers(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut g = c.benchmark_group("dispatch_hop");
    g.throughput(Throughput::Elements(1));
    for workers in [1usize, 8] {
        let hop = Arc::new(Hop::new(workers));
        g.bench_function(format!("coroutine/workers_{workers}"), |b| {
            b.iter_custom(|iters| {
                let hop = Arc::clone(&hop);
                // SAFETY: may's spawn contract: no thread-local storage held across yields, and
                // the coroutine blocks only on may's own Blocker (inside the reply slot).
                let h = unsafe { may::coroutine::spawn(move || hop.round_trips(iters)) };
                h.join().expect("coroutine")
            })
        });
        g.bench_function(format!("thread/workers_{workers}"), |b| b.iter_custom(|iters| hop.round_trips(iters)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
