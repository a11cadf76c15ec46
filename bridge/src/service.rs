//! `pulsara serve`: the production wiring of one bridge process.
//!
//! - Configuration, tools and call records come from the dashboard: the remote one at
//!   `DASHBOARD_URL`, or — when that is unset — the embedded dashboard this process starts itself
//!   on `PULSARA_DASHBOARD_LISTEN`, stored in SQLite at `PULSARA_DASHBOARD_DB` and seeded from the
//!   restaurants directory, so a new user runs everything with nothing external.
//! - Tool policies run in the wasm host; modules are fetched from the dashboard by sha256 (and
//!   verified against it), or read from `PULSARA_POLICIES_DIR` when it is set.
//! - Finished calls go through the durable outbox to the dashboard, SMTP and Twilio.
//! - With `PULSARA_EDGE_LISTEN` set, the edge's native shell is served too (self-hosting without
//!   Cloudflare), configured by the same variables as the Worker.
//! - Tests only: `PULSARA_TEST_NOW` with `ALLOW_TEST_CLOCK=1` and loopback addresses starts the
//!   process clock at a scenario's instant (see [`crate::clock::test_instant`]); tokens and
//!   signatures stay on the wall clock the edge and the dashboard keep.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::SigningKeys;
use pulsara_dashboard::client::{ClientError, DashboardClient};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::seed::SeedOptions;
use pulsara_policy_host::source::{ModuleSource, SourceError};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::BridgeConfig;
use crate::dashboard_link::{DashboardLink, DashboardLinkConfig};
use crate::tools::PolicyToolRunner;

/// Policy modules fetched from the dashboard (`GET /v1/policies/{sha256}`). The host verifies the
/// bytes against the hash and caches the compiled module, so this runs once per module.
pub struct DashboardModules {
    client: DashboardClient,
    runtime: tokio::runtime::Handle,
}

impl ModuleSource for DashboardModules {
    fn fetch(&self, sha256: &str) -> Result<Vec<u8>, SourceError> {
        let client = self.client.clone();
        let handle = self.runtime.clone();
        let sha = sha256.to_owned();
        // The host asks synchronously; run the request on the runtime from a plain thread so
        // this never blocks inside an async task.
        std::thread::scope(|s| {
            s.spawn(move || handle.block_on(client.policy(&sha)))
                .join()
                .map_err(|_| SourceError::Unavailable("policy fetch thread panicked".into()))?
                .map_err(|e| match e {
                    ClientError::NotFound(_) => SourceError::NotFound,
                    other => SourceError::Unavailable(other.to_string()),
                })
        })
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Runs the bridge (and, as configured, the embedded dashboard and the edge) until `shutdown`.
///
/// # Errors
/// Invalid configuration (named, never with a secret), a port that cannot be bound, a database
/// that cannot be opened.
pub async fn serve(
    cfg: BridgeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dashboard_listen: Option<SocketAddr> = match env("DASHBOARD_URL") {
        Some(_) => None,
        None => Some(
            env("PULSARA_DASHBOARD_LISTEN")
                .unwrap_or_else(|| "127.0.0.1:8088".into())
                .parse()
                .context("PULSARA_DASHBOARD_LISTEN must be host:port")?,
        ),
    };
    let clock = start_clock(&cfg, dashboard_listen)?;
    let stop = CancellationToken::new();

    // The dashboard: remote, or embedded in this process.
    let mut embedded = None;
    if let Some(listen) = dashboard_listen {
        let keys = env("PULSARA_DASHBOARD_SIGNING_KEYS").context(
            "the embedded dashboard needs PULSARA_DASHBOARD_SIGNING_KEYS (id:scope:secret,…) \
             or set DASHBOARD_URL to use a remote dashboard",
        )?;
        let keys = SigningKeys::parse(&Secret::new(keys)).context("PULSARA_DASHBOARD_SIGNING_KEYS")?;
        let policies = PathBuf::from(env("PULSARA_POLICIES_DIR").unwrap_or_else(|| "target/policies".into()));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the embedded dashboard on {listen}"))?;
        let dash = EmbeddedDashboard::start(
            listener,
            EmbeddedOptions {
                db_path: Some(PathBuf::from(env("PULSARA_DASHBOARD_DB").unwrap_or_else(|| "pulsara-dashboard.db".into()))),
                restaurants_dir: Some(cfg.restaurants_dir.clone()),
                seed: SeedOptions { manifest: Some(policies.join("manifest.json")), strict: false },
                signing_keys: keys,
            },
            clock.as_peer_unix_fn(),
        )
        .await
        .context("embedded dashboard")?;
        tracing::info!(url = %dash.url(), seeded = ?dash.seed_report.seeded, "embedded dashboard serving API v1");
        embedded = Some(dash);
    }
    let embedded_url = embedded.as_ref().map(EmbeddedDashboard::url);

    let mut link_cfg =
        DashboardLinkConfig::from_env(|k| std::env::var(k).ok(), embedded_url.as_deref()).context("dashboard link")?;
    // Compiled policy modules survive restarts here (deserialised, not recompiled).
    let policy_cache = PathBuf::from(env("PULSARA_POLICY_CACHE_DIR").unwrap_or_else(|| "pulsara-policy-cache".into()));
    let tools = match env("PULSARA_POLICIES_DIR") {
        Some(dir) => PolicyToolRunner::from_dir(std::path::Path::new(&dir), Some(&policy_cache)),
        None => {
            let client = DashboardClient::new(link_cfg.client.clone(), clock.as_peer_unix_fn()).context("dashboard client")?;
            let source = DashboardModules { client, runtime: tokio::runtime::Handle::current() };
            PolicyToolRunner::with_source(Arc::new(source), Some(&policy_cache))
        }
    }
    .context("policy host")?;
    // Every policy run's replayable record (`pulsara policy replay <file>`), newest N kept.
    let runs_dir = PathBuf::from(env("PULSARA_POLICY_RUNS_DIR").unwrap_or_else(|| "pulsara-policy-runs".into()));
    let runs_max = match env("PULSARA_POLICY_RUNS_MAX") {
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).context("PULSARA_POLICY_RUNS_MAX must be a positive number")?,
        None => 10_000,
    };
    let run_log = crate::tools::RunLog::open(&runs_dir, runs_max)
        .with_context(|| format!("policy run records directory {}", runs_dir.display()))?;
    let tools = tools.with_run_log(run_log);
    let swap = tools.clone();
    link_cfg.on_event.push(Arc::new(move |ev| {
        if ev.kind == pulsara_dashboard::events::EventType::PolicyUpdated {
            swap.invalidate(&ev.data.restaurant_id);
        }
    }));
    let link_stop = stop.clone();
    let link = DashboardLink::start(link_cfg, clock.as_peer_unix_fn(), async move { link_stop.cancelled().await })
        .context("dashboard link")?;
    // Compile the embedded restaurants' tools in the background, before their first calls.
    if let Some(dash) = &embedded {
        let ids: Vec<String> = dash.seed_report.seeded.iter().chain(&dash.seed_report.kept).cloned().collect();
        let (runner, configs) = (tools.clone(), link.configs.clone());
        tokio::spawn(async move { crate::tools::warm_up(&runner, configs.as_ref(), &ids).await });
    }

    // The edge's native shell, for self-hosting.
    let mut edge_task = None;
    if let Some(addr) = env("PULSARA_EDGE_LISTEN") {
        let state = pulsara_edge::native::EdgeState::from_env().map_err(|e| anyhow::anyhow!("edge settings: {e}"))?;
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding the edge on {addr}"))?;
        tracing::info!(listen = %addr, "edge (native shell) listening");
        let edge_stop = stop.clone();
        edge_task = Some(tokio::spawn(async move {
            let _ = pulsara_edge::native::serve(listener, state, async move { edge_stop.cancelled().await }).await;
        }));
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, region = %cfg.region, "bridge listening");
    let app = crate::App::with_clock(cfg, link.configs.clone(), Arc::new(tools), link.sink.clone(), clock)?;
    register_link_metrics(&app, &link);
    let router = crate::server::router(app.clone()).merge(link.webhook_router);
    crate::server::run_router(listener, router, app, shutdown).await?;

    // The bridge has drained and flushed its sink; stop the rest.
    stop.cancel();
    let _ = link.outbox_task.await;
    if let Some(t) = edge_task {
        let _ = t.await;
    }
    if let Some(dash) = embedded {
        dash.stop().await;
    }
    Ok(())
}

/// The process clock: the wall clock, or — tests only — started at `PULSARA_TEST_NOW`.
fn start_clock(cfg: &BridgeConfig, dashboard_listen: Option<SocketAddr>) -> anyhow::Result<Clock> {
    let mut addresses = vec![("PULSARA_LISTEN", cfg.listen.to_string())];
    if let Some(listen) = dashboard_listen {
        addresses.push(("PULSARA_DASHBOARD_LISTEN", listen.to_string()));
    }
    if let Some(edge) = env("PULSARA_EDGE_LISTEN") {
        addresses.push(("PULSARA_EDGE_LISTEN", edge));
    }
    if let Some(public) = &cfg.public_base_url {
        addresses.push(("PUBLIC_BASE_URL", public.clone()));
    }
    let clock = Clock::system();
    if let Some(at) = crate::clock::test_instant(env, &addresses)? {
        clock.jump_alone_to(at);
        tracing::warn!(%at, "test clock: calls happen at PULSARA_TEST_NOW and run on from there");
    }
    Ok(clock)
}

/// The outbox (depth, oldest age, parked) and the config cache on the bridge's `/metrics`.
pub fn register_link_metrics(app: &crate::App, link: &DashboardLink) {
    let sink = link.sink.clone();
    app.add_metrics(Arc::new(move || match sink.stats() {
        Ok(stats) => stats.prometheus(),
        Err(e) => {
            tracing::warn!(error = %e, "outbox statistics unavailable");
            "pulsara_outbox_stats_errors_total 1\n".to_owned()
        }
    }));
    let cache = link.cache.clone();
    app.add_metrics(Arc::new(move || cache.metrics_text()));
}
