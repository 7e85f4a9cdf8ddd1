//! The `vigil` binary: the demo app on the settings given by flags, `VIGIL_*` variables and the
//! `--config` file (see `vigil --help` and docs/settings.md), and `vigil service ...` to run it
//! as a Windows service.

mod demo;

use std::time::Duration;

use vigil::service::{self, ExitStatus, Install, ServiceError};
use vigil::{Server, Settings};

fn main() {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    if args.first().map(String::as_str) == Some("service") {
        std::process::exit(service_main(&args[1..]));
    }
    let settings = Settings::from_env_args_or_exit();
    if let Err(e) = init_logging(&settings) {
        eprintln!("vigil: {e}");
        std::process::exit(ExitStatus::StartFailed.code().into());
    }
    let app = demo::app(settings.get_timeout());
    let result = Server::serve(settings, app);
    vigil::logging::flush();
    if let Err(e) = result {
        eprintln!("vigil: {e}");
        std::process::exit(ExitStatus::StartFailed.code().into());
    }
}

/// Installs the logger: to `--log-file` (rotated by size) or stderr. `RUST_LOG` picks the
/// levels (default `info`); see vigil::logging. Fails only when the log file can't be opened.
fn init_logging(settings: &Settings) -> std::io::Result<()> {
    let sink: Box<dyn std::io::Write + Send> = match &settings.get_log_file() {
        Some(path) => Box::new(open_log_file(settings, path)?),
        None => Box::new(std::io::stderr()),
    };
    if let Err(e) = vigil::logging::init_with(settings.get_log_format(), settings.get_access_log(), sink) {
        eprintln!("vigil: could not install the logger: {e}");
    }
    Ok(())
}

fn open_log_file(settings: &Settings, path: &std::path::Path) -> std::io::Result<vigil::logging::LogFile> {
    vigil::logging::LogFile::open(path, settings.get_log_file_max_size(), settings.get_log_file_keep()).map_err(|e| {
        std::io::Error::new(e.kind(), format!("--log-file: cannot open {} for writing: {e}", path.display()))
    })
}

const SERVICE_USAGE: &str = "\
Usage: vigil service install NAME [flags...]   register vigil as the Windows service NAME, started
                                               at boot with these flags (see `vigil --help`)
       vigil service start NAME                start it and wait until it runs
       vigil service stop NAME                 stop it (drains first) and wait until it has stopped
       vigil service uninstall NAME            stop it if running, then remove it
       vigil service run NAME [flags...]       what the Service Control Manager runs

Managing services needs an elevated prompt (\"Run as administrator\").
";

/// A parsed `vigil service ...` command line.
#[derive(Debug, PartialEq, Eq)]
enum ServiceCommand {
    Install { name: String, flags: Vec<String> },
    Start { name: String },
    Stop { name: String },
    Uninstall { name: String },
    Run { name: String, flags: Vec<String> },
}

/// Parses the arguments after `vigil service`. `Err`: the message for stderr (usage errors), or
/// `Ok(None)` for `--help`.
fn parse_service_args(args: &[String]) -> Result<Option<ServiceCommand>, String> {
    let (action, rest) = match args {
        [] => return Err("missing the action: install, start, stop, uninstall or run".into()),
        [first, ..] if first == "--help" || first == "help" || first == "-h" => return Ok(None),
        [first, rest @ ..] => (first.as_str(), rest),
    };
    let (name, flags) = match rest {
        [] => return Err(format!("{action}: missing the service NAME")),
        [name, flags @ ..] => (name.clone(), flags.to_vec()),
    };
    if name.starts_with("--") {
        return Err(format!("{action}: the service NAME comes before the flags, got {name:?}"));
    }
    service::check_name(&name).map_err(|e| format!("{action}: {e}"))?;
    let no_flags = |cmd: ServiceCommand| {
        if flags.is_empty() {
            Ok(Some(cmd))
        } else {
            Err(format!("{action} takes only the service NAME; flags belong to `vigil service install`, got {flags:?}"))
        }
    };
    match action {
        "install" => Ok(Some(ServiceCommand::Install { name, flags })),
        "run" => Ok(Some(ServiceCommand::Run { name, flags })),
        "start" => no_flags(ServiceCommand::Start { name }),
        "stop" => no_flags(ServiceCommand::Stop { name }),
        "uninstall" => no_flags(ServiceCommand::Uninstall { name }),
        other => Err(format!("unknown action {other:?}: expected install, start, stop, uninstall or run")),
    }
}

/// Validates the server flags the way `vigil` itself will when the service starts, so that a
/// bad flag fails now rather than at the next boot.
fn service_settings(action: &str, flags: &[String]) -> Result<Settings, i32> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Settings::load(&flags, std::iter::empty::<(&str, &str)>()).map(|l| l.with_binary_defaults().settings).map_err(|e| {
        if e.is_help() {
            print!("{}", e.message());
            0
        } else {
            eprintln!("vigil service {action}: {e}\nRun `vigil --help` for the list of flags.");
            2
        }
    })
}

/// The pre-shutdown time `install` asks Windows for: the drain's longest run. It is counted from
/// the stop (`--shutdown-delay` included) and lasts `--graceful-timeout`, plus up to
/// `--write-timeout` for answers still being written, plus the drain's own second; one more
/// second for the last status report. Windows only waits that long if the drain does.
fn preshutdown_timeout(settings: &Settings) -> Duration {
    settings.get_graceful_timeout() + settings.get_write_timeout() + Duration::from_secs(2)
}

/// `vigil service ...`: returns the process exit code.
fn service_main(args: &[String]) -> i32 {
    let command = match parse_service_args(args) {
        Ok(Some(command)) => command,
        Ok(None) => {
            print!("{SERVICE_USAGE}");
            return 0;
        }
        Err(message) => {
            eprintln!("vigil service: {message}\n\n{SERVICE_USAGE}");
            return 2;
        }
    };
    let failed = |action: &str, name: &str, e: ServiceError| {
        eprintln!("vigil service {action} {name}: {e}");
        match e {
            ServiceError::Unsupported | ServiceError::InvalidName(_) => 2,
            _ => 1,
        }
    };
    match command {
        ServiceCommand::Install { name, flags } => {
            let settings = match service_settings("install", &flags) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if cfg!(not(windows)) {
                return failed("install", &name, ServiceError::Unsupported);
            }
            match &settings.get_log_file() {
                // A service starts in C:\Windows\System32: a relative path would land there.
                Some(path) if path.is_relative() => {
                    eprintln!(
                        "vigil service install: --log-file: a service starts in C:\\Windows\\System32, so give \
                         an absolute path (e.g. C:\\vigil\\logs\\vigil.log), got {}",
                        path.display()
                    );
                    return 2;
                }
                // Fail now, at the console, rather than at the service's first start.
                Some(path) => {
                    if let Err(e) = open_log_file(&settings, path) {
                        eprintln!("vigil service install: {e}");
                        return 1;
                    }
                }
                None => eprintln!("note: a service has no console, so without --log-file PATH its log is lost"),
            }
            let arguments = ["service", "run", name.as_str()].into_iter().map(String::from).chain(flags);
            let install = Install::new(&name, arguments)
                .description(format!("vigil HTTP/1.1 application server (vigil service run {name})"))
                .preshutdown_timeout(preshutdown_timeout(&settings));
            match install.run() {
                Ok(installed) => {
                    println!("installed service {name}: {}", installed.command_line);
                    for w in &installed.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("start it with: vigil service start {}", quote_for_cmd(&name));
                    0
                }
                Err(e) => failed("install", &name, e),
            }
        }
        ServiceCommand::Start { name } => match service::start(&name) {
            Ok(()) => {
                println!("service {name} is running");
                0
            }
            Err(e) => failed("start", &name, e),
        },
        ServiceCommand::Stop { name } => {
            println!("stopping service {name} (it drains first: up to its --graceful-timeout)");
            match service::stop(&name) {
                Ok(how) => {
                    println!("service {name} stopped: {how}");
                    0
                }
                Err(e) => failed("stop", &name, e),
            }
        }
        ServiceCommand::Uninstall { name } => match service::uninstall(&name) {
            Ok(()) => {
                println!("service {name} removed");
                0
            }
            Err(e) => failed("uninstall", &name, e),
        },
        ServiceCommand::Run { name, flags } => {
            let settings = match service_settings("run", &flags) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // Opening the log file is part of the service's start, so that a failure there is
            // reported to the Service Control Manager as a failed start.
            let result = Server::run_as_service_with(&name, move || {
                init_logging(&settings)?;
                let app = demo::app(settings.get_timeout());
                Ok((settings, app))
            });
            vigil::logging::flush();
            match result {
                Ok(()) => 0,
                Err(ServiceError::Start(e)) => {
                    eprintln!("vigil: {e}");
                    ExitStatus::StartFailed.code().into()
                }
                Err(e @ ServiceError::NotStartedByScm) => {
                    eprintln!("vigil service run {name}: {e}");
                    2
                }
                Err(e) => failed("run", &name, e),
            }
        }
    }
}

/// `name` as typed at a cmd.exe or PowerShell prompt: in double quotes when it has a space.
fn quote_for_cmd(name: &str) -> String {
    if name.contains(' ') {
        format!("\"{name}\"")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<ServiceCommand>, String> {
        parse_service_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn service_actions_parse_with_their_name_and_flags() {
        assert_eq!(
            parse(&["install", "my api", "--bind", "0.0.0.0:80", "--graceful-timeout=20s"]),
            Ok(Some(ServiceCommand::Install {
                name: "my api".into(),
                flags: vec!["--bind".into(), "0.0.0.0:80".into(), "--graceful-timeout=20s".into()]
            }))
        );
        assert_eq!(parse(&["start", "vigil"]), Ok(Some(ServiceCommand::Start { name: "vigil".into() })));
        assert_eq!(parse(&["stop", "vigil"]), Ok(Some(ServiceCommand::Stop { name: "vigil".into() })));
        assert_eq!(parse(&["uninstall", "vigil"]), Ok(Some(ServiceCommand::Uninstall { name: "vigil".into() })));
        assert_eq!(
            parse(&["run", "vigil", "--threads", "2"]),
            Ok(Some(ServiceCommand::Run { name: "vigil".into(), flags: vec!["--threads".into(), "2".into()] }))
        );
        assert_eq!(parse(&["--help"]), Ok(None));
    }

    #[test]
    fn service_usage_errors_say_what_is_wrong() {
        for (args, words) in [
            (&[][..], "missing the action"),
            (&["install"], "missing the service NAME"),
            (&["install", "--bind", "x"], "NAME comes before the flags"),
            (&["start", "vigil", "--threads", "2"], "takes only the service NAME"),
            (&["restart", "vigil"], "unknown action \"restart\""),
            (&["install", "a/b"], "invalid service name"),
            (&["stop", ""], "invalid service name"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(words), "{args:?}: {err}");
        }
    }

    #[test]
    fn install_validates_the_flags_it_stores() {
        assert!(service_settings("install", &["--threads".into(), "0".into()]).is_err());
        let flags = ["--graceful-timeout", "20s", "--write-timeout", "10s"].map(String::from);
        let s = service_settings("install", &flags).unwrap();
        assert_eq!(preshutdown_timeout(&s), Duration::from_secs(32));
    }

    #[cfg(not(windows))]
    #[test]
    fn service_commands_elsewhere_exit_2_without_touching_anything() {
        for args in [&["start", "vigil"][..], &["stop", "vigil"], &["uninstall", "vigil"], &["install", "vigil"]] {
            assert_eq!(service_main(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()), 2, "{args:?}");
        }
    }
}
