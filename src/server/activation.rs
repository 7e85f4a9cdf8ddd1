//! Listening sockets handed over by a supervisor (socket activation): systemd's `LISTEN_FDS`,
//! `LISTEN_PID` and `LISTEN_FDNAMES` on Unix (also `systemd-socket-activate`, `systemfd`), and
//! `systemfd`'s protocol on Windows, both through the `listenfd` crate.
//!
//! An inherited socket replaces binding: the one named `public` serves HTTP, the one named
//! `admin` the admin endpoints (systemd: `FileDescriptorName=public` / `admin`). The supervisor
//! keeps its own copy, so connections made while vigil restarts wait in the socket's backlog
//! instead of being refused.
//!
//! `listenfd` checks `LISTEN_PID` (descriptors meant for another process are left alone), that
//! each descriptor is a TCP socket, and marks it close-on-exec; it does not read
//! `LISTEN_FDNAMES`, so names are matched here ([`assign`], a pure function). Without names
//! (`systemd-socket-activate` without `--fdname`, a socket unit without
//! `FileDescriptorName=`, `systemfd`), the first socket is the public one and a second one the
//! admin one.
//!
//! The environment is only read when `LISTEN_FDS` (or `SYSTEMFD_SOCKET_SERVER`) is set, so a
//! server started without a supervisor never touches it. `listenfd` then removes `LISTEN_FDS`
//! and `LISTEN_PID` from it, so that processes the application starts do not take the sockets
//! for theirs.

use std::fmt;
use std::net::TcpListener;

/// The name that marks the public (HTTP) socket.
pub(crate) const PUBLIC: &str = "public";
/// The name that marks the admin socket.
pub(crate) const ADMIN: &str = "admin";

/// Which inherited descriptor (by index, 0 for the first) serves what.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub public: Option<usize>,
    pub admin: Option<usize>,
}

/// Listeners handed over by the supervisor.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    pub public: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Why the inherited descriptors cannot be used. Each says what to fix in the supervisor's
/// configuration; the server does not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActivationError {
    /// `LISTEN_FDNAMES` does not have one name per descriptor.
    NameCount { fds: usize, names: usize },
    /// A descriptor is named neither `public` nor `admin`, while another one is.
    UnknownName { index: usize, name: String },
    /// Two descriptors have the same name.
    Duplicate { name: String },
    /// More than two descriptors and no names to tell them apart.
    TooMany { fds: usize },
    /// systemd's `Accept=yes` hands over one connection per process, not a listener.
    PerConnection,
    /// The descriptor is not a listening TCP socket.
    NotTcpListener { name: &'static str, index: usize, reason: String },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::NameCount { fds, names } => {
                write!(f, "LISTEN_FDNAMES has {names} names for {fds} descriptors (LISTEN_FDS)")
            }
            ActivationError::UnknownName { index, name } => write!(
                f,
                "inherited socket {index} is named {name:?}; name sockets `{PUBLIC}` and `{ADMIN}` \
                 (systemd: FileDescriptorName=)"
            ),
            ActivationError::Duplicate { name } => {
                write!(f, "two inherited sockets are named {name:?}; one socket per name")
            }
            ActivationError::TooMany { fds } => write!(
                f,
                "{fds} inherited sockets and no names: name them `{PUBLIC}` and `{ADMIN}` \
                 (systemd: FileDescriptorName=)"
            ),
            ActivationError::PerConnection => f.write_str(
                "the inherited socket is a connection (systemd Accept=yes); vigil needs the \
                 listening socket (Accept=no)",
            ),
            ActivationError::NotTcpListener { name, index, reason } => {
                write!(f, "inherited socket {index} ({name}) is not a listening TCP socket: {reason}")
            }
        }
    }
}

impl std::error::Error for ActivationError {}

impl From<ActivationError> for std::io::Error {
    fn from(e: ActivationError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Decides which of `fds` inherited descriptors is the public socket and which the admin one,
/// from their names (`LISTEN_FDNAMES`, colon-separated) when some name is `public` or `admin`,
/// else by position (first public, second admin).
pub(crate) fn assign(fds: usize, names: Option<&str>) -> Result<Assignment, ActivationError> {
    let names: Vec<&str> = match names {
        Some(names) if fds > 0 => names.split(':').collect(),
        _ => Vec::new(),
    };
    if !names.is_empty() && names.len() != fds {
        return Err(ActivationError::NameCount { fds, names: names.len() });
    }
    if names.contains(&"connection") {
        return Err(ActivationError::PerConnection);
    }
    if names.iter().any(|n| *n == PUBLIC || *n == ADMIN) {
        let mut assignment = Assignment::default();
        for (index, &name) in names.iter().enumerate() {
            let slot = match name {
                PUBLIC => &mut assignment.public,
                ADMIN => &mut assignment.admin,
                _ => return Err(ActivationError::UnknownName { index, name: name.to_string() }),
            };
            if slot.replace(index).is_some() {
                return Err(ActivationError::Duplicate { name: name.to_string() });
            }
        }
        return Ok(assignment);
    }
    match fds {
        0 => Ok(Assignment::default()),
        1 => Ok(Assignment { public: Some(0), admin: None }),
        2 => Ok(Assignment { public: Some(0), admin: Some(1) }),
        fds => Err(ActivationError::TooMany { fds }),
    }
}

/// Whether a supervisor says it passed sockets. Reads the environment, never changes it.
fn offered() -> bool {
    std::env::var_os("LISTEN_FDS").is_some() || (cfg!(windows) && std::env::var_os("SYSTEMFD_SOCKET_SERVER").is_some())
}

/// Takes the listeners a supervisor passed to this process, if any (see the module docs).
/// Call it once, before binding; later calls find nothing.
pub(crate) fn inherited() -> Result<Inherited, ActivationError> {
    if !offered() {
        return Ok(Inherited::default());
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let mut fds = listenfd::ListenFd::from_env();
    let assignment = assign(fds.len(), names.as_deref())?;
    let mut take = |index: Option<usize>, name: &'static str| -> Result<Option<TcpListener>, ActivationError> {
        let Some(index) = index else { return Ok(None) };
        let not = |reason: String| ActivationError::NotTcpListener { name, index, reason };
        let listener = fds.take_tcp_listener(index).map_err(|e| not(e.to_string()))?;
        let Some(listener) = listener else { return Ok(None) };
        // A connected socket passes listenfd's checks (it is TCP too) but cannot accept.
        if let Ok(peer) = socket2::SockRef::from(&listener).peer_addr() {
            let peer = peer.as_socket().map_or_else(|| "a peer".to_string(), |a| a.to_string());
            return Err(not(format!("it is connected to {peer}")));
        }
        Ok(Some(listener))
    };
    Ok(Inherited { public: take(assignment.public, PUBLIC)?, admin: take(assignment.admin, ADMIN)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(public: usize, admin: usize) -> Assignment {
        Assignment { public: Some(public), admin: Some(admin) }
    }

    #[test]
    fn no_descriptors_assign_nothing() {
        assert_eq!(assign(0, None), Ok(Assignment::default()));
        assert_eq!(assign(0, Some("")), Ok(Assignment::default()));
    }

    #[test]
    fn names_pick_the_sockets_in_any_order() {
        assert_eq!(assign(2, Some("public:admin")), Ok(both(0, 1)));
        assert_eq!(assign(2, Some("admin:public")), Ok(both(1, 0)));
        assert_eq!(assign(1, Some("admin")), Ok(Assignment { public: None, admin: Some(0) }));
        assert_eq!(assign(1, Some("public")), Ok(Assignment { public: Some(0), admin: None }));
    }

    #[test]
    fn without_names_the_first_is_public_and_the_second_admin() {
        assert_eq!(assign(1, None), Ok(Assignment { public: Some(0), admin: None }));
        assert_eq!(assign(2, None), Ok(both(0, 1)));
        // A socket unit without FileDescriptorName= names its descriptors after the unit.
        assert_eq!(assign(2, Some("vigil.socket:vigil.socket")), Ok(both(0, 1)));
    }

    #[test]
    fn more_than_two_unnamed_sockets_is_an_error() {
        assert_eq!(assign(3, None), Err(ActivationError::TooMany { fds: 3 }));
        assert!(assign(3, None).unwrap_err().to_string().contains("FileDescriptorName="));
    }

    #[test]
    fn a_stray_name_beside_known_ones_is_an_error_naming_it() {
        let err = assign(3, Some("public:admin:metrics")).unwrap_err();
        assert_eq!(err, ActivationError::UnknownName { index: 2, name: "metrics".into() });
        assert!(err.to_string().contains("\"metrics\""), "{err}");
    }

    #[test]
    fn two_sockets_with_one_name_is_an_error() {
        let err = assign(2, Some("public:public")).unwrap_err();
        assert_eq!(err, ActivationError::Duplicate { name: "public".into() });
    }

    #[test]
    fn names_must_match_the_descriptor_count() {
        assert_eq!(assign(2, Some("public")), Err(ActivationError::NameCount { fds: 2, names: 1 }));
        assert_eq!(assign(1, Some("public:admin")), Err(ActivationError::NameCount { fds: 1, names: 2 }));
    }

    #[test]
    fn accept_yes_connections_are_refused() {
        assert_eq!(assign(1, Some("connection")), Err(ActivationError::PerConnection));
    }
}
