//! Opening hours: is the restaurant taking calls right now, and if not, when does it open next?
//! The edge decides between streaming the call to the agent and the after-hours TwiML with this;
//! the bridge fills the agent's "today's hours" / "next opening" variables with it.
//!
//! Model (see [`crate::config::OpeningHours`]): weekly spans in the restaurant's IANA time zone,
//! several per day; a span whose close is not after its open crosses midnight and belongs to the
//! day it opens (`close == open` is a 24-hour span). Closures cover dates `start..=end`, each whole
//! day or only `from`–`until` of each day (`until <= from` runs past midnight). "Last call" stops
//! taking calls `last_call_minutes` before a period of opening ends.
//!
//! How local times become instants (all computations are on UTC instants):
//! - a local time inside a DST **gap** (e.g. 02:30 on a spring-forward day) means the first valid
//!   instant after the gap (03:00 local) — for opens and closes alike (minute resolution);
//! - a local time inside a DST **overlap** (e.g. 01:30 on a fall-back day) means the earlier
//!   instant for an open (and a closure's start) and the later instant for a close (and a
//!   closure's end): ambiguity never shortens a period.
//!
//! Adjacent or overlapping spans merge into one period, so last call applies to the real end of
//! opening (12:00–15:00 + 15:00–23:00 has last call before 23:00, not 15:00). A closure that cuts a
//! period short moves its end (and its last call) to the closure's start.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::OpeningHours;

/// How far ahead [`status`] looks for the next opening.
pub const SEARCH_DAYS: i64 = 14;

/// Open or closed at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoursStatus {
    Open {
        /// End of the current period of opening (closure starts included).
        closes_at: DateTime<Utc>,
        /// The last instant calls are taken: `closes_at - last_call_minutes` (exclusive).
        last_call_at: DateTime<Utc>,
    },
    Closed {
        reason: ClosedReason,
        /// Start of the next period the restaurant takes calls in, within [`SEARCH_DAYS`].
        next_open: Option<DateTime<Utc>>,
    },
}

impl HoursStatus {
    pub fn is_open(&self) -> bool {
        matches!(self, HoursStatus::Open { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClosedReason {
    /// No span covers this instant.
    OutsideHours,
    /// A closure covers this instant (whether or not a span would).
    Closure { reason: String },
    /// Open, but within the last-call cut-off before closing.
    LastCallPassed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error(
        "unknown time zone {0:?}; use an IANA name such as \"Europe/Rome\" or \"America/New_York\""
    )]
    UnknownTimeZone(String),
}

/// Parses an IANA time zone name.
///
/// # Errors
/// [`HoursError::UnknownTimeZone`] naming the input.
pub fn parse_tz(name: &str) -> Result<Tz, HoursError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| HoursError::UnknownTimeZone(name.chars().take(64).collect()))
}

/// Whether the restaurant takes calls at `now`, and if not why and when it opens next.
pub fn status(hours: &OpeningHours, tz: Tz, now: DateTime<Utc>) -> HoursStatus {
    let Some(plan) = Plan::around(hours, tz, now) else {
        // Only for instants at the very edge of chrono's date range.
        return HoursStatus::Closed {
            reason: ClosedReason::OutsideHours,
            next_open: None,
        };
    };
    let last_call = Duration::minutes(i64::from(hours.last_call_minutes));
    if let Some(w) = plan
        .open
        .iter()
        .find(|w| w.start <= now && now < w.end - last_call)
    {
        return HoursStatus::Open {
            closes_at: w.end,
            last_call_at: w.end - last_call,
        };
    }
    let reason = if let Some(c) = plan.closures.iter().find(|c| c.start <= now && now < c.end) {
        ClosedReason::Closure {
            reason: c.reason.to_owned(),
        }
    } else if plan.open.iter().any(|w| w.start <= now && now < w.end) {
        ClosedReason::LastCallPassed
    } else {
        ClosedReason::OutsideHours
    };
    let horizon = now + Duration::days(SEARCH_DAYS);
    let next_open = plan
        .open
        .iter()
        .filter(|w| w.start > now && w.start <= horizon && w.end - last_call > w.start)
        .map(|w| w.start)
        .min();
    HoursStatus::Closed { reason, next_open }
}

/// Today's (local date of `now`) periods of opening, e.g. `"12:00–15:00, 19:00–23:00"`, with
/// closures applied; `"closed today"` (plus the closure reason, if any) when there are none.
pub fn describe_today(hours: &OpeningHours, tz: Tz, now: DateTime<Utc>) -> String {
    let Some(plan) = Plan::around(hours, tz, now) else {
        return "closed today".to_owned();
    };
    let today = now.with_timezone(&tz).date_naive();
    let parts: Vec<String> = plan
        .open
        .iter()
        .filter(|w| w.day == today)
        .map(|w| format!("{}–{}", hhmm(w.start, tz), hhmm(w.end, tz)))
        .collect();
    if !parts.is_empty() {
        return parts.join(", ");
    }
    let reason = hours
        .closures
        .iter()
        .find(|c| c.start <= today && today <= c.end && !c.reason.trim().is_empty())
        .map(|c| c.reason.trim());
    match reason {
        Some(r) => format!("closed today ({r})"),
        None => "closed today".to_owned(),
    }
}

/// The next opening in words relative to `now` in the restaurant's zone: `"open now until 23:00"`,
/// `"today at 19:00"`, `"tomorrow at 12:00"`, `"Friday at 12:00"`, `"Friday 11 December at
/// 12:00"`, or `"not in the next 14 days"`.
pub fn describe_next_open(hours: &OpeningHours, tz: Tz, now: DateTime<Utc>) -> String {
    match status(hours, tz, now) {
        HoursStatus::Open { closes_at, .. } => format!("open now until {}", hhmm(closes_at, tz)),
        HoursStatus::Closed {
            next_open: None, ..
        } => {
            format!("not in the next {SEARCH_DAYS} days")
        }
        HoursStatus::Closed {
            next_open: Some(at),
            ..
        } => {
            let today = now.with_timezone(&tz).date_naive();
            let local = at.with_timezone(&tz);
            let days = (local.date_naive() - today).num_days();
            let time = local.format("%H:%M");
            match days {
                0 => format!("today at {time}"),
                1 => format!("tomorrow at {time}"),
                2..=6 => format!("{} at {time}", local.format("%A")),
                _ => format!("{} at {time}", local.format("%A %-d %B")),
            }
        }
    }
}

fn hhmm(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%H:%M").to_string()
}

/// A period of opening: `[start, end)`, attributed to the local date its first span opens on.
#[derive(Debug, Clone)]
struct Window {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    day: NaiveDate,
}

#[derive(Debug, Clone)]
struct ClosureWindow<'a> {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    reason: &'a str,
}

/// Periods of opening (closures removed, last call not applied) and closures around `now`.
struct Plan<'a> {
    open: Vec<Window>,
    closures: Vec<ClosureWindow<'a>>,
}

impl<'a> Plan<'a> {
    fn around(hours: &'a OpeningHours, tz: Tz, now: DateTime<Utc>) -> Option<Self> {
        let today = now.with_timezone(&tz).date_naive();
        let first = today.checked_sub_signed(Duration::days(1))?;
        let last = today.checked_add_signed(Duration::days(SEARCH_DAYS + 1))?;
        let spans = span_windows(hours, tz, first, last)?;
        let closures = closure_windows(
            hours,
            tz,
            first.checked_sub_signed(Duration::days(1))?,
            last.checked_add_signed(Duration::days(1))?,
        )?;
        let open = subtract(spans, &closures);
        Some(Plan { open, closures })
    }
}

/// Interprets a local date-time in `tz` following the module's DST rules.
fn resolve(tz: Tz, local: NaiveDateTime, later: bool) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            Some(if later { a.max(b) } else { a.min(b) })
        }
        LocalResult::None => {
            // Inside a gap: step to the first valid local minute (gaps last at most a day).
            let mut probe = local;
            for _ in 0..(26 * 60) {
                probe = probe.checked_add_signed(Duration::minutes(1))?;
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
                    LocalResult::None => {}
                }
            }
            None
        }
    }
}

fn dates(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}

fn span_windows(
    hours: &OpeningHours,
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
) -> Option<Vec<Window>> {
    let mut out = Vec::new();
    for day in dates(first, last) {
        for span in hours.weekly.iter().filter(|s| s.day == day.weekday()) {
            let close_day = if span.close <= span.open {
                day.succ_opt()?
            } else {
                day
            };
            let start = resolve(tz, day.and_time(span.open), false)?;
            let end = resolve(tz, close_day.and_time(span.close), true)?;
            if end > start {
                out.push(Window { start, end, day });
            }
        }
    }
    out.sort_by_key(|w| w.start);
    let mut merged: Vec<Window> = Vec::with_capacity(out.len());
    for w in out {
        match merged.last_mut() {
            Some(m) if w.start <= m.end => m.end = m.end.max(w.end),
            _ => merged.push(w),
        }
    }
    Some(merged)
}

fn closure_windows(
    hours: &OpeningHours,
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
) -> Option<Vec<ClosureWindow<'_>>> {
    let midnight = NaiveTime::MIN;
    let mut out = Vec::new();
    for c in &hours.closures {
        let from_day = c.start.max(first);
        let to_day = c.end.min(last);
        for day in dates(from_day, to_day) {
            let from = c.from.unwrap_or(midnight);
            let end_local = match c.until {
                Some(u) if u > from => day.and_time(u),
                Some(u) => day.succ_opt()?.and_time(u),
                None => day.succ_opt()?.and_time(midnight),
            };
            let start = resolve(tz, day.and_time(from), false)?;
            let end = resolve(tz, end_local, true)?;
            if end > start {
                out.push(ClosureWindow {
                    start,
                    end,
                    reason: c.reason.as_str(),
                });
            }
        }
    }
    out.sort_by_key(|c| c.start);
    Some(out)
}

/// Removes every closure from every window.
fn subtract(windows: Vec<Window>, closures: &[ClosureWindow<'_>]) -> Vec<Window> {
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
        let mut cursor = w.start;
        for c in closures
            .iter()
            .filter(|c| c.start < w.end && c.end > w.start)
        {
            if c.start > cursor {
                out.push(Window {
                    start: cursor,
                    end: c.start,
                    day: w.day,
                });
            }
            cursor = cursor.max(c.end);
        }
        if cursor < w.end {
            out.push(Window {
                start: cursor,
                end: w.end,
                day: w.day,
            });
        }
    }
    out
}
