//! The server: binding, starting the components in order, the lifecycle thread that runs the
//! drain, and the handles an embedding app holds.
//!
//! Inside: [`shared`] (what every part of a server shares), [`lifecycle`] (running, draining,
//! stopped), [`activation`] (listeners handed over by a supervisor), [`listener`] (binding, and
//! the accept coroutine) and [`conn`] (one coroutine per connection).

pub(crate) mod activation;
pub(crate) mod conn;
pub(crate) mod connections;
pub(crate) mod lifecycle;
pub(crate) mod listener;
pub(crate) mod shared;

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
use crate::runtime::notify::{Message, Supervisor};
use crate::runtime::pool::{Pool, PoolConfig};
use crate::runtime::watchdog::{Watchdog, WatchdogConfig};
use crate::settings::Settings;
use connections::Connections;
use lifecycle::Lifecycle;
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
/// ```
/// use vigil::{App, Response, Server, Settings};
/// let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
/// let settings = Settings::default().bind("127.0.0.1:0".parse().unwrap()).admin_bind(None);
/// let server = Server::start(settings, app).unwrap();
/// assert_ne!(server.local_addr().port(), 0);
/// server.stop(); // drain and wait
/// ```
pub struct ServerHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
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
    pub fn start(settings: Settings, app: App) -> io::Result<ServerHandle> {
        settings.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        for w in settings.warnings() {
            warn!("{w}");
        }
        configure_runtime();
        let routes = Arc::new(app.route_table(settings.timeout));
        let app = Arc::new(app);
        let limits = Limits {
            request_line: settings.limit_request_line,
            fields: settings.limit_request_fields,
            field_size: settings.limit_request_field_size,
            head_bytes: settings.limit_request_head,
            max_body: settings.max_body,
        };
        let supervisor = Supervisor::from_env()?;
        let inherited = activation::inherited()?;
        let (public, source) = match inherited.public {
            Some(l) => {
                info!("serving on the socket passed as `public` ({}) instead of --bind", l.local_addr()?);
                (l, listener::Source::Inherited)
            }
            None => (listener::bind(settings.bind)?, listener::Source::Bound),
        };
        let listener = listener::into_coroutine_listener(public)?;
        let addr = listener.local_addr()?;
        let admin = match inherited.admin {
            Some(l) => {
                info!("admin endpoints on the socket passed as `admin` ({}) instead of --admin-bind", l.local_addr()?);
                // The admin threads accept in blocking mode, whatever mode the supervisor left.
                l.set_nonblocking(false)?;
                Some(l)
            }
            None => settings.admin_bind.map(std::net::TcpListener::bind).transpose()?,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;

        let pool = Pool::new(
            PoolConfig {
                threads: settings.threads,
                backlog: settings.effective_backlog(),
                max_requests: settings.max_requests,
                max_requests_jitter: settings.max_requests_jitter,
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
            },
            Arc::clone(&routes),
            Arc::clone(&pool),
        )?;
        let shared = Arc::new(Shared {
            limits,
            metrics: Metrics::new(&routes, settings.timeout),
            app,
            routes,
            pool,
            watchdog,
            lifecycle: Lifecycle::new(),
            conns: Connections::default(),
            ids: RequestIds::new(u64::from(addr.port())),
            queue_full_log: OncePerSecond::new(),
            notifier: supervisor.map(|s| s.notifier),
            settings,
        });
        shared.pool.start()?;
        shared.watchdog.spawn()?;
        let supervisor = Arc::clone(&shared);
        std::thread::Builder::new().name("vigil-lifecycle".into()).spawn(move || {
            supervisor.lifecycle.wait_for_request();
            drain(&supervisor, addr, source);
        })?;
        let s = &shared.settings;
        info!(
            "vigil started: {} worker threads, queue {}, timeout {:?}, cancel grace {:?}, watchdog tick {:?}",
            s.threads,
            s.effective_backlog(),
            s.timeout,
            s.cancel_grace,
            s.watchdog_tick
        );
        if let Some(l) = admin {
            crate::admin::spawn(l, Arc::clone(&shared))?;
        }
        listener::spawn(listener, source, Arc::clone(&shared))?;
        shared.notify(Message::Ready);
        Ok(ServerHandle { addr, admin_addr, shared })
    }

    /// Starts the server, prints `listening on http://ADDR` (and `admin on http://ADDR`) to
    /// stdout, and blocks until a Ctrl-C / SIGTERM (or Windows console close) drain completes.
    /// A second signal exits at once.
    pub fn serve(settings: Settings, app: App) -> io::Result<()> {
        let server = Server::start(settings, app)?;
        server.print_addresses();
        let trigger = server.trigger();
        let hits = std::sync::atomic::AtomicUsize::new(0);
        ctrlc::set_handler(move || {
            if hits.fetch_add(1, SeqCst) == 0 {
                trigger.shutdown();
            } else {
                eprintln!("vigil: second signal, exiting now");
                std::process::exit(1);
            }
        })
        .map_err(io::Error::other)?;
        let close = server.trigger();
        crate::platform::drain_on_console_close(move || close.shutdown())?;
        server.wait();
        Ok(())
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
        self.shared.lifecycle.request_drain();
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
    info!("drain complete");
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

    /// Blocks until the server has drained (after [`shutdown`](ServerHandle::shutdown) or a signal).
    pub fn wait(self) {
        self.shared.lifecycle.wait_stopped();
    }

    /// [`wait`](ServerHandle::wait) for at most `timeout`: `true` once the server has drained.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn wait_for(&self, timeout: Duration) -> bool {
        self.shared.lifecycle.wait_stopped_for(timeout)
    }

    /// Drains and waits: [`shutdown`](ServerHandle::shutdown) then [`wait`](ServerHandle::wait).
    pub fn stop(self) {
        self.shutdown();
        self.wait();
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
