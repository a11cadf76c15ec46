//! The edge's typed settings, validated once from whatever the shell has (Worker `[vars]` and
//! secrets, or process environment for the native shell), so a bad value stops with a clear message
//! naming the setting — never the secret's value.
//!
//! | name | kind | meaning |
//! | --- | --- | --- |
//! | `PUBLIC_BASE_URL` | var | the URL Twilio calls (scheme + host [+ port]), used for signature checks |
//! | `BRIDGE_URLS` | var | `region=wss://host[/path][,region=…]`; the Stream URL is `…/media` unless a path is given |
//! | `DEFAULT_REGION` | var | region for restaurants whose region has no bridge |
//! | `DASHBOARD_URL` | var | base URL of the dashboard API (`…/v1/…` is appended) |
//! | `DASHBOARD_KEY_ID` | var | key id sent in `X-Pulsara-Key-Id` |
//! | `CONFIG_TTL_SECS` | var | how long a cached config is used without asking the dashboard (default 300) |
//! | `CONFIG_STALE_SECS` | var | how long a cached config may still serve calls while the dashboard fails (default 86400) |
//! | `DASHBOARD_TIMEOUT_MS` | var | dashboard request timeout (default 2000) |
//! | `HANDOFF_TTL_SECS` | var | handoff token lifetime (default 60, at most 60) |
//! | `BRIDGE_PREPARE_URLS` | var | optional `region=https://host/prepare[,…]`: where to post a region's prepares when not `https://<its BRIDGE_URLS host>/prepare` (a bridge reached without TLS, as on one machine) |
//! | `PREPARE_SESSIONS` | var | `1` (default) or `0`: with the TwiML of an open restaurant's call, also post its handoff token to the bridge's `POST /prepare` (after the reply, never delaying it), so the ElevenLabs session opens while Twilio connects |
//! | `ALLOW_TEST_CLOCK` | var | test only: `1` honours the `X-Pulsara-Test-Now` header for the opening-hours decision; refused unless `PUBLIC_BASE_URL` is loopback |
//! | `TWILIO_AUTH_TOKEN` | secret | Twilio account auth token |
//! | `HANDOFF_KEYS` | secret | `kid:secret[,kid:secret]`, first one signs |
//! | `DASHBOARD_SIGNING_SECRET` | secret | HMAC key for requests to the dashboard |
//! | `DASHBOARD_WEBHOOK_SECRETS` | secret | `whsec_…[ whsec_…]` (several during rotation; space or comma separated); every entry must decode (padding optional, as in the Standard Webhooks reference) or start-up stops |
//! | `ELEVENLABS_WEBHOOK_SECRET` | secret | optional; without it `/webhooks/elevenlabs` refuses everything |
//!
//! The edge also signs into each handoff token the restaurant's fallback number, `<Say>` locale
//! and voice and apology ([`pulsara_core::handoff::HandoffFallback`]), so a bridge that cannot load
//! the configuration still forwards the caller.

//!
//! Co-hosted in `pulsara serve` (`PULSARA_EDGE_LISTEN`), the process environment also holds the
//! bridge's settings under some of the same names (`PUBLIC_BASE_URL` is the bridge's own URL
//! there, `DASHBOARD_KEY_ID` its key). [`Settings::co_hosted`] reads each setting `NAME` from
//! `PULSARA_EDGE_<NAME>` first, then from what the process supplies (the embedded dashboard's URL
//! and edge key, the bridge's own Stream URL), then from `NAME` itself; `PUBLIC_BASE_URL` is never
//! taken from the bridge's. The Worker reads the plain names only.

use std::cell::RefCell;
use std::collections::BTreeMap;

use pulsara_core::handoff::{HandoffKeys, MAX_LIFETIME_SECS};
use pulsara_core::secret::Secret;
use pulsara_core::webhooks;

/// Prefix of a co-hosted edge's own settings (see [`Settings::co_hosted`]).
pub const CO_HOSTED_PREFIX: &str = "PULSARA_EDGE_";
/// Settings a co-hosted edge never takes from the bridge's variable of the same name.
const NOT_SHARED: &[&str] = &["PUBLIC_BASE_URL"];

/// The settings that are secrets (`wrangler secret put`, `.dev.vars` locally); the rest are
/// `[vars]` in wrangler.toml. A test checks that [`Settings::from_lookup`] reads each one.
pub const SECRETS: &[&str] = &[
    "TWILIO_AUTH_TOKEN",
    "HANDOFF_KEYS",
    "DASHBOARD_SIGNING_SECRET",
    "DASHBOARD_WEBHOOK_SECRETS",
    "ELEVENLABS_WEBHOOK_SECRET",
];

/// Default for `CONFIG_TTL_SECS`.
pub const DEFAULT_CONFIG_TTL_SECS: u64 = 300;
/// Default for `CONFIG_STALE_SECS`.
pub const DEFAULT_STALE_SECS: u64 = 86_400;
/// Default for `DASHBOARD_TIMEOUT_MS`.
pub const DEFAULT_DASHBOARD_TIMEOUT_MS: u64 = 2_000;

/// Every problem found in the settings, one line each. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid edge settings:\n  - {}", .problems.join("\n  - "))]
pub struct SettingsError {
    pub problems: Vec<String>,
}

/// The edge's settings, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scheme + host [+ port], no trailing slash. Twilio signatures are checked against
    /// `public_base_url + path`, never against the Host header.
    pub public_base_url: String,
    /// Region → Stream URL (`wss://host/media`).
    pub bridges: BTreeMap<String, String>,
    pub default_region: String,
    /// Dashboard API base URL, no trailing slash.
    pub dashboard_url: String,
    pub dashboard_key_id: String,
    pub dashboard_signing_secret: Secret,
    pub twilio_auth_token: Secret,
    pub handoff_keys: HandoffKeys,
    pub dashboard_webhook_secrets: Vec<Secret>,
    pub elevenlabs_webhook_secret: Option<Secret>,
    pub config_ttl_secs: u64,
    pub config_stale_secs: u64,
    pub dashboard_timeout_ms: u64,
    pub handoff_ttl_secs: i64,
    /// Test only (see the module docs).
    pub allow_test_clock: bool,
    /// Ask the bridge to prepare each open call's agent session (`PREPARE_SESSIONS`).
    pub prepare_sessions: bool,
    /// Region → the bridge's `POST /prepare` URL, where it is not derived from the Stream URL.
    pub prepare_urls: BTreeMap<String, String>,
}

impl Settings {
    /// Reads and validates every setting through `get` (name → value; `None` when unset).
    ///
    /// # Errors
    /// [`SettingsError`] listing every missing or invalid setting.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut problems = Vec::new();
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str, problems: &mut Vec<String>| {
            get(name).unwrap_or_else(|| {
                problems.push(format!("{name} is not set"));
                String::new()
            })
        };

        let public_base_url = required("PUBLIC_BASE_URL", &mut problems)
            .trim_end_matches('/')
            .to_owned();
        if !public_base_url.is_empty()
            && url_host(&public_base_url, &["https://", "http://"]).is_none()
        {
            problems.push(
                "PUBLIC_BASE_URL must be an absolute http(s) URL such as https://edge.example.com"
                    .into(),
            );
        } else if public_base_url.contains(['?', '#']) {
            problems.push("PUBLIC_BASE_URL must not contain a query or fragment".into());
        }

        let bridges = match parse_bridges(&required("BRIDGE_URLS", &mut problems)) {
            Ok(b) => b,
            Err(e) => {
                problems.push(e);
                BTreeMap::new()
            }
        };
        let default_region = required("DEFAULT_REGION", &mut problems);
        if !default_region.is_empty()
            && !bridges.is_empty()
            && !bridges.contains_key(&default_region)
        {
            problems.push(format!(
                "DEFAULT_REGION {default_region:?} has no entry in BRIDGE_URLS"
            ));
        }

        let dashboard_url = required("DASHBOARD_URL", &mut problems)
            .trim_end_matches('/')
            .to_owned();
        if !dashboard_url.is_empty() && url_host(&dashboard_url, &["https://", "http://"]).is_none()
        {
            problems.push("DASHBOARD_URL must be an absolute http(s) URL".into());
        }
        let dashboard_key_id = required("DASHBOARD_KEY_ID", &mut problems);

        let secret = |name: &str, problems: &mut Vec<String>| {
            let s = required(name, problems);
            Secret::new(s)
        };
        let twilio_auth_token = secret("TWILIO_AUTH_TOKEN", &mut problems);
        let dashboard_signing_secret = secret("DASHBOARD_SIGNING_SECRET", &mut problems);
        let handoff_spec = secret("HANDOFF_KEYS", &mut problems);
        let handoff_keys = if handoff_spec.is_empty() {
            None
        } else {
            match HandoffKeys::parse(&handoff_spec) {
                Ok(k) => Some(k),
                Err(e) => {
                    problems.push(format!("HANDOFF_KEYS: {e}"));
                    None
                }
            }
        };
        let webhook_spec = secret("DASHBOARD_WEBHOOK_SECRETS", &mut problems);
        let dashboard_webhook_secrets = if webhook_spec.is_empty() {
            Vec::new()
        } else {
            webhooks::parse_secrets(webhook_spec.expose()).unwrap_or_else(|e| {
                problems.push(format!("DASHBOARD_WEBHOOK_SECRETS: {e}"));
                Vec::new()
            })
        };
        let elevenlabs_webhook_secret = get("ELEVENLABS_WEBHOOK_SECRET").map(Secret::new);

        let mut number = |name: &str, default: u64, min: u64, max: u64| match get(name) {
            None => default,
            Some(raw) => match raw.parse::<u64>() {
                Ok(v) if (min..=max).contains(&v) => v,
                _ => {
                    problems.push(format!(
                        "{name} must be a whole number from {min} to {max}, not {raw:?}"
                    ));
                    default
                }
            },
        };
        let config_ttl_secs = number("CONFIG_TTL_SECS", DEFAULT_CONFIG_TTL_SECS, 0, 86_400);
        let config_stale_secs = number("CONFIG_STALE_SECS", DEFAULT_STALE_SECS, 0, 30 * 86_400);
        let dashboard_timeout_ms = number(
            "DASHBOARD_TIMEOUT_MS",
            DEFAULT_DASHBOARD_TIMEOUT_MS,
            100,
            10_000,
        );
        let handoff_ttl_secs = number(
            "HANDOFF_TTL_SECS",
            MAX_LIFETIME_SECS as u64,
            5,
            MAX_LIFETIME_SECS as u64,
        ) as i64;

        let allow_test_clock = matches!(get("ALLOW_TEST_CLOCK").as_deref(), Some("1" | "true"));
        let prepare_urls = match get("BRIDGE_PREPARE_URLS") {
            None => BTreeMap::new(),
            Some(spec) => parse_prepare_urls(&spec).unwrap_or_else(|e| {
                problems.push(e);
                BTreeMap::new()
            }),
        };
        let prepare_sessions = match get("PREPARE_SESSIONS").as_deref() {
            None | Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(_) => {
                problems.push("PREPARE_SESSIONS must be 1 or 0".into());
                true
            }
        };
        if allow_test_clock
            && !url_host(&public_base_url, &["http://", "https://"])
                .is_some_and(pulsara_core::addr::is_loopback)
        {
            problems.push("ALLOW_TEST_CLOCK is for tests only and requires a loopback PUBLIC_BASE_URL (http://127.0.0.1:…)".into());
        }

        let handoff_keys = match handoff_keys {
            Some(k) if problems.is_empty() => k,
            _ => return Err(SettingsError { problems }),
        };
        Ok(Self {
            public_base_url,
            bridges,
            default_region,
            dashboard_url,
            dashboard_key_id,
            dashboard_signing_secret,
            twilio_auth_token,
            handoff_keys,
            dashboard_webhook_secrets,
            elevenlabs_webhook_secret,
            config_ttl_secs,
            config_stale_secs,
            dashboard_timeout_ms,
            handoff_ttl_secs,
            allow_test_clock,
            prepare_sessions,
            prepare_urls,
        })
    }

    /// The settings of an edge sharing its process with a bridge (`pulsara serve` with
    /// `edge.listen`): each setting `NAME` comes from `own` (the process configuration's
    /// `edge.NAME`, variable `PULSARA_EDGE_<NAME>`), else from `process` (what the host process
    /// knows, e.g. its embedded dashboard's URL), else from `shared` (the bridge's own setting of
    /// that name). The public URL is the exception: only `own` (or `process`) sets it, since
    /// `PUBLIC_BASE_URL` is the bridge's.
    ///
    /// # Errors
    /// As [`Settings::from_lookup`], each problem naming the variable the value came from (or
    /// `PULSARA_EDGE_<NAME>` for one that is missing).
    pub fn co_hosted(
        own: &BTreeMap<String, String>,
        process: &BTreeMap<String, String>,
        shared: &BTreeMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let origin: RefCell<BTreeMap<String, String>> = RefCell::new(BTreeMap::new());
        let present = |v: Option<&String>| v.filter(|v| !v.trim().is_empty()).cloned();
        let lookup = |name: &str| {
            let own_name = format!("{CO_HOSTED_PREFIX}{name}");
            let (from, value) = if let Some(v) = present(own.get(name)) {
                (own_name, Some(v))
            } else if let Some(v) = present(process.get(name)) {
                (format!("{own_name} (default from this process)"), Some(v))
            } else if NOT_SHARED.contains(&name) {
                (own_name, None)
            } else if let Some(v) = present(shared.get(name)) {
                (name.to_owned(), Some(v))
            } else {
                (own_name, None)
            };
            origin.borrow_mut().insert(name.to_owned(), from);
            value
        };
        Self::from_lookup(lookup).map_err(|mut e| {
            let origin = origin.borrow();
            for problem in &mut e.problems {
                let named = origin
                    .iter()
                    .filter(|(name, _)| {
                        problem.starts_with(name.as_str())
                            && !problem[name.len()..].starts_with(|c: char| c == '_' || c.is_ascii_alphanumeric())
                    })
                    .max_by_key(|(name, _)| name.len());
                if let Some((name, from)) = named {
                    if from != name {
                        *problem = format!("{from}{}", &problem[name.len()..]);
                    }
                }
            }
            e
        })
    }

    /// The Stream URL and region for a restaurant's region: its own bridge when one is configured,
    /// otherwise the default region's.
    pub fn bridge_for(&self, region: &str) -> (&str, &str) {
        match self.bridges.get_key_value(region) {
            Some((r, url)) => (r.as_str(), url.as_str()),
            None => {
                let url = self
                    .bridges
                    .get(&self.default_region)
                    .map(String::as_str)
                    .unwrap_or("");
                (self.default_region.as_str(), url)
            }
        }
    }

    /// The URL Twilio signed for a request to `path_and_query` on this edge.
    pub fn public_url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.public_base_url, path_and_query)
    }
}

/// The host part of `url` when it starts with one of `schemes` and has a non-empty host.
fn url_host<'a>(url: &'a str, schemes: &[&str]) -> Option<&'a str> {
    let lower = url.to_ascii_lowercase();
    let scheme = schemes.iter().find(|s| lower.starts_with(*s))?;
    let rest = &url[scheme.len()..];
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some(host)
}

/// Parses `region=http(s)://host/path[,region=…]`.
fn parse_prepare_urls(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("BRIDGE_PREPARE_URLS entry {entry:?} is not region=https://host/prepare"))?;
        let (region, url) = (region.trim(), url.trim());
        if region.is_empty() || url_host(url, &["https://", "http://"]).is_none() || url.contains(['?', '#']) {
            return Err(format!("BRIDGE_PREPARE_URLS entry {entry:?} is not region=http(s)://host/path"));
        }
        if out.insert(region.to_owned(), url.to_owned()).is_some() {
            return Err(format!("BRIDGE_PREPARE_URLS names region {region:?} twice"));
        }
    }
    Ok(out)
}

/// Parses `region=wss://host[/path][,region=…]`.
fn parse_bridges(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("BRIDGE_URLS entry {entry:?} is not region=wss://host"))?;
        let (region, url) = (region.trim(), url.trim().trim_end_matches('/'));
        if region.is_empty() {
            return Err(format!("BRIDGE_URLS entry {entry:?} has no region"));
        }
        let Some(host) = url_host(url, &["wss://"]) else {
            return Err(format!("BRIDGE_URLS entry for {region:?} must be a wss:// URL (Twilio streams only connect over TLS)"));
        };
        if url.contains(['?', '#']) {
            return Err(format!("BRIDGE_URLS entry for {region:?} must not carry a query string (Twilio forbids it)"));
        }
        let has_path = url.len() > "wss://".len() + host.len();
        let stream = if has_path {
            url.to_owned()
        } else {
            format!("{url}/media")
        };
        if out.insert(region.to_owned(), stream).is_some() {
            return Err(format!("BRIDGE_URLS names region {region:?} twice"));
        }
    }
    if out.is_empty() {
        return Err("BRIDGE_URLS has no entries".into());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    pub(crate) fn vars() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("PUBLIC_BASE_URL", "https://edge.example.com/"),
            (
                "BRIDGE_URLS",
                "eu-west=wss://eu.bridge.example.com, us-east=wss://us.bridge.example.com/custom",
            ),
            ("DEFAULT_REGION", "eu-west"),
            ("DASHBOARD_URL", "http://127.0.0.1:9/"),
            ("DASHBOARD_KEY_ID", "edge-1"),
            ("DASHBOARD_SIGNING_SECRET", "dashboard-signing-secret-0123"),
            ("TWILIO_AUTH_TOKEN", "12345"),
            ("HANDOFF_KEYS", "k1:handoff-secret-0123456789"),
            (
                "DASHBOARD_WEBHOOK_SECRETS",
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            ),
            ("ELEVENLABS_WEBHOOK_SECRET", "el-secret"),
        ])
    }

    pub(crate) fn settings_from(v: &BTreeMap<&str, &str>) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|k| v.get(k).map(|s| s.to_string()))
    }

    #[test]
    fn valid_settings_parse_with_defaults() {
        let s = settings_from(&vars()).unwrap();
        assert_eq!(s.public_base_url, "https://edge.example.com");
        assert_eq!(
            s.public_url("/twilio/voice"),
            "https://edge.example.com/twilio/voice"
        );
        assert_eq!(
            s.bridge_for("eu-west"),
            ("eu-west", "wss://eu.bridge.example.com/media")
        );
        assert_eq!(
            s.bridge_for("us-east"),
            ("us-east", "wss://us.bridge.example.com/custom")
        );
        assert_eq!(
            s.bridge_for("ap-south"),
            ("eu-west", "wss://eu.bridge.example.com/media")
        );
        assert_eq!(s.config_ttl_secs, DEFAULT_CONFIG_TTL_SECS);
        assert_eq!(s.dashboard_timeout_ms, 2_000);
        assert_eq!(s.handoff_ttl_secs, 60);
        assert!(!s.allow_test_clock);
    }

    #[test]
    fn every_problem_is_listed_and_no_secret_printed() {
        let mut v = vars();
        v.remove("TWILIO_AUTH_TOKEN");
        v.insert("BRIDGE_URLS", "eu-west=https://not-wss.example.com");
        v.insert("HANDOFF_KEYS", "k1:short");
        v.insert("CONFIG_TTL_SECS", "soon");
        v.insert("DASHBOARD_WEBHOOK_SECRETS", "plain-secret-value");
        let err = settings_from(&v).unwrap_err();
        let text = err.to_string();
        for needle in [
            "TWILIO_AUTH_TOKEN is not set",
            "wss://",
            "HANDOFF_KEYS",
            "CONFIG_TTL_SECS",
            "whsec_",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(
            !text.contains("plain-secret-value") && !text.contains("k1:short"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 5, "{text}");
    }

    #[test]
    fn a_malformed_rotation_entry_stops_start_up_without_echoing_it() {
        let mut v = vars();
        v.insert(
            "DASHBOARD_WEBHOOK_SECRETS",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD, whsec_r0tated-s3cret!",
        );
        let err = settings_from(&v).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 1, "{text}");
        assert!(
            text.contains("DASHBOARD_WEBHOOK_SECRETS") && text.contains("entry 2 of 2"),
            "{text}"
        );
        assert!(
            !text.contains("r0tated-s3cret") && !text.contains("C2FVsBQI"),
            "{text}"
        );
        // Unpadded base64 is what the reference library accepts; so does the edge.
        v.insert(
            "DASHBOARD_WEBHOOK_SECRETS",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD whsec_cHVsc2FyYS13ZWJob29rcw",
        );
        assert_eq!(settings_from(&v).unwrap().dashboard_webhook_secrets.len(), 2);
    }

    #[test]
    fn test_clock_requires_loopback() {
        let mut v = vars();
        v.insert("ALLOW_TEST_CLOCK", "1");
        assert!(settings_from(&v)
            .unwrap_err()
            .to_string()
            .contains("ALLOW_TEST_CLOCK"));
        v.insert("PUBLIC_BASE_URL", "http://127.0.0.1:8787");
        assert!(settings_from(&v).unwrap().allow_test_clock);
        assert!(settings_from(&v).unwrap().prepare_sessions, "on by default");
        v.insert("PREPARE_SESSIONS", "0");
        assert!(!settings_from(&v).unwrap().prepare_sessions);
        v.insert("PREPARE_SESSIONS", "maybe");
        assert!(settings_from(&v).unwrap_err().problems.iter().any(|p| p.contains("PREPARE_SESSIONS")));
        v.insert("PREPARE_SESSIONS", "1");
        v.insert("BRIDGE_PREPARE_URLS", "eu-west=http://127.0.0.1:8080/prepare");
        assert_eq!(settings_from(&v).unwrap().prepare_urls["eu-west"], "http://127.0.0.1:8080/prepare");
        v.insert("BRIDGE_PREPARE_URLS", "eu-west=wss://nope");
        assert!(settings_from(&v).unwrap_err().problems.iter().any(|p| p.contains("BRIDGE_PREPARE_URLS")));
        v.remove("BRIDGE_PREPARE_URLS");
    }

    #[test]
    fn co_hosted_edge_reads_its_own_names_then_the_process_then_the_shared_ones() {
        let mut shared: BTreeMap<String, String> = vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // The bridge's own public URL and dashboard key, as `pulsara serve` has them.
        shared.insert("PUBLIC_BASE_URL".into(), "https://bridge.example.com".into());
        shared.insert("DASHBOARD_KEY_ID".into(), "bridge-1".into());
        let mut own = BTreeMap::new();
        let mut defaults = BTreeMap::new();
        defaults.insert("DASHBOARD_URL".to_owned(), "http://127.0.0.1:8088".to_owned());
        defaults.insert("DASHBOARD_KEY_ID".to_owned(), "edge-embedded".to_owned());

        // Without its own public URL the edge refuses to start rather than borrow the bridge's.
        let err = Settings::co_hosted(&own, &defaults, &shared).unwrap_err();
        assert_eq!(err.problems, vec!["PULSARA_EDGE_PUBLIC_BASE_URL is not set".to_owned()]);

        own.insert("PUBLIC_BASE_URL".to_owned(), "https://edge.example.com".to_owned());
        own.insert("CONFIG_TTL_SECS".to_owned(), "30".to_owned());
        shared.insert("CONFIG_TTL_SECS".into(), "99".into());
        let s = Settings::co_hosted(&own, &defaults, &shared).unwrap();
        assert_eq!(s.public_base_url, "https://edge.example.com");
        assert_eq!(s.config_ttl_secs, 30, "PULSARA_EDGE_ wins");
        assert_eq!(s.dashboard_url, "http://127.0.0.1:8088", "the process default beats DASHBOARD_URL");
        assert_eq!(s.dashboard_key_id, "edge-embedded");
        assert_eq!(s.twilio_auth_token.expose(), "12345", "shared names still apply");
        assert_eq!(s.bridge_for("eu-west").1, "wss://eu.bridge.example.com/media");

        // A bad value names the variable it came from.
        own.insert("DASHBOARD_TIMEOUT_MS".to_owned(), "fast".to_owned());
        shared.insert("HANDOFF_TTL_SECS".into(), "600".into());
        let err = Settings::co_hosted(&own, &defaults, &shared).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.problems[0].starts_with("PULSARA_EDGE_DASHBOARD_TIMEOUT_MS must be"), "{err}");
        assert!(err.problems[1].starts_with("HANDOFF_TTL_SECS must be"), "{err}");
    }

    #[test]
    fn every_listed_secret_is_read() {
        let asked = RefCell::new(BTreeSet::new());
        let _ = Settings::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        });
        for name in SECRETS {
            assert!(asked.borrow().contains(*name), "the edge never reads the secret {name}");
        }
    }

    #[test]
    fn bridge_urls_refuse_queries_and_duplicates() {
        assert!(parse_bridges("a=wss://h/media?x=1")
            .unwrap_err()
            .contains("query"));
        assert!(parse_bridges("a=wss://h,a=wss://g")
            .unwrap_err()
            .contains("twice"));
        assert!(parse_bridges("wss://h").is_err());
        assert!(parse_bridges(" , ").is_err());
    }
}
