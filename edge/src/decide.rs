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
use pulsara_core::handoff::{HandoffClaims, HandoffFallback};
use pulsara_core::hours::{self, HoursStatus};
use pulsara_core::twiml::SayVoice;
use pulsara_core::{phone, request_auth, twilio, twiml, webhooks};
use serde::Deserialize;

use crate::cache::{ConfigLookup, Source};
use crate::http::{Inbound, Outbound, Reply, JSON, MAX_BODY_BYTES};
use crate::settings::Settings;

/// Spoken when no restaurant config is available and nothing better is known.
pub const GENERIC_APOLOGY: &str =
    "Sorry, we cannot take your call right now. Please try again in a few minutes. Goodbye.";
/// Spoken before the caller is put through to the restaurant's fallback line when its config has
/// no apology message of its own.
pub const GENERIC_TRANSFER: &str =
    "Sorry, our phone assistant cannot take your call right now. Please hold while we put you through to the restaurant.";
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
        Refusal::TooLarge(n) => Reply::text(
            413,
            format!("body of {n} bytes exceeds the {MAX_BODY_BYTES}-byte limit"),
        ),
        _ if route == Route::Voice => Reply::twiml(fallback_twiml(config)),
        _ if route == Route::Status => Reply::twiml(empty_twiml()),
        Refusal::BadRequest(why) => Reply::text(400, why.clone()),
        Refusal::Replayed => Reply::text(409, "webhook id already processed"),
        Refusal::NotFound => Reply::text(404, "not found"),
        Refusal::MethodNotAllowed => Reply::text(405, "method not allowed"),
        Refusal::Misconfigured => Reply::text(503, "edge is misconfigured; see its logs"),
        Refusal::UpstreamFailed(_) => {
            Reply::text(502, "dashboard did not accept the event; retry later")
        }
    }
}

/// `<Response/>`: acknowledges a status callback.
pub fn empty_twiml() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#.to_owned()
}

/// The safe answer when a call cannot be handled, spoken in the restaurant's `<Say>` language and
/// voice when its config is known.
pub fn fallback_twiml(config: Option<&RestaurantConfig>) -> String {
    match config {
        Some(c) => {
            let number = c.fallback_target();
            let generic = if number.is_some() {
                GENERIC_TRANSFER
            } else {
                GENERIC_APOLOGY
            };
            c.say_voice()
                .fallback(number, c.agent.apology_message.as_deref().unwrap_or(generic))
        }
        None => SayVoice::default().fallback(None, GENERIC_APOLOGY),
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
    twilio::validate(
        &settings.twilio_auth_token,
        &url,
        &params,
        req.header("x-twilio-signature"),
    )
    .map_err(|e| Refusal::Forbidden(e.to_string()))?;
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
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
    let to_raw = param(&params, "To")
        .ok_or_else(|| Refusal::BadRequest("voice webhook has no To".into()))?;
    let to = phone::normalize_e164(to_raw).map_err(|e| Refusal::BadRequest(format!("To: {e}")))?;
    let from = param(&params, "From")
        .unwrap_or("")
        .chars()
        .take(64)
        .collect();
    Ok(VoiceCall { call_sid, from, to })
}

/// Whether `config` lists `e164` among its numbers (compared after normalisation).
pub fn owns_number(config: &RestaurantConfig, e164: &str) -> bool {
    config
        .phone_numbers
        .iter()
        .any(|n| phone::normalize_e164(n).is_ok_and(|n| n == e164))
}

/// What the edge decided for a call (logged by the shells, asserted by tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceOutcome {
    Stream {
        restaurant_id: String,
        region: String,
        config_version: u64,
        source: Source,
    },
    AfterHours {
        restaurant_id: String,
        mode: &'static str,
    },
    UnknownNumber,
    Fallback {
        reason: String,
    },
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

/// How long the edge's `POST /prepare` to a bridge may take (it runs after the reply).
pub const PREPARE_TIMEOUT_MS: u64 = 3_000;

/// The reply to a voice webhook, and the bridge's `POST /prepare` to send after it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    pub outcome: VoiceOutcome,
    /// For an open restaurant (with `PREPARE_SESSIONS` on): the request that has the bridge open
    /// the agent session while Twilio connects to it.
    pub prepare: Option<Outbound>,
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
    let a = answer(settings, call, lookup, now, hours_at);
    (a.reply, a.outcome)
}

/// As [`answer_call`], with the bridge's prepare request.
pub fn answer(
    settings: &Settings,
    call: &VoiceCall,
    lookup: &ConfigLookup,
    now: DateTime<Utc>,
    hours_at: DateTime<Utc>,
) -> Answer {
    let mut prepare = None;
    let (reply, outcome) = decide_answer(settings, call, lookup, now, hours_at, &mut prepare);
    Answer { reply, outcome, prepare }
}

/// The bridge's `POST /prepare` URL for a region: `BRIDGE_PREPARE_URLS`' entry, else derived from
/// its Stream URL (`wss://host/media` → `https://host/prepare`); `None` for a URL that is not
/// ws(s).
pub fn prepare_url(settings: &Settings, region: &str, stream_url: &str) -> Option<String> {
    if let Some(url) = settings.prepare_urls.get(region) {
        return Some(url.clone());
    }
    let (scheme, rest) = if let Some(r) = stream_url.strip_prefix("wss://") {
        ("https://", r)
    } else {
        ("http://", stream_url.strip_prefix("ws://")?)
    };
    let base = rest.strip_suffix("/media").unwrap_or(rest).trim_end_matches('/');
    Some(format!("{scheme}{base}/prepare"))
}

/// The bridge's `POST /prepare` at `url` with the call's handoff token.
pub fn prepare_request(url: String, call: &VoiceCall, token: &str) -> Option<Outbound> {
    let body = serde_json::json!({
        "call_sid": call.call_sid,
        "handoff": token,
        "caller": call.from,
        "called": call.to,
    });
    Some(Outbound {
        method: "POST",
        url,
        headers: vec![("content-type".into(), JSON.into())],
        body: serde_json::to_vec(&body).ok()?,
    })
}

fn decide_answer(
    settings: &Settings,
    call: &VoiceCall,
    lookup: &ConfigLookup,
    now: DateTime<Utc>,
    hours_at: DateTime<Utc>,
    prepare: &mut Option<Outbound>,
) -> (Reply, VoiceOutcome) {
    let (config, source) = match lookup {
        ConfigLookup::Found { config, source } => (config.as_ref(), *source),
        ConfigLookup::UnknownNumber => {
            return (
                Reply::twiml(SayVoice::default().unknown_number()),
                VoiceOutcome::UnknownNumber,
            );
        }
        ConfigLookup::Unavailable(why) => {
            let reply = refuse(Route::Voice, &Refusal::BadRequest(why.clone()), None);
            return (
                reply,
                VoiceOutcome::Fallback {
                    reason: format!("no config: {why}"),
                },
            );
        }
    };
    let fallback = |reason: String| {
        (
            refuse(
                Route::Voice,
                &Refusal::BadRequest(reason.clone()),
                Some(config),
            ),
            VoiceOutcome::Fallback { reason },
        )
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
            // `<Say language>` is the Twilio locale (`it-IT`), never the ElevenLabs code (`it`).
            let body = config
                .say_voice()
                .after_hours(&config.after_hours, &callback);
            return (
                Reply::twiml(body),
                VoiceOutcome::AfterHours {
                    restaurant_id: config.id.clone(),
                    mode,
                },
            );
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
    // Signed with the claims: how the bridge forwards the caller if it cannot load this
    // configuration itself (dashboard unreachable at its start).
    let say = config.say_voice();
    let fallback_claims = HandoffFallback {
        fallback_number: config.fallback_target().map(str::to_owned),
        say_language: Some(say.language().to_owned()),
        say_voice: Some(say.voice().to_owned()),
        apology: config.agent.apology_message.clone(),
    };
    let token = match settings.handoff_keys.issue_with(&claims, &fallback_claims) {
        Ok(t) => t,
        Err(e) => return fallback(format!("handoff token: {e}")),
    };
    let version = config.version.to_string();
    // When this answer left, so the bridge can tell how long the caller waited for the first
    // audio from here (unsigned: it only feeds measurements, which clamp it).
    let answered_at = now.timestamp_millis().to_string();
    let params = [
        ("handoff", token.as_str()),
        ("restaurant_id", config.id.as_str()),
        ("config_version", version.as_str()),
        ("caller", call.from.as_str()),
        ("called", call.to.as_str()),
        ("answered_at_ms", answered_at.as_str()),
    ];
    match twiml::stream(stream_url, &params) {
        Ok(body) => {
            if settings.prepare_sessions {
                *prepare = prepare_url(settings, region, stream_url).and_then(|url| prepare_request(url, call, &token));
            }
            (
                Reply::twiml(body),
                VoiceOutcome::Stream {
                    restaurant_id: config.id.clone(),
                    region: region.to_owned(),
                    config_version: config.version,
                    source,
                },
            )
        }
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
    Outbound {
        method,
        url: format!("{}{}", settings.dashboard_url, path_and_query),
        headers,
        body,
    }
}

/// `GET /v1/restaurants/by-number/{e164}`, with `If-None-Match` when an ETag is cached.
pub fn config_request(
    settings: &Settings,
    e164: &str,
    etag: Option<&str>,
    now_unix: i64,
    nonce: &str,
) -> Outbound {
    // `e164` is `+` and digits only (normalised), so it needs no escaping in a path.
    let path = format!("/v1/restaurants/by-number/{e164}");
    let extra = etag
        .map(|e| vec![("If-None-Match".to_owned(), e.to_owned())])
        .unwrap_or_default();
    dashboard_request(settings, "GET", &path, Vec::new(), extra, now_unix, nonce)
}

/// Verifies a status callback and builds the lifecycle event to forward to the dashboard
/// (`POST /v1/calls/{call_sid}/events`, schema `CallEvent` in `api/openapi.yaml`): every Twilio
/// parameter as a flat JSON object of strings. A recording status callback (the voicemail's
/// `?kind=recording`) also carries `"PulsaraEventKind": "recording"`.
///
/// # Errors
/// As [`verify_twilio`]; [`Refusal::BadRequest`] without a usable `CallSid`.
pub fn status_event(
    settings: &Settings,
    req: &Inbound,
    now_unix: i64,
    nonce: &str,
) -> Result<Outbound, Refusal> {
    let params = verify_twilio(settings, req)?;
    let call_sid = param(&params, "CallSid")
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .ok_or_else(|| Refusal::BadRequest("status callback has no valid CallSid".into()))?;
    // Repeated names keep their last value (Twilio does not repeat status callback parameters).
    let mut event: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    if req.query.split('&').any(|kv| kv == "kind=recording") {
        event.insert("PulsaraEventKind".into(), "recording".into());
    }
    let body = serde_json::to_vec(&event).unwrap_or_default();
    Ok(dashboard_request(
        settings,
        "POST",
        &format!("/v1/calls/{call_sid}/events"),
        body,
        Vec::new(),
        now_unix,
        nonce,
    ))
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
pub fn dashboard_event(
    settings: &Settings,
    req: &Inbound,
    now_unix: i64,
) -> Result<DashboardEvent, Refusal> {
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
    let body: EventBody = serde_json::from_slice(&req.body)
        .map_err(|e| Refusal::BadRequest(format!("webhook body: {e}")))?;
    if body.data.restaurant_id.is_empty() || body.data.restaurant_id.len() > 128 {
        return Err(Refusal::BadRequest(
            "webhook body has no valid restaurant_id".into(),
        ));
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
pub fn elevenlabs_forward(
    settings: &Settings,
    req: &Inbound,
    now_unix: i64,
    nonce: &str,
) -> Result<Outbound, Refusal> {
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
        return Err(Refusal::BadRequest(
            "post-call webhook body is not JSON".into(),
        ));
    }
    Ok(dashboard_request(
        settings,
        "POST",
        "/v1/post-call",
        req.body.clone(),
        Vec::new(),
        now_unix,
        nonce,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::{settings_from, vars};
    use crate::testdata::{closed, config};
    use pulsara_core::config::AfterHours;
    use pulsara_core::handoff::HandoffKeys;
    use pulsara_core::secret::Secret;

    fn settings() -> Settings {
        settings_from(&vars()).unwrap()
    }

    fn form(params: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
            .into_bytes()
    }

    /// A voice webhook signed as Twilio would sign it for `settings`.
    fn signed(settings: &Settings, path: &str, query: &str, params: &[(&str, &str)]) -> Inbound {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pq = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let sig = twilio::compute_signature(
            &settings.twilio_auth_token,
            &settings.public_url(&pq),
            &owned,
        );
        Inbound {
            method: "POST".into(),
            path: path.into(),
            query: query.into(),
            headers: vec![("x-twilio-signature".into(), sig)],
            body: form(params),
        }
    }

    const CALL: [(&str, &str); 4] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("From", "+14155550100"),
        ("To", "+390600000001"),
        ("CallStatus", "ringing"),
    ];

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    fn found(c: RestaurantConfig) -> ConfigLookup {
        ConfigLookup::Found {
            config: Box::new(c),
            source: Source::Dashboard,
        }
    }

    /// The value of `<Parameter name="{name}" value="…"/>` in a TwiML document.
    fn parameter(twiml: &str, name: &str) -> String {
        let marker = format!("<Parameter name=\"{name}\" value=\"");
        let start = twiml
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {twiml}"))
            + marker.len();
        twiml[start..].split('"').next().unwrap().to_owned()
    }

    #[test]
    fn published_twilio_vector_verifies_through_public_base_url() {
        let mut v = vars();
        v.insert("PUBLIC_BASE_URL", "https://mycompany.com");
        let s = settings_from(&v).unwrap();
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ];
        let mut req = Inbound {
            method: "POST".into(),
            path: "/myapp.php".into(),
            query: "foo=1&bar=2".into(),
            headers: vec![(
                "x-twilio-signature".into(),
                "0/KCTR6DLpKmkAf8muzZqo1nDgQ=".into(),
            )],
            body: form(&params),
        };
        assert_eq!(verify_twilio(&s, &req).unwrap().len(), 5);
        // The Host header plays no part; a different query does.
        req.headers.push(("host".into(), "evil.example".into()));
        assert!(verify_twilio(&s, &req).is_ok());
        req.query = "foo=1".into();
        assert!(matches!(
            verify_twilio(&s, &req),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn unsigned_forged_and_oversized_requests_are_refused() {
        let s = settings();
        let mut req = signed(&s, "/twilio/voice", "", &CALL);
        assert!(voice_call(&s, &req).is_ok());
        req.body = form(&[("CallSid", "CA1234567890ABCDE"), ("To", "+390600000002")]);
        let Err(forged) = voice_call(&s, &req) else {
            panic!("forged body accepted")
        };
        assert_eq!(refuse(Route::Voice, &forged, None).status, 403);
        req.headers.clear();
        assert!(
            matches!(voice_call(&s, &req), Err(Refusal::Forbidden(m)) if m.contains("missing"))
        );
        req.headers
            .push(("x-twilio-signature".into(), String::new()));
        assert!(matches!(voice_call(&s, &req), Err(Refusal::Forbidden(_))));
        req.body = vec![b'a'; MAX_BODY_BYTES + 1];
        let Err(big) = voice_call(&s, &req) else {
            panic!("oversized body accepted")
        };
        assert_eq!(refuse(Route::Voice, &big, None).status, 413);
    }

    #[test]
    fn signed_request_without_usable_to_gets_fallback_twiml_not_an_error_status() {
        let s = settings();
        let req = signed(
            &s,
            "/twilio/voice",
            "",
            &[("CallSid", "CA1"), ("To", "anonymous")],
        );
        let refusal = voice_call(&s, &req).unwrap_err();
        assert!(matches!(refusal, Refusal::BadRequest(_)));
        let reply = refuse(Route::Voice, &refusal, None);
        assert_eq!(
            (reply.status, reply.content_type),
            (200, crate::http::TWIML)
        );
        assert!(reply.body.contains(GENERIC_APOLOGY) && reply.body.contains("<Hangup/>"));
    }

    #[test]
    fn twilio_routes_never_get_a_5xx() {
        let all = [
            Refusal::BadRequest("x".into()),
            Refusal::Replayed,
            Refusal::NotFound,
            Refusal::MethodNotAllowed,
            Refusal::Misconfigured,
            Refusal::UpstreamFailed("x".into()),
        ];
        for r in &all {
            for route in [Route::Voice, Route::Status] {
                let reply = refuse(route, r, Some(&config("r1")));
                assert_eq!(
                    (reply.status, reply.content_type),
                    (200, crate::http::TWIML),
                    "{route:?} {r:?}"
                );
            }
            assert!(refuse(Route::DashboardWebhook, r, None).status >= 400);
        }
        // With a known config, the fallback dials the restaurant's fallback target.
        let body = refuse(Route::Voice, &Refusal::Misconfigured, Some(&config("r1"))).body;
        assert!(
            body.contains("<Dial") && body.contains("+390600000099"),
            "{body}"
        );
    }

    #[test]
    fn an_open_call_has_its_bridge_prepare_the_agent_session() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let a = answer(&s, &call, &found(config("r1")), now(), now());
        let p = a.prepare.expect("a prepare for an open restaurant");
        assert_eq!((p.method, p.url.as_str()), ("POST", "https://eu.bridge.example.com/prepare"));
        let body: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(body["handoff"], parameter(&a.reply.body, "handoff"), "the TwiML's own token");
        assert_eq!((body["call_sid"].as_str(), body["caller"].as_str()), (Some("CA1234567890ABCDE"), Some("+14155550100")));
        // A configured URL wins (a bridge reached without TLS); off means none.
        let mut direct = s.clone();
        direct.prepare_urls.insert("eu-west".into(), "http://10.0.0.5:8080/prepare".into());
        let p = answer(&direct, &call, &found(config("r1")), now(), now()).prepare.unwrap();
        assert_eq!(p.url, "http://10.0.0.5:8080/prepare");
        let mut off = s.clone();
        off.prepare_sessions = false;
        assert!(answer(&off, &call, &found(config("r1")), now(), now()).prepare.is_none());
        assert!(answer(&s, &call, &ConfigLookup::UnknownNumber, now(), now()).prepare.is_none());
    }

    #[test]
    fn open_restaurant_gets_stream_with_verifiable_token() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        assert_eq!(call.to, "+390600000001");
        let (reply, outcome) = answer_call(&s, &call, &found(config("r1")), now(), now());
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .body
                .contains(r#"<Stream url="wss://eu.bridge.example.com/media">"#),
            "{}",
            reply.body
        );
        assert_eq!(parameter(&reply.body, "restaurant_id"), "r1");
        assert_eq!(parameter(&reply.body, "config_version"), "3");
        assert_eq!(parameter(&reply.body, "caller"), "+14155550100");
        assert_eq!(parameter(&reply.body, "called"), "+390600000001");
        assert_eq!(parameter(&reply.body, "answered_at_ms"), now().timestamp_millis().to_string());
        let bridge_keys = HandoffKeys::parse(&Secret::new("k1:handoff-secret-0123456789")).unwrap();
        let token = parameter(&reply.body, "handoff");
        let claims = bridge_keys
            .verify(
                &token,
                "CA1234567890ABCDE",
                Some("eu-west"),
                now().timestamp() + 30,
            )
            .unwrap();
        assert_eq!(
            (claims.restaurant_id.as_str(), claims.config_version),
            ("r1", 3)
        );
        assert_eq!(claims.exp - claims.iat, 60);
        let (_, fallback) = bridge_keys
            .verify_with_fallback(&token, "CA1234567890ABCDE", None, now().timestamp())
            .unwrap();
        let cfg = config("r1");
        assert_eq!(fallback.fallback_number.as_deref(), cfg.fallback_target());
        assert!(fallback.fallback_number.is_some());
        assert_eq!(
            (fallback.say_language.as_deref(), fallback.say_voice.as_deref()),
            (Some(cfg.say_voice().language()), Some(cfg.say_voice().voice()))
        );
        assert_eq!(fallback.apology, cfg.agent.apology_message);
        assert!(bridge_keys
            .verify(&token, "CAother", None, now().timestamp())
            .is_err());
        assert_eq!(
            outcome,
            VoiceOutcome::Stream {
                restaurant_id: "r1".into(),
                region: "eu-west".into(),
                config_version: 3,
                source: Source::Dashboard
            }
        );
    }

    #[test]
    fn restaurant_without_its_own_bridge_goes_to_the_default_region() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let mut c = config("r1");
        c.region = "ap-south".into();
        let (reply, outcome) = answer_call(&s, &call, &found(c), now(), now());
        assert!(reply.body.contains("wss://eu.bridge.example.com/media"));
        assert!(matches!(outcome, VoiceOutcome::Stream { region, .. } if region == "eu-west"));
    }

    #[test]
    fn closed_restaurant_gets_each_after_hours_mode() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let cases = [
            (
                AfterHours::Message {
                    message: "Closed & gone".into(),
                },
                "message",
                vec!["Closed &amp; gone", "<Hangup/>"],
            ),
            (
                AfterHours::Voicemail {
                    message: "Leave a message".into(),
                    max_length_secs: 90,
                },
                "voicemail",
                vec![
                    "<Record",
                    "maxLength=\"90\"",
                    "https://edge.example.com/twilio/status?kind=recording",
                ],
            ),
            (
                AfterHours::Forward {
                    message: None,
                    number: "+390611111111".into(),
                },
                "forward",
                vec!["<Dial", "+390611111111"],
            ),
        ];
        for (mode, name, needles) in cases {
            let (reply, outcome) = answer_call(&s, &call, &found(closed("r1", mode)), now(), now());
            assert_eq!(reply.status, 200);
            assert!(!reply.body.contains("<Stream"));
            for n in needles {
                assert!(reply.body.contains(n), "{name}: {n} not in {}", reply.body);
            }
            assert_eq!(
                outcome,
                VoiceOutcome::AfterHours {
                    restaurant_id: "r1".into(),
                    mode: name
                }
            );
        }
    }

    #[test]
    fn an_italian_restaurant_is_answered_in_twilio_s_italian_not_the_elevenlabs_code() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let mut c = closed(
            "r1",
            AfterHours::Voicemail {
                message: "Siamo chiusi.".into(),
                max_length_secs: 60,
            },
        );
        c.agent.language = "it".into();
        let (reply, _) = answer_call(&s, &call, &found(c.clone()), now(), now());
        assert!(
            reply
                .body
                .contains(r#"<Say language="it-IT" voice="Polly.Bianca">Siamo chiusi.</Say>"#),
            "{}",
            reply.body
        );
        assert!(!reply.body.contains(r#"language="it""#), "{}", reply.body);
        // The fallback apology, when there is no number to dial, speaks Italian too.
        c.staff_number = None;
        c.time_zone = "Mars/Olympus".into();
        let (reply, outcome) = answer_call(&s, &call, &found(c), now(), now());
        assert!(matches!(outcome, VoiceOutcome::Fallback { .. }));
        assert!(
            reply
                .body
                .contains(r#"<Say language="it-IT" voice="Polly.Bianca">"#),
            "{}",
            reply.body
        );
        // No restaurant known: Twilio's English.
        let (reply, _) = answer_call(&s, &call, &ConfigLookup::UnknownNumber, now(), now());
        assert!(reply
            .body
            .contains(r#"<Say language="en-US" voice="Polly.Joanna">"#));
    }

    #[test]
    fn hours_are_evaluated_at_the_hours_instant() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let mut c = config("r1");
        // Open only on Mondays 12:00–15:00 Rome time. 2026-11-30 is a Monday.
        c.hours.weekly = vec![pulsara_core::config::WeeklySpan {
            day: chrono::Weekday::Mon,
            open: chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap(),
            close: chrono::NaiveTime::from_hms_opt(15, 0, 0).unwrap(),
        }];
        let monday_1pm_rome = DateTime::parse_from_rfc3339("2026-11-30T13:00:00+01:00")
            .unwrap()
            .to_utc();
        let monday_4pm_rome = DateTime::parse_from_rfc3339("2026-11-30T16:00:00+01:00")
            .unwrap()
            .to_utc();
        let (_, open) = answer_call(&s, &call, &found(c.clone()), now(), monday_1pm_rome);
        assert!(matches!(open, VoiceOutcome::Stream { .. }));
        let (_, shut) = answer_call(&s, &call, &found(c), now(), monday_4pm_rome);
        assert!(matches!(shut, VoiceOutcome::AfterHours { .. }));
    }

    #[test]
    fn test_clock_header_only_with_allow_test_clock() {
        let s = settings();
        let mut req = signed(&s, "/twilio/voice", "", &CALL);
        req.headers.push((TEST_NOW_HEADER.into(), "1000".into()));
        assert_eq!(hours_instant(&s, &req, now()), now());
        let mut v = vars();
        v.insert("PUBLIC_BASE_URL", "http://127.0.0.1:8787");
        v.insert("ALLOW_TEST_CLOCK", "1");
        let t = settings_from(&v).unwrap();
        assert_eq!(hours_instant(&t, &req, now()).timestamp(), 1000);
    }

    #[test]
    fn unknown_unavailable_and_broken_configs() {
        let s = settings();
        let call = voice_call(&s, &signed(&s, "/twilio/voice", "", &CALL)).unwrap();
        let (reply, outcome) = answer_call(&s, &call, &ConfigLookup::UnknownNumber, now(), now());
        assert_eq!((reply.status, outcome), (200, VoiceOutcome::UnknownNumber));
        assert!(reply.body.contains("not set up"));
        let (reply, outcome) = answer_call(
            &s,
            &call,
            &ConfigLookup::Unavailable("down".into()),
            now(),
            now(),
        );
        assert!(
            reply.body.contains(GENERIC_APOLOGY)
                && matches!(outcome, VoiceOutcome::Fallback { .. })
        );
        let mut bad = config("r1");
        bad.time_zone = "Mars/Olympus".into();
        bad.fallback_number = Some("+390622222222".into());
        let (reply, outcome) = answer_call(&s, &call, &found(bad.clone()), now(), now());
        assert_eq!(reply.status, 200);
        assert!(reply.body.contains("+390622222222"), "{}", reply.body);
        assert!(
            matches!(outcome, VoiceOutcome::Fallback { reason } if reason.contains("Mars/Olympus"))
        );
        // The caller hears why before being moved: <Say> (the restaurant's apology, else the
        // generic transfer notice) then <Dial>, never a bare <Dial>.
        let said_then_dialled = |body: &str, words: &str| {
            let say = body.find("<Say").expect("a <Say>");
            let dial = body.find("<Dial").expect("a <Dial>");
            say < dial && body[say..dial].contains(words) && !body.contains("<Hangup/>")
        };
        let apology = bad.agent.apology_message.clone().expect("the test config has one");
        assert!(said_then_dialled(&reply.body, &apology), "{}", reply.body);
        bad.agent.apology_message = None;
        let (reply, _) = answer_call(&s, &call, &found(bad), now(), now());
        assert!(said_then_dialled(&reply.body, GENERIC_TRANSFER), "{}", reply.body);
    }

    #[test]
    fn config_request_is_signed_for_the_dashboard() {
        let s = settings();
        let req = config_request(&s, "+390600000001", Some("\"7\""), 1_790_000_000, "nonce-1");
        assert_eq!(
            req.url,
            "http://127.0.0.1:9/v1/restaurants/by-number/+390600000001"
        );
        let header = |n: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("if-none-match").as_deref(), Some("\"7\""));
        let mut guard = webhooks::ReplayGuard::new(16);
        let key_id = request_auth::verify(
            |id| (id == "edge-1").then(|| Secret::new("dashboard-signing-secret-0123")),
            "GET",
            "/v1/restaurants/by-number/+390600000001",
            &header,
            &[],
            1_790_000_010,
            &mut guard,
        )
        .unwrap();
        assert_eq!(key_id, "edge-1");
    }

    #[test]
    fn status_callback_becomes_a_lifecycle_event() {
        let s = settings();
        let params = [
            ("CallSid", "CA42"),
            ("CallStatus", "completed"),
            ("CallDuration", "37"),
        ];
        let req = signed(&s, "/twilio/status", "kind=recording", &params);
        let out = status_event(&s, &req, 1_790_000_000, "n").unwrap();
        assert_eq!(
            (out.method, out.url.as_str()),
            ("POST", "http://127.0.0.1:9/v1/calls/CA42/events")
        );
        let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["PulsaraEventKind"], "recording");
        assert_eq!(body["CallStatus"], "completed");
        assert_eq!(body["CallSid"], "CA42");
        assert_eq!(body["CallDuration"], "37");
        let bad = signed(&s, "/twilio/status", "", &[("CallSid", "../../admin")]);
        assert!(matches!(
            status_event(&s, &bad, 0, "n"),
            Err(Refusal::BadRequest(_))
        ));
        let mut forged = signed(&s, "/twilio/status", "", &params);
        forged.query = "kind=recording".into();
        assert!(matches!(
            status_event(&s, &forged, 0, "n"),
            Err(Refusal::Forbidden(_))
        ));
    }

    fn dashboard_webhook(id: &str, ts: i64, body: &str, secret: &str) -> Inbound {
        let sig = webhooks::sign(&Secret::new(secret), id, ts, body.as_bytes()).unwrap();
        Inbound {
            method: "POST".into(),
            path: "/webhooks/dashboard".into(),
            headers: vec![
                ("webhook-id".into(), id.into()),
                ("webhook-timestamp".into(), ts.to_string()),
                ("webhook-signature".into(), sig),
            ],
            body: body.as_bytes().to_vec(),
            ..Inbound::default()
        }
    }

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn dashboard_webhook_is_verified_and_parsed() {
        let s = settings();
        let body = r#"{"type":"restaurant.updated","data":{"restaurant_id":"r1","version":4}}"#;
        let ev = dashboard_event(
            &s,
            &dashboard_webhook("msg_1", 1_790_000_000, body, SECRET),
            1_790_000_100,
        )
        .unwrap();
        assert_eq!(
            ev,
            DashboardEvent {
                webhook_id: "msg_1".into(),
                kind: "restaurant.updated".into(),
                restaurant_id: "r1".into(),
                version: 4
            }
        );
        // Stale, wrong secret, empty v1 signature, unparsable body.
        let stale = dashboard_webhook("msg_1", 1_790_000_000 - 400, body, SECRET);
        assert!(
            matches!(dashboard_event(&s, &stale, 1_790_000_000), Err(Refusal::Forbidden(m)) if m.contains("old"))
        );
        let other = dashboard_webhook(
            "msg_1",
            1_790_000_000,
            body,
            "whsec_b3RoZXItc2VjcmV0LXZhbHVl",
        );
        assert!(matches!(
            dashboard_event(&s, &other, 1_790_000_000),
            Err(Refusal::Forbidden(_))
        ));
        let mut empty = dashboard_webhook("msg_1", 1_790_000_000, body, SECRET);
        empty.headers[2].1 = "v1,".into();
        assert!(matches!(
            dashboard_event(&s, &empty, 1_790_000_000),
            Err(Refusal::Forbidden(_))
        ));
        let junk = dashboard_webhook("msg_2", 1_790_000_000, "{}", SECRET);
        assert!(matches!(
            dashboard_event(&s, &junk, 1_790_000_000),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn elevenlabs_webhook_is_verified_then_forwarded_unchanged() {
        let s = settings();
        let body = br#"{"type":"post_call_transcription","data":{"conversation_id":"c1"}}"#;
        let header = webhooks::sign_elevenlabs(&Secret::new("el-secret"), 1_790_000_000, body);
        let req = Inbound {
            method: "POST".into(),
            path: "/webhooks/elevenlabs".into(),
            headers: vec![("elevenlabs-signature".into(), header)],
            body: body.to_vec(),
            ..Inbound::default()
        };
        let out = elevenlabs_forward(&s, &req, 1_790_000_060, "n").unwrap();
        assert_eq!(
            (out.url.as_str(), out.body.as_slice()),
            ("http://127.0.0.1:9/v1/post-call", &body[..])
        );
        assert!(matches!(
            elevenlabs_forward(&s, &req, 1_790_000_000 + 3600, "n"),
            Err(Refusal::Forbidden(_))
        ));
        let mut v = vars();
        v.remove("ELEVENLABS_WEBHOOK_SECRET");
        let no_secret = settings_from(&v).unwrap();
        assert!(matches!(
            elevenlabs_forward(&no_secret, &req, 1_790_000_060, "n"),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn routes() {
        assert_eq!(Route::of("POST", "/twilio/voice"), Route::Voice);
        assert_eq!(Route::of("GET", "/twilio/voice"), Route::MethodNotAllowed);
        assert_eq!(Route::of("GET", "/healthz"), Route::Health);
        assert_eq!(Route::of("POST", "/nope"), Route::NotFound);
    }
}
