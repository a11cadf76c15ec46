//! The bridge's HTTP shell: shared state ([`App`]), the axum [`router`] (`/media`, `/healthz`,
//! `/readyz`, `/metrics`) and [`run`], which serves on `pulsara-net`'s hardened listener until the
//! shutdown future resolves and then drains: `/readyz` answers 503 "draining", new streams are
//! refused with 503, live calls continue for the grace period, are then ended politely, and the
//! sink is flushed. The listener stays open through all of it (probes and `/metrics` keep
//! answering) and closes only after the drain.
//!
//! Every `/media` upgrade is admitted by [`crate::overload::decide`] first: a stream the process
//! cannot serve now (too many waiting for `start`, the runtime running late) gets a 503 before
//! the upgrade so the call's fallback takes over, instead of an accepted stream nobody reads.

use crate::clock::Clock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pulsara_core::handoff::HandoffKeys;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::AgentClient;
use crate::overload::{LagMonitor, Load, PendingStart, Refusal, Thresholds};
use crate::config::{ms, BridgeConfig};
use crate::metrics::Metrics;
use crate::ports::{CallSink, ConfigSource, ToolRunner};
use crate::replay::ReplayCache;
use crate::twilio_rest::TwilioRest;

/// Extra sockets accepted beyond `max_calls`, so over-cap callers still get the busy message.
const BUSY_HEADROOM: usize = 64;

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
    live: Mutex<HashMap<String, usize>>,
    live_total: AtomicUsize,
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
        Self::with_registry(cfg, configs, tools, sink, clock, prometheus::Registry::new())
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
        let metrics = Arc::new(Metrics::new(&registry).map_err(|e| AppError::Metrics(e.to_string()))?);
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
            live: Mutex::new(HashMap::new()),
            live_total: AtomicUsize::new(0),
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
        self.live_total.load(Ordering::SeqCst)
    }

    /// Admits a call for `restaurant` if both the global and the restaurant's cap allow it.
    pub fn admit(self: &Arc<Self>, restaurant: &str, restaurant_cap: u32) -> Option<Admission> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if self.live_total.load(Ordering::SeqCst) >= self.cfg.limits.max_calls {
            return None;
        }
        let n = live.entry(restaurant.to_owned()).or_insert(0);
        if *n >= restaurant_cap as usize {
            return None;
        }
        *n += 1;
        self.live_total.fetch_add(1, Ordering::SeqCst);
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
        let mut live = self.app.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.restaurant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.restaurant);
            }
        }
        self.app.live_total.fetch_sub(1, Ordering::SeqCst);
    }
}

struct OpenStream(Arc<App>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The bridge's routes. Merge other routers (e.g. the edge's native shell) into the result.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/media", get(media))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(crate::voicemail::PATH, axum::routing::post(crate::voicemail::recording))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    }
}

/// Renders the process registry with `prometheus`'s text encoder. Gathering reads the outbox's
/// SQLite counts, so it runs on the blocking pool.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    if !app.cfg.metrics {
        return StatusCode::NOT_FOUND.into_response();
    }
    let lag = app.lag.current(tokio::time::Instant::now());
    app.metrics
        .scheduling_lag
        .set(crate::metrics::secs(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX)));
    let registry = app.registry.clone();
    match tokio::task::spawn_blocking(move || pulsara_net::metrics::render(&registry)).await {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn media(State(app): State<Arc<App>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let upgraded_at = tokio::time::Instant::now();
    if !app.is_ready() {
        app.metrics.error("stream_refused_draining");
        return refuse(&app, Refusal::Draining, upgraded_at);
    }
    if let Err(why) = check_upgrade_signature(&app, &headers) {
        app.metrics.calls_rejected.inc();
        app.metrics.error("upgrade_signature");
        tracing::warn!(why, "media stream upgrade refused");
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    }
    let open = app.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
    let guard = OpenStream(app.clone());
    let l = &app.cfg.limits;
    let load = Load {
        draining: !app.is_ready(),
        open_streams: open,
        pending_start: usize::try_from(app.metrics.streams_pending_start.get()).unwrap_or(0),
        scheduling_lag: app.lag.current(upgraded_at),
    };
    let thresholds = Thresholds {
        max_streams: l.max_calls + BUSY_HEADROOM,
        max_pending_start: l.max_pending_start,
        max_scheduling_lag: ms(l.max_scheduling_lag_ms),
    };
    if let Err(why) = crate::overload::decide(&load, &thresholds) {
        if why == Refusal::AtCapacity {
            app.metrics.error("stream_refused_capacity");
        }
        return refuse(&app, why, upgraded_at);
    }
    // Counted from here, so the `start` deadline runs from the upgrade, not from whenever the
    // stream's task first gets to run.
    let pending = PendingStart::new(app.metrics.clone(), upgraded_at);
    let app2 = app.clone();
    ws.read_buffer_size(l.ws_read_buffer_bytes)
        .max_message_size(l.ws_max_message_bytes)
        .max_frame_size(l.ws_max_frame_bytes)
        .write_buffer_size(l.ws_write_buffer_bytes)
        .max_write_buffer_size(l.ws_max_write_buffer_bytes.max(l.ws_max_frame_bytes + 1))
        .on_upgrade(move |socket| {
            let tracker = app2.tracker.clone();
            tracker.track_future(async move {
                let _guard = guard;
                crate::session::run(socket, app2, pending).await;
            })
        })
}

/// Answers a refused upgrade: 503 with the reason, counted, and logged at most once a second.
fn refuse(app: &App, why: Refusal, now: tokio::time::Instant) -> Response {
    app.metrics.stream_shed(why);
    let mut last = app.shed_logged.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
        *last = Some(now);
        tracing::warn!(
            reason = why.label(),
            shed_total = app.metrics.streams_shed_of(why),
            open_streams = app.open_streams(),
            pending_start = app.metrics.streams_pending_start.get(),
            scheduling_lag_ms = app.lag.current(now).as_millis() as u64,
            "refusing new media stream with 503"
        );
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::CONNECTION, "close")],
        why.body(),
    )
        .into_response()
}

/// Checks `X-Twilio-Signature` on the upgrade when present (always when required). Twilio signs
/// the public `wss://host/media` URL; it is rebuilt from `PUBLIC_BASE_URL`, never from `Host`.
fn check_upgrade_signature(app: &App, headers: &HeaderMap) -> Result<(), &'static str> {
    let sig = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    match sig {
        None if app.cfg.require_twilio_signature => Err("missing X-Twilio-Signature"),
        None => Ok(()),
        Some(sig) => {
            let (Some(url), Some(token)) =
                (app.cfg.media_ws_url(), app.cfg.twilio_auth_token.as_ref())
            else {
                // Cannot check without PUBLIC_BASE_URL; the handoff token still authenticates.
                return Ok(());
            };
            // The shared validator: the wss URL with no parameters, with and without the default
            // port, compared in constant time.
            if pulsara_core::twilio::validate(token, &url, &[], Some(sig)).is_ok() {
                Ok(())
            } else {
                Err("bad X-Twilio-Signature")
            }
        }
    }
}

/// Serves the bridge's [`router`] on `listener` until `shutdown` resolves, then drains (see the
/// module docs). The listener follows [`crate::config::Limits::http`].
///
/// # Errors
/// I/O errors from the listener.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_router(listener, router(app.clone()), app, shutdown).await
}

/// As [`run`], serving a caller-built router (e.g. the bridge merged with the edge's native shell).
///
/// # Errors
/// I/O errors from the listener.
pub async fn run_router(
    listener: TcpListener,
    router: Router,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY is on by default: media frames are small and latency-bound.
    let server = pulsara_net::Server::new(app.cfg.limits.http());
    match server.stats().collector("bridge") {
        Ok(c) => {
            if let Err(e) = app.registry.register(Box::new(c)) {
                tracing::warn!(error = %e, "the listener's metrics are already registered");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the listener's metrics could not be created"),
    }
    let close_listener = CancellationToken::new();
    let stop = close_listener.clone();
    let mut serving = tokio::spawn(server.serve(listener, router, async move {
        stop.cancelled().await
    }));
    tokio::spawn(app.lag.clone().run(close_listener.clone()));
    let joined = |r: Result<std::io::Result<()>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(std::io::Error::other(format!("HTTP listener task failed: {e}"))))
    };
    tokio::select! {
        () = shutdown => {}
        r = &mut serving => {
            close_listener.cancel();
            return joined(r);
        }
    }
    app.ready.store(false, Ordering::SeqCst);
    app.draining.cancel();
    tracing::info!(live_calls = app.live_calls(), "shutdown: draining");
    // Health, readiness (503) and metrics keep answering while calls finish.
    drain(&app).await;
    close_listener.cancel();
    joined(serving.await)
}

/// Waits for live calls up to the grace period, ends the rest politely, flushes the sink.
pub async fn drain(app: &App) {
    app.ready.store(false, Ordering::SeqCst);
    app.draining.cancel();
    app.tracker.close();
    let grace = ms(app.cfg.limits.shutdown_grace_ms);
    if tokio::time::timeout(grace, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            live_calls = app.live_calls(),
            "shutdown: grace period over, ending calls"
        );
        app.hard_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(10), app.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!("shutdown: calls did not finish after being ended");
        }
    }
    if let Err(e) = app.sink.flush().await {
        tracing::error!(error = %e, "shutdown: flushing call records failed");
    }
    tracing::info!("shutdown: done");
}
