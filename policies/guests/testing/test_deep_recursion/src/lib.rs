//! Test guest: recurses without bound (must hit the stack limit).
use pulsara_policy_sdk::{reply, Tool, ToolError, ToolInput, ToolOutput};

#[allow(unconditional_recursion)]
fn down(n: u64, pad: [u64; 16]) -> u64 {
    let next = std::hint::black_box(pad);
    down(n + 1, next).wrapping_add(next[(n % 16) as usize])
}

pub struct Deep;

impl Tool for Deep {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let v = down(input.tool.len() as u64, [1; 16]);
        Ok(reply(v.to_string()))
    }
}

pulsara_policy_sdk::export_tool!(Deep);
