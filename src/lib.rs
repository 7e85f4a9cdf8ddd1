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
//! Inside, dependencies flow one way (ARCHITECTURE.md draws the layers): the HTTP codec
//! (`http`: parse, request, response) at the bottom; the runtime (`runtime`: clock, token,
//! in-flight record, pool, watchdog) above it; the app and the handler's [`Ctx`]; then the
//! server (`server`: connections, listener, lifecycle), `admin`, `metrics` and [`Settings`] on
//! top.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod admin;
mod answers;
mod app;
mod ctx;
mod http;
pub mod logging;
mod metrics;
mod platform;
mod runtime;
mod server;
pub mod service;
mod settings;

pub use app::{App, Error, Handler, IntoResponse, RouteOptions};
pub use ctx::{CancelGuard, Cancelled, Ctx};
#[cfg(feature = "json")]
pub use http::request::JsonError;
pub use http::request::{Request, RequestBuilder};
pub use http::response::Response;
pub use logging::LogFormat;
pub use runtime::threads::AbandonedPriority;
pub use server::{Server, ServerHandle, ShutdownTrigger, StartError, StopCause, EXIT_THREAD_CEILING};
#[cfg(feature = "cli")]
pub use settings::{LoadedSettings, Mode};
pub use settings::{Origin, Settings, SettingsError};

#[doc(hidden)]
pub mod internals;
