//! The examples do what their docs say (cargo test builds them next to the binary).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Example(Child, SocketAddr);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_example(name: &str) -> Example {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vigil"));
    let path = bin.parent().unwrap().join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // `cargo test` builds the examples; `cargo test --test examples` alone may not.
    assert!(path.exists(), "example {name} not built at {}: run `cargo build --examples` first", path.display());
    let mut child = Command::new(path).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("example printed its address").unwrap();
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.parse().unwrap();
        }
    };
    Example(child, addr)
}

#[test]
fn hello_example_greets() {
    let ex = run_example("hello");
    assert_eq!(get(ex.1, "/hello/world").text(), "hello, world");
}

#[test]
fn export_example_outlives_the_timeout_while_reporting_and_is_cut_when_it_stalls() {
    let ex = run_example("export");
    let (r, d) = timed_get(ex.1, "/export?rows=30");
    assert_eq!(r.status, 200);
    assert!(d > Duration::from_secs(2), "ran past the 2 s default: {d:?}");
    assert!(r.text().ends_with("30,900\n"));
    let (r, d) = timed_get(ex.1, "/export?rows=30&stall_at=5");
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_secs(3), "{d:?}");
}

#[test]
fn cancellable_blocking_example_returns_its_thread() {
    let ex = run_example("cancellable_blocking");
    let (r, d) = timed_get(ex.1, "/upstream");
    assert_eq!(r.status, 504);
    assert!(d < Duration::from_secs(3), "{d:?}");
    // The thread came back: many more requests than threads still get their 504 on time.
    for _ in 0..3 {
        assert_eq!(get(ex.1, "/upstream").status, 504);
    }
}
