//! The bridge's HTTP shell over the shared state ([`App`]): the axum [`router`] (`/media`,
//! `/prepare` ([`crate::prepare`]), `/healthz`, `/readyz`, `/metrics`) and [`run`], which serves on `pulsara-net`'s hardened listener until the
//! shutdown future resolves and then drains: `/readyz` answers 503 "draining", new streams are
//! refused with 503, live calls continue for the grace period, are then ended politely, and the
//! sink is flushed. The listener stays open through all of it (probes and `/metrics` keep
//! answering) and closes only after the drain.
//!
//! Every `/media` upgrade is admitted by [`crate::overload::decide`] first: a stream the process
//! cannot serve now (too many waiting for `start`, the runtime running late) gets a 503 before
//! the upgrade so the call's fallback takes over, instead of an accepted stream nobody reads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::ms;
use crate::overload::{Load, PendingStart, Refusal, Thresholds};

/// Extra sockets accepted beyond `max_calls`, so over-cap callers still get the busy message.
const BUSY_HEADROOM: usize = 64;

/// The bridge's routes. Merge other routers (e.g. the edge's native shell) into the result.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/media", get(media))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/prepare", axum::routing::post(crate::prepare::prepare))
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
    let (guard, open) = app.open_stream();
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
    if app.refusal_log_due(now) {
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
    app.set_not_ready();
    app.draining.cancel();
    tracing::info!(live_calls = app.live_calls(), "shutdown: draining");
    // Health, readiness (503) and metrics keep answering while calls finish.
    drain(&app).await;
    close_listener.cancel();
    joined(serving.await)
}

/// Waits for live calls up to the grace period, ends the rest politely, flushes the sink.
pub async fn drain(app: &App) {
    app.set_not_ready();
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
