//! The runtime: everything between a parsed request and its answer that is about threads and
//! time, and nothing about sockets or routing syntax.
//!
//! Bottom to top: [`clock`] (one monotonic clock in atomics), [`state`] (the typed states and
//! their atomic cell), [`token`] (cancellation), [`routes`] (a route's resolved timing),
//! [`shard`] (which shard a thread uses), [`refusal`] (the server's own answers), [`reply`] (where a connection waits for its answer),
//! [`inflight`] (one request's record), [`offload`] (where the watchdog sends work that might
//! block), [`threads`] (the workers as the OS sees them: priority and CPU time), [`pool`] (the
//! OS threads that run handlers), [`decide`] (the watchdog's rules as a pure function) and
//! [`watchdog`] (the thread that applies them to the requests on its [`watchlist`]), which reports to a service manager through
//! [`notify`] (sd_notify). It depends only on the HTTP codec (`crate::http`) and
//! `crate::platform`.

pub(crate) mod budget;
pub(crate) mod clock;
pub(crate) mod decide;
pub(crate) mod inflight;
pub(crate) mod notify;
pub(crate) mod offload;
pub(crate) mod pool;
pub(crate) mod refusal;
pub(crate) mod reply;
pub(crate) mod routes;
pub(crate) mod shard;
pub(crate) mod state;
pub(crate) mod stream;
pub(crate) mod threads;
pub(crate) mod token;
pub(crate) mod watchdog;
pub(crate) mod watchlist;

#[cfg(test)]
mod races;
#[cfg(test)]
pub(crate) mod testing;
