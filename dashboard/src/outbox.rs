//! The durable outbox: call records and notifications are committed to a local SQLite file (its
//! own file, separate from the embedded dashboard's database) in one transaction *before*
//! anything is sent, then delivered by [`run`]:
//!
//! - **Lanes**: entries are delivered strictly in order within a lane (`<restaurant id>` for call
//!   records, `email:<id>` / `sms:<id>` for notifications, so an SMTP outage never holds up
//!   records); lanes progress independently and concurrently.
//! - **Retries**: transient failures (transport errors, 5xx, 408, 429, SMTP 4xx) back off
//!   exponentially with jitter up to a cap and are retried for as long as it takes: a dashboard
//!   down for hours only delays delivery.
//! - **Parking**: a permanent rejection (any other 4xx, SMTP 5xx) parks the entry with its error;
//!   parked entries are listed ([`Outbox::list`]), counted in the metrics and can be re-queued
//!   ([`Outbox::requeue`]); they are never dropped silently.
//! - **Exactly once at the dashboard**: an entry is removed only after the dashboard acknowledged
//!   it. If the process dies between the dashboard storing a record and the outbox removing it,
//!   the record is sent again after restart with the same `Idempotency-Key` (its call sid) and the
//!   dashboard answers "duplicate". Emails and SMS have no idempotency at SMTP/Twilio, so in that
//!   narrow window they are at-least-once.
//! - **Unconfigured channels**: an email with no `SMTP_URL` (or an SMS with no Twilio
//!   credentials) is parked at once with the reason `not configured: …` and counted in
//!   `pulsara_outbox_parked_unconfigured`, instead of being retried forever (which reads as a
//!   stuck outbox). When the process starts with the channel configured, [`run`] puts those
//!   entries back in their lanes. Restaurants' email settings live in the dashboard and change at
//!   run time, so a missing `SMTP_URL` is not a reason to refuse calls at start-up.
//! - **Storage failures** (disk full, I/O error) surface as [`OutboxError::DiskFull`] /
//!   [`OutboxError::Storage`] with the path, and count in `enqueue_errors`. A producer that must
//!   not lose what the outbox refused keeps it in a [`MemoryQueue`]: bounded, retried into the
//!   outbox in order, with its own metrics (`pulsara_outbox_memory_*`).
//! - **One database thread**: the connection belongs to a thread of its own, fed closures over a
//!   bounded queue. The delivery loop awaits it, so a slow disk (an fsync, a write waiting out
//!   another process's lock) delays deliveries, never the tokio workers that pump calls' audio.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::Serialize;
use tokio::sync::Notify;

use pulsara_net::metrics::{Family, ScrapeCollector};

use crate::client::{ClientError, DashboardClient};
use crate::notify::{EmailJob, SendError, SmsJob, SmtpSender, TwilioSms};

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A serialised CallRecord for `POST /v1/calls`.
    CallRecord,
    /// A serialised [`EmailJob`].
    Email,
    /// A serialised [`SmsJob`].
    Sms,
    /// `{"call_sid": …, "event": {…}}` for `POST /v1/calls/{call_sid}/events` (a voicemail's
    /// recording callback).
    CallEvent,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::CallRecord => "call_record",
            EntryKind::Email => "email",
            EntryKind::Sms => "sms",
            EntryKind::CallEvent => "call_event",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "call_record" => Some(EntryKind::CallRecord),
            "email" => Some(EntryKind::Email),
            "sms" => Some(EntryKind::Sms),
            "call_event" => Some(EntryKind::CallEvent),
            _ => None,
        }
    }
}

/// An entry to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: EntryKind,
    /// Ordering lane (see module docs).
    pub lane: String,
    /// Unique per logical message; a second enqueue with the same key is ignored.
    pub idempotency_key: String,
    pub payload: String,
}

/// A stored entry.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub kind: EntryKind,
    pub lane: String,
    pub idempotency_key: String,
    #[serde(skip)]
    pub payload: String,
    pub status: String,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path} is full (disk full or size limit reached): {source}; free disk space — nothing was queued")]
    DiskFull {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox {path}: {op} failed: {source}")]
    Storage {
        path: String,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("outbox entry {0} not found")]
    NotFound(i64),
    #[error("outbox {path}: {reason}; restart the process")]
    Thread { path: String, reason: String },
}

/// Retry timing.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Lanes delivered at once.
    pub concurrency: usize,
    /// Longest idle sleep between polls (new entries wake the loop at once).
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            concurrency: 8,
            poll: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`: `base · 2^attempts` capped, with jitter in [½, 1].
    pub fn backoff(&self, attempts: u32, rng: &mut impl Rng) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempts.min(20));
        let d = exp.min(self.cap);
        d.mul_f64(rng.gen_range(0.5..=1.0))
    }
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    parked: AtomicU64,
    enqueue_errors: AtomicU64,
}

/// How the reason of an entry parked for an unconfigured channel starts.
pub const UNCONFIGURED_PREFIX: &str = "not configured: ";

/// Point-in-time numbers for `/metrics` and `pulsara outbox list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutboxStats {
    /// Pending entries (not parked).
    pub depth: u64,
    pub parked: u64,
    /// Age of the oldest pending entry, seconds (0 when empty).
    pub oldest_age_secs: f64,
    pub delivered_total: u64,
    pub failed_attempts_total: u64,
    pub parked_total: u64,
    pub enqueue_errors_total: u64,
    /// Parked because their channel is not configured (part of `parked`).
    pub parked_unconfigured: u64,
    /// What the producer holds in memory because the outbox refused it (filled by the producer
    /// that owns the [`MemoryQueue`]; zero from [`Outbox::stats`]).
    pub memory: MemoryStats,
}

/// The outbox's families, its memory queue's included, for [`OutboxCollector`].
fn outbox_families() -> Vec<Family<OutboxStats>> {
    vec![
        Family::gauge("pulsara_outbox_depth", "Entries waiting for delivery (not parked).", |s| s.depth as f64),
        Family::gauge("pulsara_outbox_parked", "Entries parked: rejected for good or for an unconfigured channel.", |s| s.parked as f64),
        Family::gauge(
            "pulsara_outbox_oldest_age_seconds",
            "Age of the oldest entry waiting for delivery (0 when none).",
            |s| s.oldest_age_secs,
        ),
        Family::counter("pulsara_outbox_delivered_total", "Entries delivered.", |s| s.delivered_total as f64),
        Family::counter("pulsara_outbox_failed_attempts_total", "Delivery attempts that failed (retried with backoff).", |s| s.failed_attempts_total as f64),
        Family::counter("pulsara_outbox_parked_total", "Entries parked since start.", |s| s.parked_total as f64),
        Family::counter("pulsara_outbox_enqueue_errors_total", "Entries the outbox could not store.", |s| s.enqueue_errors_total as f64),
        Family::gauge(
            "pulsara_outbox_parked_unconfigured",
            "Parked entries whose channel is not configured (part of pulsara_outbox_parked).",
            |s| s.parked_unconfigured as f64,
        ),
        Family::gauge("pulsara_outbox_memory_held", "Units held in memory because the outbox refused them.", |s| s.memory.held as f64),
        Family::gauge("pulsara_outbox_memory_held_bytes", "Bytes of the units held in memory.", |s| s.memory.held_bytes as f64),
        Family::gauge("pulsara_outbox_memory_capacity", "Units the memory queue may hold.", |s| s.memory.capacity as f64),
        Family::gauge(
            "pulsara_outbox_memory_oldest_age_seconds",
            "Age of the oldest unit held in memory (0 when none).",
            |s| s.memory.oldest_age_secs,
        ),
        Family::counter("pulsara_outbox_memory_held_total", "Units the outbox refused that were held in memory.", |s| s.memory.held_total as f64),
        Family::counter("pulsara_outbox_memory_persisted_total", "Held units committed to the outbox later.", |s| s.memory.persisted_total as f64),
        Family::counter("pulsara_outbox_memory_full_total", "Times a unit found the memory queue at its bound.", |s| s.memory.full_total as f64),
        Family::counter(
            "pulsara_outbox_direct_deliveries_total",
            "Units delivered straight to the dashboard, SMTP or Twilio instead of through the outbox.",
            |s| s.memory.direct_total as f64,
        ),
        Family::counter("pulsara_outbox_lost_total", "Units that could be neither kept nor delivered.", |s| s.memory.lost_total as f64),
    ]
}

/// The outbox's families for the process registry, read from `stats` at every scrape. A read
/// that fails is logged and counted in `pulsara_outbox_stats_errors_total`, and that scrape
/// carries no outbox family.
pub struct OutboxCollector {
    stats: ScrapeCollector<OutboxStats>,
    errors: prometheus::IntCounter,
}

impl OutboxCollector {
    /// `stats` blocks on the outbox's SQLite thread: gather the registry off the async workers.
    ///
    /// # Errors
    /// Never for these fixed names; the type is the registry's.
    pub fn new(
        stats: impl Fn() -> Result<OutboxStats, OutboxError> + Send + Sync + 'static,
    ) -> prometheus::Result<Self> {
        let errors = prometheus::IntCounter::new(
            "pulsara_outbox_stats_errors_total",
            "Scrapes for which the outbox's statistics could not be read.",
        )?;
        let counted = errors.clone();
        let stats = ScrapeCollector::new(outbox_families(), &[], move || match stats() {
            Ok(s) => Some(s),
            Err(e) => {
                counted.inc();
                tracing::warn!(error = %e, "outbox statistics unavailable");
                None
            }
        })?;
        Ok(OutboxCollector { stats, errors })
    }
}

impl prometheus::core::Collector for OutboxCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.stats.desc();
        d.extend(self.errors.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.stats.collect();
        families.extend(self.errors.collect());
        families
    }
}

/// Handle to the outbox; cheap to clone.
///
/// One thread owns the SQLite connection: every operation is a closure sent to it over a bounded
/// channel ([`DB_QUEUE`]). The delivery loop ([`Outbox::deliver_due`], [`Outbox::flush`], [`run`])
/// and the `*_async` methods await its answer, so a commit's fsync, or a write waiting out a
/// lock for up to the 5 s busy timeout, never holds a tokio worker (the one that pumps a call's
/// audio). The synchronous methods block their caller until the answer comes: call them from
/// CLI tools, tests and `spawn_blocking`, not from async code on a worker.
#[derive(Clone)]
pub struct Outbox {
    db: DbThread,
    path: Arc<PathBuf>,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
}

/// Operations waiting for the outbox's database thread at most; further callers wait to queue
/// theirs (async callers without holding their worker).
pub const DB_QUEUE: usize = 256;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    lane TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_lane ON outbox(status, lane, id);
"#;

const COLS: &str = "id, kind, lane, idempotency_key, payload, status, attempts, created_at_ms, next_attempt_at_ms, last_error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let kind: String = r.get(1)?;
    Ok(OutboxEntry {
        id: r.get(0)?,
        kind: EntryKind::parse(&kind).unwrap_or(EntryKind::CallRecord),
        lane: r.get(2)?,
        idempotency_key: r.get(3)?,
        payload: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        created_at_ms: r.get(7)?,
        next_attempt_at_ms: r.get(8)?,
        last_error: r.get(9)?,
    })
}

/// Wall-clock milliseconds (the outbox persists absolute times).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Maps a SQLite failure of `op` on the outbox at `path` (disk full is its own case).
fn storage<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> OutboxError + 'a {
    move |source| {
        let path = path.display().to_string();
        if matches!(source.sqlite_error_code(), Some(ErrorCode::DiskFull)) {
            OutboxError::DiskFull { path, source }
        } else {
            OutboxError::Storage { path, op, source }
        }
    }
}

/// What the database thread owns: the connection, and its file's path for error messages.
struct Db {
    conn: Connection,
    path: PathBuf,
}

/// Pending, oldest pending, parked and parked-unconfigured counts ([`Outbox::stats`]).
type Counts = (i64, Option<i64>, i64, i64);

/// The statements, run on the database thread.
impl Db {
    fn page_count(&self) -> Result<u64, OutboxError> {
        self.conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(storage(&self.path, "read page_count"))
    }

    fn set_max_pages(&self, pages: u64) -> Result<u64, OutboxError> {
        let size = self.page_count()?;
        self.conn
            .query_row(
                &format!("PRAGMA max_page_count = {}", pages.max(size)),
                [],
                |r| r.get(0),
            )
            .map_err(storage(&self.path, "set max_page_count"))
    }

    fn enqueue(&mut self, entries: &[NewEntry], now_ms: i64) -> Result<usize, OutboxError> {
        let err = |op| storage(&self.path, op);
        let tx = self.conn.transaction().map_err(err("begin"))?;
        let mut n = 0;
        for e in entries {
            n += tx
                .execute(
                    "INSERT OR IGNORE INTO outbox (kind, lane, idempotency_key, payload, created_at_ms, next_attempt_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![e.kind.as_str(), e.lane, e.idempotency_key, e.payload, now_ms],
                )
                .map_err(err("insert"))?;
        }
        tx.commit().map_err(err("commit"))?;
        Ok(n)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let err = || storage(&self.path, "select due");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLS} FROM outbox o WHERE status = 'pending'
                   AND id = (SELECT MIN(id) FROM outbox WHERE status = 'pending' AND lane = o.lane)
                   AND next_attempt_at_ms <= ?1
                 ORDER BY id LIMIT ?2"
            ))
            .map_err(err())?;
        let rows = st
            .query_map(params![now_ms, limit as i64], row)
            .map_err(err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err())
    }

    fn next_due(&self) -> Result<Option<i64>, OutboxError> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at_ms) FROM outbox o WHERE status = 'pending'
                   AND id = (SELECT MIN(id) FROM outbox WHERE status = 'pending' AND lane = o.lane)",
                [],
                |r| r.get(0),
            )
            .map_err(storage(&self.path, "select next due"))
    }

    fn delete(&self, id: i64) -> Result<(), OutboxError> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map_err(storage(&self.path, "delete delivered"))?;
        Ok(())
    }

    fn retry(&self, id: i64, next_attempt_at_ms: i64, error: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_attempt_at_ms, error],
            )
            .map_err(storage(&self.path, "schedule retry"))?;
        Ok(())
    }

    fn park(&self, id: i64, error: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET status = 'parked', attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map_err(storage(&self.path, "park"))?;
        Ok(())
    }

    fn requeue(&self, id: i64, now_ms: i64) -> Result<usize, OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at_ms = ?2 WHERE id = ?1 AND status = 'parked'",
                params![id, now_ms],
            )
            .map_err(storage(&self.path, "requeue"))
    }

    fn list(&self, status: Option<&str>) -> Result<Vec<OutboxEntry>, OutboxError> {
        let err = || storage(&self.path, "list");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLS} FROM outbox WHERE (?1 IS NULL OR status = ?1) ORDER BY id"
            ))
            .map_err(err())?;
        let rows = st.query_map(params![status], row).map_err(err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err())
    }

    fn get(&self, id: i64) -> Result<Option<OutboxEntry>, OutboxError> {
        self.conn
            .query_row(
                &format!("SELECT {COLS} FROM outbox WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
            .map_err(storage(&self.path, "get"))
    }

    fn counts(&self) -> Result<Counts, OutboxError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE status = 'pending'),
                        MIN(created_at_ms) FILTER (WHERE status = 'pending'),
                        COUNT(*) FILTER (WHERE status = 'parked'),
                        COUNT(*) FILTER (WHERE status = 'parked' AND substr(last_error, 1, ?2) = ?1)
                 FROM outbox",
                params![UNCONFIGURED_PREFIX, UNCONFIGURED_PREFIX.len() as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(storage(&self.path, "stats"))
    }

    fn requeue_unconfigured(&self, kind: EntryKind, now_ms: i64) -> Result<usize, OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at_ms = ?3
                 WHERE status = 'parked' AND kind = ?1 AND substr(last_error, 1, ?4) = ?2",
                params![
                    kind.as_str(),
                    UNCONFIGURED_PREFIX,
                    now_ms,
                    UNCONFIGURED_PREFIX.len() as i64
                ],
            )
            .map_err(storage(&self.path, "requeue unconfigured"))
    }
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The thread that owns the outbox's connection, and the bounded queue of work sent to it.
/// The thread ends, closing the connection, when the last handle is dropped.
#[derive(Clone)]
struct DbThread {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl DbThread {
    fn spawn(db: Db) -> std::io::Result<Self> {
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<Job>(DB_QUEUE);
        std::thread::Builder::new()
            .name("pulsara-outbox-db".into())
            .spawn(move || {
                let mut db = db;
                while let Some(job) = rx.blocking_recv() {
                    job(&mut db);
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread and awaits its result; `None` when the thread is gone. A panic in
    /// `f` is raised again here; the thread keeps serving (an open transaction rolls back as it
    /// unwinds).
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(|| f(db))));
        });
        self.jobs.send(job).await.ok()?;
        match rx.await.ok()? {
            Ok(r) => Some(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// [`DbThread::call`], blocking the calling thread until the answer comes.
    fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> R + Send + 'static,
    ) -> Option<R> {
        // Unconstrained: a caller inside a task must not be refused by the task's exhausted
        // cooperative budget, which only refills when the task yields (this loop never does).
        block_on(tokio::task::unconstrained(self.call(f)))
    }
}

/// Polls `fut` to completion on this thread, parking it between wake-ups. Enough for a channel
/// send and a oneshot, which need no runtime: synchronous callers may wait on the database
/// thread whether or not they run inside one.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl Outbox {
    /// Opens (creating) the outbox file in WAL mode with full fsync on commit, and starts the
    /// thread that owns it.
    ///
    /// # Errors
    /// The file cannot be opened or initialised, or the thread cannot be started.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let err = |op| storage(path, op);
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        // FULL: a committed entry survives power loss, not just a process kill.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("set synchronous"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err("set busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(err("create schema"))?;
        let db = DbThread::spawn(Db {
            conn,
            path: path.to_owned(),
        })
        .map_err(|e| OutboxError::Thread {
            path: path.display().to_string(),
            reason: format!("cannot start its database thread: {e}"),
        })?;
        Ok(Self {
            db,
            path: Arc::new(path.to_owned()),
            counters: Arc::default(),
            wake: Arc::default(),
        })
    }

    fn stopped(&self) -> OutboxError {
        OutboxError::Thread {
            path: self.path.display().to_string(),
            reason: "its database thread has stopped".into(),
        }
    }

    /// Runs `f` on the database thread, blocking the caller until it answers.
    fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<R, OutboxError> + Send + 'static,
    ) -> Result<R, OutboxError> {
        self.db
            .call_blocking(f)
            .unwrap_or_else(|| Err(self.stopped()))
    }

    /// Runs `f` on the database thread and awaits its answer.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<R, OutboxError> + Send + 'static,
    ) -> Result<R, OutboxError> {
        self.db.call(f).await.unwrap_or_else(|| Err(self.stopped()))
    }

    /// Test/ops hook: caps the file at `pages` SQLite pages (never below its current size), so
    /// writes that need more fail with SQLITE_FULL exactly as on a full disk. Returns the cap
    /// in effect; `set_max_pages(1)` caps the file where it is.
    ///
    /// # Errors
    /// The outbox file failed.
    pub fn set_max_pages(&self, pages: u64) -> Result<u64, OutboxError> {
        self.blocking(move |db| db.set_max_pages(pages))
    }

    /// Commits all `entries` in one transaction (all or nothing). Entries whose idempotency key
    /// is already queued are skipped. Returns the number newly queued. Blocking.
    ///
    /// # Errors
    /// Disk full or another storage failure; nothing is queued then.
    pub fn enqueue(&self, entries: &[NewEntry], now_ms: i64) -> Result<usize, OutboxError> {
        let entries = entries.to_vec();
        let res = self.blocking(move |db| db.enqueue(&entries, now_ms));
        self.enqueued(res)
    }

    /// [`Outbox::enqueue`] for async callers.
    ///
    /// # Errors
    /// As [`Outbox::enqueue`].
    pub async fn enqueue_async(
        &self,
        entries: Vec<NewEntry>,
        now_ms: i64,
    ) -> Result<usize, OutboxError> {
        let res = self.call(move |db| db.enqueue(&entries, now_ms)).await;
        self.enqueued(res)
    }

    fn enqueued(&self, res: Result<usize, OutboxError>) -> Result<usize, OutboxError> {
        match &res {
            Ok(_) => self.wake.notify_one(),
            Err(e) => {
                self.counters.enqueue_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "outbox enqueue failed");
            }
        }
        res
    }

    /// The head entry of every lane that is due at `now_ms`, oldest lanes first. Blocking.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.blocking(move |db| db.due(now_ms, limit))
    }

    async fn due_async(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.call(move |db| db.due(now_ms, limit)).await
    }

    /// The earliest `next_attempt_at_ms` among lane heads.
    async fn next_due(&self) -> Result<Option<i64>, OutboxError> {
        self.call(|db| db.next_due()).await
    }

    /// Removes a delivered entry. Blocking.
    pub fn mark_delivered(&self, id: i64) -> Result<(), OutboxError> {
        self.blocking(move |db| db.delete(id))?;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn mark_delivered_async(&self, id: i64) -> Result<(), OutboxError> {
        self.call(move |db| db.delete(id)).await?;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a failed attempt and schedules the next. Blocking.
    pub fn mark_retry(
        &self,
        id: i64,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        let error = error.to_owned();
        self.blocking(move |db| db.retry(id, next_attempt_at_ms, &error))?;
        self.counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn mark_retry_async(
        &self,
        id: i64,
        next_attempt_at_ms: i64,
        error: String,
    ) -> Result<(), OutboxError> {
        self.call(move |db| db.retry(id, next_attempt_at_ms, &error))
            .await?;
        self.counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Parks an entry with its error. Blocking.
    pub fn park(&self, id: i64, error: &str) -> Result<(), OutboxError> {
        let error = error.to_owned();
        self.blocking(move |db| db.park(id, &error))?;
        self.counters.parked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn park_async(&self, id: i64, error: String) -> Result<(), OutboxError> {
        self.call(move |db| db.park(id, &error)).await?;
        self.counters.parked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Puts a parked entry back in its lane (after fixing what made it fail). Blocking.
    pub fn requeue(&self, id: i64, now_ms: i64) -> Result<(), OutboxError> {
        let n = self.blocking(move |db| db.requeue(id, now_ms))?;
        if n == 0 {
            return Err(OutboxError::NotFound(id));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Entries, optionally only those with `status` (`pending` / `parked`), oldest first.
    /// Blocking.
    pub fn list(&self, status: Option<&str>) -> Result<Vec<OutboxEntry>, OutboxError> {
        let status = status.map(str::to_owned);
        self.blocking(move |db| db.list(status.as_deref()))
    }

    /// One entry by id. Blocking.
    pub fn get(&self, id: i64) -> Result<Option<OutboxEntry>, OutboxError> {
        self.blocking(move |db| db.get(id))
    }

    /// Depth, parked count, oldest age and counters. Blocking.
    pub fn stats(&self, now_ms: i64) -> Result<OutboxStats, OutboxError> {
        let counts = self.blocking(|db| db.counts())?;
        Ok(self.stats_of(counts, now_ms))
    }

    /// [`Outbox::stats`] for async callers (`/metrics`).
    ///
    /// # Errors
    /// The outbox file failed.
    pub async fn stats_async(&self, now_ms: i64) -> Result<OutboxStats, OutboxError> {
        let counts = self.call(|db| db.counts()).await?;
        Ok(self.stats_of(counts, now_ms))
    }

    fn stats_of(&self, (depth, oldest, parked, unconfigured): Counts, now_ms: i64) -> OutboxStats {
        let c = &self.counters;
        OutboxStats {
            depth: depth as u64,
            parked: parked as u64,
            oldest_age_secs: oldest
                .map(|o| (now_ms - o).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            delivered_total: c.delivered.load(Ordering::Relaxed),
            failed_attempts_total: c.failed_attempts.load(Ordering::Relaxed),
            parked_total: c.parked.load(Ordering::Relaxed),
            enqueue_errors_total: c.enqueue_errors.load(Ordering::Relaxed),
            parked_unconfigured: unconfigured as u64,
            memory: MemoryStats::default(),
        }
    }

    /// Puts every entry of `kind` parked for an unconfigured channel back in its lane (the
    /// channel is configured now). Returns how many. Blocking.
    ///
    /// # Errors
    /// The outbox file failed.
    pub fn requeue_unconfigured(&self, kind: EntryKind, now_ms: i64) -> Result<usize, OutboxError> {
        let n = self.blocking(move |db| db.requeue_unconfigured(kind, now_ms))?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    async fn requeue_unconfigured_async(
        &self,
        kind: EntryKind,
        now_ms: i64,
    ) -> Result<usize, OutboxError> {
        let n = self
            .call(move |db| db.requeue_unconfigured(kind, now_ms))
            .await?;
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(n)
    }

    /// Delivers every due lane head once (concurrently across lanes, at most `policy.concurrency`
    /// at a time) and records the outcomes. Returns how many entries were attempted.
    ///
    /// # Errors
    /// The outbox file itself failed.
    pub async fn deliver_due<D: Deliver>(
        &self,
        deliverer: &Arc<D>,
        policy: &RetryPolicy,
    ) -> Result<usize, OutboxError> {
        let due = self.due_async(now_ms(), policy.concurrency.max(1)).await?;
        let n = due.len();
        let mut set = tokio::task::JoinSet::new();
        for entry in due {
            let d = deliverer.clone();
            set.spawn(async move {
                let r = d.deliver(&entry).await;
                (entry, r)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((entry, result)) = joined else {
                continue;
            };
            match result {
                Ok(()) => {
                    tracing::debug!(id = entry.id, kind = entry.kind.as_str(), key = %entry.idempotency_key, "outbox entry delivered");
                    self.mark_delivered_async(entry.id).await?;
                }
                Err(SendError::Transient(msg)) => {
                    let delay = policy.backoff(entry.attempts, &mut rand::thread_rng());
                    tracing::warn!(id = entry.id, kind = entry.kind.as_str(), attempts = entry.attempts + 1, retry_in_ms = delay.as_millis() as u64, error = %msg, "outbox delivery failed; will retry");
                    self.mark_retry_async(entry.id, now_ms() + delay.as_millis() as i64, msg)
                        .await?;
                }
                Err(SendError::Permanent(msg)) => {
                    tracing::error!(id = entry.id, kind = entry.kind.as_str(), key = %entry.idempotency_key, error = %msg, "outbox entry rejected permanently; parked");
                    self.park_async(entry.id, msg).await?;
                }
                Err(SendError::Unconfigured(msg)) => {
                    tracing::warn!(id = entry.id, kind = entry.kind.as_str(), key = %entry.idempotency_key, reason = %msg, "outbox entry parked: its channel is not configured; it is sent after a restart with the channel configured");
                    self.park_async(entry.id, format!("{UNCONFIGURED_PREFIX}{msg}"))
                        .await?;
                }
            }
        }
        Ok(n)
    }

    /// Delivers until nothing is due or `deadline` passes (for graceful shutdown). Returns the
    /// remaining depth.
    pub async fn flush<D: Deliver>(
        &self,
        deliverer: &Arc<D>,
        policy: &RetryPolicy,
        deadline: Duration,
    ) -> Result<u64, OutboxError> {
        let end = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < end {
            if self.deliver_due(deliverer, policy).await? == 0 {
                break;
            }
        }
        Ok(self.stats_async(now_ms()).await?.depth)
    }
}

/// Runs the delivery loop until `shutdown` resolves (in-flight deliveries finish first).
pub async fn run<D: Deliver>(
    outbox: Outbox,
    deliverer: Arc<D>,
    policy: RetryPolicy,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    for kind in [
        EntryKind::CallRecord,
        EntryKind::CallEvent,
        EntryKind::Email,
        EntryKind::Sms,
    ] {
        if !deliverer.configured(kind) {
            tracing::info!(kind = kind.as_str(), "outbox channel not configured: its entries are parked (pulsara_outbox_parked_unconfigured), not retried");
            continue;
        }
        match outbox.requeue_unconfigured_async(kind, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                kind = kind.as_str(),
                requeued = n,
                "outbox channel configured now: entries parked for want of it are queued again"
            ),
            Err(e) => {
                tracing::error!(error = %e, "outbox could not requeue entries parked for an unconfigured channel")
            }
        }
    }
    loop {
        match outbox.deliver_due(&deliverer, &policy).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox storage failed; retrying"),
        }
        let sleep_for = match outbox.next_due().await {
            Ok(Some(t)) => {
                Duration::from_millis((t - now_ms()).clamp(0, policy.poll.as_millis() as i64) as u64)
            }
            _ => policy.poll,
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}

/// Delivers one entry.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(
        &self,
        entry: &OutboxEntry,
    ) -> impl std::future::Future<Output = Result<(), SendError>> + Send;

    /// Whether entries of `kind` can be delivered at all in this process ([`run`] requeues the
    /// entries parked for want of the channel when it is).
    fn configured(&self, _kind: EntryKind) -> bool {
        true
    }
}

/// The reason emails are parked when `SMTP_URL` is unset.
pub const SMTP_UNCONFIGURED: &str =
    "SMTP_URL is not set; set SMTP_URL (and SMTP_FROM) and restart to send the parked emails";
/// The reason SMS are parked when the Twilio credentials are unset.
pub const SMS_UNCONFIGURED: &str = "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN are not set; set them \
     and restart to send the parked SMS";

/// The production deliverer: records to the dashboard, emails over SMTP, SMS via Twilio. An
/// email or SMS whose channel is not configured is [`SendError::Unconfigured`] (parked, and
/// requeued by [`run`] once the channel is configured); a record without a dashboard client is
/// transient (it has nowhere else to go).
#[derive(Clone, Debug, Default)]
pub struct Dispatcher {
    pub dashboard: Option<DashboardClient>,
    pub smtp: Option<SmtpSender>,
    pub sms: Option<TwilioSms>,
}

impl Deliver for Dispatcher {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), SendError> {
        match entry.kind {
            EntryKind::CallRecord => {
                let client = self
                    .dashboard
                    .as_ref()
                    .ok_or_else(|| SendError::Transient("no dashboard client configured".into()))?;
                match client
                    .post_call_record(entry.payload.as_bytes(), &entry.idempotency_key)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_transient() => Err(SendError::Transient(e.to_string())),
                    Err(ClientError::NotFound(w)) => {
                        Err(SendError::Permanent(format!("dashboard has no {w}")))
                    }
                    Err(e) => Err(SendError::Permanent(e.to_string())),
                }
            }
            EntryKind::CallEvent => {
                let client = self
                    .dashboard
                    .as_ref()
                    .ok_or_else(|| SendError::Transient("no dashboard client configured".into()))?;
                let stored: serde_json::Value =
                    serde_json::from_str(&entry.payload).map_err(|e| {
                        SendError::Permanent(format!("stored call event is invalid: {e}"))
                    })?;
                let sid = stored["call_sid"].as_str().unwrap_or_default();
                match client.post_event(sid, &stored["event"]).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_transient() => Err(SendError::Transient(e.to_string())),
                    Err(e) => Err(SendError::Permanent(e.to_string())),
                }
            }
            EntryKind::Email => {
                let smtp = self
                    .smtp
                    .as_ref()
                    .ok_or_else(|| SendError::Unconfigured(SMTP_UNCONFIGURED.into()))?;
                let job: EmailJob = serde_json::from_str(&entry.payload)
                    .map_err(|e| SendError::Permanent(format!("stored email is invalid: {e}")))?;
                smtp.send(&job).await
            }
            EntryKind::Sms => {
                let sms = self
                    .sms
                    .as_ref()
                    .ok_or_else(|| SendError::Unconfigured(SMS_UNCONFIGURED.into()))?;
                let job: SmsJob = serde_json::from_str(&entry.payload)
                    .map_err(|e| SendError::Permanent(format!("stored SMS is invalid: {e}")))?;
                sms.send(&job).await
            }
        }
    }

    fn configured(&self, kind: EntryKind) -> bool {
        match kind {
            EntryKind::CallRecord | EntryKind::CallEvent => self.dashboard.is_some(),
            EntryKind::Email => self.smtp.is_some(),
            EntryKind::Sms => self.sms.is_some(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the outbox could not take
// ---------------------------------------------------------------------------------------------

/// One unit the outbox refused: the entries of one finished call (record and notifications) or
/// of one voicemail, kept together so they are committed in one transaction later.
#[derive(Debug, Clone)]
pub struct HeldUnit {
    /// What it is, for logs and reports (`call record CA…`, `voicemail CA…`); never a secret.
    pub label: String,
    pub entries: Vec<NewEntry>,
    /// When the outbox first refused it (wall-clock ms).
    pub held_since_ms: i64,
}

impl HeldUnit {
    pub fn new(label: impl Into<String>, entries: Vec<NewEntry>, now_ms: i64) -> Self {
        Self {
            label: label.into(),
            entries,
            held_since_ms: now_ms,
        }
    }

    /// Memory the unit holds (payloads and keys), as counted against [`MemoryLimits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.payload.len() + e.idempotency_key.len() + e.lane.len())
            .sum()
    }
}

/// Bounds of a [`MemoryQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Units held at most.
    pub max_units: usize,
    /// Bytes held at most ([`HeldUnit::bytes`]).
    pub max_bytes: usize,
    /// First retry delay while the outbox keeps refusing; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            max_units: 1_000,
            max_bytes: 64 * 1024 * 1024,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What [`MemoryQueue::submit`] did with a unit.
#[derive(Debug)]
pub enum Submitted {
    /// Committed to the outbox; `queued` entries were new (0 = already queued).
    Committed { queued: usize },
    /// The outbox refused it (or older held units still wait ahead of it): it is held in memory,
    /// `held` units in all.
    Held { held: usize, reason: String },
    /// The outbox refused it and the queue is at its bound: the unit is handed back so the
    /// caller can deliver it another way (and must report it lost if that fails). The units
    /// already held are kept: they have waited longest, and the refusal lands on the call that
    /// is finishing now, in its own log span.
    Full { unit: HeldUnit, reason: String },
}

/// Point-in-time numbers of a [`MemoryQueue`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryStats {
    pub held: u64,
    pub held_bytes: u64,
    pub capacity: u64,
    /// Age of the oldest held unit, seconds (0 when empty).
    pub oldest_age_secs: f64,
    /// Units the outbox refused and that were held.
    pub held_total: u64,
    /// Held units committed to the outbox later.
    pub persisted_total: u64,
    /// Times a unit found the queue at its bound.
    pub full_total: u64,
    /// Units delivered straight to the dashboard / SMTP / Twilio instead (bound reached, or at
    /// shutdown).
    pub direct_total: u64,
    /// Units that could be neither kept nor delivered: lost, each logged at error level.
    pub lost_total: u64,
}

#[derive(Debug, Default)]
struct Held {
    units: VecDeque<HeldUnit>,
    bytes: usize,
}

/// A bounded, ordered, in-memory queue in front of the [`Outbox`] for what it refused (disk
/// full, I/O error): units are retried into the outbox oldest first, and a new unit waits
/// behind held ones, so lanes keep their order. Memory does not survive the process: the
/// owner retries often, persists or delivers everything it can at shutdown, and reports the
/// rest (see `pulsara_outbox_memory_*`).
#[derive(Debug)]
pub struct MemoryQueue {
    held: Mutex<Held>,
    limits: MemoryLimits,
    held_total: AtomicU64,
    persisted_total: AtomicU64,
    full_total: AtomicU64,
    direct_total: AtomicU64,
    lost_total: AtomicU64,
}

impl MemoryQueue {
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            held: Mutex::default(),
            limits: MemoryLimits {
                max_units: limits.max_units.max(1),
                ..limits
            },
            held_total: AtomicU64::new(0),
            persisted_total: AtomicU64::new(0),
            full_total: AtomicU64::new(0),
            direct_total: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &MemoryLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().units.is_empty()
    }

    /// Labels of the held units, oldest first.
    pub fn labels(&self) -> Vec<String> {
        self.lock().units.iter().map(|u| u.label.clone()).collect()
    }

    /// Commits held units to `outbox`, oldest first, stopping at the first refusal (blocking:
    /// call from a blocking context). Returns how many units are still held.
    pub fn drain(&self, outbox: &Outbox, now_ms: i64) -> usize {
        let mut held = self.lock();
        self.drain_locked(&mut held, outbox, now_ms);
        held.units.len()
    }

    fn drain_locked(&self, held: &mut Held, outbox: &Outbox, now_ms: i64) -> Option<String> {
        let mut persisted = 0usize;
        let mut refusal = None;
        while let Some(front) = held.units.front() {
            match outbox.enqueue(&front.entries, now_ms) {
                Ok(_) => {
                    if let Some(u) = held.units.pop_front() {
                        held.bytes = held.bytes.saturating_sub(u.bytes());
                        tracing::info!(what = %u.label, held_for_ms = now_ms - u.held_since_ms, "held in memory, now committed to the outbox");
                    }
                    persisted += 1;
                }
                Err(e) => {
                    refusal = Some(e.to_string());
                    break;
                }
            }
        }
        self.persisted_total
            .fetch_add(persisted as u64, Ordering::Relaxed);
        if persisted > 0 && held.units.is_empty() {
            tracing::info!(
                persisted,
                "everything held in memory is in the outbox again"
            );
        }
        refusal
    }

    /// Commits `unit` to `outbox` behind any held units (blocking). A refusal keeps it in
    /// memory while the bound allows, else hands it back ([`Submitted::Full`]).
    pub fn submit(&self, outbox: &Outbox, unit: HeldUnit, now_ms: i64) -> Submitted {
        let mut held = self.lock();
        let refusal = if held.units.is_empty() {
            None
        } else {
            self.drain_locked(&mut held, outbox, now_ms)
        };
        let reason = match refusal {
            Some(r) => format!("older refused entries are still waiting ({r})"),
            None => match outbox.enqueue(&unit.entries, now_ms) {
                Ok(queued) => return Submitted::Committed { queued },
                Err(e) => e.to_string(),
            },
        };
        let bytes = unit.bytes();
        if held.units.len() >= self.limits.max_units
            || held.bytes.saturating_add(bytes) > self.limits.max_bytes
        {
            self.full_total.fetch_add(1, Ordering::Relaxed);
            return Submitted::Full { unit, reason };
        }
        held.bytes += bytes;
        held.units.push_back(unit);
        self.held_total.fetch_add(1, Ordering::Relaxed);
        Submitted::Held {
            held: held.units.len(),
            reason,
        }
    }

    /// Takes every held unit out (shutdown: the owner delivers them another way).
    pub fn take_all(&self) -> Vec<HeldUnit> {
        let mut held = self.lock();
        held.bytes = 0;
        held.units.drain(..).collect()
    }

    /// Counts a unit delivered another way.
    pub fn note_direct(&self) {
        self.direct_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a unit lost (the owner logs it at error level, naming it).
    pub fn note_lost(&self) {
        self.lost_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self, now_ms: i64) -> MemoryStats {
        let held = self.lock();
        MemoryStats {
            held: held.units.len() as u64,
            held_bytes: held.bytes as u64,
            capacity: self.limits.max_units as u64,
            oldest_age_secs: held
                .units
                .front()
                .map(|u| (now_ms - u.held_since_ms).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            held_total: self.held_total.load(Ordering::Relaxed),
            persisted_total: self.persisted_total.load(Ordering::Relaxed),
            full_total: self.full_total.load(Ordering::Relaxed),
            direct_total: self.direct_total.load(Ordering::Relaxed),
            lost_total: self.lost_total.load(Ordering::Relaxed),
        }
    }
}

/// Delivers `unit`'s entries with `deliverer`, bypassing the outbox (shutdown with a refusing
/// outbox, or a full [`MemoryQueue`]). Delivered entries are removed from the unit, so a retry
/// sends only the rest; call records carry their idempotency key, so the dashboard stores each
/// once however often this is tried.
///
/// # Errors
/// The first entry that could not be delivered, with its key; it and the later ones stay in
/// `unit`.
pub async fn deliver_directly<D: Deliver>(
    deliverer: &D,
    unit: &mut HeldUnit,
) -> Result<(), String> {
    while let Some(e) = unit.entries.first() {
        let entry = OutboxEntry {
            id: 0,
            kind: e.kind,
            lane: e.lane.clone(),
            idempotency_key: e.idempotency_key.clone(),
            payload: e.payload.clone(),
            status: "direct".into(),
            attempts: 0,
            created_at_ms: unit.held_since_ms,
            next_attempt_at_ms: unit.held_since_ms,
            last_error: None,
        };
        if let Err(err) = deliverer.deliver(&entry).await {
            return Err(format!("{} {}: {err}", e.kind.as_str(), e.idempotency_key));
        }
        unit.entries.remove(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lane: &str, key: &str) -> NewEntry {
        NewEntry {
            kind: EntryKind::CallRecord,
            lane: lane.into(),
            idempotency_key: key.into(),
            payload: "{}".into(),
        }
    }

    #[test]
    fn lanes_deliver_heads_in_order_and_keys_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        assert_eq!(
            ob.enqueue(&[entry("a", "1"), entry("a", "2"), entry("b", "3")], 0)
                .unwrap(),
            3
        );
        assert_eq!(
            ob.enqueue(&[entry("a", "1")], 0).unwrap(),
            0,
            "same key is not queued twice"
        );
        let due = ob.due(10, 10).unwrap();
        let keys: Vec<_> = due.iter().map(|e| e.idempotency_key.as_str()).collect();
        assert_eq!(keys, vec!["1", "3"]);
        // A retrying head blocks its lane (order), not the other lane.
        ob.mark_retry(due[0].id, 1_000, "down").unwrap();
        let keys: Vec<_> = ob
            .due(10, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.idempotency_key)
            .collect();
        assert_eq!(keys, vec!["3"]);
        // Parking moves the lane on.
        ob.park(due[0].id, "rejected").unwrap();
        let keys: Vec<_> = ob
            .due(10, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.idempotency_key)
            .collect();
        assert_eq!(keys, vec!["2", "3"]);
        let st = ob.stats(5_000).unwrap();
        assert_eq!((st.depth, st.parked, st.oldest_age_secs), (2, 1, 5.0));
        assert_eq!(
            ob.list(Some("parked")).unwrap()[0].last_error.as_deref(),
            Some("rejected")
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            ..Default::default()
        };
        let mut rng = rand::thread_rng();
        for attempts in 0..30 {
            let d = p.backoff(attempts, &mut rng);
            let ceiling =
                (Duration::from_millis(100) * 2u32.saturating_pow(attempts.min(20))).min(p.cap);
            assert!(
                d <= ceiling && d >= ceiling / 2,
                "attempt {attempts}: {d:?} vs {ceiling:?}"
            );
        }
    }

    /// Caps `ob` at its current size: every write that needs a new page fails with
    /// SQLITE_FULL, as on a full disk.
    fn fill(ob: &Outbox) {
        let pages = ob.blocking(|db| db.page_count()).unwrap();
        ob.set_max_pages(pages).unwrap();
    }

    fn unit(sid: &str) -> HeldUnit {
        HeldUnit::new(
            format!("call record {sid}"),
            vec![
                NewEntry {
                    kind: EntryKind::CallRecord,
                    lane: "roma".into(),
                    idempotency_key: sid.into(),
                    payload: "r".repeat(10_000),
                },
                NewEntry {
                    kind: EntryKind::Email,
                    lane: "email:roma".into(),
                    idempotency_key: format!("{sid}:email"),
                    payload: "e".repeat(100),
                },
            ],
            1_000,
        )
    }

    #[test]
    fn the_memory_queue_keeps_the_oldest_at_its_bound_and_commits_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        let q = MemoryQueue::new(MemoryLimits {
            max_units: 3,
            ..Default::default()
        });
        assert!(matches!(
            q.submit(&ob, unit("CA0"), 1_000),
            Submitted::Committed { queued: 2 }
        ));
        fill(&ob);
        for (i, sid) in ["CA1", "CA2", "CA3"].into_iter().enumerate() {
            match q.submit(&ob, unit(sid), 1_000) {
                Submitted::Held { held, reason } => {
                    assert_eq!(held, i + 1);
                    assert!(reason.contains("full"), "{reason}");
                }
                other => panic!("{sid}: {other:?}"),
            }
        }
        // At the bound: the newest is handed back, the oldest stay.
        let Submitted::Full { unit: back, reason } = q.submit(&ob, unit("CA4"), 1_000) else {
            panic!("the fourth unit must find the queue full")
        };
        assert_eq!(back.label, "call record CA4");
        assert_eq!(back.entries.len(), 2, "handed back whole");
        assert!(reason.contains("still waiting"), "{reason}");
        assert_eq!(
            q.labels(),
            ["call record CA1", "call record CA2", "call record CA3"]
        );
        let st = q.stats(4_000);
        assert_eq!(
            (st.held, st.capacity, st.held_total, st.full_total),
            (3, 3, 3, 1)
        );
        assert_eq!(st.oldest_age_secs, 3.0);
        assert_eq!(st.held_bytes as usize, 3 * unit("CA1").bytes());
        let registry = prometheus::Registry::new();
        let memory = st.clone();
        let collector = OutboxCollector::new(move || {
            Ok(OutboxStats {
                memory: memory.clone(),
                ..OutboxStats::default()
            })
        })
        .unwrap();
        registry.register(Box::new(collector)).unwrap();
        let text = pulsara_net::metrics::render(&registry);
        assert!(
            text.contains(
                "# TYPE pulsara_outbox_memory_held gauge\npulsara_outbox_memory_held 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE pulsara_outbox_memory_full_total counter\npulsara_outbox_memory_full_total 1\n"), "{text}");
        assert!(
            text.contains("pulsara_outbox_stats_errors_total 0\n"),
            "{text}"
        );
        assert_eq!(q.drain(&ob, 2_000), 3, "still full: nothing moves");
        assert!(ob.stats(0).unwrap().enqueue_errors_total >= 4);

        // A byte bound is a bound too.
        let small = MemoryQueue::new(MemoryLimits {
            max_bytes: 5_000,
            ..Default::default()
        });
        assert!(matches!(
            small.submit(&ob, unit("CA9"), 0),
            Submitted::Full { .. }
        ));

        // Space again: held units go in oldest first; a duplicate key is not queued twice.
        ob.set_max_pages(1 << 20).unwrap();
        assert_eq!(q.drain(&ob, 5_000), 0);
        assert!(matches!(
            q.submit(&ob, unit("CA1"), 5_000),
            Submitted::Committed { queued: 0 }
        ));
        let keys: Vec<String> = ob
            .list(None)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EntryKind::CallRecord)
            .map(|e| e.idempotency_key)
            .collect();
        assert_eq!(keys, ["CA0", "CA1", "CA2", "CA3"]);
        let st = q.stats(5_000);
        assert_eq!((st.held, st.held_bytes, st.persisted_total), (0, 0, 3));
    }

    /// Delivers everything; counts what it was given.
    #[derive(Default)]
    struct Counting {
        seen: Mutex<Vec<String>>,
        smtp: bool,
    }

    impl Deliver for Counting {
        async fn deliver(&self, entry: &OutboxEntry) -> Result<(), SendError> {
            if entry.kind == EntryKind::Email && !self.smtp {
                return Err(SendError::Unconfigured(SMTP_UNCONFIGURED.into()));
            }
            self.seen
                .lock()
                .unwrap()
                .push(entry.idempotency_key.clone());
            Ok(())
        }
        fn configured(&self, kind: EntryKind) -> bool {
            kind != EntryKind::Email || self.smtp
        }
    }

    #[tokio::test]
    async fn an_email_without_smtp_is_parked_with_its_reason_and_sent_once_smtp_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        let mut email = entry("email:roma", "CA1:email");
        email.kind = EntryKind::Email;
        ob.enqueue(&[entry("roma", "CA1"), email], 0).unwrap();

        // The production dispatcher without SMTP_URL.
        let d = Dispatcher::default();
        assert!(!d.configured(EntryKind::Email) && !d.configured(EntryKind::Sms));
        let e = ob
            .list(None)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == EntryKind::Email)
            .unwrap();
        let err = d.deliver(&e).await.unwrap_err();
        assert!(matches!(err, SendError::Unconfigured(_)), "{err:?}");

        let policy = RetryPolicy::default();
        let without = Arc::new(Counting::default());
        ob.deliver_due(&without, &policy).await.unwrap();
        let st = ob.stats(0).unwrap();
        assert_eq!(
            (st.depth, st.parked, st.parked_unconfigured),
            (0, 1, 1),
            "{st:?}"
        );
        assert_eq!(
            st.failed_attempts_total, 0,
            "not a retry: no false 'stuck' alarm"
        );
        let parked = &ob.list(Some("parked")).unwrap()[0];
        assert_eq!(parked.kind, EntryKind::Email);
        assert!(
            parked
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("not configured: SMTP_URL is not set"),
            "{parked:?}"
        );
        assert_eq!(st.parked_unconfigured, 1, "{st:?}");
        // Restarting without SMTP leaves it parked.
        run(
            ob.clone(),
            without.clone(),
            policy.clone(),
            std::future::ready(()),
        )
        .await;
        assert_eq!(ob.stats(0).unwrap().parked_unconfigured, 1);

        // A start with SMTP configured requeues and sends it.
        let with = Arc::new(Counting {
            smtp: true,
            ..Default::default()
        });
        run(ob.clone(), with.clone(), policy, std::future::ready(())).await;
        assert_eq!(*with.seen.lock().unwrap(), ["CA1:email"]);
        let st = ob.stats(0).unwrap();
        assert_eq!(
            (st.depth, st.parked, st.parked_unconfigured),
            (0, 0, 0),
            "{st:?}"
        );
    }

    #[tokio::test]
    async fn direct_delivery_sends_the_rest_of_a_unit_only() {
        struct FailEmail(Mutex<Vec<String>>);
        impl Deliver for FailEmail {
            async fn deliver(&self, entry: &OutboxEntry) -> Result<(), SendError> {
                if entry.kind == EntryKind::Email {
                    return Err(SendError::Transient("smtp down".into()));
                }
                self.0.lock().unwrap().push(entry.idempotency_key.clone());
                Ok(())
            }
        }
        let d = FailEmail(Mutex::default());
        let mut u = unit("CA5");
        let err = deliver_directly(&d, &mut u).await.unwrap_err();
        assert!(
            err.contains("email CA5:email") && err.contains("smtp down"),
            "{err}"
        );
        assert_eq!(*d.0.lock().unwrap(), ["CA5"]);
        assert_eq!(u.entries.len(), 1, "the record is not sent twice");
        assert_eq!(u.entries[0].kind, EntryKind::Email);
    }

    #[test]
    fn disk_full_is_a_clear_error_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        ob.enqueue(&[entry("a", "0")], 0).unwrap();
        let pages = ob.blocking(|db| db.page_count()).unwrap();
        ob.set_max_pages(pages).unwrap();
        let big = "x".repeat(200_000);
        let err = ob
            .enqueue(
                &[NewEntry {
                    kind: EntryKind::Email,
                    lane: "l".into(),
                    idempotency_key: "k".into(),
                    payload: big,
                }],
                0,
            )
            .unwrap_err();
        assert!(matches!(err, OutboxError::DiskFull { .. }), "{err:?}");
        assert!(err.to_string().contains("free disk space"), "{err}");
        assert_eq!(ob.stats(0).unwrap().enqueue_errors_total, 1);
        assert_eq!(
            ob.stats(0).unwrap().depth,
            1,
            "failed transaction queued nothing"
        );
    }
}
