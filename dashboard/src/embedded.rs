//! One call to start the embedded dashboard: open (or create) the SQLite database, seed it from
//! the restaurants directory, and serve API v1 on a listener until stopped. Used by
//! `pulsara serve` when no `DASHBOARD_URL` is set, by the demo and by the tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent_sync::AgentSyncJob;
use crate::agents::AgentsApi;
use crate::auth::SigningKeys;
use crate::seed::{seed_from_dir, SeedError, SeedOptions, SeedReport};
use crate::server::{self, AppState};
use crate::store::{Store, StoreError};
use crate::Clock;

/// Settings for [`EmbeddedDashboard::start`].
#[derive(Debug)]
pub struct EmbeddedOptions {
    /// SQLite file; `None` keeps everything in memory (tests, throwaway demos).
    pub db_path: Option<PathBuf>,
    /// `restaurants/` with `<id>/restaurant.json` + `knowledge_base.json`; `None` = no seeding.
    pub restaurants_dir: Option<PathBuf>,
    pub seed: SeedOptions,
    /// Signing keys accepted from edges and bridges.
    pub signing_keys: SigningKeys,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("embedded dashboard listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A running embedded dashboard.
pub struct EmbeddedDashboard {
    pub addr: SocketAddr,
    pub store: Store,
    pub state: AppState,
    pub seed_report: SeedReport,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl EmbeddedDashboard {
    /// Opens/seeds the store and serves on `listener`.
    ///
    /// # Errors
    /// Database, seeding or listener failures, each with a message naming the file or setting.
    pub async fn start(
        listener: TcpListener,
        opts: EmbeddedOptions,
        clock: Clock,
    ) -> Result<Self, EmbeddedError> {
        Self::start_with(listener, opts, clock, pulsara_net::ServeConfig::default()).await
    }

    /// As [`EmbeddedDashboard::start`], with the listener's deadlines and caps from `net` (the
    /// process's `PULSARA_HTTP_*` settings when it runs inside `pulsara serve`).
    ///
    /// # Errors
    /// As [`EmbeddedDashboard::start`].
    pub async fn start_with(
        listener: TcpListener,
        opts: EmbeddedOptions,
        clock: Clock,
        net: pulsara_net::ServeConfig,
    ) -> Result<Self, EmbeddedError> {
        // Opening and seeding write SQLite (and read the restaurants directory): off the worker.
        let (db_path, restaurants_dir, seed, now) =
            (opts.db_path, opts.restaurants_dir, opts.seed, clock());
        let (store, seed_report) = tokio::task::spawn_blocking(move || {
            let store = match &db_path {
                Some(p) => Store::open(p)?,
                None => Store::open_in_memory()?,
            };
            let seed_report = match &restaurants_dir {
                Some(dir) => seed_from_dir(&store, dir, &seed, now)?,
                None => SeedReport::default(),
            };
            Ok::<_, EmbeddedError>((store, seed_report))
        })
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => std::io::Error::other("the runtime shut down while opening the database"),
        })??;
        tracing::info!(seeded = ?seed_report.seeded, kept = ?seed_report.kept, modules = seed_report.modules.len(), "embedded dashboard seeded");
        let state = AppState::new(store.clone(), opts.signing_keys, clock);
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_with(
            listener,
            state.clone(),
            net,
            async move {
                let _ = rx.await;
            },
        ));
        tracing::info!(%addr, "embedded dashboard listening");
        Ok(Self {
            addr,
            store,
            state,
            seed_report,
            stop: Some(tx),
            task,
        })
    }

    /// Starts the agent sync job over this dashboard ([`crate::agent_sync`]): pending syncs of
    /// an earlier run at once, then every sync an edit requests, until `stop`. The job is
    /// returned for its metrics ([`AgentSyncJob::collector`]).
    pub fn start_agent_sync(
        &self,
        api: AgentsApi,
        stop: tokio_util::sync::CancellationToken,
    ) -> (AgentSyncJob, JoinHandle<()>) {
        let job = AgentSyncJob::new(self.state.clone(), api);
        let task = tokio::spawn(job.clone().run(stop));
        (job, task)
    }

    /// Waits until every requested agent sync is done (a started [`Self::start_agent_sync`]
    /// job does them), polling every 50 ms.
    ///
    /// # Errors
    /// At `timeout`, the restaurants still pending with their last errors.
    pub async fn wait_agent_syncs(&self, timeout: std::time::Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let store = self.store.clone();
            let pending: Vec<String> = tokio::task::spawn_blocking(move || store.agent_syncs())
                .await
                .map_err(|e| format!("reading agent syncs: {e}"))?
                .map_err(|e| format!("reading agent syncs: {e}"))?
                .into_iter()
                .filter(|s| s.requested > s.done)
                .map(|s| match s.last_error {
                    Some(e) => format!("{}: {e}", s.restaurant_id),
                    None => s.restaurant_id,
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("agent syncs still pending: {}", pending.join("; ")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `http://<addr>` for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Kills the server task at once (tests: "the dashboard went down").
    pub fn abort(self) {
        self.task.abort();
    }
}
