//! Test guest: the smallest well-behaved tool. Echoes the tool name and the `text` parameter;
//! with `{"spin": N}` it first does N rounds of work, so fuel use depends on the input
//! (replay tests check the fuel is reproduced exactly).
use pulsara_policy_sdk::{json, Tool, ToolError, ToolInput, ToolOutput};

pub struct Echo;

impl Tool for Echo {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let spin = input.params.get("spin").and_then(|v| v.as_u64()).unwrap_or(0).min(10_000_000);
        let mut acc: u64 = 0;
        for i in 0..spin {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        let text = input.params.get("text").and_then(|v| v.as_str()).unwrap_or("");
        Ok(ToolOutput {
            result: format!("{}: {text}", input.tool),
            data: Some(json!({"acc": acc})),
            actions: Vec::new(),
        })
    }
}

pulsara_policy_sdk::export_tool!(Echo);
