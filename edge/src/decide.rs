//! The edge's decisions as pure functions: given a request (and, for a call, the restaurant
//! lookup result and the time), what to answer. No storage, network or clock here; the
//! orchestration in [`crate::flow`] feeds these and performs the I/O they ask for.
//!
//! Error policy lives in one place, [`refuse`]: on Twilio routes every outcome after signature
//! verification is `200` + TwiML (the fallback document when something failed internally); only an
//! unverifiable request gets `403` (or `413` for an oversized body, which cannot be Twilio's).
//! Other routes answer `4xx` for bad input and `502/503` when the dashboard cannot take a forward.

use chrono::{DateTime, Utc};
use pulsara_core::config::{AfterHours, RestaurantConfig};
use pulsara_core::handoff::HandoffClaims;
use pulsara_core::hours::{self, HoursStatus};
use pulsara_core::{phone, request_auth, twilio, twiml, webhooks};
use serde::Deserialize;

use crate::cache::{ConfigLookup, Source};
use crate::http::{Inbound, Outbound, Reply, JSON, MAX_BODY_BYTES};
use crate::settings::Settings;

/// Spoken when no restaurant config is available and nothing better is known.
pub const GENERIC_APOLOGY: &str =
    "Sorry, we cannot take your call right now. Please try again in a few minutes. Goodbye.";
/// Header honoured only with `ALLOW_TEST_CLOCK=1` (tests): unix seconds used for the opening-hours
/// decision instead of the real time.
pub const TEST_NOW_HEADER: &str = "x-pulsara-test-now";

/// The routes the edge serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Voice,
    Status,
    DashboardWebhook,
    ElevenLabsWebhook,
    Health,
    NotFound,
    MethodNotAllowed,
}

impl Route {
    pub fn of(method: &str, path: &str) -> Route {
        let expected = match path {
            "/twilio/voice" => (Route::Voice, "POST"),
            "/twilio/status" => (Route::Status, "POST"),
            "/webhooks/dashboard" => (Route::DashboardWebhook, "POST"),
            "/webhooks/elevenlabs" => (Route::ElevenLabsWebhook, "POST"),
            "/healthz" => (Route::Health, "GET"),
            _ => return Route::NotFound,
        };
        if method.eq_ignore_ascii_case(expected.1) {
            expected.0
        } else {
            Route::MethodNotAllowed
        }
    }

    /// Twilio routes must always get TwiML after verification.
    pub fn is_twilio(self) -> bool {
        matches!(self, Route::Voice | Route::Status)
    }
}

/// Why a request was not handled normally. Mapped to a response in exactly one place: [`refuse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Signature missing or wrong: `403`.
    Forbidden(String),
    /// Body over [`MAX_BODY_BYTES`]: `413`.
    TooLarge(usize),
    /// Signed but unusable input: `400` (TwiML fallback on Twilio routes).
    BadRequest(String),
    /// Replayed webhook id: `409`, nothing done.
    Replayed,
    NotFound,
    MethodNotAllowed,
    /// The edge's settings are invalid: fallback TwiML on Twilio routes, `503` elsewhere.
    Misconfigured,
    /// The dashboard did not take a forwarded event: `502` so the sender retries.
    UpstreamFailed(String),
}

/// The one mapping from a [`Refusal`] to a response. On Twilio routes, anything other than an
/// unverifiable request becomes `200` + fallback TwiML (the restaurant's fallback number when its
/// config is known, else an apology).
pub fn refuse(route: Route, refusal: &Refusal, config: Option<&RestaurantConfig>) -> Reply {
    match refusal {
        Refusal::Forbidden(_) => Reply::text(403, "signature check failed"),
        Refusal::TooLarge(n) => Reply::text(413, format!("body of {n} bytes exceeds the {MAX_BODY_BYTES}-byte limit")),
        _ if route == Route::Voice => Reply::twiml(fallback_twiml(config)),
        _ if route == Route::Status => Reply::twiml(empty_twiml()),
        Refusal::BadRequest(why) => Reply::text(400, why.clone()),
        Refusal::Replayed => Reply::text(409, "webhook id already processed"),
        Refusal::NotFound => Reply::text(404, "not found"),
        Refusal::MethodNotAllowed => Reply::text(405, "method not allowed"),
        Refusal::Misconfigured => Reply::text(503, "edge is misconfigured; see its logs"),
        Refusal::UpstreamFailed(_) => Reply::text(502, "dashboard did not accept the event; retry later"),
    }
}

/// `<Response/>`: acknowledges a status callback.
pub fn empty_twiml() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.to_owned()
}

/// The safe answer when a call cannot be handled.
pub fn fallback_twiml(config: Option<&RestaurantConfig>) -> String {
    match config {
        Some(c) => twiml::fallback(
            c.fallback_target(),
            c.agent.apology_message.as_deref().unwrap_or(GENERIC_APOLOGY),
        ),
        None => twiml::fallback(None, GENERIC_APOLOGY),
    }
}

fn check_size(req: &Inbound) -> Result<(), Refusal> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Refusal::TooLarge(req.body.len()));
    }
    Ok(())
}

/// Parses and verifies a Twilio form POST (signature over `PUBLIC_BASE_URL` + path + query and
/// every parameter).
///
/// # Errors
/// [`Refusal::TooLarge`], or [`Refusal::Forbidden`] for anything unverifiable.
pub fn verify_twilio(settings: &Settings, req: &Inbound) -> Result<Vec<(String, String)>, Refusal> {
    check_size(req)?;
    let params = twilio::parse_form(&req.body).map_err(|e| Refusal::Forbidden(e.to_string()))?;
    let url = settings.public_url(&req.path_and_query());
    twilio::validate(&settings.twilio_auth_token, &url, &params, req.header("x-twilio-signature"))
        .map_err(|e| Refusal::Forbidden(e.to_string()))?;
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A verified voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceCall {
    pub call_sid: String,
    /// The caller (`From`), as Twilio sent it.
    pub from: String,
    /// The number dialled (`To`), in E.164.
    pub to: String,
}

/// Verifies a voice webhook and extracts the call.
///
/// # Errors
/// [`Refusal::Forbidden`]/[`Refusal::TooLarge`] for unverifiable requests;
/// [`Refusal::BadRequest`] when a signed request lacks `CallSid` or a usable `To`.
pub fn voice_call(settings: &Settings, req: &Inbound) -> Result<VoiceCall, Refusal> {
    let params = verify_twilio(settings, req)?;
    let call_sid = param(&params, "CallSid")
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or_else(|| Refusal::BadRequest("voice webhook has no CallSid".into()))?
        .to_owned();
    let to_raw = param(&params, "To").ok_or_else(|| Refusal::BadRequest("voice webhook has no To".into()))?;
    let to = phone::normalize_e164(to_raw).map_err(|e| Refusal::BadRequest(format!("To: {e}")))?;
    let from = param(&params, "From").unwrap_or("").chars().take(64).collect();
    Ok(VoiceCall { call_sid, from, to })
}

/// Whether `config` lists `e164` among its numbers (compared after normalisation).
pub fn owns_number(config: &RestaurantConfig, e164: &str) -> bool {
    config.phone_numbers.iter().any(|n| phone::normalize_e164(n).is_ok_and(|n| n == e164))
}

/// What the edge decided for a call (logged by the shells, asserted by tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceOutcome {
    Stream { restaurant_id: String, region: String, config_version: u64, source: Source },
    AfterHours { restaurant_id: String, mode: &'static str },
    UnknownNumber,
    Fallback { reason: String },
}

/// The instant used for the opening-hours decision: the real `now`, or the test clock header
/// when `ALLOW_TEST_CLOCK=1`.
pub fn hours_instant(settings: &Settings, req: &Inbound, now: DateTime<Utc>) -> DateTime<Utc> {
    if !settings.allow_test_clock {
        return now;
    }
    req.header(TEST_NOW_HEADER)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(now)
}

/// Decides the TwiML for a verified call, given the config lookup.
///
/// `now` is the real time (token issue time); `hours_at` is the instant the opening hours are
/// evaluated at (equal to `now` outside tests).
pub fn answer_call(
    settings: &Settings,
    call: &VoiceCall,
    lookup: &ConfigLookup,
    now: DateTime<Utc>,
    hours_at: DateTime<Utc>,
) -> (Reply, VoiceOutcome) {
    let (config, source) = match lookup {
        ConfigLookup::Found { config, source } => (config.as_ref(), *source),
        ConfigLookup::UnknownNumber => {
            return (Reply::twiml(twiml::unknown_number("en")), VoiceOutcome::UnknownNumber);
        }
        ConfigLookup::Unavailable(why) => {
            let reply = refuse(Route::Voice, &Refusal::BadRequest(why.clone()), None);
            return (reply, VoiceOutcome::Fallback { reason: format!("no config: {why}") });
        }
    };
    let fallback = |reason: String| {
        (refuse(Route::Voice, &Refusal::BadRequest(reason.clone()), Some(config)), VoiceOutcome::Fallback { reason })
    };
    let tz = match hours::parse_tz(&config.time_zone) {
        Ok(tz) => tz,
        Err(e) => return fallback(format!("restaurant {}: {e}", config.id)),
    };
    match hours::status(&config.hours, tz, hours_at) {
        HoursStatus::Open { .. } => {}
        HoursStatus::Closed { .. } => {
            let callback = settings.public_url("/twilio/status?kind=recording");
            let mode = match &config.after_hours {
                AfterHours::Message { .. } => "message",
                AfterHours::Voicemail { .. } => "voicemail",
                AfterHours::Forward { .. } => "forward",
            };
            let body = twiml::after_hours(&config.after_hours, &config.agent.language, &callback);
            return (Reply::twiml(body), VoiceOutcome::AfterHours { restaurant_id: config.id.clone(), mode });
        }
    }
    let (region, stream_url) = settings.bridge_for(&config.region);
    let issued_at = now.timestamp();
    let claims = HandoffClaims {
        call_sid: call.call_sid.clone(),
        restaurant_id: config.id.clone(),
        config_version: config.version,
        region: region.to_owned(),
        iat: issued_at,
        exp: issued_at + settings.handoff_ttl_secs,
    };
    let token = match settings.handoff_keys.issue(&claims) {
        Ok(t) => t,
        Err(e) => return fallback(format!("handoff token: {e}")),
    };
    let version = config.version.to_string();
    let params = [
        ("handoff", token.as_str()),
        ("restaurant_id", config.id.as_str()),
        ("config_version", version.as_str()),
        ("caller", call.from.as_str()),
        ("called", call.to.as_str()),
    ];
    match twiml::stream(stream_url, &params) {
        Ok(body) => (
            Reply::twiml(body),
            VoiceOutcome::Stream {
                restaurant_id: config.id.clone(),
                region: region.to_owned(),
                config_version: config.version,
                source,
            },
        ),
        Err(e) => fallback(format!("stream TwiML: {e}")),
    }
}

/// Signs a request to the dashboard (`path_and_query` starts with `/v1/`).
pub fn dashboard_request(
    settings: &Settings,
    method: &'static str,
    path_and_query: &str,
    body: Vec<u8>,
    extra_headers: Vec<(String, String)>,
    now_unix: i64,
    nonce: &str,
) -> Outbound {
    let mut headers: Vec<(String, String)> = request_auth::sign(
        &settings.dashboard_key_id,
        &settings.dashboard_signing_secret,
        method,
        path_and_query,
        now_unix,
        nonce,
        &body,
    )
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if !body.is_empty() {
        headers.push(("Content-Type".into(), JSON.into()));
    }
    headers.extend(extra_headers);
    Outbound { method, url: format!("{}{}", settings.dashboard_url, path_and_query), headers, body }
}

/// `GET /v1/restaurants/by-number/{e164}`, with `If-None-Match` when an ETag is cached.
pub fn config_request(settings: &Settings, e164: &str, etag: Option<&str>, now_unix: i64, nonce: &str) -> Outbound {
    // `e164` is `+` and digits only (normalised), so it needs no escaping in a path.
    let path = format!("/v1/restaurants/by-number/{e164}");
    let extra = etag.map(|e| vec![("If-None-Match".to_owned(), e.to_owned())]).unwrap_or_default();
    dashboard_request(settings, "GET", &path, Vec::new(), extra, now_unix, nonce)
}

/// Verifies a status callback and builds the lifecycle event to forward to the dashboard
/// (`POST /v1/calls/{call_sid}/events`): `{"source":"twilio","kind":"call"|"recording",
/// "call_sid","call_status","received_at","params":{…every Twilio parameter…}}`.
///
/// # Errors
/// As [`verify_twilio`]; [`Refusal::BadRequest`] without a usable `CallSid`.
pub fn status_event(settings: &Settings, req: &Inbound, now_unix: i64, nonce: &str) -> Result<Outbound, Refusal> {
    let params = verify_twilio(settings, req)?;
    let call_sid = param(&params, "CallSid")
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| Refusal::BadRequest("status callback has no valid CallSid".into()))?;
    let kind = if req.query.split('&').any(|kv| kv == "kind=recording") { "recording" } else { "call" };
    let map: serde_json::Map<String, serde_json::Value> =
        params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    let event = serde_json::json!({
        "source": "twilio",
        "kind": kind,
        "call_sid": call_sid,
        "call_status": param(&params, "CallStatus"),
        "received_at": now_unix,
        "params": map,
    });
    let body = serde_json::to_vec(&event).unwrap_or_default();
    Ok(dashboard_request(settings, "POST", &format!("/v1/calls/{call_sid}/events"), body, Vec::new(), now_unix, nonce))
}

/// A verified dashboard webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardEvent {
    pub webhook_id: String,
    pub kind: String,
    pub restaurant_id: String,
    pub version: u64,
}

#[derive(Deserialize)]
struct EventBody {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    restaurant_id: String,
    #[serde(default)]
    version: u64,
}

/// Verifies a Standard Webhooks delivery from the dashboard and parses its event. Replay
/// protection (the id) is the caller's next step.
///
/// # Errors
/// [`Refusal::Forbidden`] for a bad signature, [`Refusal::BadRequest`] for an unknown payload.
pub fn dashboard_event(settings: &Settings, req: &Inbound, now_unix: i64) -> Result<DashboardEvent, Refusal> {
    check_size(req)?;
    webhooks::verify(
        &settings.dashboard_webhook_secrets,
        req.header("webhook-id"),
        req.header("webhook-timestamp"),
        req.header("webhook-signature"),
        &req.body,
        now_unix,
    )
    .map_err(|e| Refusal::Forbidden(e.to_string()))?;
    let body: EventBody =
        serde_json::from_slice(&req.body).map_err(|e| Refusal::BadRequest(format!("webhook body: {e}")))?;
    if body.data.restaurant_id.is_empty() || body.data.restaurant_id.len() > 128 {
        return Err(Refusal::BadRequest("webhook body has no valid restaurant_id".into()));
    }
    Ok(DashboardEvent {
        webhook_id: req.header("webhook-id").unwrap_or_default().to_owned(),
        kind: body.kind,
        restaurant_id: body.data.restaurant_id,
        version: body.data.version,
    })
}

/// Verifies an ElevenLabs post-call webhook and builds the signed forward to
/// `POST /v1/post-call` (the body unchanged).
///
/// # Errors
/// [`Refusal::Forbidden`] when no secret is configured (fail closed) or the signature is bad;
/// [`Refusal::BadRequest`] when the body is not JSON.
pub fn elevenlabs_forward(settings: &Settings, req: &Inbound, now_unix: i64, nonce: &str) -> Result<Outbound, Refusal> {
    check_size(req)?;
    let secret = settings
        .elevenlabs_webhook_secret
        .as_ref()
        .ok_or_else(|| Refusal::Forbidden("ELEVENLABS_WEBHOOK_SECRET is not set".into()))?;
    webhooks::verify_elevenlabs(
        secret,
        req.header("elevenlabs-signature"),
        &req.body,
        now_unix,
        webhooks::ELEVENLABS_TOLERANCE_SECS,
    )
    .map_err(|e| Refusal::Forbidden(e.to_string()))?;
    if serde_json::from_slice::<serde_json::Value>(&req.body).is_err() {
        return Err(Refusal::BadRequest("post-call webhook body is not JSON".into()));
    }
    Ok(dashboard_request(settings, "POST", "/v1/post-call", req.body.clone(), Vec::new(), now_unix, nonce))
}
