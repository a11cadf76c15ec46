//! The one clock of a process. Production reads the wall clock; the demo and the scenario tests
//! shift it to the instant a scenario is set at (say, a Friday lunchtime in Rome) and let it run
//! on from there in real time, so opening hours, handoff tokens, tool "local time" and webhook
//! tolerances all agree, whatever the day the demo is run.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Wall clock plus a shared, adjustable offset. Clones share the offset.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn unix(&self) -> i64 {
        self.now().timestamp()
    }

    /// From now on, `now()` continues from `at`.
    pub fn jump_to(&self, at: DateTime<Utc>) {
        let offset = at.signed_duration_since(Utc::now()).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// As a plain closure, for the crates that take one.
    pub fn as_fn(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let c = self.clone();
        Arc::new(move || c.now())
    }

    /// Unix seconds as a plain closure.
    pub fn as_unix_fn(&self) -> Arc<dyn Fn() -> i64 + Send + Sync> {
        let c = self.clone();
        Arc::new(move || c.unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_and_keeps_running_and_clones_share_it() {
        let clock = Clock::system();
        let other = clock.clone();
        let at: DateTime<Utc> = "2026-12-04T11:30:00Z".parse().unwrap();
        clock.jump_to(at);
        let seen = other.now();
        // The offset is kept in whole milliseconds.
        let slack = chrono::Duration::milliseconds(1);
        assert!(seen >= at - slack && seen < at + chrono::Duration::seconds(5), "{seen}");
        assert!((other.as_unix_fn())() >= at.timestamp() - 1);
    }
}
