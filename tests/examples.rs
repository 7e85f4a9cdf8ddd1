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
