//! Request-head parsing and chunked-body decoding: pure functions over bytes.
//!
//! Nothing here touches a socket, a clock or the allocator beyond the
//! `headers` vector of a parsed [`Head`] (and the body bytes a
//! [`ChunkedDecoder`] appends to the caller's buffer), so every framing rule
//! of RFC 9110/9112 that the server enforces is a unit test in this file.
//!
//! * [`parse_head`] reads a request line and header section with `httparse`
//!   (strict defaults), then checks the [`Limits`] and the semantic rules
//!   (Host, Content-Length, Transfer-Encoding, Connection, Expect) in one pass
//!   over the fields. The result stores [`Span`]s into the caller's buffer
//!   rather than borrowing it, so the connection can keep reading into the
//!   buffer's spare capacity.
//! * [`ChunkedDecoder`] is a byte-level state machine for
//!   `Transfer-Encoding: chunked` bodies that can stop and resume at any byte.
//!
//! Every failure is a [`ParseError`] whose [`status`](ParseError::status) is
//! the response the client gets (400, 413, 414, 417, 431, 501 or 505); the
//! connection closes after sending it.

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;

/// Default [`Limits::request_line`]: longest request line, in bytes (414 over it).
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8190;
/// Default [`Limits::fields`]: most header fields in one request (431 over it).
pub const DEFAULT_MAX_FIELDS: usize = 100;
/// Default [`Limits::field_size`]: longest single field line, in bytes (431 over it).
pub const DEFAULT_MAX_FIELD_SIZE: usize = 8190;
/// Default [`Limits::head_bytes`]: largest request head, in bytes (431 over it).
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Default [`Limits::max_body`]: largest request body, in bytes (413 over it).
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

/// Longest chunk-size line (hex size plus extensions, without CRLF) a
/// [`ChunkedDecoder`] accepts; longer lines get 400.
pub const MAX_CHUNK_SIZE_LINE: usize = 4096;
/// Most bytes of the trailer section (all trailer lines and the final CRLF) a
/// [`ChunkedDecoder`] accepts; more gets 431.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// A byte range (`start..end`) into the buffer that was parsed.
///
/// Spans rather than slices keep [`Head`] free of lifetimes, so the caller may
/// keep appending to its read buffer; `u32` offsets keep the struct small
/// (a head is bounded by [`Limits::head_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u32,
    /// Offset one past the last byte.
    pub end: u32,
}

impl Span {
    /// Offsets are checked against `u32` by the caller (see `parse_head`).
    #[inline]
    fn new(start: usize, end: usize) -> Span {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        Span { start: start as u32, end: end as u32 }
    }

    /// The bytes this span covers in `buf`, which must be the buffer (or an
    /// unchanged prefix-preserving copy of it) that was parsed.
    ///
    /// # Panics
    ///
    /// If the span lies outside `buf`.
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// Number of bytes covered.
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span covers no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Size limits applied while parsing a request. Each says which status a
/// client gets when it goes over.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request line in bytes (method SP target SP version, without
    /// CRLF). Over it: 414, detected even before the line is complete.
    /// Default [`DEFAULT_MAX_REQUEST_LINE`].
    pub request_line: usize,
    /// Most header fields. Over it: 431. Each field costs one 32-byte parser
    /// slot, kept per thread. Default [`DEFAULT_MAX_FIELDS`].
    pub fields: usize,
    /// Longest single field line (name + ':' + value, including whitespace
    /// around the value, without CRLF) in bytes. Over it: 431.
    /// Default [`DEFAULT_MAX_FIELD_SIZE`].
    pub field_size: usize,
    /// Most bytes of the whole head (leading empty lines, request line,
    /// fields and the blank line). Over it: 431, detected before the head is
    /// complete. Default [`DEFAULT_MAX_HEAD_BYTES`].
    pub head_bytes: usize,
    /// Largest body accepted. A declared Content-Length above it gets 413
    /// before any body byte is read; a chunked body gets 413 as soon as a
    /// chunk size would take it over. Default [`DEFAULT_MAX_BODY`].
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: DEFAULT_MAX_REQUEST_LINE,
            fields: DEFAULT_MAX_FIELDS,
            field_size: DEFAULT_MAX_FIELD_SIZE,
            head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why a request could not be parsed. [`status`](ParseError::status) is the
/// response status; the connection must be closed after answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed request syntax or a framing rule broken (400), with a short reason.
    BadRequest(&'static str),
    /// Request line longer than [`Limits::request_line`] (414).
    UriTooLong,
    /// More fields than [`Limits::fields`] (431).
    TooManyFields,
    /// One field line longer than [`Limits::field_size`] (431).
    FieldTooLarge,
    /// Head longer than [`Limits::head_bytes`] (431).
    HeadTooLarge,
    /// Trailer section longer than [`MAX_TRAILER_BYTES`] (431).
    TrailersTooLarge,
    /// Body larger than [`Limits::max_body`] (413).
    PayloadTooLarge,
    /// HTTP version other than 1.0 or 1.1 (505).
    VersionNotSupported,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferCoding,
    /// An `Expect` value other than `100-continue` (417).
    ExpectationFailed,
    /// Malformed chunked body (400), with a short reason.
    BadChunk(&'static str),
}

impl ParseError {
    /// The refusals whose message is always the same (every variant but the two that carry a
    /// reason), e.g. to render them ahead of time.
    pub const FIXED: [ParseError; 9] = [
        ParseError::UriTooLong,
        ParseError::TooManyFields,
        ParseError::FieldTooLarge,
        ParseError::HeadTooLarge,
        ParseError::TrailersTooLarge,
        ParseError::PayloadTooLarge,
        ParseError::VersionNotSupported,
        ParseError::UnsupportedTransferCoding,
        ParseError::ExpectationFailed,
    ];

    /// The response status for this error: 400, 413, 414, 417, 431, 501 or 505.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::BadRequest(_) | ParseError::BadChunk(_) => 400,
            ParseError::PayloadTooLarge => 413,
            ParseError::UriTooLong => 414,
            ParseError::ExpectationFailed => 417,
            ParseError::TooManyFields
            | ParseError::FieldTooLarge
            | ParseError::HeadTooLarge
            | ParseError::TrailersTooLarge => 431,
            ParseError::UnsupportedTransferCoding => 501,
            ParseError::VersionNotSupported => 505,
        }
    }

    /// Short human text for the response body, e.g. `"conflicting Content-Length"`.
    pub fn message(&self) -> &'static str {
        match self {
            ParseError::BadRequest(reason) | ParseError::BadChunk(reason) => reason,
            ParseError::UriTooLong => "request line too long",
            ParseError::TooManyFields => "too many header fields",
            ParseError::FieldTooLarge => "header field too large",
            ParseError::HeadTooLarge => "request head too large",
            ParseError::TrailersTooLarge => "trailer section too large",
            ParseError::PayloadTooLarge => "request body too large",
            ParseError::VersionNotSupported => "HTTP version not supported",
            ParseError::UnsupportedTransferCoding => "unsupported transfer coding",
            ParseError::ExpectationFailed => "unsupported expectation",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParseError {}

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No Content-Length or Transfer-Encoding: the body is empty.
    None,
    /// `Content-Length: n`; `n` is at most [`Limits::max_body`].
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with [`ChunkedDecoder`].
    Chunked,
}

/// A parsed request head. Every [`Span`] indexes the buffer given to
/// [`parse_head`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Request method, any token (`GET`, `POST`, `PURGE`, ...), case-sensitive.
    pub method: Span,
    /// Request-target exactly as sent.
    pub target: Span,
    /// Origin path: `/a` for `/a?b` and for absolute-form `http://x/a?b`, `*`
    /// for asterisk-form. Never empty: for an absolute-form target without a
    /// path (`http://x` or `http://x?q`) it is a one-byte span holding the
    /// second `/` of `://`, so `path.get(buf)` is `b"/"` as RFC 9112 §3.2.2
    /// requires.
    pub path: Span,
    /// Query after `?`, without the `?` (possibly empty); `None` without `?`.
    pub query: Option<Span>,
    /// Protocol version.
    pub version: Version,
    /// Fields as `(name, value)` in the order sent; values have surrounding
    /// whitespace trimmed. Names keep their case.
    pub headers: Vec<(Span, Span)>,
    /// How the body is delimited.
    pub framing: Framing,
    /// HTTP/1.1: true unless `Connection: close`. HTTP/1.0: true only with
    /// `Connection: keep-alive` (and no `close`).
    pub keep_alive: bool,
    /// HTTP/1.1 request with `Expect: 100-continue`: the client waits for an
    /// interim 100 before sending the body.
    pub expect_continue: bool,
    /// Bytes of the buffer this head occupies, including skipped leading empty
    /// lines and the final blank line: the body (or next request) starts here.
    pub len: usize,
    /// Value of the first `X-Request-Id` field, if any (found in the same pass
    /// as the other checks: the server echoes a sane one).
    pub request_id: Option<Span>,
}

impl Head {
    /// Value of the first field named `name` (ASCII case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.get(buf).eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v.get(buf))
    }
}

thread_local! {
    /// Header slots lent to httparse. They live here rather than on the
    /// stack because connections run on small coroutine stacks and each slot
    /// is 32 bytes. Only ever borrowed inside one `parse_head` call, which
    /// never yields, so no two borrows can overlap.
    static SLOTS: RefCell<Vec<MaybeUninit<httparse::Header<'static>>>> =
        const { RefCell::new(Vec::new()) };
}

/// Parse a request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is incomplete and no limit is exceeded
/// yet: read more and call again with the grown buffer. `Ok(Some(head))` has
/// spans into `buf`; the body starts at `head.len`. Every strict prefix of a
/// valid head gives `Ok(None)`.
///
/// Bare LF line endings are accepted as well as CRLF (RFC 9112 §2.2).
///
/// # Examples
///
/// ```
/// use vigil::internals::parse::{parse_head, Framing, Limits, Version};
///
/// let buf = b"POST /echo?x=1 HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello";
/// let limits = Limits::default();
///
/// // Part of the head: read more.
/// assert!(parse_head(&buf[..20], &limits).unwrap().is_none());
///
/// let head = parse_head(buf, &limits).unwrap().unwrap();
/// assert_eq!(head.method.get(buf), b"POST");
/// assert_eq!(head.path.get(buf), b"/echo");
/// assert_eq!(head.query.unwrap().get(buf), b"x=1");
/// assert_eq!(head.version, Version::Http11);
/// assert_eq!(head.framing, Framing::Length(5));
/// assert!(head.keep_alive);
/// assert_eq!(&buf[head.len..], b"hello");
///
/// let err = parse_head(b"GET / HTTP/1.1\r\n\r\n", &limits).unwrap_err();
/// assert_eq!(err.status(), 400);
/// assert_eq!(err.message(), "missing Host");
/// ```
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, ParseError> {
    // Each field line takes at least 3 bytes ("a:\n"), so more than
    // head_bytes / 3 fields means the head is too large anyway: that bounds the
    // slots even if `fields` is configured huge.
    let max_slots = limits.head_bytes / 3 + 1;
    let nslots = limits.fields.min(max_slots);
    let slots_capped = nslots < limits.fields;
    let with_tls = SLOTS.try_with(|cell| {
        let mut slots = cell.try_borrow_mut().ok()?;
        if slots.len() < nslots {
            slots.resize(nslots, MaybeUninit::uninit());
        }
        // SAFETY: the slots are read as `Header`s only through `req.headers`
        // inside `parse_slots`, while `buf` is borrowed. The vector is only
        // ever handed to httparse as uninitialized slots, so the dangling
        // references it may keep after this call are never read.
        let slots = unsafe { relabel_slots(&mut slots[..nslots]) };
        Some(parse_slots(buf, limits, slots, slots_capped))
    });
    match with_tls {
        Ok(Some(result)) => result,
        // Thread-local storage being torn down (or, impossibly, re-entered):
        // fall back to a heap allocation rather than panic.
        _ => {
            let mut slots = vec![MaybeUninit::uninit(); nslots];
            parse_slots(buf, limits, &mut slots, slots_capped)
        }
    }
}

/// Lend the thread's `'static`-typed scratch slots for headers that borrow
/// a shorter-lived buffer.
///
/// # Safety
///
/// Only the lifetime parameter changes, which does not affect layout; but
/// once the returned borrow ends, the slots may hold `Header`s whose
/// references dangle. The caller must never read them as initialized
/// afterwards. (`MaybeUninit` itself has no validity requirement, so merely
/// keeping such bytes is fine.)
unsafe fn relabel_slots<'s, 'b>(
    slots: &'s mut [MaybeUninit<httparse::Header<'static>>],
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    let len = slots.len();
    let ptr = slots.as_mut_ptr().cast::<MaybeUninit<httparse::Header<'b>>>();
    // SAFETY: same allocation, length and layout; exclusive borrow for 's.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// The body of [`parse_head`], with header slots supplied.
fn parse_slots<'b>(
    buf: &'b [u8],
    limits: &Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    slots_capped: bool,
) -> Result<Option<Head>, ParseError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(e) => return Err(syntax_error(buf, limits, e, slots_capped)),
    };

    let base = buf.as_ptr() as usize;
    // Offset of a slice httparse returned; all of them point into `buf`.
    let off = |s: &[u8]| s.as_ptr() as usize - base;
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        unreachable!("httparse returned Complete without a request line");
    };
    let method_start = off(method.as_bytes());
    let target_start = off(target.as_bytes());
    let target_end = target_start + target.len();
    // method SP target SP "HTTP/1.x": httparse accepts single spaces only.
    if target_end + 1 + 8 - method_start > limits.request_line {
        return Err(ParseError::UriTooLong);
    }
    if len > limits.head_bytes || len > u32::MAX as usize {
        return Err(ParseError::HeadTooLarge);
    }
    let version = if minor == 1 { Version::Http11 } else { Version::Http10 };
    let (path, query) = split_target(buf, target_start, target_end)?;
    // The asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4).
    if path.get(buf) == b"*" && method != "OPTIONS" {
        return Err(ParseError::BadRequest("asterisk-form request-target is for OPTIONS only"));
    }

    // The blank line that ends the head is "\r\n" or "\n".
    let blank_start = if buf[len - 2] == b'\r' { len - 2 } else { len - 1 };
    let mut fields = FieldState::default();
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut request_id = None;
    for (i, h) in req.headers.iter().enumerate() {
        let name = h.name.as_bytes();
        let name_start = off(name);
        let value_start = off(h.value);
        let value = Span::new(value_start, value_start + h.value.len());

        // Raw line length: up to the next line's start minus its terminator.
        let next_line = match req.headers.get(i + 1) {
            Some(next) => off(next.name.as_bytes()),
            None => blank_start,
        };
        let line_end = next_line - 1 - usize::from(buf[next_line - 2] == b'\r');
        if line_end - name_start > limits.field_size {
            return Err(ParseError::FieldTooLarge);
        }

        fields.observe(name, h.value)?;
        if name.len() == 12 && request_id.is_none() && name.eq_ignore_ascii_case(b"x-request-id") {
            request_id = Some(value);
        }
        headers.push((Span::new(name_start, name_start + name.len()), value));
    }

    let framing = fields.framing(version, limits)?;
    let keep_alive = match version {
        Version::Http11 => !fields.close,
        Version::Http10 => fields.keep_alive && !fields.close,
    };
    Ok(Some(Head {
        method: Span::new(method_start, method_start + method.len()),
        target: Span::new(target_start, target_end),
        path,
        query,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: fields.expect_continue && version == Version::Http11,
        len,
        request_id,
    }))
}

/// What the single pass over the fields has learned so far.
#[derive(Default)]
struct FieldState<'b> {
    hosts: u32,
    content_length: Option<u64>,
    /// The first Content-Length field's value, as sent (a repeat must match it exactly).
    content_length_text: Option<&'b [u8]>,
    /// At least one Transfer-Encoding field was seen.
    te_seen: bool,
    /// Some non-empty coding was listed.
    te_any: bool,
    /// The last coding listed so far is `chunked`.
    te_last_chunked: bool,
    /// `chunked` was followed by another coding.
    te_chunked_not_last: bool,
    /// A coding other than `chunked` was listed.
    te_other: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl<'b> FieldState<'b> {
    /// Account for one field. Names are compared by length first, so most
    /// fields cost one integer compare.
    #[inline]
    fn observe(&mut self, name: &[u8], value: &'b [u8]) -> Result<(), ParseError> {
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.hosts += 1;
                if self.hosts > 1 {
                    return Err(ParseError::BadRequest("multiple Host fields"));
                }
                if !value.iter().all(|&b| is_host_char(b)) {
                    return Err(ParseError::BadRequest("invalid Host"));
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"100-continue") {
                        self.expect_continue = true;
                    } else {
                        return Err(ParseError::ExpectationFailed);
                    }
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for item in list_items(value) {
                    if item.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.observe_content_length(value)?;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.te_seen = true;
                for item in list_items(value) {
                    // transfer-coding = token *( OWS ";" OWS transfer-parameter )
                    let coding = match item.iter().position(|&b| b == b';') {
                        Some(semi) => trim_ows(&item[..semi]),
                        None => item,
                    };
                    if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                        return Err(ParseError::BadRequest("invalid Transfer-Encoding"));
                    }
                    if self.te_last_chunked {
                        self.te_chunked_not_last = true;
                    }
                    self.te_any = true;
                    // `chunked` takes no parameters, so `chunked;x=y` is "other".
                    self.te_last_chunked = item.eq_ignore_ascii_case(b"chunked");
                    if !self.te_last_chunked {
                        self.te_other = true;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `Content-Length = 1*DIGIT`, one value per field (RFC 9110 §8.6 lets a recipient refuse
    /// a list such as `5, 5`; nginx and Go do, and so do we: a proxy in front that reads the
    /// field differently is a classic request-smuggling vector). A repeated field is accepted
    /// only when its value is byte for byte the same as the first (as Go does): whichever of
    /// them a proxy reads, first or last, it reads what we read. Anything else is 400.
    fn observe_content_length(&mut self, value: &'b [u8]) -> Result<(), ParseError> {
        let value = trim_ows(value);
        if value.contains(&b',') {
            return Err(ParseError::BadRequest("Content-Length list"));
        }
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadRequest("invalid Content-Length"));
        }
        if let Some(first) = self.content_length_text {
            return if first == value { Ok(()) } else { Err(ParseError::BadRequest("conflicting Content-Length")) };
        }
        let mut n: u64 = 0;
        for &b in value {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(ParseError::BadRequest("Content-Length overflow"))?;
        }
        self.content_length = Some(n);
        self.content_length_text = Some(value);
        Ok(())
    }

    /// Decide the body framing once all fields are seen (RFC 9112 §6.1, §6.3).
    fn framing(&self, version: Version, limits: &Limits) -> Result<Framing, ParseError> {
        if version == Version::Http11 && self.hosts == 0 {
            return Err(ParseError::BadRequest("missing Host"));
        }
        if self.te_seen {
            if version == Version::Http10 {
                return Err(ParseError::BadRequest("Transfer-Encoding in HTTP/1.0"));
            }
            if self.content_length.is_some() {
                return Err(ParseError::BadRequest("both Content-Length and Transfer-Encoding"));
            }
            if !self.te_any {
                return Err(ParseError::BadRequest("empty Transfer-Encoding"));
            }
            if self.te_chunked_not_last {
                return Err(ParseError::BadRequest("chunked is not the final coding"));
            }
            if self.te_other {
                return Err(ParseError::UnsupportedTransferCoding);
            }
            return Ok(Framing::Chunked);
        }
        match self.content_length {
            Some(n) if n > limits.max_body => Err(ParseError::PayloadTooLarge),
            Some(n) => Ok(Framing::Length(n)),
            None => Ok(Framing::None),
        }
    }
}

/// Split a request-target into path and query (RFC 9112 §3.2).
fn split_target(buf: &[u8], start: usize, end: usize) -> Result<(Span, Option<Span>), ParseError> {
    let target = &buf[start..end];
    let path_start = match target[0] {
        // origin-form
        b'/' => start,
        // asterisk-form
        b'*' if target.len() == 1 => return Ok((Span::new(start, end), None)),
        // absolute-form; anything else (authority-form, relative) is refused
        _ => {
            let scheme_len = if starts_with_ignore_case(target, b"http://") {
                7
            } else if starts_with_ignore_case(target, b"https://") {
                8
            } else {
                return Err(ParseError::BadRequest("invalid request-target"));
            };
            let authority = &target[scheme_len..];
            let authority_len =
                authority.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(authority.len());
            if authority_len == 0 || authority[..authority_len].contains(&b'@') {
                return Err(ParseError::BadRequest("invalid request-target"));
            }
            let path_start = start + scheme_len + authority_len;
            if buf.get(path_start) != Some(&b'/') {
                // No path: point at the second '/' of "://" so that the path
                // reads "/" (RFC 9112 §3.2.2).
                let slash = start + scheme_len - 1;
                let query = query_span(buf, path_start, end)?;
                return Ok((Span::new(slash, slash + 1), query));
            }
            path_start
        }
    };
    let path_end = buf[path_start..end].iter().position(|&b| b == b'?' || b == b'#').map_or(end, |i| path_start + i);
    Ok((Span::new(path_start, path_end), query_span(buf, path_end, end)?))
}

/// The query of `buf[at..end]`, which is empty or starts with `?` or `#`.
/// Fragments are not part of a request-target (RFC 9112 §3.2), so `#` is 400.
fn query_span(buf: &[u8], at: usize, end: usize) -> Result<Option<Span>, ParseError> {
    match buf.get(at) {
        _ if at == end => Ok(None),
        Some(b'?') if !buf[at + 1..end].contains(&b'#') => Ok(Some(Span::new(at + 1, end))),
        _ => Err(ParseError::BadRequest("fragment in request-target")),
    }
}

/// Limit checks for an incomplete head, so that oversized input is refused
/// before it is all buffered. Consistent with the complete-head checks: a
/// prefix of a head that passes them never fails them.
#[cold]
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let line_start = check_request_line(buf, limits)?;
    if buf.len() >= limits.head_bytes {
        // The head is longer than the buffer, which already is too long.
        return Err(ParseError::HeadTooLarge);
    }
    if let Some(line_start) = line_start {
        // The request line is complete: the bytes after the last LF are the
        // start of a field line (or of the blank line). A final CR may be the
        // start of the CRLF, so it does not count.
        let tail = &buf[line_start..];
        let last = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let partial = &tail[last..];
        let len = partial.len() - usize::from(partial.last() == Some(&b'\r'));
        if len > limits.field_size {
            return Err(ParseError::FieldTooLarge);
        }
    }
    Ok(())
}

/// 414 if the request line (after leading empty lines) is, or will be, longer
/// than the limit. Returns where the line after the request line starts, if
/// the request line is complete.
fn check_request_line(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
    let mut start = 0;
    loop {
        match buf[start..] {
            [b'\n', ..] => start += 1,
            [b'\r', b'\n', ..] => start += 2,
            _ => break,
        }
    }
    // Only the line and its CRLF matter: look no further.
    let rest = &buf[start..];
    let window = &rest[..rest.len().min(limits.request_line.saturating_add(2))];
    let (len, next) = match window.iter().position(|&b| b == b'\n') {
        Some(lf) => (lf, Some(start + lf + 1)),
        None => (window.len(), None),
    };
    let len = len - usize::from(len > 0 && window[len - 1] == b'\r');
    if len > limits.request_line {
        return Err(ParseError::UriTooLong);
    }
    Ok(next)
}

/// Map an httparse error, letting the size limits take precedence so the
/// answer does not depend on how much of the head has arrived.
#[cold]
fn syntax_error(buf: &[u8], limits: &Limits, e: httparse::Error, capped: bool) -> ParseError {
    if let Err(too_long) = check_request_line(buf, limits) {
        return too_long;
    }
    match e {
        httparse::Error::TooManyHeaders if capped => ParseError::HeadTooLarge,
        httparse::Error::TooManyHeaders => ParseError::TooManyFields,
        httparse::Error::Version if is_http_version_like(buf) => ParseError::VersionNotSupported,
        httparse::Error::Version | httparse::Error::Token | httparse::Error::Status => {
            ParseError::BadRequest("invalid request line")
        }
        httparse::Error::HeaderName => ParseError::BadRequest("invalid header field name"),
        httparse::Error::HeaderValue => ParseError::BadRequest("invalid header field value"),
        httparse::Error::NewLine => ParseError::BadRequest("invalid line ending"),
    }
}

/// After `Error::Version`: does the version position hold `HTTP/<digit>`?
/// Then the client speaks some other HTTP version (505); otherwise the line
/// is malformed (`G ET / HTTP/1.1` puts `/ HTTP/1.1` there): 400.
fn is_http_version_like(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let [b'\r' | b'\n', tail @ ..] = rest {
        rest = tail;
    }
    // method SP target SP version
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let version = parts.nth(2).unwrap_or_default();
    version.len() >= 6 && version.starts_with(b"HTTP/") && version[5].is_ascii_digit()
}

/// Items of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed, empty
/// items skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|item| !item.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// tchar (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in `Host = uri-host [ ":" port ]`: unreserved, pct-encoded,
/// sub-delims, ':' and the IP-literal brackets.
fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b)
}

/// Incremental decoder for `Transfer-Encoding: chunked` bodies
/// (RFC 9112 §7.1).
///
/// Chunk extensions are accepted and ignored, trailer fields are checked for
/// syntax and discarded, and the body is capped at `max_body`. The decoder
/// can stop at any byte boundary: it keeps partial state itself and consumes
/// all input it is given until the body ends. After an error it keeps
/// returning that error.
///
/// # Examples
///
/// ```
/// use vigil::internals::parse::ChunkedDecoder;
///
/// let mut decoder = ChunkedDecoder::new(1024);
/// let mut body = Vec::new();
///
/// // The input may end anywhere, here inside the chunk data.
/// assert_eq!(decoder.decode(b"5;ext=1\r\nhel", &mut body).unwrap(), (12, false));
/// let input = b"lo\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n";
/// let (used, done) = decoder.decode(input, &mut body).unwrap();
/// assert!(done);
/// assert_eq!(body, b"hello");
/// // The next pipelined request is left alone.
/// assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
///
/// let err = ChunkedDecoder::new(1024).decode(b"zz\r\n", &mut body).unwrap_err();
/// assert_eq!(err.status(), 400);
/// ```
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    /// Where in the chunked grammar the next input byte falls.
    state: Chunk,
    /// Size of the chunk whose size line is being read.
    size: u64,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Bytes of the current size line so far (bounded by `MAX_CHUNK_SIZE_LINE`).
    line_len: usize,
    /// Bytes of the trailer section so far (bounded by `MAX_TRAILER_BYTES`).
    trailer_len: usize,
    /// Body bytes declared by chunk sizes so far.
    body_len: u64,
    /// Largest body allowed; more is 413.
    max_body: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// First hex digit of a chunk size.
    SizeStart,
    /// Further hex digits.
    Size,
    /// Whitespace after the size, before `;` or CRLF.
    SizeWs,
    /// Chunk extensions up to CR.
    Ext,
    /// LF ending the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// CR after chunk data.
    DataCr,
    /// LF after chunk data.
    DataLf,
    /// Start of a trailer line, or CR of the final blank line.
    TrailerStart,
    /// Trailer field name.
    TrailerName,
    /// Trailer field value up to CR.
    TrailerValue,
    /// LF ending a trailer line.
    TrailerLf,
    /// LF of the final blank line.
    EndLf,
    /// Body complete.
    Done,
    /// An error was returned; it is returned again.
    Failed(ParseError),
}

impl ChunkedDecoder {
    /// A decoder for one chunked body of at most `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: Chunk::SizeStart,
            size: 0,
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
            body_len: 0,
            max_body,
        }
    }

    /// Whether the last chunk and the trailer section have been decoded.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decode from `input`, appending body bytes to `out`.
    ///
    /// Returns `(consumed, done)`. Until `done`, all of `input` is consumed;
    /// call again with the next bytes. Once `done` (the last chunk and the
    /// trailer section are complete), bytes after the body are left
    /// unconsumed: they belong to the next request.
    ///
    /// # Errors
    ///
    /// [`ParseError::BadChunk`] (400) for malformed sizes, extensions, CRLFs
    /// or trailers, and for a size line over [`MAX_CHUNK_SIZE_LINE`];
    /// [`ParseError::PayloadTooLarge`] (413) as soon as a chunk size takes the
    /// body over `max_body`; [`ParseError::TrailersTooLarge`] (431) for a
    /// trailer section over [`MAX_TRAILER_BYTES`].
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ParseError> {
        match self.decode_inner(input, out) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.state = Chunk::Failed(e);
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ParseError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == Chunk::Data {
                let take = (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                Chunk::SizeStart | Chunk::Size | Chunk::SizeWs | Chunk::Ext => self.size_line(b)?,
                Chunk::SizeLf => match b {
                    b'\n' if self.size == 0 => Chunk::TrailerStart,
                    b'\n' => {
                        self.remaining = self.size;
                        Chunk::Data
                    }
                    _ => return Err(ParseError::BadChunk("bare CR in chunk size line")),
                },
                Chunk::Data => unreachable!("handled above"),
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    _ => return Err(ParseError::BadChunk("missing CRLF after chunk data")),
                },
                Chunk::DataLf => match b {
                    b'\n' => {
                        self.size = 0;
                        self.line_len = 0;
                        Chunk::SizeStart
                    }
                    _ => return Err(ParseError::BadChunk("missing CRLF after chunk data")),
                },
                Chunk::TrailerStart | Chunk::TrailerName | Chunk::TrailerValue | Chunk::TrailerLf | Chunk::EndLf => {
                    self.trailer_len += 1;
                    if self.trailer_len > MAX_TRAILER_BYTES {
                        return Err(ParseError::TrailersTooLarge);
                    }
                    let next = trailer_step(self.state, b)?;
                    if next == Chunk::Done {
                        self.state = Chunk::Done;
                        return Ok((i, true));
                    }
                    next
                }
                Chunk::Done => return Ok((i - 1, true)),
                Chunk::Failed(e) => return Err(e),
            };
        }
        match self.state {
            Chunk::Done => Ok((i, true)),
            Chunk::Failed(e) => Err(e),
            _ => Ok((i, false)),
        }
    }

    /// One byte of a chunk-size line:
    /// `chunk-size [ chunk-ext ] CRLF`, `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
    #[inline]
    fn size_line(&mut self, b: u8) -> Result<Chunk, ParseError> {
        if b != b'\r' {
            self.line_len += 1;
            if self.line_len > MAX_CHUNK_SIZE_LINE {
                return Err(ParseError::BadChunk("chunk size line too long"));
            }
        }
        let state = self.state;
        if matches!(state, Chunk::SizeStart | Chunk::Size) {
            if let Some(d) = hex_value(b) {
                if self.size > u64::MAX >> 4 {
                    return Err(ParseError::BadChunk("chunk size overflow"));
                }
                self.size = self.size << 4 | u64::from(d);
                return Ok(Chunk::Size);
            }
            if state == Chunk::SizeStart {
                return Err(ParseError::BadChunk("invalid chunk size"));
            }
            // End of the digits: the declared size is known.
            if self.size > self.max_body - self.body_len {
                return Err(ParseError::PayloadTooLarge);
            }
            self.body_len += self.size;
        }
        match (state, b) {
            (_, b'\n') => Err(ParseError::BadChunk("bare LF in chunk size line")),
            (Chunk::Ext, b'\r') | (Chunk::Size | Chunk::SizeWs, b'\r') => Ok(Chunk::SizeLf),
            (Chunk::Ext, b'\t' | b' '..=b'~' | 0x80..=0xff) => Ok(Chunk::Ext),
            (Chunk::Ext, _) => Err(ParseError::BadChunk("invalid chunk extension")),
            (Chunk::Size | Chunk::SizeWs, b';') => Ok(Chunk::Ext),
            (Chunk::Size | Chunk::SizeWs, b' ' | b'\t') => Ok(Chunk::SizeWs),
            _ => Err(ParseError::BadChunk("invalid chunk size")),
        }
    }
}

/// One byte of the trailer section: `*( field-line CRLF ) CRLF`.
#[inline]
fn trailer_step(state: Chunk, b: u8) -> Result<Chunk, ParseError> {
    Ok(match (state, b) {
        (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
        (Chunk::TrailerStart, b) if is_tchar(b) => Chunk::TrailerName,
        (Chunk::TrailerName, b) if is_tchar(b) => Chunk::TrailerName,
        (Chunk::TrailerName, b':') => Chunk::TrailerValue,
        (Chunk::TrailerValue, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerValue, b'\t' | b' '..=b'~' | 0x80..=0xff) => Chunk::TrailerValue,
        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::EndLf, b'\n') => Chunk::Done,
        (Chunk::TrailerLf | Chunk::EndLf, _) => return Err(ParseError::BadChunk("bare CR in trailer section")),
        (_, b'\n') => return Err(ParseError::BadChunk("bare LF in trailer section")),
        _ => return Err(ParseError::BadChunk("invalid trailer field")),
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, ParseError> {
        parse_head(raw, &Limits::default())
    }

    fn ok(raw: &[u8]) -> Head {
        match parse(raw) {
            Ok(Some(head)) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn err(raw: &[u8]) -> ParseError {
        match parse(raw) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    /// An HTTP/1.1 GET with `Host: x` and the given extra field lines.
    fn get_with(fields: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes()
    }

    fn bad(raw: &[u8]) -> &'static str {
        match err(raw) {
            ParseError::BadRequest(reason) => reason,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn the_first_x_request_id_is_found_in_the_same_pass_whatever_its_case() {
        let raw = get_with("x-REQUEST-id: abc\r\nX-Request-Id: second\r\n");
        let head = ok(&raw);
        assert_eq!(head.request_id.map(|s| s.get(&raw)), Some(&b"abc"[..]));
        assert_eq!(head.request_id.map(|s| s.get(&raw)), head.header(&raw, "x-request-id"));
        assert_eq!(ok(&get_with("X-Request-Ids: no\r\n")).request_id, None);
    }

    fn decode_all(input: &[u8], max_body: u64) -> Result<(usize, Vec<u8>), ParseError> {
        let mut body = Vec::new();
        let (used, done) = ChunkedDecoder::new(max_body).decode(input, &mut body)?;
        assert!(done, "body incomplete");
        Ok((used, body))
    }

    // ---- request line -------------------------------------------------

    #[test]
    fn simple_get_has_spans_into_buffer() {
        let raw = b"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nX-Y:  z \r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.method.get(raw), b"GET");
        assert_eq!(head.target.get(raw), b"/a/b?c=d&e");
        assert_eq!(head.path.get(raw), b"/a/b");
        assert_eq!(head.query.unwrap().get(raw), b"c=d&e");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.headers[0].0.get(raw), b"Host");
        assert_eq!(head.headers[0].1.get(raw), b"example.com");
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(head.len, raw.len());
    }

    #[test]
    fn header_values_are_trimmed_and_order_kept() {
        let raw = get_with("B: \t two words \t\r\nA:\r\nC:x\r\n");
        let head = ok(&raw);
        let fields: Vec<_> = head.headers.iter().map(|(n, v)| (n.get(&raw), v.get(&raw))).collect();
        assert_eq!(fields, [(&b"Host"[..], &b"x"[..]), (b"B", b"two words"), (b"A", b""), (b"C", b"x"),]);
        assert_eq!(head.header(&raw, "b"), Some(&b"two words"[..]));
        assert_eq!(head.header(&raw, "missing"), None);
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let raw = b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let head = ok(raw);
        assert_eq!(head.method.get(raw), b"GET");
        assert_eq!(head.len, raw.len() - 4);
    }

    #[test]
    fn leading_empty_lines_count_toward_head_bytes() {
        let limits = Limits { head_bytes: 40, ..Limits::default() };
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"; // 27 bytes
        assert!(parse_head(head, &limits).unwrap().is_some());
        let mut raw = b"\r\n".repeat(7);
        raw.extend_from_slice(head);
        assert_eq!(parse_head(&raw, &limits), Err(ParseError::HeadTooLarge));
        // Endless empty lines are refused before a request line shows up.
        let raw = b"\r\n".repeat(30);
        assert_eq!(parse_head(&raw, &limits), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let raw = b"GET / HTTP/1.1\nHost: x\nA: b\n\n";
        let head = ok(raw);
        assert_eq!(head.headers[1].1.get(raw), b"b");
        assert_eq!(head.len, raw.len());
    }

    #[test]
    fn incomplete_head_returns_none() {
        let raw = get_with("Content-Length: 3\r\n");
        for cut in 0..raw.len() {
            assert_eq!(parse(&raw[..cut]), Ok(None), "cut {cut}");
        }
        assert!(ok(&raw).len == raw.len());
    }

    #[test]
    fn custom_method_is_accepted() {
        for method in ["PURGE", "M-SEARCH", "get", "X!#$%&'*+-.^_`|~1"] {
            let raw = format!("{method} / HTTP/1.1\r\nHost: x\r\n\r\n");
            let head = ok(raw.as_bytes());
            assert_eq!(head.method.get(raw.as_bytes()), method.as_bytes());
        }
    }

    #[test]
    fn bad_method_is_400() {
        for raw in [
            &b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GE@ / HTTP/1.1\r\nHost: x\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(err(raw).status(), 400, "{raw:?}");
        }
    }

    #[test]
    fn space_in_method_is_400() {
        assert_eq!(bad(b"G ET / HTTP/1.1\r\nHost: x\r\n\r\n"), "invalid request line");
    }

    #[test]
    fn garbage_line_is_400() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"GET / http/1.1\r\nHost: x\r\n\r\n",
            b"GET / FTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(err(raw).status(), 400, "{raw:?}");
        }
    }

    #[test]
    fn unsupported_version_is_505() {
        for version in ["HTTP/9.9", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3"] {
            let raw = format!("GET / {version}\r\nHost: x\r\n\r\n");
            assert_eq!(err(raw.as_bytes()), ParseError::VersionNotSupported, "{version}");
        }
        // Known as soon as the version is.
        assert_eq!(err(b"GET / HTTP/2"), ParseError::VersionNotSupported);
    }

    #[test]
    fn http10_is_parsed() {
        let head = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive);
    }

    #[test]
    fn long_request_line_is_414() {
        let limits = Limits { request_line: 30, ..Limits::default() };
        // "GET /" + path + " HTTP/1.1" = 14 + path bytes.
        let line = |path_len: usize| format!("GET /{} HTTP/1.1", "a".repeat(path_len));
        let at_limit = format!("{}\r\nHost: x\r\n\r\n", line(16));
        assert!(parse_head(at_limit.as_bytes(), &limits).unwrap().is_some());
        let over = format!("{}\r\nHost: x\r\n\r\n", line(17));
        assert_eq!(parse_head(over.as_bytes(), &limits), Err(ParseError::UriTooLong));
    }

    #[test]
    fn incomplete_long_request_line_is_414() {
        let limits = Limits { request_line: 30, ..Limits::default() };
        let raw = format!("GET /{}", "a".repeat(26)); // 31 bytes, no LF yet
        assert_eq!(parse_head(&raw.as_bytes()[..30], &limits), Ok(None));
        assert_eq!(parse_head(raw.as_bytes(), &limits), Err(ParseError::UriTooLong));
        // A complete line at the limit followed by CR is not over it.
        let line = format!("GET /{} HTTP/1.1\r", "a".repeat(16));
        assert_eq!(parse_head(line.as_bytes(), &limits), Ok(None));
        // Leading empty lines do not count toward the line.
        let raw = format!("\r\n\r\n{line}");
        assert_eq!(parse_head(raw.as_bytes(), &limits), Ok(None));
    }

    #[test]
    fn request_line_limit_wins_over_head_limit() {
        let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        assert_eq!(err(raw.as_bytes()), ParseError::UriTooLong);
        assert_eq!(err(&raw.as_bytes()[..9000]), ParseError::UriTooLong);
    }

    #[test]
    fn request_line_limit_wins_over_syntax_error() {
        let raw = format!("GET /{}\x01 HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(err(raw.as_bytes()), ParseError::UriTooLong);
    }

    // ---- request-target ----------------------------------------------

    #[test]
    fn origin_form_splits_path_and_query() {
        let raw = b"GET /p?q?r=/s HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.path.get(raw), b"/p");
        assert_eq!(head.query.unwrap().get(raw), b"q?r=/s");
        let raw = b"GET /p? HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.path.get(raw), b"/p");
        assert_eq!(head.query.unwrap().get(raw), b"");
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(ok(raw).query, None);
    }

    #[test]
    fn absolute_form_gives_origin_path_and_query() {
        let raw = b"GET http://example.com:8080/a/b?c HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.target.get(raw), b"http://example.com:8080/a/b?c");
        assert_eq!(head.path.get(raw), b"/a/b");
        assert_eq!(head.query.unwrap().get(raw), b"c");
        let raw = b"GET HTTPS://x/ HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(ok(raw).path.get(raw), b"/");
    }

    #[test]
    fn absolute_form_without_path_is_root() {
        let raw = b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.path.get(raw), b"/");
        assert_eq!(head.query, None);
        let raw = b"OPTIONS https://x?q=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.path.get(raw), b"/");
        assert_eq!(head.query.unwrap().get(raw), b"q=1");
    }

    #[test]
    fn asterisk_form_is_accepted_for_options_only() {
        let raw = b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.path.get(raw), b"*");
        assert_eq!(head.query, None);
        for method in ["GET", "HEAD", "POST", "options"] {
            let raw = format!("{method} * HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(bad(raw.as_bytes()), "asterisk-form request-target is for OPTIONS only", "{method}");
        }
    }

    #[test]
    fn other_targets_are_400() {
        for target in [
            "example.com:443", // authority-form: we are no proxy
            "abc",
            "*x",
            "**",
            "ftp://x/",
            "http://",
            "http:///a",
            "http://user@x/",
            "/a#frag",
            "/a?b#frag",
            "http://x#f",
        ] {
            let raw = format!("CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(err(raw.as_bytes()).status(), 400, "{target}");
        }
    }

    // ---- field syntax ----------------------------------------------------

    #[test]
    fn obs_fold_is_400() {
        assert_eq!(err(&get_with("X-A: one\r\n two\r\n")).status(), 400);
        assert_eq!(err(&get_with("X-A: one\r\n\ttwo\r\n")).status(), 400);
    }

    #[test]
    fn space_before_colon_is_400() {
        assert_eq!(bad(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"), "invalid header field name");
        assert_eq!(err(&get_with("X-A\t: y\r\n")).status(), 400);
    }

    #[test]
    fn control_bytes_in_value_are_400() {
        for value in ["a\0b", "a\rb", "a\x7fb", "a\x01b"] {
            let raw = get_with(&format!("X-A: {value}\r\n"));
            assert_eq!(err(&raw).status(), 400, "{value:?}");
        }
    }

    #[test]
    fn bad_field_name_chars_are_400() {
        for name in ["X(A", "X/A", "X\"A", "", "X A", "X@"] {
            let raw = get_with(&format!("{name}: v\r\n"));
            assert_eq!(err(&raw).status(), 400, "{name:?}");
        }
    }

    #[test]
    fn obs_text_in_value_is_kept() {
        let raw = get_with("X-A: caf\u{e9}\r\n");
        let head = ok(&raw);
        assert_eq!(head.headers[1].1.get(&raw), "caf\u{e9}".as_bytes());
    }

    // ---- size limits ---------------------------------------------------

    #[test]
    fn too_many_fields_is_431() {
        let limits = Limits { fields: 5, ..Limits::default() };
        let fields = |n: usize| (1..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        assert!(parse_head(&get_with(&fields(5)), &limits).unwrap().is_some());
        assert_eq!(parse_head(&get_with(&fields(6)), &limits), Err(ParseError::TooManyFields));
        // Reported before the head is complete.
        let partial = get_with(&fields(6));
        assert_eq!(parse_head(&partial[..partial.len() - 2], &limits), Err(ParseError::TooManyFields));
    }

    #[test]
    fn scratch_slots_grow_with_the_field_limit() {
        let fields = (1..150).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        let raw = get_with(&fields);
        let small = Limits { fields: 2, ..Limits::default() };
        assert_eq!(parse_head(&raw, &small), Err(ParseError::TooManyFields));
        let big = Limits { fields: 200, ..Limits::default() };
        assert_eq!(parse_head(&raw, &big).unwrap().unwrap().headers.len(), 150);
        assert_eq!(parse_head(&raw, &small), Err(ParseError::TooManyFields));
    }

    #[test]
    fn huge_field_limit_is_bounded_by_head_bytes() {
        let limits = Limits { fields: usize::MAX, head_bytes: 300, ..Limits::default() };
        let fields = (0..200).map(|_| "a:\n").collect::<String>();
        let raw = format!("GET / HTTP/1.0\n{fields}\n");
        assert_eq!(parse_head(raw.as_bytes(), &limits), Err(ParseError::HeadTooLarge));
        assert!(parse_head(b"GET / HTTP/1.0\na:\n\n", &limits).unwrap().is_some());
    }

    #[test]
    fn field_too_large_is_431() {
        let limits = Limits { field_size: 20, ..Limits::default() };
        // "X-A: " is 5 bytes, so a 15-byte value is exactly at the limit.
        let line = |n: usize| format!("X-A: {}\r\n", "v".repeat(n));
        let at_limit = get_with(&line(15));
        assert!(parse_head(&at_limit, &limits).unwrap().is_some());
        let over = get_with(&line(16));
        assert_eq!(parse_head(&over, &limits), Err(ParseError::FieldTooLarge));
        // Trailing whitespace counts: it is part of the field line.
        let spaced = get_with(&format!("X-A: {}   \r\n", "v".repeat(13)));
        assert_eq!(parse_head(&spaced, &limits), Err(ParseError::FieldTooLarge));
        // The last field line and bare LF endings are measured the same way.
        let raw = format!("GET / HTTP/1.1\nHost: x\nX-A: {}\n\n", "v".repeat(16));
        assert_eq!(parse_head(raw.as_bytes(), &limits), Err(ParseError::FieldTooLarge));
    }

    #[test]
    fn incomplete_field_too_large_is_431() {
        let limits = Limits { field_size: 20, ..Limits::default() };
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nX-A: {}", "v".repeat(15));
        assert_eq!(parse_head(raw.as_bytes(), &limits), Ok(None));
        let raw_cr = format!("{raw}\r");
        assert_eq!(parse_head(raw_cr.as_bytes(), &limits), Ok(None));
        let raw = format!("{raw}v");
        assert_eq!(parse_head(raw.as_bytes(), &limits), Err(ParseError::FieldTooLarge));
    }

    #[test]
    fn head_too_large_is_431() {
        let limits = Limits { head_bytes: 64, ..Limits::default() };
        let fill = |n: usize| get_with(&format!("X-A: {}\r\n", "v".repeat(n)));
        // 27 bytes of request + "X-A: " + CRLF = 34 + n.
        assert!(parse_head(&fill(30), &limits).unwrap().is_some());
        assert_eq!(parse_head(&fill(31), &limits), Err(ParseError::HeadTooLarge));
        // Incomplete: refused once the buffer holds head_bytes without an end.
        let partial = fill(31);
        assert_eq!(parse_head(&partial[..63], &limits), Ok(None));
        assert_eq!(parse_head(&partial[..64], &limits), Err(ParseError::HeadTooLarge));
    }

    // ---- Host -----------------------------------------------------------

    #[test]
    fn missing_host_http11_is_400() {
        assert_eq!(bad(b"GET / HTTP/1.1\r\n\r\n"), "missing Host");
        assert_eq!(bad(b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n"), "missing Host");
    }

    #[test]
    fn http10_without_host_is_ok() {
        assert!(ok(b"GET / HTTP/1.0\r\n\r\n").headers.is_empty());
    }

    #[test]
    fn double_host_is_400() {
        assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), "multiple Host fields");
        assert_eq!(bad(b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n"), "multiple Host fields");
    }

    #[test]
    fn empty_host_is_allowed() {
        let raw = b"GET / HTTP/1.1\r\nHost:\r\n\r\n";
        assert_eq!(ok(raw).headers[0].1.get(raw), b"");
    }

    #[test]
    fn host_forms_are_accepted() {
        for host in ["example.com", "example.com:8080", "[::1]:80", "10.0.0.1", "xn--bcher-kva.ch"] {
            ok(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes());
        }
    }

    #[test]
    fn invalid_host_is_400() {
        for host in ["a b", "a/b", "user@x", "x?y", "x#", "caf\u{e9}"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(bad(raw.as_bytes()), "invalid Host", "{host}");
        }
    }

    // ---- Content-Length -----------------------------------------------------

    #[test]
    fn content_length_sets_length_framing() {
        assert_eq!(ok(&get_with("Content-Length: 11\r\n")).framing, Framing::Length(11));
        assert_eq!(ok(&get_with("content-length:0\r\n")).framing, Framing::Length(0));
        assert_eq!(ok(&get_with("Content-Length: 007\r\n")).framing, Framing::Length(7));
    }

    #[test]
    fn malformed_content_length_is_400() {
        for value in ["abc", "-5", "+5", "5 5", "0x10", "", "1e3", "5;", "\u{665}"] {
            let raw = get_with(&format!("Content-Length: {value}\r\n"));
            assert_eq!(bad(&raw), "invalid Content-Length", "{value:?}");
        }
    }

    #[test]
    fn content_length_overflow_is_400() {
        let max = get_with("Content-Length: 18446744073709551615\r\n");
        assert_eq!(err(&max), ParseError::PayloadTooLarge);
        let over = get_with("Content-Length: 18446744073709551616\r\n");
        assert_eq!(bad(&over), "Content-Length overflow");
        let long = get_with(&format!("Content-Length: {}\r\n", "9".repeat(40)));
        assert_eq!(bad(&long), "Content-Length overflow");
    }

    #[test]
    fn byte_identical_repeated_content_lengths_are_accepted() {
        let raw = get_with("Content-Length: 5\r\nContent-Length: 5\r\n");
        assert_eq!(ok(&raw).framing, Framing::Length(5));
        let raw = get_with("Content-Length: 5\r\ncontent-length:  5 \r\n");
        assert_eq!(ok(&raw).framing, Framing::Length(5));
    }

    #[test]
    fn content_length_lists_are_400_even_of_identical_values() {
        for value in ["1000,1000", "5 , 5,5", "5, 6", "5,", ",5", "5,,5"] {
            let raw = get_with(&format!("Content-Length: {value}\r\n"));
            assert_eq!(bad(&raw), "Content-Length list", "{value:?}");
        }
    }

    #[test]
    fn conflicting_content_length_is_400() {
        let raw = get_with("Content-Length: 1\r\nContent-Length: 5\r\n");
        assert_eq!(bad(&raw), "conflicting Content-Length");
        // The same number written differently: a proxy might not read it as we do.
        let raw = get_with("Content-Length: 5\r\nContent-Length: 05\r\n");
        assert_eq!(bad(&raw), "conflicting Content-Length");
    }

    #[test]
    fn content_length_over_max_body_is_413() {
        let limits = Limits { max_body: 100, ..Limits::default() };
        let at = get_with("Content-Length: 100\r\n");
        assert_eq!(parse_head(&at, &limits).unwrap().unwrap().framing, Framing::Length(100));
        let over = get_with("Content-Length: 101\r\n");
        assert_eq!(parse_head(&over, &limits), Err(ParseError::PayloadTooLarge));
    }

    // ---- Transfer-Encoding ------------------------------------------------

    #[test]
    fn chunked_transfer_encoding_is_chunked() {
        for fields in [
            "Transfer-Encoding: chunked\r\n",
            "transfer-encoding: CHUNKED\r\n",
            "Transfer-Encoding:  chunked \t\r\n",
            "Transfer-Encoding: , chunked,\r\n",
        ] {
            assert_eq!(ok(&get_with(fields)).framing, Framing::Chunked, "{fields:?}");
        }
    }

    #[test]
    fn te_in_http10_is_400() {
        let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(bad(raw), "Transfer-Encoding in HTTP/1.0");
    }

    #[test]
    fn cl_and_te_is_400() {
        let raw = get_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n");
        assert_eq!(bad(&raw), "both Content-Length and Transfer-Encoding");
        let raw = get_with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n");
        assert_eq!(bad(&raw), "both Content-Length and Transfer-Encoding");
    }

    #[test]
    fn chunked_not_last_is_400() {
        for fields in [
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(bad(&get_with(fields)), "chunked is not the final coding", "{fields:?}");
        }
    }

    #[test]
    fn other_codings_are_501() {
        for fields in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
        ] {
            assert_eq!(err(&get_with(fields)), ParseError::UnsupportedTransferCoding, "{fields:?}");
        }
    }

    #[test]
    fn empty_or_malformed_transfer_encoding_is_400() {
        assert_eq!(bad(&get_with("Transfer-Encoding:\r\n")), "empty Transfer-Encoding");
        assert_eq!(bad(&get_with("Transfer-Encoding: , \r\n")), "empty Transfer-Encoding");
        for value in ["chun ked", "\"chunked\"", ";x=1", "gzip (x)"] {
            let raw = get_with(&format!("Transfer-Encoding: {value}\r\n"));
            assert_eq!(bad(&raw), "invalid Transfer-Encoding", "{value:?}");
        }
    }

    // ---- Connection, Expect ---------------------------------------------------

    #[test]
    fn connection_close_disables_keep_alive() {
        assert!(!ok(&get_with("Connection: close\r\n")).keep_alive);
        assert!(!ok(&get_with("Connection: Upgrade, CLOSE\r\n")).keep_alive);
        assert!(ok(&get_with("Connection: closed\r\n")).keep_alive);
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(ok(b"GET / HTTP/1.0\r\nConnection: x, keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn close_wins_over_keep_alive() {
        assert!(!ok(&get_with("Connection: keep-alive, close\r\n")).keep_alive);
        let raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
        assert!(!ok(raw).keep_alive);
    }

    #[test]
    fn expect_100_continue_sets_flag() {
        assert!(ok(&get_with("Expect: 100-continue\r\n")).expect_continue);
        assert!(ok(&get_with("expect: 100-Continue\r\n")).expect_continue);
        assert!(!ok(&get_with("Expect:\r\n")).expect_continue);
    }

    #[test]
    fn expect_other_is_417() {
        for value in ["tea", "100-continue, tea", "100-continuex", "200-ok"] {
            let raw = get_with(&format!("Expect: {value}\r\n"));
            assert_eq!(err(&raw), ParseError::ExpectationFailed, "{value}");
        }
        let raw = b"POST / HTTP/1.0\r\nExpect: tea\r\n\r\n";
        assert_eq!(err(raw), ParseError::ExpectationFailed);
    }

    #[test]
    fn http10_ignores_expect_continue() {
        let head = ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(!head.expect_continue);
    }

    // ---- errors ----------------------------------------------------------------

    #[test]
    fn every_error_has_a_status_and_message() {
        let all = [
            (ParseError::BadRequest("bad"), 400),
            (ParseError::BadChunk("chunk"), 400),
            (ParseError::PayloadTooLarge, 413),
            (ParseError::UriTooLong, 414),
            (ParseError::ExpectationFailed, 417),
            (ParseError::TooManyFields, 431),
            (ParseError::FieldTooLarge, 431),
            (ParseError::HeadTooLarge, 431),
            (ParseError::TrailersTooLarge, 431),
            (ParseError::UnsupportedTransferCoding, 501),
            (ParseError::VersionNotSupported, 505),
        ];
        for (e, status) in all {
            assert_eq!(e.status(), status, "{e:?}");
            assert!(!e.message().is_empty());
            assert_eq!(e.to_string(), e.message());
        }
        assert_eq!(ParseError::BadRequest("conflicting Content-Length").message(), "conflicting Content-Length");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(ParseError::UriTooLong);
        assert_eq!(boxed.to_string(), "request line too long");
    }

    #[test]
    fn span_helpers() {
        let span = Span { start: 2, end: 5 };
        assert_eq!(span.get(b"abcdefg"), b"cde");
        assert_eq!(span.len(), 3);
        assert!(!span.is_empty());
        assert!(Span::default().is_empty());
    }

    // ---- chunked bodies ---------------------------------------------------------

    #[test]
    fn chunked_decodes_simple_body() {
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(decode_all(input, 100), Ok((input.len(), b"hello world".to_vec())));
    }

    #[test]
    fn chunked_extensions_and_trailers_are_ignored() {
        let input = b"5;note=1\r\nhello\r\nA ; a=\"b c\";d\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\nY:\r\n\r\n";
        assert_eq!(decode_all(input, 100), Ok((input.len(), b"hello0123456789".to_vec())));
    }

    #[test]
    fn chunked_hex_sizes_and_leading_zeros() {
        let mut input = b"00000010\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 16]);
        input.extend_from_slice(b"\r\naB\r\n");
        input.extend_from_slice(&[b'y'; 0xab]);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (_, body) = decode_all(&input, 1000).unwrap();
        assert_eq!(body.len(), 16 + 0xab);
    }

    #[test]
    fn chunked_stops_at_next_request() {
        let input = b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (used, body) = decode_all(input, 100).unwrap();
        assert_eq!(body, b"ab");
        assert_eq!(&input[used..], b"GET / HTTP/1.1\r\n");
        // Once done, nothing more is consumed.
        let mut decoder = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        decoder.decode(&input[..used], &mut out).unwrap();
        assert!(decoder.is_done());
        assert_eq!(decoder.decode(b"GET", &mut out), Ok((0, true)));
        assert_eq!(decoder.decode(b"", &mut out), Ok((0, true)));
    }

    #[test]
    fn chunked_bad_size_is_400() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b" 1\r\n",
            b"1x\r\n",
            b"0x1\r\n",
            b"1 2\r\n",
        ] {
            let e = decode_all(input, 100).unwrap_err();
            assert!(matches!(e, ParseError::BadChunk(_)), "{input:?}: {e:?}");
        }
    }

    #[test]
    fn chunked_whitespace_before_extension_is_accepted() {
        let input = b"1 \t;a=b\r\nx\r\n0 \r\n\r\n";
        assert_eq!(decode_all(input, 100).unwrap().1, b"x");
    }

    #[test]
    fn chunked_bare_lf_is_400() {
        for input in [
            &b"1\nx\r\n0\r\n\r\n"[..],
            b"1;a\nx\r\n0\r\n\r\n",
            b"1\r\nx\n0\r\n\r\n",
            b"1\r\nx\r\n0\n\r\n",
            b"1\r\nx\r\n0\r\n\n",
            b"1\r\nx\r\n0\r\nA: b\n\r\n",
            b"1\rx\r\n0\r\n\r\n",
        ] {
            let e = decode_all(input, 100).unwrap_err();
            assert!(matches!(e, ParseError::BadChunk(_)), "{input:?}: {e:?}");
        }
    }

    #[test]
    fn chunked_missing_crlf_after_data_is_400() {
        assert_eq!(
            decode_all(b"1\r\nxy\r\n0\r\n\r\n", 100),
            Err(ParseError::BadChunk("missing CRLF after chunk data"))
        );
        assert_eq!(decode_all(b"1\r\nx\rz0\r\n\r\n", 100), Err(ParseError::BadChunk("missing CRLF after chunk data")));
    }

    #[test]
    fn chunked_bad_extension_or_trailer_is_400() {
        for input in [
            &b"1;a\x00\r\nx\r\n0\r\n\r\n"[..],
            b"1;a\x7f\r\nx\r\n0\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nA b: v\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nA: v\x01\r\n\r\n",
            b"0\r\nA\r\n\r\n",
        ] {
            let e = decode_all(input, 100).unwrap_err();
            assert!(matches!(e, ParseError::BadChunk(_)), "{input:?}: {e:?}");
        }
    }

    #[test]
    fn chunked_size_overflow_is_400() {
        let input = b"1ffffffffffffffff\r\n";
        assert_eq!(decode_all(input, u64::MAX), Err(ParseError::BadChunk("chunk size overflow")));
        // The largest size that fits is only limited by max_body.
        let input = b"ffffffffffffffff\r\n";
        assert_eq!(decode_all(input, 10), Err(ParseError::PayloadTooLarge));
    }

    #[test]
    fn chunked_body_over_max_is_413() {
        assert_eq!(decode_all(b"5\r\nhello\r\n0\r\n\r\n", 5).unwrap().1, b"hello");
        assert_eq!(decode_all(b"3\r\nhel\r\n3\r\nlo!\r\n0\r\n\r\n", 5), Err(ParseError::PayloadTooLarge));
        // Refused as soon as the size is read, before any data.
        let mut decoder = ChunkedDecoder::new(5);
        assert_eq!(decoder.decode(b"6;", &mut Vec::new()), Err(ParseError::PayloadTooLarge));
    }

    #[test]
    fn chunked_long_size_line_is_400() {
        let mut at_limit = b"1;".to_vec();
        at_limit.resize(MAX_CHUNK_SIZE_LINE, b'a');
        at_limit.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&at_limit, 10).unwrap().1, b"x");
        let mut over = b"1;".to_vec();
        over.resize(MAX_CHUNK_SIZE_LINE + 1, b'a');
        assert_eq!(
            ChunkedDecoder::new(10).decode(&over, &mut Vec::new()),
            Err(ParseError::BadChunk("chunk size line too long"))
        );
        let zeros = vec![b'0'; MAX_CHUNK_SIZE_LINE + 1];
        assert!(ChunkedDecoder::new(10).decode(&zeros, &mut Vec::new()).is_err());
    }

    #[test]
    fn chunked_trailers_too_large_is_431() {
        let mut input = b"0\r\n".to_vec();
        while input.len() < MAX_TRAILER_BYTES + 10 {
            input.extend_from_slice(b"X-Trailer: some value\r\n");
        }
        let mut decoder = ChunkedDecoder::new(10);
        assert_eq!(decoder.decode(&input, &mut Vec::new()), Err(ParseError::TrailersTooLarge));
    }

    #[test]
    fn chunked_error_is_sticky() {
        let mut decoder = ChunkedDecoder::new(10);
        let e = decoder.decode(b"z", &mut Vec::new()).unwrap_err();
        assert_eq!(decoder.decode(b"1\r\nx\r\n0\r\n\r\n", &mut Vec::new()), Err(e));
        assert_eq!(decoder.decode(b"", &mut Vec::new()), Err(e));
    }

    #[test]
    fn chunked_resumes_at_every_byte() {
        let input = b"5;a=b\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nNEXT";
        let (used, whole) = decode_all(input, 100).unwrap();
        for cut in 0..=input.len() {
            let mut decoder = ChunkedDecoder::new(100);
            let mut body = Vec::new();
            let (a, done_a) = decoder.decode(&input[..cut], &mut body).unwrap();
            assert!(done_a == (cut >= used), "cut {cut}");
            let (b, done) = decoder.decode(&input[a..], &mut body).unwrap();
            assert!(done);
            assert_eq!((a + b, &body), (used, &whole), "cut {cut}");
        }
        let mut decoder = ChunkedDecoder::new(100);
        let mut body = Vec::new();
        let mut consumed = 0;
        for byte in input.chunks(1) {
            let (n, done) = decoder.decode(byte, &mut body).unwrap();
            consumed += n;
            if done {
                break;
            }
        }
        assert_eq!((consumed, body), (used, whole));
    }

    // ---- shared request vectors (/work/shared/vectors/requests.json) -----------

    /// What the parser level should make of a vector.
    enum Want {
        /// Head parses; `keep_alive`, and the body the framing yields.
        Ok(bool, &'static [u8]),
        /// Head parses but the chunked body fails with this status.
        BodyErr(u16),
        /// Head fails with one of these statuses.
        Err(&'static [u16]),
    }

    fn check_vector(name: &str, raw: &[u8], want: Want) {
        let result = parse(raw);
        let head = match (result, &want) {
            (Err(e), Want::Err(statuses)) => {
                assert!(statuses.contains(&e.status()), "{name}: {e:?}");
                return;
            }
            (Ok(Some(head)), Want::Ok(..) | Want::BodyErr(_)) => head,
            (other, _) => panic!("{name}: {other:?}"),
        };
        let rest = &raw[head.len..];
        let body = match head.framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => Ok(rest[..rest.len().min(n as usize)].to_vec()),
            Framing::Chunked => decode_all(rest, Limits::default().max_body).map(|(_, b)| b),
        };
        match (body, want) {
            (Ok(body), Want::Ok(keep_alive, want_body)) => {
                assert_eq!(head.keep_alive, keep_alive, "{name}");
                assert_eq!(body, want_body, "{name}");
            }
            (Err(e), Want::BodyErr(status)) => assert_eq!(e.status(), status, "{name}"),
            (other, _) => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn shared_vectors_parse_as_expected() {
        use Want::*;
        let table: &[(&str, &[u8], Want)] = &[
            ("get-root", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(true, b"")),
            ("head-no-body", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(true, b"")),
            ("http10-closes", b"GET / HTTP/1.0\r\n\r\n", Ok(false, b"")),
            ("connection-close", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Ok(false, b"")),
            ("echo-content-length", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", Ok(true, b"hello world")),
            ("echo-chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", Ok(true, b"hello world")),
            ("echo-chunked-ext-trailer", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;note=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n", Ok(true, b"hello")),
            ("absolute-form", b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", Ok(true, b"")),
            ("leading-crlf", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(true, b"")),
            ("not-found", b"GET /no/such/route HTTP/1.1\r\nHost: x\r\n\r\n", Ok(true, b"")),
            ("garbage-line", b"GARBAGE\r\n\r\n", Err(&[400])),
            ("space-in-method", b"G ET / HTTP/1.1\r\nHost: x\r\n\r\n", Err(&[400])),
            ("bad-version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", Err(&[400, 505])),
            ("missing-host-http11", b"GET / HTTP/1.1\r\n\r\n", Err(&[400])),
            ("double-host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(&[400])),
            ("content-length-letters", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello", Err(&[400])),
            ("content-length-negative", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", Err(&[400])),
            ("content-length-conflict", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello", Err(&[400])),
            ("cl-and-te", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Err(&[400])),
            ("te-unknown", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", Err(&[400, 501])),
            ("te-chunked-not-last", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", Err(&[400, 501])),
            ("te-in-http10", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Err(&[400])),
            ("bad-chunk-size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", BodyErr(400)),
            ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", Err(&[400])),
            ("space-before-colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", Err(&[400])),
            ("nul-in-header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", Err(&[400])),
            ("body-too-large", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nx", Err(&[413])),
            ("expect-unknown", b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: tea\r\nContent-Length: 2\r\n\r\nok", Err(&[417])),
        ];
        for (name, raw, want) in table {
            let want = match want {
                Ok(k, b) => Ok(*k, b),
                BodyErr(s) => BodyErr(*s),
                Err(s) => Err(s),
            };
            check_vector(name, raw, want);
        }

        // Vectors too long to spell out, built the same way.
        let hops: String = (0..40).map(|i| format!("X-Forwarded-Hop-{i}: 10.0.0.{i}\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{hops}\r\n");
        assert_eq!(raw.len(), 1247);
        check_vector("many-ordinary-headers", raw.as_bytes(), Ok(true, b""));

        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(raw.len(), 70_036);
        check_vector("header-too-large", raw.as_bytes(), Err(&[431]));

        let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(raw.len(), 3217);
        check_vector("too-many-headers", raw.as_bytes(), Err(&[431]));

        let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        assert_eq!(raw.len(), 70_027);
        check_vector("uri-too-long", raw.as_bytes(), Err(&[414]));
    }

    #[test]
    fn shared_vector_expect_continue_waits_for_body() {
        let raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let head = ok(raw);
        assert!(head.expect_continue);
        assert_eq!(head.framing, Framing::Length(2));
        assert_eq!(head.len, raw.len());
    }

    #[test]
    fn shared_vectors_pipelined_heads_follow_each_other() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3);
        let mut at = 0;
        for _ in 0..3 {
            let head = ok(&raw[at..]);
            assert_eq!(head.framing, Framing::None);
            at += head.len;
        }
        assert_eq!(at, raw.len());

        let raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = ok(raw);
        assert_eq!(head.framing, Framing::Chunked);
        let (used, body) = decode_all(&raw[head.len..], 100).unwrap();
        assert_eq!(body, b"ab");
        let next = ok(&raw[head.len + used..]);
        assert_eq!(next.len, raw.len() - head.len - used);
    }
}
