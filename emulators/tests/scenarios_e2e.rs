//! The shipped μ-law scenario files, end to end on loopback: caller simulator ⇄ a minimal
//! pass-through relay written here (standing in for the bridge) ⇄ the ElevenLabs emulator.
//! This checks that the scenarios' timings and triggers work together (greeting, turns, tool
//! calls, barge-in with clear and marks), independent of the real bridge.
#[path = "common/agents.rs"]
mod agents;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use pulsara_emulators::caller::{run_call, CallEnd, CallParams, CallerOptions};
use pulsara_emulators::elevenlabs::{spawn, ElevenLabsConfig};
use pulsara_emulators::scenario::Scenario;
use pulsara_media::audio::{Converter, Format};
use pulsara_media::convai::{self, ClientMessage, InitiationClientData, ServerMessage};
use pulsara_media::twilio::{self, Inbound};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn tool_result(tool: &str, params: &serde_json::Value) -> String {
    match tool {
        "answer_question" => "Specials tonight: saltimbocca alla romana; carciofi alla giudia. Children aged ten and over sit at the counter.".to_owned(),
        "book_table" if params["time"] == "19:30" => "19:30 is full. Nearest free slots: 18:30, 20:00.".to_owned(),
        _ => format!("{tool} ok: {params}"),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Accept one Twilio stream and relay it to the emulator: μ-law pass-through when the agent
/// speaks μ-law, otherwise transcoding with [`Converter`] both ways.
async fn relay(listener: TcpListener, el_base: String, agent_id: String) {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut tw = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let mut stream_sid = String::new();
    let mut caller = String::new();
    while let Some(Ok(Message::Text(t))) = tw.next().await {
        if let Ok(Inbound::Start(s)) = twilio::parse_inbound(t.as_str()) {
            stream_sid = s.stream_sid;
            caller = s
                .custom_parameters
                .get("caller")
                .cloned()
                .unwrap_or_default();
            break;
        }
    }
    let (mut el, _) = tokio_tungstenite::connect_async(format!(
        "{el_base}/v1/convai/conversation?agent_id={agent_id}"
    ))
    .await
    .unwrap();
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("caller_number".to_owned(), json!(caller));
    let init = ClientMessage::ConversationInitiationClientData(InitiationClientData {
        conversation_config_override: None,
        dynamic_variables: vars,
    });
    el.send(Message::Text(init.to_json().into())).await.unwrap();
    let mut mark_n = 0u32;
    // The metadata comes first and tells the formats.
    let meta = loop {
        let Some(Ok(Message::Text(t))) = el.next().await else {
            return;
        };
        if let Ok(ServerMessage::ConversationInitiationMetadata(m)) =
            convai::parse_server(t.as_str())
        {
            break m;
        }
    };
    let input: Format = meta.user_input_audio_format.parse().unwrap();
    let output: Format = meta.agent_output_audio_format.parse().unwrap();
    let mut up = Converter::new(Format::Ulaw8000, input);
    let mut down = Converter::new(output, Format::Ulaw8000);
    loop {
        tokio::select! {
            m = tw.next() => {
                let Some(Ok(Message::Text(t))) = m else { break };
                match twilio::parse_inbound(t.as_str()) {
                    Ok(Inbound::Media(media)) => {
                        let frame = if up.is_identity() {
                            convai::user_audio_chunk_json(&media.payload).unwrap()
                        } else {
                            let pcm = up.convert(&B64.decode(media.payload.as_bytes()).unwrap());
                            convai::user_audio_chunk_json(&B64.encode(pcm)).unwrap()
                        };
                        if el.send(Message::Text(frame.into())).await.is_err() { break; }
                    }
                    Ok(Inbound::Stop(_)) => break,
                    _ => {}
                }
            }
            m = el.next() => {
                let Some(Ok(Message::Text(t))) = m else { break };
                let mut out_tw = Vec::new();
                let mut out_el = Vec::new();
                match convai::parse_server(t.as_str()).unwrap() {
                    ServerMessage::Audio { audio_b64, .. } => {
                        if down.is_identity() {
                            out_tw.push(twilio::media_json(&stream_sid, &audio_b64).unwrap());
                        } else {
                            let ulaw = down.convert(&B64.decode(audio_b64.as_bytes()).unwrap());
                            out_tw.push(twilio::media_json(&stream_sid, &B64.encode(ulaw)).unwrap());
                        }
                        mark_n += 1;
                        out_tw.push(twilio::mark_json(&stream_sid, &format!("a{mark_n}")));
                    }
                    ServerMessage::Interruption { .. } => out_tw.push(twilio::clear_json(&stream_sid)),
                    ServerMessage::Ping { event_id, .. } => out_el.push(convai::pong_json(event_id)),
                    ServerMessage::ClientToolCall(c) => out_el.push(
                        ClientMessage::ClientToolResult { result: tool_result(&c.tool_name, &c.parameters), tool_call_id: c.tool_call_id, is_error: false }.to_json(),
                    ),
                    _ => {}
                }
                for o in out_tw { let _ = tw.send(Message::Text(o.into())).await; }
                for o in out_el { let _ = el.send(Message::Text(o.into())).await; }
            }
        }
    }
    let _ = el.close(None).await;
}

async fn play(
    name: &str,
    speed: f64,
) -> (
    Scenario,
    pulsara_emulators::caller::CallResult,
    pulsara_emulators::elevenlabs::ConversationRecord,
) {
    let all =
        Scenario::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")).unwrap();
    let sc = all.iter().find(|s| s.name == name).unwrap().clone();
    let emu = spawn(ElevenLabsConfig::new("k", all.clone()))
        .await
        .unwrap();
    let agent_ids = agents::provision(&emu.recorder.workspace());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay_task = tokio::spawn(relay(
        listener,
        format!("ws://{}", emu.addr),
        agent_ids[&sc.restaurant].clone(),
    ));
    let mut params = CallParams::numbered(42, &sc.call.from, &sc.call.to);
    params
        .custom_parameters
        .insert("caller".into(), sc.call.from.clone());
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        run_call(
            &format!("ws://{addr}/media"),
            params,
            &sc.caller,
            CallerOptions {
                speed,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), relay_task).await;
    let recs = emu.recorder.wait_ended(1, Duration::from_secs(5)).await;
    let rec = recs.into_iter().next().unwrap();
    emu.shutdown().await;
    (sc, res, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trattoria_order_scenario_runs_end_to_end() {
    let (sc, res, rec) = play("trattoria-order", 8.0).await;
    assert_eq!(rec.scenario.as_deref(), Some("trattoria-order"));
    assert_eq!(res.end, CallEnd::Hangup, "{:?}", res.steps);
    assert!(res.steps.iter().all(|s| !s.timed_out), "{:?}", res.steps);
    assert!(rec.failures.is_empty(), "{:?}", rec.failures);
    assert_eq!(rec.turns_completed, sc.agent.turns.len());
    let tools: Vec<_> = rec
        .tool_results
        .iter()
        .map(|t| t.tool_name.as_str())
        .collect();
    assert_eq!(tools, sc.expect.tools);
    assert!(rec.interruptions.is_empty());
    // Pass-through: the emulator received exactly the μ-law bytes the caller sent.
    assert_eq!(rec.user_audio, res.caller_ulaw[..rec.user_audio.len()]);
    assert!(rec.user_audio.len() + 160 * 4 >= res.caller_ulaw.len());
    // Every mark came back after its audio played, none cleared.
    assert!(!res.marks.is_empty() && res.marks.iter().all(|m| !m.cleared));
    // The caller heard the greeting quickly and the whole exchange.
    // (Virtual ms at 8× speed: generous for a loaded machine.)
    assert!(res.first_agent_audio_ms.unwrap() < 2000);
    assert!(res.agent_audible_ms_between(0, res.duration_ms) > 8000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_scenario_clears_and_no_stale_audio_follows() {
    let (_sc, res, rec) = play("trattoria-barge-in", 2.0).await;
    assert_eq!(res.end, CallEnd::Hangup, "{:?}", res.steps);
    assert!(rec.failures.is_empty(), "{:?}", rec.failures);
    assert_eq!(rec.interruptions.len(), 1);
    assert_eq!(res.clears_ms.len(), 1);
    let clear_at = res.clears_ms[0];
    // The barge-in utterance is step 1; it started 2.5 s into the answer.
    let barge = &res.steps[1];
    eprintln!(
        "barge-in at {} ms, clear received at {clear_at} ms",
        barge.fired_ms
    );
    // VAD needs ~40-60 ms of speech; the rest is loop latency (scaled by the speed-up, and by
    // machine load). It must arrive while the caller is still talking.
    assert!(
        clear_at >= barge.fired_ms && clear_at < barge.done_ms.unwrap(),
        "clear {clear_at} vs barge {:?}",
        barge
    );
    // Pending marks came back at the clear, flagged; audio was discarded.
    assert!(res
        .marks
        .iter()
        .any(|m| m.cleared && m.echoed_ms == clear_at));
    assert!(res.cleared_samples > 8000);
    // No agent audio between the clear and the end of the caller's utterance (+ VAD's 400 ms).
    let utterance_end = barge.done_ms.unwrap();
    assert_eq!(
        res.media_bytes_between(clear_at + 20, utterance_end + 300),
        0
    );
    assert_eq!(
        res.agent_audible_ms_between(clear_at + 20, utterance_end + 300),
        0
    );
    // The corrected line is a prefix of what was said.
    let i = &rec.interruptions[0];
    assert!(i.original.starts_with(&i.corrected) && i.corrected.len() < i.original.len());
    // The answer to the barge-in was played afterwards.
    assert!(res.agent_audible_ms_between(utterance_end, res.duration_ms) > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_scenarios_run_end_to_end() {
    for (name, rate) in [("brooklyn-booking", 16000u32), ("sakura-question", 24000)] {
        let (sc, res, rec) = play(name, 8.0).await;
        // The agent a sync makes from the restaurant speaks its `audio_format`.
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                agents::root().join(format!("restaurants/{}/restaurant.json", sc.restaurant)),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            cfg["agent"]["audio_format"],
            format!("pcm_{rate}"),
            "{name}"
        );
        assert_eq!(res.end, CallEnd::Hangup, "{name}: {:?}", res.steps);
        assert!(
            res.steps.iter().all(|s| !s.timed_out),
            "{name}: {:?}",
            res.steps
        );
        assert!(rec.failures.is_empty(), "{name}: {:?}", rec.failures);
        assert_eq!(rec.turns_completed, sc.agent.turns.len(), "{name}");
        let tools: Vec<_> = rec
            .tool_results
            .iter()
            .map(|t| t.tool_name.as_str())
            .collect();
        assert_eq!(tools, sc.expect.tools, "{name}");
        // The emulator got PCM at the agent's rate: twice/three times the μ-law byte count × 2.
        let expect = res.frames_sent as f64 * 160.0 * (rate as f64 / 8000.0) * 2.0;
        let got = rec.user_audio_bytes as f64;
        assert!(
            (got / expect - 1.0).abs() < 0.05,
            "{name}: {got} vs {expect}"
        );
        assert!(
            res.agent_audible_ms_between(0, res.duration_ms) > 5000,
            "{name}"
        );
    }
}
