//! A streaming body whose producer fails (an error, a panic, a length it does not keep) ends
//! the connection, so the client sees a truncated body, and is logged once with the request id
//! and route; the worker thread is kept. (Its own test binary: it installs a process-wide
//! logger that keeps the records.)

mod common;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use common::{connect, get, settings, start, wait_for};
use vigil::{App, Ctx, Request, Response};

/// Keeps every record of the `vigil::stream` target.
struct Keep(Mutex<Vec<String>>);

impl log::Log for Keep {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "vigil::stream"
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) && r.level() <= log::Level::Warn {
            self.0.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static KEEP: Keep = Keep(Mutex::new(Vec::new()));

/// Everything the server sent on one connection until it closed it.
fn exchange(addr: std::net::SocketAddr, path: &str, id: &str) -> String {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("the server closes the connection");
    String::from_utf8_lossy(&all).into_owned()
}

fn logged_for(id: &str) -> Vec<String> {
    KEEP.0.lock().unwrap().iter().filter(|l| l.contains(&format!("id={id} "))).cloned().collect()
}

#[test]
fn a_failing_producer_truncates_the_body_closes_the_connection_and_is_logged() {
    log::set_logger(&KEEP).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let app = App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello"))
        .get("/fails", |_: &Request, _: &Ctx| {
            Response::from_chunks(vec![Ok("first part\n"), Err("database went away")])
        })
        .get("/panics", |_: &Request, _: &Ctx| {
            Response::from_chunks((0..3).map(|i| -> Result<String, std::io::Error> {
                assert!(i == 0, "producer bug at chunk {i}");
                Ok("only chunk\n".into())
            }))
        })
        .get("/short", |_: &Request, _: &Ctx| Response::from_reader(&b"12345"[..]).with_length(10))
        .get("/long", |_: &Request, _: &Ctx| Response::from_reader(&b"0123456789abc"[..]).with_length(10));
    // A streaming response kept and cloned for each request: its producer runs once.
    let kept = Response::from_chunks(vec![Ok::<_, std::io::Error>("once\n")]);
    let app = app.get("/kept", move |_: &Request, _: &Ctx| kept.clone());
    let srv = start(settings().threads(1), app);
    let addr = srv.local_addr();

    let fails = exchange(addr, "/fails", "f-1");
    assert!(fails.contains("Transfer-Encoding: chunked"), "{fails}");
    assert!(fails.ends_with("b\r\nfirst part\n\r\n"), "not cut after the good chunk: {fails:?}");
    assert!(!fails.contains("\r\n0\r\n\r\n"), "a last chunk was sent: {fails:?}");

    let panics = exchange(addr, "/panics", "p-1");
    assert!(panics.ends_with("only chunk\n\r\n"), "{panics:?}");

    let short = exchange(addr, "/short", "s-1");
    assert!(short.contains("Content-Length: 10\r\n") && short.ends_with("\r\n\r\n12345"), "{short:?}");

    let long = exchange(addr, "/long", "l-1");
    assert!(long.contains("Content-Length: 10\r\n") && long.ends_with("\r\n\r\n0123456789"), "{long:?}");

    let first = exchange(addr, "/kept", "k-1");
    assert!(first.ends_with("5\r\nonce\n\r\n0\r\n\r\n"), "{first:?}");
    let again = exchange(addr, "/kept", "k-2");
    assert!(again.starts_with("HTTP/1.1 200") && again.ends_with("\r\n\r\n"), "head only: {again:?}");

    assert_eq!(get(addr, "/").status, 200, "the one worker was kept");
    for (id, cause) in [
        ("f-1", "database went away"),
        ("p-1", "its producer panicked: producer bug at chunk 1"),
        ("s-1", "the body ended after 5 of the 10 bytes its length announced"),
        ("l-1", "the body is longer than the 10 bytes its length announced"),
        ("k-2", "the streaming body was sent already, by a clone of this response"),
    ] {
        assert!(wait_for(Duration::from_secs(5), || !logged_for(id).is_empty()), "nothing logged for {id}");
        let lines = logged_for(id);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.starts_with("ERROR ") && line.contains("route="), "{line}");
        assert!(line.contains(cause), "{line}");
    }
    srv.stop();
}
