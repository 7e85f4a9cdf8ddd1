//! The admin listener, on its own address: the dashboard (`/`), Prometheus metrics (`/metrics`),
//! liveness (`/healthz`), readiness (`/readyz`), the in-flight table (`/requests`), recent
//! timeouts (`/timeouts`) and everything the dashboard polls (`/status`).
//!
//! It runs on plain OS threads (one accept thread, one short-lived thread per admin
//! connection), not on the coroutine runtime, so it keeps answering even if the public side is
//! saturated. Every endpoint is read-only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error};
use serde_json::json;

use crate::parse::{parse_head, Limits};
use crate::response::{encode, Framing, Response};
use crate::server::Shared;
use crate::watchdog::{clock, state};

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) {
    std::thread::Builder::new()
        .name("vigil-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if shared.watchdog_stop.load(Acquire) {
                    break;
                }
                match stream {
                    Ok(s) => {
                        let shared = Arc::clone(&shared);
                        let _ = std::thread::Builder::new()
                            .name("vigil-admin-conn".into())
                            .spawn(move || serve(s, &shared));
                    }
                    Err(e) => {
                        error!("admin accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .expect("spawn admin thread");
}

fn serve(mut s: TcpStream, shared: &Shared) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 8192];
    let mut end = 0;
    loop {
        let head = loop {
            match parse_head(&buf[..end], &Limits::default()) {
                Ok(Some(h)) => break h,
                Ok(None) if end < buf.len() => match s.read(&mut buf[end..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => end += n,
                },
                _ => {
                    let mut out = Vec::new();
                    encode(
                        &Response::error(400, "bad request"),
                        &Framing { head_only: false, close: true, request_id: None },
                        &mut out,
                    );
                    let _ = s.write_all(&out);
                    return;
                }
            }
        };
        let method = String::from_utf8_lossy(head.method.get(&buf)).into_owned();
        let path = String::from_utf8_lossy(head.path.get(&buf)).into_owned();
        let resp = if method == "GET" || method == "HEAD" {
            route(&path, shared)
        } else {
            Response::error(405, "method not allowed").with_header("Allow", "GET, HEAD")
        };
        let close = !head.keep_alive || head.framing != crate::parse::Framing::None;
        let mut out = Vec::with_capacity(resp.body().len() + 256);
        encode(&resp, &Framing { head_only: method == "HEAD", close, request_id: None }, &mut out);
        if s.write_all(&out).is_err() || close {
            return;
        }
        buf.copy_within(head.len..end, 0);
        end -= head.len;
        debug!("admin {method} {path} {}", resp.status());
    }
}

/// The dashboard page: one self-contained file (inline CSS and JS, no external assets).
const DASHBOARD: &str = include_str!("dashboard.html");

fn route(path: &str, shared: &Shared) -> Response {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match path {
        "/" => Response::text(DASHBOARD).with_header("Content-Type", "text/html; charset=utf-8"),
        "/metrics" => Response::text(shared.metrics.render(shared.queue.depth()))
            .with_header("Content-Type", prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
        "/healthz" => match shared.live() {
            Ok(()) => Response::text("ok\n"),
            Err(why) => Response::error(503, &why),
        },
        "/readyz" => match shared.ready() {
            Ok(()) => Response::text("ready\n"),
            Err(why) => Response::error(503, &why),
        },
        "/requests" => Response::json(requests_json(shared)),
        "/timeouts" => Response::json(serde_json::Value::Array(timeouts(shared)).to_string()),
        "/status" => Response::json(status(shared).to_string()),
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
    let secs = |ns: u64| ns as f64 / 1e9;
    let list = shared.inflight.lock();
    list.iter()
        .filter_map(std::sync::Weak::upgrade)
        .filter(|r| r.state.load(Acquire) != state::DONE)
        .map(|r| {
            let deadline = r.effective_deadline_ns();
            let thread = r.thread.load(Relaxed);
            json!({
                "id": r.req.id(),
                "method": r.req.method(),
                "path": r.req.path(),
                "route": r.route_name(shared),
                "thread": if thread == 0 { serde_json::Value::Null } else { json!(format!("vigil-worker-{thread}")) },
                "state": state::name(r.state.load(Acquire)),
                "answered": r.is_answered(),
                "elapsed": secs(now.saturating_sub(r.start_ns)),
                "deadline": secs(deadline.saturating_sub(r.start_ns)),
                "ceiling": secs(r.deadline_ns.saturating_sub(r.start_ns)),
                "stall_timeout": if r.stall_ns == 0 { serde_json::Value::Null } else { json!(secs(r.stall_ns)) },
                "remaining": secs(deadline.saturating_sub(now)),
                "last_progress": secs(now.saturating_sub(r.last_progress_ns.load(Relaxed))),
                "stage": r.stage_string(),
            })
        })
        .collect()
}

/// The recent timeouts (newest first), as the dashboard shows them.
fn timeouts(shared: &Shared) -> Vec<serde_json::Value> {
    let q = shared.recent_timeouts.lock();
    q.iter()
        .rev()
        .map(|t| {
            let outcome = match (t.outcome, t.thread) {
                ("", 0) => "not_run",
                ("", _) => "pending",
                (o, _) => o,
            };
            json!({
                "at": crate::logging::rfc3339_millis(t.at),
                "id": t.id,
                "method": t.method,
                "path": t.path,
                "route": t.route,
                "reason": t.reason,
                "elapsed": t.elapsed,
                "deadline": t.deadline,
                "stage": t.stage,
                "thread": if t.thread == 0 { serde_json::Value::Null } else { json!(format!("vigil-worker-{}", t.thread)) },
                "outcome": outcome,
            })
        })
        .collect()
}

/// Everything the dashboard shows, in one document.
fn status(shared: &Shared) -> serde_json::Value {
    let m = &shared.metrics;
    let s = &shared.settings;
    let ready = shared.ready();
    let live = shared.live();
    json!({
        "live": live.is_ok(),
        "live_reason": live.err(),
        "ready": ready.is_ok(),
        "ready_reason": ready.err(),
        "draining": shared.draining.load(Acquire),
        "uptime": m.uptime_secs(),
        "pool": {
            "threads": m.worker_threads.load(Relaxed),
            "configured": s.threads,
            // Live threads running a handler (the gauge also counts abandoned ones, still running).
            "busy": (m.workers_busy.load(Relaxed) - m.threads_abandoned_alive.load(Relaxed)).max(0),
            "abandoned_alive": m.threads_abandoned_alive.load(Relaxed),
            "max_abandoned": s.effective_max_abandoned(),
            "abandoned_total": m.threads_abandoned_total.load(Relaxed),
            "replaced_total": m.threads_replaced_total.load(Relaxed),
            "retired_total": m.threads_retired_total.load(Relaxed),
        },
        "queue": { "depth": shared.queue.depth(), "capacity": s.effective_backlog() },
        "requests_in_flight": m.requests_in_flight.load(Relaxed),
        "connections_open": m.connections_open.load(Relaxed),
        "totals": {
            "timeouts": m.timeouts_total(),
            "cancellations_honored": m.cancellations_honored.load(Relaxed),
            "handler_panics": m.handler_panics.load(Relaxed),
        },
        "settings": {
            "timeout": s.timeout.as_secs_f64(),
            "cancel_grace": s.cancel_grace.as_secs_f64(),
        },
        "requests": requests(shared),
        "timeouts": timeouts(shared),
    })
}
