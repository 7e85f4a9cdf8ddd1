//! Internals for vigil's own binaries, benchmarks, fuzz targets and tests. Not part of the
//! API: anything here may change in any release. The runtime's types are only here with the
//! `bench-internals` feature (the benches measure the real types, not copies).

#[cfg(feature = "bench-internals")]
pub mod bench;

pub use crate::http::parse;
#[cfg(feature = "cli")]
pub use crate::settings::Cli;
pub use crate::settings::{parse_duration, parse_size, MIN_DEFAULT_BACKLOG};
