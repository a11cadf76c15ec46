//! The edge's per-webhook CPU path, natively: parse the form body, validate the Twilio signature,
//! decide opening hours, render the Stream TwiML. Cloudflare's free plan allows 10 ms CPU per
//! request; the target for this path is well under 1 ms.
//!
//! Run: `cargo bench -p pulsara-core --bench voice_path`

use chrono::{NaiveTime, TimeZone, Utc, Weekday};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pulsara_core::config::{Closure, OpeningHours, WeeklySpan};
use pulsara_core::secret::Secret;
use pulsara_core::{hours, phone, twilio, twiml};

const URL: &str = "https://edge.example.com/twilio/voice";
const BODY: &str = "AccountSid=AC0123456789abcdef0123456789abcdef&ApiVersion=2010-04-01&CallSid=CA0123456789abcdef0123456789abcdef&CallStatus=ringing&Called=%2B390612345678&CalledCity=&CalledCountry=IT&CalledState=&CalledZip=&Caller=%2B14155550100&CallerCity=SAN+FRANCISCO&CallerCountry=US&CallerState=CA&CallerZip=94103&Direction=inbound&From=%2B14155550100&FromCity=SAN+FRANCISCO&FromCountry=US&FromState=CA&FromZip=94103&To=%2B390612345678&ToCity=&ToCountry=IT&ToState=&ToZip=";

fn trattoria_hours() -> OpeningHours {
    let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
    let mut weekly = Vec::new();
    for d in [
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ] {
        weekly.push(WeeklySpan {
            day: d,
            open: t(12, 0),
            close: t(15, 0),
        });
        weekly.push(WeeklySpan {
            day: d,
            open: t(19, 0),
            close: t(23, 30),
        });
    }
    let closures = vec![
        Closure {
            start: "2026-12-24".parse().unwrap(),
            end: "2026-12-24".parse().unwrap(),
            from: Some(t(15, 0)),
            until: None,
            reason: "Christmas Eve".into(),
        },
        Closure {
            start: "2026-12-25".parse().unwrap(),
            end: "2026-12-26".parse().unwrap(),
            from: None,
            until: None,
            reason: "Christmas".into(),
        },
    ];
    OpeningHours {
        weekly,
        closures,
        last_call_minutes: 30,
    }
}

fn voice_path(c: &mut Criterion) {
    let token = Secret::new("0123456789abcdef0123456789abcdef");
    let params = twilio::parse_form(BODY.as_bytes()).unwrap();
    let signature = twilio::compute_signature(&token, URL, &params);
    let hours_cfg = trattoria_hours();
    let tz = hours::parse_tz("Europe/Rome").unwrap();
    let open_now = Utc.with_ymd_and_hms(2026, 6, 12, 18, 0, 0).unwrap();
    let closed_now = Utc.with_ymd_and_hms(2026, 6, 15, 10, 0, 0).unwrap(); // Monday: next open Tuesday
    let handoff = "v1.k1.eyJjYWxsX3NpZCI6IkNBMDEyMzQ1Njc4OWFiY2RlZiIsInJlc3RhdXJhbnRfaWQiOiJ0cmF0dG9yaWEtcm9tYSJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlMTIzNA";

    let run = |now| {
        let params = twilio::parse_form(black_box(BODY.as_bytes())).unwrap();
        twilio::validate(&token, URL, &params, Some(&signature)).unwrap();
        let to = params
            .iter()
            .find(|(k, _)| k == "To")
            .map(|(_, v)| v.as_str())
            .unwrap();
        let called = phone::normalize_e164(to).unwrap();
        let status = hours::status(&hours_cfg, tz, now);
        let from = params
            .iter()
            .find(|(k, _)| k == "From")
            .map(|(_, v)| v.as_str())
            .unwrap();
        twiml::stream(
            "wss://eu-west.bridge.example.com/media",
            &[
                ("handoff", handoff),
                ("restaurant_id", "trattoria-roma"),
                ("config_version", "7"),
                ("caller", from),
                ("called", &called),
            ],
        )
        .map(|x| (x, status))
        .unwrap()
    };

    c.bench_function("voice_path_open", |b| b.iter(|| run(black_box(open_now))));
    c.bench_function("voice_path_closed_next_open_search", |b| {
        b.iter(|| run(black_box(closed_now)))
    });
    c.bench_function("twilio_validate", |b| {
        b.iter(|| twilio::validate(&token, URL, black_box(&params), Some(&signature)))
    });
    c.bench_function("hours_status_open", |b| {
        b.iter(|| hours::status(&hours_cfg, tz, black_box(open_now)))
    });
    c.bench_function("hours_status_closed", |b| {
        b.iter(|| hours::status(&hours_cfg, tz, black_box(closed_now)))
    });
    c.bench_function("twiml_stream", |b| {
        b.iter(|| {
            twiml::stream(
                "wss://eu-west.bridge.example.com/media",
                black_box(&[("handoff", handoff), ("caller", "+14155550100")]),
            )
        })
    });
}

criterion_group!(benches, voice_path);
criterion_main!(benches);
