//! Responses: the type handlers return, and the encoder that turns one into bytes on the wire.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP response: status, header fields and a body.
///
/// `Content-Length`, `Date`, `Connection`, `Transfer-Encoding` and `X-Request-Id` are written by
/// the server; setting them here has no effect.
///
/// [`with_header`](Response::with_header) sets a field (replacing one of the same name);
/// [`append_header`](Response::append_header) adds one more, for fields that may repeat, such
/// as `Set-Cookie`.
///
/// ```
/// use vigil::Response;
/// let r = Response::text("hello").with_status(201).with_header("X-Kind", "greeting");
/// assert_eq!(r.status(), 201);
/// assert_eq!(r.body(), b"hello");
/// let j = Response::json_str(r#"{"ok":true}"#);
/// assert_eq!(j.header("content-type"), Some("application/json"));
/// let c = Response::text("hi").append_header("Set-Cookie", "a=1").append_header("Set-Cookie", "b=2");
/// assert_eq!(c.headers_named("set-cookie").collect::<Vec<_>>(), ["a=1", "b=2"]);
/// ```
#[derive(Clone, Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    body: Cow<'static, [u8]>,
    /// Why a handler's error became this response, for the log only (never sent): see
    /// `Error::internal`.
    cause: Option<Box<str>>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Cow::Borrowed(b""), cause: None }
    }

    /// `200 OK` with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<Cow<'static, str>>) -> Self {
        let body = match body.into() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        };
        Response {
            status: 200,
            headers: vec![(Cow::Borrowed("Content-Type"), Cow::Borrowed("text/plain; charset=utf-8"))],
            body,
            cause: None,
        }
    }

    /// `200 OK` with an `application/json` body, already serialized.
    pub fn json_str(body: impl Into<Cow<'static, str>>) -> Self {
        Response::text(body).with_header("Content-Type", "application/json")
    }

    /// `200 OK` with `value` serialized as JSON (`application/json`). A value serde cannot
    /// serialize (a map with non-string keys, a failing `Serialize` impl) gives a 500 with a
    /// short text body instead. Needs the `json` feature.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct User { id: u32, name: &'static str }
    /// let r = vigil::Response::json(&User { id: 7, name: "ada" }).with_status(201);
    /// assert_eq!(r.body(), br#"{"id":7,"name":"ada"}"#);
    /// assert_eq!(r.header("content-type"), Some("application/json"));
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes(body).with_header("Content-Type", "application/json"),
            Err(e) => Response::error(500, &format!("response could not be serialized as JSON: {e}")),
        }
    }

    /// `200 OK` with raw bytes and no content type.
    pub fn bytes(body: impl Into<Cow<'static, [u8]>>) -> Self {
        Response { status: 200, headers: Vec::new(), body: body.into(), cause: None }
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Sets a header, replacing any field of the same name (case-insensitive). For a field that
    /// may appear more than once (`Set-Cookie`), use [`append_header`](Response::append_header).
    pub fn with_header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    /// Adds a header field, keeping any of the same name: each is sent on its own line, in the
    /// order added (`Set-Cookie` must never be combined into one line, RFC 6265 §3).
    ///
    /// ```
    /// let r = vigil::Response::text("ok")
    ///     .append_header("Set-Cookie", "session=abc; HttpOnly")
    ///     .append_header("Set-Cookie", "theme=dark");
    /// assert_eq!(r.headers_named("Set-Cookie").count(), 2);
    /// assert_eq!(r.header("set-cookie"), Some("session=abc; HttpOnly")); // the first
    /// ```
    pub fn append_header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// Every value of header `name` (case-insensitive), in the order added.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| &**v)
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// A short plain-text error response, as the server itself sends them.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        let mut body = String::with_capacity(message.len() + 1);
        body.push_str(message);
        body.push('\n');
        Response::text(body).with_status(status)
    }

    /// Attaches the cause of an internal error, to be logged (never sent).
    pub(crate) fn with_cause(mut self, cause: Option<Box<str>>) -> Self {
        self.cause = cause;
        self
    }

    /// Takes the cause of an internal error out, for the log.
    pub(crate) fn take_cause(&mut self) -> Option<Box<str>> {
        self.cause.take()
    }
}

/// The reason phrase for a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What the connection adds to a response when encoding it.
pub(crate) struct Framing<'a> {
    /// HEAD request: headers only (Content-Length still describes the body a GET would get).
    pub head_only: bool,
    /// Whether to send `Connection: close`.
    pub close: bool,
    /// An HTTP/1.0 request: a connection kept open says `Connection: keep-alive` (RFC 9112
    /// §9.3, Appendix C.2.2), or a 1.0 client closes it anyway.
    pub http10: bool,
    /// The request id to echo, if any.
    pub request_id: Option<&'a str>,
}

/// Appends the encoded response to `out`.
pub(crate) fn encode(resp: &Response, f: &Framing<'_>, out: &mut Vec<u8>) {
    let status = if (100..=999).contains(&resp.status) { resp.status } else { 500 };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    with_date(|d| out.extend_from_slice(d));
    // 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 §8.6).
    let bodiless = status < 200 || status == 204 || status == 304;
    if !bodiless {
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(resp.body.len()).as_bytes());
    }
    if f.close {
        out.extend_from_slice(b"\r\nConnection: close");
    } else if f.http10 {
        out.extend_from_slice(b"\r\nConnection: keep-alive");
    }
    if let Some(id) = f.request_id {
        out.extend_from_slice(b"\r\nX-Request-Id: ");
        out.extend_from_slice(id.as_bytes());
    }
    for (k, v) in &resp.headers {
        if is_managed(k) || !valid_field(k, v) {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !f.head_only && !bodiless {
        out.extend_from_slice(&resp.body);
    }
}

fn is_managed(name: &str) -> bool {
    ["content-length", "date", "connection", "transfer-encoding", "x-request-id"]
        .iter()
        .any(|m| name.eq_ignore_ascii_case(m))
}

/// Handlers can put anything in a header; refuse what would split the response.
fn valid_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

thread_local! {
    // (unix second, rendered IMF-fixdate). Only touched inside `with_date`, which never yields,
    // so it is sound on coroutine threads too.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Calls `f` with the current `Date` value, re-rendered at most once a second per thread.
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            c.1.copy_from_slice(&s.as_bytes()[..29]);
            c.0 = secs;
        }
        f(&c.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Response, head_only: bool, close: bool) -> String {
        let mut out = Vec::new();
        encode(r, &Framing { head_only, close, http10: false, request_id: Some("abc") }, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_carries_date_length_and_request_id() {
        let s = enc(&Response::text("hello"), false, false);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{s}");
        assert!(s.contains("\r\nContent-Length: 5\r\n"));
        assert!(s.contains("\r\nX-Request-Id: abc\r\n"));
        assert!(s.ends_with("\r\n\r\nhello"));
        assert!(!s.contains("Connection: close"));
    }

    #[test]
    fn head_response_has_length_but_no_body() {
        let s = enc(&Response::text("hello"), true, true);
        assert!(s.contains("Content-Length: 5\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn no_content_has_no_length() {
        let s = enc(&Response::new(204), false, false);
        assert!(!s.contains("Content-Length"));
    }

    #[test]
    fn http10_keep_alive_is_said_and_close_wins() {
        let mut out = Vec::new();
        encode(
            &Response::text("x"),
            &Framing { head_only: false, close: false, http10: true, request_id: None },
            &mut out,
        );
        assert!(String::from_utf8_lossy(&out).contains("\r\nConnection: keep-alive\r\n"));
        out.clear();
        encode(
            &Response::text("x"),
            &Framing { head_only: false, close: true, http10: true, request_id: None },
            &mut out,
        );
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("\r\nConnection: close\r\n") && !s.contains("keep-alive"), "{s}");
    }

    #[test]
    fn appended_fields_are_each_sent_on_their_own_line() {
        let r = Response::text("x").append_header("Set-Cookie", "a=1").append_header("set-cookie", "b=2");
        let s = enc(&r, false, false);
        assert!(s.contains("\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"), "{s}");
        let replaced = r.with_header("Set-Cookie", "c=3");
        assert_eq!(replaced.headers_named("set-cookie").collect::<Vec<_>>(), ["c=3"]);
    }

    #[test]
    fn header_injection_is_dropped() {
        let r = Response::text("x").with_header("X-Evil", "a\r\nSet-Cookie: b").with_header("Content-Length", "99");
        let s = enc(&r, false, false);
        assert!(!s.contains("Set-Cookie"));
        assert!(s.contains("Content-Length: 1\r\n"));
        assert!(!s.contains("99"));
    }
}
