//! ElevenLabs emulator over loopback, driven by a small in-test ConvAI client.
#[path = "common/agents.rs"]
mod agents;
#[path = "common/http.rs"]
mod http;

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use pulsara_core::agent;
use pulsara_emulators::elevenlabs::{spawn, ElevenLabsConfig, Running};
use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::synth::{self, Voice};
use pulsara_emulators::workspace::Workspace;
use pulsara_media::audio::{mulaw, Format};
use pulsara_media::convai::{
    self, AgentOverride, ClientMessage, ConfigOverride, InitiationClientData, ServerMessage,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "xi_test_key";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

const SCENARIO: &str = r#"
name = "test-booking"
restaurant = "testaurant"
[call]
from = "+1 (555) 000-1"
[agent]
ping_interval_ms = 150
[[agent.turns]]
user = "A table for two at eight please."
agent = "Done: {result}"
[[agent.turns.tool_calls]]
tool = "book_table"
params = { date = "2026-12-05", time = "20:00", party_size = 2, name = "Ana" }
expect_result_contains = ["20:00"]
[[agent.turns]]
user = "What are the specials?"
agent = "Tonight we have a smoked brisket with two sides, a pecan pie, burnt ends on Friday and lemonade made fresh every single morning."
[[agent.turns]]
user = "Just the brisket."
agent = "The brisket is twenty four dollars."
[caller]
[[caller.steps]]
after_agent_ms = 100
hangup = true
"#;

const OTHER: &str = r#"
name = "other"
restaurant = "testaurant"
[call]
from = "+15559999"
[agent.faults]
refuse_signed_url = 1
"#;

/// The emulator with the scripts `extra` besides [`SCENARIO`], and the agents of
/// "testaurant" (μ-law in, PCM 16 kHz out, `book_table`, every event the bridge consumes, the
/// first message overridable) and "droptown" (μ-law, `take_order`).
async fn start(extra: &[&str]) -> (Running, String, String) {
    let mut scenarios = vec![Scenario::from_toml(SCENARIO, "test").unwrap()];
    for e in extra {
        scenarios.push(Scenario::from_toml(e, "extra").unwrap());
    }
    let emu = spawn(ElevenLabsConfig::new(KEY, scenarios)).await.unwrap();
    let ws = emu.recorder.workspace();
    let test = create_agent(
        &ws,
        "testaurant",
        "pcm_16000",
        &["book_table"],
        agent::CLIENT_EVENTS,
        true,
    );
    let drop = create_agent(
        &ws,
        "droptown",
        "ulaw_8000",
        &["take_order"],
        agent::CLIENT_EVENTS,
        true,
    );
    (emu, test, drop)
}

/// An agent tagged `restaurant:<restaurant>`, hearing μ-law, speaking `output`, with built-in
/// `tools`, `events` (none: the server's default) and the first message overridable or not.
fn create_agent(
    ws: &Workspace,
    restaurant: &str,
    output: &str,
    tools: &[&str],
    events: &[&str],
    first_message_overridable: bool,
) -> String {
    let tool_ids: Vec<String> = tools
        .iter()
        .map(|t| {
            let config = agent::tool_config(t, &agents::builtin_spec(t));
            let r = ws.request(
                "POST",
                "/v1/convai/tools",
                &json!({ "tool_config": config }),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut conversation = json!({});
    if !events.is_empty() {
        conversation["client_events"] = json!(events);
    }
    let doc = json!({
        "name": restaurant,
        "tags": [agent::TAG, agent::restaurant_tag(restaurant)],
        "conversation_config": {
            "asr": {"user_input_audio_format": "ulaw_8000"},
            "tts": {"agent_output_audio_format": output},
            "conversation": conversation,
            "agent": {"first_message": "Scenario greeting", "prompt": {"prompt": "p", "tool_ids": tool_ids}},
        },
        "platform_settings": {"overrides": {"conversation_config_override": {
            "agent": {"first_message": first_message_overridable},
        }}},
    });
    let r = ws.request("POST", "/v1/convai/agents/create", &doc);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["agent_id"].as_str().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    ws: Ws,
    seen: Vec<ServerMessage<'static>>,
    pings_answered: u64,
}

impl Client {
    async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Client {
            ws,
            seen: Vec::new(),
            pings_answered: 0,
        }
    }

    async fn send(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Next non-ping message (pings are answered on the way).
    async fn next(&mut self) -> Option<ServerMessage<'static>> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("message within 10 s")?;
            let Ok(Message::Text(t)) = msg else {
                return None;
            };
            let m = convai::parse_server(t.as_str())
                .expect("server frames parse")
                .into_owned();
            if let ServerMessage::Ping { event_id, .. } = m {
                self.send(convai::pong_json(event_id)).await;
                self.pings_answered += 1;
                continue;
            }
            self.seen.push(m.clone());
            return Some(m);
        }
    }

    /// Collect messages until one matches; returns everything up to and including it.
    async fn until(&mut self, kind: &str) -> Vec<ServerMessage<'static>> {
        let mut got = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.kind() == kind;
            got.push(m);
            if done {
                return got;
            }
        }
        panic!("stream ended before {kind}; got {got:?}");
    }

    /// Send μ-law audio in 20 ms chunks.
    async fn send_ulaw(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(160) {
            self.send(convai::user_audio_chunk_json(&B64.encode(c)).unwrap())
                .await;
        }
    }
}

/// The text of an agent response or user transcript, which must carry an `event_id`.
fn text_of<'a>(m: &'a ServerMessage<'_>) -> &'a str {
    match m {
        ServerMessage::AgentResponse {
            text,
            event_id: Some(_),
        }
        | ServerMessage::UserTranscript {
            text,
            event_id: Some(_),
        } => text,
        other => panic!("not a text event with an event_id: {other:?}"),
    }
}

fn speech(text: &str) -> Vec<u8> {
    synth::synthesize(text, Voice::CALLER, 8000)
        .iter()
        .map(|&s| mulaw::encode(s))
        .collect()
}

fn silence(ms: usize) -> Vec<u8> {
    vec![mulaw::SILENCE; ms * 8]
}

fn audio_ms(msgs: &[ServerMessage<'_>], fmt: Format) -> u64 {
    msgs.iter()
        .filter_map(|m| {
            if let ServerMessage::Audio { audio_b64, .. } = m {
                Some(B64.decode(audio_b64.as_bytes()).unwrap().len())
            } else {
                None
            }
        })
        .map(|n| fmt.duration_ms(n))
        .sum()
}

#[tokio::test]
async fn signed_url_checks_the_api_key_and_the_agent() {
    let (emu, test, _) = start(&[OTHER]).await;
    let path = format!("/v1/convai/conversation/get-signed-url?agent_id={test}");
    let path = path.as_str();
    assert_eq!(
        http::request(emu.addr, "GET", path, &[], "").await.status,
        401
    );
    assert_eq!(
        http::request(emu.addr, "GET", path, &[("xi-api-key", "wrong")], "")
            .await
            .status,
        401
    );
    let unknown = http::request(
        emu.addr,
        "GET",
        "/v1/convai/conversation/get-signed-url?agent_id=nope",
        &[("xi-api-key", KEY)],
        "",
    )
    .await;
    assert_eq!(unknown.status, 404);
    // The OTHER script injects one refusal.
    assert_eq!(
        http::request(emu.addr, "GET", path, &[("xi-api-key", KEY)], "")
            .await
            .status,
        503
    );
    let ok = http::request(emu.addr, "GET", path, &[("xi-api-key", KEY)], "").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let url = ok.json()["signed_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "ws://{}/v1/convai/conversation?agent_id={test}&conversation_signature=",
            emu.addr
        )),
        "{url}"
    );
    let statuses: Vec<u16> = emu
        .recorder
        .signed_url_requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![401, 401, 404, 503, 200]);

    // A forged signature is refused at the upgrade; the real one and the public form work.
    let forged = url.replace("conversation_signature=sig", "conversation_signature=xxx");
    assert!(tokio_tungstenite::connect_async(forged.as_str())
        .await
        .is_err());
    let mut c = Client::connect(&url).await;
    c.send(
        ClientMessage::ConversationInitiationClientData(InitiationClientData::default()).to_json(),
    )
    .await;
    assert_eq!(
        c.next().await.unwrap().kind(),
        "conversation_initiation_metadata"
    );
    drop(c);
    let public = format!("ws://{}/v1/convai/conversation?agent_id={test}", emu.addr);
    let mut p = Client::connect(&public).await;
    p.send(
        ClientMessage::ConversationInitiationClientData(InitiationClientData::default()).to_json(),
    )
    .await;
    assert_eq!(
        p.next().await.unwrap().kind(),
        "conversation_initiation_metadata"
    );
    drop(p);
    let recs = emu.recorder.wait_ended(2, Duration::from_secs(5)).await;
    assert_eq!(recs.iter().filter(|r| r.via_signed_url).count(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn scripted_conversation_with_tool_call_pings_and_barge_in() {
    let (emu, test, _) = start(&[OTHER]).await;
    let url = format!("ws://{}/v1/convai/conversation?agent_id={test}", emu.addr);
    let mut c = Client::connect(&url).await;
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("caller_number".to_owned(), json!("+15550001"));
    vars.insert("restaurant_name".to_owned(), json!("Testaurant"));
    let init = InitiationClientData {
        conversation_config_override: Some(ConfigOverride {
            agent: Some(AgentOverride {
                first_message: Some("Hi from {{restaurant_name}}".into()),
                ..Default::default()
            }),
            tts: None,
        }),
        dynamic_variables: vars,
    };
    c.send(ClientMessage::ConversationInitiationClientData(init).to_json())
        .await;

    // Metadata with the agent's formats, then the (overridden, substituted) greeting with audio.
    let ServerMessage::ConversationInitiationMetadata(meta) = c.next().await.unwrap() else {
        panic!("metadata first")
    };
    assert_eq!(
        (
            meta.user_input_audio_format.as_str(),
            meta.agent_output_audio_format.as_str()
        ),
        ("ulaw_8000", "pcm_16000")
    );
    let ServerMessage::AgentResponse {
        text,
        event_id: Some(_),
    } = c.next().await.unwrap()
    else {
        panic!("greeting with its event_id")
    };
    assert_eq!(text, "Hi from Testaurant");
    let first_audio = c.next().await.unwrap();
    let ServerMessage::Audio { audio_b64, .. } = &first_audio else {
        panic!("audio after greeting")
    };
    let pcm =
        pulsara_media::audio::pcm::bytes_to_samples(&B64.decode(audio_b64.as_bytes()).unwrap());
    let rms = (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 1000.0, "greeting audio is real sound, rms {rms}");
    let greeting_ms = synth::duration_ms("Hi from Testaurant");

    // Let the greeting "play" (the emulator's clock is the user audio), then speak.
    let mut sent = silence(greeting_ms as usize + 300);
    sent.extend(speech("A table for two at eight please."));
    sent.extend(silence(700));
    c.send_ulaw(&sent).await;
    let msgs = c.until("client_tool_call").await;
    assert!(
        msgs.iter().any(
            |m| matches!(m, ServerMessage::UserTranscript { text, event_id: Some(_) }
            if text == "A table for two at eight please.")
        ),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|m| m.kind() == "interruption"),
        "no barge-in expected: {msgs:?}"
    );
    let ServerMessage::ClientToolCall(call) = msgs.last().unwrap().clone() else {
        unreachable!()
    };
    assert_eq!(call.tool_name, "book_table");
    assert_eq!(call.parameters["party_size"], 2);
    c.send(
        ClientMessage::ClientToolResult {
            tool_call_id: call.tool_call_id.clone(),
            result: "Booked at 20:00".into(),
            is_error: false,
        }
        .to_json(),
    )
    .await;
    let msgs = c.until("agent_response").await;
    assert_eq!(text_of(msgs.last().unwrap()), "Done: Booked at 20:00");

    // A wrong pong is recorded as such.
    c.send(convai::pong_json(99_999)).await;

    // Wait out the reply, ask the next question, and barge in right after its audio starts.
    let reply_ms = synth::duration_ms("Done: Booked at 20:00");
    let mut sent2 = silence(reply_ms as usize + 300);
    sent2.extend(speech("What are the specials?"));
    sent2.extend(silence(700));
    c.send_ulaw(&sent2).await;
    let msgs = c.until("agent_response").await;
    let long = text_of(msgs.last().unwrap()).to_owned();
    assert!(long.starts_with("Tonight we have"));
    // 1.5 s into the long answer the caller speaks.
    let mut barge = silence(1500);
    barge.extend(speech("Just the brisket."));
    barge.extend(silence(700));
    c.send_ulaw(&barge).await;
    let msgs = c.until("user_transcript").await;
    let interruption = msgs
        .iter()
        .position(|m| m.kind() == "interruption")
        .expect("interruption sent");
    let ServerMessage::AgentResponseCorrection {
        original,
        corrected,
        event_id: Some(_),
    } = &msgs[interruption + 1]
    else {
        panic!("correction follows interruption: {msgs:?}")
    };
    assert_eq!(original, &long);
    assert!(
        !corrected.is_empty()
            && corrected.len() < long.len() / 2
            && long.starts_with(corrected.as_str()),
        "{corrected}"
    );
    assert_eq!(text_of(msgs.last().unwrap()), "Just the brisket.");
    let msgs = c.until("agent_response").await;
    assert_eq!(
        text_of(msgs.last().unwrap()),
        "The brisket is twenty four dollars."
    );
    let tail = c.until("audio").await;
    assert!(audio_ms(&tail, Format::Pcm(16000)) > 0);
    // Keep reading (answering pings as they come) for a moment so some pongs are counted, then
    // hang up. Reading continuously, not sleeping, keeps every pong prompt on a loaded machine.
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(_)) = tokio::time::timeout_at(until, c.next()).await {}
    c.ws.close(None).await.unwrap();

    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    let r = &recs[0];
    assert_eq!(
        r.scenario.as_deref(),
        Some("test-booking"),
        "picked by caller_number"
    );
    assert_eq!(r.ended.as_deref(), Some("client closed"));
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(r.tool_results.len(), 1);
    assert_eq!(r.tool_results[0].result, "Booked at 20:00");
    assert_eq!(r.interruptions.len(), 1);
    assert_eq!(r.turns_completed, 3);
    assert_eq!(r.user_transcripts.len(), 3);
    assert_eq!(r.pongs_wrong, vec![99_999]);
    assert!(
        r.pongs_ok >= 1 && r.pongs_ok <= r.pings_sent,
        "{} of {}",
        r.pongs_ok,
        r.pings_sent
    );
    // The raw user audio is kept byte for byte.
    let all: Vec<u8> = [sent, sent2, barge].concat();
    assert_eq!(r.user_audio, all);
    assert_eq!(r.user_audio_bytes as usize, all.len());
    assert_eq!(r.dynamic_variables["restaurant_name"], "Testaurant");
    // Also exposed over HTTP.
    let listed = http::request(emu.addr, "GET", "/emulator/conversations", &[], "").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.json()[0]["conversation_id"],
        r.conversation_id.as_str()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn tool_expectations_and_drop_fault() {
    let dropping = r#"
name = "drop"
restaurant = "droptown"
[call]
from = "+15557777"
[agent]
ping_interval_ms = 0
[[agent.turns]]
user = "Order please."
agent = "One moment."
[[agent.turns.tool_calls]]
tool = "take_order"
params = { items = [{ name = "Brisket", quantity = 1, modifiers = [] }], fulfillment = "pickup", pickup_time = "18:00", customer_name = "Lee" }
expect_result_contains = ["Brisket"]
expect_error = false
[agent.faults]
drop_after_turn = 1
drop_delay_ms = 50
refuse_signed_url_after_drop = 2
"#;
    let (emu, _, drop_agent) = start(&[dropping]).await;
    let url = format!(
        "ws://{}/v1/convai/conversation?agent_id={drop_agent}",
        emu.addr
    );
    let mut c = Client::connect(&url).await;
    c.send(
        ClientMessage::ConversationInitiationClientData(InitiationClientData::default()).to_json(),
    )
    .await;
    c.until("audio").await;
    let mut sent = silence(3000);
    sent.extend(speech("Order please."));
    sent.extend(silence(700));
    c.send_ulaw(&sent).await;
    let msgs = c.until("client_tool_call").await;
    let ServerMessage::ClientToolCall(call) = msgs.last().unwrap().clone() else {
        unreachable!()
    };
    c.send(
        ClientMessage::ClientToolResult {
            tool_call_id: "wrong-id".into(),
            result: "x".into(),
            is_error: false,
        }
        .to_json(),
    )
    .await;
    c.send(
        ClientMessage::ClientToolResult {
            tool_call_id: call.tool_call_id,
            result: "Sorry, sold out".into(),
            is_error: true,
        }
        .to_json(),
    )
    .await;
    c.until("agent_response").await;
    // The socket then drops without a close frame.
    let mut saw_close_frame = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .expect("drop within 5 s")
        {
            Some(Ok(Message::Close(_))) => saw_close_frame = true,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    assert!(!saw_close_frame, "a drop must not send a close frame");
    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    let r = &recs[0];
    assert!(r.dropped_by_fault);
    assert_eq!(r.failures.len(), 3, "{:?}", r.failures); // unknown id, missing "Brisket", is_error
                                                         // Reconnects are refused after the drop.
    let path = format!("/v1/convai/conversation/get-signed-url?agent_id={drop_agent}");
    let path = path.as_str();
    assert_eq!(
        http::request(emu.addr, "GET", path, &[("xi-api-key", KEY)], "")
            .await
            .status,
        503
    );
    assert_eq!(
        http::request(emu.addr, "GET", path, &[("xi-api-key", KEY)], "")
            .await
            .status,
        503
    );
    assert_eq!(
        http::request(emu.addr, "GET", path, &[("xi-api-key", KEY)], "")
            .await
            .status,
        200
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn unanswered_pings_are_recorded_as_missing() {
    let (emu, test, _) = start(&[]).await;
    let url = format!("ws://{}/v1/convai/conversation?agent_id={test}", emu.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::Text(
        ClientMessage::ConversationInitiationClientData(InitiationClientData::default())
            .to_json()
            .into(),
    ))
    .await
    .unwrap();
    // Read (and ignore) everything for 1.6 s: pings go unanswered.
    let mut pings = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1600);
    while let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Ok(ServerMessage::Ping { event_id, .. }) = convai::parse_server(t.as_str()) {
            pings.push(event_id);
        }
    }
    ws.close(None).await.unwrap();
    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    let r = &recs[0];
    assert!(pings.len() >= 5, "{pings:?}");
    assert_eq!(r.pings_sent as usize, pings.len());
    assert_eq!(r.pongs_ok, 0);
    // Those older than a second at the end are missing; the latest ones are not held against us.
    assert!(
        !r.pongs_missing.is_empty() && r.pongs_missing.len() < pings.len(),
        "{:?} of {pings:?}",
        r.pongs_missing
    );
    assert!(r.pongs_missing.iter().all(|id| pings.contains(id)));
    emu.shutdown().await;
}

#[tokio::test]
async fn an_override_the_agent_does_not_allow_refuses_the_conversation() {
    let (emu, _, _) = start(&[]).await;
    let locked = create_agent(
        &emu.recorder.workspace(),
        "lockedtown",
        "ulaw_8000",
        &[],
        agent::CLIENT_EVENTS,
        false,
    );
    let url = format!("ws://{}/v1/convai/conversation?agent_id={locked}", emu.addr);
    let mut c = Client::connect(&url).await;
    let init = InitiationClientData {
        conversation_config_override: Some(ConfigOverride {
            agent: Some(AgentOverride {
                first_message: Some("Hi".into()),
                ..Default::default()
            }),
            tts: None,
        }),
        dynamic_variables: Default::default(),
    };
    c.send(ClientMessage::ConversationInitiationClientData(init).to_json())
        .await;
    // An error event, then close 1008, and nothing else.
    let ServerMessage::Error(e) = c.next().await.unwrap() else {
        panic!("error event first: {:?}", c.seen)
    };
    assert_eq!(
        (e.error_type.as_deref(), e.code),
        (Some("override_error"), Some(1008))
    );
    assert!(e.message.unwrap().contains("'first_message'"));
    let close = tokio::time::timeout(Duration::from_secs(5), c.ws.next())
        .await
        .unwrap();
    let Some(Ok(Message::Close(Some(frame)))) = close else {
        panic!("close frame: {close:?}")
    };
    assert_eq!(u16::from(frame.code), 1008);
    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    assert_eq!(recs[0].ended.as_deref(), Some("override_error"));
    assert_eq!(
        recs[0].refused_override.as_deref(),
        Some("agent.first_message")
    );
    // Without the override the same agent talks.
    let mut c = Client::connect(&url).await;
    c.send(
        ClientMessage::ConversationInitiationClientData(InitiationClientData::default()).to_json(),
    )
    .await;
    assert_eq!(
        c.next().await.unwrap().kind(),
        "conversation_initiation_metadata"
    );
    assert_eq!(text_of(&c.next().await.unwrap()), "Scenario greeting");
    emu.shutdown().await;
}

#[tokio::test]
async fn an_agent_with_the_default_client_events_never_sends_tool_calls() {
    // The server's default events lack client_tool_call: the booking turn's call never reaches
    // the client, which hears only the transcript, then the apology after the tool's timeout.
    let (emu, _, _) = start(&[]).await;
    let ws = emu.recorder.workspace();
    let plain = create_agent(&ws, "testaurant", "pcm_16000", &["book_table"], &[], true);
    let stored = ws.agent(&plain).unwrap();
    assert_eq!(
        stored["conversation_config"]["conversation"]["client_events"],
        json!(pulsara_emulators::workspace::DEFAULT_CLIENT_EVENTS)
    );
    let url = format!("ws://{}/v1/convai/conversation?agent_id={plain}", emu.addr);
    let mut c = Client::connect(&url).await;
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("caller_number".to_owned(), json!("+15550001"));
    c.send(
        ClientMessage::ConversationInitiationClientData(InitiationClientData {
            conversation_config_override: None,
            dynamic_variables: vars,
        })
        .to_json(),
    )
    .await;
    c.until("audio").await;
    let mut sent = silence(synth::duration_ms("Scenario greeting") as usize + 300);
    sent.extend(speech("A table for two at eight please."));
    sent.extend(silence(700));
    c.send_ulaw(&sent).await;
    let msgs = c.until("user_transcript").await;
    assert!(
        !msgs.iter().any(|m| m.kind() == "client_tool_call"),
        "{msgs:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, c.next()).await {
        assert_ne!(m.kind(), "client_tool_call");
    }
    drop(c);
    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    assert!(recs[0].tool_results.is_empty());
    emu.shutdown().await;
}
