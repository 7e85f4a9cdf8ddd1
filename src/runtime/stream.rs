//! Streaming response bodies: the worker that ran the handler produces the body, chunk by
//! chunk, into a bounded pipe; the connection's coroutine takes the chunks out and writes them.
//!
//! Why this shape:
//! - **The producer is user code** (a reader's `read`, an iterator's `next`, and their `drop`),
//!   so it runs where handlers run: on the worker thread, right after the handler returned
//!   ([`deliver`], called by the pool). A coroutine never calls it (a blocking `read` there
//!   would stall every connection on its scheduler thread), and neither does the watchdog.
//! - **Bounded**: the pipe holds at most [`PIPE_BYTES`] (plus the chunk being added). When the
//!   client reads slowly the pipe fills and the worker waits on a condvar (an OS thread may
//!   block); the coroutine waits for chunks with may's `Blocker`, which parks the coroutine,
//!   never its scheduler thread. A body of any size costs at most this much memory.
//! - **Under the watchdog**: the request stays `Running` while its body is produced, so the
//!   route's deadline (or stall timeout, or a drain's end) covers the whole body, and a reader
//!   that hangs is cancelled, stood in for and abandoned like any hung handler. Writing is
//!   bounded by `--write-timeout` on the connection's side. A body still being produced at the
//!   deadline is broken off: the head (200) has been sent, so no 504 can be; the client sees a
//!   truncated body (no last chunk, or fewer bytes than `Content-Length`) and the connection
//!   closes.
//! - The worker answers the connection with the head (one `Inflight::answer`, so the watchdog's
//!   504 and the head cannot both go out), then produces; its producer is dropped on the
//!   worker whatever happens, never on the connection (a HEAD request or a bodiless status
//!   never runs it at all).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use log::{debug, error};
use may::sync::Blocker;
use parking_lot::{Condvar, Mutex};

use crate::http::body::{BoxError, Chunks, LengthCheck, LengthMismatch, Next, Produce};
use crate::http::response::{is_bodiless, Response};
use crate::runtime::clock;
use crate::runtime::inflight::Inflight;
use crate::runtime::refusal::Source;
use crate::runtime::reply::Reply;
use crate::runtime::routes::RouteTable;
use crate::runtime::state::RequestState;
use crate::runtime::token::Registered;

/// Most bytes (allocated by the chunks) a pipe holds; the producer waits while it holds this
/// much or more. With 64 KiB reads: four chunks in flight, enough to keep a fast client busy.
pub(crate) const PIPE_BYTES: usize = 256 * 1024;
/// Most chunks a pipe holds (small chunks cost a little besides their bytes).
const PIPE_CHUNKS: usize = 64;

/// How a pipe ended, as its producer said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The body is complete.
    Finished,
    /// The body was broken off (its producer failed, or its request was cancelled).
    Broken,
}

struct State {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes the queued chunks hold (their capacity: that is the memory).
    bytes: usize,
    end: Option<Ending>,
    /// The connection dropped its end (the client went away, a write timed out).
    reader_gone: bool,
    /// The consumer's blocker, made on its first wait (on the coroutine that waits, as may
    /// requires).
    waiter: Option<Arc<Blocker>>,
}

struct Pipe {
    state: Mutex<State>,
    /// Signalled when the producer may go on: room was made, the reader went away, or the body
    /// was broken off.
    room: Condvar,
}

impl Pipe {
    fn break_off(&self) {
        let mut s = self.state.lock();
        s.end.get_or_insert(Ending::Broken);
        if let Some(w) = &s.waiter {
            w.unpark();
        }
        drop(s);
        self.room.notify_all();
    }
}

/// A bounded pipe for one streaming body.
fn pipe() -> (PipeWriter, PipeReader) {
    let state = State { chunks: VecDeque::new(), bytes: 0, end: None, reader_gone: false, waiter: None };
    let pipe = Arc::new(Pipe { state: Mutex::new(state), room: Condvar::new() });
    (PipeWriter { pipe: Arc::clone(&pipe), ended: false }, PipeReader { pipe })
}

/// Why the producer must stop.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    /// The connection dropped its end.
    ReaderGone,
    /// The body was broken off (the request was cancelled).
    BrokenOff,
}

/// The worker's end. Dropped without [`finish`](PipeWriter::finish), the body is broken off.
struct PipeWriter {
    pipe: Arc<Pipe>,
    ended: bool,
}

impl PipeWriter {
    /// Queues `chunk`, first waiting (this OS thread) while the pipe is full.
    fn send(&self, chunk: Vec<u8>) -> Result<(), Stopped> {
        let mut s = self.pipe.state.lock();
        loop {
            if s.reader_gone {
                return Err(Stopped::ReaderGone);
            }
            if s.end.is_some() {
                return Err(Stopped::BrokenOff);
            }
            if s.bytes < PIPE_BYTES && s.chunks.len() < PIPE_CHUNKS {
                break;
            }
            self.pipe.room.wait(&mut s);
        }
        s.bytes += chunk.capacity();
        s.chunks.push_back(chunk);
        if let Some(w) = &s.waiter {
            w.unpark();
        }
        Ok(())
    }

    /// The body is complete (unless it was broken off already).
    fn finish(mut self) {
        self.ended = true;
        let mut s = self.pipe.state.lock();
        s.end.get_or_insert(Ending::Finished);
        if let Some(w) = &s.waiter {
            w.unpark();
        }
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if !self.ended {
            self.pipe.break_off();
        }
    }
}

/// The connection's end.
struct PipeReader {
    pipe: Arc<Pipe>,
}

impl Chunks for PipeReader {
    fn next_chunks(&mut self, into: &mut Vec<Vec<u8>>) -> Next {
        loop {
            let waiter = {
                let mut s = self.pipe.state.lock();
                let end = match s.end {
                    Some(Ending::Finished) => Next::End,
                    Some(Ending::Broken) => Next::Broken,
                    None => Next::More,
                };
                if !s.chunks.is_empty() || end != Next::More {
                    into.extend(s.chunks.drain(..));
                    s.bytes = 0;
                    drop(s);
                    self.pipe.room.notify_one();
                    return end;
                }
                Arc::clone(s.waiter.get_or_insert_with(Blocker::current))
            };
            // A wake-up left from an earlier chunk returns at once; the loop looks again.
            if waiter.park(None).is_err() {
                // Only a cancelled coroutine fails to park (process exit).
                return Next::Broken;
            }
        }
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut s = self.pipe.state.lock();
        s.reader_gone = true;
        s.chunks.clear();
        s.bytes = 0;
        drop(s);
        self.pipe.room.notify_all();
    }
}

/// Why a body was not produced to its end.
enum Fault {
    /// The producer returned an error.
    Producer(BoxError),
    /// The producer panicked.
    Panicked(String),
    /// The producer did not give the length it announced.
    Length(LengthMismatch),
    /// The request was cancelled (deadline, stall, drain): the watchdog logs that.
    Cancelled,
    /// The connection went away.
    ReaderGone,
}

/// Runs on the worker after the handler of `job` returned `resp`. A body in memory is returned
/// as it is, for the pool to answer with. A streaming body's producer is taken out of it: for
/// a HEAD request or a bodiless status it is dropped unread (here, on the worker); otherwise
/// the head goes to the connection at once (through `Inflight::answer`) with the consuming end
/// of a pipe, and the body is produced into the pipe until it ends, breaks or the request is
/// cancelled. The response returned then has no body: the request was answered already, so
/// the pool's answer with it is a no-op (it still finishes the request with its status).
pub(crate) fn deliver(job: &Inflight, mut resp: Response, routes: &RouteTable) -> Response {
    let status = resp.status();
    let Some(taken) = resp.take_source() else { return resp };
    if job.req.method() == "HEAD" || is_bodiless(status) || job.state() != RequestState::Running {
        // Nothing to send (or the request was answered already): never read it.
        if let Ok(source) = taken {
            drop_producer(source);
        }
        return resp;
    }
    let source = match taken {
        Ok(source) => source,
        Err(spent) => {
            // Sent twice (a clone of it was sent before): the head goes out, the body cannot,
            // and the connection closes after the head.
            report(job, routes, Fault::Producer(spent.into()), 0);
            return resp;
        }
    };
    let (writer, reader) = pipe();
    resp.set_pipe(Box::new(reader));
    let len = resp.stream_len();
    if !job.answer(Reply::Send(resp, Source::Handler)) {
        // The watchdog answered first (a 504, or the client was found gone).
        drop_producer(source);
        return Response::new(status);
    }
    let cancel = Arc::clone(&writer.pipe);
    let armed = match job.token.on_cancel(Box::new(move || cancel.break_off())) {
        Registered::Armed(id) => Some(id),
        Registered::Fired(cb) => {
            cb();
            None
        }
    };
    let mut check = LengthCheck::new(len);
    let result = produce(job, source, &writer, &mut check);
    if let Some(id) = armed {
        job.token.disarm(id);
    }
    match result {
        Ok(()) => writer.finish(),
        Err(fault) => {
            drop(writer); // breaks the body off
            report(job, routes, fault, check.sent());
        }
    }
    Response::new(status)
}

/// Produces the body into the pipe until it ends (`Ok`) or must stop. The producer is dropped
/// here, on the worker, in every case.
fn produce(
    job: &Inflight,
    source: Box<dyn Produce>,
    writer: &PipeWriter,
    check: &mut LengthCheck,
) -> Result<(), Fault> {
    let mut source = DropOnWorker(Some(source));
    let source = source.0.as_mut().expect("set above");
    loop {
        if job.token.is_cancelled() {
            return Err(Fault::Cancelled);
        }
        let chunk = match catch_unwind(AssertUnwindSafe(|| source.next_chunk())) {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => return check.end().map_err(Fault::Length),
            Ok(Err(e)) => return Err(Fault::Producer(e)),
            Err(panic) => return Err(Fault::Panicked(panic_text(&*panic))),
        };
        if chunk.is_empty() {
            continue;
        }
        let (chunk, long) = match check.chunk(chunk) {
            Ok(c) => (c, None),
            Err((c, e)) => (c, Some(e)),
        };
        if !chunk.is_empty() {
            writer.send(chunk).map_err(|s| match s {
                Stopped::ReaderGone => Fault::ReaderGone,
                Stopped::BrokenOff => Fault::Cancelled,
            })?;
        }
        if let Some(e) = long {
            return Err(Fault::Length(e));
        }
        // A chunk handed over is progress (for routes with a stall timeout).
        job.last_progress_ns.fetch_max(clock::now_ns(), Relaxed);
    }
}

#[cold]
fn report(job: &Inflight, routes: &RouteTable, fault: Fault, sent: u64) {
    let route = routes.label(Some(job.route));
    let id = job.req.id();
    let why = match fault {
        Fault::Producer(e) => e.to_string(),
        Fault::Panicked(what) => format!("its producer panicked: {what}"),
        Fault::Length(e) => e.to_string(),
        Fault::Cancelled => {
            debug!(target: "vigil::stream", "response body of id={id} route={route} cut off after {sent} bytes: the request was cancelled");
            return;
        }
        Fault::ReaderGone => {
            debug!(target: "vigil::stream", "client of id={id} route={route} stopped reading its response body after {sent} bytes");
            return;
        }
    };
    error!(
        target: "vigil::stream",
        event = "body_error", id = id, route = route, sent = sent, cause = why.as_str();
        "response body of id={id} route={route} failed after {sent} bytes: {why}; connection closed (the client sees a truncated body)"
    );
}

/// Drops a producer (user code: its `Drop` may panic, which must not end the worker).
fn drop_producer(p: Box<dyn Produce>) {
    if catch_unwind(AssertUnwindSafe(move || drop(p))).is_err() {
        error!(target: "vigil::stream", "a streaming body's producer panicked while it was dropped");
    }
}

/// Holds a producer and drops it with [`drop_producer`] whichever way the scope ends.
struct DropOnWorker(Option<Box<dyn Produce>>);

impl Drop for DropOnWorker {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            drop_producer(p);
        }
    }
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::IterSource;
    use crate::runtime::testing::{Fixture, HOUR};
    use std::time::Duration;

    fn chunk(n: usize) -> Vec<u8> {
        vec![1; n]
    }

    #[test]
    fn a_full_pipe_holds_the_producer_until_the_reader_takes_a_chunk() {
        let (w, mut r) = pipe();
        let producer = std::thread::spawn(move || {
            for _ in 0..8 {
                w.send(chunk(64 * 1024)).unwrap();
            }
            w.finish();
        });
        // The producer stops at PIPE_BYTES.
        let full = || {
            let s = r.pipe.state.lock();
            s.bytes >= PIPE_BYTES
        };
        let t0 = std::time::Instant::now();
        while !full() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the pipe never filled");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(r.pipe.state.lock().bytes, PIPE_BYTES, "nothing beyond the bound while nobody reads");
        let mut got = Vec::new();
        loop {
            match r.next_chunks(&mut got) {
                Next::More => assert!(got.len() <= 8),
                Next::End => break,
                Next::Broken => panic!("broken"),
            }
        }
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 8 * 64 * 1024);
        producer.join().unwrap();
    }

    #[test]
    fn a_reader_that_goes_away_stops_a_waiting_producer() {
        let (w, r) = pipe();
        let producer = std::thread::spawn(move || loop {
            if let Err(e) = w.send(chunk(64 * 1024)) {
                return e;
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(r);
        assert_eq!(producer.join().unwrap(), Stopped::ReaderGone);
    }

    #[test]
    fn breaking_off_wakes_both_ends_and_a_dropped_writer_breaks_the_body() {
        let (w, mut r) = pipe();
        let shared = Arc::clone(&w.pipe);
        let producer = std::thread::spawn(move || loop {
            if let Err(e) = w.send(chunk(64 * 1024)) {
                return e;
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        shared.break_off();
        assert_eq!(producer.join().unwrap(), Stopped::BrokenOff);
        // The chunks queued before the break are still delivered, with the break.
        let mut chunks = Vec::new();
        assert_eq!(r.next_chunks(&mut chunks), Next::Broken);
        assert_eq!(chunks.len(), 4);
        assert_eq!(r.next_chunks(&mut chunks), Next::Broken);
        assert_eq!(chunks.len(), 4);

        let (w, mut r) = pipe();
        w.send(b"abc".to_vec()).unwrap();
        drop(w);
        let mut chunks = Vec::new();
        assert_eq!(r.next_chunks(&mut chunks), Next::Broken, "no finish, no complete body");
        assert_eq!(chunks, [b"abc".to_vec()]);
    }

    #[test]
    fn a_reader_waits_for_a_slow_producer() {
        let (w, mut r) = pipe();
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            w.send(b"late".to_vec()).unwrap();
            w.finish();
        });
        let mut chunks = Vec::new();
        let mut next = r.next_chunks(&mut chunks);
        if next == Next::More {
            next = r.next_chunks(&mut chunks);
        }
        assert_eq!((next, chunks), (Next::End, vec![b"late".to_vec()]));
        producer.join().unwrap();
    }

    #[test]
    fn produce_checks_the_length_and_catches_a_panicking_producer() {
        let mut f = Fixture::new(1, HOUR, HOUR);
        let (job, _) = f.job();
        let run = |source: Box<dyn Produce>, len: Option<u64>| {
            let (w, r) = pipe();
            let mut check = LengthCheck::new(len);
            let res = produce(&job, source, &w, &mut check);
            drop(r);
            res
        };
        let abc = || Box::new(IterSource(vec![Ok::<_, std::io::Error>("abc")].into_iter()));
        assert!(run(abc(), None).is_ok());
        assert!(run(abc(), Some(3)).is_ok());
        assert!(matches!(run(abc(), Some(4)), Err(Fault::Length(LengthMismatch::Short { sent: 3, len: 4 }))));
        assert!(matches!(run(abc(), Some(2)), Err(Fault::Length(LengthMismatch::Long { len: 2 }))));
        let panicking = Box::new(IterSource((0..3).map(|i| -> Result<Vec<u8>, std::io::Error> {
            assert!(i < 1, "producer bug");
            Ok(vec![1])
        })));
        assert!(matches!(run(panicking, None), Err(Fault::Panicked(m)) if m.contains("producer bug")));
        job.token.fire().run();
        assert!(matches!(run(abc(), None), Err(Fault::Cancelled)));
    }
}
