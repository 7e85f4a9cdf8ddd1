//! HTTP/1.1 conformance: the shared request vectors, one test per case, against an in-process
//! server running the demo app, plus protocol behaviours the vectors do not cover.
//!
//! `tests/data/vectors.json` is a verbatim copy of `/work/shared/vectors/requests.json` (written
//! by `gen.py` there, which cites RFC 9110 and RFC 9112; its README explains the fields). Copy it
//! again when the shared file changes; `every_vector_has_a_test` then names any case that still
//! needs a test function below. The checks are those of the shared `vectors` tool: status in
//! `expect`, `close` (the server closes after answering), `responses` (pipelined count), `body`,
//! `no_body` (HEAD), `interim` (a 1xx before the final answer) and `then` (bytes sent only after
//! the interim answer, as curl does with `Expect: 100-continue`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{assert_closed, assert_closing_error, connect, demo_server, read_response, settings};
use serde_json::Value;

const VECTORS: &str = include_str!("data/vectors.json");

// ---------------------------------------------------------------------------------------------
// The vectors
// ---------------------------------------------------------------------------------------------

/// One final response as the vectors tool sees it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }
    fn first(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads responses the way the shared `vectors` tool does: each read waits at most `IDLE`, the
/// whole exchange at most `TOTAL`; a reset is reported as such.
struct Reader<'a> {
    sock: &'a mut TcpStream,
    buf: Vec<u8>,
    closed: bool,
    err: Option<String>,
}

const IDLE: Duration = Duration::from_secs(2);
const TOTAL: Duration = Duration::from_secs(8);

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Reader<'_> {
    /// Reads more bytes; `false` on timeout, end of stream or error.
    fn fill(&mut self) -> bool {
        let mut b = [0u8; 65536];
        match self.sock.read(&mut b) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => {
                if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
                    self.err = Some("reset".into());
                }
                self.closed = true;
                false
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    /// Reads up to `want` final responses; interim (1xx) statuses are collected on the side.
    fn responses(&mut self, want: usize, head: bool, interims: &mut Vec<u16>) -> Vec<Answer> {
        let deadline = Instant::now() + TOTAL;
        let mut out = Vec::new();
        while out.len() < want && Instant::now() < deadline {
            let end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i;
                }
                if !self.fill() {
                    return out;
                }
            };
            let raw = self.take(end + 4);
            let text = String::from_utf8_lossy(&raw[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            let Some(status) = status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
                self.err = Some(format!("bad status line {status_line:?}"));
                return out;
            };
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap_or((l, ""));
                    (k.trim().to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            if (100..200).contains(&status) {
                interims.push(status);
                continue;
            }
            let mut a = Answer { status, headers, body: Vec::new() };
            if head || status == 204 || status == 304 {
                // no body
            } else if a.has("transfer-encoding") {
                match self.chunked() {
                    Some(b) => a.body = b,
                    None => return out,
                }
            } else if let Some(n) = a.first("content-length").map(|v| v.parse::<usize>().unwrap_or(usize::MAX)) {
                while self.buf.len() < n {
                    if !self.fill() {
                        self.err = Some("truncated body".into());
                        return out;
                    }
                }
                a.body = self.take(n);
            } else {
                while self.fill() {}
                a.body = std::mem::take(&mut self.buf);
            }
            out.push(a);
        }
        out
    }

    fn chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill() {
                    self.err = Some("truncated chunked body".into());
                    return None;
                }
            };
            let line = self.take(line_end + 2);
            let size_text = String::from_utf8_lossy(&line[..line_end]);
            let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
                self.err = Some(format!("bad chunk size {size_text:?}"));
                return None;
            };
            if size == 0 {
                // Trailer fields, then the blank line.
                loop {
                    let mut with_crlf = b"\r\n".to_vec();
                    with_crlf.extend_from_slice(&self.buf);
                    if let Some(i) = find(&with_crlf, b"\r\n\r\n") {
                        self.take(i + 2);
                        return Some(body);
                    }
                    if !self.fill() {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    self.err = Some("truncated chunk".into());
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.take(size + 2);
        }
    }
}

/// Latin-1 text as bytes (what `gen.py` means by `raw`).
fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1 text")).collect()
}

fn status_ok(status: u16, expect: &Value) -> bool {
    match expect {
        Value::Array(codes) => codes.iter().any(|c| c.as_u64() == Some(status.into())),
        Value::String(s) => match s.as_str() {
            "2xx" => (200..300).contains(&status),
            "4xx" => (400..500).contains(&status),
            "4xx-5xx" => (400..600).contains(&status),
            other => panic!("unknown expect class {other:?}"),
        },
        other => panic!("bad expect {other}"),
    }
}

fn vector(name: &str) -> Value {
    let all: Vec<Value> = serde_json::from_str(VECTORS).expect("vectors.json parses");
    all.into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no vector named {name}"))
}

/// Sends one case and returns what is wrong with the answer (empty when it passes) and the
/// statuses received.
fn run_case(addr: SocketAddr, c: &Value) -> (Vec<String>, String) {
    let raw = latin1(c["raw"].as_str().expect("raw"));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IDLE)).unwrap();
    // A server may refuse a huge request before reading it all; what it answered still counts.
    let _ = s.write_all(&raw);
    let mut initial = Vec::new();
    if let Some(then) = c.get("then").and_then(Value::as_str) {
        // Send the rest only after the interim answer (or 2 s without one), as curl does.
        let mut b = [0u8; 65536];
        while find(&initial, b"\r\n\r\n").is_none() {
            match s.read(&mut b) {
                Ok(n) if n > 0 => initial.extend_from_slice(&b[..n]),
                _ => break,
            }
        }
        let _ = s.write_all(&latin1(then));
    }
    let want = c.get("responses").and_then(Value::as_u64).unwrap_or(1) as usize;
    let head = raw.iter().position(|&b| b != b'\r' && b != b'\n').is_some_and(|i| raw[i..].starts_with(b"HEAD "));
    let mut interims = Vec::new();
    let mut r = Reader { sock: &mut s, buf: initial, closed: false, err: None };
    let out = r.responses(want, head, &mut interims);
    let (closed, err) = (r.closed, r.err.take());

    let mut problems = Vec::new();
    problems.extend(err);
    if out.len() < want {
        let note = if closed { " (connection closed)" } else { "" };
        problems.push(format!("got {} of {want} responses{note}", out.len()));
    }
    for a in &out {
        if !status_ok(a.status, &c["expect"]) {
            problems.push(format!("status {}, expected {}", a.status, c["expect"]));
        }
    }
    if let (Some(last), Some(body)) = (out.last(), c.get("body").and_then(Value::as_str)) {
        if last.body != latin1(body) {
            problems.push(format!("body {:?}, expected {body:?}", String::from_utf8_lossy(&last.body)));
        }
    }
    if c.get("no_body") == Some(&Value::Bool(true)) && !out.is_empty() {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut extra = [0u8; 100];
        if let Ok(n @ 1..) = s.read(&mut extra) {
            problems.push(format!("HEAD response carried body bytes {:?}", String::from_utf8_lossy(&extra[..n])));
        }
    }
    if let Some(interim) = c.get("interim").and_then(Value::as_u64) {
        if !interims.iter().any(|&i| u64::from(i) == interim) {
            problems.push(format!("no interim {interim}"));
        }
    }
    if c.get("close") == Some(&Value::Bool(true)) && !out.is_empty() && !closed {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut one = [0u8; 1];
        match s.read(&mut one) {
            Ok(0) => {}
            Ok(_) => problems.push("data after the response where the connection must close".into()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                problems.push("connection left open where it must close".into())
            }
            Err(_) => {}
        }
    }
    let got = out.iter().map(|a| a.status.to_string()).collect::<Vec<_>>().join(",");
    (problems, if got.is_empty() { "nothing".into() } else { got })
}

fn check(name: &str) {
    let srv = demo_server(settings());
    let (problems, got) = run_case(srv.local_addr(), &vector(name));
    srv.stop();
    assert!(problems.is_empty(), "{name}: got {got}: {}", problems.join("; "));
}

macro_rules! vectors {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*
        /// Every case name that has a test function above.
        const TESTED: &[&str] = &[$($name),*];
    };
}

vectors! {
    vector_get_root => "get-root",
    vector_head_no_body => "head-no-body",
    vector_http10_closes => "http10-closes",
    vector_connection_close => "connection-close",
    vector_pipelined_3 => "pipelined-3",
    vector_echo_content_length => "echo-content-length",
    vector_echo_chunked => "echo-chunked",
    vector_echo_chunked_ext_trailer => "echo-chunked-ext-trailer",
    vector_expect_100_continue => "expect-100-continue",
    vector_absolute_form => "absolute-form",
    vector_leading_crlf => "leading-crlf",
    vector_many_ordinary_headers => "many-ordinary-headers",
    vector_pipelined_after_chunked => "pipelined-after-chunked",
    vector_not_found => "not-found",
    vector_garbage_line => "garbage-line",
    vector_space_in_method => "space-in-method",
    vector_bad_version => "bad-version",
    vector_missing_host_http11 => "missing-host-http11",
    vector_double_host => "double-host",
    vector_content_length_letters => "content-length-letters",
    vector_content_length_negative => "content-length-negative",
    vector_content_length_conflict => "content-length-conflict",
    vector_cl_and_te => "cl-and-te",
    vector_te_unknown => "te-unknown",
    vector_te_chunked_not_last => "te-chunked-not-last",
    vector_te_in_http10 => "te-in-http10",
    vector_bad_chunk_size => "bad-chunk-size",
    vector_obs_fold => "obs-fold",
    vector_space_before_colon => "space-before-colon",
    vector_nul_in_header => "nul-in-header",
    vector_header_too_large => "header-too-large",
    vector_too_many_headers => "too-many-headers",
    vector_uri_too_long => "uri-too-long",
    vector_body_too_large => "body-too-large",
    vector_expect_unknown => "expect-unknown",
}

#[test]
fn every_vector_has_a_test() {
    let all: Vec<Value> = serde_json::from_str(VECTORS).expect("vectors.json parses");
    let names: Vec<&str> = all.iter().map(|c| c["name"].as_str().expect("name")).collect();
    let untested: Vec<&&str> = names.iter().filter(|n| !TESTED.contains(n)).collect();
    assert!(untested.is_empty(), "vectors without a test function: {untested:?}");
    let unknown: Vec<&&str> = TESTED.iter().filter(|n| !names.contains(n)).collect();
    assert!(unknown.is_empty(), "test functions for vectors no longer in vectors.json: {unknown:?}");
}

// ---------------------------------------------------------------------------------------------
// Protocol behaviours beyond the vectors
// ---------------------------------------------------------------------------------------------

#[test]
fn every_error_response_has_date_length_short_text_body_and_close() {
    let srv = demo_server(settings().max_body(1000));
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: tea\r\nContent-Length: 2\r\n\r\nok", 417),
    ];
    for &(raw, status) in cases {
        let mut s = connect(srv.local_addr());
        s.write_all(raw).unwrap();
        assert_closing_error(&mut s, status);
    }
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let big_field = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    for (raw, status) in [(long_uri, 414), (big_field, 431)] {
        let mut s = connect(srv.local_addr());
        s.write_all(raw.as_bytes()).unwrap();
        assert_closing_error(&mut s, status);
    }
    srv.stop();
}

#[test]
fn expect_continue_with_too_large_body_gets_413_and_no_100() {
    let srv = demo_server(settings().max_body(1000));
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("the server answers and closes cleanly");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    srv.stop();
}

#[test]
fn expect_continue_to_unknown_route_gets_404_and_no_100() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    // The body never came, so the connection cannot be reused: it closes.
    assert_closing_error(&mut s, 404);
    srv.stop();
}

#[test]
fn expect_continue_gets_100_only_once_the_body_is_wanted() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    // A client that sends the body at once gets no 100 at all.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    srv.stop();
}

#[test]
fn head_response_has_length_but_no_body_and_keeps_the_connection_framed() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let head = read_response(&mut s, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5"));
    // The next bytes on the wire are the GET's status line, not a HEAD body.
    let get = read_response(&mut s, false).unwrap();
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    srv.stop();
}

#[test]
fn head_to_an_unknown_route_gets_404_without_body() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_response(&mut s, true).unwrap();
    assert_eq!(head.status, 404);
    assert_ne!(head.header("content-length"), Some("0"));
    let get = read_response(&mut s, false).unwrap();
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    srv.stop();
}

#[test]
fn pipelined_responses_keep_request_order() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    // The first request is the slowest; the answers must still come back first-in, first-out.
    s.write_all(
        b"GET /sleep?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond\
          GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfourt\r\n1\r\nh\r\n0\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let got: Vec<(u16, String)> =
        (0..5).map(|_| read_response(&mut s, false).map(|r| (r.status, r.text())).expect("response")).collect();
    let want = [(200, "slept 300 ms"), (200, "second"), (404, "not found\n"), (200, "fourth"), (200, "hello")];
    assert_eq!(got, want.map(|(s, t)| (s, t.to_string())));
    assert_closed(&mut s);
    srv.stop();
}

#[test]
fn unknown_route_with_a_buffered_body_keeps_the_connection() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), None);
    let r = read_response(&mut s, false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    srv.stop();
}

#[test]
fn unknown_route_with_an_unread_body_closes_after_404() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    // The body has not arrived: rather than wait for it, the server answers and closes.
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc").unwrap();
    assert_closing_error(&mut s, 404);
    srv.stop();
}

#[test]
fn content_length_lists_are_refused_even_of_identical_values() {
    let srv = demo_server(settings());
    for fields in ["Content-Length: 5,5\r\n", "Content-Length: 5, 5\r\n", "Content-Length: 5\r\nContent-Length: 05\r\n"]
    {
        let mut s = connect(srv.local_addr());
        s.write_all(format!("POST /echo HTTP/1.1\r\nHost: x\r\n{fields}\r\nhello").as_bytes()).unwrap();
        assert_closing_error(&mut s, 400);
    }
    // A repeated field whose text is the same is accepted: whichever a proxy reads, it agrees.
    let mut s = connect(srv.local_addr());
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().text(), "hello");
}

#[test]
fn a_refused_head_request_gets_its_error_without_a_body() {
    let srv = demo_server(settings());
    for raw in [
        &b"HEAD / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n"[..],
        b"HEAD / HTTP/1.1\r\n\r\n",
        b"\r\nHEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\n",
    ] {
        let mut s = connect(srv.local_addr());
        s.write_all(raw).unwrap();
        let r = read_response(&mut s, true).unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert!(r.header("content-length").is_some_and(|n| n != "0"), "{r:?}");
        assert_eq!(r.header("connection"), Some("close"));
        assert_closed(&mut s); // no body bytes follow the head
    }
}

#[test]
fn http10_keep_alive_is_answered_keep_alive_and_kept_open() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let r = read_response(&mut s, false).unwrap();
        assert_eq!((r.status, r.header("connection")), (200, Some("keep-alive")), "{r:?}");
    }
    // Without the option a 1.0 connection closes after its answer, saying so.
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut s);
}

#[test]
fn options_asterisk_lists_the_servers_methods_and_other_methods_may_not_use_it() {
    let srv = demo_server(settings());
    let mut s = connect(srv.local_addr());
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")), "{r:?}");
    let allow: Vec<&str> = r.header("allow").unwrap().split(", ").collect();
    for m in ["GET", "HEAD", "POST", "OPTIONS"] {
        assert!(allow.contains(&m), "{allow:?}");
    }
    // The connection stays usable.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    for method in ["GET", "HEAD", "POST"] {
        let mut s = connect(srv.local_addr());
        s.write_all(format!("{method} * HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let r = read_response(&mut s, true).unwrap();
        assert_eq!(r.status, 400, "{method} *");
    }
}

#[test]
fn every_framing_refusal_counts_as_bad_request_whatever_its_status() {
    let srv = demo_server(settings().max_body(16));
    let cases: [(&[u8], u16); 7] = [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n", 413),
    ];
    for (raw, status) in cases {
        let mut s = connect(srv.local_addr());
        s.write_all(raw).unwrap();
        assert_eq!(read_response(&mut s, false).unwrap().status, status, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(common::metric(&srv, "vigil_rejected_total{reason=\"bad_request\"}"), cases.len() as f64);
}
