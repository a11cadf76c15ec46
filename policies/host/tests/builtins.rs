//! The built-in tools, run as the bridge runs them (tool set from the restaurant's config, input
//! built from its grants), on the three example restaurants' menus, hours and booking settings.

mod common;

use common::*;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_policy_host::abi::{Action, EarlierResult, Fulfillment, ToolOutput};
use pulsara_policy_host::{PolicyError, PolicyHost, ToolRun};
use serde_json::{json, Value};

struct Restaurant {
    host: PolicyHost,
    cfg: RestaurantConfig,
    kb: KnowledgeBase,
}

impl Restaurant {
    fn new(id: &str) -> Self {
        let (mut cfg, kb) = restaurant(id);
        // A generous deadline: these tests share a loaded machine (deadlines: sandbox.rs).
        for tool in &mut cfg.tools {
            tool.limits.deadline_ms = Some(1000);
        }
        Self { host: host(), cfg, kb }
    }

    fn call_with(&self, tool: &str, params: Value, local_time: &str, earlier: Vec<EarlierResult>) -> ToolRun {
        let set = self.host.tool_set(&self.cfg);
        let mut ctx = context(&self.cfg, local_time);
        ctx.earlier_results = earlier;
        self.host.call(&set, &self.cfg, &self.kb, tool, params, ctx)
    }

    fn call(&self, tool: &str, params: Value, local_time: &str) -> ToolOutput {
        let run = self.call_with(tool, params, local_time, Vec::new());
        let record = run.record.as_ref().expect("ran");
        assert!(record.fuel_used < 11_000_000, "{tool} used {} fuel", record.fuel_used);
        run.result.unwrap_or_else(|e| panic!("{tool} failed: {e}"))
    }

    fn price(&self, id: &str) -> i64 {
        self.kb.menu.iter().find(|i| i.id == id).unwrap().price_minor
    }

    fn option_price(&self, id: &str, option: &str) -> i64 {
        let item = self.kb.menu.iter().find(|i| i.id == id).unwrap();
        item.modifiers.iter().flat_map(|g| &g.options).find(|o| o.name == option).unwrap().price_minor
    }
}

fn problems(out: &ToolOutput) -> Vec<Value> {
    let data = out.data.as_ref().expect("data");
    assert_eq!(data["status"], "needs_changes", "{}", out.result);
    assert!(out.actions.is_empty());
    data["problems"].as_array().unwrap().clone()
}

const ROMA_TUE_EVENING: &str = "2026-12-01T19:10:00+01:00";

// ---------------------------------------------------------------- take_order

#[test]
fn order_with_modifiers_misspelling_and_tax() {
    let r = Restaurant::new("trattoria-roma");
    let out = r.call(
        "take_order",
        json!({"items": [
            {"name": "margarita", "quantity": 2, "modifiers": ["large", "olives"]},
            {"name": "tiramissu", "quantity": 1}
        ], "fulfillment": "pickup", "pickup_time": "20:00", "customer_name": "Ada"}),
        ROMA_TUE_EVENING,
    );
    let [Action::RecordOrder(order)] = out.actions.as_slice() else { panic!("{out:?}") };
    let pizza = r.price("margherita") + r.option_price("margherita", "Large") + r.option_price("margherita", "Olives");
    let subtotal = 2 * pizza + r.price("tiramisu");
    assert_eq!(order.items[0].name, "Pizza Margherita");
    assert_eq!(order.items[0].unit_price_minor, pizza);
    assert_eq!(order.items[1].name, "Tiramisù");
    assert_eq!(order.subtotal_minor, subtotal);
    assert_eq!(order.tax_minor, (subtotal * 1000 + 5000) / 10_000, "10 % tax, rounded");
    assert_eq!(order.total_minor, order.subtotal_minor + order.tax_minor);
    assert_eq!(order.currency, "EUR");
    assert_eq!(order.fulfillment, Fulfillment::Pickup);
    assert_eq!(order.pickup_time.as_deref(), Some("2026-12-01T20:00:00+01:00"));
    assert_eq!(order.customer_name.as_deref(), Some("Ada"));
    assert_eq!(order.customer_phone.as_deref(), Some("+15551230000"));
    assert!(out.result.contains("Pizza Margherita (large, olives)"), "{}", out.result);
    assert!(out.result.contains("20:00"), "{}", out.result);
}

#[test]
fn sold_out_item_is_refused_with_alternatives() {
    let r = Restaurant::new("trattoria-roma");
    let out = r.call("take_order", json!({"items": [{"name": "cacio e pepe"}]}), ROMA_TUE_EVENING);
    let p = problems(&out);
    assert_eq!(p[0]["kind"], "unavailable");
    let alts: Vec<&str> = p[0]["alternatives"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!alts.is_empty());
    for alt in &alts {
        let item = r.kb.menu.iter().find(|i| i.name == *alt).unwrap();
        assert!(item.available && item.category == "Pasta", "{alt} is an available pasta");
    }
    assert!(out.result.contains("sold out") && out.result.contains(alts[0]), "{}", out.result);
}

#[test]
fn missing_required_modifier_names_the_choices() {
    let r = Restaurant::new("trattoria-roma");
    let out = r.call("take_order", json!({"items": [{"name": "diavola", "quantity": 1}]}), ROMA_TUE_EVENING);
    let p = problems(&out);
    assert_eq!(p[0]["kind"], "modifier_missing");
    assert!(out.result.contains("Regular") && out.result.contains("Large"), "{}", out.result);

    // Brisket needs exactly two sides.
    let b = Restaurant::new("brooklyn-smokehouse");
    let noon = "2026-12-01T12:00:00-05:00";
    let out = b.call("take_order", json!({"items": [{"name": "brisket", "modifiers": ["coleslaw"]}]}), noon);
    assert_eq!(problems(&out)[0]["kind"], "modifier_missing");
    let out = b.call("take_order", json!({"items": [{"name": "brisket", "modifiers": ["coleslaw", "cornbread", "mac and cheese"]}]}), noon);
    assert_eq!(problems(&out)[0]["kind"], "too_many_modifiers");
    let out = b.call("take_order", json!({"items": [{"name": "brisket", "modifiers": ["coleslaw", "corn bread"]}]}), noon);
    assert_eq!(out.actions.len(), 1, "{}", out.result);
}

#[test]
fn quantity_unknown_items_and_times_are_checked() {
    let r = Restaurant::new("trattoria-roma");
    let out = r.call("take_order", json!({"items": [{"name": "supplì", "quantity": 11}]}), ROMA_TUE_EVENING);
    assert_eq!(problems(&out)[0]["kind"], "quantity");
    let out = r.call("take_order", json!({"items": [{"name": "hamburger"}]}), ROMA_TUE_EVENING);
    assert_eq!(problems(&out)[0]["kind"], "unknown_item");
    // Earlier than the preparation time allows (25 min → 19:35).
    let out = r.call("take_order", json!({"items": [{"name": "suppli"}], "pickup_time": "19:20"}), ROMA_TUE_EVENING);
    assert!(problems(&out)[0]["message"].as_str().unwrap().contains("19:35"), "{}", out.result);
    // After closing (23:00 on Tuesdays).
    let out = r.call("take_order", json!({"items": [{"name": "suppli"}], "pickup_time": "23:30"}), ROMA_TUE_EVENING);
    assert_eq!(problems(&out)[0]["kind"], "pickup_time");
    // Closed day (Monday): ASAP falls outside the hours; the next opening is named.
    let out = r.call("take_order", json!({"items": [{"name": "suppli"}]}), "2026-11-30T12:00:00+01:00");
    assert!(out.result.contains("Tuesday 1 December at 12:00"), "{}", out.result);
    // No delivery at this restaurant.
    let out = r.call("take_order", json!({"items": [{"name": "suppli"}], "fulfillment": "delivery", "postcode": "00186"}), ROMA_TUE_EVENING);
    assert_eq!(problems(&out)[0]["kind"], "delivery_unavailable");
    // Bad parameters are a tool error the agent can speak around.
    let run = r.call_with("take_order", json!({"items": "pizza"}), ROMA_TUE_EVENING, Vec::new());
    assert!(matches!(run.result, Err(PolicyError::Guest(_))));
}

#[test]
fn delivery_zone_minimum_and_fee() {
    let b = Restaurant::new("brooklyn-smokehouse");
    let noon = "2026-12-01T12:00:00-05:00";
    let out = b.call("take_order", json!({"items": [{"name": "ribs", "quantity": 2}], "fulfillment": "delivery", "postcode": "10001"}), noon);
    assert_eq!(problems(&out)[0]["kind"], "outside_delivery_zone");
    let out = b.call("take_order", json!({"items": [{"name": "lemonade"}], "fulfillment": "delivery", "postcode": "11211"}), noon);
    assert_eq!(problems(&out)[0]["kind"], "below_delivery_minimum");
    let out = b.call("take_order", json!({"items": [{"name": "ribs", "quantity": 2}], "fulfillment": "delivery", "postcode": "11 211"}), noon);
    let [Action::RecordOrder(order)] = out.actions.as_slice() else { panic!("{out:?}") };
    let subtotal = 2 * b.price("ribs-half");
    assert_eq!(order.subtotal_minor, subtotal);
    assert_eq!(order.delivery_fee_minor, 499);
    assert_eq!(order.total_minor, subtotal + order.tax_minor + 499);
    assert_eq!(order.postcode.as_deref(), Some("11211"));
    assert_eq!(order.fulfillment, Fulfillment::Delivery);
}

// ---------------------------------------------------------------- book_table

const NY_TUESDAY: &str = "2026-12-01T12:00:00-05:00";

fn booking_refusal(out: &ToolOutput) -> (String, Vec<String>) {
    assert!(out.actions.is_empty(), "{}", out.result);
    let data = out.data.as_ref().unwrap();
    assert_eq!(data["status"], "not_booked");
    let alts = data["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}T{}", a["date"].as_str().unwrap(), a["time"].as_str().unwrap()))
        .collect();
    (data["reason"].as_str().unwrap().to_owned(), alts)
}

#[test]
fn booking_succeeds_with_a_record_booking_action() {
    let b = Restaurant::new("brooklyn-smokehouse");
    let out = b.call("book_table", json!({"date": "2026-12-05", "time": "20:00", "party_size": 4, "name": "Grace"}), NY_TUESDAY);
    let [Action::RecordBooking(booking)] = out.actions.as_slice() else { panic!("{out:?}") };
    assert_eq!((booking.date.as_str(), booking.time.as_str(), booking.party_size), ("2026-12-05", "20:00", 4));
    assert_eq!(booking.name, "Grace");
    assert!(out.result.contains("Saturday 5 December"), "{}", out.result);
}

#[test]
fn full_slot_offers_the_nearest_free_slots() {
    let b = Restaurant::new("brooklyn-smokehouse");
    // 19:30 is fully booked; 19:00 has 2 covers left, not enough for 4.
    let out = b.call("book_table", json!({"date": "2026-12-05", "time": "19:30", "party_size": 4, "name": "Grace"}), NY_TUESDAY);
    let (reason, alts) = booking_refusal(&out);
    assert_eq!(reason, "slot_full");
    assert_eq!(alts, vec!["2026-12-05T18:30", "2026-12-05T20:00", "2026-12-05T20:30"]);
    assert!(out.result.contains("20:00"), "{}", out.result);
    // A party of 2 still fits at 19:00.
    let out = b.call("book_table", json!({"date": "2026-12-05", "time": "19:00", "party_size": 2, "name": "Ada"}), NY_TUESDAY);
    assert_eq!(out.actions.len(), 1, "{}", out.result);

    let s = Restaurant::new("sakura-sushi");
    let out = s.call("book_table", json!({"date": "2026-12-04", "time": "19:00", "party_size": 2, "name": "Ken"}), "2026-12-01T10:00:00+09:00");
    let (reason, alts) = booking_refusal(&out);
    assert_eq!(reason, "slot_full");
    assert!(alts.contains(&"2026-12-04T18:30".to_owned()) && alts.contains(&"2026-12-04T19:30".to_owned()), "{alts:?}");
}

#[test]
fn party_too_large_is_refused_with_a_transfer_hint() {
    let b = Restaurant::new("brooklyn-smokehouse");
    let out = b.call("book_table", json!({"date": "2026-12-05", "time": "20:00", "party_size": 12, "name": "Big"}), NY_TUESDAY);
    let (reason, _) = booking_refusal(&out);
    assert_eq!(reason, "party_too_large");
    assert!(out.result.contains("10"), "{}", out.result);
    let s = Restaurant::new("sakura-sushi");
    let out = s.call("book_table", json!({"date": "2026-12-03", "time": "19:00", "party_size": 7, "name": "Big"}), "2026-12-01T10:00:00+09:00");
    assert_eq!(booking_refusal(&out).0, "party_too_large");
}

#[test]
fn closed_days_and_closures_are_refused_with_other_days_offered() {
    let s = Restaurant::new("sakura-sushi");
    let now = "2026-12-01T10:00:00+09:00";
    // Sunday: no hours at all.
    let out = s.call("book_table", json!({"date": "2026-12-06", "time": "19:00", "party_size": 2, "name": "Ken"}), now);
    let (reason, alts) = booking_refusal(&out);
    assert_eq!(reason, "closed");
    assert!(alts.iter().all(|a| a.starts_with("2026-12-07")), "next open day is Monday: {alts:?}");
    // New Year closure, with its reason.
    let out = s.call("book_table", json!({"date": "2026-12-31", "time": "19:00", "party_size": 2, "name": "Ken"}), now);
    assert_eq!(booking_refusal(&out).0, "closed");
    assert!(out.result.contains("New Year holidays"), "{}", out.result);
    // Too short notice (3 hours' lead) and off-grid / outside hours.
    let out = s.call("book_table", json!({"date": "2026-12-01", "time": "12:00", "party_size": 2, "name": "Ken"}), now);
    assert_eq!(booking_refusal(&out).0, "too_short_notice");
    let out = s.call("book_table", json!({"date": "2026-12-02", "time": "15:00", "party_size": 2, "name": "Ken"}), now);
    assert_eq!(booking_refusal(&out).0, "no_such_slot");
    // More than 30 days ahead.
    let out = s.call("book_table", json!({"date": "2027-02-01", "time": "19:00", "party_size": 2, "name": "Ken"}), now);
    assert_eq!(booking_refusal(&out).0, "too_far_ahead");
}

// ---------------------------------------------------------------- answer_question

#[test]
fn answers_come_from_the_knowledge_base_and_menu() {
    let r = Restaurant::new("trattoria-roma");
    let out = r.call("answer_question", json!({"question": "Do you have gluten free pasta?"}), ROMA_TUE_EVENING);
    let passages = out.data.as_ref().unwrap()["passages"].as_array().unwrap().clone();
    assert_eq!(passages[0]["title"], "Gluten-free options", "{}", out.result);

    let b = Restaurant::new("brooklyn-smokehouse");
    // brooklyn's answer_question is not configured: an unknown tool.
    let run = b.call_with("answer_question", json!({"question": "parking?"}), NY_TUESDAY, Vec::new());
    assert!(matches!(run.result, Err(PolicyError::UnknownTool(_))));

    let s = Restaurant::new("sakura-sushi");
    let now = "2026-12-01T10:00:00+09:00";
    let out = s.call("answer_question", json!({"question": "Can I bring my children?"}), now);
    assert_eq!(out.data.as_ref().unwrap()["passages"][0]["title"], "Children", "{}", out.result);
    let out = s.call("answer_question", json!({"question": "is the fatty tuna available today"}), now);
    assert!(out.result.contains("Otoro") && out.result.contains("Sold out"), "{}", out.result);
    let out = s.call("answer_question", json!({"question": "Do you sell car insurance?"}), now);
    assert_eq!(out.data.as_ref().unwrap()["found"], false, "{}", out.result);
}

// ---------------------------------------------------------------- transfer_to_staff

#[test]
fn transfer_only_in_staffed_hours() {
    let b = Restaurant::new("brooklyn-smokehouse");
    let out = b.call("transfer_to_staff", json!({"reason": "complaint"}), "2026-12-01T13:00:00-05:00");
    assert_eq!(out.actions, vec![Action::TransferToStaff { reason: "complaint".into() }]);
    // Open until 22:00 on Tuesdays, but staffed only until 21:00.
    let out = b.call("transfer_to_staff", json!({"reason": "complaint"}), "2026-12-01T21:30:00-05:00");
    assert!(out.actions.is_empty());
    assert!(out.result.contains("Wednesday 2 December from 12:00"), "{}", out.result);
    // Trattoria has no staffed hours: its opening hours apply (closed Mondays).
    let r = Restaurant::new("trattoria-roma");
    let out = r.call("transfer_to_staff", json!({}), "2026-11-30T13:00:00+01:00");
    assert!(out.actions.is_empty(), "{}", out.result);
    let out = r.call("transfer_to_staff", json!({}), "2026-12-01T13:00:00+01:00");
    assert_eq!(out.actions.len(), 1);
}

// ---------------------------------------------------------------- send_confirmation

#[test]
fn confirmation_of_the_earlier_order_or_booking() {
    let b = Restaurant::new("brooklyn-smokehouse");
    let booked = b.call("book_table", json!({"date": "2026-12-05", "time": "20:00", "party_size": 4, "name": "Grace"}), NY_TUESDAY);
    let earlier = vec![EarlierResult { tool: "book_table".into(), output: booked }];
    let run = b.call_with("send_confirmation", json!({"channel": "sms"}), NY_TUESDAY, earlier.clone());
    let out = run.result.unwrap();
    let [Action::SendSms { to, body }] = out.actions.as_slice() else { panic!("{out:?}") };
    assert_eq!(to, "+15551230000");
    assert!(body.contains("Brooklyn Smokehouse") || body.contains(&b.cfg.name), "{body}");
    assert!(body.contains("2026-12-05") && body.contains("20:00") && body.contains("4"), "{body}");
    // Email is not in brooklyn's grant: refused by the host.
    let run = b.call_with("send_confirmation", json!({"channel": "email", "to": "g@example.com"}), NY_TUESDAY, earlier);
    assert_eq!(run.result.unwrap_err(), PolicyError::UngrantedAction { kind: "send_email".into() });
    // Nothing to confirm yet.
    let out = b.call("send_confirmation", json!({"channel": "sms"}), NY_TUESDAY);
    assert!(out.actions.is_empty() && out.result.contains("no order or booking"), "{}", out.result);

    let s = Restaurant::new("sakura-sushi");
    let now = "2026-12-01T10:00:00+09:00";
    let booked = s.call("book_table", json!({"date": "2026-12-03", "time": "19:00", "party_size": 2, "name": "Ken"}), now);
    let earlier = vec![EarlierResult { tool: "book_table".into(), output: booked }];
    let out = s.call_with("send_confirmation", json!({"channel": "email", "to": "ken@example.jp"}), now, earlier.clone()).result.unwrap();
    assert!(matches!(&out.actions[..], [Action::SendEmail { to, subject, .. }] if to == "ken@example.jp" && subject.contains(&s.cfg.name)));
    let run = s.call_with("send_confirmation", json!({"channel": "email", "to": "not an address"}), now, earlier);
    assert!(matches!(run.result, Err(PolicyError::Guest(_))));
}

// ---------------------------------------------------------------- example policy

#[test]
fn happy_hour_example_discounts_drinks_on_weekday_evenings() {
    use pulsara_core::config::{Grants, PolicyLimits, ToolBinding};
    let (mut cfg, kb) = restaurant("trattoria-roma");
    let manifest = pulsara_policy_abi::manifest::Manifest::read(&modules_dir().join("manifest.json")).unwrap();
    cfg.tools = vec![ToolBinding {
        name: "happy_hour".into(),
        module_sha256: manifest.get("happy_hour").unwrap().sha256.clone(),
        grants: Grants { menu: true, ..Default::default() },
        limits: PolicyLimits::default(),
    }];
    let r = Restaurant { host: host(), cfg, kb };
    let water = r.price("acqua");
    let out = r.call("happy_hour", json!({"item": "sparkling water"}), "2026-12-01T17:30:00+01:00");
    assert_eq!(out.data.as_ref().unwrap()["price_minor"], water - (water * 3000 + 5000) / 10_000);
    let out = r.call("happy_hour", json!({"item": "sparkling water"}), "2026-12-05T17:30:00+01:00");
    assert_eq!(out.data.as_ref().unwrap()["price_minor"], water, "no discount on Saturdays");
    let out = r.call("happy_hour", json!({"item": "tiramisu"}), "2026-12-01T17:30:00+01:00");
    assert_eq!(out.data.as_ref().unwrap()["price_minor"], r.price("tiramisu"), "food is not discounted");
}
