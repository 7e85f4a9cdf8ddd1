//! A response's body: bytes the response owns, or a stream of chunks produced by user code.
//!
//! A streaming body has two ends. The handler gives a [`Produce`]r (a reader or an iterator of
//! chunks, user code: it runs only on a worker thread); the connection gets a [`Chunks`]
//! receiver, the consuming end of a bounded pipe that the worker fills (`runtime::stream`).
//! This module only names the two ends; it moves no bytes between threads itself.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

use parking_lot::Mutex;

/// An error a body producer returned (or a panic in it, described).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much a reader is asked for at a time: one chunk of a streaming body.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What a response carries after its head.
pub(crate) enum Body {
    /// Bytes the response owns (or borrows for `'static`); written from this buffer as is.
    Bytes(Cow<'static, [u8]>),
    /// A streaming body (boxed: a response is moved around a lot and most do not stream).
    Stream(Box<Stream>),
}

/// A streaming body: its length if the handler gave one, and which end of it this is.
pub(crate) struct Stream {
    /// `Some(n)`: sent with `Content-Length: n`; `None`: chunked (close-delimited for HTTP/1.0).
    pub len: Option<u64>,
    pub end: StreamEnd,
}

/// Where a streaming body is on its way from the handler to the socket.
pub(crate) enum StreamEnd {
    /// As the handler returned it: user code, to be run (and dropped) on a worker thread only.
    Source(SharedSource),
    /// The connection's end: chunks the worker produced.
    Pipe(Box<dyn Chunks>),
    /// Nothing to send: a HEAD request, or a status without a body (its producer was dropped
    /// on the worker, unread).
    Unsent,
}

/// A producer, shared by a response and its clones: it can be run once, by whichever takes it
/// first (`Response` is `Clone` and `Sync`; a producer is neither).
#[derive(Clone)]
pub(crate) struct SharedSource(Arc<Mutex<Option<Box<dyn Produce>>>>);

/// A clone of the response took the producer already.
#[derive(Debug)]
pub(crate) struct Spent;

impl SharedSource {
    pub fn new(p: Box<dyn Produce>) -> Self {
        SharedSource(Arc::new(Mutex::new(Some(p))))
    }

    /// The producer, unless a clone of this response took it already.
    pub fn take(&self) -> Result<Box<dyn Produce>, Spent> {
        self.0.lock().take().ok_or(Spent)
    }
}

impl fmt::Display for Spent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the streaming body was sent already, by a clone of this response")
    }
}

impl std::error::Error for Spent {}

/// The producing end of a streaming body: user code (a reader's `read`, an iterator's `next`).
pub(crate) trait Produce: Send {
    /// The next chunk (empty chunks are skipped), `Ok(None)` at the end.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BoxError>;
}

/// The connection's end of a streaming body.
pub(crate) trait Chunks: Send + Sync {
    /// Waits (parking the calling coroutine, never its thread) until chunks are ready or the
    /// body has ended, then moves every ready chunk to the end of `into` (so many small chunks
    /// go out in one write) and says what follows them.
    fn next_chunks(&mut self, into: &mut Vec<Vec<u8>>) -> Next;
}

/// What follows the chunks [`Chunks::next_chunks`] gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// More chunks (wait for them with another call).
    More,
    /// Nothing: the body is complete.
    End,
    /// Nothing: the body cannot be completed (its producer failed or was cancelled; the worker
    /// logged why). The connection closes, so the client sees a truncated body.
    Broken,
}

/// A reader as a producer: up to [`READ_CHUNK`] bytes per chunk, each what one `read` returned.
pub(crate) struct ReadSource<R>(pub R);

impl<R: Read + Send> Produce for ReadSource<R> {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let mut buf = vec![0; READ_CHUNK];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    buf.truncate(n);
                    if n < READ_CHUNK / 4 {
                        // A short read (a pipe, a socket): do not hold 64 KiB for a few bytes
                        // while the chunk waits for the client.
                        buf.shrink_to_fit();
                    }
                    return Ok(Some(buf));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An iterator of fallible chunks as a producer.
pub(crate) struct IterSource<I>(pub I);

impl<I, B, E> Produce for IterSource<I>
where
    I: Iterator<Item = Result<B, E>> + Send,
    B: Into<Vec<u8>>,
    E: Into<BoxError>,
{
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        match self.0.next() {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b.into())),
            Some(Err(e)) => Err(e.into()),
        }
    }
}

/// Why a streaming body with a declared length did not match it.
#[derive(Debug)]
pub(crate) enum LengthMismatch {
    /// The producer ended after `sent` of the declared `len` bytes.
    Short { sent: u64, len: u64 },
    /// The producer gave more than the declared `len` bytes (the rest was not sent).
    Long { len: u64 },
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthMismatch::Short { sent, len } => {
                write!(f, "the body ended after {sent} of the {len} bytes its length announced")
            }
            LengthMismatch::Long { len } => write!(f, "the body is longer than the {len} bytes its length announced"),
        }
    }
}

impl std::error::Error for LengthMismatch {}

/// Counts what a producer gives against a declared length: trims a chunk that goes past it and
/// says when the body ended short or ran long.
#[derive(Debug)]
pub(crate) struct LengthCheck {
    len: Option<u64>,
    sent: u64,
}

impl LengthCheck {
    pub fn new(len: Option<u64>) -> Self {
        LengthCheck { len, sent: 0 }
    }

    /// Takes `chunk` into the count. `Err`: the chunk went past the length; the part that fits
    /// is what comes back in the error's place to be sent before the body is broken off.
    pub fn chunk(&mut self, mut chunk: Vec<u8>) -> Result<Vec<u8>, (Vec<u8>, LengthMismatch)> {
        if let Some(len) = self.len {
            let room = len - self.sent;
            if chunk.len() as u64 > room {
                chunk.truncate(room as usize);
                self.sent = len;
                return Err((chunk, LengthMismatch::Long { len }));
            }
        }
        self.sent += chunk.len() as u64;
        Ok(chunk)
    }

    /// The producer ended: fine unless a declared length was not reached.
    pub fn end(&self) -> Result<(), LengthMismatch> {
        match self.len {
            Some(len) if self.sent != len => Err(LengthMismatch::Short { sent: self.sent, len }),
            _ => Ok(()),
        }
    }

    /// Bytes counted so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// Reads a whole producer on the calling thread (for `Response::read_body`).
pub(crate) fn collect(mut source: Box<dyn Produce>, len: Option<u64>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut check = LengthCheck::new(len);
    while let Some(chunk) = source.next_chunk().map_err(io::Error::other)? {
        match check.chunk(chunk) {
            Ok(c) => out.extend_from_slice(&c),
            Err((_, e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
    check.end().map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))?;
    Ok(out)
}

impl fmt::Debug for dyn Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Chunks")
    }
}

impl Clone for Body {
    /// Bytes are cloned; a streaming body's producer is shared (only one of the clones can
    /// send it). A connection's end cannot be shared: its clone sends nothing.
    fn clone(&self) -> Self {
        match self {
            Body::Bytes(b) => Body::Bytes(b.clone()),
            Body::Stream(s) => Body::Stream(Box::new(Stream {
                len: s.len,
                end: match &s.end {
                    StreamEnd::Source(src) => StreamEnd::Source(src.clone()),
                    StreamEnd::Pipe(_) | StreamEnd::Unsent => StreamEnd::Unsent,
                },
            })),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::Stream(s) => {
                let end = match s.end {
                    StreamEnd::Source(_) => "source",
                    StreamEnd::Pipe(_) => "pipe",
                    StreamEnd::Unsent => "unsent",
                };
                write!(f, "Stream {{ len: {:?}, end: {end} }}", s.len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_check_trims_a_long_body_and_reports_a_short_one() {
        let mut c = LengthCheck::new(Some(5));
        assert_eq!(c.chunk(b"abc".to_vec()).unwrap(), b"abc");
        let (rest, e) = c.chunk(b"defg".to_vec()).unwrap_err();
        assert_eq!(rest, b"de");
        assert!(matches!(e, LengthMismatch::Long { len: 5 }));
        let mut short = LengthCheck::new(Some(5));
        short.chunk(b"abc".to_vec()).unwrap();
        assert!(matches!(short.end(), Err(LengthMismatch::Short { sent: 3, len: 5 })));
        let mut open = LengthCheck::new(None);
        open.chunk(vec![0; 100]).unwrap();
        assert!(open.end().is_ok());
        assert_eq!(open.sent(), 100);
    }

    #[test]
    fn a_reader_is_read_in_chunks_of_at_most_read_chunk() {
        let data = vec![7u8; READ_CHUNK * 2 + 10];
        let mut s = ReadSource(&data[..]);
        let sizes: Vec<usize> = std::iter::from_fn(|| s.next_chunk().unwrap()).map(|c| c.len()).collect();
        assert_eq!(sizes, [READ_CHUNK, READ_CHUNK, 10]);
    }

    #[test]
    fn collect_reads_a_producer_to_its_end_and_checks_its_length() {
        let chunks = || IterSource(vec![Ok::<_, io::Error>("ab"), Ok("cd")].into_iter());
        assert_eq!(collect(Box::new(chunks()), None).unwrap(), b"abcd");
        assert_eq!(collect(Box::new(chunks()), Some(4)).unwrap(), b"abcd");
        assert_eq!(collect(Box::new(chunks()), Some(5)).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(collect(Box::new(chunks()), Some(3)).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let failing = IterSource(vec![Ok("ab"), Err(io::Error::other("disk gone"))].into_iter());
        assert!(collect(Box::new(failing), None).unwrap_err().to_string().contains("disk gone"));
    }
}
