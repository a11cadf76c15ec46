//! Finishing a call: analyse the record (sentiment, structured summary), decide its
//! notifications, and queue record + notifications in the outbox in one transaction. The bridge
//! calls [`finish`] at call end and commits its entries (through a memory queue when the outbox
//! refuses them); [`finish_and_enqueue`] does both at once. The dashboard calls [`enrich`] on
//! records that arrive without analysis (e.g. from another producer).

use pulsara_core::call_record::{CallRecord, Notification};
use pulsara_core::config::RestaurantConfig;
use serde_json::Value;

use crate::notify::{self, EmailJob, SmsJob};
use crate::outbox::{EntryKind, NewEntry, Outbox, OutboxError};
use crate::{sentiment, summary};

/// Fills `sentiment` and `summary` when absent. An existing `summary.elevenlabs_summary` is kept.
pub fn enrich(record: &mut CallRecord) {
    if record.sentiment.is_none() {
        record.sentiment = serde_json::to_value(sentiment::analyze(record)).ok();
    }
    let has_ours = record
        .summary
        .as_ref()
        .and_then(|s| s.get("paragraph"))
        .is_some();
    if !has_ours {
        let el = record
            .summary
            .as_ref()
            .and_then(|s| s.get("elevenlabs_summary"))
            .cloned();
        let mut v = serde_json::to_value(summary::summarize(record)).unwrap_or(Value::Null);
        if let (Some(el), Some(o)) = (el, v.as_object_mut()) {
            o.insert("elevenlabs_summary".into(), el);
        }
        record.summary = Some(v);
    }
}

/// What [`finish_and_enqueue`] queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub record: CallRecord,
    pub email: Option<EmailJob>,
    pub sms: Option<SmsJob>,
    /// Outbox entries newly queued (0 when this call sid was already queued).
    pub queued: usize,
}

/// A finished call, analysed and planned, with the outbox entries that carry it (record first,
/// then its notifications): [`finish`]'s answer, committed in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub record: CallRecord,
    pub email: Option<EmailJob>,
    pub sms: Option<SmsJob>,
    pub entries: Vec<NewEntry>,
}

/// Analyses `record`, plans its notifications and commits everything to the outbox in one
/// transaction ([`finish`], then [`Outbox::enqueue`]). Blocking, like [`Outbox::enqueue`]: async
/// callers commit [`finish`]'s entries with [`Outbox::enqueue_async`] (or `spawn_blocking`).
///
/// # Errors
/// The outbox could not commit (disk full, I/O); nothing is queued then.
pub fn finish_and_enqueue(
    outbox: &Outbox,
    record: CallRecord,
    cfg: Option<&RestaurantConfig>,
    now_ms: i64,
) -> Result<Finished, OutboxError> {
    let p = finish(record, cfg);
    let queued = outbox.enqueue(&p.entries, now_ms)?;
    Ok(Finished {
        record: p.record,
        email: p.email,
        sms: p.sms,
        queued,
    })
}

/// Analyses `record`, plans its notifications (with `cfg`, when the restaurant is known), notes
/// them in `record.notifications`, and builds the outbox entries for all of it, keyed by the
/// call sid (so committing them twice queues them once). Notifications a policy requested
/// during the call (`status: "requested"`) are included. Pure: nothing is stored.
pub fn finish(mut record: CallRecord, cfg: Option<&RestaurantConfig>) -> Planned {
    let sent = sentiment::analyze(&record);
    let summ = summary::summarize(&record);
    let (email, sms) = cfg
        .map(|c| notify::plan(&record, c, &summ, &sent))
        .unwrap_or((None, None));
    enrich(&mut record);

    let rid = record.restaurant_id.clone();
    let sid = record.call_sid.clone();
    let mut extra = Vec::new();
    for n in record
        .notifications
        .iter_mut()
        .filter(|n| n.status == "requested")
    {
        let (kind, payload) = match n.channel.as_str() {
            "sms" => {
                let Some(from) = cfg.and_then(|c| c.notifications.sms_from.clone()) else {
                    n.status = "failed".into();
                    n.error = Some("restaurant has no sms_from number".into());
                    continue;
                };
                (
                    EntryKind::Sms,
                    serde_json::to_string(&SmsJob {
                        to: n.to.clone(),
                        from,
                        body: n.body.clone(),
                    }),
                )
            }
            "email" => (
                EntryKind::Email,
                serde_json::to_string(&EmailJob {
                    to: vec![n.to.clone()],
                    subject: n.subject.clone().unwrap_or_else(|| "Your call".into()),
                    body: n.body.clone(),
                    reasons: vec!["requested".into()],
                }),
            ),
            _ => continue,
        };
        n.status = "queued".into();
        let idx = extra.len();
        extra.push(NewEntry {
            kind,
            lane: format!("{}:{rid}", kind.as_str()),
            idempotency_key: format!("{sid}:requested:{idx}"),
            payload: payload.unwrap_or_default(),
        });
    }
    if let Some(e) = &email {
        record.notifications.push(Notification {
            channel: "email".into(),
            to: e.to.join(", "),
            subject: Some(e.subject.clone()),
            body: e.body.clone(),
            status: "queued".into(),
            error: None,
        });
    }
    if let Some(s) = &sms {
        record.notifications.push(Notification {
            channel: "sms".into(),
            to: s.to.clone(),
            subject: None,
            body: s.body.clone(),
            status: "queued".into(),
            error: None,
        });
    }

    let mut entries = vec![NewEntry {
        kind: EntryKind::CallRecord,
        lane: rid.clone(),
        idempotency_key: sid.clone(),
        payload: serde_json::to_string(&record).unwrap_or_default(),
    }];
    if let Some(e) = &email {
        entries.push(NewEntry {
            kind: EntryKind::Email,
            lane: format!("email:{rid}"),
            idempotency_key: format!("{sid}:email"),
            payload: serde_json::to_string(e).unwrap_or_default(),
        });
    }
    if let Some(s) = &sms {
        entries.push(NewEntry {
            kind: EntryKind::Sms,
            lane: format!("sms:{rid}"),
            idempotency_key: format!("{sid}:sms"),
            payload: serde_json::to_string(s).unwrap_or_default(),
        });
    }
    entries.extend(extra);
    Planned {
        record,
        email,
        sms,
        entries,
    }
}

/// Queues a voicemail's recording event for the dashboard (in the restaurant's lane, so it
/// follows the call's record) and, when the restaurant takes email, its notification, in one
/// transaction. Idempotent per recording (`RecordingSid`): Twilio may call back twice.
/// Returns how many entries were newly queued. Blocking, like [`Outbox::enqueue`].
///
/// # Errors
/// The outbox could not commit (disk full, I/O); nothing is queued then.
pub fn enqueue_voicemail(
    outbox: &Outbox,
    call_sid: &str,
    restaurant_id: &str,
    event: serde_json::Value,
    cfg: Option<&RestaurantConfig>,
    now_ms: i64,
) -> Result<usize, OutboxError> {
    outbox.enqueue(
        &voicemail_entries(call_sid, restaurant_id, event, cfg),
        now_ms,
    )
}

/// The outbox entries [`enqueue_voicemail`] commits (pure).
pub fn voicemail_entries(
    call_sid: &str,
    restaurant_id: &str,
    event: serde_json::Value,
    cfg: Option<&RestaurantConfig>,
) -> Vec<NewEntry> {
    let vm = crate::voicemail::from_event(&event);
    let id = vm
        .as_ref()
        .and_then(|v| v.recording_sid.clone())
        .unwrap_or_else(|| call_sid.to_owned());
    let mut entries = vec![NewEntry {
        kind: EntryKind::CallEvent,
        lane: restaurant_id.to_owned(),
        idempotency_key: format!("{call_sid}:recording:{id}"),
        payload: serde_json::json!({"call_sid": call_sid, "event": event}).to_string(),
    }];
    if let Some(email) = vm
        .as_ref()
        .zip(cfg)
        .and_then(|(v, c)| crate::voicemail::email(c, v))
    {
        entries.push(NewEntry {
            kind: EntryKind::Email,
            lane: format!("email:{restaurant_id}"),
            idempotency_key: format!("{call_sid}:voicemail-email:{id}"),
            payload: serde_json::to_string(&email).unwrap_or_default(),
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voicemail_queues_its_event_and_one_email_once_per_recording() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.db")).unwrap();
        let cfg: RestaurantConfig = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../restaurants/trattoria-roma/restaurant.json"
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(
            !cfg.notifications.email.is_empty(),
            "the example restaurant takes email"
        );
        let event = crate::voicemail::event(
            &[
                ("CallSid".into(), "CA7".into()),
                ("RecordingSid".into(), "RE7".into()),
                (
                    "RecordingUrl".into(),
                    "https://api.twilio.com/rec/RE7".into(),
                ),
                ("RecordingStatus".into(), "completed".into()),
                ("RecordingDuration".into(), "31".into()),
            ],
            Some("+393331110002"),
        );
        assert_eq!(
            enqueue_voicemail(&ob, "CA7", &cfg.id, event.clone(), Some(&cfg), 0).unwrap(),
            2
        );
        assert_eq!(
            enqueue_voicemail(&ob, "CA7", &cfg.id, event, Some(&cfg), 0).unwrap(),
            0,
            "Twilio calling back twice queues nothing new"
        );
        let entries = ob.list(None).unwrap();
        let kinds: Vec<_> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EntryKind::CallEvent, EntryKind::Email]);
        assert_eq!(
            entries[0].lane, cfg.id,
            "after the call's record, in its lane"
        );
        let email: EmailJob = serde_json::from_str(&entries[1].payload).unwrap();
        assert!(
            email.subject.contains("voicemail from +393331110002"),
            "{}",
            email.subject
        );
        assert!(
            email.body.contains("https://api.twilio.com/rec/RE7") && email.body.contains("31 s"),
            "{}",
            email.body
        );
    }
}
