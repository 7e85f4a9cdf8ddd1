//! The admin listener, on its own address: the dashboard (`/`), Prometheus metrics (`/metrics`),
//! liveness (`/healthz`), readiness (`/readyz`), the in-flight table (`/requests`), recent
//! timeouts (`/timeouts`) and everything the dashboard polls (`/status`).
//!
//! It runs on one OS thread of its own ("vigil-admin"), not on the coroutine runtime, so it
//! keeps answering while the public side is saturated or every worker is stuck. That thread
//! waits on the listener and on every admin connection at once (`poll`; `WSAPoll` on Windows),
//! reads requests as their bytes arrive, answers them (every endpoint is read-only and renders
//! the components' counts without waiting on them), and writes without blocking: an idle or
//! slow admin connection costs a few hundred bytes, never a thread.
//!
//! Bounded like the public side: at most `--admin-max-connections` connections (one more closes
//! the connection that has been idle longest, as nginx reuses keep-alive connections when it
//! runs out, so a scraper always gets in); each has `--admin-timeout` for a whole exchange (idle
//! wait, request, answer), then it is closed (with a 408 if a request was under way); a request
//! head larger than [`MAX_HEAD`] gets 431. Accepting backs off when descriptors run out, like
//! the public listener.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error};
use serde_json::json;

use crate::http::parse::{parse_head, Limits};
use crate::http::response::{encode, Framing, Response};
use crate::logging::OncePerSecond;
use crate::platform::PollSet;
use crate::runtime::clock;
use crate::server::lifecycle::Phase;
use crate::server::listener::AcceptBackoff;
use crate::server::shared::Shared;

/// Largest admin request head in bytes; larger gets 431.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// How long a closing connection's unread bytes are drained (so its last answer is not lost to
/// a reset).
const LINGER: Duration = Duration::from_millis(500);
/// The loop wakes at least this often (to notice the server stopped).
const WAKE: Duration = Duration::from_millis(200);

/// Starts the admin thread on `listener`.
pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("vigil-admin".into()).spawn(move || AdminLoop::new(listener, shared).run())?;
    Ok(())
}

/// One admin connection.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet answered (at most [`MAX_HEAD`]).
    buf: Vec<u8>,
    /// The answer being written, and how much of it is out.
    out: Vec<u8>,
    written: usize,
    /// Close once `out` is written.
    close_after: bool,
    /// Write side shut, draining the client's leftovers until EOF or the deadline.
    closing: bool,
    /// When this exchange (idle wait, request, answer) must be over.
    deadline: Instant,
    /// Last time bytes moved either way (the longest idle is closed first at the cap).
    last_active: Instant,
}

/// What to do with a connection after servicing it.
enum Next {
    Keep,
    Close,
}

struct AdminLoop {
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Vec<Conn>,
    poll: PollSet,
    backoff: AcceptBackoff,
    /// Accepting resumes at this time (after an accept error).
    paused_until: Option<Instant>,
    evict_log: OncePerSecond,
}

impl AdminLoop {
    fn new(listener: TcpListener, shared: Arc<Shared>) -> AdminLoop {
        AdminLoop {
            listener,
            shared,
            conns: Vec::new(),
            poll: PollSet::default(),
            backoff: AcceptBackoff::new("admin"),
            paused_until: None,
            evict_log: OncePerSecond::new(),
        }
    }

    fn run(mut self) {
        while self.shared.lifecycle.phase() != Phase::Stopped {
            let now = Instant::now();
            self.expire(now);
            if self.paused_until.is_some_and(|t| now >= t) {
                self.paused_until = None;
            }
            self.poll.clear();
            let listening = self.paused_until.is_none().then(|| self.poll.push(&self.listener, false));
            let first = self.poll_conns();
            let mut wake = now + WAKE;
            for t in self.conns.iter().map(|c| c.deadline).chain(self.paused_until) {
                wake = wake.min(t);
            }
            if let Err(e) = self.poll.wait(wake.saturating_duration_since(now)) {
                error!(target: "vigil::admin", "admin listener: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // In reverse: a closed connection is swapped with the last, already serviced.
            for i in (0..self.conns.len()).rev() {
                if self.poll.ready(first + i) {
                    if let Next::Close = self.service(i) {
                        self.conns.swap_remove(i);
                    }
                }
            }
            if listening.is_some_and(|l| self.poll.ready(l)) {
                self.accept_all();
            }
        }
    }

    /// Adds every connection to the poll set; returns the index of the first.
    fn poll_conns(&mut self) -> usize {
        let first = usize::from(self.paused_until.is_none());
        for c in &self.conns {
            self.poll.push(&c.stream, c.written < c.out.len());
        }
        first
    }

    /// Closes connections whose exchange ran past `--admin-timeout` (a 408 first, best effort,
    /// if a request was under way) and closing ones past their linger.
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            if now < c.deadline {
                i += 1;
                continue;
            }
            if !c.closing && c.out.is_empty() && !c.buf.is_empty() {
                let resp = Response::error(408, "admin request not received in time (--admin-timeout)");
                let mut out = Vec::with_capacity(256);
                encode(&resp, &Framing { head_only: false, close: true, http10: false, request_id: None }, &mut out);
                let _ = c.stream.write(&out);
            }
            let _ = c.stream.shutdown(Shutdown::Both);
            self.conns.swap_remove(i);
        }
    }

    /// Accepts every waiting connection (non-blocking); past the cap, the longest-idle
    /// connection makes room.
    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => {
                    self.backoff.succeeded();
                    s
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if let Some(delay) = self.backoff.failed(&e, clock::now_ns()) {
                        self.paused_until = Some(Instant::now() + delay);
                    }
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if self.conns.len() >= self.shared.settings.admin_max_connections && !self.evict_one() {
                // Every connection is mid-answer: refuse this one.
                let _ = (&stream)
                    .write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let now = Instant::now();
            self.conns.push(Conn {
                stream,
                buf: Vec::new(),
                out: Vec::new(),
                written: 0,
                close_after: false,
                closing: false,
                deadline: now + self.shared.settings.admin_timeout,
                last_active: now,
            });
        }
    }

    /// Closes the connection idle longest (not one being answered); `false` if there is none.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.out.is_empty())
            .min_by_key(|(_, c)| c.last_active)
            .map(|(i, _)| i);
        let Some(i) = victim else { return false };
        let c = self.conns.swap_remove(i);
        let _ = c.stream.shutdown(Shutdown::Both);
        if let Some(held) = self.evict_log.allow(clock::now_ns()) {
            let max = self.shared.settings.admin_max_connections;
            debug!(
                target: "vigil::admin",
                "admin connections at --admin-max-connections ({max}): closed the one idle longest to make room ({held} more since the last line)"
            );
        }
        true
    }

    /// Reads, answers or writes for connection `i`, whichever it is ready for.
    fn service(&mut self, i: usize) -> Next {
        let c = &mut self.conns[i];
        if c.closing {
            return drain_leftovers(c);
        }
        if c.written < c.out.len() {
            return match self.write_out(i) {
                Written::Pending => Next::Keep,
                Written::Failed => Next::Close,
                Written::Done => self.answer_buffered(i),
            };
        }
        let mut chunk = [0u8; 4096];
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    c.last_active = Instant::now();
                    let room = (MAX_HEAD + 1).saturating_sub(c.buf.len());
                    c.buf.extend_from_slice(&chunk[..n.min(room)]);
                    if c.buf.len() > MAX_HEAD {
                        break; // the parser answers 431
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
        }
        self.answer_buffered(i)
    }

    /// Answers the requests at the front of connection `i`'s buffer while they are complete
    /// and their answers go out at once (pipelining).
    fn answer_buffered(&mut self, i: usize) -> Next {
        let limits = Limits { head_bytes: MAX_HEAD, ..Limits::default() };
        loop {
            let c = &mut self.conns[i];
            if c.closing {
                return Next::Keep;
            }
            match parse_head(&c.buf, &limits) {
                Ok(None) => return Next::Keep,
                Ok(Some(head)) => {
                    let method = String::from_utf8_lossy(head.method.get(&c.buf)).into_owned();
                    let path = String::from_utf8_lossy(head.path.get(&c.buf)).into_owned();
                    let close = !head.keep_alive || head.framing != crate::http::parse::Framing::None;
                    let http10 = head.version == crate::http::parse::Version::Http10;
                    c.buf.drain(..head.len);
                    let shared = &self.shared;
                    let resp = if method == "GET" || method == "HEAD" {
                        // An endpoint that panics (a bug) costs its answer, not the admin thread.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(&path, shared)))
                            .unwrap_or_else(|_| Response::error(500, "admin endpoint failed"))
                    } else {
                        Response::error(405, "method not allowed").with_header("Allow", "GET, HEAD")
                    };
                    debug!(target: "vigil::admin", "admin {method} {path} {}", resp.status());
                    let c = &mut self.conns[i];
                    c.out.reserve(resp.body().len() + 256);
                    let framing = Framing { head_only: method == "HEAD", close, http10, request_id: None };
                    encode(&resp, &framing, &mut c.out);
                    c.close_after = close;
                }
                Err(e) => {
                    let resp = Response::error(e.status(), e.message());
                    encode(
                        &resp,
                        &Framing { head_only: false, close: true, http10: false, request_id: None },
                        &mut c.out,
                    );
                    c.close_after = true;
                }
            }
            match self.write_out(i) {
                Written::Pending => return Next::Keep,
                Written::Failed => return Next::Close,
                Written::Done => {}
            }
        }
    }

    /// Writes what the socket takes of connection `i`'s answer. Once it is all out, closes
    /// the write side (if asked) or starts the next exchange.
    fn write_out(&mut self, i: usize) -> Written {
        let c = &mut self.conns[i];
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => return Written::Failed,
                Ok(n) => {
                    c.written += n;
                    c.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Written::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Written::Failed,
            }
        }
        c.out.clear();
        c.written = 0;
        if c.out.capacity() > 256 * 1024 {
            c.out = Vec::new();
        }
        if c.close_after {
            let _ = c.stream.shutdown(Shutdown::Write);
            c.closing = true;
            c.deadline = Instant::now() + LINGER;
        } else {
            c.deadline = Instant::now() + self.shared.settings.admin_timeout;
        }
        Written::Done
    }
}

/// How far an answer got.
enum Written {
    /// All of it is out.
    Done,
    /// The socket takes no more now: wait until it is writable.
    Pending,
    /// The connection failed.
    Failed,
}

/// A closing connection: reads and drops what the client still sends, until it closes.
fn drain_leftovers(c: &mut Conn) -> Next {
    let mut sink = [0u8; 4096];
    loop {
        match c.stream.read(&mut sink) {
            Ok(0) => return Next::Close,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Next::Close,
        }
    }
}

/// The dashboard page: one self-contained file (inline CSS and JS, no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

fn route(path: &str, shared: &Shared) -> Response {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/" => Response::text(DASHBOARD).with_header("Content-Type", "text/html; charset=utf-8"),
        "/metrics" => Response::text(shared.metrics.render(&shared.snapshot()))
            .with_header("Content-Type", prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
        "/healthz" => match shared.live() {
            Ok(()) => Response::text("ok\n"),
            Err(why) => Response::error(503, &why),
        },
        "/readyz" => match shared.ready() {
            Ok(()) => Response::text("ready\n"),
            Err(why) => Response::error(503, &why),
        },
        "/requests" => Response::json_str(requests_json(shared)),
        "/timeouts" => Response::json_str(serde_json::Value::Array(timeouts(shared)).to_string()),
        "/status" => Response::json_str(status(shared).to_string()),
        _ => Response::error(404, "not found (try /, /metrics, /healthz, /readyz, /requests, /timeouts, /status)"),
    }
    .with_header("Cache-Control", "no-store")
}

/// The in-flight table as JSON.
pub(crate) fn requests_json(shared: &Shared) -> String {
    serde_json::Value::Array(requests(shared)).to_string()
}

/// One row per request the watchdog tracks: from the moment it is read until its handler is gone,
/// so an abandoned thread's request stays listed (state `abandoned`) until that handler returns.
fn requests(shared: &Shared) -> Vec<serde_json::Value> {
    let now = clock::now_ns();
    let secs = clock::secs;
    let thread =
        |t: Option<crate::runtime::state::WorkerId>| t.map_or(serde_json::Value::Null, |t| json!(t.to_string()));
    shared
        .watchdog
        .requests()
        .iter()
        .map(|r| {
            let deadline = r.effective_deadline_ns();
            let worker = r.worker.load(Relaxed);
            let abandoned_cpu = match (r.state(), worker) {
                (crate::runtime::state::RequestState::Abandoned, Some(w)) => shared.pool.abandoned_cpu_of(w),
                _ => None,
            };
            json!({
                "id": r.req.id(),
                "method": r.req.method(),
                "path": r.req.path(),
                "route": shared.routes.label(Some(r.route)),
                "thread": thread(worker),
                "state": r.state().label(),
                "timeout_reason": r.timeout_reason().map(|t| t.label()),
                "answered": r.is_answered(),
                "elapsed": secs(now.saturating_sub(r.start_ns)),
                "deadline": secs(deadline.saturating_sub(r.start_ns)),
                "ceiling": secs(r.deadline_ns.saturating_sub(r.start_ns)),
                "stall_timeout": r.stall_ns().map_or(serde_json::Value::Null, |s| json!(secs(s))),
                "remaining": secs(deadline.saturating_sub(now)),
                "last_progress": secs(now.saturating_sub(r.last_progress_ns.load(Relaxed))),
                "stage": r.stage_string(),
                "abandoned_cpu": abandoned_cpu.map(|d| d.as_secs_f64()),
            })
        })
        .collect()
}

/// The recent timeouts (newest first), as the dashboard shows them.
fn timeouts(shared: &Shared) -> Vec<serde_json::Value> {
    shared
        .watchdog
        .recent_timeouts()
        .iter()
        .rev()
        .map(|t| {
            json!({
                "at": crate::logging::rfc3339_millis(t.at),
                "id": t.id,
                "method": t.method,
                "path": t.path,
                "route": t.route,
                "reason": t.reason.label(),
                "elapsed": t.elapsed,
                "deadline": t.deadline,
                "stage": t.stage,
                "thread": t.thread.map_or(serde_json::Value::Null, |t| json!(t.to_string())),
                "outcome": t.outcome.label(),
                "abandoned_cpu": t.abandoned_cpu.as_ref().and_then(|c| c.burnt()).map(|d| d.as_secs_f64()),
            })
        })
        .collect()
}

/// Everything the dashboard shows, in one document.
fn status(shared: &Shared) -> serde_json::Value {
    let m = &shared.metrics;
    let s = &shared.settings;
    let snap = shared.snapshot();
    let p = &snap.pool;
    let ready = shared.ready();
    let live = shared.live();
    json!({
        "live": live.is_ok(),
        "live_reason": live.err(),
        "ready": ready.is_ok(),
        "ready_reason": ready.err(),
        "draining": shared.lifecycle.is_draining() || shared.lifecycle.drain_requested(),
        "draining_for": shared.lifecycle.drain_started_ns().map(|t| clock::secs(clock::now_ns().saturating_sub(t))),
        "uptime": m.uptime_secs(),
        "pool": {
            "threads": p.live,
            "configured": p.target,
            "handler_threads": p.alive,
            "max_threads": p.max_threads,
            "at_ceiling": p.alive >= p.max_threads,
            "abandoned_cpu_seconds": p.abandoned_cpu.as_secs_f64(),
            "spawn_failures_total": p.spawn_failures_total,
            "ceiling_refusals_total": p.ceiling_refusals_total,
            "busy": p.busy,
            "cancelled_alive": p.detached,
            "abandoned_alive": p.abandoned_alive,
            "max_abandoned": s.effective_max_abandoned(),
            "abandoned_total": p.abandoned_total,
            "replaced_total": p.replaced_total,
            "retired_total": p.retired_total,
        },
        "queue": { "depth": p.queue_depth, "capacity": p.queue_capacity },
        "requests_in_flight": snap.requests_in_flight,
        "connections_open": snap.connections_open,
        "totals": {
            "timeouts": shared.watchdog.timeouts_total(),
            "cancellations_honored": snap.watchdog.cancellations_honored_total,
            "handler_panics": p.panics_total,
        },
        "settings": {
            "timeout": s.timeout.as_secs_f64(),
            "cancel_grace": s.cancel_grace.as_secs_f64(),
        },
        "requests": requests(shared),
        "timeouts": timeouts(shared),
    })
}
