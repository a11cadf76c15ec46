//! One engine for opening hours. For random configurations (spans several a day and past
//! midnight, closures of whole and partial days and past midnight, last call, staffed hours) and
//! random instants in the weeks of the 2026 DST switches of Rome and New York, the built-in
//! policies — run from the real modules, through the host, with the input it builds — agree with
//! `pulsara_core::hours`:
//! - the edge's decision, `hours::status` (edge/src/decide.rs);
//! - the agent's variables `hours_today` / `next_opening`, `hours::describe_today` /
//!   `hours::describe_next_open` (bridge/src/vars.rs);
//! - `take_order`'s pickup time (ASAP or asked for), `book_table`'s slots, `transfer_to_staff`'s
//!   staffed hours and `answer_question`'s hours passage.
//!
//! Needs the modules from `cargo xtask build-policies`.

mod common;

use std::sync::OnceLock;

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use common::*;
use proptest::prelude::*;
use pulsara_core::config::{Closure, KnowledgeBase, OpeningHours, RestaurantConfig, WeeklySpan};
use pulsara_core::hours::{self, HoursStatus};
use pulsara_policy_host::abi::{Action, ToolOutput};
use pulsara_policy_host::PolicyHost;
use serde_json::{json, Value};

fn host() -> &'static PolicyHost {
    static HOST: OnceLock<PolicyHost> = OnceLock::new();
    HOST.get_or_init(common::host)
}

/// The restaurant every case varies: one dish, pickup orders, bookings, the four hours tools.
fn restaurant(tz: Tz, hours: OpeningHours, staffed: Vec<WeeklySpan>, prep: u32, slot: u32, lead: u32) -> (RestaurantConfig, KnowledgeBase) {
    let tool = |name: &str, grants: Value| {
        json!({"name": name, "module_sha256": format!("builtin:{name}"), "grants": grants,
               "limits": {"deadline_ms": 2000}})
    };
    let mut cfg: RestaurantConfig = serde_json::from_value(json!({
        "id": "hours-agree", "version": 1, "name": "Agree", "phone_numbers": [], "time_zone": tz.name(),
        "hours": {"weekly": []},
        "after_hours": {"mode": "message", "message": "closed"},
        "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "f"},
        "ordering": {"pickup": true, "prep_minutes": prep},
        "booking": {"slot_minutes": slot, "capacity_per_slot": 10, "max_party_size": 8,
                    "min_lead_minutes": lead, "max_days_ahead": 30},
        "tools": [
            tool("take_order", json!({"menu": true, "hours": true, "ordering": true, "actions": ["record_order"]})),
            tool("book_table", json!({"booking": true, "hours": true, "actions": ["record_booking"]})),
            tool("answer_question", json!({"hours": true})),
            tool("transfer_to_staff", json!({"hours": true, "actions": ["transfer_to_staff"]})),
        ]
    }))
    .unwrap();
    cfg.hours = hours;
    cfg.staffed_hours = staffed;
    let kb: KnowledgeBase = serde_json::from_value(json!({
        "restaurant_id": "hours-agree", "version": 1, "currency": "EUR",
        "menu": [{"id": "soup", "name": "Soup", "price_minor": 500}]
    }))
    .unwrap();
    (cfg, kb)
}

/// Runs `tool` at `now` as the bridge does (its `local_time` is the restaurant's RFC 3339 time).
fn call(cfg: &RestaurantConfig, kb: &KnowledgeBase, tz: Tz, now: DateTime<Utc>, tool: &str, params: Value) -> ToolOutput {
    let local_time = now.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, false);
    let set = host().tool_set(cfg);
    let run = host().call(&set, cfg, kb, tool, params, context(cfg, &local_time));
    let fuel = run.record.as_ref().map(|r| r.fuel_used).unwrap_or(0);
    assert!(fuel < 11_000_000, "{tool} used {fuel} fuel");
    run.result.unwrap_or_else(|e| panic!("{tool} failed: {e}"))
}

fn hm(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M").to_string()
}

fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

fn spoken(d: NaiveDate) -> String {
    d.format("%A %-d %B").to_string()
}

fn without_last_call(h: &OpeningHours) -> OpeningHours {
    OpeningHours { last_call_minutes: 0, ..h.clone() }
}

/// Inside a period of opening at `t` (last call not applied), by the edge's engine.
fn open_at(h: &OpeningHours, tz: Tz, t: DateTime<Utc>) -> bool {
    hours::status(&without_last_call(h), tz, t).is_open()
}

/// The next start of a period of opening after `t` (last call not applied), on one of the next
/// `days` local dates.
fn next_open(h: &OpeningHours, tz: Tz, t: DateTime<Utc>, days: i64) -> Option<DateTime<Utc>> {
    match hours::status(&without_last_call(h), tz, t) {
        HoursStatus::Closed { next_open: Some(n), .. } if local_date(n, tz) <= local_date(t, tz) + Duration::days(days) => Some(n),
        _ => None,
    }
}

/// A table of `slot` minutes fits at `t`: calls are still taken until the slot ends.
fn slot_fits(h: &OpeningHours, tz: Tz, t: DateTime<Utc>, slot: u32) -> bool {
    matches!(hours::status(h, tz, t), HoursStatus::Open { last_call_at, .. } if last_call_at >= t + Duration::minutes(i64::from(slot)))
}

/// Every instant that shows `local` on the restaurant's clock (none in a DST gap, two in an overlap).
fn instants(tz: Tz, local: NaiveDateTime) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
        LocalResult::None => Vec::new(),
    }
}

/// ASAP: now plus the preparation time, rounded up to five minutes.
fn ready_at(now: DateTime<Utc>, prep: u32) -> DateTime<Utc> {
    let minutes = (now.timestamp() + i64::from(prep) * 60).div_euclid(60);
    let rounded = (minutes + 4).div_euclid(5) * 5;
    DateTime::from_timestamp(rounded * 60, 0).unwrap()
}

fn problems(out: &ToolOutput) -> Vec<Value> {
    out.data.as_ref().and_then(|d| d["problems"].as_array().cloned()).unwrap_or_default()
}

/// `take_order` for a pickup at `at` (ASAP or asked for) is placed iff the edge's engine has the
/// restaurant open at `at`, with the pickup time in the restaurant's offset at `at`; a refusal
/// names the next opening.
fn check_pickup(h: &OpeningHours, tz: Tz, at: DateTime<Utc>, out: &ToolOutput) -> Result<(), TestCaseError> {
    let pickup = problems(out).into_iter().find(|p| p["kind"] == "pickup_time");
    if open_at(h, tz, at) {
        prop_assert!(pickup.is_none(), "open at {} ({}), but: {}", at, hm(at, tz), out.result);
        let [Action::RecordOrder(order)] = out.actions.as_slice() else {
            return Err(TestCaseError::fail(format!("no order: {}", out.result)));
        };
        prop_assert_eq!(order.pickup_time.clone(), Some(at.with_timezone(&tz).to_rfc3339()));
        prop_assert!(out.result.contains(&format!("pickup at {}", hm(at, tz))), "{}", out.result);
    } else {
        let message = pickup.as_ref().and_then(|p| p["message"].as_str()).unwrap_or_default();
        prop_assert!(message.starts_with(&format!("We're closed at {}", hm(at, tz))), "closed at {}, but: {}", at, out.result);
        match next_open(h, tz, at, 7) {
            Some(n) if local_date(n, tz) == local_date(at, tz) => {
                prop_assert!(message.ends_with(&format!("we open again at {}.", hm(n, tz))), "next {}: {}", n, message)
            }
            Some(n) => prop_assert!(
                message.ends_with(&format!("we open again {} at {}.", spoken(local_date(n, tz)), hm(n, tz))),
                "next {}: {}",
                n,
                message
            ),
            None => prop_assert_eq!(message, format!("We're closed at {}.", hm(at, tz))),
        }
    }
    Ok(())
}

// ---- generators (as core/src/hours.rs's own properties) -------------------------------------

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn arb_time() -> impl Strategy<Value = NaiveTime> {
    // Quarter hours, so the DST switches (01:00–03:00) are hit often.
    (0u32..96).prop_map(|q| t(q / 4, (q % 4) * 15))
}

fn arb_span() -> impl Strategy<Value = WeeklySpan> {
    ((0u8..7).prop_map(|d| Weekday::try_from(d).unwrap()), arb_time(), arb_time())
        .prop_map(|(day, open, close)| WeeklySpan { day, open, close })
}

/// The weeks of the 2026 DST switches: New York 8 March and 1 November, Rome 29 March and
/// 25 October.
const BASES: [&str; 4] = ["2026-03-05", "2026-03-26", "2026-10-22", "2026-10-29"];

fn arb_hours() -> impl Strategy<Value = OpeningHours> {
    let closure = (0usize..4, 0i64..10, 0i64..3, prop::option::of(arb_time()), prop::option::of(arb_time()), any::<bool>())
        .prop_map(|(b, off, len, from, until, named)| {
            let start = date(BASES[b]) + Duration::days(off);
            Closure {
                start,
                end: start + Duration::days(len),
                from,
                until,
                reason: if named { format!("event {off}") } else { String::new() },
            }
        });
    (prop::collection::vec(arb_span(), 0..8), prop::collection::vec(closure, 0..3), prop::sample::select(vec![0u32, 15, 30, 60]))
        .prop_map(|(weekly, closures, last_call_minutes)| OpeningHours { weekly, closures, last_call_minutes })
}

fn arb_staffed() -> impl Strategy<Value = Vec<WeeklySpan>> {
    prop_oneof![Just(Vec::new()), prop::collection::vec(arb_span(), 1..5)]
}

fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
    (0usize..4, 0i64..(10 * 24 * 4)).prop_map(|(b, quarters)| {
        date(BASES[b]).and_time(NaiveTime::MIN).and_utc() + Duration::minutes(quarters * 15 + 5)
    })
}

fn arb_tz() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![chrono_tz::Europe::Rome, chrono_tz::America::New_York])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn take_order_pickup_times_agree_with_the_edge(
        h in arb_hours(), tz in arb_tz(), now in arb_now(), prep in prop::sample::select(vec![0u32, 20, 45, 90]),
        asked in prop::option::of(arb_time()),
    ) {
        let (cfg, kb) = restaurant(tz, h.clone(), Vec::new(), prep, 30, 0);
        let ready = ready_at(now, prep);
        let mut params = json!({"items": [{"name": "Soup"}], "fulfillment": "pickup"});
        let at = match asked {
            None => ready,
            Some(time) => {
                params["pickup_time"] = json!(time.format("%H:%M").to_string());
                hours::resolve_local(tz, local_date(now, tz).and_time(time)).unwrap()
            }
        };
        let out = call(&cfg, &kb, tz, now, "take_order", params);
        if at < ready {
            let message = problems(&out).into_iter().find(|p| p["kind"] == "pickup_time").map(|p| p["message"].to_string());
            prop_assert_eq!(
                message,
                Some(json!(format!("The earliest we can have it ready is {}.", hm(ready, tz))).to_string()),
                "{}", out.result
            );
        } else {
            check_pickup(&h, tz, at, &out)?;
        }
        // The issue this guards: the edge streams the call (open, before last call) and the
        // order it leads to is refused although it is ready before closing.
        if asked.is_none() && hours::status(&h, tz, now).is_open() && h.last_call_minutes >= prep + 5 {
            prop_assert_eq!(out.actions.len(), 1, "the edge says open at {}: {}", now, out.result);
        }
    }

    #[test]
    fn transfer_to_staff_agrees_on_staffed_hours(h in arb_hours(), staffed in arb_staffed(), tz in arb_tz(), now in arb_now()) {
        let (cfg, kb) = restaurant(tz, h.clone(), staffed.clone(), 20, 30, 0);
        // Staffed hours (opening hours when none are set), the restaurant's closures, no last call.
        let staff = OpeningHours {
            weekly: if staffed.is_empty() { h.weekly.clone() } else { staffed },
            closures: h.closures.clone(),
            last_call_minutes: 0,
        };
        let out = call(&cfg, &kb, tz, now, "transfer_to_staff", json!({"reason": "complaint"}));
        let transferred = out.data.as_ref().is_some_and(|d| d["transferred"] == true);
        prop_assert_eq!(transferred, hours::status(&staff, tz, now).is_open(), "at {}: {}", now, out.result);
        if !transferred {
            match next_open(&staff, tz, now, 7) {
                Some(n) if local_date(n, tz) == local_date(now, tz) => {
                    prop_assert!(out.result.contains(&format!("available from {} today.", hm(n, tz))), "next {}: {}", n, out.result)
                }
                Some(n) => prop_assert!(
                    out.result.contains(&format!("available {} from {}.", spoken(local_date(n, tz)), hm(n, tz))),
                    "next {}: {}", n, out.result
                ),
                None => prop_assert!(!out.result.contains("will be available"), "{}", out.result),
            }
        }
    }

    #[test]
    fn answer_question_tells_what_the_agent_is_told(h in arb_hours(), tz in arb_tz(), now in arb_now()) {
        let (cfg, kb) = restaurant(tz, h.clone(), Vec::new(), 20, 30, 0);
        let out = call(&cfg, &kb, tz, now, "answer_question", json!({"question": "What are your opening hours today?"}));
        // `hours_today` is "12:00–15:00, 19:00–23:00" or "closed today (reason)"; the passage
        // says "Friday 12 June: 12:00 to 15:00 and 19:00 to 23:00" or "…: closed (reason)".
        let today = hours::describe_today(&h, tz, now);
        let said = match today.strip_prefix("closed today") {
            Some(reason) => format!("closed{reason}"),
            None => {
                let spans: Vec<String> = today.split(", ").map(|s| s.replace('–', " to ")).collect();
                match spans.as_slice() {
                    [one] => one.clone(),
                    [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
                    [] => String::new(),
                }
            }
        };
        let line = format!("{}: {said};", spoken(local_date(now, tz)));
        prop_assert!(out.result.contains(&line), "expected {:?} in {}", line, out.result);
        let next = format!("Next opening: {};", hours::describe_next_open(&h, tz, now));
        prop_assert!(out.result.contains(&next), "expected {:?} in {}", next, out.result);
    }

    #[test]
    fn book_table_slots_lie_inside_the_edges_hours(
        h in arb_hours(), tz in arb_tz(), now in arb_now(), day in 0i64..3, time in arb_time(),
        slot in prop::sample::select(vec![15u32, 30, 45, 60]), lead in prop::sample::select(vec![0u32, 60]),
    ) {
        let (cfg, kb) = restaurant(tz, h.clone(), Vec::new(), 20, slot, lead);
        let on = local_date(now, tz) + Duration::days(day);
        let asked = on.and_time(time);
        let out = call(&cfg, &kb, tz, now, "book_table",
            json!({"date": on.to_string(), "time": time.format("%H:%M").to_string(), "party_size": 2, "name": "Ada"}));
        let data = out.data.clone().unwrap_or_default();
        let earliest = now + Duration::minutes(i64::from(lead));
        let bookable = |t: &DateTime<Utc>| *t >= earliest && slot_fits(&h, tz, *t, slot);
        if data["status"] == "booked" {
            prop_assert!(instants(tz, asked).iter().any(bookable), "booked {} but the edge's hours disagree", asked);
        }
        for alt in data["alternatives"].as_array().cloned().unwrap_or_default() {
            let local = NaiveDateTime::parse_from_str(&format!("{} {}", alt["date"].as_str().unwrap(), alt["time"].as_str().unwrap()), "%Y-%m-%d %H:%M").unwrap();
            prop_assert!(instants(tz, local).iter().any(bookable), "offered {} but the edge's hours disagree: {}", local, out.result);
        }
        // The start of every period of opening is a slot (when a table fits before last call).
        if let [at, ..] = instants(tz, asked).as_slice() {
            if bookable(at) && !open_at(&h, tz, *at - Duration::minutes(1)) {
                prop_assert_eq!(&data["status"], "booked", "{} opens a period: {}", asked, out.result);
            }
        }
    }
}
