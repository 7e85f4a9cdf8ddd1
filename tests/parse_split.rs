//! Incremental parsing gives the same answer however the bytes arrive.
//!
//! Random valid requests are serialized and then fed to `parse_head` cut at
//! every byte boundary: every prefix shorter than the head must be
//! `Ok(None)` and every longer one must give the one-shot head. Chunked
//! bodies are decoded in two pieces split at every byte boundary, and byte by
//! byte, and must give the one-shot body.

use proptest::prelude::*;
use vigil::internals::parse::{parse_head, ChunkedDecoder, Framing, Limits, Version};

/// How a generated request delimits its body.
#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunks with optional extensions, then trailer fields.
    Chunked(Vec<(Vec<u8>, Option<String>)>, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
struct Request {
    leading: Vec<&'static str>,
    method: &'static str,
    path: String,
    query: Option<String>,
    http10: bool,
    eol: &'static str,
    fields: Vec<(String, String, &'static str, &'static str)>,
    close: bool,
    body: Body,
}

impl Request {
    /// The request bytes, and where the head ends.
    fn serialize(&self) -> (Vec<u8>, usize) {
        let eol = self.eol;
        let mut head = self.leading.concat();
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        head += &format!("{} {}", self.method, self.path);
        if let Some(query) = &self.query {
            head += &format!("?{query}");
        }
        head += &format!(" {version}{eol}Host: example.com{eol}");
        for (name, value, before, after) in &self.fields {
            head += &format!("{name}:{before}{value}{after}{eol}");
        }
        if self.close {
            head += &format!("Connection: close{eol}");
        }
        match &self.body {
            Body::None => {}
            Body::Length(data) => head += &format!("Content-Length: {}{eol}", data.len()),
            Body::Chunked(..) => head += &format!("Transfer-Encoding: chunked{eol}"),
        }
        head += eol;
        let head_len = head.len();
        let mut raw = head.into_bytes();
        match &self.body {
            Body::None => {}
            Body::Length(data) => raw.extend_from_slice(data),
            Body::Chunked(chunks, trailers) => {
                for (data, ext) in chunks {
                    raw.extend_from_slice(format!("{:x}", data.len()).as_bytes());
                    if let Some(ext) = ext {
                        raw.extend_from_slice(ext.as_bytes());
                    }
                    raw.extend_from_slice(b"\r\n");
                    raw.extend_from_slice(data);
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                raw.extend_from_slice(b"\r\n");
            }
        }
        (raw, head_len)
    }

    fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Length(data) => data.clone(),
            Body::Chunked(chunks, _) => chunks.iter().flat_map(|(d, _)| d.clone()).collect(),
        }
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// Visible ASCII with inner spaces; never starts or ends with whitespace.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[!-~]([ -~]{0,24}[!-~])?"]
}

fn ows() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", "", " ", "  ", "\t", " \t"][..])
}

fn chunk_ext() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        token().prop_map(|n| format!(";{n}")),
        (token(), token()).prop_map(|(n, v)| format!(";{n}={v}")),
        (token(), "[ !#-~]{0,10}").prop_map(|(n, v)| format!(" ;{n}=\"{v}\";x")),
    ])
}

fn chunked_body() -> impl Strategy<Value = Body> {
    (
        prop::collection::vec((prop::collection::vec(any::<u8>(), 1..80), chunk_ext()), 0..6),
        prop::collection::vec((token().prop_map(|t| format!("T-{t}")), field_value()), 0..3),
    )
        .prop_map(|(chunks, trailers)| Body::Chunked(chunks, trailers))
}

fn any_body() -> impl Strategy<Value = Body> {
    prop_oneof![Just(Body::None), prop::collection::vec(any::<u8>(), 0..200).prop_map(Body::Length), chunked_body(),]
}

fn request(body: impl Strategy<Value = Body>) -> impl Strategy<Value = Request> {
    let line = (
        prop::collection::vec(prop::sample::select(&["\r\n", "\n"][..]), 0..3),
        prop::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE", "M-SEARCH"][..]),
        prop::collection::vec("[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,8}", 0..5),
        prop::option::of("[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,20}"),
        any::<bool>(),
        prop::sample::select(&["\r\n", "\n"][..]),
    );
    let rest = (
        prop::collection::vec((token().prop_map(|t| format!("X-{t}")), field_value(), ows(), ows()), 0..40),
        any::<bool>(),
        body,
    );
    (line, rest).prop_map(|((leading, method, segments, query, http10, eol), (fields, close, body))| {
        // Transfer-Encoding is not allowed in HTTP/1.0.
        let http10 = http10 && !matches!(body, Body::Chunked(..));
        Request { leading, method, path: format!("/{}", segments.join("/")), query, http10, eol, fields, close, body }
    })
}

/// Decode `input` fed in the given pieces; returns bytes consumed and body.
fn decode_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (usize, Vec<u8>, bool) {
    let mut decoder = ChunkedDecoder::new(Limits::default().max_body);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        // Unconsumed bytes are offered again with the next piece.
        pending.extend_from_slice(piece);
        let (n, done) = decoder.decode(&pending, &mut body).expect("valid chunked body");
        consumed += n;
        pending.drain(..n);
        if done {
            return (consumed, body, true);
        }
    }
    (consumed, body, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn head_parses_the_same_at_every_split(req in request(any_body())) {
        let (raw, head_len) = req.serialize();
        let limits = Limits::default();
        let head = parse_head(&raw, &limits).unwrap().expect("complete head");
        prop_assert_eq!(head.len, head_len);

        // What the one-shot parse found matches what was generated.
        prop_assert_eq!(head.method.get(&raw), req.method.as_bytes());
        prop_assert_eq!(head.path.get(&raw), req.path.as_bytes());
        prop_assert_eq!(head.query.map(|q| q.get(&raw)), req.query.as_deref().map(str::as_bytes));
        prop_assert_eq!(head.version, if req.http10 { Version::Http10 } else { Version::Http11 });
        prop_assert_eq!(head.keep_alive, !req.close && !req.http10);
        for ((name, value), (want_name, want_value, _, _)) in head.headers[1..].iter().zip(&req.fields) {
            prop_assert_eq!(name.get(&raw), want_name.as_bytes());
            prop_assert_eq!(value.get(&raw), want_value.as_bytes());
        }
        let framing = match &req.body {
            Body::None => Framing::None,
            Body::Length(data) => Framing::Length(data.len() as u64),
            Body::Chunked(..) => Framing::Chunked,
        };
        prop_assert_eq!(head.framing, framing);

        for cut in 0..=raw.len() {
            let got = parse_head(&raw[..cut], &limits);
            if cut < head_len {
                prop_assert_eq!(got, Ok(None), "cut {}", cut);
            } else {
                prop_assert_eq!(got, Ok(Some(head.clone())), "cut {}", cut);
            }
        }
    }

    #[test]
    fn chunked_body_decodes_the_same_at_every_split(req in request(chunked_body())) {
        let (raw, head_len) = req.serialize();
        let mut input = raw[head_len..].to_vec();
        let body_len = input.len();
        let want = req.body_bytes();
        // A pipelined request after the body must be left alone.
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");

        let whole = decode_pieces([&input[..]]);
        prop_assert_eq!(&whole, &(body_len, want.clone(), true));

        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            prop_assert_eq!(&decode_pieces([a, b]), &whole, "cut {}", cut);
        }
        prop_assert_eq!(&decode_pieces(input.chunks(1)), &whole);
    }
}
