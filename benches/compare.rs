//! Throughput against references measured in the same run (`harness = false`):
//!
//! * **plaintext**: vigil's demo app (`Server::start`, port 0, admin off, default settings), a
//!   raw `may_minihttp` hello server and the **bare hop** (`compare/bare_hop.rs`: vigil's
//!   coroutine → crossbeam → 8 OS threads → reply slot path with no HTTP work), all in this
//!   process, loaded in turn by the `vigil-bench` engine (64 keep-alive connections); prints
//!   vigil / may_minihttp and vigil / bare hop in 2xx responses per second, per round and overall;
//! * **blocking**: vigil with `threads(64)` serving `/block?ms=20`, as a fraction of the ideal
//!   64 × 1000 / 20 = 3,200 req/s (target ≥ 0.90);
//! * **gunicorn**, when the `gunicorn` command works (or `VIGIL_GUNICORN` names one): the same two
//!   loads against `benches/wsgi_app.py` under `gunicorn -k gthread -w <CPUs> --threads <64/CPUs>`.
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke test: 1 round × 200 ms.
//! `VIGIL_COMPARE_SERVE=SECS` only starts the servers, prints their addresses and serves for SECS
//! seconds, for cross-checking with another client such as `wrk`.
//!
//! Short by default (3 rounds × 1 s). `VIGIL_BENCH_LONG=1`: 3 rounds × 3 s. Overrides:
//! `VIGIL_COMPARE_ROUNDS`, `VIGIL_COMPARE_SECS`, `VIGIL_COMPARE_CONNECTIONS`.

#[path = "compare/bare_hop.rs"]
mod bare_hop;
#[allow(dead_code)]
#[path = "../src/bin/vigil-bench/client.rs"]
mod client;
#[path = "../src/demo.rs"]
mod demo;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::{Load, LoadResult, Target};
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain; charset=utf-8");
        rsp.body("hello");
        Ok(())
    }
}

struct HelloFactory;

impl HttpServiceFactory for HelloFactory {
    type Service = Hello;
    fn new_service(&self, _id: usize) -> Hello {
        Hello
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}: expected a whole number, got {v:?}")),
        Err(_) => default,
    }
}

/// A port nobody listens on right now (may_minihttp and gunicorn do not report a port-0 bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

fn wait_listening(addr: SocketAddr, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn target(addr: SocketAddr, path: &str) -> Target {
    Target::parse(&format!("http://{addr}{path}")).expect("loopback target")
}

fn line(name: &str, r: &LoadResult) -> String {
    let t = r.total();
    let non_2xx = t.responses() - t.ok();
    format!(
        "{name:<30} {:>7.0} req/s {:>7.0} 2xx/s   p50 {:>7.3} ms   p99 {:>7.3} ms   non-2xx {non_2xx}   empty {}   resets {}   truncated {}   timeouts {}",
        t.responses() as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.ok_rps(),
        t.pct_ms(0.5),
        t.pct_ms(0.99),
        t.empty_replies,
        t.resets,
        t.truncated,
        t.timeouts
    )
}

/// Gunicorn on `benches/wsgi_app.py`, stopped on drop.
struct Gunicorn {
    child: Child,
    addr: SocketAddr,
}

impl Gunicorn {
    fn start(threads_total: usize) -> Option<Gunicorn> {
        let cmd = std::env::var("VIGIL_GUNICORN").unwrap_or_else(|_| "gunicorn".into());
        let mut parts = cmd.split_whitespace();
        let program = parts.next()?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let child = Command::new(program)
            .args(parts)
            .args(["--chdir", concat!(env!("CARGO_MANIFEST_DIR"), "/benches"), "-b"])
            .arg(addr.to_string())
            .args(["-w", &workers.to_string(), "-k", "gthread", "--threads"])
            .arg((threads_total / workers).max(1).to_string())
            .args(["--log-level", "warning", "wsgi_app:app"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let g = Gunicorn { child, addr };
        if wait_listening(addr, Duration::from_secs(15)) {
            Some(g)
        } else {
            None
        }
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter that is not ours means: skip.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !args.is_empty() && !args.iter().any(|a| "compare".contains(a.as_str())) {
        return;
    }
    // Without `--bench` (`cargo test --benches`): a smoke run of 1 round × 200 ms, no gunicorn.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let long = std::env::var("VIGIL_BENCH_LONG").is_ok_and(|v| !v.is_empty() && v != "0");
    let rounds = if smoke { 1 } else { env_num("VIGIL_COMPARE_ROUNDS", 3).max(1) };
    let secs = env_num("VIGIL_COMPARE_SECS", if long { 3 } else { 1 }).max(1);
    let connections = env_num("VIGIL_COMPARE_CONNECTIONS", 64).max(1) as usize;
    let load = Load {
        connections,
        duration: if smoke { Duration::from_millis(200) } else { Duration::from_secs(secs) },
        warmup: if smoke { Duration::ZERO } else { Duration::from_millis(300) },
        max_requests: None,
        timeout: Duration::from_secs(10),
    };
    println!(
        "compare: {rounds} rounds × {:?}, {connections} keep-alive connections, {} CPUs",
        load.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let local = "127.0.0.1:0".parse().unwrap();
    let settings = vigil::Settings::default().bind(local).admin_bind(None);
    let vigil_default = vigil::Server::start(settings.clone(), demo::app(settings.get_timeout())).expect("start vigil");
    let blocking_settings = settings.threads(64);
    let vigil_64 = vigil::Server::start(blocking_settings.clone(), demo::app(blocking_settings.get_timeout()))
        .expect("start vigil");
    let mini_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _mini = HelloFactory.start(mini_addr).expect("start may_minihttp");
    assert!(wait_listening(mini_addr, Duration::from_secs(5)), "may_minihttp did not start");
    let bare_addr = bare_hop::start(8);

    if let Ok(v) = std::env::var("VIGIL_COMPARE_SERVE") {
        // Cross-check mode: serve for this many seconds so another client (wrk) can load them.
        let secs: u64 = v.parse().unwrap_or_else(|_| panic!("VIGIL_COMPARE_SERVE: expected seconds, got {v:?}"));
        println!("vigil (defaults) http://{}", vigil_default.local_addr());
        println!("vigil --threads 64 http://{}", vigil_64.local_addr());
        println!("may_minihttp http://{mini_addr}");
        println!("bare hop http://{bare_addr}");
        std::thread::sleep(Duration::from_secs(secs));
        return;
    }
    let vigil_t = target(vigil_default.local_addr(), "/");
    let mini_t = target(mini_addr, "/");
    let bare_t = target(bare_addr, "/");
    let servers: [(&str, &Target); 3] =
        [("may_minihttp", &mini_t), ("bare hop", &bare_t), ("vigil (defaults)", &vigil_t)];
    let mut ok_sums = [0.0f64; 3];
    let mut non_2xx = [0u64; 3];
    println!("\nplaintext (GET /); ratios use 2xx responses/s (a 503 \"queue full\" is not served):");
    for round in 1..=rounds as usize {
        // Rotate who goes first, so drift does not favour one side.
        let mut ok = [0.0f64; 3];
        for k in 0..3 {
            let i = (k + round - 1) % 3;
            let (name, t) = servers[i];
            let r = client::run_simple(t, &load);
            println!("  round {round} {}", line(name, &r));
            ok[i] = r.ok_rps();
            let tot = r.total();
            non_2xx[i] += tot.responses() - tot.ok();
        }
        for i in 0..3 {
            ok_sums[i] += ok[i];
        }
        println!(
            "  round {round} vigil (defaults) 2xx ratio: to may_minihttp {:.3}, to the bare hop {:.3}",
            ok[2] / ok[0].max(1e-9),
            ok[2] / ok[1].max(1e-9)
        );
    }
    let n = rounds as f64;
    println!(
        "plaintext 2xx/s (means): may_minihttp {:.0}, bare hop {:.0}, vigil (defaults) {:.0} ({} non-2xx in all)",
        ok_sums[0] / n,
        ok_sums[1] / n,
        ok_sums[2] / n,
        non_2xx[2]
    );
    println!(
        "plaintext ratio of vigil (defaults): to may_minihttp {:.3}, to the bare hop {:.3}",
        ok_sums[2] / ok_sums[0].max(1e-9),
        ok_sums[2] / ok_sums[1].max(1e-9)
    );

    println!("\nblocking (GET /block?ms=20, vigil threads 64):");
    let block_t = target(vigil_64.local_addr(), "/block?ms=20");
    let ideal = 64.0f64.min(connections as f64) * 1000.0 / 20.0;
    let mut sum_b = 0.0;
    for round in 1..=rounds {
        let r = client::run_simple(&block_t, &load);
        println!("  round {round} {}", line("vigil --threads 64", &r));
        sum_b += r.ok_rps();
    }
    let block_frac = sum_b / rounds as f64 / ideal;
    println!(
        "blocking: vigil {:.0} req/s = {:.3} of ideal {ideal:.0} (target ≥ 0.90)",
        sum_b / rounds as f64,
        block_frac
    );

    match if smoke { None } else { Gunicorn::start(64) } {
        None if smoke => println!("\ngunicorn: skipped (smoke run; use `cargo bench --bench compare`)"),
        None => println!("\ngunicorn: not available (pip install gunicorn, or set VIGIL_GUNICORN); skipped"),
        Some(g) => {
            println!("\ngunicorn (gthread, 64 threads in all) on benches/wsgi_app.py:");
            let gp = target(g.addr, "/");
            let gb = target(g.addr, "/block?ms=20");
            let (mut sv, mut sg, mut bv, mut bg) = (0.0, 0.0, 0.0, 0.0);
            for round in 1..=rounds {
                let r = client::run_simple(&gp, &load);
                println!("  round {round} {}", line("gunicorn plaintext", &r));
                sg += r.ok_rps();
                let r = client::run_simple(&vigil_t, &load);
                println!("  round {round} {}", line("vigil (defaults) plaintext", &r));
                sv += r.ok_rps();
                let r = client::run_simple(&gb, &load);
                println!("  round {round} {}", line("gunicorn blocking", &r));
                bg += r.ok_rps();
                let r = client::run_simple(&block_t, &load);
                println!("  round {round} {}", line("vigil blocking", &r));
                bv += r.ok_rps();
            }
            println!(
                "gunicorn (2xx/s): plaintext vigil (defaults) / gunicorn = {:.2}; blocking vigil / gunicorn = {:.3} (gunicorn {:.3} of ideal)",
                sv / sg.max(1e-9),
                bv / bg.max(1e-9),
                bg / rounds as f64 / ideal
            );
        }
    }
    vigil_default.stop();
    vigil_64.stop();
}
