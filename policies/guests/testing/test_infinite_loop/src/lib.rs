//! Test guest: loops forever (must be stopped by fuel or the epoch deadline).
use pulsara_policy_sdk::{Tool, ToolError, ToolInput, ToolOutput};

pub struct Spin;

impl Tool for Spin {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let mut x: u64 = input.tool.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

pulsara_policy_sdk::export_tool!(Spin);
