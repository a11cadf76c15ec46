//! Counters a listener keeps, for the owning server's `/metrics` (through
//! [`Stats::collector`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::metrics::{Family, ScrapeCollector};

/// Live counters of one listener. Shared by `Arc`; every field only grows except the gauges.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) accepted: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) unserved: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) header_timeouts: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) request_timeouts: AtomicU64,
    pub(crate) upgraded: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) fd_exhausted: AtomicU64,
}

/// A copy of [`Stats`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Connections accepted.
    pub accepted: u64,
    /// Connection tasks alive now (unserved, kept-alive or handing off an upgrade).
    pub open: u64,
    /// Connections waiting for, or inside, a request now.
    pub unserved: u64,
    /// Closed to make room (cap reached or out of descriptors).
    pub evicted: u64,
    /// Closed for sending no complete first request head in time.
    pub header_timeouts: u64,
    /// Closed for idling between requests too long.
    pub idle_timeouts: u64,
    /// Requests answered 408 for taking too long.
    pub request_timeouts: u64,
    /// Connections handed off to a protocol upgrade (WebSocket).
    pub upgraded: u64,
    /// Accept errors that were not about one connection.
    pub accept_errors: u64,
    /// Of those, the process or system was out of descriptors or buffers.
    pub fd_exhausted: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            open: self.open.load(Relaxed),
            unserved: self.unserved.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            header_timeouts: self.header_timeouts.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
            upgraded: self.upgraded.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
            fd_exhausted: self.fd_exhausted.load(Relaxed),
        }
    }

    /// This listener's families for the process registry, labelled `listener="<name>"`.
    /// `name` must be a fixed identifier such as `bridge`.
    ///
    /// # Errors
    /// A name Prometheus does not accept as a label value (never for a fixed identifier).
    pub fn collector(
        self: &Arc<Self>,
        name: &str,
    ) -> prometheus::Result<ScrapeCollector<StatsSnapshot>> {
        let stats = self.clone();
        ScrapeCollector::new(
            vec![
                Family::counter(
                    "pulsara_http_connections_accepted_total",
                    "TCP connections accepted.",
                    |s| s.accepted as f64,
                ),
                Family::gauge(
                    "pulsara_http_connections_open",
                    "HTTP connections alive (upgraded ones excluded once handed off).",
                    |s| s.open as f64,
                ),
                Family::gauge(
                    "pulsara_http_connections_unserved",
                    "Connections waiting for or inside a request.",
                    |s| s.unserved as f64,
                ),
                Family::counter(
                    "pulsara_http_connections_evicted_total",
                    "Unserved connections closed to make room (cap or descriptors).",
                    |s| s.evicted as f64,
                ),
                Family::counter(
                    "pulsara_http_header_timeouts_total",
                    "Connections closed without a complete first request head in time.",
                    |s| s.header_timeouts as f64,
                ),
                Family::counter(
                    "pulsara_http_idle_timeouts_total",
                    "Kept-alive connections closed for idling.",
                    |s| s.idle_timeouts as f64,
                ),
                Family::counter(
                    "pulsara_http_request_timeouts_total",
                    "Requests answered 408 for taking too long.",
                    |s| s.request_timeouts as f64,
                ),
                Family::counter(
                    "pulsara_http_upgrades_total",
                    "Connections handed off to a protocol upgrade.",
                    |s| s.upgraded as f64,
                ),
                Family::counter(
                    "pulsara_http_accept_errors_total",
                    "Accept errors not about one connection.",
                    |s| s.accept_errors as f64,
                ),
                Family::counter(
                    "pulsara_http_fd_exhausted_total",
                    "Accept errors for want of descriptors or buffers.",
                    |s| s.fd_exhausted as f64,
                ),
            ],
            &[("listener", name)],
            move || Some(stats.snapshot()),
        )
    }
}
