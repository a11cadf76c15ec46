//! The bridge's link to the dashboard (embedded or remote), as implementations of the bridge's
//! ports:
//!
//! - [`DashboardConfigSource`] implements [`ConfigSource`] over the dashboard client and its
//!   config/KB cache (ETag revalidation, TTL, stale-if-error, single-flight). Calls hold `Arc`s,
//!   so a webhook invalidation never changes a call in progress.
//! - [`OutboxSink`] implements [`CallSink`]: analyses the finished record (sentiment, summary),
//!   plans notifications and commits everything to the durable outbox in one transaction; a
//!   background task delivers it.
//! - [`DashboardLink::start`] builds both plus the outbox delivery task and the
//!   `POST /webhooks/dashboard` router for the bridge to merge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pulsara_core::call_record::CallRecord;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_core::secret::Secret;
use pulsara_dashboard::cache::{CacheConfig, CacheError, ConfigCache};
use pulsara_dashboard::client::{ClientConfig, ClientError, DashboardClient};
use pulsara_dashboard::notify::{SendError, SmtpSender, TwilioSms};
use pulsara_dashboard::outbox::{self, Dispatcher, Outbox, OutboxError, OutboxStats, RetryPolicy};
use pulsara_dashboard::webhook_in::{self, WebhookReceiver};
use pulsara_dashboard::Clock;

use crate::ports::{CallSink, ConfigError, ConfigSource, SinkError};

/// [`ConfigSource`] backed by the dashboard API through a [`ConfigCache`].
pub struct DashboardConfigSource {
    pub cache: Arc<ConfigCache<DashboardClient>>,
}

fn config_error(id: &str, e: CacheError) -> ConfigError {
    match e {
        CacheError::NotFound(_) => ConfigError::NotFound(id.to_owned()),
        CacheError::Unavailable(reason) => ConfigError::Unavailable {
            id: id.to_owned(),
            reason,
        },
    }
}

#[async_trait]
impl ConfigSource for DashboardConfigSource {
    async fn restaurant(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError> {
        self.cache
            .restaurant(id)
            .await
            .map_err(|e| config_error(id, e))
    }
    async fn knowledge_base(&self, id: &str) -> Result<Arc<KnowledgeBase>, ConfigError> {
        self.cache
            .knowledge_base(id)
            .await
            .map_err(|e| config_error(id, e))
    }
}

/// [`CallSink`] that queues records (and their notifications) in the durable outbox.
pub struct OutboxSink {
    outbox: Outbox,
    configs: Arc<dyn ConfigSource>,
    dispatcher: Arc<Dispatcher>,
    policy: RetryPolicy,
    flush_deadline: Duration,
}

#[async_trait]
impl CallSink for OutboxSink {
    async fn deliver(&self, record: CallRecord) -> Result<(), SinkError> {
        // The configuration decides the notifications; without it the record is still queued.
        let cfg = self.configs.restaurant(&record.restaurant_id).await.ok();
        let outbox = self.outbox.clone();
        let sid = record.call_sid.clone();
        let res = tokio::task::spawn_blocking(move || {
            pulsara_dashboard::pipeline::finish_and_enqueue(
                &outbox,
                record,
                cfg.as_deref(),
                outbox::now_ms(),
            )
        })
        .await
        .map_err(|e| SinkError::Unavailable(format!("outbox task failed: {e}")))?;
        match res {
            Ok(f) => {
                tracing::info!(call_sid = %sid, queued = f.queued, email = f.email.is_some(), sms = f.sms.is_some(), "call record queued in outbox");
                Ok(())
            }
            Err(e) => Err(SinkError::Unavailable(e.to_string())),
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let left = self
            .outbox
            .flush(&self.dispatcher, &self.policy, self.flush_deadline)
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        if left > 0 {
            tracing::warn!(
                pending = left,
                "outbox not empty at shutdown; entries are kept on disk and sent after restart"
            );
        }
        Ok(())
    }
}

impl OutboxSink {
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Outbox depth/age/counters for `/metrics`.
    ///
    /// # Errors
    /// The outbox file cannot be read.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        self.outbox.stats(outbox::now_ms())
    }
}

/// Settings of the dashboard link (from the bridge's configuration).
#[derive(Clone)]
pub struct DashboardLinkConfig {
    pub client: ClientConfig,
    pub cache: CacheConfig,
    /// `whsec_` secrets accepted on `POST /webhooks/dashboard` (several during rotation).
    pub webhook_secrets: Vec<Secret>,
    /// The outbox SQLite file (not the dashboard's database).
    pub outbox_path: PathBuf,
    pub retry: RetryPolicy,
    /// `SMTP_URL` and the sender address for notification emails.
    pub smtp: Option<(Secret, String)>,
    /// Twilio Messages API: base URL, account SID, auth token.
    pub twilio: Option<(String, String, Secret)>,
    /// How long `flush` (shutdown) keeps delivering.
    pub flush_deadline: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("dashboard client: {0}")]
    Client(#[from] ClientError),
    #[error("outbox: {0}")]
    Outbox(#[from] OutboxError),
    #[error("notifications: {0}")]
    Notify(#[from] SendError),
}

/// Everything the bridge needs from the dashboard side, started together.
pub struct DashboardLink {
    pub cache: Arc<ConfigCache<DashboardClient>>,
    pub configs: Arc<DashboardConfigSource>,
    pub sink: Arc<OutboxSink>,
    /// `POST /webhooks/dashboard`; merge into the bridge's router.
    pub webhook_router: axum::Router,
    pub outbox_task: tokio::task::JoinHandle<()>,
}

impl DashboardLink {
    /// Builds the client, cache, outbox and webhook receiver, and spawns outbox delivery until
    /// `shutdown` resolves.
    ///
    /// # Errors
    /// Invalid client/SMTP settings or an unopenable outbox file.
    pub fn start(
        cfg: DashboardLinkConfig,
        clock: Clock,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Self, LinkError> {
        let client = DashboardClient::new(cfg.client.clone(), clock.clone())?;
        let cache = Arc::new(ConfigCache::new(client.clone(), cfg.cache.clone()));
        let configs = Arc::new(DashboardConfigSource {
            cache: cache.clone(),
        });
        let outbox = Outbox::open(&cfg.outbox_path)?;
        let smtp = match &cfg.smtp {
            Some((url, from)) => Some(SmtpSender::new(url, from)?),
            None => None,
        };
        let sms = cfg
            .twilio
            .as_ref()
            .map(|(base, sid, token)| TwilioSms::new(base, sid, token.clone()));
        let dispatcher = Arc::new(Dispatcher {
            dashboard: Some(client),
            smtp,
            sms,
        });
        let sink = Arc::new(OutboxSink {
            outbox: outbox.clone(),
            configs: configs.clone(),
            dispatcher: dispatcher.clone(),
            policy: cfg.retry.clone(),
            flush_deadline: cfg.flush_deadline,
        });
        let inval = cache.clone();
        let receiver = WebhookReceiver::new(cfg.webhook_secrets.clone(), clock)
            .on_event(Arc::new(move |ev| inval.invalidate(ev)));
        let webhook_router = webhook_in::router(Arc::new(receiver));
        let outbox_task = tokio::spawn(outbox::run(outbox, dispatcher, cfg.retry, shutdown));
        Ok(Self {
            cache,
            configs,
            sink,
            webhook_router,
            outbox_task,
        })
    }
}
