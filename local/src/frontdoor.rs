//! Placing a call through the front door exactly as Twilio does: a signed voice webhook to the
//! edge, the TwiML it answers, and — when that TwiML connects a Media Stream — a WebSocket to the
//! bridge carrying the `<Parameter>`s from the TwiML, with the upgrade signed like Twilio signs it.
//!
//! Used by `pulsara demo`, by `pulsara call` against any running stack, and by the integration
//! tests that run the same scenarios against the edge in workerd.
//!
//! Locally there is no TLS: a `wss://` Stream URL whose host is a loopback address is dialled as
//! `ws://` (the job a TLS terminator does in production). Any other host is refused, so a
//! scenario can never reach outside the machine.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pulsara_core::secret::Secret;
use pulsara_core::twilio;
use pulsara_emulators::caller::{self, CallParams, CallResult, CallerOptions};
use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::twiml;

/// What the edge decided, read back from its TwiML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeDecision {
    /// `<Connect><Stream>`: the call goes to a bridge.
    Stream { url: String, parameters: BTreeMap<String, String> },
    /// `<Record>` after a message: voicemail.
    Voicemail { message: String },
    /// `<Dial>` (after-hours forward, fallback or busy).
    Dial { number: String, message: String },
    /// `<Say>` then `<Hangup/>`.
    Message { message: String },
}

impl EdgeDecision {
    /// A short label for reports and expectations: `stream`, `voicemail`, `dial`, `message`.
    pub fn label(&self) -> &'static str {
        match self {
            EdgeDecision::Stream { .. } => "stream",
            EdgeDecision::Voicemail { .. } => "voicemail",
            EdgeDecision::Dial { .. } => "dial",
            EdgeDecision::Message { .. } => "message",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    #[error("voice webhook to {url}: {reason}")]
    Webhook { url: String, reason: String },
    #[error("the edge answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the edge's TwiML could not be understood: {0}")]
    Twiml(String),
    #[error("stream URL {0:?} is not a loopback wss:// URL; scenarios only dial this machine")]
    NotLocal(String),
    #[error("media stream: {0}")]
    Stream(String),
}

/// A placed call: the TwiML, what it means, and (for streams) what the caller experienced.
#[derive(Debug)]
pub struct PlacedCall {
    pub call_sid: String,
    pub twiml: String,
    pub decision: EdgeDecision,
    pub caller: Option<CallResult>,
}

/// How to reach the stack.
pub struct FrontDoor {
    /// The edge's public base URL (`http://127.0.0.1:8787`); the webhook goes to `…/twilio/voice`.
    pub edge_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    pub http: reqwest::Client,
    /// How long Twilio takes from receiving the TwiML to opening the Media Stream. Twilio does
    /// not document it; real calls show a few hundred milliseconds, [`TWILIO_STREAM_SETUP`].
    pub stream_setup: Duration,
}

/// The stream set-up the local stack and `pulsara call` assume for Twilio (not documented by
/// Twilio; what a real call's timeline shows between the TwiML and the stream's `connected`).
pub const TWILIO_STREAM_SETUP: Duration = Duration::from_millis(250);

impl FrontDoor {
    /// Sends the voice webhook for `scenario`'s numbers and returns the parsed TwiML.
    ///
    /// # Errors
    /// Transport errors, a non-200 answer, or TwiML that is not one of the known shapes.
    pub async fn ring(&self, call_sid: &str, from: &str, to: &str) -> Result<(String, EdgeDecision), FrontDoorError> {
        self.ring_at(call_sid, from, to, None).await
    }

    /// As [`FrontDoor::ring`]; with `test_now`, the webhook carries it as `X-Pulsara-Test-Now`
    /// (unix seconds), which an edge started with `ALLOW_TEST_CLOCK=1` decides opening hours at.
    ///
    /// # Errors
    /// As [`FrontDoor::ring`].
    pub async fn ring_at(
        &self,
        call_sid: &str,
        from: &str,
        to: &str,
        test_now: Option<DateTime<Utc>>,
    ) -> Result<(String, EdgeDecision), FrontDoorError> {
        let url = format!("{}/twilio/voice", self.edge_url.trim_end_matches('/'));
        let params: Vec<(String, String)> = [
            ("AccountSid", self.account_sid.as_str()),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", call_sid),
            ("CallStatus", "ringing"),
            ("Called", to),
            ("Caller", from),
            ("Direction", "inbound"),
            ("From", from),
            ("To", to),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let signature = twilio::compute_signature(&self.auth_token, &url, &params);
        let mut request = self
            .http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .timeout(Duration::from_secs(15));
        if let Some(at) = test_now {
            request = request.header(pulsara_edge::decide::TEST_NOW_HEADER, at.timestamp().to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| FrontDoorError::Webhook { url: url.clone(), reason: e.to_string() })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| FrontDoorError::Webhook { url: url.clone(), reason: e.to_string() })?;
        if status != 200 {
            return Err(FrontDoorError::Status { status, body });
        }
        let decision = parse_twiml(&body)?;
        Ok((body, decision))
    }

    /// Rings the edge and, when it answers with a Stream, plays `scenario`'s caller on it.
    ///
    /// `stop` resolves when Twilio would end the stream from outside (a REST call update).
    ///
    /// # Errors
    /// As [`FrontDoor::ring`], plus a non-local stream URL or a stream that cannot connect.
    pub async fn place(
        &self,
        scenario: &Scenario,
        call_sid: &str,
        stop: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    ) -> Result<PlacedCall, FrontDoorError> {
        self.place_at(scenario, call_sid, stop, None).await
    }

    /// As [`FrontDoor::place`], ringing with [`FrontDoor::ring_at`]'s test clock.
    ///
    /// # Errors
    /// As [`FrontDoor::place`].
    pub async fn place_at(
        &self,
        scenario: &Scenario,
        call_sid: &str,
        stop: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
        test_now: Option<DateTime<Utc>>,
    ) -> Result<PlacedCall, FrontDoorError> {
        let (twiml, decision) = self.ring_at(call_sid, &scenario.call.from, &scenario.call.to, test_now).await?;
        let caller = match &decision {
            EdgeDecision::Stream { url, parameters } => {
                let ws_url = local_ws_url(url)?;
                tokio::time::sleep(self.stream_setup).await;
                let mut params = CallParams::numbered(0, &scenario.call.from, &scenario.call.to);
                params.account_sid = self.account_sid.clone();
                params.call_sid = call_sid.to_owned();
                params.stream_sid = format!("MZ{}", call_sid.trim_start_matches("CA"));
                params.custom_parameters = parameters.clone();
                // Twilio signs the upgrade over the wss URL it was given, with no parameters.
                let signature = twilio::compute_signature(&self.auth_token, url, &[]);
                let opts = CallerOptions {
                    headers: vec![("X-Twilio-Signature".into(), signature)],
                    stop,
                    ..CallerOptions::default()
                };
                let result = caller::run_call(&ws_url, params, &scenario.caller, opts)
                    .await
                    .map_err(|e| FrontDoorError::Stream(e.to_string()))?;
                Some(result)
            }
            _ => None,
        };
        Ok(PlacedCall { call_sid: call_sid.to_owned(), twiml, decision, caller })
    }
}

/// `wss://127.0.0.1:port/media` → `ws://127.0.0.1:port/media`; other hosts are refused.
///
/// # Errors
/// [`FrontDoorError::NotLocal`] for anything but a loopback `wss://` URL.
pub fn local_ws_url(url: &str) -> Result<String, FrontDoorError> {
    let rest = url.strip_prefix("wss://").ok_or_else(|| FrontDoorError::NotLocal(url.to_owned()))?;
    if !pulsara_core::addr::is_loopback(url) {
        return Err(FrontDoorError::NotLocal(url.to_owned()));
    }
    Ok(format!("ws://{rest}"))
}

/// Reads the TwiML shapes the edge produces.
///
/// # Errors
/// Unparseable XML or a `<Response>` with none of `Stream`, `Record`, `Dial`, `Say`.
pub fn parse_twiml(xml: &str) -> Result<EdgeDecision, FrontDoorError> {
    let doc = twiml::parse(xml).map_err(|e| FrontDoorError::Twiml(e.to_string()))?;
    let say = || doc.all("Say").iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    if let Some((url, parameters)) = doc.stream() {
        return Ok(EdgeDecision::Stream { url, parameters });
    }
    if doc.find("Record").is_some() {
        return Ok(EdgeDecision::Voicemail { message: say() });
    }
    if let Some(dial) = doc.find("Dial") {
        let number = dial.find("Number").map_or(dial.text.as_str(), |n| n.text.as_str()).trim().to_owned();
        return Ok(EdgeDecision::Dial { number, message: say() });
    }
    if doc.find("Say").is_some() {
        return Ok(EdgeDecision::Message { message: say() });
    }
    Err(FrontDoorError::Twiml("no Stream, Record, Dial or Say".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_twiml_shape() {
        let stream = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://127.0.0.1:9/media"><Parameter name="handoff" value="v1.a.b.c"/><Parameter name="caller" value="+1555"/></Stream></Connect></Response>"#;
        match parse_twiml(stream).unwrap() {
            EdgeDecision::Stream { url, parameters } => {
                assert_eq!(url, "wss://127.0.0.1:9/media");
                assert_eq!(parameters["handoff"], "v1.a.b.c");
                assert_eq!(parameters["caller"], "+1555");
            }
            other => panic!("{other:?}"),
        }
        let vm = r#"<Response><Say>Closed &amp; sorry</Say><Record maxLength="90"/></Response>"#;
        assert_eq!(parse_twiml(vm).unwrap(), EdgeDecision::Voicemail { message: "Closed & sorry".into() });
        let dial = r#"<Response><Say>One moment</Say><Dial timeout="20">+17185550199</Dial></Response>"#;
        assert_eq!(
            parse_twiml(dial).unwrap(),
            EdgeDecision::Dial { number: "+17185550199".into(), message: "One moment".into() }
        );
        assert_eq!(parse_twiml("<Response><Say>Bye</Say><Hangup/></Response>").unwrap().label(), "message");
        assert!(parse_twiml("<Response/>").is_err());
        assert!(parse_twiml("not xml").is_err());
    }

    #[test]
    fn only_loopback_streams_are_dialled() {
        assert_eq!(local_ws_url("wss://127.0.0.1:4000/media").unwrap(), "ws://127.0.0.1:4000/media");
        assert_eq!(local_ws_url("wss://localhost/media").unwrap(), "ws://localhost/media");
        assert!(local_ws_url("wss://bridge.example.com/media").is_err());
        assert!(local_ws_url("wss://10.0.0.1/media").is_err());
        assert!(local_ws_url("ws://127.0.0.1/media").is_err());
    }
}
