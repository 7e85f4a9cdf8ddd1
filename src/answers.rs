//! How the server's own answers look: 404 and 405 from the router, 400/413/431/… from the
//! parser, 408 from the read timeouts, 503 and 504 from the pool, the watchdog and the drain,
//! 500 for a panic. A short text body by default; an app can render them its way
//! (`App::render_errors`, JSON say). The app's renderer is user code, so it runs once per kind of
//! answer when the server starts, never on a coroutine or the watchdog: the server clones the
//! result whenever it gives that answer.

use crate::http::parse::ParseError;
use crate::http::response::{reason, Response};
use crate::runtime::refusal::Refusal;

/// The router's own answers, and the read timeouts' (the other kinds are `Refusal`s and
/// `ParseError`s).
pub(crate) const NOT_FOUND: (u16, &str) = (404, "not found");
pub(crate) const METHOD_NOT_ALLOWED: (u16, &str) = (405, "method not allowed");
pub(crate) const BAD_PARAM: (u16, &str) = (400, "invalid percent-encoding in the path");
pub(crate) const HEAD_TIMEOUT: (u16, &str) = (408, "timed out reading the request head");
pub(crate) const BODY_TIMEOUT: (u16, &str) = (408, "timed out reading the request body");

/// Every (status, message) the server can answer with a fixed message.
fn catalog() -> Vec<(u16, &'static str)> {
    let mut c: Vec<(u16, &'static str)> = Refusal::ALL.iter().map(|r| (r.status(), r.message())).collect();
    c.extend(ParseError::FIXED.iter().map(|e| (e.status(), e.message())));
    c.extend([NOT_FOUND, METHOD_NOT_ALLOWED, BAD_PARAM, HEAD_TIMEOUT, BODY_TIMEOUT]);
    c
}

/// The server's own answers, rendered.
#[derive(Default)]
pub(crate) struct Answers {
    /// By status and message: every kind with a fixed message.
    exact: Vec<(u16, &'static str, Response)>,
    /// By status alone, for a message known only at run time (a 400's reason).
    by_status: Vec<(u16, Response)>,
}

impl Answers {
    /// Short text bodies (`Response::error`), nothing rendered ahead.
    pub fn plain() -> Answers {
        Answers::default()
    }

    /// Every kind rendered once by `render`. Its status is kept whatever `render` says (the
    /// status is the server's; the format is the app's).
    pub fn rendered(render: &dyn Fn(u16, &str) -> Response) -> Answers {
        // A streaming rendering is read into memory here: the answer is cloned for each use.
        let call = |status: u16, message: &str| render(status, message).with_status(status).buffered();
        let kinds = catalog();
        let mut statuses: Vec<u16> = kinds.iter().map(|&(s, _)| s).collect();
        statuses.push(400);
        statuses.sort_unstable();
        statuses.dedup();
        Answers {
            exact: kinds.into_iter().map(|(s, m)| (s, m, call(s, m))).collect(),
            by_status: statuses.into_iter().map(|s| (s, call(s, &reason(s).to_ascii_lowercase()))).collect(),
        }
    }

    /// The answer with `status` and `message`.
    pub fn get(&self, status: u16, message: &str) -> Response {
        if let Some((_, _, r)) = self.exact.iter().find(|(s, m, _)| *s == status && *m == message) {
            return r.clone();
        }
        if let Some((_, r)) = self.by_status.iter().find(|(s, _)| *s == status) {
            return r.clone();
        }
        Response::error(status, message)
    }

    /// A refusal's answer: `Retry-After: 1` on the 503s (the client may retry elsewhere or a
    /// moment later).
    pub fn refusal(&self, r: Refusal) -> Response {
        let resp = self.get(r.status(), r.message());
        if r.status() == 503 {
            resp.with_header("Retry-After", "1")
        } else {
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry_and_other_refusals_do_not() {
        let answers = Answers::plain();
        for &r in &Refusal::ALL {
            let resp = answers.refusal(r);
            assert_eq!(resp.status(), r.status());
            assert_eq!(resp.header("retry-after").is_some(), r.status() == 503, "{r:?}");
            assert_eq!(resp.body(), format!("{}\n", r.message()).as_bytes());
        }
    }

    #[test]
    fn plain_answers_are_the_short_text_errors() {
        let a = Answers::plain();
        let r = a.get(404, "not found");
        assert_eq!((r.status(), r.body()), (404, &b"not found\n"[..]));
        assert_eq!(a.refusal(Refusal::QueueFull).header("retry-after"), Some("1"));
        assert_eq!(a.refusal(Refusal::Timeout).header("retry-after"), None);
    }

    #[test]
    fn rendered_answers_keep_their_status_and_fall_back_to_the_status_for_unknown_messages() {
        let a = Answers::rendered(&|status, message| {
            Response::json_str(format!(r#"{{"error":"{message}","status":{status}}}"#)).with_status(200)
        });
        let r = a.get(404, "not found");
        assert_eq!((r.status(), r.body()), (404, &br#"{"error":"not found","status":404}"#[..]));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let r = a.get(400, "invalid header field value");
        assert_eq!(r.body(), br#"{"error":"bad request","status":400}"#);
        let r = a.refusal(Refusal::Timeout);
        assert_eq!((r.status(), r.body()), (504, &br#"{"error":"request exceeded its deadline","status":504}"#[..]));
        assert_eq!(a.refusal(Refusal::Draining).header("retry-after"), Some("1"));
        // A status no kind has: the plain text error.
        assert_eq!(a.get(418, "teapot").body(), b"teapot\n");
    }
}
