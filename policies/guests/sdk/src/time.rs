//! Time for policies: the call's local time (the only clock a policy has), `HH:MM`/date parsing,
//! and opening-hours questions answered over the granted [`OpeningHours`].
//!
//! All times are the restaurant's local wall-clock times. The UTC offset of the call's moment is
//! applied to the whole day; around a DST switch a computed time can be off by the switch.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};
use pulsara_core::config::{Closure, OpeningHours, WeeklySpan};
use pulsara_policy_abi::CallContext;

use crate::ToolError;

/// The call's local time, parsed from [`CallContext::local_time`].
///
/// # Errors
/// When the host sent something that is not RFC 3339.
pub fn now(ctx: &CallContext) -> Result<DateTime<FixedOffset>, ToolError> {
    DateTime::parse_from_rfc3339(&ctx.local_time)
        .map_err(|e| ToolError(format!("the call's local time {:?} is not RFC 3339: {e}", ctx.local_time)))
}

/// Parses `"19:30"`, `"7:30"`, `"19.30"`, `"7:30 pm"`, `"7pm"`, `"noon"`.
pub fn parse_time(s: &str) -> Option<NaiveTime> {
    let t = s.trim().to_ascii_lowercase();
    if t == "noon" || t == "midday" {
        return NaiveTime::from_hms_opt(12, 0, 0);
    }
    if t == "midnight" {
        return NaiveTime::from_hms_opt(0, 0, 0);
    }
    let (body, pm) = if let Some(b) = t.strip_suffix("pm").or_else(|| t.strip_suffix("p.m.")) {
        (b.trim(), Some(true))
    } else if let Some(b) = t.strip_suffix("am").or_else(|| t.strip_suffix("a.m.")) {
        (b.trim(), Some(false))
    } else {
        (t.as_str(), None)
    };
    let (h, m) = match body.split_once([':', '.']) {
        Some((h, m)) => (h.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?),
        None => (body.parse::<u32>().ok()?, 0),
    };
    let h = match pm {
        Some(true) if (1..12).contains(&h) => h + 12,
        Some(false) if h == 12 => 0,
        Some(_) if !(1..=12).contains(&h) => return None,
        _ => h,
    };
    NaiveTime::from_hms_opt(h, m, 0)
}

/// Parses `"YYYY-MM-DD"`, `"today"` or `"tomorrow"` relative to `today`.
pub fn parse_date(s: &str, today: NaiveDate) -> Option<NaiveDate> {
    match s.trim().to_ascii_lowercase().as_str() {
        "today" | "tonight" => Some(today),
        "tomorrow" => today.succ_opt(),
        other => NaiveDate::parse_from_str(other, "%Y-%m-%d").ok(),
    }
}

/// `"19:30"`.
pub fn hhmm(t: NaiveTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// `"Friday 1 May"`.
pub fn spoken_date(d: NaiveDate) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    format!("{} {} {}", weekday_name(d.weekday()), d.day(), MONTHS[d.month0() as usize])
}

pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// The occurrences of `spans` that start on `date`, as `[start, end)` local date-times (a span
/// whose close is not after its open ends the next day).
pub fn spans_starting(spans: &[WeeklySpan], date: NaiveDate) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let mut out: Vec<(NaiveDateTime, NaiveDateTime)> = spans
        .iter()
        .filter(|s| s.day == date.weekday())
        .map(|s| {
            let start = date.and_time(s.open);
            let end_date = if s.close > s.open { date } else { date + Duration::days(1) };
            (start, end_date.and_time(s.close))
        })
        .collect();
    out.sort();
    out
}

/// The span occurrence containing `at`, if any.
pub fn span_at(spans: &[WeeklySpan], at: NaiveDateTime) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let day = at.date();
    [day - Duration::days(1), day]
        .into_iter()
        .flat_map(|d| spans_starting(spans, d))
        .find(|(start, end)| *start <= at && at < *end)
}

/// The closure in force at `at`, if any.
pub fn closure_at(hours: &OpeningHours, at: NaiveDateTime) -> Option<&Closure> {
    hours.closures.iter().find(|c| {
        let d = at.date();
        if d < c.start || d > c.end {
            return false;
        }
        let t = at.time();
        c.from.is_none_or(|f| t >= f) && c.until.is_none_or(|u| t < u)
    })
}

/// A closure covering the whole of `date`, if any.
pub fn closed_all_day(hours: &OpeningHours, date: NaiveDate) -> Option<&Closure> {
    hours.closures.iter().find(|c| date >= c.start && date <= c.end && c.from.is_none() && c.until.is_none())
}

/// Open at `at`: inside a weekly span and not in a closure.
pub fn is_open(hours: &OpeningHours, at: NaiveDateTime) -> bool {
    span_at(&hours.weekly, at).is_some() && closure_at(hours, at).is_none()
}

/// Open at `at` and before the span's last-call cut-off.
pub fn is_accepting(hours: &OpeningHours, at: NaiveDateTime) -> bool {
    match span_at(&hours.weekly, at) {
        Some((_, end)) => {
            closure_at(hours, at).is_none() && at < end - Duration::minutes(i64::from(hours.last_call_minutes))
        }
        None => false,
    }
}

/// The first moment at or after `from` when the restaurant is open, looking `max_days` ahead.
pub fn next_open(hours: &OpeningHours, from: NaiveDateTime, max_days: i64) -> Option<NaiveDateTime> {
    if is_open(hours, from) {
        return Some(from);
    }
    let mut candidates: Vec<NaiveDateTime> = Vec::new();
    for offset in -1..=max_days {
        let d = from.date() + Duration::days(offset);
        for (start, end) in spans_starting(&hours.weekly, d) {
            // A span's start, or the end of a partial closure inside it.
            candidates.push(start);
            for c in &hours.closures {
                if let Some(u) = c.until {
                    let t = d.and_time(u);
                    if t > start && t < end {
                        candidates.push(t);
                    }
                }
            }
        }
    }
    candidates.sort();
    candidates.into_iter().find(|t| *t >= from && is_open(hours, *t))
}

/// `"12:00–15:00 and 19:00–23:00"`, or `None` when closed all day.
pub fn describe_day(hours: &OpeningHours, date: NaiveDate) -> Option<String> {
    if closed_all_day(hours, date).is_some() {
        return None;
    }
    let spans: Vec<String> = spans_starting(&hours.weekly, date)
        .into_iter()
        .map(|(s, e)| format!("{} to {}", hhmm(s.time()), hhmm(e.time())))
        .collect();
    (!spans.is_empty()).then(|| crate::text::join_words(&spans, "and"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn hours() -> OpeningHours {
        OpeningHours {
            weekly: vec![
                WeeklySpan { day: Weekday::Fri, open: t(18, 0), close: t(2, 0) },
                WeeklySpan { day: Weekday::Sat, open: t(12, 0), close: t(15, 0) },
            ],
            closures: vec![Closure {
                start: NaiveDate::from_ymd_opt(2026, 5, 9).unwrap(),
                end: NaiveDate::from_ymd_opt(2026, 5, 9).unwrap(),
                from: Some(t(13, 0)),
                until: None,
                reason: "private event".into(),
            }],
            last_call_minutes: 30,
        }
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("19:30"), Some(t(19, 30)));
        assert_eq!(parse_time("7:30 pm"), Some(t(19, 30)));
        assert_eq!(parse_time("7pm"), Some(t(19, 0)));
        assert_eq!(parse_time("12am"), Some(t(0, 0)));
        assert_eq!(parse_time("noon"), Some(t(12, 0)));
        assert_eq!(parse_time("25:00"), None);
        assert_eq!(parse_time("soon"), None);
    }

    #[test]
    fn spans_cross_midnight_and_closures_apply() {
        let h = hours();
        let fri = NaiveDate::from_ymd_opt(2026, 5, 8).unwrap(); // a Friday
        assert!(is_open(&h, fri.and_time(t(23, 0))));
        assert!(is_open(&h, (fri + Duration::days(1)).and_time(t(1, 0))));
        assert!(!is_accepting(&h, (fri + Duration::days(1)).and_time(t(1, 45))));
        assert!(is_open(&h, (fri + Duration::days(1)).and_time(t(12, 30))));
        assert!(!is_open(&h, (fri + Duration::days(1)).and_time(t(13, 30))), "partial closure");
        assert!(!is_open(&h, fri.and_time(t(17, 0))));
        assert_eq!(next_open(&h, fri.and_time(t(10, 0)), 7), Some(fri.and_time(t(18, 0))));
        assert_eq!(
            next_open(&h, (fri + Duration::days(1)).and_time(t(14, 0)), 7),
            Some((fri + Duration::days(7)).and_time(t(18, 0)))
        );
        assert_eq!(describe_day(&h, fri).as_deref(), Some("18:00 to 02:00"));
        assert_eq!(spoken_date(fri), "Friday 8 May");
    }
}
