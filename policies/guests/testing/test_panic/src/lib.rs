//! Test guest: panics (panic=abort in wasm: the instance traps).
use pulsara_policy_sdk::{Tool, ToolError, ToolInput, ToolOutput};

pub struct Panics;

impl Tool for Panics {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        panic!("policy bug while handling {}", input.tool);
    }
}

pulsara_policy_sdk::export_tool!(Panics);
