//! The request a handler sees: an owned copy of the head, the body, and where it came from.

use std::net::SocketAddr;

use super::parse::{Head, Span, Version};

/// One HTTP request, fully read (head and body) before its handler runs.
///
/// Header lookups are case-insensitive. The request owns a single copy of the raw head bytes;
/// accessors return slices of it, so reading a request allocates nothing.
///
/// ```
/// let req = vigil::Request::builder("GET", "/items/7?full=1")
///     .header("Accept", "text/plain")
///     .build();
/// assert_eq!(req.method(), "GET");
/// assert_eq!(req.path(), "/items/7");
/// assert_eq!(req.query(), Some("full=1"));
/// assert_eq!(req.query_param("full").as_deref(), Some("1"));
/// assert_eq!(req.header("accept"), Some("text/plain"));
/// ```
pub struct Request {
    raw: Box<[u8]>,
    head: Head,
    body: Vec<u8>,
    peer: SocketAddr,
    id: Box<str>,
    params: Vec<(Box<str>, Box<str>)>,
}

impl Request {
    pub(crate) fn new(raw: Box<[u8]>, head: Head, body: Vec<u8>, peer: SocketAddr, id: Box<str>) -> Self {
        Request { raw, head, body, peer, id, params: Vec::new() }
    }

    pub(crate) fn set_params(&mut self, params: Vec<(Box<str>, Box<str>)>) {
        self.params = params;
    }

    fn text(&self, span: Span) -> &str {
        // The parser only accepts visible ASCII in the request line; header values may hold
        // obs-text, which we expose as "" rather than guessing an encoding.
        std::str::from_utf8(span.get(&self.raw)).unwrap_or("")
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.text(self.head.method)
    }

    /// The path without the query string (`/` for an absolute-form target without a path).
    pub fn path(&self) -> &str {
        let p = self.text(self.head.path);
        if p.is_empty() {
            "/"
        } else {
            p
        }
    }

    /// The query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.head.query.map(|q| self.text(q))
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// A path parameter captured by the route pattern (`/items/:id` → `param("id")`),
    /// percent-decoded (`/items/a%2Fb` → `a/b`; a request with an invalid escape gets 400).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| &**k == name).map(|(_, v)| &**v)
    }

    /// The first value of header `name` (case-insensitive), if present and valid UTF-8
    /// (`None` for a value that is not: see [`header_bytes`](Request::header_bytes)).
    ///
    /// ```
    /// let req = vigil::Request::builder("GET", "/").header("X-Name", "Zoë").build();
    /// assert_eq!(req.header("x-name"), Some("Zoë"));
    /// assert_eq!(req.header("x-missing"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header_bytes(name)?).ok()
    }

    /// The first value of header `name` (case-insensitive) as sent, whatever its encoding
    /// (header values may hold obs-text bytes, e.g. Latin-1).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.head.header(&self.raw, name)
    }

    /// All header fields in the order received, as (name, value). A value that is not valid
    /// UTF-8 reads as `""` here; [`header_bytes`](Request::header_bytes) has its bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.head.headers.iter().map(move |&(k, v)| (self.text(k), self.text(v)))
    }

    /// The request body (chunked bodies are already decoded).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body parsed as JSON into `T`. Needs the `json` feature. Errors are answers: a
    /// `Content-Type` other than `application/json` (or `…+json`) is [`JsonError::ContentType`]
    /// (415), a body that does not parse into `T` is [`JsonError::Body`] (400, saying where and
    /// why); both are `IntoResponse`, so `?` in a handler answers them.
    ///
    /// ```
    /// #[derive(Debug, serde::Deserialize)]
    /// struct NewUser { name: String }
    /// let req = vigil::Request::builder("POST", "/users")
    ///     .header("Content-Type", "application/json")
    ///     .body(r#"{"name":"ada"}"#)
    ///     .build();
    /// assert_eq!(req.json::<NewUser>().unwrap().name, "ada");
    /// let bad = vigil::Request::builder("POST", "/users").header("Content-Type", "application/json").body("{").build();
    /// assert_eq!(bad.json::<NewUser>().unwrap_err().status(), 400);
    /// ```
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JsonError> {
        let ct = self.header("content-type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
            return Err(JsonError::ContentType(if ct.is_empty() { "(none)".into() } else { ct.into() }));
        }
        serde_json::from_slice(&self.body).map_err(|e| JsonError::Body(e.to_string()))
    }

    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    pub fn is_http11(&self) -> bool {
        self.head.version == Version::Http11
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The request id: the client's `X-Request-Id` when it sent a sane one, else generated.
    /// It is echoed on the response and appears in every log line about this request.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts a request for tests and examples that call handlers without a socket.
    pub fn builder(method: &str, target: &str) -> RequestBuilder {
        RequestBuilder {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            params: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("method", &self.method())
            .field("path", &self.path())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why [`Request::json`] could not give a value (the `json` feature).
#[cfg(feature = "json")]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonError {
    /// The request's `Content-Type` (as sent) is not JSON: 415 Unsupported Media Type.
    ContentType(String),
    /// The body is not JSON, or not of the expected shape (serde's message): 400 Bad Request.
    Body(String),
}

#[cfg(feature = "json")]
impl JsonError {
    /// The status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            JsonError::ContentType(_) => 415,
            JsonError::Body(_) => 400,
        }
    }
}

#[cfg(feature = "json")]
impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::ContentType(ct) => write!(f, "expected a JSON body (Content-Type: application/json), got {ct}"),
            JsonError::Body(why) => write!(f, "invalid JSON body: {why}"),
        }
    }
}

#[cfg(feature = "json")]
impl std::error::Error for JsonError {}

/// Builds a [`Request`] without a socket, for handler tests: call the handler with it and a
/// [`Ctx::detached`](crate::Ctx::detached), or hand it to [`App::call`](crate::App::call), which
/// routes it (and fills in the route's parameters) the way the server does.
///
/// ```
/// use vigil::{Ctx, Request, Response};
///
/// fn item(req: &Request, _ctx: &Ctx) -> Response {
///     Response::text(format!("item {}", req.param("id").unwrap_or("?")))
/// }
/// let req = Request::builder("GET", "/items/7").param("id", "7").build();
/// let ctx = Ctx::detached(std::time::Duration::from_secs(1));
/// assert_eq!(item(&req, &ctx).body(), b"item 7");
///
/// let post = Request::builder("POST", "/echo").body("hi").build();
/// assert_eq!(post.body(), b"hi");
/// ```
pub struct RequestBuilder {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    params: Vec<(Box<str>, Box<str>)>,
}

impl RequestBuilder {
    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a route parameter, as a route pattern such as `/items/:id` would capture it
    /// ([`Request::param`]). [`App::call`](crate::App::call) sets them from the pattern itself.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// Builds the request (panics if the method, target or headers are not valid HTTP).
    pub fn build(self) -> Request {
        let mut raw = format!("{} {} HTTP/1.1\r\nHost: test\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let head = super::parse::parse_head(raw.as_bytes(), &super::parse::Limits::default())
            .expect("valid request")
            .expect("complete head");
        let mut req = Request::new(
            raw.into_bytes().into_boxed_slice(),
            head,
            self.body,
            ([127, 0, 0, 1], 0).into(),
            "test".into(),
        );
        req.set_params(self.params);
        req
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        let r = Request::builder("GET", "/a?x=1&name=a%20b+c&bad=%zz&end=%4").build();
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("name").as_deref(), Some("a b c"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("end").as_deref(), Some("%4"));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn a_header_value_that_is_not_utf8_is_none_but_its_bytes_are_there() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n".to_vec();
        let head = crate::http::parse::parse_head(&raw, &Default::default()).unwrap().unwrap();
        let r = Request::new(raw.into_boxed_slice(), head, Vec::new(), ([127, 0, 0, 1], 0).into(), "t".into());
        assert_eq!(r.header("x-latin"), None);
        assert_eq!(r.header_bytes("X-LATIN"), Some(&b"caf\xe9"[..]));
        assert_eq!(r.header("host"), Some("x"));
    }

    #[test]
    fn builder_params_are_what_param_reads() {
        let r = Request::builder("GET", "/items/7/files/a/b").param("id", "7").param("rest", "a/b").build();
        assert_eq!((r.param("id"), r.param("rest"), r.param("x")), (Some("7"), Some("a/b"), None));
    }

    #[test]
    fn headers_are_case_insensitive() {
        let r = Request::builder("GET", "/").header("X-Thing", "v").build();
        assert_eq!(r.header("x-thing"), Some("v"));
        assert_eq!(r.header("X-THING"), Some("v"));
    }
}
