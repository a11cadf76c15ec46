//! The agent-down voicemail: when the agent cannot take a call and the restaurant has no number
//! to forward to, the caller hears the apology and leaves a message. The `<Record>` posts both
//! its `action` and its `recordingStatusCallback` to [`PATH`] on this bridge's public URL, with
//! the restaurant and caller in the query (Twilio signs the whole URL, so neither can be forged).
//!
//! [`recording`] checks `X-Twilio-Signature` over the URL rebuilt from `PUBLIC_BASE_URL`, answers
//! the `action` request with `<Hangup/>` (without it Twilio would fetch the stream's TwiML
//! again), and hands a completed recording to the sink: the outbox then puts it on the call
//! record at the dashboard and emails the restaurant (see `pulsara_dashboard::voicemail`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use crate::config::BridgeConfig;
use crate::app::App;

/// The route Twilio posts a voicemail's `<Record>` callbacks to.
pub const PATH: &str = "/twilio/recording";

/// The answer to the `action` request: the message is recorded, end the call.
const HANGUP: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Hangup/></Response>";

/// `https://host` for callbacks from `PUBLIC_BASE_URL` (a `wss://` base becomes `https://`).
fn https_base(cfg: &BridgeConfig) -> Option<String> {
    let base = cfg.public_base_url.as_deref()?.trim_end_matches('/');
    let host = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("wss://"))
        .map(|h| format!("https://{h}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .or_else(|| base.strip_prefix("ws://"))
                .map(|h| format!("http://{h}"))
        })?;
    Some(host)
}

/// The `<Record>` callback URL for a call of `restaurant_id` from `caller`; `None` without
/// `PUBLIC_BASE_URL` (then nothing could receive the recording, and no `<Record>` is emitted).
pub fn callback_url(cfg: &BridgeConfig, restaurant_id: &str, caller: &str) -> Option<String> {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("restaurant", restaurant_id)
        .append_pair("caller", caller)
        .finish();
    Some(format!("{}{PATH}?{query}", https_base(cfg)?))
}

/// `POST /twilio/recording?restaurant=…&caller=…` (see the module docs).
pub async fn recording(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refuse = |status: StatusCode, why: &str| {
        app.metrics.error("voicemail_refused");
        warn!(why, "voicemail callback refused");
        (status, "refused").into_response()
    };
    let Ok(params) = pulsara_core::twilio::parse_form(&body) else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "form too large");
    };
    let (Some(base), Some(token)) = (https_base(&app.cfg), app.cfg.twilio_auth_token.as_ref()) else {
        return refuse(StatusCode::NOT_FOUND, "PUBLIC_BASE_URL or TWILIO_AUTH_TOKEN not set");
    };
    let query = uri.query().unwrap_or("");
    let url = if query.is_empty() {
        format!("{base}{PATH}")
    } else {
        format!("{base}{PATH}?{query}")
    };
    let sig = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
    if pulsara_core::twilio::validate(token, &url, &params, sig).is_err() {
        return refuse(StatusCode::FORBIDDEN, "bad X-Twilio-Signature");
    }
    let q: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let arg = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let restaurant_id = arg("restaurant");
    let call_sid = param("CallSid").unwrap_or("");
    let valid_id = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !valid_id(restaurant_id) || !valid_id(call_sid) {
        return refuse(StatusCode::BAD_REQUEST, "restaurant or CallSid missing");
    }
    let Some(status) = param("RecordingStatus") else {
        // The `<Record>`'s action: the caller finished (or hung up). End the call.
        return ([(axum::http::header::CONTENT_TYPE, "text/xml")], HANGUP).into_response();
    };
    if status == "completed" {
        let event = pulsara_dashboard::voicemail::event(&params, Some(arg("caller")));
        let span = tracing::info_span!("call", call_sid, restaurant_id);
        let _g = span.enter();
        match app.sink.voicemail(call_sid, restaurant_id, event).await {
            Ok(()) => info!(recording_sid = param("RecordingSid").unwrap_or(""), "voicemail received"),
            Err(e) => {
                app.metrics.error("voicemail_sink");
                tracing::error!(error = %e, "voicemail could not be stored");
                // Twilio retries a failed status callback only if asked to; a 5xx at least
                // shows in its debugger.
                return (StatusCode::SERVICE_UNAVAILABLE, "voicemail not stored").into_response();
            }
        }
    } else {
        info!(status, "voicemail recording not completed");
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_url_is_https_on_the_public_base_with_the_call_in_the_query() {
        let mut cfg = BridgeConfig::default();
        assert_eq!(callback_url(&cfg, "trattoria-roma", "+39 333"), None);
        cfg.public_base_url = Some("wss://bridge.example.com/".into());
        assert_eq!(
            callback_url(&cfg, "trattoria-roma", "+393331110002").as_deref(),
            Some("https://bridge.example.com/twilio/recording?restaurant=trattoria-roma&caller=%2B393331110002")
        );
    }
}
