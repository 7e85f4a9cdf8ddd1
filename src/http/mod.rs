//! The HTTP/1.1 codec: pure functions and plain types over bytes, with no sockets, threads or
//! clocks (and no imports from the rest of the crate), so every framing rule is a unit test and
//! a fuzz target.
//!
//! - [`body`]: a response's body: bytes, or the two ends of a streaming body (the producer a
//!   handler gives, the chunks the connection writes);
//! - [`deadline`]: the deadlines an upstream sends in header fields;
//! - [`parse`]: the request head (`parse_head`: httparse plus every RFC 9112 rule and limit) and
//!   chunked body decoding (`ChunkedDecoder`);
//! - [`request`]: the [`Request`](request::Request) a handler sees (one owned copy of the head);
//! - [`response`]: the [`Response`](response::Response) and its encoder (status line, `Date`,
//!   `Content-Length` or chunked, `Connection`, the request id; the body is written from the
//!   response by the connection).

pub mod body;
pub mod deadline;
pub mod parse;
pub mod request;
pub mod response;
