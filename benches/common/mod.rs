//! Shared by the criterion benches: short runs by default, longer with `VIGIL_BENCH_LONG=1`.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;

/// `true` when `VIGIL_BENCH_LONG` is set to anything but `0` or empty.
pub fn long() -> bool {
    std::env::var("VIGIL_BENCH_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Criterion settings: about 1.5 s per benchmark by default (so `cargo bench` stays quick),
/// criterion's usual 3 s warm-up + 5 s × 100 samples with `VIGIL_BENCH_LONG=1`.
pub fn criterion() -> Criterion {
    let c = Criterion::default();
    let c = if long() {
        c.warm_up_time(Duration::from_secs(3)).measurement_time(Duration::from_secs(5)).sample_size(100)
    } else {
        c.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1)).sample_size(20)
    };
    c.configure_from_args()
}
