//! Memory scenarios: what holding requests and responses open costs the server (its RSS), and
//! whether it still serves meanwhile.
//!
//! - `stalled-uploads N`: N uploads that stop one byte short of their `Content-Length` (the
//!   server holds their bodies until `--body-timeout`);
//! - `unread-responses N`: N clients that ask for the URL (a big body: `/bytes?n=…`) and never
//!   read the answer past its head (the server holds it until `--write-timeout`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Conn, Stats, Target};

/// How one stalled upload ended up while the others were held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upload {
    /// All but the last byte sent, no answer: the server holds the body.
    Held,
    /// The server answered before the body was complete (e.g. 503 past its memory budget).
    Answered(u16),
    /// The connection was closed or reset without an answer.
    Closed,
}

/// How the server's resident memory is read: now, and its peak so far (`VmHWM`, when the
/// server's pid is known).
pub struct Rss<'a> {
    pub now: &'a dyn Fn() -> Option<u64>,
    pub peak: &'a dyn Fn() -> Option<u64>,
}

fn mb(b: Option<u64>) -> String {
    b.map_or("?".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

/// Waits until `rss` has not grown by more than 1 MB for a second (or `limit` passes).
fn settled_rss(rss: &dyn Fn() -> Option<u64>, limit: Duration) -> Option<u64> {
    let end = Instant::now() + limit;
    let mut last = rss()?;
    let mut steady_since = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss()?;
        if now > last + 1_000_000 {
            steady_since = Instant::now();
        }
        last = last.max(now);
        if steady_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    Some(last)
}

/// Times `n` GETs of `/` on fresh connections.
fn probe_root(target: &Target, n: usize, timeout: Duration) -> Stats {
    let t = target.with_path("/");
    let req = t.get_request();
    let mut st = Stats::default();
    for _ in 0..n {
        let t0 = Instant::now();
        match Conn::connect(t.addr, timeout) {
            Ok(mut c) => {
                st.connects += 1;
                let o = c.exchange(&req, false);
                st.record(o, t0.elapsed());
            }
            Err(_) => st.connect_errors += 1,
        }
    }
    st
}

/// The status of an answer waiting on `s`, if one comes within `wait`.
fn answer_within(s: &mut TcpStream, wait: Duration) -> Upload {
    let _ = s.set_read_timeout(Some(wait));
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Upload::Closed,
        Ok(n) => {
            let line = String::from_utf8_lossy(&buf[..n]);
            line.split(' ').nth(1).and_then(|c| c.parse().ok()).map_or(Upload::Closed, Upload::Answered)
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Upload::Held,
        Err(_) => Upload::Closed,
    }
}

/// `stalled-uploads N`: N connections each POST to the URL's path a body of `size` bytes and
/// send all but its last byte; the server's RSS is read once they are all held (or answered),
/// and `/` is timed on fresh connections meanwhile.
pub fn stalled_uploads(
    target: &Target,
    n: usize,
    size: u64,
    timeout: Duration,
    rss: &Rss<'_>,
) -> (String, serde_json::Value) {
    let rss_before = (rss.now)();
    let release = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..n)
        .map(|_| {
            let (release, done) = (Arc::clone(&release), Arc::clone(&done));
            let (addr, head) = (target.addr, format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\n\r\n",
                target.path, target.host
            ));
            std::thread::spawn(move || {
                (|| {
                    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else { return Upload::Closed };
                    let _ = s.set_write_timeout(Some(timeout));
                    if s.write_all(head.as_bytes()).is_err() {
                        return Upload::Closed;
                    }
                    let piece = vec![b'u'; 64 * 1024];
                    let mut left = size.saturating_sub(1);
                    while left > 0 {
                        let k = left.min(piece.len() as u64) as usize;
                        if s.write_all(&piece[..k]).is_err() {
                            return answer_within(&mut s, Duration::from_secs(1));
                        }
                        left -= k as u64;
                    }
                    let o = answer_within(&mut s, Duration::from_millis(300));
                    done.fetch_add(1, SeqCst);
                    while !release.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    // Held until the measurement, or answered meanwhile?
                    if o == Upload::Held {
                        return answer_within(&mut s, Duration::from_millis(10));
                    }
                    o
                })()
            })
        })
        .collect();
    // Wait until every upload is held (`done`) or ended (its thread finished).
    let end = Instant::now() + timeout;
    while done.load(SeqCst) + workers.iter().filter(|w| w.is_finished()).count() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent_in = t0.elapsed();
    let rss_with = settled_rss(rss.now, Duration::from_secs(10));
    let peak = (rss.peak)();
    let probes = probe_root(target, 20, timeout);
    // Let every upload see whether it was answered meanwhile, then close them all.
    release.store(true, SeqCst);
    let outcomes: Vec<Upload> = workers.into_iter().map(|w| w.join().unwrap_or(Upload::Closed)).collect();
    let held = outcomes.iter().filter(|&&o| o == Upload::Held).count();
    let closed = outcomes.iter().filter(|&&o| o == Upload::Closed).count();
    let mut answered: Vec<(u16, usize)> = Vec::new();
    for o in &outcomes {
        if let Upload::Answered(s) = o {
            match answered.iter_mut().find(|(k, _)| k == s) {
                Some((_, c)) => *c += 1,
                None => answered.push((*s, 1)),
            }
        }
    }
    answered.sort();
    let mut text = format!(
        "stalled-uploads {n} against http://{}{}: bodies of {size} bytes, each stopped one byte short (sent in {:.1}s)\n",
        target.addr,
        target.path,
        sent_in.as_secs_f64()
    );
    text += &format!(
        "  uploads held by the server: {held}; answered before their end: {}; closed without an answer: {closed}\n",
        if answered.is_empty() {
            "none".to_string()
        } else {
            answered.iter().map(|(s, c)| format!("{c} × {s}")).collect::<Vec<_>>().join(", ")
        }
    );
    text += &format!(
        "  server RSS: {} before, {} with the uploads held (peak so far {})\n",
        mb(rss_before),
        mb(rss_with),
        mb(peak)
    );
    text += &probes.text("GET / on fresh connections meanwhile", Duration::ZERO);
    let json = json!({
        "uploads": n,
        "body_bytes": size,
        "held": held,
        "answered": answered.iter().map(|(s, c)| json!({"status": s, "count": c})).collect::<Vec<_>>(),
        "closed": closed,
        "server_rss_before_bytes": rss_before,
        "server_rss_held_bytes": rss_with,
        "server_rss_peak_bytes": peak,
        "probes": probes.json(Duration::ZERO),
    });
    (text, json)
}

/// `unread-responses N`: N connections GET the URL and read nothing past the answer's head; the
/// server's RSS is read once it has stopped growing, and compared with the bodies' size.
pub fn unread_responses(target: &Target, n: usize, timeout: Duration, rss: &Rss<'_>) -> (String, serde_json::Value) {
    let rss_before = (rss.now)();
    let req = target.get_request();
    let mut held = Vec::new();
    let mut body_len: Option<u64> = None;
    let mut statuses = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&target.addr, timeout) else { continue };
        let _ = s.set_read_timeout(Some(timeout));
        if s.write_all(&req).is_err() {
            continue;
        }
        // Read the head only, a byte at a time, so that nothing of the body is taken.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head).to_string();
        statuses.push(text.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0));
        if let Some(len) = text
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
        {
            body_len = Some(len);
        }
        held.push(s);
    }
    let rss_with = settled_rss(rss.now, Duration::from_secs(20));
    let peak = (rss.peak)();
    let probes = probe_root(target, 20, timeout);
    let per = match (rss_before, rss_with) {
        (Some(b), Some(a)) if !held.is_empty() => Some((a as f64 - b as f64) / held.len() as f64),
        _ => None,
    };
    let ratio = per.zip(body_len).map(|(p, l)| p / l as f64);
    // The peak counts what was held for a moment: a body and a copy of it, say.
    let peak_per = match (rss_before, peak) {
        (Some(b), Some(p)) if !held.is_empty() => Some((p as f64 - b as f64) / held.len() as f64),
        _ => None,
    };
    let peak_ratio = peak_per.zip(body_len).map(|(p, l)| p / l as f64);
    let mut text = format!(
        "unread-responses {n} against http://{}{}: {} answers held unread after their head (statuses {:?}), body {} bytes\n",
        target.addr,
        target.path,
        held.len(),
        statuses,
        body_len.map_or("?".to_string(), |l| l.to_string())
    );
    text += &format!(
        "  server RSS: {} before, {} with them held: {} per unread answer{}\n",
        mb(rss_before),
        mb(rss_with),
        per.map_or("?".to_string(), |p| format!("{:.1} MB", p / 1e6)),
        ratio.map(|r| format!(" = {r:.3} × the body")).unwrap_or_default()
    );
    text += &format!(
        "  server peak RSS (VmHWM): {}: {} per unread answer{}\n",
        mb(peak),
        peak_per.map_or("?".to_string(), |p| format!("{:.1} MB", p / 1e6)),
        peak_ratio.map(|r| format!(" = {r:.3} × the body")).unwrap_or_default()
    );
    text += &probes.text("GET / on fresh connections meanwhile", Duration::ZERO);
    drop(held);
    let json = json!({
        "unread": n,
        "body_bytes": body_len,
        "statuses": statuses,
        "server_rss_before_bytes": rss_before,
        "server_rss_held_bytes": rss_with,
        "rss_per_unread_bytes": per,
        "rss_per_unread_over_body": ratio,
        "server_rss_peak_bytes": peak,
        "peak_rss_per_unread_over_body": peak_ratio,
        "probes": probes.json(Duration::ZERO),
    });
    (text, json)
}
