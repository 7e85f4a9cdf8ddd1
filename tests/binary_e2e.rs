//! End-to-end tests through the `vigil` binary (or `VIGIL_SERVER_CMD`, e.g. `vigil.exe` under Wine).
//!
//! Timing bounds here are deliberately loose: they tell "answered at the deadline" from "never
//! answered" or "answered after the handler", not speed (that lives in benches/).

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn hung_spin_gets_504_at_deadline_while_neighbours_succeed_and_pool_is_restored() {
    let srv = ServerProc::start(&["--threads", "4", "--timeout", "2", "--cancel-grace", "0.5"]);
    let addr = srv.addr;
    let t0 = Instant::now();
    let legit: Vec<_> = (0..3).map(|_| thread::spawn(move || timed_get(addr, "/sleep?ms=1500"))).collect();
    let hung = thread::spawn(move || timed_get(addr, "/spin?ms=20000"));
    for h in legit {
        let (r, d) = h.join().unwrap();
        assert_eq!(r.status, 200, "legit request: {}", r.text());
        assert!(d < Duration::from_millis(1900), "legit request took {d:?}");
    }
    let (r, d) = hung.join().unwrap();
    assert_eq!(r.status, 504, "hung request: {}", r.text());
    assert!(d >= Duration::from_millis(1900) && d < Duration::from_millis(3000), "504 came after {d:?}");
    assert!(r.header("x-request-id").is_some());
    eprintln!("time to 504: {:?}", d);

    // A stand-in worker started at the 504 (it counts as a replacement at once); after the
    // grace period the spinning thread is abandoned for good.
    // (The 504 goes out first; the stand-in starts right after it.)
    assert!(wait_for(Duration::from_secs(5), || metric(srv.admin(), "vigil_threads_replaced_total") == 1.0));
    assert!(wait_for(Duration::from_secs(5), || metric(srv.admin(), "vigil_threads_abandoned_total") >= 1.0));
    eprintln!("spinning thread abandoned (grace over) {:?} after the burst started", t0.elapsed());
    assert_eq!(metric(srv.admin(), "vigil_threads_abandoned_total"), 1.0);
    assert_eq!(metric(srv.admin(), "vigil_threads_abandoned_alive"), 1.0);
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 4.0);

    // Four concurrent 0.8 s requests run in parallel: the pool is back to four threads.
    let t = Instant::now();
    let batch: Vec<_> = (0..4).map(|_| thread::spawn(move || get(addr, "/sleep?ms=800"))).collect();
    for h in batch {
        assert_eq!(h.join().unwrap().status, 200);
    }
    let d = t.elapsed();
    eprintln!("4 concurrent 0.8 s requests after replacement took {:?}", d);
    assert!(d < Duration::from_millis(1500), "4 × 0.8 s took {d:?}: the pool did not recover");
    let logs = srv.logs().join("\n");
    assert!(logs.contains("timeout id="), "timeout not logged:\n{logs}");
    assert!(logs.contains("route=/spin"), "route not logged:\n{logs}");
    assert!(logs.contains("abandoned thread"), "abandonment not logged:\n{logs}");
}

#[test]
fn cooperative_spin_gets_504_and_no_thread_is_abandoned() {
    let srv = ServerProc::start(&["--threads", "2", "--timeout", "1", "--cancel-grace", "2"]);
    let (r, d) = timed_get(srv.addr, "/cooperative-spin");
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_millis(2000), "{d:?}");
    assert!(wait_for(Duration::from_secs(3), || metric(srv.admin(), "vigil_cancellations_honored_total") >= 1.0));
    assert_eq!(metric(srv.admin(), "vigil_threads_abandoned_total"), 0.0);
    // The stand-in started at the cancellation or the honoring thread leaves: two again.
    assert!(wait_for(Duration::from_secs(3), || metric(srv.admin(), "vigil_worker_threads") == 2.0));
}

/// Live `vigil-worker-N` threads of a process, from their names under /proc.
#[cfg(target_os = "linux")]
fn worker_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("vigil-worker-"))
                .count()
        })
        .unwrap_or(0)
}

// Counts the server's threads through /proc: Linux, and the native binary (not Wine).
#[cfg(target_os = "linux")]
#[test]
fn cancelled_thread_gets_a_stand_in_at_once_and_leaves_when_its_handler_returns() {
    if std::env::var_os("VIGIL_SERVER_CMD").is_some() {
        return;
    }
    let srv = ServerProc::start(&["--threads", "2", "--timeout", "0.5", "--cancel-grace", "10s"]);
    let pid = srv.child.id();
    assert!(wait_for(Duration::from_secs(5), || worker_threads_of(pid) == 2));
    // /block ignores its token and sleeps 1.5 s: 504 at 0.5 s, then it honors (late, but
    // within the grace period) at 1.5 s.
    let (r, _) = timed_get(srv.addr, "/block?ms=1500");
    assert_eq!(r.status, 504);
    // (The stand-in starts right after the 504 is sent.)
    assert!(
        wait_for(Duration::from_secs(2), || worker_threads_of(pid) == 3),
        "no stand-in beside the cancelled thread"
    );
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 2.0, "the cancelled thread is not counted");
    // Both workers serve while the cancelled handler still runs.
    let both: Vec<_> = (0..2).map(|_| std::thread::spawn(move || timed_get(srv.addr, "/sleep?ms=300"))).collect();
    for h in both {
        let (r, d) = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(d < Duration::from_millis(590), "ran one after the other: {d:?}");
    }
    assert!(wait_for(Duration::from_secs(5), || metric(srv.admin(), "vigil_cancellations_honored_total") == 1.0));
    assert!(wait_for(Duration::from_secs(3), || worker_threads_of(pid) == 2), "the honoring thread stayed");
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 2.0);
    assert_eq!(metric(srv.admin(), "vigil_threads_abandoned_total"), 0.0);
}

// Through the binary so that it also runs under Wine (`VIGIL_SERVER_CMD`): how an idle
// connection is closed differs by platform (the lifecycle thread on Unix, a read timeout on
// Windows).
#[test]
fn idle_keepalive_connection_is_closed_after_keepalive_and_answered_until_then() {
    let srv = ServerProc::start(&["--keepalive", "0.5s"]);
    let mut s = connect(srv.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    // Within --keepalive the connection still serves.
    thread::sleep(Duration::from_millis(150));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    // Then the read blocks until the server closes the idle connection.
    let t = Instant::now();
    assert_closed(&mut s);
    let waited = t.elapsed();
    assert!(
        waited + Duration::from_millis(20) >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
}

#[test]
fn report_with_progress_outlives_the_default_timeout() {
    let srv = ServerProc::start(&["--threads", "2", "--timeout", "2"]);
    let (r, d) = timed_get(srv.addr, "/report?secs=4");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(d >= Duration::from_secs(4));
}

#[test]
fn report_that_stops_reporting_is_cut_by_its_stall_timeout() {
    let srv = ServerProc::start(&["--threads", "2", "--timeout", "2"]);
    let (r, d) = timed_get(srv.addr, "/report?secs=6&pause_ms=3000");
    assert_eq!(r.status, 504, "{}", r.text());
    // Pauses at 3 s, stall timeout 1 s: cut at about 4 s, well before the 6 s it would take.
    assert!(d < Duration::from_millis(5500), "{d:?}");
    assert!(wait_for(Duration::from_secs(2), || {
        metric(srv.admin(), "vigil_request_timeouts_total{route=\"/report\",reason=\"stall\"}") == 1.0
    }));
    // The timeout line goes through the watchdog's offload thread and the log writer: wait for it.
    let mut seen = Vec::new();
    let paused = srv.wait_log(&mut seen, Duration::from_secs(5), |l| l.contains("paused"));
    assert!(paused.is_some(), "stage not logged:\n{}", seen.join("\n"));
}

#[test]
fn panic_is_500_and_the_thread_survives() {
    let srv = ServerProc::start(&["--threads", "1"]);
    assert_eq!(get(srv.addr, "/panic").status, 500);
    assert_eq!(get(srv.addr, "/").text(), "hello");
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 1.0);
    assert_eq!(metric(srv.admin(), "vigil_handler_panics_total"), 1.0);
}

#[test]
fn full_queue_answers_503_without_running_the_handler() {
    let srv = ServerProc::start(&["--threads", "1", "--backlog", "1"]);
    let addr = srv.addr;
    let admin = srv.admin();
    let busy = thread::spawn(move || get(addr, "/block?ms=1500"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    let queued = thread::spawn(move || get(addr, "/block?ms=10"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_queue_depth") == 1.0));
    let r = get(addr, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(busy.join().unwrap().status, 200);
    assert_eq!(queued.join().unwrap().status, 200);
    assert_eq!(metric(srv.admin(), "vigil_rejected_total{reason=\"queue_full\"}"), 1.0);
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_running_request_finish_and_exits_0() {
    let mut srv = ServerProc::start(&["--threads", "2", "--graceful-timeout", "10"]);
    let addr = srv.addr;
    let admin = srv.admin();
    let req = thread::spawn(move || get(addr, "/sleep?ms=1500"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    srv.terminate();
    let r = req.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[cfg(unix)]
#[test]
fn drain_past_graceful_timeout_cancels_what_is_left_with_504() {
    let mut srv = ServerProc::start(&["--threads", "2", "--graceful-timeout", "1", "--timeout", "30"]);
    let addr = srv.addr;
    let admin = srv.admin();
    let req = thread::spawn(move || timed_get(addr, "/sleep?ms=10000"));
    assert!(wait_for(Duration::from_secs(5), || metric(admin, "vigil_worker_threads_busy") == 1.0));
    srv.terminate();
    let (r, d) = req.join().unwrap();
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_secs(5), "{d:?}");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn invalid_flag_value_names_the_flag_and_exits_2() {
    if std::env::var("VIGIL_SERVER_CMD").is_ok() {
        return; // checked on the native binary only
    }
    let out = vigil_command().args(["--threads", "zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
    let out = vigil_command().args(["--timeout", "-1s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout"));
}

/// The `may` log lines of the binary serving a few connections under `RUST_LOG=rust_log`.
#[cfg(unix)]
fn may_lines_under(rust_log: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--bind", "127.0.0.1:0", "--admin-bind", "off"])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").expect("address line").parse().unwrap();
    for _ in 0..3 {
        assert_eq!(get(addr, "/").status, 200);
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    lines.into_iter().filter(|l| l.contains(" may::")).collect()
}

#[cfg(unix)]
#[test]
fn may_runtime_stays_quiet_at_rust_log_info_unless_named() {
    if std::env::var("VIGIL_SERVER_CMD").is_ok() {
        return; // checked on the native binary only
    }
    assert_eq!(may_lines_under("info"), Vec::<String>::new());
    // The filter is what keeps them out: named, may logs its per-connection lines.
    assert!(!may_lines_under("info,may=info").is_empty(), "may logged nothing even when asked to");
}

#[test]
fn report_with_a_count_of_seconds_that_overflows_is_400() {
    let srv = ServerProc::start(&["--threads", "1"]);
    let r = get(srv.addr, "/report?secs=1844674407370955162");
    assert_eq!((r.status, r.text().trim()), (400, "query parameter secs is too large (at most 3600)"));
}
