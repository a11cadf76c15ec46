//! `send_confirmation`: renders an SMS or email confirmation of the most recent order or booking
//! recorded earlier in the same call (found in the call context's earlier results) and returns it
//! as a `send_sms`/`send_email` action. SMS go to the caller's number; email to the address the
//! caller gave.
//!
//! Grants: none needed; actions: `send_sms` and/or `send_email`.

use pulsara_policy_sdk::money::format_minor;
use pulsara_policy_sdk::{json, params, Action, Booking, Fulfillment, Order, Tool, ToolError, ToolInput, ToolOutput};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default = "sms")]
    channel: String,
    /// Email address (for `email`); SMS always go to the caller.
    #[serde(default)]
    to: Option<String>,
}

fn sms() -> String {
    "sms".into()
}

/// SMS bodies are kept to two segments.
const MAX_SMS: usize = 300;

enum Subject<'a> {
    Order(&'a Order),
    Booking(&'a Booking),
}

pub struct SendConfirmation;

impl Tool for SendConfirmation {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let latest = input
            .context
            .earlier_results
            .iter()
            .rev()
            .flat_map(|r| r.output.actions.iter().rev())
            .find_map(|a| match a {
                Action::RecordOrder(o) => Some(Subject::Order(o)),
                Action::RecordBooking(b) => Some(Subject::Booking(b)),
                _ => None,
            });
        let Some(subject) = latest else {
            return Ok(ToolOutput {
                result: "There is no order or booking in this call to confirm yet.".into(),
                data: Some(json!({"sent": false})),
                actions: Vec::new(),
            });
        };
        let restaurant = if input.context.restaurant_name.is_empty() { "the restaurant" } else { &input.context.restaurant_name };
        let (title, body) = render(restaurant, &subject);
        match p.channel.to_ascii_lowercase().as_str() {
            "sms" | "text" => {
                let to = input.context.caller.trim();
                if !to.starts_with('+') || to.len() < 8 {
                    return Err(ToolError::new("the caller's number is withheld, so no text can be sent; offer email instead"));
                }
                let mut text: String = format!("{title}. {body}");
                if text.chars().count() > MAX_SMS {
                    text = text.chars().take(MAX_SMS - 1).collect::<String>() + "…";
                }
                Ok(ToolOutput {
                    result: "A confirmation text message is on its way to the caller's phone.".into(),
                    data: Some(json!({"sent": true, "channel": "sms"})),
                    actions: vec![Action::SendSms { to: to.to_owned(), body: text }],
                })
            }
            "email" => {
                let to = p.to.as_deref().map(str::trim).unwrap_or_default();
                if !valid_email(to) {
                    return Err(ToolError::new("I need a valid email address for the confirmation"));
                }
                Ok(ToolOutput {
                    result: format!("A confirmation email is on its way to {to}."),
                    data: Some(json!({"sent": true, "channel": "email"})),
                    actions: vec![Action::SendEmail { to: to.to_owned(), subject: title, body }],
                })
            }
            other => Err(ToolError::new(format!("channel must be \"sms\" or \"email\", not {other:?}"))),
        }
    }
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !s.contains(char::is_whitespace) && s.len() <= 254
        }
        None => false,
    }
}

fn render(restaurant: &str, subject: &Subject<'_>) -> (String, String) {
    match subject {
        Subject::Order(o) => {
            let items: Vec<String> = o
                .items
                .iter()
                .map(|l| {
                    let mods: Vec<&str> = l.modifiers.iter().map(|m| m.option.as_str()).collect();
                    if mods.is_empty() {
                        format!("{}x {}", l.quantity, l.name)
                    } else {
                        format!("{}x {} ({})", l.quantity, l.name, mods.join(", "))
                    }
                })
                .collect();
            let when = o
                .pickup_time
                .as_deref()
                .and_then(|t| t.get(11..16))
                .map(|hm| match o.fulfillment {
                    Fulfillment::Pickup => format!(" Pickup at {hm}."),
                    Fulfillment::Delivery => format!(" Delivery around {hm}."),
                })
                .unwrap_or_default();
            (
                format!("Your order at {restaurant}"),
                format!("{}. Total {}.{when}", items.join(", "), format_minor(o.total_minor, &o.currency)),
            )
        }
        Subject::Booking(b) => (
            format!("Your booking at {restaurant}"),
            format!("Table for {} on {} at {}, name {}.", b.party_size, b.date, b.time, b.name),
        ),
    }
}

pulsara_policy_sdk::export_tool!(SendConfirmation);
