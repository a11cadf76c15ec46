//! Notifications about a finished call: an email to the restaurant for calls that need a
//! person's attention (an order, a booking, a voicemail, a complaint, negative sentiment) and an
//! SMS confirmation to the caller for orders and bookings when the restaurant enables it.
//!
//! [`plan`] is pure: record + configuration + analysis in, messages out. The messages are then
//! queued in the outbox next to the call record, and delivered by [`SmtpSender`] (lettre over
//! `SMTP_URL`) and [`TwilioSms`] (Twilio's Messages API at `TWILIO_API_BASE`, through
//! [`crate::twilio_rest`]). An outage of either only delays delivery; the outbox retries. A
//! channel that is not configured at all is [`SendError::Unconfigured`]: the outbox parks its
//! messages with that reason instead of retrying them forever, and sends them once the channel is
//! configured.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pulsara_core::call_record::CallRecord;
use pulsara_core::config::RestaurantConfig;
use pulsara_core::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::sentiment::{CallSentiment, Label};
use crate::summary::{money, CallSummary};
use crate::twilio_rest::TwilioRest;

/// An email to the restaurant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailJob {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// Why this email is sent (`order`, `booking`, `voicemail`, `complaint`, `negative_sentiment`).
    pub reasons: Vec<String>,
}

/// An SMS to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsJob {
    pub to: String,
    pub from: String,
    pub body: String,
}

/// Longest SMS body we send (Twilio concatenates up to 1600 characters).
pub const MAX_SMS_CHARS: usize = 480;

fn is_e164(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Decides which notifications a call produces.
pub fn plan(
    record: &CallRecord,
    cfg: &RestaurantConfig,
    summary: &CallSummary,
    sentiment: &CallSentiment,
) -> (Option<EmailJob>, Option<SmsJob>) {
    let mut reasons = Vec::new();
    if !summary.orders.is_empty() {
        reasons.push("order");
    }
    if !summary.bookings.is_empty() {
        reasons.push("booking");
    }
    if summary.voicemail {
        reasons.push("voicemail");
    }
    if summary.complaint {
        reasons.push("complaint");
    }
    if sentiment.label == Label::Negative {
        reasons.push("negative_sentiment");
    }
    let email = (!reasons.is_empty() && !cfg.notifications.email.is_empty()).then(|| EmailJob {
        to: cfg.notifications.email.clone(),
        subject: format!(
            "[{}] {} call from {}",
            cfg.name,
            reasons.join(", ").replace('_', " "),
            if record.caller.is_empty() {
                "unknown caller"
            } else {
                &record.caller
            }
        ),
        body: email_body(record, cfg, summary, sentiment),
        reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
    });

    // A policy that already texted the caller during the call (send_confirmation) has sent the
    // confirmation; a second, automatic one would only be noise.
    let already_texted = record
        .notifications
        .iter()
        .any(|n| n.channel == "sms" && n.to == record.caller);
    let wants_sms = cfg.notifications.sms_confirmations
        && (!summary.orders.is_empty() || !summary.bookings.is_empty())
        && is_e164(&record.caller)
        && !already_texted;
    let sms = match (&cfg.notifications.sms_from, wants_sms) {
        (Some(from), true) => Some(SmsJob {
            to: record.caller.clone(),
            from: from.clone(),
            body: sms_body(cfg, summary),
        }),
        _ => None,
    };
    (email, sms)
}

fn email_body(
    record: &CallRecord,
    cfg: &RestaurantConfig,
    s: &CallSummary,
    sent: &CallSentiment,
) -> String {
    let mut b = String::new();
    b.push_str(&format!("Call {} to {}\n", record.call_sid, cfg.name));
    if !record.called.is_empty() {
        b.push_str(&format!("Number dialled: {}\n", record.called));
    }
    b.push_str(&format!(
        "Caller: {}\nStarted: {}\nDuration: {} s\nEnded: {}\n\n",
        record.caller, record.started_at, s.duration_secs, s.end_reason
    ));
    b.push_str(&format!("Summary: {}\n\n", s.paragraph));
    b.push_str(&format!("Intents: {}\n", s.intents.join(", ")));
    for o in &s.orders {
        b.push_str("Order:\n");
        for i in &o.items {
            b.push_str(&format!("  - {i}\n"));
        }
        if let Some(t) = o.total_minor {
            b.push_str(&format!("  Total: {}\n", money(t, o.currency.as_deref())));
        }
        if let Some(p) = &o.pickup_time {
            b.push_str(&format!(
                "  {}: {p}\n",
                o.fulfillment.as_deref().unwrap_or("pickup")
            ));
        }
    }
    for bk in &s.bookings {
        b.push_str(&format!(
            "Booking: {} people on {} at {} ({})\n",
            bk.party_size.unwrap_or(0),
            bk.date.as_deref().unwrap_or("?"),
            bk.time.as_deref().unwrap_or("?"),
            bk.name.as_deref().unwrap_or("no name")
        ));
    }
    if let Some(v) = &record.voicemail {
        b.push_str(&format!(
            "Voicemail: {} ({} s)\n",
            v.recording_url.as_deref().unwrap_or("no recording URL"),
            v.duration_secs.unwrap_or(0)
        ));
        if let Some(t) = &v.transcript {
            b.push_str(&format!("  \"{t}\"\n"));
        }
    }
    if let Some(t) = &s.transfer {
        b.push_str(&format!("Transferred to {} ({})\n", t.to, t.reason));
    }
    b.push_str(&format!(
        "Sentiment: {:?} ({:.2})\n",
        sent.label, sent.score
    ));
    if !s.unresolved.is_empty() {
        b.push_str("Needs attention:\n");
        for u in &s.unresolved {
            b.push_str(&format!("  - {u}\n"));
        }
    }
    b.push_str("\nTranscript:\n");
    for l in &record.transcript {
        let who = match l.role {
            pulsara_core::call_record::Role::Agent => "Agent",
            pulsara_core::call_record::Role::Caller => "Caller",
        };
        b.push_str(&format!(
            "  [{:>6.1}s] {who}: {}\n",
            l.at_ms as f64 / 1000.0,
            l.text
        ));
    }
    b
}

fn sms_body(cfg: &RestaurantConfig, s: &CallSummary) -> String {
    let mut parts = Vec::new();
    for o in &s.orders {
        let mut p = format!("order: {}", o.items.join(", "));
        if let Some(t) = o.total_minor {
            p.push_str(&format!(", total {}", money(t, o.currency.as_deref())));
        }
        if let Some(t) = &o.pickup_time {
            p.push_str(&format!(
                ", {} {t}",
                o.fulfillment.as_deref().unwrap_or("pickup")
            ));
        }
        parts.push(p);
    }
    for b in &s.bookings {
        parts.push(format!(
            "table for {} on {} at {}",
            b.party_size.unwrap_or(0),
            b.date.as_deref().unwrap_or("?"),
            b.time.as_deref().unwrap_or("?")
        ));
    }
    let body = format!("{}: confirmed {}. Thank you!", cfg.name, parts.join("; "));
    body.chars().take(MAX_SMS_CHARS).collect()
}

/// A delivery failure, classified for the outbox's retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (connection refused, timeout, 4xx SMTP reply, HTTP 5xx/408/429).
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Retrying cannot help (bad address, 5xx SMTP reply, HTTP 4xx).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The channel is not configured in this process (e.g. `SMTP_URL` unset): retrying cannot
    /// help until it is configured and the process restarted.
    #[error("not configured: {0}")]
    Unconfigured(String),
}

/// Sends emails through an SMTP relay described by `SMTP_URL`
/// (`smtp://host:port` plain, `smtp://…?tls=required` STARTTLS, `smtps://…` TLS; credentials in
/// the URL's userinfo).
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// # Errors
    /// The URL is not a valid SMTP URL (the message does not repeat the URL, which may carry a
    /// password).
    pub fn new(smtp_url: &Secret, from: &str) -> Result<Self, SendError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url.expose())
            .map_err(|_| {
                SendError::Permanent("SMTP_URL is not a valid smtp:// or smtps:// URL".into())
            })?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        from.parse::<lettre::message::Mailbox>().map_err(|e| {
            SendError::Permanent(format!("notification sender address is invalid: {e}"))
        })?;
        Ok(Self {
            transport,
            from: from.to_owned(),
        })
    }

    /// # Errors
    /// See [`SendError`].
    pub async fn send(&self, job: &EmailJob) -> Result<(), SendError> {
        let mut builder = Message::builder()
            .from(
                self.from
                    .parse()
                    .map_err(|e| SendError::Permanent(format!("bad sender: {e}")))?,
            )
            .subject(job.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &job.to {
            builder = builder.to(to
                .parse()
                .map_err(|e| SendError::Permanent(format!("bad recipient address {to:?}: {e}")))?);
        }
        let msg = builder
            .body(job.body.clone())
            .map_err(|e| SendError::Permanent(format!("cannot build email: {e}")))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!(
                "SMTP server refused the email: {e}"
            ))),
            Err(e) => Err(SendError::Transient(format!("SMTP delivery failed: {e}"))),
        }
    }
}

/// How long one SMS send may take.
const SMS_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends SMS through Twilio's Messages API ([`TwilioRest::send_sms`]), classifying failures for
/// the outbox.
#[derive(Clone, Debug)]
pub struct TwilioSms {
    rest: TwilioRest,
}

impl TwilioSms {
    pub fn new(base: &str, account_sid: &str, auth_token: Secret) -> Self {
        Self {
            rest: TwilioRest::new(reqwest::Client::new(), base, account_sid, auth_token),
        }
    }

    /// # Errors
    /// See [`SendError`]; HTTP 408/429/5xx and transport errors are transient.
    pub async fn send(&self, job: &SmsJob) -> Result<(), SendError> {
        match self
            .rest
            .send_sms(&job.to, &job.from, &job.body, SMS_TIMEOUT)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => Err(SendError::Transient(e.to_string())),
            Err(e) => Err(SendError::Permanent(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sentiment, summary};
    use pulsara_core::call_record::{Role, TranscriptLine};
    use serde_json::json;

    fn cfg() -> RestaurantConfig {
        serde_json::from_value(json!({
            "id": "r1", "version": 1, "name": "Trattoria", "phone_numbers": ["+390600000001"],
            "time_zone": "Europe/Rome", "hours": {"weekly": []},
            "after_hours": {"mode": "message", "message": "closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "hi"},
            "notifications": {"email": ["owner@trattoria.test"], "sms_confirmations": true, "sms_from": "+390600000009"}
        }))
        .unwrap()
    }

    fn rec(caller_says: &str) -> CallRecord {
        CallRecord {
            call_sid: "CA1".into(),
            caller: "+15550001111".into(),
            transcript: vec![TranscriptLine {
                role: Role::Caller,
                text: caller_says.into(),
                at_ms: 0,
                heard: true,
                cut: false,
                full_text: None,
            }],
            ..Default::default()
        }
    }

    fn plan_for(r: &CallRecord, c: &RestaurantConfig) -> (Option<EmailJob>, Option<SmsJob>) {
        plan(r, c, &summary::summarize(r), &sentiment::analyze(r))
    }

    #[test]
    fn plain_enquiry_sends_nothing() {
        let (e, s) = plan_for(&rec("What time do you open?"), &cfg());
        assert!(e.is_none() && s.is_none());
    }

    #[test]
    fn order_sends_email_and_sms() {
        let mut r = rec("I'd like to order a pizza");
        r.orders = vec![
            json!({"items":[{"name":"Margherita","quantity":1}],"total_minor":900,"currency":"EUR","fulfillment":"pickup","pickup_time":"19:30"}),
        ];
        let (e, s) = plan_for(&r, &cfg());
        let e = e.unwrap();
        assert_eq!(e.reasons, vec!["order"]);
        assert!(
            e.body.contains("1 x Margherita") && e.body.contains("EUR 9.00"),
            "{}",
            e.body
        );
        let s = s.unwrap();
        assert_eq!(
            (s.to.as_str(), s.from.as_str()),
            ("+15550001111", "+390600000009")
        );
        assert!(
            s.body
                .contains("Trattoria: confirmed order: 1 x Margherita"),
            "{}",
            s.body
        );
        // SMS disabled by the restaurant → email only.
        let mut c = cfg();
        c.notifications.sms_confirmations = false;
        assert!(plan_for(&r, &c).1.is_none());
        // The caller was already texted during the call (a policy's send_sms) → no second SMS.
        let mut texted = r.clone();
        texted
            .notifications
            .push(pulsara_core::call_record::Notification {
                channel: "sms".into(),
                to: texted.caller.clone(),
                subject: None,
                body: "Your order is confirmed".into(),
                status: "requested".into(),
                error: None,
            });
        assert!(plan_for(&texted, &cfg()).1.is_none());
        assert!(
            plan_for(&texted, &cfg()).0.is_some(),
            "the restaurant still gets its email"
        );
        // Anonymous caller → no SMS.
        r.caller = "anonymous".into();
        assert!(plan_for(&r, &cfg()).1.is_none());
    }

    #[test]
    fn complaint_and_negative_sentiment_email() {
        let (e, s) = plan_for(
            &rec("The food was cold and the waiter was rude, this is terrible."),
            &cfg(),
        );
        let e = e.unwrap();
        assert!(
            e.reasons.contains(&"complaint".to_owned())
                && e.reasons.contains(&"negative_sentiment".to_owned()),
            "{:?}",
            e.reasons
        );
        assert!(s.is_none());
    }
}
