//! Everything platform-specific, behind `cfg`: probing a client socket, process memory.
//!
//! Signals need nothing here: `ctrlc` (with its `termination` feature) maps SIGINT/SIGTERM on
//! Unix and Ctrl-C, Ctrl-Break and console close on Windows to the same handler.

/// A way to ask whether the client of a connection has gone away, without reading its data.
pub(crate) struct PeerProbe {
    #[cfg(unix)]
    fd: std::os::unix::io::RawFd,
}

impl PeerProbe {
    /// A probe for `stream`'s socket; `None` where the platform has no cheap non-blocking peek.
    pub fn new(stream: &may::net::TcpStream) -> Option<PeerProbe> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            Some(PeerProbe { fd: stream.as_raw_fd() })
        }
        #[cfg(not(unix))]
        {
            // Windows: the socket belongs to an IOCP; a blocking-mode peek could stall the
            // watchdog, so disconnects are only noticed when the response is written.
            let _ = stream;
            None
        }
    }

    /// `true` when the peer has closed or reset the connection. Never blocks.
    ///
    /// On Linux a close is seen even behind bytes the server has not read yet (a pipelined
    /// request, a stray CRLF after a body): `poll` reports `POLLRDHUP` for the peer's FIN whatever
    /// is queued before it. Elsewhere a peek only sees the close once nothing is left unread.
    pub fn is_gone(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut p = libc::pollfd { fd: self.fd, events: libc::POLLRDHUP, revents: 0 };
            // SAFETY: poll on one valid pollfd with a zero timeout: it never blocks.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
        }
        #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
        {
            let mut b = [0u8; 1];
            // SAFETY: recv on a descriptor with a valid 1-byte buffer; MSG_PEEK leaves the data
            // in place and MSG_DONTWAIT makes it non-blocking whatever the descriptor's mode.
            let n = unsafe { libc::recv(self.fd, b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
            if n == 0 {
                return true;
            }
            if n < 0 {
                let e = std::io::Error::last_os_error().kind();
                return matches!(e, std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted);
            }
            false
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// Resident memory of this process in bytes, where the platform tells.
pub(crate) fn resident_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * page.max(0) as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
