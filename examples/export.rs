//! A long export that reports progress: it may run far past the server's default timeout as long
//! as it keeps reporting, and it is cut within a second if it stalls.
//!
//! ```text
//! cargo run --example export
//! curl 'http://ADDR/export?rows=50'            # 200 after ~5 s although --timeout is 2 s
//! curl 'http://ADDR/export?rows=50&stall_at=10' # 504: stops reporting at row 10
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use vigil::{App, Ctx, Error, Request, Response, RouteOptions, Server, Settings};

fn export(req: &Request, ctx: &Ctx) -> Result<Response, Error> {
    let rows: u32 = req.query_param("rows").and_then(|v| v.parse().ok()).unwrap_or(30);
    let stall_at: Option<u32> = req.query_param("stall_at").and_then(|v| v.parse().ok());
    let mut csv = String::from("id,square\n");
    for i in 1..=rows {
        ctx.stage(format!("row {i}/{rows}"));
        if Some(i) == stall_at {
            // Simulates a query that hangs: no progress; the stall timeout cancels us.
            ctx.sleep(Duration::from_secs(60))?;
        }
        ctx.sleep(Duration::from_millis(100))?; // "fetch a row"
        let _ = writeln!(csv, "{i},{}", i * i);
        ctx.progress();
    }
    Ok(Response::text(csv).with_header("Content-Type", "text/csv"))
}

fn main() -> Result<(), vigil::StartError> {
    vigil::logging::init(vigil::LogFormat::Text, false).expect("no other logger installed");
    let app = App::new().route(
        "GET",
        "/export",
        // Up to 10 minutes, but never more than 1 s without progress.
        RouteOptions::new().timeout(Duration::from_secs(600)).stall_timeout(Duration::from_secs(1)),
        export,
    );
    let settings =
        Settings::default().bind("127.0.0.1:0".parse().unwrap()).admin_bind(None).timeout(Duration::from_secs(2));
    Server::serve(settings, app)
}
