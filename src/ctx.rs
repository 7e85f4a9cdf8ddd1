//! The request context a handler receives: its cancellation token, deadline and progress reports.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::request::Request;
use crate::runtime::clock;
use crate::runtime::inflight::Inflight;
use crate::runtime::token::Registered;

/// Returned by [`Ctx::checkpoint`] and [`Ctx::sleep`] once the request is cancelled. Propagating it
/// with `?` out of a handler ends the request; the client has already been (or is about to be)
/// answered `504 Gateway Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// The context of one request: its cancellation token, its deadline and its progress reports.
///
/// Cancellation is cooperative: the watchdog fires the token at the request's deadline (or when a
/// route with a stall timeout has reported no [`progress`](Ctx::progress) for that long); the
/// handler notices at its next [`checkpoint`](Ctx::checkpoint) or [`sleep`](Ctx::sleep) and
/// returns. A handler that never looks is abandoned after the grace period and its thread replaced.
///
/// ```
/// use std::time::Duration;
/// use vigil::{Cancelled, Ctx, Request, Response};
///
/// fn export(_req: &Request, ctx: &Ctx) -> Result<Response, Cancelled> {
///     for chunk in 1..=3 {
///         ctx.stage(format!("chunk {chunk}/3"));
///         ctx.sleep(Duration::from_millis(1))?; // real work goes here
///         ctx.progress();
///     }
///     Ok(Response::text("done"))
/// }
///
/// let ctx = Ctx::detached(Duration::from_secs(5));
/// let resp = export(&Request::builder("GET", "/export").build(), &ctx).unwrap();
/// assert_eq!(resp.body(), b"done");
/// ctx.cancel();
/// assert!(ctx.checkpoint().is_err());
/// ```
#[derive(Clone)]
pub struct Ctx {
    pub(crate) inflight: Arc<Inflight>,
}

impl Ctx {
    /// A context that belongs to no server (for tests and for calling handlers directly), with a
    /// deadline `timeout` from now. Cancel it yourself with [`Ctx::cancel`].
    pub fn detached(timeout: Duration) -> Ctx {
        let req = Request::builder("GET", "/").build();
        Ctx { inflight: Arc::new(Inflight::detached(req, crate::runtime::routes::RouteId::new(0), timeout)) }
    }

    pub(crate) fn new(inflight: Arc<Inflight>) -> Ctx {
        Ctx { inflight }
    }

    /// `true` once the request has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inflight.token.is_cancelled()
    }

    /// `Err(Cancelled)` once the request has been cancelled; use it with `?` in loops.
    pub fn checkpoint(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Sleeps for `d`, waking early with `Err(Cancelled)` if the request is cancelled meanwhile.
    pub fn sleep(&self, d: Duration) -> Result<(), Cancelled> {
        if self.inflight.token.wait(d) {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress (a heartbeat): a route with a stall timeout is only considered hung after
    /// that long without a call. One atomic store.
    pub fn progress(&self) {
        self.inflight.last_progress_ns.store(clock::now_ns(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Names what the request is doing now ("query orders", "chunk 3/10"). It shows up in the
    /// timeout log and in the admin in-flight table.
    pub fn stage(&self, stage: impl Into<Cow<'static, str>>) {
        self.inflight.set_stage(stage.into());
    }

    /// When the request will be cancelled unless it reports progress: the sooner of the route's
    /// ceiling and, for routes with a stall timeout, last progress + stall timeout. Pass it on to
    /// database or HTTP clients.
    pub fn deadline(&self) -> Instant {
        clock::instant_at(self.inflight.effective_deadline_ns())
    }

    /// Time left until [`deadline`](Ctx::deadline) (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Runs `f` when the request is cancelled (at once, on this thread, if it already is), e.g.
    /// to shut down a socket so a blocking read returns. Returns a guard: **dropping it disarms
    /// `f`**, so keep it for as long as the call it protects is running, and let it go once that
    /// call has returned. That matters with pooled resources: a connection handed back to its
    /// pool must not be shut down by a cancellation that comes later. [`CancelGuard::keep`]
    /// keeps `f` armed for the rest of the request.
    ///
    /// When the watchdog cancels the request, `f` runs on one of vigil's offload threads, never
    /// on the watchdog itself: a callback that blocks delays no other request's 504. Keep it
    /// short anyway: while it blocks, other requests' callbacks may wait for a spare offload
    /// thread (one starts after 50 ms, up to 8).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use vigil::Ctx;
    ///
    /// let ctx = Ctx::detached(Duration::from_secs(5));
    /// let shut = Arc::new(AtomicBool::new(false));
    /// {
    ///     let s = Arc::clone(&shut);
    ///     let _armed = ctx.on_cancel(move || s.store(true, Ordering::SeqCst));
    ///     // ... a blocking call on a pooled connection; it returns in time ...
    /// } // the guard is dropped: the connection goes back to the pool, the callback is disarmed
    /// ctx.cancel();
    /// assert!(!shut.load(Ordering::SeqCst));
    /// ```
    pub fn on_cancel(&self, f: impl FnOnce() + Send + 'static) -> CancelGuard {
        match self.inflight.token.on_cancel(Box::new(f)) {
            Registered::Armed(id) => CancelGuard { armed: Some((Arc::clone(&self.inflight), id)) },
            Registered::Fired(f) => {
                f();
                CancelGuard { armed: None }
            }
        }
    }

    /// Cancels the request now, as the watchdog would at the deadline. Callbacks registered
    /// with [`on_cancel`](Ctx::on_cancel) run on the calling thread before it returns.
    pub fn cancel(&self) {
        self.inflight.token.fire().run();
    }

    /// The request id (also on the response as `X-Request-Id`).
    pub fn request_id(&self) -> &str {
        self.inflight.req.id()
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("request_id", &self.request_id()).field("cancelled", &self.is_cancelled()).finish()
    }
}

/// Keeps an [`on_cancel`](Ctx::on_cancel) callback armed; dropping it disarms the callback.
///
/// ```
/// use std::time::Duration;
/// let ctx = vigil::Ctx::detached(Duration::from_secs(5));
/// ctx.on_cancel(|| println!("cancelled")).keep(); // armed until the request ends
/// ```
#[must_use = "dropping the guard disarms the callback at once; bind it (`let _armed = ...`) or call `.keep()`"]
pub struct CancelGuard {
    /// The request and the callback's number; `None` once it ran (the request was cancelled
    /// already) or was kept.
    armed: Option<(Arc<Inflight>, u64)>,
}

impl CancelGuard {
    /// Keeps the callback armed for the rest of the request.
    pub fn keep(mut self) {
        self.armed = None;
    }

    /// Disarms the callback now; `true` if it had not run (and now never will).
    pub fn disarm(mut self) -> bool {
        self.armed.take().is_some_and(|(r, id)| r.token.disarm(id))
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some((r, id)) = self.armed.take() {
            r.token.disarm(id);
        }
    }
}

impl std::fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelGuard").field("armed", &self.armed.is_some()).finish()
    }
}
