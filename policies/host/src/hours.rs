//! The opening-hours facts a tool with the `hours` grant gets ([`HoursFacts`]): computed here, on
//! the host, by `pulsara_core::hours` — the engine the edge decides with and the agent's
//! variables are filled from — from the restaurant's configuration at the call's instant. Policies
//! then decide nothing about hours themselves (the SDK only looks instants up in the facts), so
//! the edge, the agent and every tool agree, DST days included.
//!
//! Pure: the instant comes from the call context, nothing reads a clock.

use chrono::{DateTime, Duration, Utc};
use pulsara_core::config::{Grants, OpeningHours, RestaurantConfig};
use pulsara_core::hours::{self, HoursError, MAX_LAST_CALL_MINUTES};
use pulsara_policy_abi::{ClosureNote, HoursFacts, Period, UtcOffset};

/// How many days ahead facts reach at most, whatever `max_days_ahead` a booking grant asks for:
/// bounds the input (about 60 bytes a period).
pub const MAX_DAYS_AHEAD: i64 = 100;

/// Days after a requested booking date `book_table` looks for alternatives.
const BOOKING_ALTERNATIVE_DAYS: i64 = 7;

/// Why the facts could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    TimeZone(#[from] HoursError),
    #[error("the call's local time {0:?} is not RFC 3339")]
    LocalTime(String),
    #[error("the call's instant {0} is outside the range opening hours are computed for")]
    OutOfRange(DateTime<Utc>),
}

/// The facts for a call at `local_time` (the call context's RFC 3339 local time). They cover the
/// spans opening from yesterday through the edge's own look-ahead
/// ([`hours::plan_days`]: two weeks and a day), or, when `booking_days` is given (the booking
/// grant's `max_days_ahead`), through that many days plus a week of alternatives, at most
/// [`MAX_DAYS_AHEAD`].
///
/// # Errors
/// An unknown time zone, an unreadable local time, or an instant at the edge of chrono's range.
pub fn facts_at(config: &RestaurantConfig, local_time: &str, booking_days: Option<u32>) -> Result<HoursFacts, FactsError> {
    let now = DateTime::parse_from_rfc3339(local_time)
        .map_err(|_| FactsError::LocalTime(local_time.chars().take(64).collect()))?
        .with_timezone(&Utc);
    facts(config, now, booking_days)
}

/// [`facts_at`] for an instant.
///
/// # Errors
/// An unknown time zone, or an instant at the edge of chrono's range.
pub fn facts(config: &RestaurantConfig, now: DateTime<Utc>, booking_days: Option<u32>) -> Result<HoursFacts, FactsError> {
    let tz = hours::parse_tz(&config.time_zone)?;
    let out_of_range = || FactsError::OutOfRange(now);
    let today = now.with_timezone(&tz).date_naive();
    let (first_day, mut last_day) = hours::plan_days(today).ok_or_else(out_of_range)?;
    if let Some(days) = booking_days {
        let ahead = (i64::from(days) + BOOKING_ALTERNATIVE_DAYS).min(MAX_DAYS_AHEAD);
        let booking_last = today.checked_add_signed(Duration::days(ahead)).ok_or_else(out_of_range)?;
        last_day = last_day.max(booking_last);
    }
    let periods = |h: &OpeningHours| -> Result<Vec<Period>, FactsError> {
        let list = hours::periods(h, tz, first_day, last_day).ok_or_else(out_of_range)?;
        Ok(list.into_iter().map(|p| Period { day: p.day, open: p.open, close: p.close }).collect())
    };
    let staffed = if config.staffed_hours.is_empty() {
        None
    } else {
        Some(periods(&OpeningHours {
            weekly: config.staffed_hours.clone(),
            closures: config.hours.closures.clone(),
            last_call_minutes: 0,
        })?)
    };
    let closures = config
        .hours
        .closures
        .iter()
        .filter(|c| c.end >= first_day)
        .map(|c| ClosureNote {
            start: c.start,
            end: c.end,
            partial: c.from.is_some() || c.until.is_some(),
            reason: c.reason.trim().to_owned(),
        })
        .collect();
    let opening = periods(&config.hours)?;
    // Every instant of the periods' days, with a margin either side.
    let from = now.checked_sub_signed(Duration::days(3)).ok_or_else(out_of_range)?;
    let until = now
        .checked_add_signed(Duration::days((last_day - today).num_days() + 3))
        .ok_or_else(out_of_range)?;
    let offsets = hours::offset_changes(tz, from, until)
        .into_iter()
        .map(|(since, offset)| UtcOffset { since, offset: offset.local_minus_utc() })
        .collect();
    Ok(HoursFacts {
        first_day,
        last_day,
        last_call_minutes: config.hours.last_call_minutes.min(MAX_LAST_CALL_MINUTES),
        periods: opening,
        staffed,
        closures,
        offsets,
    })
}

/// The facts a tool with `grants` gets for a call at `local_time`: `None` without the `hours`
/// grant; reaching the booking window when `booking` is granted too.
///
/// # Errors
/// As [`facts_at`].
pub fn granted(grants: &Grants, config: &RestaurantConfig, local_time: &str) -> Result<Option<HoursFacts>, FactsError> {
    if !grants.hours {
        return Ok(None);
    }
    let booking_days = config.booking.as_ref().filter(|_| grants.booking).map(|b| b.max_days_ahead);
    facts_at(config, local_time, booking_days).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn config(tz: &str, hours: serde_json::Value, staffed: serde_json::Value) -> RestaurantConfig {
        serde_json::from_value(serde_json::json!({
            "id": "r", "version": 1, "name": "R", "phone_numbers": [], "time_zone": tz,
            "hours": hours, "staffed_hours": staffed,
            "after_hours": {"mode": "message", "message": "closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "f"},
            "booking": {"slot_minutes": 30, "capacity_per_slot": 10, "max_party_size": 6, "max_days_ahead": 30}
        }))
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn facts_around_the_end_of_dst_in_new_york() {
        let cfg = config(
            "America/New_York",
            serde_json::json!({
                "weekly": [{"day": "sat", "open": "20:00", "close": "01:30"},
                           {"day": "sun", "open": "12:00", "close": "15:00"},
                           {"day": "sun", "open": "15:00", "close": "18:00"}],
                "closures": [{"start": "2026-11-08", "end": "2026-11-08", "reason": " family day "},
                             {"start": "2026-10-01", "end": "2026-10-02"}],
                "last_call_minutes": 30
            }),
            serde_json::json!([{"day": "sun", "open": "13:00", "close": "14:00"}]),
        );
        // Saturday 31 October, 21:00 EDT.
        let f = facts_at(&cfg, "2026-10-31T21:00:00-04:00", None).unwrap();
        assert_eq!((f.first_day, f.last_day), (d("2026-10-30"), d("2026-11-15")));
        assert_eq!(f.last_call_minutes, 30);
        // Closes at the second 01:30 (EST); Sunday's two spans merge into one period.
        assert_eq!(
            f.periods[..2],
            [
                Period { day: d("2026-10-31"), open: utc("2026-11-01T00:00:00Z"), close: utc("2026-11-01T06:30:00Z") },
                Period { day: d("2026-11-01"), open: utc("2026-11-01T17:00:00Z"), close: utc("2026-11-01T23:00:00Z") },
            ]
        );
        // The closure on Sunday 8 November removes that day's period.
        assert!(f.periods.iter().all(|p| p.day != d("2026-11-08")));
        assert!(f.periods.iter().any(|p| p.day == d("2026-11-15")));
        let staffed = f.staffed.as_ref().unwrap();
        assert_eq!(staffed[0], Period { day: d("2026-11-01"), open: utc("2026-11-01T18:00:00Z"), close: utc("2026-11-01T19:00:00Z") });
        assert!(staffed.iter().all(|p| p.day != d("2026-11-08")), "closures apply to staffed hours");
        // Ended closures are left out; reasons are trimmed.
        assert_eq!(f.closures, vec![ClosureNote { start: d("2026-11-08"), end: d("2026-11-08"), partial: false, reason: "family day".into() }]);
        assert_eq!(
            f.offsets,
            vec![
                UtcOffset { since: utc("2026-10-29T01:00:00Z"), offset: -4 * 3600 },
                UtcOffset { since: utc("2026-11-01T06:00:00Z"), offset: -5 * 3600 },
            ]
        );
    }

    #[test]
    fn periods_are_the_edges_decision() {
        let cfg = config(
            "Europe/Rome",
            serde_json::json!({"weekly": [{"day": "sat", "open": "22:00", "close": "02:30"}], "last_call_minutes": 15}),
            serde_json::json!([]),
        );
        let tz = hours::parse_tz("Europe/Rome").unwrap();
        let now = utc("2026-10-24T19:00:00Z");
        let f = facts(&cfg, now, None).unwrap();
        assert!(f.staffed.is_none());
        for minutes in (0..(3 * 24 * 60)).step_by(15) {
            let t = now + Duration::minutes(minutes);
            let in_period = f.periods.iter().find(|p| p.open <= t && t < p.close);
            let takes_calls = in_period.is_some_and(|p| t < p.close - Duration::minutes(15));
            assert_eq!(takes_calls, hours::status(&cfg.hours, tz, t).is_open(), "{t}");
        }
    }

    #[test]
    fn the_booking_grant_widens_the_window_up_to_a_cap() {
        let mut cfg = config("Asia/Tokyo", serde_json::json!({"weekly": []}), serde_json::json!([]));
        let at = "2026-12-01T10:00:00+09:00";
        let hours_only = Grants { hours: true, ..Default::default() };
        let both = Grants { hours: true, booking: true, ..Default::default() };
        assert_eq!(granted(&Grants::default(), &cfg, at).unwrap(), None);
        assert_eq!(granted(&hours_only, &cfg, at).unwrap().unwrap().last_day, d("2026-12-16"));
        assert_eq!(granted(&both, &cfg, at).unwrap().unwrap().last_day, d("2027-01-07"), "30 days + a week");
        cfg.booking.as_mut().unwrap().max_days_ahead = 365;
        assert_eq!(granted(&both, &cfg, at).unwrap().unwrap().last_day, d("2027-03-11"), "at most 100 days");
        let offsets = granted(&both, &cfg, at).unwrap().unwrap().offsets;
        assert_eq!(offsets.len(), 1, "no DST in Tokyo");
    }

    #[test]
    fn bad_zone_or_local_time_is_an_error() {
        let cfg = config("Mars/Olympus", serde_json::json!({"weekly": []}), serde_json::json!([]));
        assert!(matches!(facts_at(&cfg, "2026-12-01T10:00:00Z", None), Err(FactsError::TimeZone(_))));
        let cfg = config("UTC", serde_json::json!({"weekly": []}), serde_json::json!([]));
        assert!(matches!(facts_at(&cfg, "yesterday", None), Err(FactsError::LocalTime(_))));
    }
}
