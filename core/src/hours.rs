//! Opening hours: is the restaurant taking calls right now, and if not, when does it open next?
//! The edge decides between streaming the call to the agent and the after-hours TwiML with this;
//! the bridge fills the agent's "today's hours" / "next opening" variables with it.
//!
//! Model (see [`crate::config::OpeningHours`]): weekly spans in the restaurant's IANA time zone,
//! several per day; a span whose close is not after its open crosses midnight and belongs to the
//! day it opens (`close == open` is a 24-hour span). Closures cover dates `start..=end`, each whole
//! day or only `from`–`until` of each day (`until <= from` runs past midnight). "Last call" stops
//! taking calls `last_call_minutes` (at most a day) before a period of opening ends.
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
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    Offset, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::OpeningHours;

/// How far ahead [`status`] looks for the next opening.
pub const SEARCH_DAYS: i64 = 14;
/// `last_call_minutes` is clamped to this (a day): larger values are configuration mistakes.
pub const MAX_LAST_CALL_MINUTES: u32 = 24 * 60;

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
    let last_call = Duration::minutes(i64::from(
        hours.last_call_minutes.min(MAX_LAST_CALL_MINUTES),
    ));
    let cutoff = |w: &Window| w.end.checked_sub_signed(last_call).unwrap_or(w.start);
    if let Some(w) = plan.open.iter().find(|w| w.start <= now && now < cutoff(w)) {
        return HoursStatus::Open {
            closes_at: w.end,
            last_call_at: cutoff(w),
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
    let horizon = now
        .checked_add_signed(Duration::days(SEARCH_DAYS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let next_open = plan
        .open
        .iter()
        .filter(|w| w.start > now && w.start <= horizon && cutoff(w) > w.start)
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

/// A period of opening as [`periods`] lists it: `[open, close)`, closures removed, last call not
/// applied (calls are taken until `close - last_call_minutes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// The local date its first span opens on: the day [`describe_today`] lists it under.
    pub day: NaiveDate,
    pub open: DateTime<Utc>,
    /// The last span's close, or the start of the closure that cuts it short.
    pub close: DateTime<Utc>,
}

/// The local dates [`status`] and [`describe_today`] look at for an instant whose local date is
/// `today`: spans opening from yesterday through [`SEARCH_DAYS`]` + 1` days ahead.
pub fn plan_days(today: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    Some((
        today.checked_sub_signed(Duration::days(1))?,
        today.checked_add_signed(Duration::days(SEARCH_DAYS + 1))?,
    ))
}

/// The periods of opening of the spans that open on the local dates `first..=last`, sorted and
/// disjoint, exactly as [`status`] and [`describe_today`] compute them (over [`plan_days`]):
/// adjacent spans merged, every closure removed. A period is only as long as the spans in the
/// range make it: one that the next day's span would extend ends at `last`'s close.
///
/// `None` for dates within a month of chrono's range limits.
pub fn periods(
    hours: &OpeningHours,
    tz: Tz,
    first: NaiveDate,
    last: NaiveDate,
) -> Option<Vec<Period>> {
    // The same guard as `Plan::around`: local-time conversion panics at the range limits.
    first.checked_sub_signed(Duration::days(31))?;
    last.checked_add_signed(Duration::days(31))?;
    let plan = Plan::between(hours, tz, first, last)?;
    Some(
        plan.open
            .into_iter()
            .map(|w| Period {
                day: w.day,
                open: w.start,
                close: w.end,
            })
            .collect(),
    )
}

/// The instant a local wall-clock time in `tz` means, under this module's rules for an opening:
/// the earlier instant in a DST overlap, the first instant after a DST gap (minute resolution).
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    resolve(tz, local, false)
}

/// The UTC offsets `tz` uses from `from` to `until`: `(since, offset)` pairs, the first at `from`,
/// then one per change (found to the second), in order. Local time at `t` is `t` plus the offset
/// of the last pair whose `since` is not after `t`. Changes less than an hour apart may be missed
/// (no zone has them). Empty for instants outside chrono's range.
pub fn offset_changes(
    tz: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, FixedOffset)> {
    let at = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0);
    let offset = |secs: i64| at(secs).map(|t| tz.offset_from_utc_datetime(&t.naive_utc()).fix());
    let (from, until) = (from.timestamp(), until.timestamp());
    let (Some(first), Some(mut current)) = (at(from), offset(from)) else {
        return Vec::new();
    };
    let mut out = vec![(first, current)];
    let mut t = from;
    while t < until {
        let next = t.saturating_add(3600).min(until);
        match offset(next) {
            Some(o) if o != current => {
                // The change is in (t, next]: bisect to the second.
                let (mut lo, mut hi) = (t, next);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset(mid) == Some(current) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                let (Some(since), Some(o)) = (at(hi), offset(hi)) else {
                    break;
                };
                current = o;
                out.push((since, o));
            }
            Some(_) => {}
            None => break,
        }
        t = next;
    }
    out
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
        // Converting to local time panics at chrono's range limits: refuse instants near them.
        let margin = Duration::days(SEARCH_DAYS + 4);
        now.naive_utc()
            .checked_add_signed(margin)?
            .checked_add_signed(margin)?;
        now.naive_utc()
            .checked_sub_signed(margin)?
            .checked_sub_signed(margin)?;
        let (first, last) = plan_days(now.with_timezone(&tz).date_naive())?;
        Self::between(hours, tz, first, last)
    }

    /// Spans opening on `first..=last`, closures of the days around them.
    fn between(hours: &'a OpeningHours, tz: Tz, first: NaiveDate, last: NaiveDate) -> Option<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Closure, WeeklySpan};
    use chrono::Weekday::{self, *};
    use chrono_tz::{America::New_York, Asia::Tokyo, Europe::Rome};
    use proptest::prelude::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn span(day: Weekday, open: (u32, u32), close: (u32, u32)) -> WeeklySpan {
        WeeklySpan {
            day,
            open: t(open.0, open.1),
            close: t(close.0, close.1),
        }
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn closure(
        start: &str,
        end: &str,
        from: Option<NaiveTime>,
        until: Option<NaiveTime>,
        reason: &str,
    ) -> Closure {
        Closure {
            start: date(start),
            end: date(end),
            from,
            until,
            reason: reason.into(),
        }
    }

    /// Lunch and dinner every day.
    fn trattoria() -> OpeningHours {
        let days = [Mon, Tue, Wed, Thu, Fri, Sat, Sun];
        let mut weekly = Vec::new();
        for d in days {
            weekly.push(span(d, (12, 0), (15, 0)));
            weekly.push(span(d, (19, 0), (23, 0)));
        }
        OpeningHours {
            weekly,
            closures: vec![],
            last_call_minutes: 0,
        }
    }

    fn open(s: &HoursStatus) -> (DateTime<Utc>, DateTime<Utc>) {
        match s {
            HoursStatus::Open {
                closes_at,
                last_call_at,
            } => (*closes_at, *last_call_at),
            other => panic!("expected open, got {other:?}"),
        }
    }

    fn closed(s: &HoursStatus) -> (ClosedReason, Option<DateTime<Utc>>) {
        match s {
            HoursStatus::Closed { reason, next_open } => (reason.clone(), *next_open),
            other => panic!("expected closed, got {other:?}"),
        }
    }

    #[test]
    fn several_spans_a_day() {
        let h = trattoria();
        // 2026-06-12 is a Friday; Rome is UTC+2 in June.
        let (closes, last) = open(&status(&h, Rome, utc("2026-06-12T10:30:00Z")));
        assert_eq!(closes, utc("2026-06-12T13:00:00Z"));
        assert_eq!(last, closes);
        let (reason, next) = closed(&status(&h, Rome, utc("2026-06-12T14:00:00Z")));
        assert_eq!(reason, ClosedReason::OutsideHours);
        assert_eq!(next, Some(utc("2026-06-12T17:00:00Z")));
        // Open is inclusive, close exclusive.
        assert!(status(&h, Rome, utc("2026-06-12T17:00:00Z")).is_open());
        assert!(!status(&h, Rome, utc("2026-06-12T21:00:00Z")).is_open());
        // After dinner: next is tomorrow's lunch.
        let (_, next) = closed(&status(&h, Rome, utc("2026-06-12T21:30:00Z")));
        assert_eq!(next, Some(utc("2026-06-13T10:00:00Z")));
    }

    #[test]
    fn span_crossing_midnight_belongs_to_its_opening_day() {
        let h = OpeningHours {
            weekly: vec![span(Fri, (18, 0), (2, 0))],
            ..Default::default()
        };
        // Saturday 01:00 in New York (EDT, UTC-4) is still Friday's span.
        let (closes, _) = open(&status(&h, New_York, utc("2026-06-13T05:00:00Z")));
        assert_eq!(closes, utc("2026-06-13T06:00:00Z"));
        // Friday 01:00 is not (Thursday has no span).
        let (reason, next) = closed(&status(&h, New_York, utc("2026-06-12T05:00:00Z")));
        assert_eq!(reason, ClosedReason::OutsideHours);
        assert_eq!(next, Some(utc("2026-06-12T22:00:00Z")));
        // Saturday 02:00 has closed; next opening is a week later.
        let (_, next) = closed(&status(&h, New_York, utc("2026-06-13T06:00:00Z")));
        assert_eq!(next, Some(utc("2026-06-19T22:00:00Z")));
    }

    #[test]
    fn equal_open_and_close_is_a_full_day_and_adjacent_spans_merge() {
        let h = OpeningHours {
            weekly: vec![span(Mon, (0, 0), (0, 0)), span(Tue, (0, 0), (12, 0))],
            closures: vec![],
            last_call_minutes: 30,
        };
        // Monday 23:50 in Tokyo: Monday's 24 h span continues into Tuesday's until 12:00.
        let (closes, last) = open(&status(&h, Tokyo, utc("2026-06-15T14:50:00Z")));
        assert_eq!(closes, utc("2026-06-16T03:00:00Z"));
        assert_eq!(last, utc("2026-06-16T02:30:00Z"));
    }

    #[test]
    fn last_call_cut_off() {
        let h = OpeningHours {
            last_call_minutes: 30,
            ..trattoria()
        };
        let (closes, last) = open(&status(&h, Rome, utc("2026-06-12T20:29:00Z")));
        assert_eq!(closes, utc("2026-06-12T21:00:00Z"));
        assert_eq!(last, utc("2026-06-12T20:30:00Z"));
        let (reason, next) = closed(&status(&h, Rome, utc("2026-06-12T20:30:00Z")));
        assert_eq!(reason, ClosedReason::LastCallPassed);
        assert_eq!(next, Some(utc("2026-06-13T10:00:00Z")));
        // A span shorter than last call never opens and is never "next".
        let tiny = OpeningHours {
            weekly: vec![span(Fri, (12, 0), (12, 20)), span(Sat, (12, 0), (14, 0))],
            closures: vec![],
            last_call_minutes: 30,
        };
        let (reason, next) = closed(&status(&tiny, Rome, utc("2026-06-12T10:05:00Z")));
        assert_eq!(reason, ClosedReason::LastCallPassed);
        assert_eq!(next, Some(utc("2026-06-13T10:00:00Z")));
        // Absurd values are clamped instead of overflowing.
        let huge = OpeningHours {
            last_call_minutes: u32::MAX,
            ..trattoria()
        };
        assert!(!status(&huge, Rome, utc("2026-06-12T10:30:00Z")).is_open());
    }

    #[test]
    fn full_day_and_range_closures() {
        let mut h = trattoria();
        h.closures
            .push(closure("2026-12-25", "2026-12-26", None, None, "Christmas"));
        // Rome is UTC+1 in December.
        let (reason, next) = closed(&status(&h, Rome, utc("2026-12-25T12:00:00Z")));
        assert_eq!(
            reason,
            ClosedReason::Closure {
                reason: "Christmas".into()
            }
        );
        assert_eq!(
            next,
            Some(utc("2026-12-27T11:00:00Z")),
            "end date is inclusive"
        );
        // Outside any span on a closure day the closure still explains why.
        let (reason, _) = closed(&status(&h, Rome, utc("2026-12-26T05:00:00Z")));
        assert_eq!(
            reason,
            ClosedReason::Closure {
                reason: "Christmas".into()
            }
        );
        assert!(status(&h, Rome, utc("2026-12-24T11:30:00Z")).is_open());
        assert!(status(&h, Rome, utc("2026-12-27T11:30:00Z")).is_open());
    }

    #[test]
    fn partial_day_closures_move_the_close() {
        let mut h = OpeningHours {
            last_call_minutes: 15,
            ..trattoria()
        };
        h.weekly.retain(|s| s.open != t(12, 0));
        h.weekly.push(span(Thu, (12, 0), (23, 0)));
        h.closures.push(closure(
            "2026-12-24",
            "2026-12-24",
            Some(t(15, 0)),
            None,
            "Christmas Eve",
        ));
        // Thursday 24 Dec, 13:00 local: open, but closing at the closure's start.
        let (closes, last) = open(&status(&h, Rome, utc("2026-12-24T12:00:00Z")));
        assert_eq!(closes, utc("2026-12-24T14:00:00Z"));
        assert_eq!(last, utc("2026-12-24T13:45:00Z"));
        let (reason, _) = closed(&status(&h, Rome, utc("2026-12-24T13:50:00Z")));
        assert_eq!(reason, ClosedReason::LastCallPassed);
        let (reason, next) = closed(&status(&h, Rome, utc("2026-12-24T18:00:00Z")));
        assert_eq!(
            reason,
            ClosedReason::Closure {
                reason: "Christmas Eve".into()
            }
        );
        assert_eq!(next, Some(utc("2026-12-25T18:00:00Z")));
        // A morning closure (until only) delays the opening.
        let mut late = trattoria();
        late.closures.push(closure(
            "2026-06-12",
            "2026-06-12",
            None,
            Some(t(13, 30)),
            "staff meeting",
        ));
        let (_, next) = closed(&status(&late, Rome, utc("2026-06-12T09:00:00Z")));
        assert_eq!(next, Some(utc("2026-06-12T11:30:00Z")));
        assert!(status(&late, Rome, utc("2026-06-12T11:30:00Z")).is_open());
    }

    #[test]
    fn closure_window_running_past_midnight() {
        let h = OpeningHours {
            weekly: vec![span(Fri, (18, 0), (4, 0))],
            ..Default::default()
        };
        let mut h2 = h.clone();
        h2.closures.push(closure(
            "2026-06-12",
            "2026-06-12",
            Some(t(22, 0)),
            Some(t(2, 0)),
            "private event",
        ));
        // 23:00 and 01:00 local are closed; 03:00 is open again.
        assert!(status(&h, New_York, utc("2026-06-13T03:00:00Z")).is_open());
        let (reason, next) = closed(&status(&h2, New_York, utc("2026-06-13T03:00:00Z")));
        assert_eq!(
            reason,
            ClosedReason::Closure {
                reason: "private event".into()
            }
        );
        assert_eq!(next, Some(utc("2026-06-13T06:00:00Z")));
        assert!(!status(&h2, New_York, utc("2026-06-13T05:00:00Z")).is_open());
        assert!(status(&h2, New_York, utc("2026-06-13T07:00:00Z")).is_open());
    }

    #[test]
    fn dst_gap_maps_to_the_first_instant_after_it() {
        // New York springs forward 2026-03-08 02:00 → 03:00 (EST UTC-5 → EDT UTC-4).
        let h = OpeningHours {
            weekly: vec![span(Sun, (2, 30), (10, 0)), span(Sat, (20, 0), (2, 15))],
            ..Default::default()
        };
        // Saturday's span would close at 02:15, which does not exist: it closes at 03:00 EDT.
        let (closes, _) = open(&status(&h, New_York, utc("2026-03-08T06:30:00Z")));
        // Sunday's span opens at 02:30 → 03:00 EDT too, so both merge into one period.
        assert_eq!(closes, utc("2026-03-08T14:00:00Z"));
        assert!(status(&h, New_York, utc("2026-03-08T06:59:00Z")).is_open());
        let sunday_only = OpeningHours {
            weekly: vec![span(Sun, (2, 30), (10, 0))],
            ..Default::default()
        };
        let (_, next) = closed(&status(&sunday_only, New_York, utc("2026-03-08T05:00:00Z")));
        assert_eq!(next, Some(utc("2026-03-08T07:00:00Z")));
        // Rome springs forward 2026-03-29 02:00 → 03:00 (UTC+1 → UTC+2).
        let rome = OpeningHours {
            weekly: vec![span(Sun, (2, 0), (2, 59))],
            ..Default::default()
        };
        let (_, next) = closed(&status(&rome, Rome, utc("2026-03-28T12:00:00Z")));
        // Open and close both fall in the gap: an empty period, so the next is a week later.
        assert_eq!(next, Some(utc("2026-04-05T00:00:00Z")));
    }

    #[test]
    fn dst_overlap_uses_earlier_open_and_later_close() {
        // New York falls back 2026-11-01 02:00 EDT → 01:00 EST; 01:00–02:00 happens twice.
        let h = OpeningHours {
            weekly: vec![span(Sat, (20, 0), (1, 30))],
            ..Default::default()
        };
        // Closes at the second 01:30 (EST, 06:30 UTC), so it is still open at 05:45 UTC (01:45 EDT).
        let (closes, _) = open(&status(&h, New_York, utc("2026-11-01T05:45:00Z")));
        assert_eq!(closes, utc("2026-11-01T06:30:00Z"));
        let h = OpeningHours {
            weekly: vec![span(Sun, (1, 30), (9, 0))],
            ..Default::default()
        };
        let (_, next) = closed(&status(&h, New_York, utc("2026-11-01T04:00:00Z")));
        assert_eq!(next, Some(utc("2026-11-01T05:30:00Z")), "first 01:30 (EDT)");
        // Rome falls back 2026-10-25 03:00 → 02:00.
        let rome = OpeningHours {
            weekly: vec![span(Sat, (22, 0), (2, 30))],
            ..Default::default()
        };
        let (closes, _) = open(&status(&rome, Rome, utc("2026-10-24T23:00:00Z")));
        assert_eq!(closes, utc("2026-10-25T01:30:00Z"), "second 02:30 (CET)");
    }

    #[test]
    fn no_hours_or_far_opening_has_no_next_open() {
        let (_, next) = closed(&status(
            &OpeningHours::default(),
            Rome,
            utc("2026-06-12T10:00:00Z"),
        ));
        assert_eq!(next, None);
        let mut h = trattoria();
        h.closures.push(closure(
            "2026-06-01",
            "2026-07-31",
            None,
            None,
            "summer break",
        ));
        let (reason, next) = closed(&status(&h, Rome, utc("2026-06-12T10:00:00Z")));
        assert_eq!(
            reason,
            ClosedReason::Closure {
                reason: "summer break".into()
            }
        );
        assert_eq!(next, None);
        assert_eq!(
            describe_next_open(&h, Rome, utc("2026-06-12T10:00:00Z")),
            "not in the next 14 days"
        );
        // Exactly 14 days ahead is still found.
        let weekly = OpeningHours {
            weekly: vec![span(Fri, (12, 0), (13, 0))],
            ..Default::default()
        };
        let mut two_weeks = weekly.clone();
        two_weeks
            .closures
            .push(closure("2026-06-12", "2026-06-12", None, None, ""));
        two_weeks
            .closures
            .push(closure("2026-06-19", "2026-06-19", None, None, ""));
        let (_, next) = closed(&status(&two_weeks, Rome, utc("2026-06-12T10:00:00Z")));
        assert_eq!(next, Some(utc("2026-06-26T10:00:00Z")));
        let (_, next) = closed(&status(&two_weeks, Rome, utc("2026-06-12T09:59:59Z")));
        assert_eq!(next, None, "beyond 14 days");
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        for now in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::UNIX_EPOCH,
        ] {
            let mut h = trattoria();
            h.closures
                .push(closure("2026-06-01", "2026-06-02", None, None, "x"));
            let _ = status(&h, Tokyo, now);
            let _ = describe_today(&h, Tokyo, now);
            let _ = describe_next_open(&h, Tokyo, now);
        }
    }

    #[test]
    fn parse_tz_names() {
        assert_eq!(parse_tz("Europe/Rome").unwrap(), Rome);
        assert_eq!(parse_tz(" America/New_York ").unwrap(), New_York);
        let err = parse_tz("Mars/Olympus_Mons").unwrap_err();
        assert_eq!(err, HoursError::UnknownTimeZone("Mars/Olympus_Mons".into()));
        assert!(err.to_string().contains("IANA"));
        assert!(parse_tz("").is_err());
    }

    #[test]
    fn descriptions() {
        let mut h = trattoria();
        let now = utc("2026-06-12T08:00:00Z"); // Friday 10:00 in Rome
        assert_eq!(describe_today(&h, Rome, now), "12:00–15:00, 19:00–23:00");
        assert_eq!(describe_next_open(&h, Rome, now), "today at 12:00");
        assert_eq!(
            describe_next_open(&h, Rome, utc("2026-06-12T11:00:00Z")),
            "open now until 15:00"
        );
        assert_eq!(
            describe_next_open(&h, Rome, utc("2026-06-12T21:30:00Z")),
            "tomorrow at 12:00"
        );
        h.closures.push(closure(
            "2026-06-12",
            "2026-06-12",
            Some(t(14, 0)),
            Some(t(20, 0)),
            "",
        ));
        assert_eq!(describe_today(&h, Rome, now), "12:00–14:00, 20:00–23:00");
        h.closures
            .push(closure("2026-06-13", "2026-06-16", None, None, "holiday"));
        assert_eq!(
            describe_today(&h, Rome, utc("2026-06-13T08:00:00Z")),
            "closed today (holiday)"
        );
        assert_eq!(
            describe_next_open(&h, Rome, utc("2026-06-12T21:30:00Z")),
            "Wednesday at 12:00"
        );
        h.closures
            .push(closure("2026-06-17", "2026-06-20", None, None, ""));
        assert_eq!(
            describe_next_open(&h, Rome, utc("2026-06-12T21:30:00Z")),
            "Sunday 21 June at 12:00"
        );
        let none = OpeningHours::default();
        assert_eq!(describe_today(&none, Rome, now), "closed today");
        // Today is the restaurant's date, not UTC's: 2026-06-12T20:00Z is Saturday 05:00 in Tokyo.
        let sat = OpeningHours {
            weekly: vec![span(Sat, (11, 0), (14, 0))],
            ..Default::default()
        };
        assert_eq!(
            describe_today(&sat, Tokyo, utc("2026-06-12T20:00:00Z")),
            "11:00–14:00"
        );
        assert_eq!(
            describe_next_open(&sat, Tokyo, utc("2026-06-12T20:00:00Z")),
            "today at 11:00"
        );
    }

    // ---- properties -------------------------------------------------------------------------

    /// Independent reference: is `at` inside some span instance and outside every closure?
    /// (No merging, no subtraction: every span and closure checked on its own.)
    fn raw_open(h: &OpeningHours, tz: Tz, at: DateTime<Utc>) -> bool {
        let today = at.with_timezone(&tz).date_naive();
        let in_span = [today.pred_opt().unwrap(), today].iter().any(|d| {
            h.weekly.iter().filter(|s| s.day == d.weekday()).any(|s| {
                let close_day = if s.close <= s.open {
                    d.succ_opt().unwrap()
                } else {
                    *d
                };
                let start = resolve(tz, d.and_time(s.open), false).unwrap();
                let end = resolve(tz, close_day.and_time(s.close), true).unwrap();
                start <= at && at < end
            })
        });
        let in_closure =
            closure_windows(h, tz, today - Duration::days(2), today + Duration::days(1))
                .unwrap()
                .iter()
                .any(|c| c.start <= at && at < c.end);
        in_span && !in_closure
    }

    /// Open iff every minute from now through now + last call is raw-open (all boundaries are
    /// whole minutes in these zones, so minute sampling is exact).
    fn reference_open(h: &OpeningHours, tz: Tz, now: DateTime<Utc>) -> bool {
        (0..=i64::from(h.last_call_minutes)).all(|m| raw_open(h, tz, now + Duration::minutes(m)))
    }

    fn arb_time() -> impl Strategy<Value = NaiveTime> {
        // Quarter hours, so DST boundaries (01:00–03:00) are hit often.
        (0u32..96).prop_map(|q| t(q / 4, (q % 4) * 15))
    }

    fn arb_day() -> impl Strategy<Value = Weekday> {
        (0u8..7).prop_map(|d| Weekday::try_from(d).unwrap())
    }

    /// Days around the 2026 DST transitions of both zones.
    const BASES: [&str; 4] = ["2026-03-05", "2026-03-26", "2026-10-22", "2026-10-29"];

    fn arb_hours() -> impl Strategy<Value = OpeningHours> {
        let span = (arb_day(), arb_time(), arb_time()).prop_map(|(day, open, close)| WeeklySpan {
            day,
            open,
            close,
        });
        let closure = (
            0usize..4,
            0i64..10,
            0i64..3,
            prop::option::of(arb_time()),
            prop::option::of(arb_time()),
        )
            .prop_map(|(b, off, len, from, until)| {
                let start = date(BASES[b]) + Duration::days(off);
                Closure {
                    start,
                    end: start + Duration::days(len),
                    from,
                    until,
                    reason: format!("c{off}"),
                }
            });
        (
            prop::collection::vec(span, 0..8),
            prop::collection::vec(closure, 0..3),
            prop::sample::select(vec![0u32, 15, 30, 60]),
        )
            .prop_map(|(weekly, closures, last_call_minutes)| OpeningHours {
                weekly,
                closures,
                last_call_minutes,
            })
    }

    fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
        (0usize..4, 0i64..(10 * 24 * 60)).prop_map(|(b, minutes)| {
            date(BASES[b]).and_time(NaiveTime::MIN).and_utc() + Duration::minutes(minutes)
        })
    }

    fn arb_tz() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![New_York, Rome])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn open_iff_reference_says_open(h in arb_hours(), tz in arb_tz(), now in arb_now()) {
            let s = status(&h, tz, now);
            prop_assert_eq!(s.is_open(), reference_open(&h, tz, now), "{:?}", s);
            if let HoursStatus::Open { closes_at, last_call_at } = s {
                prop_assert!(now < last_call_at && last_call_at <= closes_at);
                prop_assert!(!raw_open(&h, tz, closes_at), "closes_at is the real end");
            }
        }

        #[test]
        fn next_open_is_future_and_open(h in arb_hours(), tz in arb_tz(), now in arb_now()) {
            if let HoursStatus::Closed { next_open: Some(at), .. } = status(&h, tz, now) {
                prop_assert!(at > now);
                prop_assert!(at <= now + Duration::days(SEARCH_DAYS));
                prop_assert!(status(&h, tz, at).is_open(), "not open at next_open {}", at);
                // It is the start of an opening: the minute before is not open.
                prop_assert!(!status(&h, tz, at - Duration::minutes(1)).is_open());
            }
            let _ = describe_today(&h, tz, now);
            let _ = describe_next_open(&h, tz, now);
        }
    }

    #[test]
    fn offset_changes_are_found_to_the_second() {
        let changes = offset_changes(
            Rome,
            utc("2026-03-27T00:00:00Z"),
            utc("2026-04-10T00:00:00Z"),
        );
        let fixed = |h: i32| FixedOffset::east_opt(h * 3600).unwrap();
        assert_eq!(
            changes,
            vec![
                (utc("2026-03-27T00:00:00Z"), fixed(1)),
                (utc("2026-03-29T01:00:00Z"), fixed(2))
            ]
        );
        let changes = offset_changes(
            New_York,
            utc("2026-10-25T00:00:00Z"),
            utc("2026-11-20T00:00:00Z"),
        );
        assert_eq!(changes[1], (utc("2026-11-01T06:00:00Z"), fixed(-5)));
        assert_eq!(
            offset_changes(
                Tokyo,
                utc("2026-03-01T00:00:00Z"),
                utc("2026-12-01T00:00:00Z")
            )
            .len(),
            1
        );
    }

    #[test]
    fn local_times_resolve_as_openings_do() {
        let at = |d: &str, h, m| date(d).and_time(t(h, m));
        // Gap: the first instant after it; overlap: the earlier instant.
        assert_eq!(
            resolve_local(New_York, at("2026-03-08", 2, 30)),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            resolve_local(New_York, at("2026-11-01", 1, 30)),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            resolve_local(Rome, at("2026-06-12", 19, 0)),
            Some(utc("2026-06-12T17:00:00Z"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// `periods` over `plan_days` is what `status` decides with: open iff inside a period and
        /// before its last call, and the next opening is the next period that takes calls.
        #[test]
        fn periods_are_what_status_decides_with(h in arb_hours(), tz in arb_tz(), now in arb_now()) {
            let (first, last) = plan_days(now.with_timezone(&tz).date_naive()).unwrap();
            let list = periods(&h, tz, first, last).unwrap();
            let last_call = Duration::minutes(i64::from(h.last_call_minutes));
            for w in list.windows(2) {
                prop_assert!(w[0].close < w[1].open, "sorted, disjoint, merged: {:?}", w);
            }
            let open = list.iter().find(|p| p.open <= now && now < p.close - last_call);
            match status(&h, tz, now) {
                HoursStatus::Open { closes_at, .. } => prop_assert_eq!(open.map(|p| p.close), Some(closes_at)),
                HoursStatus::Closed { next_open, .. } => {
                    prop_assert!(open.is_none());
                    let next = list
                        .iter()
                        .find(|p| p.open > now && p.close - last_call > p.open)
                        .map(|p| p.open)
                        .filter(|o| *o <= now + Duration::days(SEARCH_DAYS));
                    prop_assert_eq!(next, next_open);
                }
            }
        }
    }

    #[test]
    fn every_quarter_hour_of_dst_days_is_handled() {
        for (tz, day) in [
            (New_York, "2026-03-08"),
            (New_York, "2026-11-01"),
            (Rome, "2026-03-29"),
            (Rome, "2026-10-25"),
        ] {
            let day = date(day);
            // Every quarter hour from 01:00 to 03:00: all gap and overlap times of both zones.
            for q in 4..=12u32 {
                let boundary = t(q / 4, (q % 4) * 15);
                let h = OpeningHours {
                    weekly: vec![
                        WeeklySpan {
                            day: day.weekday(),
                            open: boundary,
                            close: t(9, 0),
                        },
                        WeeklySpan {
                            day: day.pred_opt().unwrap().weekday(),
                            open: t(22, 0),
                            close: boundary,
                        },
                    ],
                    closures: vec![closure(
                        &day.to_string(),
                        &day.to_string(),
                        Some(boundary),
                        Some(t(3, 0)),
                        "x",
                    )],
                    last_call_minutes: 15,
                };
                let start = (day - Duration::days(1)).and_time(t(12, 0)).and_utc();
                for m in (0..36 * 60).step_by(15) {
                    let now = start + Duration::minutes(m);
                    let s = status(&h, tz, now);
                    assert_eq!(
                        s.is_open(),
                        reference_open(&h, tz, now),
                        "{tz} {boundary} {now}: {s:?}"
                    );
                }
            }
        }
    }
}
