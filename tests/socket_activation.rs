//! Supervisors end to end: listening sockets handed over by a test-owned holder (the way
//! systemd's `.socket` units do it) and by Debian's `systemd-socket-activate`, the
//! `sd_notify` messages a test-owned `NOTIFY_SOCKET` receives, and binding without
//! `SO_REUSEPORT`. The rules for names are unit tests in src/server/activation.rs, the
//! notification client's in src/runtime/notify.rs.
//!
//! `systemd-socket-activate` comes with Debian's `systemd` package (`.ci/run` installs it); the
//! test that needs it says so and passes when it is missing, unless `CI` is set.

#![cfg(unix)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// These tests pass sockets and environment to a native binary; a Windows build under Wine
/// (`VIGIL_SERVER_CMD`) has neither.
fn native() -> bool {
    std::env::var_os("VIGIL_SERVER_CMD").is_none()
}

fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a test socket")
}

/// `vigil` with `sockets` at descriptors 3, 4, … and `LISTEN_FDS`, `LISTEN_PID` and, when
/// given, `LISTEN_FDNAMES` set, as systemd does. It starts through `sh`, whose pid `exec`
/// keeps: `LISTEN_PID=$$` is vigil's pid (or `listen_pid` when given).
fn with_sockets(sockets: &[&TcpListener], names: Option<&str>, listen_pid: Option<&str>) -> Command {
    let vigil = vigil_command();
    let mut cmd = Command::new("sh");
    for (key, value) in vigil.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let pid = listen_pid.map_or("$$".to_string(), str::to_string);
    cmd.arg("-c").arg(format!("LISTEN_PID={pid} exec \"$0\" \"$@\"")).arg(vigil.get_program()).args(vigil.get_args());
    cmd.env("LISTEN_FDS", sockets.len().to_string());
    match names {
        Some(names) => cmd.env("LISTEN_FDNAMES", names),
        None => cmd.env_remove("LISTEN_FDNAMES"),
    };
    // Copies at 100 and above, so that putting them at 3, 4, … in the child cannot overwrite
    // one another; they close in this process when the command drops, and at exec in the child.
    let copies: Vec<std::os::fd::OwnedFd> = sockets
        .iter()
        .map(|s| {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor the test owns (borrowed from `s`) returns
            // a new descriptor or -1, which is checked before it is owned.
            let fd = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            assert!(fd >= 100, "dup: {}", std::io::Error::last_os_error());
            // SAFETY: `fd` was just created and nothing else owns it.
            unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
        })
        .collect();
    // SAFETY: between fork and exec only dup2, which is async-signal-safe, on descriptors that
    // stay open until the command drops (the closure owns them).
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in copies.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor: vigil inherits it.
                if libc::dup2(fd.as_raw_fd(), 3 + i as i32) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn sockets_named_public_and_admin_replace_binding() {
    if !native() {
        return;
    }
    let (public, admin) = (loopback_listener(), loopback_listener());
    // Passed in the other order: the names decide, not the positions.
    let cmd = with_sockets(&[&admin, &public], Some("admin:public"), None);
    let srv = ServerProc::start_command(cmd, &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    assert_eq!(srv.addr, public.local_addr().unwrap(), "served on the passed public socket");
    assert_eq!(srv.admin(), admin.local_addr().unwrap(), "admin on the passed admin socket");
    assert_eq!(get(srv.addr, "/").text(), "hello");
    assert_eq!(get(srv.admin(), "/readyz").status, 200);
}

#[test]
fn one_unnamed_socket_is_the_public_one() {
    if !native() {
        return;
    }
    let public = loopback_listener();
    let cmd = with_sockets(&[&public], None, None);
    let srv = ServerProc::start_command(cmd, &["--admin-bind", "127.0.0.1:0"]);
    assert_eq!(srv.addr, public.local_addr().unwrap());
    assert_ne!(srv.admin().port(), 0, "the admin listener was bound as usual");
    assert_eq!(get(srv.addr, "/").text(), "hello");
}

#[test]
fn sockets_meant_for_another_process_are_left_alone() {
    if !native() {
        return;
    }
    let public = loopback_listener();
    let cmd = with_sockets(&[&public], Some("public"), Some("1"));
    let srv = ServerProc::start_command(cmd, &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"]);
    assert_ne!(srv.addr, public.local_addr().unwrap(), "LISTEN_PID names another process");
    assert_eq!(get(srv.addr, "/").text(), "hello");
}

#[test]
fn misnamed_sockets_stop_the_server_with_a_message() {
    if !native() {
        return;
    }
    let (a, b) = (loopback_listener(), loopback_listener());
    let out = with_sockets(&[&a, &b], Some("web:admin"), None)
        .args(["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("inherited socket 0 is named \"web\""), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
}

/// A restart on a socket held across it, as systemd holds a `.socket` unit's: the new process
/// starts on the same descriptor while the old one drains, and no connection attempt is
/// refused meanwhile.
#[test]
fn restart_on_a_held_socket_refuses_no_connection() {
    if !native() {
        return;
    }
    let held = loopback_listener();
    let addr = held.local_addr().unwrap();
    let start = || ServerProc::start_command(with_sockets(&[&held], None, None), &["--admin-bind", "127.0.0.1:0"]);
    let mut old = start();
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let other = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, refused, answered, other) =
                (Arc::clone(&stop), Arc::clone(&refused), Arc::clone(&answered), Arc::clone(&other));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect(addr) {
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(mut s) => {
                            use std::io::Write;
                            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            let r = s
                                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                                .and_then(|_| read_response(&mut s, false));
                            match r {
                                Ok(r) if r.status == 200 => {
                                    answered.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(r) => other.lock().unwrap().push(format!("status {}", r.status)),
                                Err(e) => other.lock().unwrap().push(e.to_string()),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    assert!(wait_for(Duration::from_secs(5), || answered.load(Ordering::Relaxed) > 50));
    old.terminate();
    let new = start();
    let before = answered.load(Ordering::Relaxed);
    assert_eq!(old.wait_exit(Duration::from_secs(60)), Some(0), "the old process drained and exited");
    assert!(
        wait_for(Duration::from_secs(10), || answered.load(Ordering::Relaxed) > before + 50),
        "the new process serves"
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let other = other.lock().unwrap();
    eprintln!(
        "restart on a held socket: {} answered 200, {} refused, {} other: {:?}",
        answered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.len(),
        &other[..other.len().min(5)]
    );
    assert_eq!(refused.load(Ordering::Relaxed), 0, "connection attempts refused during the restart");
    assert!(other.is_empty(), "requests not answered 200 during the restart: {other:?}");
    drop(new);
}

#[test]
fn systemd_socket_activate_starts_vigil_on_its_named_sockets() {
    if !native() {
        return;
    }
    if Command::new("systemd-socket-activate").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI is set and systemd-socket-activate is not installed");
        eprintln!("SKIPPED: systemd-socket-activate is not installed (apt-get install systemd)");
        return;
    }
    // systemd-socket-activate binds the addresses it is given: probe free ports, and retry if
    // one is taken before it binds.
    for _ in 0..5 {
        let (public, admin) = (free_addr(), free_addr());
        let vigil = vigil_command();
        let mut cmd = Command::new("systemd-socket-activate");
        for (key, value) in vigil.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.arg("-l").arg(public.to_string()).arg("-l").arg(admin.to_string()).arg("--fdname=public:admin");
        cmd.arg(vigil.get_program()).args(vigil.get_args());
        let mut child = cmd
            .args(["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start systemd-socket-activate");
        let guard = KillOnDrop(&mut child);
        // It execs vigil on the first connection; that connection is vigil's first client.
        if !wait_for(Duration::from_secs(5), || TcpStream::connect(public).map(drop).is_ok()) {
            drop(guard);
            continue; // the port was taken
        }
        let (r, d) = timed_get(public, "/");
        assert_eq!(r.text(), "hello", "served on the activated socket");
        assert!(d < Duration::from_secs(30));
        assert_eq!(get(admin, "/readyz").status, 200, "admin endpoints on the activated admin socket");
        return;
    }
    panic!("no free ports for systemd-socket-activate after 5 tries");
}

fn free_addr() -> SocketAddr {
    loopback_listener().local_addr().unwrap()
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_server_on_an_address_in_use_fails_instead_of_sharing_it() {
    let settings = || vigil::Settings::default().admin_bind(None);
    let app = || vigil::App::new().get("/", |_: &vigil::Request, _: &vigil::Ctx| vigil::Response::text("first"));
    let first = vigil::Server::start(settings().bind("127.0.0.1:0".parse().unwrap()), app()).unwrap();
    let err = match vigil::Server::start(settings().bind(first.local_addr()), app()) {
        Ok(_) => panic!("a second server bound {} too (SO_REUSEPORT)", first.local_addr()),
        Err(e) => e,
    };
    assert!(
        matches!(&err, vigil::StartError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse),
        "{err}"
    );
    first.stop();
}

// ---- sd_notify ----

/// A test-owned `NOTIFY_SOCKET`: what a service manager would receive.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn new() -> Manager {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("vigil-e2e-notify-{}-{}.sock", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager { socket, path }
    }

    fn env(&self) -> (&'static str, &str) {
        ("NOTIFY_SOCKET", self.path.to_str().unwrap())
    }

    /// Datagrams received until `until` says stop (given all so far) or `limit` passes.
    fn collect(&self, seen: &mut Vec<String>, limit: Duration, until: impl Fn(&[String]) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while !until(seen) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => return until(seen),
            }
        }
        true
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn count(seen: &[String], message: &str) -> usize {
    seen.iter().filter(|m| *m == message).count()
}

#[test]
fn service_manager_hears_ready_status_watchdog_pings_and_stopping() {
    if !native() {
        return;
    }
    let manager = Manager::new();
    // WATCHDOG_USEC 400 ms: a ping every 200 ms.
    let env = [manager.env(), ("WATCHDOG_USEC", "400000")];
    let mut srv = ServerProc::start_exactly(&["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"], &env);
    let mut seen = Vec::new();
    assert!(manager.collect(&mut seen, Duration::from_secs(10), |s| count(s, "READY=1") == 1), "{seen:?}");
    let started = Instant::now();
    assert!(manager.collect(&mut seen, Duration::from_secs(10), |s| count(s, "WATCHDOG=1") >= 5), "{seen:?}");
    eprintln!("5 watchdog pings in {:?}", started.elapsed());
    assert!(
        seen.iter().any(|m| m.starts_with("STATUS=serving: ") && m.contains("requests in flight")),
        "no STATUS line: {seen:?}"
    );
    srv.terminate();
    assert!(manager.collect(&mut seen, Duration::from_secs(10), |s| count(s, "STOPPING=1") == 1), "{seen:?}");
    assert_eq!(srv.wait_exit(Duration::from_secs(30)), Some(0));
    let ready = seen.iter().position(|m| m == "READY=1").unwrap();
    let stopping = seen.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{seen:?}");
}

#[test]
fn no_watchdog_pings_when_watchdog_pid_names_another_process() {
    if !native() {
        return;
    }
    let manager = Manager::new();
    let env = [manager.env(), ("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")];
    let _srv = ServerProc::start_exactly(&["--bind", "127.0.0.1:0", "--admin-bind", "off"], &env);
    let mut seen = Vec::new();
    assert!(manager.collect(&mut seen, Duration::from_secs(10), |s| count(s, "READY=1") == 1), "{seen:?}");
    // Ten would-be ping intervals.
    manager.collect(&mut seen, Duration::from_secs(1), |_| false);
    assert_eq!(count(&seen, "WATCHDOG=1"), 0, "{seen:?}");
}

#[test]
fn an_unusable_notify_socket_stops_the_server_with_a_message() {
    for (value, words) in [("notify.sock", "expected an absolute path or @name"), ("/", "")] {
        let out = vigil_command()
            .args(["--bind", "127.0.0.1:0", "--admin-bind", "off"])
            .env("NOTIFY_SOCKET", value)
            .env("WATCHDOG_USEC", "soon")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "NOTIFY_SOCKET={value}: {err}");
        assert!(err.contains(words), "NOTIFY_SOCKET={value}: {err}");
        if value == "/" {
            assert!(err.contains("WATCHDOG_USEC"), "{err}");
        }
    }
}
