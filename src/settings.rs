//! Settings: every tunable of the server, declared once.
//!
//! The table in `settings_table!` is the only place a setting is declared: its doc comment,
//! field name and type, default, value kind and accepted range. From it the module generates the
//! [`Settings`] struct and its `Default`, one chainable setter and one getter per field, the
//! argh [`Cli`] struct, the validation behind [`Settings::validate`], the `--help` defaults and
//! [`Settings::docs_markdown`], which is checked into `docs/settings.md` (a test fails when that
//! file is stale). The flag of a field is its name with dashes: `max_body` is `--max-body`.
//!
//! Every CLI value reaches us as a string, so parsing and error messages are ours, not argh's:
//! each error names the flag (`--threads: must be between 1 and 4096, got 0`).

// Without the `cli` feature the parsers, file keys and environment names the table generates
// for flags, files and variables have no user.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[cfg(feature = "cli")]
mod load;
#[cfg(feature = "cli")]
pub use load::{LoadedSettings, Mode};

use crate::http::parse::{
    DEFAULT_MAX_BODY, DEFAULT_MAX_FIELDS, DEFAULT_MAX_FIELD_SIZE, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_REQUEST_LINE,
};
pub use crate::logging::LogFormat;
use crate::runtime::threads::AbandonedPriority;

/// Where a setting's value came from.
///
/// Displays as `default`, the flag (`--threads`), the variable (`VIGIL_THREADS`, `PORT`) or the
/// file and line (`vigil.toml:3`).
///
/// ```
/// # #[cfg(feature = "cli")] {
/// use vigil::{Origin, Settings};
///
/// let loaded = Settings::load(&["--threads", "3"], [("VIGIL_TIMEOUT", "2s")]).unwrap();
/// assert_eq!(loaded.origin("threads"), &Origin::Flag("--threads".into()));
/// assert_eq!(loaded.origin("timeout").to_string(), "VIGIL_TIMEOUT");
/// assert_eq!(loaded.origin("keepalive"), &Origin::Default);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A command-line flag: `--threads`.
    Flag(String),
    /// An environment variable: `VIGIL_THREADS`, or `PORT` for the bind address.
    Env(String),
    /// A line of the `--config` file.
    File {
        /// The file as named on the command line or in `VIGIL_CONFIG`.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Flag(name) | Origin::Env(name) => f.write_str(name),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// The settings table. Each row reads
/// `field: type = default [=> default as documented], value kind, accepted values;`
/// and its doc comment becomes the field's rustdoc, its `--help` line and its row in
/// `docs/settings.md` (argh wants it to start in lowercase).
macro_rules! settings_table {
    ($generate:ident) => {
        $generate! {
            /// address the HTTP listener binds to (port 0 picks a free port).
            bind: SocketAddr = loopback(8080), ADDR, Any;
            /// address of the admin listener (metrics, health, readiness), or `off`. Off by
            /// default in the library (`Settings::default()`); the `vigil` binary opens it on
            /// 127.0.0.1:9181 unless told otherwise.
            admin_bind: Option<SocketAddr> = None => "off (binary: `127.0.0.1:9181`)", ADDR_OR_OFF, Any;
            /// worker threads: the OS threads that run handlers.
            threads: usize = default_threads() => "4 × CPUs", INT, Between(1, 4096);
            /// requests that may wait for a free worker; when full, new ones get 503 (a request
            /// that waits past its deadline gets 503 too).
            backlog: Option<usize> = None => "2 × threads, at least 1024", INT_OR_AUTO, IfSet(AtLeast(1));
            /// time a handler may run before it is cancelled and its request answered 504, for
            /// routes that set no timeout of their own (a route's own is honoured as given).
            timeout: Duration = secs(30), DURATION, Above(Duration::ZERO);
            /// time a cancelled handler has to return before its thread is abandoned and replaced.
            cancel_grace: Duration = secs(5), DURATION, Any;
            /// time in-flight requests get to finish at shutdown, counted from the signal (the
            /// shutdown delay included); then what is queued gets 503 and what runs 504.
            graceful_timeout: Duration = secs(30), DURATION, Any;
            /// at shutdown, time the server keeps serving (readiness already failing, responses
            /// closing their connections) before it closes its listener, so a load balancer
            /// stops sending new requests first.
            shutdown_delay: Duration = secs(0), DURATION, Any;
            /// idle time a keep-alive connection stays open (0: close after each response).
            keepalive: Duration = secs(5), DURATION, Any;
            /// requests a worker thread serves before it retires and is replaced (0: never).
            max_requests: u64 = 0, INT64, Any;
            /// up to this many requests added at random to `--max-requests`, per thread.
            max_requests_jitter: u64 = 0, INT64, Any;
            /// abandoned threads still running above which the server reports not ready.
            max_abandoned: Option<usize> = None => "= threads", INT_OR_AUTO, Any;
            /// most handler threads alive at once: workers, stand-ins, cancelled and abandoned
            /// threads. At the ceiling no stand-in starts and readiness fails (README, "The thread
            /// ceiling").
            max_threads: Option<usize> = None => "threads + max-abandoned", INT_OR_AUTO, IfSet(Between(1, 65536));
            /// when the thread ceiling has kept the pool short of workers for `--cancel-grace`:
            /// drain, then exit with status 75 for a supervisor to restart the process.
            exit_on_thread_ceiling: bool = false, SWITCH, Any;
            /// CPU priority of an abandoned thread: `idle` (Linux `SCHED_IDLE`, Windows idle
            /// priority), `lowest` (nice 19, Windows lowest) or `unchanged`.
            abandoned_priority: AbandonedPriority = AbandonedPriority::Idle, PRIORITY, Any;
            /// share of one CPU that all abandoned threads together may use, or `off` (Linux;
            /// a thread over its part sleeps in a signal handler, `SIGRTMAX-1`).
            abandoned_cpu: Option<f64> = Some(0.1), CPU_SHARE, IfSet(Between(0.001, 4096.0));
            /// how often the watchdog checks deadlines; a 504 is late by at most this.
            watchdog_tick: Duration = millis(10), DURATION, Between(millis(1), secs(1));
            /// longest request line in bytes; longer gets 414.
            limit_request_line: usize = DEFAULT_MAX_REQUEST_LINE, BYTES, Between(16, 65536);
            /// most header fields in a request; more gets 431.
            limit_request_fields: usize = DEFAULT_MAX_FIELDS, INT, Between(1, 32768);
            /// longest header field line in bytes; longer gets 431.
            limit_request_field_size: usize = DEFAULT_MAX_FIELD_SIZE, BYTES, Between(16, 65536);
            /// largest request head (request line and header fields) in bytes; larger gets 431.
            limit_request_head: usize = DEFAULT_MAX_HEAD_BYTES, BYTES, Between(64, MIB as usize);
            /// largest request body in bytes; larger gets 413.
            max_body: u64 = DEFAULT_MAX_BODY, SIZE, Any;
            /// request bodies held in memory at once, all connections together; a body that would
            /// take more gets 503 with `Retry-After` instead of being read further (at least
            /// `--max-body`).
            max_body_memory: u64 = 256 * MIB, SIZE, Any;
            /// time to receive a whole request head once its first byte arrived; slower gets 408.
            header_timeout: Duration = secs(10), DURATION, Above(Duration::ZERO);
            /// time to receive the whole request body; slower gets 408.
            body_timeout: Duration = secs(30), DURATION, Above(Duration::ZERO);
            /// time a response write may stall (client not reading) before the connection drops.
            write_timeout: Duration = secs(30), DURATION, Above(Duration::ZERO);
            /// honour a deadline sent by the upstream (`grpc-timeout`,
            /// `x-envoy-expected-rq-timeout-ms`, `x-request-timeout-ms`): it can only shorten a
            /// route's; turn on only behind a proxy that sets or strips these fields.
            trust_upstream_deadline: bool = false, SWITCH, Any;
            /// most open client connections; beyond it, new ones get 503 and are closed.
            max_connections: usize = 10_000, INT, AtLeast(1);
            /// most open admin connections; beyond it, the longest-idle one is closed to make room.
            admin_max_connections: usize = 64, INT, Between(1, 1024);
            /// time an admin connection has for a whole request and its response, and to stay
            /// idle between requests; past it the connection is closed (408 if a request was
            /// under way).
            admin_timeout: Duration = secs(5), DURATION, Between(millis(10), secs(300));
            /// log line format.
            log_format: LogFormat = LogFormat::Text, LOG_FORMAT, Any;
            /// log one line per request.
            access_log: bool = false, SWITCH, Any;
            /// file the log is appended to instead of stderr (what a Windows service needs: it has
            /// no console); rotated by size, see `--log-file-max-size`.
            log_file: Option<PathBuf> = None, PATH_OR_STDERR, Any;
            /// size at which the log file is renamed `FILE.1` (older ones `FILE.2`, ...) and a new
            /// one started (0: never).
            log_file_max_size: u64 = 64 * MIB, SIZE, Any;
            /// rotated log files kept besides the current one (`FILE.1` to `FILE.N`).
            log_file_keep: usize = 5, INT, Between(1, 1000);
        }
    };
}

/// Generates everything that is per setting from the rows of `settings_table!`.
macro_rules! generate_settings {
    ($(
        $(#[doc = $doc:tt])+
        $field:ident: $ty:ty = $default:expr $(=> $shown:literal)?, $kind:ident, $accept:expr;
    )*) => {
        /// Every tunable of the server.
        ///
        /// Build it with `Settings::default()` and chainable setters (one per setting, named
        /// like it: `threads(8)`), or from command-line flags with [`Settings::from_args`];
        /// read a value with its getter (`get_threads()`). Each setting is the flag of the
        /// same name with dashes (`max_body` is `--max-body`); defaults, value formats and
        /// ranges are listed by [`Settings::docs_markdown`] (`docs/settings.md`).
        ///
        /// ```
        /// use std::time::Duration;
        /// use vigil::Settings;
        ///
        /// let settings = Settings::default().threads(8).timeout(Duration::from_secs(5));
        /// assert_eq!(settings.effective_backlog(), 1024);
        /// settings.validate().unwrap();
        ///
        /// let parsed = Settings::from_args(&["--threads", "8", "--timeout", "5s"]).unwrap();
        /// assert_eq!((parsed.get_threads(), parsed.get_timeout()), (8, Duration::from_secs(5)));
        ///
        /// let err = Settings::from_args(&["--threads", "0"]).unwrap_err();
        /// assert_eq!(err.to_string(), "--threads: must be between 1 and 4096, got 0");
        /// ```
        #[derive(Clone, Debug)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub(crate) $field: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )* }
            }
        }

        impl Settings {
            $(
                #[doc = concat!(
                    "Sets `", stringify!($field), "` (read it with [`get_", stringify!($field),
                    "`](Settings::get_", stringify!($field), "))."
                )]
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }

                pastey::paste! {
                    $(#[doc = $doc])+
                    #[doc = ""]
                    #[doc = concat!("Set with [`", stringify!($field), "`](Settings::", stringify!($field), ").")]
                    #[allow(clippy::clone_on_copy)]
                    pub fn [<get_ $field>](&self) -> $ty {
                        self.$field.clone()
                    }
                }
            )*

            /// Checks every field against its accepted values.
            fn check_ranges(&self) -> Result<(), SettingsError> {
                $(
                    Rule::test(&$accept, &self.$field, &$kind.show)
                        .map_err(|message| SettingsError::invalid(stringify!($field), message))?;
                )*
                Ok(())
            }

            /// One line per setting, for the docs and `--help`.
            fn rows() -> Vec<Row> {
                vec![$(
                    Row {
                        field: stringify!($field),
                        flag: flag(stringify!($field)),
                        format: $kind.format,
                        accepted: Rule::describe(&$accept, &$kind.show),
                        default: shown_default!($($shown)?; code(($kind.show)(&$default))),
                        doc: concat!($($doc),+),
                    },
                )*]
            }

            /// Flags whose documented default does not parse back to the default.
            #[cfg(test)]
            fn defaults_not_round_tripping() -> Vec<String> {
                let defaults = Settings::default();
                let mut bad = Vec::new();
                $(
                    let shown = ($kind.show)(&defaults.$field);
                    if ($kind.parse)(&shown).ok().as_ref() != Some(&defaults.$field) {
                        bad.push(format!("{} {shown}", flag(stringify!($field))));
                    }
                )*
                bad
            }
        }

        /// The settings' names, in table order. Each is a key of the `--config` file; its
        /// environment variable is `VIGIL_` and the name in capitals ([`env_name`]), its flag
        /// the name with dashes ([`flag`]).
        const FIELDS: &[&str] = &[$(stringify!($field)),*];

        impl Settings {
            /// Parses `text` as the value of the setting `name` (one of [`FIELDS`]) and sets it;
            /// `Err(message)` when it is not a value of the setting's kind.
            fn set_text(&mut self, name: &str, text: &str) -> Result<(), String> {
                match name {
                    $( stringify!($field) => self.$field = ($kind.parse)(text)?, )*
                    _ => return Err(format!("no setting is named {name:?}")),
                }
                Ok(())
            }

            /// Every setting's value as a TOML value, in table order (for `--print-config`).
            fn toml_values(&self) -> Vec<(&'static str, String)> {
                vec![$( (stringify!($field), $kind.toml.literal(&($kind.show)(&self.$field))), )*]
            }
        }

        #[cfg(feature = "cli")]
        impl Cli {
            /// The settings given as flags: (name, text), in table order.
            fn given(&self) -> Vec<(&'static str, &str)> {
                let mut given = Vec::new();
                $(
                    if let Some(text) = Given::given(&self.$field) {
                        given.push((stringify!($field), text));
                    }
                )*
                given
            }
        }

        #[cfg(feature = "cli")]
        impl TryFrom<Cli> for Settings {
            type Error = SettingsError;

            /// Defaults, overridden by the `--config` file if one is named, then by the flags
            /// given, then validated (no environment variables: see [`Settings::load`]).
            fn try_from(cli: Cli) -> Result<Settings, SettingsError> {
                load::resolve(cli, Vec::new()).map(|loaded| loaded.settings)
            }
        }

        generate_cli!([] $( $field $kind [$($doc)+] )*);
    };
}

/// The documented default: the table's text when it has one, else the shown value.
macro_rules! shown_default {
    ($shown:literal; $computed:expr) => {
        String::from($shown)
    };
    (; $computed:expr) => {
        $computed
    };
}

/// Builds [`Cli`] one row at a time: a `SWITCH` becomes an argh switch, any other kind an
/// option kept as text (argh cannot take a field's type from a macro).
macro_rules! generate_cli {
    ([$($fields:tt)*]) => {
        /// The command-line flags of `vigil`, generated from the settings table, plus the three
        /// that say where settings come from and what to do with them.
        ///
        /// Every value is kept as text so that [`Settings`] parses and checks it:
        /// `Settings::try_from(cli)` applies the `--config` file and the flags given over the
        /// defaults and validates. [`Settings::from_args`] does all of it from a slice of
        /// arguments, and [`Settings::load`] adds the environment.
        ///
        /// ```
        /// use vigil::internals::Cli;
        /// use vigil::Settings;
        ///
        /// let cli = Cli { threads: Some("3".into()), ..Cli::default() };
        /// assert_eq!(Settings::try_from(cli).unwrap().get_threads(), 3);
        /// ```
        #[cfg(feature = "cli")]
        #[derive(argh::FromArgs, Debug, Default)]
        #[argh(description = "HTTP/1.1 application server whose watchdog cancels hung requests, \
                              answers 504 and replaces stuck threads. Settings come from flags, \
                              then VIGIL_<SETTING> environment variables, then the --config file, \
                              then the defaults.")]
        pub struct Cli {
            $($fields)*
            /// read settings from this TOML file (keys are the setting names: `max_body = "1m"`);
            /// also `VIGIL_CONFIG`. Flags and `VIGIL_*` variables override it.
            #[argh(option)]
            pub config: Option<String>,
            /// print the effective settings and where each came from, as TOML, then exit.
            #[argh(switch)]
            pub print_config: bool,
            /// check the settings (flags, environment, config file) and exit: 0 when valid, 2
            /// with the error otherwise.
            #[argh(switch)]
            pub check_config: bool,
        }
    };
    ([$($fields:tt)*] $field:ident SWITCH [$($doc:tt)+] $($rest:tt)*) => {
        generate_cli!([$($fields)* $(#[doc = $doc])+ #[argh(switch)] pub $field: bool,] $($rest)*);
    };
    ([$($fields:tt)*] $field:ident $kind:ident [$($doc:tt)+] $($rest:tt)*) => {
        generate_cli!(
            [$($fields)* $(#[doc = $doc])+ #[argh(option)] pub $field: Option<String>,] $($rest)*
        );
    };
}

settings_table!(generate_settings);

/// Why settings could not be loaded, or `--help`.
///
/// A bad value names the setting and where the value came from; it displays as
/// `--threads: must be between 1 and 4096, got 0` (a flag, or a value set in code),
/// `VIGIL_THREADS: …` (an environment variable) or `vigil.toml:3: threads: …` (a line of the
/// `--config` file).
///
/// ```
/// use vigil::{Origin, Settings, SettingsError};
///
/// let err = Settings::load(&[], [("VIGIL_THREADS", "0")]).unwrap_err();
/// assert_eq!(err.to_string(), "VIGIL_THREADS: must be between 1 and 4096, got 0");
/// assert_eq!(err.setting(), Some("threads"));
/// assert_eq!(err.origin(), Some(&Origin::Env("VIGIL_THREADS".into())));
/// assert!(matches!(Settings::from_args(&["--help"]), Err(SettingsError::Help(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsError {
    /// `--help` was asked for: not an error; this is the help text.
    Help(String),
    /// The command line does not parse (an unknown flag, a missing value): argh's message.
    Usage(String),
    /// A setting's value is not accepted.
    Invalid {
        /// The setting (`"threads"`).
        setting: &'static str,
        /// Where the value came from; `None` for a value set in code ([`Settings::validate`]).
        origin: Option<Origin>,
        /// What is wrong: `"must be between 1 and 4096, got 0"`.
        message: String,
    },
    /// The `--config` file cannot be read, or is not valid TOML.
    File {
        /// The file as named.
        path: PathBuf,
        /// Why, with the line and column for a syntax error.
        message: String,
    },
    /// Keys of the `--config` file that name no setting, each with its line and, when one is
    /// close, the setting probably meant.
    UnknownKeys {
        /// The file as named.
        path: PathBuf,
        /// `(key, line, suggestion)`, in file order.
        keys: Vec<(String, usize, Option<&'static str>)>,
    },
    /// `VIGIL_*` environment variables that name no setting, each with the variable probably
    /// meant when one is close.
    UnknownEnv(Vec<(String, Option<String>)>),
}

impl SettingsError {
    fn invalid(setting: &'static str, message: impl Into<String>) -> SettingsError {
        SettingsError::Invalid { setting, origin: None, message: message.into() }
    }

    /// Whether this is `--help` being asked for rather than an error.
    pub fn is_help(&self) -> bool {
        matches!(self, SettingsError::Help(_))
    }

    /// The setting whose value is at fault (`"threads"`), if one is.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            SettingsError::Invalid { setting, .. } => Some(setting),
            _ => None,
        }
    }

    /// Where the value at fault came from, if it is known.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            SettingsError::Invalid { origin, .. } => origin.as_ref(),
            _ => None,
        }
    }

    /// The message without the setting and origin (or the help, or argh's message).
    pub fn message(&self) -> String {
        match self {
            SettingsError::Help(text) | SettingsError::Usage(text) => text.clone(),
            SettingsError::Invalid { message, .. } | SettingsError::File { message, .. } => message.clone(),
            SettingsError::UnknownKeys { .. } | SettingsError::UnknownEnv(_) => self.to_string(),
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Help(text) | SettingsError::Usage(text) => f.write_str(text),
            SettingsError::Invalid { setting, origin, message } => match origin {
                None | Some(Origin::Default) => write!(f, "{}: {message}", flag(setting)),
                Some(Origin::File { path, line }) => write!(f, "{}:{line}: {setting}: {message}", path.display()),
                Some(origin) => write!(f, "{origin}: {message}"),
            },
            SettingsError::File { path, message } => write!(f, "config file {}: {message}", path.display()),
            SettingsError::UnknownKeys { path, keys } => {
                for (i, (key, line, suggestion)) in keys.iter().enumerate() {
                    let sep = if i > 0 { "; " } else { "" };
                    write!(f, "{sep}{}:{line}: {key}: no such setting", path.display())?;
                    if let Some(s) = suggestion {
                        write!(f, " (did you mean {s}?)")?;
                    }
                }
                Ok(())
            }
            SettingsError::UnknownEnv(names) => {
                for (i, (name, suggestion)) in names.iter().enumerate() {
                    let sep = if i > 0 { "; " } else { "" };
                    write!(f, "{sep}{name}: no such setting")?;
                    if let Some(s) = suggestion {
                        write!(f, " (did you mean {s}?)")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where the `vigil` binary opens its admin listener unless told otherwise (the library's
/// `Settings::default()` has none, so that servers embedded side by side do not collide).
pub(crate) const BINARY_ADMIN_BIND: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9181));

/// The smallest queue length `backlog` defaults to, whatever the thread count (see
/// [`Settings::effective_backlog`]).
///
/// ```
/// assert_eq!(vigil::internals::MIN_DEFAULT_BACKLOG, 1024);
/// ```
pub const MIN_DEFAULT_BACKLOG: usize = 1024;

impl std::error::Error for SettingsError {}

impl Settings {
    /// Queue length: `backlog`, or when unset 2 × `threads` with a floor of
    /// [`MIN_DEFAULT_BACKLOG`].
    ///
    /// The floor is there because a queue only as long as the pool sheds ordinary keep-alive
    /// concurrency: 64 clients each with one sub-millisecond request in flight would see 503s
    /// from an 8-thread pool with a 16-slot queue (measured in BENCHMARKS.md: 44–64 % of the
    /// answers). Overload is still shed: a request whose deadline passes while it waits gets 503.
    pub fn effective_backlog(&self) -> usize {
        self.backlog.unwrap_or(self.threads.saturating_mul(2).max(MIN_DEFAULT_BACKLOG))
    }

    /// Abandoned threads tolerated before readiness fails: `max_abandoned`, or `threads`.
    pub fn effective_max_abandoned(&self) -> usize {
        self.max_abandoned.unwrap_or(self.threads)
    }

    /// The thread ceiling: `max_threads`, or `threads` + [`effective_max_abandoned`]
    /// (so by default as many threads may be cancelled or abandoned as there are workers).
    ///
    /// ```
    /// use vigil::Settings;
    /// assert_eq!(Settings::default().threads(8).effective_max_threads(), 16);
    /// assert_eq!(Settings::default().threads(8).max_abandoned(Some(2)).effective_max_threads(), 10);
    /// assert_eq!(Settings::default().threads(8).max_threads(Some(12)).effective_max_threads(), 12);
    /// ```
    ///
    /// [`effective_max_abandoned`]: Settings::effective_max_abandoned
    pub fn effective_max_threads(&self) -> usize {
        self.max_threads.unwrap_or(self.threads.saturating_add(self.effective_max_abandoned()))
    }

    /// Checks every value against its range, and the settings against each other. The error
    /// names the flag: `--threads: must be between 1 and 4096, got 0`. [`Settings::from_args`]
    /// runs it too.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.check_ranges()?;
        if let Some(max) = self.max_threads {
            if max < self.threads {
                return Err(SettingsError::invalid(
                    "max_threads",
                    format!("must be at least threads ({}), got {max}", self.threads),
                ));
            }
        }
        if self.max_body_memory < self.max_body {
            return Err(SettingsError::invalid(
                "max_body_memory",
                format!(
                    "must be at least --max-body ({}), or no body of that size could be read, got {}",
                    show_size(self.max_body),
                    show_size(self.max_body_memory)
                ),
            ));
        }
        if let Some(admin) = self.admin_bind {
            if admin == self.bind && admin.port() != 0 {
                return Err(SettingsError::invalid("admin_bind", format!("must differ from bind, both are {admin}")));
            }
        }
        Ok(())
    }

    /// Valid but incoherent combinations, worded for a startup `warn!` (like Gunicorn's
    /// `check_config`). Empty when all is well.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let show = |d: &Duration| show_duration(d);
        if self.cancel_grace >= self.timeout {
            warnings.push(format!(
                "--cancel-grace {} is not below --timeout {}: a hung handler keeps its thread \
                 longer than a request's whole time budget",
                show(&self.cancel_grace),
                show(&self.timeout)
            ));
        }
        if self.graceful_timeout < self.timeout {
            warnings.push(format!(
                "--graceful-timeout {} is below --timeout {}: at shutdown, requests may be \
                 cancelled before their own deadline",
                show(&self.graceful_timeout),
                show(&self.timeout)
            ));
        }
        if !self.shutdown_delay.is_zero() && self.shutdown_delay >= self.graceful_timeout {
            warnings.push(format!(
                "--shutdown-delay {} is not below --graceful-timeout {}: at shutdown, the listener \
                 stays open until requests are cancelled",
                show(&self.shutdown_delay),
                show(&self.graceful_timeout)
            ));
        }
        if self.watchdog_tick.saturating_mul(10) > self.timeout {
            warnings.push(format!(
                "--watchdog-tick {} is coarse for --timeout {}: a 504 may come up to one tick late",
                show(&self.watchdog_tick),
                show(&self.timeout)
            ));
        }
        if self.max_threads.is_some_and(|m| m == self.threads) {
            warnings.push(format!(
                "--max-threads {} equals --threads: a cancelled thread never gets a stand-in, so \
                 each hung request leaves the pool a worker short until its handler returns",
                self.threads
            ));
        }
        if self.max_requests == 0 && self.max_requests_jitter > 0 {
            warnings.push(format!(
                "--max-requests-jitter {} has no effect while --max-requests is 0 (off)",
                self.max_requests_jitter
            ));
        }
        for (flag, value) in [
            ("--limit-request-line", self.limit_request_line),
            ("--limit-request-field-size", self.limit_request_field_size),
        ] {
            if value > self.limit_request_head {
                warnings.push(format!(
                    "{flag} {value} exceeds --limit-request-head {}, which applies first (431)",
                    self.limit_request_head
                ));
            }
        }
        warnings
    }

    /// Parses command-line arguments (without the program name): defaults, overridden by the
    /// `--config` file when one is named, then by the flags given, then
    /// [`validate`](Settings::validate)d. `--flag=value` is accepted too. The environment is
    /// not read (see [`Settings::load`]); `--print-config` and `--check-config` are accepted
    /// and left to the caller ([`LoadedSettings::mode`]).
    ///
    /// An unknown flag or a bad value is an error naming the flag; `--help` is
    /// [`SettingsError::Help`] with the help text.
    #[cfg(feature = "cli")]
    pub fn from_args(args: &[&str]) -> Result<Settings, SettingsError> {
        Settings::load(args, std::iter::empty::<(&str, &str)>()).map(|loaded| loaded.settings)
    }

    /// Loads the settings from the command line, the environment and the `--config` file:
    /// flags override `VIGIL_<SETTING>` environment variables, which override the file, which
    /// overrides the defaults; `PORT` sets the bind address (`0.0.0.0:$PORT`, as Gunicorn
    /// does) when nothing else does. `env` is the environment to read (the process's is
    /// `std::env::vars_os()`); only `VIGIL_*` and `PORT` are looked at, and a `VIGIL_*`
    /// variable that names no setting is an error, as is a file key that names none.
    ///
    /// ```
    /// use vigil::{Origin, Settings};
    ///
    /// let env = [("VIGIL_THREADS", "6"), ("VIGIL_TIMEOUT", "5s"), ("PORT", "5000")];
    /// let loaded = Settings::load(&["--threads", "8"], env).unwrap();
    /// assert_eq!(loaded.settings.get_threads(), 8); // the flag wins over the environment
    /// assert_eq!(loaded.origin("threads"), &Origin::Flag("--threads".into()));
    /// assert_eq!(loaded.settings.get_timeout(), std::time::Duration::from_secs(5));
    /// assert_eq!(loaded.settings.get_bind(), "0.0.0.0:5000".parse().unwrap());
    /// assert_eq!(loaded.origin("bind"), &Origin::Env("PORT".into()));
    /// ```
    #[cfg(feature = "cli")]
    pub fn load<K, V>(args: &[&str], env: impl IntoIterator<Item = (K, V)>) -> Result<LoadedSettings, SettingsError>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut split = Vec::with_capacity(args.len());
        let mut flags_done = false;
        for &arg in args {
            flags_done |= arg == "--";
            match arg.split_once('=') {
                Some((flag, value)) if !flags_done && flag.starts_with("--") => split.extend([flag, value]),
                _ => split.push(arg),
            }
        }
        let cli = <Cli as argh::FromArgs>::from_args(&["vigil"], &split).map_err(|exit| {
            if exit.status.is_ok() {
                SettingsError::Help(help_text(&exit.output))
            } else {
                SettingsError::Usage(exit.output.trim_end().to_string())
            }
        })?;
        let env = env.into_iter().map(|(k, v)| (k.as_ref().to_os_string(), v.as_ref().to_os_string())).collect();
        load::resolve(cli, env)
    }

    /// For `main`: loads the settings from the process's arguments and environment
    /// ([`Settings::load`]), with the binary's own default for `admin_bind`
    /// (127.0.0.1:9181, where the library's is off). On `--help`, prints the help to stdout and exits with 0; on an
    /// error, prints `vigil: <error>` and a hint to stderr and exits with 2; on
    /// `--print-config`, prints the effective settings and exits with 0; on `--check-config`,
    /// prints that they are valid (and any warnings, to stderr) and exits with 0.
    #[cfg(feature = "cli")]
    pub fn from_env_args_or_exit() -> Settings {
        let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
        let result = match &args {
            Ok(args) => Settings::load(&args.iter().map(String::as_str).collect::<Vec<_>>(), std::env::vars_os()),
            Err(bad) => Err(SettingsError::Usage(format!("argument {bad:?} is not valid UTF-8"))),
        };
        let loaded = match result {
            Ok(loaded) => loaded.with_binary_defaults(),
            Err(SettingsError::Help(help)) => {
                print!("{help}");
                std::process::exit(0)
            }
            Err(err) => {
                eprintln!("vigil: {err}\nRun `vigil --help` for the settings and where they can be set.");
                std::process::exit(2)
            }
        };
        match loaded.mode {
            Mode::Serve => loaded.settings,
            Mode::PrintConfig => {
                print!("{}", loaded.to_toml());
                std::process::exit(0)
            }
            Mode::CheckConfig => {
                for w in loaded.settings.warnings() {
                    eprintln!("vigil: warning: {w}");
                }
                println!("vigil: configuration OK ({})", loaded.summary());
                std::process::exit(0)
            }
        }
    }

    /// The reference page of every setting, as Markdown: value formats, then a table of flag,
    /// value (format and range), default and description. `docs/settings.md` is this text; the
    /// table can be pasted into a README as is.
    pub fn docs_markdown() -> String {
        let mut md = String::from(
            "# Settings\n\
             \n\
             <!-- Generated by `Settings::docs_markdown()` from the table in src/settings.rs; \
             do not edit. Regenerate with `VIGIL_BLESS=1 cargo test --lib settings`. -->\n\
             \n\
             Every setting can be given three ways, and is a setting of `vigil::Settings`, set \
             with a chainable setter of the same name (`Settings::default().threads(8)`) and read \
             with its getter (`settings.get_threads()`):\n\
             \n\
             - a **flag** of `vigil`: `--max-body 1m`;\n\
             - an **environment variable**: `VIGIL_MAX_BODY=1m`;\n\
             - a key of the TOML file named by `--config FILE` (or `VIGIL_CONFIG=FILE`): \
             `max_body = \"1m\"`.\n\
             \n\
             Flags override the environment, which overrides the file, which overrides the \
             defaults. `PORT` (as set by Heroku-style platforms) makes the default bind \
             `0.0.0.0:$PORT`, as Gunicorn does, unless `--bind`, `VIGIL_BIND` or the file sets \
             `bind`. A file key or a `VIGIL_*` variable that names no setting is an error, as is a \
             value a setting does not accept: the server does not start, and the message names \
             the setting and where the value came from (exit status 2). Incoherent combinations \
             are logged as warnings.\n\
             \n\
             `vigil --print-config` prints the effective settings as a TOML file, each with where \
             it came from, and exits; `vigil --check-config` checks them and exits with 0, or \
             prints the error and exits with 2.\n\
             \n\
             In the file, a value is a string, a number or a boolean: `bind = \"0.0.0.0:8080\"`, \
             `threads = 8`, `timeout = \"2s\"` (or `timeout = 2`, seconds), `access_log = true`. \
             Switches also take `on`/`off`, `1`/`0`, `yes`/`no` as strings (and in the \
             environment).\n\
             \n",
        );
        md.push_str(FORMATS_MD);
        md.push_str("\n| Setting (file key) | Flag | Environment | Value | Default | Description |\n");
        md.push_str("|---|---|---|---|---|---|\n");
        for row in Settings::rows() {
            md.push_str(&format!(
                "| `{}` | `{}` | `{}` | {} | {} | {} |\n",
                row.field,
                row.flag,
                env_name(row.field),
                row.value(),
                row.default,
                sentence(row.doc).replace('|', "\\|")
            ));
        }
        md
    }
}

/// The value formats, for the docs page.
const FORMATS_MD: &str = "\
- **duration**: seconds (`2`, `1.5`) or a number with a unit: `250us`, `500ms`, `2s`, `1m`, \
`1h`. Negative values are rejected.
- **size**: bytes (`1048576`) or a number with a binary multiple `k`, `m`, `g`, `t` \
(case-insensitive, optional `b`/`ib` suffix): `64k`, `10m`, `10MiB`, `1g`.
";

/// One setting as the docs and `--help` show it.
struct Row {
    field: &'static str,
    flag: String,
    format: &'static str,
    accepted: String,
    default: String,
    doc: &'static str,
}

impl Row {
    /// Format and accepted range: `integer, 1 to 4096`.
    fn value(&self) -> String {
        match self.accepted.as_str() {
            "" => self.format.to_string(),
            accepted => format!("{}, {accepted}", self.format),
        }
    }
}

/// argh's help with a short usage line, followed by every default and value format.
#[cfg(feature = "cli")]
fn help_text(argh_help: &str) -> String {
    // argh's usage line lists every flag; the options below already do.
    let options = argh_help.split_once("\n\n").map_or(argh_help, |(_usage, rest)| rest);
    let mut help = format!("Usage: vigil [options]\n\n{}\n\nDefaults and values:\n", options.trim_end());
    let rows: Vec<[String; 3]> = Settings::rows()
        .into_iter()
        .map(|row| [row.value(), row.flag, row.default].map(|cell| cell.replace('`', "")))
        .collect();
    let width = |i: usize| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0);
    let (flag_width, default_width) = (width(1), width(2));
    for [value, flag, default] in &rows {
        help.push_str(&format!("  {flag:flag_width$}  {default:default_width$}  {value}\n"));
    }
    help.push_str(
        "\nDurations: 2 (seconds), 1.5, 250us, 500ms, 2s, 1m, 1h.\n\
         Sizes: 1048576, 64k, 10m, 10MiB, 1g (binary multiples, case-insensitive).\n",
    );
    help
}

/// A doc comment as a sentence: lines joined, first letter capitalized.
fn sentence(doc: &str) -> String {
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = doc.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => doc,
    }
}

/// Markdown code: `text` in backticks.
fn code(text: String) -> String {
    format!("`{text}`")
}

/// The flag of a field: `max_body` → `--max-body`.
fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// The environment variable of a field: `max_body` → `VIGIL_MAX_BODY`.
fn env_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

/// What every setting's environment variable starts with.
const ENV_PREFIX: &str = "VIGIL_";

/// A CLI field's text, if the flag was given (a switch that is on reads as `"on"`).
trait Given {
    fn given(&self) -> Option<&str>;
}

impl Given for Option<String> {
    fn given(&self) -> Option<&str> {
        self.as_deref()
    }
}

impl Given for bool {
    fn given(&self) -> Option<&str> {
        self.then_some("on")
    }
}

// ---- Value kinds: how each type is written on the command line and shown in the docs ----

/// How a setting's value is written on the command line and shown in the docs.
struct Kind<T> {
    /// What the value looks like, for the docs.
    format: &'static str,
    parse: fn(&str) -> Result<T, String>,
    show: fn(&T) -> String,
    /// How `--print-config` writes the shown value in TOML.
    toml: Toml,
}

/// How a setting's shown value is written as a TOML value.
#[derive(Clone, Copy)]
enum Toml {
    /// A string: `"30s"`.
    Text,
    /// An integer when the shown value is all digits (`8`), else a string (`"auto"`, `"10MiB"`).
    Number,
    /// A boolean: `on` is `true`.
    Switch,
}

impl Toml {
    fn literal(self, shown: &str) -> String {
        match self {
            Toml::Number if !shown.is_empty() && shown.bytes().all(|b| b.is_ascii_digit()) => shown.to_string(),
            Toml::Switch => (shown == "on").to_string(),
            _ => toml_string(shown),
        }
    }
}

/// A TOML basic string: quoted, with `\\`, `"` and control characters escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const ADDR: Kind<SocketAddr> =
    Kind { format: "`host:port`", parse: parse_addr, show: |addr| addr.to_string(), toml: Toml::Text };
const ADDR_OR_OFF: Kind<Option<SocketAddr>> = Kind {
    format: "`host:port` or `off`",
    parse: |s| {
        if s.trim().eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            parse_addr(s).map(Some)
        }
    },
    show: |addr| addr.map_or("off".to_string(), |a| a.to_string()),
    toml: Toml::Text,
};
const INT: Kind<usize> = Kind { format: "integer", parse: parse_int, show: usize::to_string, toml: Toml::Number };
const INT64: Kind<u64> = Kind { format: "integer", parse: parse_int, show: u64::to_string, toml: Toml::Number };
const INT_OR_AUTO: Kind<Option<usize>> = Kind {
    format: "integer or `auto`",
    parse: |s| {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(None)
        } else {
            parse_int(s).map(Some)
        }
    },
    show: |n| n.map_or("auto".to_string(), |n| n.to_string()),
    toml: Toml::Number,
};
const BYTES: Kind<usize> = Kind {
    format: "size",
    parse: |s| parse_size(s)?.try_into().map_err(|_| format!("size {s:?} is too large")),
    show: |&n| show_size(n as u64),
    toml: Toml::Number,
};
const SIZE: Kind<u64> = Kind { format: "size", parse: parse_size, show: |&n| show_size(n), toml: Toml::Number };
const DURATION: Kind<Duration> =
    Kind { format: "duration", parse: parse_duration, show: show_duration, toml: Toml::Text };
const PATH_OR_STDERR: Kind<Option<PathBuf>> = Kind {
    format: "`path` or `stderr`",
    parse: |s| match s.trim() {
        "" => Err("expected a file path or `stderr`, got an empty value".to_string()),
        t if t.eq_ignore_ascii_case("stderr") => Ok(None),
        _ => Ok(Some(PathBuf::from(s))),
    },
    show: |path| path.as_ref().map_or("stderr".to_string(), |p| p.display().to_string()),
    toml: Toml::Text,
};
const LOG_FORMAT: Kind<LogFormat> =
    Kind { format: "`text` or `json`", parse: LogFormat::from_str, show: LogFormat::to_string, toml: Toml::Text };
const PRIORITY: Kind<AbandonedPriority> = Kind {
    format: "`idle`, `lowest` or `unchanged`",
    parse: AbandonedPriority::from_str,
    show: AbandonedPriority::to_string,
    toml: Toml::Text,
};
const CPU_SHARE: Kind<Option<f64>> = Kind {
    format: "number of CPUs or `off`",
    parse: |s| {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() && !s.contains(['e', 'E']) => Ok(Some(v)),
            _ => Err(format!("expected a number of CPUs such as 0.1, or `off`, got {s:?}")),
        }
    },
    show: |v| v.map_or("off".to_string(), |v| v.to_string()),
    toml: Toml::Text,
};
/// A flag without a value (`--access-log`); in the environment and the file, `on`/`off`,
/// `true`/`false`, `1`/`0` or `yes`/`no` (and TOML booleans).
const SWITCH: Kind<bool> = Kind {
    format: "switch",
    parse: |s| match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected on/off, true/false, 1/0 or yes/no, got {s:?}")),
    },
    show: |&on| String::from(if on { "on" } else { "off" }),
    toml: Toml::Switch,
};

fn parse_int<T: FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("expected a non-negative integer, got {s:?}"))
}

/// `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:80`, or `localhost:8080`.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse() {
            return Ok(loopback(port));
        }
    }
    s.parse().map_err(|_| format!("expected host:port like 127.0.0.1:8080 or [::1]:8080, got {s:?}"))
}

// ---- Accepted values: a range that words its own error and its line in the docs ----

/// A check on one setting's value.
trait Rule<V> {
    /// `Err("must be ≥ 1, got 0")` when `value` is not accepted.
    fn test(&self, value: &V, show: &dyn Fn(&V) -> String) -> Result<(), String>;
    /// The accepted values for the docs (`"1 to 4096"`), or `""` for any.
    fn describe(&self, show: &dyn Fn(&V) -> String) -> String;
}

/// Any value is accepted.
struct Any;

/// A range of accepted values.
enum Accept<T> {
    /// `value ≥ min`.
    AtLeast(T),
    /// `value > min`.
    Above(T),
    /// `min ≤ value ≤ max`.
    Between(T, T),
}
use Accept::*;

/// For an optional setting: unset is accepted, a set value must be in the range.
struct IfSet<T>(Accept<T>);

impl<V> Rule<V> for Any {
    fn test(&self, _: &V, _: &dyn Fn(&V) -> String) -> Result<(), String> {
        Ok(())
    }

    fn describe(&self, _: &dyn Fn(&V) -> String) -> String {
        String::new()
    }
}

impl<T: PartialOrd> Rule<T> for Accept<T> {
    fn test(&self, value: &T, show: &dyn Fn(&T) -> String) -> Result<(), String> {
        let ok = match self {
            AtLeast(min) => value >= min,
            Above(min) => value > min,
            Between(min, max) => min <= value && value <= max,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("must be {}, got {}", self.words(show), show(value)))
        }
    }

    fn describe(&self, show: &dyn Fn(&T) -> String) -> String {
        match self {
            Between(min, max) => format!("{} to {}", show(min), show(max)),
            _ => self.words(show),
        }
    }
}

impl<T> Accept<T> {
    fn words(&self, show: &dyn Fn(&T) -> String) -> String {
        match self {
            AtLeast(min) => format!("≥ {}", show(min)),
            Above(min) => format!("> {}", show(min)),
            Between(min, max) => format!("between {} and {}", show(min), show(max)),
        }
    }
}

impl<T: PartialOrd + Clone> Rule<Option<T>> for IfSet<T> {
    fn test(&self, value: &Option<T>, show: &dyn Fn(&Option<T>) -> String) -> Result<(), String> {
        match value {
            Some(value) => self.0.test(value, &|v: &T| show(&Some(v.clone()))),
            None => Ok(()),
        }
    }

    fn describe(&self, show: &dyn Fn(&Option<T>) -> String) -> String {
        self.0.describe(&|v: &T| show(&Some(v.clone())))
    }
}

// ---- Defaults ----

const MIB: u64 = 1 << 20;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// 4 × the available parallelism, within the accepted 1..=4096.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus.saturating_mul(4).clamp(1, 4096)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- Durations and sizes ----

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration: seconds (`2`, `1.5`) or a number with a unit: `ns`, `us` (`µs`), `ms`,
/// `s`, `m` (`min`), `h`. Negative numbers, exponents, `NaN`, empty and unknown units are
/// rejected; precision is exact to the nanosecond.
///
/// ```
/// use std::time::Duration;
/// use vigil::internals::parse_duration;
///
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 2, 1.5, 500ms, 2s, 1m, 1h)");
    let (number, unit) = split_number(s);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => NANOS_PER_SEC,
        "m" | "min" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return Err(bad()),
    };
    let nanos = scale(number, unit_nanos).ok_or_else(bad)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| format!("duration {s:?} is too long"))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Parses a size in bytes: a number (`1048576`, `1.5`) with an optional binary multiple `k`,
/// `m`, `g`, `t` (case-insensitive, optionally followed by `b` or `ib`): `64k`, `10m`, `10MiB`,
/// `1g`, `512b`. Fractions round down to a whole byte.
///
/// ```
/// use vigil::internals::parse_size;
///
/// assert_eq!(parse_size("64k"), Ok(64 * 1024));
/// assert_eq!(parse_size("10MiB"), Ok(10 << 20));
/// assert!(parse_size("10 apples").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?} (expected e.g. 1048576, 64k, 10m, 10MiB, 1g)");
    let (number, unit) = split_number(s);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = scale(number, 1 << shift).ok_or_else(bad)?;
    u64::try_from(bytes).map_err(|_| format!("size {s:?} is too large"))
}

/// Splits `" 1.5 ms "` into `("1.5", "ms")`.
fn split_number(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// `number × unit`, rounded down, for a plain decimal `number` (`2`, `1.5`; not `.5` or `1.`).
fn scale(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !is_digits(whole) || !(fraction.is_empty() || is_digits(fraction)) || number.ends_with('.') {
        return None;
    }
    let mut total = whole.parse::<u128>().ok()?.checked_mul(unit)?;
    if !fraction.is_empty() {
        // Digits beyond 18 cannot change the result for units up to 2^40 or an hour in ns.
        let fraction = &fraction[..fraction.len().min(18)];
        let digits: u128 = fraction.parse().ok()?;
        total = total.checked_add(digits * unit / 10u128.pow(fraction.len() as u32))?;
    }
    Some(total)
}

/// The shortest exact form in the largest unit: `30s`, `10ms`, `1500ms`, `1m`, `0s`.
fn show_duration(d: &Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let units: [(&str, u128); 6] = [
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let (unit, size) = units.into_iter().find(|&(_, size)| nanos.is_multiple_of(size)).unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / size)
}

/// Bytes in the largest exact binary multiple: `8190`, `64KiB`, `10MiB`.
fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_parse_seconds_fractions_and_units() {
        for (text, want) in [
            ("2", secs(2)),
            ("1.5", ms(1500)),
            ("0", Duration::ZERO),
            ("500ms", ms(500)),
            ("2s", secs(2)),
            ("1m", secs(60)),
            ("1h", secs(3600)),
            ("250us", Duration::from_micros(250)),
            ("1.5ms", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            (" 3 s ", secs(3)),
            ("0.000000001", Duration::from_nanos(1)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn durations_reject_garbage() {
        for text in [
            "",
            " ",
            "-1",
            "-1s",
            "NaN",
            "inf",
            "1e3",
            "s",
            "1.",
            ".5",
            "1.2.3",
            "5 parsecs",
            "1S",
            "99999999999999999999999h",
            "2s3",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        let message = parse_duration("soon").unwrap_err();
        assert!(message.contains("\"soon\"") && message.contains("500ms"), "{message}");
    }

    #[test]
    fn durations_show_in_a_form_that_parses_back() {
        for d in [Duration::ZERO, ms(10), ms(1500), secs(30), secs(90), secs(7200), Duration::from_nanos(3)] {
            assert_eq!(parse_duration(&show_duration(&d)), Ok(d), "{}", show_duration(&d));
        }
        assert_eq!(show_duration(&secs(60)), "1m");
        assert_eq!(show_duration(&ms(1500)), "1500ms");
    }

    #[test]
    fn sizes_parse_bytes_and_binary_multiples() {
        for (text, want) in [
            ("1048576", 1 << 20),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("10m", 10 << 20),
            ("10MiB", 10 << 20),
            ("10mb", 10 << 20),
            ("1g", 1 << 30),
            ("2t", 2 << 40),
            ("512b", 512),
            ("1.5k", 1536),
            ("0", 0),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
        for text in ["", "-1", "k", "10x", "1e6", "10 apples", "99999999999t", "1.k", "10ib"] {
            assert!(parse_size(text).is_err(), "{text:?} was accepted");
        }
        assert_eq!(show_size(10 << 20), "10MiB");
        assert_eq!(show_size(8190), "8190");
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::default();
        assert_eq!(s.bind, loopback(8080));
        assert_eq!(s.admin_bind, None, "off in the library");
        assert_eq!(BINARY_ADMIN_BIND, loopback(9181));
        assert_eq!(s.threads, default_threads());
        assert_eq!(s.effective_backlog(), (2 * s.threads).max(MIN_DEFAULT_BACKLOG));
        assert_eq!(s.effective_max_abandoned(), s.threads);
        assert_eq!((s.timeout, s.cancel_grace, s.graceful_timeout), (secs(30), secs(5), secs(30)));
        assert_eq!((s.keepalive, s.watchdog_tick), (secs(5), ms(10)));
        assert_eq!((s.max_requests, s.max_requests_jitter, s.max_abandoned), (0, 0, None));
        assert_eq!(
            (s.limit_request_line, s.limit_request_fields, s.limit_request_field_size, s.limit_request_head),
            (8190, 100, 8190, 65536)
        );
        assert_eq!(s.max_body, 10 << 20);
        assert_eq!((s.header_timeout, s.body_timeout, s.write_timeout), (secs(10), secs(30), secs(30)));
        assert_eq!(s.max_connections, 10_000);
        assert_eq!((s.max_threads, s.effective_max_threads()), (None, 2 * s.threads));
        assert_eq!((s.exit_on_thread_ceiling, s.abandoned_priority), (false, AbandonedPriority::Idle));
        assert_eq!(s.abandoned_cpu, Some(0.1));
        assert_eq!((s.admin_max_connections, s.admin_timeout), (64, secs(5)));
        assert_eq!(s.log_format, LogFormat::Text);
        assert!(!s.access_log);
        assert_eq!((&s.log_file, s.log_file_max_size, s.log_file_keep), (&None, 64 << 20, 5));
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.warnings(), Vec::<String>::new());
    }

    #[test]
    fn no_args_give_the_defaults() {
        let parsed = Settings::from_args(&[]).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::default()));
    }

    #[test]
    fn setters_chain() {
        let s = Settings::default()
            .bind(loopback(0))
            .admin_bind(None)
            .threads(2)
            .backlog(Some(7))
            .timeout(secs(1))
            .max_body(1024)
            .log_format(LogFormat::Json)
            .access_log(true);
        assert_eq!((s.bind, s.admin_bind, s.threads), (loopback(0), None, 2));
        assert_eq!((s.effective_backlog(), s.timeout, s.max_body), (7, secs(1), 1024));
        assert_eq!((s.log_format, s.access_log), (LogFormat::Json, true));
        assert_eq!(s.effective_max_abandoned(), 2);
    }

    #[test]
    fn flags_set_every_kind_of_value() {
        let s = Settings::from_args(&[
            "--bind",
            "0.0.0.0:0",
            "--threads",
            "3",
            "--backlog",
            "9",
            "--timeout",
            "1.5",
            "--max-body",
            "64k",
            "--limit-request-head",
            "1m",
            "--log-format",
            "json",
            "--access-log",
            "--max-abandoned=5",
            "--keepalive",
            "0",
        ])
        .unwrap();
        assert_eq!(s.bind, "0.0.0.0:0".parse().unwrap());
        assert_eq!((s.threads, s.backlog, s.max_abandoned), (3, Some(9), Some(5)));
        assert_eq!((s.timeout, s.keepalive), (ms(1500), Duration::ZERO));
        assert_eq!((s.max_body, s.limit_request_head), (64 << 10, 1 << 20));
        assert_eq!((s.log_format, s.access_log), (LogFormat::Json, true));
    }

    #[test]
    fn log_file_takes_a_path_or_stderr() {
        let s = Settings::from_args(&["--log-file", r"C:\vigil logs\vigil.log", "--log-file-max-size", "1m"]).unwrap();
        assert_eq!(s.log_file, Some(PathBuf::from(r"C:\vigil logs\vigil.log")));
        assert_eq!(s.log_file_max_size, 1 << 20);
        assert_eq!(Settings::from_args(&["--log-file", "STDERR"]).unwrap().log_file, None);
        let err = Settings::from_args(&["--log-file", " "]).unwrap_err();
        assert_eq!(err.origin(), Some(&Origin::Flag("--log-file".into())));
        assert!(err.message().contains("empty"), "{err}");
        let err = Settings::from_args(&["--log-file-keep", "0"]).unwrap_err();
        assert_eq!(err.to_string(), "--log-file-keep: must be between 1 and 1000, got 0");
    }

    #[test]
    fn the_thread_ceiling_follows_threads_and_max_abandoned_unless_set() {
        let s = Settings::from_args(&["--threads", "4", "--max-abandoned", "10"]).unwrap();
        assert_eq!(s.effective_max_threads(), 14);
        let s = Settings::from_args(&["--threads", "4", "--max-threads", "6", "--exit-on-thread-ceiling"]).unwrap();
        assert_eq!((s.effective_max_threads(), s.exit_on_thread_ceiling), (6, true));
        let s =
            Settings::from_args(&["--max-threads", "auto", "--abandoned-priority", "lowest", "--abandoned-cpu", "off"])
                .unwrap();
        assert_eq!((s.max_threads, s.abandoned_priority, s.abandoned_cpu), (None, AbandonedPriority::Lowest, None));
        assert_eq!(Settings::from_args(&["--abandoned-cpu", "0.5"]).unwrap().abandoned_cpu, Some(0.5));
        let s = Settings::default().threads(3).max_threads(Some(3));
        assert!(s.warnings().iter().any(|w| w.starts_with("--max-threads 3 equals --threads")), "{:?}", s.warnings());
    }

    #[test]
    fn admin_bind_off_disables_the_admin_listener() {
        assert_eq!(Settings::from_args(&["--admin-bind", "off"]).unwrap().admin_bind, None);
        let s = Settings::from_args(&["--admin-bind", "[::1]:9000"]).unwrap();
        assert_eq!(s.admin_bind, Some("[::1]:9000".parse().unwrap()));
    }

    #[test]
    fn threads_zero_is_an_error_naming_the_flag() {
        let err = Settings::from_args(&["--threads", "0"]).unwrap_err();
        assert_eq!((err.setting(), err.origin()), (Some("threads"), Some(&Origin::Flag("--threads".into()))));
        assert_eq!(err.to_string(), "--threads: must be between 1 and 4096, got 0");
        let err = Settings::default().threads(0).validate().unwrap_err();
        assert_eq!((err.setting(), err.origin()), (Some("threads"), None));
        assert_eq!(err.to_string(), "--threads: must be between 1 and 4096, got 0");
    }

    #[test]
    fn bad_values_are_errors_naming_the_flag() {
        for (args, flag, words) in [
            (&["--threads", "many"][..], "--threads", "integer"),
            (&["--timeout", "0"], "--timeout", "must be > 0s, got 0s"),
            (&["--timeout", "-1s"], "--timeout", "invalid duration"),
            (&["--watchdog-tick", "2s"], "--watchdog-tick", "between 1ms and 1s, got 2s"),
            (&["--limit-request-head", "32"], "--limit-request-head", "between 64 and 1MiB, got 32"),
            (&["--max-body", "lots"], "--max-body", "invalid size"),
            (&["--backlog", "0"], "--backlog", "must be ≥ 1, got 0"),
            (&["--bind", "nowhere"], "--bind", "host:port"),
            (&["--log-format", "xml"], "--log-format", "`text` or `json`"),
            (&["--max-connections", "0"], "--max-connections", "≥ 1"),
            (&["--bind", "127.0.0.1:80", "--admin-bind", "127.0.0.1:80"], "--admin-bind", "differ"),
            (&["--threads", "8", "--max-threads", "4"], "--max-threads", "at least threads (8), got 4"),
            (&["--max-threads", "0"], "--max-threads", "between 1 and 65536, got 0"),
            (&["--abandoned-priority", "high"], "--abandoned-priority", "`idle`, `lowest` or `unchanged`"),
            (&["--abandoned-cpu", "0"], "--abandoned-cpu", "between 0.001 and 4096"),
            (&["--abandoned-cpu", "lots"], "--abandoned-cpu", "number of CPUs"),
            (&["--abandoned-cpu", "NaN"], "--abandoned-cpu", "number of CPUs"),
            (&["--admin-max-connections", "0"], "--admin-max-connections", "between 1 and 1024"),
            (&["--admin-timeout", "0"], "--admin-timeout", "between 10ms and 5m"),
        ] {
            let err = Settings::from_args(args).unwrap_err();
            assert_eq!(err.origin(), Some(&Origin::Flag(flag.into())), "{args:?}: {err}");
            assert!(err.message().contains(words), "{args:?}: {err}");
            assert!(err.to_string().starts_with(&format!("{flag}: ")), "{err}");
        }
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let err = Settings::from_args(&["--thraeds", "4"]).unwrap_err();
        assert!(matches!(&err, SettingsError::Usage(m) if m.contains("--thraeds")), "{err}");
        assert!(!err.is_help());
        let err = Settings::from_args(&["--threads"]).unwrap_err();
        assert!(matches!(&err, SettingsError::Usage(m) if m.contains("--threads")), "{err}");
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let Err(SettingsError::Help(help)) = Settings::from_args(&["--help"]) else { panic!("no help") };
        for row in Settings::rows() {
            assert!(help.contains(&format!("{} ", row.flag)), "{} missing", row.flag);
        }
        assert!(help.contains("4 × CPUs") && help.contains("127.0.0.1:8080"));
        for flag in ["--config", "--print-config", "--check-config"] {
            assert!(help.contains(flag), "{flag} missing");
        }
    }

    #[test]
    fn documented_defaults_parse_back() {
        assert_eq!(Settings::defaults_not_round_tripping(), Vec::<String>::new());
    }

    #[test]
    fn incoherent_settings_warn() {
        let s = Settings::default().timeout(secs(2)).cancel_grace(secs(3)).max_requests_jitter(5);
        let warnings = s.warnings();
        assert!(warnings.iter().any(|w| w.starts_with("--cancel-grace 3s")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.starts_with("--max-requests-jitter")), "{warnings:?}");
        let s = Settings::default().graceful_timeout(secs(1)).limit_request_head(1024);
        let warnings = s.warnings();
        assert!(warnings.iter().any(|w| w.starts_with("--graceful-timeout 1s")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.starts_with("--limit-request-line")), "{warnings:?}");
    }

    #[test]
    fn docs_settings_md_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/settings.md");
        let want = Settings::docs_markdown();
        if std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: regenerate it with `VIGIL_BLESS=1 cargo test --lib settings`",
            path.display()
        );
    }

    #[test]
    fn docs_have_one_row_per_setting() {
        let md = Settings::docs_markdown();
        for row in Settings::rows() {
            assert!(
                md.contains(&format!("| `{}` | `{}` | `{}` |", row.field, row.flag, env_name(row.field))),
                "{}",
                row.flag
            );
        }
        assert!(md.contains("| `threads` | `--threads` | `VIGIL_THREADS` | integer, 1 to 4096 | 4 × CPUs |"), "{md}");
        assert!(md.contains("| `max_body` | `--max-body` | `VIGIL_MAX_BODY` | size | `10MiB` |"), "{md}");
    }
}
