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

// ---------------------------------------------------------------------------------------------
// Worker threads as the OS knows them: CPU time and scheduling priority
// ---------------------------------------------------------------------------------------------

/// How far an abandoned thread's CPU priority is lowered (`--abandoned-priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Demote {
    /// Linux `SCHED_IDLE` (runs only when nothing else wants the CPU, and any other thread that
    /// wakes up preempts it); Windows `THREAD_PRIORITY_IDLE`.
    Idle,
    /// Linux nice 19; Windows `THREAD_PRIORITY_LOWEST`.
    Lowest,
}

/// A thread's scheduling before it was demoted, to put back when it serves again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SavedPriority {
    #[cfg(target_os = "linux")]
    policy: libc::c_int,
    #[cfg(target_os = "linux")]
    nice: libc::c_int,
    #[cfg(windows)]
    priority: i32,
}

/// A thread of this process, named so that another thread can read its CPU time and change its
/// priority without its help (the thread may be stuck in user code). Created by the thread
/// itself ([`OsThread::current`]); usable from any thread.
///
/// Linux: the thread's id (`gettid`) and its CPU-time clock (`pthread_getcpuclockid`, a
/// number derived from the id, so it stays safe to use after the thread ends: the calls then
/// fail with `ESRCH`/`EINVAL`). Windows: a handle opened with the rights needed
/// (`THREAD_SET_INFORMATION | THREAD_QUERY_LIMITED_INFORMATION`), closed on drop; a handle keeps
/// naming its thread after it ends.
pub(crate) struct OsThread {
    #[cfg(target_os = "linux")]
    tid: libc::pid_t,
    #[cfg(target_os = "linux")]
    cpu_clock: libc::clockid_t,
    #[cfg(windows)]
    handle: windows_sys::Win32::Foundation::HANDLE,
}

// SAFETY: a Windows thread handle is a process-wide reference to a kernel object; any thread may
// use or close it (we close it once, on drop). The Linux fields are plain numbers.
#[cfg(windows)]
unsafe impl Send for OsThread {}
// SAFETY: as above; the calls made with the handle (priority, times) are thread-safe.
#[cfg(windows)]
unsafe impl Sync for OsThread {}

impl OsThread {
    /// The calling thread; `None` where the platform offers no way to name it (then abandoned
    /// threads are neither demoted nor their CPU time read).
    pub fn current() -> Option<OsThread> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let mut cpu_clock: libc::clockid_t = 0;
            // SAFETY: pthread_self() names the calling thread, which is alive for the call; the
            // out pointer is a live local.
            if unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut cpu_clock) } != 0 {
                return None;
            }
            Some(OsThread { tid, cpu_clock })
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Threading::{
                GetCurrentThreadId, OpenThread, THREAD_QUERY_LIMITED_INFORMATION, THREAD_SET_INFORMATION,
            };
            // SAFETY: no pointers; opens a new handle to the calling thread (closed on drop).
            let handle = unsafe {
                OpenThread(THREAD_SET_INFORMATION | THREAD_QUERY_LIMITED_INFORMATION, 0, GetCurrentThreadId())
            };
            (!handle.is_null()).then_some(OsThread { handle })
        }
        #[cfg(not(any(target_os = "linux", windows)))]
        {
            None
        }
    }

    /// CPU time (user + system) the thread has used, or `None` once it has ended (or where the
    /// platform does not tell). One quick syscall; never blocks.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        #[cfg(target_os = "linux")]
        {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a live local; the kernel validates the clock id (a thread that
            // ended gives EINVAL).
            if unsafe { libc::clock_gettime(self.cpu_clock, &mut ts) } != 0 {
                return None;
            }
            Some(std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::Foundation::FILETIME;
            use windows_sys::Win32::System::Threading::GetThreadTimes;
            let zero = || FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
            let (mut created, mut exited, mut kernel, mut user) = (zero(), zero(), zero(), zero());
            // SAFETY: four live locals; the handle is open (closed only on drop) and has
            // THREAD_QUERY_LIMITED_INFORMATION.
            let ok = unsafe { GetThreadTimes(self.handle, &mut created, &mut exited, &mut kernel, &mut user) };
            if ok == 0 {
                return None;
            }
            let ticks = |f: FILETIME| (u64::from(f.dwHighDateTime) << 32) | u64::from(f.dwLowDateTime);
            Some(std::time::Duration::from_nanos((ticks(kernel) + ticks(user)).saturating_mul(100)))
        }
        #[cfg(not(any(target_os = "linux", windows)))]
        {
            None
        }
    }

    /// Lowers the thread's priority; returns what it was, for [`restore`](OsThread::restore).
    /// Works on another thread of this process without its help: one quick syscall (two reads
    /// and a write), never blocks.
    pub fn demote(&self, how: Demote) -> std::io::Result<SavedPriority> {
        #[cfg(target_os = "linux")]
        {
            let saved = self.priority()?;
            let ok = match how {
                Demote::Idle => {
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: `param` is a live local; the kernel checks the tid (same process:
                    // permitted for any user) and the policy.
                    unsafe { libc::sched_setscheduler(self.tid, libc::SCHED_IDLE, &param) == 0 }
                }
                // SAFETY: no pointers; on Linux PRIO_PROCESS with a tid changes that thread only.
                Demote::Lowest => unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid as libc::id_t, 19) == 0 },
            };
            if ok {
                Ok(saved)
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Threading::{
                GetThreadPriority, SetThreadPriority, THREAD_PRIORITY_IDLE, THREAD_PRIORITY_LOWEST,
            };
            /// `GetThreadPriority`'s error value (`THREAD_PRIORITY_ERROR_RETURN`, MAXLONG).
            const ERROR_RETURN: i32 = i32::MAX;
            // SAFETY: the handle is open and has THREAD_QUERY_LIMITED_INFORMATION.
            let priority = unsafe { GetThreadPriority(self.handle) };
            if priority == ERROR_RETURN {
                return Err(std::io::Error::last_os_error());
            }
            let to = match how {
                Demote::Idle => THREAD_PRIORITY_IDLE,
                Demote::Lowest => THREAD_PRIORITY_LOWEST,
            };
            // SAFETY: the handle is open and has THREAD_SET_INFORMATION.
            if unsafe { SetThreadPriority(self.handle, to) } == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(SavedPriority { priority })
        }
        #[cfg(not(any(target_os = "linux", windows)))]
        {
            let _ = how;
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    /// Puts back the priority [`demote`](OsThread::demote) saved. On Linux an unprivileged
    /// process may not raise a thread's priority again (leaving `SCHED_IDLE` or lowering nice
    /// needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it): then this fails with `EPERM`.
    pub fn restore(&self, saved: SavedPriority) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            // Policy first: nice applies to SCHED_OTHER and SCHED_BATCH only.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a live local; the kernel checks tid, policy and permission.
            // (Real-time policies are never saved: their threads are not demoted to begin with.)
            if unsafe { libc::sched_setscheduler(self.tid, saved.policy, &param) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: no pointers; changes this thread's nice value only.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, self.tid as libc::id_t, saved.nice) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Threading::SetThreadPriority;
            // SAFETY: the handle is open and has THREAD_SET_INFORMATION.
            if unsafe { SetThreadPriority(self.handle, saved.priority) } == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
        #[cfg(not(any(target_os = "linux", windows)))]
        {
            let _ = saved;
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    /// Linux: the thread's scheduling policy and nice value (`/proc`-free: two syscalls).
    #[cfg(target_os = "linux")]
    fn priority(&self) -> std::io::Result<SavedPriority> {
        // SAFETY: no pointers; the kernel checks the tid.
        let policy = unsafe { libc::sched_getscheduler(self.tid) };
        if policy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH && policy != libc::SCHED_IDLE {
            // A real-time thread (someone chose that on purpose): leave it alone.
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "real-time scheduling policy"));
        }
        // getpriority may return -1 legitimately: errno tells.
        // SAFETY: writes the calling thread's errno, a thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: no pointers; PRIO_PROCESS with a tid reads that thread's nice value.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, self.tid as libc::id_t) };
        let err = std::io::Error::last_os_error();
        if nice == -1 && err.raw_os_error().is_some_and(|e| e != 0) {
            return Err(err);
        }
        Ok(SavedPriority { policy, nice })
    }

    /// The thread's id as the OS shows it (Linux: the tid in /proc/PID/task).
    #[cfg(all(test, target_os = "linux"))]
    pub fn tid(&self) -> i32 {
        self.tid
    }
}

// ---------------------------------------------------------------------------------------------
// A CPU budget for abandoned threads (Linux)
// ---------------------------------------------------------------------------------------------

/// How much thread CPU time an abandoned thread may run between two pauses.
#[cfg(target_os = "linux")]
const SLICE_NS: u64 = 10_000_000;
/// The longest pause (so that a thread under a tiny budget among very many still moves).
#[cfg(target_os = "linux")]
const MAX_PAUSE_NS: u64 = 10_000_000_000;
/// The share of one CPU, in millionths, that every throttled thread of the process may use
/// together (0: no throttling).
#[cfg(target_os = "linux")]
static BUDGET_PPM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Throttled threads in the process.
#[cfg(target_os = "linux")]
static THROTTLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(target_os = "linux")]
thread_local! {
    /// Set by a throttled thread while it turns its throttle off, so that a pause signal still
    /// pending then does not pause it.
    static RELEASING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The signal that pauses a throttled thread: `SIGRTMAX - 1` (an application that uses it
/// itself turns the budget off: `--abandoned-cpu off`).
#[cfg(target_os = "linux")]
pub(crate) fn throttle_signal() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// Linux: caps the CPU that throttled threads (abandoned ones that keep running) use together
/// at `share` of one CPU, process-wide. Each throttled thread gets a timer on its own CPU
/// clock: every [`SLICE_NS`] of CPU it burns, a signal makes it sleep, inside the signal
/// handler, for as long as its part of the budget requires (10 ms of CPU, then, for 16 threads
/// sharing 0.1 CPU, 1.59 s asleep). A thread blocked in a syscall burns no CPU and is never
/// signalled. Installs the handler once per process; `None` changes nothing (a server without
/// a budget throttles no thread), and with several budgets in one process the latest applies.
pub(crate) fn set_cpu_budget(share: Option<f64>) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::Ordering::Relaxed;
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        let Some(share) = share else { return Ok(()) };
        let ppm = (share * 1e6).clamp(1.0, 1e12) as u64;
        let mut result = Ok(());
        INSTALLED.call_once(|| {
            // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler is a
            // plain extern "C" function that only touches atomics, a const-initialised
            // thread-local, errno and nanosleep (async-signal-safe).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_cpu_slice as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(throttle_signal(), &sa, std::ptr::null_mut()) != 0 {
                    result = Err(std::io::Error::last_os_error());
                }
            }
        });
        BUDGET_PPM.store(ppm, Relaxed);
        result
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = share;
        Ok(())
    }
}

/// The throttle's signal handler: runs on the throttled thread, between two of its
/// instructions, and sleeps.
#[cfg(target_os = "linux")]
extern "C" fn on_cpu_slice(_signal: libc::c_int) {
    use std::sync::atomic::Ordering::Relaxed;
    if RELEASING.with(|r| r.get()) {
        return;
    }
    let ppm = BUDGET_PPM.load(Relaxed);
    if ppm == 0 {
        return;
    }
    let n = THROTTLED.load(Relaxed).max(1);
    // This thread's share is ppm / 1e6 / n: run SLICE, sleep SLICE × (1 / share − 1).
    let pause = (u128::from(SLICE_NS) * u128::from(n) * 1_000_000 / u128::from(ppm))
        .saturating_sub(u128::from(SLICE_NS))
        .min(u128::from(MAX_PAUSE_NS)) as u64;
    // SAFETY: errno is this thread's; the interrupted code may be about to read it.
    let saved_errno = unsafe { *libc::__errno_location() };
    let mut want = libc::timespec { tv_sec: (pause / 1_000_000_000) as _, tv_nsec: (pause % 1_000_000_000) as _ };
    let mut left = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: two live locals; nanosleep is async-signal-safe. Interrupted (EINTR): sleep on
    // for what is left.
    while unsafe { libc::nanosleep(&want, &mut left) } != 0 {
        // SAFETY: as above.
        if unsafe { *libc::__errno_location() } != libc::EINTR {
            break;
        }
        want = left;
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// A thread kept to its part of the CPU budget (see [`set_cpu_budget`]) while this lives.
/// Dropped by the throttled thread itself, once it no longer runs abandoned code.
pub(crate) struct CpuThrottle {
    #[cfg(target_os = "linux")]
    timer: libc::timer_t,
}

// SAFETY: a POSIX timer id is a process-wide handle; any thread may delete it (once: on drop).
#[cfg(target_os = "linux")]
unsafe impl Send for CpuThrottle {}
// SAFETY: as above; nothing is done through a shared reference.
#[cfg(target_os = "linux")]
unsafe impl Sync for CpuThrottle {}

impl OsThread {
    /// Puts the thread under the CPU budget (Linux, when one is set): a timer on its CPU clock
    /// that signals it every slice of CPU it burns. One quick syscall pair; never blocks.
    pub fn throttle(&self) -> std::io::Result<CpuThrottle> {
        #[cfg(target_os = "linux")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            if BUDGET_PPM.load(Relaxed) == 0 {
                return Err(std::io::ErrorKind::Unsupported.into());
            }
            // SAFETY: a zeroed sigevent is valid; the fields set name this thread (same
            // process) and the throttle's signal.
            let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = throttle_signal();
            ev.sigev_notify_thread_id = self.tid;
            let mut timer: libc::timer_t = std::ptr::null_mut();
            // SAFETY: `ev` and `timer` are live locals; the clock is this thread's CPU clock.
            if unsafe { libc::timer_create(self.cpu_clock, &mut ev, &mut timer) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let slice = libc::timespec { tv_sec: 0, tv_nsec: SLICE_NS as _ };
            let spec = libc::itimerspec { it_interval: slice, it_value: slice };
            // SAFETY: `timer` was just created; `spec` is a live local.
            if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: deletes the timer created above, once.
                unsafe { libc::timer_delete(timer) };
                return Err(e);
            }
            THROTTLED.fetch_add(1, Relaxed);
            Ok(CpuThrottle { timer })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }
}

impl Drop for CpuThrottle {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            // Called on the throttled thread: a pause signal still pending is delivered as
            // timer_delete returns, and must not pause it.
            RELEASING.with(|r| r.set(true));
            // SAFETY: the timer was created by `throttle` and is deleted once, here.
            unsafe { libc::timer_delete(self.timer) };
            RELEASING.with(|r| r.set(false));
            THROTTLED.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(windows)]
impl Drop for OsThread {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by `current` and is closed exactly once, here.
        unsafe { windows_sys::Win32::Foundation::CloseHandle(self.handle) };
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting for a few sockets at once (the admin listener's loop)
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
type PollFd = libc::pollfd;
#[cfg(windows)]
type PollFd = windows_sys::Win32::Networking::WinSock::WSAPOLLFD;

/// A set of sockets to wait on with `poll` (`WSAPoll` on Windows): made for a few dozen
/// sockets (the admin listener caps its connections), rebuilt before each wait.
#[derive(Default)]
pub(crate) struct PollSet {
    fds: Vec<PollFd>,
}

impl PollSet {
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Adds a socket: waits for it to be readable, or writable when `write`. Returns its index.
    pub fn push(&mut self, socket: &impl PollSocket, write: bool) -> usize {
        #[cfg(unix)]
        let fd =
            libc::pollfd { fd: socket.raw(), events: if write { libc::POLLOUT } else { libc::POLLIN }, revents: 0 };
        #[cfg(windows)]
        let fd = {
            use windows_sys::Win32::Networking::WinSock::{POLLRDNORM, POLLWRNORM, WSAPOLLFD};
            WSAPOLLFD { fd: socket.raw(), events: if write { POLLWRNORM } else { POLLRDNORM }, revents: 0 }
        };
        self.fds.push(fd);
        self.fds.len() - 1
    }

    /// Waits until a socket is ready or `timeout` passes; returns how many are ready.
    pub fn wait(&mut self, timeout: std::time::Duration) -> std::io::Result<usize> {
        let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
        #[cfg(unix)]
        {
            // SAFETY: `fds` is a live, initialised slice of pollfd of the length passed.
            let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return if e.kind() == std::io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
            }
            Ok(n as usize)
        }
        #[cfg(windows)]
        {
            use windows_sys::Win32::Networking::WinSock::WSAPoll;
            if self.fds.is_empty() {
                std::thread::sleep(timeout);
                return Ok(0);
            }
            // SAFETY: `fds` is a live, initialised slice of WSAPOLLFD of the length passed.
            let n = unsafe { WSAPoll(self.fds.as_mut_ptr(), self.fds.len() as u32, ms) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }

    /// Whether socket `i` is ready: readable or writable as asked, or hung up or in error (the
    /// next read or write says which).
    pub fn ready(&self, i: usize) -> bool {
        self.fds.get(i).is_some_and(|f| f.revents != 0)
    }
}

/// A socket a [`PollSet`] can wait on.
pub(crate) trait PollSocket {
    #[cfg(unix)]
    fn raw(&self) -> std::os::unix::io::RawFd;
    #[cfg(windows)]
    fn raw(&self) -> windows_sys::Win32::Networking::WinSock::SOCKET;
}

macro_rules! poll_socket {
    ($t:ty) => {
        impl PollSocket for $t {
            #[cfg(unix)]
            fn raw(&self) -> std::os::unix::io::RawFd {
                std::os::unix::io::AsRawFd::as_raw_fd(self)
            }
            #[cfg(windows)]
            fn raw(&self) -> windows_sys::Win32::Networking::WinSock::SOCKET {
                std::os::windows::io::AsRawSocket::as_raw_socket(self)
                    as windows_sys::Win32::Networking::WinSock::SOCKET
            }
        }
    };
}
poll_socket!(std::net::TcpStream);
poll_socket!(std::net::TcpListener);

#[cfg(all(test, target_os = "linux"))]
mod thread_tests {
    use super::*;

    /// Reads field `n` (1-based, as in proc(5)) of /proc/self/task/TID/stat.
    fn stat_field(tid: i32, n: usize) -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn another_thread_can_read_a_threads_cpu_time_and_demote_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::spawn(move || {
            tx.send(OsThread::current().unwrap()).unwrap();
            let mut x = 0u64;
            while stop_rx.try_recv().is_err() {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let t = rx.recv().unwrap();
        let before = t.cpu_time().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(t.cpu_time().unwrap() > before, "a spinning thread's CPU time grows");
        let saved = t.demote(Demote::Lowest).unwrap();
        assert_eq!(stat_field(t.tid(), 19), 19, "nice 19");
        t.demote(Demote::Idle).unwrap();
        assert_eq!(stat_field(t.tid(), 41), i64::from(libc::SCHED_IDLE), "policy SCHED_IDLE");
        // Tests run as root here (CI too): putting the priority back is allowed.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            t.restore(saved).unwrap();
            assert_eq!((stat_field(t.tid(), 41), stat_field(t.tid(), 19)), (0, 0));
        }
        stop_tx.send(()).unwrap();
        spinner.join().unwrap();
        assert!(t.cpu_time().is_none(), "the clock of an ended thread is gone");
    }

    #[test]
    fn a_throttled_spinning_thread_keeps_to_its_cpu_budget_and_is_free_once_released() {
        set_cpu_budget(Some(0.05)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Option<CpuThrottle>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::spawn(move || {
            tx.send(OsThread::current().unwrap()).unwrap();
            let mut x = 0u64;
            loop {
                // The throttle is dropped on the thread itself, as a worker does.
                if let Ok(th) = cmd_rx.try_recv() {
                    drop(th);
                }
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let t = rx.recv().unwrap();
        let throttle = t.throttle().unwrap();
        let (c0, w0) = (t.cpu_time().unwrap(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let (burnt, wall) = (t.cpu_time().unwrap() - c0, w0.elapsed());
        // 5 % of a CPU, plus a slice or two of slack.
        assert!(burnt.as_secs_f64() <= 0.05 * wall.as_secs_f64() + 0.03, "{burnt:?} in {wall:?}");
        cmd_tx.send(Some(throttle)).unwrap();
        // Released: it may pause once more (a slice it was in), then runs freely.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        let c1 = t.cpu_time().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(t.cpu_time().unwrap() - c1 > std::time::Duration::from_millis(30), "it runs again");
        stop_tx.send(()).unwrap();
        spinner.join().unwrap();
    }
}
