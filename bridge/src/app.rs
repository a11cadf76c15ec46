//! The bridge's shared state: [`App`], everything a call needs (configuration, keys, the ports,
//! the metrics, the HTTP clients, the shutdown tokens), and the call slots it hands out
//! ([`App::admit`]). The HTTP shell ([`crate::server`]) and the per-call tasks
//! ([`crate::session`]) both depend on it; it depends on neither.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsara_core::handoff::HandoffKeys;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::AgentClient;
use crate::clock::Clock;
use crate::config::BridgeConfig;
use crate::metrics::Metrics;
use crate::overload::LagMonitor;
use crate::ports::{CallSink, ConfigSource, ToolRunner};
use crate::replay::ReplayCache;
use pulsara_dashboard::twilio_rest::TwilioRest;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigFileError),
    #[error("HTTP client could not be built: {0}")]
    Http(String),
    #[error("metric families could not be registered: {0}")]
    Metrics(String),
}

/// Everything a call needs, shared by all calls.
pub struct App {
    pub cfg: BridgeConfig,
    pub keys: HandoffKeys,
    pub replay: ReplayCache,
    /// Agent sessions opened ahead of their streams (`POST /prepare`).
    pub prepared: crate::prepare::Preparations,
    pub configs: Arc<dyn ConfigSource>,
    pub tools: Arc<dyn ToolRunner>,
    pub sink: Arc<dyn CallSink>,
    pub metrics: Arc<Metrics>,
    pub agent: AgentClient,
    pub rest: TwilioRest,
    /// Calls in progress (tracked so shutdown can wait for them).
    pub tracker: TaskTracker,
    /// Cancelled at shutdown: no new streams.
    pub draining: CancellationToken,
    /// Cancelled when the grace period is over: live calls end politely.
    pub hard_stop: CancellationToken,
    /// Every time the bridge reads: handoff expiry, the agent's "today", tools' local time.
    pub clock: Clock,
    /// The process's metric families, rendered at `/metrics`: the bridge's ([`App::metrics`])
    /// and whatever else the process registered (the listener, the outbox, the config cache, the
    /// tools).
    pub registry: prometheus::Registry,
    /// The runtime's scheduling lag, sampled while [`run_router`] serves.
    pub lag: Arc<LagMonitor>,
    ready: AtomicBool,
    open_streams: AtomicUsize,
    /// When a refusal was last logged (floods are logged once a second, with the counts).
    shed_logged: Mutex<Option<tokio::time::Instant>>,
}

impl App {
    /// Builds the shared state.
    ///
    /// # Errors
    /// When the handoff key ring or the HTTP client cannot be built (the message names which).
    pub fn new(
        cfg: BridgeConfig,
        configs: Arc<dyn ConfigSource>,
        tools: Arc<dyn ToolRunner>,
        sink: Arc<dyn CallSink>,
    ) -> Result<Arc<App>, AppError> {
        Self::with_clock(cfg, configs, tools, sink, Clock::system())
    }

    /// As [`App::new`], reading time from `clock` (the demo and scenario tests shift it).
    ///
    /// # Errors
    /// As [`App::new`].
    pub fn with_clock(
        cfg: BridgeConfig,
        configs: Arc<dyn ConfigSource>,
        tools: Arc<dyn ToolRunner>,
        sink: Arc<dyn CallSink>,
        clock: Clock,
    ) -> Result<Arc<App>, AppError> {
        Self::with_registry(
            cfg,
            configs,
            tools,
            sink,
            clock,
            prometheus::Registry::new(),
        )
    }

    /// As [`App::with_clock`], registering the bridge's metric families into the process's
    /// `registry` and serving all of it at `/metrics`.
    ///
    /// # Errors
    /// As [`App::new`], and [`AppError::Metrics`] when the registry already holds the bridge's
    /// families.
    pub fn with_registry(
        cfg: BridgeConfig,
        configs: Arc<dyn ConfigSource>,
        tools: Arc<dyn ToolRunner>,
        sink: Arc<dyn CallSink>,
        clock: Clock,
        registry: prometheus::Registry,
    ) -> Result<Arc<App>, AppError> {
        let metrics =
            Arc::new(Metrics::new(&registry).map_err(|e| AppError::Metrics(e.to_string()))?);
        let prepared = crate::prepare::Preparations::new(&registry).map_err(|e| AppError::Metrics(e.to_string()))?;
        let keys = cfg.handoff_ring()?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| AppError::Http(e.to_string()))?;
        let agent = AgentClient::new(
            http.clone(),
            &cfg.elevenlabs_base_url,
            cfg.elevenlabs_api_key.clone().unwrap_or_else(|| "".into()),
            &cfg.limits,
        );
        let rest = TwilioRest::new(
            http,
            &cfg.twilio_api_base,
            &cfg.twilio_account_sid,
            cfg.twilio_auth_token.clone().unwrap_or_else(|| "".into()),
        );
        Ok(Arc::new(App {
            replay: ReplayCache::new(cfg.limits.replay_cache_entries),
            prepared,
            keys,
            configs,
            tools,
            sink,
            metrics,
            agent,
            rest,
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            lag: Arc::new(LagMonitor::default()),
            ready: AtomicBool::new(true),
            open_streams: AtomicUsize::new(0),
            shed_logged: Mutex::new(None),
            clock,
            registry,
            cfg,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.draining.is_cancelled()
    }

    /// Media Streams open right now (upgraded or upgrading, live or not yet started).
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    /// Live (admitted) calls right now.
    pub fn live_calls(&self) -> usize {
        self.metrics.live.total()
    }

    /// Admits a call for `restaurant` if both the global and the restaurant's cap allow it.
    pub fn admit(self: &Arc<Self>, restaurant: &str, restaurant_cap: u32) -> Option<Admission> {
        let cap = usize::try_from(restaurant_cap).unwrap_or(usize::MAX);
        if !self.metrics.live.try_add(restaurant, cap, self.cfg.limits.max_calls) {
            return None;
        }
        Some(Admission {
            app: self.clone(),
            restaurant: restaurant.to_owned(),
        })
    }
}

/// A held call slot; released on drop.
pub struct Admission {
    app: Arc<App>,
    restaurant: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.app.metrics.live.remove(&self.restaurant);
    }
}

/// A Media Stream counted in [`App::open_streams`] until dropped.
pub(crate) struct OpenStream(Arc<App>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

impl App {
    /// Counts a stream as open until the returned guard drops; also returns how many are open
    /// now, this one included.
    pub(crate) fn open_stream(self: &Arc<Self>) -> (OpenStream, usize) {
        let open = self.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
        (OpenStream(self.clone()), open)
    }

    /// Whether a refused stream should be logged at `now`: at most once a second.
    pub(crate) fn refusal_log_due(&self, now: tokio::time::Instant) -> bool {
        let mut last = self.shed_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            true
        } else {
            false
        }
    }

    /// Stops answering ready (shutdown has begun).
    pub(crate) fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }
}
