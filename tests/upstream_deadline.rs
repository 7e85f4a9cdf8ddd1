//! `--trust-upstream-deadline`: a deadline sent by the upstream (`grpc-timeout`,
//! `x-envoy-expected-rq-timeout-ms`, `x-request-timeout-ms`) shortens the route's deadline, never
//! extends it, shows in `ctx.remaining()`, and a request whose upstream deadline passes before a
//! worker takes it gets 504 without running.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use vigil::{App, Cancelled, Ctx, Request, Response, RouteOptions, ServerHandle};

fn app(ran: Arc<AtomicUsize>) -> App {
    App::new()
        .route("GET", "/remaining", RouteOptions::new().timeout(Duration::from_secs(10)), |_: &Request, ctx: &Ctx| {
            Response::text(ctx.remaining().as_millis().to_string())
        })
        .route("GET", "/sleep", RouteOptions::new().timeout(Duration::from_secs(10)), |_: &Request, ctx: &Ctx| {
            ctx.sleep(Duration::from_secs(5))?;
            Ok::<_, Cancelled>(Response::text("slept"))
        })
        .get("/hold", |_: &Request, ctx: &Ctx| {
            let _ = ctx.sleep(Duration::from_millis(800));
            Response::text("held")
        })
        .get("/count", move |_: &Request, _: &Ctx| {
            ran.fetch_add(1, Ordering::SeqCst);
            Response::text("ran")
        })
}

fn req(addr: std::net::SocketAddr, path: &str, field: &str) -> (Resp, Duration) {
    let t = std::time::Instant::now();
    let r = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\n{field}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    (r, t.elapsed())
}

fn server(trust: bool) -> (ServerHandle, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let s = settings().threads(1).timeout(Duration::from_secs(30)).trust_upstream_deadline(trust);
    (start(s, app(Arc::clone(&ran))), ran)
}

#[test]
fn each_upstream_field_shortens_the_deadline_and_remaining_shows_it() {
    let (srv, _) = server(true);
    for field in ["grpc-timeout: 500m", "X-Envoy-Expected-Rq-Timeout-Ms: 500", "X-Request-Timeout-Ms: 500"] {
        let (r, _) = req(srv.local_addr(), "/remaining", field);
        let ms: u64 = r.text().parse().unwrap();
        assert!(ms <= 500 && ms > 300, "{field}: {ms} ms left");
    }
    // Longer than the route's ceiling: the route's 10 s stands.
    let (r, _) = req(srv.local_addr(), "/remaining", "x-request-timeout-ms: 60000");
    let ms: u64 = r.text().parse().unwrap();
    assert!(ms > 9000 && ms <= 10_000, "{ms}");
    // A value that does not parse is ignored.
    let (r, _) = req(srv.local_addr(), "/remaining", "grpc-timeout: soon");
    assert!(r.text().parse::<u64>().unwrap() > 9000);
    // The handler is cancelled (504) at the upstream's deadline, not the route's.
    let (r, d) = req(srv.local_addr(), "/sleep", "grpc-timeout: 300m");
    assert_eq!(r.status, 504);
    assert!(d >= Duration::from_millis(300) && d < Duration::from_secs(2), "{d:?}");
    srv.stop();
}

#[test]
fn upstream_deadlines_are_ignored_unless_trusted() {
    let (srv, _) = server(false);
    let (r, _) = req(srv.local_addr(), "/remaining", "grpc-timeout: 500m");
    assert!(r.text().parse::<u64>().unwrap() > 9000, "{}", r.text());
    srv.stop();
}

#[test]
fn a_request_whose_upstream_deadline_passes_in_the_queue_gets_504_without_running() {
    let (srv, ran) = server(true);
    let addr = srv.local_addr();
    let admin = srv.admin_addr().unwrap();
    let holder = thread::spawn(move || get(addr, "/hold")); // the only worker, for 800 ms
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    let (r, d) = req(addr, "/count", "x-request-timeout-ms: 100");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(d < Duration::from_millis(700), "answered at the upstream's deadline: {d:?}");
    assert_eq!(holder.join().unwrap().text(), "held");
    // The worker has since taken /count off the queue (and left it): requests are served in order.
    assert_eq!(req(addr, "/remaining", "x-request-timeout-ms: 1000").0.status, 200);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "its handler never ran");
    srv.stop();
}
