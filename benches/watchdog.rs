//! The per-request bookkeeping of the connection, the pool and the watchdog, on the real types
//! (`vigil::internals::bench`, the `bench-internals` feature): build the request's record
//! (`Inflight`, with the `Request` a connection allocates: head bytes and id), register it with
//! the watchdog, a worker's `Pool::begin` and `Pool::complete` (which answers into the
//! connection's `ReplySlot`), the connection taking the answer, and a watchdog sweep every 64
//! requests. Excluded: parsing, the dispatch hop (`benches/dispatch.rs`), the handler, metrics and
//! writing the response.
//!
//! `bookkeeping/full` is the whole sequence on one thread; `bookkeeping/without_watchdog` leaves
//! out the registration and the sweeps; `bookkeeping_parts` times pieces on their own.

mod common;

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::internals::bench::{clock_now_ns, inflight_alloc_and_drop, Bookkeeping};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bookkeeping");
    g.throughput(Throughput::Elements(1));
    for (name, with_watchdog) in [("full", true), ("without_watchdog", false)] {
        let mut m = Bookkeeping::new(with_watchdog);
        g.bench_function(name, |b| b.iter(|| m.request()));
    }
    g.finish();

    let mut g = c.benchmark_group("bookkeeping_parts");
    g.bench_function("clock_now_ns", |b| b.iter(clock_now_ns));
    g.bench_function("instant_now", |b| b.iter(Instant::now));
    g.bench_function("inflight_and_request_alloc_and_drop", |b| b.iter(inflight_alloc_and_drop));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
