//! Test guest: keeps allocating 1 MiB blocks until memory growth is refused (the allocator then
//! aborts, which must surface as a memory-limit error, not take the host down).
use pulsara_policy_sdk::{Tool, ToolError, ToolInput, ToolOutput};

pub struct Bomb;

impl Tool for Bomb {
    fn run(_input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            block[0] = blocks.len() as u8;
            blocks.push(std::hint::black_box(block));
        }
    }
}

pulsara_policy_sdk::export_tool!(Bomb);
