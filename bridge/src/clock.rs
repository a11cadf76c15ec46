//! The one clock of a process. Production reads the wall clock; the demo and the scenario tests
//! shift it to the instant a scenario is set at (say, a Friday lunchtime in Rome) and let it run
//! on from there in real time, so opening hours, handoff tokens, tool "local time" and webhook
//! tolerances all agree, whatever the day the demo is run.
//!
//! Two times are kept apart:
//! - [`Clock::now`]: the time the call happens at (tool local time, the agent's `now`, the call
//!   record's timestamps).
//! - [`Clock::peer_unix`]: the time other processes issue tokens and sign requests by (handoff
//!   token expiry, dashboard request signatures). In production and in the demo — where the
//!   edge, the dashboard and the bridge share this clock — it is the same instant. With the
//!   test clock of `pulsara serve` (`PULSARA_TEST_NOW`, see [`test_instant`]) only this process
//!   moves, exactly as the edge's `X-Pulsara-Test-Now` moves only its opening-hours decision, so
//!   the peers still issue and sign by the wall clock and this time stays on it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Wall clock plus a shared, adjustable offset. Clones share the offset.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// The offset of the clock the peers (edge, dashboard) run on; see the module docs.
    peer_offset_ms: Arc<AtomicI64>,
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

    /// Unix seconds by the clock the peers issue tokens and sign requests with.
    pub fn peer_unix(&self) -> i64 {
        self.peer_unix_ms().div_euclid(1000)
    }

    /// Unix milliseconds by the peers' clock (the edge's `answered_at_ms` is on it).
    pub fn peer_unix_ms(&self) -> i64 {
        (Utc::now() + chrono::Duration::milliseconds(self.peer_offset_ms.load(Ordering::Relaxed))).timestamp_millis()
    }

    /// From now on, `now()` continues from `at`, and so does the clock of the peers (the whole
    /// stack shares this clock, as in the demo).
    pub fn jump_to(&self, at: DateTime<Utc>) {
        let offset = at.signed_duration_since(Utc::now()).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
        self.peer_offset_ms.store(offset, Ordering::Relaxed);
    }

    /// From now on, `now()` continues from `at` while the peers stay on the wall clock (the test
    /// clock of a single process whose peers run elsewhere).
    pub fn jump_alone_to(&self, at: DateTime<Utc>) {
        let offset = at.signed_duration_since(Utc::now()).num_milliseconds();
        self.offset_ms.store(offset, Ordering::Relaxed);
        self.peer_offset_ms.store(0, Ordering::Relaxed);
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

    /// [`Clock::peer_unix`] as a plain closure (request signing and checking).
    pub fn as_peer_unix_fn(&self) -> Arc<dyn Fn() -> i64 + Send + Sync> {
        let c = self.clone();
        Arc::new(move || c.peer_unix())
    }
}

/// Why the test clock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestClockError {
    #[error("PULSARA_TEST_NOW is for tests only and needs ALLOW_TEST_CLOCK=1 as well")]
    NotAllowed,
    #[error("PULSARA_TEST_NOW is for tests only and needs loopback addresses; {0} is not loopback")]
    NotLoopback(&'static str),
    #[error("PULSARA_TEST_NOW must be an RFC 3339 instant such as 2026-12-04T18:30:00Z, not {0:?}")]
    Invalid(String),
}

/// The test instant `pulsara serve` starts its clock at, mirroring the edge's test clock rule:
/// `PULSARA_TEST_NOW=<RFC 3339>` is honoured only with `ALLOW_TEST_CLOCK=1` (or `true`) and when
/// every address in `addresses` (setting name, `host:port` or URL) is loopback. `Ok(None)` when
/// `PULSARA_TEST_NOW` is unset.
///
/// # Errors
/// [`TestClockError`] naming what is missing or wrong; `pulsara serve` refuses to start.
pub fn test_instant(
    settings: &crate::config::TestClockSettings,
    addresses: &[(&'static str, String)],
) -> Result<Option<DateTime<Utc>>, TestClockError> {
    let Some(value) = settings.now.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !settings.allow {
        return Err(TestClockError::NotAllowed);
    }
    if let Some((name, _)) = addresses.iter().find(|(_, addr)| !pulsara_core::addr::is_loopback(addr)) {
        return Err(TestClockError::NotLoopback(name));
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| TestClockError::Invalid(value.to_owned()))
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
        // The whole stack moved: the peers' clock too.
        assert!((other.peer_unix() - at.timestamp()).abs() <= 5);
    }

    #[test]
    fn jumping_alone_leaves_the_peers_on_the_wall_clock() {
        let clock = Clock::system();
        let at: DateTime<Utc> = "2020-02-29T12:00:00Z".parse().unwrap();
        clock.jump_alone_to(at);
        assert!((clock.unix() - at.timestamp()).abs() <= 5);
        let wall = Utc::now().timestamp();
        assert!((clock.peer_unix() - wall).abs() <= 1);
        assert!(((clock.as_peer_unix_fn())() - wall).abs() <= 1);
    }

    fn env(pairs: &[(&str, &str)]) -> crate::config::TestClockSettings {
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned());
        crate::config::TestClockSettings {
            now: get("PULSARA_TEST_NOW"),
            allow: get("ALLOW_TEST_CLOCK").is_some_and(|v| v == "1" || v == "true"),
        }
    }

    fn local() -> Vec<(&'static str, String)> {
        vec![
            ("PULSARA_LISTEN", "127.0.0.1:8080".into()),
            ("PULSARA_DASHBOARD_LISTEN", "[::1]:8088".into()),
            ("PUBLIC_BASE_URL", "https://localhost:8080".into()),
        ]
    }

    #[test]
    fn test_clock_needs_the_opt_in_and_loopback() {
        assert_eq!(test_instant(&env(&[]), &local()), Ok(None));
        assert_eq!(test_instant(&env(&[("ALLOW_TEST_CLOCK", "1")]), &local()), Ok(None));
        let at = "2026-12-04T18:30:00Z";
        assert_eq!(
            test_instant(&env(&[("PULSARA_TEST_NOW", at), ("ALLOW_TEST_CLOCK", "1")]), &local()),
            Ok(Some("2026-12-04T18:30:00Z".parse().unwrap()))
        );
        assert_eq!(
            test_instant(
                &env(&[
                    ("PULSARA_TEST_NOW", "2026-12-04T19:30:00+01:00"),
                    ("ALLOW_TEST_CLOCK", "true")
                ]),
                &local()
            ),
            Ok(Some("2026-12-04T18:30:00Z".parse().unwrap()))
        );
        assert_eq!(
            test_instant(&env(&[("PULSARA_TEST_NOW", at)]), &local()),
            Err(TestClockError::NotAllowed)
        );
        assert_eq!(
            test_instant(&env(&[("PULSARA_TEST_NOW", at), ("ALLOW_TEST_CLOCK", "0")]), &local()),
            Err(TestClockError::NotAllowed)
        );
        for (name, addr) in [
            ("PULSARA_LISTEN", "0.0.0.0:8080"),
            ("PULSARA_EDGE_LISTEN", "10.0.0.5:80"),
            ("PUBLIC_BASE_URL", "https://bridge.example.com"),
            ("PUBLIC_BASE_URL", "https://127.0.0.1.example.com:443"),
        ] {
            let mut addrs = local();
            addrs.push((name, addr.into()));
            assert_eq!(
                test_instant(&env(&[("PULSARA_TEST_NOW", at), ("ALLOW_TEST_CLOCK", "1")]), &addrs),
                Err(TestClockError::NotLoopback(name)),
                "{addr}"
            );
        }
        let bad = test_instant(
            &env(&[("PULSARA_TEST_NOW", "1796416200"), ("ALLOW_TEST_CLOCK", "1")]),
            &local(),
        );
        assert_eq!(bad, Err(TestClockError::Invalid("1796416200".into())));
    }
}
