//! `book_table`: books a table when the party size, day, time, lead time and the slot's capacity
//! allow it; otherwise says why and, when the slot is full or off the grid, offers the nearest
//! free slots (same day first, then the following days).
//!
//! Slots: every `slot_minutes` from the start of each period of opening (the host's hours facts:
//! closures applied, spans merged, DST applied), the last one ending by the period's last call;
//! a slot belongs to the local date and time it starts at. Capacity is `capacity_per_slot`
//! covers minus `booked["YYYY-MM-DDTHH:MM"]`.
//!
//! Grants: `booking` and `hours` (both required); actions: `record_booking`.

use pulsara_policy_sdk::chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use pulsara_policy_sdk::config::BookingConfig;
use pulsara_policy_sdk::text::join_words;
use pulsara_policy_sdk::time::{self, hhmm, spoken_date, Hours};
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

/// How many alternatives to offer, and how many days after the asked-for one to look for them.
const OFFER: usize = 3;
const SEARCH_DAYS: i64 = 7;
/// Most slots listed for one day (bounded work per call).
const MAX_SLOTS_A_DAY: usize = 200;

/// A bookable slot: its instant and the restaurant's wall-clock time it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    at: DateTime<Utc>,
    local: NaiveDateTime,
}

pub struct BookTable;

impl Tool for BookTable {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let cfg = require(&input.data.booking, "booking settings")?;
        let hours = Hours::opening(require(&input.data.hours, "opening hours")?);
        let now = time::now(&input.context)?.to_utc();
        let today = hours.local(now).date_naive();
        let date = time::parse_date(&p.date, today)
            .ok_or_else(|| ToolError::new(format!("I didn't understand the date {:?}; use YYYY-MM-DD.", p.date)))?;
        let t = time::parse_time(&p.time)
            .ok_or_else(|| ToolError::new(format!("I didn't understand the time {:?}; use HH:MM.", p.time)))?;
        let wanted = Slot { at: hours.instant(date.and_time(t)), local: date.and_time(t) };

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
        let search = Search { cfg, hours, party, earliest: now + Duration::minutes(i64::from(cfg.min_lead_minutes)), last_day: last_day(cfg, &hours, today) };
        if wanted.at < now {
            return Ok(refusal("in_the_past", format!("{} at {} has already passed.", spoken_date(date), hhmm(t)), &[]));
        }
        if date > search.last_day {
            let days = (search.last_day - today).num_days();
            return Ok(refusal("too_far_ahead", format!("We take bookings up to {days} days ahead."), &[]));
        }
        let slots = search.slots_on(date);
        if slots.is_empty() {
            let offers = search.free_slots_near(wanted);
            let why = match hours.closed_all_day(date) {
                Some(c) if !c.reason.is_empty() => format!(" ({})", c.reason),
                _ => String::new(),
            };
            return Ok(refusal("closed", format!("We're closed on {}{why}.{}", spoken_date(date), offer_text(&offers)), &offers));
        }
        if wanted.at < search.earliest {
            let offers = search.free_slots_near(wanted);
            return Ok(refusal(
                "too_short_notice",
                format!("Bookings need at least {} minutes' notice.{}", cfg.min_lead_minutes, offer_text(&offers)),
                &offers,
            ));
        }
        let Some(slot) = slots.iter().find(|s| s.local == wanted.local) else {
            let offers = search.free_slots_near(wanted);
            return Ok(refusal(
                "no_such_slot",
                format!("We don't take bookings for {} at {}.{}", spoken_date(date), hhmm(t), offer_text(&offers)),
                &offers,
            ));
        };
        if free(cfg, slot) < party {
            let offers = search.free_slots_near(wanted);
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

/// The last date bookings are taken for: `max_days_ahead`, as far as the hours facts reach.
fn last_day(cfg: &BookingConfig, hours: &Hours<'_>, today: NaiveDate) -> NaiveDate {
    (today + Duration::days(i64::from(cfg.max_days_ahead))).min(hours.last_day())
}

fn refusal(reason: &str, text: String, offers: &[Slot]) -> ToolOutput {
    let alternatives: Vec<_> = offers
        .iter()
        .map(|o| json!({"date": o.local.date().format("%Y-%m-%d").to_string(), "time": hhmm(o.local.time())}))
        .collect();
    ToolOutput {
        result: text,
        data: Some(json!({"status": "not_booked", "reason": reason, "alternatives": alternatives})),
        actions: Vec::new(),
    }
}

fn offer_text(offers: &[Slot]) -> String {
    let Some(first) = offers.first() else {
        return String::new();
    };
    let same_day = offers.iter().all(|o| o.local.date() == first.local.date());
    if same_day {
        let spoken: Vec<String> = offers.iter().map(|o| hhmm(o.local.time())).collect();
        format!(" Free on {}: {}.", spoken_date(first.local.date()), join_words(&spoken, "or"))
    } else {
        let spoken: Vec<String> =
            offers.iter().map(|o| format!("{} at {}", spoken_date(o.local.date()), hhmm(o.local.time()))).collect();
        format!(" Free: {}.", join_words(&spoken, "or"))
    }
}

fn free(cfg: &BookingConfig, slot: &Slot) -> u32 {
    let key = slot.local.format("%Y-%m-%dT%H:%M").to_string();
    cfg.capacity_per_slot.saturating_sub(cfg.booked.get(&key).copied().unwrap_or(0))
}

/// What one booking may be offered.
struct Search<'a> {
    cfg: &'a BookingConfig,
    hours: Hours<'a>,
    party: u32,
    earliest: DateTime<Utc>,
    last_day: NaiveDate,
}

impl Search<'_> {
    /// The slots starting on the local date `date`, in time order; a wall-clock time shown
    /// twice (DST ends) is one slot, the earlier.
    fn slots_on(&self, date: NaiveDate) -> Vec<Slot> {
        let step = Duration::minutes(i64::from(self.cfg.slot_minutes));
        if self.cfg.slot_minutes == 0 || !self.hours.covers(date) {
            return Vec::new();
        }
        let day_start = self.hours.instant(date.and_time(NaiveTime::MIN));
        let day_end = self.hours.instant((date + Duration::days(1)).and_time(NaiveTime::MIN));
        let mut out: Vec<Slot> = Vec::new();
        for p in self.hours.periods().iter().filter(|p| p.open < day_end && p.close > day_start) {
            let last_call = self.hours.last_call(p);
            // Whole steps from the period's start to the first one on this date.
            let skip = if p.open < day_start { (day_start - p.open).num_minutes() / step.num_minutes() } else { 0 };
            let mut s = p.open + step * i32::try_from(skip).unwrap_or(0);
            while s < day_end && s + step <= last_call && out.len() < MAX_SLOTS_A_DAY {
                let local = self.hours.local(s).naive_local();
                // Wall-clock times only repeat when the clocks go back.
                let repeated = out.last().is_some_and(|o| o.local >= local) && out.iter().any(|o| o.local == local);
                if local.date() == date && !repeated {
                    out.push(Slot { at: s, local });
                }
                s += step;
            }
        }
        out.sort_by_key(|s| s.at);
        out
    }

    fn bookable(&self, s: &Slot) -> bool {
        s.at >= self.earliest && s.local.date() <= self.last_day && free(self.cfg, s) >= self.party
    }

    /// The free slots nearest to `wanted`: on its day by distance in time; if none, the first
    /// ones on the following days, nearest to the same time of day.
    fn free_slots_near(&self, wanted: Slot) -> Vec<Slot> {
        let mut same_day: Vec<Slot> =
            self.slots_on(wanted.local.date()).into_iter().filter(|s| self.bookable(s) && s.local != wanted.local).collect();
        same_day.sort_by_key(|s| ((s.at - wanted.at).num_minutes().abs(), s.at));
        same_day.truncate(OFFER);
        if !same_day.is_empty() {
            same_day.sort_by_key(|s| s.at);
            return same_day;
        }
        for d in 1..=SEARCH_DAYS {
            let day = wanted.local.date() + Duration::days(d);
            let mut slots: Vec<Slot> = self.slots_on(day).into_iter().filter(|s| self.bookable(s)).collect();
            if slots.is_empty() {
                continue;
            }
            slots.sort_by_key(|s| ((s.local.time() - wanted.local.time()).num_minutes().abs(), s.at));
            slots.truncate(OFFER);
            slots.sort_by_key(|s| s.at);
            return slots;
        }
        Vec::new()
    }
}

pulsara_policy_sdk::export_tool!(BookTable);
