//! Log output for the `vigil` binary, and for any app that wants the same two formats.
//!
//! Everything logs through the [`log`] facade; [`init`] installs a logger whose records never
//! block the thread that logs them: each record is formatted on that thread and put on a
//! bounded queue ([`QUEUE_RECORDS`]) that one writer thread ("vigil-log") writes to stderr in
//! batches. When the sink stalls (stderr on a pipe nobody reads: a stalled log shipper,
//! `journald` under pressure) and the queue is full, new records are dropped and counted
//! (`vigil_log_records_dropped_total`), and once the sink takes writes again one line says how
//! many were lost. So a stalled sink costs log lines, never a 504 or a worker.
//!
//! Levels come from `RUST_LOG` (default `info`). The `may` runtime stays at `warn` unless
//! `RUST_LOG` names it: at `info` it logs two lines per connection.
//!
//! - `text` (default): `env_logger`'s human format, `[TS LEVEL target] message`.
//! - `json`: one object per line with the stable keys `ts` (RFC 3339, UTC, milliseconds),
//!   `level`, `target` and `msg`, followed by the record's structured fields (the `log` crate's
//!   key-values: `event`, `id`, `route`, `elapsed`, ...). A field never replaces one of the four
//!   stable keys.
//!
//! Access lines (`--access-log`) use the target [`ACCESS_TARGET`]; they are enabled at `info`
//! whatever `RUST_LOG` says, and go through the same queue (the writer batches them, so logging
//! every request costs no write syscall per request).

// Without the `logger` feature only the formats, the access target and the helpers the server
// uses are compiled in; the queue, its writer and the log file then have no user.
#![cfg_attr(not(feature = "logger"), allow(dead_code, unused_imports))]

use std::fmt::{self, Write as _};
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};

/// The log target of the per-request access lines (for `RUST_LOG` directives or a logger of
/// your own).
///
/// ```
/// assert_eq!(vigil::logging::ACCESS_TARGET, "vigil::access");
/// ```
pub const ACCESS_TARGET: &str = "vigil::access";

/// Records that may wait for the writer; past this, new ones are dropped (and counted).
pub const QUEUE_RECORDS: usize = 8192;

/// The writer gathers up to this many bytes of waiting records into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// How long [`flush`] waits for the writer before giving up (a stalled sink).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The four keys every JSON line starts with.
const STABLE_KEYS: [&str; 4] = ["ts", "level", "target", "msg"];

/// Format of the server's log lines (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`text`).
    Text,
    /// One JSON object per line (`json`).
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`, case-insensitive.
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected `text` or `json`, got {s:?}")),
        }
    }
}

enum Msg {
    /// One formatted record (with its newline).
    Line(Vec<u8>),
    /// Acknowledge once everything queued before it has been written.
    Flush(Sender<()>),
}

/// The queue between the threads that log and the writer thread.
struct Queue {
    tx: Sender<Msg>,
    format: LogFormat,
    /// Records dropped since the process started, and since the last notice line.
    dropped_total: AtomicU64,
    dropped_unreported: AtomicU64,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

#[cfg(feature = "logger")]
/// Installs the process-wide logger and starts its writer thread. `access_log` turns on the
/// `vigil::access` target at `info`. Fails if a logger was already installed.
///
/// ```
/// vigil::logging::init(vigil::LogFormat::Json, false).unwrap();
/// log::warn!(id = "abc-1", elapsed = 1.5; "something slow");
/// // stderr: {"ts":"2025-01-01T00:00:00.000Z","level":"WARN","target":"rust_out","msg":"something slow","id":"abc-1","elapsed":1.5}
/// vigil::logging::flush();
/// ```
pub fn init(format: LogFormat, access_log: bool) -> Result<(), log::SetLoggerError> {
    init_with(format, access_log, Box::new(std::io::stderr()))
}

#[cfg(feature = "logger")]
/// [`init`] with another sink than stderr: a [`LogFile`], a pipe, a test's buffer. The writer
/// thread owns it; a write to it may block for as long as it likes without blocking any thread
/// that logs.
///
/// ```no_run
/// let file = vigil::logging::LogFile::open("vigil.log", 64 << 20, 5)?;
/// vigil::logging::init_with(vigil::LogFormat::Text, true, Box::new(file)).unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn init_with(format: LogFormat, access_log: bool, sink: Box<dyn Write + Send>) -> Result<(), log::SetLoggerError> {
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let mut b = env_logger::Builder::new();
    b.parse_filters(if spec.trim().is_empty() { "info" } else { &spec });
    if !names_module(&spec, "may") {
        b.filter_module("may", LevelFilter::Warn);
    }
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
    b.target(env_logger::Target::Pipe(Box::new(QueueWriter)));
    let inner = b.build();
    let max = inner.filter();
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_RECORDS);
    let queue = Queue { tx, format, dropped_total: AtomicU64::new(0), dropped_unreported: AtomicU64::new(0) };
    let logger: &'static VigilLogger = Box::leak(Box::new(VigilLogger { inner }));
    log::set_logger(logger)?;
    if QUEUE.set(queue).is_ok() {
        let spawned = std::thread::Builder::new().name("vigil-log".into()).spawn(move || write_loop(rx, sink));
        if let Err(e) = spawned {
            eprintln!("vigil: could not start the log writer thread ({e}); log records will be dropped");
        }
    }
    log::set_max_level(max);
    Ok(())
}

#[cfg(feature = "logger")]
/// Whether a `RUST_LOG` spec has a directive for `module` (or one of its submodules).
fn names_module(spec: &str, module: &str) -> bool {
    spec.split(',')
        .filter_map(|d| d.split('=').next())
        .map(str::trim)
        .any(|m| m == module || m.strip_prefix(module).is_some_and(|rest| rest.starts_with("::")))
}

/// Waits (at most about two seconds: the sink may be stalled) until every record logged so far
/// has been written. The binary calls it before exiting. Harmless without [`init`].
///
/// ```
/// vigil::logging::flush(); // no logger installed: returns at once
/// ```
pub fn flush() {
    let Some(q) = QUEUE.get() else { return };
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    if q.tx.send_timeout(Msg::Flush(ack_tx), FLUSH_WAIT).is_ok() {
        let _ = ack_rx.recv_timeout(FLUSH_WAIT);
    }
}

/// Log records dropped so far because the sink did not keep up (0 without [`init`]).
pub(crate) fn dropped_records() -> u64 {
    QUEUE.get().map_or(0, |q| q.dropped_total.load(Relaxed))
}

#[cfg(feature = "logger")]
struct VigilLogger {
    inner: env_logger::Logger,
}

#[cfg(feature = "logger")]
impl Log for VigilLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        // Formats on this thread, then hands the bytes to `QueueWriter` (never blocks).
        self.inner.log(record);
    }

    fn flush(&self) {}
}

/// `env_logger`'s target: each record's bytes arrive in one `write` and go on the queue.
struct QueueWriter;

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(q) = QUEUE.get() {
            match q.tx.try_send(Msg::Line(buf.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    q.dropped_total.fetch_add(1, Relaxed);
                    q.dropped_unreported.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread: takes what is queued, writes it in batches, and after a stall says how
/// many records were dropped.
fn write_loop(rx: Receiver<Msg>, mut sink: Box<dyn Write + Send>) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut acks: Vec<Sender<()>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(l) => batch.extend_from_slice(&l),
                Msg::Flush(ack) => acks.push(ack),
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let _ = sink.write_all(&batch).and_then(|_| sink.flush());
            batch.clear();
            if batch.capacity() > 4 * WRITE_BATCH {
                batch = Vec::with_capacity(WRITE_BATCH);
            }
        }
        if let Some(q) = QUEUE.get() {
            let dropped = q.dropped_unreported.swap(0, Relaxed);
            if dropped > 0 {
                let _ = sink.write_all(dropped_notice(q.format, dropped).as_bytes()).and_then(|_| sink.flush());
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// The line that reports records lost to a stalled sink.
fn dropped_notice(format: LogFormat, dropped: u64) -> String {
    let msg = format!(
        "{dropped} log records dropped: the log sink was not accepting writes and {QUEUE_RECORDS} were already waiting"
    );
    let ts = now_rfc3339();
    match format {
        LogFormat::Text => format!("[{ts} WARN  vigil::logging] {msg}\n"),
        LogFormat::Json => {
            let mut out = String::with_capacity(200);
            out.push_str("{\"ts\":");
            push_json_str(&mut out, &ts);
            out.push_str(",\"level\":\"WARN\",\"target\":\"vigil::logging\",\"msg\":");
            push_json_str(&mut out, &msg);
            let _ = writeln!(out, ",\"event\":\"log_dropped\",\"dropped\":{dropped}}}");
            out
        }
    }
}

/// A log file that rotates by size (`--log-file`, `--log-file-max-size`, `--log-file-keep`).
///
/// Lines are appended to `path`; before a write would take the file past `max_size` bytes, it is
/// closed and renamed `path.1` (an older `path.1` becomes `path.2`, and so on; the oldest beyond
/// `keep` is deleted) and a new `path` is started. A rotation happens only between whole lines
/// (one line longer than `max_size` gets a file of its own). `max_size` 0: never rotate.
///
/// Why rotate by size, in the process: it works the same on Windows, which has no `logrotate`
/// and no SIGHUP to ask for a reopen (and vigil's SIGHUP already means "drain"). On Linux,
/// `logrotate` with `copytruncate` works too: the file is opened in append mode, and its size is
/// re-read before a rotation is decided, so an outside truncation is noticed.
///
/// If a rotation fails (a backup name held open by another program on Windows, a permission),
/// nothing is lost: writing goes on in the current file, one line there says why, and the
/// rotation is tried again after `max_size / 8` more bytes.
///
/// ```
/// use std::io::Write;
/// let dir = std::env::temp_dir().join(format!("vigil-logfile-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("app.log");
/// let mut log = vigil::logging::LogFile::open(&path, 64, 2).unwrap();
/// for i in 0..10 {
///     writeln!(log, "line {i:02} of the log, long enough").unwrap();
/// }
/// assert!(dir.join("app.log.1").exists() && dir.join("app.log.2").exists());
/// assert!(!dir.join("app.log.3").exists());
/// assert!(std::fs::read_to_string(&path).unwrap().ends_with("line 09 of the log, long enough\n"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct LogFile {
    path: std::path::PathBuf,
    max_size: u64,
    keep: usize,
    file: Option<std::fs::File>,
    /// Bytes in the current file, as far as this writer knows.
    written: u64,
    /// After a failed rotation, no new attempt before the file holds this many bytes.
    retry_at: u64,
}

impl LogFile {
    /// Opens (creates, or appends to) `path`. Fails if the file can't be opened for writing:
    /// a missing directory, no permission.
    pub fn open(path: impl AsRef<std::path::Path>, max_size: u64, keep: usize) -> std::io::Result<LogFile> {
        let path = path.as_ref().to_path_buf();
        let file = Self::open_file(&path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile { path, max_size, keep: keep.max(1), file: Some(file), written, retry_at: 0 })
    }

    fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().create(true).append(true).open(path)
    }

    /// The path of backup `n` (`vigil.log.1`).
    fn backup(&self, n: usize) -> std::path::PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        name.into()
    }

    /// Closes the file, shifts the backups, starts a new file.
    fn rotate(&mut self) -> std::io::Result<()> {
        // Windows can't rename a file that is open without FILE_SHARE_DELETE: close it first.
        self.file = None;
        let shifted = (|| {
            let oldest = self.backup(self.keep);
            if oldest.exists() {
                std::fs::remove_file(&oldest)?;
            }
            for n in (1..self.keep).rev() {
                let from = self.backup(n);
                if from.exists() {
                    std::fs::rename(&from, self.backup(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.backup(1))
        })();
        // Whatever happened, keep a file open: the current one if it could not be moved.
        let file = Self::open_file(&self.path)?;
        self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        shifted
    }

    /// Rotates if writing `len` more bytes would pass the size limit. A failure is written into
    /// the file (it is the log's own sink: there is nowhere else to say it).
    fn rotate_if_due(&mut self, len: usize) -> std::io::Result<()> {
        if self.max_size == 0 || self.written == 0 || self.written + len as u64 <= self.max_size {
            return Ok(());
        }
        // Someone may have truncated the file (logrotate's copytruncate): trust its size.
        if let Some(f) = &self.file {
            self.written = f.metadata().map(|m| m.len()).unwrap_or(self.written);
        }
        if self.written == 0 || self.written + len as u64 <= self.max_size {
            return Ok(());
        }
        if let Err(e) = self.rotate() {
            let note = format!(
                "[{} WARN  vigil::logging] could not rotate {} ({e}); writing on in it, next try after {} more bytes\n",
                now_rfc3339(),
                self.path.display(),
                (self.max_size / 8).max(1)
            );
            self.retry_at = self.written + (self.max_size / 8).max(1);
            self.write_raw(note.as_bytes())?;
        } else {
            self.retry_at = 0;
        }
        Ok(())
    }

    fn write_raw(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(Self::open_file(&self.path)?),
        };
        file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

impl Write for LogFile {
    /// Writes whole lines: those that still fit under the size limit, then (rotating first) the
    /// rest, so a rotation never splits a line.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.max_size.saturating_sub(self.written);
        if self.max_size > 0 && buf.len() as u64 > room && self.written >= self.retry_at {
            let fits = &buf[..buf.len().min(room as usize)];
            if let Some(nl) = fits.iter().rposition(|&b| b == b'\n') {
                self.write_raw(&buf[..=nl])?;
                return Ok(nl + 1);
            }
            // Not one more line fits: start a new file first (an empty file keeps a line longer
            // than the limit: it gets a file of its own).
            let line = buf.iter().position(|&b| b == b'\n').map_or(buf.len(), |nl| nl + 1);
            self.rotate_if_due(line)?;
            self.write_raw(&buf[..line])?;
            return Ok(line);
        }
        self.write_raw(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
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
        if is_null(&value) {
            self.out.push_str("null");
        } else if let Some(b) = value.to_bool() {
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

/// Whether a key-value's value is "none" (an `Option` that is `None`): JSON `null`.
fn is_null(value: &Value<'_>) -> bool {
    struct Null(bool);
    impl<'v> log::kv::VisitValue<'v> for Null {
        fn visit_any(&mut self, _: Value<'_>) -> Result<(), log::kv::Error> {
            Ok(())
        }
        fn visit_null(&mut self) -> Result<(), log::kv::Error> {
            self.0 = true;
            Ok(())
        }
    }
    let mut n = Null(false);
    let _ = value.visit(&mut n);
    n.0
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

    /// A fresh directory for one test (removed by the test when it passes).
    fn temp_dir(test: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn log_file_rotates_by_size_between_whole_lines_and_keeps_n_backups() {
        let dir = temp_dir("logfile-rotate");
        let path = dir.join("vigil.log");
        let mut log = LogFile::open(&path, 200, 2).unwrap();
        let lines: Vec<String> = (0..40).map(|i| format!("line {i:03} xxxxxxxxxx\n")).collect(); // 20 bytes
                                                                                                 // In batches of 7 lines, as the writer thread hands them over.
        for batch in lines.chunks(7) {
            log.write_all(batch.concat().as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let files = [dir.join("vigil.log.2"), dir.join("vigil.log.1"), path.clone()];
        assert!(!dir.join("vigil.log.3").exists(), "only 2 backups are kept");
        for f in &files {
            let text = read(f);
            assert!(!text.is_empty() && text.len() <= 200, "{}: {} bytes", f.display(), text.len());
            assert!(text.ends_with('\n') && text.lines().all(|l| l.len() == 19), "{} split a line", f.display());
        }
        // Oldest to newest, they are the last lines written, in order, none missing.
        let kept: String = files.iter().map(|f| read(f)).collect();
        assert!(lines.concat().ends_with(&kept), "{kept}");
        assert_eq!(kept.len(), 3 * 200, "every file filled to the limit before rotating");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_file_gives_a_line_longer_than_the_limit_a_file_of_its_own() {
        let dir = temp_dir("logfile-long");
        let path = dir.join("v.log");
        let mut log = LogFile::open(&path, 50, 3).unwrap();
        let long = format!("{}\n", "L".repeat(119));
        for chunk in ["short one\n", &long, "short two\n"] {
            log.write_all(chunk.as_bytes()).unwrap();
        }
        assert_eq!(read(&dir.join("v.log.2")), "short one\n");
        assert_eq!(read(&dir.join("v.log.1")), long);
        assert_eq!(read(&path), "short two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_file_appends_on_reopen_and_notices_an_outside_truncation() {
        let dir = temp_dir("logfile-reopen");
        let path = dir.join("v.log");
        LogFile::open(&path, 200, 1)
            .unwrap()
            .write_all(&[b'a'; 149].iter().chain(b"\n").copied().collect::<Vec<u8>>())
            .unwrap();
        // Reopened (a restart): the 150 bytes already there count toward the limit.
        let mut log = LogFile::open(&path, 200, 1).unwrap();
        log.write_all(format!("{}\n", "b".repeat(99)).as_bytes()).unwrap();
        assert_eq!(read(&dir.join("v.log.1")).len(), 150, "rotated before the write that would pass 200");
        assert_eq!(read(&path).len(), 100);
        // logrotate's copytruncate empties the file behind the writer's back: no early rotation.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        log.write_all(format!("{}\n", "c".repeat(149)).as_bytes()).unwrap();
        assert_eq!(read(&path).len(), 150, "appended to the truncated file");
        assert_eq!(read(&dir.join("v.log.1")).len(), 150, "no rotation happened");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_file_that_cannot_rotate_loses_nothing_and_says_why() {
        let dir = temp_dir("logfile-stuck");
        let path = dir.join("v.log");
        // The backup name is taken by a non-empty directory: neither removable nor a rename target.
        std::fs::create_dir_all(dir.join("v.log.1").join("x")).unwrap();
        let mut log = LogFile::open(&path, 100, 1).unwrap();
        let lines: Vec<String> = (0..30).map(|i| format!("entry {i:02} .........\n")).collect(); // 19 bytes
        for l in &lines {
            log.write_all(l.as_bytes()).unwrap();
        }
        let text = read(&path);
        let entries: Vec<&str> = text.lines().filter(|l| l.starts_with("entry")).collect();
        assert_eq!(entries.len(), 30, "every line kept in the current file: {text}");
        let notes = text.lines().filter(|l| l.contains("could not rotate")).count();
        // Tried once at the limit, then again every 100/8 = 12 bytes past the last try (~every line).
        assert!(notes >= 2, "the failure is noted, and retried: {text}");
        // Once the obstacle is gone, the next try succeeds.
        std::fs::remove_dir_all(dir.join("v.log.1")).unwrap();
        for l in &lines[..5] {
            log.write_all(l.as_bytes()).unwrap();
        }
        assert!(read(&dir.join("v.log.1")).contains("entry 29"), "rotated once it could");
        assert!(read(&path).len() <= 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_file_in_a_missing_directory_is_an_error_at_open() {
        let dir = temp_dir("logfile-missing");
        let err = LogFile::open(dir.join("no/such/dir/v.log"), 0, 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rust_log_directives_for_a_module_are_recognised() {
        assert!(names_module("info,may=debug", "may"));
        assert!(names_module("may::net=trace", "may"));
        assert!(names_module(" may ", "may"));
        assert!(!names_module("info", "may"));
        assert!(!names_module("mayfly=debug,vigil=info", "may"));
    }

    #[test]
    fn dropped_notice_says_how_many_in_either_format() {
        assert!(dropped_notice(LogFormat::Text, 7).contains("] 7 log records dropped"));
        let j = dropped_notice(LogFormat::Json, 7);
        let v: serde_json::Value = serde_json::from_str(j.trim_end()).unwrap();
        assert_eq!((v["event"].as_str(), v["dropped"].as_u64()), (Some("log_dropped"), Some(7)));
        assert!(j.ends_with('\n'));
    }

    #[test]
    fn json_line_has_the_stable_keys_first_then_typed_fields() {
        let mut out = String::new();
        let none: Option<f64> = None;
        let kvs: [(&str, Value); 6] = [
            ("id", Value::from("abc")),
            ("elapsed", Value::from(1.5f64)),
            ("thread", Value::from(3u32)),
            ("msg", Value::from("not allowed to replace msg")),
            ("ok", Value::from(true)),
            ("budget", log::kv::ToValue::to_value(&none)),
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
             \"msg\":\"say \\\"hi\\\"\\n\",\"id\":\"abc\",\"elapsed\":1.5,\"thread\":3,\"ok\":true,\"budget\":null}\n"
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

    /// For a summary line once the burst is over: `Some(n)` if `n > 0` occurrences were held
    /// back and the last line let through is a second old or more (the summary then counts as
    /// that second's line). `None` otherwise.
    pub(crate) fn summary(&self, now_ns: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.suppressed.load(Relaxed) == 0 {
            return None;
        }
        let last = self.last_ns.load(Relaxed);
        let due = last == u64::MAX || now_ns.saturating_sub(last) >= 1_000_000_000;
        if due && self.last_ns.compare_exchange(last, now_ns, Relaxed, Relaxed).is_ok() {
            Some(self.suppressed.swap(0, Relaxed)).filter(|&n| n > 0)
        } else {
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

    #[test]
    fn a_summary_counts_what_a_burst_held_back_once_it_is_a_second_old() {
        let l = OncePerSecond::new();
        assert_eq!(l.summary(1), None, "nothing held back");
        assert_eq!(l.allow(10), Some(0));
        for t in 11..20 {
            assert_eq!(l.allow(t), None);
        }
        assert_eq!(l.summary(500_000_000), None, "not a second yet");
        assert_eq!(l.summary(1_000_000_010), Some(9));
        assert_eq!(l.summary(3_000_000_000), None, "said once");
        assert_eq!(l.allow(1_500_000_000), None, "the summary was that second's line");
    }
}
