//! The data contract between the policy host (native, wasmtime) and tool policies (wasm32 guests).
//!
//! A tool call crosses the sandbox boundary as two JSON documents: the host serialises a
//! [`ToolInput`] and passes it to the guest's `run` export (see `policies/wit/policy.wit`); the guest
//! answers with a [`ToolOutput`] or an error string. JSON keeps the binary interface to two strings
//! and one number, so it can grow (new fields with `#[serde(default)]`) without a new WIT world.
//!
//! Capabilities: a policy only sees what its grant allows ([`GrantedData`] fields are `None`
//! otherwise) and has no effects of its own: every effect is an [`Action`] the host checks against
//! the grant ([`Action::kind`]) before performing it.
//!
//! Opening hours cross as facts ([`HoursFacts`]) that the host computes with
//! `pulsara_core::hours`, never as the weekly rules: policies have no hours engine of their own.
//!
//! [`manifest`]: the policy build manifest and `builtin:<name>` module references.
//!
//! This crate is pure (serde types and a few checks, plus reading the manifest file) and compiles
//! natively and to wasm32.
#![forbid(unsafe_code)]

pub mod manifest;

use chrono::{DateTime, NaiveDate, Utc};
use pulsara_core::config::{BookingConfig, FaqDoc, MenuItem, OrderingConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of this contract. The host refuses modules whose `abi-version` export differs.
///
/// 2: `data.hours` is [`HoursFacts`] (it was the configured `OpeningHours`, with
/// `data.staffed_hours` beside it).
pub const ABI_VERSION: u32 = 2;

/// Largest serialised [`ToolInput`] the host sends (bytes).
pub const MAX_INPUT_BYTES: usize = 128 * 1024;

/// Largest serialised [`ToolOutput`] the host accepts (bytes).
pub const MAX_OUTPUT_BYTES: usize = 20 * 1024;

/// Everything a policy gets for one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInput {
    /// [`ABI_VERSION`] of the host that built this input.
    pub abi_version: u32,
    /// The tool name the agent called (one module may implement several tools).
    pub tool: String,
    /// The parameters the agent sent, unchanged.
    #[serde(default)]
    pub params: Value,
    pub context: CallContext,
    /// Only what the tool's grant allows; everything else is `None`.
    #[serde(default)]
    pub data: GrantedData,
}

/// Who is calling, when, and what happened earlier in this call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CallContext {
    pub restaurant_id: String,
    /// The restaurant's display name (for read-backs and confirmations).
    #[serde(default)]
    pub restaurant_name: String,
    /// Twilio CallSid; empty in local runs.
    #[serde(default)]
    pub call_sid: String,
    /// Caller number in E.164 (may be empty for withheld numbers).
    #[serde(default)]
    pub caller: String,
    /// Current local time at the restaurant, RFC 3339 with offset, e.g. `2026-05-01T19:30:00+02:00`.
    /// Policies have no clock: this is the only "now" they see.
    pub local_time: String,
    /// IANA zone of the restaurant, e.g. `Europe/Rome`.
    pub time_zone: String,
    /// Successful tool runs earlier in this call, oldest first.
    #[serde(default)]
    pub earlier_results: Vec<EarlierResult>,
}

/// One earlier successful tool run in the same call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierResult {
    pub tool: String,
    pub output: ToolOutput,
}

/// Restaurant data, each part present only when granted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GrantedData {
    /// Grant `menu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu: Option<Vec<MenuItem>>,
    /// ISO 4217 code of all `*_minor` amounts (granted with the menu; e.g. `EUR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Grant `knowledge_base`: FAQ documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faq: Option<Vec<FaqDoc>>,
    /// Grant `knowledge_base`: today's specials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specials: Option<Vec<String>>,
    /// Grant `hours`: opening and staffed hours for this call, computed by the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursFacts>,
    /// Grant `booking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking: Option<BookingConfig>,
    /// Grant `ordering`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingConfig>,
}

/// Opening hours as `pulsara_core::hours` decides them (the engine of the edge and of the agent's
/// variables), computed on the host from the restaurant's configuration at the call's instant.
/// Every answer about hours is a look-up in these (the SDK's `time::Hours`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoursFacts {
    /// `periods` are those of the spans opening on the local dates `first_day..=last_day`
    /// (yesterday through at least 15 days ahead, further when bookings are granted).
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Calls (and bookings) stop this long before a period closes.
    #[serde(default)]
    pub last_call_minutes: u32,
    /// Periods of opening, sorted and disjoint: DST applied, adjacent spans merged, closures
    /// removed.
    #[serde(default)]
    pub periods: Vec<Period>,
    /// Periods of the staffed hours (closures applied, no last call); `None` when the restaurant
    /// set none: staff are there whenever it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staffed: Option<Vec<Period>>,
    /// Closures that have not ended, as configured, in configuration order: for naming the
    /// reason, not for deciding (the periods already exclude them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closures: Vec<ClosureNote>,
    /// The UTC offsets in force over the periods, oldest first; the first also applies before
    /// its `since`.
    pub offsets: Vec<UtcOffset>,
}

/// A period of opening, `[open, close)`. Instants are Unix seconds on the wire (compact and cheap
/// to decode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// The local date the period's first span opens on: the day whose hours list it.
    pub day: NaiveDate,
    #[serde(with = "chrono::serde::ts_seconds")]
    pub open: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_seconds")]
    pub close: DateTime<Utc>,
}

/// A configured closure of the dates `start..=end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureNote {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Only part of each day is closed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The restaurant's UTC offset from `since` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtcOffset {
    #[serde(with = "chrono::serde::ts_seconds")]
    pub since: DateTime<Utc>,
    /// Seconds east of UTC (local = UTC + offset).
    pub offset: i32,
}

/// What a policy returns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ToolOutput {
    /// Text for the agent to answer from (sent as the `client_tool_result`).
    pub result: String,
    /// Optional structured result, also passed to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Effects for the host to check against the grant and perform.
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// The closed set of effects a policy can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    RecordOrder(Order),
    RecordBooking(Booking),
    TransferToStaff {
        reason: String,
    },
    SendSms {
        to: String,
        body: String,
    },
    SendEmail {
        to: String,
        subject: String,
        body: String,
    },
    EndCall {
        reason: String,
    },
}

/// Every action kind, as used in `Grants::actions`.
pub const ACTION_KINDS: [&str; 6] = [
    "record_order",
    "record_booking",
    "transfer_to_staff",
    "send_sms",
    "send_email",
    "end_call",
];

impl Action {
    /// The action's kind, as written in a tool's grant (`"record_order"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RecordOrder(_) => "record_order",
            Action::RecordBooking(_) => "record_booking",
            Action::TransferToStaff { .. } => "transfer_to_staff",
            Action::SendSms { .. } => "send_sms",
            Action::SendEmail { .. } => "send_email",
            Action::EndCall { .. } => "end_call",
        }
    }
}

/// How the customer gets the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fulfillment {
    Pickup,
    Delivery,
}

/// A priced, validated order. All amounts in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub items: Vec<OrderLine>,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    #[serde(default)]
    pub delivery_fee_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub fulfillment: Fulfillment,
    /// Local pickup/delivery time, RFC 3339 with offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// Caller number (E.164) the order is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_phone: Option<String>,
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub item_id: String,
    pub name: String,
    pub quantity: u32,
    #[serde(default)]
    pub modifiers: Vec<OrderModifier>,
    /// Item price plus chosen modifier prices, per unit.
    pub unit_price_minor: i64,
    /// `unit_price_minor * quantity`.
    pub line_total_minor: i64,
}

/// A chosen modifier option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderModifier {
    pub group: String,
    pub option: String,
    #[serde(default)]
    pub price_minor: i64,
}

/// A confirmed table booking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// Local time, `HH:MM`.
    pub time: String,
    pub party_size: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// Why a guest's answer is not acceptable as a [`ToolOutput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputProblem {
    TooLarge { bytes: usize, max: usize },
    NotJson(String),
    UngrantedAction(&'static str),
}

impl std::fmt::Display for OutputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputProblem::TooLarge { bytes, max } => {
                write!(f, "output is {bytes} bytes, more than the {max} allowed")
            }
            OutputProblem::NotJson(e) => write!(f, "output is not a valid ToolOutput: {e}"),
            OutputProblem::UngrantedAction(kind) => {
                write!(f, "action {kind:?} is not in the tool's grant")
            }
        }
    }
}

impl std::error::Error for OutputProblem {}

/// Parses and checks a guest's raw answer: size, shape, and every action against `granted`
/// (action kinds, e.g. `["record_order"]`).
///
/// # Errors
/// The first problem found; nothing from an invalid answer is used.
pub fn check_output(
    raw: &str,
    max_bytes: usize,
    granted: &[String],
) -> Result<ToolOutput, OutputProblem> {
    if raw.len() > max_bytes {
        return Err(OutputProblem::TooLarge {
            bytes: raw.len(),
            max: max_bytes,
        });
    }
    let out: ToolOutput =
        serde_json::from_str(raw).map_err(|e| OutputProblem::NotJson(e.to_string()))?;
    for action in &out.actions {
        let kind = action.kind();
        if !granted.iter().any(|g| g == kind) {
            return Err(OutputProblem::UngrantedAction(kind));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_tagged_snake_case() {
        let a = Action::TransferToStaff {
            reason: "complaint".into(),
        };
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "transfer_to_staff", "reason": "complaint"})
        );
        let order = Action::RecordOrder(Order {
            items: vec![OrderLine {
                item_id: "m1".into(),
                name: "Margherita".into(),
                quantity: 2,
                modifiers: vec![OrderModifier {
                    group: "Size".into(),
                    option: "Large".into(),
                    price_minor: 300,
                }],
                unit_price_minor: 1200,
                line_total_minor: 2400,
            }],
            subtotal_minor: 2400,
            tax_minor: 240,
            delivery_fee_minor: 0,
            total_minor: 2640,
            currency: "EUR".into(),
            fulfillment: Fulfillment::Pickup,
            pickup_time: Some("2026-05-01T19:30:00+02:00".into()),
            postcode: None,
            customer_name: Some("Ada".into()),
            customer_phone: None,
        });
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["type"], "record_order");
        assert_eq!(json["fulfillment"], "pickup");
        assert_eq!(json["items"][0]["modifiers"][0]["option"], "Large");
        let back: Action = serde_json::from_value(json).unwrap();
        assert_eq!(back, order);
        assert_eq!(back.kind(), "record_order");
    }

    #[test]
    fn every_kind_is_listed() {
        let samples = [
            Action::TransferToStaff {
                reason: String::new(),
            },
            Action::SendSms {
                to: String::new(),
                body: String::new(),
            },
            Action::SendEmail {
                to: String::new(),
                subject: String::new(),
                body: String::new(),
            },
            Action::EndCall {
                reason: String::new(),
            },
        ];
        for a in samples {
            assert!(ACTION_KINDS.contains(&a.kind()));
            let json = serde_json::to_value(&a).unwrap();
            assert_eq!(json["type"], a.kind());
        }
    }

    #[test]
    fn check_output_rejects_ungranted_invalid_and_large() {
        let raw = r#"{"result":"ok","actions":[{"type":"end_call","reason":"done"}]}"#;
        assert_eq!(
            check_output(raw, MAX_OUTPUT_BYTES, &[]).unwrap_err(),
            OutputProblem::UngrantedAction("end_call")
        );
        let ok = check_output(raw, MAX_OUTPUT_BYTES, &["end_call".to_owned()]).unwrap();
        assert_eq!(ok.result, "ok");
        assert!(matches!(
            check_output("{nope", 100, &[]),
            Err(OutputProblem::NotJson(_))
        ));
        assert!(matches!(
            check_output(
                r#"{"result":"ok","actions":[{"type":"launch_rockets"}]}"#,
                1000,
                &[]
            ),
            Err(OutputProblem::NotJson(_))
        ));
        assert!(matches!(
            check_output(raw, 10, &[]),
            Err(OutputProblem::TooLarge { max: 10, .. })
        ));
    }

    #[test]
    fn hours_facts_are_compact_and_round_trip() {
        let facts = HoursFacts {
            first_day: "2026-10-31".parse().unwrap(),
            last_day: "2026-11-15".parse().unwrap(),
            last_call_minutes: 30,
            periods: vec![Period {
                day: "2026-10-31".parse().unwrap(),
                open: "2026-11-01T00:00:00Z".parse().unwrap(),
                close: "2026-11-01T06:30:00Z".parse().unwrap(),
            }],
            staffed: None,
            closures: vec![ClosureNote {
                start: "2026-11-04".parse().unwrap(),
                end: "2026-11-05".parse().unwrap(),
                partial: false,
                reason: String::new(),
            }],
            offsets: vec![UtcOffset {
                since: "2026-11-01T06:00:00Z".parse().unwrap(),
                offset: -18000,
            }],
        };
        let json = serde_json::to_string(&facts).unwrap();
        assert_eq!(
            json,
            r#"{"first_day":"2026-10-31","last_day":"2026-11-15","last_call_minutes":30,"periods":[{"day":"2026-10-31","open":1793491200,"close":1793514600}],"closures":[{"start":"2026-11-04","end":"2026-11-05"}],"offsets":[{"since":1793512800,"offset":-18000}]}"#
        );
        assert_eq!(serde_json::from_str::<HoursFacts>(&json).unwrap(), facts);
    }

    #[test]
    fn minimal_input_parses() {
        let raw = r#"{"abi_version":2,"tool":"t","context":{"restaurant_id":"r","local_time":"2026-05-01T19:30:00+02:00","time_zone":"Europe/Rome"}}"#;
        let input: ToolInput = serde_json::from_str(raw).unwrap();
        assert!(input.data.menu.is_none());
        assert_eq!(input.params, Value::Null);
        // Absent grants are not even serialised.
        let back = serde_json::to_string(&input.data).unwrap();
        assert_eq!(back, "{}");
    }
}
