//! The wasmtime embedding: one [`Engine`] (fuel, epoch interruption, pooling allocator) and one
//! component [`Linker`] for the process; per module an `InstancePre` (through the `ToolPre`
//! generated from `policies/wit`) built once; per call a fresh [`Store`] with that call's limits,
//! a fresh instance, one `run`, and the output checked against the grant.
//!
//! Modules come from a [`ModuleSource`] by sha256 and are re-hashed before use; compiled
//! components are cached in memory by hash and on disk as precompiled artefacts
//! ([`ArtifactCache`]), so restarts deserialise instead of recompiling. An epoch ticker thread
//! (holding only a weak engine reference) advances the epoch every [`HostConfig::epoch_tick`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::crypto::sha256_hex;
use pulsara_policy_abi::{check_output, CallContext, OutputProblem, ToolOutput, ABI_VERSION};
use serde_json::value::RawValue;
use serde_json::Value;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::cache::ArtifactCache;
use crate::data::{granted_ref, input_json};
use crate::limits::Limits;
use crate::record::{RunOutcome, RunRecord};
use crate::source::{ModuleSource, SourceError};
use crate::module::{CallLimiter, CallState, LoadedModule, ToolPre};
use crate::toolset::{BoundTool, ToolSet};
use crate::PolicyError;


/// Host-wide settings, fixed at start-up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where precompiled artefacts are cached; `None` compiles in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Limits for tools whose binding does not set them.
    pub defaults: Limits,
    /// Upper bounds for any restaurant's limits.
    pub maxima: Limits,
    /// Epoch tick: the resolution of the deadline.
    pub epoch_tick: Duration,
    /// Tool calls running at once (pooling allocator slots); beyond it calls fail with `Busy`.
    pub max_concurrent_calls: u32,
    /// Native stack for wasm code, engine-wide (wasmtime cannot set it per store). Kept well
    /// below the policies' own stack in linear memory (2 MiB, `policies/guests/.cargo/config.toml`)
    /// so unbounded recursion ends here, as a clean `StackOverflow`.
    pub max_wasm_stack: usize,
    /// Compiled modules kept in memory.
    pub max_modules: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            defaults: Limits::DEFAULT,
            maxima: Limits::MAXIMA,
            epoch_tick: Duration::from_millis(1),
            max_concurrent_calls: 256,
            max_wasm_stack: 256 << 10,
            max_modules: 256,
        }
    }
}

/// The result of one tool call: the output or error, and the record of the run (absent when
/// nothing ran, e.g. an unknown tool).
#[derive(Debug)]
pub struct ToolRun {
    pub result: Result<ToolOutput, PolicyError>,
    pub record: Option<RunRecord>,
}

/// Runs tool policies. Create one per process and share it (`Arc<PolicyHost>`); every method
/// takes `&self` and may be called from many threads. Calls are CPU-bound and synchronous (at
/// most the deadline): async callers should use `spawn_blocking`.
pub struct PolicyHost {
    engine: Engine,
    linker: Linker<CallState>,
    config: HostConfig,
    fingerprint: String,
    cache: Option<ArtifactCache>,
    source: Arc<dyn ModuleSource>,
    modules: Mutex<HashMap<String, Arc<LoadedModule>>>,
    sets: Mutex<HashMap<String, Arc<ToolSet>>>,
    /// One lock per module being loaded, so a call asking for a module a warm-up is compiling
    /// waits for that compile instead of starting a second one.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Modules compiled from wasm / deserialised from the precompiled cache since start.
    compiled: AtomicU64,
    deserialised: AtomicU64,
    _ticker: EpochTicker,
}

/// How the host's modules were loaded since it started (for `/metrics` and to check that a
/// warm-up left nothing for a call to load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadStats {
    /// Compiled from wasm (the slow path: seconds for a large component).
    pub compiled: u64,
    /// Deserialised from a precompiled artefact on disk.
    pub deserialised: u64,
    /// Modules held in memory now.
    pub resident: usize,
}

impl LoadStats {
    /// Loads of either kind.
    pub fn loads(&self) -> u64 {
        self.compiled + self.deserialised
    }
}

impl PolicyHost {
    /// Builds the engine, the linker and the epoch ticker.
    ///
    /// # Errors
    /// [`PolicyError::Internal`] when wasmtime rejects the configuration (e.g. the pooling
    /// allocator cannot reserve address space) or the cache directory cannot be created.
    pub fn new(config: HostConfig, source: Arc<dyn ModuleSource>) -> Result<Self, PolicyError> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_concurrent_calls.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(usize::try_from(config.maxima.memory_bytes).unwrap_or(usize::MAX));
        let mut wt = Config::new();
        wt.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wt).map_err(|e| PolicyError::Internal(format!("wasmtime engine: {e}")))?;
        let fingerprint = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("wasmtime-{:016x}", h.finish())
        };
        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &fingerprint).map_err(|e| {
                PolicyError::Internal(format!("policy cache directory {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let linker = Linker::new(&engine);
        let ticker = EpochTicker::start(&engine, config.epoch_tick);
        Ok(Self {
            engine,
            linker,
            config,
            fingerprint,
            cache,
            source,
            modules: Mutex::new(HashMap::new()),
            sets: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            deserialised: AtomicU64::new(0),
            _ticker: ticker,
        })
    }

    /// Identifies the engine configuration (precompiled artefacts are only valid for it).
    pub fn engine_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Module loads so far and modules in memory.
    pub fn load_stats(&self) -> LoadStats {
        LoadStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            deserialised: self.deserialised.load(Ordering::Relaxed),
            resident: self.modules.lock().map(|m| m.len()).unwrap_or(0),
        }
    }

    /// Whether the module with this hash is in memory (a call using it loads nothing).
    pub fn is_loaded(&self, sha256: &str) -> bool {
        self.modules.lock().is_ok_and(|m| m.contains_key(sha256))
    }

    /// The module with this hash: from memory, else fetched from the source, verified against
    /// the hash, then deserialised from the disk cache or compiled (and cached).
    ///
    /// # Errors
    /// Not found, hash mismatch, not a valid tool component, or ABI mismatch.
    pub fn load(&self, sha256: &str) -> Result<Arc<LoadedModule>, PolicyError> {
        if let Some(m) = self.modules.lock().map_err(poisoned)?.get(sha256) {
            return Ok(m.clone());
        }
        let gate = self
            .loading
            .lock()
            .map_err(poisoned)?
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let loaded = {
            let _one_at_a_time = gate.lock().map_err(poisoned)?;
            // Whoever held the gate may have loaded it meanwhile.
            let done = self.modules.lock().map_err(poisoned)?.get(sha256).cloned();
            match done {
                Some(m) => Ok(m),
                None => self.fetch_and_install(sha256),
            }
        };
        if let Ok(mut loading) = self.loading.lock() {
            // The last one out removes the gate, so the map stays bounded by loads in flight.
            if Arc::strong_count(&gate) <= 2 {
                loading.remove(sha256);
            }
        }
        loaded
    }

    fn fetch_and_install(&self, sha256: &str) -> Result<Arc<LoadedModule>, PolicyError> {
        let bytes = self.source.fetch(sha256).map_err(|e| match e {
            SourceError::NotFound => PolicyError::ModuleNotFound(sha256.to_owned()),
            SourceError::Unavailable(reason) => PolicyError::Source { sha256: sha256.to_owned(), reason },
        })?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            tracing::error!(expected = sha256, actual = %actual, "policy module refused: bytes do not match their hash");
            return Err(PolicyError::HashMismatch { expected: sha256.to_owned(), actual });
        }
        self.install(sha256, &bytes)
    }

    /// Loads a module from its bytes (local runs: `pulsara policy run <module.wasm>`).
    ///
    /// # Errors
    /// As [`PolicyHost::load`].
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, PolicyError> {
        let sha256 = sha256_hex(bytes);
        if let Some(m) = self.modules.lock().map_err(poisoned)?.get(&sha256) {
            return Ok(m.clone());
        }
        self.install(&sha256, bytes)
    }

    fn install(&self, sha256: &str, bytes: &[u8]) -> Result<Arc<LoadedModule>, PolicyError> {
        let started = Instant::now();
        let (component, from_cache) = self.compile(sha256, bytes)?;
        let invalid = |reason: String| PolicyError::InvalidModule { sha256: sha256.to_owned(), reason };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| invalid(format!("{e}")))?;
        let pre = ToolPre::new(instance_pre).map_err(|e| invalid(format!("{e}")))?;
        let module = LoadedModule { sha256: sha256.to_owned(), pre };
        let abi = self.abi_version(&module)?;
        if abi != ABI_VERSION {
            return Err(PolicyError::AbiMismatch { sha256: sha256.to_owned(), module: abi, host: ABI_VERSION });
        }
        tracing::info!(module = sha256, from_cache, ms = started.elapsed().as_millis() as u64, "policy module loaded");
        let module = Arc::new(module);
        let mut modules = self.modules.lock().map_err(poisoned)?;
        if modules.len() >= self.config.max_modules {
            // Content-addressed and cheap to reload: drop an arbitrary entry.
            if let Some(k) = modules.keys().next().cloned() {
                modules.remove(&k);
            }
        }
        Ok(modules.entry(sha256.to_owned()).or_insert(module).clone())
    }

    /// Deserialises the precompiled artefact when the cache has a valid one, else compiles.
    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<(Component, bool), PolicyError> {
        if let Some(cache) = &self.cache {
            if let Some(artefact) = cache.get(sha256) {
                match deserialize(&self.engine, &artefact) {
                    Ok(c) => {
                        self.deserialised.fetch_add(1, Ordering::Relaxed);
                        return Ok((c, true));
                    }
                    Err(e) => tracing::warn!(module = sha256, error = %e, "precompiled artefact unusable; recompiling"),
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PolicyError::InvalidModule { sha256: sha256.to_owned(), reason: format!("{e}") })?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(cache) = &self.cache {
            match component.serialize() {
                Ok(artefact) => {
                    if let Err(e) = cache.put(sha256, &artefact) {
                        tracing::warn!(module = sha256, error = %e, "could not cache precompiled policy");
                    }
                }
                Err(e) => tracing::warn!(module = sha256, error = %e, "could not serialise compiled policy"),
            }
        }
        Ok((component, false))
    }

    fn abi_version(&self, module: &LoadedModule) -> Result<u32, PolicyError> {
        let limits = self.config.defaults;
        let mut store = self.store(&limits);
        let tool = module.pre.instantiate(&mut store).map_err(|e| classify(e, &store, &limits))?;
        tool.call_abi_version(&mut store).map_err(|e| PolicyError::InvalidModule {
            sha256: module.sha256.clone(),
            reason: format!("abi-version export failed: {}", classify(e, &store, &limits)),
        })
    }

    fn store(&self, limits: &Limits) -> Store<CallState> {
        let state = CallState {
            limiter: CallLimiter {
                memory_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                memory_denied: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Fresh store: setting fuel cannot fail with fuel enabled in the engine config.
        let _ = store.set_fuel(limits.fuel);
        let tick = self.config.epoch_tick.as_micros().max(1);
        let ticks = (u128::from(limits.deadline_ms) * 1000).div_ceil(tick).max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store
    }

    /// Runs `module` once on `input` (a JSON `ToolInput`) under `limits`, checks the output's
    /// size, shape and actions (against `granted_actions`), and records the run.
    pub fn run_module(
        &self,
        module: &LoadedModule,
        tool: &str,
        input: &str,
        limits: Limits,
        granted_actions: &[String],
    ) -> ToolRun {
        let started = Instant::now();
        let mut fuel_used = 0;
        let result = if input.len() > limits.input_bytes {
            Err(PolicyError::InputTooLarge { bytes: input.len(), max: limits.input_bytes })
        } else {
            let mut store = self.store(&limits);
            let raw = match module.pre.instantiate(&mut store) {
                Ok(instance) => instance.call_run(&mut store, input).map_err(|e| classify(e, &store, &limits)),
                Err(e) => Err(classify(e, &store, &limits)),
            };
            fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
            raw.and_then(|answer| match answer {
                Ok(raw) => check_output(&raw, limits.output_bytes, granted_actions).map_err(|p| match p {
                    OutputProblem::TooLarge { bytes, max } => PolicyError::OutputTooLarge { bytes, max },
                    OutputProblem::NotJson(e) => PolicyError::InvalidOutput(e),
                    OutputProblem::UngrantedAction(kind) => PolicyError::UngrantedAction { kind: kind.to_owned() },
                }),
                Err(message) => Err(PolicyError::Guest(message)),
            })
        };
        let duration = started.elapsed();
        match &result {
            Ok(out) => tracing::debug!(
                module = %module.sha256, tool, fuel_used, us = duration.as_micros() as u64, actions = out.actions.len(),
                "policy run"
            ),
            Err(PolicyError::Guest(message)) => {
                tracing::info!(module = %module.sha256, tool, fuel_used, %message, "policy refused the call")
            }
            Err(e) => tracing::warn!(
                module = %module.sha256, tool, fuel_used, kind = e.kind(), cause = %e, "policy run failed"
            ),
        }
        let record = RawValue::from_string(input.to_owned()).ok().map(|raw_input| RunRecord {
            module_sha256: module.sha256.clone(),
            tool: tool.to_owned(),
            input: raw_input,
            granted_actions: granted_actions.to_vec(),
            limits,
            outcome: RunOutcome::from_result(&result),
            fuel_used,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        });
        ToolRun { result, record }
    }

    /// Re-runs a recorded run with the same module, input, limits and grant.
    ///
    /// # Errors
    /// When the module cannot be loaded (the run's own failure is in the returned run).
    pub fn replay(&self, record: &RunRecord) -> Result<ToolRun, PolicyError> {
        let module = self.load(&record.module_sha256)?;
        Ok(self.run_module(&module, &record.tool, record.input.get(), record.limits, &record.granted_actions))
    }

    /// The restaurant's tool set for a new call: resolved from `config.tools` (modules loaded,
    /// limits clamped), shared by calls while the configuration version and bindings are
    /// unchanged. A call keeps the `Arc` it started with, so swapping the set never disturbs it.
    pub fn tool_set(&self, config: &RestaurantConfig) -> Arc<ToolSet> {
        if let Ok(sets) = self.sets.lock() {
            if let Some(set) = sets.get(&config.id) {
                if set.matches(config) {
                    return set.clone();
                }
            }
        }
        let tools = config
            .tools
            .iter()
            .map(|binding| {
                let module = self.resolve(&binding.module_sha256).and_then(|sha| self.load(&sha));
                if let Err(e) = &module {
                    tracing::error!(restaurant = %config.id, tool = %binding.name, cause = %e, "policy module unavailable");
                }
                let limits = Limits::resolve(&binding.limits, &self.config.defaults, &self.config.maxima);
                (binding.name.clone(), BoundTool { binding: binding.clone(), module, limits })
            })
            .collect();
        let set = Arc::new(ToolSet::new(config, tools));
        if let Ok(mut sets) = self.sets.lock() {
            // A call still on an older configuration gets its own set but never displaces the
            // newer one that new calls use.
            let newer_cached = sets.get(&config.id).is_some_and(|s| s.config_version > config.version);
            if !newer_cached {
                sets.insert(config.id.clone(), set.clone());
            }
        }
        set
    }

    fn resolve(&self, reference: &str) -> Result<String, PolicyError> {
        match pulsara_policy_abi::manifest::builtin_name(reference) {
            Some(name) => self
                .source
                .resolve_builtin(name)
                .ok_or_else(|| PolicyError::ModuleNotFound(format!("{reference} (not in the module manifest)"))),
            None => Ok(reference.to_ascii_lowercase()),
        }
    }

    /// Forgets the cached tool set of `restaurant_id` (`policy.updated`): the next call resolves
    /// it afresh; calls in flight keep theirs.
    pub fn invalidate(&self, restaurant_id: &str) {
        if let Ok(mut sets) = self.sets.lock() {
            sets.remove(restaurant_id);
        }
    }

    /// Runs tool `tool` of `set` for one call: builds the input from the call context and only
    /// the data the tool's grant allows (opening hours as facts at the context's `local_time`),
    /// then [`PolicyHost::run_module`].
    pub fn call(
        &self,
        set: &ToolSet,
        config: &RestaurantConfig,
        kb: &KnowledgeBase,
        tool: &str,
        params: Value,
        context: CallContext,
    ) -> ToolRun {
        let Some(bound) = set.get(tool) else {
            return ToolRun { result: Err(PolicyError::UnknownTool(tool.to_owned())), record: None };
        };
        let module = match &bound.module {
            Ok(m) => m.clone(),
            Err(e) => return ToolRun { result: Err(e.clone()), record: None },
        };
        let hours = match crate::hours::granted(&bound.binding.grants, config, &context.local_time) {
            Ok(h) => h,
            Err(e) => {
                let error = PolicyError::Internal(format!("opening hours for the tool input: {e}"));
                return ToolRun { result: Err(error), record: None };
            }
        };
        let data = granted_ref(&bound.binding.grants, config, kb, hours.as_ref());
        let json = match input_json(tool, &params, &context, data) {
            Ok(j) => j,
            Err(e) => return ToolRun { result: Err(PolicyError::Internal(format!("encoding input: {e}"))), record: None },
        };
        self.run_module(&module, tool, &json, bound.limits, &bound.binding.grants.actions)
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artefact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artefact` was produced by `Component::serialize` of this process's engine
    // configuration (the cache directory is keyed by its fingerprint) and its digest was checked
    // against the one written with it (`ArtifactCache::get`), so it is our own compiler output,
    // unaltered. wasmtime additionally checks the header and engine compatibility.
    unsafe { Component::deserialize(engine, artefact) }
}

fn poisoned<T>(_: T) -> PolicyError {
    PolicyError::Internal("policy host lock poisoned".into())
}

/// Maps a wasmtime failure to the policy error that explains it.
fn classify(e: wasmtime::Error, store: &Store<CallState>, limits: &Limits) -> PolicyError {
    let memory_denied = store.data().limiter.memory_denied;
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => PolicyError::OutOfFuel { fuel: limits.fuel },
            Trap::Interrupt => PolicyError::Timeout { deadline_ms: limits.deadline_ms },
            Trap::StackOverflow => PolicyError::StackOverflow,
            _ if memory_denied => PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes },
            other => PolicyError::Crashed(format!("{other}")),
        };
    }
    if memory_denied {
        return PolicyError::MemoryLimit { limit_bytes: limits.memory_bytes };
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        return PolicyError::Busy(format!("{e}"));
    }
    PolicyError::Crashed(format!("{e}"))
}

/// Advances the engine's epoch every tick until the engine or the ticker is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("policy-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
                std::thread::sleep(tick);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the policy epoch ticker; deadlines fall back to fuel");
        }
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
