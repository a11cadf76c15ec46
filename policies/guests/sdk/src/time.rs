//! Time for policies: the call's local time (the only clock a policy has), parsing and speaking
//! times and dates, and opening-hours questions answered from the granted [`HoursFacts`].
//!
//! There is no opening-hours engine here. The host computes the facts with `pulsara_core::hours`
//! — the engine the edge decides with and the agent's variables are filled from — at the call's
//! instant: the periods of opening (time zone and DST applied, adjacent spans merged, closures
//! removed, also those past midnight), the last-call cut-off, the staffed periods and the UTC
//! offsets in force. [`Hours`] only looks instants up in them, so a policy, the edge and the agent
//! give the same answer.
//!
//! Decide on instants (`DateTime<Utc>`), not wall-clock times: around a DST switch a local time
//! means two instants or none. [`Hours::instant`] and [`Hours::local`] convert between them.

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, Timelike, Utc, Weekday,
};
use pulsara_core::hours::SEARCH_DAYS;
use pulsara_policy_abi::{CallContext, ClosureNote, HoursFacts, Period};

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

/// The opening (or staffed) hours of one call, answered from the granted [`HoursFacts`].
#[derive(Debug, Clone, Copy)]
pub struct Hours<'a> {
    facts: &'a HoursFacts,
    periods: &'a [Period],
    /// Zero for staffed hours: transfers have no last call.
    last_call: Duration,
}

impl<'a> Hours<'a> {
    /// The opening hours; calls (and bookings) stop at each period's last call.
    pub fn opening(facts: &'a HoursFacts) -> Self {
        Self { facts, periods: &facts.periods, last_call: Duration::minutes(i64::from(facts.last_call_minutes)) }
    }

    /// When someone can take a transfer: the staffed periods (the restaurant's closures
    /// applied), or the opening periods when the restaurant set no staffed hours; no last call.
    pub fn staffed(facts: &'a HoursFacts) -> Self {
        Self { facts, periods: facts.staffed.as_deref().unwrap_or(&facts.periods), last_call: Duration::zero() }
    }

    /// The periods, sorted and disjoint.
    pub fn periods(&self) -> &'a [Period] {
        self.periods
    }

    /// The restaurant's wall-clock time at `t`.
    pub fn local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        let offsets = &self.facts.offsets;
        let i = offsets.partition_point(|o| o.since <= t).saturating_sub(1);
        let seconds = offsets.get(i).map_or(0, |o| o.offset);
        t.with_timezone(&FixedOffset::east_opt(seconds).unwrap_or_else(|| Utc.fix()))
    }

    /// The instant the restaurant's clock shows `local`: the earlier one when it shows it twice
    /// (DST ends), the instant it jumps over it when never (DST starts) — as the host's engine
    /// reads an opening time.
    pub fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let offsets = &self.facts.offsets;
        let shown = |i: usize| {
            let t = (local - Duration::seconds(i64::from(offsets[i].offset))).and_utc();
            let started = i == 0 || t >= offsets[i].since;
            let ended = offsets.get(i + 1).is_some_and(|next| t >= next.since);
            (started && !ended).then_some(t)
        };
        if let Some(t) = (0..offsets.len()).filter_map(shown).min() {
            return t;
        }
        for pair in offsets.windows(2) {
            let jump = pair[1].since.naive_utc();
            let before = jump + Duration::seconds(i64::from(pair[0].offset));
            let after = jump + Duration::seconds(i64::from(pair[1].offset));
            if before <= local && local < after {
                return pair[1].since;
            }
        }
        local.and_utc()
    }

    /// The period `t` is in, if any (last call not applied).
    pub fn period_at(&self, t: DateTime<Utc>) -> Option<&'a Period> {
        let i = self.periods.partition_point(|p| p.open <= t).checked_sub(1)?;
        self.periods.get(i).filter(|p| t < p.close)
    }

    /// Open at `t` (inside a period; last call not applied).
    pub fn is_open(&self, t: DateTime<Utc>) -> bool {
        self.period_at(t).is_some()
    }

    /// The instant `period` stops taking calls.
    pub fn last_call(&self, period: &Period) -> DateTime<Utc> {
        period.close.checked_sub_signed(self.last_call).unwrap_or(period.open)
    }

    /// Taking calls at `t`: open and before last call. This is the edge's decision.
    pub fn takes_calls(&self, t: DateTime<Utc>) -> bool {
        self.period_at(t).is_some_and(|p| t < self.last_call(p))
    }

    /// The start of the first period after `after` (strictly), as far as the facts reach (at
    /// least two weeks; filter for what you want to say).
    pub fn next_open(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let i = self.periods.partition_point(|p| p.open <= after);
        self.periods.get(i).map(|p| p.open)
    }

    /// The start of the first period after `after` that takes calls (one longer than the last
    /// call): the edge's next opening.
    pub fn next_taking_calls(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let i = self.periods.partition_point(|p| p.open <= after);
        self.periods[i..].iter().find(|p| self.last_call(p) > p.open).map(|p| p.open)
    }

    /// The last local date the facts list periods for.
    pub fn last_day(&self) -> NaiveDate {
        self.facts.last_day
    }

    /// Whether the facts list the periods of the local date `day`.
    pub fn covers(&self, day: NaiveDate) -> bool {
        self.facts.first_day <= day && day <= self.facts.last_day
    }

    /// The periods listed under the local date `day`: those whose first span opens that day.
    pub fn on(&self, day: NaiveDate) -> impl Iterator<Item = &'a Period> {
        self.periods.iter().filter(move |p| p.day == day)
    }

    /// A closure of the whole of `day`, if any.
    pub fn closed_all_day(&self, day: NaiveDate) -> Option<&'a ClosureNote> {
        self.facts.closures.iter().find(|c| !c.partial && c.start <= day && day <= c.end)
    }

    /// The reason of the first closure on `day` that gives one.
    pub fn closure_reason(&self, day: NaiveDate) -> Option<&'a str> {
        self.facts
            .closures
            .iter()
            .find(|c| c.start <= day && day <= c.end && !c.reason.trim().is_empty())
            .map(|c| c.reason.trim())
    }

    /// `"12:00 to 15:00 and 19:00 to 23:00"`, or `"closed"` / `"closed (reason)"`: the periods
    /// the agent's `hours_today` variable lists for that day.
    pub fn describe_day(&self, day: NaiveDate) -> String {
        let spans: Vec<String> = self
            .on(day)
            .map(|p| format!("{} to {}", hhmm(self.local(p.open).time()), hhmm(self.local(p.close).time())))
            .collect();
        if !spans.is_empty() {
            return crate::text::join_words(&spans, "and");
        }
        match self.closure_reason(day) {
            Some(reason) => format!("closed ({reason})"),
            None => "closed".to_owned(),
        }
    }

    /// The next opening relative to `now`, in the words of the agent's `next_opening` variable:
    /// `"open now until 23:00"`, `"today at 19:00"`, `"tomorrow at 12:00"`, `"Friday at 12:00"`,
    /// `"Friday 11 December at 12:00"` or `"not in the next 14 days"`.
    pub fn describe_next_open(&self, now: DateTime<Utc>) -> String {
        if let Some(p) = self.period_at(now).filter(|p| now < self.last_call(p)) {
            return format!("open now until {}", hhmm(self.local(p.close).time()));
        }
        let horizon = now.checked_add_signed(Duration::days(SEARCH_DAYS)).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let Some(at) = self.next_taking_calls(now).filter(|at| *at <= horizon) else {
            return format!("not in the next {SEARCH_DAYS} days");
        };
        let local = self.local(at);
        let time = hhmm(local.time());
        match (local.date_naive() - self.local(now).date_naive()).num_days() {
            0 => format!("today at {time}"),
            1 => format!("tomorrow at {time}"),
            2..=6 => format!("{} at {time}", weekday_name(local.weekday())),
            _ => format!("{} at {time}", spoken_date(local.date_naive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_policy_abi::UtcOffset;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn period(day: &str, open: &str, close: &str) -> Period {
        Period { day: d(day), open: utc(open), close: utc(close) }
    }

    /// New York around the end of DST (2026-11-01 02:00 EDT → 01:00 EST), as the host computes
    /// it for Saturday's 20:00–01:30, Sunday's and Monday's 12:00–15:00, Tuesday's 12:00–12:20,
    /// a closure on the 4th and 5th, and a 30-minute last call.
    fn new_york_fall_back() -> HoursFacts {
        HoursFacts {
            first_day: d("2026-10-31"),
            last_day: d("2026-11-16"),
            last_call_minutes: 30,
            periods: vec![
                period("2026-10-31", "2026-11-01T00:00:00Z", "2026-11-01T06:30:00Z"),
                period("2026-11-01", "2026-11-01T17:00:00Z", "2026-11-01T20:00:00Z"),
                period("2026-11-02", "2026-11-02T17:00:00Z", "2026-11-02T20:00:00Z"),
                period("2026-11-03", "2026-11-03T17:00:00Z", "2026-11-03T17:20:00Z"),
            ],
            staffed: Some(vec![period("2026-11-02", "2026-11-02T17:00:00Z", "2026-11-02T19:00:00Z")]),
            closures: vec![ClosureNote { start: d("2026-11-04"), end: d("2026-11-05"), partial: false, reason: "holiday".into() }],
            offsets: vec![
                UtcOffset { since: utc("2026-10-29T00:00:00Z"), offset: -4 * 3600 },
                UtcOffset { since: utc("2026-11-01T06:00:00Z"), offset: -5 * 3600 },
            ],
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
        assert_eq!(spoken_date(d("2026-05-08")), "Friday 8 May");
    }

    #[test]
    fn local_times_follow_the_offsets() {
        let facts = new_york_fall_back();
        let h = Hours::opening(&facts);
        assert_eq!(h.local(utc("2026-11-01T05:45:00Z")).to_rfc3339(), "2026-11-01T01:45:00-04:00");
        assert_eq!(h.local(utc("2026-11-01T06:15:00Z")).to_rfc3339(), "2026-11-01T01:15:00-05:00");
        // Before the first offset's `since`, the first offset still applies.
        assert_eq!(h.local(utc("2026-10-01T12:00:00Z")).to_rfc3339(), "2026-10-01T08:00:00-04:00");
        // 01:30 happens twice: the earlier; 03:00 once.
        assert_eq!(h.instant(d("2026-11-01").and_time(t(1, 30))), utc("2026-11-01T05:30:00Z"));
        assert_eq!(h.instant(d("2026-11-01").and_time(t(3, 0))), utc("2026-11-01T08:00:00Z"));
        assert_eq!(h.instant(d("2026-10-31").and_time(t(23, 0))), utc("2026-11-01T03:00:00Z"));
    }

    #[test]
    fn a_local_time_in_the_spring_gap_is_the_jump() {
        // New York 2026-03-08 02:00 EST → 03:00 EDT.
        let facts = HoursFacts {
            first_day: d("2026-03-07"),
            last_day: d("2026-03-23"),
            last_call_minutes: 0,
            periods: Vec::new(),
            staffed: None,
            closures: Vec::new(),
            offsets: vec![
                UtcOffset { since: utc("2026-03-06T00:00:00Z"), offset: -5 * 3600 },
                UtcOffset { since: utc("2026-03-08T07:00:00Z"), offset: -4 * 3600 },
            ],
        };
        let h = Hours::opening(&facts);
        assert_eq!(h.instant(d("2026-03-08").and_time(t(2, 30))), utc("2026-03-08T07:00:00Z"));
        assert_eq!(h.instant(d("2026-03-08").and_time(t(1, 59))), utc("2026-03-08T06:59:00Z"));
        assert_eq!(h.instant(d("2026-03-08").and_time(t(3, 0))), utc("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn open_last_call_and_next_opening() {
        let facts = new_york_fall_back();
        let h = Hours::opening(&facts);
        // 01:15 EST, after the clocks went back: open until the second 01:30, calls until 01:00.
        let late = utc("2026-11-01T06:15:00Z");
        assert!(h.is_open(late));
        assert!(!h.takes_calls(late));
        assert!(h.takes_calls(utc("2026-11-01T05:59:00Z")));
        assert!(!h.is_open(utc("2026-11-01T06:30:00Z")), "the close is exclusive");
        assert_eq!(h.describe_next_open(utc("2026-11-01T03:00:00Z")), "open now until 01:30");
        assert_eq!(h.describe_next_open(late), "today at 12:00");
        assert_eq!(h.describe_next_open(utc("2026-11-01T20:00:00Z")), "tomorrow at 12:00");
        // Tuesday's 20 minutes are shorter than the last call: open, but never taking calls.
        let monday_evening = utc("2026-11-02T20:00:00Z");
        assert_eq!(h.next_open(monday_evening), Some(utc("2026-11-03T17:00:00Z")));
        assert_eq!(h.next_taking_calls(monday_evening), None);
        assert_eq!(h.describe_next_open(monday_evening), "not in the next 14 days");
        assert!(h.is_open(utc("2026-11-03T17:10:00Z")) && !h.takes_calls(utc("2026-11-03T17:10:00Z")));
    }

    #[test]
    fn days_are_described_as_the_agent_hears_them() {
        let facts = new_york_fall_back();
        let h = Hours::opening(&facts);
        assert_eq!(h.describe_day(d("2026-10-31")), "20:00 to 01:30");
        assert_eq!(h.describe_day(d("2026-11-01")), "12:00 to 15:00");
        assert_eq!(h.describe_day(d("2026-11-04")), "closed (holiday)");
        assert_eq!(h.describe_day(d("2026-11-06")), "closed");
        assert!(h.closed_all_day(d("2026-11-05")).is_some());
        assert!(h.closed_all_day(d("2026-11-06")).is_none());
        assert!(h.covers(d("2026-11-16")) && !h.covers(d("2026-11-17")));
    }

    #[test]
    fn staffed_hours_have_no_last_call() {
        let facts = new_york_fall_back();
        let staffed = Hours::staffed(&facts);
        assert!(staffed.takes_calls(utc("2026-11-02T18:59:00Z")));
        assert!(!staffed.is_open(utc("2026-11-02T19:30:00Z")), "staffed until 14:00, open until 15:00");
        assert_eq!(staffed.next_open(utc("2026-11-01T12:00:00Z")), Some(utc("2026-11-02T17:00:00Z")));
        let mut facts = facts;
        facts.staffed = None;
        let staffed = Hours::staffed(&facts);
        assert!(staffed.takes_calls(utc("2026-11-01T06:15:00Z")), "opening hours without last call");
    }
}
