//! The bridge's typed configuration: defaults, then an optional TOML file, then environment
//! variables (`PULSARA_*` plus the vendor names `HANDOFF_KEYS`, `ELEVENLABS_API_KEY`, …), validated
//! once at start-up so a bad value stops the process with a clear message.
//!
//! Secrets are [`Secret`]s: `Debug` on [`BridgeConfig`] never shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pulsara_core::handoff::HandoffKeys;
use pulsara_core::secret::Secret;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path} is not valid TOML for the bridge: {reason}")]
    Parse { path: String, reason: String },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Resource limits. Every one bounds something a peer could otherwise grow.
#[derive(Debug, Clone, Deserialize)]
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

/// The bridge configuration.
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
    pub twilio_account_sid: String,
    #[serde(deserialize_with = "de_secret_opt")]
    pub twilio_auth_token: Option<Secret>,
    pub twilio_api_base: String,
    /// Public `https://host` of this bridge as Twilio sees it (`PUBLIC_BASE_URL`); the upgrade
    /// signature is checked against `wss://host/media` built from it (never from the Host
    /// header). It is the bridge's alone: an edge co-hosted in the same process has its own
    /// (`PULSARA_EDGE_PUBLIC_BASE_URL`, see [`crate::service`]).
    pub public_base_url: Option<String>,
    /// Refuse upgrades without `X-Twilio-Signature` (Twilio signs them since 2025).
    pub require_twilio_signature: bool,
    /// Restaurant files (`<dir>/<id>/restaurant.json`, `knowledge_base.json`).
    pub restaurants_dir: PathBuf,
    /// JSON-lines file receiving finished call records.
    pub call_records_path: PathBuf,
    pub limits: Limits,
    /// Serve `/metrics`.
    pub metrics: bool,
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
            call_records_path: PathBuf::from("call-records.jsonl"),
            limits: Limits::default(),
            metrics: true,
        }
    }
}

fn de_secret_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.filter(|s| !s.is_empty()).map(Secret::new))
}

impl BridgeConfig {
    /// Defaults ← `file` (if given) ← environment (`env` lets tests inject variables).
    ///
    /// # Errors
    /// [`ConfigFileError`] naming the file or setting; never containing a secret value.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigFileError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<BridgeConfig>(&text).map_err(|e| ConfigFileError::Parse {
                    path: path.display().to_string(),
                    // toml errors quote the offending line, which may hold a secret: keep the message only.
                    reason: e.message().to_owned(),
                })?
            }
            None => BridgeConfig::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigFileError> {
        let get = |n: &str| env(n).filter(|v| !v.is_empty());
        if let Some(v) = get("PULSARA_LISTEN") {
            self.listen = v.parse().map_err(|e| invalid("PULSARA_LISTEN", e))?;
        }
        if let Some(v) = get("PULSARA_REGION").or_else(|| get("BRIDGE_REGION")) {
            self.region = v;
        }
        if let Some(v) = get("HANDOFF_KEYS") {
            self.handoff_keys = Some(Secret::new(v));
        }
        if let Some(v) = get("ELEVENLABS_API_KEY") {
            self.elevenlabs_api_key = Some(Secret::new(v));
        }
        if let Some(v) = get("ELEVENLABS_BASE_URL") {
            self.elevenlabs_base_url = v;
        }
        if let Some(v) = get("TWILIO_ACCOUNT_SID") {
            self.twilio_account_sid = v;
        }
        if let Some(v) = get("TWILIO_AUTH_TOKEN") {
            self.twilio_auth_token = Some(Secret::new(v));
        }
        if let Some(v) = get("TWILIO_API_BASE") {
            self.twilio_api_base = v;
        }
        if let Some(v) = get("PUBLIC_BASE_URL") {
            self.public_base_url = Some(v);
        }
        if let Some(v) = get("PULSARA_REQUIRE_TWILIO_SIGNATURE") {
            self.require_twilio_signature = parse_bool("PULSARA_REQUIRE_TWILIO_SIGNATURE", &v)?;
        }
        if let Some(v) = get("PULSARA_RESTAURANTS_DIR") {
            self.restaurants_dir = v.into();
        }
        if let Some(v) = get("PULSARA_CALL_RECORDS") {
            self.call_records_path = v.into();
        }
        if let Some(v) = get("PULSARA_MAX_CALLS") {
            self.limits.max_calls = v.parse().map_err(|e| invalid("PULSARA_MAX_CALLS", e))?;
        }
        if let Some(v) = get("PULSARA_TOOL_TIMEOUT_MS") {
            self.limits.tool_timeout_ms = v
                .parse()
                .map_err(|e| invalid("PULSARA_TOOL_TIMEOUT_MS", e))?;
        }
        if let Some(v) = get("PULSARA_SHUTDOWN_GRACE_MS") {
            self.limits.shutdown_grace_ms = v
                .parse()
                .map_err(|e| invalid("PULSARA_SHUTDOWN_GRACE_MS", e))?;
        }
        for (name, slot) in [
            (pulsara_net::config::ENV_HEADER_TIMEOUT_MS, &mut self.limits.http_header_timeout_ms),
            (pulsara_net::config::ENV_IDLE_TIMEOUT_MS, &mut self.limits.http_idle_timeout_ms),
            (pulsara_net::config::ENV_REQUEST_TIMEOUT_MS, &mut self.limits.http_request_timeout_ms),
            ("PULSARA_START_TIMEOUT_MS", &mut self.limits.start_timeout_ms),
            ("PULSARA_MAX_SCHED_LAG_MS", &mut self.limits.max_scheduling_lag_ms),
        ] {
            if let Some(v) = get(name) {
                *slot = v.parse().map_err(|e| invalid(name, e))?;
            }
        }
        if let Some(v) = get(pulsara_net::config::ENV_MAX_UNSERVED) {
            self.limits.http_max_unserved = Some(
                v.parse()
                    .map_err(|e| invalid(pulsara_net::config::ENV_MAX_UNSERVED, e))?,
            );
        }
        if let Some(v) = get("PULSARA_MAX_PENDING_START") {
            self.limits.max_pending_start = v
                .parse()
                .map_err(|e| invalid("PULSARA_MAX_PENDING_START", e))?;
        }
        if let Some(v) = get("PULSARA_METRICS") {
            self.metrics = parse_bool("PULSARA_METRICS", &v)?;
        }
        Ok(())
    }

    /// Checks everything that can be checked without the network.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let keys = self
            .handoff_keys
            .as_ref()
            .ok_or_else(|| invalid("HANDOFF_KEYS", "missing; set kid:secret[,kid:secret]"))?;
        HandoffKeys::parse(keys).map_err(|e| invalid("HANDOFF_KEYS", e))?;
        if self.elevenlabs_api_key.is_none() {
            return Err(invalid("ELEVENLABS_API_KEY", "missing"));
        }
        check_http_url("ELEVENLABS_BASE_URL", &self.elevenlabs_base_url)?;
        check_http_url("TWILIO_API_BASE", &self.twilio_api_base)?;
        if !self.twilio_account_sid.is_empty() && !self.twilio_account_sid.starts_with("AC") {
            return Err(invalid("TWILIO_ACCOUNT_SID", "must start with AC"));
        }
        if self.twilio_account_sid.is_empty() || self.twilio_auth_token.is_none() {
            return Err(invalid(
                "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN",
                "both are required (transfers and fallbacks update calls through Twilio's REST API)",
            ));
        }
        if let Some(u) = &self.public_base_url {
            check_http_url("PUBLIC_BASE_URL", u)?;
        } else if self.require_twilio_signature {
            return Err(invalid(
                "PUBLIC_BASE_URL",
                "required when PULSARA_REQUIRE_TWILIO_SIGNATURE is on",
            ));
        }
        let l = &self.limits;
        if l.max_calls == 0 {
            return Err(invalid("limits.max_calls", "must be at least 1"));
        }
        if l.ws_max_message_bytes < 4096 || l.ws_max_frame_bytes < 4096 {
            return Err(invalid(
                "limits.ws_max_message_bytes",
                "must be at least 4096",
            ));
        }
        if l.tool_timeout_ms == 0 || l.tool_timeout_ms > 60_000 {
            return Err(invalid("limits.tool_timeout_ms", "must be 1..=60000"));
        }
        if l.replay_cache_entries == 0 {
            return Err(invalid("limits.replay_cache_entries", "must be at least 1"));
        }
        if l.max_pending_start == 0 {
            return Err(invalid("PULSARA_MAX_PENDING_START", "must be at least 1"));
        }
        if l.max_scheduling_lag_ms == 0 {
            return Err(invalid("PULSARA_MAX_SCHED_LAG_MS", "must be at least 1"));
        }
        if l.start_timeout_ms == 0 || l.start_timeout_ms > 60_000 {
            return Err(invalid("PULSARA_START_TIMEOUT_MS", "must be 1..=60000"));
        }
        l.http().validate().map_err(|pulsara_net::ConfigError::Invalid { name, reason }| {
            invalid(name, reason)
        })?;
        Ok(())
    }

    /// The parsed handoff key ring (validated by [`BridgeConfig::validate`]).
    ///
    /// # Errors
    /// As [`HandoffKeys::parse`].
    pub fn handoff_ring(&self) -> Result<HandoffKeys, ConfigFileError> {
        let keys = self
            .handoff_keys
            .as_ref()
            .ok_or_else(|| invalid("HANDOFF_KEYS", "missing"))?;
        HandoffKeys::parse(keys).map_err(|e| invalid("HANDOFF_KEYS", e))
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

fn invalid(name: &'static str, reason: impl std::fmt::Display) -> ConfigFileError {
    ConfigFileError::Invalid {
        name,
        reason: reason.to_string(),
    }
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ConfigFileError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, "expected true or false")),
    }
}

fn check_http_url(name: &'static str, url: &str) -> Result<(), ConfigFileError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("wss://"))
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| invalid(name, "must start with http:// or https://"))?;
    if rest.split('/').next().is_none_or(|h| h.is_empty()) {
        return Err(invalid(name, "has no host"));
    }
    Ok(())
}

/// Milliseconds as a [`Duration`].
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const GOOD: &[(&str, &str)] = &[
        ("HANDOFF_KEYS", "k1:super-secret-handoff-key"),
        ("ELEVENLABS_API_KEY", "xi-secret-value"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_AUTH_TOKEN", "twilio-secret-token"),
    ];

    #[test]
    fn env_overrides_defaults_and_secrets_stay_hidden() {
        let mut pairs = GOOD.to_vec();
        pairs.push(("PULSARA_LISTEN", "127.0.0.1:9999"));
        pairs.push(("ELEVENLABS_BASE_URL", "http://127.0.0.1:1234"));
        let cfg = BridgeConfig::load(None, env(&pairs)).unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.elevenlabs_base_url, "http://127.0.0.1:1234");
        assert_eq!(cfg.twilio_api_base, "https://api.twilio.com");
        let dbg = format!("{cfg:?}");
        for s in ["super-secret", "xi-secret", "twilio-secret"] {
            assert!(!dbg.contains(s), "{s} leaked in {dbg}");
        }
    }

    #[test]
    fn bad_values_name_the_setting_without_the_secret() {
        let mut pairs = GOOD.to_vec();
        pairs[0] = ("HANDOFF_KEYS", "k1:short");
        let err = BridgeConfig::load(None, env(&pairs))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HANDOFF_KEYS") && !err.contains("short\""),
            "{err}"
        );
        let err = BridgeConfig::load(None, env(&GOOD[1..]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("HANDOFF_KEYS"), "{err}");
        let mut pairs = GOOD.to_vec();
        pairs.push(("PULSARA_LISTEN", "nonsense"));
        assert!(BridgeConfig::load(None, env(&pairs))
            .unwrap_err()
            .to_string()
            .contains("PULSARA_LISTEN"));
        let mut pairs = GOOD.to_vec();
        pairs.push(("ELEVENLABS_BASE_URL", "ftp://x"));
        assert!(BridgeConfig::load(None, env(&pairs)).is_err());
    }

    #[test]
    fn file_then_env() {
        let path = std::env::temp_dir().join(format!("pulsara-bridge-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "region = \"eu-west\"\nhandoff_keys = \"k1:file-secret-0123456789\"\n[limits]\nmax_calls = 7\n",
        )
        .unwrap();
        let cfg = BridgeConfig::load(Some(&path), env(&GOOD[1..])).unwrap();
        assert_eq!((cfg.region.as_str(), cfg.limits.max_calls), ("eu-west", 7));
        std::fs::write(
            &path,
            "handoff_keys = \"k1:file-secret-0123456789\"\nbogus = 1\n",
        )
        .unwrap();
        let err = BridgeConfig::load(Some(&path), env(&GOOD[1..]))
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            err.contains("bogus") && !err.contains("file-secret"),
            "{err}"
        );
    }

    #[test]
    fn listener_and_overload_limits_from_env() {
        let mut pairs = GOOD.to_vec();
        pairs.push(("PULSARA_HTTP_HEADER_TIMEOUT_MS", "1500"));
        pairs.push(("PULSARA_HTTP_MAX_UNSERVED", "40"));
        pairs.push(("PULSARA_MAX_PENDING_START", "12"));
        pairs.push(("PULSARA_MAX_SCHED_LAG_MS", "750"));
        pairs.push(("PULSARA_START_TIMEOUT_MS", "2500"));
        let cfg = BridgeConfig::load(None, env(&pairs)).unwrap();
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
            let mut pairs = GOOD.to_vec();
            pairs.push((name, bad));
            let err = BridgeConfig::load(None, env(&pairs)).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn media_url_from_public_base() {
        let cfg = BridgeConfig {
            public_base_url: Some("https://bridge.example.com/".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.media_ws_url().unwrap(),
            "wss://bridge.example.com/media"
        );
    }
}
