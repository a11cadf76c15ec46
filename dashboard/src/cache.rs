//! The bridge's cache of restaurant configurations and knowledge bases.
//!
//! - **Revalidation**: entries remember their ETag (`"<version>"`); after the TTL a lookup sends
//!   `If-None-Match` and a `304` just refreshes the entry.
//! - **Stale-if-error**: when the dashboard is down or slow, an expired entry keeps serving for
//!   up to `stale_if_error` past its TTL (calls keep working), with a warning and a metric. The
//!   rule is [`pulsara_core::freshness`], the one the edge's cache follows too.
//! - **Single-flight**: one async mutex per key; concurrent callers of a missing/expired key wait
//!   for the one fetch in progress and share its result.
//! - **Invalidation** ([`ConfigCache::invalidate`], driven by dashboard webhooks) marks entries
//!   so the *next* lookup revalidates. Values are `Arc`s: a call holding one keeps exactly the
//!   configuration it started with, whatever happens to the cache.
//!
//! Time comes from `tokio::time::Instant`, so tests drive it with `tokio::time::pause`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::freshness::{Freshness, Lifetimes};
use pulsara_net::metrics::{Family, ScrapeCollector};
use tokio::time::Instant;

use crate::client::{ClientError, DashboardClient, Fetched};
use crate::events::{DashboardEvent, EventType};

/// Where the cache gets fresh data (the dashboard client, or a fake in tests).
pub trait Fetcher: Send + Sync + 'static {
    fn restaurant_by_number(
        &self,
        e164: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send;
    fn restaurant(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send;
    fn knowledge_base(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<KnowledgeBase>, ClientError>> + Send;
}

impl Fetcher for DashboardClient {
    fn restaurant_by_number(
        &self,
        e164: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send {
        DashboardClient::restaurant_by_number(self, e164, etag)
    }
    fn restaurant(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<RestaurantConfig>, ClientError>> + Send {
        DashboardClient::restaurant(self, id, etag)
    }
    fn knowledge_base(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched<KnowledgeBase>, ClientError>> + Send {
        DashboardClient::knowledge_base(self, id, etag)
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Fresh lifetime of an entry.
    pub ttl: Duration,
    /// How long past the TTL an entry may still serve when the dashboard fails.
    pub stale_if_error: Duration,
    /// Deadline for one fetch (on top of the client's own timeout).
    pub fetch_timeout: Duration,
    /// Most keys kept; beyond it idle entries are dropped.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(2),
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    NotFound(String),
    #[error("dashboard fetch failed and nothing usable is cached: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Number(String),
    Restaurant(String),
    Kb(String),
}

#[derive(Clone)]
enum Value {
    Config(Arc<RestaurantConfig>),
    Kb(Arc<KnowledgeBase>),
}

struct Entry {
    value: Option<Value>,
    etag: Option<String>,
    fetched_at: Instant,
}

struct Slot {
    entry: tokio::sync::Mutex<Entry>,
    invalidated: AtomicBool,
    /// Restaurant id of the cached value (for invalidating number entries without locking).
    restaurant_id: Mutex<Option<String>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub fetches: AtomicU64,
    pub not_modified: AtomicU64,
    pub stale_served: AtomicU64,
    pub errors: AtomicU64,
    pub invalidations: AtomicU64,
}

pub struct ConfigCache<F: Fetcher> {
    fetcher: F,
    cfg: CacheConfig,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    pub stats: CacheStats,
}

impl<F: Fetcher> ConfigCache<F> {
    pub fn new(fetcher: F, cfg: CacheConfig) -> Self {
        Self {
            fetcher,
            cfg,
            slots: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if !slots.contains_key(key) && slots.len() >= self.cfg.max_entries {
            // Drop idle entries (nobody waiting on them); an Arc held by a call is unaffected.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    entry: tokio::sync::Mutex::new(Entry {
                        value: None,
                        etag: None,
                        fetched_at: Instant::now(),
                    }),
                    invalidated: AtomicBool::new(false),
                    restaurant_id: Mutex::new(None),
                })
            })
            .clone()
    }

    async fn get(&self, key: Key) -> Result<Value, CacheError> {
        let slot = self.slot(&key);
        let mut e = slot.entry.lock().await;
        let now = Instant::now();
        let invalidated = slot.invalidated.swap(false, Ordering::SeqCst);
        let lifetimes = Lifetimes {
            ttl: self.cfg.ttl,
            stale_if_error: self.cfg.stale_if_error,
        };
        let freshness =
            |e: &Entry| lifetimes.freshness(now.duration_since(e.fetched_at), invalidated);
        if let Some(v) = &e.value {
            if freshness(&e) == Freshness::Fresh {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v.clone());
            }
        }
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let etag = if e.value.is_some() {
            e.etag.clone()
        } else {
            None
        };
        let fetched =
            tokio::time::timeout(self.cfg.fetch_timeout, self.fetch(&key, etag.as_deref()))
                .await
                .unwrap_or_else(|_| Err(ClientError::Transport("fetch timed out".into())));
        match fetched {
            Ok((Some(value), new_etag)) => {
                let rid = match &value {
                    Value::Config(c) => c.id.clone(),
                    Value::Kb(k) => k.restaurant_id.clone(),
                };
                *slot.restaurant_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(rid);
                e.value = Some(value.clone());
                e.etag = new_etag;
                e.fetched_at = now;
                Ok(value)
            }
            Ok((None, _)) => {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                e.fetched_at = now;
                e.value
                    .clone()
                    .ok_or_else(|| CacheError::Unavailable("304 without a cached copy".into()))
            }
            Err(ClientError::NotFound(what)) => {
                // The dashboard says it no longer exists: stop serving the old copy.
                e.value = None;
                e.etag = None;
                Err(CacheError::NotFound(format!("dashboard has no {what}")))
            }
            Err(err) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                match &e.value {
                    Some(v) if freshness(&e) != Freshness::Expired => {
                        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key = ?key, error = %err, "dashboard fetch failed; serving cached copy (stale-if-error)");
                        // Re-check on the next lookup rather than waiting a TTL.
                        slot.invalidated.store(true, Ordering::SeqCst);
                        Ok(v.clone())
                    }
                    _ => Err(CacheError::Unavailable(err.to_string())),
                }
            }
        }
    }

    /// `(Some(value), etag)` for fresh data, `(None, _)` for not modified.
    async fn fetch(
        &self,
        key: &Key,
        etag: Option<&str>,
    ) -> Result<(Option<Value>, Option<String>), ClientError> {
        fn unpack<T>(
            f: Fetched<T>,
            wrap: impl FnOnce(Arc<T>) -> Value,
        ) -> (Option<Value>, Option<String>) {
            match f {
                Fetched::Fresh { value, etag } => (Some(wrap(Arc::new(value))), etag),
                Fetched::NotModified => (None, None),
            }
        }
        Ok(match key {
            Key::Number(n) => unpack(
                self.fetcher.restaurant_by_number(n, etag).await?,
                Value::Config,
            ),
            Key::Restaurant(id) => unpack(self.fetcher.restaurant(id, etag).await?, Value::Config),
            Key::Kb(id) => unpack(self.fetcher.knowledge_base(id, etag).await?, Value::Kb),
        })
    }

    /// The restaurant owning `e164`.
    ///
    /// # Errors
    /// Unknown number, or the dashboard failed with nothing usable cached.
    pub async fn restaurant_by_number(
        &self,
        e164: &str,
    ) -> Result<Arc<RestaurantConfig>, CacheError> {
        match self.get(Key::Number(e164.to_owned())).await? {
            Value::Config(c) => Ok(c),
            Value::Kb(_) => Err(CacheError::Unavailable("cache key type confusion".into())),
        }
    }

    /// A restaurant by id.
    ///
    /// # Errors
    /// Unknown restaurant, or the dashboard failed with nothing usable cached.
    pub async fn restaurant(&self, id: &str) -> Result<Arc<RestaurantConfig>, CacheError> {
        match self.get(Key::Restaurant(id.to_owned())).await? {
            Value::Config(c) => Ok(c),
            Value::Kb(_) => Err(CacheError::Unavailable("cache key type confusion".into())),
        }
    }

    /// A restaurant's knowledge base.
    ///
    /// # Errors
    /// Unknown restaurant, or the dashboard failed with nothing usable cached.
    pub async fn knowledge_base(&self, id: &str) -> Result<Arc<KnowledgeBase>, CacheError> {
        match self.get(Key::Kb(id.to_owned())).await? {
            Value::Kb(k) => Ok(k),
            Value::Config(_) => Err(CacheError::Unavailable("cache key type confusion".into())),
        }
    }

    /// Applies a dashboard webhook: the next lookup of the affected entries revalidates.
    pub fn invalidate(&self, event: &DashboardEvent) {
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        let rid = &event.data.restaurant_id;
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for (key, slot) in slots.iter() {
            let hit = match (key, event.kind) {
                (Key::Kb(id), EventType::KnowledgeBaseUpdated) => id == rid,
                (Key::Restaurant(id), EventType::RestaurantUpdated | EventType::PolicyUpdated) => {
                    id == rid
                }
                (Key::Number(_), EventType::RestaurantUpdated | EventType::PolicyUpdated) => {
                    slot.restaurant_id
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_deref()
                        == Some(rid.as_str())
                }
                _ => false,
            };
            if hit {
                slot.invalidated.store(true, Ordering::SeqCst);
            }
        }
    }

    /// The cache's counters as families for the process registry, read at every scrape.
    ///
    /// # Errors
    /// Never for these fixed names; the type is the registry's.
    pub fn collector(self: &Arc<Self>) -> prometheus::Result<ScrapeCollector<[u64; 6]>>
    where
        F: Send + Sync + 'static,
    {
        let cache = self.clone();
        ScrapeCollector::new(
            vec![
                Family::counter("pulsara_config_cache_hits_total", "Lookups answered from a fresh cached copy.", |s| s[0] as f64),
                Family::counter("pulsara_config_cache_fetches_total", "Lookups that asked the dashboard.", |s| s[1] as f64),
                Family::counter(
                    "pulsara_config_cache_not_modified_total",
                    "Dashboard answers 304: the cached copy was still current.",
                    |s| s[2] as f64,
                ),
                Family::counter(
                    "pulsara_config_cache_stale_served_total",
                    "Cached copies served past their TTL because the dashboard failed (stale-if-error).",
                    |s| s[3] as f64,
                ),
                Family::counter("pulsara_config_cache_errors_total", "Dashboard fetches that failed.", |s| s[4] as f64),
                Family::counter(
                    "pulsara_config_cache_invalidations_total",
                    "Dashboard events that invalidated cached entries.",
                    |s| s[5] as f64,
                ),
            ],
            &[],
            move || {
                let s = &cache.stats;
                Some([&s.hits, &s.fetches, &s.not_modified, &s.stale_served, &s.errors, &s.invalidations].map(|c| c.load(Ordering::Relaxed)))
            },
        )
    }
}
