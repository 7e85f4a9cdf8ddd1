//! Log output for the `vigil` binary, and for any app that wants the same two formats.
//!
//! Everything logs through the [`log`] facade; [`init`] installs an `env_logger` that writes to
//! stderr, with levels from `RUST_LOG` (default `info`, and `warn` for the `may` runtime).
//!
//! - `text` (default): `env_logger`'s human format, `[TS LEVEL target] message`.
//! - `json`: one object per line with the stable keys `ts` (RFC 3339, UTC, milliseconds),
//!   `level`, `target` and `msg`, followed by the record's structured fields (the `log` crate's
//!   key-values: `event`, `id`, `route`, `elapsed`, ...). A field never replaces one of the four
//!   stable keys.
//!
//! Access lines (`--access-log`) use the target [`ACCESS_TARGET`]; they are enabled at `info`
//! whatever `RUST_LOG` says, and are written through a buffer that is flushed every 200 ms (and
//! when it reaches 32 KiB, and by [`flush`]), so logging every request costs no write syscall per
//! request. Other records are written at once, so a warning is never held back.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::Mutex;

use crate::settings::LogFormat;

/// The log target of the per-request access lines (for `RUST_LOG` directives or a logger of
/// your own).
///
/// ```
/// assert_eq!(vigil::logging::ACCESS_TARGET, "vigil::access");
/// ```
pub const ACCESS_TARGET: &str = "vigil::access";

/// How long an access line may wait in the buffer before it is written.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Buffered access lines are written once they reach this size.
const ACCESS_BUF: usize = 32 * 1024;

/// The four keys every JSON line starts with.
const STABLE_KEYS: [&str; 4] = ["ts", "level", "target", "msg"];

/// Installs the process-wide logger. `access_log` turns on the `vigil::access` target at `info`
/// (buffered, see the module docs). Fails if a logger was already installed.
///
/// ```
/// vigil::logging::init(vigil::LogFormat::Json, false).unwrap();
/// log::warn!(id = "abc-1", elapsed = 1.5; "something slow");
/// // stderr: {"ts":"2025-01-01T00:00:00.000Z","level":"WARN","target":"rust_out","msg":"something slow","id":"abc-1","elapsed":1.5}
/// vigil::logging::flush();
/// ```
pub fn init(format: LogFormat, access_log: bool) -> Result<(), log::SetLoggerError> {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn"));
    if access_log {
        b.filter_module(ACCESS_TARGET, LevelFilter::Info);
    }
    if format == LogFormat::Json {
        b.format(|buf, rec| {
            let mut line = String::with_capacity(256);
            json_line(&mut line, &buf.timestamp_millis().to_string(), rec);
            buf.write_all(line.as_bytes())
        });
    }
    let inner = b.build();
    let max = inner.filter();
    let access = access_log.then(|| {
        let sink = Arc::new(AccessSink { json: format == LogFormat::Json, buf: Mutex::new(Vec::new()) });
        let flusher = Arc::clone(&sink);
        let _ = std::thread::Builder::new().name("vigil-log-flush".into()).spawn(move || loop {
            std::thread::sleep(ACCESS_FLUSH_EVERY);
            flusher.flush();
        });
        sink
    });
    let logger: &'static VigilLogger = Box::leak(Box::new(VigilLogger { inner, access }));
    log::set_logger(logger)?;
    log::set_max_level(max);
    Ok(())
}

/// Writes out buffered access lines now (the binary calls it before exiting). Harmless without
/// a logger.
///
/// ```
/// vigil::logging::init(vigil::LogFormat::Text, true).unwrap();
/// log::info!(target: vigil::logging::ACCESS_TARGET, "GET / status=200");
/// vigil::logging::flush(); // the access line is on stderr now
/// ```
pub fn flush() {
    log::logger().flush();
}

struct VigilLogger {
    inner: env_logger::Logger,
    access: Option<Arc<AccessSink>>,
}

impl Log for VigilLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        match &self.access {
            Some(sink) if record.target() == ACCESS_TARGET => sink.log(record),
            _ => self.inner.log(record),
        }
    }

    fn flush(&self) {
        if let Some(sink) = &self.access {
            sink.flush();
        }
        self.inner.flush();
    }
}

/// The buffered writer of access lines.
struct AccessSink {
    json: bool,
    buf: Mutex<Vec<u8>>,
}

impl AccessSink {
    fn log(&self, record: &Record<'_>) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|cell| {
            let Ok(mut line) = cell.try_borrow_mut() else { return };
            line.clear();
            let ts = now_rfc3339();
            if self.json {
                json_line(&mut line, &ts, record);
            } else {
                let _ = writeln!(line, "[{ts} {:<5} {}] {}", record.level(), record.target(), record.args());
            }
            let full = {
                let mut b = self.buf.lock();
                b.extend_from_slice(line.as_bytes());
                (b.len() >= ACCESS_BUF).then(|| std::mem::take(&mut *b))
            };
            if let Some(bytes) = full {
                write_stderr(&bytes);
            }
        });
    }

    fn flush(&self) {
        let bytes = std::mem::take(&mut *self.buf.lock());
        if !bytes.is_empty() {
            write_stderr(&bytes);
        }
    }
}

fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// Now as RFC 3339 in UTC with milliseconds, the same text as `env_logger`'s `timestamp_millis`.
fn now_rfc3339() -> String {
    rfc3339_millis(std::time::SystemTime::now())
}

/// Formats a `SystemTime` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub(crate) fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Appends one JSON object (and a newline) for `rec` to `out`.
fn json_line(out: &mut String, ts: &str, rec: &Record<'_>) {
    out.push_str("{\"ts\":");
    push_json_str(out, ts);
    out.push_str(",\"level\":");
    push_json_str(out, rec.level().as_str());
    out.push_str(",\"target\":");
    push_json_str(out, rec.target());
    out.push_str(",\"msg\":");
    match rec.args().as_str() {
        Some(s) => push_json_str(out, s),
        None => push_json_str(out, &rec.args().to_string()),
    }
    let mut fields = Fields { out, seen: Vec::new() };
    let _ = rec.key_values().visit(&mut fields);
    out.push_str("}\n");
}

/// Writes each key-value of a record as a JSON member, skipping stable keys and repeats.
struct Fields<'a> {
    out: &'a mut String,
    seen: Vec<String>,
}

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let k = key.as_str();
        if STABLE_KEYS.contains(&k) || self.seen.iter().any(|s| s == k) {
            return Ok(());
        }
        self.seen.push(k.to_string());
        self.out.push(',');
        push_json_str(self.out, k);
        self.out.push(':');
        if let Some(b) = value.to_bool() {
            self.out.push_str(if b { "true" } else { "false" });
        } else if let Some(u) = value.to_u64() {
            let _ = write!(self.out, "{u}");
        } else if let Some(i) = value.to_i64() {
            let _ = write!(self.out, "{i}");
        } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
            let _ = write!(self.out, "{f}");
        } else if let Some(s) = value.to_borrowed_str() {
            push_json_str(self.out, s);
        } else {
            push_json_str(self.out, &value.to_string());
        }
        Ok(())
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping, without building a Value.
    let _ = serde_json::to_writer(StringWriter(out), s);
}

/// `io::Write` into a `String` (serde_json only writes UTF-8).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.push_str(std::str::from_utf8(b).map_err(std::io::Error::other)?);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_stable_keys_first_then_typed_fields() {
        let mut out = String::new();
        let kvs: [(&str, Value); 5] = [
            ("id", Value::from("abc")),
            ("elapsed", Value::from(1.5f64)),
            ("thread", Value::from(3u32)),
            ("msg", Value::from("not allowed to replace msg")),
            ("ok", Value::from(true)),
        ];
        let rec = Record::builder()
            .args(format_args!("say \"hi\"\n"))
            .level(log::Level::Warn)
            .target("vigil::watchdog")
            .key_values(&kvs)
            .build();
        json_line(&mut out, "2025-01-02T03:04:05.006Z", &rec);
        assert_eq!(
            out,
            "{\"ts\":\"2025-01-02T03:04:05.006Z\",\"level\":\"WARN\",\"target\":\"vigil::watchdog\",\
             \"msg\":\"say \\\"hi\\\"\\n\",\"id\":\"abc\",\"elapsed\":1.5,\"thread\":3,\"ok\":true}\n"
        );
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["msg"], "say \"hi\"\n");
    }

    #[test]
    fn rfc3339_formatting_matches_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_735_689_599, 999), "2024-12-31T23:59:59.999Z");
    }
}

/// Lets one line through per second for a warning that can fire on every request (a full
/// queue under overload), and counts the ones it held back so the next line can say how many.
pub(crate) struct OncePerSecond {
    /// Clock ns of the last line let through; `u64::MAX`: none yet.
    last_ns: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl OncePerSecond {
    pub(crate) const fn new() -> Self {
        OncePerSecond {
            last_ns: std::sync::atomic::AtomicU64::new(u64::MAX),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, `n` occurrences were held back since the last line. `None`: skip it.
    pub(crate) fn allow(&self, now_ns: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_ns.load(Relaxed);
        let due = last == u64::MAX || now_ns.saturating_sub(last) >= 1_000_000_000;
        if due && self.last_ns.compare_exchange(last, now_ns, Relaxed, Relaxed).is_ok() {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod once_per_second_tests {
    use super::OncePerSecond;

    #[test]
    fn lets_one_line_through_per_second_and_counts_the_rest() {
        let l = OncePerSecond::new();
        assert_eq!(l.allow(5), Some(0));
        assert_eq!(l.allow(6), None);
        assert_eq!(l.allow(999_999_999), None);
        assert_eq!(l.allow(1_000_000_005), Some(2));
        assert_eq!(l.allow(1_000_000_006), None);
    }
}
