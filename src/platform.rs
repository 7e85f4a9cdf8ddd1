//! Everything platform-specific, behind `cfg`: probing a client socket, process memory, and the
//! Windows console events that need more than `ctrlc` gives.
//!
//! Signals: `ctrlc` (with its `termination` feature) maps SIGINT/SIGTERM/SIGHUP on Unix and
//! Ctrl-C, Ctrl-Break, console close, logoff and shutdown on Windows to the one handler
//! `Server::serve` installs. Windows needs one correction on top, [`drain_on_console_close`]: it
//! ends the process as soon as a handler returns from a close or shutdown event, and it sends
//! logoff events to console programs running as services whenever any user logs off.

/// A way to ask whether the client of a connection has gone away, without reading its data.
///
/// It holds the socket's raw descriptor, not the socket: the connection owns and closes the
/// socket, and the probe lives in the request's record, which can outlive the connection (the
/// watchdog follows a cancelled request until its handler returns). The watchdog probes only
/// running requests that have not been answered; until its request is answered a connection
/// is parked waiting for that answer, so the socket is open. Between that check and the probe
/// the answer may arrive, the connection may close the socket, and the descriptor number may
/// even be reused by a new connection: the probe then gets `EBADF`/`POLLNVAL`, or reports
/// another socket's state. Neither can harm anything: no call here reads or consumes data, and
/// the watchdog ignores a positive probe for a request that was answered meanwhile.
pub(crate) struct PeerProbe {
    #[cfg(unix)]
    fd: std::os::unix::io::RawFd,
    #[cfg(windows)]
    socket: windows_sys::Win32::Networking::WinSock::SOCKET,
}

impl PeerProbe {
    /// A probe for `stream`'s socket; `None` where the platform has no cheap non-blocking peek.
    pub fn new(stream: &may::net::TcpStream) -> Option<PeerProbe> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            Some(PeerProbe { fd: stream.as_raw_fd() })
        }
        #[cfg(windows)]
        {
            use std::os::windows::io::AsRawSocket;
            Some(PeerProbe { socket: stream.as_raw_socket() as windows_sys::Win32::Networking::WinSock::SOCKET })
        }
        #[cfg(not(any(unix, windows)))]
        {
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
            // SAFETY: poll reads and writes only `p`, a live local, for the length 1 we pass;
            // the kernel validates the descriptor itself (a closed one comes back as POLLNVAL,
            // which is not reported as gone; a reused one: see the type's docs), nothing is
            // read from the socket, and the zero timeout means the call never blocks.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
        }
        #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
        {
            let mut b = [0u8; 1];
            // SAFETY: recv writes at most 1 byte into `b`, a live local of that size; the kernel
            // validates the descriptor (closed: EBADF, not a socket: ENOTSOCK, both reported as
            // not gone; reused: see the type's docs); MSG_PEEK leaves any data in place and
            // MSG_DONTWAIT keeps it non-blocking whatever the descriptor's mode.
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
        #[cfg(windows)]
        {
            use windows_sys::Win32::Networking::WinSock::{
                recv, select, WSAGetLastError, FD_SET, MSG_PEEK, TIMEVAL, WSAECONNABORTED, WSAECONNRESET, WSAENETRESET,
            };
            // Winsock has no MSG_DONTWAIT. `may` does put its sockets in non-blocking mode
            // (FIONBIO) before handing them to the IOCP, but a zero-timeout select() first keeps
            // this non-blocking whatever the mode: a socket is readable only when data, the
            // peer's FIN or a reset is waiting, and then the peek returns at once. Neither call
            // touches the IOCP association or an overlapped operation of the connection (which
            // is waiting for its response, not reading, while this probe is used).
            let mut set = FD_SET { fd_count: 1, fd_array: [0; 64] };
            set.fd_array[0] = self.socket;
            let zero = TIMEVAL { tv_sec: 0, tv_usec: 0 };
            // SAFETY: `set` and `zero` are live locals select only reads and writes for the call;
            // Winsock validates the socket (a closed one is an error, reported as not gone;
            // reused: see the type's docs); nfds is ignored by Winsock.
            let ready = unsafe { select(0, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), &zero) };
            if ready != 1 {
                return false; // 0: nothing pending, the peer is still there; SOCKET_ERROR: can't tell
            }
            let mut b = [0u8; 1];
            // SAFETY: recv writes at most 1 byte into `b`, a live local of that size; MSG_PEEK
            // leaves the data in place, and select() just said it will not block.
            let n = unsafe { recv(self.socket, b.as_mut_ptr(), 1, MSG_PEEK) };
            if n == 0 {
                return true;
            }
            if n < 0 {
                // SAFETY: no preconditions.
                let e = unsafe { WSAGetLastError() };
                return matches!(e, WSAECONNRESET | WSAECONNABORTED | WSAENETRESET);
            }
            false
        }
        #[cfg(not(any(unix, windows)))]
        {
            false
        }
    }
}

impl PeerProbe {
    /// Shuts the socket's read side, so that a coroutine parked reading it wakes up with
    /// end-of-file: how a drain closes idle keep-alive connections. The connection's coroutine
    /// still owns and closes the socket. The caller guarantees the descriptor is still the
    /// connection's (the drain holds the registry lock the connection must take before it
    /// closes its socket). Windows: nothing (an idle connection closes at its keep-alive
    /// timeout or when the process exits).
    pub fn shutdown_read(&self) {
        #[cfg(unix)]
        {
            // SAFETY: shutdown takes no pointers; the descriptor is open (see above), and
            // SHUT_RD only stops further receives on it.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RD) };
        }
    }
}

/// Resident memory of this process in bytes (the working set on Windows), where the platform tells.
pub(crate) fn resident_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * page.max(0) as u64)
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
        use windows_sys::Win32::System::Threading::GetCurrentProcess;
        let mut c =
            PROCESS_MEMORY_COUNTERS { cb: std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32, ..Default::default() };
        // SAFETY: the pseudo-handle of this process and a counters struct whose `cb` is its size.
        let ok = unsafe { K32GetProcessMemoryInfo(GetCurrentProcess(), &mut c, c.cb) };
        (ok != 0).then_some(c.WorkingSetSize as u64)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        None
    }
}

/// Windows: makes console close and system shutdown drain instead of killing the process, and
/// keeps a user's logoff from stopping a server that runs as a service. Elsewhere: nothing to do
/// (`ctrlc` already maps SIGTERM and SIGHUP to the drain).
///
/// `start_drain` must begin the drain and return (it is idempotent, like
/// `ShutdownTrigger::shutdown`). Call this after `ctrlc::set_handler`: Windows calls console
/// handlers last-registered first, so this one sees each event before `ctrlc`'s does.
///
/// - Close and shutdown: Windows ends the process as soon as a handler returns (and anyway when
///   its own limit passes: about 5 s after a console close), and `ctrlc`'s handler returns at
///   once. This handler starts the drain and then never returns, so the process lives until the
///   drain is over and `serve` returns, or until Windows' limit.
/// - Logoff: only services and console programs a service started still exist to receive it, and
///   it says nothing about which user; Windows itself lets such programs run on, unless a handler
///   (like `ctrlc`'s) ends them. It is swallowed here so the server keeps serving.
/// - Ctrl-C and Ctrl-Break: passed on to `ctrlc`'s handler (the drain, then a second one exits).
///   Ctrl-C is also re-enabled, in case the process was started in a new process group (which
///   starts with Ctrl-C ignored).
pub(crate) fn drain_on_console_close(start_drain: impl Fn() + Send + Sync + 'static) -> std::io::Result<()> {
    #[cfg(windows)]
    {
        windows_console::install(Box::new(start_drain))
    }
    #[cfg(not(windows))]
    {
        let _ = start_drain;
        Ok(())
    }
}

#[cfg(windows)]
mod windows_console {
    use std::sync::OnceLock;

    use windows_sys::core::BOOL;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT,
    };

    type Drain = Box<dyn Fn() + Send + Sync>;
    static DRAIN: OnceLock<Drain> = OnceLock::new();

    pub(super) fn install(start_drain: Drain) -> std::io::Result<()> {
        if DRAIN.set(start_drain).is_err() {
            return Err(std::io::Error::other("the console close handler is already installed"));
        }
        // SAFETY: registers a plain `extern "system"` function that lives for the whole process.
        if unsafe { SetConsoleCtrlHandler(Some(on_event), 1) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A program started in a new process group (CREATE_NEW_PROCESS_GROUP) begins with
        // Ctrl-C ignored; a server asked to stop with Ctrl-C should drain however it was started.
        // SAFETY: no pointers; clears this process's ignore-Ctrl-C flag.
        unsafe { SetConsoleCtrlHandler(None, 0) };
        Ok(())
    }

    /// Runs on a thread Windows creates for the event; returning TRUE stops the handler chain.
    unsafe extern "system" fn on_event(event: u32) -> BOOL {
        match event {
            CTRL_CLOSE_EVENT | CTRL_SHUTDOWN_EVENT => {
                let what = if event == CTRL_CLOSE_EVENT { "console closed" } else { "system shutting down" };
                log::info!("{what}: draining (Windows ends the process when its own time limit passes)");
                if let Some(start_drain) = DRAIN.get() {
                    start_drain();
                }
                // Returning would let Windows end the process now; the process exits when the
                // drain completes and `serve` returns.
                loop {
                    std::thread::park();
                }
            }
            CTRL_LOGOFF_EVENT => {
                log::info!("a user logged off: ignored (not a reason to stop serving)");
                1
            }
            _ => 0,
        }
    }
}
