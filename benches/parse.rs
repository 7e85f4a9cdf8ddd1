//! Parser throughput: `vigil::parse::parse_head` on a typical browser-like request (~200 bytes)
//! and on a 40-header request, in bytes/s (target: at least 1 GB/s on the typical one).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::internals::parse::{parse_head, Limits};

/// A typical GET as a browser sends it for an API call, about 200 bytes.
const TYPICAL: &[u8] = b"GET /api/orders?page=2 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\r\n";

/// A request with 40 header fields (cookies, tracing, forwarding, client hints...).
fn forty_headers() -> Vec<u8> {
    let mut r = b"POST /api/v2/checkout/confirm?session=8f2c1a HTTP/1.1\r\nHost: shop.example.com\r\n".to_vec();
    let fields = [
        ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.9,fr;q=0.8"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Content-Type", "application/json"),
        ("Content-Length", "0"),
        ("Connection", "keep-alive"),
        ("Cookie", "sid=3b9f1c0e7a; cart=17; theme=dark; consent=yes"),
        ("Referer", "https://shop.example.com/cart"),
        ("Origin", "https://shop.example.com"),
        ("Cache-Control", "no-cache"),
        ("Pragma", "no-cache"),
        ("Sec-Fetch-Dest", "empty"),
        ("Sec-Fetch-Mode", "cors"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Ch-Ua", "\"Chromium\";v=\"126\", \"Not.A/Brand\";v=\"24\""),
        ("Sec-Ch-Ua-Mobile", "?0"),
        ("Sec-Ch-Ua-Platform", "\"Windows\""),
        ("X-Request-Id", "a1b2c3d4-e5f6-7890-abcd-ef0123456789"),
        ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "shop.example.com"),
        ("X-Real-Ip", "203.0.113.7"),
        ("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("Tracestate", "vendor=opaque"),
        ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig"),
        ("X-Csrf-Token", "9c1e5f0a7b3d"),
        ("If-None-Match", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("Dnt", "1"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Priority", "u=1, i"),
        ("X-Client-Version", "4.18.2"),
        ("X-Feature-Flags", "checkout-v2,new-cart"),
        ("X-Tenant", "eu-west"),
        ("X-Experiment", "b"),
        ("Te", "trailers"),
        ("Via", "1.1 edge-proxy"),
        ("Forwarded", "for=203.0.113.7;proto=https"),
        ("Save-Data", "on"),
    ];
    for (k, v) in fields {
        r.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let big = forty_headers();
    // The inputs must be what they claim to be.
    let head = parse_head(TYPICAL, &limits).unwrap().expect("complete head");
    assert_eq!(head.len, TYPICAL.len());
    let head = parse_head(&big, &limits).unwrap().expect("complete head");
    assert_eq!(head.headers.len(), 40);

    let mut g = c.benchmark_group("parse_head");
    g.throughput(Throughput::Bytes(TYPICAL.len() as u64));
    g.bench_function(format!("typical_{}B", TYPICAL.len()), |b| {
        b.iter(|| parse_head(black_box(TYPICAL), &limits).unwrap().unwrap().len)
    });
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function(format!("40_headers_{}B", big.len()), |b| {
        b.iter(|| parse_head(black_box(&big), &limits).unwrap().unwrap().len)
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench
}
criterion_main!(benches);
