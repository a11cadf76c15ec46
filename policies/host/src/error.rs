//! The one error type of a tool run: every way a policy call can fail, each with a short message
//! the voice agent can speak around ([`PolicyError::speakable`]) and a stable kind for logs and
//! metrics ([`PolicyError::kind`]). The `Display` text is for logs: it names the cause.

use thiserror::Error;

/// Why a tool call produced no usable output.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("the agent called tool {0:?}, which this restaurant does not have")]
    UnknownTool(String),
    #[error("policy ran out of fuel ({fuel} instructions)")]
    OutOfFuel { fuel: u64 },
    #[error("policy exceeded its deadline of {deadline_ms} ms")]
    Timeout { deadline_ms: u64 },
    #[error("policy exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { limit_bytes: u64 },
    #[error("policy overflowed its stack")]
    StackOverflow,
    #[error("policy crashed: {0}")]
    Crashed(String),
    #[error("tool input is {bytes} bytes, more than the {max} allowed")]
    InputTooLarge { bytes: usize, max: usize },
    #[error("policy output is {bytes} bytes, more than the {max} allowed")]
    OutputTooLarge { bytes: usize, max: usize },
    #[error("policy output is invalid: {0}")]
    InvalidOutput(String),
    #[error("policy returned action {kind:?}, which its grant does not allow")]
    UngrantedAction { kind: String },
    /// The policy's own error (bad parameters, missing grant); its message is meant for the agent.
    #[error("policy refused: {0}")]
    Guest(String),
    #[error("module {sha256} speaks policy ABI {module}, this host speaks {host}")]
    AbiMismatch { sha256: String, module: u32, host: u32 },
    #[error("module bytes hash to {actual}, not the expected {expected}; refused")]
    HashMismatch { expected: String, actual: String },
    #[error("policy module {0} not found")]
    ModuleNotFound(String),
    #[error("could not fetch policy module {sha256}: {reason}")]
    Source { sha256: String, reason: String },
    #[error("policy module {sha256} is not a valid tool component: {reason}")]
    InvalidModule { sha256: String, reason: String },
    #[error("too many policy calls at once: {0}")]
    Busy(String),
    #[error("policy host error: {0}")]
    Internal(String),
}

impl PolicyError {
    /// A stable snake_case name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::UnknownTool(_) => "unknown_tool",
            PolicyError::OutOfFuel { .. } => "out_of_fuel",
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::MemoryLimit { .. } => "memory_limit",
            PolicyError::StackOverflow => "stack_overflow",
            PolicyError::Crashed(_) => "crashed",
            PolicyError::InputTooLarge { .. } => "input_too_large",
            PolicyError::OutputTooLarge { .. } => "output_too_large",
            PolicyError::InvalidOutput(_) => "invalid_output",
            PolicyError::UngrantedAction { .. } => "ungranted_action",
            PolicyError::Guest(_) => "guest_error",
            PolicyError::AbiMismatch { .. } => "abi_mismatch",
            PolicyError::HashMismatch { .. } => "hash_mismatch",
            PolicyError::ModuleNotFound(_) => "module_not_found",
            PolicyError::Source { .. } => "source",
            PolicyError::InvalidModule { .. } => "invalid_module",
            PolicyError::Busy(_) => "busy",
            PolicyError::Internal(_) => "internal",
        }
    }

    /// What the agent is told (`client_tool_result` with `is_error`): short, no internals, so it
    /// can apologise and carry on, offer a transfer, or rephrase.
    pub fn speakable(&self) -> String {
        match self {
            PolicyError::Guest(message) => message.chars().take(300).collect(),
            PolicyError::UnknownTool(_) => "That isn't something I can do on this line.".into(),
            PolicyError::InputTooLarge { .. } => "That request was too long for me to process; please keep it shorter.".into(),
            PolicyError::Busy(_) => "The system is busy for a moment; please try again.".into(),
            _ => "Sorry, I couldn't complete that just now because of a technical problem.".into(),
        }
    }
}
