//! Finding or installing a compiler for `wasm32-unknown-unknown`. (Being built: edge issue.)

use anyhow::Result;

/// How to invoke cargo for wasm32 builds on this machine.
pub struct Wasm {}

impl Wasm {
    pub fn prepare() -> Result<Self> {
        Ok(Self {})
    }
}
