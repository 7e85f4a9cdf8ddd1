//! The `vigil` binary's settings sources end to end: `--config` files, `VIGIL_*` variables,
//! `PORT`, `--print-config` and `--check-config`, with the exit statuses and messages a user
//! sees. The precedence rules one by one are unit tests in src/settings/load.rs; here each source
//! is shown to reach the running server.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// A config file with `text`, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("vigil-config-e2e-{}-{}.toml", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `vigil args` with the extra environment `env` to completion.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    vigil_command().args(args).envs(env.iter().copied()).output().expect("run vigil")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The paths in these tests are the test machine's: a Windows build under Wine would not read
/// them the same way.
fn native() -> bool {
    std::env::var_os("VIGIL_SERVER_CMD").is_none()
}

#[test]
fn print_config_shows_each_effective_value_and_where_it_came_from() {
    if !native() {
        return;
    }
    let file = ConfigFile::new("threads = 5\nmax_body = \"1m\"\ntimeout = 9\n");
    let out = run(
        &["--config", file.path(), "--threads", "3", "--print-config"],
        &[("VIGIL_TIMEOUT", "2s"), ("PORT", "5000")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |key: &str| text.lines().find(|l| l.starts_with(&format!("{key} "))).unwrap_or("").to_string();
    assert!(line("threads").starts_with("threads = 3 ") && line("threads").ends_with("# --threads"), "{text}");
    assert!(line("timeout").starts_with("timeout = \"2s\"") && line("timeout").ends_with("# VIGIL_TIMEOUT"), "{text}");
    assert!(line("max_body").ends_with(&format!("# {}:2", file.path())), "{text}");
    assert!(line("bind").starts_with("bind = \"0.0.0.0:5000\"") && line("bind").ends_with("# PORT"), "{text}");
    assert!(line("keepalive").ends_with("# default"), "{text}");
    // Nothing was started: the output is the whole of it.
    assert!(!text.contains("listening on"), "{text}");
}

#[test]
fn print_config_output_starts_the_same_server_as_a_config_file() {
    if !native() {
        return;
    }
    let printed =
        run(&["--threads", "3", "--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0", "--print-config"], &[]);
    assert_eq!(printed.status.code(), Some(0), "{}", stderr(&printed));
    let file = ConfigFile::new(&stdout(&printed));
    let srv = ServerProc::start_exactly(&["--config", file.path()], &[]);
    assert_eq!(get(srv.addr, "/").text(), "hello");
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 3.0);
}

#[test]
fn check_config_exits_0_for_valid_settings_and_prints_warnings() {
    if !native() {
        return;
    }
    let file = ConfigFile::new("timeout = \"2s\"\ncancel_grace = \"3s\"\n");
    let out = run(&["--config", file.path(), "--check-config"], &[("VIGIL_THREADS", "2")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("configuration OK"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("2 from {}", file.path())), "{}", stdout(&out));
    assert!(stderr(&out).contains("warning: --cancel-grace 3s is not below --timeout 2s"), "{}", stderr(&out));
}

/// Arguments, extra environment, and the start of the error wanted on stderr.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);

#[test]
fn check_config_names_the_setting_and_its_source_and_exits_2() {
    if !native() {
        return;
    }
    let bad_value = ConfigFile::new("# limits\nthreads = 0\n");
    let unknown_key = ConfigFile::new("thraeds = 4\n");
    let not_toml = ConfigFile::new("max_body = 1m\n");
    let bad_file_value = format!("vigil: {}:2: threads: must be between 1 and 4096, got 0", bad_value.path());
    let unknown_file_key = format!("vigil: {}:1: thraeds: no such setting (did you mean threads?)", unknown_key.path());
    let missing = std::env::temp_dir().join(format!("vigil-config-e2e-missing-{}.toml", std::process::id()));
    let missing = missing.to_str().unwrap();
    let cases: Vec<Case> = vec![
        (vec!["--timeout", "0"], vec![], "vigil: --timeout: must be > 0s, got 0s".into()),
        (vec![], vec![("VIGIL_TIMEOUT", "soon")], "vigil: VIGIL_TIMEOUT: invalid duration \"soon\"".into()),
        (vec!["--config", bad_value.path()], vec![], bad_file_value),
        (vec!["--config", unknown_key.path()], vec![], unknown_file_key),
        (
            vec![],
            vec![("VIGIL_MAXBODY", "1m")],
            "vigil: VIGIL_MAXBODY: no such setting (did you mean VIGIL_MAX_BODY?)".into(),
        ),
        (
            vec!["--config", not_toml.path()],
            vec![],
            format!("vigil: config file {}: TOML parse error", not_toml.path()),
        ),
        (vec!["--config", missing], vec![], format!("vigil: config file {missing}: ")),
        (vec![], vec![("PORT", "http")], "vigil: PORT: expected a port number from 0 to 65535, got \"http\"".into()),
    ];
    for (args, env, want) in cases {
        let mut all = args.clone();
        all.push("--check-config");
        let out = run(&all, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with(&want), "{args:?} {env:?}: want {want:?}, got:\n{}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
}

#[test]
fn server_refuses_to_start_on_a_vigil_variable_that_names_no_setting() {
    let out = run(&["--bind", "127.0.0.1:0", "--admin-bind", "off"], &[("VIGIL_THRAEDS", "4")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("VIGIL_THRAEDS: no such setting (did you mean VIGIL_THREADS?)"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("listening on"), "{}", stdout(&out));
}

#[test]
fn server_takes_settings_from_the_file_and_the_environment_over_it() {
    if !native() {
        return;
    }
    let file = ConfigFile::new(
        "bind = \"127.0.0.1:0\"\nadmin_bind = \"127.0.0.1:0\"\nthreads = 3\nmax_body = 4\ntimeout = \"1s\"\n",
    );
    let srv = ServerProc::start_exactly(&["--config", file.path()], &[("VIGIL_THREADS", "2")]);
    assert_eq!(metric(srv.admin(), "vigil_worker_threads"), 2.0, "the environment wins over the file");
    let r = raw(srv.addr, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .unwrap();
    assert_eq!(r.status, 413, "max_body from the file: {}", r.text());
    let (r, d) = timed_get(srv.addr, "/spin");
    assert_eq!(r.status, 504, "timeout from the file");
    assert!(d < Duration::from_secs(5), "{d:?}");
}

#[test]
fn port_sets_the_listening_port_when_nothing_sets_bind() {
    let srv = ServerProc::start_exactly(&["--admin-bind", "127.0.0.1:0"], &[("PORT", "0")]);
    assert_eq!(get(srv.addr, "/").text(), "hello");
    // With a bind from the environment, PORT is ignored.
    let srv = ServerProc::start_exactly(
        &[],
        &[("PORT", "1"), ("VIGIL_BIND", "127.0.0.1:0"), ("VIGIL_ADMIN_BIND", "127.0.0.1:0")],
    );
    assert_ne!(srv.addr.port(), 1);
    assert_eq!(get(srv.addr, "/").text(), "hello");
}
