//! Test guest: answers with a 1 MiB result (the host allows 20 KB).
use pulsara_policy_sdk::{reply, Tool, ToolError, ToolInput, ToolOutput};

pub struct Huge;

impl Tool for Huge {
    fn run(_input: &ToolInput) -> Result<ToolOutput, ToolError> {
        Ok(reply("x".repeat(1 << 20)))
    }
}

pulsara_policy_sdk::export_tool!(Huge);
