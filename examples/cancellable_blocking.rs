//! Making a blocking call cancellable with `on_cancel`: the handler blocks reading from an
//! upstream socket that never answers; at the deadline the watchdog runs our callback, which shuts
//! the socket down, so the blocking read returns and the thread goes back to the pool (the log
//! says "cancellation honored" instead of "abandoned thread").
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,may=warn")).init();
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
        ctx.on_cancel(move || {
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
        .admin_bind(None)
        .timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_secs(1));
    Server::serve(settings, app)
}
