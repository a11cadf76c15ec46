//! `transfer_to_staff`: asks the host to transfer the call to the restaurant's staff line, but
//! only while someone is there to answer: inside the staffed hours (or, when none are set, the
//! opening hours), closures applied, as the host's hours facts give them. Outside them it
//! declines politely and says when staff are next available.
//!
//! Grants: `hours` (without it the transfer is always allowed: the restaurant chose not to
//! restrict it); actions: `transfer_to_staff`.

use pulsara_policy_sdk::chrono::Duration;
use pulsara_policy_sdk::time::{self, hhmm, spoken_date, Hours};
use pulsara_policy_sdk::{json, params, Action, Tool, ToolError, ToolInput, ToolOutput};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    reason: String,
}

/// How many days ahead a refusal looks for the next staffed time.
const NEXT_DAYS: i64 = 7;

pub struct TransferToStaff;

impl Tool for TransferToStaff {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let reason = if p.reason.trim().is_empty() { "caller asked for a person".to_owned() } else { p.reason.trim().to_owned() };
        let now = time::now(&input.context)?.to_utc();
        if let Some(facts) = &input.data.hours {
            // Staffed hours (else opening hours), the restaurant's closures applied, no last call.
            let staffed = Hours::staffed(facts);
            if !staffed.is_open(now) {
                let today = staffed.local(now).date_naive();
                let next = staffed
                    .next_open(now)
                    .map(|t| staffed.local(t))
                    .filter(|t| t.date_naive() <= today + Duration::days(NEXT_DAYS));
                let next = match next {
                    Some(t) if t.date_naive() == today => format!(" Someone will be available from {} today.", hhmm(t.time())),
                    Some(t) => format!(" Someone will be available {} from {}.", spoken_date(t.date_naive()), hhmm(t.time())),
                    None => String::new(),
                };
                return Ok(ToolOutput {
                    result: format!(
                        "Sorry, there is no one from the team available to take the call right now.{next} Offer to help with the request or take a message."
                    ),
                    data: Some(json!({"transferred": false, "reason": "outside_staffed_hours"})),
                    actions: Vec::new(),
                });
            }
        }
        Ok(ToolOutput {
            result: "Transferring the call to a member of staff now. Tell the caller to hold for a moment.".into(),
            data: Some(json!({"transferred": true})),
            actions: vec![Action::TransferToStaff { reason }],
        })
    }
}

pulsara_policy_sdk::export_tool!(TransferToStaff);
