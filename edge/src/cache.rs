//! The restaurant-config cache policy, as pure functions over entries with timestamps, so both
//! shells (KV in the Worker, a map natively) behave the same and the policy is tested without
//! storage.
//!
//! Layout: `num:<e164>` → restaurant id (the index from a called number), `cfg:<id>` → a
//! [`CacheEntry`] (config + when it was fetched + ETag + invalidation flag), `wh:<webhook id>` →
//! a marker for replay protection. A dashboard `restaurant.updated` webhook marks `cfg:<id>` as
//! invalidated instead of deleting it: the next call refetches, but the old entry can still serve
//! calls if the dashboard fails (stale-if-error).
//!
//! Policy: [`pulsara_core::freshness`], the rule the bridge's cache follows too: an entry younger
//! than the TTL and not invalidated is used without asking the dashboard ([`Freshness::Fresh`]).
//! Otherwise the dashboard is asked (with `If-None-Match`); when it fails or times out, an entry
//! younger than TTL + stale window is still used ([`Freshness::Stale`]); older entries are never
//! used ([`Freshness::Expired`]).

use std::time::Duration;

use pulsara_core::config::RestaurantConfig;
pub use pulsara_core::freshness::Freshness;
use pulsara_core::freshness::Lifetimes;
use serde::{Deserialize, Serialize};

use crate::http::Upstream;

/// KV refuses expirations under 60 s.
pub const MIN_STORAGE_TTL_SECS: u64 = 60;
/// How long a webhook id is remembered: the Standard Webhooks tolerance window on both sides.
pub const WEBHOOK_ID_TTL_SECS: u64 = 2 * 5 * 60;

/// One cached restaurant configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub config: RestaurantConfig,
    /// Unix seconds when the dashboard last confirmed this config.
    pub fetched_at: i64,
    #[serde(default)]
    pub etag: Option<String>,
    /// Set by a `restaurant.updated` webhook: refetch before use.
    #[serde(default)]
    pub invalidated: bool,
}

/// TTL and stale-if-error window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ttl_secs: u64,
    pub stale_secs: u64,
}

impl CachePolicy {
    pub fn freshness(&self, entry: &CacheEntry, now: i64) -> Freshness {
        let age = now.saturating_sub(entry.fetched_at);
        // A timestamp from the future (clock jump) is treated as just fetched.
        let age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
        let lifetimes = Lifetimes {
            ttl: Duration::from_secs(self.ttl_secs),
            stale_if_error: Duration::from_secs(self.stale_secs),
        };
        lifetimes.freshness(age, entry.invalidated)
    }

    /// How long storage should keep an entry (KV expiration): until it can no longer be used.
    pub fn storage_ttl(&self) -> u64 {
        self.ttl_secs
            .saturating_add(self.stale_secs)
            .max(MIN_STORAGE_TTL_SECS)
    }
}

pub fn number_key(e164: &str) -> String {
    format!("num:{e164}")
}

pub fn config_key(restaurant_id: &str) -> String {
    format!("cfg:{restaurant_id}")
}

pub fn webhook_key(webhook_id: &str) -> String {
    format!("wh:{webhook_id}")
}

/// The dashboard's answer to "which restaurant owns this number?", classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Config {
        config: Box<RestaurantConfig>,
        etag: Option<String>,
    },
    NotModified,
    NotFound,
    /// Any failure: network, timeout, 5xx, unexpected status, invalid JSON.
    Failed(String),
}

/// Classifies a dashboard response to `GET /v1/restaurants/by-number/{e164}`; a 200 must carry a
/// config that passes [`RestaurantConfig::validate`].
pub fn classify(upstream: &Upstream) -> Fetched {
    match upstream.status {
        200 => match serde_json::from_slice::<RestaurantConfig>(&upstream.body) {
            // A config that parses but cannot work (e.g. an unknown `agent.language`) is treated
            // like an unreadable one: a stale entry may still serve, else the fallback answers.
            Ok(config) => match config.validate() {
                Ok(()) => Fetched::Config {
                    config: Box::new(config),
                    etag: upstream.etag.clone(),
                },
                Err(e) => Fetched::Failed(format!(
                    "dashboard sent an invalid restaurant config ({}): {e}",
                    config.id
                )),
            },
            Err(e) => Fetched::Failed(format!("dashboard sent an invalid restaurant config: {e}")),
        },
        304 => Fetched::NotModified,
        404 => Fetched::NotFound,
        s => Fetched::Failed(format!("dashboard answered HTTP {s}")),
    }
}

/// What the voice decision is handed: the restaurant's config (or why there is none).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigLookup {
    Found {
        config: Box<RestaurantConfig>,
        source: Source,
    },
    UnknownNumber,
    /// No usable config: the dashboard failed and nothing usable was cached.
    Unavailable(String),
}

/// Where a config came from (logged, and asserted by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Fresh cache entry; the dashboard was not asked.
    Cache,
    /// The dashboard answered (200 or 304).
    Dashboard,
    /// The dashboard failed; a stale entry served the call.
    StaleCache,
}

/// Cache writes the shell should perform after a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Store this entry under `cfg:<id>` and the index `num:<e164>` → id.
    Store(Box<CacheEntry>),
    /// Nothing to store.
    None,
}

/// Combines the cached entry (if any), the dashboard's answer (if it was asked) and `now` into
/// the lookup result and the cache write to perform.
///
/// `fetched` is `None` only when `cached` was [`Freshness::Fresh`].
pub fn resolve(
    policy: CachePolicy,
    cached: Option<CacheEntry>,
    fetched: Option<Fetched>,
    now: i64,
) -> (ConfigLookup, Write) {
    let usable_stale = |entry: &CacheEntry| policy.freshness(entry, now) != Freshness::Expired;
    match fetched {
        None => match cached {
            Some(e) if policy.freshness(&e, now) == Freshness::Fresh => (
                ConfigLookup::Found {
                    config: Box::new(e.config),
                    source: Source::Cache,
                },
                Write::None,
            ),
            _ => (
                ConfigLookup::Unavailable(
                    "cache entry is not fresh and the dashboard was not asked".into(),
                ),
                Write::None,
            ),
        },
        Some(Fetched::Config { config, etag }) => {
            let entry = CacheEntry {
                config: (*config).clone(),
                fetched_at: now,
                etag,
                invalidated: false,
            };
            (
                ConfigLookup::Found {
                    config,
                    source: Source::Dashboard,
                },
                Write::Store(Box::new(entry)),
            )
        }
        Some(Fetched::NotModified) => match cached {
            Some(mut e) => {
                e.fetched_at = now;
                e.invalidated = false;
                let config = Box::new(e.config.clone());
                (
                    ConfigLookup::Found {
                        config,
                        source: Source::Dashboard,
                    },
                    Write::Store(Box::new(e)),
                )
            }
            None => (
                ConfigLookup::Unavailable("dashboard answered 304 but nothing is cached".into()),
                Write::None,
            ),
        },
        Some(Fetched::NotFound) => (ConfigLookup::UnknownNumber, Write::None),
        Some(Fetched::Failed(why)) => match cached {
            Some(e) if usable_stale(&e) => (
                ConfigLookup::Found {
                    config: Box::new(e.config),
                    source: Source::StaleCache,
                },
                Write::None,
            ),
            _ => (ConfigLookup::Unavailable(why), Write::None),
        },
    }
}

/// Marks an entry as invalidated (the `restaurant.updated` webhook); `None` when the stored text is
/// not an entry (then the shell deletes it).
pub fn invalidate(stored: &str) -> Option<String> {
    let mut entry: CacheEntry = serde_json::from_str(stored).ok()?;
    entry.invalidated = true;
    serde_json::to_string(&entry).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::config;

    const POLICY: CachePolicy = CachePolicy {
        ttl_secs: 300,
        stale_secs: 3600,
    };

    fn entry(fetched_at: i64) -> CacheEntry {
        CacheEntry {
            config: config("r1"),
            fetched_at,
            etag: Some("\"3\"".into()),
            invalidated: false,
        }
    }

    #[test]
    fn freshness_boundaries() {
        let e = entry(1_000);
        assert_eq!(POLICY.freshness(&e, 1_000), Freshness::Fresh);
        assert_eq!(POLICY.freshness(&e, 1_299), Freshness::Fresh);
        assert_eq!(POLICY.freshness(&e, 1_300), Freshness::Stale);
        assert_eq!(POLICY.freshness(&e, 1_000 + 300 + 3599), Freshness::Stale);
        assert_eq!(POLICY.freshness(&e, 1_000 + 300 + 3600), Freshness::Expired);
        // Clock went backwards: still fresh, not a panic or an overflow.
        assert_eq!(POLICY.freshness(&e, 0), Freshness::Fresh);
        let inv = CacheEntry {
            invalidated: true,
            ..e
        };
        assert_eq!(POLICY.freshness(&inv, 1_001), Freshness::Stale);
        assert_eq!(POLICY.storage_ttl(), 3900);
        assert_eq!(
            CachePolicy {
                ttl_secs: 0,
                stale_secs: 0
            }
            .storage_ttl(),
            MIN_STORAGE_TTL_SECS
        );
    }

    #[test]
    fn fresh_entry_is_used_without_dashboard() {
        let (lookup, write) = resolve(POLICY, Some(entry(1_000)), None, 1_010);
        assert!(matches!(
            lookup,
            ConfigLookup::Found {
                source: Source::Cache,
                ..
            }
        ));
        assert_eq!(write, Write::None);
    }

    #[test]
    fn dashboard_answer_is_stored() {
        let fetched = Fetched::Config {
            config: Box::new(config("r1")),
            etag: Some("\"4\"".into()),
        };
        let (lookup, write) = resolve(POLICY, Some(entry(1_000)), Some(fetched), 2_000);
        assert!(matches!(
            lookup,
            ConfigLookup::Found {
                source: Source::Dashboard,
                ..
            }
        ));
        let Write::Store(e) = write else {
            panic!("expected a store")
        };
        assert_eq!(
            (e.fetched_at, e.etag.as_deref(), e.invalidated),
            (2_000, Some("\"4\""), false)
        );
    }

    #[test]
    fn not_modified_refreshes_and_clears_invalidation() {
        let cached = CacheEntry {
            invalidated: true,
            ..entry(1_000)
        };
        let (lookup, write) = resolve(POLICY, Some(cached), Some(Fetched::NotModified), 5_000);
        assert!(matches!(
            lookup,
            ConfigLookup::Found {
                source: Source::Dashboard,
                ..
            }
        ));
        let Write::Store(e) = write else {
            panic!("expected a store")
        };
        assert_eq!((e.fetched_at, e.invalidated), (5_000, false));
        let (lookup, _) = resolve(POLICY, None, Some(Fetched::NotModified), 5_000);
        assert!(matches!(lookup, ConfigLookup::Unavailable(_)));
    }

    #[test]
    fn failure_uses_stale_entry_within_window_only() {
        let failed = || Some(Fetched::Failed("timeout".into()));
        let (lookup, write) = resolve(POLICY, Some(entry(1_000)), failed(), 1_000 + 3_000);
        assert!(matches!(
            lookup,
            ConfigLookup::Found {
                source: Source::StaleCache,
                ..
            }
        ));
        assert_eq!(write, Write::None);
        let (lookup, _) = resolve(POLICY, Some(entry(1_000)), failed(), 1_000 + 3_900);
        assert_eq!(lookup, ConfigLookup::Unavailable("timeout".into()));
        let (lookup, _) = resolve(POLICY, None, failed(), 1_000);
        assert_eq!(lookup, ConfigLookup::Unavailable("timeout".into()));
    }

    #[test]
    fn not_found_is_unknown_even_with_a_cached_entry() {
        let (lookup, _) = resolve(POLICY, Some(entry(1_000)), Some(Fetched::NotFound), 2_000);
        assert_eq!(lookup, ConfigLookup::UnknownNumber);
    }

    #[test]
    fn classify_statuses() {
        let body = serde_json::to_vec(&config("r1")).unwrap();
        let up = |status, body: Vec<u8>| Upstream {
            status,
            etag: Some("\"1\"".into()),
            body,
        };
        assert!(matches!(classify(&up(200, body)), Fetched::Config { .. }));
        assert!(
            matches!(classify(&up(200, b"{".to_vec())), Fetched::Failed(m) if m.contains("invalid"))
        );
        // Parses, but ElevenLabs would not know the language: refused like unreadable JSON, so a
        // stale entry (or the fallback) answers instead.
        let mut bad = config("r1");
        bad.agent.language = "it-IT".into();
        let failed = classify(&up(200, serde_json::to_vec(&bad).unwrap()));
        assert!(
            matches!(&failed, Fetched::Failed(m) if m.contains("agent.language") && m.contains("r1")),
            "{failed:?}"
        );
        assert_eq!(classify(&up(304, vec![])), Fetched::NotModified);
        assert_eq!(classify(&up(404, vec![])), Fetched::NotFound);
        assert!(matches!(classify(&up(503, vec![])), Fetched::Failed(m) if m.contains("503")));
    }

    #[test]
    fn invalidate_marks_entry() {
        let stored = serde_json::to_string(&entry(1_000)).unwrap();
        let marked: CacheEntry = serde_json::from_str(&invalidate(&stored).unwrap()).unwrap();
        assert!(marked.invalidated);
        assert_eq!(invalidate("not json"), None);
    }
}
