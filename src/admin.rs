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

use crate::http::parse::{parse_head, Limits};
use crate::http::response::{encode, Framing, Response};
use crate::runtime::clock;
use crate::server::lifecycle::Phase;
use crate::server::shared::Shared;

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new().name("vigil-admin".into()).spawn(move || {
        for stream in listener.incoming() {
            if shared.lifecycle.phase() == Phase::Stopped {
                break;
            }
            match stream {
                Ok(s) => {
                    let shared = Arc::clone(&shared);
                    let _ =
                        std::thread::Builder::new().name("vigil-admin-conn".into()).spawn(move || serve(s, &shared));
                }
                Err(e) => {
                    error!("admin accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    })?;
    Ok(())
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
                        &Framing { head_only: false, close: true, http10: false, request_id: None },
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
        let close = !head.keep_alive || head.framing != crate::http::parse::Framing::None;
        let mut out = Vec::with_capacity(resp.body().len() + 256);
        let http10 = head.version == crate::http::parse::Version::Http10;
        encode(&resp, &Framing { head_only: method == "HEAD", close, http10, request_id: None }, &mut out);
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
            json!({
                "id": r.req.id(),
                "method": r.req.method(),
                "path": r.req.path(),
                "route": shared.routes.label(Some(r.route)),
                "thread": thread(r.worker.load(Relaxed)),
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
        "draining": shared.lifecycle.is_draining(),
        "draining_for": shared.lifecycle.drain_started_ns().map(|t| clock::secs(clock::now_ns().saturating_sub(t))),
        "uptime": m.uptime_secs(),
        "pool": {
            "threads": p.live,
            "configured": p.target,
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
