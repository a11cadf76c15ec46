//! The accept loop and the connection tasks.
//!
//! Why not `axum::serve`: it runs hyper without a timer, so no header-read deadline applies and
//! a socket that sends nothing is held for ever; and it sleeps a second after every accept error,
//! so running out of descriptors stalls every caller. Here:
//!
//! - hyper's HTTP/1 runs with [`TokioTimer`] and its `header_read_timeout` as a backstop. In hyper
//!   1.x that one timer starts whenever the connection begins reading a request head, so it
//!   bounds the wait for the first request *and* the keep-alive idle wait with one value; the
//!   registry's phases give each its own deadline ([`ServeConfig::header_timeout`],
//!   [`ServeConfig::idle_timeout`]) and the backstop is the larger of the two.
//! - [`ServeConfig::request_timeout`] bounds each request from head to response head (408).
//! - Unserved connections are capped; a newcomer evicts the oldest (see [`crate::registry`]).
//! - Out of descriptors, accept evicts the oldest waiting connection and pauses briefly.
//! - Upgrades (WebSocket) are handed off with `with_upgrades`; the upgraded socket is then the
//!   application's to bound.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::ServeConfig;
use crate::registry::{Conn, Phase, Registry};
use crate::stats::Stats;

/// A listener's configuration and counters; [`Server::serve`] runs it.
pub struct Server {
    cfg: ServeConfig,
    stats: Arc<Stats>,
}

impl Server {
    pub fn new(cfg: ServeConfig) -> Self {
        Server {
            cfg,
            stats: Arc::new(Stats::default()),
        }
    }

    /// The counters, live while the server runs (render them with [`Stats::render`]).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
    /// in-flight requests finish up to [`ServeConfig::shutdown_timeout`] and returns. Upgraded
    /// connections are not waited for (they belong to the application by then).
    ///
    /// # Errors
    /// None today: accept errors are handled in the loop. The `Result` keeps the signature of
    /// `axum::serve`'s future.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::new(Shared {
            registry: Registry::new(self.cfg.max_unserved),
            stats: self.stats,
            cfg: self.cfg,
            router,
            stop: CancellationToken::new(),
            force: CancellationToken::new(),
            warned: Mutex::new(None),
        });
        let tracker = TaskTracker::new();
        // Dropped without a graceful shutdown (the task aborted): its connections close too, so
        // a stopped server answers nothing on sockets that were kept alive.
        let _close_on_drop = shared.force.clone().drop_guard();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((tcp, _peer)) => {
                    shared.stats.accepted.fetch_add(1, Relaxed);
                    let now = Instant::now();
                    let (conn, evicted) = shared.registry.admit(now + shared.cfg.header_timeout);
                    if !evicted.is_empty() {
                        shared
                            .stats
                            .evicted
                            .fetch_add(evicted.len() as u64, Relaxed);
                        shared.warn_throttled(
                            now,
                            "unserved connection cap reached; closing the oldest",
                        );
                    }
                    shared.sync_unserved();
                    tracker.spawn(connection(shared.clone(), conn, tcp));
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    shared.stats.accept_errors.fetch_add(1, Relaxed);
                    let now = Instant::now();
                    if is_resource_exhaustion(&e) {
                        shared.stats.fd_exhausted.fetch_add(1, Relaxed);
                        if shared.registry.shed_one().is_some() {
                            shared.stats.evicted.fetch_add(1, Relaxed);
                            shared.sync_unserved();
                        }
                        shared.warn_throttled(now, "accept: out of descriptors or buffers; closed the oldest unserved connection");
                    } else {
                        tracing::warn!(error = %e, "accept error");
                    }
                    // Give the evicted connection's task a moment to release its socket.
                    tokio::time::sleep(shared.cfg.accept_backoff).await;
                }
            }
        }
        drop(listener);
        shared.stop.cancel();
        tracker.close();
        if tokio::time::timeout(shared.cfg.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(
                open = tracker.len(),
                "HTTP shutdown: in-flight requests did not finish in time; closing them"
            );
            shared.force.cancel();
            tracker.wait().await;
        }
        Ok(())
    }
}

/// Serves `router` on `listener` with `cfg` until `shutdown` resolves (see [`Server::serve`]).
///
/// # Errors
/// As [`Server::serve`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Server::new(cfg).serve(listener, router, shutdown).await
}

struct Shared {
    cfg: ServeConfig,
    registry: Registry,
    stats: Arc<Stats>,
    router: Router,
    /// Cancelled when the listener stops: connections shut down gracefully.
    stop: CancellationToken,
    /// Cancelled when the shutdown timeout is over: connections are dropped.
    force: CancellationToken,
    /// When the last throttled warning was logged.
    warned: Mutex<Option<Instant>>,
}

impl Shared {
    fn sync_unserved(&self) {
        self.stats
            .unserved
            .store(self.registry.unserved() as u64, Relaxed);
    }

    /// Logs `what` at most once a second (a flood would otherwise flood the log too).
    fn warn_throttled(&self, now: Instant, what: &'static str) {
        let mut last = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            let s = self.stats.snapshot();
            tracing::warn!(
                unserved = s.unserved,
                evicted_total = s.evicted,
                fd_exhausted_total = s.fd_exhausted,
                max_unserved = self.cfg.max_unserved,
                "{what}"
            );
        }
    }
}

async fn connection(shared: Arc<Shared>, conn: Arc<Conn>, tcp: TcpStream) {
    shared.stats.open.fetch_add(1, Relaxed);
    if shared.cfg.nodelay {
        let _ = tcp.set_nodelay(true);
    }
    let svc = {
        let shared = shared.clone();
        let conn = conn.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(handle(&shared, &conn, req).await) }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.cfg.header_timeout.max(shared.cfg.idle_timeout))
        .keep_alive(true);
    let fut = http
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(fut);
    let mut stopping = false;
    loop {
        let deadline = match conn.phase() {
            Phase::Waiting { deadline, first } => Some((deadline, first)),
            _ => None,
        };
        let expire = async {
            match deadline {
                Some((d, _)) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = fut.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            () = conn.evicted.cancelled() => break,
            () = shared.force.cancelled() => break,
            () = conn.changed.notified() => {}
            () = expire => {
                // Re-read: the phase may have changed as the timer fired.
                if let (Phase::Waiting { deadline: d, first }, Some(_)) = (conn.phase(), deadline) {
                    if d <= Instant::now() {
                        let counter = if first { &shared.stats.header_timeouts } else { &shared.stats.idle_timeouts };
                        counter.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
            () = shared.stop.cancelled(), if !stopping => {
                stopping = true;
                fut.as_mut().graceful_shutdown();
            }
        }
    }
    if conn.phase() == Phase::Upgraded {
        shared.stats.upgraded.fetch_add(1, Relaxed);
    }
    shared.registry.closed(&conn);
    shared.sync_unserved();
    shared.stats.open.fetch_sub(1, Relaxed);
}

async fn handle(
    shared: &Shared,
    conn: &Arc<Conn>,
    req: Request<Incoming>,
) -> Response<axum::body::Body> {
    shared.registry.request_started(conn);
    shared.sync_unserved();
    let req = req.map(axum::body::Body::new);
    let resp = match tokio::time::timeout(
        shared.cfg.request_timeout,
        shared.router.clone().oneshot(req),
    )
    .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(never)) => match never {},
        Err(_) => {
            shared.stats.request_timeouts.fetch_add(1, Relaxed);
            let mut resp = Response::new(axum::body::Body::from("request timed out\n"));
            *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    };
    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    shared
        .registry
        .request_finished(conn, upgraded, Instant::now() + shared.cfg.idle_timeout);
    shared.sync_unserved();
    resp
}

/// Errors about the one connection being accepted; the next accept is unaffected.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Out of descriptors (process or system), socket buffers or memory.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_resource_exhaustion(&emfile) && !is_per_connection(&emfile));
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert!(is_per_connection(&aborted) && !is_resource_exhaustion(&aborted));
    }
}
