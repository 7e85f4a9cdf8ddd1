//! One connection coroutine: read a head, frame the body, hand the request to the pool, wait for
//! the one answer (the handler's, or the watchdog's 504), write it, repeat while keep-alive.
//!
//! Everything here is non-blocking for the scheduler: socket reads and writes park the
//! coroutine (with may's per-socket timeouts), the queue is fed with `try_send`, and the reply
//! arrives on a may channel. Buffers live on the heap and are reused for the whole connection.
//!
//! Writing: a response's head is encoded into the connection's write buffer and its body stays
//! where it is (the response's own bytes, or the pipe of a streaming body, which the worker
//! fills); `flush` writes heads and bodies in order with vectored writes, so the answers to
//! pipelined requests still go out in one write, and no body is copied.
//!
//! Every failure that can still be answered is answered (a 4xx/5xx with a short body and
//! `Connection: close`); the connection then closes gracefully (write side first, then the rest
//! of the client's bytes are drained for a moment) so the answer is not lost to a reset. Every
//! answer, and every request whose client went away before it (499, nothing sent), gets an
//! access line (`server::access`) when `--access-log` is on.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use may::net::TcpStream;

use crate::answers::Answers;
use crate::app::Routed;
use crate::http::body::{Chunks, Next};
use crate::http::parse::{parse_head, ChunkedDecoder, Framing as BodyFraming, Head, ParseError, Span, Version};
use crate::http::request::{Request, RequestId};
use crate::http::response::{encode_head, Framing, Payload, Response, StreamFraming};
use crate::metrics::Rejected;
use crate::platform::PeerProbe;
use crate::runtime::budget::Reservation;
use crate::runtime::clock;
use crate::runtime::inflight::{Arrival, Inflight};
use crate::runtime::pool::SubmitError;
use crate::runtime::refusal::{Refusal, Source};
use crate::runtime::reply::{Reply, ReplySlot, CLIENT_CLOSED_REQUEST};
use crate::runtime::routes::RouteId;
use crate::runtime::state::RequestState;
use crate::server::access::{self, AccessLine};
use crate::server::connections::ConnSlot;
use crate::server::lifecycle::Phase;
use crate::server::shared::Shared;

/// Initial read buffer per connection. It grows only while one request head does not fit, never
/// beyond `--limit-request-head` plus this much (the parser answers 431 first), and shrinks back
/// once that head has been consumed.
pub(crate) const READ_BUF: usize = 4096;
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
    /// What the client sent is refused: answer with the fault's status, then close.
    Refuse(Fault),
    /// The client went away before its answer (its 499 is logged): close without a word.
    Gone,
}

/// What the server refuses in the bytes a client sent.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A framing error, with the parser's status (400, 413, 414, 417, 431, 501, 505).
    Framing(ParseError),
    /// The head did not arrive within `--header-timeout` (408).
    HeadTimeout,
    /// The body did not arrive within `--body-timeout` (408).
    BodyTimeout,
    /// The body would take request bodies past `--max-body-memory` (503 with `Retry-After`;
    /// it is not read further).
    BodyMemory,
}

impl Fault {
    fn status(self) -> u16 {
        match self {
            Fault::Framing(e) => e.status(),
            Fault::HeadTimeout | Fault::BodyTimeout => 408,
            Fault::BodyMemory => Refusal::BodyMemory.status(),
        }
    }

    fn message(self) -> &'static str {
        match self {
            Fault::Framing(e) => e.message(),
            Fault::HeadTimeout => "timed out reading the request head",
            Fault::BodyTimeout => "timed out reading the request body",
            Fault::BodyMemory => Refusal::BodyMemory.message(),
        }
    }

    /// The `vigil_rejected_total` reason: every framing error is a bad request, whatever its
    /// status.
    fn rejected(self) -> Rejected {
        match self {
            Fault::Framing(_) => Rejected::BadRequest,
            Fault::HeadTimeout | Fault::BodyTimeout => Rejected::Timeout,
            Fault::BodyMemory => Rejected::BodyMemory,
        }
    }

    fn source(self) -> Source {
        match self {
            Fault::Framing(_) => Source::Parser,
            Fault::HeadTimeout | Fault::BodyTimeout => Source::ReadTimeout,
            Fault::BodyMemory => Refusal::BodyMemory.source(),
        }
    }

    /// The answer, in the app's format if it renders errors (a 503 says when to retry).
    fn response(self, answers: &Answers) -> Response {
        match self {
            Fault::BodyMemory => answers.refusal(Refusal::BodyMemory),
            _ => answers.get(self.status(), self.message()),
        }
    }
}

impl From<ParseError> for Stop {
    fn from(e: ParseError) -> Self {
        Stop::Refuse(Fault::Framing(e))
    }
}

/// What is known of a request whose head was read, for an answer given without its handler
/// (router, drain, a body refused) and its access line.
struct Seen<'a> {
    method: &'a str,
    path: &'a str,
    id: &'a str,
    head_only: bool,
    /// When the head had been read (clock ns).
    t0: u64,
}

struct Conn<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    shared: &'a Arc<Shared>,
    /// rbuf[start..end] holds bytes read and not yet consumed; rbuf.len() is its capacity. Empty
    /// while idle; after an idle read, exactly the bytes it got; else a read buffer of
    /// `READ_BUF` bytes or more.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Heads (and `100 Continue`) waiting to be written; the bodies that go between them wait
    /// in `bodies`.
    wbuf: Vec<u8>,
    bodies: Bodies,
    /// A write failed or a streaming body broke off: nothing more may be written (the client
    /// would read it as part of the broken body).
    write_failed: bool,
    /// The read timeout currently set on the socket (setting it is a syscall).
    read_timeout: Option<Duration>,
    seq: u64,
    /// Where the answers come back (created on this coroutine, as `ReplySlot::new` requires).
    reply: Arc<ReplySlot>,
    requests: u64,
    /// Whether the request being handled is a HEAD (its answer carries no body).
    last_method_is_head: bool,
    /// What the body just read holds of `--max-body-memory`, until its request's in-flight
    /// record takes it over (`enqueue`).
    body_memory: Option<Reservation>,
    /// This connection's entry in the server's registry (busy or idle, for the drain).
    slot: Arc<ConnSlot>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.shared.conns.read_bufs.give(std::mem::take(&mut self.rbuf));
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
        bodies: Bodies::default(),
        write_failed: false,
        read_timeout: None,
        seq: 0,
        reply: ReplySlot::new(),
        requests: 0,
        last_method_is_head: false,
        body_memory: None,
        slot,
    };
    match c.run() {
        Stop::Quiet => {}
        Stop::Refuse(fault) => c.fail(fault, None),
        Stop::Gone => c.linger_close(),
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
                    // than its coroutine's stack (BENCHMARKS.md, idle connections). The buffer
                    // goes to the server's spares, for the next connection that gets bytes.
                    self.shared.conns.read_bufs.give(std::mem::take(&mut self.rbuf));
                }
            }
            let read = match started {
                // Idle between requests: no read timeout. The keep-alive timeout is the
                // registry's to enforce (`Connections::close_expired_idle`): a timeout on the
                // socket would cost a may timer, added and cancelled, per request.
                None if self.requests > 0 => self.wait_idle(),
                // The first request gets the header timeout, as a client that connects and
                // sends nothing is a slowloris.
                None => self.fill(self.shared.settings.header_timeout),
                Some(t0) => {
                    let left = self.shared.settings.header_timeout.saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        return Err(Stop::Refuse(Fault::HeadTimeout));
                    }
                    self.fill(left)
                }
            };
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {
                    if started.is_none() {
                        return Ok(None);
                    }
                    return Err(Stop::Refuse(Fault::HeadTimeout));
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

    /// Waits for the next request on a kept-alive connection, holding no read buffer: it reads
    /// into a small stack buffer and takes a heap buffer once bytes come (the same one read
    /// syscall as reading into the heap buffer; a head longer than this is completed by `fill`).
    /// No read timeout: the registry closes the connection past `--keepalive` (its read then
    /// returns end-of-file; on Windows, where it cannot, the read times out at `--keepalive`). Returns bytes read (0 = EOF). Out of line: its stack buffer is on
    /// the stack only while the connection is idle.
    #[inline(never)]
    fn wait_idle(&mut self) -> io::Result<usize> {
        // Windows: another thread cannot wake a pending read by shutting the socket's read
        // side (`PeerProbe::shutdown_read` does nothing there), so the idle wait keeps
        // `--keepalive` as its read timeout, and the timer per request with it.
        #[cfg(windows)]
        self.set_timeout(self.shared.settings.keepalive)?;
        #[cfg(not(windows))]
        self.clear_timeout()?;
        let mut first = [0u8; IDLE_READ];
        self.shared.conns.idle(&self.slot, clock::now_ns());
        let n = self.stream.read(&mut first)?;
        if n > 0 {
            if !self.shared.conns.busy(&self.slot) {
                // The drain or the keep-alive timeout closed this idle connection as the bytes
                // arrived (the classic keep-alive race: the client retries on another
                // connection).
                return Ok(0);
            }
            // Into a heap buffer of exactly their size: when they are one whole request head (the
            // usual case), `handle` keeps it as the request's copy of its head, and no read
            // buffer is taken at all. Otherwise `fill` moves them to a read buffer.
            self.rbuf = first[..n].to_vec();
            (self.start, self.end) = (0, n);
        }
        Ok(n)
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`. Returns bytes read (0 = EOF).
    /// A full buffer at its cap (which the parser's head limit keeps out of reach) is an
    /// `OutOfMemory` error.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.end == self.rbuf.len() {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.rbuf.len() < READ_BUF {
                // None yet, or an idle read's exact-size buffer: a read buffer (a spare one).
                let mut buf = self.shared.conns.read_bufs.take();
                buf[..self.end].copy_from_slice(&self.rbuf[..self.end]);
                self.rbuf = buf;
            } else if self.end == self.rbuf.len() {
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
        let raw_head: Box<[u8]> = if self.start == 0 && head.len == self.end && self.end == self.rbuf.len() {
            // The buffer holds this head and nothing else (an idle read's exact-size buffer):
            // it becomes the request's copy of its head as it is.
            self.end = 0;
            std::mem::take(&mut self.rbuf).into_boxed_slice()
        } else {
            let raw = self.avail()[..head.len].into();
            self.start += head.len;
            raw
        };
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
            .request_id
            .map(|v| v.get(&raw_head))
            .filter(|v| valid_request_id(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map_or_else(|| shared.ids.render(uid), RequestId::from);
        let seen = Seen { method, path, id: request_id.as_str(), head_only, t0 };

        let (route, params) = match shared.app.find(method, path) {
            Routed::Found { route, params } => (route, params),
            // With hooks, the refusal goes through the pool so that they run for it too.
            Routed::Answer(resp) => match shared.routes.unmatched() {
                Some(route) => (route, Vec::new()),
                None => return self.answer_directly(resp, &head, &seen, false, Source::Router),
            },
        };
        if shared.lifecycle.past_graceful_timeout(t0) {
            shared.metrics.reject(Rejected::Draining);
            let resp = shared.app.answers().refusal(Refusal::Draining);
            return self.answer_directly(resp, &head, &seen, true, Source::Drain);
        }
        let has_body = head.framing != BodyFraming::None;
        let body = match self.read_body(&head) {
            Ok(body) => body,
            Err(Stop::Refuse(fault)) => {
                self.fail(fault, Some(&seen));
                return Err(Stop::Quiet);
            }
            Err(stop) => return Err(stop),
        };
        let keep = (head.keep_alive, head.version == Version::Http10, head_only);
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
        let reply = self.wait_reply(seq);
        self.respond(&job, reply, keep, t0)
    }

    /// Wraps the request in its in-flight record and queues it (or answers it 503 when the queue
    /// is full). Out of line, like [`respond`](Conn::respond), so that the record's construction
    /// does not add to the stack frame the connection keeps while it waits (ARCHITECTURE.md,
    /// memory of an idle connection).
    #[inline(never)]
    fn enqueue(
        &mut self,
        req: Request,
        params: crate::app::Params,
        route: RouteId,
        uid: u64,
        seq: u64,
        start_ns: u64,
    ) -> Arc<Inflight> {
        let shared = self.shared;
        let job = self.new_record(req, params, route, uid, seq, start_ns);
        match shared.pool.submit(Arc::clone(&job)) {
            Ok(()) => shared.watchdog.register(&job),
            Err(e) => refuse_unqueued(shared, &job, e, start_ns),
        }
        job
    }

    /// The in-flight record of a request. Out of line: the record is built on the stack before
    /// it moves to the heap, and that frame is gone before `enqueue` hands the record to the
    /// pool (whose `try_send` may wake a worker: a deep call).
    #[inline(never)]
    fn new_record(
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
        let arrival = Arrival {
            upstream_timeout: if shared.settings.trust_upstream_deadline { upstream_timeout(&req) } else { None },
            req,
            route,
            uid,
            seq,
            start_ns,
            reply: Some(Arc::clone(&self.reply)),
            peer: PeerProbe::new(&self.stream),
        };
        Arc::new(Inflight::holding(arrival, shared.routes.get(route), self.body_memory.take()))
    }

    /// Encodes the answer to `job` (or, for a client that went away, nothing), counts it and
    /// logs it. `keep`: the request's keep-alive, HTTP/1.0 and HEAD flags.
    #[inline(never)]
    fn respond(&mut self, job: &Inflight, reply: Reply, keep: (bool, bool, bool), t0: u64) -> Result<bool, Stop> {
        let shared = self.shared;
        let (keep_alive, http10, head_only) = keep;
        let unmatched = !shared.routes.is_app_route(job.route);
        shared.watchdog.answered(job);
        let (mut resp, source) = match reply {
            // A request the router refused, run through the pool for the app's hooks.
            Reply::Send(resp, Source::Handler) if unmatched => (resp, Source::Router),
            Reply::Send(resp, source) => (resp, source),
            Reply::Refused(r) => (shared.app.answers().refusal(r), r.source()),
            Reply::ClientGone => return Err(self.client_gone(job, t0)),
        };
        let close =
            self.must_close(keep_alive) || resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let status = resp.status();
        let framing = Framing { head_only, close, http10, request_id: Some(job.req.id()) };
        let close = self.queue(&mut resp, &framing);
        let now = clock::now_ns();
        let elapsed = Duration::from_nanos(now.saturating_sub(t0));
        let (route, budget) = self.route_and_budget(job, now);
        shared.metrics.response(route, job.req.method(), status, elapsed, budget);
        let ran_at = job.run_start_ns.load(Relaxed);
        if ran_at != 0 {
            shared.metrics.queue_wait(Duration::from_nanos(ran_at.saturating_sub(job.start_ns)));
        }
        if budget.is_some_and(|b| b >= 0.8) || access::enabled(&shared.settings) {
            self.log_request(job, status, source, elapsed, budget);
        }
        Ok(!close)
    }

    /// The watchdog found the client gone and cancelled the handler: nothing is sent; the
    /// request is logged and counted as 499, and the connection closes.
    #[inline(never)]
    fn client_gone(&self, job: &Inflight, t0: u64) -> Stop {
        let s = self.shared;
        let now = clock::now_ns();
        let elapsed = Duration::from_nanos(now.saturating_sub(t0));
        let (route, budget) = self.route_and_budget(job, now);
        s.metrics.response(route, job.req.method(), CLIENT_CLOSED_REQUEST, elapsed, budget);
        debug!("{}: client of id={} went away before its answer (499); closing", self.peer, job.req.id());
        if access::enabled(&s.settings) {
            self.log_request(job, CLIENT_CLOSED_REQUEST, Source::Client, elapsed, budget);
        }
        Stop::Gone
    }

    /// Whether the connection closes after this answer, whatever the answer says: the client
    /// did not ask to keep it, keep-alive is off, or a drain began.
    fn must_close(&self, keep_alive: bool) -> bool {
        !keep_alive || self.shared.settings.keepalive.is_zero() || self.shared.lifecycle.is_draining()
    }

    /// The app route `job` is counted under (`None`: it matched none) and the share of its
    /// time budget used by `now` (`None` with no route).
    fn route_and_budget(&self, job: &Inflight, now: u64) -> (Option<RouteId>, Option<f64>) {
        let route = self.shared.routes.app_route(job.route);
        let timeout = self.shared.routes.get(job.route).timeout;
        (route, route.map(|_| now.saturating_sub(job.start_ns) as f64 / timeout.as_nanos().max(1) as f64))
    }

    /// Waits for the answer to request `seq`.
    fn wait_reply(&mut self, seq: u64) -> Reply {
        self.reply.wait(seq)
    }

    /// The access line of a request that reached the pool, and the warning for one that used
    /// 80 % or more of its budget.
    #[inline(never)]
    fn log_request(&self, job: &Inflight, status: u16, source: Source, elapsed: Duration, budget: Option<f64>) {
        let s = &self.shared;
        let info = s.routes.get(job.route);
        let route = &*info.pattern;
        if let Some(budget) = budget.filter(|&b| b >= 0.8 && source == Source::Handler) {
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
        if access::enabled(&s.settings) {
            AccessLine {
                peer: self.peer.ip(),
                method: job.req.method(),
                path: job.req.path(),
                route,
                status,
                duration: elapsed,
                budget,
                id: job.req.id(),
                worker: job.worker.load(Relaxed),
                source,
            }
            .log();
        }
    }

    /// Answers without a handler (router: 404, 405, `OPTIONS *`; drain: 503). A
    /// `Content-Length` body that is already buffered is skipped; one still to come (or a
    /// chunked one) is not waited for: the answer goes out at once and the connection closes,
    /// as it cannot be reframed.
    #[inline(never)]
    fn answer_directly(
        &mut self,
        mut resp: Response,
        head: &Head,
        seen: &Seen<'_>,
        close_anyway: bool,
        source: Source,
    ) -> Result<bool, Stop> {
        let body_skipped = match head.framing {
            BodyFraming::None => true,
            BodyFraming::Length(n) if n <= (self.end - self.start) as u64 => {
                self.start += n as usize;
                true
            }
            _ => false,
        };
        let close = close_anyway || !body_skipped || self.must_close(head.keep_alive);
        let http10 = head.version == Version::Http10;
        let framing = Framing { head_only: seen.head_only, close, http10, request_id: Some(seen.id) };
        let status = resp.status();
        let close = self.queue(&mut resp, &framing);
        let elapsed = Duration::from_nanos(clock::now_ns().saturating_sub(seen.t0));
        self.shared.metrics.response(None, seen.method, status, elapsed, None);
        if access::enabled(&self.shared.settings) {
            self.log_direct(seen, status, elapsed, source);
        }
        if !close {
            self.requests += 1;
        }
        Ok(!close)
    }

    /// The access line of an answer given without a handler.
    #[inline(never)]
    fn log_direct(&self, seen: &Seen<'_>, status: u16, elapsed: Duration, source: Source) {
        AccessLine {
            peer: self.peer.ip(),
            method: seen.method,
            path: seen.path,
            route: self.shared.routes.label(None),
            status,
            duration: elapsed,
            budget: None,
            id: seen.id,
            worker: None,
            source,
        }
        .log();
    }

    /// Reads the body the head announced (sending `100 Continue` first when asked to). Every
    /// byte of its buffer is reserved from `--max-body-memory` before it is allocated; the
    /// reservation is left in `self.body_memory` for the request's record. Past the budget, the
    /// body is refused (503) rather than read further.
    #[inline(never)]
    fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, Stop> {
        if head.framing == BodyFraming::None {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let limit = self.shared.settings.body_timeout;
        let mut held = self.shared.body_budget.reservation();
        let body = match head.framing {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(n) => {
                // n <= --max-body, checked by the parser.
                let n = usize::try_from(n).map_err(|_| Stop::from(ParseError::PayloadTooLarge))?;
                let take = n.min(self.end - self.start);
                // The buffer starts at what is here (or a step, or the whole body if smaller)
                // and doubles as bytes arrive: memory follows what the client sent.
                let first = if take == n { n } else { take.max(BODY_STEP).min(n) };
                self.reserve(&mut held, first)?;
                let mut body = Vec::with_capacity(first);
                body.extend_from_slice(&self.avail()[..take]);
                self.start += take;
                if take < n {
                    self.continue_100(head)?;
                    // body[..filled] holds what arrived; body[filled..] is zeroed room for more.
                    let mut filled = take;
                    body.resize(first, 0);
                    while filled < n {
                        let left = self.body_time_left(started, limit)?;
                        if filled == body.len() {
                            let more = (filled * 2).max(BODY_STEP).min(n);
                            self.reserve(&mut held, more)?;
                            body.reserve_exact(more - body.len());
                            body.resize(more, 0);
                        }
                        let r = self.set_timeout(left).and_then(|_| self.stream.read(&mut body[filled..]));
                        match r {
                            Ok(0) => return Err(Stop::Quiet),
                            Ok(k) => filled += k,
                            Err(e) if is_timeout(&e) => return Err(self.body_timeout()),
                            Err(_) => return Err(Stop::Quiet),
                        }
                    }
                }
                body
            }
            BodyFraming::Chunked => {
                let max_body = self.shared.limits.max_body;
                let cap = usize::try_from(max_body).unwrap_or(usize::MAX);
                let mut dec = ChunkedDecoder::new(max_body);
                // Something is reserved before `100 Continue`: with the budget spent, a new
                // body is refused before the client sends it.
                let first = (self.end - self.start).max(1).min(cap.max(1));
                self.reserve(&mut held, first)?;
                let mut body = Vec::with_capacity(first);
                let mut asked = false;
                loop {
                    // Decoding never outputs more than its input: room for that much (or for
                    // --max-body, which the decoder does not let the body pass) is reserved
                    // before the decoder may grow the buffer.
                    let need = (body.len() + (self.end - self.start)).min(cap);
                    if need > body.capacity() {
                        let more = need.max(body.capacity() * 2).min(cap);
                        self.reserve(&mut held, more)?;
                        body.reserve_exact(more - body.len());
                    }
                    let (used, done) = dec.decode(self.avail(), &mut body)?;
                    self.start += used;
                    if done {
                        break body;
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
        };
        self.body_memory = Some(held);
        Ok(body)
    }

    /// Grows `held` to `bytes`, or refuses the body: the memory budget is spent.
    fn reserve(&self, held: &mut Reservation, bytes: usize) -> Result<(), Stop> {
        if held.grow_to(bytes as u64) {
            return Ok(());
        }
        self.budget_exhausted(held.bytes());
        Err(Stop::Refuse(Fault::BodyMemory))
    }

    #[cold]
    #[inline(never)]
    fn budget_exhausted(&self, had: u64) {
        let budget = &self.shared.body_budget;
        if let Some(suppressed) = budget.refusal_log.allow(clock::now_ns()) {
            warn!(
                event = "body_memory_full", used = budget.used(), limit = budget.limit(), suppressed = suppressed;
                "request bodies hold {} of --max-body-memory {} bytes: a body from {} (with {had} bytes read) answered 503 \
                 ({suppressed} more since the last such line; at most one line per second)",
                budget.used(),
                budget.limit(),
                self.peer.ip(),
            );
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

    /// Takes the socket's read timeout off (a setsockopt only if one was set).
    #[cfg(not(windows))]
    fn clear_timeout(&mut self) -> io::Result<()> {
        if self.read_timeout.is_some() {
            self.stream.set_read_timeout(None)?;
            self.read_timeout = None;
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
        Stop::Refuse(Fault::BodyTimeout)
    }

    /// Sends `100 Continue` if the client waits for it.
    fn continue_100(&mut self, head: &Head) -> Result<(), Stop> {
        if head.expect_continue {
            self.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().map_err(|_| Stop::Quiet)?;
        }
        Ok(())
    }

    /// Encodes `resp`'s head into the write buffer; its body waits, where it is, to be written
    /// after it. Returns whether the connection closes after this response (`framing.close`,
    /// or a body only the close can end).
    fn queue(&mut self, resp: &mut Response, framing: &Framing<'_>) -> bool {
        let enc = encode_head(resp, framing, &mut self.wbuf);
        if !matches!(enc.payload, Payload::None) {
            self.bodies.push(self.wbuf.len(), enc.payload);
        }
        enc.close
    }

    /// Writes what is queued: heads and bodies, in order.
    fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() && self.bodies.is_empty() {
            return Ok(());
        }
        self.write_out()
    }

    #[inline(never)]
    fn write_out(&mut self) -> io::Result<()> {
        let r = if self.write_failed {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "an earlier write failed"))
        } else {
            write_queued(&mut self.stream, &self.wbuf, &mut self.bodies)
        };
        // Bodies are dropped here: a streaming body's pipe tells its worker to stop.
        self.bodies.clear();
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP_WRITE_BUF {
            self.wbuf = Vec::new();
        }
        if let Err(e) = &r {
            if !self.write_failed {
                debug!("write to {} failed: {e}", self.peer);
            }
            self.write_failed = true;
        }
        r
    }

    /// Answers a refusal of what the client sent, which ends the connection: the fault's status
    /// and a short text body (none for a HEAD request, RFC 9110 §9.3.2), `Connection: close`, a
    /// fresh request id. `seen`: the request whose body was refused; `None` for a head that
    /// did not parse (its request line is guessed at for the HEAD rule and the access line).
    #[inline(never)]
    fn fail(&mut self, fault: Fault, seen: Option<&Seen<'_>>) {
        let s = Arc::clone(self.shared);
        let (status, message) = (fault.status(), fault.message());
        let generated;
        let id = match seen {
            Some(seen) => seen.id,
            None => {
                generated = s.ids.render(s.ids.next_uid());
                generated.as_str()
            }
        };
        let head_only = match seen {
            Some(seen) => seen.head_only,
            None => access::is_head_request(self.avail()),
        };
        let mut resp = fault.response(s.app.answers());
        let framing = Framing { head_only, close: true, http10: false, request_id: Some(id) };
        self.queue(&mut resp, &framing);
        let elapsed = match (seen, fault) {
            (Some(seen), _) => Duration::from_nanos(clock::now_ns().saturating_sub(seen.t0)),
            (None, Fault::HeadTimeout) => s.settings.header_timeout,
            (None, _) => Duration::ZERO,
        };
        s.metrics.response(None, seen.map_or("other", |seen| seen.method), status, elapsed, None);
        s.metrics.reject(fault.rejected());
        if access::enabled(&s.settings) {
            match seen {
                Some(seen) => self.log_direct(seen, status, elapsed, fault.source()),
                None => {
                    let (method, path) = access::guess_request_line(self.avail());
                    let seen = Seen { method: &method, path: &path, id, head_only, t0: 0 };
                    self.log_direct(&seen, status, elapsed, fault.source());
                }
            }
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

/// The bodies waiting to be written, each with its place in the write buffer (the length of
/// the buffer when its head had been encoded). The first has a place of its own: most flushes
/// write one head and one body, and keeping it inline costs no allocation per request and no
/// heap while the connection is idle.
#[derive(Default)]
struct Bodies {
    first: Option<(usize, Payload)>,
    rest: Vec<(usize, Payload)>,
}

impl Bodies {
    fn push(&mut self, at: usize, body: Payload) {
        if self.first.is_none() {
            self.first = Some((at, body));
        } else {
            self.rest.push((at, body));
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn clear(&mut self) {
        self.first = None;
        if self.rest.capacity() > 0 {
            // Pipelined bodies are rare: free the list rather than keep it for the connection.
            self.rest = Vec::new();
        }
    }
}

/// At most this many buffers per vectored write (more wait for the next write).
const MAX_IOVECS: usize = 8;

/// Writes `wbuf` with `bodies` spliced in at their places, gathering up to [`MAX_IOVECS`]
/// buffers per write; a streaming body is written chunk by chunk as its worker produces it.
/// Each write may stall at most `--write-timeout` (the socket's).
fn write_queued<'a>(stream: &mut TcpStream, wbuf: &'a [u8], bodies: &'a mut Bodies) -> io::Result<()> {
    let mut out = Gather { iov: [IoSlice::new(&[]); MAX_IOVECS], n: 0 };
    let mut from = 0;
    let Bodies { first, rest } = bodies;
    for (at, body) in first.iter_mut().chain(rest.iter_mut()) {
        if *at > from {
            out.push(stream, &wbuf[from..*at])?;
            from = *at;
        }
        match body {
            Payload::None => {}
            Payload::Bytes(b) => out.push(stream, b)?,
            Payload::Stream(chunks, framing) => {
                out.write(stream)?;
                write_stream(stream, &mut **chunks, *framing)?;
            }
        }
    }
    if from < wbuf.len() {
        out.push(stream, &wbuf[from..])?;
    }
    out.write(stream)
}

/// Buffers gathered for one vectored write.
struct Gather<'a> {
    iov: [IoSlice<'a>; MAX_IOVECS],
    n: usize,
}

impl<'a> Gather<'a> {
    fn push(&mut self, stream: &mut TcpStream, buf: &'a [u8]) -> io::Result<()> {
        if self.n == MAX_IOVECS {
            self.write(stream)?;
        }
        self.iov[self.n] = IoSlice::new(buf);
        self.n += 1;
        Ok(())
    }

    fn write(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let n = std::mem::take(&mut self.n);
        write_all_vectored(stream, &mut self.iov[..n])
    }
}

/// Writes a streaming body as its worker produces it: the chunks ready at each wake-up in one
/// vectored write (each with its size line when chunked; the last chunk with the last batch). A
/// body that broke off is an error: the connection closes without the last chunk (or short of
/// its length), so the client can tell.
#[inline(never)]
fn write_stream(stream: &mut TcpStream, chunks: &mut dyn Chunks, framing: StreamFraming) -> io::Result<()> {
    let chunked = framing == StreamFraming::Chunked;
    let mut ready: Vec<Vec<u8>> = Vec::new();
    let mut lines: Vec<([u8; 18], usize)> = Vec::new();
    loop {
        let next = chunks.next_chunks(&mut ready);
        if chunked {
            lines.clear();
            lines.extend(ready.iter().map(|c| chunk_size_line(c.len())));
        }
        {
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(ready.len() * 3 + 1);
            for (i, c) in ready.iter().enumerate() {
                if chunked {
                    let (line, from) = &lines[i];
                    iov.push(IoSlice::new(&line[*from..]));
                }
                iov.push(IoSlice::new(c));
                if chunked {
                    iov.push(IoSlice::new(b"\r\n"));
                }
            }
            if chunked && next == Next::End {
                iov.push(IoSlice::new(b"0\r\n\r\n"));
            }
            for part in iov.chunks_mut(STREAM_IOVECS) {
                write_all_vectored(stream, part)?;
            }
        }
        ready.clear();
        match next {
            Next::More => {}
            Next::End => return Ok(()),
            Next::Broken => return Err(io::Error::other("the streaming body broke off")),
        }
    }
}

/// Buffers per vectored write of a streaming body (Linux takes up to 1024).
const STREAM_IOVECS: usize = 512;

/// A chunk's size line: `len` in hex and CRLF, at `line[start..]`.
fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut line = [0u8; 18];
    let mut i = 16;
    let mut v = len;
    loop {
        i -= 1;
        line[i] = HEX[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    line[16] = b'\r';
    line[17] = b'\n';
    (line, i)
}

/// Writes every byte of `bufs` (the standard library's `write_all_vectored` is unstable).
fn write_all_vectored(stream: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => IoSlice::advance_slices(&mut bufs, k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

/// The shortest deadline the request's upstream sent (`--trust-upstream-deadline`).
#[inline(never)]
fn upstream_timeout(req: &Request) -> Option<std::time::Duration> {
    req.headers().filter_map(|(k, v)| crate::http::deadline::parse(k, v)).min()
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
    job.answer(refusal.into());
}

/// Accepts a client's `X-Request-Id` if it is short and plain (no spaces or control characters).
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}
