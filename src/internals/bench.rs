//! What vigil's own benchmarks drive (the `bench-internals` feature): the real runtime code,
//! step by step as the server runs it, behind a small surface so that the runtime's types stay
//! private. Nothing here is API.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::parse::{parse_head, Head, Limits};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::runtime::clock;
use crate::runtime::inflight::{Arrival, Inflight};
use crate::runtime::pool::{Pool, PoolConfig, Runner};
use crate::runtime::reply;
use crate::runtime::routes::{RouteId, RouteInfo, RouteTable};
use crate::runtime::state::WorkerId;
use crate::runtime::watchdog::{Sweep, Watchdog, WatchdogConfig};

/// Now on the runtime's clock (`runtime::clock::now_ns`).
pub fn clock_now_ns() -> u64 {
    clock::now_ns()
}

/// A request as a connection builds it after parsing: its head bytes, head and id.
struct Template {
    raw: Box<[u8]>,
    head: Head,
    peer: SocketAddr,
}

impl Template {
    fn new() -> Template {
        let raw: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
        let head = parse_head(raw, &Limits::default()).expect("valid").expect("complete");
        Template { raw: raw.into(), head, peer: ([127, 0, 0, 1], 40000).into() }
    }

    /// What `server::conn` allocates per request besides the record: the head's bytes and the id
    /// (the head's header list is the parser's, cloned here in its place).
    fn request(&self) -> Request {
        Request::new(self.raw.clone(), self.head.clone(), Vec::new(), self.peer, "0badcafe-1".into())
    }
}

fn routes() -> Arc<RouteTable> {
    Arc::new(RouteTable::new(vec![RouteInfo {
        method: "GET".into(),
        pattern: "/".into(),
        timeout: std::time::Duration::from_secs(30),
        stall: None,
    }]))
}

struct Hello;

impl Runner for Hello {
    fn run(&self, _job: &Arc<Inflight>) -> Response {
        Response::text("hello")
    }
}

/// Allocates one in-flight record (and its request) and drops it.
pub fn inflight_alloc_and_drop() {
    thread_local!(static T: Template = Template::new());
    let routes = routes();
    T.with(|t| {
        let a = Arrival {
            req: t.request(),
            route: RouteId::new(0),
            uid: 1,
            seq: 1,
            start_ns: 1_000,
            upstream_timeout: None,
            reply: None,
            peer: None,
        };
        std::hint::black_box(Arc::new(Inflight::new(a, routes.get(RouteId::new(0)))));
    });
}

/// The per-request bookkeeping of the connection, the pool and the watchdog on one thread:
/// build the record, register it with the watchdog, a worker's `begin` and `complete` (which
/// answers into the connection's reply slot), the connection taking the answer (and the request
/// off the watchdog's list), and a watchdog sweep every 64 requests. Excluded: parsing, the dispatch hop (`Hop`), the handler, metrics
/// and writing the response.
pub struct Bookkeeping {
    pool: Arc<Pool>,
    watchdog: Option<(Arc<Watchdog>, Sweep)>,
    routes: Arc<RouteTable>,
    slot: Arc<reply::ReplySlot>,
    worker: WorkerId,
    template: Template,
    seq: u64,
}

impl Bookkeeping {
    /// `with_watchdog`: register each record and sweep every 64 (else neither).
    pub fn new(with_watchdog: bool) -> Bookkeeping {
        let routes = routes();
        let config = PoolConfig::new(1, 16);
        let pool = Pool::new(config, Arc::new(Hello), Arc::clone(&routes));
        let worker = pool.adopt_test_worker();
        let watchdog = with_watchdog.then(|| {
            let config = WatchdogConfig::new(std::time::Duration::from_secs(5), 1);
            (Watchdog::new(config, Arc::clone(&routes), Arc::clone(&pool)).expect("watchdog"), Sweep::default())
        });
        Bookkeeping { pool, watchdog, routes, slot: reply::ReplySlot::new(), worker, template: Template::new(), seq: 0 }
    }

    /// One request, start to finish.
    #[inline(never)]
    pub fn request(&mut self) {
        let seq = self.seq;
        self.seq += 1;
        let arrival = Arrival {
            req: self.template.request(),
            route: RouteId::new(0),
            uid: seq,
            seq,
            start_ns: clock::now_ns(),
            upstream_timeout: None,
            reply: Some(Arc::clone(&self.slot)),
            peer: None,
        };
        let job = Arc::new(Inflight::new(arrival, self.routes.get(RouteId::new(0))));
        if let Some((wd, _)) = &self.watchdog {
            wd.register(&job);
        }
        assert!(self.pool.begin(&job, self.worker));
        let ctx = Arc::clone(&job); // the handler's Ctx
        std::hint::black_box(&ctx);
        drop(ctx);
        self.pool.complete(&job, self.worker, Response::text("hello"));
        std::hint::black_box(self.slot.wait(seq));
        if let Some((wd, _)) = &self.watchdog {
            wd.answered(&job); // as the connection does once it has the answer
        }
        drop(job);
        if let Some((wd, sweep)) = &mut self.watchdog {
            if seq % 64 == 63 {
                wd.tick(sweep, clock::now_ns());
            }
        }
    }
}

/// The dispatch hop through the real pool: a record submitted to the bounded queue, a worker
/// thread running a `hello` handler and answering into the reply slot, the submitter parked on
/// the slot until the answer is in.
pub struct Hop {
    pool: Arc<Pool>,
    routes: Arc<RouteTable>,
}

impl Hop {
    /// A pool of `workers` threads.
    pub fn new(workers: usize) -> Hop {
        let routes = routes();
        let config = PoolConfig::new(workers, 16);
        let pool = Pool::new(config, Arc::new(Hello), Arc::clone(&routes));
        pool.start().expect("start the pool");
        Hop { pool, routes }
    }

    /// `iters` round trips, one at a time, from the calling coroutine or thread.
    pub fn round_trips(&self, iters: u64) -> std::time::Duration {
        thread_local!(static T: Template = Template::new());
        let slot = reply::ReplySlot::new();
        let t0 = std::time::Instant::now();
        for seq in 0..iters {
            let arrival = Arrival {
                req: T.with(Template::request),
                route: RouteId::new(0),
                uid: seq,
                seq,
                start_ns: clock::now_ns(),
                upstream_timeout: None,
                reply: Some(Arc::clone(&slot)),
                peer: None,
            };
            let job = Arc::new(Inflight::new(arrival, self.routes.get(RouteId::new(0))));
            self.pool.submit(job).unwrap_or_else(|e| panic!("submit: {e:?}"));
            std::hint::black_box(slot.wait(seq));
        }
        t0.elapsed()
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        self.pool.stop();
    }
}
