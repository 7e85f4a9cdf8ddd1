//! Embedding vigil as a Windows service: one call, `Server::run_as_service`, and no `unsafe`.
//!
//! ```text
//! windows_service install NAME ADDR [GRACEFUL_SECS]   register it (elevated prompt)
//! sc start NAME                                       or net start NAME
//! sc stop NAME                                        drains: in-flight requests finish first
//! windows_service uninstall NAME
//! windows_service run NAME ADDR [GRACEFUL_SECS]       what the Service Control Manager starts
//! ```
//!
//! Routes: `GET /` (hello), `GET /work?ms=N` (cancellable work), `GET /hang?ms=N` (ignores
//! cancellation). On other systems `run` serves in the foreground until SIGTERM, which is what a
//! systemd unit expects.

use std::time::Duration;

use vigil::service::{self, Install};
use vigil::{App, Ctx, Error, Request, Response, Server, Settings};

fn usage() -> ! {
    eprintln!("usage: windows_service install|run NAME ADDR [GRACEFUL_SECS] | uninstall NAME");
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
        (Some(action), Some(name)) => (action.as_str(), name.as_str()),
        _ => usage(),
    };
    let result = match action {
        // Register this program, started as `windows_service run NAME ADDR [GRACEFUL_SECS]`.
        "install" if args.len() >= 3 => {
            Install::new(name, ["run"].into_iter().chain(args[1..].iter().map(String::as_str)))
                .description("vigil embedding example")
                .run()
                .map(|installed| {
                    println!("installed {name}: {}", installed.command_line);
                    installed.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                })
        }
        "uninstall" => service::uninstall(name),
        "run" if args.len() >= 3 => {
            let _ = vigil::logging::init(vigil::LogFormat::Text, false);
            let graceful = args.get(3).map_or(Ok(10), |s| s.parse()).unwrap_or_else(|_| usage());
            let settings = Settings::default()
                .bind(args[2].parse().unwrap_or_else(|_| usage()))
                .admin_bind(None)
                .threads(4)
                .timeout(Duration::from_secs(60))
                .cancel_grace(Duration::from_secs(1))
                .graceful_timeout(Duration::from_secs(graceful));
            // The one call: on Windows, talks to the Service Control Manager and drains on
            // STOP / SHUTDOWN / PRESHUTDOWN; elsewhere, serves until SIGTERM.
            Server::run_as_service(name, settings, app())
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("windows_service {action} {name}: {e}");
        std::process::exit(1);
    }
}
