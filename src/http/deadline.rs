//! Deadlines an upstream (a proxy, a gRPC client) sends with a request: pure parsing of the
//! header fields vigil can honour when `--trust-upstream-deadline` is on.
//!
//! | field | format |
//! |---|---|
//! | `grpc-timeout` | 1–8 digits and a unit: `H`, `M`, `S`, `m` (ms), `u` (µs), `n` (ns) (gRPC over HTTP/2 spec) |
//! | `x-envoy-expected-rq-timeout-ms` | decimal milliseconds (Envoy) |
//! | `x-request-timeout-ms` | decimal milliseconds (vigil's plain one, for any proxy or client) |

use std::time::Duration;

/// The header fields read, lower-case.
pub const FIELDS: [&str; 3] = ["grpc-timeout", "x-envoy-expected-rq-timeout-ms", "x-request-timeout-ms"];

/// The time an upstream gives a request, from one of [`FIELDS`]; `None` for another field or a
/// value that does not parse (ignored, as a proxy would).
pub fn parse(field: &str, value: &str) -> Option<Duration> {
    let value = value.trim();
    if field.eq_ignore_ascii_case("grpc-timeout") {
        grpc_timeout(value)
    } else if FIELDS[1..].iter().any(|f| field.eq_ignore_ascii_case(f)) {
        millis(value)
    } else {
        None
    }
}

fn digits(s: &str, max: usize) -> Option<u64> {
    (!s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

/// `grpc-timeout`: at most 8 digits, then the unit.
pub fn grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n = digits(n, 8)?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Decimal milliseconds (at most 12 digits: over 30 years).
pub fn millis(v: &str) -> Option<Duration> {
    digits(v, 12).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_bad_ones_are_ignored() {
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "1", "123456789S", "1s", "-1S", "1.5S", " 1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn millisecond_fields_parse_and_the_field_name_picks_the_format() {
        assert_eq!(parse("X-Envoy-Expected-Rq-Timeout-Ms", "250"), Some(Duration::from_millis(250)));
        assert_eq!(parse("x-request-timeout-ms", " 0 "), Some(Duration::ZERO));
        assert_eq!(parse("x-request-timeout-ms", "1e3"), None);
        assert_eq!(parse("x-request-timeout-ms", "9999999999999"), None);
        assert_eq!(parse("grpc-timeout", "250"), None);
        assert_eq!(parse("x-timeout", "250"), None);
    }
}
