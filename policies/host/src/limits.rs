//! Per-call sandbox limits: the host's defaults and maxima, and how a restaurant's
//! `ToolBinding.limits` are clamped to them.

use std::time::Duration;

use pulsara_core::config::PolicyLimits;
use serde::{Deserialize, Serialize};

/// The limits one tool call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Fuel (≈ wasm instructions) for the call, instantiation included.
    pub fuel: u64,
    /// Wall-clock deadline, enforced with epochs at [`crate::HostConfig::epoch_tick`] resolution.
    pub deadline_ms: u64,
    /// Linear memory the instance may grow to.
    pub memory_bytes: u64,
    /// Largest input document.
    pub input_bytes: usize,
    /// Largest output document.
    pub output_bytes: usize,
}

impl Limits {
    /// Shopify Functions' 11 M instructions, 50 ms, 16 MiB, and the ABI's document sizes.
    pub const DEFAULT: Limits = Limits {
        fuel: 11_000_000,
        deadline_ms: 50,
        memory_bytes: 16 << 20,
        input_bytes: pulsara_policy_abi::MAX_INPUT_BYTES,
        output_bytes: pulsara_policy_abi::MAX_OUTPUT_BYTES,
    };

    /// The most any restaurant may ask for.
    pub const MAXIMA: Limits = Limits {
        fuel: 100_000_000,
        deadline_ms: 1_000,
        memory_bytes: 64 << 20,
        input_bytes: pulsara_policy_abi::MAX_INPUT_BYTES,
        output_bytes: pulsara_policy_abi::MAX_OUTPUT_BYTES,
    };

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// `requested` over `defaults`, each value clamped to `maxima` (and to at least 1).
    pub fn resolve(requested: &PolicyLimits, defaults: &Limits, maxima: &Limits) -> Limits {
        Limits {
            fuel: requested.fuel.unwrap_or(defaults.fuel).clamp(1, maxima.fuel),
            deadline_ms: requested.deadline_ms.unwrap_or(defaults.deadline_ms).clamp(1, maxima.deadline_ms),
            memory_bytes: requested.memory_bytes.unwrap_or(defaults.memory_bytes).clamp(64 << 10, maxima.memory_bytes),
            input_bytes: defaults.input_bytes.min(maxima.input_bytes),
            output_bytes: defaults.output_bytes.min(maxima.output_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restaurant_limits_are_clamped() {
        let asked = PolicyLimits { fuel: Some(u64::MAX), deadline_ms: Some(0), memory_bytes: None };
        let l = Limits::resolve(&asked, &Limits::DEFAULT, &Limits::MAXIMA);
        assert_eq!(l.fuel, Limits::MAXIMA.fuel);
        assert_eq!(l.deadline_ms, 1);
        assert_eq!(l.memory_bytes, 16 << 20);
        let none = Limits::resolve(&PolicyLimits::default(), &Limits::DEFAULT, &Limits::MAXIMA);
        assert_eq!(none, Limits::DEFAULT);
    }
}
