//! `book_table`: books a table when the party size, day, time, lead time and the slot's capacity
//! allow it; otherwise says why and, when the slot is full or off the grid, offers the nearest
//! free slots (same day first, then the following days).
//!
//! Slots: every `slot_minutes` from the start of each opening span, the last one starting at
//! least one slot before closing (minus the last-call cut-off). Capacity is
//! `capacity_per_slot` covers minus `booked["YYYY-MM-DDTHH:MM"]`.
//!
//! Grants: `booking` and `hours` (both required); actions: `record_booking`.

use pulsara_policy_sdk::chrono::{Duration, NaiveDate, NaiveDateTime};
use pulsara_policy_sdk::config::{BookingConfig, OpeningHours};
use pulsara_policy_sdk::text::join_words;
use pulsara_policy_sdk::time::{self, hhmm, spoken_date};
use pulsara_policy_sdk::{json, params, require, Action, Booking, Tool, ToolError, ToolInput, ToolOutput};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Params {
    date: String,
    time: String,
    party_size: i64,
    #[serde(default)]
    name: String,
}

/// How many alternatives to offer, and how many days ahead to look for them.
const OFFER: usize = 3;
const SEARCH_DAYS: i64 = 7;

pub struct BookTable;

impl Tool for BookTable {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let cfg = require(&input.data.booking, "booking settings")?;
        let hours = require(&input.data.hours, "opening hours")?;
        let now = time::now(&input.context)?.naive_local();
        let date = time::parse_date(&p.date, now.date())
            .ok_or_else(|| ToolError::new(format!("I didn't understand the date {:?}; use YYYY-MM-DD.", p.date)))?;
        let t = time::parse_time(&p.time)
            .ok_or_else(|| ToolError::new(format!("I didn't understand the time {:?}; use HH:MM.", p.time)))?;
        let at = date.and_time(t);

        if p.party_size < 1 {
            return Err(ToolError::new("the party size must be at least 1"));
        }
        let party = p.party_size.min(i64::from(u32::MAX)) as u32;
        if party > cfg.max_party_size {
            return Ok(refusal(
                "party_too_large",
                format!(
                    "We can book tables for up to {} people. For a party of {party}, the staff can help: offer to transfer the caller.",
                    cfg.max_party_size
                ),
                &[],
            ));
        }
        if p.name.trim().is_empty() {
            return Err(ToolError::new("I need a name for the booking"));
        }
        let earliest = now + Duration::minutes(i64::from(cfg.min_lead_minutes));
        if at < now {
            return Ok(refusal("in_the_past", format!("{} at {} has already passed.", spoken_date(date), hhmm(t)), &[]));
        }
        if date > now.date() + Duration::days(i64::from(cfg.max_days_ahead)) {
            return Ok(refusal(
                "too_far_ahead",
                format!("We take bookings up to {} days ahead.", cfg.max_days_ahead),
                &[],
            ));
        }
        if let Some(closure) = time::closed_all_day(hours, date) {
            let offers = free_slots_near(cfg, hours, at, party, earliest, now);
            let why = if closure.reason.is_empty() { String::new() } else { format!(" ({})", closure.reason) };
            return Ok(refusal("closed", format!("We're closed on {}{why}.{}", spoken_date(date), offer_text(&offers)), &offers));
        }
        let slots = slots_on(cfg, hours, date);
        if slots.is_empty() {
            let offers = free_slots_near(cfg, hours, at, party, earliest, now);
            return Ok(refusal("closed", format!("We're closed on {}s.{}", time::weekday_name(pulsara_policy_sdk::chrono::Datelike::weekday(&date)), offer_text(&offers)), &offers));
        }
        if at < earliest {
            let offers = free_slots_near(cfg, hours, at, party, earliest, now);
            return Ok(refusal(
                "too_short_notice",
                format!("Bookings need at least {} minutes' notice.{}", cfg.min_lead_minutes, offer_text(&offers)),
                &offers,
            ));
        }
        if !slots.contains(&at) {
            let offers = free_slots_near(cfg, hours, at, party, earliest, now);
            return Ok(refusal(
                "no_such_slot",
                format!("We don't take bookings for {} at {}.{}", spoken_date(date), hhmm(t), offer_text(&offers)),
                &offers,
            ));
        }
        if free(cfg, at) < party {
            let offers = free_slots_near(cfg, hours, at, party, earliest, now);
            return Ok(refusal(
                "slot_full",
                format!("{} at {} is fully booked for {party}.{}", spoken_date(date), hhmm(t), offer_text(&offers)),
                &offers,
            ));
        }

        let booking = Booking {
            date: date.format("%Y-%m-%d").to_string(),
            time: hhmm(t),
            party_size: party,
            name: p.name.trim().to_owned(),
            phone: Some(input.context.caller.clone()).filter(|c| !c.is_empty()),
        };
        Ok(ToolOutput {
            result: format!(
                "Booked a table for {party} on {} at {} under the name {}.",
                spoken_date(date),
                hhmm(t),
                booking.name
            ),
            data: Some(json!({"status": "booked", "date": booking.date, "time": booking.time, "party_size": party})),
            actions: vec![Action::RecordBooking(booking)],
        })
    }
}

fn refusal(reason: &str, text: String, offers: &[NaiveDateTime]) -> ToolOutput {
    let alternatives: Vec<_> = offers
        .iter()
        .map(|o| json!({"date": o.date().format("%Y-%m-%d").to_string(), "time": hhmm(o.time())}))
        .collect();
    ToolOutput {
        result: text,
        data: Some(json!({"status": "not_booked", "reason": reason, "alternatives": alternatives})),
        actions: Vec::new(),
    }
}

fn offer_text(offers: &[NaiveDateTime]) -> String {
    if offers.is_empty() {
        return String::new();
    }
    let same_day = offers.iter().all(|o| o.date() == offers[0].date());
    let spoken: Vec<String> = if same_day {
        offers.iter().map(|o| hhmm(o.time())).collect()
    } else {
        offers.iter().map(|o| format!("{} at {}", spoken_date(o.date()), hhmm(o.time()))).collect()
    };
    if same_day {
        format!(" Free on {}: {}.", spoken_date(offers[0].date()), join_words(&spoken, "or"))
    } else {
        format!(" Free: {}.", join_words(&spoken, "or"))
    }
}

/// Bookable slot starts on `date`.
fn slots_on(cfg: &BookingConfig, hours: &OpeningHours, date: NaiveDate) -> Vec<NaiveDateTime> {
    if cfg.slot_minutes == 0 || time::closed_all_day(hours, date).is_some() {
        return Vec::new();
    }
    let step = Duration::minutes(i64::from(cfg.slot_minutes));
    let cutoff = Duration::minutes(i64::from(hours.last_call_minutes));
    let mut out = Vec::new();
    for (start, end) in time::spans_starting(&hours.weekly, date) {
        let mut s = start;
        while s + step <= end - cutoff && out.len() < 200 {
            if time::closure_at(hours, s).is_none() {
                out.push(s);
            }
            s += step;
        }
    }
    out.sort();
    out.dedup();
    out
}

fn free(cfg: &BookingConfig, at: NaiveDateTime) -> u32 {
    let key = at.format("%Y-%m-%dT%H:%M").to_string();
    cfg.capacity_per_slot.saturating_sub(cfg.booked.get(&key).copied().unwrap_or(0))
}

/// The free slots nearest to `wanted`: on its day by distance in time; if none, the first ones on
/// the following days.
fn free_slots_near(
    cfg: &BookingConfig,
    hours: &OpeningHours,
    wanted: NaiveDateTime,
    party: u32,
    earliest: NaiveDateTime,
    now: NaiveDateTime,
) -> Vec<NaiveDateTime> {
    let ok = |s: &NaiveDateTime| {
        *s >= earliest && s.date() <= now.date() + Duration::days(i64::from(cfg.max_days_ahead)) && free(cfg, *s) >= party
    };
    let mut same_day: Vec<NaiveDateTime> = slots_on(cfg, hours, wanted.date()).into_iter().filter(|s| ok(s) && *s != wanted).collect();
    same_day.sort_by_key(|s| ((*s - wanted).num_minutes().abs(), *s));
    same_day.truncate(OFFER);
    if !same_day.is_empty() {
        same_day.sort();
        return same_day;
    }
    let mut later = Vec::new();
    for d in 1..=SEARCH_DAYS {
        let day = wanted.date() + Duration::days(d);
        let slots: Vec<NaiveDateTime> = slots_on(cfg, hours, day).into_iter().filter(|s| ok(s)).collect();
        // Prefer the same time of day as asked for on the next open day.
        let mut slots = slots;
        slots.sort_by_key(|s| ((s.time() - wanted.time()).num_minutes().abs(), *s));
        later.extend(slots.into_iter().take(OFFER - later.len()));
        if later.len() >= OFFER || !later.is_empty() {
            break;
        }
    }
    later.sort();
    later
}

pulsara_policy_sdk::export_tool!(BookTable);
