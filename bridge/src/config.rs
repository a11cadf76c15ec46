//! The one configuration of `pulsara serve`: defaults, then an optional TOML file, then
//! environment variables, loaded once with figment and validated once at start-up, so a bad
//! value stops the process with a message naming the setting (never its value).
//!
//! [`SETTINGS`] is the single list of settings: each one's TOML key, its environment variable
//! and what it means. The README's settings table is generated from it (a test keeps the two
//! equal) and a test checks that it names every key the file accepts.
//!
//! Secrets are [`Secret`]s: `Debug` on [`BridgeConfig`] never shows them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use pulsara_core::handoff::HandoffKeys;
use pulsara_core::secret::Secret;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// Resource limits. Every one bounds something a peer could otherwise grow.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Live calls in this process; beyond it callers get the busy treatment.
    pub max_calls: usize,
    /// Largest WebSocket message accepted from Twilio or ElevenLabs (bytes).
    pub ws_max_message_bytes: usize,
    /// Largest WebSocket frame accepted (bytes).
    pub ws_max_frame_bytes: usize,
    /// Initial WebSocket read buffer per socket (it grows for larger messages). Small, because
    /// media frames are ~300 bytes and there are two sockets per call.
    pub ws_read_buffer_bytes: usize,
    /// Bytes buffered before a WebSocket write is flushed.
    pub ws_write_buffer_bytes: usize,
    /// Most bytes a WebSocket may buffer for a slow peer before writes fail.
    pub ws_max_write_buffer_bytes: usize,
    /// Per tool call.
    pub tool_timeout_ms: u64,
    /// How long live calls may continue after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// How long a new stream may take to send `start`.
    pub start_timeout_ms: u64,
    /// Signed-URL request + WebSocket handshake to ElevenLabs, per attempt.
    pub agent_connect_timeout_ms: u64,
    /// Twilio REST call updates.
    pub rest_timeout_ms: u64,
    /// Caller frames buffered while the agent connects (20 ms each).
    pub early_audio_frames: usize,
    /// How far caller audio may run ahead of real time before frames are dropped (a stream
    /// sending faster than Twilio ever does never reaches ElevenLabs at that rate).
    pub caller_audio_burst_ms: u64,
    /// Remembered handoff tokens (single use); oldest forgotten first, expired ones pruned.
    pub replay_cache_entries: usize,
    /// Transcript lines kept per call.
    pub max_transcript_lines: usize,
    /// Tool runs kept per call.
    pub max_tool_runs: usize,
    /// Tool calls running at once in one call.
    pub max_tools_in_flight: usize,
    /// Streams upgraded but still waiting for `start`; beyond it new streams get 503 (Twilio's
    /// fallback takes over) instead of waiting in silence on an overloaded bridge.
    pub max_pending_start: usize,
    /// Runtime scheduling lag beyond which new streams get 503.
    pub max_scheduling_lag_ms: u64,
    /// HTTP listener: accept → the first request head (a socket that sends nothing is closed).
    pub http_header_timeout_ms: u64,
    /// HTTP listener: keep-alive idle between requests.
    pub http_idle_timeout_ms: u64,
    /// HTTP listener: request head → response head (408 after).
    pub http_request_timeout_ms: u64,
    /// HTTP listener: connections not yet upgraded that wait for or are inside a request; the
    /// oldest is closed for a newcomer. Unset: a quarter of the descriptor limit, 16..=1024.
    pub http_max_unserved: Option<usize>,
    /// How long an ElevenLabs session prepared for a call (`POST /prepare`) waits for its
    /// stream before it is closed.
    pub prepare_ttl_ms: u64,
    /// Prepared sessions held at once in this process, and per restaurant.
    pub max_prepared: usize,
    pub max_prepared_per_restaurant: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 4096,
            ws_max_message_bytes: 1 << 20,
            ws_max_frame_bytes: 1 << 20,
            ws_read_buffer_bytes: 4096,
            ws_write_buffer_bytes: 0,
            ws_max_write_buffer_bytes: 4 << 20,
            tool_timeout_ms: 3_000,
            shutdown_grace_ms: 30_000,
            start_timeout_ms: 5_000,
            agent_connect_timeout_ms: 3_000,
            rest_timeout_ms: 5_000,
            early_audio_frames: 100,
            caller_audio_burst_ms: 2_000,
            replay_cache_entries: 100_000,
            max_transcript_lines: 2_000,
            max_tool_runs: 200,
            max_tools_in_flight: 4,
            max_pending_start: 256,
            max_scheduling_lag_ms: 1_000,
            http_header_timeout_ms: ms_of(pulsara_net::config::DEFAULT_HEADER_TIMEOUT),
            http_idle_timeout_ms: ms_of(pulsara_net::config::DEFAULT_IDLE_TIMEOUT),
            http_request_timeout_ms: ms_of(pulsara_net::config::DEFAULT_REQUEST_TIMEOUT),
            http_max_unserved: None,
            prepare_ttl_ms: 10_000,
            max_prepared: 64,
            max_prepared_per_restaurant: 8,
        }
    }
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Limits {
    /// The settings of the bridge's HTTP listener.
    pub fn http(&self) -> pulsara_net::ServeConfig {
        let mut c = pulsara_net::ServeConfig {
            header_timeout: ms(self.http_header_timeout_ms),
            idle_timeout: ms(self.http_idle_timeout_ms),
            request_timeout: ms(self.http_request_timeout_ms),
            ..pulsara_net::ServeConfig::default()
        };
        if let Some(n) = self.http_max_unserved {
            c.max_unserved = n;
        }
        c
    }
}

/// One setting of `pulsara serve`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Its dotted key in the TOML file (`limits.max_calls`); `edge.<NAME>` stands for every
    /// setting of a co-hosted edge.
    pub key: &'static str,
    /// Its environment variable, if it has one (`PULSARA_EDGE_<NAME>` for the edge's).
    pub env: Option<&'static str>,
    /// What it means, and its default.
    pub doc: &'static str,
}

const fn s(key: &'static str, env: &'static str, doc: &'static str) -> Setting {
    Setting { key, env: Some(env), doc }
}

const fn file_only(key: &'static str, doc: &'static str) -> Setting {
    Setting { key, env: None, doc }
}

/// Every setting of `pulsara serve`, in the order the README lists them.
pub const SETTINGS: &[Setting] = &[
    s("listen", "PULSARA_LISTEN", "the bridge's listen address (`127.0.0.1:8080`)"),
    s("region", "PULSARA_REGION", "this bridge's region; handoff tokens for another region are refused (empty: any)"),
    s("public_base_url", "PUBLIC_BASE_URL", "this bridge's public `https://host`; the upgrade signature is checked against `wss://host/media` built from it (never the Host header), and the agent-down voicemail's `<Record>` reports to `https://host/twilio/recording` (without it, that fallback apologises instead of recording)"),
    s("require_twilio_signature", "PULSARA_REQUIRE_TWILIO_SIGNATURE", "refuse upgrades without `X-Twilio-Signature` (needs `PUBLIC_BASE_URL`)"),
    s("handoff_keys", "HANDOFF_KEYS", "secret, required: `kid:secret[,kid:secret]`, the same ring as the edge; the first signs, all verify"),
    s("elevenlabs_api_key", "ELEVENLABS_API_KEY", "secret, required: the key signed conversation URLs are requested with"),
    s("elevenlabs_base_url", "ELEVENLABS_BASE_URL", "ElevenLabs API base (`https://api.elevenlabs.io`)"),
    s("twilio_account_sid", "TWILIO_ACCOUNT_SID", "required: the account (`AC…`) call updates (transfer, fallback) and caller SMS are made on"),
    s("twilio_auth_token", "TWILIO_AUTH_TOKEN", "secret, required: its auth token"),
    s("twilio_api_base", "TWILIO_API_BASE", "Twilio REST base (`https://api.twilio.com`)"),
    s("restaurants_dir", "PULSARA_RESTAURANTS_DIR", "restaurant files the embedded dashboard is seeded from (`restaurants`)"),
    s("metrics", "PULSARA_METRICS", "serve `/metrics` (`true`)"),
    s("limits.max_calls", "PULSARA_MAX_CALLS", "live calls in this process; beyond it callers get the busy treatment (4096)"),
    s("limits.tool_timeout_ms", "PULSARA_TOOL_TIMEOUT_MS", "per tool call, 1..=60000 (3000)"),
    s("limits.shutdown_grace_ms", "PULSARA_SHUTDOWN_GRACE_MS", "how long live calls may go on after SIGTERM (30000)"),
    s("limits.start_timeout_ms", "PULSARA_START_TIMEOUT_MS", "how long a stream may take to send `start`, from its upgrade (5000)"),
    s("limits.max_pending_start", "PULSARA_MAX_PENDING_START", "overload shedding: streams upgraded but not started beyond which new `/media` upgrades get 503, so Twilio's fallback takes over (256)"),
    s("limits.max_scheduling_lag_ms", "PULSARA_MAX_SCHED_LAG_MS", "overload shedding: runtime scheduling lag beyond which new upgrades get 503 (1000)"),
    s("limits.http_header_timeout_ms", pulsara_net::config::ENV_HEADER_TIMEOUT_MS, "every listener of `pulsara serve` (bridge, co-hosted edge shell, embedded dashboard): accept → first request head; a socket that sends nothing is closed (10000)"),
    s("limits.http_idle_timeout_ms", pulsara_net::config::ENV_IDLE_TIMEOUT_MS, "every listener: keep-alive idle between requests (30000)"),
    s("limits.http_request_timeout_ms", pulsara_net::config::ENV_REQUEST_TIMEOUT_MS, "every listener: request head → response head, 408 after (30000)"),
    s("limits.http_max_unserved", pulsara_net::config::ENV_MAX_UNSERVED, "per listener: connections not upgraded that wait for or are inside a request; a newcomer evicts the oldest (a quarter of the descriptor limit, 16..=1024)"),
    file_only("limits.ws_max_message_bytes", "largest WebSocket message accepted from Twilio or ElevenLabs, at least 4096 (1 MiB)"),
    file_only("limits.ws_max_frame_bytes", "largest WebSocket frame accepted, at least 4096 (1 MiB)"),
    file_only("limits.ws_read_buffer_bytes", "initial WebSocket read buffer per socket (4096)"),
    file_only("limits.ws_write_buffer_bytes", "bytes buffered before a WebSocket write is flushed (0)"),
    file_only("limits.ws_max_write_buffer_bytes", "most bytes a WebSocket buffers for a slow peer before writes fail (4 MiB)"),
    file_only("limits.agent_connect_timeout_ms", "signed-URL request + WebSocket handshake to ElevenLabs, per attempt (3000)"),
    file_only("limits.rest_timeout_ms", "Twilio REST call updates (5000)"),
    file_only("limits.early_audio_frames", "caller frames (20 ms) buffered while the agent connects (100)"),
    file_only("limits.caller_audio_burst_ms", "how far caller audio may run ahead of real time before frames are dropped (2000)"),
    file_only("limits.replay_cache_entries", "remembered handoff tokens (single use) (100000)"),
    file_only("limits.max_transcript_lines", "transcript lines kept per call (2000)"),
    file_only("limits.max_tool_runs", "tool runs kept per call (200)"),
    file_only("limits.max_tools_in_flight", "tool calls running at once in one call (4)"),
    file_only("limits.prepare_ttl_ms", "how long an ElevenLabs session prepared by the edge (`POST /prepare`) waits for its call's stream before it is closed, 100..=60000 (10000)"),
    file_only("limits.max_prepared", "prepared sessions held at once; more are refused and those calls connect when their stream arrives (64)"),
    file_only("limits.max_prepared_per_restaurant", "prepared sessions held at once per restaurant (8)"),
    s("dashboard.url", "DASHBOARD_URL", "a remote dashboard; unset: this process starts the embedded one"),
    s("dashboard.key_id", "DASHBOARD_KEY_ID", "key id the bridge signs its dashboard requests with"),
    s("dashboard.signing_secret", "DASHBOARD_SIGNING_SECRET", "secret: that key (with `DASHBOARD_KEY_ID`; or use `DASHBOARD_API_KEY`)"),
    s("dashboard.api_key", "DASHBOARD_API_KEY", "secret: `Authorization: Bearer` key instead of a signing key"),
    s("dashboard.webhook_secrets", "DASHBOARD_WEBHOOK_SECRETS", "secret: `whsec_…` (comma-separated during rotation) accepted on the bridge's `POST /webhooks/dashboard`; each must decode (padding optional)"),
    s("dashboard.timeout_ms", "DASHBOARD_TIMEOUT_MS", "dashboard request timeout (2000)"),
    s("dashboard.cache_ttl_secs", "DASHBOARD_CACHE_TTL_SECS", "restaurant config and knowledge base cache TTL (60)"),
    s("dashboard.listen", "PULSARA_DASHBOARD_LISTEN", "embedded dashboard: listen address (`127.0.0.1:8088`)"),
    s("dashboard.db", "PULSARA_DASHBOARD_DB", "embedded dashboard: its SQLite file (`pulsara-dashboard.db`)"),
    s("dashboard.signing_keys", "PULSARA_DASHBOARD_SIGNING_KEYS", "secret, required for the embedded dashboard: accepted keys `id:scope:secret,…` (scopes edge, bridge, admin)"),
    s("outbox.path", "PULSARA_OUTBOX_PATH", "the outbox SQLite file (`pulsara-outbox.db`)"),
    s("outbox.memory_calls", "PULSARA_OUTBOX_MEMORY_CALLS", "finished calls held in memory while the outbox cannot write (disk full) (1000)"),
    s("outbox.memory_mb", "PULSARA_OUTBOX_MEMORY_MB", "and their size at most, MiB (64)"),
    s("smtp.url", "SMTP_URL", "secret: notification email server; unset: emails are parked as \"not configured\" and sent after a restart with it"),
    s("smtp.from", "SMTP_FROM", "their sender (`Pulsara <pulsara@localhost>`)"),
    s("policies.dir", "PULSARA_POLICIES_DIR", "read policy modules from this directory instead of the dashboard"),
    s("policies.cache_dir", "PULSARA_POLICY_CACHE_DIR", "precompiled policy modules, reused across restarts (`pulsara-policy-cache`)"),
    s("policies.runs_dir", "PULSARA_POLICY_RUNS_DIR", "every policy run's replayable record, one JSON file each (`pulsara-policy-runs`)"),
    s("policies.runs_max", "PULSARA_POLICY_RUNS_MAX", "newest records kept (10000); replay one with `pulsara policy replay`"),
    s("policies.warm_up_parallelism", "PULSARA_WARM_UP_PARALLELISM", "tool modules compiled at a time when warming up, 1..=16 (1 on two cores or fewer, else 2): at start-up every listed restaurant, then on `policy.updated`"),
    s("edge.listen", "PULSARA_EDGE_LISTEN", "also serve the edge's native shell here (see \"One machine\")"),
    s("edge.<NAME>", "PULSARA_EDGE_<NAME>", "a co-hosted edge's setting `<NAME>` (the Worker's variable names, e.g. `edge.PUBLIC_BASE_URL`)"),
    s("test_clock.now", "PULSARA_TEST_NOW", "tests only: calls happen from this RFC 3339 instant on (tool local time, call times); needs `ALLOW_TEST_CLOCK` and loopback addresses; tokens and signatures stay on the wall clock"),
    s("test_clock.allow", "ALLOW_TEST_CLOCK", "tests only: allow `PULSARA_TEST_NOW`"),
];

/// The prefix of a co-hosted edge's variables (`PULSARA_EDGE_PUBLIC_BASE_URL` → `edge.PUBLIC_BASE_URL`).
const EDGE_PREFIX: &str = "PULSARA_EDGE_";

/// The bridge's link to the dashboard, and the embedded dashboard it starts when there is no
/// remote one.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    pub url: Option<String>,
    pub key_id: Option<String>,
    #[serde(deserialize_with = "de_secret_opt")]
    pub signing_secret: Option<Secret>,
    #[serde(deserialize_with = "de_secret_opt")]
    pub api_key: Option<Secret>,
    #[serde(deserialize_with = "de_secret_opt")]
    pub webhook_secrets: Option<Secret>,
    pub timeout_ms: u64,
    pub cache_ttl_secs: u64,
    pub listen: SocketAddr,
    pub db: PathBuf,
    #[serde(deserialize_with = "de_secret_opt")]
    pub signing_keys: Option<Secret>,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            url: None,
            key_id: None,
            signing_secret: None,
            api_key: None,
            webhook_secrets: None,
            timeout_ms: 2_000,
            cache_ttl_secs: 60,
            listen: "127.0.0.1:8088".parse().expect("valid literal"),
            db: PathBuf::from("pulsara-dashboard.db"),
            signing_keys: None,
        }
    }
}

impl DashboardSettings {
    /// Whether this process starts the embedded dashboard (no remote one is configured).
    pub fn embedded(&self) -> bool {
        self.url.is_none()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    pub path: PathBuf,
    pub memory_calls: usize,
    pub memory_mb: usize,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self { path: PathBuf::from("pulsara-outbox.db"), memory_calls: 1_000, memory_mb: 64 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    #[serde(deserialize_with = "de_secret_opt")]
    pub url: Option<Secret>,
    pub from: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    pub dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub runs_dir: PathBuf,
    pub runs_max: usize,
    pub warm_up_parallelism: Option<usize>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            dir: None,
            cache_dir: PathBuf::from("pulsara-policy-cache"),
            runs_dir: PathBuf::from("pulsara-policy-runs"),
            runs_max: 10_000,
            warm_up_parallelism: None,
        }
    }
}

impl PolicySettings {
    /// Tool sets compiled at a time while warming up: as set, else one on a machine with two
    /// cores or fewer (the other serves calls), else two.
    pub fn warm_up_parallelism(&self) -> usize {
        self.warm_up_parallelism.unwrap_or_else(|| {
            match std::thread::available_parallelism().map(std::num::NonZeroUsize::get) {
                Ok(n) if n > 2 => 2,
                _ => 1,
            }
        })
    }
}

/// A co-hosted edge: where it listens, and its settings by the Worker's variable names.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct EdgeSettings {
    pub listen: Option<String>,
    /// `PUBLIC_BASE_URL`, `BRIDGE_URLS`, `HANDOFF_KEYS`, …: the edge validates them when it
    /// starts. Some are secrets, so `Debug` shows the names only.
    #[serde(flatten, deserialize_with = "de_scalar_map")]
    pub vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for EdgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeSettings")
            .field("listen", &self.listen)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestClockSettings {
    pub now: Option<String>,
    pub allow: bool,
}

/// The configuration of one `pulsara serve` process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    pub listen: SocketAddr,
    /// This bridge's region; handoff tokens for another region are refused. Empty = accept any.
    pub region: String,
    /// `kid:secret[,kid:secret]`; the first signs (edge), all verify.
    #[serde(deserialize_with = "de_secret_opt")]
    pub handoff_keys: Option<Secret>,
    #[serde(deserialize_with = "de_secret_opt")]
    pub elevenlabs_api_key: Option<Secret>,
    pub elevenlabs_base_url: String,
    /// Call updates and caller SMS both use these.
    pub twilio_account_sid: String,
    #[serde(deserialize_with = "de_secret_opt")]
    pub twilio_auth_token: Option<Secret>,
    pub twilio_api_base: String,
    /// Public `https://host` of this bridge as Twilio sees it (`PUBLIC_BASE_URL`); the upgrade
    /// signature is checked against `wss://host/media` built from it (never from the Host
    /// header). It is the bridge's alone: a co-hosted edge has its own
    /// (`edge.PUBLIC_BASE_URL`).
    pub public_base_url: Option<String>,
    /// Refuse upgrades without `X-Twilio-Signature` (Twilio signs them since 2025).
    pub require_twilio_signature: bool,
    /// Restaurant files (`<dir>/<id>/restaurant.json`, `knowledge_base.json`).
    pub restaurants_dir: PathBuf,
    pub limits: Limits,
    /// Serve `/metrics`.
    pub metrics: bool,
    pub dashboard: DashboardSettings,
    pub outbox: OutboxSettings,
    pub smtp: SmtpSettings,
    pub policies: PolicySettings,
    pub edge: EdgeSettings,
    pub test_clock: TestClockSettings,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            region: String::new(),
            handoff_keys: None,
            elevenlabs_api_key: None,
            elevenlabs_base_url: "https://api.elevenlabs.io".into(),
            twilio_account_sid: String::new(),
            twilio_auth_token: None,
            twilio_api_base: "https://api.twilio.com".into(),
            public_base_url: None,
            require_twilio_signature: false,
            restaurants_dir: PathBuf::from("restaurants"),
            limits: Limits::default(),
            metrics: true,
            dashboard: DashboardSettings::default(),
            outbox: OutboxSettings::default(),
            smtp: SmtpSettings::default(),
            policies: PolicySettings::default(),
            edge: EdgeSettings::default(),
            test_clock: TestClockSettings::default(),
        }
    }
}

fn de_secret_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.filter(|s| !s.is_empty()).map(Secret::new))
}

/// A table of scalars (the edge's variables: `CONFIG_TTL_SECS = 300` in TOML as in
/// wrangler.toml's `[vars]`) as strings.
fn de_scalar_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Whole(i64),
        Real(f64),
        Flag(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Whole(n) => n.to_string(),
                Scalar::Real(x) => x.to_string(),
                Scalar::Flag(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// The TOML key an environment variable sets, if it is a setting.
fn key_for_env(name: &str) -> Option<String> {
    if let Some(s) = SETTINGS.iter().find(|s| s.env == Some(name)) {
        return Some(s.key.to_owned());
    }
    let rest = name.strip_prefix(EDGE_PREFIX)?;
    (!rest.is_empty()).then(|| format!("edge.{rest}"))
}

/// How a setting is named in messages: its key and, if it has one, its variable.
fn display_name(key: &str) -> String {
    if let Some(rest) = key.strip_prefix("edge.").filter(|r| *r != "listen") {
        return format!("edge.{rest} ({EDGE_PREFIX}{rest})");
    }
    match SETTINGS.iter().find(|s| s.key == key).and_then(|s| s.env) {
        Some(env) => format!("{key} ({env})"),
        None => key.to_owned(),
    }
}

impl BridgeConfig {
    /// Defaults ← `file` (if given) ← the environment `vars` (`std::env::vars()` in
    /// production; tests pass their own). Variables that are not settings are ignored; empty
    /// ones count as unset.
    ///
    /// # Errors
    /// [`ConfigFileError`] naming the file or the setting; never containing a secret value.
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigFileError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            // Read here, so a missing file is an error rather than an empty configuration.
            let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        for (name, value) in vars {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if let Some(key) = key_for_env(&name) {
                figment = figment.merge(Serialized::default(&key, value));
            }
        }
        let cfg: BridgeConfig = figment.extract_lossy().map_err(|e| from_figment(&e, file))?;
        cfg.validate()?;
        cfg.validate_process()?;
        Ok(cfg)
    }

    /// Checks the bridge's own settings (what [`crate::App`] runs on), without the network.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let keys = self
            .handoff_keys
            .as_ref()
            .ok_or_else(|| invalid("handoff_keys", "missing; set kid:secret[,kid:secret]"))?;
        HandoffKeys::parse(keys).map_err(|e| invalid("handoff_keys", e))?;
        if self.elevenlabs_api_key.is_none() {
            return Err(invalid("elevenlabs_api_key", "missing"));
        }
        check_http_url("elevenlabs_base_url", &self.elevenlabs_base_url)?;
        check_http_url("twilio_api_base", &self.twilio_api_base)?;
        if !self.twilio_account_sid.is_empty() && !self.twilio_account_sid.starts_with("AC") {
            return Err(invalid("twilio_account_sid", "must start with AC"));
        }
        if self.twilio_account_sid.is_empty() {
            return Err(invalid(
                "twilio_account_sid",
                "required with TWILIO_AUTH_TOKEN (transfers and fallbacks update calls through Twilio's REST API)",
            ));
        }
        if self.twilio_auth_token.is_none() {
            return Err(invalid("twilio_auth_token", "required with TWILIO_ACCOUNT_SID"));
        }
        if let Some(u) = &self.public_base_url {
            check_http_url("public_base_url", u)?;
        } else if self.require_twilio_signature {
            return Err(invalid("public_base_url", "required when PULSARA_REQUIRE_TWILIO_SIGNATURE is on"));
        }
        self.validate_limits()
    }

    /// Checks what `pulsara serve` builds around the bridge from this configuration: the
    /// dashboard link or the embedded dashboard, the outbox, the policy host, the test clock.
    fn validate_process(&self) -> Result<(), ConfigFileError> {
        self.validate_dashboard()?;
        let o = &self.outbox;
        if o.memory_calls == 0 {
            return Err(invalid("outbox.memory_calls", "must be at least 1"));
        }
        if o.memory_mb == 0 || o.memory_mb > 1 << 20 {
            return Err(invalid("outbox.memory_mb", "must be 1..=1048576"));
        }
        let p = &self.policies;
        if p.runs_max == 0 {
            return Err(invalid("policies.runs_max", "must be at least 1"));
        }
        if p.warm_up_parallelism.is_some_and(|n| !(1..=16).contains(&n)) {
            return Err(invalid("policies.warm_up_parallelism", "must be a whole number from 1 to 16"));
        }
        self.test_instant()?;
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigFileError> {
        let l = &self.limits;
        if l.max_calls == 0 {
            return Err(invalid("limits.max_calls", "must be at least 1"));
        }
        if l.ws_max_message_bytes < 4096 {
            return Err(invalid("limits.ws_max_message_bytes", "must be at least 4096"));
        }
        if l.ws_max_frame_bytes < 4096 {
            return Err(invalid("limits.ws_max_frame_bytes", "must be at least 4096"));
        }
        if !(100..=60_000).contains(&l.prepare_ttl_ms) {
            return Err(invalid("limits.prepare_ttl_ms", "must be 100..=60000"));
        }
        if l.tool_timeout_ms == 0 || l.tool_timeout_ms > 60_000 {
            return Err(invalid("limits.tool_timeout_ms", "must be 1..=60000"));
        }
        if l.replay_cache_entries == 0 {
            return Err(invalid("limits.replay_cache_entries", "must be at least 1"));
        }
        if l.max_pending_start == 0 {
            return Err(invalid("limits.max_pending_start", "must be at least 1"));
        }
        if l.max_scheduling_lag_ms == 0 {
            return Err(invalid("limits.max_scheduling_lag_ms", "must be at least 1"));
        }
        if l.start_timeout_ms == 0 || l.start_timeout_ms > 60_000 {
            return Err(invalid("limits.start_timeout_ms", "must be 1..=60000"));
        }
        l.http().validate().map_err(|pulsara_net::ConfigError::Invalid { name, reason }| {
            let key = SETTINGS.iter().find(|s| s.env == Some(name)).map_or(name, |s| s.key);
            invalid(key, reason)
        })
    }

    fn validate_dashboard(&self) -> Result<(), ConfigFileError> {
        let d = &self.dashboard;
        if let Some(url) = &d.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("dashboard.url", "must start with http:// or https://"));
            }
        }
        match (&d.key_id, &d.signing_secret) {
            (Some(_), Some(_)) | (None, None) => {}
            _ => return Err(invalid("dashboard.signing_secret", "DASHBOARD_KEY_ID and DASHBOARD_SIGNING_SECRET go together")),
        }
        if d.signing_secret.is_none() && d.api_key.is_none() {
            return Err(invalid(
                "dashboard.signing_secret",
                "set a signing key (DASHBOARD_KEY_ID + DASHBOARD_SIGNING_SECRET) or DASHBOARD_API_KEY",
            ));
        }
        if let Some(v) = &d.webhook_secrets {
            pulsara_core::webhooks::parse_secrets(v.expose()).map_err(|e| invalid("dashboard.webhook_secrets", e))?;
        }
        if d.embedded() {
            let keys = d.signing_keys.as_ref().ok_or_else(|| {
                invalid(
                    "dashboard.signing_keys",
                    "the embedded dashboard needs its keys (id:scope:secret,…); or set DASHBOARD_URL to use a remote dashboard",
                )
            })?;
            pulsara_dashboard::auth::SigningKeys::parse(keys).map_err(|e| invalid("dashboard.signing_keys", e))?;
        }
        Ok(())
    }

    /// The addresses this process listens on or is reached at, each with its setting's key:
    /// the test clock is only allowed when all of them are loopback.
    fn addresses(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("listen", self.listen.to_string())];
        if self.dashboard.embedded() {
            out.push(("dashboard.listen", self.dashboard.listen.to_string()));
        }
        if let Some(edge) = &self.edge.listen {
            out.push(("edge.listen", edge.clone()));
        }
        if let Some(public) = &self.public_base_url {
            out.push(("public_base_url", public.clone()));
        }
        if let Some(public) = self.edge.vars.get("PUBLIC_BASE_URL") {
            out.push(("edge.PUBLIC_BASE_URL", public.clone()));
        }
        out
    }

    /// Tests only: the instant the process clock starts at (`PULSARA_TEST_NOW`), allowed with
    /// `ALLOW_TEST_CLOCK` and loopback addresses only.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`] for `test_clock.now`.
    pub fn test_instant(&self) -> Result<Option<DateTime<Utc>>, ConfigFileError> {
        crate::clock::test_instant(&self.test_clock, &self.addresses())
            .map_err(|e| invalid("test_clock.now", e))
    }

    /// The parsed handoff key ring (validated by [`BridgeConfig::validate`]).
    ///
    /// # Errors
    /// As [`HandoffKeys::parse`].
    pub fn handoff_ring(&self) -> Result<HandoffKeys, ConfigFileError> {
        let keys = self
            .handoff_keys
            .as_ref()
            .ok_or_else(|| invalid("handoff_keys", "missing"))?;
        HandoffKeys::parse(keys).map_err(|e| invalid("handoff_keys", e))
    }

    /// The URL Twilio signs for the media WebSocket upgrade: `wss://host/media`.
    pub fn media_ws_url(&self) -> Option<String> {
        let base = self.public_base_url.as_deref()?.trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("wss://"))
            .map(|h| format!("wss://{h}"))
            .or_else(|| {
                base.strip_prefix("http://")
                    .or_else(|| base.strip_prefix("ws://"))
                    .map(|h| format!("ws://{h}"))
            })?;
        Some(format!("{rest}/media"))
    }
}

/// A figment error as ours: the setting's key and variable, what was expected, never the value
/// (a mistyped secret would otherwise be printed).
fn from_figment(e: &figment::Error, file: Option<&Path>) -> ConfigFileError {
    use figment::error::Kind;
    let key = e.path.join(".");
    let reason = match &e.kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => format!("expected {expected}"),
        Kind::InvalidLength(n, expected) => format!("length {n}, expected {expected}"),
        Kind::UnknownField(field, _) => {
            let at = if key.is_empty() { String::new() } else { format!(" in [{key}]") };
            let from = file.map_or_else(String::new, |p| format!(" (in {})", p.display()));
            return ConfigFileError::Invalid { name: field.clone(), reason: format!("unknown setting{at}{from}") };
        }
        Kind::UnknownVariant(v, expected) => format!("unknown variant {v}, expected one of {expected:?}"),
        Kind::MissingField(f) => format!("missing {f}"),
        Kind::DuplicateField(f) => format!("{f} given twice"),
        // Parse errors of the TOML text quote the offending line, which may hold a secret.
        Kind::Message(m) if key.is_empty() => {
            let first = m.lines().next().unwrap_or("").split(" at line").next().unwrap_or("").to_owned();
            let from = file.map_or_else(|| "config".to_owned(), |p| p.display().to_string());
            return ConfigFileError::Invalid { name: from, reason: format!("not valid TOML: {first}") };
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    ConfigFileError::Invalid { name: display_name(&key), reason }
}

fn invalid(key: &str, reason: impl std::fmt::Display) -> ConfigFileError {
    ConfigFileError::Invalid {
        name: display_name(key),
        reason: reason.to_string(),
    }
}

fn check_http_url(key: &str, url: &str) -> Result<(), ConfigFileError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("wss://"))
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| invalid(key, "must start with http:// or https://"))?;
    if rest.split('/').next().is_none_or(|h| h.is_empty()) {
        return Err(invalid(key, "has no host"));
    }
    Ok(())
}

/// The README's settings table, generated from [`SETTINGS`].
pub fn settings_table() -> String {
    let mut out = String::from("| TOML key | variable | meaning (default) |\n| --- | --- | --- |\n");
    for s in SETTINGS {
        let env = s.env.map_or_else(|| "—".to_owned(), |e| format!("`{e}`"));
        out.push_str(&format!("| `{}` | {env} | {} |\n", s.key, s.doc));
    }
    out
}

/// Milliseconds as a [`Duration`].
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("HANDOFF_KEYS", "k1:super-secret-handoff-key"),
        ("ELEVENLABS_API_KEY", "xi-secret-value"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_AUTH_TOKEN", "twilio-secret-token"),
        ("DASHBOARD_KEY_ID", "bridge1"),
        ("DASHBOARD_SIGNING_SECRET", "dash-secret-value"),
        ("PULSARA_DASHBOARD_SIGNING_KEYS", "bridge1:bridge:dash-secret-value"),
    ];

    fn with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = vars(GOOD);
        all.extend(vars(extra));
        all
    }

    fn err(extra: &[(&str, &str)]) -> String {
        BridgeConfig::load(None, with(extra)).unwrap_err().to_string()
    }

    #[test]
    fn env_overrides_defaults_and_secrets_stay_hidden() {
        let cfg = BridgeConfig::load(
            None,
            with(&[
                ("PULSARA_LISTEN", "127.0.0.1:9999"),
                ("ELEVENLABS_BASE_URL", "http://127.0.0.1:1234"),
                ("PULSARA_OUTBOX_MEMORY_MB", "8"),
                ("PULSARA_WARM_UP_PARALLELISM", "3"),
                ("PULSARA_EDGE_LISTEN", "127.0.0.1:8787"),
                ("PULSARA_EDGE_HANDOFF_TTL_SECS", "30"),
                ("PULSARA_EDGE_ELEVENLABS_WEBHOOK_SECRET", "edge-only-secret"),
                ("SOMETHING_ELSE", "ignored"),
                ("PULSARA_POLICIES_DIR", ""),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.elevenlabs_base_url, "http://127.0.0.1:1234");
        assert_eq!(cfg.twilio_api_base, "https://api.twilio.com");
        assert_eq!((cfg.outbox.memory_mb, cfg.policies.warm_up_parallelism()), (8, 3));
        assert_eq!(cfg.policies.dir, None, "an empty variable counts as unset");
        assert_eq!(cfg.edge.listen.as_deref(), Some("127.0.0.1:8787"));
        assert_eq!(cfg.edge.vars.get("HANDOFF_TTL_SECS").map(String::as_str), Some("30"));
        let dbg = format!("{cfg:?}");
        for s in ["super-secret", "xi-secret", "twilio-secret", "dash-secret", "edge-only-secret"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
    }

    #[test]
    fn bad_values_name_the_setting_without_the_secret() {
        let e = err(&[("HANDOFF_KEYS", "k1:tiny-s3")]);
        assert!(e.contains("HANDOFF_KEYS") && !e.contains("tiny-s3"), "{e}");
        let e = BridgeConfig::load(None, vars(&GOOD[1..])).unwrap_err().to_string();
        assert!(e.contains("HANDOFF_KEYS"), "{e}");
        for (name, bad) in [
            ("PULSARA_LISTEN", "nonsense"),
            ("ELEVENLABS_BASE_URL", "ftp://x"),
            ("PULSARA_MAX_CALLS", "many"),
            ("PULSARA_METRICS", "perhaps"),
            ("DASHBOARD_URL", "dashboard.example.com"),
            ("PULSARA_POLICY_RUNS_MAX", "0"),
            ("PULSARA_WARM_UP_PARALLELISM", "17"),
            ("PULSARA_OUTBOX_MEMORY_CALLS", "0"),
            ("DASHBOARD_WEBHOOK_SECRETS", "whsec_!!!"),
            ("PULSARA_DASHBOARD_SIGNING_KEYS", "nonsense"),
        ] {
            let e = err(&[(name, bad)]);
            assert!(e.contains(name), "{name}: {e}");
        }
        // The embedded dashboard needs its keys; a remote one does not.
        let no_keys: Vec<_> = vars(GOOD).into_iter().filter(|(k, _)| k != "PULSARA_DASHBOARD_SIGNING_KEYS").collect();
        let e = BridgeConfig::load(None, no_keys.clone()).unwrap_err().to_string();
        assert!(e.contains("PULSARA_DASHBOARD_SIGNING_KEYS"), "{e}");
        let mut remote = no_keys;
        remote.push(("DASHBOARD_URL".into(), "https://dash.example.com".into()));
        assert!(BridgeConfig::load(None, remote).unwrap().dashboard.url.is_some());
        // Half a signing key.
        let half: Vec<_> = vars(GOOD).into_iter().filter(|(k, _)| k != "DASHBOARD_KEY_ID").collect();
        let e = BridgeConfig::load(None, half).unwrap_err().to_string();
        assert!(e.contains("DASHBOARD_SIGNING_SECRET") && !e.contains("dash-secret"), "{e}");
    }

    #[test]
    fn file_then_env_and_no_secret_in_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.toml");
        std::fs::write(
            &path,
            "region = \"eu-west\"\nhandoff_keys = \"k1:file-secret-0123456789\"\ntwilio_auth_token = \"file-twilio-token\"\n\
             [limits]\nmax_calls = 7\n[policies]\nruns_max = 5\n[edge]\nCONFIG_TTL_SECS = 300\n",
        )
        .unwrap();
        let env: Vec<_> = vars(GOOD).into_iter().filter(|(k, _)| k != "HANDOFF_KEYS" && k != "TWILIO_AUTH_TOKEN").collect();
        let cfg = BridgeConfig::load(Some(&path), env.clone()).unwrap();
        assert_eq!((cfg.region.as_str(), cfg.limits.max_calls, cfg.policies.runs_max), ("eu-west", 7, 5));
        assert_eq!(cfg.twilio_auth_token.as_ref().map(Secret::expose), Some("file-twilio-token"));
        assert_eq!(cfg.edge.vars.get("CONFIG_TTL_SECS").map(String::as_str), Some("300"));
        let mut over = env.clone();
        over.push(("PULSARA_MAX_CALLS".into(), "9".into()));
        assert_eq!(BridgeConfig::load(Some(&path), over).unwrap().limits.max_calls, 9, "the environment wins");

        for (text, named) in [
            ("handoff_keys = \"k1:file-secret-0123456789\"\nbogus = 1\n", "bogus"),
            ("handoff_keys = \"k1:file-secret-0123456789\"\n[limits]\nmax_calls = \"k1:file-secret-0123456789\"\n", "limits.max_calls (PULSARA_MAX_CALLS)"),
            ("handoff_keys = 12345678901234567\n", "handoff_keys (HANDOFF_KEYS)"),
            ("handoff_keys = \"k1:file-secret-0123456789\n", "bridge.toml"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = BridgeConfig::load(Some(&path), env.clone()).unwrap_err().to_string();
            assert!(e.contains(named), "{named}: {e}");
            assert!(!e.contains("file-secret") && !e.contains("12345678901234567"), "{e}");
        }
        let e = BridgeConfig::load(Some(&dir.path().join("missing.toml")), env).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn listener_and_overload_limits_from_env() {
        let cfg = BridgeConfig::load(
            None,
            with(&[
                ("PULSARA_HTTP_HEADER_TIMEOUT_MS", "1500"),
                ("PULSARA_HTTP_MAX_UNSERVED", "40"),
                ("PULSARA_MAX_PENDING_START", "12"),
                ("PULSARA_MAX_SCHED_LAG_MS", "750"),
                ("PULSARA_START_TIMEOUT_MS", "2500"),
            ]),
        )
        .unwrap();
        let http = cfg.limits.http();
        assert_eq!(http.header_timeout, Duration::from_millis(1500));
        assert_eq!(http.max_unserved, 40);
        assert_eq!(http.idle_timeout, pulsara_net::config::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            (cfg.limits.max_pending_start, cfg.limits.max_scheduling_lag_ms, cfg.limits.start_timeout_ms),
            (12, 750, 2500)
        );
        for (name, bad) in [
            ("PULSARA_HTTP_IDLE_TIMEOUT_MS", "0"),
            ("PULSARA_HTTP_REQUEST_TIMEOUT_MS", "later"),
            ("PULSARA_HTTP_MAX_UNSERVED", "0"),
            ("PULSARA_MAX_PENDING_START", "0"),
            ("PULSARA_START_TIMEOUT_MS", "0"),
        ] {
            let e = err(&[(name, bad)]);
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn test_clock_needs_permission_and_loopback() {
        let at = "2026-12-04T18:30:00Z";
        assert_eq!(BridgeConfig::load(None, with(&[])).unwrap().test_instant().unwrap(), None);
        let cfg = BridgeConfig::load(None, with(&[("PULSARA_TEST_NOW", at), ("ALLOW_TEST_CLOCK", "1")])).unwrap();
        assert_eq!(cfg.test_instant().unwrap(), Some(at.parse().unwrap()));
        assert!(err(&[("PULSARA_TEST_NOW", at)]).contains("ALLOW_TEST_CLOCK"));
        let e = err(&[("PULSARA_TEST_NOW", at), ("ALLOW_TEST_CLOCK", "1"), ("PULSARA_EDGE_LISTEN", "0.0.0.0:8787")]);
        assert!(e.contains("edge.listen"), "{e}");
        let e = err(&[("PULSARA_TEST_NOW", "tomorrow"), ("ALLOW_TEST_CLOCK", "1")]);
        assert!(e.contains("PULSARA_TEST_NOW"), "{e}");
    }

    #[test]
    fn media_url_from_public_base() {
        let cfg = BridgeConfig {
            public_base_url: Some("https://bridge.example.com/".into()),
            ..Default::default()
        };
        assert_eq!(cfg.media_ws_url().unwrap(), "wss://bridge.example.com/media");
    }

    /// The keys a section of the file accepts, as its deserializer lists them when refusing an
    /// unknown one.
    fn accepted(section: &str) -> Vec<String> {
        let text = if section.is_empty() { "zzz_unknown = 1\n".to_owned() } else { format!("[{section}]\nzzz_unknown = 1\n") };
        let e = Figment::from(Toml::string(&text)).extract::<BridgeConfig>().unwrap_err();
        match e.kind {
            figment::error::Kind::UnknownField(_, expected) => expected.iter().map(|k| k.to_string()).collect(),
            other => panic!("[{section}]: {other}"),
        }
    }

    #[test]
    fn the_settings_list_names_every_key_the_file_accepts_and_no_other() {
        let mut listed: Vec<String> = SETTINGS.iter().map(|s| s.key.to_owned()).filter(|k| !k.starts_with("edge.")).collect();
        let mut keys = Vec::new();
        for top in accepted("") {
            if ["limits", "dashboard", "outbox", "smtp", "policies", "test_clock"].contains(&top.as_str()) {
                keys.extend(accepted(&top).into_iter().map(|k| format!("{top}.{k}")));
            } else if top != "edge" {
                keys.push(top);
            }
        }
        listed.sort();
        keys.sort();
        assert_eq!(listed, keys);
        // Every variable maps to its own key, and no two settings share one.
        let mut envs: Vec<_> = SETTINGS.iter().filter_map(|s| s.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), SETTINGS.iter().filter(|s| s.env.is_some()).count());
        for s in SETTINGS.iter().filter(|s| s.env.is_some_and(|e| !e.contains('<'))) {
            assert_eq!(key_for_env(s.env.unwrap()).as_deref(), Some(s.key));
        }
    }

    /// `BLESS=1 cargo test -p pulsara-bridge --lib readme` rewrites the table after a change
    /// to [`SETTINGS`].
    #[test]
    fn the_readme_table_is_the_settings_list() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
        let start = readme.find(begin).expect("README marks the settings table") + begin.len();
        let stop = readme[start..].find(end).expect("README ends the settings table") + start;
        let table = settings_table();
        if readme[start..stop] != table && std::env::var_os("BLESS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &readme[..start], &readme[stop..])).unwrap();
            return;
        }
        assert!(
            readme[start..stop] == table,
            "README.md's settings table differs from SETTINGS in bridge/src/config.rs; run with BLESS=1 to rewrite it"
        );
    }
}
