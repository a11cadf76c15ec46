//! A compiled policy module and the state of one run's store: what the host ([`crate::host`])
//! instantiates and what a restaurant's tool set ([`crate::toolset`]) holds. Both depend on
//! this module; it depends on neither.

use wasmtime::ResourceLimiter;

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "tool" });
}
pub(crate) use bindings::ToolPre;

/// Per-store state: the resource limiter for this call.
pub(crate) struct CallState {
    pub(crate) limiter: CallLimiter,
}

pub(crate) struct CallLimiter {
    pub(crate) memory_bytes: usize,
    /// Set when a `memory.grow` was refused, so the trap that usually follows (the guest's
    /// allocator aborts) is reported as the memory limit, not a crash.
    pub(crate) memory_denied: bool,
}

/// Table elements any policy may grow to.
const MAX_TABLE_ELEMENTS: usize = 20_000;

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A verified, compiled policy module, ready to instantiate.
pub struct LoadedModule {
    pub sha256: String,
    pub(crate) pre: ToolPre<CallState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule").field("sha256", &self.sha256).finish()
    }
}
