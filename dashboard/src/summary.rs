//! A deterministic, structured summary of a call, computed from the [`CallRecord`] alone: what
//! the caller wanted, what was done (order with items, total and pickup time; booking with time
//! and party size; transfer and why; voicemail), what is still unresolved, and one short
//! paragraph a person reads in the notification email. Same record in → same summary out, so it
//! can be recomputed and tested; ElevenLabs' own (LLM) summary is kept beside it when the
//! post-call webhook delivers one.
//!
//! Orders and bookings are the `record_order` / `record_booking` action payloads of the policy
//! ABI; they are read leniently (unknown fields ignored, missing ones omitted) so a newer policy
//! never breaks the summary.

use pulsara_core::call_record::{CallRecord, EndReason, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Words that mark a caller utterance as a complaint (lower-case, matched as substrings of the
/// lower-cased utterance).
const COMPLAINT_MARKERS: &[&str] = &[
    "complain",
    "complaint",
    "refund",
    "was cold",
    "wrong order",
    "missing item",
    "rude",
    "disgusting",
    "food poisoning",
    "never arrived",
    "still waiting",
    "unacceptable",
    "speak to the manager",
    "talk to the manager",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// e.g. `"2 x Margherita (extra basil)"` (ASCII `x`: keeps SMS in the GSM-7 alphabet).
    pub items: Vec<String>,
    pub total_minor: Option<i64>,
    pub currency: Option<String>,
    /// `"pickup"` / `"delivery"`.
    pub fulfillment: Option<String>,
    pub pickup_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingSummary {
    pub date: Option<String>,
    pub time: Option<String>,
    pub party_size: Option<u64>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSummary {
    pub to: String,
    pub reason: String,
    pub ok: bool,
}

/// What ends up in `CallRecord.summary` (plus `elevenlabs_summary` once merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    /// What the caller wanted, most specific first (e.g. `["place an order", "ask about hours"]`).
    pub intents: Vec<String>,
    pub orders: Vec<OrderSummary>,
    pub bookings: Vec<BookingSummary>,
    pub transfer: Option<TransferSummary>,
    pub voicemail: bool,
    pub complaint: bool,
    pub unresolved: Vec<String>,
    pub end_reason: String,
    pub duration_secs: u64,
    pub paragraph: String,
    /// ElevenLabs' own summary, when the post-call webhook delivered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_summary: Option<String>,
}

/// Whether a caller line reads as a complaint.
pub fn is_complaint(text: &str) -> bool {
    let lower = text.to_lowercase();
    COMPLAINT_MARKERS.iter().any(|m| lower.contains(m))
}

/// Formats minor units (`1250`, `"EUR"`) as `"EUR 12.50"`. Zero-decimal currencies (JPY) print
/// whole units.
pub fn money(minor: i64, currency: Option<&str>) -> String {
    let cur = currency.unwrap_or("").to_ascii_uppercase();
    let zero_decimal = matches!(cur.as_str(), "JPY" | "KRW" | "VND" | "CLP" | "ISK");
    let amount = if zero_decimal {
        minor.to_string()
    } else {
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    };
    if cur.is_empty() {
        amount
    } else {
        format!("{cur} {amount}")
    }
}

fn order_summary(v: &Value) -> OrderSummary {
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|it| {
                    let name = it.get("name").and_then(Value::as_str).unwrap_or("item");
                    let qty = it.get("quantity").and_then(Value::as_u64).unwrap_or(1);
                    let mods: Vec<&str> = it
                        .get("modifiers")
                        .and_then(Value::as_array)
                        .map(|m| {
                            m.iter()
                                .filter_map(|m| m.get("option").and_then(Value::as_str))
                                .collect()
                        })
                        .unwrap_or_default();
                    if mods.is_empty() {
                        format!("{qty} x {name}")
                    } else {
                        format!("{qty} x {name} ({})", mods.join(", "))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    OrderSummary {
        items,
        total_minor: v.get("total_minor").and_then(Value::as_i64),
        currency: v.get("currency").and_then(Value::as_str).map(str::to_owned),
        fulfillment: v
            .get("fulfillment")
            .and_then(Value::as_str)
            .map(str::to_owned),
        pickup_time: v
            .get("pickup_time")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

fn booking_summary(v: &Value) -> BookingSummary {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    BookingSummary {
        date: s("date"),
        time: s("time"),
        party_size: v.get("party_size").and_then(Value::as_u64),
        name: s("name"),
    }
}

fn keyword_intents(caller_text: &str) -> Vec<&'static str> {
    let t = caller_text.to_lowercase();
    let mut out = Vec::new();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["open", "close", "hours", "closing"]) {
        out.push("ask about opening hours");
    }
    if has(&["menu", "vegetarian", "vegan", "gluten", "allerg", "special"]) {
        out.push("ask about the menu");
    }
    if has(&["where are you", "address", "parking", "directions"]) {
        out.push("ask for directions");
    }
    if has(&[
        "order",
        "pick up",
        "pickup",
        "takeout",
        "take away",
        "delivery",
        "deliver",
    ]) {
        out.push("place an order");
    }
    if has(&["book", "reserv", "table for"]) {
        out.push("book a table");
    }
    out
}

/// Builds the summary of a record. Pure: no clock, no I/O.
pub fn summarize(record: &CallRecord) -> CallSummary {
    let orders: Vec<OrderSummary> = record.orders.iter().map(order_summary).collect();
    let bookings: Vec<BookingSummary> = record.bookings.iter().map(booking_summary).collect();
    let caller_lines: Vec<&str> = record
        .transcript
        .iter()
        .filter(|l| l.role == Role::Caller)
        .map(|l| l.text.as_str())
        .collect();
    let complaint = caller_lines.iter().any(|l| is_complaint(l));

    let mut intents: Vec<String> = Vec::new();
    fn push_unique(intents: &mut Vec<String>, s: &str) {
        if !intents.iter().any(|i| i == s) {
            intents.push(s.to_owned());
        }
    }
    let mut push = |s: &str| push_unique(&mut intents, s);
    if !orders.is_empty() {
        push("place an order");
    }
    if !bookings.is_empty() {
        push("book a table");
    }
    if complaint {
        push("make a complaint");
    }
    if record.voicemail.is_some() {
        push("leave a voicemail");
    }
    for i in keyword_intents(&caller_lines.join(" ")) {
        push(i);
    }
    if record.transfer.is_some() {
        push("speak to staff");
    }
    if intents.is_empty() {
        let fallback = if caller_lines.is_empty() {
            "unknown (caller said nothing)"
        } else {
            "general enquiry"
        };
        intents.push(fallback.to_owned());
    }

    let transfer = record.transfer.as_ref().map(|t| TransferSummary {
        to: t.to.clone(),
        reason: t.reason.clone(),
        ok: t.ok,
    });

    let mut unresolved = Vec::new();
    if intents.iter().any(|i| i == "place an order") && orders.is_empty() {
        unresolved.push("caller asked about ordering but no order was recorded".to_owned());
    }
    if intents.iter().any(|i| i == "book a table") && bookings.is_empty() {
        unresolved.push("caller asked about booking but no booking was recorded".to_owned());
    }
    for run in record.tool_runs.iter().filter(|r| r.is_error) {
        let later_ok = record
            .tool_runs
            .iter()
            .any(|o| o.tool == run.tool && !o.is_error && o.at_ms > run.at_ms);
        if !later_ok {
            unresolved.push(format!(
                "tool {} failed: {}",
                run.tool,
                first_chars(&run.output, 120)
            ));
        }
    }
    if let Some(t) = &record.transfer {
        if !t.ok {
            unresolved.push(format!("transfer to {} failed", t.to));
        }
    }
    if let Some(f) = &record.fallback {
        unresolved.push(format!(
            "agent unavailable ({}); fallback {} used",
            f.reason, f.kind
        ));
    }
    if record.voicemail.is_some() {
        unresolved.push("voicemail waiting for a call back".to_owned());
    }
    if complaint {
        unresolved.push("complaint needs a follow-up".to_owned());
    }

    let paragraph = paragraph(
        record,
        &intents,
        &orders,
        &bookings,
        transfer.as_ref(),
        &unresolved,
    );
    CallSummary {
        intents,
        orders,
        bookings,
        transfer,
        voicemail: record.voicemail.is_some(),
        complaint,
        unresolved,
        end_reason: record.end_reason.as_str().to_owned(),
        duration_secs: record.duration_ms / 1000,
        paragraph,
        elevenlabs_summary: None,
    }
}

fn first_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn paragraph(
    record: &CallRecord,
    intents: &[String],
    orders: &[OrderSummary],
    bookings: &[BookingSummary],
    transfer: Option<&TransferSummary>,
    unresolved: &[String],
) -> String {
    let caller = if record.caller.is_empty() {
        "An unknown caller"
    } else {
        record.caller.as_str()
    };
    let mut s = format!(
        "{caller} called ({}s) to {}.",
        record.duration_ms / 1000,
        intents.first().map(String::as_str).unwrap_or("talk")
    );
    for o in orders {
        s.push_str(&format!(" Order: {}", o.items.join(", ")));
        if let Some(t) = o.total_minor {
            s.push_str(&format!(", total {}", money(t, o.currency.as_deref())));
        }
        if let Some(p) = &o.pickup_time {
            s.push_str(&format!(
                ", {} at {p}",
                o.fulfillment.as_deref().unwrap_or("pickup")
            ));
        }
        s.push('.');
    }
    for b in bookings {
        s.push_str(&format!(
            " Booking: {} on {} at {}{}.",
            b.party_size
                .map(|p| format!("{p} people"))
                .unwrap_or_else(|| "a table".into()),
            b.date.as_deref().unwrap_or("?"),
            b.time.as_deref().unwrap_or("?"),
            b.name
                .as_deref()
                .map(|n| format!(" for {n}"))
                .unwrap_or_default()
        ));
    }
    if let Some(t) = transfer {
        s.push_str(&format!(" Transferred to staff ({}).", t.reason));
    }
    if record.voicemail.is_some() {
        s.push_str(" The caller left a voicemail.");
    }
    if record.end_reason == EndReason::AgentFailed {
        s.push_str(" The agent failed and the restaurant fallback was used.");
    }
    if !unresolved.is_empty() {
        s.push_str(&format!(" Open: {}.", unresolved.join("; ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_core::call_record::{ToolRun, TranscriptLine, Transfer};
    use serde_json::json;

    fn caller(text: &str, at_ms: u64) -> TranscriptLine {
        TranscriptLine {
            role: Role::Caller,
            text: text.into(),
            at_ms,
            heard: true,
            cut: false,
            full_text: None,
        }
    }

    #[test]
    fn order_call_summary_lists_items_total_and_pickup() {
        let mut r = CallRecord {
            caller: "+15550001111".into(),
            duration_ms: 65_000,
            ..Default::default()
        };
        r.transcript = vec![caller("Hi, I want to order for pickup", 1000)];
        r.orders = vec![json!({"type":"record_order","items":[
            {"item_id":"m1","name":"Margherita","quantity":2,"modifiers":[{"group":"Extras","option":"extra basil"}],
             "unit_price_minor":900,"line_total_minor":1800}],
            "subtotal_minor":1800,"tax_minor":0,"total_minor":1800,"currency":"EUR",
            "fulfillment":"pickup","pickup_time":"2026-11-28T19:30:00+01:00"})];
        let s = summarize(&r);
        assert_eq!(s.intents[0], "place an order");
        assert_eq!(s.orders[0].items, vec!["2 x Margherita (extra basil)"]);
        assert_eq!(s.orders[0].total_minor, Some(1800));
        assert!(s.paragraph.contains("EUR 18.00"), "{}", s.paragraph);
        assert!(
            s.paragraph.contains("pickup at 2026-11-28T19:30:00+01:00"),
            "{}",
            s.paragraph
        );
        assert!(s.unresolved.is_empty(), "{:?}", s.unresolved);
        assert_eq!(summarize(&r), s, "deterministic");
    }

    #[test]
    fn booking_transfer_and_unresolved() {
        let mut r = CallRecord::default();
        r.transcript = vec![caller("Can I book a table for four?", 0)];
        r.bookings =
            vec![json!({"date":"2026-12-01","time":"20:00","party_size":4,"name":"Rossi"})];
        r.transfer = Some(Transfer {
            to: "+390612345600".into(),
            reason: "caller pressed 0".into(),
            at_ms: 9,
            ok: true,
        });
        r.tool_runs = vec![ToolRun {
            tool: "take_order".into(),
            tool_call_id: "t1".into(),
            input: json!({}),
            output: "menu item not found".into(),
            is_error: true,
            duration_us: 10,
            fuel_used: None,
            module_sha256: None,
            at_ms: 5,
        }];
        let s = summarize(&r);
        assert_eq!(s.intents[0], "book a table");
        assert!(s.intents.contains(&"speak to staff".to_owned()));
        assert_eq!(s.bookings[0].party_size, Some(4));
        assert_eq!(s.transfer.as_ref().unwrap().reason, "caller pressed 0");
        assert!(
            s.unresolved.iter().any(|u| u.contains("take_order failed")),
            "{:?}",
            s.unresolved
        );
        assert!(
            s.paragraph
                .contains("4 people on 2026-12-01 at 20:00 for Rossi"),
            "{}",
            s.paragraph
        );
    }

    #[test]
    fn complaint_and_enquiry_intents() {
        let mut r = CallRecord::default();
        r.transcript = vec![caller("My delivery never arrived and I want a refund", 0)];
        let s = summarize(&r);
        assert!(s.complaint);
        assert!(s.intents.contains(&"make a complaint".to_owned()));
        r.transcript = vec![caller("What time do you close tonight?", 0)];
        let s = summarize(&r);
        assert_eq!(s.intents, vec!["ask about opening hours"]);
        assert!(!s.complaint);
    }

    #[test]
    fn money_formats() {
        assert_eq!(money(1250, Some("eur")), "EUR 12.50");
        assert_eq!(money(-5, Some("USD")), "USD -0.05");
        assert_eq!(money(1200, Some("JPY")), "JPY 1200");
        assert_eq!(money(7, None), "0.07");
    }
}
