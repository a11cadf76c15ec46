//! ElevenLabs sessions prepared while Twilio connects. When the edge answers an open
//! restaurant's call with its `<Connect><Stream>` TwiML, it also posts the call's handoff token
//! to `POST /prepare` on that region's bridge, without delaying the TwiML. The bridge then fetches
//! the signed URL, opens the ElevenLabs socket and sends the initiation, while Twilio is still
//! setting up its stream. When the stream's `start` arrives with the same token, the call adopts
//! the prepared session ([`Preparations::claim`]) and the greeting, already on its way, plays at
//! once; nothing is read from the agent socket before that, so nothing is lost.
//!
//! A prepare is authenticated by the handoff token it carries (signed by the edge, naming the
//! call, the region and an expiry) and is single use. Prepared sessions are bounded in number,
//! in total and per restaurant; one nobody claims within `limits.prepare_ttl_ms` is closed, and
//! the ElevenLabs seconds it held are counted. A prepare that fails or is refused changes
//! nothing for the call: its stream connects as it always has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use pulsara_core::handoff::HandoffClaims;

use crate::agent::ConnectResult;
use crate::app::App;
use crate::config::ms;

/// Largest `POST /prepare` body read (a token and two phone numbers).
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// The body the edge posts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareBody {
    pub call_sid: String,
    /// The handoff token of the call's TwiML.
    pub handoff: String,
    #[serde(default)]
    pub caller: String,
    #[serde(default)]
    pub called: String,
}

/// Why a prepare was not taken (the edge only logs it; the call connects on its stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepareRefusal {
    Malformed,
    BadToken,
    Replayed,
    Full,
    RestaurantFull,
    Draining,
}

impl PrepareRefusal {
    pub const ALL: [PrepareRefusal; 6] = [
        PrepareRefusal::Malformed,
        PrepareRefusal::BadToken,
        PrepareRefusal::Replayed,
        PrepareRefusal::Full,
        PrepareRefusal::RestaurantFull,
        PrepareRefusal::Draining,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PrepareRefusal::Malformed => "malformed",
            PrepareRefusal::BadToken => "bad_token",
            PrepareRefusal::Replayed => "replayed",
            PrepareRefusal::Full => "full",
            PrepareRefusal::RestaurantFull => "restaurant_full",
            PrepareRefusal::Draining => "draining",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            PrepareRefusal::Malformed => StatusCode::BAD_REQUEST,
            PrepareRefusal::BadToken => StatusCode::FORBIDDEN,
            PrepareRefusal::Replayed => StatusCode::CONFLICT,
            PrepareRefusal::Full | PrepareRefusal::RestaurantFull => StatusCode::TOO_MANY_REQUESTS,
            PrepareRefusal::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What became of prepared sessions, for `/metrics`.
struct PrepareMetrics {
    refused: IntCounterVec,
    accepted: IntCounter,
    claimed: IntCounter,
    unclaimed: IntCounter,
    /// Milliseconds unclaimed sessions held an open ElevenLabs conversation.
    unclaimed_agent_ms: IntCounter,
    held: IntGauge,
}

struct Entry {
    restaurant: String,
    token_digest: String,
    connect: JoinHandle<ConnectResult>,
    /// When the agent socket became ready (the ElevenLabs conversation began).
    opened: Arc<OnceLock<Instant>>,
}

#[derive(Default)]
struct Held {
    by_call: HashMap<String, Entry>,
    per_restaurant: HashMap<String, usize>,
}

impl Held {
    fn take(&mut self, call_sid: &str) -> Option<Entry> {
        let e = self.by_call.remove(call_sid)?;
        if let Some(n) = self.per_restaurant.get_mut(&e.restaurant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_restaurant.remove(&e.restaurant);
            }
        }
        Some(e)
    }
}

/// The prepared sessions of this process.
pub struct Preparations {
    held: Mutex<Held>,
    metrics: PrepareMetrics,
}

/// The replay-cache key a prepare and its stream meet at.
fn prepare_key(claims: &HandoffClaims) -> String {
    format!("prepare:{}", claims.replay_key())
}

fn digest(token: &str) -> String {
    pulsara_core::crypto::sha256_hex(token.as_bytes())
}

impl Preparations {
    /// # Errors
    /// The families are already registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let refused = IntCounterVec::new(
            Opts::new("pulsara_prepare_refused_total", "Prepare requests refused, by reason (the call connects on its stream)."),
            &["reason"],
        )?;
        let accepted = IntCounter::new("pulsara_prepare_accepted_total", "Prepare requests taken: an ElevenLabs session opened ahead of the stream.")?;
        let claimed = IntCounter::new("pulsara_prepare_claimed_total", "Prepared sessions adopted by their call's stream.")?;
        let unclaimed = IntCounter::new("pulsara_prepare_unclaimed_total", "Prepared sessions closed because no stream claimed them in time.")?;
        let unclaimed_agent_ms = IntCounter::new(
            "pulsara_prepare_unclaimed_agent_ms_total",
            "Milliseconds of ElevenLabs conversation held open by prepared sessions nobody claimed (what preparing cost).",
        )?;
        let held = IntGauge::new("pulsara_prepared_sessions", "Prepared sessions waiting for their stream.")?;
        for r in PrepareRefusal::ALL {
            refused.with_label_values(&[r.label()]);
        }
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(claimed.clone()))?;
        registry.register(Box::new(unclaimed.clone()))?;
        registry.register(Box::new(unclaimed_agent_ms.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(Preparations {
            held: Mutex::default(),
            metrics: PrepareMetrics { refused, accepted, claimed, unclaimed, unclaimed_agent_ms, held },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refuse(&self, why: PrepareRefusal, detail: &str) -> Response {
        self.metrics.refused.with_label_values(&[why.label()]).inc();
        warn!(reason = why.label(), detail, "prepare refused; the call will connect on its stream");
        (why.status(), why.label()).into_response()
    }

    /// Takes the place of `call_sid` for a prepare, or says why there is none. The token's
    /// prepare key is used under the same lock a stream claims under, so a prepare and its
    /// stream never both miss each other: whichever comes first decides.
    fn reserve(&self, app: &App, claims: &HandoffClaims, call_sid: &str, entry: impl FnOnce() -> Entry) -> Result<(), PrepareRefusal> {
        let l = &app.cfg.limits;
        let mut held = self.lock();
        if !app.replay.first_use(&prepare_key(claims), claims.exp, app.clock.peer_unix()) || held.by_call.contains_key(call_sid) {
            return Err(PrepareRefusal::Replayed);
        }
        if held.by_call.len() >= l.max_prepared {
            return Err(PrepareRefusal::Full);
        }
        let restaurant = &claims.restaurant_id;
        if held.per_restaurant.get(restaurant).copied().unwrap_or(0) >= l.max_prepared_per_restaurant {
            return Err(PrepareRefusal::RestaurantFull);
        }
        *held.per_restaurant.entry(restaurant.clone()).or_default() += 1;
        held.by_call.insert(call_sid.to_owned(), entry());
        self.metrics.held.set(held.by_call.len() as i64);
        Ok(())
    }

    /// For a stream that has just started: the session prepared for it with this very `token`,
    /// if one is (its connection, finished or under way). When none was prepared, a prepare
    /// arriving later is refused (the stream connects on its own).
    pub fn claim_for_stream(&self, app: &App, claims: &HandoffClaims, call_sid: &str, token: &str) -> Option<JoinHandle<ConnectResult>> {
        let mut held = self.lock();
        if app.replay.first_use(&prepare_key(claims), claims.exp, app.clock.peer_unix()) {
            return None;
        }
        if held.by_call.get(call_sid)?.token_digest != digest(token) {
            return None;
        }
        let e = held.take(call_sid)?;
        self.metrics.held.set(held.by_call.len() as i64);
        self.metrics.claimed.inc();
        Some(e.connect)
    }

    /// Closes `call_sid`'s session if it is still unclaimed.
    async fn expire(&self, call_sid: &str) {
        let entry = {
            let mut held = self.lock();
            let e = held.take(call_sid);
            self.metrics.held.set(held.by_call.len() as i64);
            e
        };
        let Some(e) = entry else { return };
        self.metrics.unclaimed.inc();
        if let Some(at) = e.opened.get() {
            self.metrics.unclaimed_agent_ms.inc_by(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        if e.connect.is_finished() {
            if let Ok(Ok((mut socket, _))) = e.connect.await {
                let _ = socket.close(None).await;
            }
        } else {
            e.connect.abort();
        }
        warn!(call_sid, restaurant = %e.restaurant, "prepared session closed: no stream claimed it in time");
    }
}

/// `POST /prepare`: opens the ElevenLabs session of a call whose TwiML the edge just sent.
pub async fn prepare(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let p = &app.prepared;
    if !app.is_ready() {
        return p.refuse(PrepareRefusal::Draining, "draining");
    }
    if body.len() > MAX_BODY_BYTES {
        return p.refuse(PrepareRefusal::Malformed, "body too large");
    }
    let req: PrepareBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return p.refuse(PrepareRefusal::Malformed, "not a prepare body"),
    };
    let region = (!app.cfg.region.is_empty()).then_some(app.cfg.region.as_str());
    let now = app.clock.peer_unix();
    let (claims, _) = match app.keys.verify_with_fallback(&req.handoff, &req.call_sid, region, now) {
        Ok(c) => c,
        Err(e) => return p.refuse(PrepareRefusal::BadToken, &e.to_string()),
    };
    let opened: Arc<OnceLock<Instant>> = Arc::default();
    let mark_open = opened.clone();
    let (app2, restaurant, caller) = (app.clone(), claims.restaurant_id.clone(), req.caller.clone());
    // Everything slow (configuration, signed URL, socket, initiation) runs in the session's
    // own task, so the place is held from the first moment.
    let connect = move || {
        tokio::spawn(async move {
            let loaded = tokio::try_join!(app2.configs.restaurant(&restaurant), app2.configs.knowledge_base(&restaurant));
            let (cfg, kb) = match loaded {
                Ok(l) => l,
                Err(e) => {
                    warn!(restaurant, error = %e, "prepare: configuration unavailable; the stream will connect on its own");
                    return Err(crate::agent::AgentError::ClosedEarly);
                }
            };
            let r = match crate::session::connect_task(app2.clone(), cfg, kb, caller, 1, None).await {
                Ok(r) => r,
                Err(_) => Err(crate::agent::AgentError::ClosedEarly),
            };
            if r.is_ok() {
                let _ = mark_open.set(Instant::now());
            }
            r
        })
    };
    let entry = || Entry { restaurant: claims.restaurant_id.clone(), token_digest: digest(&req.handoff), connect: connect(), opened };
    if let Err(why) = p.reserve(&app, &claims, &req.call_sid, entry) {
        return p.refuse(why, "not prepared");
    }
    p.metrics.accepted.inc();
    info!(call_sid = %req.call_sid, restaurant = %claims.restaurant_id, "preparing the agent session ahead of the stream");
    let ttl = ms(app.cfg.limits.prepare_ttl_ms);
    let app2 = app.clone();
    let call_sid = req.call_sid;
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(ttl) => {}
            () = app2.draining.cancelled() => {}
        }
        app2.prepared.expire(&call_sid).await;
    });
    (StatusCode::ACCEPTED, "preparing").into_response()
}
