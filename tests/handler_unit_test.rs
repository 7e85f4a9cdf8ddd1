//! The handler unit test README's "Testing a handler without a socket" shows, verbatim: a
//! handler that reads a route parameter, tested without a socket.

use std::time::Duration;
use vigil::{App, Ctx, Error, Request, Response};

fn item(req: &Request, _ctx: &Ctx) -> Result<Response, Error> {
    let id: u32 = req.param("id").unwrap_or("").parse().map_err(|_| Error::new(400, "bad id"))?;
    Ok(Response::text(format!("item {id}")))
}

#[test]
fn item_answers_its_id() {
    // The handler alone, with the parameter its route would capture.
    let req = Request::builder("GET", "/items/7").param("id", "7").build();
    let resp = item(&req, &Ctx::detached(Duration::from_secs(1))).unwrap();
    assert_eq!((resp.status(), resp.body()), (200, &b"item 7"[..]));

    // Through the app's routes: parameters come from the pattern, unknown paths are 404.
    let app = App::new().get("/items/:id", item);
    assert_eq!(app.call(Request::builder("GET", "/items/x").build()).status(), 400);
    assert_eq!(app.call(Request::builder("GET", "/items/7").build()).body(), b"item 7");
    assert_eq!(app.call(Request::builder("GET", "/nope").build()).status(), 404);
}

/// README shows this file's code, from its first `use` up to this test (kept in step by hand;
/// this test says when they drift apart).
#[test]
fn readme_shows_this_file() {
    let this = include_str!("handler_unit_test.rs");
    let start = this.find("use std::time").unwrap();
    let end = this.find("\n/// README shows").unwrap();
    let code = &this[start..end];
    assert!(include_str!("../README.md").contains(code), "README's handler test differs from this file");
}
