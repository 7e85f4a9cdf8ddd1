//! One connection coroutine: read a head, frame the body, hand the request to the pool, wait for
//! the one answer (the handler's, or the watchdog's 504), write it, repeat while keep-alive.
//!
//! Everything here is non-blocking for the scheduler: socket reads and writes park the
//! coroutine (with may's per-socket timeouts), the queue is fed with `try_send`, and the reply
//! arrives on a may channel. Buffers live on the heap and are reused for the whole connection.
//!
//! Every failure that can still be answered is answered (a 4xx/5xx with a short body and
//! `Connection: close`); the connection then closes gracefully (write side first, then the rest
//! of the client's bytes are drained for a moment) so the answer is not lost to a reset.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use may::net::TcpStream;

use crate::app::Routed;
use crate::http::parse::{parse_head, ChunkedDecoder, Framing as BodyFraming, Head, ParseError, Span};
use crate::http::request::Request;
use crate::http::response::{encode, Framing, Response};
use crate::metrics::Rejected;
use crate::platform::PeerProbe;
use crate::runtime::clock;
use crate::runtime::inflight::{Arrival, Inflight};
use crate::runtime::pool::SubmitError;
use crate::runtime::refusal::Refusal;
use crate::runtime::reply::ReplySlot;
use crate::runtime::routes::RouteId;
use crate::runtime::state::RequestState;
use crate::server::connections::ConnSlot;
use crate::server::lifecycle::Phase;
use crate::server::shared::Shared;

/// Initial read buffer per connection. It grows only while one request head does not fit, never
/// beyond `--limit-request-head` plus this much (the parser answers 431 first), and shrinks back
/// once that head has been consumed.
const READ_BUF: usize = 4096;
/// What an idle keep-alive connection reads into while it waits for its next request. It lives
/// on the coroutine's stack, which must stay within one page at its deepest (an idle connection
/// then costs one touched stack page at each end and no read buffer); most small requests fit.
const IDLE_READ: usize = 256;
/// A `Content-Length` body buffer starts this small (or at the whole body, if smaller) and doubles
/// as bytes arrive, so memory follows what the client sent rather than what it announced.
const BODY_STEP: usize = 16 * 1024;
/// A write buffer above this is released after use rather than kept for the connection's life.
const KEEP_WRITE_BUF: usize = 64 * 1024;
/// How long a closing connection keeps draining the client's unread bytes.
const LINGER: Duration = Duration::from_millis(500);

/// Why the connection stops.
enum Stop {
    /// Closed by the peer, idle timeout, or an I/O error: nothing to answer.
    Quiet,
    /// Answer with this status and message, then close.
    Answer(u16, &'static str),
}

impl From<ParseError> for Stop {
    fn from(e: ParseError) -> Self {
        Stop::Answer(e.status(), e.message())
    }
}

struct Conn<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    shared: &'a Arc<Shared>,
    /// rbuf[start..end] holds bytes read and not yet consumed; rbuf.len() is its capacity.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// The read timeout currently set on the socket (setting it is a syscall).
    read_timeout: Option<Duration>,
    seq: u64,
    /// Created with the first request (on this coroutine, as `ReplySlot::new` requires).
    reply: Option<Arc<ReplySlot>>,
    requests: u64,
    /// Whether the request being handled is a HEAD (its answer carries no body).
    last_method_is_head: bool,
    /// This connection's entry in the server's registry (busy or idle, for the drain).
    slot: Arc<ConnSlot>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        // Before the socket (a field) is closed: the drain may shut an idle socket's read side
        // under the registry's lock, never after this.
        self.shared.conns.unregister(&self.slot);
    }
}

/// Serves one connection until it closes. `slot`: its entry in the server's registry, made
/// when it was accepted (it is unregistered when this returns).
pub(crate) fn serve(stream: TcpStream, peer: SocketAddr, slot: Arc<ConnSlot>, shared: &Arc<Shared>) {
    let _ = stream.set_write_timeout(Some(shared.settings.write_timeout));
    let mut c = Conn {
        stream,
        peer,
        shared,
        rbuf: Vec::new(),
        start: 0,
        end: 0,
        wbuf: Vec::new(),
        read_timeout: None,
        seq: 0,
        reply: None,
        requests: 0,
        last_method_is_head: false,
        slot,
    };
    match c.run() {
        Stop::Quiet => {}
        Stop::Answer(status, msg) => c.fail(status, msg),
    }
}

impl Conn<'_> {
    fn run(&mut self) -> Stop {
        loop {
            let head = match self.read_head() {
                Ok(Some(h)) => h,
                Ok(None) => return Stop::Quiet,
                Err(stop) => return stop,
            };
            match self.handle(head) {
                Ok(true) => continue,
                Ok(false) => {
                    let _ = self.flush();
                    self.linger_close();
                    return Stop::Quiet;
                }
                Err(stop) => return stop,
            }
        }
    }

    fn avail(&self) -> &[u8] {
        &self.rbuf[self.start..self.end]
    }

    /// Reads until a complete head is buffered. `Ok(None)`: the connection ended quietly.
    fn read_head(&mut self) -> Result<Option<Head>, Stop> {
        let limits = self.shared.limits;
        let mut started: Option<Instant> = None;
        loop {
            if self.start < self.end {
                if started.is_none() && self.requests == 0 && !self.shared.conns.busy(&self.slot) {
                    // A drain closed this connection before its first request began.
                    return Ok(None);
                }
                started.get_or_insert_with(Instant::now);
                if let Some(h) = parse_head(self.avail(), &limits)? {
                    return Ok(Some(h));
                }
            }
            if self.flush().is_err() {
                return Ok(None);
            }
            if self.start == self.end {
                // Once a drain has closed the listener, a connection that falls idle closes (a
                // fresh one still gets its first request served: it was accepted).
                if self.requests > 0 && self.shared.lifecycle.phase() >= Phase::Closing {
                    return Ok(None);
                }
                self.start = 0;
                self.end = 0;
                if self.requests > 0 {
                    // Idle between requests: hold no read buffer while waiting (`fill` waits on
                    // a small stack buffer), so an idle keep-alive connection costs little more
                    // than its coroutine's stack (BENCHMARKS.md, idle connections).
                    self.rbuf = Vec::new();
                }
            }
            let timeout = match started {
                // Idle between requests: the keep-alive timeout (the first request gets the
                // header timeout, as a client that connects and sends nothing is a slowloris).
                None if self.requests > 0 => self.shared.settings.keepalive,
                None => self.shared.settings.header_timeout,
                Some(t0) => {
                    let left = self.shared.settings.header_timeout.saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        self.shared.metrics.reject(Rejected::Timeout);
                        return Err(Stop::Answer(408, "timed out reading the request head"));
                    }
                    left
                }
            };
            match self.fill(timeout) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if started.is_none() {
                        return Ok(None);
                    }
                    self.shared.metrics.reject(Rejected::Timeout);
                    return Err(Stop::Answer(408, "timed out reading the request head"));
                }
                Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                    return Err(ParseError::HeadTooLarge.into());
                }
                Err(e) => {
                    debug!("read from {} failed: {e}", self.peer);
                    return Ok(None);
                }
            }
        }
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`. Returns bytes read (0 = EOF).
    /// A full buffer at its cap (which the parser's head limit keeps out of reach) is an
    /// `OutOfMemory` error.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.rbuf.is_empty() && self.requests > 0 {
            // Between requests (see `read_head`): wait on the stack, allocate once bytes come.
            // The same one read syscall as reading into the heap buffer; a head longer than
            // this is completed by the usual path below.
            self.set_timeout(timeout)?;
            let mut first = [0u8; IDLE_READ];
            self.shared.conns.idle(&self.slot);
            let n = self.stream.read(&mut first)?;
            if n > 0 {
                if !self.shared.conns.busy(&self.slot) {
                    // A drain closed this idle connection as the bytes arrived (the classic
                    // keep-alive race: the client retries on another connection).
                    return Ok(0);
                }
                self.rbuf.resize(READ_BUF, 0);
                self.rbuf[..n].copy_from_slice(&first[..n]);
                (self.start, self.end) = (0, n);
            }
            return Ok(n);
        }
        if self.end == self.rbuf.len() {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.rbuf.len() {
                let cap = self.shared.limits.head_bytes + READ_BUF;
                let len = (self.rbuf.len() * 2).max(READ_BUF).min(cap);
                if len <= self.rbuf.len() {
                    return Err(io::Error::new(io::ErrorKind::OutOfMemory, "read buffer at its cap"));
                }
                self.rbuf.resize(len, 0);
            }
        }
        self.set_timeout(timeout)?;
        let n = self.stream.read(&mut self.rbuf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Handles one request whose head is buffered. `Ok(true)`: keep the connection.
    fn handle(&mut self, head: Head) -> Result<bool, Stop> {
        let t0 = clock::now_ns();
        let shared = Arc::clone(self.shared);
        let raw_head = self.avail()[..head.len].to_vec().into_boxed_slice();
        self.start += head.len;
        let text = |s: Span| std::str::from_utf8(s.get(&raw_head)).unwrap_or("");
        let method = text(head.method);
        let path = match text(head.path) {
            "" => "/",
            p => p,
        };
        let head_only = method == "HEAD";
        self.last_method_is_head = head_only;
        let uid = shared.ids.next_uid();
        let request_id = head
            .headers
            .iter()
            .find(|(k, _)| k.get(&raw_head).eq_ignore_ascii_case(b"x-request-id"))
            .map(|(_, v)| v.get(&raw_head))
            .filter(|v| valid_request_id(v))
            .map(|v| String::from_utf8_lossy(v).into())
            .unwrap_or_else(|| shared.ids.render(uid));

        let (route, params) = match shared.app.find(method, path) {
            Routed::Found { route, params } => (route, params),
            Routed::NotFound => {
                return self.answer_directly(Response::error(404, "not found"), &head, method, &request_id, false, t0);
            }
            Routed::MethodNotAllowed(allow) => {
                let resp = Response::error(405, "method not allowed").with_header("Allow", allow);
                return self.answer_directly(resp, &head, method, &request_id, false, t0);
            }
            Routed::BadParam => {
                let resp = Response::error(400, "invalid percent-encoding in the path");
                return self.answer_directly(resp, &head, method, &request_id, false, t0);
            }
        };
        if shared.lifecycle.past_graceful_timeout(t0) {
            shared.metrics.reject(Rejected::Draining);
            return self.answer_directly(Refusal::Draining.response(), &head, method, &request_id, true, t0);
        }
        let has_body = head.framing != BodyFraming::None;
        let body = self.read_body(&head)?;
        let keep_alive = head.keep_alive;
        let timeout = shared.routes.get(route).timeout;
        let seq = self.seq;
        self.seq += 1;
        self.requests += 1;
        // The deadline clock starts once the request is read: that is `t0` unless a body was read.
        let start_ns = if has_body { clock::now_ns() } else { t0 };
        let job =
            self.enqueue(Request::new(raw_head, head, body, self.peer, request_id), params, route, uid, seq, start_ns);
        if self.flush().is_err() {
            // The client is gone; the watchdog notices it and cancels the handler.
        }
        let resp = self.wait_reply(seq);
        let close = !keep_alive
            || shared.settings.keepalive.is_zero()
            || shared.lifecycle.is_draining()
            || resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        encode(&resp, &Framing { head_only, close, request_id: Some(job.req.id()) }, &mut self.wbuf);
        let now = clock::now_ns();
        let elapsed = Duration::from_nanos(now.saturating_sub(t0));
        let budget = now.saturating_sub(job.start_ns) as f64 / timeout.as_nanos().max(1) as f64;
        shared.metrics.response(Some(route), job.req.method(), resp.status(), elapsed, Some(budget));
        let ran_at = job.run_start_ns.load(Relaxed);
        if ran_at != 0 {
            shared.metrics.queue_wait(Duration::from_nanos(ran_at.saturating_sub(job.start_ns)));
        }
        self.log_request(&job, resp.status(), elapsed, budget);
        Ok(!close)
    }

    /// Wraps the request in its in-flight record and queues it (or answers it 503 when the queue
    /// is full). Out of line, so that the record's construction does not add to the stack frame
    /// the connection keeps while it waits (ARCHITECTURE.md, memory of an idle connection).
    #[inline(never)]
    fn enqueue(
        &mut self,
        mut req: Request,
        params: crate::app::Params,
        route: RouteId,
        uid: u64,
        seq: u64,
        start_ns: u64,
    ) -> Arc<Inflight> {
        let shared = self.shared;
        req.set_params(params);
        let slot = Arc::clone(self.reply.get_or_insert_with(ReplySlot::new));
        let arrival = Arrival {
            upstream_timeout: if shared.settings.trust_upstream_deadline { upstream_timeout(&req) } else { None },
            req,
            route,
            uid,
            seq,
            start_ns,
            reply: Some(slot),
            peer: PeerProbe::new(&self.stream),
        };
        let job = Arc::new(Inflight::new(arrival, shared.routes.get(route)));
        match shared.pool.submit(Arc::clone(&job)) {
            Ok(()) => shared.watchdog.register(&job),
            Err(e) => refuse_unqueued(shared, &job, e, start_ns),
        }
        job
    }

    /// Waits for the answer to request `seq`.
    fn wait_reply(&mut self, seq: u64) -> Response {
        self.reply.as_ref().expect("reply slot").wait(seq)
    }

    #[inline(never)]
    fn log_request(&self, job: &Inflight, status: u16, elapsed: Duration, budget: f64) {
        let s = &self.shared;
        let info = s.routes.get(job.route);
        let route = &*info.pattern;
        if budget >= 0.8 && status != 504 && status != 503 {
            let budget_seconds = info.timeout.as_secs_f64();
            warn!(
                event = "budget_warning", id = job.req.id(), route = route, used = budget, budget_seconds = budget_seconds;
                "approaching timeout id={} route={} used {:.0}% of its {:.3}s budget",
                job.req.id(),
                route,
                budget * 100.0,
                budget_seconds
            );
        }
        if s.settings.access_log {
            let worker = job.worker.load(Relaxed).map_or_else(|| "-".to_string(), |w| w.to_string());
            info!(
                target: "vigil::access",
                event = "access", peer:% = self.peer.ip(), method = job.req.method(), path = job.req.path(),
                route = route, status = status, duration = elapsed.as_secs_f64(), budget = budget,
                id = job.req.id(), worker = worker.as_str();
                "{} {} {} route={} status={} duration={:.6}s budget={:.3} id={} thread={}",
                self.peer.ip(),
                job.req.method(),
                job.req.path(),
                route,
                status,
                elapsed.as_secs_f64(),
                budget,
                job.req.id(),
                worker
            );
        }
    }

    /// Answers without a handler (404, 405, draining). A `Content-Length` body that is already
    /// buffered is skipped; one still to come (or a chunked one) is not waited for: the answer
    /// goes out at once and the connection closes, as it cannot be reframed.
    #[inline(never)]
    fn answer_directly(
        &mut self,
        resp: Response,
        head: &Head,
        method: &str,
        id: &str,
        close_anyway: bool,
        t0: u64,
    ) -> Result<bool, Stop> {
        let body_skipped = match head.framing {
            BodyFraming::None => true,
            BodyFraming::Length(n) if n <= (self.end - self.start) as u64 => {
                self.start += n as usize;
                true
            }
            _ => false,
        };
        let close = close_anyway
            || !body_skipped
            || !head.keep_alive
            || self.shared.settings.keepalive.is_zero()
            || self.shared.lifecycle.is_draining();
        let head_only = self.last_method_is_head;
        encode(&resp, &Framing { head_only, close, request_id: Some(id) }, &mut self.wbuf);
        let elapsed = Duration::from_nanos(clock::now_ns().saturating_sub(t0));
        self.shared.metrics.response(None, method, resp.status(), elapsed, None);
        if !close {
            self.requests += 1;
        }
        Ok(!close)
    }

    /// Reads the body the head announced (sending `100 Continue` first when asked to).
    #[inline(never)]
    fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, Stop> {
        if head.framing == BodyFraming::None {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let limit = self.shared.settings.body_timeout;
        match head.framing {
            BodyFraming::None => Ok(Vec::new()),
            BodyFraming::Length(n) => {
                // n <= --max-body, checked by the parser.
                let n = usize::try_from(n).map_err(|_| Stop::from(ParseError::PayloadTooLarge))?;
                let take = n.min(self.end - self.start);
                let mut body = self.avail()[..take].to_vec();
                self.start += take;
                if take == n {
                    return Ok(body);
                }
                self.continue_100(head)?;
                // body[..filled] holds what arrived; body[filled..] is zeroed room for more.
                let mut filled = take;
                while filled < n {
                    let left = self.body_time_left(started, limit)?;
                    if filled == body.len() {
                        body.resize((filled * 2).max(BODY_STEP).min(n), 0);
                    }
                    let r = self.set_timeout(left).and_then(|_| self.stream.read(&mut body[filled..]));
                    match r {
                        Ok(0) => return Err(Stop::Quiet),
                        Ok(k) => filled += k,
                        Err(e) if is_timeout(&e) => return Err(self.body_timeout()),
                        Err(_) => return Err(Stop::Quiet),
                    }
                }
                Ok(body)
            }
            BodyFraming::Chunked => {
                let mut dec = ChunkedDecoder::new(self.shared.limits.max_body);
                let mut body = Vec::new();
                let mut asked = false;
                loop {
                    let (used, done) = dec.decode(self.avail(), &mut body)?;
                    self.start += used;
                    if done {
                        return Ok(body);
                    }
                    if !asked {
                        self.continue_100(head)?;
                        asked = true;
                    }
                    let left = self.body_time_left(started, limit)?;
                    match self.fill(left) {
                        Ok(0) => return Err(Stop::Quiet),
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => return Err(self.body_timeout()),
                        Err(_) => return Err(Stop::Quiet),
                    }
                }
            }
        }
    }

    /// Sets the socket's read timeout to `d`, rounded up to 10 ms so that a run of reads (a
    /// trickling client, a body read in pieces) does not cost a setsockopt each.
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        let t = Some(Duration::from_millis((d.as_millis() as u64).div_ceil(10).max(1) * 10));
        if self.read_timeout != t {
            self.stream.set_read_timeout(t)?;
            self.read_timeout = t;
        }
        Ok(())
    }

    fn body_time_left(&self, started: Instant, limit: Duration) -> Result<Duration, Stop> {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            Err(self.body_timeout())
        } else {
            Ok(left)
        }
    }

    fn body_timeout(&self) -> Stop {
        self.shared.metrics.reject(Rejected::Timeout);
        Stop::Answer(408, "timed out reading the request body")
    }

    /// Sends `100 Continue` if the client waits for it.
    fn continue_100(&mut self, head: &Head) -> Result<(), Stop> {
        if head.expect_continue {
            self.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().map_err(|_| Stop::Quiet)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.wbuf);
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUF {
            self.wbuf = Vec::new();
        }
        if let Err(e) = &r {
            debug!("write to {} failed: {e}", self.peer);
        }
        r
    }

    /// Answers an error that ends the connection.
    #[inline(never)]
    fn fail(&mut self, status: u16, message: &str) {
        let resp = Response::error(status, message);
        encode(&resp, &Framing { head_only: false, close: true, request_id: None }, &mut self.wbuf);
        self.shared.metrics.response(None, "other", status, Duration::ZERO, None);
        if status == 400 || status == 431 || status == 414 || status == 413 {
            self.shared.metrics.reject(Rejected::BadRequest);
        }
        debug!("{}: {status} {message}; closing", self.peer);
        if self.flush().is_ok() {
            self.linger_close();
        }
    }

    #[inline(never)]
    fn linger_close(&mut self) {
        linger_close(&mut self.stream);
    }
}

/// Closes the write side, then drains what the client still sends for a moment (at most
/// [`LINGER`] and 256 KiB), so that unread request bytes do not turn our last answer into a
/// reset (RFC 9112 §9.6). The caller drops the stream afterwards.
pub(crate) fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 512];
    let mut total = 0usize;
    while Instant::now() < deadline && total < 256 * 1024 {
        match stream.read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// A request the pool would not take: never queued, so no worker or watchdog will see it.
#[cold]
#[inline(never)]
fn refuse_unqueued(shared: &Shared, job: &Inflight, e: SubmitError, now: u64) {
    job.transition(RequestState::Queued, RequestState::Done);
    let refusal = match e {
        SubmitError::Full => {
            shared.metrics.reject(Rejected::QueueFull);
            if let Some(suppressed) = shared.queue_full_log.allow(now) {
                warn!(
                    event = "queue_full", id = job.req.id(), suppressed = suppressed;
                    "queue full (--backlog {}): id={} answered 503 ({suppressed} more answered 503 \
                     queue full since the last such line; at most one line per second)",
                    shared.settings.effective_backlog(),
                    job.req.id()
                );
            }
            Refusal::QueueFull
        }
        SubmitError::Closed => Refusal::Draining,
    };
    job.answer(refusal.response());
}

/// The shortest deadline the request's upstream sent (`--trust-upstream-deadline`).
#[inline(never)]
fn upstream_timeout(req: &Request) -> Option<std::time::Duration> {
    req.headers().filter_map(|(k, v)| crate::http::deadline::parse(k, v)).min()
}

/// Accepts a client's `X-Request-Id` if it is short and plain (no spaces or control characters).
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}
