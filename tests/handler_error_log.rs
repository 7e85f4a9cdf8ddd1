//! An `std::io::Error` a handler returns with `?` reaches the client as a generic 500, and its
//! text reaches the log, with the request id and route. (Its own test binary: it installs a
//! process-wide logger that keeps the records.)

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{raw, settings, start, wait_for};
use vigil::{App, Ctx, Error, Request, Response};

/// Keeps every record of the `vigil::app` target.
struct Keep(Mutex<Vec<String>>);

impl log::Log for Keep {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "vigil::app"
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static KEEP: Keep = Keep(Mutex::new(Vec::new()));

#[test]
fn an_io_error_is_logged_with_its_request_and_answered_with_a_generic_500() {
    log::set_logger(&KEEP).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let app = App::new().get("/config", |_: &Request, _: &Ctx| -> Result<Response, Error> {
        let text = std::fs::read_to_string("/nonexistent/vigil/secret.toml")?;
        Ok(Response::text(text))
    });
    let srv = start(settings(), app);
    let r =
        raw(srv.local_addr(), b"GET /config HTTP/1.1\r\nHost: t\r\nX-Request-Id: ioerr-1\r\nConnection: close\r\n\r\n")
            .unwrap();
    assert_eq!((r.status, r.text().as_str()), (500, "internal server error\n"));
    let os_error = std::fs::read_to_string("/nonexistent/vigil/secret.toml").unwrap_err().to_string();
    assert!(!r.text().contains(&os_error), "the OS error reached the client");
    assert!(wait_for(Duration::from_secs(5), || !KEEP.0.lock().unwrap().is_empty()), "nothing logged");
    let logged = KEEP.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let line = &logged[0];
    assert!(line.starts_with("ERROR ") && line.contains("id=ioerr-1") && line.contains("route=/config"), "{line}");
    assert!(line.contains(&os_error), "the cause is not in the log: {line}");
    srv.stop();
}
