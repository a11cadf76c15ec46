//! The bridge's [`ToolRunner`] backed by the wasm policy host: a `client_tool_call` becomes one
//! sandboxed policy run, on a blocking thread (runs are CPU-bound and bounded by their deadline).
//!
//! The tool set is resolved from the configuration the call started with
//! ([`ToolContext::restaurant`]); modules are content-addressed, so a call keeps the policies of
//! its configuration version even after a `policy.updated` swap ([`PolicyToolRunner::invalidate`]).
//! Policy failures (limits, traps, invalid output, ungranted actions) come back as `is_error`
//! outcomes with a speakable message and the run's fuel, so they are recorded like any run.
//!
//! Every run is logged (`policy run`: tool, module, fuel, duration, outcome) and, with a
//! [`RunLog`], its replayable [`RunRecord`] is kept as a file for `pulsara policy replay`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pulsara_net::metrics::{Family, ScrapeCollector};
use pulsara_policy_abi::CallContext;
use pulsara_policy_host::{
    DirSource, HostConfig, ModuleSource, PolicyError, PolicyHost, RunRecord,
};

use crate::ports::{ToolContext, ToolError, ToolOutcome, ToolRunner};

/// The replayable record of every policy run, one JSON file each (`<seq>-<call>-<tool>.json`,
/// readable by `pulsara policy replay`), keeping the newest `max_files`. Records hold the call's
/// input (the caller's number, the granted restaurant data), so files are owner-only.
pub struct RunLog {
    dir: PathBuf,
    max_files: usize,
    state: Mutex<RunLogState>,
}

struct RunLogState {
    files: VecDeque<PathBuf>,
    next_seq: u64,
}

impl RunLog {
    /// Opens (creating) `dir`, continuing after the runs already in it.
    ///
    /// # Errors
    /// When the directory cannot be created or listed.
    pub fn open(dir: &Path, max_files: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let seq = path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.ends_with(".json"))
                .and_then(|n| n.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(seq) = seq {
                files.push((seq, path));
            }
        }
        files.sort();
        let next_seq = files.last().map_or(1, |(s, _)| s + 1);
        let log = Self {
            dir: dir.to_path_buf(),
            max_files: max_files.max(1),
            state: Mutex::new(RunLogState { files: files.into_iter().map(|(_, p)| p).collect(), next_seq }),
        };
        log.trim();
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `record` and deletes the oldest files beyond the bound; returns the new file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, call_sid: &str, record: &RunRecord) -> std::io::Result<PathBuf> {
        let seq = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seq = state.next_seq;
            state.next_seq += 1;
            seq
        };
        let name = format!("{seq:012}-{}-{}.json", file_safe(call_sid), file_safe(&record.tool));
        let path = self.dir.join(name);
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        write_private(&path, &json)?;
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .files
            .push_back(path.clone());
        self.trim();
        Ok(path)
    }

    fn trim(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while state.files.len() > self.max_files {
            if let Some(old) = state.files.pop_front() {
                if let Err(e) = std::fs::remove_file(&old) {
                    tracing::warn!(file = %old.display(), error = %e, "could not delete an old policy run record");
                }
            }
        }
    }
}

/// Letters, digits, `_` and `-` only (call SIDs and tool names are already; anything else is
/// replaced so a name can never leave the directory).
fn file_safe(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if cleaned.is_empty() {
        "none".into()
    } else {
        cleaned
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// Runs tools as wasm policies.
///
/// The host has a fixed number of instance slots (`max_concurrent_calls`, 256 by default) and
/// refuses a run beyond them with `Busy`; thousands of calls can ask at once. Runs therefore
/// queue here for a slot, each for at most its own deadline (the tool's `deadline_ms`): a tool
/// call is refused as busy only when no slot came free in the time it was allowed to take.
/// One reading of a [`PolicyToolRunner`] for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct ToolStats {
    pub loads: pulsara_policy_host::LoadStats,
    pub queued: usize,
    pub running: usize,
}

#[derive(Clone)]
pub struct PolicyToolRunner {
    host: Arc<PolicyHost>,
    runs: Option<Arc<RunLog>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Runs waiting for a slot now (`pulsara_tool_runs_queued`).
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl PolicyToolRunner {
    pub fn new(host: Arc<PolicyHost>) -> Self {
        let slots = usize::try_from(host.config().max_concurrent_calls.max(1)).unwrap_or(1);
        Self { host, runs: None, slots: Arc::new(tokio::sync::Semaphore::new(slots)), queued: Arc::default() }
    }

    /// Tool runs waiting for a slot of the host right now.
    pub fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tool runs holding a slot of the host right now.
    pub fn running(&self) -> usize {
        let slots = usize::try_from(self.host.config().max_concurrent_calls.max(1)).unwrap_or(1);
        slots.saturating_sub(self.slots.available_permits())
    }

    /// How long `tool_name` may take at `restaurant`, as the host will enforce it.
    fn deadline(&self, restaurant: &pulsara_core::config::RestaurantConfig, tool_name: &str) -> std::time::Duration {
        let cfg = self.host.config();
        restaurant
            .tools
            .iter()
            .find(|t| t.name == tool_name)
            .map_or(cfg.defaults.deadline(), |t| pulsara_policy_host::Limits::resolve(&t.limits, &cfg.defaults, &cfg.maxima).deadline())
    }

    /// Keeps every run's record in `log`.
    #[must_use]
    pub fn with_run_log(mut self, log: RunLog) -> Self {
        self.runs = Some(Arc::new(log));
        self
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

    /// The host's module loads and this runner's slots as families for the process registry,
    /// read at every scrape.
    ///
    /// # Errors
    /// Never for these fixed names; the type is the registry's.
    pub fn collector(&self) -> prometheus::Result<ScrapeCollector<ToolStats>> {
        let runner = self.clone();
        ScrapeCollector::new(
            vec![
                Family::counter(
                    "pulsara_policy_modules_compiled_total",
                    "Policy modules compiled from wasm (the slow path).",
                    |s: &ToolStats| s.loads.compiled as f64,
                ),
                Family::counter(
                    "pulsara_policy_modules_deserialised_total",
                    "Policy modules deserialised from a precompiled artefact on disk.",
                    |s| s.loads.deserialised as f64,
                ),
                Family::gauge("pulsara_policy_modules_resident", "Policy modules held in memory.", |s| {
                    s.loads.resident as f64
                }),
                Family::gauge("pulsara_tool_runs_queued", "Tool runs waiting for a policy slot.", |s| s.queued as f64),
                Family::gauge("pulsara_tool_runs_running", "Tool runs holding a policy slot.", |s| s.running as f64),
            ],
            &[],
            move || Some(ToolStats { loads: runner.host.load_stats(), queued: runner.queued(), running: runner.running() }),
        )
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
        let runs = self.runs.clone();
        let call_sid = ctx.call_sid.clone();
        // A slot of the host, waited for within the tool's own deadline.
        let budget = self.deadline(&restaurant, tool_name);
        self.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let permit = tokio::time::timeout(budget, self.slots.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(Ok(permit)) = permit else {
            let busy = PolicyError::Busy(format!("no policy slot came free within {} ms", budget.as_millis()));
            tracing::warn!(call_sid = %ctx.call_sid, tool = tool_name, cause = %busy, "tool policy not run");
            return Ok((
                ToolOutcome { result: busy.speakable(), is_error: true, ..ToolOutcome::default() },
                None,
            ));
        };
        let run = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let set = host.tool_set(&restaurant);
            let run = host.call(&set, &restaurant, &kb, &tool, params, context);
            log_run(&call_sid, &tool, run.record.as_ref(), runs.as_deref());
            run
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

/// The `policy run` log line, and the record file when a [`RunLog`] is set.
fn log_run(call_sid: &str, tool: &str, record: Option<&RunRecord>, runs: Option<&RunLog>) {
    let Some(record) = record else {
        return;
    };
    let outcome = match &record.outcome {
        pulsara_policy_host::RunOutcome::Ok { .. } => "ok",
        pulsara_policy_host::RunOutcome::Error { kind, .. } => kind.as_str(),
    };
    let file = runs.map(|log| log.write(call_sid, record));
    let file = match file {
        Some(Ok(path)) => path.display().to_string(),
        Some(Err(e)) => {
            tracing::warn!(call_sid, tool, error = %e, "could not keep the policy run record");
            String::new()
        }
        None => String::new(),
    };
    tracing::info!(
        call_sid,
        tool,
        module = %record.module_sha256.get(..12).unwrap_or(&record.module_sha256),
        fuel = record.fuel_used,
        duration_us = record.duration_us,
        outcome,
        record = %file,
        "policy run"
    );
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

/// Restaurants a warm-up lists from the dashboard at most (the list is paged; past this the
/// warm-up stops with an error rather than holding an unbounded list).
pub const WARM_UP_MAX_RESTAURANTS: usize = 100_000;

/// Loads restaurants' tool modules ahead of their calls, off the call path: each restaurant's
/// tool set is resolved on the blocking pool, at most `parallelism` at a time across every
/// warm-up of the process (start-up and `policy.updated`), so compiles never take every core
/// from live calls. A call that needs a module being compiled waits for that compile (the host
/// loads each module once) instead of starting its own.
#[derive(Clone)]
pub struct WarmUp {
    runner: PolicyToolRunner,
    configs: Arc<dyn crate::ports::ConfigSource>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl WarmUp {
    pub fn new(
        runner: PolicyToolRunner,
        configs: Arc<dyn crate::ports::ConfigSource>,
        parallelism: usize,
    ) -> Self {
        Self {
            runner,
            configs,
            permits: Arc::new(tokio::sync::Semaphore::new(parallelism.max(1))),
        }
    }

    /// Resolves one restaurant's tool set (loading its modules); `false` when its configuration
    /// could not be fetched or a module failed to load (the call path then reports it).
    pub async fn restaurant(&self, id: &str) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        self.resolve(id).await
    }

    async fn resolve(&self, id: &str) -> bool {
        let cfg = match self.configs.restaurant(id).await {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::warn!(restaurant = %id, error = %e, "tool warm-up skipped");
                return false;
            }
        };
        let host = self.runner.host().clone();
        let started = std::time::Instant::now();
        let set = tokio::task::spawn_blocking(move || host.tool_set(&cfg)).await;
        let ok = set.as_ref().is_ok_and(|s| s.all_loaded());
        if !ok {
            // Not cached half-loaded: the next call retries the modules that failed (a source
            // that was briefly unreachable must not leave the restaurant without tools).
            self.runner.invalidate(id);
        }
        tracing::info!(restaurant = %id, ok, ms = started.elapsed().as_millis() as u64, "tool modules ready");
        ok
    }

    /// Warms every restaurant of `ids`, `parallelism` at a time; returns how many are ready.
    pub async fn restaurants(&self, ids: &[String]) -> usize {
        let mut running = tokio::task::JoinSet::new();
        let mut ready = 0;
        for id in ids {
            // The permit is taken before the task exists, so at most `parallelism` tasks do.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                break;
            };
            let (this, id) = (self.clone(), id.clone());
            running.spawn(async move {
                let ok = this.resolve(&id).await;
                drop(permit);
                ok
            });
            while let Some(done) = running.try_join_next() {
                ready += usize::from(done.unwrap_or(false));
            }
        }
        while let Some(done) = running.join_next().await {
            ready += usize::from(done.unwrap_or(false));
        }
        ready
    }

    /// Lists the dashboard's restaurants (retrying with backoff, up to a minute apart, while the
    /// dashboard is unreachable) and warms them all. Returns how many are ready.
    ///
    /// # Errors
    /// The dashboard refused the listing (not transient), or lists more than
    /// [`WARM_UP_MAX_RESTAURANTS`].
    pub async fn from_dashboard(
        &self,
        client: &pulsara_dashboard::client::DashboardClient,
    ) -> Result<usize, pulsara_dashboard::client::ClientError> {
        let mut pause = std::time::Duration::from_millis(500);
        let ids = loop {
            match client.restaurants(WARM_UP_MAX_RESTAURANTS).await {
                Ok(list) => break list.into_iter().map(|r| r.id).collect::<Vec<_>>(),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "tool warm-up: dashboard restaurant list unavailable");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(60));
                }
                Err(e) => return Err(e),
            }
        };
        let started = std::time::Instant::now();
        let ready = self.restaurants(&ids).await;
        tracing::info!(restaurants = ids.len(), ready, ms = started.elapsed().as_millis() as u64, "tool warm-up from the dashboard done");
        Ok(ready)
    }

    /// The `policy.updated` hook: forget the restaurant's tool set (new calls resolve it afresh)
    /// and load its new modules in the background, before the next call needs them.
    pub fn on_policy_updated(&self, ev: &pulsara_dashboard::events::DashboardEvent) {
        if ev.kind != pulsara_dashboard::events::EventType::PolicyUpdated {
            return;
        }
        self.runner.invalidate(&ev.data.restaurant_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (warm, id) = (self.clone(), ev.data.restaurant_id.clone());
            runtime.spawn(async move {
                warm.restaurant(&id).await;
            });
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_policy_host::{Limits, RunOutcome};

    fn record(tool: &str) -> RunRecord {
        RunRecord {
            module_sha256: "ab".repeat(32),
            tool: tool.into(),
            input: serde_json::value::RawValue::from_string("{\"abi_version\":1}".into()).unwrap(),
            granted_actions: Vec::new(),
            limits: Limits::DEFAULT,
            outcome: RunOutcome::Error { kind: "timeout".into(), message: "m".into() },
            fuel_used: 7,
            duration_us: 9,
        }
    }

    #[test]
    fn keeps_the_newest_runs_and_continues_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("pulsara-runlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = RunLog::open(&dir, 3).unwrap();
        let mut written = Vec::new();
        for i in 0..5 {
            written.push(log.write("CA1", &record(&format!("tool{i}"))).unwrap());
        }
        let mut left: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, written[2..].to_vec());
        let back: RunRecord = serde_json::from_slice(&std::fs::read(&written[4]).unwrap()).unwrap();
        assert_eq!(back, record("tool4"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&written[4]).unwrap().permissions().mode() & 0o777, 0o600);
        }

        // Reopened: numbering continues, the bound still holds.
        let log = RunLog::open(&dir, 3).unwrap();
        let next = log.write("../../etc/passwd", &record("x/y")).unwrap();
        assert!(next.file_name().unwrap().to_str().unwrap().starts_with("000000000006-"), "{}", next.display());
        assert_eq!(next.parent().unwrap(), dir.as_path(), "names cannot leave the directory");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
