//! Making a blocking call cancellable with `on_cancel`: the handler blocks reading from an
//! upstream socket that never answers; at the deadline the watchdog answers 504 and fires the
//! request's token, and vigil runs our callback (on one of its offload threads), which shuts the
//! socket down, so the blocking read returns and the thread goes back to the pool (the log says
//! "cancellation honored" instead of "abandoned thread", and the admin listener's
//! `vigil_cancellations_honored_total` counts it).
//!
//! ```text
//! cargo run --example cancellable_blocking
//! curl -i http://ADDR/upstream     # 504 after 1 s; the worker thread is not lost
//! ```

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use vigil::{App, Ctx, Error, Request, Response, Server, Settings};

fn main() -> std::io::Result<()> {
    vigil::logging::init(vigil::LogFormat::Text, false).expect("no other logger installed");
    // An "upstream" that accepts connections and never answers.
    let upstream = TcpListener::bind("127.0.0.1:0")?;
    let upstream_addr = upstream.local_addr()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in upstream.incoming().flatten() {
            held.push(s);
        }
    });

    let app = App::new().get("/upstream", move |_: &Request, ctx: &Ctx| -> Result<Response, Error> {
        let mut conn = TcpStream::connect(upstream_addr)?;
        let for_cancel = conn.try_clone()?;
        // Armed while the read below blocks; dropped (disarmed) when the handler returns.
        let _armed = ctx.on_cancel(move || {
            let _ = for_cancel.shutdown(Shutdown::Both);
        });
        ctx.stage("waiting for upstream");
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf)?; // blocks until upstream answers or we are cancelled
        ctx.checkpoint()?; // cancelled: the read returned because we shut the socket down
        Ok(Response::bytes(buf[..n].to_vec()))
    });
    let settings = Settings::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .admin_bind(Some("127.0.0.1:0".parse().unwrap()))
        .timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_secs(1));
    Ok(Server::serve(settings, app)?)
}
