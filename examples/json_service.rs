//! A small JSON service on vigil: shared state, hooks (authentication, a response header),
//! an error type of its own rendered as JSON, `req.json()`, the server's own answers (404, 405,
//! 504, ...) in the same format, per-route timeouts, and a blocking call to a pooled upstream
//! made cancellable with an `on_cancel` guard.
//!
//! ```text
//! cargo run --example json_service --features json
//! curl -i -H 'Authorization: Bearer demo' localhost:PORT/users/1
//! curl -i -H 'Authorization: Bearer demo' -H 'Content-Type: application/json' \
//!      -d '{"name":"grace"}' localhost:PORT/users
//! curl -i -H 'Authorization: Bearer demo' 'localhost:PORT/search?q=x&upstream_ms=5000'  # 504 at 1 s
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil::{App, Ctx, IntoResponse, JsonError, Request, Response, RouteOptions, Server, Settings};

#[derive(Clone, Serialize)]
struct User {
    id: u32,
    name: String,
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

/// The service's errors, answered as JSON like everything else it says.
enum ApiError {
    NotFound(&'static str),
    Invalid(String),
    /// The body was not JSON of the expected shape (400), or not JSON at all (415).
    Json(JsonError),
    Unavailable,
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> Self {
        ApiError::Json(e)
    }
}

impl From<std::num::ParseIntError> for ApiError {
    fn from(e: std::num::ParseIntError) -> Self {
        ApiError::Invalid(format!("not a user id: {e}"))
    }
}

fn error_json(status: u16, message: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        status: u16,
    }
    Response::json(&Body { error: message, status }).with_status(status)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound(what) => error_json(404, what),
            ApiError::Invalid(why) => error_json(422, &why),
            ApiError::Json(e) => error_json(e.status(), &e.to_string()),
            ApiError::Unavailable => error_json(503, "upstream unavailable"),
        }
    }
}

/// The app's state, shared by every worker thread.
struct Store {
    users: Mutex<HashMap<u32, User>>,
    /// A small pool of connections to the upstream that `/search` asks.
    pool: Mutex<Vec<TcpStream>>,
    upstream: std::net::SocketAddr,
}

impl Store {
    fn checkout(&self) -> Result<TcpStream, ApiError> {
        match self.pool.lock().unwrap().pop() {
            Some(conn) => Ok(conn),
            None => TcpStream::connect(self.upstream).map_err(|_| ApiError::Unavailable),
        }
    }

    fn give_back(&self, conn: TcpStream) {
        self.pool.lock().unwrap().push(conn);
    }
}

fn app(store: Arc<Store>) -> App {
    let (get_store, post_store, search_store) = (Arc::clone(&store), Arc::clone(&store), store);
    App::new()
        .render_errors(|e| error_json(e.status(), e.message()))
        .before(|req: &Request, _: &Ctx| match req.header("authorization") {
            Some("Bearer demo") => None,
            _ => Some(error_json(401, "missing or wrong bearer token")),
        })
        .after(|_: &Request, _: &Ctx, resp: Response| resp.with_header("X-Service", "users"))
        .get("/users/:id", move |req: &Request, _: &Ctx| -> Result<Response, ApiError> {
            let id: u32 = req.param("id").unwrap_or("").parse()?;
            let users = get_store.users.lock().unwrap();
            let user = users.get(&id).ok_or(ApiError::NotFound("no such user"))?;
            Ok(Response::json(user))
        })
        .route(
            "POST",
            "/users",
            RouteOptions::new().timeout(Duration::from_secs(2)),
            move |req: &Request, _: &Ctx| -> Result<Response, ApiError> {
                let new: NewUser = req.json()?;
                if new.name.trim().is_empty() {
                    return Err(ApiError::Invalid("name must not be empty".into()));
                }
                let mut users = post_store.users.lock().unwrap();
                let id = users.keys().max().map_or(1, |m| m + 1);
                let user = User { id, name: new.name };
                users.insert(id, user.clone());
                Ok(Response::json(&user).with_status(201))
            },
        )
        .route(
            "GET",
            "/search",
            RouteOptions::new().timeout(Duration::from_secs(1)),
            move |req: &Request, ctx: &Ctx| -> Result<Response, ApiError> {
                let upstream_ms = req.query_param("upstream_ms").unwrap_or_default();
                // Check the connection out of the pool, and make the blocking call on it
                // cancellable: at the deadline the callback shuts it, the read returns.
                let mut conn = search_store.checkout()?;
                let answer = {
                    let for_cancel = conn.try_clone().map_err(|_| ApiError::Unavailable)?;
                    let _armed = ctx.on_cancel(move || {
                        let _ = for_cancel.shutdown(Shutdown::Both);
                    });
                    ctx.stage("waiting for the upstream");
                    let mut buf = [0u8; 64];
                    let n = conn
                        .write_all(format!("{upstream_ms}\n").as_bytes())
                        .and_then(|_| conn.read(&mut buf))
                        .map_err(|_| ApiError::Unavailable)?;
                    String::from_utf8_lossy(&buf[..n]).trim().to_string()
                }; // the guard drops here: the callback is disarmed before the connection goes back
                if ctx.is_cancelled() || answer.is_empty() {
                    // Shut by the callback: the connection is not given back, and the client
                    // has had its 504 already (this answer is dropped).
                    return Err(ApiError::Unavailable);
                }
                search_store.give_back(conn);
                Ok(Response::json(&serde_json::json!({ "results": [answer] })))
            },
        )
}

/// An upstream that answers each line `MS` after `MS` milliseconds.
fn start_upstream() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_upstream(conn));
        }
    });
    Ok(addr)
}

fn serve_upstream(mut conn: TcpStream) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).is_ok_and(|n| n == 1) {
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        let ms: u64 = String::from_utf8_lossy(&line).parse().unwrap_or(0);
        line.clear();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = conn.write_all(format!("found after {ms} ms\n").as_bytes());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    vigil::logging::init(vigil::LogFormat::Text, false)?;
    // Flags as the vigil binary takes them (e.g. --bind 127.0.0.1:0 --admin-bind 127.0.0.1:0).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::from_args(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut users = HashMap::new();
    users.insert(1, User { id: 1, name: "ada".into() });
    let store = Arc::new(Store { users: Mutex::new(users), pool: Mutex::new(Vec::new()), upstream: start_upstream()? });
    Server::serve(settings.threads(4), app(store))?;
    Ok(())
}
