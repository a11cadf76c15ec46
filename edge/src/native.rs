//! The native shell: the same routes as the Worker, as an axum [`Router`], over the same
//! [`flow::handle`]. The cache is a bounded in-memory map and the dashboard client is reqwest
//! (rustls). It exists so the whole stack runs in one process (the local demo, tests,
//! self-hosting without Cloudflare): mount [`router`] (or [`webhook_router`], without `/healthz`,
//! when the host server has its own) into another server, or run [`serve`] / [`serve_with`],
//! which put it behind the hardened listener of `pulsara-net` (header and idle deadlines, a cap
//! on unserved connections).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pulsara_edge::native::{serve, EdgeState};
//! let state = EdgeState::from_env()?; // PUBLIC_BASE_URL, BRIDGE_URLS, … as in the Worker
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! serve(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};

use crate::flow::{self, Outcome, PortError, Ports};
use crate::http::{Inbound, Outbound, Reply, Upstream, MAX_BODY_BYTES, MAX_UPSTREAM_BYTES};
use crate::settings::{Settings, SettingsError};

/// Most entries the in-memory cache holds (configs, number index, webhook ids).
pub const MAX_CACHE_ENTRIES: usize = 10_000;

/// A clock; tests pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Everything the native routes share. Cheap to clone.
#[derive(Clone)]
pub struct EdgeState {
    settings: Arc<Settings>,
    ports: Arc<NativePorts>,
    clock: Clock,
}

impl EdgeState {
    /// State over validated settings, the real clock and a fresh cache.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots unavailable).
    pub fn new(settings: Settings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.dashboard_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            settings: Arc::new(settings),
            ports: Arc::new(NativePorts {
                cache: Mutex::new(MemoryCache::default()),
                http,
            }),
            clock: Arc::new(Utc::now),
        })
    }

    /// Settings from the process environment (the same names as the Worker's vars and secrets).
    ///
    /// # Errors
    /// [`StateError`] listing every invalid setting.
    pub fn from_env() -> Result<Self, StateError> {
        let settings = Settings::from_lookup(|name| std::env::var(name).ok())?;
        Ok(Self::new(settings)?)
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// Why the native state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("could not build the dashboard HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// All edge routes: `POST /twilio/voice`, `POST /twilio/status`, `POST /webhooks/dashboard`,
/// `POST /webhooks/elevenlabs`, `GET /healthz`.
pub fn router(state: EdgeState) -> Router {
    webhook_router(state.clone()).route("/healthz", get(handle).with_state(state))
}

/// The edge routes without `/healthz`, for merging into a server that has its own.
/// When nested under a prefix, include the prefix in `PUBLIC_BASE_URL` (Twilio signs the full URL).
pub fn webhook_router(state: EdgeState) -> Router {
    Router::new()
        .route("/twilio/voice", post(handle))
        .route("/twilio/status", post(handle))
        .route("/webhooks/dashboard", post(handle))
        .route("/webhooks/elevenlabs", post(handle))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, with the listener defaults of
/// [`pulsara_net::ServeConfig`].
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: EdgeState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, pulsara_net::ServeConfig::default(), shutdown).await
}

/// As [`serve`], with the listener's deadlines and caps from `net`.
///
/// # Errors
/// When the server fails.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: EdgeState,
    net: pulsara_net::ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    pulsara_net::serve(listener, router(state), net, shutdown).await
}

async fn handle(
    State(state): State<EdgeState>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return into_response(Reply::text(
            413,
            format!("body exceeds the {MAX_BODY_BYTES}-byte limit"),
        ));
    };
    let inbound = Inbound {
        method: method.as_str().to_ascii_uppercase(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let now = (state.clock)();
    let (reply, outcome) =
        flow::handle(Ok(&state.settings), state.ports.as_ref(), &inbound, now).await;
    match &outcome {
        Outcome::Refused { .. } | Outcome::StatusForwarded { ok: false } => {
            tracing::warn!(method = %inbound.method, path = %inbound.path, status = reply.status, ?outcome, "edge request")
        }
        _ => {
            tracing::info!(method = %inbound.method, path = %inbound.path, status = reply.status, ?outcome, "edge request")
        }
    }
    into_response(reply)
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

struct NativePorts {
    cache: Mutex<MemoryCache>,
    http: reqwest::Client,
}

/// A bounded map with per-entry expiry (unix seconds).
#[derive(Default)]
struct MemoryCache {
    entries: HashMap<String, (String, i64)>,
}

impl MemoryCache {
    fn get(&mut self, key: &str, now: i64) -> Option<String> {
        match self.entries.get(key) {
            Some((v, exp)) if *exp > now => Some(v.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: &str, value: String, expires_at: i64, now: i64) {
        if self.entries.len() >= MAX_CACHE_ENTRIES && !self.entries.contains_key(key) {
            self.entries.retain(|_, (_, exp)| *exp > now);
            if self.entries.len() >= MAX_CACHE_ENTRIES {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, exp))| *exp)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key.to_owned(), (value, expires_at));
    }
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

impl Ports for NativePorts {
    async fn cache_get(&self, key: &str) -> Result<Option<String>, PortError> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| PortError::Storage("cache lock poisoned".into()))?;
        Ok(cache.get(key, unix_now()))
    }

    async fn cache_put(&self, key: &str, value: String, ttl_secs: u64) -> Result<(), PortError> {
        let now = unix_now();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| PortError::Storage("cache lock poisoned".into()))?;
        cache.put(
            key,
            value,
            now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX)),
            now,
        );
        Ok(())
    }

    async fn send(&self, req: Outbound, timeout_ms: u64) -> Result<Upstream, PortError> {
        let exchange = async {
            let method = reqwest::Method::from_bytes(req.method.as_bytes())
                .map_err(|e| PortError::Network(e.to_string()))?;
            let mut builder = self.http.request(method, &req.url);
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            if !req.body.is_empty() {
                builder = builder.body(req.body.clone());
            }
            let mut resp = builder
                .send()
                .await
                .map_err(|e| PortError::Network(e.without_url().to_string()))?;
            let status = resp.status().as_u16();
            let etag = resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| PortError::Network(e.without_url().to_string()))?
            {
                if body.len() + chunk.len() > MAX_UPSTREAM_BYTES {
                    return Err(PortError::Network(format!(
                        "dashboard response over {MAX_UPSTREAM_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Upstream { status, etag, body })
        };
        tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
            .await
            .unwrap_or(Err(PortError::Timeout(timeout_ms)))
    }

    fn background(&self, req: Outbound, timeout_ms: u64) {
        let http = self.http.clone();
        tokio::spawn(async move {
            let url = req.url.clone();
            let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else { return };
            let mut builder = http.request(method, &req.url).timeout(Duration::from_millis(timeout_ms));
            for (k, v) in &req.headers {
                builder = builder.header(k, v);
            }
            match builder.body(req.body).send().await {
                Ok(r) if r.status().is_success() => tracing::debug!(%url, status = r.status().as_u16(), "background request done"),
                Ok(r) => tracing::info!(%url, status = r.status().as_u16(), "background request refused"),
                Err(e) => tracing::info!(%url, error = %e.without_url(), "background request failed"),
            }
        });
    }

    fn nonce(&self) -> String {
        // If the system random source fails, time and a counter keep the nonce unique.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        pulsara_core::random::nonce_hex(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&nanos.to_le_bytes());
            bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            bytes
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cache_expires_and_stays_bounded() {
        let mut c = MemoryCache::default();
        c.put("a", "1".into(), 100, 0);
        assert_eq!(c.get("a", 99).as_deref(), Some("1"));
        assert_eq!(c.get("a", 100), None);
        for i in 0..MAX_CACHE_ENTRIES + 10 {
            c.put(&format!("k{i}"), String::new(), 1_000 + i as i64, 0);
        }
        assert_eq!(c.entries.len(), MAX_CACHE_ENTRIES);
        // The soonest-expiring keys were dropped, the newest kept.
        assert!(c.get("k0", 0).is_none());
        assert!(c.get(&format!("k{}", MAX_CACHE_ENTRIES + 9), 0).is_some());
    }
}
