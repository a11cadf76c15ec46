//! Refusing new Media Streams the process cannot serve, early and visibly.
//!
//! A saturated bridge used to accept upgrades whose tasks then waited 20–29 s to run: the caller
//! heard nothing and no fallback started. Now every `/media` upgrade passes [`decide`] first; a
//! refusal is a 503 before the upgrade, so Twilio ends the `<Connect>` at once and the call goes
//! on with the edge's overflow path or Twilio's fallback. The inputs are the streams upgraded but
//! still waiting for their `start` message ([`PendingStart`] guards count them) and the runtime's
//! scheduling lag ([`LagMonitor`]). The decision itself is a pure function over a [`Load`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the lag monitor samples.
pub const LAG_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What the process is carrying when an upgrade asks to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Shutdown has begun.
    pub draining: bool,
    /// Streams open, this one included.
    pub open_streams: usize,
    /// Streams upgraded (or upgrading) that have not sent `start` yet, this one excluded.
    pub pending_start: usize,
    /// How late the runtime runs a task that is due now.
    pub scheduling_lag: Duration,
}

/// The limits [`decide`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Most open streams (live calls plus the headroom that lets over-cap callers hear "busy").
    pub max_streams: usize,
    /// Most streams waiting for `start` at once.
    pub max_pending_start: usize,
    /// Scheduling lag beyond which new streams are refused.
    pub max_scheduling_lag: Duration,
}

/// Why a new stream was refused. Each is answered 503 before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Draining,
    AtCapacity,
    StartBacklog,
    SchedulingLag,
}

impl Refusal {
    /// Every refusal, in the order [`decide`] checks them.
    pub const ALL: [Refusal; 4] = [
        Refusal::Draining,
        Refusal::AtCapacity,
        Refusal::StartBacklog,
        Refusal::SchedulingLag,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Draining => "draining",
            Refusal::AtCapacity => "capacity",
            Refusal::StartBacklog => "start_backlog",
            Refusal::SchedulingLag => "scheduling_lag",
        }
    }

    /// The body of the 503.
    pub fn body(self) -> &'static str {
        match self {
            Refusal::Draining => "draining: this bridge is shutting down",
            Refusal::AtCapacity => "at capacity",
            Refusal::StartBacklog => "overloaded: too many streams waiting to start",
            Refusal::SchedulingLag => "overloaded: the runtime is running late",
        }
    }
}

/// Admits a new stream or says why not. Shutdown first, then the hard stream cap, then the two
/// overload signals.
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn decide(load: &Load, t: &Thresholds) -> Result<(), Refusal> {
    if load.draining {
        return Err(Refusal::Draining);
    }
    if load.open_streams > t.max_streams {
        return Err(Refusal::AtCapacity);
    }
    if load.pending_start >= t.max_pending_start {
        return Err(Refusal::StartBacklog);
    }
    if load.scheduling_lag > t.max_scheduling_lag {
        return Err(Refusal::SchedulingLag);
    }
    Ok(())
}

/// Holds one stream's place among those waiting for `start`; released on drop (the start
/// arrived, the deadline passed, or the upgrade never completed).
pub struct PendingStart {
    metrics: Arc<Metrics>,
    upgraded_at: Instant,
}

impl PendingStart {
    /// Counts a stream as waiting from `upgraded_at` (when its upgrade request was handled).
    pub fn new(metrics: Arc<Metrics>, upgraded_at: Instant) -> Self {
        metrics.streams_pending_start.inc();
        PendingStart {
            metrics,
            upgraded_at,
        }
    }

    /// When the upgrade was handled: the `start` deadline counts from here.
    pub fn upgraded_at(&self) -> Instant {
        self.upgraded_at
    }
}

impl Drop for PendingStart {
    fn drop(&mut self) {
        self.metrics.streams_pending_start.dec();
    }
}

/// Measures how late the runtime runs a timer that is due: a task sleeps
/// [`LAG_SAMPLE_INTERVAL`] and records by how much it overslept. When the runtime is so busy that
/// even that task has not run, the time since its tick was due counts as the lag.
#[derive(Debug)]
pub struct LagMonitor {
    base: Instant,
    running: AtomicBool,
    /// Microseconds after `base` when the next tick is due.
    next_due_us: AtomicU64,
    /// The last measured oversleep, microseconds.
    last_lag_us: AtomicU64,
}

impl Default for LagMonitor {
    fn default() -> Self {
        LagMonitor {
            base: Instant::now(),
            running: AtomicBool::new(false),
            next_due_us: AtomicU64::new(0),
            last_lag_us: AtomicU64::new(0),
        }
    }
}

impl LagMonitor {
    /// Records a tick that was due at `due` and ran at `ran`; the next one is due an interval
    /// later.
    pub fn tick(&self, due: Instant, ran: Instant) {
        self.last_lag_us
            .store(micros(ran.saturating_duration_since(due)), Relaxed);
        self.next_due_us.store(
            micros(ran.saturating_duration_since(self.base) + LAG_SAMPLE_INTERVAL),
            Relaxed,
        );
        self.running.store(true, Relaxed);
    }

    /// The lag at `now`: the last oversleep, or how overdue the next tick is, whichever is
    /// larger. Zero until the monitor has ticked once (a bridge without it never sheds on lag).
    pub fn current(&self, now: Instant) -> Duration {
        if !self.running.load(Relaxed) {
            return Duration::ZERO;
        }
        let last = Duration::from_micros(self.last_lag_us.load(Relaxed));
        let due = self.base + Duration::from_micros(self.next_due_us.load(Relaxed));
        last.max(now.saturating_duration_since(due))
    }

    /// Samples until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let due = Instant::now() + LAG_SAMPLE_INTERVAL;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(due) => self.tick(due, Instant::now()),
            }
        }
        self.running.store(false, Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        max_streams: 100,
        max_pending_start: 8,
        max_scheduling_lag: Duration::from_millis(1_000),
    };

    fn calm() -> Load {
        Load {
            draining: false,
            open_streams: 10,
            pending_start: 2,
            scheduling_lag: Duration::from_millis(3),
        }
    }

    #[test]
    fn a_calm_bridge_admits_and_each_signal_refuses_on_its_own() {
        assert_eq!(decide(&calm(), &T), Ok(()));
        let cases = [
            (
                Load {
                    draining: true,
                    ..calm()
                },
                Refusal::Draining,
            ),
            (
                Load {
                    open_streams: 101,
                    ..calm()
                },
                Refusal::AtCapacity,
            ),
            (
                Load {
                    pending_start: 8,
                    ..calm()
                },
                Refusal::StartBacklog,
            ),
            (
                Load {
                    scheduling_lag: Duration::from_millis(1_001),
                    ..calm()
                },
                Refusal::SchedulingLag,
            ),
        ];
        for (load, want) in cases {
            assert_eq!(decide(&load, &T), Err(want), "{load:?}");
        }
        // At the limits themselves: 100 open streams and 7 others waiting still get in.
        let edge = Load {
            open_streams: 100,
            pending_start: 7,
            scheduling_lag: Duration::from_millis(1_000),
            ..calm()
        };
        assert_eq!(decide(&edge, &T), Ok(()));
    }

    #[test]
    fn draining_wins_over_every_other_reason() {
        let all_bad = Load {
            draining: true,
            open_streams: 1_000,
            pending_start: 1_000,
            scheduling_lag: Duration::from_secs(30),
        };
        assert_eq!(decide(&all_bad, &T), Err(Refusal::Draining));
        let labels: Vec<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            ["draining", "capacity", "start_backlog", "scheduling_lag"]
        );
    }

    #[test]
    fn lag_is_the_oversleep_or_how_overdue_the_next_tick_is() {
        let m = LagMonitor::default();
        let t0 = Instant::now();
        assert_eq!(
            m.current(t0 + Duration::from_secs(60)),
            Duration::ZERO,
            "not running"
        );
        // Whole milliseconds: the monitor keeps microseconds since its own base instant.
        let lag_ms = |at_ms: u64| m.current(t0 + Duration::from_millis(at_ms)).as_millis();
        m.tick(t0, t0 + Duration::from_millis(40));
        assert_eq!(lag_ms(50), 40);
        // The next tick was due at 140 ms; at 2,140 ms it still has not run.
        assert_eq!(lag_ms(2_140), 2_000);
        m.tick(
            t0 + Duration::from_millis(140),
            t0 + Duration::from_millis(141),
        );
        assert_eq!(lag_ms(150), 1);
    }

    #[test]
    fn pending_start_guards_count_while_held() {
        let metrics = Arc::new(Metrics::default());
        let a = PendingStart::new(metrics.clone(), Instant::now());
        let b = PendingStart::new(metrics.clone(), Instant::now());
        assert_eq!(metrics.streams_pending_start.get(), 2);
        drop(a);
        assert_eq!(metrics.streams_pending_start.get(), 1);
        drop(b);
        assert_eq!(metrics.streams_pending_start.get(), 0);
    }
}
