//! Voicemails: a caller's recording reported by Twilio's `<Record>` callbacks.
//!
//! Every `<Record>` the project emits (the edge's after-hours voicemail, the bridge's agent-down
//! voicemail) posts its `recordingStatusCallback` to a signature-checked route, which forwards the
//! Twilio parameters as a call event (`POST /v1/calls/{call_sid}/events`) marked
//! `"PulsaraEventKind": "recording"`. [`from_event`] reads the voicemail out of such an event;
//! the store puts it on the call record whichever of the two arrives first, and
//! [`email`] is the restaurant's notification.

use pulsara_core::call_record::Voicemail;
use pulsara_core::config::RestaurantConfig;
use serde_json::{Map, Value};

use crate::notify::EmailJob;

/// The event kind the callback routes add to a recording's Twilio parameters.
pub const EVENT_KIND: &str = "recording";
/// The key that carries the caller when Twilio's recording callback does not (`From` is in
/// the `action` request, not in `recordingStatusCallback`).
pub const CALLER_KEY: &str = "PulsaraCaller";

/// The voicemail a recording event reports, once the recording exists: `RecordingUrl` is set
/// and `RecordingStatus` (when present) is `completed`. `None` for any other event.
pub fn from_event(event: &Value) -> Option<Voicemail> {
    let text = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if text("PulsaraEventKind").as_deref() != Some(EVENT_KIND) {
        return None;
    }
    if text("RecordingStatus").is_some_and(|s| s != "completed") {
        return None;
    }
    let recording_url = text("RecordingUrl")?;
    Some(Voicemail {
        recording_url: Some(recording_url),
        duration_secs: text("RecordingDuration").and_then(|d| d.parse().ok()),
        transcript: None,
        recording_sid: text("RecordingSid"),
        caller: text("From")
            .or_else(|| text("Caller"))
            .or_else(|| text(CALLER_KEY)),
    })
}

/// Writes `vm` onto a stored record (JSON), keeping a caller the record already names.
pub fn merge(record: &mut Value, vm: &Voicemail) {
    let Some(obj) = record.as_object_mut() else {
        return;
    };
    let mut vm = vm.clone();
    if vm.caller.is_none() {
        vm.caller = obj
            .get("caller")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
    }
    if let Ok(v) = serde_json::to_value(&vm) {
        obj.insert("voicemail".into(), v);
    }
}

/// The restaurant's email about a new voicemail (`None` without an address to send it to).
pub fn email(cfg: &RestaurantConfig, vm: &Voicemail) -> Option<EmailJob> {
    if cfg.notifications.email.is_empty() {
        return None;
    }
    let caller = vm.caller.as_deref().unwrap_or("an unknown caller");
    let mut body = format!("{caller} left a voicemail for {}.\n", cfg.name);
    if let Some(d) = vm.duration_secs {
        body.push_str(&format!("Length: {d} s\n"));
    }
    if let Some(url) = &vm.recording_url {
        body.push_str(&format!("Recording: {url}\n"));
    }
    Some(EmailJob {
        to: cfg.notifications.email.clone(),
        subject: format!("[{}] voicemail from {caller}", cfg.name),
        body,
        reasons: vec!["voicemail".into()],
    })
}

/// The call event a callback route forwards: every Twilio parameter, plus the kind and, when
/// known, the caller.
pub fn event(params: &[(String, String)], caller: Option<&str>) -> Value {
    let mut m: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    m.insert("PulsaraEventKind".into(), EVENT_KIND.into());
    if let Some(c) = caller.filter(|c| !c.is_empty()) {
        m.entry(CALLER_KEY).or_insert_with(|| c.into());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_completed_recording_is_a_voicemail_and_other_events_are_not() {
        let ev = json!({"PulsaraEventKind":"recording","CallSid":"CA1","RecordingSid":"RE1",
            "RecordingUrl":"https://api.twilio.com/rec/RE1","RecordingStatus":"completed",
            "RecordingDuration":"14","PulsaraCaller":"+393331110002"});
        let vm = from_event(&ev).unwrap();
        assert_eq!(vm.recording_sid.as_deref(), Some("RE1"));
        assert_eq!(vm.duration_secs, Some(14));
        assert_eq!(vm.caller.as_deref(), Some("+393331110002"));
        let mut in_progress = ev.clone();
        in_progress["RecordingStatus"] = "in-progress".into();
        assert!(from_event(&in_progress).is_none());
        let mut status = ev.clone();
        status["PulsaraEventKind"] = "status".into();
        assert!(from_event(&status).is_none());
        assert!(
            from_event(&json!({"PulsaraEventKind":"recording"})).is_none(),
            "no URL, no voicemail"
        );
    }

    #[test]
    fn merge_keeps_the_records_caller() {
        let mut rec = json!({"call_sid":"CA1","caller":"+15550001111"});
        let vm = Voicemail {
            recording_url: Some("u".into()),
            ..Default::default()
        };
        merge(&mut rec, &vm);
        assert_eq!(rec["voicemail"]["caller"], "+15550001111");
        assert_eq!(rec["voicemail"]["recording_url"], "u");
    }
}
