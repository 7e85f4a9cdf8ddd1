//! Wiring: the state every part shares, starting the pieces, and the graceful drain.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;

use crate::app::App;
use crate::dispatch::{Job, Queue};
use crate::metrics::Metrics;
use crate::parse::Limits;
use crate::settings::Settings;
use crate::watchdog::{self, clock, Inflight, TimeoutReason, TimeoutRecord};

/// How many recent timeouts the dashboard keeps.
const RECENT_TIMEOUTS: usize = 50;

/// State shared by the listener, connections, workers, the watchdog and the admin listener.
pub(crate) struct Shared {
    pub settings: Settings,
    /// Parser limits derived from the settings.
    pub limits: Limits,
    pub app: App,
    /// Per-route deadlines (ceiling, stall), resolved against the server default once.
    pub route_timeouts: Vec<(Duration, Option<Duration>)>,
    pub metrics: Metrics,
    pub queue: Queue,
    /// New in-flight records on their way to the watchdog (lock-free).
    pub register: crossbeam_channel::Sender<Weak<Inflight>>,
    /// The watchdog's list of in-flight records; only the watchdog and the admin endpoints lock it.
    /// Weak references: the connection, the queue and the worker own a request, so it is freed by
    /// one of them (the connection, usually: the thread that allocated it, which keeps malloc on
    /// its fast path) and never by the watchdog.
    pub inflight: Mutex<Vec<Weak<Inflight>>>,
    pub recent_timeouts: Mutex<VecDeque<TimeoutRecord>>,
    pub next_worker_id: AtomicU32,
    /// Set at the start of a drain: stop accepting, answer new requests 503 + close.
    pub draining: AtomicBool,
    /// When a drain cancels what is left (clock ns; 0 = not draining).
    pub drain_deadline_ns: AtomicU64,
    pub watchdog_stop: AtomicBool,
    pub accept_stop: AtomicBool,
    pub next_request_id: AtomicU64,
    /// A per-process prefix for generated request ids.
    pub id_prefix: String,
    /// Keeps the "queue full" warning to one line per second under overload.
    pub queue_full_log: crate::logging::OncePerSecond,
}

impl Shared {
    /// Remembers a timeout for the dashboard.
    pub fn record_timeout(&self, r: &Inflight, reason: TimeoutReason, now: u64) {
        let mut q = self.recent_timeouts.lock();
        if q.len() == RECENT_TIMEOUTS {
            q.pop_front();
        }
        q.push_back(TimeoutRecord {
            at: std::time::SystemTime::now(),
            id: r.req.id().to_string(),
            method: r.req.method().to_string(),
            path: r.req.path().to_string(),
            route: r.route_name(self).to_string(),
            reason: reason.label(),
            elapsed: r.elapsed_secs(now),
            deadline: r.effective_deadline_ns().saturating_sub(r.start_ns) as f64 / 1e9,
            stage: r.stage_string(),
            thread: r.thread.load(Relaxed),
            outcome: "",
        });
    }

    pub fn set_timeout_outcome(&self, id: &str, outcome: &'static str) {
        if let Some(t) = self.recent_timeouts.lock().iter_mut().rev().find(|t| t.id == id) {
            t.outcome = outcome;
        }
    }

    /// Readiness: `Err(reason)` while draining or with too many abandoned threads.
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Acquire) {
            return Err("draining: shutting down".into());
        }
        let alive = self.metrics.threads_abandoned_alive.load(Relaxed);
        let max = self.settings.effective_max_abandoned() as i64;
        if alive > max {
            return Err(format!("abandoned threads alive ({alive}) exceed --max-abandoned ({max})"));
        }
        Ok(())
    }

    /// Liveness: the watchdog ticked recently.
    pub fn live(&self) -> Result<(), String> {
        let last = self.metrics.watchdog_heartbeat_ns.load(Relaxed);
        let age = Duration::from_nanos(clock::now_ns().saturating_sub(last));
        let limit = (self.settings.watchdog_tick * 100).max(Duration::from_secs(2));
        if age > limit {
            Err(format!("watchdog silent for {:.1}s", age.as_secs_f64()))
        } else {
            Ok(())
        }
    }

    /// A fresh request id: `<process prefix>-<counter>`.
    pub fn new_request_id(&self) -> Box<str> {
        let n = self.next_request_id.fetch_add(1, Relaxed);
        let mut s = String::with_capacity(self.id_prefix.len() + 12);
        s.push_str(&self.id_prefix);
        s.push('-');
        s.push_str(itoa::Buffer::new().format(n));
        s.into_boxed_str()
    }
}

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
    watchdog: Option<std::thread::JoinHandle<()>>,
    done: Arc<(Mutex<bool>, parking_lot::Condvar)>,
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
    /// Binds the listeners, starts the watchdog, the worker pool, the accept coroutine and the
    /// admin listener, and returns at once.
    pub fn start(settings: Settings, app: App) -> io::Result<ServerHandle> {
        settings.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        for w in settings.warnings() {
            warn!("{w}");
        }
        configure_runtime();
        crate::pool::install_panic_hook();
        let route_timeouts: Vec<(Duration, Option<Duration>)> = app
            .routes()
            .iter()
            .map(|r| {
                let t = r.options.effective_timeout(settings.timeout);
                if r.options.get_timeout().is_some_and(|x| x > t) {
                    warn!(
                        "route {} {}: timeout capped at --timeout {:?} (use exceed_default to allow more)",
                        r.method, r.pattern, t
                    );
                }
                (t, r.options.get_stall_timeout())
            })
            .collect();
        let metrics = Metrics::new(
            app.routes().iter().zip(&route_timeouts).map(|(r, t)| (r.pattern.clone(), t.0)).collect(),
            settings.timeout,
        );
        let limits = Limits {
            request_line: settings.limit_request_line,
            fields: settings.limit_request_fields,
            field_size: settings.limit_request_field_size,
            head_bytes: settings.limit_request_head,
            max_body: settings.max_body,
        };
        let listener = may::net::TcpListener::bind(settings.bind)?;
        let addr = listener.local_addr()?;
        let admin = match settings.admin_bind {
            Some(a) => Some(std::net::TcpListener::bind(a)?),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let (register, register_rx) = crossbeam_channel::unbounded();
        let threads = settings.threads;
        let queue = Queue::new(settings.effective_backlog());
        let id_prefix = format!(
            "{:08x}",
            (clock::now_ns() ^ std::process::id() as u64 ^ addr.port() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 32
        );
        let shared = Arc::new(Shared {
            settings,
            limits,
            app,
            route_timeouts,
            metrics,
            queue,
            register,
            inflight: Mutex::new(Vec::new()),
            recent_timeouts: Mutex::new(VecDeque::new()),
            next_worker_id: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drain_deadline_ns: AtomicU64::new(0),
            watchdog_stop: AtomicBool::new(false),
            accept_stop: AtomicBool::new(false),
            next_request_id: AtomicU64::new(1),
            queue_full_log: crate::logging::OncePerSecond::new(),
            id_prefix,
        });
        for _ in 0..threads {
            crate::pool::spawn_worker(&shared);
        }
        let watchdog = watchdog::spawn(Arc::clone(&shared), register_rx);
        info!(
            "vigil started: {} worker threads, queue {}, timeout {:?}, cancel grace {:?}, watchdog tick {:?}",
            threads,
            shared.settings.effective_backlog(),
            shared.settings.timeout,
            shared.settings.cancel_grace,
            shared.settings.watchdog_tick
        );
        if let Some(l) = admin {
            crate::admin::spawn(l, Arc::clone(&shared));
        }
        crate::listener::spawn(listener, Arc::clone(&shared))?;
        Ok(ServerHandle {
            addr,
            admin_addr,
            shared,
            watchdog: Some(watchdog),
            done: Arc::new((Mutex::new(false), parking_lot::Condvar::new())),
        })
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
    addr: SocketAddr,
    done: Arc<(Mutex<bool>, parking_lot::Condvar)>,
}

impl ShutdownTrigger {
    /// Begins a graceful drain (idempotent). Returns at once.
    pub fn shutdown(&self) {
        let s = &self.shared;
        if s.draining.swap(true, AcqRel) {
            return;
        }
        let grace = s.settings.graceful_timeout;
        info!("shutting down: no new connections; in-flight requests get up to {:?} (--graceful-timeout)", grace);
        s.drain_deadline_ns.store(clock::now_ns() + grace.as_nanos() as u64, Release);
        s.accept_stop.store(true, Release);
        // Wake the accept coroutine so it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        let shared = Arc::clone(&self.shared);
        let done = Arc::clone(&self.done);
        std::thread::Builder::new()
            .name("vigil-drain".into())
            .spawn(move || drain(shared, done))
            .expect("spawn drain thread");
    }
}

/// Waits until nothing is in flight (the watchdog cancels what outlives the graceful timeout),
/// then stops the workers and the watchdog.
fn drain(shared: Arc<Shared>, done: Arc<(Mutex<bool>, parking_lot::Condvar)>) {
    let hard_stop = Instant::now() + shared.settings.graceful_timeout + Duration::from_secs(2);
    loop {
        let in_flight = shared.metrics.requests_in_flight.load(Acquire);
        if (in_flight <= 0 && shared.queue.depth() == 0) || Instant::now() >= hard_stop {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Give connection coroutines a moment to write the last answers.
    std::thread::sleep(Duration::from_millis(50));
    let live = shared.metrics.worker_threads.load(Acquire).max(0) as usize;
    for _ in 0..live {
        let _ = shared.queue.tx.send_timeout(Job::Stop, Duration::from_millis(100));
    }
    shared.watchdog_stop.store(true, Release);
    info!("drain complete");
    let (m, cv) = &*done;
    *m.lock() = true;
    cv.notify_all();
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
        ShutdownTrigger { shared: Arc::clone(&self.shared), addr: self.addr, done: Arc::clone(&self.done) }
    }

    /// Begins a graceful drain and returns at once.
    pub fn shutdown(&self) {
        self.trigger().shutdown();
    }

    /// Blocks until the server has drained (after [`shutdown`](ServerHandle::shutdown) or a signal).
    pub fn wait(mut self) {
        {
            let (m, cv) = &*self.done;
            let mut g = m.lock();
            while !*g {
                cv.wait(&mut g);
            }
        }
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
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
        self.shared.metrics.render(self.shared.queue.depth())
    }
}
