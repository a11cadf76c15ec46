//! A restaurant's tool set: its tool bindings resolved to loaded modules and clamped limits,
//! for one configuration version. Calls hold an `Arc<ToolSet>` for their whole duration, so a
//! configuration or policy change (hot swap) only affects calls that start afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use pulsara_core::config::{RestaurantConfig, ToolBinding};

use crate::module::LoadedModule;
use crate::limits::Limits;
use crate::PolicyError;

/// One tool of the set.
#[derive(Debug)]
pub struct BoundTool {
    pub binding: ToolBinding,
    /// The module, or why it could not be loaded (that tool then fails; the others work).
    pub module: Result<Arc<LoadedModule>, PolicyError>,
    pub limits: Limits,
}

/// The tools of one restaurant at one configuration version.
#[derive(Debug)]
pub struct ToolSet {
    pub restaurant_id: String,
    pub config_version: u64,
    bindings: Vec<ToolBinding>,
    tools: BTreeMap<String, BoundTool>,
}

impl ToolSet {
    pub(crate) fn new(config: &RestaurantConfig, tools: BTreeMap<String, BoundTool>) -> Self {
        Self {
            restaurant_id: config.id.clone(),
            config_version: config.version,
            bindings: config.tools.clone(),
            tools,
        }
    }

    /// Still the set for this configuration?
    pub fn matches(&self, config: &RestaurantConfig) -> bool {
        self.restaurant_id == config.id && self.config_version == config.version && self.bindings == config.tools
    }

    pub fn get(&self, tool: &str) -> Option<&BoundTool> {
        self.tools.get(tool)
    }

    /// Tool names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// Whether every tool's module loaded.
    pub fn all_loaded(&self) -> bool {
        self.tools.values().all(|t| t.module.is_ok())
    }

    /// The module hash behind `tool`, when loaded.
    pub fn module_sha256(&self, tool: &str) -> Option<&str> {
        self.tools.get(tool).and_then(|t| t.module.as_ref().ok()).map(|m| m.sha256.as_str())
    }
}
