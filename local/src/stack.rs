//! A whole local Pulsara in one process, on loopback: the embedded dashboard (seeded with the
//! restaurants), the edge's native shell, the bridge (with the wasm policy host and the durable
//! outbox), and the stand-ins for the outside world — the ElevenLabs ConvAI emulator, the Twilio
//! REST emulator and an SMTP sink.
//!
//! Production code paths are the same as in a deployment; only the far ends are emulated. Every
//! secret is generated at start-up and never printed. The demo and the end-to-end tests use it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::{SigningKey, SigningKeys};
use pulsara_dashboard::cache::CacheConfig;
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::outbox::RetryPolicy;
use pulsara_dashboard::seed::SeedOptions;
use pulsara_dashboard::smtp_sink::SmtpSink;
use pulsara_emulators::elevenlabs::{self, ElevenLabsConfig};
use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::twilio_rest::{self, RestConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use pulsara_bridge::clock::Clock;
use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::dashboard_link::DashboardLinkConfig;
use pulsara_bridge::service::Wiring;
use crate::frontdoor::FrontDoor;
use pulsara_bridge::tools::PolicyToolRunner;
use pulsara_bridge::App;

/// Where the local stack finds its inputs and keeps its files.
pub struct StackOptions {
    pub restaurants_dir: PathBuf,
    /// Built policy modules with `manifest.json` (`cargo xtask build-wasm`).
    pub policies_dir: PathBuf,
    /// SQLite files (dashboard, outbox), the precompiled policy cache and the policy run
    /// records (`policy-runs/`, replayable with `pulsara policy replay`).
    pub data_dir: PathBuf,
    /// The ElevenLabs emulator's agent scripts.
    pub scenarios: Vec<Scenario>,
    pub clock: Clock,
    /// The edge has the bridge prepare each open call's agent session (`PREPARE_SESSIONS`).
    pub prepare_sessions: bool,
    /// How long the ElevenLabs emulator takes to answer (none: loopback speed).
    pub elevenlabs_delays: pulsara_emulators::elevenlabs::ServiceDelays,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {reason}")]
    Start { what: &'static str, reason: String },
}

fn start_err(what: &'static str) -> impl FnOnce(String) -> StackError {
    move |reason| StackError::Start { what, reason }
}

/// The running stack.
pub struct Stack {
    pub clock: Clock,
    pub edge_url: String,
    pub bridge_url: String,
    pub dashboard: EmbeddedDashboard,
    /// A client of the dashboard with the bridge's signing key (reads back delivered records).
    pub dashboard_client: DashboardClient,
    pub elevenlabs: elevenlabs::Running,
    pub twilio_rest: twilio_rest::RunningRest,
    pub smtp: SmtpSink,
    pub bridge: Arc<App>,
    pub tools: PolicyToolRunner,
    /// Admin access to the dashboard (edits that bump versions and send webhooks).
    pub admin: DashboardClient,
    pub account_sid: String,
    twilio_auth_token: Secret,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn bind() -> Result<(TcpListener, String), StackError> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| StackError::Start {
        what: "binding a loopback port",
        reason: e.to_string(),
    })?;
    let addr = l.local_addr().map_err(|e| start_err("local address")(e.to_string()))?;
    Ok((l, addr.to_string()))
}

fn secret() -> Secret {
    Secret::new(pulsara_core::random::hex_token(32))
}

impl Stack {
    /// Starts every piece and wires them together.
    ///
    /// # Errors
    /// The first piece that cannot start, named.
    pub async fn start(opts: StackOptions) -> Result<Stack, StackError> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| start_err("data directory")(e.to_string()))?;
        let clock = opts.clock.clone();
        let shutdown = CancellationToken::new();

        // Secrets of this run.
        let account_sid = format!("AC{}", &pulsara_core::crypto::sha256_hex(pulsara_core::random::hex_token(16).as_bytes())[..32]);
        let twilio_auth_token = secret();
        let elevenlabs_key = secret();
        let handoff_keys = Secret::new(format!("k1:{}", pulsara_core::random::hex_token(32)));
        let edge_signing = secret();
        let bridge_signing = secret();
        let admin_signing = secret();
        let webhook_secret = Secret::new(format!(
            "whsec_{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pulsara_core::random::hex_token(24))
        ));

        // The outside world.
        let (smtp_listener, smtp_addr) = bind().await?;
        let (smtp, smtp_task) = SmtpSink::start(smtp_listener);
        let twilio_rest = twilio_rest::spawn(RestConfig {
            account_sid: account_sid.clone(),
            auth_token: twilio_auth_token.expose().to_owned(),
        })
        .await
        .map_err(|e| start_err("Twilio REST emulator")(e.to_string()))?;
        let mut el_cfg = ElevenLabsConfig::new(elevenlabs_key.expose(), opts.scenarios.clone());
        el_cfg.require_signed_url = true;
        el_cfg.delays = opts.elevenlabs_delays;
        let elevenlabs = elevenlabs::spawn(el_cfg)
            .await
            .map_err(|e| start_err("ElevenLabs emulator")(e.to_string()))?;

        // The dashboard.
        let (dash_listener, _) = bind().await?;
        let dashboard = EmbeddedDashboard::start(
            dash_listener,
            EmbeddedOptions {
                db_path: Some(opts.data_dir.join("dashboard.sqlite")),
                restaurants_dir: Some(opts.restaurants_dir.clone()),
                seed: SeedOptions { manifest: Some(opts.policies_dir.join("manifest.json")), strict: true },
                signing_keys: SigningKeys::new(vec![
                    SigningKey { id: "edge".into(), scope: Scope::Edge, secret: edge_signing.clone() },
                    SigningKey { id: "bridge".into(), scope: Scope::Bridge, secret: bridge_signing.clone() },
                    SigningKey { id: "admin".into(), scope: Scope::Admin, secret: admin_signing.clone() },
                ]),
            },
            clock.as_unix_fn(),
        )
        .await
        .map_err(|e| start_err("embedded dashboard")(e.to_string()))?;
        // As in production, calls reach agents a sync created from the restaurants: the seeded
        // restaurants' syncs are pending, the job does them (and every later edit's) until
        // shutdown, and the first call waits for them.
        let agents_api = pulsara_dashboard::agents::AgentsApi::new(
            pulsara_dashboard::agents::AgentsApiConfig::new(elevenlabs.base_url(), elevenlabs_key.clone()),
        )
        .map_err(|e| start_err("agents API client")(e.to_string()))?;
        let (_agent_sync, agent_sync_task) = dashboard.start_agent_sync(agents_api, shutdown.clone());
        dashboard
            .wait_agent_syncs(Duration::from_secs(30))
            .await
            .map_err(start_err("agent sync"))?;
        let dash_url = dashboard.url();
        let client_cfg = ClientConfig {
            base_url: dash_url.clone(),
            signing_key: Some(("bridge".into(), bridge_signing.clone())),
            api_key: None,
            timeout: Duration::from_secs(2),
        };
        let dashboard_client = DashboardClient::new(client_cfg.clone(), clock.as_unix_fn())
            .map_err(|e| start_err("dashboard client")(e.to_string()))?;

        // The bridge and the edge, each on its own port as in production.
        let (bridge_listener, bridge_addr) = bind().await?;
        let (edge_listener, edge_addr) = bind().await?;
        let bridge_public = format!("https://{bridge_addr}");
        let edge_url = format!("http://{edge_addr}");

        let run_log = pulsara_bridge::tools::RunLog::open(&opts.data_dir.join("policy-runs"), 10_000)
            .map_err(|e| start_err("policy run records")(e.to_string()))?;
        let tools = PolicyToolRunner::from_dir(&opts.policies_dir, Some(&opts.data_dir.join("policy-cache")))
            .map_err(|e| start_err("policy host")(e.to_string()))?
            .with_run_log(run_log);
        let mut bridge_cfg = BridgeConfig::default();
        bridge_cfg.listen = bridge_addr.parse().map_err(|_| start_err("bridge address")(bridge_addr.clone()))?;
        bridge_cfg.handoff_keys = Some(handoff_keys.clone());
        bridge_cfg.elevenlabs_api_key = Some(elevenlabs_key.clone());
        bridge_cfg.elevenlabs_base_url = elevenlabs.base_url();
        bridge_cfg.twilio_account_sid = account_sid.clone();
        bridge_cfg.twilio_auth_token = Some(twilio_auth_token.clone());
        bridge_cfg.twilio_api_base = twilio_rest.base_url();
        bridge_cfg.public_base_url = Some(bridge_public.clone());
        bridge_cfg.require_twilio_signature = true;
        bridge_cfg.restaurants_dir = opts.restaurants_dir.clone();
        let stop = shutdown.clone();
        let wired = Wiring {
            bridge: bridge_cfg,
            link: DashboardLinkConfig {
                client: client_cfg,
                cache: CacheConfig::default(),
                webhook_secrets: vec![webhook_secret.clone()],
                outbox_path: opts.data_dir.join("outbox.sqlite"),
                retry: RetryPolicy::default(),
                smtp: Some((Secret::new(format!("smtp://{smtp_addr}")), "calls@pulsara.local".into())),
                twilio: Some((twilio_rest.base_url(), account_sid.clone(), twilio_auth_token.clone())),
                flush_deadline: Duration::from_secs(5),
                memory: Default::default(),
                on_event: Vec::new(),
            },
            tools: tools.clone(),
            clock: clock.clone(),
            warm_up_parallelism: 1,
        }
        .start(async move { stop.cancelled().await })
        .map_err(|e| start_err("bridge")(format!("{e:#}")))?;
        // Every seeded restaurant's tools are ready before the first call.
        wired.warm.restaurants(&dashboard.seed_report.seeded).await;
        let bridge = wired.app.clone();

        let edge_settings = pulsara_edge::settings::Settings::from_lookup(|k| {
            Some(match k {
                "PUBLIC_BASE_URL" => edge_url.clone(),
                "BRIDGE_URLS" => ["default", "eu-west", "us-east", "ap-northeast"]
                    .iter()
                    .map(|r| format!("{r}=wss://{bridge_addr}"))
                    .collect::<Vec<_>>()
                    .join(","),
                "DEFAULT_REGION" => "default".into(),
                "PREPARE_SESSIONS" => if opts.prepare_sessions { "1" } else { "0" }.into(),
                // The edge reaches this bridge directly, without the TLS Twilio needs.
                "BRIDGE_PREPARE_URLS" => ["default", "eu-west", "us-east", "ap-northeast"]
                    .iter()
                    .map(|r| format!("{r}=http://{bridge_addr}/prepare"))
                    .collect::<Vec<_>>()
                    .join(","),
                "DASHBOARD_URL" => dash_url.clone(),
                "DASHBOARD_KEY_ID" => "edge".into(),
                "DASHBOARD_SIGNING_SECRET" => edge_signing.expose().to_owned(),
                "TWILIO_AUTH_TOKEN" => twilio_auth_token.expose().to_owned(),
                "HANDOFF_KEYS" => handoff_keys.expose().to_owned(),
                "DASHBOARD_WEBHOOK_SECRETS" => webhook_secret.expose().to_owned(),
                "ELEVENLABS_WEBHOOK_SECRET" => secret().expose().to_owned(),
                _ => return None,
            })
        })
        .map_err(|e| start_err("edge settings")(e.problems.join("; ")))?;
        let edge_state = pulsara_edge::native::EdgeState::new(edge_settings)
            .map_err(|e| start_err("edge")(e.to_string()))?
            .with_clock(clock.as_fn());

        let mut tasks = vec![smtp_task, wired.outbox_task, agent_sync_task];
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = pulsara_edge::native::serve(edge_listener, edge_state, async move { stop.cancelled().await }).await;
        }));
        let stop = shutdown.clone();
        let app = bridge.clone();
        let router = wired.router;
        tasks.push(tokio::spawn(async move {
            let _ = pulsara_bridge::server::run_router(bridge_listener, router, app, async move { stop.cancelled().await }).await;
        }));

        // The dashboard tells the edge and the bridge about changes.
        let admin = DashboardClient::new(
            ClientConfig::new(dash_url.clone()).signing_key("admin", admin_signing.clone()),
            clock.as_unix_fn(),
        )
        .map_err(|e| start_err("dashboard admin client")(e.to_string()))?;
        for url in [format!("{edge_url}/webhooks/dashboard"), format!("http://{bridge_addr}/webhooks/dashboard")] {
            dashboard.state.webhooks().subscribe_local(pulsara_dashboard::store::WebhookSubscription {
                url,
                secret: webhook_secret.clone(),
            });
        }

        Ok(Stack {
            clock,
            edge_url,
            bridge_url: format!("ws://{bridge_addr}/media"),
            dashboard,
            dashboard_client,
            elevenlabs,
            twilio_rest,
            smtp,
            bridge,
            tools,
            admin,
            account_sid,
            twilio_auth_token,
            shutdown,
            tasks,
        })
    }

    /// A front door that rings this stack's edge with its Twilio credentials.
    pub fn front_door(&self) -> FrontDoor {
        FrontDoor {
            edge_url: self.edge_url.clone(),
            account_sid: self.account_sid.clone(),
            auth_token: self.twilio_auth_token.clone(),
            http: reqwest::Client::new(),
            stream_setup: crate::frontdoor::TWILIO_STREAM_SETUP,
        }
    }

    /// Stops everything: no new calls, the outbox flushed, servers closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        pulsara_bridge::server::drain(&self.bridge).await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.elevenlabs.shutdown().await;
        self.twilio_rest.shutdown().await;
        self.dashboard.stop().await;
    }
}
