//! The admin listener: metrics, health, readiness and the in-flight table, on its own address.
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

fn route(path: &str, shared: &Shared) -> Response {
    match path {
        "/metrics" => Response::text(shared.metrics.render(shared.queue.depth()))
            .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
        "/healthz" => match shared.live() {
            Ok(()) => Response::text("ok\n"),
            Err(why) => Response::error(503, &why),
        },
        "/readyz" => match shared.ready() {
            Ok(()) => Response::text("ready\n"),
            Err(why) => Response::error(503, &why),
        },
        "/requests" => Response::json(requests_json(shared)),
        _ => Response::error(404, "not found (try /metrics, /healthz, /readyz, /requests)"),
    }
}

/// The in-flight table as JSON.
pub(crate) fn requests_json(shared: &Shared) -> String {
    let now = clock::now_ns();
    let secs = |ns: u64| ns as f64 / 1e9;
    let list = shared.inflight.lock();
    let rows: Vec<serde_json::Value> = list
        .iter()
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
                "elapsed": secs(now.saturating_sub(r.start_ns)),
                "deadline": secs(deadline.saturating_sub(r.start_ns)),
                "remaining": secs(deadline.saturating_sub(now)),
                "last_progress": secs(now.saturating_sub(r.last_progress_ns.load(Relaxed))),
                "stage": r.stage_string(),
            })
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}
