//! The server: binding, starting the components in order, the lifecycle thread that runs the
//! drain, and the handles an embedding app holds.
//!
//! Inside: [`shared`] (what every part of a server shares), [`lifecycle`] (running, draining,
//! stopped), [`activation`] (listeners handed over by a supervisor), [`listener`] (binding, and
//! the accept coroutine) and [`conn`] (one coroutine per connection).

pub(crate) mod access;
pub(crate) mod activation;
pub(crate) mod conn;
pub(crate) mod connections;
pub(crate) mod lifecycle;
pub(crate) mod listener;
pub(crate) mod shared;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::app::App;
use crate::http::parse::Limits;
use crate::logging::OncePerSecond;
use crate::metrics::Metrics;
use crate::runtime::budget::BodyBudget;
use crate::runtime::notify::{Message, Supervisor};
use crate::runtime::pool::{Pool, PoolConfig};
use crate::runtime::watchdog::{Watchdog, WatchdogConfig};
use crate::settings::{Settings, SettingsError};
use connections::Connections;
use lifecycle::Lifecycle;
pub use lifecycle::{StopCause, EXIT_THREAD_CEILING};
use shared::{RequestIds, Shared};

/// The server. [`Server::start`] binds and returns a [`ServerHandle`]; [`Server::serve`] also
/// installs the Ctrl-C / SIGTERM handler and blocks until the drain is over.
///
/// ```no_run
/// use vigil::{App, Response, Server, Settings};
/// let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
/// Server::serve(Settings::default(), app).unwrap(); // until Ctrl-C
/// ```
pub struct Server;

/// A running server: its addresses, and the way to stop it.
///
/// The handle owns the server, as tokio's `Runtime` owns its threads: dropping it drains the
/// server and waits for the drain to finish, like [`stop`](ServerHandle::stop) (at most
/// `--graceful-timeout` plus a moment; a handler that ignores its cancellation is abandoned,
/// never waited for). So a server cannot outlive every way to stop it. To let it run until a
/// signal or a [`ShutdownTrigger`] drains it, keep the handle and call
/// [`wait`](ServerHandle::wait). While the thread is panicking (a failed test), dropping it
/// only starts the drain.
///
/// ```
/// use vigil::{App, Response, Server, Settings};
/// let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
/// let settings = Settings::default().bind("127.0.0.1:0".parse().unwrap()).admin_bind(None);
/// let server = Server::start(settings, app).unwrap();
/// assert_ne!(server.local_addr().port(), 0);
/// server.stop(); // drain and wait (dropping `server` would do the same)
/// ```
#[must_use = "dropping the handle stops the server: keep it, or call wait() to serve until a signal"]
pub struct ServerHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
}

/// Why [`Server::start`] (or [`Server::serve`]) could not start a server. Nothing it started
/// is left running.
///
/// ```
/// use vigil::{App, Server, Settings, StartError};
/// let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let settings = Settings::default().bind(taken.local_addr().unwrap()).admin_bind(None);
/// match Server::start(settings, App::new()) {
///     Err(StartError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().unwrap()),
///     other => panic!("{other:?}"),
/// }
/// let err = Server::start(Settings::default().threads(0), App::new()).unwrap_err();
/// assert_eq!(err.to_string(), "invalid settings: --threads: must be between 1 and 4096, got 0");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is out of range, or contradicts another.
    InvalidSettings(SettingsError),
    /// The listener could not bind its address.
    Bind {
        /// The address asked for (`--bind`).
        addr: SocketAddr,
        /// Why (address in use, permission denied, ...).
        source: io::Error,
    },
    /// The admin listener could not bind its address.
    AdminBind {
        /// The address asked for (`--admin-bind`).
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// What a supervisor passed cannot be used: its listening sockets (`LISTEN_FDS`) or its
    /// notification socket (`NOTIFY_SOCKET`).
    Supervisor(io::Error),
    /// A thread or coroutine of the server could not start.
    Spawn {
        /// Which: "worker threads", "the watchdog thread", ...
        what: &'static str,
        /// Why (the process's thread limit, memory).
        source: io::Error,
    },
    /// [`Server::serve`] only: the Ctrl-C / SIGTERM handler could not be installed, most
    /// likely because the application has one of its own. Nothing was started; use
    /// [`Server::start`] and call [`ServerHandle::shutdown`] from that handler.
    SignalHandler(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidSettings(e) => write!(f, "invalid settings: {e}"),
            StartError::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            StartError::AdminBind { addr, source } => write!(f, "cannot bind the admin listener to {addr}: {source}"),
            StartError::Supervisor(e) => write!(f, "cannot use what the supervisor passed: {e}"),
            StartError::Spawn { what, source } => write!(f, "cannot start {what}: {source}"),
            StartError::SignalHandler(e) => write!(
                f,
                "cannot install the Ctrl-C / SIGTERM handler ({e}); if the application has its own, \
                 use Server::start and call ServerHandle::shutdown from it"
            ),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::InvalidSettings(e) => Some(e),
            StartError::Bind { source, .. }
            | StartError::AdminBind { source, .. }
            | StartError::Spawn { source, .. } => Some(source),
            StartError::Supervisor(e) | StartError::SignalHandler(e) => Some(e),
        }
    }
}

/// For a `main` that returns `std::io::Result`: the kind of the underlying error
/// (`InvalidInput` for settings) and this error's text.
impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        let kind = match &e {
            StartError::InvalidSettings(_) => io::ErrorKind::InvalidInput,
            StartError::Bind { source, .. }
            | StartError::AdminBind { source, .. }
            | StartError::Spawn { source, .. }
            | StartError::Supervisor(source)
            | StartError::SignalHandler(source) => source.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

fn spawn_error(what: &'static str) -> impl FnOnce(io::Error) -> StartError {
    move |source| StartError::Spawn { what, source }
}

fn configure_runtime() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        // may counts the stack size in words: 0x1000 is 32 KiB on 64-bit targets, may's own
        // default. Connection coroutines keep their buffers on the heap; about 8 KiB of the
        // stack is ever touched (BENCHMARKS.md, finding 6), so an idle connection costs that in
        // RSS whatever the size, and the spare room guards the logging and formatting paths.
        may::config().set_workers(workers).set_stack_size(0x1000);
    });
}

impl Server {
    /// Binds the listeners, starts the worker pool, the watchdog, the lifecycle thread, the
    /// accept coroutine and the admin listener, and returns at once.
    ///
    /// Under a supervisor: listening sockets it passed (`LISTEN_FDS`, named `public` and
    /// `admin` in `LISTEN_FDNAMES`, or first and second) are used instead of binding
    /// `settings.bind` / `settings.admin_bind`; with `NOTIFY_SOCKET`, the server sends
    /// `READY=1` once it serves and `STOPPING=1` when it drains, and its watchdog thread sends
    /// `WATCHDOG=1` (when `WATCHDOG_USEC` asks for it) and `STATUS=` lines.
    pub fn start(settings: Settings, app: App) -> Result<ServerHandle, StartError> {
        settings.validate().map_err(StartError::InvalidSettings)?;
        for w in settings.warnings() {
            warn!("{w}");
        }
        configure_runtime();
        let routes = Arc::new(app.route_table(settings.timeout));
        // The app's rendering of the server's own answers is user code: it runs here, on the
        // thread that starts the server, never on a coroutine or the watchdog.
        let _ = app.answers();
        let app = Arc::new(app);
        let limits = Limits {
            request_line: settings.limit_request_line,
            fields: settings.limit_request_fields,
            field_size: settings.limit_request_field_size,
            head_bytes: settings.limit_request_head,
            max_body: settings.max_body,
        };
        let supervisor = Supervisor::from_env().map_err(StartError::Supervisor)?;
        let inherited = activation::inherited().map_err(|e| StartError::Supervisor(e.into()))?;
        let bind_error = |addr| move |source| StartError::Bind { addr, source };
        let (public, source) = match inherited.public {
            Some(l) => {
                let at = l.local_addr().map_err(StartError::Supervisor)?;
                info!("serving on the socket passed as `public` ({at}) instead of --bind");
                (l, listener::Source::Inherited)
            }
            None => (listener::bind(settings.bind).map_err(bind_error(settings.bind))?, listener::Source::Bound),
        };
        let listener = listener::into_coroutine_listener(public).map_err(bind_error(settings.bind))?;
        let addr = listener.local_addr().map_err(bind_error(settings.bind))?;
        let admin = match (inherited.admin, settings.admin_bind) {
            (Some(l), _) => {
                let at = l.local_addr().map_err(StartError::Supervisor)?;
                info!("admin endpoints on the socket passed as `admin` ({at}) instead of --admin-bind");
                // The admin threads accept in blocking mode, whatever mode the supervisor left.
                l.set_nonblocking(false).map_err(StartError::Supervisor)?;
                Some((l, at))
            }
            (None, Some(a)) => {
                let l = std::net::TcpListener::bind(a).map_err(|source| StartError::AdminBind { addr: a, source })?;
                let at = l.local_addr().map_err(|source| StartError::AdminBind { addr: a, source })?;
                Some((l, at))
            }
            (None, None) => None,
        };
        let admin_addr = admin.as_ref().map(|(_, at)| *at);

        let pool = Pool::new(
            PoolConfig {
                threads: settings.threads,
                backlog: settings.effective_backlog(),
                max_requests: settings.max_requests,
                max_requests_jitter: settings.max_requests_jitter,
                max_threads: settings.effective_max_threads(),
                abandoned_priority: settings.abandoned_priority,
                abandoned_cpu: settings.abandoned_cpu,
            },
            Arc::clone(&app) as Arc<dyn crate::runtime::pool::Runner>,
            Arc::clone(&routes),
        );
        let watchdog = Watchdog::new(
            WatchdogConfig {
                tick: settings.watchdog_tick,
                grace: settings.cancel_grace,
                max_abandoned: settings.effective_max_abandoned(),
                supervisor: supervisor.clone(),
                starved_after: settings.timeout,
                exit_at_ceiling: settings.exit_on_thread_ceiling,
            },
            Arc::clone(&routes),
            Arc::clone(&pool),
        )
        .map_err(spawn_error("the watchdog's offload threads"))?;
        let shared = Arc::new(Shared {
            limits,
            metrics: Metrics::new(&routes, settings.timeout),
            app,
            routes,
            pool,
            watchdog,
            lifecycle: Lifecycle::new(),
            conns: Connections::new(conn::READ_BUF),
            body_budget: BodyBudget::new(settings.max_body_memory),
            ids: RequestIds::new(u64::from(addr.port())),
            queue_full_log: OncePerSecond::new(),
            notifier: supervisor.map(|s| s.notifier),
            settings,
        });
        // What started before a failure stops again: an error leaves nothing running.
        let undo = |e: StartError| {
            shared.pool.stop();
            shared.watchdog.stop();
            e
        };
        shared.pool.start().map_err(spawn_error("worker threads")).map_err(undo)?;
        let ceiling = Arc::downgrade(&shared);
        shared.watchdog.on_ceiling_exit(move || {
            if let Some(shared) = ceiling.upgrade() {
                shared.lifecycle.request_drain(StopCause::ThreadCeiling);
            }
        });
        shared.watchdog.spawn().map_err(spawn_error("the watchdog thread")).map_err(undo)?;
        let supervisor = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("vigil-lifecycle".into())
            .spawn(move || {
                // Until a drain: close idle connections past --keepalive (they wait with no
                // read timeout of their own: `server::connections`).
                let keepalive = supervisor.settings.keepalive;
                if keepalive.is_zero() {
                    supervisor.lifecycle.wait_for_request();
                } else {
                    let every = connections::reap_period(keepalive);
                    while !supervisor.lifecycle.wait_for_request_for(every) {
                        let now = crate::runtime::clock::now_ns();
                        supervisor.conns.close_expired_idle(now.saturating_sub(crate::runtime::clock::ns(keepalive)));
                    }
                }
                drain(&supervisor, addr, source);
            })
            .map_err(spawn_error("the lifecycle thread"))
            .map_err(undo)?;
        let handle = ServerHandle { addr, admin_addr, shared: Arc::clone(&shared) };
        // From here on, dropping `handle` on an error drains and stops everything.
        if let Some((l, _)) = admin {
            crate::admin::spawn(l, Arc::clone(&shared)).map_err(spawn_error("the admin listener thread"))?;
        }
        listener::spawn(listener, source, Arc::clone(&shared)).map_err(spawn_error("the accept coroutine"))?;
        let s = &shared.settings;
        info!(
            "vigil started: {} worker threads (ceiling {} handler threads{}), queue {}, timeout {:?}, cancel grace {:?}, watchdog tick {:?}",
            s.threads,
            s.effective_max_threads(),
            if s.exit_on_thread_ceiling { ", exit at it" } else { "" },
            s.effective_backlog(),
            s.timeout,
            s.cancel_grace,
            s.watchdog_tick
        );
        shared.notify(Message::Ready);
        Ok(handle)
    }

    /// Installs the Ctrl-C / SIGTERM handler (on Windows also console close and shutdown),
    /// then starts the server, prints `listening on http://ADDR` (and `admin on http://ADDR`)
    /// to stdout, and blocks until a signal's drain completes. A second signal exits at once
    /// (status 1). With `--exit-on-thread-ceiling`, a drain the thread ceiling started ends the
    /// process with status [`EXIT_THREAD_CEILING`](crate::EXIT_THREAD_CEILING) (75), for its
    /// supervisor to restart it; use [`Server::start`] and [`ServerHandle::wait`] to decide
    /// otherwise.
    ///
    /// The handler is installed first (once per process; a later `serve` reuses it), so if it
    /// cannot be, because the application installed one of its own, nothing has started:
    /// the error is [`StartError::SignalHandler`], and [`Server::start`] plus a call to
    /// [`ServerHandle::shutdown`] from the application's handler is the way to go.
    pub fn serve(settings: Settings, app: App) -> Result<(), StartError> {
        signals::install()?;
        let server = Server::start(settings, app)?;
        let _target = signals::drain_on_signal(&server);
        server.print_addresses();
        if let StopCause::ThreadCeiling = server.wait() {
            crate::logging::flush();
            std::process::exit(i32::from(StopCause::ThreadCeiling.exit_status()));
        }
        Ok(())
    }
}

/// The process's signal handlers and the server they drain. `ctrlc` allows one handler per
/// process, so it is installed once and drains whichever server `serve` runs at the time.
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    use super::{ServerHandle, ShutdownTrigger, StartError};

    /// The server a signal drains (the one `serve` runs).
    static TARGET: Mutex<Option<ShutdownTrigger>> = Mutex::new(None);
    /// A signal arrived while no server was registered (between install and start).
    static PENDING: AtomicBool = AtomicBool::new(false);
    /// Signals since the current server was registered: the second one exits.
    static HITS: AtomicUsize = AtomicUsize::new(0);
    static INSTALLED: Mutex<bool> = Mutex::new(false);

    pub(super) fn install() -> Result<(), StartError> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            return Ok(());
        }
        ctrlc::set_handler(on_signal).map_err(|e| StartError::SignalHandler(std::io::Error::other(e)))?;
        // After ctrlc's: Windows asks the last-registered handler first (src/platform.rs).
        crate::platform::drain_on_console_close(start_drain).map_err(StartError::SignalHandler)?;
        *installed = true;
        Ok(())
    }

    fn on_signal() {
        if HITS.fetch_add(1, SeqCst) == 0 {
            start_drain();
        } else {
            eprintln!("vigil: second signal, exiting now");
            std::process::exit(1);
        }
    }

    fn start_drain() {
        match &*TARGET.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(t) => t.shutdown(),
            None => PENDING.store(true, SeqCst),
        }
    }

    /// Signals drain `server` until the returned guard is dropped.
    pub(super) fn drain_on_signal(server: &ServerHandle) -> Registered {
        let trigger = server.trigger();
        HITS.store(0, SeqCst);
        *TARGET.lock().unwrap_or_else(|p| p.into_inner()) = Some(trigger.clone());
        if PENDING.swap(false, SeqCst) {
            trigger.shutdown();
        }
        Registered
    }

    pub(super) struct Registered;

    impl Drop for Registered {
        fn drop(&mut self) {
            *TARGET.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// A cloneable way to start a drain (e.g. from a signal handler).
#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Begins a graceful drain (idempotent). Returns at once: the drain runs on the server's
    /// lifecycle thread, started with the server, so this allocates nothing and starts no
    /// thread (it works at the process's thread limit and from a signal handler's thread).
    pub fn shutdown(&self) {
        self.shared.lifecycle.request_drain(StopCause::Requested);
    }
}

/// The drain, on the lifecycle thread, made for load balancers:
/// 1. readiness fails at once (liveness holds);
/// 2. for `--shutdown-delay` everything else works as usual, except that responses carry
///    `Connection: close`, so the balancer notices and keep-alive clients move on;
/// 3. then the listener closes (after accepting what already reached it) and idle keep-alive
///    connections are closed, while everything accepted is finished: requests being received,
///    queued (under their own deadlines), running, and responses being written;
/// 4. `--graceful-timeout` after the signal, what is still queued gets 503 and what still runs
///    504 (the watchdog), and the last answers are written (bounded by `--write-timeout`);
/// 5. the workers and the watchdog stop.
fn drain(shared: &Shared, addr: SocketAddr, source: listener::Source) {
    let s = &shared.settings;
    let Some(cancel_at) = shared.lifecycle.begin_drain(s.graceful_timeout) else {
        return;
    };
    shared.notify(Message::Stopping);
    shared.watchdog.begin_drain(cancel_at);
    let delay = s.shutdown_delay.min(s.graceful_timeout);
    info!(
        "shutting down: not ready; serving {:?} more (--shutdown-delay), then closing the listener; \
         requests get up to {:?} in all (--graceful-timeout)",
        delay, s.graceful_timeout
    );
    shared.lifecycle.pause(delay);

    // Wake the accept coroutine with a connection of our own: it accepts whatever reached the
    // listener before it, then closes the listener.
    // Its local address is known (and recorded) before it connects, so the accept loop
    // recognises it whenever it is accepted.
    let wake_up = listener::WakeUp::bind(addr);
    shared.lifecycle.begin_closing(wake_up.as_ref().ok().map(|w| w.local));
    if let Ok(w) = wake_up {
        w.connect(addr);
    }
    let idle = shared.conns.close_idle();
    if source == listener::Source::Inherited {
        // The supervisor's socket may be shared with a process started meanwhile, which can
        // take the wake-up connection: wake the accept coroutine until it stops, so that it
        // accepts nothing after the wait below (that connection would be cut at exit).
        let give_up = Instant::now() + Duration::from_secs(2);
        while !shared.conns.accept_stopped.load(Acquire) && Instant::now() < give_up {
            let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    info!("listener closed; {idle} idle connections closed; finishing {} busy connections", shared.conns.busy_count());

    let closed_at = Instant::now();
    let hard_stop = closed_at + s.graceful_timeout.saturating_sub(delay) + s.write_timeout + Duration::from_secs(1);
    let mut fresh_closed = false;
    while shared.conns.busy_count() > 0 && Instant::now() < hard_stop {
        if !fresh_closed && closed_at.elapsed() >= connections::FRESH_GRACE {
            // Accepted before the listener closed but silent since: a preconnect, or a client
            // that will retry on a closed connection. Not worth holding the drain for.
            let n = shared.conns.close_fresh();
            if n > 0 {
                info!(
                    "closed {n} connections that sent no request within {:?} of the listener closing",
                    connections::FRESH_GRACE
                );
            }
            fresh_closed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = shared.conns.busy_count();
    if left > 0 {
        warn!("drain: {left} connections still busy at the hard stop; they end with the process");
    }
    shared.pool.stop();
    shared.watchdog.stop();
    match shared.lifecycle.cause() {
        StopCause::ThreadCeiling => warn!(
            "drain complete; exiting with status {} (thread ceiling, --exit-on-thread-ceiling)",
            StopCause::ThreadCeiling.exit_status()
        ),
        _ => info!("drain complete"),
    }
    shared.lifecycle.mark_stopped();
}

impl ServerHandle {
    /// The public listener's bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's bound address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Prints the bound addresses to stdout, one per line (tests and scripts read them).
    pub fn print_addresses(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{}", self.addr);
        if let Some(a) = self.admin_addr {
            let _ = writeln!(out, "admin on http://{a}");
        }
        let _ = out.flush();
    }

    /// A handle that can start the drain from elsewhere (another thread, a signal handler).
    pub fn trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger { shared: Arc::clone(&self.shared) }
    }

    /// Begins a graceful drain and returns at once.
    pub fn shutdown(&self) {
        self.trigger().shutdown();
    }

    /// Blocks until the server has drained (after [`shutdown`](ServerHandle::shutdown), a
    /// signal, or the thread ceiling with `--exit-on-thread-ceiling`), and says why it stopped.
    pub fn wait(self) -> StopCause {
        self.shared.lifecycle.wait_stopped();
        self.shared.lifecycle.cause()
    }

    /// [`wait`](ServerHandle::wait) for at most `timeout`: `true` once the server has drained.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn wait_for(&self, timeout: Duration) -> bool {
        self.shared.lifecycle.wait_stopped_for(timeout)
    }

    /// Drains and waits: [`shutdown`](ServerHandle::shutdown) then [`wait`](ServerHandle::wait).
    pub fn stop(self) {
        self.shutdown();
        let _ = self.wait();
    }

    /// Responses sent so far with `status` (all routes).
    pub fn responses_with_status(&self, status: u16) -> u64 {
        self.shared.metrics.status_count(status)
    }

    /// The Prometheus text exposition, as `/metrics` on the admin listener serves it.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render(&self.shared.snapshot())
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("phase", &self.shared.lifecycle.phase().label())
            .finish()
    }
}

/// Drains the server and waits for it (see [`ServerHandle`]); only starts the drain while
/// panicking. Nothing to do once it has stopped.
impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.lifecycle.request_drain(StopCause::Requested);
        if !std::thread::panicking() {
            self.shared.lifecycle.wait_stopped();
        }
    }
}
