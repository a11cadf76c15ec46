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
//! - **Storage failures** (disk full, I/O error) surface as [`OutboxError::DiskFull`] /
//!   [`OutboxError::Storage`] with the path, and count in `enqueue_errors`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::Serialize;
use tokio::sync::Notify;

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
#[derive(Debug, Clone)]
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
}

impl OutboxStats {
    pub fn prometheus(&self) -> String {
        format!(
            "pulsara_outbox_depth {}\npulsara_outbox_parked {}\npulsara_outbox_oldest_age_seconds {:.3}\n\
             pulsara_outbox_delivered_total {}\npulsara_outbox_failed_attempts_total {}\n\
             pulsara_outbox_parked_total {}\npulsara_outbox_enqueue_errors_total {}\n",
            self.depth,
            self.parked,
            self.oldest_age_secs,
            self.delivered_total,
            self.failed_attempts_total,
            self.parked_total,
            self.enqueue_errors_total
        )
    }
}

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
    counters: Arc<Counters>,
    wake: Arc<Notify>,
}

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

impl Outbox {
    /// Opens (creating) the outbox file in WAL mode with full fsync on commit.
    ///
    /// # Errors
    /// The file cannot be opened or initialised.
    pub fn open(path: &Path) -> Result<Self, OutboxError> {
        let p = path.display().to_string();
        let err = |op| {
            let p = p.clone();
            move |source| OutboxError::Storage {
                path: p,
                op,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        // FULL: a committed entry survives power loss, not just a process kill.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("set synchronous"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(err("set busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(err("create schema"))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_owned()),
            counters: Arc::default(),
            wake: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn storage(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> OutboxError + '_ {
        move |source| {
            let path = self.path.display().to_string();
            let full = matches!(source.sqlite_error_code(), Some(ErrorCode::DiskFull));
            if full {
                OutboxError::DiskFull { path, source }
            } else {
                OutboxError::Storage { path, op, source }
            }
        }
    }

    /// Test/ops hook: caps the file at `pages` SQLite pages, so writes beyond it fail like a
    /// full disk.
    pub fn set_max_pages(&self, pages: u64) -> Result<(), OutboxError> {
        self.lock()
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(self.storage("set max_page_count"))
    }

    /// Commits all `entries` in one transaction (all or nothing). Entries whose idempotency key
    /// is already queued are skipped. Returns the number newly queued.
    ///
    /// # Errors
    /// Disk full or another storage failure; nothing is queued then.
    pub fn enqueue(&self, entries: &[NewEntry], now_ms: i64) -> Result<usize, OutboxError> {
        let res = (|| {
            let mut conn = self.lock();
            let tx = conn.transaction().map_err(self.storage("begin"))?;
            let mut n = 0;
            for e in entries {
                n += tx
                    .execute(
                        "INSERT OR IGNORE INTO outbox (kind, lane, idempotency_key, payload, created_at_ms, next_attempt_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![e.kind.as_str(), e.lane, e.idempotency_key, e.payload, now_ms],
                    )
                    .map_err(self.storage("insert"))?;
            }
            tx.commit().map_err(self.storage("commit"))?;
            Ok(n)
        })();
        match &res {
            Ok(_) => self.wake.notify_one(),
            Err(e) => {
                self.counters.enqueue_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "outbox enqueue failed");
            }
        }
        res
    }

    /// The head entry of every lane that is due at `now_ms`, oldest lanes first.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(&format!(
                "SELECT {COLS} FROM outbox o WHERE status = 'pending'
                   AND id = (SELECT MIN(id) FROM outbox WHERE status = 'pending' AND lane = o.lane)
                   AND next_attempt_at_ms <= ?1
                 ORDER BY id LIMIT ?2"
            ))
            .map_err(self.storage("select due"))?;
        let rows = st
            .query_map(params![now_ms, limit as i64], row)
            .map_err(self.storage("select due"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.storage("select due"))
    }

    /// The earliest `next_attempt_at_ms` among lane heads.
    fn next_due(&self) -> Result<Option<i64>, OutboxError> {
        self.lock()
            .query_row(
                "SELECT MIN(next_attempt_at_ms) FROM outbox o WHERE status = 'pending'
                   AND id = (SELECT MIN(id) FROM outbox WHERE status = 'pending' AND lane = o.lane)",
                [],
                |r| r.get(0),
            )
            .map_err(self.storage("select next due"))
    }

    pub fn mark_delivered(&self, id: i64) -> Result<(), OutboxError> {
        self.lock()
            .execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map_err(self.storage("delete delivered"))?;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn mark_retry(
        &self,
        id: i64,
        next_attempt_at_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        self.lock()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_attempt_at_ms, error],
            )
            .map_err(self.storage("schedule retry"))?;
        self.counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn park(&self, id: i64, error: &str) -> Result<(), OutboxError> {
        self.lock()
            .execute(
                "UPDATE outbox SET status = 'parked', attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map_err(self.storage("park"))?;
        self.counters.parked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Puts a parked entry back in its lane (after fixing what made it fail).
    pub fn requeue(&self, id: i64, now_ms: i64) -> Result<(), OutboxError> {
        let n = self
            .lock()
            .execute(
                "UPDATE outbox SET status = 'pending', next_attempt_at_ms = ?2 WHERE id = ?1 AND status = 'parked'",
                params![id, now_ms],
            )
            .map_err(self.storage("requeue"))?;
        if n == 0 {
            return Err(OutboxError::NotFound(id));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Entries, optionally only those with `status` (`pending` / `parked`), oldest first.
    pub fn list(&self, status: Option<&str>) -> Result<Vec<OutboxEntry>, OutboxError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(&format!(
                "SELECT {COLS} FROM outbox WHERE (?1 IS NULL OR status = ?1) ORDER BY id"
            ))
            .map_err(self.storage("list"))?;
        let rows = st
            .query_map(params![status], row)
            .map_err(self.storage("list"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.storage("list"))
    }

    pub fn get(&self, id: i64) -> Result<Option<OutboxEntry>, OutboxError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLS} FROM outbox WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
            .map_err(self.storage("get"))
    }

    /// Depth, parked count, oldest age and counters.
    pub fn stats(&self, now_ms: i64) -> Result<OutboxStats, OutboxError> {
        let (depth, oldest, parked): (i64, Option<i64>, i64) = self
            .lock()
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE status = 'pending'),
                        MIN(created_at_ms) FILTER (WHERE status = 'pending'),
                        COUNT(*) FILTER (WHERE status = 'parked') FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.storage("stats"))?;
        let c = &self.counters;
        Ok(OutboxStats {
            depth: depth as u64,
            parked: parked as u64,
            oldest_age_secs: oldest
                .map(|o| (now_ms - o).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            delivered_total: c.delivered.load(Ordering::Relaxed),
            failed_attempts_total: c.failed_attempts.load(Ordering::Relaxed),
            parked_total: c.parked.load(Ordering::Relaxed),
            enqueue_errors_total: c.enqueue_errors.load(Ordering::Relaxed),
        })
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
        let due = self.due(now_ms(), policy.concurrency.max(1))?;
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
                    self.mark_delivered(entry.id)?;
                }
                Err(SendError::Transient(msg)) => {
                    let delay = policy.backoff(entry.attempts, &mut rand::thread_rng());
                    tracing::warn!(id = entry.id, kind = entry.kind.as_str(), attempts = entry.attempts + 1, retry_in_ms = delay.as_millis() as u64, error = %msg, "outbox delivery failed; will retry");
                    self.mark_retry(entry.id, now_ms() + delay.as_millis() as i64, &msg)?;
                }
                Err(SendError::Permanent(msg)) => {
                    tracing::error!(id = entry.id, kind = entry.kind.as_str(), key = %entry.idempotency_key, error = %msg, "outbox entry rejected permanently; parked");
                    self.park(entry.id, &msg)?;
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
        Ok(self.stats(now_ms())?.depth)
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
    loop {
        match outbox.deliver_due(&deliverer, &policy).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "outbox storage failed; retrying"),
        }
        let sleep_for = match outbox.next_due() {
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
}

/// The production deliverer: records to the dashboard, emails over SMTP, SMS via Twilio. A
/// channel that is not configured is a transient failure (configure it and the backlog flows).
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
                let stored: serde_json::Value = serde_json::from_str(&entry.payload)
                    .map_err(|e| SendError::Permanent(format!("stored call event is invalid: {e}")))?;
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
                    .ok_or_else(|| SendError::Transient("SMTP_URL is not configured".into()))?;
                let job: EmailJob = serde_json::from_str(&entry.payload)
                    .map_err(|e| SendError::Permanent(format!("stored email is invalid: {e}")))?;
                smtp.send(&job).await
            }
            EntryKind::Sms => {
                let sms = self.sms.as_ref().ok_or_else(|| {
                    SendError::Transient("Twilio credentials are not configured".into())
                })?;
                let job: SmsJob = serde_json::from_str(&entry.payload)
                    .map_err(|e| SendError::Permanent(format!("stored SMS is invalid: {e}")))?;
                sms.send(&job).await
            }
        }
    }
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

    #[test]
    fn disk_full_is_a_clear_error_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        ob.enqueue(&[entry("a", "0")], 0).unwrap();
        let pages = ob
            .lock()
            .query_row("PRAGMA page_count", [], |r| r.get::<_, u64>(0))
            .unwrap();
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
