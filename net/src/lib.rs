//! `pulsara-net`: the one HTTP/1 listener every Pulsara server runs on (the bridge, the edge's
//! native shell, the embedded dashboard), so a peer that opens sockets and sends nothing cannot
//! hold them, nor the process's file descriptors, for ever.
//!
//! - [`config`]: [`ServeConfig`], the limits (deadlines, the cap on unserved connections) with
//!   defaults and their environment names.
//! - [`registry`]: the connections that have not been served yet, oldest first; it decides which
//!   one to evict when the cap is reached or the process runs out of descriptors. No I/O.
//! - [`serve`](mod@serve): the accept loop and one task per connection: hyper's HTTP/1 with a
//!   timer, the deadlines enforced from the registry's phases, WebSocket upgrades handed off,
//!   graceful shutdown.
//! - [`stats`]: the listener's counters; [`metrics`]: families read at scrape time (the listener's
//!   and other crates'), for the process's one `prometheus::Registry`.
//!
//! Data flow: `accept` → [`registry::Registry::admit`] (evicting the oldest unserved connection
//! when full) → a connection task serving an axum [`axum::Router`]; each request moves the
//! connection from *waiting* (a deadline runs) to *busy* (the request timeout runs) and back, or
//! out of the registry for good once it upgrades.
//!
//! Native only: it uses tokio's sockets and timers. `pulsara-core` stays free of it.

#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod registry;
pub mod serve;
pub mod stats;

pub use config::{ConfigError, ServeConfig};
pub use serve::{serve, Server};
pub use stats::{Stats, StatsSnapshot};
