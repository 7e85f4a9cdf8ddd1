//! The application: routes (method + path pattern) with per-route timeout options, and handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::answers::{self, Answers};
use crate::ctx::{Cancelled, Ctx};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::runtime::inflight::Inflight;
use crate::runtime::pool::Runner;
use crate::runtime::routes::{RouteId, RouteInfo, RouteTable};

/// An error a handler can return with `?`; it becomes a response with its status and message.
///
/// [`Error::new`] sends its message to the client. [`Error::internal`] (and an
/// `std::io::Error` turned into an `Error` by `?`) answers `500 internal server error` and
/// keeps the cause for the server's log (with the request id and route), so an OS error's text
/// never reaches the client.
///
/// ```
/// use vigil::{Error, Response};
/// let e = Error::new(422, "quantity must be positive");
/// assert_eq!(e.status(), 422);
/// let from_cancel: Error = vigil::Cancelled.into();
/// assert_eq!(from_cancel.status(), 504);
/// let io: Error = std::io::Error::other("disk /var/lib/db is full").into();
/// assert_eq!((io.status(), io.message()), (500, "internal server error"));
/// assert_eq!(io.cause(), Some("disk /var/lib/db is full"));
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    status: u16,
    message: String,
    /// What went wrong inside, for the log only.
    cause: Option<Box<str>>,
}

impl Error {
    /// An error answered with `status` and a short text body.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Error { status, message: message.into(), cause: None }
    }

    /// A `500 internal server error` whose `cause` is logged (error level, target
    /// `vigil::app`, with the request id and route) and never sent to the client.
    ///
    /// ```
    /// let e = vigil::Error::internal("connection to 10.0.0.7:5432 refused");
    /// assert_eq!(e.status(), 500);
    /// assert_eq!(e.message(), "internal server error");
    /// ```
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error { status: 500, message: "internal server error".into(), cause: Some(cause.to_string().into()) }
    }

    /// The status the client gets.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message (the response body).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The cause of an [`internal`](Error::internal) error (logged, not sent).
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Cancelled> for Error {
    fn from(_: Cancelled) -> Self {
        Error::new(504, "request cancelled")
    }
}

/// An I/O error is an [`Error::internal`]: its text is logged, the client gets a generic 500.
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(e)
    }
}

/// What a handler may return: a [`Response`], a string, or a `Result` whose `Ok` and `Err` both
/// are `IntoResponse` (axum's model). So an app can have its own error type, rendered its way
/// (JSON, say), and use `?` with it; [`Error`] and [`Cancelled`] are ready-made ones.
///
/// ```
/// use vigil::{IntoResponse, Response};
/// let ok: Result<Response, vigil::Cancelled> = Err(vigil::Cancelled);
/// assert_eq!(ok.into_response().status(), 504);
/// assert_eq!("hi".into_response().body(), b"hi");
///
/// // An app's own error type.
/// enum ApiError { NotFound, Invalid(String) }
/// impl IntoResponse for ApiError {
///     fn into_response(self) -> Response {
///         match self {
///             ApiError::NotFound => Response::new(404),
///             ApiError::Invalid(why) => Response::text(why).with_status(422),
///         }
///     }
/// }
/// impl From<std::num::ParseIntError> for ApiError {
///     fn from(e: std::num::ParseIntError) -> Self { ApiError::Invalid(e.to_string()) }
/// }
/// fn quantity(s: &str) -> Result<Response, ApiError> {
///     let n: u32 = s.parse()?; // `?` converts with the app's own From
///     if n == 0 { return Err(ApiError::NotFound); }
///     Ok(Response::text(n.to_string()))
/// }
/// assert_eq!(quantity("x").into_response().status(), 422);
/// assert_eq!(quantity("0").into_response().status(), 404);
/// ```
pub trait IntoResponse {
    /// Converts into the response sent to the client.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// Its status and its message as a short text body; the cause of an
/// [`internal`](Error::internal) error goes along for the log, never on the wire.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Response::error(self.status, &self.message).with_cause(self.cause)
    }
}

/// 400 or 415 with the reason as a short text body (see [`Request::json`]).
#[cfg(feature = "json")]
impl IntoResponse for crate::http::request::JsonError {
    fn into_response(self) -> Response {
        Error::from(self).into_response()
    }
}

#[cfg(feature = "json")]
impl From<crate::http::request::JsonError> for Error {
    fn from(e: crate::http::request::JsonError) -> Self {
        Error::new(e.status(), e.to_string())
    }
}

/// As `vigil::Error::from(e)` does.
impl IntoResponse for std::io::Error {
    fn into_response(self) -> Response {
        Error::from(self).into_response()
    }
}

/// `504 Gateway Timeout`: the request was cancelled (the client has had, or is about to have,
/// the watchdog's 504 anyway).
impl IntoResponse for Cancelled {
    fn into_response(self) -> Response {
        Error::from(self).into_response()
    }
}

/// A request handler. Implemented for every `Fn(&Request, &Ctx) -> impl IntoResponse` that is
/// `Send + Sync + 'static`. Handlers run on the worker pool's OS threads, never on a coroutine, so
/// they may block.
///
/// ```
/// use vigil::{Ctx, Handler, Request, Response};
/// fn hello(_req: &Request, _ctx: &Ctx) -> Response { Response::text("hello") }
/// let h: Box<dyn Handler> = Box::new(hello);
/// let ctx = Ctx::detached(std::time::Duration::from_secs(1));
/// assert_eq!(h.call(&Request::builder("GET", "/").build(), &ctx).body(), b"hello");
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, req: &Request, ctx: &Ctx) -> Response;
}

impl<F, R> Handler for F
where
    F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
    R: IntoResponse,
{
    fn call(&self, req: &Request, ctx: &Ctx) -> Response {
        self(req, ctx).into_response()
    }
}

/// Per-route timing options.
///
/// A route's [`timeout`](RouteOptions::timeout) is honoured as given, longer or shorter than
/// the server's `--timeout`, which is only the default for routes that set none.
///
/// ```
/// use std::time::Duration;
/// use vigil::RouteOptions;
/// // A report that may run 5 minutes as long as it reports progress at least every 2 seconds.
/// let opts = RouteOptions::new().timeout(Duration::from_secs(300)).stall_timeout(Duration::from_secs(2));
/// assert_eq!(opts.get_timeout(), Some(Duration::from_secs(300)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteOptions {
    timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
}

impl RouteOptions {
    /// The defaults: the server's `--timeout`, no stall detection.
    pub fn new() -> Self {
        Self::default()
    }

    /// The absolute ceiling for this route's requests, instead of the server's `--timeout`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The request counts as hung when it has reported no [`Ctx::progress`] for this long.
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.stall_timeout = Some(d);
        self
    }

    /// Has no effect: a route's timeout is honoured as given, whatever the server's default.
    /// (Until vigil 0.1 a longer one was capped at `--timeout` unless this was set.)
    #[deprecated(note = "a route's timeout is always honoured as given; remove the call")]
    pub fn exceed_default(self, _yes: bool) -> Self {
        self
    }

    /// The configured ceiling, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The configured stall timeout, if any.
    pub fn get_stall_timeout(&self) -> Option<Duration> {
        self.stall_timeout
    }

    /// The ceiling this route gets under a server default of `default`.
    pub(crate) fn effective_timeout(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }
}

pub(crate) struct Route {
    pub method: String,
    pub pattern: String,
    segments: Vec<Segment>,
    pub options: RouteOptions,
    pub handler: Box<dyn Handler>,
}

enum Segment {
    Literal(String),
    Param(String),
    /// `*name`: the rest of the path.
    Rest(String),
}

/// Path parameters captured by a route pattern, as (name, value).
pub(crate) type Params = Vec<(Box<str>, Box<str>)>;

/// What routing found for a method and path.
pub(crate) enum Routed {
    Found {
        route: RouteId,
        params: Params,
    },
    /// The router answers itself: 404; 405 with `Allow` (the path exists under other methods);
    /// `OPTIONS *`: 200 with `Allow` (every method some route takes).
    Answer(Response),
}

/// The server's default `--timeout`, for [`App::call`] (which has no server).
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An application: a table of routes. Patterns are literal segments, `:name` parameters and a
/// final `*name` capturing the rest of the path. Static routes are found by one hash lookup.
///
/// ```
/// use std::time::Duration;
/// use vigil::{App, Response, RouteOptions};
///
/// let app = App::new()
///     .get("/", |_req, _ctx| Response::text("hello"))
///     .get("/items/:id", |req, _ctx| Response::text(format!("item {}", req.param("id").unwrap())))
///     .route("POST", "/import", RouteOptions::new().timeout(Duration::from_secs(5)), |req, _ctx| {
///         Response::text(format!("{} bytes", req.body().len()))
///     });
/// assert_eq!(app.len(), 3);
/// ```
#[derive(Default)]
pub struct App {
    routes: Vec<Route>,
    /// Static routes by path, then method: one hash lookup with a borrowed `&str`.
    exact: HashMap<String, Vec<(String, usize)>>,
    /// Run before every request's handler, in order; the first that answers ends it.
    before: Vec<BeforeHook>,
    /// Run on every response produced on a worker, in order.
    after: Vec<AfterHook>,
    /// Renders the server's own answers (`render_errors`).
    render: Option<Renderer>,
    /// The server's own answers, rendered once (when the server starts, or at the first
    /// `App::call`).
    answers: std::sync::OnceLock<Answers>,
}

type BeforeHook = Box<dyn Fn(&Request, &Ctx) -> Option<Response> + Send + Sync>;
type AfterHook = Box<dyn Fn(&Request, &Ctx, Response) -> Response + Send + Sync>;
type Renderer = Box<dyn Fn(&Error) -> Response + Send + Sync>;

impl App {
    /// An empty app (every path answers 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `GET` route (it also answers `HEAD`) with default options.
    pub fn get<F, R>(self, pattern: &str, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.route("GET", pattern, RouteOptions::new(), f)
    }

    /// Adds a `POST` route with default options.
    pub fn post<F, R>(self, pattern: &str, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.route("POST", pattern, RouteOptions::new(), f)
    }

    /// Adds a `PUT` route with default options.
    pub fn put<F, R>(self, pattern: &str, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.route("PUT", pattern, RouteOptions::new(), f)
    }

    /// Adds a `DELETE` route with default options.
    pub fn delete<F, R>(self, pattern: &str, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.route("DELETE", pattern, RouteOptions::new(), f)
    }

    /// Adds a route for `method` and `pattern` with its own options.
    ///
    /// Like [`get`](App::get) and friends it takes a closure or function, whose argument types
    /// are inferred; a value of your own [`Handler`] type goes to [`handler`](App::handler).
    pub fn route<F, R>(self, method: &str, pattern: &str, options: RouteOptions, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.handler(method, pattern, options, f)
    }

    /// Adds a hook that runs before every request's handler, on the worker pool: also for the
    /// requests the router refuses (404, 405), so it can answer a CORS preflight or refuse
    /// unauthenticated requests to paths that do not exist. Returning `Some(response)` answers
    /// the request (the handler does not run; the [`after`](App::after) hooks do). Hooks run in
    /// the order they were added; the first that answers ends the chain.
    ///
    /// Not for the answers the server gives without a worker (a framing error, a full queue,
    /// the watchdog's 504): see [`render_errors`](App::render_errors) for their format.
    ///
    /// ```
    /// use vigil::{App, Request, Response};
    ///
    /// let app = App::new()
    ///     .before(|req, _ctx| match req.header("authorization") {
    ///         Some("Bearer secret") => None,
    ///         _ => Some(Response::text("who are you?").with_status(401)),
    ///     })
    ///     .get("/", |_req, _ctx| Response::text("hello"));
    /// assert_eq!(app.call(Request::builder("GET", "/").build()).status(), 401);
    /// assert_eq!(app.call(Request::builder("GET", "/nope").build()).status(), 401);
    /// let authed = Request::builder("GET", "/").header("Authorization", "Bearer secret").build();
    /// assert_eq!(app.call(authed).body(), b"hello");
    /// ```
    pub fn before<F>(mut self, f: F) -> Self
    where
        F: Fn(&Request, &Ctx) -> Option<Response> + Send + Sync + 'static,
    {
        self.before.push(Box::new(f));
        self
    }

    /// Adds a hook that sees (and may change) every response produced on a worker: a
    /// handler's, a [`before`](App::before) hook's, the router's 404 or 405 (when the app has
    /// hooks, those requests go through the worker pool too). Hooks run in the order they were
    /// added, each on the previous one's result. Not run for the answers the server gives
    /// without a worker (see [`render_errors`](App::render_errors)), nor after a handler
    /// panicked.
    ///
    /// ```
    /// use vigil::{App, Request, Response};
    ///
    /// let app = App::new()
    ///     .after(|_req, _ctx, resp| resp.with_header("Access-Control-Allow-Origin", "*"))
    ///     .get("/", |_req, _ctx| Response::text("hello"));
    /// let resp = app.call(Request::builder("GET", "/").build());
    /// assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    /// let not_found = app.call(Request::builder("GET", "/nope").build());
    /// assert_eq!((not_found.status(), not_found.header("access-control-allow-origin")), (404, Some("*")));
    /// ```
    pub fn after<F>(mut self, f: F) -> Self
    where
        F: Fn(&Request, &Ctx, Response) -> Response + Send + Sync + 'static,
    {
        self.after.push(Box::new(f));
        self
    }

    /// Renders the server's own answers in the app's format: 404 and 405 from the router,
    /// 400/408/413/414/417/431/501/505 from the request's framing, 503 (queue full, draining,
    /// too many connections, queued past its deadline), 504 (deadline, stall, shutdown) and 500
    /// (a panic). `f` gets the status and the server's message and returns the response; its
    /// status is kept whatever `f` sets, and `Retry-After` is added to the 503s.
    ///
    /// `f` runs **once per kind of answer, when the server starts** (a 400 whose reason is only
    /// known at run time gets its status's rendering): many of these answers are given by a
    /// connection coroutine or the watchdog, where no user code runs. So `f` cannot see the
    /// request: headers that depend on it (CORS, say) belong in an [`after`](App::after)
    /// hook, which the router's 404/405 go through but the other answers do not.
    ///
    /// ```
    /// use vigil::{App, Request, Response};
    ///
    /// let app = App::new()
    ///     .render_errors(|e| Response::json_str(format!(r#"{{"error":{:?}}}"#, e.message())))
    ///     .get("/", |_req, _ctx| Response::text("hello"));
    /// let resp = app.call(Request::builder("GET", "/nope").build());
    /// assert_eq!((resp.status(), resp.body()), (404, &br#"{"error":"not found"}"#[..]));
    /// ```
    pub fn render_errors<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error) -> Response + Send + Sync + 'static,
    {
        self.render = Some(Box::new(f));
        self.answers = std::sync::OnceLock::new();
        self
    }

    /// The server's own answers, rendered (the first call renders them: the server makes it
    /// when it starts, on the thread that starts it).
    pub(crate) fn answers(&self) -> &Answers {
        self.answers.get_or_init(|| match &self.render {
            Some(f) => Answers::rendered(&|status, message| f(&Error::new(status, message))),
            None => Answers::plain(),
        })
    }

    /// Whether requests the router refuses go through the worker pool (to run the hooks).
    pub(crate) fn has_hooks(&self) -> bool {
        !self.before.is_empty() || !self.after.is_empty()
    }

    /// Adds a route served by any [`Handler`], such as a struct of your own.
    ///
    /// ```
    /// use vigil::{App, Ctx, Handler, Request, Response, RouteOptions};
    ///
    /// struct Greeter(&'static str);
    /// impl Handler for Greeter {
    ///     fn call(&self, _req: &Request, _ctx: &Ctx) -> Response {
    ///         Response::text(self.0)
    ///     }
    /// }
    /// let app = App::new().handler("GET", "/hi", RouteOptions::new(), Greeter("hi"));
    /// assert_eq!(app.len(), 1);
    /// ```
    pub fn handler(mut self, method: &str, pattern: &str, options: RouteOptions, h: impl Handler) -> Self {
        let segments: Vec<Segment> = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.as_bytes()[0] {
                b':' => Segment::Param(s[1..].to_string()),
                b'*' => Segment::Rest(s[1..].to_string()),
                _ => Segment::Literal(s.to_string()),
            })
            .collect();
        let idx = self.routes.len();
        if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
            self.exact.entry(normalize(pattern).to_string()).or_default().push((method.to_ascii_uppercase(), idx));
        }
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            pattern: pattern.to_string(),
            segments,
            options,
            handler: Box::new(h),
        });
        self
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// `true` when the app has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes as the runtime sees them, with their timeouts resolved against the server's
    /// default `timeout`.
    pub(crate) fn route_table(&self, default: Duration) -> RouteTable {
        let table = RouteTable::new(
            self.routes
                .iter()
                .map(|r| {
                    let timeout = r.options.effective_timeout(default);
                    RouteInfo {
                        method: r.method.as_str().into(),
                        pattern: r.pattern.as_str().into(),
                        timeout,
                        stall: r.options.get_stall_timeout(),
                    }
                })
                .collect(),
        );
        if self.has_hooks() {
            table.with_unmatched(default)
        } else {
            table
        }
    }

    /// Routes `req` the way the server does and runs its handler on the calling thread, with
    /// a [`Ctx`] that belongs to no server: its deadline is the route's timeout (or 30 s, the
    /// default `--timeout`) and nothing cancels it but [`Ctx::cancel`]. Route parameters are
    /// captured from the path; an unknown path is 404, a known one under another method 405,
    /// exactly as the server answers them. For handler tests without a socket; a panic in the
    /// handler reaches the caller.
    ///
    /// ```
    /// use vigil::{App, Request, Response};
    ///
    /// let app = App::new().get("/items/:id", |req, _ctx| Response::text(format!("item {}", req.param("id").unwrap())));
    /// let resp = app.call(Request::builder("GET", "/items/7").build());
    /// assert_eq!((resp.status(), resp.body()), (200, &b"item 7"[..]));
    /// assert_eq!(app.call(Request::builder("DELETE", "/items/7").build()).status(), 405);
    /// assert_eq!(app.call(Request::builder("GET", "/nope").build()).status(), 404);
    /// ```
    pub fn call(&self, mut req: Request) -> Response {
        let (route, timeout) = match self.find(req.method(), req.path()) {
            Routed::Found { route, params } => {
                req.set_params(params);
                (route, self.routes[route.index()].options.effective_timeout(DEFAULT_CALL_TIMEOUT))
            }
            // The hooks see the router's answers too (as the server runs them: on a worker).
            Routed::Answer(_) if self.has_hooks() => (self.unmatched_route(), DEFAULT_CALL_TIMEOUT),
            Routed::Answer(resp) => return resp,
        };
        let job = Arc::new(Inflight::detached(req, route, timeout));
        self.run(&job)
    }

    /// The route requests the router refuses take through the pool when the app has hooks:
    /// one past the app's own (`route_table` lists it, as "unmatched").
    pub(crate) fn unmatched_route(&self) -> RouteId {
        RouteId::new(self.routes.len())
    }

    /// Every method some route takes (with `HEAD` where `GET` is, and `OPTIONS`), for
    /// `OPTIONS *`'s `Allow`.
    fn all_methods(&self) -> String {
        let mut methods: Vec<&str> = Vec::new();
        for r in &self.routes {
            let m = r.method.as_str();
            for m in [m, if m == "GET" { "HEAD" } else { m }] {
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
        }
        if !methods.contains(&"OPTIONS") {
            methods.push("OPTIONS");
        }
        methods.join(", ")
    }

    fn answer(&self, (status, message): (u16, &str)) -> Response {
        self.answers().get(status, message)
    }

    /// Out of line: its frame stays off the connection coroutine's stack except while it runs
    /// (see ARCHITECTURE.md, memory of an idle connection).
    #[inline(never)]
    pub(crate) fn find(&self, method: &str, path: &str) -> Routed {
        if path == "*" {
            // The parser lets the asterisk-form through for OPTIONS only (RFC 9112 §3.2.4).
            return Routed::Answer(Response::new(200).with_header("Allow", self.all_methods()));
        }
        let lookup_method = if method == "HEAD" { "GET" } else { method };
        let path = normalize(path);
        // Fast path: a static route, one hash lookup (no allocation for the common methods).
        if let Some(methods) = self.exact.get(path) {
            if let Some(&(_, i)) = methods.iter().find(|(m, _)| m == lookup_method) {
                return Routed::Found { route: RouteId::new(i), params: Vec::new() };
            }
        }
        let mut allowed: Vec<&str> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(params) = r.matches(path) {
                if r.method == lookup_method {
                    return match decode_params(params) {
                        Some(params) => Routed::Found { route: RouteId::new(i), params },
                        None => Routed::Answer(self.answer(answers::BAD_PARAM)),
                    };
                }
                if !allowed.contains(&r.method.as_str()) {
                    allowed.push(&r.method);
                }
            }
        }
        if allowed.is_empty() {
            Routed::Answer(self.answer(answers::NOT_FOUND))
        } else {
            if allowed.contains(&"GET") {
                allowed.push("HEAD");
            }
            Routed::Answer(self.answer(answers::METHOD_NOT_ALLOWED).with_header("Allow", allowed.join(", ")))
        }
    }
}

/// The pool runs handlers through this: the app is the runtime's [`Runner`]. The cause of an
/// internal error is logged here, with the request's id and route.
impl Runner for App {
    /// The `before` hooks (the first that answers ends it), else the route's handler (or, for a
    /// request the router refused, its 404/405), then the `after` hooks.
    fn run(&self, job: &Arc<Inflight>) -> Response {
        let ctx = Ctx::new(Arc::clone(job));
        let req = &job.req;
        let resp = match self.before.iter().find_map(|hook| hook(req, &ctx)) {
            Some(early) => early,
            None => match self.routes.get(job.route.index()) {
                Some(route) => route.handler.call(req, &ctx),
                None => match self.find(req.method(), req.path()) {
                    Routed::Answer(resp) => resp,
                    Routed::Found { .. } => self.answer(answers::NOT_FOUND), // the routes do not change
                },
            },
        };
        let mut resp = self.after.iter().fold(resp, |resp, hook| hook(req, &ctx, resp));
        if let Some(cause) = resp.take_cause() {
            let pattern = self.routes.get(job.route.index()).map_or(RouteTable::UNMATCHED, |r| &r.pattern);
            log_cause(job, pattern, resp.status(), &cause);
        }
        resp
    }
}

#[cold]
#[inline(never)]
fn log_cause(job: &Inflight, route: &str, status: u16, cause: &str) {
    log::error!(
        target: "vigil::app",
        event = "handler_error", id = job.req.id(), route = route, status = status, cause = cause;
        "handler error id={} route={route}: {cause}; answered {status} internal server error",
        job.req.id()
    );
}

impl Route {
    fn matches(&self, path: &str) -> Option<Params> {
        let mut params = Vec::new();
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if parts.next()? != l {
                        return None;
                    }
                }
                Segment::Param(name) => params.push((name.as_str().into(), parts.next()?.into())),
                Segment::Rest(name) => {
                    let rest: Vec<&str> = parts.by_ref().collect();
                    params.push((name.as_str().into(), rest.join("/").into()));
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(params)
    }
}

/// Percent-decodes every parameter value (`%2F` is `/` within the value, `%31` is `1`; `+`
/// stays `+`, as in any path). `None` if an escape is invalid or the result is not UTF-8.
fn decode_params(mut params: Params) -> Option<Params> {
    for (_, v) in params.iter_mut().filter(|(_, v)| v.contains('%')) {
        *v = percent_decode_strict(v)?.into();
    }
    Some(params)
}

fn percent_decode_strict(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (h, l) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `/a/` and `/a` route alike; `/` stays `/`.
fn normalize(path: &str) -> &str {
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App::new()
            .get("/", |_: &Request, _: &Ctx| "root")
            .get("/items/:id", |_: &Request, _: &Ctx| "item")
            .post("/items", |_: &Request, _: &Ctx| "new")
            .get("/files/*rest", |_: &Request, _: &Ctx| "file")
    }

    fn found(r: Routed) -> (usize, Params) {
        match r {
            Routed::Found { route, params } => (route.index(), params),
            _ => panic!("not found"),
        }
    }

    #[test]
    fn static_and_param_routes_match() {
        let a = app();
        assert_eq!(found(a.find("GET", "/")).0, 0);
        let (i, p) = found(a.find("GET", "/items/42"));
        assert_eq!(i, 1);
        assert_eq!(&*p[0].1, "42");
        assert_eq!(found(a.find("HEAD", "/items/42")).0, 1);
        let (_, p) = found(a.find("GET", "/files/a/b.txt"));
        assert_eq!(&*p[0].1, "a/b.txt");
    }

    #[test]
    fn route_parameters_are_percent_decoded_and_bad_escapes_refused() {
        let a = app();
        for (path, want) in
            [("/items/%31", "1"), ("/items/a%2Fb", "a/b"), ("/items/caf%C3%A9", "café"), ("/items/a+b", "a+b")]
        {
            let (_, p) = found(a.find("GET", path));
            assert_eq!(&*p[0].1, want, "{path}");
        }
        let (_, p) = found(a.find("GET", "/files/x%20y/z"));
        assert_eq!(&*p[0].1, "x y/z");
        for bad in ["/items/%zz", "/items/%4", "/items/%", "/items/%FF"] {
            assert_eq!(answered(a.find("GET", bad)).status(), 400, "{bad}");
        }
    }

    fn answered(r: Routed) -> Response {
        match r {
            Routed::Answer(resp) => resp,
            Routed::Found { route, .. } => panic!("found route {}", route.index()),
        }
    }

    #[test]
    fn wrong_method_lists_allowed_ones() {
        let resp = answered(app().find("DELETE", "/items"));
        assert_eq!((resp.status(), resp.header("allow")), (405, Some("POST")));
    }

    #[test]
    fn unknown_path_is_not_found() {
        assert_eq!(answered(app().find("GET", "/nope/x/y")).status(), 404);
    }

    #[test]
    fn options_asterisk_lists_every_method_of_the_server() {
        let resp = answered(app().find("OPTIONS", "*"));
        assert_eq!((resp.status(), resp.header("allow")), (200, Some("GET, HEAD, POST, OPTIONS")));
        assert!(resp.body().is_empty());
    }

    #[test]
    fn call_routes_fills_params_and_runs_the_handler_without_a_socket() {
        let app = App::new().get("/items/:id/files/*rest", |req: &Request, ctx: &Ctx| {
            Response::text(format!("{} {} {}", req.param("id").unwrap(), req.param("rest").unwrap(), ctx.request_id()))
        });
        let resp = app.call(Request::builder("GET", "/items/7/files/a/b.txt").build());
        assert_eq!((resp.status(), resp.body()), (200, &b"7 a/b.txt test"[..]));
        assert_eq!(app.call(Request::builder("POST", "/items/7/files/a").build()).status(), 405);
    }

    #[test]
    fn an_io_error_is_a_generic_500_whose_cause_stays_out_of_the_body() {
        let app = App::new().get("/f", |_: &Request, _: &Ctx| -> Result<Response, Error> {
            Err(std::io::Error::other("open /etc/secret: permission denied"))?
        });
        let resp = app.call(Request::builder("GET", "/f").build());
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.body(), b"internal server error\n");
    }

    #[test]
    fn a_routes_own_timeout_is_honoured_longer_or_shorter_than_the_default() {
        let d = Duration::from_secs(30);
        assert_eq!(RouteOptions::new().timeout(Duration::from_secs(60)).effective_timeout(d), Duration::from_secs(60));
        assert_eq!(RouteOptions::new().timeout(Duration::from_secs(1)).effective_timeout(d), Duration::from_secs(1));
        assert_eq!(RouteOptions::new().effective_timeout(d), d);
    }
}
