//! The access log: one line per response the server sends, whoever produced it (the handler,
//! the router, the parser, a read timeout, the watchdog, the drain, overload), and one for a
//! request whose client went away before its answer (status 499, nothing sent). Target
//! [`ACCESS_TARGET`], level `info`, through the logger's non-blocking queue.
//!
//! Building a line costs a few allocations; with `--access-log` off it costs one branch per
//! response ([`enabled`]), and the formatting sits in its own frame (`#[inline(never)]`) so
//! the connection coroutine's stack stays shallow (ARCHITECTURE.md, memory of an idle
//! connection).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use log::info;

use crate::logging::ACCESS_TARGET;
use crate::runtime::refusal::Source;
use crate::runtime::state::WorkerId;
use crate::settings::Settings;

/// Whether access lines are wanted: `--access-log` is on and the logger takes the target.
#[inline]
pub(crate) fn enabled(settings: &Settings) -> bool {
    settings.access_log && log::log_enabled!(target: ACCESS_TARGET, log::Level::Info)
}

/// One access line. Fields the server does not know (a request whose head did not parse, a
/// connection refused before it was read) are `-`; `budget` is JSON `null` without a route.
pub(crate) struct AccessLine<'a> {
    pub peer: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration: Duration,
    /// Time used over the route's deadline.
    pub budget: Option<f64>,
    pub id: &'a str,
    pub worker: Option<WorkerId>,
    pub source: Source,
}

impl AccessLine<'_> {
    #[inline(never)]
    pub fn log(&self) {
        let worker = self.worker.map_or(Cow::Borrowed("-"), |w| Cow::Owned(w.to_string()));
        let budget_text = self.budget.map_or(Cow::Borrowed("-"), |b| Cow::Owned(format!("{b:.3}")));
        info!(
            target: ACCESS_TARGET,
            event = "access", peer:% = self.peer, method = self.method, path = self.path, route = self.route,
            status = self.status, duration = self.duration.as_secs_f64(), budget = self.budget, id = self.id,
            worker = &*worker, source = self.source.label();
            "{} {} {} route={} status={} duration={:.6}s budget={} id={} thread={} source={}",
            self.peer,
            self.method,
            self.path,
            self.route,
            self.status,
            self.duration.as_secs_f64(),
            budget_text,
            self.id,
            worker,
            self.source.label(),
        );
    }
}

/// The method and target of a request line that may not parse, for the access line of its
/// refusal (a scan or a smuggling attempt should leave a trace): the first two words of the
/// first non-empty line, with anything but visible ASCII escaped (`\xNN`) and each cut at 200
/// bytes. `("-", "-")` when there is no such word.
pub(crate) fn guess_request_line(buf: &[u8]) -> (Cow<'_, str>, Cow<'_, str>) {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (method, target) = (words.next(), words.next());
    (printable(method), printable(target))
}

/// Whether a request line that may not parse is a `HEAD` (its refusal then has no body).
pub(crate) fn is_head_request(buf: &[u8]) -> bool {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    buf[start..].starts_with(b"HEAD ")
}

fn printable(word: Option<&[u8]>) -> Cow<'_, str> {
    const MAX: usize = 200;
    let Some(w) = word else { return Cow::Borrowed("-") };
    let w = &w[..w.len().min(MAX)];
    match std::str::from_utf8(w) {
        Ok(s) if w.iter().all(|b| b.is_ascii_graphic()) => Cow::Borrowed(s),
        _ => {
            let mut out = String::with_capacity(w.len() + 8);
            for &b in w {
                if b.is_ascii_graphic() {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_request_line_is_logged_escaped_and_cut() {
        let (m, t) = guess_request_line(b"\r\nGET /a\x01b HTTP/1.1\r\nHost: x\r\n");
        assert_eq!((&*m, &*t), ("GET", "/a\\x01b"));
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(5000));
        assert_eq!(guess_request_line(long.as_bytes()).1.len(), 200);
        let (m, t) = guess_request_line(b"");
        assert_eq!((&*m, &*t), ("-", "-"));
        assert!(is_head_request(b"\r\nHEAD / HTTP/1.1\r\nbad"));
        assert!(!is_head_request(b"HEADER / HTTP/1.1\r\n"));
    }
}
