//! The ports the bridge depends on, as small async traits, so the pieces that land in other parts of
//! the project plug in without the bridge knowing them:
//!
//! - [`ConfigSource`]: restaurant configuration and knowledge base (the dashboard client with its
//!   cache implements it; [`FileConfigSource`] and [`MemoryConfigSource`] serve files / tests).
//! - [`ToolRunner`]: executes an agent's `client_tool_call` (the wasm policy host implements it).
//! - [`CallSink`]: receives the finished [`CallRecord`] (the durable outbox implements it;
//!   [`JsonLinesSink`] and [`MemorySink`] serve files / tests).
//!
//! Every trait is object safe (`Arc<dyn …>`); errors are typed and never carry secrets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pulsara_core::call_record::CallRecord;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use tokio::io::AsyncWriteExt;

pub use pulsara_policy_abi::{Action, EarlierResult};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("restaurant {0:?} is not known")]
    NotFound(String),
    #[error("configuration for {id:?} is unavailable: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("configuration for {id:?} is invalid: {reason}")]
    Invalid { id: String, reason: String },
}

/// Where the bridge gets a restaurant's configuration and knowledge base.
///
/// Implementations cache; calls in flight keep the `Arc` they got at call start, so an update
/// never disturbs a running call.
#[async_trait]
pub trait ConfigSource: Send + Sync + 'static {
    /// # Errors
    /// [`ConfigError::NotFound`] for an unknown id, `Unavailable` when the source cannot answer.
    async fn restaurant(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError>;
    /// # Errors
    /// As [`ConfigSource::restaurant`].
    async fn knowledge_base(&self, id: &str) -> Result<Arc<KnowledgeBase>, ConfigError>;
    /// The restaurant read again from its origin, past any cache: for a call routed on a newer
    /// version than the one [`ConfigSource::restaurant`] returned.
    ///
    /// # Errors
    /// As [`ConfigSource::restaurant`].
    async fn restaurant_fresh(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError> {
        self.restaurant(id).await
    }
}

/// One restaurant's configuration and knowledge base, as a call holds them.
pub type Restaurant = (Arc<RestaurantConfig>, Arc<KnowledgeBase>);

/// An in-memory source (tests, the demo after seeding).
#[derive(Default)]
pub struct MemoryConfigSource {
    inner: Mutex<HashMap<String, Restaurant>>,
}

impl MemoryConfigSource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a restaurant (calls in flight keep the old version).
    pub fn insert(&self, cfg: RestaurantConfig, kb: KnowledgeBase) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(cfg.id.clone(), (Arc::new(cfg), Arc::new(kb)));
    }

    pub fn ids(&self) -> Vec<String> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = map.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn get(&self, id: &str) -> Option<(Arc<RestaurantConfig>, Arc<KnowledgeBase>)> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }
}

#[async_trait]
impl ConfigSource for MemoryConfigSource {
    async fn restaurant(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError> {
        self.get(id)
            .map(|(c, _)| c)
            .ok_or_else(|| ConfigError::NotFound(id.to_owned()))
    }
    async fn knowledge_base(&self, id: &str) -> Result<Arc<KnowledgeBase>, ConfigError> {
        self.get(id)
            .map(|(_, k)| k)
            .ok_or_else(|| ConfigError::NotFound(id.to_owned()))
    }
}

/// Reads `<dir>/<id>/restaurant.json` and `<dir>/<id>/knowledge_base.json`.
///
/// [`FileConfigSource::load`] reads and validates every restaurant at start-up, so a broken file
/// stops the process with a clear message instead of failing the first call.
pub struct FileConfigSource {
    dir: PathBuf,
    mem: MemoryConfigSource,
}

impl FileConfigSource {
    /// Loads every sub-directory of `dir` that holds a `restaurant.json`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the file and the JSON error; `Unavailable` if `dir` cannot
    /// be read.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let dir = dir.as_ref().to_path_buf();
        let mem = MemoryConfigSource::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| ConfigError::Unavailable {
            id: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.join("restaurant.json").is_file() {
                continue;
            }
            let (cfg, kb) = load_one(&path)?;
            mem.insert(cfg, kb);
        }
        Ok(Self { dir, mem })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ids(&self) -> Vec<String> {
        self.mem.ids()
    }

    /// Every loaded restaurant, for seeding another source.
    pub fn all(&self) -> Vec<(Arc<RestaurantConfig>, Arc<KnowledgeBase>)> {
        self.ids()
            .iter()
            .filter_map(|id| self.mem.get(id))
            .collect()
    }
}

/// Reads one restaurant directory.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the file on any read or parse problem, or when the knowledge
/// base belongs to another restaurant.
pub fn load_one(path: &Path) -> Result<(RestaurantConfig, KnowledgeBase), ConfigError> {
    let read = |name: &str| -> Result<Vec<u8>, ConfigError> {
        let p = path.join(name);
        std::fs::read(&p).map_err(|e| ConfigError::Invalid {
            id: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cfg: RestaurantConfig =
        serde_json::from_slice(&read("restaurant.json")?).map_err(|e| ConfigError::Invalid {
            id: path.join("restaurant.json").display().to_string(),
            reason: e.to_string(),
        })?;
    let kb: KnowledgeBase = if path.join("knowledge_base.json").is_file() {
        serde_json::from_slice(&read("knowledge_base.json")?).map_err(|e| ConfigError::Invalid {
            id: path.join("knowledge_base.json").display().to_string(),
            reason: e.to_string(),
        })?
    } else {
        KnowledgeBase {
            restaurant_id: cfg.id.clone(),
            version: 0,
            ..Default::default()
        }
    };
    if kb.restaurant_id != cfg.id {
        return Err(ConfigError::Invalid {
            id: cfg.id.clone(),
            reason: format!("knowledge_base.json belongs to {:?}", kb.restaurant_id),
        });
    }
    if cfg.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ConfigError::Invalid {
            id: cfg.id.clone(),
            reason: format!("unknown time zone {:?}", cfg.time_zone),
        });
    }
    Ok((cfg, kb))
}

#[async_trait]
impl ConfigSource for FileConfigSource {
    async fn restaurant(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError> {
        self.mem.restaurant(id).await
    }
    async fn knowledge_base(&self, id: &str) -> Result<Arc<KnowledgeBase>, ConfigError> {
        self.mem.knowledge_base(id).await
    }
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// What a tool sees of the call.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub restaurant: Arc<RestaurantConfig>,
    pub kb: Arc<KnowledgeBase>,
    pub call_sid: String,
    pub caller: String,
    /// The restaurant's local time now, RFC 3339 with offset (policies have no clock of their own).
    pub local_time: String,
    /// Successful tool runs earlier in this call, oldest first.
    pub earlier: Vec<EarlierResult>,
}

/// A tool's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOutcome {
    /// Text for `client_tool_result.result`.
    pub result: String,
    pub is_error: bool,
    /// Effects for the bridge to perform (already checked against the tool's grant by the runner).
    pub actions: Vec<Action>,
    pub fuel_used: Option<u64>,
    pub module_sha256: Option<String>,
    /// The structured output, kept for later tools' `earlier` context.
    pub output: Option<pulsara_policy_abi::ToolOutput>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("tool {0:?} is not configured for this restaurant")]
    UnknownTool(String),
    #[error("tool {tool:?} timed out after {ms} ms")]
    Timeout { tool: String, ms: u64 },
    #[error("tool {tool:?} failed: {reason}")]
    Failed { tool: String, reason: String },
}

impl ToolError {
    /// A sentence the agent can speak around, without internals.
    pub fn speakable(&self) -> String {
        match self {
            ToolError::UnknownTool(_) => {
                "That is not something I can do on this call. Offer to transfer the caller to staff."
                    .to_owned()
            }
            ToolError::Timeout { .. } | ToolError::Failed { .. } => {
                "The system could not complete that just now. Apologise briefly and offer to try \
                 again or to transfer the caller to staff."
                    .to_owned()
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::UnknownTool(_) => "unknown_tool",
            ToolError::Timeout { .. } => "timeout",
            ToolError::Failed { .. } => "failed",
        }
    }
}

/// Executes `client_tool_call`s. The bridge applies its own per-call timeout around `run`.
#[async_trait]
pub trait ToolRunner: Send + Sync + 'static {
    /// # Errors
    /// [`ToolError`] when the tool is unknown or fails; the bridge turns it into an `is_error`
    /// result with [`ToolError::speakable`].
    async fn run(
        &self,
        ctx: &ToolContext,
        tool_name: &str,
        params: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError>;
}

/// A runner with no tools: every call is [`ToolError::UnknownTool`].
pub struct NoTools;

#[async_trait]
impl ToolRunner for NoTools {
    async fn run(
        &self,
        _ctx: &ToolContext,
        tool_name: &str,
        _params: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError> {
        Err(ToolError::UnknownTool(tool_name.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------------
// Call records
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("call record sink I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("call record could not be serialised: {0}")]
    Encode(String),
    #[error("call record sink is unavailable: {0}")]
    Unavailable(String),
}

/// Receives finished call records.
#[async_trait]
pub trait CallSink: Send + Sync + 'static {
    /// # Errors
    /// [`SinkError`] when the record could not be stored; the bridge logs and counts it.
    async fn deliver(&self, record: CallRecord) -> Result<(), SinkError>;
    /// Receives a voicemail's recording event (Twilio's recording parameters, marked as in
    /// [`pulsara_dashboard::voicemail`]) for the call `call_sid` of `restaurant_id`.
    ///
    /// # Errors
    /// As [`CallSink::deliver`].
    async fn voicemail(
        &self,
        call_sid: &str,
        restaurant_id: &str,
        event: serde_json::Value,
    ) -> Result<(), SinkError>;
    /// Makes delivered records durable (called at shutdown).
    ///
    /// # Errors
    /// As [`CallSink::deliver`].
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Appends one JSON document per line to a file.
pub struct JsonLinesSink {
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl JsonLinesSink {
    /// Opens (creating, appending) `path`.
    ///
    /// # Errors
    /// I/O errors opening the file.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        if let Some(parent) = path.as_ref().parent() {
            if !parent.as_os_str().is_empty() {
                tokio::fs::create_dir_all(parent).await?;
            }
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(Self {
            file: tokio::sync::Mutex::new(file),
        })
    }
}

#[async_trait]
impl CallSink for JsonLinesSink {
    async fn deliver(&self, record: CallRecord) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(&record).map_err(|e| SinkError::Encode(e.to_string()))?;
        line.push(b'\n');
        let mut f = self.file.lock().await;
        f.write_all(&line).await?;
        Ok(())
    }
    async fn voicemail(
        &self,
        call_sid: &str,
        restaurant_id: &str,
        event: serde_json::Value,
    ) -> Result<(), SinkError> {
        let doc = serde_json::json!({"voicemail_for": call_sid, "restaurant_id": restaurant_id, "event": event});
        let mut line = doc.to_string().into_bytes();
        line.push(b'\n');
        self.file.lock().await.write_all(&line).await?;
        Ok(())
    }
    async fn flush(&self) -> Result<(), SinkError> {
        let mut f = self.file.lock().await;
        f.flush().await?;
        f.sync_data().await?;
        Ok(())
    }
}

/// Keeps records in memory (tests, the demo's report), bounded to `cap` (oldest dropped).
pub struct MemorySink {
    records: Mutex<std::collections::VecDeque<CallRecord>>,
    /// `(call_sid, restaurant_id, event)` of each voicemail, bounded like the records.
    voicemails: Mutex<std::collections::VecDeque<(String, String, serde_json::Value)>>,
    cap: usize,
    notify: tokio::sync::Notify,
}

impl MemorySink {
    pub fn new(cap: usize) -> Self {
        Self {
            records: Mutex::new(Default::default()),
            voicemails: Mutex::new(Default::default()),
            cap: cap.max(1),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub fn records(&self) -> Vec<CallRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Voicemail events received, oldest first.
    pub fn voicemails(&self) -> Vec<(String, String, serde_json::Value)> {
        self.voicemails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn get(&self, call_sid: &str) -> Option<CallRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.call_sid == call_sid)
            .cloned()
    }

    /// Waits until the record for `call_sid` arrives or `timeout` passes.
    pub async fn wait_for(
        &self,
        call_sid: &str,
        timeout: std::time::Duration,
    ) -> Option<CallRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.get(call_sid) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get(call_sid);
            }
        }
    }
}

#[async_trait]
impl CallSink for MemorySink {
    async fn deliver(&self, record: CallRecord) -> Result<(), SinkError> {
        {
            let mut q = self.records.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.cap {
                q.pop_front();
            }
            q.push_back(record);
        }
        self.notify.notify_waiters();
        Ok(())
    }
    async fn voicemail(
        &self,
        call_sid: &str,
        restaurant_id: &str,
        event: serde_json::Value,
    ) -> Result<(), SinkError> {
        let mut q = self.voicemails.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.cap {
            q.pop_front();
        }
        q.push_back((call_sid.to_owned(), restaurant_id.to_owned(), event));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_source_reads_the_example_restaurants() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants");
        let src = FileConfigSource::load(&dir).unwrap();
        let ids = src.ids();
        assert!(ids.contains(&"trattoria-roma".to_owned()), "{ids:?}");
        let cfg = src.restaurant("trattoria-roma").await.unwrap();
        assert_eq!(cfg.time_zone, "Europe/Rome");
        assert_eq!(
            src.knowledge_base("trattoria-roma")
                .await
                .unwrap()
                .restaurant_id,
            cfg.id
        );
        assert_eq!(
            src.restaurant("nope").await.unwrap_err(),
            ConfigError::NotFound("nope".into())
        );
    }

    #[tokio::test]
    async fn file_source_names_the_broken_file() {
        let tmp = std::env::temp_dir().join(format!("pulsara-cfg-{}", std::process::id()));
        let r = tmp.join("broken");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("restaurant.json"), b"{\"id\": 3}").unwrap();
        let err = FileConfigSource::load(&tmp).err().unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(err.to_string().contains("restaurant.json"), "{err}");
    }

    #[tokio::test]
    async fn json_lines_sink_appends_records() {
        let path = std::env::temp_dir().join(format!("pulsara-sink-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = JsonLinesSink::open(&path).await.unwrap();
        for sid in ["CA1", "CA2"] {
            sink.deliver(CallRecord {
                call_sid: sid.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        sink.flush().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let sids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<CallRecord>(l).unwrap().call_sid)
            .collect();
        assert_eq!(sids, ["CA1", "CA2"]);
    }

    #[tokio::test]
    async fn memory_sink_is_bounded_and_waitable() {
        let sink = Arc::new(MemorySink::new(2));
        let s2 = sink.clone();
        let waiter =
            tokio::spawn(
                async move { s2.wait_for("CA3", std::time::Duration::from_secs(5)).await },
            );
        for sid in ["CA1", "CA2", "CA3"] {
            sink.deliver(CallRecord {
                call_sid: sid.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        assert_eq!(waiter.await.unwrap().unwrap().call_sid, "CA3");
        assert!(
            sink.get("CA1").is_none(),
            "oldest record dropped at the cap"
        );
    }
}
