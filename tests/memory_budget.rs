//! The memory budget: request bodies held in memory, all connections together, stay within
//! `--max-body-memory` (a body past it gets 503 with `Retry-After` and is not read), the memory
//! is given back when the request is done or its upload given up (`--body-timeout`), so a slow
//! upload cannot starve the others for longer than that; and responses too big for a limited
//! address space no longer abort the process.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_closing_error, connect, demo_server, get, metric, raw, read_response, settings, start, wait_for};
use vigil::{App, Ctx, Request, Response, Server, Settings};

const MIB: u64 = 1 << 20;

/// A server whose bodies may hold 1 MiB in all, each at most 1 MiB.
fn budget_settings() -> Settings {
    settings().max_body(MIB).max_body_memory(MIB)
}

fn held(srv: &vigil::ServerHandle) -> f64 {
    metric(srv, "vigil_body_memory_bytes")
}

/// Starts a `POST /echo` of `len` bytes and sends `sent` of them.
fn upload(addr: SocketAddr, len: u64, sent: usize) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes()).unwrap();
    s.write_all(&vec![b'u'; sent]).unwrap();
    s
}

fn post(addr: SocketAddr, body: &[u8]) -> common::Resp {
    let mut req =
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).unwrap()
}

#[test]
fn a_body_past_the_memory_budget_gets_503_with_retry_after_and_other_requests_go_on() {
    let srv = demo_server(budget_settings());
    let addr = srv.local_addr();
    // One upload takes the whole budget (its buffer doubles up to the 1 MiB it announced).
    let mut big = upload(addr, MIB, 600_000);
    assert!(wait_for(Duration::from_secs(10), || held(&srv) == MIB as f64), "held {}", held(&srv));
    // A new body is refused without being read, and says when to retry.
    let r = post(addr, b"small body");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "server busy: too many request bodies in memory\n");
    // A chunked body too.
    let chunked = raw(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(chunked.status, 503);
    // A client that waits for `100 Continue` is refused before it sends its body.
    for framing in ["Content-Length: 5000", "Transfer-Encoding: chunked"] {
        let mut s = connect(addr);
        write!(s, "POST /echo HTTP/1.1\r\nHost: t\r\n{framing}\r\nExpect: 100-continue\r\n\r\n").unwrap();
        let r = read_response(&mut s, false).unwrap();
        assert_eq!((r.status, r.header("retry-after")), (503, Some("1")), "{framing}");
    }
    // Requests without a body are not affected.
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(metric(&srv, "vigil_rejected_total{reason=\"body_memory\"}"), 4.0);
    assert_eq!(metric(&srv, "vigil_body_memory_limit_bytes"), MIB as f64);
    // The big upload completes, is answered, and gives its memory back.
    big.write_all(&vec![b'u'; (MIB as usize) - 600_000]).unwrap();
    let r = read_response(&mut big, false).unwrap();
    assert_eq!((r.status, r.body.len()), (200, MIB as usize));
    assert!(wait_for(Duration::from_secs(10), || held(&srv) == 0.0), "held {}", held(&srv));
    assert_eq!(post(addr, b"small body").text(), "small body");
    srv.stop();
}

#[test]
fn a_stalled_upload_gives_its_memory_back_at_the_body_timeout() {
    let srv = demo_server(budget_settings().body_timeout(Duration::from_secs(1)));
    let addr = srv.local_addr();
    // Stalled one byte short of its length: it holds the budget, but only for --body-timeout.
    let mut stalled = upload(addr, MIB, MIB as usize - 1);
    assert!(wait_for(Duration::from_secs(10), || held(&srv) == MIB as f64));
    assert_eq!(post(addr, b"x").status, 503);
    let r = assert_closing_error(&mut stalled, 408);
    assert_eq!(r.text(), "timed out reading the request body\n");
    assert!(wait_for(Duration::from_secs(5), || held(&srv) == 0.0), "held {}", held(&srv));
    assert_eq!(post(addr, b"x").status, 200, "the budget is free again");
    srv.stop();
}

#[test]
fn uploads_that_do_not_fit_together_are_refused_midway_and_the_budget_is_never_passed() {
    let srv = demo_server(settings().max_body(MIB).max_body_memory(3 * MIB / 2));
    let addr = srv.local_addr();
    // Two uploads of 1 MiB cannot both be held: the one whose buffer cannot grow is refused.
    let mut a = upload(addr, MIB, 300_000);
    let mut b = upload(addr, MIB, 300_000);
    assert!(wait_for(Duration::from_secs(10), || held(&srv) >= 2.0 * 300_000.0));
    a.write_all(&vec![b'u'; 500_000]).unwrap();
    b.write_all(&vec![b'u'; 500_000]).unwrap();
    let mut statuses = [read_response(&mut a, false).map(|r| r.status), read_response(&mut b, false).map(|r| r.status)];
    // The one still reading gets the rest of its body; the other was answered already.
    for (s, st) in [&mut a, &mut b].into_iter().zip(statuses.iter_mut()) {
        if st.is_err() {
            s.write_all(&vec![b'u'; (MIB as usize) - 800_000]).unwrap();
            *st = read_response(s, false).map(|r| r.status);
        }
    }
    let mut got: Vec<u16> = statuses.iter().map(|s| *s.as_ref().unwrap()).collect();
    got.sort();
    assert!(got == [200, 503] || got == [503, 503], "{got:?}");
    assert!(metric(&srv, "vigil_body_memory_bytes") <= 1.5 * MIB as f64);
    srv.stop();
}

#[test]
fn a_body_is_held_against_the_budget_until_its_request_is_done() {
    let release = Arc::new(AtomicBool::new(false));
    let r2 = Arc::clone(&release);
    let app = App::new().post("/slow", move |req: &Request, _: &Ctx| {
        while !r2.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Response::text(req.body().len().to_string())
    });
    let srv = start(budget_settings(), app);
    let addr = srv.local_addr();
    let mut s = connect(addr);
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 500000\r\nConnection: close\r\n\r\n").unwrap();
    s.write_all(&vec![b'b'; 500_000]).unwrap();
    // Read, queued and running: its body is held (16 KiB steps doubled up to the 500,000).
    assert!(wait_for(Duration::from_secs(10), || held(&srv) == 500_000.0), "held {}", held(&srv));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(held(&srv), 500_000.0, "released while the handler still runs");
    release.store(true, SeqCst);
    assert_eq!(read_response(&mut s, false).unwrap().text(), "500000");
    assert!(wait_for(Duration::from_secs(5), || held(&srv) == 0.0), "held {}", held(&srv));
    srv.stop();
}

#[test]
fn a_budget_below_max_body_is_refused_at_start_naming_the_setting() {
    let err = Server::start(settings().max_body(2 * MIB).max_body_memory(MIB), App::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("max-body-memory") || text.contains("max_body_memory"), "{text}");
    assert!(text.contains("2MiB") && text.contains("1MiB"), "{text}");
}

/// Five clients that never read a 256 MiB `/bytes` answer, under an address-space limit of
/// 2,500,000 KiB (`ulimit -v 2500000`): each body is held once (before, it was copied into the
/// connection's write buffer, twice the memory, and the process aborted in the allocator). The
/// server stays up and answers others; the clients are dropped at `--write-timeout`.
#[cfg(target_os = "linux")]
#[test]
fn five_unread_256_mib_answers_under_an_address_space_limit_do_not_abort_the_server() {
    use common::{vigil_command, ServerProc};
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let mut srv = ServerProc::start_command(
        vigil_command(),
        &["--bind", "127.0.0.1:0", "--admin-bind", "off", "--write-timeout", "4s"],
    );
    let pid = srv.child.id();
    let limit = 2_500_000u64 * 1024;
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--as={limit}:")])
        .status()
        .expect("prlimit");
    assert!(ok.success(), "prlimit failed");
    let status = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Max address space") && l.contains(&limit.to_string())), "{status}");
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(srv.addr);
            // Making five 256 MiB bodies takes a while on a loaded machine.
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            s.write_all(b"GET /bytes?n=268435456 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Every answer is under way (its head is here): all five bodies are in memory at once.
    for c in &clients {
        let mut one = [0u8; 12];
        let n = c.peek(&mut one);
        let got = n.as_ref().map_or(&[][..], |&n| &one[..n]);
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "no answer ({n:?}: {:?}); the server's exit status: {:?}",
            String::from_utf8_lossy(got),
            srv.child.try_wait()
        );
    }
    let vm = |key: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(30), || vm("VmRSS:") > 5 * 256 * 1024),
        "the five bodies never were in memory together: RSS {} KiB",
        vm("VmRSS:")
    );
    assert_eq!(get(srv.addr, "/").status, 200, "the server does not answer while the five are held");
    assert!(srv.child.try_wait().unwrap().is_none(), "the server died");
    // At --write-timeout the five are dropped and their bodies freed; the server goes on.
    assert!(wait_for(Duration::from_secs(30), || vm("VmRSS:") < 256 * 1024), "RSS {} KiB", vm("VmRSS:"));
    assert_eq!(get(srv.addr, "/").status, 200);
    assert!(srv.child.try_wait().unwrap().is_none(), "the server died");
    drop(clients);
    srv.terminate();
    assert_eq!(srv.wait_exit(Duration::from_secs(30)), Some(0));
}
