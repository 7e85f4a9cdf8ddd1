//! Responses: the type handlers return, and the encoder that turns one into bytes on the wire.
//!
//! The encoder writes the head only ([`encode_head`]); the body stays in the response and the
//! connection writes it from there ([`Payload`]), so a big body is never copied into a second
//! buffer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{self, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use super::body::{
    self, Body, BoxError, Chunks, IterSource, Produce, ReadSource, SharedSource, Spent, Stream, StreamEnd,
};

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
///
/// A body is written to the client from the response's own buffer, never copied. A body too
/// big to hold in memory can be streamed instead: [`from_reader`](Response::from_reader) and
/// [`from_chunks`](Response::from_chunks) produce it chunk by chunk while it is sent (README,
/// "Streaming responses").
///
/// Cloning a response clones its headers and bytes; a streaming body's producer is shared, not
/// copied, so only one of the clones can send it (a clone sent after it is cut off after its
/// head, and the error logged).
#[derive(Clone, Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    body: Body,
    /// Why a handler's error became this response, for the log only (never sent): see
    /// `Error::internal`.
    cause: Option<Box<str>>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Body::Bytes(Cow::Borrowed(b"")), cause: None }
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
            body: Body::Bytes(body),
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
        Response { status: 200, headers: Vec::new(), body: Body::Bytes(body.into()), cause: None }
    }

    /// `200 OK` with a body read from `reader` while it is sent, so it never sits in memory
    /// whole: chunked (`Transfer-Encoding: chunked`; to an HTTP/1.0 client, delimited by closing
    /// the connection), or with `Content-Length` if [`with_length`](Response::with_length) gives
    /// the length. No content type is set.
    ///
    /// The reader runs on the worker thread that ran the handler, after it returned: one chunk
    /// of up to 64 KiB per `read`, at most 256 KiB waiting for the client, so a slow client
    /// slows the reader down rather than filling memory. The worker stays busy until the last
    /// chunk is handed to the connection, and the route's deadline covers the whole body: a
    /// body still being produced at the deadline is cut off (see README, "Streaming responses").
    /// A `read` error ends the body early: the connection is closed without the final chunk (or
    /// short of the announced length), so the client can tell the body is incomplete, and the
    /// error is logged. A HEAD request or a status without a body (1xx, 204, 304) never reads
    /// it.
    ///
    /// ```
    /// use std::io::Read;
    /// use vigil::Response;
    ///
    /// // Any `Read + Send + 'static`: a file, a child's stdout, or here 100 KB made on the fly.
    /// let big = std::io::repeat(b'x').take(100_000);
    /// let r = Response::from_reader(big).with_length(100_000).with_header("Content-Type", "text/plain");
    /// assert!(r.is_streaming());
    /// assert!(r.body().is_empty(), "a streaming body is not in memory");
    /// assert_eq!(r.read_body().unwrap().len(), 100_000); // as a test would read it
    /// ```
    pub fn from_reader(reader: impl Read + Send + 'static) -> Self {
        Response::stream(Box::new(ReadSource(reader)))
    }

    /// `200 OK` with a body made of the chunks `chunks` yields, produced while the body is sent;
    /// otherwise like [`from_reader`](Response::from_reader). Each item is a chunk
    /// (`Vec<u8>`, `String`, `&'static str`...) or the error that ends the body early (any
    /// `std::error::Error + Send + Sync`, or a string); empty chunks are skipped.
    ///
    /// ```
    /// use vigil::{App, Ctx, Request, Response};
    ///
    /// let app = App::new().get("/rows", |_: &Request, _: &Ctx| {
    ///     // Rows rendered as they are sent, never all at once.
    ///     Response::from_chunks((1..=3).map(|i| Ok::<_, std::io::Error>(format!("row {i}\n"))))
    ///         .with_header("Content-Type", "text/plain")
    /// });
    /// let resp = app.call(Request::builder("GET", "/rows").build());
    /// assert_eq!(resp.read_body().unwrap(), b"row 1\nrow 2\nrow 3\n");
    ///
    /// // A producer that fails: the client gets a truncated body; a test sees the error.
    /// let failing = Response::from_chunks(vec![Ok("partial"), Err("database went away")]);
    /// assert!(failing.read_body().unwrap_err().to_string().contains("database went away"));
    /// ```
    pub fn from_chunks<I, B, E>(chunks: I) -> Self
    where
        I: IntoIterator<Item = Result<B, E>>,
        I::IntoIter: Send + 'static,
        B: Into<Vec<u8>>,
        E: Into<BoxError>,
    {
        Response::stream(Box::new(IterSource(chunks.into_iter())))
    }

    fn stream(source: Box<dyn Produce>) -> Self {
        let body = Body::Stream(Box::new(Stream { len: None, end: StreamEnd::Source(SharedSource::new(source)) }));
        Response { status: 200, headers: Vec::new(), body, cause: None }
    }

    /// Announces the length of a streaming body: it is sent with `Content-Length: len` instead
    /// of chunked. A producer that gives fewer bytes, or more, is an error: the body is cut at
    /// `len` (or where the producer stopped), the connection closed and the error logged. A
    /// body in memory has its own length, which this does not change.
    ///
    /// ```
    /// let file = std::io::Cursor::new(vec![7u8; 4096]); // a File, say, with its metadata's len
    /// let r = vigil::Response::from_reader(file).with_length(4096);
    /// assert_eq!(r.read_body().unwrap().len(), 4096);
    /// // A producer that does not keep its word is an error.
    /// let short = vigil::Response::from_reader(&b"abc"[..]).with_length(10);
    /// assert!(short.read_body().is_err());
    /// ```
    pub fn with_length(mut self, len: u64) -> Self {
        if let Body::Stream(s) = &mut self.body {
            s.len = Some(len);
        }
        self
    }

    /// Whether the body is streamed ([`from_reader`](Response::from_reader),
    /// [`from_chunks`](Response::from_chunks)) rather than held in memory.
    ///
    /// ```
    /// assert!(vigil::Response::from_reader(std::io::empty()).is_streaming());
    /// assert!(!vigil::Response::text("in memory").is_streaming());
    /// ```
    pub fn is_streaming(&self) -> bool {
        matches!(self.body, Body::Stream(_))
    }

    /// The whole body: the bytes in memory, or a streaming body read to its end on the calling
    /// thread (what a handler test does; the server itself streams it). A producer's error, or
    /// a streamed length that does not match [`with_length`](Response::with_length), is an
    /// `Err`. A streaming body can be read once: a clone of the response shares its producer.
    ///
    /// ```
    /// use vigil::Response;
    /// assert_eq!(Response::text("hi").read_body().unwrap(), b"hi");
    /// let streamed = Response::from_chunks(vec![Ok::<_, std::io::Error>("a"), Ok("b")]);
    /// let clone = streamed.clone();
    /// assert_eq!(streamed.read_body().unwrap(), b"ab");
    /// assert!(clone.read_body().is_err(), "its producer was used up by the original");
    /// ```
    pub fn read_body(self) -> io::Result<Vec<u8>> {
        match self.body {
            Body::Bytes(b) => Ok(b.into_owned()),
            Body::Stream(s) => match s.end {
                StreamEnd::Source(source) => body::collect(source.take().map_err(io::Error::other)?, s.len),
                StreamEnd::Pipe(mut pipe) => {
                    let mut chunks = Vec::new();
                    loop {
                        let next = pipe.next_chunks(&mut chunks);
                        match next {
                            body::Next::More => continue,
                            body::Next::End => return Ok(chunks.concat()),
                            body::Next::Broken => return Err(io::Error::other("the streaming body broke off")),
                        }
                    }
                }
                StreamEnd::Unsent => Ok(Vec::new()),
            },
        }
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

    /// The body bytes; empty for a streaming body (see [`read_body`](Response::read_body)).
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(b) => b,
            Body::Stream(_) => &[],
        }
    }

    /// Takes the producer of a streaming body out, to run on a worker thread; the response
    /// keeps the body's length and sends nothing after its head unless a pipe is set
    /// ([`set_pipe`](Response::set_pipe)). `None` for a body in memory (or one already taken
    /// out of this response); `Some(Err(Spent))` if a clone of it took the producer first.
    pub(crate) fn take_source(&mut self) -> Option<Result<Box<dyn Produce>, Spent>> {
        let Body::Stream(s) = &mut self.body else { return None };
        match std::mem::replace(&mut s.end, StreamEnd::Unsent) {
            StreamEnd::Source(p) => Some(p.take()),
            other => {
                s.end = other;
                None
            }
        }
    }

    /// The same response with a streaming body read into memory (on the calling thread; the
    /// part read before an error, if it fails): for answers rendered once and cloned for each
    /// use.
    pub(crate) fn buffered(mut self) -> Response {
        if let Some(Ok(source)) = self.take_source() {
            let mut out = Vec::new();
            let mut source = source;
            while let Ok(Some(chunk)) = source.next_chunk() {
                out.extend_from_slice(&chunk);
            }
            self.body = Body::Bytes(Cow::Owned(out));
        }
        self
    }

    /// The length a streaming body announced, if any.
    pub(crate) fn stream_len(&self) -> Option<u64> {
        match &self.body {
            Body::Stream(s) => s.len,
            Body::Bytes(_) => None,
        }
    }

    /// Gives a streaming body (whose producer was taken) the connection's end of its pipe.
    pub(crate) fn set_pipe(&mut self, pipe: Box<dyn Chunks>) {
        if let Body::Stream(s) = &mut self.body {
            s.end = StreamEnd::Pipe(pipe);
        }
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
#[derive(Clone, Copy)]
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

/// What follows a response's head on the wire, written by the connection from where it is.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Nothing (HEAD, 1xx, 204, 304, an empty body).
    None,
    /// The response's own bytes.
    Bytes(Cow<'static, [u8]>),
    /// A streaming body's chunks, framed as the head said.
    Stream(Box<dyn Chunks>, StreamFraming),
}

/// How a streaming body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamFraming {
    /// `Content-Length` was sent: the chunks as they are.
    Length,
    /// `Transfer-Encoding: chunked`: each chunk with its size line, then the last chunk.
    Chunked,
    /// HTTP/1.0 and no length: the chunks as they are, and the connection closes after them.
    UntilClose,
}

/// A response's head encoded, and what the connection sends after it.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub payload: Payload,
    /// The connection closes after this response: `Framing::close`, or a body that only the
    /// close can delimit (or that was lost).
    pub close: bool,
}

/// How the head describes the body.
enum Length {
    /// No body and no length (1xx, 204, 304).
    Bodiless,
    Content(u64),
    Chunked,
    /// No length at all: the body ends when the connection closes (HTTP/1.0, or a HEAD
    /// answer to one).
    None,
}

/// Appends the response's head to `out` and takes its body out, to be written from where it
/// is (the response is left with an empty body). A streaming body must have been split on a
/// worker already (`Response::take_source`); one that was not is not sent (its producer, user
/// code, is dropped with the response).
pub(crate) fn encode_head(resp: &mut Response, f: &Framing<'_>, out: &mut Vec<u8>) -> Encoded {
    let status = valid_status(resp.status);
    // 1xx, 204 and 304 carry no body and no Content-Length (RFC 9110 §8.6).
    let bodiless = is_bodiless(status);
    let send_body = !f.head_only && !bodiless;
    let mut close = f.close;
    let (length, payload) = match &mut resp.body {
        _ if bodiless => (Length::Bodiless, Payload::None),
        Body::Bytes(b) => {
            let len = Length::Content(b.len() as u64);
            (len, if send_body && !b.is_empty() { Payload::Bytes(std::mem::take(b)) } else { Payload::None })
        }
        Body::Stream(s) => {
            let (length, framing) = match s.len {
                Some(n) => (Length::Content(n), StreamFraming::Length),
                None if f.http10 => (Length::None, StreamFraming::UntilClose),
                None => (Length::Chunked, StreamFraming::Chunked),
            };
            if !send_body {
                // A HEAD answer describes the body a GET would get, and sends none.
                (length, Payload::None)
            } else if let StreamEnd::Pipe(pipe) = std::mem::replace(&mut s.end, StreamEnd::Unsent) {
                close |= framing == StreamFraming::UntilClose;
                (length, Payload::Stream(pipe, framing))
            } else {
                // A body that should follow but has no pipe (a bug): the head promises one, so
                // the connection closes to end it.
                close = true;
                (length, Payload::None)
            }
        }
    };
    write_head(status, &resp.headers, length, &Framing { close, ..*f }, out);
    Encoded { payload, close }
}

/// Appends the whole encoded response, head and body, to `out`: for the server's own small
/// answers (admin endpoints, the listener's refusals), which are not streamed.
pub(crate) fn encode(resp: &Response, f: &Framing<'_>, out: &mut Vec<u8>) {
    let status = valid_status(resp.status);
    let bodiless = is_bodiless(status);
    let body = resp.body();
    let length = if bodiless { Length::Bodiless } else { Length::Content(body.len() as u64) };
    write_head(status, &resp.headers, length, f, out);
    if !f.head_only && !bodiless {
        out.extend_from_slice(body);
    }
}

fn valid_status(status: u16) -> u16 {
    if (100..=999).contains(&status) {
        status
    } else {
        500
    }
}

/// Whether responses with `status` carry no body (RFC 9110 §15.2, §15.3.5, §15.4.5).
pub(crate) fn is_bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

fn write_head(
    status: u16,
    headers: &[(Cow<'static, str>, Cow<'static, str>)],
    length: Length,
    f: &Framing<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    with_date(|d| out.extend_from_slice(d));
    match length {
        Length::Content(n) => {
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        Length::Chunked => out.extend_from_slice(b"\r\nTransfer-Encoding: chunked"),
        Length::Bodiless | Length::None => {}
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
    for (k, v) in headers {
        if is_managed(k) || !valid_field(k, v) {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
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
