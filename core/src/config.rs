//! The restaurant configuration and knowledge base, exactly as the dashboard API v1 serves them
//! (`api/openapi.yaml` is the contract). The edge, the bridge and the policies all read these types;
//! the embedded dashboard stores and serves them.
//!
//! Evolution rule: fields are only ever added, with `#[serde(default)]`, so an older reader accepts a
//! newer document.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

/// Everything the phone agent needs to know about one restaurant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestaurantConfig {
    /// Stable identifier (slug), e.g. `"trattoria-roma"`.
    pub id: String,
    /// Monotonic version; bumped by the dashboard on every change. Bound into handoff tokens so a
    /// call uses the configuration it was routed with.
    pub version: u64,
    pub name: String,
    #[serde(default)]
    pub address: String,
    /// The numbers callers dial, in E.164. A restaurant may own several.
    pub phone_numbers: Vec<String>,
    /// IANA time zone name, e.g. `"Europe/Rome"`.
    pub time_zone: String,
    pub hours: OpeningHours,
    /// Where the edge routes open-hours calls (a bridge region, e.g. `"eu-west"`).
    #[serde(default = "default_region")]
    pub region: String,
    pub after_hours: AfterHours,
    /// Staff line for transfers.
    #[serde(default)]
    pub staff_number: Option<String>,
    /// Where calls go when Pulsara itself fails; falls back to `staff_number`.
    #[serde(default)]
    pub fallback_number: Option<String>,
    /// When a human can take a transfer; empty means "whenever the restaurant is open".
    #[serde(default)]
    pub staffed_hours: Vec<WeeklySpan>,
    pub agent: AgentConfig,
    /// DTMF digit → action. Digits not in the map are passed to the agent as context.
    #[serde(default)]
    pub dtmf: BTreeMap<String, DtmfAction>,
    /// The agent's tools, each a policy module.
    #[serde(default)]
    pub tools: Vec<ToolBinding>,
    #[serde(default)]
    pub ordering: Option<OrderingConfig>,
    #[serde(default)]
    pub booking: Option<BookingConfig>,
    #[serde(default)]
    pub notifications: Notifications,
    /// Live calls allowed at once for this restaurant; beyond it callers get `busy`.
    #[serde(default = "default_max_calls")]
    pub max_concurrent_calls: u32,
}

fn default_region() -> String {
    "default".to_owned()
}

fn default_max_calls() -> u32 {
    20
}

impl RestaurantConfig {
    /// The number used when Pulsara cannot handle a call itself.
    pub fn fallback_target(&self) -> Option<&str> {
        self.fallback_number
            .as_deref()
            .or(self.staff_number.as_deref())
    }
}

/// Weekly opening hours plus exceptions, in the restaurant's time zone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Regular weekly spans. A span whose `close` is not after `open` crosses midnight
    /// (e.g. Fri 18:00–02:00). Several spans per day are allowed.
    pub weekly: Vec<WeeklySpan>,
    /// Holidays and other exceptions.
    #[serde(default)]
    pub closures: Vec<Closure>,
    /// Calls stop being taken this many minutes before a span closes ("last call").
    #[serde(default)]
    pub last_call_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklySpan {
    /// `"mon"` … `"sun"`.
    #[serde(with = "weekday_serde")]
    pub day: Weekday,
    /// Local time, `"HH:MM"`.
    pub open: NaiveTime,
    /// Local time, `"HH:MM"`; not after `open` means the next day.
    pub close: NaiveTime,
}

/// Closed from `start` to `end` (inclusive dates). With `from`/`until` only that part of each
/// day is closed (e.g. closing early on Christmas Eve: `from = 15:00`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closure {
    pub start: NaiveDate,
    pub end: NaiveDate,
    #[serde(default)]
    pub from: Option<NaiveTime>,
    #[serde(default)]
    pub until: Option<NaiveTime>,
    #[serde(default)]
    pub reason: String,
}

/// What a caller gets when the restaurant is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AfterHours {
    /// Speak the message, then hang up.
    Message { message: String },
    /// Speak the message, then record a voicemail.
    Voicemail {
        message: String,
        #[serde(default = "default_voicemail_secs")]
        max_length_secs: u32,
    },
    /// Forward the call (e.g. to a sister restaurant or an answering service).
    Forward {
        #[serde(default)]
        message: Option<String>,
        number: String,
    },
}

fn default_voicemail_secs() -> u32 {
    120
}

/// The restaurant's ElevenLabs agent and how to configure it per call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub elevenlabs_agent_id: String,
    #[serde(default)]
    pub voice_id: Option<String>,
    /// System prompt with `{{variable}}` placeholders filled from the call's dynamic variables.
    pub prompt_template: String,
    pub first_message: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// Spoken when the restaurant's concurrency cap is reached.
    #[serde(default)]
    pub busy_message: Option<String>,
    /// Spoken (before voicemail/transfer) when the agent cannot be reached.
    #[serde(default)]
    pub apology_message: Option<String>,
}

fn default_language() -> String {
    "en".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DtmfAction {
    TransferToStaff,
    /// Send this text to the agent as a contextual update.
    Say { text: String },
    EndCall,
}

/// One tool the agent may call, implemented by a policy module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolBinding {
    /// The tool name the ElevenLabs agent uses in `client_tool_call`.
    pub name: String,
    /// Hex sha256 of the policy module (`GET /v1/policies/{sha256}`).
    pub module_sha256: String,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: PolicyLimits,
}

/// What a policy may see and do. An empty grant means nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub menu: bool,
    #[serde(default)]
    pub knowledge_base: bool,
    #[serde(default)]
    pub hours: bool,
    #[serde(default)]
    pub booking: bool,
    #[serde(default)]
    pub ordering: bool,
    /// Action kinds the policy may return, e.g. `["record_order"]`.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// Per-call sandbox limits; `None` means the host default. The host clamps them to its maxima.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PolicyLimits {
    #[serde(default)]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderingConfig {
    #[serde(default = "yes")]
    pub pickup: bool,
    #[serde(default)]
    pub delivery: Option<DeliveryConfig>,
    /// Tax in basis points (e.g. 825 = 8.25 %).
    #[serde(default)]
    pub tax_rate_bps: u32,
    /// Most units of one item per order.
    #[serde(default = "default_max_qty")]
    pub max_quantity_per_item: u32,
    /// Minutes between order and earliest pickup.
    #[serde(default = "default_prep")]
    pub prep_minutes: u32,
}

fn yes() -> bool {
    true
}

fn default_max_qty() -> u32 {
    20
}

fn default_prep() -> u32 {
    20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryConfig {
    pub min_order_minor: i64,
    pub fee_minor: i64,
    pub postcodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingConfig {
    pub slot_minutes: u32,
    /// Covers (seats) per slot.
    pub capacity_per_slot: u32,
    pub max_party_size: u32,
    /// Bookings must be made at least this long ahead.
    #[serde(default)]
    pub min_lead_minutes: u32,
    #[serde(default = "default_days_ahead")]
    pub max_days_ahead: u32,
    /// Covers already booked per slot start (`"YYYY-MM-DDTHH:MM"` local) — supplied by the dashboard.
    #[serde(default)]
    pub booked: BTreeMap<String, u32>,
}

fn default_days_ahead() -> u32 {
    60
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Notifications {
    /// Restaurant staff addresses for call emails.
    #[serde(default)]
    pub email: Vec<String>,
    /// Send the caller an SMS confirmation for orders and bookings.
    #[serde(default)]
    pub sms_confirmations: bool,
    /// The Twilio number (or messaging service) SMS are sent from.
    #[serde(default)]
    pub sms_from: Option<String>,
}

/// Menu and FAQ, versioned separately from the configuration because it changes more often.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KnowledgeBase {
    pub restaurant_id: String,
    pub version: u64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub menu: Vec<MenuItem>,
    #[serde(default)]
    pub faq: Vec<FaqDoc>,
    /// Today's specials and other short notes for the agent's opening context.
    #[serde(default)]
    pub specials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub price_minor: i64,
    /// `false` = "86'd": not available today.
    #[serde(default = "yes")]
    pub available: bool,
    #[serde(default)]
    pub modifiers: Vec<ModifierGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModifierGroup {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub min: u32,
    #[serde(default = "one")]
    pub max: u32,
    pub options: Vec<ModifierOption>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModifierOption {
    pub name: String,
    #[serde(default)]
    pub price_minor: i64,
    #[serde(default = "yes")]
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaqDoc {
    pub id: String,
    pub title: String,
    pub body: String,
}

mod weekday_serde {
    use chrono::Weekday;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    const NAMES: [(&str, Weekday); 7] = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];

    pub fn serialize<S: Serializer>(day: &Weekday, s: S) -> Result<S::Ok, S::Error> {
        let name = NAMES.iter().find(|(_, d)| d == day).map(|(n, _)| *n).unwrap_or("mon");
        s.serialize_str(name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Weekday, D::Error> {
        let raw = String::deserialize(d)?;
        let key = raw.to_ascii_lowercase();
        NAMES
            .iter()
            .find(|(n, _)| key.starts_with(n))
            .map(|(_, d)| *d)
            .ok_or_else(|| D::Error::custom(format!("unknown weekday {raw:?}; use mon..sun")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let json = r#"{
            "id": "r1", "version": 3, "name": "R1", "phone_numbers": ["+15550001111"],
            "time_zone": "America/New_York",
            "hours": {"weekly": [{"day": "fri", "open": "18:00:00", "close": "02:00:00"}]},
            "after_hours": {"mode": "voicemail", "message": "Closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "hi"}
        }"#;
        let cfg: RestaurantConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.hours.weekly[0].day, Weekday::Fri);
        assert_eq!(cfg.max_concurrent_calls, 20);
        assert_eq!(cfg.region, "default");
        assert!(matches!(cfg.after_hours, AfterHours::Voicemail { max_length_secs: 120, .. }));
        let back: RestaurantConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_weekday_is_a_clear_error() {
        let err = serde_json::from_str::<WeeklySpan>(
            r#"{"day":"funday","open":"10:00:00","close":"11:00:00"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown weekday"), "{err}");
    }
}
