//! Monotonic nanoseconds since the first use in this process: the one clock of the runtime,
//! stored in atomics (`u64`), so a deadline is one integer compare.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `quanta` reads the CPU's time-stamp counter (about 10 ns here, against 25 ns for
/// `Instant::now`) when it is invariant, and falls back to the OS's monotonic clock otherwise.
/// The hot path reads this clock several times per request.
fn clock() -> &'static (quanta::Clock, u64) {
    static CLOCK: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let c = quanta::Clock::new();
        let start = c.raw();
        (c, start)
    })
}

/// Now, as nanoseconds since the process's clock base.
pub fn now_ns() -> u64 {
    let (c, start) = clock();
    c.delta_as_nanos(*start, c.raw())
}

/// A duration as clock nanoseconds (saturating: `Duration::MAX` stays far in the future).
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Clock nanoseconds as seconds, for logs and JSON.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The `Instant` for a clock value, taken relative to now, so that the two clocks' rates
/// never need to agree over long spans.
pub fn instant_at(ns: u64) -> Instant {
    let (now, t) = (now_ns(), Instant::now());
    if ns >= now {
        t.checked_add(Duration::from_nanos(ns - now)).unwrap_or(t + Duration::from_secs(86_400 * 365))
    } else {
        t.checked_sub(Duration::from_nanos(now - ns)).unwrap_or(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward_at_the_rate_of_instant() {
        let (c0, i0) = (now_ns(), Instant::now());
        std::thread::sleep(Duration::from_millis(100));
        let (c1, i1) = (now_ns(), Instant::now());
        assert!(c1 > c0);
        // Loose: a preempted thread between the paired reads must not fail it; a clock in
        // the wrong unit or stuck would.
        let (dc, di) = ((c1 - c0) as i64, (i1 - i0).as_nanos() as i64);
        assert!((dc - di).abs() < 20_000_000, "clock advanced {dc} ns while Instant advanced {di} ns");
    }

    #[test]
    fn instant_at_maps_clock_values_to_instants() {
        let now = now_ns();
        let later = instant_at(now + 1_000_000_000);
        let d = later.saturating_duration_since(Instant::now());
        assert!(d > Duration::from_millis(900) && d <= Duration::from_secs(1), "{d:?}");
        assert!(instant_at(now.saturating_sub(1_000_000_000)) <= Instant::now());
        // Far-future deadlines (a route without a ceiling) do not overflow.
        assert!(instant_at(u64::MAX) > Instant::now());
    }

    #[test]
    fn durations_convert_saturating() {
        assert_eq!(ns(Duration::from_millis(3)), 3_000_000);
        assert_eq!(ns(Duration::MAX), u64::MAX);
        assert_eq!(secs(1_500_000_000), 1.5);
    }
}
