//! `vigil-bench`: a load generator for HTTP/1.1 servers on this machine (see BENCHMARKS.md).
//!
//! It drives any HTTP/1.1 server over keep-alive connections (one OS thread and one blocking
//! socket per connection) and reports requests/s, latency percentiles, status counts and, apart
//! from those, the failures a server must never cause: empty replies (the connection closed
//! before a single response byte, curl's `(52) Empty reply from server`), resets and truncated
//! responses. Scenarios:
//!
//! | scenario | what it does |
//! |---|---|
//! | `plaintext` | GET the URL's path on `-c` keep-alive connections |
//! | `blocking` | GET `/block?ms=N` (a handler that sleeps) and compares with the ideal rate |
//! | `hang-mix` | `--hang-connections` connections send only hung requests (`/deadlock`); the others send legit ones. Reports time-to-504 minus `--server-timeout` and every innocent that failed |
//! | `slowloris` | a baseline run, then the same run while `--slow-connections` connections trickle a head one byte per `--trickle` |
//! | `idle-connections N` | opens N keep-alive connections and leaves them idle, then measures a new request's latency and the server's RSS (`--server-pid` or `--metrics-url`) |
//! | `stalled-uploads N` | N uploads to the URL's path that stop one byte short of `--body-size`; reports how the server held or refused them, its RSS (`--server-pid` or `--metrics-url`) and `GET /` meanwhile |
//! | `unread-responses N` | N clients GET the URL (a big body) and never read past the head; reports the server's RSS per unread answer over the body's size, and `GET /` meanwhile |
//! | `spinners` | measures the URL's latency under a light paced load, then makes `--spinners` requests to `--spin-path` that spin until the server abandons their threads, measures again, and times `--probes` hung requests to `--hang-path` (time-to-504 past `--server-timeout`) |
//!
//! Runs are bounded by `--duration` and `--requests`; targets must be loopback addresses.

#[path = "vigil-bench/client.rs"]
mod client;
#[path = "vigil-bench/memory.rs"]
mod memory;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

use argh::FromArgs;
use client::{Conn, Load, Outcome, RequestClass, Stats, Target};
use serde_json::json;

/// Load generator for HTTP/1.1 servers on this machine: requests/s, latency percentiles, status
/// counts, and — separately — empty replies, resets and truncated responses.
///
/// Scenarios: plaintext, blocking, hang-mix, slowloris, idle-connections N, spinners,
/// stalled-uploads N, unread-responses N.
#[derive(FromArgs, Debug)]
struct Cli {
    /// the scenario: plaintext, blocking, hang-mix, slowloris, idle-connections, spinners,
    /// stalled-uploads or unread-responses
    #[argh(positional)]
    scenario: String,
    /// idle-connections, stalled-uploads, unread-responses: how many connections to open
    #[argh(positional)]
    count: Option<String>,
    /// server URL, loopback only (default http://127.0.0.1:8080/); its path is what plaintext,
    /// hang-mix and slowloris request
    #[argh(option, default = "String::from(\"http://127.0.0.1:8080/\")")]
    url: String,
    /// keep-alive connections, one OS thread each (default 64)
    #[argh(option, short = 'c', default = "64")]
    connections: usize,
    /// measured time (default 10s; e.g. 500ms, 3s, 1m)
    #[argh(option, short = 'd', default = "Duration::from_secs(10)", from_str_fn(parse_dur))]
    duration: Duration,
    /// stop after this many requests (default: only --duration bounds the run)
    #[argh(option, short = 'n')]
    requests: Option<u64>,
    /// unmeasured load before the measured time, on the same connections (default 1s)
    #[argh(option, default = "Duration::from_secs(1)", from_str_fn(parse_dur))]
    warmup: Duration,
    /// client timeout for connecting and for each read and write (default 30s)
    #[argh(option, default = "Duration::from_secs(30)", from_str_fn(parse_dur))]
    timeout: Duration,
    /// print one JSON object instead of text
    #[argh(switch)]
    json: bool,
    /// blocking: how long the handler sleeps, in ms (requests /block?ms=MS; default 20)
    #[argh(option, default = "20")]
    ms: u64,
    /// blocking: the server's worker threads, for the ideal rate min(connections, threads) × 1000/ms
    /// (default: as many as connections); spinners: how many spinning requests to keep in
    /// flight while starting them (default 4)
    #[argh(option)]
    server_threads: Option<usize>,
    /// hang-mix and spinners: path of the hung route (default /deadlock)
    #[argh(option, default = "String::from(\"/deadlock\")")]
    hang_path: String,
    /// hang-mix: connections that send only hung requests, one at a time each (default 2)
    #[argh(option, default = "2")]
    hang_connections: usize,
    /// hang-mix and spinners: the server's request timeout (its --timeout), to report
    /// time-to-504 past it
    #[argh(option, from_str_fn(parse_dur))]
    server_timeout: Option<Duration>,
    /// slowloris: connections that trickle a request head (default 256)
    #[argh(option, default = "256")]
    slow_connections: usize,
    /// slowloris: interval between two bytes on a slow connection (default 1s)
    #[argh(option, default = "Duration::from_secs(1)", from_str_fn(parse_dur))]
    trickle: Duration,
    /// idle-connections: read the server's RSS from /proc/PID/status
    #[argh(option)]
    server_pid: Option<u32>,
    /// idle-connections: read the server's RSS (process_resident_memory_bytes) from this admin
    /// /metrics URL (loopback only); spinners: wait there until the server has abandoned
    /// every spinner (vigil_threads_abandoned_alive)
    #[argh(option)]
    metrics_url: Option<String>,
    /// spinners: how many requests that spin (never checking their token) to leave abandoned
    /// (default 16)
    #[argh(option, default = "16")]
    spinners: usize,
    /// spinners: the spinning route (default /spin?ms=120000: long enough to outlast the run)
    #[argh(option, default = "String::from(\"/spin?ms=120000\")")]
    spin_path: String,
    /// spinners: pause between two requests of one measuring connection (default 5ms)
    #[argh(option, default = "Duration::from_millis(5)", from_str_fn(parse_dur))]
    pace: Duration,
    /// stalled-uploads: the body each upload announces (it sends one byte less; default
    /// 10485760, the server's default --max-body)
    #[argh(option, default = "10 << 20")]
    body_size: u64,
    /// idle-connections: new-connection requests timed before and after opening the idle ones
    /// (default 200); spinners: hung requests timed (default 10)
    #[argh(option, default = "200")]
    probes: usize,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    vigil::internals::parse_duration(s)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("vigil-bench: {msg}");
    std::process::exit(2);
}

fn main() {
    let cli: Cli = argh::from_env();
    if cli.connections == 0 {
        fail("--connections: must be at least 1, got 0");
    }
    if cli.duration.is_zero() && cli.requests.is_none() {
        fail("--duration: must be above 0 (or give --requests)");
    }
    let target = Target::parse(&cli.url).unwrap_or_else(|e| fail(format!("--url: {e}")));
    let counted = ["idle-connections", "stalled-uploads", "unread-responses"];
    if cli.count.is_some() && !counted.contains(&cli.scenario.as_str()) {
        fail(format!(
            "unexpected argument {:?}: only idle-connections, stalled-uploads and unread-responses take a count",
            cli.count.as_deref().unwrap_or("")
        ));
    }
    let load = Load {
        connections: cli.connections,
        duration: if cli.duration.is_zero() { Duration::from_secs(86_400) } else { cli.duration },
        warmup: cli.warmup,
        max_requests: cli.requests,
        timeout: cli.timeout,
    };
    let report = match cli.scenario.as_str() {
        "plaintext" => plaintext(&target, &load),
        "blocking" => blocking(&cli, &target, &load),
        "hang-mix" => hang_mix(&cli, &target, &load),
        "slowloris" => slowloris(&cli, &target, &load),
        "idle-connections" => idle_connections(&cli, &target),
        "spinners" => spinners(&cli, &target, &load),
        "stalled-uploads" => {
            let n = count_arg(&cli, "stalled-uploads", 40);
            let rss = memory::Rss { now: &|| server_rss(&cli), peak: &|| server_peak_rss(&cli) };
            let (text, json) = memory::stalled_uploads(&target, n, cli.body_size, cli.timeout, &rss);
            Report { text, json }
        }
        "unread-responses" => {
            let n = count_arg(&cli, "unread-responses", 1);
            let rss = memory::Rss { now: &|| server_rss(&cli), peak: &|| server_peak_rss(&cli) };
            let (text, json) = memory::unread_responses(&target, n, cli.timeout, &rss);
            Report { text, json }
        }
        other => fail(format!(
            "unknown scenario {other:?}: expected plaintext, blocking, hang-mix, slowloris, idle-connections N, spinners, \
             stalled-uploads N or unread-responses N"
        )),
    };
    let mut obj = json!({
        "scenario": cli.scenario,
        "target": format!("http://{}", target.addr),
        "connections": cli.connections,
    });
    if let (Some(o), serde_json::Value::Object(r)) = (obj.as_object_mut(), &report.json) {
        o.extend(r.clone());
    }
    if cli.json {
        println!("{obj}");
    } else {
        print!("{}", report.text);
    }
}

/// The scenario's count (`stalled-uploads 40`), `default` if none is given.
fn count_arg(cli: &Cli, scenario: &str, default: usize) -> usize {
    match cli.count.as_deref().map(str::parse) {
        None => default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => fail(format!(
            "{scenario}: the count must be a positive integer, got {:?}",
            cli.count.as_deref().unwrap_or("")
        )),
    }
}

/// What a scenario prints.
struct Report {
    text: String,
    json: serde_json::Value,
}

fn header(name: &str, target: &Target, load: &Load) -> String {
    format!(
        "{name} against http://{}{}: {} connections, {:.1}s measured after {:.1}s warm-up{}\n",
        target.addr,
        target.path,
        load.connections,
        load.duration.as_secs_f64(),
        load.warmup.as_secs_f64(),
        load.max_requests.map(|n| format!(", at most {n} requests")).unwrap_or_default()
    )
}

fn plaintext(target: &Target, load: &Load) -> Report {
    let r = client::run_simple(target, load);
    let total = r.total();
    Report {
        text: header("plaintext", target, load) + &total.text("all", r.elapsed),
        json: json!({ "elapsed_s": r.elapsed.as_secs_f64(), "result": total.json(r.elapsed) }),
    }
}

fn blocking(cli: &Cli, target: &Target, load: &Load) -> Report {
    let t = target.with_path(&format!("/block?ms={}", cli.ms));
    if cli.ms == 0 {
        fail("--ms: must be at least 1, got 0");
    }
    let r = client::run_simple(&t, load);
    let total = r.total();
    let parallel = cli.server_threads.unwrap_or(load.connections).min(load.connections);
    let ideal = parallel as f64 * 1000.0 / cli.ms as f64;
    let rps = r.ok_rps();
    let mut text = header("blocking", &t, load) + &total.text("all", r.elapsed);
    text += &format!(
        "  ideal: min({} connections, {} threads) × 1000 / {} ms = {ideal:.0} req/s; 2xx/s achieved {:.1} % of ideal\n",
        load.connections,
        cli.server_threads.map_or("?".to_string(), |n| n.to_string()),
        cli.ms,
        rps / ideal * 100.0
    );
    Report {
        text,
        json: json!({
            "elapsed_s": r.elapsed.as_secs_f64(),
            "handler_ms": cli.ms,
            "ideal_rps": ideal,
            "fraction_of_ideal": rps / ideal,
            "result": total.json(r.elapsed),
        }),
    }
}

fn hang_mix(cli: &Cli, target: &Target, load: &Load) -> Report {
    let timeout = cli
        .server_timeout
        .unwrap_or_else(|| fail("--server-timeout: hang-mix needs the server's --timeout to measure time-to-504"));
    if cli.hang_connections == 0 || cli.hang_connections >= load.connections {
        fail(format!(
            "--hang-connections: must be between 1 and --connections - 1 ({}), got {}",
            load.connections - 1,
            cli.hang_connections
        ));
    }
    if !cli.hang_path.starts_with('/') {
        fail(format!("--hang-path: must start with '/', got {:?}", cli.hang_path));
    }
    let classes = [
        RequestClass { name: "innocent".into(), bytes: target.get_request() },
        RequestClass { name: "hung".into(), bytes: target.with_path(&cli.hang_path).get_request() },
    ];
    let hung = cli.hang_connections;
    let mut load = load.clone();
    // Hung requests must be able to finish: give the client more time than the server.
    load.timeout = load.timeout.max(timeout * 2 + Duration::from_secs(5));
    let stop = AtomicBool::new(false);
    let r = client::run(target.addr, &load, &classes, |conn, _| usize::from(conn < hung), &stop);
    let innocent = &r.classes[0].1;
    let hung_stats = &r.classes[1].1;
    let innocents_failed = innocent.responses() - innocent.ok() + innocent.failures();
    let late = lateness(hung_stats, timeout);
    let mut text = header("hang-mix", target, &load);
    text += &format!(
        "  {} of {} connections send only {} (server timeout {:.3}s)\n",
        hung,
        load.connections,
        cli.hang_path,
        timeout.as_secs_f64()
    );
    text += &innocent.text("innocent", r.elapsed);
    text += &format!(
        "  innocents failed: {innocents_failed} (non-2xx + empty replies + resets + truncated + timeouts + errors)\n"
    );
    text += &hung_stats.text("hung", r.elapsed);
    match &late {
        Some(l) => {
            text += &format!(
                "  504 arrived after the deadline by: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} answered 504)\n",
                l.p50, l.p99, l.max, l.n
            )
        }
        None => text += "  no 504 answers seen\n",
    }
    Report {
        text,
        json: json!({
            "elapsed_s": r.elapsed.as_secs_f64(),
            "server_timeout_s": timeout.as_secs_f64(),
            "hang_path": cli.hang_path,
            "hang_connections": hung,
            "innocent": innocent.json(r.elapsed),
            "innocents_failed": innocents_failed,
            "hung": hung_stats.json(r.elapsed),
            "late_504_ms": late.map(|l| json!({"n": l.n, "p50": l.p50, "p99": l.p99, "max": l.max})),
        }),
    }
}

struct Lateness {
    n: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// How long after `timeout` the 504 answers arrived (from the 504 latency histogram).
fn lateness(s: &Stats, timeout: Duration) -> Option<Lateness> {
    let h = &s.latency_504_us;
    if h.is_empty() {
        return None;
    }
    let t = timeout.as_secs_f64() * 1000.0;
    let ms = |us: u64| us as f64 / 1000.0 - t;
    Some(Lateness {
        n: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    })
}

/// How a slow connection ended.
#[derive(Default)]
struct SlowTally {
    opened: usize,
    connect_errors: usize,
    statuses: std::collections::BTreeMap<u16, (u64, Vec<f64>)>,
    closed_without_answer: u64,
    resets: u64,
    still_open: u64,
}

/// Opens `n` connections that send a request line and `Host`, then one more header byte every
/// `every`, until `stop`; records how the server ended each.
fn slow_clients(target: &Target, n: usize, every: Duration, stop: &AtomicBool) -> SlowTally {
    struct Slow {
        s: TcpStream,
        opened: Instant,
        got: Vec<u8>,
        sent: usize,
        done: bool,
    }
    let mut tally = SlowTally::default();
    let mut slows = Vec::with_capacity(n);
    let prefix = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", target.path, target.host);
    for _ in 0..n {
        match TcpStream::connect_timeout(&target.addr, Duration::from_secs(5)) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                let _ = s.write_all(prefix.as_bytes());
                let _ = s.set_nonblocking(true);
                slows.push(Slow { s, opened: Instant::now(), got: Vec::new(), sent: 0, done: false });
            }
            Err(_) => tally.connect_errors += 1,
        }
    }
    tally.opened = slows.len();
    let trickle = b"X-Slowloris: 1\r\n";
    let mut next = Instant::now();
    while !stop.load(Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        next += every;
        for sl in slows.iter_mut().filter(|s| !s.done) {
            let mut buf = [0u8; 1024];
            let ended = loop {
                match sl.s.read(&mut buf) {
                    Ok(0) => break Some(None),
                    Ok(k) => sl.got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break None,
                    Err(_) => break Some(Some(())),
                }
            };
            let status = parse_status(&sl.got);
            match (ended, status) {
                (_, Some(st)) => {
                    let e = tally.statuses.entry(st).or_default();
                    e.0 += 1;
                    e.1.push(sl.opened.elapsed().as_secs_f64());
                    sl.done = true;
                }
                (Some(None), None) => {
                    tally.closed_without_answer += 1;
                    sl.done = true;
                }
                (Some(Some(())), None) => {
                    tally.resets += 1;
                    sl.done = true;
                }
                (None, None) => {
                    let b = trickle[sl.sent % trickle.len()];
                    match sl.s.write(&[b]) {
                        Ok(_) => sl.sent += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            tally.resets += 1;
                            sl.done = true;
                        }
                    }
                }
            }
        }
    }
    tally.still_open = slows.iter().filter(|s| !s.done).count() as u64;
    tally
}

fn parse_status(b: &[u8]) -> Option<u16> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[..line_end]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

fn slowloris(cli: &Cli, target: &Target, load: &Load) -> Report {
    if cli.trickle.is_zero() {
        fail("--trickle: must be above 0");
    }
    let base = client::run_simple(target, load);
    let stop = AtomicBool::new(false);
    let (attacked, tally) = std::thread::scope(|s| {
        let slow = s.spawn(|| slow_clients(target, cli.slow_connections, cli.trickle, &stop));
        // Let the slow connections open before the measured run starts.
        std::thread::sleep(Duration::from_millis(200));
        let r = client::run_simple(target, load);
        stop.store(true, Relaxed);
        (r, slow.join().expect("slow clients thread"))
    });
    let (b, a) = (base.total(), attacked.total());
    let ratio = attacked.ok_rps() / base.ok_rps().max(1e-9);
    let mut text = header("slowloris", target, load);
    text += &b.text("baseline (no slow clients)", base.elapsed);
    text += &a.text(&format!("with {} slow clients", tally.opened), attacked.elapsed);
    text += &format!(
        "  throughput under attack: {:.3} × baseline; p99 {:.3} ms vs {:.3} ms\n",
        ratio,
        a.pct_ms(0.99),
        b.pct_ms(0.99)
    );
    let answered: Vec<String> =
        tally.statuses.iter().map(|(st, (n, t))| format!("{n} answered {st} after {:.1}s median", median(t))).collect();
    text += &format!(
        "  slow clients: {} opened ({} connect errors); {}; {} closed without an answer; {} reset; {} still open at the end\n",
        tally.opened,
        tally.connect_errors,
        if answered.is_empty() { "none answered".to_string() } else { answered.join(", ") },
        tally.closed_without_answer,
        tally.resets,
        tally.still_open
    );
    let statuses: serde_json::Map<String, serde_json::Value> =
        tally.statuses.iter().map(|(st, (n, t))| (st.to_string(), json!({"n": n, "median_s": median(t)}))).collect();
    Report {
        text,
        json: json!({
            "baseline": b.json(base.elapsed),
            "attacked": a.json(attacked.elapsed),
            "throughput_ratio": ratio,
            "slow_clients": {
                "opened": tally.opened,
                "connect_errors": tally.connect_errors,
                "answered": statuses,
                "closed_without_answer": tally.closed_without_answer,
                "resets": tally.resets,
                "still_open": tally.still_open,
            },
        }),
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Raises the soft open-files limit to the hard one; returns the soft limit now in force.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every Unix
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}

#[cfg(not(unix))]
fn raise_nofile() -> u64 {
    u64::MAX
}

/// The server's resident memory, from `--server-pid` or `--metrics-url`.
/// The server's peak resident memory so far (`VmHWM`; `--server-pid` only).
fn server_peak_rss(cli: &Cli) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", cli.server_pid?)).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn server_rss(cli: &Cli) -> Option<u64> {
    if let Some(pid) = cli.server_pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        return Some(kb * 1024);
    }
    let url = cli.metrics_url.as_ref()?;
    let t = Target::parse(url).unwrap_or_else(|e| fail(format!("--metrics-url: {e}")));
    let mut s = TcpStream::connect_timeout(&t.addr, Duration::from_secs(5)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", t.path, t.host);
    s.write_all(req.as_bytes()).ok()?;
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Times `n` requests, each on a fresh connection (connect + request + response).
fn probe_new_connections(target: &Target, n: usize, timeout: Duration) -> Stats {
    let req = target.get_request();
    let mut st = Stats::default();
    for _ in 0..n {
        let t0 = Instant::now();
        match Conn::connect(target.addr, timeout) {
            Ok(mut c) => {
                st.connects += 1;
                let o = c.exchange(&req, false);
                st.record(o, t0.elapsed());
            }
            Err(_) => st.connect_errors += 1,
        }
    }
    st
}

fn idle_connections(cli: &Cli, target: &Target) -> Report {
    let n: usize = match cli.count.as_deref().map(str::parse) {
        Some(Ok(n)) if n > 0 => n,
        Some(_) => fail(format!(
            "idle-connections: the count must be a positive integer, got {:?}",
            cli.count.as_deref().unwrap_or("")
        )),
        None => fail("idle-connections: give the number of connections, e.g. `vigil-bench idle-connections 10000`"),
    };
    let limit = raise_nofile();
    if (n as u64) + 64 > limit {
        fail(format!(
            "idle-connections {n}: this process may open only {limit} files; raise it (`ulimit -n {}`) and give the server as much",
            n + 1024
        ));
    }
    let rss_before = server_rss(cli);
    let before = probe_new_connections(target, cli.probes, cli.timeout);
    let req = target.get_request();
    let t_open = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut opening = Stats::default();
    for _ in 0..n {
        match Conn::connect(target.addr, cli.timeout) {
            Ok(mut c) => {
                opening.connects += 1;
                let t0 = Instant::now();
                let o = c.exchange(&req, false);
                opening.record(o, t0.elapsed());
                if matches!(o, Outcome::Response { close: false, .. }) {
                    conns.push(c);
                }
            }
            Err(e) => {
                opening.connect_errors += 1;
                if opening.connect_errors == 1 {
                    eprintln!("vigil-bench: connect failed after {} connections: {e}", conns.len());
                }
                if opening.connect_errors > 100 {
                    break;
                }
            }
        }
    }
    let open_time = t_open.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = server_rss(cli);
    let during = probe_new_connections(target, cli.probes, cli.timeout);
    // Are the idle connections still served?
    let mut reuse = Stats::default();
    let t_reuse = Instant::now();
    for c in conns.iter_mut() {
        let t0 = Instant::now();
        let o = c.exchange(&req, false);
        reuse.record(o, t0.elapsed());
    }
    let reuse_time = t_reuse.elapsed();
    let held = conns.len();
    drop(conns);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if held > 0 => Some((a as f64 - b as f64) / held as f64),
        _ => None,
    };
    let mb = |b: Option<u64>| b.map_or("?".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let mut text = format!(
        "idle-connections {n} against http://{}{}: {held} idle keep-alive connections held (opened in {:.2}s)\n",
        target.addr,
        target.path,
        open_time.as_secs_f64()
    );
    text += &opening.text("opening requests", open_time);
    text += &format!(
        "  server RSS: {} before, {} with {held} idle connections{}\n",
        mb(rss_before),
        mb(rss_after),
        per_conn.map(|p| format!(" ({:.1} KB per connection)", p / 1e3)).unwrap_or_default()
    );
    text += &before.text("new-connection requests before", Duration::ZERO);
    text += &during.text(&format!("new-connection requests with {held} idle"), Duration::ZERO);
    text += &reuse.text("one more request on each idle connection", reuse_time);
    if reuse.empty_replies > 0 {
        text += "  (empty replies here mean the server closed idle connections: raise its --keepalive and --header-timeout)\n";
    }
    Report {
        text,
        json: json!({
            "idle_connections_requested": n,
            "idle_connections_held": held,
            "open_s": open_time.as_secs_f64(),
            "opening": opening.json(open_time),
            "server_rss_before_bytes": rss_before,
            "server_rss_idle_bytes": rss_after,
            "server_rss_per_connection_bytes": per_conn,
            "new_connection_before": before.json(Duration::ZERO),
            "new_connection_with_idle": during.json(Duration::ZERO),
            "reuse_idle": reuse.json(reuse_time),
        }),
    }
}

/// `GET target` on `connections` keep-alive connections, each pausing `pace` between requests
/// (a light load: the latency measured is service time, not queueing), for `duration`.
fn paced(target: &Target, connections: usize, pace: Duration, duration: Duration, timeout: Duration) -> Stats {
    let req = target.get_request();
    let end = Instant::now() + duration;
    let all: Vec<Stats> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..connections.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut st = Stats::default();
                    let mut conn: Option<Conn> = None;
                    while Instant::now() < end {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => match Conn::connect(target.addr, timeout) {
                                Ok(c) => {
                                    st.connects += 1;
                                    conn.insert(c)
                                }
                                Err(_) => {
                                    st.connect_errors += 1;
                                    std::thread::sleep(Duration::from_millis(10));
                                    continue;
                                }
                            },
                        };
                        let t0 = Instant::now();
                        let o = c.exchange(&req, false);
                        st.record(o, t0.elapsed());
                        if !matches!(o, Outcome::Response { close: false, .. }) {
                            conn = None;
                        }
                        std::thread::sleep(pace);
                    }
                    st
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("measuring thread")).collect()
    });
    let mut total = Stats::default();
    for st in &all {
        total.merge(st);
    }
    total
}

/// A metric's value from an admin `/metrics` URL (the first sample of that name).
fn scrape_metric(url: &str, name: &str) -> Option<f64> {
    let t = Target::parse(url).unwrap_or_else(|e| fail(format!("--metrics-url: {e}")));
    let mut s = TcpStream::connect_timeout(&t.addr, Duration::from_secs(5)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", t.path, t.host);
    s.write_all(req.as_bytes()).ok()?;
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts `n` requests to `spin` that each run until the server answers 504 (its thread is
/// then cancelled, and abandoned after the grace period), at most `in_flight` at a time so that
/// each gets a worker instead of expiring in the queue (a 503 is retried). Returns how many got
/// their 504.
fn start_spinners(spin: &Target, n: usize, in_flight: usize, timeout: Duration) -> usize {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let req = spin.get_request();
    let give_up = Instant::now() + Duration::from_secs(300);
    std::thread::scope(|s| {
        for _ in 0..in_flight.max(1) {
            s.spawn(|| {
                while next.fetch_add(1, Relaxed) < n {
                    loop {
                        if Instant::now() > give_up {
                            return;
                        }
                        let Ok(mut c) = Conn::connect(spin.addr, timeout * 4 + Duration::from_secs(10)) else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        match c.exchange(&req, false) {
                            Outcome::Response { status: 504, .. } => {
                                done.fetch_add(1, Relaxed);
                                break;
                            }
                            _ => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                }
            });
        }
    });
    done.load(Relaxed)
}

fn spinners(cli: &Cli, target: &Target, load: &Load) -> Report {
    let timeout = cli
        .server_timeout
        .unwrap_or_else(|| fail("--server-timeout: spinners needs the server's --timeout to measure time-to-504"));
    for (flag, path) in [("--spin-path", &cli.spin_path), ("--hang-path", &cli.hang_path)] {
        if !path.starts_with('/') {
            fail(format!("{flag}: must start with '/', got {path:?}"));
        }
    }
    let (n, pace, d) = (cli.spinners, cli.pace, load.duration);
    let abandoned = || cli.metrics_url.as_deref().and_then(|u| scrape_metric(u, "vigil_threads_abandoned_alive"));
    let cpu = || cli.metrics_url.as_deref().and_then(|u| scrape_metric(u, "vigil_abandoned_cpu_seconds_total"));
    let before = abandoned().unwrap_or(0.0);
    let idle = paced(target, load.connections, pace, d, load.timeout);
    let t_spin = Instant::now();
    let spun = start_spinners(&target.with_path(&cli.spin_path), n, cli.server_threads.unwrap_or(4), timeout);
    // Wait until the server has abandoned them all (the grace period), or a while.
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut now_abandoned = abandoned();
    while now_abandoned.is_some_and(|a| a < before + spun as f64) && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(100));
        now_abandoned = abandoned();
    }
    if cli.metrics_url.is_none() {
        std::thread::sleep(Duration::from_secs(2));
    }
    let setup = t_spin.elapsed();
    let cpu_before = cpu();
    let t_loaded = Instant::now();
    let loaded = paced(target, load.connections, pace, d, load.timeout);
    let cpu_after = cpu();
    let cpu_share = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some((a - b) / t_loaded.elapsed().as_secs_f64()),
        _ => None,
    };
    // Hung requests, one at a time, each on a fresh connection.
    let hang = target.with_path(&cli.hang_path).get_request();
    let mut late = Stats::default();
    for _ in 0..cli.probes.min(1000) {
        let t0 = Instant::now();
        match Conn::connect(target.addr, timeout * 4 + Duration::from_secs(10)) {
            Ok(mut c) => {
                let o = c.exchange(&hang, false);
                late.record(o, t0.elapsed());
            }
            Err(_) => late.connect_errors += 1,
        }
    }
    let lateness = lateness(&late, timeout);
    let (i90, l90) = (idle.pct_ms(0.9), loaded.pct_ms(0.9));
    let ratio = l90 / i90.max(1e-9);
    let mut text = format!(
        "spinners against http://{}{}: {} paced connections ({} ms apart), {:.1}s per measurement\n",
        target.addr,
        target.path,
        load.connections,
        pace.as_millis(),
        d.as_secs_f64()
    );
    text += &idle.text("idle (no abandoned spinners)", d);
    text += &format!(
        "  {spun} of {n} spinners ({}) answered 504 in {:.1}s; abandoned threads alive now: {}\n",
        cli.spin_path,
        setup.as_secs_f64(),
        now_abandoned.map_or("? (no --metrics-url)".to_string(), |a| format!("{a}"))
    );
    text += &loaded.text(&format!("with {spun} abandoned spinners"), d);
    text += &format!("  p90 with spinners / p90 idle: {l90:.3} ms / {i90:.3} ms = {ratio:.2}\n");
    if let Some(share) = cpu_share {
        text += &format!("  CPU used by the abandoned threads while measuring: {share:.2} CPUs\n");
    }
    match &lateness {
        Some(l) => {
            text += &format!(
                "  {} hung requests ({}): 504 after the deadline by p50 {:.1} ms  max {:.1} ms\n",
                l.n, cli.hang_path, l.p50, l.max
            )
        }
        None => text += "  no 504 answers to the hung requests\n",
    }
    Report {
        text,
        json: json!({
            "spinners_requested": n,
            "spinners_abandoned": spun,
            "abandoned_alive": now_abandoned,
            "setup_s": setup.as_secs_f64(),
            "idle": idle.json(d),
            "loaded": loaded.json(d),
            "p90_ratio": ratio,
            "abandoned_cpu_share": cpu_share,
            "hung": late.json(Duration::ZERO),
            "late_504_ms": lateness.map(|l| json!({"n": l.n, "p50": l.p50, "p99": l.p99, "max": l.max})),
        }),
    }
}
