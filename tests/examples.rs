//! The examples do what their docs say (cargo test builds them next to the binary).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn hello_example_greets() {
    let ex = ServerProc::start_example("hello", &[]);
    assert_eq!(get(ex.addr, "/hello/world").text(), "hello, world");
}

#[test]
fn export_example_outlives_the_timeout_while_reporting_and_is_cut_when_it_stalls() {
    let ex = ServerProc::start_example("export", &[]);
    let (r, d) = timed_get(ex.addr, "/export?rows=30");
    assert_eq!(r.status, 200);
    assert!(d > Duration::from_secs(2), "ran past the 2 s default: {d:?}");
    assert!(r.text().ends_with("30,900\n"));
    let (r, d) = timed_get(ex.addr, "/export?rows=30&stall_at=5");
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_secs(3), "{d:?}");
}

#[test]
fn cancellable_blocking_example_returns_its_thread() {
    let ex = ServerProc::start_example("cancellable_blocking", &[]);
    // Each request blocks on an upstream that never answers; at the 1 s deadline the example's
    // `on_cancel` callback shuts the socket down, the read returns, and the handler honours the
    // cancellation within its 1 s grace period.
    // More requests than the pool would have left if a thread were lost each time.
    let ids: Vec<String> = (0..4).map(|i| format!("cancellable-{i}")).collect();
    for id in &ids {
        let req = format!("GET /upstream HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n");
        let t = std::time::Instant::now();
        let r = raw(ex.addr, req.as_bytes()).unwrap();
        let d = t.elapsed();
        assert_eq!(r.status, 504);
        assert!(d < Duration::from_secs(3), "{d:?}");
    }
    // The cancellation was honoured each time (the handler returned within its grace period),
    // and no thread was abandoned.
    let admin = ex.admin();
    assert!(
        wait_for(Duration::from_secs(5), || metric(admin, "vigil_cancellations_honored_total") == ids.len() as f64),
        "honoured: {}",
        metric(admin, "vigil_cancellations_honored_total")
    );
    assert_eq!(metric(admin, "vigil_threads_abandoned_total"), 0.0);
    assert_eq!(metric(admin, "vigil_threads_cancelled_alive"), 0.0);
}

/// Off Windows, `Server::run_as_service_with` is `Server::serve`: what a systemd unit expects. (On
/// Windows the same example runs under the Service Control Manager: scripts/windows-service-e2e.)
#[cfg(unix)]
#[test]
fn windows_service_example_runs_in_the_foreground_elsewhere_and_drains_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("vigil-test-svc-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("example.log");
    let mut ex =
        ServerProc::start_example("windows_service", &["run", "svc", "127.0.0.1:0", "5", log.to_str().unwrap()]);
    assert_eq!(get(ex.addr, "/").text(), "hello from a service");
    let addr = ex.addr;
    let slow = std::thread::spawn(move || get(addr, "/work?ms=1500"));
    assert!(wait_for(Duration::from_secs(5), || metric(ex.admin(), "vigil_requests_in_flight") >= 1.0));
    ex.terminate();
    assert_eq!(slow.join().unwrap().status, 200, "the request in flight finished");
    assert_eq!(ex.wait_exit(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("svc: running in the foreground") && text.contains("drain complete"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_service_example_speaks_json_everywhere_and_its_cancellable_upstream_call_keeps_the_pool() {
    let ex = ServerProc::start_example("json_service", &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    let admin = ex.admin();
    let send = |req: String| raw(ex.addr, req.as_bytes()).unwrap();
    let auth = "Authorization: Bearer demo\r\n";
    let get = |path: &str, headers: &str| {
        send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"))
    };
    let post = |ct: &str, body: &str| {
        send(format!(
            "POST /users HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let json = |r: &Resp| -> serde_json::Value {
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        assert_eq!(r.header("x-service"), Some("users"), "the after hook ran: {r:?}");
        serde_json::from_slice(&r.body).unwrap()
    };
    // The before hook: no token, no service (for paths that do not exist too).
    let r = get("/users/1", "");
    assert_eq!((r.status, json(&r)["error"].as_str()), (401, Some("missing or wrong bearer token")));
    assert_eq!(get("/nope", "").status, 401);
    // Handlers, the app's error type, req.json().
    let r = get("/users/1", auth);
    assert_eq!((r.status, json(&r)["name"].as_str()), (200, Some("ada")));
    let r = get("/users/9", auth);
    assert_eq!((r.status, json(&r)["error"].as_str()), (404, Some("no such user")));
    let r = get("/users/x", auth);
    assert_eq!(r.status, 422);
    json(&r);
    let r = post("application/json", r#"{"name":"grace"}"#);
    assert_eq!((r.status, json(&r)["id"].as_u64()), (201, Some(2)));
    assert_eq!(post("text/plain", r#"{"name":"x"}"#).status, 415);
    let r = post("application/json", r#"{"nom":"x"}"#);
    assert_eq!(r.status, 400);
    assert!(json(&r)["error"].as_str().unwrap().contains("missing field `name`"), "{r:?}");
    // The server's own answers, in the app's format: the router's (through the hooks) ...
    let r = get("/nope", auth);
    assert_eq!((r.status, json(&r)["error"].as_str()), (404, Some("not found")));
    // ... and the watchdog's: the upstream takes 5 s, /search's deadline is 1 s.
    let r = get("/search?q=x&upstream_ms=5000", auth);
    assert_eq!(r.status, 504);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["status"], 504);
    // The on_cancel guard shut the upstream call, the handler returned in time, and a quick
    // search afterwards gets a fresh connection.
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_cancellations_honored_total") == 1.0));
    assert_eq!(metric(admin, "vigil_threads_abandoned_total"), 0.0);
    let r = get("/search?q=x&upstream_ms=10", auth);
    assert_eq!((r.status, json(&r)["results"][0].as_str()), (200, Some("found after 10 ms")));
}
