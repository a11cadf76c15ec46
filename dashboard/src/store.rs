//! The embedded dashboard's storage: one SQLite file (WAL) holding restaurants, knowledge bases,
//! policy modules, call records, lifecycle events, ElevenLabs post-call payloads, API keys, request
//! nonces and webhook subscriptions.
//!
//! Why SQLite: a new user runs Pulsara with nothing external, and a single file survives restarts.
//! The connection sits behind a mutex; every operation is a short transaction, but one that may
//! fsync, or wait up to the 5 s busy timeout for another writer of the file. So every method
//! blocks its caller: async code calls it through `tokio::task::spawn_blocking` (the API
//! handlers in [`crate::server`] and [`crate::webhook_out`] do), never on a tokio worker.
//!
//! Post-call data and call records can arrive in either order: each arrival stores itself and then
//! merges with whatever half is already present (see [`Store::put_call`] and
//! [`Store::put_post_call`]).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use pulsara_core::agent::ToolSpec;
use pulsara_core::call_record::CallRecord;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// Storage failures. Messages name the operation, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dashboard database error during {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("stored JSON for {what} is invalid: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
}

pub(crate) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// Outcome of storing a call record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Duplicate,
}

/// A registered receiver of the dashboard's Standard Webhooks.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    pub url: String,
    /// `whsec_…` secret used to sign deliveries.
    pub secret: pulsara_core::secret::Secret,
}

impl std::fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Handle to the embedded dashboard database; cheap to clone. Its methods block (see the module
/// docs).
/// One restaurant's agent sync: generations requested and done (pending while
/// `requested > done`), failed attempts since the last success, when the next is due (unix s).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentSyncState {
    pub restaurant_id: String,
    pub requested: i64,
    pub done: i64,
    pub attempts: i64,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS restaurants (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS phone_numbers (
    e164 TEXT PRIMARY KEY,
    restaurant_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS knowledge_bases (
    restaurant_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    kb_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_tools (
    sha256 TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_sync (
    restaurant_id TEXT PRIMARY KEY,
    requested INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    call_sid TEXT PRIMARY KEY,
    restaurant_id TEXT NOT NULL,
    conversation_id TEXT,
    record_json TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_conv ON calls(conversation_id);
CREATE TABLE IF NOT EXISTS call_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid TEXT NOT NULL,
    event_json TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS call_events_sid ON call_events(call_sid);
CREATE TABLE IF NOT EXISTS post_calls (
    conversation_id TEXT PRIMARY KEY,
    call_sid TEXT,
    payload_json TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS post_calls_sid ON post_calls(call_sid);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    label TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    rotated_to TEXT
);
CREATE TABLE IF NOT EXISTS nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE TABLE IF NOT EXISTS webhooks (
    url TEXT PRIMARY KEY,
    secret TEXT NOT NULL
);
"#;

/// Upper bound on remembered nonces; beyond it requests are refused rather than memory growing.
pub const MAX_NONCES: i64 = 1_000_000;

impl Store {
    /// Opens (creating if needed) the database file in WAL mode.
    ///
    /// # Errors
    /// The file cannot be opened or the schema cannot be created.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(db("open dashboard database"))?;
        Self::init(conn, true)
    }

    /// An in-memory database (tests, throwaway demos).
    ///
    /// # Errors
    /// SQLite cannot allocate the database.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(db("open in-memory database"))?;
        Self::init(conn, false)
    }

    fn init(conn: Connection, wal: bool) -> Result<Self, StoreError> {
        if wal {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db("enable WAL"))?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db("set synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db("set busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(db("create schema"))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back), so a
        // poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- restaurants -------------------------------------------------------------------------

    /// Inserts or replaces a restaurant exactly as given (seeding). Phone numbers are re-indexed.
    ///
    /// # Errors
    /// A number already belongs to another restaurant, or the database fails.
    pub fn upsert_restaurant(&self, cfg: &RestaurantConfig, now: i64) -> Result<(), StoreError> {
        let json = serde_json::to_string(cfg).map_err(|source| StoreError::Json {
            what: cfg.id.clone(),
            source,
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db("begin"))?;
        for n in &cfg.phone_numbers {
            let owner: Option<String> = tx
                .query_row(
                    "SELECT restaurant_id FROM phone_numbers WHERE e164 = ?1",
                    [n],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read phone number"))?;
            if let Some(owner) = owner.filter(|o| o != &cfg.id) {
                return Err(StoreError::Invalid(format!(
                    "number {n} of restaurant {:?} already belongs to {owner:?}",
                    cfg.id
                )));
            }
        }
        tx.execute(
            "INSERT INTO restaurants (id, version, config_json, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET version = ?2, config_json = ?3, updated_at = ?4",
            params![cfg.id, cfg.version as i64, json, now],
        )
        .map_err(db("write restaurant"))?;
        tx.execute(
            "DELETE FROM phone_numbers WHERE restaurant_id = ?1",
            [&cfg.id],
        )
        .map_err(db("clear phone numbers"))?;
        for n in &cfg.phone_numbers {
            tx.execute(
                "INSERT INTO phone_numbers (e164, restaurant_id) VALUES (?1, ?2)",
                params![n, cfg.id],
            )
            .map_err(db("write phone number"))?;
        }
        tx.commit().map_err(db("commit restaurant"))
    }

    /// Replaces a restaurant's configuration with `cfg`, setting its version to one more than the
    /// stored one (admin edit). Returns the stored configuration.
    ///
    /// # Errors
    /// Unknown restaurant, id mismatch, number conflict or database failure.
    pub fn update_restaurant(
        &self,
        mut cfg: RestaurantConfig,
        now: i64,
    ) -> Result<RestaurantConfig, StoreError> {
        let current = self
            .restaurant(&cfg.id)?
            .ok_or_else(|| StoreError::NotFound(format!("restaurant {:?}", cfg.id)))?;
        cfg.version = current.version + 1;
        self.upsert_restaurant(&cfg, now)?;
        Ok(cfg)
    }

    pub fn restaurant(&self, id: &str) -> Result<Option<RestaurantConfig>, StoreError> {
        let json: Option<String> = self
            .lock()
            .query_row(
                "SELECT config_json FROM restaurants WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read restaurant"))?;
        json.map(|j| parse(&j, id)).transpose()
    }

    pub fn restaurant_by_number(&self, e164: &str) -> Result<Option<RestaurantConfig>, StoreError> {
        let id: Option<String> = self
            .lock()
            .query_row(
                "SELECT restaurant_id FROM phone_numbers WHERE e164 = ?1",
                [e164],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read phone number"))?;
        match id {
            Some(id) => self.restaurant(&id),
            None => Ok(None),
        }
    }

    pub fn restaurant_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT id FROM restaurants ORDER BY id")
            .map_err(db("list"))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(db("list restaurants"))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(db("list restaurants"))
    }

    // ---- knowledge bases ---------------------------------------------------------------------

    pub fn upsert_knowledge_base(&self, kb: &KnowledgeBase) -> Result<(), StoreError> {
        let json = serde_json::to_string(kb).map_err(|source| StoreError::Json {
            what: kb.restaurant_id.clone(),
            source,
        })?;
        self.lock()
            .execute(
                "INSERT INTO knowledge_bases (restaurant_id, version, kb_json) VALUES (?1, ?2, ?3)
                 ON CONFLICT(restaurant_id) DO UPDATE SET version = ?2, kb_json = ?3",
                params![kb.restaurant_id, kb.version as i64, json],
            )
            .map_err(db("write knowledge base"))?;
        Ok(())
    }

    /// Replaces a knowledge base, bumping its version past the stored one.
    pub fn update_knowledge_base(
        &self,
        mut kb: KnowledgeBase,
    ) -> Result<KnowledgeBase, StoreError> {
        if self.restaurant(&kb.restaurant_id)?.is_none() {
            return Err(StoreError::NotFound(format!(
                "restaurant {:?}",
                kb.restaurant_id
            )));
        }
        let current = self
            .knowledge_base(&kb.restaurant_id)?
            .map(|k| k.version)
            .unwrap_or(0);
        kb.version = current + 1;
        self.upsert_knowledge_base(&kb)?;
        Ok(kb)
    }

    pub fn knowledge_base(&self, restaurant_id: &str) -> Result<Option<KnowledgeBase>, StoreError> {
        let json: Option<String> = self
            .lock()
            .query_row(
                "SELECT kb_json FROM knowledge_bases WHERE restaurant_id = ?1",
                [restaurant_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read knowledge base"))?;
        json.map(|j| parse(&j, restaurant_id)).transpose()
    }

    // ---- policies ----------------------------------------------------------------------------

    /// Stores module bytes under their sha256 (computed here, never trusted from the caller).
    pub fn put_policy(&self, name: &str, bytes: &[u8]) -> Result<String, StoreError> {
        let sha = pulsara_core::crypto::sha256_hex(bytes);
        self.lock()
            .execute(
                "INSERT INTO policies (sha256, name, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT(sha256) DO NOTHING",
                params![sha, name, bytes],
            )
            .map_err(db("write policy"))?;
        Ok(sha)
    }

    pub fn policy(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock()
            .query_row(
                "SELECT bytes FROM policies WHERE sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read policy"))
    }

    /// Stores the tool specification (`tool.json`) of the module `sha256`, replacing any earlier
    /// one. The specification is validated by the caller.
    pub fn put_policy_tool(&self, sha256: &str, spec: &ToolSpec) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).map_err(|source| StoreError::Json {
            what: sha256.to_owned(),
            source,
        })?;
        self.lock()
            .execute(
                "INSERT INTO policy_tools (sha256, spec_json) VALUES (?1, ?2)
                 ON CONFLICT(sha256) DO UPDATE SET spec_json = ?2",
                params![sha256, json],
            )
            .map_err(db("write policy tool"))?;
        Ok(())
    }

    pub fn policy_tool(&self, sha256: &str) -> Result<Option<ToolSpec>, StoreError> {
        let json: Option<String> = self
            .lock()
            .query_row(
                "SELECT spec_json FROM policy_tools WHERE sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read policy tool"))?;
        json.map(|j| parse(&j, sha256)).transpose()
    }

    /// The restaurants with a tool on module `sha256`.
    pub fn restaurants_using(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for id in self.restaurant_ids()? {
            if let Some(cfg) = self.restaurant(&id)? {
                if cfg.tools.iter().any(|t| t.module_sha256 == sha256) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    // ---- agent sync ----------------------------------------------------------------------------

    /// Asks for the restaurant's agent to be brought to its specification: the request
    /// generation goes up and the job retries from now. Returns the new generation.
    pub fn request_agent_sync(&self, restaurant_id: &str, now: i64) -> Result<i64, StoreError> {
        self.lock()
            .query_row(
                "INSERT INTO agent_sync (restaurant_id, requested, next_at, updated_at)
                 VALUES (?1, 1, ?2, ?2)
                 ON CONFLICT(restaurant_id) DO UPDATE
                   SET requested = requested + 1, next_at = ?2, attempts = 0, updated_at = ?2
                 RETURNING requested",
                params![restaurant_id, now],
                |r| r.get(0),
            )
            .map_err(db("request agent sync"))
    }

    /// Syncs due at `now`: requested past what was done, and not waiting out a backoff.
    pub fn due_agent_syncs(&self, now: i64) -> Result<Vec<AgentSyncState>, StoreError> {
        Ok(self
            .agent_syncs()?
            .into_iter()
            .filter(|s| s.requested > s.done && s.next_at <= now)
            .collect())
    }

    /// The earliest `next_at` of a pending sync.
    pub fn next_agent_sync_at(&self) -> Result<Option<i64>, StoreError> {
        self.lock()
            .query_row(
                "SELECT MIN(next_at) FROM agent_sync WHERE requested > done",
                [],
                |r| r.get(0),
            )
            .map_err(db("read agent sync"))
    }

    /// Every restaurant's sync state, by restaurant id.
    pub fn agent_syncs(&self) -> Result<Vec<AgentSyncState>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(
                "SELECT restaurant_id, requested, done, attempts, next_at, last_error, updated_at
                 FROM agent_sync ORDER BY restaurant_id",
            )
            .map_err(db("list agent sync"))?;
        let rows = st
            .query_map([], |r| {
                Ok(AgentSyncState {
                    restaurant_id: r.get(0)?,
                    requested: r.get(1)?,
                    done: r.get(2)?,
                    attempts: r.get(3)?,
                    next_at: r.get(4)?,
                    last_error: r.get(5)?,
                    updated_at: r.get(6)?,
                })
            })
            .map_err(db("list agent sync"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list agent sync"))
    }

    /// Records a successful sync of generation `generation` (later requests stay pending).
    pub fn agent_sync_done(
        &self,
        restaurant_id: &str,
        generation: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE agent_sync SET done = MAX(done, ?2), attempts = 0, last_error = NULL,
                   updated_at = ?3 WHERE restaurant_id = ?1",
                params![restaurant_id, generation, now],
            )
            .map_err(db("record agent sync"))?;
        Ok(())
    }

    /// Records a failed attempt; the next is due at `next_at`.
    pub fn agent_sync_failed(
        &self,
        restaurant_id: &str,
        error: &str,
        next_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "UPDATE agent_sync SET attempts = attempts + 1, last_error = ?2, next_at = ?3,
                   updated_at = ?4 WHERE restaurant_id = ?1",
                params![restaurant_id, error, next_at, now],
            )
            .map_err(db("record agent sync"))?;
        Ok(())
    }

    /// Writes the result of a sync (agent id and synced state) into the restaurant as version
    /// `expected + 1`, only if it is still at version `expected`: an edit made meanwhile wins,
    /// and has requested its own sync. Returns the stored configuration when written.
    pub fn record_agent_synced(
        &self,
        cfg: &RestaurantConfig,
        expected: u64,
        now: i64,
    ) -> Result<Option<RestaurantConfig>, StoreError> {
        let mut out = cfg.clone();
        out.version = expected + 1;
        let json = serde_json::to_string(&out).map_err(|source| StoreError::Json {
            what: cfg.id.clone(),
            source,
        })?;
        // One statement: the version check and the write cannot be separated by an edit. The
        // write-back changes only agent fields, never the phone numbers.
        let n = self
            .lock()
            .execute(
                "UPDATE restaurants SET version = ?2, config_json = ?3, updated_at = ?4
                 WHERE id = ?1 AND version = ?5",
                params![cfg.id, out.version as i64, json, now, expected as i64],
            )
            .map_err(db("write restaurant"))?;
        Ok((n == 1).then_some(out))
    }

    // ---- calls -------------------------------------------------------------------------------

    /// Stores a call record once per `call_sid` (the idempotency key). A pending post-call
    /// payload for the same call is merged in.
    pub fn put_call(&self, record: &CallRecord, now: i64) -> Result<PutOutcome, StoreError> {
        let mut value = serde_json::to_value(record).map_err(|source| StoreError::Json {
            what: record.call_sid.clone(),
            source,
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db("begin"))?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM calls WHERE call_sid = ?1",
                [&record.call_sid],
                |_| Ok(()),
            )
            .optional()
            .map_err(db("read call"))?
            .is_some();
        if exists {
            return Ok(PutOutcome::Duplicate);
        }
        let pending: Option<String> = tx
            .query_row(
                "SELECT payload_json FROM post_calls
                 WHERE call_sid = ?1 OR (?2 IS NOT NULL AND conversation_id = ?2)
                 ORDER BY received_at LIMIT 1",
                params![record.call_sid, record.elevenlabs_conversation_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read post-call"))?;
        if let Some(p) = pending {
            let payload: Value = parse(&p, &record.call_sid)?;
            merge_post_call(&mut value, &payload);
        }
        // A voicemail whose recording callback arrived before the record.
        for e in &events_of(&tx, &record.call_sid)? {
            if let Some(vm) = crate::voicemail::from_event(e) {
                crate::voicemail::merge(&mut value, &vm);
            }
        }
        let conv = value
            .get("elevenlabs_conversation_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        tx.execute(
            "INSERT INTO calls (call_sid, restaurant_id, conversation_id, record_json, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.call_sid,
                record.restaurant_id,
                conv,
                value.to_string(),
                now
            ],
        )
        .map_err(db("write call"))?;
        tx.commit().map_err(db("commit call"))?;
        Ok(PutOutcome::Created)
    }

    /// The stored record (with post-call data merged when it has arrived), as JSON.
    pub fn call(&self, call_sid: &str) -> Result<Option<Value>, StoreError> {
        let json: Option<String> = self
            .lock()
            .query_row(
                "SELECT record_json FROM calls WHERE call_sid = ?1",
                [call_sid],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("read call"))?;
        json.map(|j| parse(&j, call_sid)).transpose()
    }

    /// Stored call records, oldest first; optionally one restaurant's.
    pub fn calls(&self, restaurant_id: Option<&str>, limit: u32) -> Result<Vec<Value>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(
                "SELECT record_json FROM calls WHERE (?1 IS NULL OR restaurant_id = ?1)
                 ORDER BY received_at, rowid LIMIT ?2",
            )
            .map_err(db("list calls"))?;
        let rows = st
            .query_map(params![restaurant_id, limit.min(10_000)], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db("list calls"))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(parse(&r.map_err(db("list calls"))?, "call")?);
        }
        Ok(out)
    }

    pub fn call_count(&self) -> Result<u64, StoreError> {
        self.lock()
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db("count calls"))
    }

    /// Stores a call's lifecycle event; a recording event also puts its voicemail on the call
    /// record when that has arrived (else [`Store::put_call`] merges it later).
    pub fn add_call_event(
        &self,
        call_sid: &str,
        event: &Value,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db("begin"))?;
        tx.execute(
            "INSERT INTO call_events (call_sid, event_json, received_at) VALUES (?1, ?2, ?3)",
            params![call_sid, event.to_string(), now],
        )
        .map_err(db("write call event"))?;
        if let Some(vm) = crate::voicemail::from_event(event) {
            let json: Option<String> = tx
                .query_row(
                    "SELECT record_json FROM calls WHERE call_sid = ?1",
                    [call_sid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("read call"))?;
            if let Some(j) = json {
                let mut record: Value = parse(&j, call_sid)?;
                crate::voicemail::merge(&mut record, &vm);
                tx.execute(
                    "UPDATE calls SET record_json = ?2 WHERE call_sid = ?1",
                    params![call_sid, record.to_string()],
                )
                .map_err(db("write call"))?;
            }
        }
        tx.commit().map_err(db("commit call event"))?;
        Ok(())
    }

    /// A call's lifecycle events, oldest first.
    pub fn call_events(&self, call_sid: &str) -> Result<Vec<Value>, StoreError> {
        events_of(&self.lock(), call_sid)
    }

    /// Stores an ElevenLabs post-call payload and merges it into the call record if that has
    /// already arrived (by conversation id or call sid). Returns the call sid merged into, if any.
    pub fn put_post_call(&self, payload: &Value, now: i64) -> Result<Option<String>, StoreError> {
        let conv = post_call_conversation_id(payload).ok_or_else(|| {
            StoreError::Invalid("post-call payload has no data.conversation_id".into())
        })?;
        let sid = post_call_call_sid(payload);
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(db("begin"))?;
        tx.execute(
            "INSERT INTO post_calls (conversation_id, call_sid, payload_json, received_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(conversation_id) DO UPDATE SET call_sid = ?2, payload_json = ?3",
            params![conv, sid, payload.to_string(), now],
        )
        .map_err(db("write post-call"))?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT call_sid, record_json FROM calls
                 WHERE conversation_id = ?1 OR (?2 IS NOT NULL AND call_sid = ?2) LIMIT 1",
                params![conv, sid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db("read call"))?;
        let merged = match row {
            Some((call_sid, json)) => {
                let mut value: Value = parse(&json, &call_sid)?;
                merge_post_call(&mut value, payload);
                tx.execute(
                    "UPDATE calls SET record_json = ?2, conversation_id = ?3 WHERE call_sid = ?1",
                    params![call_sid, value.to_string(), conv],
                )
                .map_err(db("merge post-call"))?;
                Some(call_sid)
            }
            None => None,
        };
        tx.commit().map_err(db("commit post-call"))?;
        Ok(merged)
    }

    // ---- nonces ------------------------------------------------------------------------------

    /// Remembers `(key_id, nonce)`; `false` when it was already seen (a replay). Entries older
    /// than `window_secs` are pruned.
    pub fn remember_nonce(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
        window_secs: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        conn.execute("DELETE FROM nonces WHERE seen_at < ?1", [now - window_secs])
            .map_err(db("prune nonces"))?;
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM nonces", [], |r| r.get(0))
            .map_err(db("count nonces"))?;
        if count >= MAX_NONCES {
            return Err(StoreError::Invalid(
                "too many requests within the replay window".into(),
            ));
        }
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO nonces (key_id, nonce, seen_at) VALUES (?1, ?2, ?3)",
                params![key_id, nonce, now],
            )
            .map_err(db("write nonce"))?;
        Ok(n == 1)
    }

    // ---- webhooks ----------------------------------------------------------------------------

    pub fn add_webhook(&self, sub: &WebhookSubscription) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO webhooks (url, secret) VALUES (?1, ?2)
                 ON CONFLICT(url) DO UPDATE SET secret = ?2",
                params![sub.url, sub.secret.expose()],
            )
            .map_err(db("write webhook"))?;
        Ok(())
    }

    pub fn webhooks(&self) -> Result<Vec<WebhookSubscription>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT url, secret FROM webhooks ORDER BY url")
            .map_err(db("list"))?;
        let rows = st
            .query_map([], |r| {
                Ok(WebhookSubscription {
                    url: r.get(0)?,
                    secret: pulsara_core::secret::Secret::new(r.get::<_, String>(1)?),
                })
            })
            .map_err(db("list webhooks"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list webhooks"))
    }
}

/// The stored events of `call_sid`, oldest first; on a plain connection or inside a transaction
/// (`put_call` merges a voicemail that arrived before its record).
fn events_of(conn: &rusqlite::Connection, call_sid: &str) -> Result<Vec<Value>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT event_json FROM call_events WHERE call_sid = ?1 ORDER BY id")
        .map_err(db("read call events"))?;
    let rows = st
        .query_map([call_sid], |r| r.get::<_, String>(0))
        .map_err(db("read call events"))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(parse(&r.map_err(db("read call events"))?, call_sid)?);
    }
    Ok(out)
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::Json {
        what: what.to_owned(),
        source,
    })
}

/// `data.conversation_id` of an ElevenLabs post-call payload.
pub fn post_call_conversation_id(payload: &Value) -> Option<String> {
    payload
        .pointer("/data/conversation_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The Twilio CallSid a post-call payload refers to, where ElevenLabs or our bridge put one:
/// `data.metadata.phone_call.call_sid`, or the `call_sid` dynamic variable the bridge sends at
/// initiation.
pub fn post_call_call_sid(payload: &Value) -> Option<String> {
    [
        "/data/metadata/phone_call/call_sid",
        "/data/conversation_initiation_client_data/dynamic_variables/call_sid",
        "/data/call_sid",
    ]
    .iter()
    .find_map(|p| payload.pointer(p).and_then(Value::as_str))
    .filter(|s| !s.is_empty())
    .map(str::to_owned)
}

/// Merges an ElevenLabs post-call payload into a stored record (JSON): the raw data goes under
/// `elevenlabs_post_call`, the conversation id is filled, and ElevenLabs' summary is kept beside
/// ours in `summary.elevenlabs_summary`.
pub fn merge_post_call(record: &mut Value, payload: &Value) {
    let Some(obj) = record.as_object_mut() else {
        return;
    };
    if let Some(conv) = post_call_conversation_id(payload) {
        obj.insert("elevenlabs_conversation_id".into(), Value::String(conv));
    }
    let data = payload.get("data").cloned().unwrap_or(Value::Null);
    let el_summary = data.pointer("/analysis/transcript_summary").cloned();
    let call_successful = data.pointer("/analysis/call_successful").cloned();
    obj.insert("elevenlabs_post_call".into(), data);
    if let Some(s) = el_summary {
        let summary = obj
            .entry("summary")
            .or_insert_with(|| Value::Object(Default::default()));
        if !summary.is_object() {
            *summary = Value::Object(Default::default());
        }
        if let Some(m) = summary.as_object_mut() {
            m.insert("elevenlabs_summary".into(), s);
            if let Some(cs) = call_successful {
                m.insert("elevenlabs_call_successful".into(), cs);
            }
        }
    }
}
