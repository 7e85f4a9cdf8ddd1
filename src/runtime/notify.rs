//! A small `sd_notify` client: tells the service manager (systemd's `Type=notify`, or anything
//! speaking its protocol) that vigil is ready, stopping, how it is doing, and that its watchdog
//! is alive.
//!
//! The protocol is one datagram per message, `KEY=value` lines, sent to the Unix socket named
//! by `NOTIFY_SOCKET`: a path, or `@name` for a Linux abstract socket. The watchdog's own thread
//! sends `WATCHDOG=1`, and that thread must never block, so the socket is non-blocking: when
//! the manager's queue is full a message is dropped (`WouldBlock`) instead of waited for; the
//! next ping comes half a watchdog interval later anyway.
//!
//! Why not the `sd-notify` crate: its `notify` opens a fresh blocking socket for every message,
//! and a blocking send is what the watchdog thread cannot afford. What is needed here is a
//! dozen lines over `std::os::unix::net::UnixDatagram`.
//!
//! On Windows there is no such protocol: [`Notifier::from_env`] finds nothing.
//!
//! Who sends what: the server sends `READY=1` once it serves and `STOPPING=1` when its drain
//! begins; the watchdog thread sends `WATCHDOG=1` at half the manager's `WATCHDOG_USEC` (so a
//! watchdog that stops ticking gets the process restarted) and a `STATUS=` line every
//! [`STATUS_EVERY`] with the requests in flight and the abandoned threads ([`Supervisor`]).

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How often the watchdog thread sends a `STATUS=` line.
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(2);

/// The service manager the watchdog thread reports to, and how often.
#[derive(Clone, Debug)]
pub(crate) struct Supervisor {
    pub notifier: Arc<Notifier>,
    /// `WATCHDOG=1` every this long (half of `WATCHDOG_USEC`); `None`: no watchdog asked for.
    pub ping_every: Option<Duration>,
    /// `STATUS=` every this long.
    pub status_every: Duration,
}

impl Supervisor {
    /// The manager named by `NOTIFY_SOCKET`, with the watchdog interval of `WATCHDOG_USEC` /
    /// `WATCHDOG_PID`; `None` without `NOTIFY_SOCKET`. A value that cannot be used is an error
    /// (the manager would wait in vain for `READY=1`, or kill a healthy process).
    pub(crate) fn from_env() -> io::Result<Option<Supervisor>> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let Some(notifier) = Notifier::from_env()? else { return Ok(None) };
        let interval = watchdog_interval_from_env().map_err(invalid)?;
        Ok(Some(Supervisor {
            notifier: Arc::new(notifier),
            ping_every: interval.map(|i| i / 2),
            status_every: STATUS_EVERY,
        }))
    }
}

/// A message to the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// `READY=1`: startup is over, the sockets are served.
    Ready,
    /// `STOPPING=1`: the drain has begun.
    Stopping,
    /// `STATUS=…`: one line of free text that `systemctl status` shows.
    Status(String),
    /// `WATCHDOG=1`: still alive.
    Watchdog,
}

impl Message {
    /// The datagram: `READY=1`, `STATUS=text` (a newline in the text would start another
    /// assignment, so newlines become spaces).
    pub(crate) fn encode(&self) -> Cow<'static, str> {
        match self {
            Message::Ready => "READY=1".into(),
            Message::Stopping => "STOPPING=1".into(),
            Message::Status(text) => format!("STATUS={}", text.replace(['\n', '\r'], " ")).into(),
            Message::Watchdog => "WATCHDOG=1".into(),
        }
    }
}

/// Where notifications go: the manager's socket, and a non-blocking socket to send from.
#[derive(Debug)]
pub(crate) struct Notifier {
    #[cfg(unix)]
    socket: std::os::unix::net::UnixDatagram,
    #[cfg(unix)]
    to: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or `None` when it is unset or empty (no manager is
    /// listening). An address that cannot be used is an error.
    pub(crate) fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(addr) if !addr.is_empty() => Notifier::to(&addr).map(Some),
            _ => Ok(None),
        }
    }

    /// The notifier for the socket at `addr` (`NOTIFY_SOCKET`'s syntax: a path, or `@name` for
    /// an abstract socket on Linux).
    #[cfg(unix)]
    pub(crate) fn to(addr: &std::ffi::OsStr) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};

        let bytes = addr.as_bytes();
        let to = match bytes.split_first() {
            Some((b'@', name)) => abstract_addr(name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(addr)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={addr:?}: expected an absolute path or @name (vsock: is not supported)"),
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, to })
    }

    #[cfg(not(unix))]
    pub(crate) fn to(addr: &std::ffi::OsStr) -> io::Result<Notifier> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("NOTIFY_SOCKET={addr:?}: no sd_notify on this platform"),
        ))
    }

    /// Sends `message` without ever blocking: when the manager is not reading, the message is
    /// dropped and the error is `WouldBlock`.
    pub(crate) fn send(&self, message: &Message) -> io::Result<()> {
        #[cfg(unix)]
        {
            let datagram = message.encode();
            let sent = self.socket.send_to_addr(datagram.as_bytes(), &self.to)?;
            if sent != datagram.len() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"));
            }
            Ok(())
        }
        #[cfg(not(unix))]
        {
            let _ = message;
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn abstract_addr(_: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets (NOTIFY_SOCKET=@…) exist only on Linux"))
}

/// The watchdog interval the manager asks for: `WATCHDOG_USEC` microseconds, when
/// `WATCHDOG_PID` is unset or names this process (`pid`). `None` when there is no watchdog;
/// an error for a value that is not a positive number. Pings should go out at half of it.
pub(crate) fn watchdog_interval(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else { return Ok(None) };
    if let Some(target) = watchdog_pid.filter(|p| !p.is_empty()) {
        let target: u32 = target.trim().parse().map_err(|_| format!("WATCHDOG_PID={target:?} is not a process id"))?;
        if target != pid {
            return Ok(None);
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("WATCHDOG_USEC={usec:?} is not a positive number of microseconds")),
        Ok(n) => Ok(Some(Duration::from_micros(n))),
    }
}

/// [`watchdog_interval`] from this process's environment.
pub(crate) fn watchdog_interval_from_env() -> Result<Option<Duration>, String> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    /// A test-owned NOTIFY_SOCKET: a datagram socket at a fresh path, removed on drop.
    struct Manager {
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl Manager {
        fn new() -> Manager {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!("vigil-notify-{}-{}.sock", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Manager { socket, path }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a notification");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn each_message_arrives_as_one_datagram() {
        let manager = Manager::new();
        let notifier = Notifier::to(manager.path.as_os_str()).unwrap();
        for (message, want) in [
            (Message::Ready, "READY=1"),
            (Message::Status("in flight: 3, abandoned: 0".into()), "STATUS=in flight: 3, abandoned: 0"),
            (Message::Watchdog, "WATCHDOG=1"),
            (Message::Stopping, "STOPPING=1"),
        ] {
            notifier.send(&message).unwrap();
            assert_eq!(manager.recv(), want);
        }
    }

    #[test]
    fn status_text_stays_one_assignment() {
        assert_eq!(Message::Status("a\nREADY=1\r\nb".into()).encode(), "STATUS=a READY=1  b");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_addresses_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vigil-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let notifier = Notifier::to(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        notifier.send(&Message::Ready).unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_manager_that_does_not_read_never_blocks_the_sender() {
        let manager = Manager::new();
        let notifier = Notifier::to(manager.path.as_os_str()).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        let err = loop {
            match notifier.send(&Message::Watchdog) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1_000_000, "the queue never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(sent > 0);
        // Dropped, not queued: the manager gets what fitted and nothing more.
        assert_eq!(manager.recv(), "WATCHDOG=1");
        eprintln!("queue full after {sent} pings, {:?}", started.elapsed());
    }

    #[test]
    fn a_missing_manager_is_an_error_not_a_hang() {
        let manager = Manager::new();
        let path = manager.path.clone();
        drop(manager);
        let notifier = Notifier::to(path.as_os_str()).unwrap();
        let err = notifier.send(&Message::Ready).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn relative_and_vsock_addresses_are_refused() {
        for addr in ["notify.sock", "vsock:2:1234", ""] {
            let err = Notifier::to(std::ffi::OsStr::new(addr)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{addr}: {err}");
        }
    }

    #[test]
    fn watchdog_interval_honours_watchdog_pid() {
        let me = 4242;
        assert_eq!(watchdog_interval(None, None, me), Ok(None));
        assert_eq!(watchdog_interval(Some("10000000"), None, me), Ok(Some(Duration::from_secs(10))));
        assert_eq!(watchdog_interval(Some("10000000"), Some("4242"), me), Ok(Some(Duration::from_secs(10))));
        assert_eq!(watchdog_interval(Some("10000000"), Some("1"), me), Ok(None), "meant for another process");
        assert!(watchdog_interval(Some("0"), None, me).is_err());
        assert!(watchdog_interval(Some("soon"), None, me).unwrap_err().contains("WATCHDOG_USEC"));
        assert!(watchdog_interval(Some("1000"), Some("init"), me).unwrap_err().contains("WATCHDOG_PID"));
    }
}
