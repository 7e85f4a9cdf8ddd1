//! Embedding vigil: a hello-world server on a port of your choice.
//!
//! ```text
//! cargo run --example hello -- 127.0.0.1:3000
//! curl http://127.0.0.1:3000/hello/world
//! ```

use std::time::Duration;

use vigil::{App, Ctx, Request, Response, Server, Settings};

fn main() -> Result<(), vigil::StartError> {
    vigil::logging::init(vigil::LogFormat::Text, false).expect("no other logger installed");
    let bind = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let app = App::new()
        .get("/", |_: &Request, _: &Ctx| Response::text("hello"))
        .get("/hello/:name", |req: &Request, _: &Ctx| {
            Response::text(format!("hello, {}", req.param("name").unwrap_or("")))
        });
    let settings = Settings::default()
        .bind(bind.parse().expect("address like 127.0.0.1:3000"))
        .admin_bind(None)
        .threads(8)
        .timeout(Duration::from_secs(10));
    // Blocks until Ctrl-C (drains in-flight requests first).
    Server::serve(settings, app)
}
