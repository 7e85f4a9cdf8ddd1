//! The access log accounts for every answer: one JSON line per response whoever produced it
//! (handler, router, parser, read timeout, watchdog, drain, overload), and one 499 line for a
//! client that went away before its answer.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{connect, get, metric, raw, read_response, spawn_get_with_id, wait_for, ServerProc};
use serde_json::Value;

/// The keys of every access line.
const KEYS: [&str; 15] = [
    "ts", "level", "target", "msg", "event", "peer", "method", "path", "route", "status", "duration", "budget", "id",
    "worker", "source",
];

/// Waits for the server to exit (asking it to first unless `terminated`) and returns every
/// access line it wrote, checking each has all the keys.
fn access_lines(mut srv: ServerProc, seen: Vec<String>, terminated: bool) -> Vec<Value> {
    if !terminated {
        srv.terminate();
    }
    assert_eq!(srv.wait_exit(Duration::from_secs(15)), Some(0), "the server did not drain and exit");
    let mut all = seen;
    all.extend(srv.logs_to_end(Duration::from_secs(5)));
    let lines: Vec<Value> = all
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|v| v["target"] == "vigil::access")
        .collect();
    for l in &lines {
        for k in KEYS {
            assert!(l.get(k).is_some(), "no {k} in {l}");
        }
        assert_eq!(l["event"], "access", "{l}");
    }
    lines
}

fn send(srv: &ServerProc, bytes: &[u8]) -> TcpStream {
    let mut s = connect(srv.addr);
    s.write_all(bytes).unwrap();
    s
}

fn with_id(method: &str, path: &str, id: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// The admin's /requests rows.
fn in_flight(srv: &ServerProc) -> Vec<Value> {
    let r = get(srv.admin(), "/requests");
    serde_json::from_slice::<Value>(&r.body).unwrap().as_array().unwrap().clone()
}

fn running(srv: &ServerProc, id: &str) -> bool {
    in_flight(srv).iter().any(|r| r["id"] == id && r["state"] == "running")
}

#[test]
fn access_log_has_exactly_one_line_for_every_kind_of_answer() {
    let srv = ServerProc::start(&[
        "--access-log",
        "--log-format",
        "json",
        "--threads",
        "1",
        "--backlog",
        "1",
        "--timeout",
        "2",
        "--cancel-grace",
        "1",
        "--max-body",
        "1k",
        "--limit-request-fields",
        "10",
        "--header-timeout",
        "500ms",
        "--graceful-timeout",
        "1",
    ]);
    // 200, 404, 405: handler and router.
    assert_eq!(read_response(&mut send(&srv, &with_id("GET", "/", "k200")), false).unwrap().status, 200);
    assert_eq!(read_response(&mut send(&srv, &with_id("GET", "/nope", "k404")), false).unwrap().status, 404);
    assert_eq!(read_response(&mut send(&srv, &with_id("POST", "/", "k405")), false).unwrap().status, 405);
    // 400, 413, 431: the parser (no request id is read from a head that is refused).
    assert_eq!(raw(srv.addr, b"GET /k400 HTTP/1.1\r\n\r\n").unwrap().status, 400);
    assert_eq!(raw(srv.addr, b"POST /k413 HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n").unwrap().status, 413);
    let many: String = (0..11).map(|i| format!("X-F{i}: v\r\n")).collect();
    assert_eq!(raw(srv.addr, format!("GET /k431 HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes()).unwrap().status, 431);
    // 408: a head that never ends.
    let mut slow = send(&srv, b"GET /k408 HTTP/1.1\r\nHost: t\r\n");
    assert_eq!(read_response(&mut slow, false).unwrap().status, 408);
    // 504: the watchdog, at the 2 s deadline.
    assert_eq!(read_response(&mut send(&srv, &with_id("GET", "/sleep?ms=9000", "k504")), false).unwrap().status, 504);
    // 499: the client leaves while its handler runs; nothing is sent.
    let gone = send(&srv, &with_id("GET", "/sleep?ms=9000", "k499"));
    assert!(wait_for(Duration::from_secs(5), || running(&srv, "k499")), "k499 never ran");
    drop(gone);
    let mut seen = Vec::new();
    assert!(
        srv.wait_log(&mut seen, Duration::from_secs(5), |l| l.contains("\"k499\"") && l.contains("vigil::access"))
            .is_some(),
        "no access line for the client that left:\n{}",
        seen.join("\n")
    );
    assert!(wait_for(Duration::from_secs(5), || in_flight(&srv).is_empty()), "k499's handler still runs");
    // 503 queue full: the one worker busy, the one queue place taken.
    let busy = spawn_get_with_id(srv.addr, "/block?ms=800", "kblock");
    assert!(wait_for(Duration::from_secs(5), || running(&srv, "kblock")), "kblock never ran");
    let queued = spawn_get_with_id(srv.addr, "/", "kqueued");
    assert!(wait_for(Duration::from_secs(5), || metric(srv.admin(), "vigil_queue_depth") == 1.0));
    assert_eq!(read_response(&mut send(&srv, &with_id("GET", "/", "k503q")), false).unwrap().status, 503);
    assert_eq!(busy.join().unwrap().unwrap().status, 200);
    assert_eq!(queued.join().unwrap().unwrap().status, 200);
    // The drain's 503 and 504: at --graceful-timeout, what is still queued gets 503, what still
    // runs 504.
    let long = spawn_get_with_id(srv.addr, "/sleep?ms=9000", "klong");
    assert!(wait_for(Duration::from_secs(5), || running(&srv, "klong")), "klong never ran");
    let late = spawn_get_with_id(srv.addr, "/", "k503d");
    assert!(wait_for(Duration::from_secs(5), || metric(srv.admin(), "vigil_queue_depth") == 1.0));
    srv.terminate();
    assert_eq!(late.join().unwrap().unwrap().status, 503);
    assert_eq!(long.join().unwrap().unwrap().status, 504);

    let lines = access_lines(srv, seen, true);
    let by_id = |id: &str| -> Vec<&Value> { lines.iter().filter(|l| l["id"] == id).collect() };
    for (id, status, source) in [
        ("k200", 200, "handler"),
        ("k404", 404, "router"),
        ("k405", 405, "router"),
        ("k504", 504, "watchdog"),
        ("k499", 499, "client"),
        ("kblock", 200, "handler"),
        ("kqueued", 200, "handler"),
        ("k503q", 503, "overload"),
        ("klong", 504, "drain"),
        ("k503d", 503, "drain"),
    ] {
        let found = by_id(id);
        assert_eq!(found.len(), 1, "{id}: {found:?}\nall: {lines:#?}");
        assert_eq!((found[0]["status"].as_u64(), found[0]["source"].as_str()), (Some(status), Some(source)), "{id}");
    }
    for (path, status, source) in
        [("/k400", 400, "parser"), ("/k413", 413, "parser"), ("/k431", 431, "parser"), ("/k408", 408, "read_timeout")]
    {
        let found: Vec<&Value> = lines.iter().filter(|l| l["path"] == path).collect();
        assert_eq!(found.len(), 1, "{path}: {found:?}\nall: {lines:#?}");
        assert_eq!((found[0]["status"].as_u64(), found[0]["source"].as_str()), (Some(status), Some(source)), "{path}");
        assert!(found[0]["budget"].is_null() && found[0]["route"] == "unmatched", "{}", found[0]);
    }
    let k200 = by_id("k200")[0];
    assert_eq!(
        (k200["method"].as_str(), k200["path"].as_str(), k200["route"].as_str()),
        (Some("GET"), Some("/"), Some("/"))
    );
    assert!(k200["budget"].as_f64().is_some() && k200["worker"].as_str().unwrap().starts_with("vigil-worker-"));
    assert!(by_id("k499")[0]["msg"].as_str().unwrap().contains("status=499"));
    // Nothing else: 10 requests with an id, 4 refused heads.
    let mut statuses = BTreeMap::new();
    for l in &lines {
        *statuses.entry(l["status"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(lines.len(), 14, "{statuses:?}\n{lines:#?}");
}

#[test]
fn a_connection_refused_beyond_max_connections_has_its_access_line() {
    let srv = ServerProc::start(&["--access-log", "--log-format", "json", "--max-connections", "1"]);
    let mut first = send(&srv, &with_id("GET", "/", "kfirst"));
    assert_eq!(read_response(&mut first, false).unwrap().status, 200);
    let mut refused = send(&srv, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut refused, false).unwrap().status, 503);
    drop(first);
    let lines = access_lines(srv, Vec::new(), false);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let refusal = lines.iter().find(|l| l["status"] == 503).expect("the refusal's line");
    assert_eq!((refusal["source"].as_str(), refusal["method"].as_str()), (Some("overload"), Some("-")), "{refusal}");
}
