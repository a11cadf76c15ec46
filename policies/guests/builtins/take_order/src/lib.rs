//! `take_order`: turns what the caller asked for into a priced order, or explains what needs to
//! change. Items are matched by name, alias or small misspelling; sold-out ("86'd") items are
//! refused with the nearest alternatives; modifiers are checked against each group's
//! required/min/max; quantities against the restaurant's limit; pickup or delivery (zone by
//! postcode, minimum order, fee); the pickup time against preparation time and opening hours.
//!
//! A valid order yields a read-back for the agent and a `record_order` action. An order with
//! problems yields no action and a result listing every problem, so the agent can ask once.
//!
//! A pickup (or delivery) time must fall inside a period of opening, as the host's hours facts
//! give them (closures applied; last call stops calls, not pickups of orders already taken).
//!
//! Grants: `menu`, `ordering` (required), `hours` (optional: without it times are not checked
//! against opening hours, and the call's UTC offset stands for the whole day); actions:
//! `record_order`.

use pulsara_policy_sdk::chrono::{DateTime, Duration, FixedOffset, Timelike, Utc};
use pulsara_policy_sdk::config::{MenuItem, OrderingConfig};
use pulsara_policy_sdk::menu::{self, Lookup, MenuIndex};
use pulsara_policy_sdk::money::{apply_bps, format_minor};
use pulsara_policy_sdk::text::join_words;
use pulsara_policy_sdk::time::{self, hhmm, Hours};
use pulsara_policy_sdk::{
    json, params, require, Action, Fulfillment, Order, OrderLine, OrderModifier, Tool, ToolError, ToolInput,
    ToolOutput, Value,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    items: Vec<ItemRequest>,
    #[serde(default)]
    fulfillment: Option<String>,
    #[serde(default)]
    pickup_time: Option<String>,
    #[serde(default)]
    postcode: Option<String>,
    #[serde(default)]
    customer_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ItemRequest {
    name: String,
    #[serde(default = "one")]
    quantity: i64,
    #[serde(default)]
    modifiers: Vec<String>,
}

fn one() -> i64 {
    1
}

/// Orders larger than this many lines are refused outright (bounded work per call).
const MAX_LINES: usize = 50;

pub struct TakeOrder;

impl Tool for TakeOrder {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let menu_items = require(&input.data.menu, "menu")?;
        let ordering = require(&input.data.ordering, "ordering settings")?;
        let currency = input.data.currency.clone().unwrap_or_default();
        let call_time = time::now(&input.context)?;
        let clock = Clock { hours: input.data.hours.as_ref().map(Hours::opening), offset: *call_time.offset() };
        let now = call_time.to_utc();
        if p.items.is_empty() {
            return Err(ToolError::new("no items in the order; ask the caller what they would like"));
        }
        if p.items.len() > MAX_LINES {
            return Err(ToolError::new(format!("an order can have at most {MAX_LINES} lines")));
        }

        let index = MenuIndex::new(menu_items);
        let mut problems: Vec<Value> = Vec::new();
        let mut lines: Vec<OrderLine> = Vec::new();
        for req in &p.items {
            match price_line(&index, ordering, req) {
                Ok(line) => lines.push(line),
                Err(problem) => problems.push(problem),
            }
        }

        let subtotal: i64 = lines.iter().map(|l| l.line_total_minor).sum();
        let fulfillment = match p.fulfillment.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("pickup") | Some("collection") | Some("takeaway") => Fulfillment::Pickup,
            Some("delivery") => Fulfillment::Delivery,
            Some(other) => {
                return Err(ToolError::new(format!("fulfillment must be \"pickup\" or \"delivery\", not {other:?}")))
            }
        };
        let mut fee = 0;
        match fulfillment {
            Fulfillment::Pickup if !ordering.pickup => problems.push(problem(
                "pickup_unavailable",
                "",
                "We don't offer pickup; orders are delivery only.".into(),
                &[],
            )),
            Fulfillment::Pickup => {}
            Fulfillment::Delivery => match &ordering.delivery {
                None => problems.push(problem("delivery_unavailable", "", "We don't deliver; orders are for pickup only.".into(), &[])),
                Some(d) => {
                    let code = p.postcode.as_deref().map(normalize_postcode).unwrap_or_default();
                    if code.is_empty() {
                        problems.push(problem("postcode_missing", "", "For delivery I need the postcode.".into(), &[]));
                    } else if !d.postcodes.iter().any(|z| code.starts_with(&normalize_postcode(z))) {
                        problems.push(problem(
                            "outside_delivery_zone",
                            "",
                            format!("Sorry, we don't deliver to {code}. Pickup is possible."),
                            &[],
                        ));
                    }
                    if lines.len() == p.items.len() && subtotal < d.min_order_minor {
                        problems.push(problem(
                            "below_delivery_minimum",
                            "",
                            format!(
                                "The minimum for delivery is {}; the order is {}.",
                                format_minor(d.min_order_minor, &currency),
                                format_minor(subtotal, &currency)
                            ),
                            &[],
                        ));
                    }
                    fee = d.fee_minor;
                }
            },
        }

        let ready_at = match when_ready(&clock, ordering, now, p.pickup_time.as_deref()) {
            Ok(t) => Some(t),
            Err(message) => {
                problems.push(problem("pickup_time", "", message, &[]));
                None
            }
        };

        if !problems.is_empty() {
            let messages: Vec<String> =
                problems.iter().filter_map(|p| p["message"].as_str().map(str::to_owned)).collect();
            return Ok(ToolOutput {
                result: format!("The order can't be placed yet. {}", messages.join(" ")),
                data: Some(json!({"status": "needs_changes", "problems": problems})),
                actions: Vec::new(),
            });
        }

        let tax = apply_bps(subtotal, ordering.tax_rate_bps);
        let total = subtotal + tax + fee;
        let ready_at = clock.local(ready_at.unwrap_or(now));
        let pickup_rfc3339 = ready_at.to_rfc3339();
        let order = Order {
            items: lines,
            subtotal_minor: subtotal,
            tax_minor: tax,
            delivery_fee_minor: fee,
            total_minor: total,
            currency: currency.clone(),
            fulfillment,
            pickup_time: Some(pickup_rfc3339),
            postcode: p.postcode.as_deref().map(normalize_postcode).filter(|_| fulfillment == Fulfillment::Delivery),
            customer_name: p.customer_name.clone().filter(|n| !n.trim().is_empty()),
            customer_phone: Some(input.context.caller.clone()).filter(|c| !c.is_empty()),
        };
        let result = read_back(&order, ready_at);
        Ok(ToolOutput {
            result,
            data: Some(json!({"status": "placed", "total_minor": total, "currency": currency})),
            actions: vec![Action::RecordOrder(order)],
        })
    }
}

fn problem(kind: &str, item: &str, message: String, alternatives: &[&MenuItem]) -> Value {
    json!({
        "kind": kind,
        "item": item,
        "message": message,
        "alternatives": alternatives.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
    })
}

fn names(items: &[&MenuItem]) -> Vec<String> {
    items.iter().map(|i| i.name.clone()).collect()
}

fn price_line(index: &MenuIndex<'_>, ordering: &OrderingConfig, req: &ItemRequest) -> Result<OrderLine, Value> {
    let item = match index.find(&req.name) {
        Lookup::Found { item, .. } => item,
        Lookup::Ambiguous(options) => {
            return Err(problem(
                "ambiguous_item",
                &req.name,
                format!("Which {} did they mean: {}?", req.name, join_words(&names(&options), "or")),
                &options,
            ))
        }
        Lookup::NotFound { suggestions } => {
            let message = if suggestions.is_empty() {
                format!("{} is not on our menu.", req.name)
            } else {
                format!("{} is not on our menu. Maybe {}?", req.name, join_words(&names(&suggestions), "or"))
            };
            return Err(problem("unknown_item", &req.name, message, &suggestions));
        }
    };
    if !item.available {
        let alts = index.alternatives(item, 3);
        let message = if alts.is_empty() {
            format!("Sorry, {} is sold out today.", item.name)
        } else {
            format!("Sorry, {} is sold out today. We could offer {} instead.", item.name, join_words(&names(&alts), "or"))
        };
        return Err(problem("unavailable", &item.name, message, &alts));
    }
    if req.quantity < 1 || req.quantity > i64::from(ordering.max_quantity_per_item) {
        return Err(problem(
            "quantity",
            &item.name,
            format!("{} of {} is not possible; between 1 and {} per order.", req.quantity, item.name, ordering.max_quantity_per_item),
            &[],
        ));
    }
    let quantity = req.quantity as u32;

    let mut chosen: Vec<OrderModifier> = Vec::new();
    let mut counts = vec![0u32; item.modifiers.len()];
    for said in &req.modifiers {
        let Some((group, option)) = menu::find_option(item, said) else {
            let options: Vec<String> =
                item.modifiers.iter().flat_map(|g| g.options.iter().map(|o| o.name.clone())).collect();
            let message = if options.is_empty() {
                format!("{} can't be changed ({said:?} is not an option).", item.name)
            } else {
                format!("{said:?} is not an option for {}; the options are {}.", item.name, join_words(&options, "and"))
            };
            return Err(problem("unknown_modifier", &item.name, message, &[]));
        };
        if !option.available {
            return Err(problem(
                "modifier_unavailable",
                &item.name,
                format!("Sorry, {} is not available today for {}.", option.name, item.name),
                &[],
            ));
        }
        if chosen.iter().any(|c| c.group == group.name && c.option == option.name) {
            continue;
        }
        if let Some(i) = item.modifiers.iter().position(|g| g.name == group.name) {
            counts[i] += 1;
        }
        chosen.push(OrderModifier { group: group.name.clone(), option: option.name.clone(), price_minor: option.price_minor });
    }
    for (group, count) in item.modifiers.iter().zip(&counts) {
        let min = if group.required { group.min.max(1) } else { group.min };
        let choices: Vec<String> = group.options.iter().filter(|o| o.available).map(|o| o.name.clone()).collect();
        if *count < min {
            let what = if min == 1 { "a choice".to_owned() } else { format!("{min} choices") };
            return Err(problem(
                "modifier_missing",
                &item.name,
                format!("{} needs {what} of {}: {}.", item.name, group.name.to_lowercase(), join_words(&choices, "or")),
                &[],
            ));
        }
        if *count > group.max {
            return Err(problem(
                "too_many_modifiers",
                &item.name,
                format!("{} allows at most {} {} choice{}.", item.name, group.max, group.name.to_lowercase(), if group.max == 1 { "" } else { "s" }),
                &[],
            ));
        }
    }
    let unit = item.price_minor + chosen.iter().map(|m| m.price_minor).sum::<i64>();
    Ok(OrderLine {
        item_id: item.id.clone(),
        name: item.name.clone(),
        quantity,
        modifiers: chosen,
        unit_price_minor: unit,
        line_total_minor: unit * i64::from(quantity),
    })
}

/// The restaurant's clock: the granted hours facts, or else the call's UTC offset.
struct Clock<'a> {
    hours: Option<Hours<'a>>,
    offset: FixedOffset,
}

impl Clock<'_> {
    fn local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        match &self.hours {
            Some(h) => h.local(t),
            None => t.with_timezone(&self.offset),
        }
    }
}

/// How many days ahead a refusal looks for the next opening.
const NEXT_OPEN_DAYS: i64 = 7;

/// When the order will be ready: the requested time today (or ASAP), not before the preparation
/// time, inside a period of opening when the hours are granted.
fn when_ready(clock: &Clock<'_>, ordering: &OrderingConfig, now: DateTime<Utc>, requested: Option<&str>) -> Result<DateTime<Utc>, String> {
    let earliest = round_up_5(clock, now + Duration::minutes(i64::from(ordering.prep_minutes)));
    let at = match requested.map(str::trim).filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("asap")) {
        None => earliest,
        Some(raw) => {
            let t = time::parse_time(raw).ok_or_else(|| format!("I didn't understand the pickup time {raw:?}."))?;
            let wall = clock.local(now).date_naive().and_time(t);
            let at = match &clock.hours {
                Some(h) => h.instant(wall),
                None => (wall - Duration::seconds(i64::from(clock.offset.local_minus_utc()))).and_utc(),
            };
            if at < earliest {
                return Err(format!("The earliest we can have it ready is {}.", hhmm(clock.local(earliest).time())));
            }
            at
        }
    };
    if let Some(hours) = &clock.hours {
        if !hours.is_open(at) {
            let day = clock.local(at).date_naive();
            let said = hhmm(clock.local(at).time());
            let next = hours.next_open(at).map(|t| clock.local(t)).filter(|t| t.date_naive() <= day + Duration::days(NEXT_OPEN_DAYS));
            let message = match next {
                Some(next) if next.date_naive() == day => {
                    format!("We're closed at {said}; we open again at {}.", hhmm(next.time()))
                }
                Some(next) => format!(
                    "We're closed at {said}; we open again {} at {}.",
                    time::spoken_date(next.date_naive()),
                    hhmm(next.time())
                ),
                None => format!("We're closed at {said}."),
            };
            return Err(message);
        }
    }
    Ok(at)
}

/// `t` without seconds, rounded up to the restaurant clock's next multiple of five minutes.
fn round_up_5(clock: &Clock<'_>, t: DateTime<Utc>) -> DateTime<Utc> {
    let local = clock.local(t);
    let t = t - Duration::seconds(i64::from(local.second())) - Duration::nanoseconds(i64::from(local.nanosecond()));
    match local.minute() % 5 {
        0 => t,
        rem => t + Duration::minutes(i64::from(5 - rem)),
    }
}

fn normalize_postcode(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase()
}

fn read_back(order: &Order, ready_at: DateTime<FixedOffset>) -> String {
    let lines: Vec<String> = order
        .items
        .iter()
        .map(|l| {
            let opts: Vec<String> = l.modifiers.iter().map(|m| m.option.to_lowercase()).collect();
            format!("{} × {} {}", l.quantity, menu::describe(&l.name, &opts), format_minor(l.line_total_minor, &order.currency))
        })
        .collect();
    let mut s = String::from("Order placed");
    if let Some(name) = &order.customer_name {
        s.push_str(&format!(" for {name}"));
    }
    s.push_str(&format!(": {}. Subtotal {}", lines.join(", "), format_minor(order.subtotal_minor, &order.currency)));
    if order.tax_minor > 0 {
        s.push_str(&format!(", tax {}", format_minor(order.tax_minor, &order.currency)));
    }
    if order.delivery_fee_minor > 0 {
        s.push_str(&format!(", delivery {}", format_minor(order.delivery_fee_minor, &order.currency)));
    }
    s.push_str(&format!(", total {}. ", format_minor(order.total_minor, &order.currency)));
    match order.fulfillment {
        Fulfillment::Pickup => s.push_str(&format!("Ready for pickup at {}.", hhmm(ready_at.time()))),
        Fulfillment::Delivery => s.push_str(&format!("Delivery around {}.", hhmm(ready_at.time()))),
    }
    s
}

pulsara_policy_sdk::export_tool!(TakeOrder);
