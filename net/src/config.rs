//! The listener's limits, with defaults and their environment names. Every value bounds
//! something a peer could otherwise hold: time before its first request, time idle between
//! requests, time inside one request, and how many connections may be unserved at once.

use std::time::Duration;

/// Environment names, shared by every binary that builds a [`ServeConfig`].
pub const ENV_HEADER_TIMEOUT_MS: &str = "PULSARA_HTTP_HEADER_TIMEOUT_MS";
pub const ENV_IDLE_TIMEOUT_MS: &str = "PULSARA_HTTP_IDLE_TIMEOUT_MS";
pub const ENV_REQUEST_TIMEOUT_MS: &str = "PULSARA_HTTP_REQUEST_TIMEOUT_MS";
pub const ENV_MAX_UNSERVED: &str = "PULSARA_HTTP_MAX_UNSERVED";

/// Default time from accept to a complete first request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a kept-alive connection may wait for its next request head.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time from a request head to its response head (body reads included).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of the derived default for [`ServeConfig::max_unserved`].
pub const MAX_UNSERVED_CEILING: usize = 1024;
/// Lower bound of the derived default for [`ServeConfig::max_unserved`].
pub const MAX_UNSERVED_FLOOR: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// How a listener treats its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Accept → the first request's head is complete. A socket that sends nothing is closed then.
    pub header_timeout: Duration,
    /// End of a response → the next request's head is complete (keep-alive idle).
    pub idle_timeout: Duration,
    /// Request head → response head. A body dripped byte by byte ends with 408 here.
    pub request_timeout: Duration,
    /// Connections that have not upgraded and are waiting for, or inside, a request. When a new
    /// connection would exceed it, the oldest of them is closed (a waiting one before a busy
    /// one), so a genuine caller still gets in during a flood.
    pub max_unserved: usize,
    /// Pause after an accept error that is not about one connection (out of descriptors,
    /// memory), so the loop neither spins nor stalls.
    pub accept_backoff: Duration,
    /// After the shutdown future resolves: how long in-flight requests may finish before their
    /// connections are dropped.
    pub shutdown_timeout: Duration,
    /// `TCP_NODELAY` on accepted sockets (media frames are small and latency-bound).
    pub nodelay: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_unserved: default_max_unserved(),
            accept_backoff: Duration::from_millis(10),
            shutdown_timeout: Duration::from_secs(10),
            nodelay: true,
        }
    }
}

/// A quarter of the process's descriptor limit, within
/// [`MAX_UNSERVED_FLOOR`]..=[`MAX_UNSERVED_CEILING`]: unserved sockets can then never take the
/// descriptors live calls, files and outgoing connections need.
pub fn default_max_unserved() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match soft {
        Some(n) => usize::try_from(n / 4)
            .unwrap_or(MAX_UNSERVED_CEILING)
            .clamp(MAX_UNSERVED_FLOOR, MAX_UNSERVED_CEILING),
        None => MAX_UNSERVED_CEILING,
    }
}

impl ServeConfig {
    /// The defaults, overridden by `PULSARA_HTTP_*` from `env` (empty values ignored).
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting that does not parse or is out of range.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg = ServeConfig::default();
        let get = |n: &str| env(n).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENV_HEADER_TIMEOUT_MS) {
            cfg.header_timeout = Duration::from_millis(parse(ENV_HEADER_TIMEOUT_MS, &v)?);
        }
        if let Some(v) = get(ENV_IDLE_TIMEOUT_MS) {
            cfg.idle_timeout = Duration::from_millis(parse(ENV_IDLE_TIMEOUT_MS, &v)?);
        }
        if let Some(v) = get(ENV_REQUEST_TIMEOUT_MS) {
            cfg.request_timeout = Duration::from_millis(parse(ENV_REQUEST_TIMEOUT_MS, &v)?);
        }
        if let Some(v) = get(ENV_MAX_UNSERVED) {
            cfg.max_unserved = usize::try_from(parse(ENV_MAX_UNSERVED, &v)?)
                .map_err(|e| invalid(ENV_MAX_UNSERVED, e))?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the ranges: every deadline 1 ms..=10 min, at least one unserved connection.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            (ENV_HEADER_TIMEOUT_MS, self.header_timeout),
            (ENV_IDLE_TIMEOUT_MS, self.idle_timeout),
            (ENV_REQUEST_TIMEOUT_MS, self.request_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(invalid(name, "must be 1..=600000 milliseconds"));
            }
        }
        if self.max_unserved == 0 {
            return Err(invalid(ENV_MAX_UNSERVED, "must be at least 1"));
        }
        Ok(())
    }
}

fn parse(name: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.trim().parse().map_err(|e| invalid(name, e))
}

fn invalid(name: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_bad_values_name_the_setting() {
        let cfg = ServeConfig::from_lookup(|n| match n {
            ENV_HEADER_TIMEOUT_MS => Some("250".into()),
            ENV_MAX_UNSERVED => Some("7".into()),
            ENV_IDLE_TIMEOUT_MS => Some("".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.header_timeout, Duration::from_millis(250));
        assert_eq!(cfg.max_unserved, 7);
        assert_eq!(cfg.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        for (name, value) in [
            (ENV_IDLE_TIMEOUT_MS, "soon"),
            (ENV_REQUEST_TIMEOUT_MS, "0"),
            (ENV_HEADER_TIMEOUT_MS, "600001"),
            (ENV_MAX_UNSERVED, "0"),
            (ENV_MAX_UNSERVED, "-3"),
        ] {
            let err = ServeConfig::from_lookup(|n| (n == name).then(|| value.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn derived_cap_stays_in_bounds() {
        let n = default_max_unserved();
        assert!(
            (MAX_UNSERVED_FLOOR..=MAX_UNSERVED_CEILING).contains(&n),
            "{n}"
        );
    }
}
