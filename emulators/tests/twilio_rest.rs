//! Twilio REST emulator: auth, validation, recording and the call-update signal.
#[path = "common/http.rs"]
mod http;

use std::time::Duration;

use http::{basic, request};
use pulsara_emulators::twilio_rest::{spawn, RestConfig, RestRequest};

const SID: &str = "AC11111111111111111111111111111111";
const TOKEN: &str = "tok_secret_value";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn call_update_requires_basic_auth_and_is_recorded() {
    let rest = spawn(RestConfig {
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
    })
    .await
    .unwrap();
    let path = format!("/2010-04-01/Accounts/{SID}/Calls/CA42.json");
    let body = "Twiml=%3CResponse%3E%3CDial%3E%2B390612345600%3C%2FDial%3E%3C%2FResponse%3E";

    let waiter = tokio::spawn(rest.recorder.wait_call_update("CA42"));

    let none = request(rest.addr, "POST", &path, &[FORM], body).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["code"], 20003);
    let wrong = basic(SID, "nope");
    let bad = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &wrong)],
        body,
    )
    .await;
    assert_eq!(bad.status, 401);
    let other_acct = basic("AC999", TOKEN);
    assert_eq!(
        request(
            rest.addr,
            "POST",
            &path,
            &[FORM, ("Authorization", &other_acct)],
            body
        )
        .await
        .status,
        401
    );
    assert!(rest.recorder.requests().is_empty());
    assert!(!waiter.is_finished());

    let auth = basic(SID, TOKEN);
    let ok = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &auth)],
        body,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["sid"], "CA42");
    assert_eq!(ok.json()["account_sid"], SID);
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("update signalled")
        .unwrap();
    assert_eq!(
        rest.recorder.call_updates("CA42"),
        vec![RestRequest::CallUpdate {
            call_sid: "CA42".into(),
            twiml: Some("<Response><Dial>+390612345600</Dial></Response>".into()),
            url: None,
            status: None
        }]
    );
    // Already updated: resolves immediately.
    tokio::time::timeout(
        Duration::from_millis(200),
        rest.recorder.wait_call_update("CA42"),
    )
    .await
    .unwrap();

    // Path account must be the authenticated one; neither Twiml nor Url → 400.
    let foreign = request(
        rest.addr,
        "POST",
        "/2010-04-01/Accounts/AC999/Calls/CA42.json",
        &[FORM, ("Authorization", &auth)],
        body,
    )
    .await;
    assert_eq!(foreign.status, 404);
    let empty = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &auth)],
        "Foo=bar",
    )
    .await;
    assert_eq!(empty.status, 400);
    assert_eq!(rest.recorder.rejected().len(), 5);

    // Ending a call: only completed/canceled; once ended, the call is gone (404).
    let bogus = request(rest.addr, "POST", &path, &[FORM, ("Authorization", &auth)], "Status=ringing").await;
    assert_eq!(bogus.status, 400);
    let end = request(rest.addr, "POST", &path, &[FORM, ("Authorization", &auth)], "Status=completed").await;
    assert_eq!(end.status, 200, "{}", end.body);
    assert_eq!(end.json()["status"], "completed");
    for again in ["Status=completed", body] {
        let gone = request(rest.addr, "POST", &path, &[FORM, ("Authorization", &auth)], again).await;
        assert_eq!(gone.status, 404, "{again}");
        assert_eq!(gone.json()["code"], 20404);
    }
    rest.shutdown().await;
}

#[tokio::test]
async fn messages_are_validated_and_recorded() {
    let rest = spawn(RestConfig {
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
    })
    .await
    .unwrap();
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let auth = basic(SID, TOKEN);
    let ok = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &auth)],
        "To=%2B17185550142&From=%2B17185550100&Body=Table+for+4+at+20%3A00",
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let sid = ok.json()["sid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(ok.json()["status"], "queued");
    let no_body = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &auth)],
        "To=%2B1&From=%2B2",
    )
    .await;
    assert_eq!(no_body.status, 400);
    let no_from = request(
        rest.addr,
        "POST",
        &path,
        &[FORM, ("Authorization", &auth)],
        "To=%2B1&Body=x",
    )
    .await;
    assert_eq!(no_from.status, 400);
    let unauth = request(
        rest.addr,
        "POST",
        &path,
        &[FORM],
        "To=%2B1&From=%2B2&Body=x",
    )
    .await;
    assert_eq!(unauth.status, 401);
    assert_eq!(
        rest.recorder.messages(),
        vec![RestRequest::Message {
            sid,
            to: "+17185550142".into(),
            from: Some("+17185550100".into()),
            messaging_service_sid: None,
            body: "Table for 4 at 20:00".into()
        }]
    );
    rest.shutdown().await;
}
