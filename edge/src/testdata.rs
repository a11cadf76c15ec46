//! Restaurant configs for the unit tests, built in code so each test states what it relies on.

use chrono::{NaiveTime, Weekday};
use pulsara_core::config::{AfterHours, AgentConfig, OpeningHours, RestaurantConfig, WeeklySpan};

/// A restaurant open every day 00:00–24:00 in Europe/Rome (so tests can pick "now" freely and
/// close it with closures or by replacing `hours`), numbers `+390600000001` and `+390600000002`.
pub fn config(id: &str) -> RestaurantConfig {
    let all_day = |day| WeeklySpan {
        day,
        open: NaiveTime::MIN,
        close: NaiveTime::MIN,
    };
    RestaurantConfig {
        id: id.to_owned(),
        version: 3,
        name: format!("Restaurant {id}"),
        address: String::new(),
        phone_numbers: vec!["+39 06 0000 0001".into(), "+390600000002".into()],
        time_zone: "Europe/Rome".into(),
        hours: OpeningHours {
            weekly: [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ]
            .into_iter()
            .map(all_day)
            .collect(),
            closures: vec![],
            last_call_minutes: 0,
        },
        region: "eu-west".into(),
        after_hours: AfterHours::Message {
            message: "We are closed.".into(),
        },
        staff_number: Some("+390600000099".into()),
        fallback_number: None,
        staffed_hours: vec![],
        agent: AgentConfig {
            elevenlabs_agent_id: "agent".into(),
            voice_id: None,
            prompt_template: "p".into(),
            first_message: "hi".into(),
            language: "en".into(),
            twilio_say: None,
            busy_message: None,
            apology_message: Some("Sorry about that.".into()),

            audio_format: None,
            llm: None,
            turn: None,
            synced: None,
        },
        dtmf: Default::default(),
        tools: vec![],
        ordering: None,
        booking: None,
        notifications: Default::default(),
        max_concurrent_calls: 20,
    }
}

/// Closed all the time: no weekly spans.
pub fn closed(id: &str, after_hours: AfterHours) -> RestaurantConfig {
    let mut c = config(id);
    c.hours.weekly.clear();
    c.after_hours = after_hours;
    c
}
