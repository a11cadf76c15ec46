//! `pulsara serve`: the production wiring of one bridge process, from its one configuration
//! ([`BridgeConfig`], loaded and validated before anything starts).
//!
//! - Configuration, tools and call records come from the dashboard: the remote one at
//!   `dashboard.url`, or — when that is unset — the embedded dashboard this process starts itself
//!   on `dashboard.listen`, stored in SQLite at `dashboard.db` and seeded from the restaurants
//!   directory, so a new user runs everything with nothing external.
//! - Tool policies run in the wasm host; modules are fetched from the dashboard by sha256 (and
//!   verified against it), or read from `policies.dir` when it is set.
//! - Finished calls go through the durable outbox to the dashboard, SMTP and Twilio.
//! - With `edge.listen` set, the edge's native shell is served too (self-hosting without
//!   Cloudflare), with [`pulsara_edge::settings::Settings::co_hosted`]: its own `[edge]` settings
//!   first (its public URL is `edge.PUBLIC_BASE_URL`; `public_base_url` stays the bridge's),
//!   then what this process knows (the embedded dashboard's URL and its first `edge`-scoped
//!   key, this bridge's own `wss://…/media` for `BRIDGE_URLS`), then the bridge's settings of
//!   the same names.
//! - Tool modules are loaded before calls need them: every restaurant the dashboard lists
//!   (`GET /v1/restaurants`, remote or embedded) at start-up, and a restaurant's new modules on
//!   `policy.updated`; `policies.warm_up_parallelism` compile at a time, on the blocking pool.
//! - With the embedded dashboard, its agent sync job runs here too
//!   ([`pulsara_dashboard::agent_sync`]): every restaurant or tool edit reaches the restaurant's
//!   ElevenLabs agent at `elevenlabs_base_url` with no command to run.
//! - Tests only: `test_clock.now` with `test_clock.allow` and loopback addresses starts the
//!   process clock at a scenario's instant (see [`BridgeConfig::test_instant`]); tokens and
//!   signatures stay on the wall clock the edge and the dashboard keep.

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
use crate::tools::{PolicyToolRunner, WarmUp};


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

/// Runs the bridge (and, as configured, the embedded dashboard and the edge) until `shutdown`.
///
/// # Errors
/// A port that cannot be bound, a database that cannot be opened, edge settings the edge
/// refuses (named, never with a secret).
pub async fn serve(
    mut cfg: BridgeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let clock = Clock::system();
    if let Some(at) = cfg.test_instant()? {
        clock.jump_alone_to(at);
        tracing::warn!(%at, "test clock: calls happen at PULSARA_TEST_NOW and run on from there");
    }
    let stop = CancellationToken::new();

    // The dashboard: remote, or embedded in this process.
    let mut embedded = None;
    let mut embedded_edge_key = None;
    if cfg.dashboard.embedded() {
        let listen = cfg.dashboard.listen;
        let keys_spec = cfg
            .dashboard
            .signing_keys
            .clone()
            .context("the embedded dashboard needs PULSARA_DASHBOARD_SIGNING_KEYS (id:scope:secret,…)")?;
        let keys = SigningKeys::parse(&keys_spec).context("PULSARA_DASHBOARD_SIGNING_KEYS")?;
        embedded_edge_key = first_edge_key(&keys_spec);
        let policies = cfg.policies.dir.clone().unwrap_or_else(|| PathBuf::from("target/policies"));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the embedded dashboard on {listen}"))?;
        let dash = EmbeddedDashboard::start_with(
            listener,
            EmbeddedOptions {
                db_path: Some(cfg.dashboard.db.clone()),
                restaurants_dir: Some(cfg.restaurants_dir.clone()),
                seed: SeedOptions { manifest: Some(policies.join("manifest.json")), strict: false },
                signing_keys: keys,
            },
            clock.as_peer_unix_fn(),
            // Every listener of the process keeps the same deadlines and caps (PULSARA_HTTP_*).
            cfg.limits.http(),
        )
        .await
        .context("embedded dashboard")?;
        tracing::info!(url = %dash.url(), seeded = ?dash.seed_report.seeded, "embedded dashboard serving API v1");
        embedded = Some(dash);
    }
    let embedded_url = embedded.as_ref().map(EmbeddedDashboard::url);
    // The embedded dashboard tells this process's bridge (and co-hosted edge) about edits with
    // signed webhooks, as a remote one would: with no secret configured, one for this run.
    if embedded.is_some() && cfg.dashboard.webhook_secrets.is_none() {
        cfg.dashboard.webhook_secrets = Some(Secret::new(pulsara_dashboard::server::new_webhook_secret()));
    }

    let link_cfg = DashboardLinkConfig::from_config(&cfg, embedded_url.as_deref()).context("dashboard link")?;
    // Compiled policy modules survive restarts here (deserialised, not recompiled).
    let policy_cache = cfg.policies.cache_dir.clone();
    let tools = match &cfg.policies.dir {
        Some(dir) => PolicyToolRunner::from_dir(dir, Some(&policy_cache)),
        None => {
            let client = DashboardClient::new(link_cfg.client.clone(), clock.as_peer_unix_fn()).context("dashboard client")?;
            let source = DashboardModules { client, runtime: tokio::runtime::Handle::current() };
            PolicyToolRunner::with_source(Arc::new(source), Some(&policy_cache))
        }
    }
    .context("policy host")?;
    // Every policy run's replayable record (`pulsara policy replay <file>`), newest N kept.
    let runs_dir = &cfg.policies.runs_dir;
    let run_log = crate::tools::RunLog::open(runs_dir, cfg.policies.runs_max)
        .with_context(|| format!("policy run records directory {}", runs_dir.display()))?;
    let tools = tools.with_run_log(run_log);
    let parallelism = cfg.policies.warm_up_parallelism();
    let warm_client = DashboardClient::new(link_cfg.client.clone(), clock.as_peer_unix_fn()).context("dashboard client")?;
    let stopping = stop.clone();
    let wired = Wiring { bridge: cfg.clone(), link: link_cfg, tools, clock: clock.clone(), warm_up_parallelism: parallelism }
        .start(async move { stopping.cancelled().await })?;
    let warm = wired.warm.clone();
    // Load every listed restaurant's tools in the background, before their first calls; a
    // dashboard that is down at start is retried with backoff until it answers or we stop.
    let warm_stop = stop.clone();
    // `-1` while the start-up warm-up runs; then how many restaurants were made ready.
    let warmed = Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let warm_done = warmed.clone();
    tokio::spawn(async move {
        tokio::select! {
            res = warm.from_dashboard(&warm_client) => match res {
                Ok(ready) => warm_done.store(i64::try_from(ready).unwrap_or(i64::MAX), std::sync::atomic::Ordering::Relaxed),
                Err(e) => {
                    warm_done.store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, "tool warm-up from the dashboard failed; tools load on first use");
                }
            },
            () = warm_stop.cancelled() => {}
        }
    });

    // The edge's native shell, for self-hosting.
    let mut edge_task = None;
    if let Some(addr) = cfg.edge.listen.clone() {
        let defaults = co_hosted_edge_defaults(&cfg, embedded_url.as_deref(), embedded_edge_key.as_ref());
        let settings = pulsara_edge::settings::Settings::co_hosted(&cfg.edge.vars, &defaults, &shared_with_edge(&cfg))
            .map_err(|e| anyhow::anyhow!("edge settings (co-hosted, edge.listen): {e}"))?;
        tracing::info!(public = %settings.public_base_url, dashboard = %settings.dashboard_url, "co-hosted edge settings");
        let edge_webhook_secret = settings.dashboard_webhook_secrets.first().cloned();
        let state = pulsara_edge::native::EdgeState::new(settings)
            .map_err(|e| anyhow::anyhow!("edge HTTP client: {e}"))?;
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding the edge on {addr}"))?;
        tracing::info!(listen = %addr, "edge (native shell) listening");
        if let (Some(dash), Some(secret)) = (&embedded, edge_webhook_secret) {
            subscribe_local(dash, &listener, secret, "edge");
        }
        let edge_stop = stop.clone();
        let net = cfg.limits.http();
        edge_task = Some(tokio::spawn(async move {
            let _ = pulsara_edge::native::serve_with(listener, state, net, async move { edge_stop.cancelled().await })
                .await;
        }));
    }

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, region = %cfg.region, "bridge listening");
    if let Some(dash) = &embedded {
        let first = cfg.dashboard.webhook_secrets.as_ref().and_then(|s| pulsara_core::webhooks::parse_secrets(s.expose()).ok());
        if let Some(secret) = first.and_then(|v| v.into_iter().next()) {
            subscribe_local(dash, &listener, secret, "bridge");
        }
    }
    let (warm_state, ready_state) = (warmed.clone(), warmed.clone());
    let warm_done = prometheus::PullingGauge::new(
        "pulsara_tools_warm_up_done",
        "1 once the start-up tool warm-up has finished (or failed), else 0.",
        Box::new(move || f64::from(u8::from(warm_state.load(std::sync::atomic::Ordering::Relaxed) >= 0))),
    )?;
    let warm_ready = prometheus::PullingGauge::new(
        "pulsara_tools_warm_up_ready_restaurants",
        "Restaurants whose tools the start-up warm-up made ready.",
        Box::new(move || ready_state.load(std::sync::atomic::Ordering::Relaxed).max(0) as f64),
    )?;
    wired.app.registry.register(Box::new(warm_done))?;
    wired.app.registry.register(Box::new(warm_ready))?;
    // The embedded dashboard keeps every restaurant's ElevenLabs agent at its specification:
    // each edit requests a sync and this job carries it out (a remote dashboard runs its own).
    let mut sync_task = None;
    if let (Some(dash), Some(key)) = (&embedded, &cfg.elevenlabs_api_key) {
        let api = pulsara_dashboard::agents::AgentsApi::new(pulsara_dashboard::agents::AgentsApiConfig::new(
            cfg.elevenlabs_base_url.clone(),
            key.clone(),
        ))
        .map_err(|e| anyhow::anyhow!("agents API client: {e}"))?;
        let (job, task) = dash.start_agent_sync(api, stop.clone());
        wired.app.registry.register(Box::new(job.collector()?))?;
        sync_task = Some(task);
    }
    let (app, router, outbox_task) = (wired.app.clone(), wired.router, wired.outbox_task);
    crate::server::run_router(listener, router, app, shutdown).await?;

    // The bridge has drained and flushed its sink; stop the rest.
    stop.cancel();
    let _ = outbox_task.await;
    // A sync in flight gets a moment to finish its requests and write-back; no longer, so an
    // unreachable agents API cannot hold up the shutdown.
    if let Some(t) = sync_task {
        let abort = t.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), t).await.is_err() {
            tracing::warn!("agent sync still running at shutdown; stopped (requested syncs resume at the next start)");
            abort.abort();
        }
    }
    if let Some(t) = edge_task {
        let _ = t.await;
    }
    if let Some(dash) = embedded {
        dash.stop().await;
    }
    Ok(())
}

/// One Pulsara process's parts, however they were configured: `pulsara serve` fills it from
/// its settings, the local stack from the secrets it generates. [`Wiring::start`] is the one
/// place they are put together.
pub struct Wiring {
    pub bridge: BridgeConfig,
    pub link: DashboardLinkConfig,
    pub tools: PolicyToolRunner,
    pub clock: Clock,
    /// Tool sets compiled at a time while warming up (`PULSARA_WARM_UP_PARALLELISM`).
    pub warm_up_parallelism: usize,
}

/// The wired process, ready to serve: its router (bridge routes and the dashboard's webhook
/// receiver) is served with [`crate::server::run_router`].
pub struct Wired {
    pub app: Arc<crate::App>,
    pub router: axum::Router,
    /// Loads restaurants' tools before their calls need them.
    pub warm: WarmUp,
    /// Outbox delivery; ends after the `shutdown` given to [`Wiring::start`].
    pub outbox_task: tokio::task::JoinHandle<()>,
}

impl Wiring {
    /// Starts the dashboard link (cache, outbox delivery until `shutdown`, webhook receiver),
    /// connects `policy.updated` to the tools (the restaurant's tool set resolved afresh, its new
    /// modules loaded in the background), and builds the bridge with every metric family of
    /// the process registered.
    ///
    /// # Errors
    /// Invalid link settings, an unopenable outbox, an invalid bridge configuration.
    pub fn start(mut self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<Wired> {
        // The warm-up reads configurations through the link, which is built after its event
        // handlers: until it exists, `policy.updated` only invalidates.
        let warm_cell: Arc<std::sync::OnceLock<WarmUp>> = Arc::default();
        let (swap, cell) = (self.tools.clone(), warm_cell.clone());
        self.link.on_event.push(Arc::new(move |ev| match cell.get() {
            Some(warm) => warm.on_policy_updated(ev),
            None if ev.kind == pulsara_dashboard::events::EventType::PolicyUpdated => swap.invalidate(&ev.data.restaurant_id),
            None => {}
        }));
        let link = DashboardLink::start(self.link, self.clock.as_peer_unix_fn(), shutdown).context("dashboard link")?;
        let warm = WarmUp::new(self.tools.clone(), link.configs.clone(), self.warm_up_parallelism);
        let _ = warm_cell.set(warm.clone());
        // The process's one metrics registry: the bridge's families, the link's and the tools'.
        let registry = prometheus::Registry::new();
        let app = crate::App::with_registry(
            self.bridge,
            link.configs.clone(),
            Arc::new(self.tools.clone()),
            link.sink.clone(),
            self.clock,
            registry.clone(),
        )?;
        register_link_metrics(&app, &link).context("outbox and config cache metrics")?;
        registry.register(Box::new(self.tools.collector()?)).context("tool metrics")?;
        let router = crate::server::router(app.clone()).merge(link.webhook_router);
        Ok(Wired { app, router, warm, outbox_task: link.outbox_task })
    }
}

/// How this process reaches its own listener on `addr`: over loopback when it listens on every
/// interface.
fn loopback_if_any(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    addr
}

/// Subscribes this process's `POST /webhooks/dashboard` on `listener` to the embedded
/// dashboard's edits, signed with `secret` (one the receiver accepts). A listener on every
/// interface is reached over loopback.
fn subscribe_local(dash: &EmbeddedDashboard, listener: &tokio::net::TcpListener, secret: Secret, who: &str) {
    let Ok(addr) = listener.local_addr() else { return };
    let addr = loopback_if_any(addr);
    let url = format!("http://{addr}/webhooks/dashboard");
    tracing::info!(%url, receiver = who, "embedded dashboard sends its webhooks here");
    dash.state.webhooks().subscribe_local(pulsara_dashboard::store::WebhookSubscription { url, secret });
}

/// The first `edge`-scoped key of `PULSARA_DASHBOARD_SIGNING_KEYS` (already validated), for the
/// co-hosted edge to sign its requests to the embedded dashboard with.
fn first_edge_key(spec: &Secret) -> Option<(String, Secret)> {
    spec.expose().split(',').find_map(|entry| {
        let mut parts = entry.trim().splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(scope), Some(secret)) if scope.trim().eq_ignore_ascii_case("edge") => {
                Some((id.trim().to_owned(), Secret::new(secret.trim())))
            }
            _ => None,
        }
    })
}

/// What this process knows that a co-hosted edge would otherwise need spelled out: the embedded
/// dashboard (its URL and an edge key) and this bridge as the Stream URL of its region.
fn co_hosted_edge_defaults(
    cfg: &BridgeConfig,
    embedded_url: Option<&str>,
    edge_key: Option<&(String, Secret)>,
) -> std::collections::BTreeMap<String, String> {
    let mut d = std::collections::BTreeMap::new();
    if let Some(url) = embedded_url {
        d.insert("DASHBOARD_URL".to_owned(), url.to_owned());
        if let Some((id, secret)) = edge_key {
            d.insert("DASHBOARD_KEY_ID".to_owned(), id.clone());
            d.insert("DASHBOARD_SIGNING_SECRET".to_owned(), secret.expose().to_owned());
        }
    }
    // Twilio streams only over TLS: only a `wss://` bridge URL is a usable default.
    if let Some(media) = cfg.media_ws_url().filter(|u| u.starts_with("wss://")) {
        let region = if cfg.region.is_empty() { "default" } else { cfg.region.as_str() };
        d.insert("BRIDGE_URLS".to_owned(), format!("{region}={media}"));
        d.insert("DEFAULT_REGION".to_owned(), region.to_owned());
        // The edge in this process prepares calls' agent sessions over loopback, without TLS.
        let listen = loopback_if_any(cfg.listen);
        d.insert("BRIDGE_PREPARE_URLS".to_owned(), format!("{region}=http://{listen}/prepare"));
    }
    d
}

/// The bridge's settings a co-hosted edge reads under the same names unless its own are set.
fn shared_with_edge(cfg: &BridgeConfig) -> std::collections::BTreeMap<String, String> {
    let d = &cfg.dashboard;
    let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
    [
        ("TWILIO_AUTH_TOKEN", secret(&cfg.twilio_auth_token)),
        ("HANDOFF_KEYS", secret(&cfg.handoff_keys)),
        ("DASHBOARD_URL", d.url.clone()),
        ("DASHBOARD_KEY_ID", d.key_id.clone()),
        ("DASHBOARD_SIGNING_SECRET", secret(&d.signing_secret)),
        ("DASHBOARD_WEBHOOK_SECRETS", secret(&d.webhook_secrets)),
        ("DASHBOARD_TIMEOUT_MS", Some(d.timeout_ms.to_string())),
        ("ALLOW_TEST_CLOCK", Some(cfg.test_clock.allow.to_string())),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
    .collect()
}

/// Registers the outbox (depth, oldest age, parked, the memory queue) and the config cache into
/// the app's registry, for the bridge's `/metrics`.
///
/// # Errors
/// They are registered there already.
pub fn register_link_metrics(app: &crate::App, link: &DashboardLink) -> prometheus::Result<()> {
    let sink = link.sink.clone();
    app.registry.register(Box::new(pulsara_dashboard::outbox::OutboxCollector::new(move || sink.stats())?))?;
    app.registry.register(Box::new(link.cache.collector()?))
}
