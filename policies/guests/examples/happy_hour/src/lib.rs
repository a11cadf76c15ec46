//! Example policy, written only against the SDK: `happy_hour` quotes the price of a menu item,
//! taking 30 % off drinks on weekdays between 17:00 and 19:00 (restaurant time). It shows the
//! usual shape of a policy: typed parameters, a granted part of the data, the SDK's menu lookup,
//! money and time helpers, and a result the agent can read out.
//!
//! Grants: `menu`; no actions.

use pulsara_policy_sdk::chrono::{Datelike, NaiveTime, Weekday};
use pulsara_policy_sdk::menu::{self, Lookup};
use pulsara_policy_sdk::money::{apply_bps, format_minor};
use pulsara_policy_sdk::{json, params, reply, require, time, Tool, ToolError, ToolInput, ToolOutput};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    item: String,
}

/// 30 % off, in basis points.
const DISCOUNT_BPS: u32 = 3000;

pub struct HappyHour;

impl Tool for HappyHour {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let items = require(&input.data.menu, "menu")?;
        let currency = input.data.currency.as_deref().unwrap_or("");
        let item = match menu::find(items, &p.item) {
            Lookup::Found { item, .. } => item,
            Lookup::Ambiguous(options) => {
                let names: Vec<String> = options.iter().map(|i| i.name.clone()).collect();
                return Ok(reply(format!("Which one: {}?", pulsara_policy_sdk::text::join_words(&names, "or"))));
            }
            Lookup::NotFound { .. } => return Ok(reply(format!("{} is not on the menu.", p.item))),
        };
        let now = time::now(&input.context)?;
        let weekday = !matches!(now.weekday(), Weekday::Sat | Weekday::Sun);
        let t = now.time();
        let in_window = t >= NaiveTime::from_hms_opt(17, 0, 0).unwrap_or_default()
            && t < NaiveTime::from_hms_opt(19, 0, 0).unwrap_or_default();
        let is_drink = item.category.eq_ignore_ascii_case("drinks");
        let price = if weekday && in_window && is_drink {
            item.price_minor - apply_bps(item.price_minor, DISCOUNT_BPS)
        } else {
            item.price_minor
        };
        let text = if price < item.price_minor {
            format!(
                "{} is {} during happy hour instead of {}.",
                item.name,
                format_minor(price, currency),
                format_minor(item.price_minor, currency)
            )
        } else {
            format!("{} is {}.", item.name, format_minor(price, currency))
        };
        Ok(ToolOutput { result: text, data: Some(json!({"price_minor": price})), actions: Vec::new() })
    }
}

pulsara_policy_sdk::export_tool!(HappyHour);
