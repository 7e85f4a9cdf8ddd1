//! The demo app served by the `vigil` binary: well-behaved routes and every kind of hang.
//!
//! | route | behaviour | parameter: default, maximum |
//! |---|---|---|
//! | `GET /` | `hello` | |
//! | `POST /echo` | the request body | (`--max-body`) |
//! | `GET /sleep?ms=N` | cancellable sleep (`ctx.sleep`) | 1 000, [`MAX_MS`] |
//! | `GET /block?ms=N` | `std::thread::sleep`, ignores the token | 1 000, [`MAX_MS`] |
//! | `GET /spin[?ms=N]` | busy loop that never checks the token (stops by itself after `ms`, so an abandoned thread does not burn a core forever) | 60 000, [`MAX_MS`] |
//! | `GET /deadlock` | waits on a lock that is never released | |
//! | `GET /cooperative-spin[?ms=N]` | busy loop calling `ctx.checkpoint()?` | 60 000, [`MAX_MS`] |
//! | `GET /report?secs=N[&pause_ms=M]` | progress + stage "chunk i/n" every 100 ms for N s; pauses reporting for M ms midway; stall timeout 1 s, ceiling 10 × `--timeout` | `secs` 3, [`MAX_REPORT_SECS`]; `pause_ms` 0, [`MAX_MS`] |
//! | `GET /panic` | panics (→ 500) | |
//! | `GET /bytes?n=N` | N bytes of `x`, held in memory (for write-timeout tests) | 1 024, [`MAX_BYTES`] |
//! | `GET /stream?n=N` | N bytes of `x`, streamed chunked as they are made (`Response::from_reader`) | 1 024, [`MAX_BYTES`] |
//!
//! A parameter above its maximum gets 400 (`query parameter ms is too large (at most
//! 600000)`), so no client can choose an endless spin or an overflowing deadline; so does one
//! that is not a non-negative integer.
//!
//! It belongs to the binary (`mod demo` in `main.rs`); tests and benches that serve it
//! in-process include this file with `#[path]`, so it uses only vigil's public API.

use std::time::{Duration, Instant};

use vigil::{App, Cancelled, Ctx, Error, Request, Response, RouteOptions};

/// Longest time `ms` (and `pause_ms`) may ask for: 10 minutes.
pub const MAX_MS: u64 = 600_000;
/// Longest `/report` (in seconds): 1 hour.
pub const MAX_REPORT_SECS: u64 = 3_600;
/// Largest `/bytes` body: 256 MiB.
pub const MAX_BYTES: u64 = 256 << 20;

/// The query parameter `name` as an integer: `default` when absent; 400 when it is not a
/// non-negative integer or is above `max` (even past `u64`), with a message that says which.
pub fn bounded_param(req: &Request, name: &str, default: u64, max: u64) -> Result<u64, Error> {
    let Some(v) = req.query_param(name) else { return Ok(default.min(max)) };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::new(400, format!("query parameter {name} must be a non-negative integer")));
    }
    // All digits: only an overflow fails to parse, and that is over any maximum.
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Error::new(400, format!("query parameter {name} is too large (at most {max})"))),
    }
}

fn ms_param(req: &Request, name: &str, default: u64) -> Result<u64, Error> {
    bounded_param(req, name, default, MAX_MS)
}

/// The demo app for a server whose default timeout is `timeout`.
pub fn app(timeout: Duration) -> App {
    App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello"))
        .post("/echo", |req: &Request, _: &Ctx| Response::bytes(req.body().to_vec()))
        .get("/sleep", |req: &Request, ctx: &Ctx| -> Result<Response, Error> {
            let ms = ms_param(req, "ms", 1000)?;
            ctx.stage("sleeping");
            ctx.sleep(Duration::from_millis(ms))?;
            Ok(Response::text(format!("slept {ms} ms")))
        })
        .get("/block", |req: &Request, ctx: &Ctx| -> Result<Response, Error> {
            let ms = ms_param(req, "ms", 1000)?;
            ctx.stage("blocking sleep");
            std::thread::sleep(Duration::from_millis(ms));
            Ok(Response::text(format!("blocked {ms} ms")))
        })
        .get("/spin", |req: &Request, ctx: &Ctx| -> Result<Response, Error> {
            let ms = ms_param(req, "ms", 60_000)?;
            ctx.stage("spinning");
            let end = Instant::now() + Duration::from_millis(ms);
            let mut x: u64 = 0;
            while Instant::now() < end {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            Ok(Response::text(format!("spun {ms} ms")))
        })
        .get("/deadlock", |_: &Request, ctx: &Ctx| {
            ctx.stage("waiting for the lock");
            let _g = DEADLOCK.lock();
            Response::text("unreachable")
        })
        .get("/cooperative-spin", |req: &Request, ctx: &Ctx| -> Result<Response, Error> {
            let ms = ms_param(req, "ms", 60_000)?;
            ctx.stage("spinning cooperatively");
            let end = Instant::now() + Duration::from_millis(ms);
            let mut x: u64 = 0;
            while Instant::now() < end {
                for _ in 0..1000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                ctx.checkpoint()?;
            }
            Ok(Response::text("done"))
        })
        .route(
            "GET",
            "/report",
            RouteOptions::new().stall_timeout(Duration::from_secs(1)).timeout(timeout * 10),
            report,
        )
        .get("/panic", |_: &Request, _: &Ctx| -> Response { panic!("demo panic") })
        .get("/bytes", |req: &Request, _: &Ctx| -> Result<Response, Error> {
            let n = bounded_param(req, "n", 1024, MAX_BYTES)?;
            Ok(Response::bytes(vec![b'x'; n as usize]))
        })
        .get("/stream", |req: &Request, _: &Ctx| -> Result<Response, Error> {
            use std::io::Read;
            let n = bounded_param(req, "n", 1024, MAX_BYTES)?;
            Ok(Response::from_reader(std::io::repeat(b'x').take(n)))
        })
}

/// A long report: progress and a stage every 100 ms; optionally goes silent midway.
fn report(req: &Request, ctx: &Ctx) -> Result<Response, Error> {
    let secs = bounded_param(req, "secs", 3, MAX_REPORT_SECS)?;
    let pause = ms_param(req, "pause_ms", 0)?;
    // Ten steps a second (secs is bounded: no overflow).
    let steps = secs * 10;
    for i in 1..=steps {
        ctx.stage(format!("chunk {i}/{steps}"));
        ctx.progress();
        if pause > 0 && i == steps / 2 {
            ctx.stage(format!("chunk {i}/{steps} (paused)"));
            ctx.sleep(Duration::from_millis(pause)).map_err(|c: Cancelled| Error::from(c))?;
        }
        ctx.sleep(Duration::from_millis(100))?;
    }
    Ok(Response::text(format!("report of {steps} chunks done")))
}

/// A lock taken once and never released.
static DEADLOCK: std::sync::LazyLock<parking_lot::Mutex<()>> = std::sync::LazyLock::new(|| {
    let m = parking_lot::Mutex::new(());
    std::mem::forget(m.lock());
    m
});
