//! Arbitrary bytes through `ChunkedDecoder`: no panics, the body stays
//! under the cap, and feeding the input in two pieces or byte by byte gives
//! exactly the one-shot result (same body, same consumed count, same error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::internals::parse::{ChunkedDecoder, ParseError};

/// Body, bytes consumed, done — or the error.
type Outcome = Result<(Vec<u8>, usize, bool), ParseError>;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the body cap and a split point.
    let [sel, cut, input @ ..] = data else {
        return;
    };
    let max_body = if sel & 1 == 0 { 1 << 20 } else { u64::from(*sel) };

    let whole = decode(max_body, &[input]);
    if let Ok((body, consumed, done)) = &whole {
        assert!(body.len() as u64 <= max_body);
        assert!(*consumed <= input.len());
        // Until the end of the body, everything is consumed.
        assert!(*done || *consumed == input.len());
    }

    let cut = usize::from(*cut).min(input.len());
    let (a, b) = input.split_at(cut);
    assert_eq!(decode(max_body, &[a, b]), whole, "split at {cut}");

    if input.len() <= 4096 {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(max_body, &bytes), whole, "byte by byte");
    }
});

/// Feed `pieces` in order, offering unconsumed bytes again with the next.
fn decode(max_body: u64, pieces: &[&[u8]]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut pending = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        let (n, done) = decoder.decode(&pending, &mut body)?;
        consumed += n;
        pending.drain(..n);
        if done {
            return Ok((body, consumed, true));
        }
    }
    Ok((body, consumed, false))
}
