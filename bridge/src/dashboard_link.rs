//! The bridge's link to the dashboard (embedded or remote), as implementations of the bridge's
//! ports:
//!
//! - [`DashboardConfigSource`] implements [`ConfigSource`] over the dashboard client and its
//!   config/KB cache (ETag revalidation, TTL, stale-if-error, single-flight). Calls hold `Arc`s,
//!   so a webhook invalidation never changes a call in progress.
//! - [`OutboxSink`] implements [`CallSink`]: analyses the finished record (sentiment, summary),
//!   plans notifications and commits everything to the durable outbox in one transaction; a
//!   background task delivers it. What the outbox refuses (disk full) waits in a bounded memory
//!   queue and is retried; nothing is dropped silently.
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
use pulsara_dashboard::outbox::{
    self, Dispatcher, HeldUnit, MemoryLimits, MemoryQueue, Outbox, OutboxError, OutboxStats,
    RetryPolicy, Submitted,
};
use pulsara_dashboard::webhook_in::{self, EventHandler, WebhookReceiver};
use pulsara_dashboard::Clock;

use crate::ports::{CallSink, ConfigError, ConfigSource, SinkError};
use crate::config::BridgeConfig;

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
    async fn restaurant_fresh(&self, id: &str) -> Result<Arc<RestaurantConfig>, ConfigError> {
        self.cache.invalidate(&pulsara_dashboard::events::DashboardEvent::new(
            pulsara_dashboard::events::EventType::RestaurantUpdated,
            id,
            0,
        ));
        self.restaurant(id).await
    }
}

/// [`CallSink`] that queues records (and their notifications) in the durable outbox.
///
/// What the outbox refuses (disk full, I/O error) is never dropped: it waits in a bounded
/// [`MemoryQueue`] and is retried into the outbox in order by the link's background task
/// ([`OutboxSink::retry_held`]), so freeing space brings every record back. At the queue's bound
/// the finishing call's entries are delivered straight to the dashboard (and SMTP/Twilio)
/// instead; only if that fails too is the call lost, logged at error level with its call sid and
/// counted in `pulsara_outbox_lost_total`. [`CallSink::flush`] (shutdown) retries the outbox,
/// then delivers what memory still holds directly, then flushes the outbox, and reports what
/// could not be saved.
pub struct OutboxSink {
    outbox: Outbox,
    held: Arc<MemoryQueue>,
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
        let (outbox, held) = (self.outbox.clone(), self.held.clone());
        let sid = record.call_sid.clone();
        let (submitted, email, sms) = tokio::task::spawn_blocking(move || {
            let planned = pulsara_dashboard::pipeline::finish(record, cfg.as_deref());
            let now = outbox::now_ms();
            let unit = HeldUnit::new(
                format!("call record {}", planned.record.call_sid),
                planned.entries,
                now,
            );
            (
                held.submit(&outbox, unit, now),
                planned.email.is_some(),
                planned.sms.is_some(),
            )
        })
        .await
        .map_err(|e| SinkError::Unavailable(format!("outbox task failed: {e}")))?;
        if let Submitted::Committed { queued } = submitted {
            tracing::info!(call_sid = %sid, queued, email, sms, "call record queued in outbox");
        }
        self.after_submit(submitted).await
    }

    async fn voicemail(
        &self,
        call_sid: &str,
        restaurant_id: &str,
        event: serde_json::Value,
    ) -> Result<(), SinkError> {
        let cfg = self.configs.restaurant(restaurant_id).await.ok();
        let (outbox, held) = (self.outbox.clone(), self.held.clone());
        let (sid, rid) = (call_sid.to_owned(), restaurant_id.to_owned());
        let submitted = tokio::task::spawn_blocking(move || {
            let entries =
                pulsara_dashboard::pipeline::voicemail_entries(&sid, &rid, event, cfg.as_deref());
            let now = outbox::now_ms();
            held.submit(&outbox, HeldUnit::new(format!("voicemail {sid}"), entries, now), now)
        })
        .await
        .map_err(|e| SinkError::Unavailable(format!("outbox task failed: {e}")))?;
        if let Submitted::Committed { queued } = submitted {
            tracing::info!(call_sid, queued, "voicemail queued in outbox");
        }
        self.after_submit(submitted).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let start = tokio::time::Instant::now();
        let end = start + self.flush_deadline;
        // 1. What memory holds is what a restart would lose: give the outbox a few more tries.
        let retry_until = start + self.flush_deadline / 3;
        let mut wait = Duration::from_millis(50);
        while self.retry_held().await > 0 && tokio::time::Instant::now() + wait < retry_until {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        }
        // 2. Still refused: hand it straight to the dashboard / SMTP / Twilio.
        let mut lost = Vec::new();
        let units = self.held.take_all();
        if !units.is_empty() {
            tracing::warn!(
                held = units.len(),
                "shutdown: the outbox still refuses entries held in memory; delivering them directly"
            );
        }
        for mut unit in units {
            let outcome = if tokio::time::Instant::now() < end {
                outbox::deliver_directly(&*self.dispatcher, &mut unit).await
            } else {
                Err("shutdown deadline reached".to_owned())
            };
            match outcome {
                Ok(()) => {
                    self.held.note_direct();
                    tracing::info!(what = %unit.label, "shutdown: delivered directly, bypassing the outbox");
                }
                Err(e) => {
                    self.held.note_lost();
                    tracing::error!(what = %unit.label, error = %e, undelivered = unit.entries.len(), "shutdown: could neither store nor deliver; lost");
                    lost.push(unit.label);
                }
            }
        }
        // 3. The outbox itself: what stays there is sent after restart.
        let left = self
            .outbox
            .flush(
                &self.dispatcher,
                &self.policy,
                end.saturating_duration_since(tokio::time::Instant::now()),
            )
            .await;
        match &left {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                pending = n,
                "outbox not empty at shutdown; entries are kept on disk and sent after restart"
            ),
            Err(e) => tracing::error!(error = %e, "shutdown: outbox delivery failed; its entries stay on disk"),
        }
        if !lost.is_empty() {
            const SHOWN: usize = 20;
            let more = lost.len().saturating_sub(SHOWN);
            let mut names = lost.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
            if more > 0 {
                names.push_str(&format!(" and {more} more"));
            }
            return Err(SinkError::Unavailable(format!(
                "{} finished call(s) could not be written to the outbox nor delivered to the \
                 dashboard before shutdown and are lost: {names}",
                lost.len()
            )));
        }
        left.map(|_| ()).map_err(|e| SinkError::Unavailable(e.to_string()))
    }
}

impl OutboxSink {
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// What the outbox refused and memory holds.
    pub fn held(&self) -> &MemoryQueue {
        &self.held
    }

    /// Outbox depth/age/counters plus what memory holds, for `/metrics`.
    ///
    /// # Errors
    /// The outbox file cannot be read.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let now = outbox::now_ms();
        let mut stats = self.outbox.stats(now)?;
        stats.memory = self.held.stats(now);
        Ok(stats)
    }

    /// Tries to commit what memory holds to the outbox (oldest first). Returns how many units
    /// are still held.
    pub async fn retry_held(&self) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let (outbox, held) = (self.outbox.clone(), self.held.clone());
        let left = tokio::task::spawn_blocking(move || held.drain(&outbox, outbox::now_ms())).await;
        left.unwrap_or_else(|_| self.held.len())
    }

    /// Logs a held unit; delivers a unit the full memory queue handed back directly.
    async fn after_submit(&self, submitted: Submitted) -> Result<(), SinkError> {
        match submitted {
            Submitted::Committed { .. } => Ok(()),
            Submitted::Held { held, reason } => {
                tracing::warn!(held_in_memory = held, error = %reason, "the outbox refused the call's entries; they are held in memory and retried (free disk space)");
                Ok(())
            }
            Submitted::Full { mut unit, reason } => {
                let cap = self.held.limits().max_units;
                tracing::error!(what = %unit.label, held_in_memory = self.held.len(), capacity = cap, error = %reason, "the outbox refuses entries and the memory queue is full; delivering directly");
                match outbox::deliver_directly(&*self.dispatcher, &mut unit).await {
                    Ok(()) => {
                        self.held.note_direct();
                        tracing::warn!(what = %unit.label, "delivered directly, bypassing the outbox");
                        Ok(())
                    }
                    Err(e) => {
                        self.held.note_lost();
                        tracing::error!(what = %unit.label, error = %e, undelivered = unit.entries.len(), "could neither store nor deliver; lost");
                        Err(SinkError::Unavailable(format!(
                            "{} is lost: the outbox refused it ({reason}), the memory queue is \
                             full ({cap} held) and direct delivery failed ({e})",
                            unit.label
                        )))
                    }
                }
            }
        }
    }

    /// Retries held units for as long as it runs: every `limits.retry_min` while the outbox
    /// takes them, backing off to `limits.retry_max` while it refuses.
    async fn retry_loop(self: Arc<Self>) {
        let limits = self.held.limits().clone();
        let mut wait = limits.retry_min;
        loop {
            tokio::time::sleep(wait).await;
            wait = if self.retry_held().await == 0 {
                limits.retry_min
            } else {
                (wait * 2).min(limits.retry_max)
            };
        }
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
    /// Bounds of the memory queue for what the outbox refuses (disk full).
    pub memory: MemoryLimits,
    /// Extra webhook handlers (e.g. the policy host swapping a restaurant's tool set on
    /// `policy.updated`); the cache invalidation is always registered.
    pub on_event: Vec<EventHandler>,
}

/// A setting that stops start-up, naming the variable (never its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dashboard setting {name}: {reason}")]
pub struct LinkConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl DashboardLinkConfig {
    /// The link as `cfg` describes it (validated by [`BridgeConfig::validate`]); the dashboard
    /// is the remote one at `dashboard.url`, else the embedded one at `embedded_url`. Caller SMS
    /// use the same Twilio account as call updates.
    ///
    /// # Errors
    /// No dashboard at all, or a setting that does not parse (for a configuration that was
    /// built in code rather than loaded).
    pub fn from_config(cfg: &BridgeConfig, embedded_url: Option<&str>) -> Result<Self, LinkConfigError> {
        let d = &cfg.dashboard;
        let err = |name: &'static str, reason: String| LinkConfigError { name, reason };
        let url = d
            .url
            .clone()
            .or_else(|| embedded_url.map(str::to_owned))
            .ok_or_else(|| err("DASHBOARD_URL", "not set and no embedded dashboard is running".into()))?;
        let mut client = ClientConfig::new(url).timeout(Duration::from_millis(d.timeout_ms));
        if let (Some(id), Some(secret)) = (&d.key_id, &d.signing_secret) {
            client = client.signing_key(id.clone(), secret.clone());
        }
        if let Some(k) = &d.api_key {
            client = client.api_key(k.clone());
        }
        let webhook_secrets = match &d.webhook_secrets {
            Some(v) => pulsara_core::webhooks::parse_secrets(v.expose())
                .map_err(|e| err("DASHBOARD_WEBHOOK_SECRETS", e.to_string()))?,
            None => Vec::new(),
        };
        let smtp = cfg.smtp.url.clone().map(|u| {
            (u, cfg.smtp.from.clone().unwrap_or_else(|| "Pulsara <pulsara@localhost>".to_owned()))
        });
        let twilio = cfg
            .twilio_auth_token
            .clone()
            .filter(|_| !cfg.twilio_account_sid.is_empty())
            .map(|token| (cfg.twilio_api_base.clone(), cfg.twilio_account_sid.clone(), token));
        Ok(Self {
            client,
            cache: CacheConfig { ttl: Duration::from_secs(d.cache_ttl_secs), ..Default::default() },
            webhook_secrets,
            outbox_path: cfg.outbox.path.clone(),
            retry: RetryPolicy::default(),
            smtp,
            twilio,
            flush_deadline: Duration::from_secs(10),
            memory: MemoryLimits {
                max_units: cfg.outbox.memory_calls.max(1),
                max_bytes: cfg.outbox.memory_mb.clamp(1, 1 << 20) << 20,
                ..MemoryLimits::default()
            },
            on_event: Vec::new(),
        })
    }
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
            held: Arc::new(MemoryQueue::new(cfg.memory.clone())),
            configs: configs.clone(),
            dispatcher: dispatcher.clone(),
            policy: cfg.retry.clone(),
            flush_deadline: cfg.flush_deadline,
        });
        let inval = cache.clone();
        let mut receiver = WebhookReceiver::new(cfg.webhook_secrets.clone(), clock)
            .on_event(Arc::new(move |ev| inval.invalidate(ev)));
        for h in &cfg.on_event {
            receiver = receiver.on_event(h.clone());
        }
        let webhook_router = webhook_in::router(Arc::new(receiver));
        let retry = sink.clone().retry_loop();
        let run = outbox::run(outbox, dispatcher, cfg.retry, shutdown);
        // Held units are retried alongside delivery, until shutdown ends both (the sink's flush
        // takes over from there).
        let outbox_task = tokio::spawn(async move {
            tokio::select! {
                _ = run => {}
                _ = retry => {}
            }
        });
        Ok(Self {
            cache,
            configs,
            sink,
            webhook_router,
            outbox_task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge's configuration from these variables plus the required ones.
    fn config(pairs: &[(&str, &str)]) -> Result<BridgeConfig, crate::config::ConfigFileError> {
        let base = [
            ("HANDOFF_KEYS", "k1:handoff-secret-0123456789"),
            ("ELEVENLABS_API_KEY", "xi"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "tw-s3cret"),
            ("PULSARA_DASHBOARD_SIGNING_KEYS", "bridge-eu:bridge:sign-s3cret"),
        ];
        let vars = base.iter().chain(pairs).map(|(k, v)| (k.to_string(), v.to_string()));
        BridgeConfig::load(None, vars.collect::<Vec<_>>())
    }

    #[test]
    fn from_config_reads_settings_and_never_prints_secrets() {
        let cfg = DashboardLinkConfig::from_config(
            &config(&[
                ("DASHBOARD_KEY_ID", "bridge-eu"),
                ("DASHBOARD_SIGNING_SECRET", "sign-s3cret"),
                ("DASHBOARD_WEBHOOK_SECRETS", "whsec_YQ==, whsec_Yg=="),
                ("SMTP_URL", "smtp://u:mail-s3cret@127.0.0.1:2525"),
            ])
            .unwrap(),
            Some("http://127.0.0.1:8787"),
        )
        .unwrap();
        assert_eq!(cfg.client.base_url, "http://127.0.0.1:8787");
        assert_eq!(cfg.webhook_secrets.len(), 2);
        let (base, sid, _) = cfg.twilio.as_ref().unwrap();
        assert_eq!((base.as_str(), sid.as_str()), ("https://api.twilio.com", "AC1"));
        assert_eq!(cfg.smtp.as_ref().unwrap().1, "Pulsara <pulsara@localhost>");
        assert!(!format!("{:?}", cfg.client).contains("s3cret"));
        let remote = DashboardLinkConfig::from_config(
            &config(&[("DASHBOARD_URL", "https://dash.example"), ("DASHBOARD_API_KEY", "pk_x")]).unwrap(),
            Some("http://127.0.0.1:8787"),
        )
        .unwrap();
        assert_eq!(remote.client.base_url, "https://dash.example");
        assert_eq!(
            (remote.memory.max_units, remote.memory.max_bytes, remote.cache.ttl),
            (1_000, 64 << 20, Duration::from_secs(60)),
            "memory queue and cache defaults"
        );
        // A configuration built in code with no dashboard at all.
        let mut bare = BridgeConfig::default();
        bare.dashboard.url = None;
        assert_eq!(DashboardLinkConfig::from_config(&bare, None).err().map(|e| e.name), Some("DASHBOARD_URL"));
    }

    #[test]
    fn the_twilio_account_in_the_file_reaches_caller_sms_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "twilio_account_sid = \"ACfile\"\ntwilio_auth_token = \"file-token\"\ntwilio_api_base = \"http://127.0.0.1:9\"\n",
        )
        .unwrap();
        let vars = [
            ("HANDOFF_KEYS", "k1:handoff-secret-0123456789"),
            ("ELEVENLABS_API_KEY", "xi"),
            ("DASHBOARD_API_KEY", "pk"),
            ("PULSARA_DASHBOARD_SIGNING_KEYS", "b:bridge:s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let cfg = BridgeConfig::load(Some(&file), vars).unwrap();
        let link = DashboardLinkConfig::from_config(&cfg, Some("http://127.0.0.1:1")).unwrap();
        let (base, sid, token) = link.twilio.expect("SMS configured from the file");
        assert_eq!((base.as_str(), sid.as_str(), token.expose()), ("http://127.0.0.1:9", "ACfile", "file-token"));
    }

    #[test]
    fn a_malformed_webhook_secret_in_the_rotation_list_stops_start_up_without_echoing_it() {
        let with = |secrets: &str| config(&[("DASHBOARD_API_KEY", "k"), ("DASHBOARD_WEBHOOK_SECRETS", secrets)]);
        let Err(e) = with("whsec_YQ==, whsec_r0tated-s3cret!") else {
            panic!("a malformed entry must be refused at start-up")
        };
        let text = e.to_string();
        assert!(text.contains("DASHBOARD_WEBHOOK_SECRETS") && text.contains("entry 2 of 2"), "{text}");
        assert!(!text.contains("r0tated-s3cret") && !text.contains("YQ=="), "{text}");
        // Unpadded base64, as the Standard Webhooks reference library accepts it.
        let ok = with("whsec_cHVsc2FyYS13ZWJob29rcw,whsec_YQ").unwrap_or_else(|e| panic!("{e}"));
        let link = DashboardLinkConfig::from_config(&ok, Some("http://127.0.0.1:1")).unwrap();
        assert_eq!(link.webhook_secrets.len(), 2);
    }

    /// The whole link on loopback: embedded dashboard seeded from `restaurants/`, configuration
    /// through the cache, a record through the outbox sink, delivered by the background task.
    #[tokio::test]
    async fn link_serves_configs_and_delivers_records_to_the_embedded_dashboard() {
        use pulsara_dashboard::auth::SigningKeys;
        use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
        use pulsara_dashboard::seed::SeedOptions;

        let dir = std::env::temp_dir().join(format!("pulsara-link-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dash = EmbeddedDashboard::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            EmbeddedOptions {
                db_path: None,
                restaurants_dir: Some(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../restaurants"),
                ),
                seed: SeedOptions {
                    manifest: None,
                    strict: false,
                },
                signing_keys: SigningKeys::parse(&Secret::new("bridge1:bridge:link-secret"))
                    .unwrap(),
            },
            pulsara_dashboard::system_clock(),
        )
        .await
        .unwrap();
        let outbox_path = dir.join("outbox.db");
        let outbox_str = outbox_path.to_str().unwrap().to_owned();
        let cfg = DashboardLinkConfig::from_config(
            &config(&[
                ("DASHBOARD_KEY_ID", "bridge1"),
                ("DASHBOARD_SIGNING_SECRET", "link-secret"),
                ("PULSARA_OUTBOX_PATH", &outbox_str),
            ])
            .unwrap(),
            Some(&dash.url()),
        )
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let link = DashboardLink::start(cfg, pulsara_dashboard::system_clock(), async move {
            let _ = rx.await;
        })
        .unwrap();
        let sushi = link.configs.restaurant("sakura-sushi").await.unwrap();
        assert_eq!(sushi.time_zone, "Asia/Tokyo");
        assert!(!link
            .configs
            .knowledge_base("sakura-sushi")
            .await
            .unwrap()
            .menu
            .is_empty());
        assert!(matches!(
            link.configs.restaurant("nope").await,
            Err(ConfigError::NotFound(_))
        ));

        let record = CallRecord {
            call_sid: "CA-link".into(),
            restaurant_id: "sakura-sushi".into(),
            started_at: "2026-11-28T10:00:00Z".into(),
            ended_at: "2026-11-28T10:01:00Z".into(),
            ..Default::default()
        };
        link.sink.deliver(record).await.unwrap();
        let mut stored = None;
        for _ in 0..250 {
            stored = dash.store.call("CA-link").unwrap();
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stored = stored.expect("record delivered by the outbox task");
        assert!(stored["summary"]["paragraph"].is_string());
        link.sink.flush().await.unwrap();
        assert_eq!(link.sink.stats().unwrap().depth, 0);
        let _ = tx.send(());
        link.outbox_task.await.unwrap();
        dash.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
