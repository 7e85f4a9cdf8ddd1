//! Arbitrary bytes through `parse_head`: no panics, results within the
//! buffer and the limits, and every strict prefix of an accepted head is
//! "incomplete" rather than an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::internals::parse::{parse_head, Framing, Head, Limits};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits: the defaults, or small ones so that
    // every limit is reachable with short inputs.
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let limits = if sel & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            request_line: 12 + usize::from(sel >> 3 & 31),
            fields: usize::from(sel >> 1 & 3) * 3,
            field_size: 8 + usize::from(sel >> 4) * 4,
            head_bytes: 48 + usize::from(sel) * 2,
            max_body: u64::from(sel),
        }
    };
    check(buf, &limits);
});

fn check(buf: &[u8], limits: &Limits) {
    match parse_head(buf, limits) {
        Ok(Some(head)) => {
            check_head(buf, limits, &head);
            // Only the head's bytes matter.
            assert_eq!(parse_head(&buf[..head.len], limits), Ok(Some(head.clone())));
            // Every strict prefix is incomplete: all of them for short heads,
            // an even sample for long ones.
            let step = (head.len / 256).max(1);
            for cut in (0..head.len).step_by(step).chain([head.len - 1]) {
                assert_eq!(parse_head(&buf[..cut], limits), Ok(None), "cut {cut}");
            }
        }
        // Incomplete only while the buffer is under the head limit.
        Ok(None) => assert!(buf.len() < limits.head_bytes),
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413 | 414 | 417 | 431 | 501 | 505), "{e:?}");
            assert!(!e.message().is_empty());
        }
    }
}

fn check_head(buf: &[u8], limits: &Limits, head: &Head) {
    assert!(head.len <= buf.len() && head.len <= limits.head_bytes);
    let end = head.len as u32;
    let spans = [head.method, head.target, head.path]
        .into_iter()
        .chain(head.query)
        .chain(head.headers.iter().flat_map(|&(n, v)| [n, v]));
    for span in spans {
        assert!(span.start <= span.end && span.end <= end, "{span:?}");
    }
    assert!(!head.method.is_empty());
    let path = head.path.get(buf);
    assert!(path == b"*" || path.first() == Some(&b'/'), "{path:?}");
    assert!(head.headers.len() <= limits.fields);
    for (name, _) in &head.headers {
        assert!(!name.is_empty());
    }
    if let Framing::Length(n) = head.framing {
        assert!(n <= limits.max_body);
    }
    assert!(matches!(buf[head.len - 1], b'\n'));
}
