//! The bare hop: vigil's dispatch path with no HTTP work, as the reference for vigil's
//! per-request overhead. A may coroutine per connection finds the end of each request head
//! (`memchr`'s SIMD substring search for the blank line; nothing else is parsed), hands the request to one of 8 OS worker threads over a bounded
//! crossbeam channel (`try_send`), parks on a per-connection reply slot (a mutex-guarded option
//! and may's `Blocker`, as vigil's `ReplySlot`) until the worker answers, and writes a fixed
//! `hello` response; pipelined requests are answered in one write, as vigil does.
//!
//! What it does per request is what vigil's path cannot do without: a `try_send` of a job that
//! refers to the connection's reply slot (an `Arc` clone: one atomic increment, no allocation),
//! a worker thread woken to take it, the slot's mutex and may's `Blocker` to hand the answer
//! back, and the coroutine's write. There is no read timeout (vigil's idle and header timeouts
//! are part of what vigil adds).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";

struct Slot {
    reply: parking_lot::Mutex<Option<u64>>,
    blocker: may::sync::Blocker,
}

struct Job {
    seq: u64,
    slot: Arc<Slot>,
}

/// Starts the server on a free loopback port; it runs until the process exits.
pub fn start(workers: usize) -> SocketAddr {
    let (tx, rx) = crossbeam_channel::bounded::<Job>(1024);
    for _ in 0..workers {
        let rx = rx.clone();
        std::thread::spawn(move || {
            while let Ok(job) = rx.recv() {
                *job.slot.reply.lock() = Some(job.seq);
                job.slot.blocker.unpark();
            }
        });
    }
    let listener = may::net::TcpListener::bind("127.0.0.1:0").expect("bind the bare hop");
    let addr = listener.local_addr().expect("local addr");
    may::go!(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            may::go!(move || connection(stream, tx));
        }
    });
    addr
}

fn connection(mut stream: may::net::TcpStream, tx: crossbeam_channel::Sender<Job>) {
    let _ = stream.set_nodelay(true);
    let head_end = memchr::memmem::Finder::new(b"\r\n\r\n");
    let slot = Arc::new(Slot { reply: parking_lot::Mutex::new(None), blocker: may::sync::Blocker::new(false) });
    let mut buf = vec![0u8; 4096];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(4096);
    let mut seq = 0u64;
    loop {
        // Every complete head in the buffer: hand it over, wait for the answer.
        while let Some(pos) = head_end.find(&buf[start..end]) {
            start += pos + 4;
            seq += 1;
            if tx.try_send(Job { seq, slot: Arc::clone(&slot) }).is_err() {
                return;
            }
            loop {
                if slot.reply.lock().take() == Some(seq) {
                    break;
                }
                if slot.blocker.park(None).is_err() {
                    return;
                }
            }
            out.extend_from_slice(RESPONSE);
        }
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if start == end {
            (start, end) = (0, 0);
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        match stream.read(&mut buf[end..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}
