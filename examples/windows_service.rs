//! Embedding vigil as a Windows service: one call, `Server::run_as_service_with`, and no `unsafe`.
//!
//! ```text
//! windows_service install NAME ADDR GRACEFUL_SECS LOG_FILE   register it (elevated prompt)
//! sc start NAME                                              or net start NAME
//! sc stop NAME                                               drains: in-flight requests finish
//! windows_service uninstall NAME
//! windows_service run NAME ADDR GRACEFUL_SECS LOG_FILE       what the Service Control Manager runs
//! ```
//!
//! Routes: `GET /` (hello), `GET /work?ms=N` (cancellable work), `GET /hang?ms=N` (ignores
//! cancellation); the admin listener (`/healthz`, `/readyz`, `/metrics`) on a free loopback port.
//! A service has no console, so it logs to LOG_FILE (rotated at 10 MiB, 3 kept); once started it
//! logs the addresses it listens on (useful with port 0).
//!
//! `run_as_service_with` runs the setup (opening the log file here) after telling the SCM that
//! the service is starting, so a failure there is reported as a failed start. Without a setup
//! that can fail, `Server::run_as_service(name, settings, app)` is the same call.
//! On other systems `run` serves in the foreground until SIGTERM, which is what a systemd unit
//! expects.

use std::time::Duration;

use vigil::logging::LogFile;
use vigil::service::{self, Install};
use vigil::{App, Ctx, Error, LogFormat, Request, Response, Server, Settings};

fn usage() -> ! {
    eprintln!("usage: windows_service install|run NAME ADDR GRACEFUL_SECS LOG_FILE | uninstall NAME");
    std::process::exit(2)
}

fn ms(req: &Request) -> Result<u64, Error> {
    req.query_param("ms").as_deref().unwrap_or("1000").parse().map_err(|_| Error::new(400, "ms must be an integer"))
}

fn app() -> App {
    App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello from a service"))
        .get("/work", |req: &Request, ctx: &Ctx| -> Result<Response, Error> {
            let ms = ms(req)?;
            ctx.sleep(Duration::from_millis(ms))?; // returns early if the request is cancelled
            Ok(Response::text(format!("worked {ms} ms")))
        })
        .get("/hang", |req: &Request, _: &Ctx| -> Result<Response, Error> {
            let ms = ms(req)?;
            std::thread::sleep(Duration::from_millis(ms)); // ignores cancellation
            Ok(Response::text(format!("hung {ms} ms")))
        })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (action, name) = match (args.first(), args.get(1)) {
        (Some(action), Some(name)) => (action.clone(), name.clone()),
        _ => usage(),
    };
    let result = match (action.as_str(), &args[2..]) {
        // Register this program, started as `windows_service run NAME ADDR GRACEFUL_SECS LOG_FILE`.
        ("install", [_, _, _]) => Install::new(&name, ["run"].into_iter().chain(args[1..].iter().map(String::as_str)))
            .description("vigil embedding example")
            .run()
            .map(|installed| {
                println!("installed {name}: {}", installed.command_line);
                installed.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            }),
        ("uninstall", []) => service::uninstall(&name),
        ("run", [addr, graceful, log_file]) => {
            let bind = addr.parse().unwrap_or_else(|_| usage());
            let graceful = graceful.parse().unwrap_or_else(|_| usage());
            let log_file = log_file.clone();
            // The one call: on Windows, talks to the Service Control Manager and drains on
            // STOP / SHUTDOWN / PRESHUTDOWN; elsewhere, serves until SIGTERM.
            Server::run_as_service_with(&name, move || {
                let log = LogFile::open(&log_file, 10 << 20, 3)?;
                let _ = vigil::logging::init_with(LogFormat::Text, true, Box::new(log));
                let settings = Settings::default()
                    .bind(bind)
                    // Health and metrics on a loopback port of its own (its address is logged).
                    .admin_bind(Some(([127, 0, 0, 1], 0).into()))
                    .threads(4)
                    .timeout(Duration::from_secs(30))
                    .cancel_grace(Duration::from_secs(1))
                    .graceful_timeout(Duration::from_secs(graceful));
                Ok((settings, app()))
            })
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("windows_service {action} {name}: {e}");
        std::process::exit(1);
    }
}
