//! The shipped scenarios through the real bridge, with the faithful emulators from
//! `pulsara-emulators`: the Twilio caller simulator (VAD-driven steps, playback with marks and
//! `clear`) → `/media` → bridge → the ElevenLabs ConvAI emulator (scripted turns, pings, tool
//! calls, interruptions, faults). Twilio REST is recorded by the bridge's test kit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pulsara_bridge::config::BridgeConfig;
use pulsara_bridge::ports::{
    CallSink, FileConfigSource, MemoryConfigSource, MemorySink, ToolContext, ToolError,
    ToolOutcome, ToolRunner,
};
use pulsara_bridge::App;
use pulsara_core::agent::ToolSpec;
use pulsara_core::call_record::{CallRecord, EndReason, Role};
use pulsara_core::handoff::{HandoffClaims, HandoffKeys};
use pulsara_core::secret::Secret;
use pulsara_dashboard::agents::{sync, tool_specs, AgentsApi, AgentsApiConfig};
use pulsara_emulators::caller::{run_call, CallEnd, CallParams, CallResult, CallerOptions};
use pulsara_emulators::elevenlabs::{spawn, ConversationRecord, ElevenLabsConfig};
use pulsara_emulators::scenario::Scenario;
use pulsara_emulators::twilio_rest::{self, RestRecorder};

const KEYS: &str = "k1:handoff-test-key-0123456789";

/// Answers the scenarios' tools with text their expectations look for.
struct ScenarioTools;

#[async_trait]
impl ToolRunner for ScenarioTools {
    async fn run(
        &self,
        _ctx: &ToolContext,
        tool: &str,
        params: serde_json::Value,
    ) -> Result<ToolOutcome, ToolError> {
        let result = match tool {
            "answer_question" => {
                "Specials tonight: saltimbocca alla romana; carciofi alla giudia.".to_owned()
            }
            _ => format!("{tool} ok: {params}"),
        };
        Ok(ToolOutcome {
            result,
            ..Default::default()
        })
    }
}

/// The shipped restaurants after a sync against the emulator, as in production: each agent
/// created from the restaurant and its tools' `tool.json`, its id and synced state written back.
async fn synced_restaurants(
    root: &Path,
    emu: &pulsara_emulators::elevenlabs::Running,
    synced: bool,
) -> Arc<MemoryConfigSource> {
    let el_base = emu.base_url();
    let api = AgentsApi::new(AgentsApiConfig::new(el_base, Secret::new("xi-emulated"))).unwrap();
    let files = FileConfigSource::load(root.join("restaurants")).unwrap();
    let out = Arc::new(MemoryConfigSource::new());
    for (cfg, kb) in files.all() {
        let tools = tool_specs(&cfg, |module| {
            let name = module.strip_prefix("builtin:")?;
            let text = std::fs::read_to_string(
                root.join(format!("policies/guests/builtins/{name}/tool.json")),
            )
            .ok()?;
            ToolSpec::from_json(&text).ok()
        })
        .unwrap();
        if !synced {
            // Clicked together by hand: the platform's defaults (no override allowed), tagged so
            // the emulator plays the restaurant's scripts, and no synced state.
            let r = emu.recorder.workspace().request(
                "POST",
                "/v1/convai/agents/create",
                &serde_json::json!({"name": cfg.name, "conversation_config": {}, "tags": [format!("restaurant:{}", cfg.id)]}),
            );
            let mut cfg = (*cfg).clone();
            assert_eq!(r.status, 200, "{}", r.body);
            cfg.agent.elevenlabs_agent_id = r.body["agent_id"].as_str().unwrap().to_owned();
            out.insert(cfg, (*kb).clone());
            continue;
        }
        let report = sync(&api, &cfg, &tools, false).await.unwrap();
        assert!(report.created_agent, "{}", cfg.id);
        out.insert(report.apply(&cfg), (*kb).clone());
    }
    out
}

struct Run {
    res: CallResult,
    conv: ConversationRecord,
    rec: CallRecord,
    rest: Arc<RestRecorder>,
}

async fn play(name: &str, speed: f64) -> Run {
    play_with(name, speed, true).await
}

/// `name` through the bridge, its restaurants' agents synced or (`synced` false) made by hand.
async fn play_with(name: &str, speed: f64, synced: bool) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let all = Scenario::load_dir(&root.join("scenarios")).unwrap();
    let sc = all.iter().find(|s| s.name == name).unwrap().clone();
    let emu = spawn(ElevenLabsConfig::new("xi-emulated", all.clone()))
        .await
        .unwrap();
    let (rest, rest_base) = twilio_rest::spawn_detached("AC0123", "tok").await.unwrap();
    let cfg = BridgeConfig {
        handoff_keys: Some(Secret::new(KEYS)),
        elevenlabs_api_key: Some(Secret::new("xi-emulated")),
        elevenlabs_base_url: emu.base_url(),
        twilio_account_sid: "AC0123".into(),
        twilio_auth_token: Some(Secret::new("tok")),
        twilio_api_base: rest_base,
        ..Default::default()
    };
    // The scenarios play `speed` times faster than real time, which the bridge's caller-audio
    // policing would cut: let a whole scenario through (the policing has its own tests).
    let mut cfg = cfg;
    cfg.limits.caller_audio_burst_ms = 3_600_000;
    let sink = Arc::new(MemorySink::new(100));
    let configs = synced_restaurants(&root, &emu, synced).await;
    let app = App::new(
        cfg,
        configs,
        Arc::new(ScenarioTools),
        sink.clone() as Arc<dyn CallSink>,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pulsara_bridge::run(listener, app, async move {
        let _ = stop_rx.await;
    }));

    let mut params = CallParams::numbered(7, &sc.call.from, &sc.call.to);
    let now = chrono::Utc::now().timestamp();
    let token = HandoffKeys::parse(&Secret::new(KEYS))
        .unwrap()
        .issue(&HandoffClaims {
            call_sid: params.call_sid.clone(),
            restaurant_id: sc.restaurant.clone(),
            config_version: 1,
            region: "eu-west".into(),
            iat: now,
            exp: now + 60,
        })
        .unwrap();
    params.custom_parameters.insert("handoff".into(), token);
    params
        .custom_parameters
        .insert("restaurant_id".into(), sc.restaurant.clone());
    params
        .custom_parameters
        .insert("caller".into(), sc.call.from.clone());
    params
        .custom_parameters
        .insert("called".into(), sc.call.to.clone());
    // Twilio ends the stream once the call's TwiML is replaced: wire the REST recorder to it.
    let (rest2, sid) = (rest.clone(), params.call_sid.clone());
    let ended_by_update: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(async move {
            rest2.wait_for(&sid, Duration::from_secs(120)).await;
        });
    let call_sid = params.call_sid.clone();
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        run_call(
            &format!("ws://{addr}/media"),
            params,
            &sc.caller,
            CallerOptions {
                speed,
                stop: Some(ended_by_update),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("call finished in time")
    .expect("call ran");
    let rec = sink
        .wait_for(&call_sid, Duration::from_secs(10))
        .await
        .expect("record");
    let conv = emu
        .recorder
        .wait_ended(1, Duration::from_secs(5))
        .await
        .into_iter()
        .next()
        .expect("conversation");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    emu.shutdown().await;
    Run {
        res,
        conv,
        rec,
        rest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_scenario_through_the_bridge() {
    let Run { res, conv, rec, .. } = play("trattoria-order", 8.0).await;
    assert_eq!(res.end, CallEnd::Hangup, "{:?}", res.steps);
    assert!(conv.failures.is_empty(), "{:?}", conv.failures);
    assert_eq!(
        conv.pongs_wrong.len() + conv.pongs_missing.len(),
        0,
        "pings answered with their ids"
    );
    assert!(
        conv.malformed.is_empty() && conv.unknown_types.is_empty(),
        "{:?} {:?}",
        conv.malformed,
        conv.unknown_types
    );
    // Pass-through: the emulator got exactly the caller's μ-law bytes (minus frames sent before
    // the agent was ready, which are buffered and flushed in order).
    assert!(!conv.user_audio.is_empty());
    let n = conv.user_audio.len();
    assert_eq!(conv.user_audio[..], res.caller_ulaw[..n]);
    assert!(conv.dynamic_variables["restaurant_name"] == "Trattoria Roma");
    let tools: Vec<&str> = rec.tool_runs.iter().map(|t| t.tool.as_str()).collect();
    assert!(
        !tools.is_empty()
            && tools
                .iter()
                .all(|t| *t == "take_order" || *t == "answer_question" || !t.is_empty())
    );
    assert_eq!(conv.tool_results.len(), rec.tool_runs.len());
    // The record's transcript follows the conversation.
    let agent_lines: Vec<&str> = rec
        .transcript
        .iter()
        .filter(|l| l.role == Role::Agent)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(
        agent_lines.len(),
        conv.agent_responses.len(),
        "{agent_lines:?} vs {:?}",
        conv.agent_responses
    );
    let caller_lines: Vec<String> = rec
        .transcript
        .iter()
        .filter(|l| l.role == Role::Caller)
        .map(|l| l.text.clone())
        .collect();
    assert_eq!(caller_lines, conv.user_transcripts);
    assert_eq!(rec.end_reason, EndReason::CallerHungUp);
    assert!(res.first_agent_audio_ms.unwrap() < 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_scenario_through_the_bridge() {
    let Run { res, conv, rec, .. } = play("trattoria-barge-in", 2.0).await;
    assert_eq!(res.end, CallEnd::Hangup, "{:?}", res.steps);
    assert!(conv.failures.is_empty(), "{:?}", conv.failures);
    assert_eq!(conv.interruptions.len(), 1);
    assert_eq!(res.clears_ms.len(), 1);
    let clear_at = res.clears_ms[0];
    let barge = &res.steps[1];
    let utterance_end = barge.done_ms.unwrap();
    // Zero agent audio between the clear and the end of the barge-in utterance.
    assert_eq!(
        res.media_bytes_between(clear_at + 20, utterance_end + 300),
        0
    );
    assert_eq!(
        res.agent_audible_ms_between(clear_at + 20, utterance_end + 300),
        0
    );
    // The interrupted line in the record is cut to what the caller heard.
    let cut: Vec<_> = rec
        .transcript
        .iter()
        .filter(|l| l.role == Role::Agent && l.cut)
        .collect();
    assert!(!cut.is_empty(), "{:?}", rec.transcript);
    let line = cut[0];
    let full = line.full_text.as_deref().unwrap();
    assert!(
        full.starts_with(line.text.trim_end_matches(|c: char| !c.is_alphanumeric()))
            || full.contains(&line.text),
        "{line:?}"
    );
    assert!(line.text.len() < full.len());
    // The caller's turns and the barge-in are on the record.
    let lat = rec.latency.as_ref().expect("latency figures");
    assert_eq!(lat.barge_in_us.len(), 1, "{lat:?}");
    assert!(!lat.turn_ms.is_empty() && lat.turn_bridge_us.len() == lat.turn_ms.len(), "{lat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_transfer_scenario_through_the_bridge() {
    let Run { res, rec, rest, .. } = play("trattoria-dtmf-transfer", 4.0).await;
    assert!(
        matches!(res.end, CallEnd::StopSignal | CallEnd::ServerClosed(_)),
        "{:?}",
        res.end
    );
    assert_eq!(rec.end_reason, EndReason::Transfer);
    let updates = rest.updates_for(&rec.call_sid);
    assert_eq!(updates.len(), 1);
    assert!(updates[0].twiml.contains("<Dial") && updates[0].twiml.contains("+390612345600"));
    assert_eq!(rec.dtmf[0].digit, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_drop_scenario_falls_back_through_the_bridge() {
    let Run {
        res,
        conv,
        rec,
        rest,
    } = play("brooklyn-elevenlabs-drop", 1.0).await;
    assert!(conv.dropped_by_fault, "{conv:?}");
    assert_eq!(rec.end_reason, EndReason::AgentFailed);
    let fb = rec.fallback.as_ref().unwrap();
    assert!(fb.ok);
    let updates = rest.updates_for(&rec.call_sid);
    assert_eq!(updates.len(), 1);
    // The fallback is heard within 2 s of the drop: the record's fallback time vs the last
    // agent audio the caller received before the drop.
    let last_agent_ms = res
        .received
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                pulsara_emulators::caller::ReceivedKind::Media { .. }
            )
        })
        .map(|r| r.at_ms)
        .max()
        .unwrap();
    assert!(
        fb.at_ms <= last_agent_ms + 1_500 + 2_000,
        "fallback at {} ms, last agent audio {last_agent_ms} ms",
        fb.at_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_synced_refuses_the_call_as_production_does() {
    // The bridge sends every override (it knows of no permission); the agent allows none, so the
    // server refuses the conversation and the caller gets the fallback, never dead air.
    let Run { conv, rec, .. } = play_with("trattoria-order", 8.0, false).await;
    assert_eq!(conv.ended.as_deref(), Some("override_error"));
    assert!(conv.refused_override.is_some());
    assert_eq!(rec.end_reason, EndReason::AgentFailed);
    let detail = rec
        .end_reason_detail
        .as_ref()
        .expect("the server's reason on the record");
    assert_eq!(detail.error_type.as_deref(), Some("override_error"));
    assert_eq!(detail.close_code, Some(1008));
    assert!(rec.fallback.is_some(), "{rec:?}");
}
