//! # vigil
//!
//! An HTTP/1.1 application server that never hands a client an empty reply because one request
//! hung. Connections are served on [`may`] coroutines; user handlers run only on a pool of OS
//! threads; a watchdog thread cancels requests at their deadline, answers `504` on time whatever
//! the handler does, and replaces threads that ignore cancellation.
//!
//! ```no_run
//! use vigil::{App, Response, Server, Settings};
//!
//! let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
//! let settings = Settings::default().bind("127.0.0.1:0".parse().unwrap());
//! let server = Server::start(settings, app).expect("bind");
//! println!("listening on http://{}", server.local_addr());
//! server.wait();
//! ```
//!
//! The modules follow the path of one request: [`listener`](crate) accepts, `conn` reads and
//! frames it (with the pure [`parse`] module), `dispatch` queues it, `pool` runs the handler,
//! `watchdog` times it, `response` encodes the answer. See ARCHITECTURE.md.

mod admin;
mod app;
mod conn;
mod ctx;
pub mod demo;
mod dispatch;
mod listener;
pub mod logging;
mod metrics;
pub mod parse;
mod platform;
mod pool;
mod request;
mod response;
mod server;
mod settings;
mod watchdog;

pub use app::{App, Error, Handler, IntoResponse, RouteOptions};
pub use ctx::{Cancelled, Ctx};
pub use request::Request;
pub use response::Response;
pub use server::{Server, ServerHandle, ShutdownTrigger};
pub use settings::{parse_duration, parse_size, Cli, LogFormat, Settings, SettingsError, MIN_DEFAULT_BACKLOG};
