//! The Windows side of [`crate::service`]: the service control dispatcher, the control handler,
//! status reports, and managing services through the SCM. Built on the `windows-service` crate;
//! every decision comes from [`Lifecycle`], this file only makes the calls.
//!
//! The control handler is a plain function (zero-sized), and all its state is in [`ACTIVE`]:
//! `windows-service` frees the handler's boxed closure after `STOP`, `SHUTDOWN` and `PRESHUTDOWN`,
//! so a closure capturing anything would be freed memory if a second control arrived afterwards.
//! For a zero-sized handler there is nothing to free (checked at compile time by [`zero_sized`]).

use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use parking_lot::{const_mutex, Mutex};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept, ServiceErrorControl,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState,
    ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult, ServiceStatusHandle};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{
    Control, ExitStatus, Install, Installed, Lifecycle, Phase, Report, ServiceError, Stopped, CHECKPOINT_EVERY,
    FAILURE_RESET_AFTER, RESTART_DELAYS,
};
use crate::app::App;
use crate::server::{Server, ShutdownTrigger};
use crate::settings::Settings;

/// `ERROR_FAILED_SERVICE_CONTROLLER_CONNECT`: `StartServiceCtrlDispatcher` called by a process
/// the SCM did not start.
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;
/// `ERROR_SERVICE_ALREADY_RUNNING`.
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
/// `ERROR_SERVICE_NOT_ACTIVE`.
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
/// `ERROR_SERVICE_CANNOT_ACCEPT_CTRL`: the service is starting or already stopping.
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL: i32 = 1061;

/// How often [`start`] and [`stop`] poll the service's status.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Extra time [`start`] and [`stop`] allow beyond a service's wait hint before giving up.
const PROGRESS_SLACK: Duration = Duration::from_secs(5);
/// The longest [`start`] or [`stop`] waits in total, however the service keeps reporting progress.
const WAIT_AT_MOST: Duration = Duration::from_secs(3600);

/// The application's setup: what the server runs, or why it can't start.
pub(super) type Setup = Box<dyn FnOnce() -> io::Result<(Settings, App)> + Send>;

/// What [`run`] hands to the service's main function, which the SCM calls on a thread of its own.
struct Job {
    name: String,
    setup: Setup,
}

static JOB: Mutex<Option<Job>> = const_mutex(None);
/// What the service's main function ended with, for [`run`] to return.
static OUTCOME: Mutex<Option<Result<(), ServiceError>>> = const_mutex(None);
/// The running service, for the control handler.
static ACTIVE: Mutex<Option<Active>> = const_mutex(None);

struct Active {
    name: String,
    status: ServiceStatusHandle,
    lifecycle: Lifecycle,
    trigger: ShutdownTrigger,
}

define_windows_service!(ffi_service_main, service_main);

/// [`crate::Server::run_as_service_with`] on Windows.
pub(super) fn run(name: &str, setup: Setup) -> Result<(), ServiceError> {
    *JOB.lock() = Some(Job { name: name.to_string(), setup });
    // Blocks until the service has reported STOPPED and its main function returned.
    let dispatched = service_dispatcher::start(name, ffi_service_main);
    JOB.lock().take();
    match dispatched {
        Ok(()) => OUTCOME.lock().take().unwrap_or(Ok(())),
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => {
            Err(ServiceError::NotStartedByScm)
        }
        Err(e) => Err(scm_error("connecting to the Service Control Manager", e)),
    }
}

fn service_main(arguments: Vec<OsString>) {
    let outcome = run_service(arguments);
    *OUTCOME.lock() = Some(outcome);
}

fn run_service(arguments: Vec<OsString>) -> Result<(), ServiceError> {
    let Some(job) = JOB.lock().take() else {
        return Ok(());
    };
    // The SCM passes the service's real name first (for an own-process service it is not
    // checked against the name given to the dispatcher, so trust this one).
    let name = arguments.first().map(|n| n.to_string_lossy().into_owned()).unwrap_or(job.name);
    let status = service_control_handler::register(&name, zero_sized(on_control))
        .map_err(|e| scm_error("registering the service control handler", e))?;
    let mut lifecycle = Lifecycle::new();
    send(&name, &status, lifecycle.starting());
    let started = (job.setup)().and_then(|(settings, app)| {
        info!("service {name}: starting");
        Server::start(settings, app).map_err(std::io::Error::from)
    });
    let server = match started {
        Ok(server) => server,
        Err(e) => {
            error!("service {name}: could not start: {e}");
            crate::logging::flush();
            send(&name, &status, lifecycle.stopped(ExitStatus::StartFailed));
            return Err(ServiceError::Start(e));
        }
    };
    match server.admin_addr() {
        Some(admin) => {
            info!("service {name} running: listening on http://{}, admin on http://{admin}", server.local_addr())
        }
        None => info!("service {name} running: listening on http://{}", server.local_addr()),
    }
    // A service has no console, but Windows still sends it console events: a user's logoff
    // (ignored) and system shutdown (the same stop as the SCM's SHUTDOWN).
    if let Err(e) = crate::platform::drain_on_console_close(|| {
        handle_control(Control::Shutdown);
    }) {
        warn!("service {name}: console event handler not installed: {e}");
    }
    {
        let mut active = ACTIVE.lock();
        let running = lifecycle.running();
        *active = Some(Active { name: name.clone(), status, lifecycle, trigger: server.trigger() });
        send(&name, &status, running);
    }

    // Wait for the drain to end, raising the STOP_PENDING checkpoint meanwhile.
    while !server.wait_for(CHECKPOINT_EVERY) {
        let mut active = ACTIVE.lock();
        if let Some(a) = active.as_mut() {
            if let Some(report) = a.lifecycle.tick() {
                send(&a.name, &a.status, report);
            }
        }
    }
    // A drain the thread ceiling started (--exit-on-thread-ceiling) ends with its own status,
    // so that the recovery actions restart the service.
    let exit = match server.wait() {
        crate::server::StopCause::ThreadCeiling => ExitStatus::ThreadCeiling,
        _ => ExitStatus::Drained,
    };
    info!("service {name} stopped: {}", exit.describe());
    crate::logging::flush();
    let mut active = ACTIVE.lock();
    if let Some(mut a) = active.take() {
        send(&name, &a.status, a.lifecycle.stopped(exit));
    }
    Ok(())
}

/// `handler`, checked at compile time to be zero-sized (see the module docs).
fn zero_sized<F>(handler: F) -> F {
    const { assert!(std::mem::size_of::<F>() == 0, "the control handler must capture nothing") };
    handler
}

/// The control handler the SCM calls (on the dispatcher's thread, so it must return quickly).
fn on_control(control: ServiceControl) -> ServiceControlHandlerResult {
    let control = match control {
        ServiceControl::Stop => Control::Stop,
        ServiceControl::Shutdown => Control::Shutdown,
        ServiceControl::Preshutdown => Control::Preshutdown,
        ServiceControl::Interrogate => Control::Interrogate,
        _ => Control::Other,
    };
    if handle_control(control) {
        ServiceControlHandlerResult::NoError
    } else {
        ServiceControlHandlerResult::NotImplemented
    }
}

/// Applies `control`: the report goes out before the drain starts, so the SCM sees
/// `STOP_PENDING` (accepting no further stop) before this returns. `true`: handled.
fn handle_control(control: Control) -> bool {
    let mut active = ACTIVE.lock();
    let Some(a) = active.as_mut() else {
        return control == Control::Interrogate;
    };
    let decision = a.lifecycle.control(control);
    if let Some(report) = decision.report {
        send(&a.name, &a.status, report);
    }
    if decision.start_drain {
        info!("service {}: {}: draining", a.name, control.reason());
        let trigger = a.trigger.clone();
        drop(active);
        trigger.shutdown();
    }
    decision.handled
}

fn send(name: &str, status: &ServiceStatusHandle, report: Report) {
    let status_report = ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: match report.phase {
            Phase::StartPending => ServiceState::StartPending,
            Phase::Running => ServiceState::Running,
            Phase::StopPending => ServiceState::StopPending,
            Phase::Stopped => ServiceState::Stopped,
        },
        controls_accepted: if report.accepts_stop {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN | ServiceControlAccept::PRESHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: match report.exit {
            Stopped::Success => ServiceExitCode::Win32(0),
            Stopped::Win32(code) => ServiceExitCode::Win32(code),
            Stopped::ServiceSpecific(code) => ServiceExitCode::ServiceSpecific(code),
        },
        checkpoint: report.checkpoint,
        wait_hint: report.wait_hint,
        process_id: None,
    };
    if let Err(e) = status.set_service_status(status_report) {
        warn!("service {name}: reporting {:?} to the Service Control Manager failed: {}", report.phase, describe(&e));
    }
}

// ---- Managing services ----

fn scm_error(action: impl Into<String>, e: windows_service::Error) -> ServiceError {
    let source = match e {
        windows_service::Error::Winapi(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
    };
    ServiceError::Scm { action: action.into(), source }
}

fn describe(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(e) => e.to_string(),
        other => other.to_string(),
    }
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager, ServiceError> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(|e| scm_error("connecting to the Service Control Manager", e))
}

pub(super) fn install(spec: &Install) -> Result<Installed, ServiceError> {
    let executable = match &spec.executable {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|source| ServiceError::Scm { action: "finding this program's path".into(), source })?,
    };
    let info = ServiceInfo {
        name: spec.name.clone().into(),
        display_name: spec.display_name.clone().into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: executable,
        // windows-service quotes the path and each argument the way the C runtime and Rust's
        // std parse them back (spaces, quotes, trailing backslashes).
        launch_arguments: spec.arguments.iter().map(OsString::from).collect(),
        dependencies: Vec::new(),
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG)
        .map_err(|e| scm_error(format!("creating service {}", spec.name), e))?;
    let mut warnings = Vec::new();
    if !spec.description.is_empty() {
        if let Err(e) = service.set_description(&spec.description) {
            warnings.push(format!("the description was not set: {}", describe(&e)));
        }
    }
    let actions: Vec<ServiceAction> =
        RESTART_DELAYS.iter().map(|&delay| ServiceAction { action_type: ServiceActionType::Restart, delay }).collect();
    let recovery = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET_AFTER),
        reboot_msg: None,
        command: None,
        actions: Some(actions.clone()),
    };
    let sc_failure = format!(
        "sc failure \"{}\" reset= {} actions= {}",
        spec.name,
        FAILURE_RESET_AFTER.as_secs(),
        RESTART_DELAYS.iter().map(|d| format!("restart/{}", d.as_millis())).collect::<Vec<_>>().join("/")
    );
    // Read the actions back: an SCM may accept them without keeping them (Wine does).
    match service.update_failure_actions(recovery).and_then(|()| service.get_failure_actions()) {
        Ok(kept) if kept.actions.as_deref() == Some(&actions[..]) => {}
        Ok(_) => warnings.push(format!(
            "the Service Control Manager did not keep the recovery actions (restart on failure); set them with: {sc_failure}"
        )),
        Err(e) => warnings.push(format!(
            "the recovery actions (restart on failure) could not be set or checked ({}); set them with: {sc_failure}",
            describe(&e)
        )),
    }
    if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
        warnings.push(format!(
            "restarting after a non-zero exit code (not only after a crash) could not be enabled ({}); enable it with: \
             sc failureflag \"{}\" 1",
            describe(&e),
            spec.name
        ));
    }
    if let Err(e) = service.set_preshutdown_timeout(spec.preshutdown_timeout) {
        warnings.push(format!(
            "the pre-shutdown timeout ({:?}) was not set ({}): at system shutdown Windows may end the drain early",
            spec.preshutdown_timeout,
            describe(&e)
        ));
    }
    let command_line = service
        .query_config()
        .map(|c| c.executable_path.to_string_lossy().into_owned())
        .map_err(|e| scm_error(format!("reading back the configuration of {}", spec.name), e))?;
    Ok(Installed { command_line, warnings })
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Stopped => "STOPPED",
        ServiceState::StartPending => "START_PENDING",
        ServiceState::StopPending => "STOP_PENDING",
        ServiceState::Running => "RUNNING",
        ServiceState::ContinuePending => "CONTINUE_PENDING",
        ServiceState::PausePending => "PAUSE_PENDING",
        ServiceState::Paused => "PAUSED",
    }
}

fn exit_of(status: &ServiceStatus) -> Stopped {
    match status.exit_code {
        ServiceExitCode::Win32(code) => Stopped::from_raw(code, 0),
        ServiceExitCode::ServiceSpecific(code) => Stopped::ServiceSpecific(code),
    }
}

/// Polls `service` until its state satisfies `done`, for as long as it shows progress (a new
/// state or checkpoint) within its wait hint plus [`PROGRESS_SLACK`], and at most
/// [`WAIT_AT_MOST`]. Returns that status.
fn wait_for(
    service: &windows_service::service::Service,
    name: &str,
    action: &'static str,
    done: impl Fn(ServiceState) -> bool,
) -> Result<ServiceStatus, ServiceError> {
    let began = Instant::now();
    let mut last = None;
    let mut progress_at = Instant::now();
    loop {
        let status = service.query_status().map_err(|e| scm_error(format!("querying service {name}"), e))?;
        if done(status.current_state) {
            return Ok(status);
        }
        if last != Some((status.current_state, status.checkpoint)) {
            last = Some((status.current_state, status.checkpoint));
            progress_at = Instant::now();
        }
        let allowance = status.wait_hint.max(Duration::from_secs(1)) + PROGRESS_SLACK;
        if progress_at.elapsed() > allowance || began.elapsed() > WAIT_AT_MOST {
            return Err(ServiceError::Timeout {
                action,
                state: state_name(status.current_state),
                waited: began.elapsed(),
            });
        }
        std::thread::sleep(POLL_EVERY);
    }
}

pub(super) fn start(name: &str) -> Result<(), ServiceError> {
    let service = manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, ServiceAccess::START | ServiceAccess::QUERY_STATUS)
        .map_err(|e| scm_error(format!("opening service {name}"), e))?;
    match service.start::<&str>(&[]) {
        Ok(()) => {}
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(ERROR_SERVICE_ALREADY_RUNNING) => {}
        Err(e) => return Err(scm_error(format!("starting service {name}"), e)),
    }
    let status = wait_for(&service, name, "start", |s| matches!(s, ServiceState::Running | ServiceState::Stopped))?;
    match status.current_state {
        ServiceState::Stopped => Err(ServiceError::StoppedWhileStarting(exit_of(&status))),
        _ => Ok(()),
    }
}

pub(super) fn stop(name: &str) -> Result<Stopped, ServiceError> {
    let service = manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)
        .map_err(|e| scm_error(format!("opening service {name}"), e))?;
    stop_service(&service, name)
}

fn stop_service(service: &windows_service::service::Service, name: &str) -> Result<Stopped, ServiceError> {
    // A stop is not accepted while the service starts: let the start finish first.
    let status = wait_for(service, name, "start", |s| s != ServiceState::StartPending)?;
    if !matches!(status.current_state, ServiceState::Stopped | ServiceState::StopPending) {
        match service.stop() {
            Ok(_) => {}
            // Stopped or began stopping meanwhile.
            Err(windows_service::Error::Winapi(e))
                if matches!(e.raw_os_error(), Some(ERROR_SERVICE_NOT_ACTIVE | ERROR_SERVICE_CANNOT_ACCEPT_CTRL)) => {}
            Err(e) => return Err(scm_error(format!("stopping service {name}"), e)),
        }
    }
    let status = wait_for(service, name, "stop", |s| s == ServiceState::Stopped)?;
    Ok(exit_of(&status))
}

pub(super) fn uninstall(name: &str) -> Result<(), ServiceError> {
    let service = manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS | ServiceAccess::DELETE)
        .map_err(|e| scm_error(format!("opening service {name}"), e))?;
    stop_service(&service, name)?;
    service.delete().map_err(|e| scm_error(format!("deleting service {name}"), e))
}
