//! `Server::serve` installs its signal handler before it starts anything: an application that
//! has a Ctrl-C handler of its own gets `StartError::SignalHandler`, and no server is left
//! running where nothing can stop it. (Its own test binary: a process has one Ctrl-C handler.)

use vigil::{App, Server, Settings, StartError};

/// Threads of this process whose name starts with `vigil-`.
#[cfg(target_os = "linux")]
fn vigil_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("vigil-"))
        .collect()
}

#[test]
fn serve_with_the_applications_own_signal_handler_fails_before_starting_anything() {
    ctrlc::set_handler(|| {}).expect("the application's own handler");
    // The port is held here: a server that started anyway would fail to bind instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = Settings::default().bind(held.local_addr().unwrap()).admin_bind(None).threads(1);
    match Server::serve(settings, App::new()) {
        Err(e @ StartError::SignalHandler(_)) => assert!(e.to_string().contains("Server::start"), "{e}"),
        other => panic!("expected SignalHandler, got {other:?}"),
    }
    #[cfg(target_os = "linux")]
    assert_eq!(vigil_threads(), Vec::<String>::new(), "threads of a server that should not exist");
}
