//! `--log-file`: the log goes to a file rotated by size (what a Windows service needs, having no
//! console), and a log file that can't be opened stops the start with an error naming the flag.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A fresh directory for one test (removed by the test when it passes).
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn log_file_takes_the_log_and_rotates_by_size_keeping_n_files() {
    let dir = temp_dir("log-rotate");
    let path = dir.join("vigil.log");
    let mut srv = ServerProc::start(&[
        "--log-file",
        path.to_str().unwrap(),
        "--access-log",
        "--log-file-max-size",
        "4k",
        "--log-file-keep",
        "2",
    ]);
    for i in 0..150 {
        let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-{i:04}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw(srv.addr, req.as_bytes()).unwrap().status, 200);
    }
    srv.terminate();
    assert_eq!(srv.wait_exit(Duration::from_secs(15)), Some(0));
    let stderr = srv.logs_to_end(Duration::from_secs(5));
    assert!(stderr.is_empty(), "the log went to stderr too: {stderr:?}");

    assert!(!dir.join("vigil.log.3").exists(), "only --log-file-keep 2 backups are kept");
    let files = [dir.join("vigil.log.2"), dir.join("vigil.log.1"), path];
    for f in &files {
        let text = read(f);
        assert!(!text.is_empty() && text.len() <= 4096, "{}: {} bytes", f.display(), text.len());
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
    }
    // Oldest to newest, the kept access lines are consecutive requests up to the last one.
    let text: String = files.iter().map(|f| read(f)).collect();
    let ids: Vec<u32> =
        text.lines().filter_map(|l| l.split("id=req-").nth(1)).map(|rest| rest[..4].parse().unwrap()).collect();
    assert!(ids.len() > 20, "{} access lines kept", ids.len());
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "a line is missing between rotations: {ids:?}");
    assert_eq!(ids.last(), Some(&149));
    assert!(text.contains("drain complete"), "the drain's last line is in the file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_file_that_cannot_be_opened_stops_the_start_naming_the_flag() {
    let dir = temp_dir("log-missing-dir");
    let path = dir.join("no-such-dir").join("vigil.log");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--bind", "127.0.0.1:0", "--admin-bind", "off", "--log-file", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--log-file: cannot open") && stderr.contains("no-such-dir"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"), "it must not start serving");
    std::fs::remove_dir_all(&dir).unwrap();
}
