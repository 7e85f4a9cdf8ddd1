//! Running as a service: a Windows service under the Service Control Manager (SCM), or the
//! foreground process a supervisor such as systemd expects elsewhere.
//!
//! [`Server::run_as_service`] is the one call an application makes. On Windows it connects to the
//! SCM (`StartServiceCtrlDispatcher`), registers a control handler, reports `START_PENDING`, starts
//! the server and reports `RUNNING` once its listeners are bound. `STOP`, `SHUTDOWN` and
//! `PRESHUTDOWN` start the same drain as SIGTERM does on Linux ([`ShutdownTrigger::shutdown`]):
//! while it runs the SCM sees `STOP_PENDING` with a checkpoint that rises every
//! [`CHECKPOINT_EVERY`] and a wait hint of [`STOP_WAIT_HINT`]; then `STOPPED` with the exit status
//! (see [`ExitStatus`]). Elsewhere it is [`Server::serve`]: a systemd service is a foreground
//! process that drains on SIGTERM.
//!
//! [`Install`], [`start`], [`stop`] and [`uninstall`] manage a service from the command line
//! (`vigil service install|start|stop|uninstall NAME`); on other systems they return
//! [`ServiceError::Unsupported`].
//!
//! How the pieces fit: the control handler and the status reports go through `Lifecycle`, a
//! small state machine with no Windows calls in it (unit-tested on every platform); the Windows
//! glue (`scm.rs`, the `windows-service` crate) only translates its decisions into
//! `SetServiceStatus` calls.
//!
//! [`ShutdownTrigger::shutdown`]: crate::ShutdownTrigger::shutdown

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::app::App;
use crate::server::Server;
use crate::settings::Settings;

#[cfg(windows)]
mod scm;

/// How often a draining service raises the checkpoint of its `STOP_PENDING` report, so that the
/// SCM (and `vigil service stop`, `net stop`) can see it is making progress.
///
/// ```
/// use vigil::service::{CHECKPOINT_EVERY, STOP_WAIT_HINT};
/// // The wait hint leaves room for several late checkpoints before the SCM may give up.
/// assert!(STOP_WAIT_HINT >= CHECKPOINT_EVERY * 5);
/// ```
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The wait hint of each `STOP_PENDING` report: how long the SCM should wait for the next
/// checkpoint before it may consider the service hung. Ten checkpoints' worth, so a busy machine
/// that delays one report by a few seconds is not mistaken for a hung service.
///
/// ```
/// assert_eq!(vigil::service::STOP_WAIT_HINT.as_secs(), 10);
/// ```
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(10);

/// The wait hint of the `START_PENDING` report (binding the listeners takes milliseconds).
///
/// ```
/// assert_eq!(vigil::service::START_WAIT_HINT.as_secs(), 10);
/// ```
pub const START_WAIT_HINT: Duration = Duration::from_secs(10);

/// Why a vigil process or service ended, and the status its supervisor sees: the process exit
/// code of the `vigil` binary, and on Windows the service's exit code in `sc query` (`0` for
/// [`Drained`](ExitStatus::Drained); otherwise `WIN32_EXIT_CODE` 1066,
/// `ERROR_SERVICE_SPECIFIC_ERROR`, with the code below as `SERVICE_EXIT_CODE`).
///
/// Supervisors restart on the non-zero ones: `vigil service install` sets the service's recovery
/// actions to restart it (see [`RESTART_DELAYS`]); under systemd, `Restart=on-failure`.
///
/// ```
/// use vigil::service::{ExitStatus, EXIT_THREAD_CEILING};
/// assert_eq!(ExitStatus::Drained.code(), 0);
/// assert_eq!(ExitStatus::StartFailed.code(), 1);
/// assert_eq!(ExitStatus::ThreadCeiling.code(), EXIT_THREAD_CEILING);
/// assert_eq!(ExitStatus::from_code(75), Some(ExitStatus::ThreadCeiling));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ExitStatus {
    /// Stopped on request and drained: exit code 0.
    Drained = 0,
    /// Could not start: invalid settings, or an address that can't be bound (in use, no
    /// permission).
    StartFailed = 1,
    /// The server reached its thread ceiling (`--exit-on-thread-ceiling`), drained what could
    /// still finish and exited so that its supervisor restarts it.
    /// [`EXIT_THREAD_CEILING`] is its code.
    ThreadCeiling = EXIT_THREAD_CEILING,
}

/// The exit code of [`ExitStatus::ThreadCeiling`]: 75, `EX_TEMPFAIL` in sysexits.h ("temporary
/// failure, try again"), which no other path of vigil uses, so a supervisor or an alert can tell
/// "restart me, the thread ceiling was reached" from a crash (101 is Rust's panic code) or a bad
/// configuration (1, 2). The same constant as [`crate::EXIT_THREAD_CEILING`] (defined once, with
/// the server's [`StopCause`](crate::StopCause)).
///
/// ```
/// assert_eq!(vigil::service::EXIT_THREAD_CEILING, 75);
/// assert_eq!(vigil::service::EXIT_THREAD_CEILING, vigil::EXIT_THREAD_CEILING);
/// ```
pub use crate::server::EXIT_THREAD_CEILING;

impl ExitStatus {
    /// The numeric exit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The status whose code is `code`, if vigil uses it.
    pub fn from_code(code: u32) -> Option<ExitStatus> {
        [ExitStatus::Drained, ExitStatus::StartFailed, ExitStatus::ThreadCeiling]
            .into_iter()
            .find(|s| u32::from(s.code()) == code)
    }

    /// A few words for logs and messages: `drained`, `start failed`, `thread ceiling reached`.
    pub fn describe(self) -> &'static str {
        match self {
            ExitStatus::Drained => "drained",
            ExitStatus::StartFailed => "start failed",
            ExitStatus::ThreadCeiling => "thread ceiling reached",
        }
    }
}

/// What went wrong running or managing a service.
///
/// ```
/// use vigil::service::ServiceError;
/// let e = ServiceError::Unsupported;
/// assert!(e.to_string().contains("only on Windows"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Windows services exist only on Windows (the management functions on other systems).
    Unsupported,
    /// The process was not started by the Service Control Manager, so it can't run as a service
    /// (`StartServiceCtrlDispatcher` failed with `ERROR_FAILED_SERVICE_CONTROLLER_CONNECT`).
    /// Start it with `sc start NAME` / `vigil service start NAME`, or run it in a console with
    /// [`Server::serve`].
    NotStartedByScm,
    /// The server could not start (invalid settings, address in use). A service reports this to
    /// the SCM as [`ExitStatus::StartFailed`] before returning it.
    Start(io::Error),
    /// A service name the SCM would refuse: empty, longer than 256 characters, or containing
    /// `/` or `\`.
    InvalidName(String),
    /// A call to the Service Control Manager failed.
    Scm {
        /// What was being done: `"creating service vigil"`.
        action: String,
        /// The system's error.
        source: io::Error,
    },
    /// [`start`]: the service stopped before it reported `RUNNING`.
    StoppedWhileStarting(Stopped),
    /// [`start`] or [`stop`]: the service made no progress for longer than its wait hint allows.
    Timeout {
        /// `"start"` or `"stop"`.
        action: &'static str,
        /// The last state the SCM reported (`"START_PENDING"`, ...).
        state: &'static str,
        /// How long it was waited for.
        waited: Duration,
    },
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Unsupported => f.write_str(
                "Windows services exist only on Windows; elsewhere run vigil under your supervisor \
                 (systemd, Kubernetes, ...) as a foreground process: it drains on SIGTERM",
            ),
            ServiceError::NotStartedByScm => f.write_str(
                "not started by the Windows Service Control Manager, so it can't run as a service: \
                 start it with `sc start NAME` or `vigil service start NAME`, or leave out \
                 `service run NAME` to run in this console",
            ),
            ServiceError::Start(e) => write!(f, "the server could not start: {e}"),
            ServiceError::InvalidName(why) => write!(f, "invalid service name: {why}"),
            ServiceError::Scm { action, source } => {
                write!(f, "{action}: {source}")?;
                if source.kind() == io::ErrorKind::PermissionDenied {
                    f.write_str(" (managing services needs an elevated prompt: \"Run as administrator\")")?;
                }
                Ok(())
            }
            ServiceError::StoppedWhileStarting(how) => write!(f, "the service stopped while starting: {how}"),
            ServiceError::Timeout { action, state, waited } => write!(
                f,
                "gave up waiting for the service to {action} after {:.1}s (still {state}, no progress \
                 within its wait hint)",
                waited.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Start(e) | ServiceError::Scm { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// The exit code a stopped Windows service reported, as `sc query` shows it.
///
/// ```
/// use vigil::service::Stopped;
/// assert_eq!(Stopped::from_raw(0, 0), Stopped::Success);
/// assert_eq!(Stopped::from_raw(1066, 1).to_string(), "service-specific exit code 1 (start failed)");
/// assert_eq!(Stopped::from_raw(1067, 0).to_string(), "Win32 exit code 1067");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Exit code 0.
    Success,
    /// A Win32 error code (1067, `ERROR_PROCESS_ABORTED`: the process ended without reporting
    /// `STOPPED`, e.g. it crashed or was killed).
    Win32(u32),
    /// `ERROR_SERVICE_SPECIFIC_ERROR` (1066) with this code: for vigil, an [`ExitStatus`].
    ServiceSpecific(u32),
}

/// `ERROR_SERVICE_SPECIFIC_ERROR`: the service's own code is in `dwServiceSpecificExitCode`.
const ERROR_SERVICE_SPECIFIC_ERROR: u32 = 1066;

impl Stopped {
    /// From the two exit-code fields of a `SERVICE_STATUS`.
    pub fn from_raw(win32_exit_code: u32, service_specific_exit_code: u32) -> Stopped {
        match win32_exit_code {
            0 => Stopped::Success,
            ERROR_SERVICE_SPECIFIC_ERROR => Stopped::ServiceSpecific(service_specific_exit_code),
            code => Stopped::Win32(code),
        }
    }

    /// The report for a service that ends with `status`.
    pub fn from_exit_status(status: ExitStatus) -> Stopped {
        match status {
            ExitStatus::Drained => Stopped::Success,
            other => Stopped::ServiceSpecific(u32::from(other.code())),
        }
    }
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Stopped::Success => f.write_str("exit code 0"),
            Stopped::Win32(code) => write!(f, "Win32 exit code {code}"),
            Stopped::ServiceSpecific(code) => {
                write!(f, "service-specific exit code {code}")?;
                match ExitStatus::from_code(code) {
                    Some(s) => write!(f, " ({})", s.describe()),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Checks a service name the way the SCM will: 1 to 256 characters, no `/` or `\`.
///
/// ```
/// assert!(vigil::service::check_name("vigil").is_ok());
/// assert!(vigil::service::check_name("my api").is_ok());
/// assert!(vigil::service::check_name("a/b").is_err());
/// assert!(vigil::service::check_name("").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| Err(ServiceError::InvalidName(format!("{name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.chars().count() > 256 {
        return bad("longer than 256 characters");
    }
    if name.contains(['/', '\\']) {
        return bad("contains / or \\");
    }
    if name.contains('\0') {
        return bad("contains a NUL character");
    }
    Ok(())
}

impl Server {
    /// Runs `app` as the service `name` until the service is stopped, with the same drain as
    /// SIGTERM (see the [module docs](crate::service)). Blocks; returns once the service has
    /// reported `STOPPED`.
    ///
    /// - **Windows:** the process must have been started by the Service Control Manager
    ///   (installed with [`Install`], `vigil service install` or `sc create`, started with
    ///   `sc start`/`net start`); otherwise [`ServiceError::NotStartedByScm`] (under Wine that
    ///   answer took between 0.1 s and 10 s to come). A service has no console: give it a log
    ///   file (see [`run_as_service_with`](Server::run_as_service_with)). `STOP`, `SHUTDOWN` and `PRESHUTDOWN` drain it; a user's logoff is
    ///   ignored.
    /// - **Elsewhere:** [`Server::serve`]: prints the listening addresses, drains on
    ///   SIGTERM/SIGINT. `name` only appears in the log.
    ///
    /// ```no_run
    /// use vigil::{App, Response, Server, Settings};
    ///
    /// let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
    /// let settings = Settings::default().bind("127.0.0.1:8080".parse().unwrap());
    /// if let Err(e) = Server::run_as_service("my-api", settings, app) {
    ///     eprintln!("my-api: {e}");
    ///     std::process::exit(1);
    /// }
    /// ```
    pub fn run_as_service(name: &str, settings: Settings, app: App) -> Result<(), ServiceError> {
        Server::run_as_service_with(name, move || Ok((settings, app)))
    }

    /// [`run_as_service`](Server::run_as_service) with a setup step that runs once the service
    /// has told the SCM it is starting. A setup that fails (a log file that can't be opened, a
    /// configuration that can't be read) is then reported as a failed start
    /// ([`ExitStatus::StartFailed`]) and returned as [`ServiceError::Start`], rather than leaving
    /// the SCM waiting for a service that never connects (error 1053 after 30 s).
    ///
    /// ```no_run
    /// use vigil::{App, Response, Server, Settings};
    ///
    /// let result = Server::run_as_service_with("my-api", || {
    ///     let log = vigil::logging::LogFile::open(r"C:\my-api\logs\my-api.log", 64 << 20, 5)?;
    ///     let _ = vigil::logging::init_with(vigil::LogFormat::Json, false, Box::new(log));
    ///     let app = App::new().get("/", |_req, _ctx| Response::text("hello"));
    ///     Ok((Settings::default(), app))
    /// });
    /// ```
    pub fn run_as_service_with<F>(name: &str, setup: F) -> Result<(), ServiceError>
    where
        F: FnOnce() -> io::Result<(Settings, App)> + Send + 'static,
    {
        check_name(name)?;
        #[cfg(windows)]
        {
            scm::run(name, Box::new(setup))
        }
        #[cfg(not(windows))]
        {
            let (settings, app) = setup().map_err(ServiceError::Start)?;
            log::info!("{name}: running in the foreground; SIGTERM or SIGINT drains and stops it");
            let served = Server::serve(settings, app).map_err(|e| ServiceError::Start(e.into()));
            crate::logging::flush();
            served
        }
    }
}

/// The recovery actions [`Install`] sets: restart 5 s after the first failure, 10 s after the
/// second, 30 s after each later one; the failure count resets after a day without failures.
/// "Failure" includes a crash (the process ends without reporting `STOPPED`) and, because
/// `FailureActionsOnNonCrashFailures` is set, a `STOPPED` report with a non-zero exit code
/// (see [`ExitStatus`]).
///
/// ```
/// let secs: Vec<u64> = vigil::service::RESTART_DELAYS.iter().map(|d| d.as_secs()).collect();
/// assert_eq!(secs, [5, 10, 30]);
/// ```
pub const RESTART_DELAYS: [Duration; 3] = [Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(30)];

/// After how long without a failure the SCM resets the failure count (see [`RESTART_DELAYS`]).
///
/// ```
/// assert_eq!(vigil::service::FAILURE_RESET_AFTER.as_secs(), 86_400);
/// ```
pub const FAILURE_RESET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A Windows service to register with the Service Control Manager: the executable, the arguments
/// the SCM starts it with (quoted so that they reach the program unchanged), start at boot,
/// recovery actions ([`RESTART_DELAYS`]) and a pre-shutdown timeout long enough for the drain.
///
/// ```no_run
/// use std::time::Duration;
/// use vigil::service::Install;
///
/// // The SCM will start: "C:\app\my-api.exe" run "my api" --port 8080
/// let installed = Install::new("my api", ["run", "my api", "--port", "8080"])
///     .description("My API on vigil")
///     .preshutdown_timeout(Duration::from_secs(40))
///     .run()?;
/// println!("installed: {}", installed.command_line);
/// for w in &installed.warnings {
///     eprintln!("warning: {w}");
/// }
/// # Ok::<(), vigil::service::ServiceError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Install {
    /// The service name (`sc query NAME`).
    pub name: String,
    /// The name shown in the Services console (default: the service name).
    pub display_name: String,
    /// The description shown in the Services console.
    pub description: String,
    /// The program the SCM starts (default: the running executable).
    pub executable: Option<PathBuf>,
    /// The arguments it is started with.
    pub arguments: Vec<String>,
    /// How long Windows waits for the service at system shutdown (`PRESHUTDOWN`); make it at
    /// least the drain's length (`--graceful-timeout` plus a few seconds). Default 35 s.
    pub preshutdown_timeout: Duration,
}

/// What [`Install::run`] registered (see the [`Install`] example).
#[derive(Clone, Debug)]
pub struct Installed {
    /// The command line the SCM will run, as it stored it (`binPath`).
    pub command_line: String,
    /// Settings the SCM did not accept (e.g. recovery actions under Wine), worded for the user.
    pub warnings: Vec<String>,
}

impl Install {
    /// A service `name` that runs the current executable with `arguments`.
    pub fn new<A: Into<String>>(name: impl Into<String>, arguments: impl IntoIterator<Item = A>) -> Install {
        let name = name.into();
        Install {
            display_name: name.clone(),
            name,
            description: String::new(),
            executable: None,
            arguments: arguments.into_iter().map(Into::into).collect(),
            preshutdown_timeout: Duration::from_secs(35),
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn display_name(mut self, display_name: impl Into<String>) -> Install {
        self.display_name = display_name.into();
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Install {
        self.description = description.into();
        self
    }

    /// Sets the program to run (default: the running executable).
    #[must_use]
    pub fn executable(mut self, path: impl Into<PathBuf>) -> Install {
        self.executable = Some(path.into());
        self
    }

    /// Sets the pre-shutdown timeout.
    #[must_use]
    pub fn preshutdown_timeout(mut self, timeout: Duration) -> Install {
        self.preshutdown_timeout = timeout;
        self
    }

    /// Registers the service (it starts at boot; start it now with [`start`]).
    pub fn run(&self) -> Result<Installed, ServiceError> {
        check_name(&self.name)?;
        #[cfg(windows)]
        {
            scm::install(self)
        }
        #[cfg(not(windows))]
        {
            Err(ServiceError::Unsupported)
        }
    }
}

/// Starts the service `name` and waits until it reports `RUNNING` (or stops, or makes no
/// progress within its wait hint).
///
/// ```no_run
/// use vigil::service::{self, ServiceError};
/// match service::start("my-api") {
///     Ok(()) => println!("running"),
///     Err(ServiceError::StoppedWhileStarting(how)) => eprintln!("it stopped: {how}; see its log"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
pub fn start(name: &str) -> Result<(), ServiceError> {
    check_name(name)?;
    #[cfg(windows)]
    {
        scm::start(name)
    }
    #[cfg(not(windows))]
    {
        Err(ServiceError::Unsupported)
    }
}

/// Asks the service `name` to stop and waits until it reports `STOPPED`, for as long as its
/// `STOP_PENDING` checkpoint keeps rising (a vigil service drains for up to its
/// `--graceful-timeout`). Returns the exit code it reported; stopping a stopped service returns
/// its last one.
///
/// ```no_run
/// let how = vigil::service::stop("my-api")?;
/// println!("stopped: {how}"); // "exit code 0" after a drain
/// # Ok::<(), vigil::service::ServiceError>(())
/// ```
pub fn stop(name: &str) -> Result<Stopped, ServiceError> {
    check_name(name)?;
    #[cfg(windows)]
    {
        scm::stop(name)
    }
    #[cfg(not(windows))]
    {
        Err(ServiceError::Unsupported)
    }
}

/// Stops the service `name` if it is running (waiting as [`stop`] does), then removes it.
///
/// ```no_run
/// vigil::service::uninstall("my-api")?;
/// # Ok::<(), vigil::service::ServiceError>(())
/// ```
pub fn uninstall(name: &str) -> Result<(), ServiceError> {
    check_name(name)?;
    #[cfg(windows)]
    {
        scm::uninstall(name)
    }
    #[cfg(not(windows))]
    {
        Err(ServiceError::Unsupported)
    }
}

// ---- The service's side of the protocol, without Windows calls ----

/// The state a service reports (`dwCurrentState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) enum Phase {
    StartPending,
    Running,
    StopPending,
    Stopped,
}

/// One status report to the SCM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) struct Report {
    pub phase: Phase,
    /// Whether `STOP`, `SHUTDOWN` and `PRESHUTDOWN` are accepted (only while `RUNNING`: once a
    /// stop has begun the SCM sends no further stop, and nothing before the server is up).
    pub accepts_stop: bool,
    /// Rises while a start or stop is pending; 0 otherwise.
    pub checkpoint: u32,
    pub wait_hint: Duration,
    /// How it ended (only meaningful for `Stopped`).
    pub exit: Stopped,
}

/// A control the SCM sends, as far as vigil cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) enum Control {
    Stop,
    /// System shutdown, for services that did not ask for `PRESHUTDOWN` (or after it).
    Shutdown,
    /// System shutdown, sent first and with a longer, configurable time limit.
    Preshutdown,
    Interrogate,
    /// Anything else (pause, parameter change, power events, ...): not implemented.
    Other,
}

impl Control {
    /// Why the service stops, for the log line.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub fn reason(self) -> &'static str {
        match self {
            Control::Stop => "stop requested",
            Control::Shutdown | Control::Preshutdown => "the system is shutting down",
            Control::Interrogate | Control::Other => "other control",
        }
    }
}

/// What the control handler answers, does and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) struct Decision {
    /// `true`: `NO_ERROR`; `false`: `ERROR_CALL_NOT_IMPLEMENTED`.
    pub handled: bool,
    /// Report this before returning from the handler.
    pub report: Option<Report>,
    /// Start the drain (`ShutdownTrigger::shutdown`).
    pub start_drain: bool,
}

/// The service's status as it goes through start, run, drain and stop. Each method returns the
/// report to send; the checkpoint only ever rises while a stop is pending.
#[derive(Debug)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) struct Lifecycle {
    phase: Phase,
    checkpoint: u32,
}

#[cfg_attr(not(windows), allow(dead_code))]
impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle { phase: Phase::StartPending, checkpoint: 0 }
    }

    fn report(&self, wait_hint: Duration, exit: Stopped) -> Report {
        Report {
            phase: self.phase,
            accepts_stop: self.phase == Phase::Running,
            checkpoint: self.checkpoint,
            wait_hint,
            exit,
        }
    }

    /// The first report: `START_PENDING`, checkpoint 1.
    pub fn starting(&mut self) -> Report {
        self.phase = Phase::StartPending;
        self.checkpoint = 1;
        self.report(START_WAIT_HINT, Stopped::Success)
    }

    /// The listeners are bound: `RUNNING`, accepting stop controls.
    pub fn running(&mut self) -> Report {
        self.phase = Phase::Running;
        self.checkpoint = 0;
        self.report(Duration::ZERO, Stopped::Success)
    }

    /// A control arrived.
    pub fn control(&mut self, control: Control) -> Decision {
        let ignore = |handled| Decision { handled, report: None, start_drain: false };
        match (self.phase, control) {
            (_, Control::Interrogate) => ignore(true),
            (Phase::Running, Control::Stop | Control::Shutdown | Control::Preshutdown) => {
                self.phase = Phase::StopPending;
                self.checkpoint = 1;
                Decision {
                    handled: true,
                    report: Some(self.report(STOP_WAIT_HINT, Stopped::Success)),
                    start_drain: true,
                }
            }
            // Already draining (a shutdown during a stop, or a repeated control): one drain.
            (Phase::StopPending, Control::Stop | Control::Shutdown | Control::Preshutdown) => ignore(true),
            // Before the server is up (not accepted then, so the SCM does not send it), after
            // the end, and every other control.
            _ => ignore(false),
        }
    }

    /// Called every [`CHECKPOINT_EVERY`]: while the drain runs, the next `STOP_PENDING` report.
    pub fn tick(&mut self) -> Option<Report> {
        if self.phase != Phase::StopPending {
            return None;
        }
        self.checkpoint = self.checkpoint.saturating_add(1);
        Some(self.report(STOP_WAIT_HINT, Stopped::Success))
    }

    /// The last report: `STOPPED` with the exit code of `status`.
    pub fn stopped(&mut self, status: ExitStatus) -> Report {
        self.phase = Phase::Stopped;
        self.checkpoint = 0;
        self.report(Duration::ZERO, Stopped::from_exit_status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_reports_pending_then_running_and_accepts_stop_only_when_running() {
        let mut l = Lifecycle::new();
        let r = l.starting();
        assert_eq!((r.phase, r.checkpoint, r.accepts_stop), (Phase::StartPending, 1, false));
        assert!(r.wait_hint > Duration::ZERO);
        // A stop before the server is up is not accepted (and starts nothing).
        let d = l.control(Control::Stop);
        assert_eq!(d, Decision { handled: false, report: None, start_drain: false });
        let r = l.running();
        assert_eq!((r.phase, r.checkpoint, r.accepts_stop, r.wait_hint), (Phase::Running, 0, true, Duration::ZERO));
    }

    #[test]
    fn stop_shutdown_and_preshutdown_each_start_the_same_drain_once() {
        for first in [Control::Stop, Control::Shutdown, Control::Preshutdown] {
            let mut l = Lifecycle::new();
            l.starting();
            l.running();
            let d = l.control(first);
            assert!(d.handled && d.start_drain, "{first:?}");
            let r = d.report.expect("a STOP_PENDING report before the handler returns");
            assert_eq!((r.phase, r.checkpoint, r.accepts_stop), (Phase::StopPending, 1, false), "{first:?}");
            assert_eq!(r.wait_hint, STOP_WAIT_HINT);
            // Whatever comes next while draining: acknowledged, no second drain, no report.
            for again in [Control::Stop, Control::Shutdown, Control::Preshutdown] {
                assert_eq!(l.control(again), Decision { handled: true, report: None, start_drain: false });
            }
        }
    }

    #[test]
    fn the_checkpoint_rises_on_every_tick_while_draining_and_only_then() {
        let mut l = Lifecycle::new();
        l.starting();
        assert_eq!(l.tick(), None);
        l.running();
        assert_eq!(l.tick(), None, "no STOP_PENDING before a stop");
        l.control(Control::Preshutdown);
        let checkpoints: Vec<u32> = (0..5).map(|_| l.tick().unwrap().checkpoint).collect();
        assert_eq!(checkpoints, [2, 3, 4, 5, 6]);
        assert!(std::iter::from_fn(|| l.tick()).take(3).all(|r| r.phase == Phase::StopPending && !r.accepts_stop));
        let r = l.stopped(ExitStatus::Drained);
        assert_eq!((r.phase, r.checkpoint, r.exit, r.accepts_stop), (Phase::Stopped, 0, Stopped::Success, false));
        assert_eq!(l.tick(), None);
        assert_eq!(l.control(Control::Stop), Decision { handled: false, report: None, start_drain: false });
    }

    #[test]
    fn interrogate_is_acknowledged_and_other_controls_are_not_implemented() {
        let mut l = Lifecycle::new();
        l.starting();
        l.running();
        assert_eq!(l.control(Control::Interrogate), Decision { handled: true, report: None, start_drain: false });
        assert_eq!(l.control(Control::Other), Decision { handled: false, report: None, start_drain: false });
        assert_eq!(l.tick(), None, "neither started a stop");
    }

    #[test]
    fn a_failed_start_stops_with_the_service_specific_start_failed_code() {
        let mut l = Lifecycle::new();
        l.starting();
        let r = l.stopped(ExitStatus::StartFailed);
        assert_eq!((r.phase, r.exit), (Phase::Stopped, Stopped::ServiceSpecific(1)));
        assert_eq!(Stopped::from_exit_status(ExitStatus::ThreadCeiling), Stopped::ServiceSpecific(75));
    }

    #[test]
    fn exit_codes_are_distinct_and_round_trip() {
        let all = [ExitStatus::Drained, ExitStatus::StartFailed, ExitStatus::ThreadCeiling];
        for s in all {
            assert_eq!(ExitStatus::from_code(u32::from(s.code())), Some(s));
        }
        let mut codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        // 2 is the binary's usage error, 101 Rust's panic: neither may be mistaken for these.
        assert!(codes.iter().all(|&c| c != 2 && c != 101));
        assert_eq!(ExitStatus::from_code(2), None);
    }

    #[test]
    fn stopped_reads_the_two_exit_code_fields_as_sc_query_shows_them() {
        assert_eq!(Stopped::from_raw(0, 7), Stopped::Success);
        assert_eq!(Stopped::from_raw(1066, 75), Stopped::ServiceSpecific(75));
        assert_eq!(Stopped::from_raw(1066, 75).to_string(), "service-specific exit code 75 (thread ceiling reached)");
        assert_eq!(Stopped::from_raw(1066, 9).to_string(), "service-specific exit code 9");
        assert_eq!(Stopped::from_raw(1067, 0), Stopped::Win32(1067));
    }

    #[test]
    fn service_names_are_checked_like_the_scm_does() {
        for ok in ["vigil", "vigil e2e", "a.b-c_d", &"x".repeat(256)] {
            assert!(check_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a/b", "a\\b", "nul\0", &"x".repeat(257)] {
            let e = check_name(bad).unwrap_err();
            assert!(matches!(e, ServiceError::InvalidName(_)), "{bad:?}");
            assert!(e.to_string().starts_with("invalid service name: "), "{e}");
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn managing_services_elsewhere_is_unsupported_with_a_pointer_to_supervisors() {
        for r in [
            start("vigil").map(|_| ()),
            stop("vigil").map(|_| ()),
            uninstall("vigil"),
            Install::new("vigil", ["run"]).run().map(|_| ()),
        ] {
            let e = r.unwrap_err();
            assert!(matches!(e, ServiceError::Unsupported), "{e:?}");
            assert!(e.to_string().contains("SIGTERM"), "{e}");
        }
        // The name is still checked first, so a bad one is named as such.
        assert!(matches!(start("a/b"), Err(ServiceError::InvalidName(_))));
    }
}
