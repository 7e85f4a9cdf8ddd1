//! In-process tests through the library API: a server on port 0 per test.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use vigil::{App, Ctx, Error, Request, Response, RouteOptions, Server};

#[test]
fn hung_handler_gets_504_and_thread_is_replaced() {
    let app = App::new().get("/hang", |_: &Request, _: &Ctx| {
        // The behaviour under test: a handler that ignores its token for 3 s.
        thread::sleep(Duration::from_secs(3));
        Response::text("late")
    });
    let srv = start(
        settings().threads(1).timeout(Duration::from_millis(300)).cancel_grace(Duration::from_millis(100)),
        app.get("/", |_: &Request, _: &Ctx| Response::text("ok")),
    );
    let (r, d) = timed_get(srv.local_addr(), "/hang");
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_millis(1500), "{d:?}");
    // The only thread is stuck; its replacement serves the next request long before it returns.
    let (r, d) = timed_get(srv.local_addr(), "/");
    assert_eq!(r.text(), "ok");
    assert!(d < Duration::from_millis(1500), "{d:?}");
    let admin = srv.admin_addr().unwrap();
    // The next request was served by the stand-in started at the cancellation; the abandonment
    // itself comes when the grace period is over.
    assert!(wait_for(Duration::from_secs(3), || metric(admin, "vigil_threads_abandoned_total") == 1.0));
    assert_eq!(metric(admin, "vigil_threads_replaced_total"), 1.0);
    assert_eq!(metric(admin, "vigil_worker_threads"), 1.0);
    srv.stop();
}

#[test]
fn cancelled_thread_gets_a_stand_in_at_once_and_the_pool_shrinks_back_when_it_returns() {
    // One worker, a long grace period: without a stand-in, the next request would wait for the
    // hung handler to return or for the grace period to end.
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let app = App::new()
        .get("/hang", move |_: &Request, _: &Ctx| {
            let _ = release_rx.recv(); // ignores its token until the test releases it
            Response::text("late")
        })
        .get("/", |_: &Request, _: &Ctx| Response::text("ok"));
    let srv =
        start(settings().threads(1).timeout(Duration::from_millis(300)).cancel_grace(Duration::from_secs(30)), app);
    let admin = srv.admin_addr().unwrap();
    assert_eq!(get(srv.local_addr(), "/hang").status, 504);
    let (r, d) = timed_get(srv.local_addr(), "/");
    assert_eq!(r.text(), "ok");
    assert!(d < Duration::from_secs(5), "the next request waited {d:?} for the only worker");
    // The cancelled thread no longer counts as a worker, but it is still running its handler;
    // the stand-in took its place.
    assert_eq!(metric(admin, "vigil_worker_threads"), 1.0);
    assert_eq!(metric(admin, "vigil_threads_cancelled_alive"), 1.0);
    assert_eq!(metric(admin, "vigil_threads_replaced_total"), 1.0);
    assert_eq!(metric(admin, "vigil_threads_abandoned_total"), 0.0);

    // The handler returns within the grace period: its thread leaves, the pool stays at one.
    release_tx.send(()).unwrap();
    assert!(wait_for(Duration::from_secs(3), || metric(admin, "vigil_cancellations_honored_total") == 1.0));
    assert!(wait_for(Duration::from_secs(3), || metric(admin, "vigil_threads_cancelled_alive") == 0.0));
    assert_eq!(metric(admin, "vigil_worker_threads"), 1.0);
    assert_eq!(get(srv.local_addr(), "/").text(), "ok");
    assert_eq!(metric(admin, "vigil_threads_abandoned_total"), 0.0);
    assert_eq!(metric(admin, "vigil_threads_replaced_total"), 1.0, "only the stand-in was ever started");
    srv.stop();
}

#[test]
fn on_cancel_callback_unblocks_a_blocking_call() {
    let released = Arc::new(AtomicBool::new(false));
    let rel = Arc::clone(&released);
    let app = App::new().get("/wait", move |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let tx = std::sync::Mutex::new(Some(tx));
        let _armed = ctx.on_cancel(move || drop(tx.lock().unwrap().take()));
        let _ = rx.recv(); // a blocking call that returns when the callback drops the sender
        rel.store(true, Ordering::SeqCst);
        ctx.checkpoint()?;
        Ok(Response::text("not cancelled"))
    });
    let srv = start(settings().threads(1).timeout(Duration::from_millis(200)), app);
    assert_eq!(get(srv.local_addr(), "/wait").status, 504);
    assert!(wait_for(Duration::from_secs(2), || released.load(Ordering::SeqCst)));
    let admin = srv.admin_addr().unwrap();
    assert!(wait_for(Duration::from_secs(2), || metric(admin, "vigil_cancellations_honored_total") == 1.0));
    assert_eq!(metric(admin, "vigil_threads_abandoned_total"), 0.0);
    srv.stop();
}

#[test]
fn handler_errors_map_to_their_status() {
    let app = App::new()
        .get("/teapot", |_: &Request, _: &Ctx| -> Result<Response, Error> { Err(Error::new(418, "short and stout")) })
        .get("/items/:id", |req: &Request, _: &Ctx| Response::text(format!("item {}", req.param("id").unwrap())));
    let srv = start(settings(), app);
    let r = get(srv.local_addr(), "/teapot");
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout\n");
    assert_eq!(get(srv.local_addr(), "/items/7").text(), "item 7");
    let r = raw(srv.local_addr(), b"DELETE /items/7 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    srv.stop();
}

#[test]
fn deadline_and_remaining_reflect_the_routes_own_timeout_longer_or_shorter_than_the_default() {
    let remaining = |_: &Request, ctx: &Ctx| Response::text(format!("{}", ctx.remaining().as_millis()));
    let app = App::new()
        .route("GET", "/long", RouteOptions::new().timeout(Duration::from_secs(5)), remaining)
        .route("GET", "/short", RouteOptions::new().timeout(Duration::from_millis(500)), remaining)
        .get("/default", remaining);
    // An explicit route timeout is honoured as given: never capped at the server's default.
    let srv = start(settings().timeout(Duration::from_secs(2)), app);
    let ms = |path| -> u64 { get(srv.local_addr(), path).text().parse().unwrap() };
    let (long, short, default) = (ms("/long"), ms("/short"), ms("/default"));
    assert!(long > 4000 && long <= 5000, "{long}");
    assert!(short > 0 && short <= 500, "{short}");
    assert!(default > 1000 && default <= 2000, "{default}");
    srv.stop();
}

#[test]
fn max_requests_retires_threads_without_dropping_requests() {
    let seen = Arc::new(parking_lot::Mutex::new(std::collections::HashSet::new()));
    let seen2 = Arc::clone(&seen);
    let app = App::new().get("/who", move |_: &Request, _: &Ctx| {
        let name = thread::current().name().unwrap_or("").to_string();
        seen2.lock().insert(name.clone());
        Response::text(name)
    });
    let srv = start(settings().threads(2).max_requests(3).max_requests_jitter(2), app);
    let addr = srv.local_addr();
    let handles: Vec<_> =
        (0..4).map(|_| thread::spawn(move || (0..10).map(|_| get(addr, "/who").status).collect::<Vec<_>>())).collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|&s| s == 200));
    }
    assert!(seen.lock().len() >= 40 / 5, "threads seen: {:?}", seen.lock());
    let admin = srv.admin_addr().unwrap();
    assert!(metric(admin, "vigil_threads_retired_total") >= 7.0);
    assert!(wait_for(Duration::from_secs(2), || metric(admin, "vigil_worker_threads") == 2.0));
    srv.stop();
}

#[test]
fn idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let srv = demo_server(settings().keepalive(Duration::from_millis(300)));
    let mut s = connect(srv.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    // The idle period that must elapse is the behaviour under test: the read blocks until the
    // server closes.
    let t = Instant::now();
    assert_closed(&mut s);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    srv.stop();
}

#[test]
fn idle_keepalive_connection_is_closed_no_sooner_than_its_timeout_after_its_last_request() {
    let keepalive = Duration::from_millis(400);
    let srv = demo_server(settings().keepalive(keepalive));
    let mut s = connect(srv.local_addr());
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s, false).unwrap().status, 200);
        // The behaviour under test is an idle gap shorter than the keep-alive timeout; the
        // three add up to more than it: each request starts the timeout again.
        thread::sleep(keepalive / 2);
    }
    let t = Instant::now();
    assert_closed(&mut s);
    // From the response's arrival here (the server's idle clock starts as it has written it).
    let waited = t.elapsed() + keepalive / 2;
    assert!(waited + Duration::from_millis(10) >= keepalive && waited < Duration::from_secs(2), "{waited:?}");
    srv.stop();
}

#[test]
fn after_an_idle_wait_a_long_head_a_body_and_pipelined_requests_are_all_read_whole() {
    // The first read after an idle wait takes at most 256 bytes: a longer head, a body behind
    // the head and two requests in one write each continue past it.
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n", "f".repeat(600));
    let body = "b".repeat(300);
    let post = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let two = "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok";
    for (send, answers) in [("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1), (long.as_str(), 1), (post.as_str(), 1), (two, 2)]
    {
        // Each write follows an idle wait: the connection has answered everything before it.
        s.write_all(send.as_bytes()).unwrap();
        for _ in 0..answers {
            let r = read_response(&mut s, false).unwrap();
            assert_eq!(r.status, 200, "{send:.40}");
            if send.starts_with("POST") && answers == 1 {
                assert_eq!(r.body, body.as_bytes());
            }
        }
    }
    let r = raw(srv.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    srv.stop();
}

#[test]
fn request_id_is_echoed_or_generated() {
    let srv = demo_server(settings());
    let r = raw(srv.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let a = get(srv.local_addr(), "/");
    let b = get(srv.local_addr(), "/");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    srv.stop();
}

#[test]
fn too_many_abandoned_threads_fail_readiness() {
    let stuck = Arc::new(AtomicUsize::new(0));
    let s2 = Arc::clone(&stuck);
    let app = App::new().get("/stuck", move |_: &Request, _: &Ctx| {
        s2.fetch_add(1, Ordering::SeqCst);
        // The behaviour under test: a handler that ignores its token for 4 s.
        thread::sleep(Duration::from_secs(4));
        Response::text("late")
    });
    let srv = start(
        // Room for both stand-ins: the thread ceiling is another test's subject.
        settings()
            .threads(2)
            .max_abandoned(Some(1))
            .max_threads(Some(5))
            .timeout(Duration::from_millis(200))
            .cancel_grace(Duration::ZERO),
        app,
    );
    let admin = srv.admin_addr().unwrap();
    assert_eq!(get(admin, "/readyz").status, 200);
    let addr = srv.local_addr();
    let hs: Vec<_> = (0..2).map(|_| thread::spawn(move || get(addr, "/stuck").status)).collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 504);
    }
    assert!(wait_for(Duration::from_secs(2), || metric(admin, "vigil_threads_abandoned_alive") == 2.0));
    let r = get(admin, "/readyz");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("max-abandoned"), "{}", r.text());
    assert_eq!(get(admin, "/healthz").status, 200);
    // Capacity is still there: the pool was refilled.
    assert_eq!(get(addr, "/nope").status, 404);
    assert_eq!(metric(admin, "vigil_worker_threads"), 2.0);
    srv.stop();
}

#[test]
fn readiness_fails_while_draining() {
    let app = App::new().get("/slow", |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
        // The request the drain must let finish.
        ctx.sleep(Duration::from_millis(800))?;
        Ok(Response::text("done"))
    });
    let srv = start(settings(), app);
    let addr = srv.local_addr();
    let admin = srv.admin_addr().unwrap();
    let req = thread::spawn(move || get(addr, "/slow"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    srv.shutdown();
    // The drain starts on the server's lifecycle thread, a moment after `shutdown` returns.
    let mut r = get(admin, "/readyz");
    assert!(wait_for(Duration::from_secs(5), || {
        r = get(admin, "/readyz");
        r.status == 503
    }));
    assert!(r.text().contains("draining"));
    assert_eq!(req.join().unwrap().status, 200);
    srv.wait();
}

#[test]
fn request_whose_deadline_passes_in_the_queue_gets_503_without_running() {
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = Arc::clone(&ran);
    let app = App::new()
        .get("/block", |_: &Request, _: &Ctx| {
            // The behaviour under test: the only worker is held (token ignored) for 1.2 s.
            thread::sleep(Duration::from_millis(1200));
            Response::text("done")
        })
        // Its deadline passes long before /block's, so no stand-in (started when /block is
        // cancelled) can pick it up in time.
        .route("GET", "/count", RouteOptions::new().timeout(Duration::from_millis(200)), move |_: &Request, _: &Ctx| {
            ran2.fetch_add(1, Ordering::SeqCst);
            Response::text("ran")
        })
        .get("/after", |_: &Request, _: &Ctx| Response::text("after"));
    let srv =
        start(settings().threads(1).timeout(Duration::from_millis(800)).cancel_grace(Duration::from_secs(5)), app);
    let addr = srv.local_addr();
    let admin = srv.admin_addr().unwrap();
    let blocker = thread::spawn(move || get(addr, "/block"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    let (r, d) = timed_get(addr, "/count");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(d < Duration::from_millis(1100), "answered at its deadline, not when a thread freed up: {d:?}");
    assert_eq!(blocker.join().unwrap().status, 504);
    // The one worker (the stand-in started when /block was cancelled) takes jobs in order: once
    // it has answered /after, it has taken /count off the queue and, had it run its handler,
    // that handler has returned.
    assert_eq!(get(addr, "/after").text(), "after");
    assert_eq!(metric(admin, "vigil_worker_threads"), 1.0);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler of a request answered 503 must not run");
    assert_eq!(metric(admin, "vigil_request_timeouts_total{route=\"/count\",reason=\"queue\"}"), 1.0);
    srv.stop();
}

#[test]
fn drain_lets_a_queued_request_run_after_the_running_one() {
    let app = App::new().get("/work", |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
        // Holds the only worker so that the second request waits in the queue.
        ctx.sleep(Duration::from_millis(700))?;
        Ok(Response::text("finished"))
    });
    let srv = start(settings().threads(1), app);
    let addr = srv.local_addr();
    let admin = srv.admin_addr().unwrap();
    let running = thread::spawn(move || get(addr, "/work"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    let queued = thread::spawn(move || get(addr, "/work"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_queue_depth") == 1.0));
    srv.shutdown();
    assert_eq!(running.join().unwrap().text(), "finished");
    let q = queued.join().unwrap();
    assert_eq!(q.text(), "finished", "accepted work is finished, not refused");
    assert_eq!(q.header("connection"), Some("close"));
    srv.wait();
}

#[test]
fn a_disarmed_on_cancel_callback_does_not_touch_a_connection_back_in_its_pool() {
    // The pooled-connection case: the callback protects one blocking call; once the call has
    // returned and the connection is back in its pool, a later cancellation of the same request
    // must not shut that connection (another request may be using it by then).
    let shut_pooled = Arc::new(AtomicBool::new(false));
    let shut = Arc::clone(&shut_pooled);
    let app = App::new().route(
        "GET",
        "/query-then-work",
        RouteOptions::new().timeout(Duration::from_millis(300)),
        move |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
            {
                let s = Arc::clone(&shut);
                let _armed = ctx.on_cancel(move || s.store(true, Ordering::SeqCst));
                // the query on the pooled connection, which returns in time
            } // connection back in the pool: the guard disarms the callback
            ctx.sleep(Duration::from_secs(10))?; // other work, cut by the deadline
            Ok(Response::text("unreachable"))
        },
    );
    let srv = start(settings(), app);
    assert_eq!(get(srv.local_addr(), "/query-then-work").status, 504);
    let admin = srv.admin_addr().unwrap();
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_cancellations_honored_total") == 1.0));
    assert!(!shut_pooled.load(Ordering::SeqCst), "a disarmed callback ran");
    srv.stop();
}

#[test]
fn route_parameters_arrive_percent_decoded_and_an_invalid_escape_is_a_400() {
    let app =
        App::new().get("/users/:id", |req: &Request, _: &Ctx| Response::text(req.param("id").unwrap().to_string()));
    let srv = start(settings(), app);
    let addr = srv.local_addr();
    assert_eq!(get(addr, "/users/%31").text(), "1");
    assert_eq!(get(addr, "/users/a%2Fb").text(), "a/b");
    let r = get(addr, "/users/%zz");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("percent-encoding"), "{}", r.text());
    srv.stop();
}

#[test]
fn json_bodies_in_and_out_with_415_and_400_for_what_is_not_json() {
    #[derive(serde::Deserialize)]
    struct NewUser {
        name: String,
    }
    #[derive(serde::Serialize)]
    struct User {
        id: u32,
        name: String,
    }
    let app = App::new().post("/users", |req: &Request, _: &Ctx| -> Result<Response, vigil::JsonError> {
        let new: NewUser = req.json()?;
        Ok(Response::json(&User { id: 1, name: new.name }).with_status(201))
    });
    let srv = start(settings(), app);
    let post = |ct: &str, body: &str| {
        let req = format!(
            "POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        raw(srv.local_addr(), req.as_bytes()).unwrap()
    };
    let ok = post("application/json; charset=utf-8", r#"{"name":"ada"}"#);
    assert_eq!((ok.status, ok.text().as_str()), (201, r#"{"id":1,"name":"ada"}"#));
    assert_eq!(ok.header("content-type"), Some("application/json"));
    let wrong_type = post("text/plain", r#"{"name":"ada"}"#);
    assert_eq!(wrong_type.status, 415);
    assert!(wrong_type.text().contains("text/plain"), "{}", wrong_type.text());
    let bad = post("application/json", r#"{"name": 7}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("invalid type") && bad.text().contains("column"), "{}", bad.text());
    srv.stop();
}

#[test]
fn start_failures_are_typed_and_name_what_failed() {
    use vigil::StartError;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    match Server::start(settings().bind(at), App::new()) {
        Err(StartError::Bind { addr, source }) => {
            assert_eq!((addr, source.kind()), (at, std::io::ErrorKind::AddrInUse));
        }
        other => panic!("expected Bind, got {:?}", other.map(|h| h.local_addr())),
    }
    match Server::start(settings().admin_bind(Some(at)), App::new()) {
        Err(e @ StartError::AdminBind { .. }) => assert!(e.to_string().contains(&at.to_string()), "{e}"),
        other => panic!("expected AdminBind, got {:?}", other.map(|h| h.local_addr())),
    }
    match Server::start(settings().threads(0), App::new()) {
        Err(StartError::InvalidSettings(e)) => assert_eq!(e.setting(), Some("threads")),
        other => panic!("expected InvalidSettings, got {:?}", other.map(|h| h.local_addr())),
    }
    let io: std::io::Error = Server::start(settings().threads(0), App::new()).err().unwrap().into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn dropping_the_handle_drains_the_server_and_waits_for_it() {
    let srv = demo_server(settings());
    let addr = srv.local_addr();
    let req = common::spawn_get_with_id(addr, "/sleep?ms=300", "drop-1");
    assert!(wait_for(Duration::from_secs(5), || metric(&srv, "vigil_worker_threads_busy") == 1.0));
    drop(srv); // the drain lets the request in flight finish, then the server stops
    assert_eq!(req.join().unwrap().unwrap().status, 200);
    assert!(
        wait_for(Duration::from_secs(3), || std::net::TcpStream::connect(addr).is_err()),
        "still accepting after the handle was dropped"
    );
}

#[test]
fn hooks_run_on_workers_for_every_request_including_the_routers_refusals() {
    let threads = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&threads);
    let app = App::new()
        .before(move |req: &Request, _: &Ctx| {
            seen.lock().push(std::thread::current().name().unwrap_or("").to_string());
            // A CORS preflight, for any path (no route takes OPTIONS).
            if req.method() == "OPTIONS" {
                return Some(Response::new(204).with_header("Access-Control-Allow-Methods", "GET, POST"));
            }
            match req.header("authorization") {
                Some("Bearer ok") => None,
                _ => Some(Response::text("who are you?").with_status(401)),
            }
        })
        .after(|_: &Request, _: &Ctx, resp: Response| resp.with_header("Access-Control-Allow-Origin", "*"))
        .get("/users", |_: &Request, _: &Ctx| Response::text("users"));
    let srv = start(settings(), app);
    let send = |req: &str| raw(srv.local_addr(), req.as_bytes()).unwrap();
    let ok = send("GET /users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ok\r\nConnection: close\r\n\r\n");
    assert_eq!((ok.status, ok.text().as_str(), ok.header("access-control-allow-origin")), (200, "users", Some("*")));
    let anon = send("GET /users HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!((anon.status, anon.header("access-control-allow-origin")), (401, Some("*")));
    // The router's refusals go through the hooks too.
    let anon_404 = send("GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(anon_404.status, 401, "the before hook runs for a path that does not exist");
    let authed_404 = send("GET /nope HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ok\r\nConnection: close\r\n\r\n");
    assert_eq!((authed_404.status, authed_404.header("access-control-allow-origin")), (404, Some("*")));
    let preflight = send("OPTIONS /users HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(preflight.status, 204, "a 405 from the router, answered by the hook");
    assert_eq!(preflight.header("access-control-allow-methods"), Some("GET, POST"));
    let names = threads.lock().clone();
    assert_eq!(names.len(), 5);
    assert!(names.iter().all(|n| n.starts_with("vigil-worker-")), "hooks ran on {names:?}");
    // A refused request counts as unmatched, not as a route.
    let admin = srv.admin_addr().unwrap();
    assert_eq!(metric(admin, "vigil_requests_total{route=\"unmatched\",status=\"401\"}"), 1.0);
    srv.stop();
}

#[test]
fn render_errors_gives_the_servers_own_answers_the_apps_format() {
    let app = App::new()
        .render_errors(|e: &Error| {
            Response::json_str(format!(r#"{{"error":{:?},"status":{}}}"#, e.message(), e.status()))
        })
        .route("GET", "/slow", RouteOptions::new().timeout(Duration::from_millis(200)), |_: &Request, ctx: &Ctx| {
            ctx.sleep(Duration::from_secs(10))?;
            Ok::<_, vigil::Cancelled>(Response::text("unreachable"))
        })
        .get("/panic", |_: &Request, _: &Ctx| -> Response { panic!("boom") })
        .post("/upload", |_: &Request, _: &Ctx| Response::text("ok"));
    let srv = start(settings().max_body(16), app);
    let addr = srv.local_addr();
    let json = |r: &Resp| {
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        r.text()
    };
    let r = get(addr, "/nope");
    assert_eq!((r.status, json(&r).as_str()), (404, r#"{"error":"not found","status":404}"#));
    let r = raw(addr, b"DELETE /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(json(&r), r#"{"error":"method not allowed","status":405}"#);
    // The parser's (on the connection's coroutine), the watchdog's and a panic's.
    let big = raw(addr, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n").unwrap();
    assert_eq!((big.status, json(&big).as_str()), (413, r#"{"error":"request body too large","status":413}"#));
    let slow = get(addr, "/slow");
    assert_eq!((slow.status, json(&slow).as_str()), (504, r#"{"error":"request exceeded its deadline","status":504}"#));
    let panic = get(addr, "/panic");
    assert_eq!((panic.status, json(&panic).as_str()), (500, r#"{"error":"internal server error","status":500}"#));
    srv.stop();
}
