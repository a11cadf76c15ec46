//! Replayable run records. Every tool run (successful or not) produces a [`RunRecord`] with the
//! module hash, the exact input document, the limits, the outcome, the fuel used and the
//! duration. Fuel use is deterministic for a given module, input, limits and engine, so
//! re-running a record ([`crate::PolicyHost::replay`]) must reproduce output and fuel exactly;
//! only the duration differs.

use pulsara_policy_abi::ToolOutput;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::limits::Limits;
use crate::PolicyError;

/// One tool run, as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub module_sha256: String,
    pub tool: String,
    /// The input document exactly as the module received it.
    pub input: Box<RawValue>,
    /// Actions the tool's grant allowed (checked against the output).
    #[serde(default)]
    pub granted_actions: Vec<String>,
    pub limits: Limits,
    pub outcome: RunOutcome,
    pub fuel_used: u64,
    pub duration_us: u64,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunOutcome {
    Ok { output: ToolOutput },
    Error { kind: String, message: String },
}

impl RunOutcome {
    pub fn from_result(result: &Result<ToolOutput, PolicyError>) -> Self {
        match result {
            Ok(output) => RunOutcome::Ok { output: output.clone() },
            Err(e) => RunOutcome::Error { kind: e.kind().to_owned(), message: e.to_string() },
        }
    }
}

impl PartialEq for RunRecord {
    fn eq(&self, other: &Self) -> bool {
        self.module_sha256 == other.module_sha256
            && self.tool == other.tool
            && self.input.get() == other.input.get()
            && self.granted_actions == other.granted_actions
            && self.limits == other.limits
            && self.outcome == other.outcome
            && self.fuel_used == other.fuel_used
            && self.duration_us == other.duration_us
    }
}
