//! How usable a cached copy of dashboard data is: the TTL + stale-if-error rule that both config
//! caches follow (the edge's, over KV in the Worker or a map natively, and the bridge's in
//! `pulsara-dashboard`). Pure: the caller measures the copy's age with its own clock.
//!
//! A copy younger than the TTL and not invalidated is used without asking the dashboard
//! ([`Freshness::Fresh`]). Otherwise the dashboard is asked; when it fails, a copy younger than
//! TTL + stale window still serves ([`Freshness::Stale`]); older copies never do
//! ([`Freshness::Expired`]).

use std::time::Duration;

/// How usable a cached copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use it; don't ask the dashboard.
    Fresh,
    /// Ask the dashboard; use it if the dashboard fails.
    Stale,
    /// Ask the dashboard; never use it.
    Expired,
}

/// A cached copy's lifetimes: fresh for `ttl`, then usable on errors for `stale_if_error` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ttl: Duration,
    pub stale_if_error: Duration,
}

impl Lifetimes {
    /// The copy's freshness at `age`; an `invalidated` copy (a dashboard webhook said it changed)
    /// is at best [`Freshness::Stale`].
    pub fn freshness(&self, age: Duration, invalidated: bool) -> Freshness {
        if age < self.ttl && !invalidated {
            Freshness::Fresh
        } else if age < self.ttl.saturating_add(self.stale_if_error) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetimes = Lifetimes {
        ttl: Duration::from_secs(300),
        stale_if_error: Duration::from_secs(3600),
    };

    #[test]
    fn boundaries_and_invalidation() {
        let s = Duration::from_secs;
        assert_eq!(L.freshness(s(0), false), Freshness::Fresh);
        assert_eq!(L.freshness(s(299), false), Freshness::Fresh);
        assert_eq!(L.freshness(s(300), false), Freshness::Stale);
        assert_eq!(L.freshness(s(300 + 3599), false), Freshness::Stale);
        assert_eq!(L.freshness(s(300 + 3600), false), Freshness::Expired);
        assert_eq!(L.freshness(s(1), true), Freshness::Stale);
        assert_eq!(L.freshness(s(300 + 3600), true), Freshness::Expired);
        let no_stale = Lifetimes {
            ttl: s(10),
            stale_if_error: Duration::ZERO,
        };
        assert_eq!(no_stale.freshness(s(10), false), Freshness::Expired);
        let forever = Lifetimes {
            ttl: Duration::MAX,
            stale_if_error: Duration::MAX,
        };
        assert_eq!(
            forever.freshness(Duration::MAX - s(1), true),
            Freshness::Stale
        );
    }
}
