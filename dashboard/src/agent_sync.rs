//! The agent sync job of the embedded dashboard: every edit that can change a restaurant's agent
//! (its configuration, its tools, a tool's specification, seeding) requests a sync, and this job
//! brings the ElevenLabs agent to the specification ([`crate::agents::sync`]) with no human in
//! the loop.
//!
//! Durable like the outbox: requests are rows of the store's `agent_sync` table (a generation
//! counter per restaurant, pending while `requested > done`), so a restart resumes them. A failed
//! attempt is retried with exponential backoff (1 s doubling to 5 min); the error, without the
//! API key, is kept on the row. The job writes the agent id and synced state back into the
//! restaurant (a new version, announced by webhook so caches refresh), only if no edit came in
//! meanwhile; that write-back requests nothing, so it cannot loop.
//!
//! State: `GET /v1/admin/agent-sync` and the `pulsara_agent_sync_*` families ([`AgentSyncJob::collector`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pulsara_core::config::RestaurantConfig;
use pulsara_net::metrics::{Family, ScrapeCollector};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agents::{self, AgentsApi, AgentsError, SyncReport};
use crate::events::{DashboardEvent, EventType};
use crate::server::AppState;
use crate::store::{Store, StoreError};

/// First retry delay; doubled per failed attempt up to [`MAX_BACKOFF_SECS`].
pub const FIRST_BACKOFF_SECS: i64 = 1;
pub const MAX_BACKOFF_SECS: i64 = 300;
/// Longest error text kept on a row.
const MAX_ERROR: usize = 500;

/// Delay before the next attempt after `attempts` failed ones (≥ 1).
pub fn backoff_secs(attempts: i64) -> i64 {
    let shift = (attempts - 1).clamp(0, 16) as u32;
    (FIRST_BACKOFF_SECS << shift).min(MAX_BACKOFF_SECS)
}

/// Counters since start, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    agents_created: AtomicU64,
    drift_repaired: AtomicU64,
}

/// The running job. Cheap to clone; [`AgentSyncJob::wake`] makes it look for due work now.
#[derive(Clone)]
pub struct AgentSyncJob {
    state: AppState,
    api: Arc<AgentsApi>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
}

/// Why one restaurant's sync failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Agents(#[from] AgentsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("restaurant {0:?} no longer exists")]
    Gone(String),
}

impl AgentSyncJob {
    /// A job over the dashboard `state`, syncing through `api`. It runs once [`AgentSyncJob::run`]
    /// is spawned; [`AppState::agent_sync_wake`] is the notifier it listens to.
    pub fn new(state: AppState, api: AgentsApi) -> Self {
        let wake = state.agent_sync_wake();
        Self {
            state,
            api: Arc::new(api),
            wake,
            counters: Arc::default(),
        }
    }

    /// Runs due syncs until `stop`: at start (pending requests of an earlier run included),
    /// whenever an edit requests one, and when a backoff ends.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let next = self.run_due().await;
            let now = self.now();
            let sleep = match next {
                Some(at) if at > now => Duration::from_secs((at - now) as u64),
                Some(_) => Duration::from_millis(200),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn now(&self) -> i64 {
        (self.state.clock())()
    }

    fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Runs every sync due now, one restaurant at a time (the agents API is rate limited per
    /// workspace). Returns when the next pending one is due.
    pub async fn run_due(&self) -> Option<i64> {
        let now = self.now();
        let store = self.store();
        let due = match blocking(move || store.due_agent_syncs(now)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "agent sync: cannot read pending syncs");
                return Some(now + FIRST_BACKOFF_SECS);
            }
        };
        for row in due {
            let id = row.restaurant_id.clone();
            match self.run_one(&id).await {
                Ok(report) => {
                    self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                    if report.created_agent {
                        self.counters.agents_created.fetch_add(1, Ordering::Relaxed);
                    }
                    if !report.is_noop() && !report.created_agent {
                        self.counters.drift_repaired.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(restaurant = %id, agent = %report.agent_id, noop = report.is_noop(), "agent sync done");
                    let (store, now) = (self.store(), self.now());
                    let generation = row.requested;
                    if let Err(e) =
                        blocking(move || store.agent_sync_done(&id, generation, now)).await
                    {
                        tracing::warn!(error = %e, "agent sync: cannot record success");
                    }
                }
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let message: String = e.to_string().chars().take(MAX_ERROR).collect();
                    let next_at = self.now() + backoff_secs(row.attempts + 1);
                    tracing::warn!(restaurant = %id, attempt = row.attempts + 1, error = %message, next_at, "agent sync failed; will retry");
                    let (store, now) = (self.store(), self.now());
                    if let Err(e) =
                        blocking(move || store.agent_sync_failed(&id, &message, next_at, now)).await
                    {
                        tracing::warn!(error = %e, "agent sync: cannot record failure");
                    }
                }
            }
        }
        let store = self.store();
        blocking(move || store.next_agent_sync_at())
            .await
            .ok()
            .flatten()
    }

    /// Syncs one restaurant now and writes the result back.
    async fn run_one(&self, id: &str) -> Result<SyncReport, RunError> {
        let store = self.store();
        let rid = id.to_owned();
        let (cfg, tools) = blocking(move || {
            let cfg = store
                .restaurant(&rid)?
                .ok_or_else(|| RunError::Gone(rid.clone()))?;
            let tools = agents::tool_specs(&cfg, |sha| store.policy_tool(sha).ok().flatten())?;
            Ok::<_, RunError>((cfg, tools))
        })
        .await?;
        let report = agents::sync(&self.api, &cfg, &tools, false).await?;
        if report.changes(&cfg) {
            self.write_back(&cfg, &report).await?;
        }
        Ok(report)
    }

    async fn write_back(
        &self,
        cfg: &RestaurantConfig,
        report: &SyncReport,
    ) -> Result<(), RunError> {
        let (store, now) = (self.store(), self.now());
        let (updated, expected) = (report.apply(cfg), cfg.version);
        let stored = blocking(move || store.record_agent_synced(&updated, expected, now)).await?;
        match stored {
            Some(stored) => self.state.webhooks().publish(DashboardEvent::new(
                EventType::RestaurantUpdated,
                &stored.id,
                stored.version,
            )),
            // An edit won the race; it requested its own sync, which will find this agent by
            // the id the edit carried over (see the admin handler) and store it then.
            None => {
                tracing::info!(restaurant = %cfg.id, "agent sync: restaurant changed meanwhile; its own sync follows")
            }
        }
        Ok(())
    }

    /// The job's families for the process registry: pending and failing restaurants (read from
    /// the store at each scrape) and counters since start.
    ///
    /// # Errors
    /// Never for these fixed names; the type is the registry's.
    pub fn collector(&self) -> prometheus::Result<ScrapeCollector<[f64; 6]>> {
        let (store, counters) = (self.store(), self.counters.clone());
        ScrapeCollector::new(
            vec![
                Family::gauge(
                    "pulsara_agent_sync_pending",
                    "Restaurants whose agent sync is requested and not yet done.",
                    |s| s[0],
                ),
                Family::gauge(
                    "pulsara_agent_sync_failing",
                    "Pending agent syncs whose last attempt failed (retried with backoff).",
                    |s| s[1],
                ),
                Family::counter(
                    "pulsara_agent_sync_succeeded_total",
                    "Agent syncs that completed.",
                    |s| s[2],
                ),
                Family::counter(
                    "pulsara_agent_sync_failed_total",
                    "Agent sync attempts that failed.",
                    |s| s[3],
                ),
                Family::counter(
                    "pulsara_agent_sync_agents_created_total",
                    "ElevenLabs agents created by the sync.",
                    |s| s[4],
                ),
                Family::counter(
                    "pulsara_agent_sync_repaired_total",
                    "Syncs that repaired drift on an existing agent or its tools.",
                    |s| s[5],
                ),
            ],
            &[],
            move || {
                let rows = store.agent_syncs().ok()?;
                let pending = rows.iter().filter(|r| r.requested > r.done);
                let (p, f) = pending.fold((0.0, 0.0), |(p, f), r| {
                    (p + 1.0, f + f64::from(u8::from(r.attempts > 0)))
                });
                let c = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
                Some([
                    p,
                    f,
                    c(&counters.succeeded),
                    c(&counters.failed),
                    c(&counters.agents_created),
                    c(&counters.drift_repaired),
                ])
            },
        )
    }
}

async fn blocking<T: Send + 'static, E: From<StoreError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Invalid("the runtime is shutting down".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let seq: Vec<i64> = (1..=12).map(backoff_secs).collect();
        assert_eq!(&seq[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(seq[11], MAX_BACKOFF_SECS);
        assert_eq!(backoff_secs(10_000), MAX_BACKOFF_SECS);
    }

    #[test]
    fn generations_keep_later_requests_pending() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.request_agent_sync("r1", 10).unwrap(), 1);
        assert_eq!(store.due_agent_syncs(10).unwrap().len(), 1);
        // A second edit while the first sync runs.
        assert_eq!(store.request_agent_sync("r1", 11).unwrap(), 2);
        store.agent_sync_done("r1", 1, 12).unwrap();
        let due = store.due_agent_syncs(12).unwrap();
        assert_eq!(due.len(), 1, "generation 2 is still pending");
        store.agent_sync_failed("r1", "429", 20, 12).unwrap();
        assert!(
            store.due_agent_syncs(19).unwrap().is_empty(),
            "waits out its backoff"
        );
        assert_eq!(store.next_agent_sync_at().unwrap(), Some(20));
        let row = &store.due_agent_syncs(20).unwrap()[0];
        assert_eq!((row.attempts, row.last_error.as_deref()), (1, Some("429")));
        store.agent_sync_done("r1", 2, 21).unwrap();
        assert!(store.due_agent_syncs(1_000).unwrap().is_empty());
        assert_eq!(store.next_agent_sync_at().unwrap(), None);
        let row = &store.agent_syncs().unwrap()[0];
        assert_eq!((row.attempts, row.last_error.as_deref()), (0, None));
    }
}
