//! The bridge's [`ToolRunner`] backed by the wasm policy host: a `client_tool_call` becomes one
//! sandboxed policy run, on a blocking thread (runs are CPU-bound and bounded by their deadline).
//!
//! The tool set is resolved from the configuration the call started with
//! ([`ToolContext::restaurant`]); modules are content-addressed, so a call keeps the policies of
//! its configuration version even after a `policy.updated` swap ([`PolicyToolRunner::invalidate`]).
//! Policy failures (limits, traps, invalid output, ungranted actions) come back as `is_error`
//! outcomes with a speakable message and the run's fuel, so they are recorded like any run.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pulsara_policy_abi::CallContext;
use pulsara_policy_host::{
    DirSource, HostConfig, ModuleSource, PolicyError, PolicyHost, RunRecord,
};

use crate::ports::{ToolContext, ToolError, ToolOutcome, ToolRunner};

/// Runs tools as wasm policies.
#[derive(Clone)]
pub struct PolicyToolRunner {
    host: Arc<PolicyHost>,
}

impl PolicyToolRunner {
    pub fn new(host: Arc<PolicyHost>) -> Self {
        Self { host }
    }

    /// A runner over a module directory (`target/policies`, with `manifest.json` for
    /// `builtin:<name>` references) and an optional precompiled-artefact cache.
    ///
    /// # Errors
    /// When the directory cannot be read or the engine cannot be created.
    pub fn from_dir(modules: &Path, cache_dir: Option<&Path>) -> Result<Self, PolicyError> {
        let source = DirSource::open(modules).map_err(|e| PolicyError::Source {
            sha256: String::new(),
            reason: e.to_string(),
        })?;
        Self::with_source(Arc::new(source), cache_dir)
    }

    /// A runner over any module source (e.g. the dashboard client).
    ///
    /// # Errors
    /// When the engine cannot be created.
    pub fn with_source(
        source: Arc<dyn ModuleSource>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, PolicyError> {
        let config = HostConfig {
            cache_dir: cache_dir.map(Path::to_path_buf),
            ..HostConfig::default()
        };
        Ok(Self::new(Arc::new(PolicyHost::new(config, source)?)))
    }

    pub fn host(&self) -> &Arc<PolicyHost> {
        &self.host
    }

    /// `policy.updated` for `restaurant_id`: new calls resolve its tool set afresh.
    pub fn invalidate(&self, restaurant_id: &str) {
        self.host.invalidate(restaurant_id);
    }

    /// Runs one tool and also returns the replayable run record (`None` when nothing ran).
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`] when the restaurant has no such tool; `Failed` when the
    /// blocking task could not run.
    pub async fn run_recorded(
        &self,
        ctx: &ToolContext,
        tool_name: &str,
        params: serde_json::Value,
    ) -> Result<(ToolOutcome, Option<RunRecord>), ToolError> {
        let host = self.host.clone();
        let restaurant = ctx.restaurant.clone();
        let kb = ctx.kb.clone();
        let tool = tool_name.to_owned();
        let context = CallContext {
            restaurant_id: restaurant.id.clone(),
            restaurant_name: restaurant.name.clone(),
            call_sid: ctx.call_sid.clone(),
            caller: ctx.caller.clone(),
            local_time: ctx.local_time.clone(),
            time_zone: restaurant.time_zone.clone(),
            earlier_results: ctx.earlier.clone(),
        };
        let run = tokio::task::spawn_blocking(move || {
            let set = host.tool_set(&restaurant);
            host.call(&set, &restaurant, &kb, &tool, params, context)
        })
        .await
        .map_err(|e| ToolError::Failed {
            tool: tool_name.to_owned(),
            reason: format!("policy task: {e}"),
        })?;
        let fuel_used = run.record.as_ref().map(|r| r.fuel_used);
        let module_sha256 = run.record.as_ref().map(|r| r.module_sha256.clone());
        let outcome = match run.result {
            Ok(output) => ToolOutcome {
                result: agent_text(&output),
                is_error: false,
                actions: output.actions.clone(),
                fuel_used,
                module_sha256,
                output: Some(output),
            },
            Err(PolicyError::UnknownTool(name)) => return Err(ToolError::UnknownTool(name)),
            Err(e) => {
                if !matches!(e, PolicyError::Guest(_)) {
                    tracing::warn!(call_sid = %ctx.call_sid, tool = tool_name, kind = e.kind(), cause = %e, "tool policy failed");
                }
                ToolOutcome {
                    result: e.speakable(),
                    is_error: true,
                    actions: Vec::new(),
                    fuel_used,
                    module_sha256,
                    output: None,
                }
            }
        };
        Ok((outcome, run.record))
    }
}

/// The text the agent gets: the policy's result, plus its structured data when present.
fn agent_text(output: &pulsara_policy_abi::ToolOutput) -> String {
    match &output.data {
        Some(data) => format!("{}\n{}", output.result, data),
        None => output.result.clone(),
    }
}

#[async_trait]
impl ToolRunner for PolicyToolRunner {
    async fn run(
        &self,
        ctx: &ToolContext,
        tool_name: &str,
        params: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError> {
        self.run_recorded(ctx, tool_name, params)
            .await
            .map(|(outcome, _)| outcome)
    }
}

/// Compiles (or loads from the precompiled cache) the tool modules of `restaurant_ids` before
/// calls need them, so a caller never waits for a compilation on the first tool call. Failures
/// are logged and left to the call path, which turns them into clean tool errors.
pub async fn warm_up(
    runner: &PolicyToolRunner,
    configs: &dyn crate::ports::ConfigSource,
    restaurant_ids: &[String],
) {
    for id in restaurant_ids {
        match configs.restaurant(id).await {
            Ok(cfg) => {
                let host = runner.host().clone();
                let started = std::time::Instant::now();
                let set = tokio::task::spawn_blocking(move || host.tool_set(&cfg)).await;
                tracing::info!(restaurant = %id, ok = set.is_ok(), ms = started.elapsed().as_millis() as u64, "tool modules ready");
            }
            Err(e) => tracing::warn!(restaurant = %id, error = %e, "tool warm-up skipped"),
        }
    }
}
