//! Caller simulator against a tiny in-test stream server that echoes audio, sends marks and
//! clears, and checks the Twilio framing it receives.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsara_emulators::caller::{run_call, CallEnd, CallParams, CallerOptions, ReceivedKind};
use pulsara_emulators::scenario::Scenario;
use pulsara_media::twilio::{self, Inbound};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default, Debug)]
struct Seen {
    events: Vec<String>,
    start: Option<twilio::Start>,
    media_seq_ok: bool,
    media_frames: usize,
    chunks: Vec<u64>,
    timestamps: Vec<u64>,
    marks_back: Vec<String>,
    dtmf: Vec<String>,
    header: Option<String>,
}

/// Echo server: each inbound media frame is sent back as outbound media; after every 25th
/// frame a mark `m<N>`; on DTMF it sends `clear` (after queueing a long burst of audio).
async fn echo_server(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let seen2 = seen.clone();
    let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
        seen2.lock().unwrap().header = req
            .headers()
            .get("x-twilio-signature")
            .map(|v| v.to_str().unwrap().to_owned());
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
    let mut sid = String::new();
    let mut last_seq = 0u64;
    let mut ok = true;
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let m = twilio::parse_inbound(t.as_str())
            .expect("valid Twilio frame")
            .into_owned();
        let mut stop = false;
        let out = {
            let mut s = seen.lock().unwrap();
            s.events.push(m.event().to_owned());
            let mut out = Vec::new();
            match m {
                Inbound::Start(st) => {
                    sid = st.stream_sid.clone();
                    last_seq = st.sequence_number;
                    s.start = Some(st);
                }
                Inbound::Media(media) => {
                    ok &= media.sequence_number > last_seq
                        && media.stream_sid == sid
                        && media.track == "inbound";
                    last_seq = media.sequence_number;
                    s.media_frames += 1;
                    s.chunks.push(media.chunk);
                    s.timestamps.push(media.timestamp);
                    out.push(twilio::media_json(&sid, &media.payload).unwrap());
                    if s.media_frames % 25 == 0 {
                        out.push(twilio::mark_json(&sid, &format!("m{}", s.media_frames)));
                    }
                }
                Inbound::Mark(mk) => s.marks_back.push(mk.name),
                Inbound::Dtmf(d) => {
                    s.dtmf.push(d.digit);
                    // 2 s of loud audio then a mark, then clear at once.
                    let loud = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        [0x80u8; 16000],
                    );
                    out.push(twilio::media_json(&sid, &loud).unwrap());
                    out.push(twilio::mark_json(&sid, "before-clear"));
                    out.push(twilio::clear_json(&sid));
                    // Something Twilio would reject: the caller must record it, not die.
                    out.push(r#"{"event":"start","streamSid":"x"}"#.to_owned());
                }
                Inbound::Stop(_) => stop = true,
                _ => {}
            }
            s.media_seq_ok = ok;
            out
        };
        if stop {
            break;
        }
        for o in out {
            if ws.send(Message::Text(o.into())).await.is_err() {
                return;
            }
        }
    }
}

const SCRIPT: &str = r#"
name = "echo"
restaurant = "unused"
[call]
from = "+15550100"
[caller]
max_duration_ms = 20000
[[caller.steps]]
at_ms = 200
say = "Hello there, this is a test call."
[[caller.steps]]
after_ms = 600
dtmf = "0"
[[caller.steps]]
after_ms = 400
hangup = true
"#;

#[tokio::test]
async fn caller_speaks_twilio_and_plays_marks_and_clears_like_twilio() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(echo_server(listener, seen.clone()));
    let scenario = Scenario::from_toml(SCRIPT, "inline").unwrap();
    let mut params = CallParams::numbered(7, "+15550100", "+15550200");
    params
        .custom_parameters
        .insert("handoff".into(), "tok".into());
    let opts = CallerOptions {
        speed: 4.0,
        headers: vec![("X-Twilio-Signature".into(), "sig=".into())],
        ..Default::default()
    };
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        run_call(
            &format!("ws://{addr}/media"),
            params.clone(),
            &scenario.caller,
            opts,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    let s = seen.lock().unwrap();

    // Twilio framing.
    assert_eq!(
        &s.events[..2],
        &["connected".to_owned(), "start".to_owned()]
    );
    assert_eq!(s.events.last().map(String::as_str), Some("stop"));
    let start = s.start.as_ref().unwrap();
    assert_eq!(start.call_sid, params.call_sid);
    assert_eq!(start.custom_parameters["handoff"], "tok");
    assert_eq!(start.tracks, vec!["inbound"]);
    assert_eq!(s.header.as_deref(), Some("sig="));
    assert!(
        s.media_seq_ok,
        "sequence numbers increase and stream sid matches"
    );
    assert_eq!(s.chunks, (1..=s.media_frames as u64).collect::<Vec<_>>());
    assert_eq!(
        s.timestamps,
        (0..s.media_frames as u64)
            .map(|i| i * 20)
            .collect::<Vec<_>>()
    );
    assert_eq!(s.dtmf, vec!["0"]);
    assert_eq!(res.frames_sent as usize, s.media_frames);
    assert_eq!(res.end, CallEnd::Hangup);

    // Playback: echoed speech arrives in the agent track shortly after it was sent.
    let speech_ms = pulsara_emulators::synth::duration_ms("Hello there, this is a test call.");
    assert!(res.agent_audible_ms_between(200, 200 + speech_ms + 200) > speech_ms / 2);
    assert_eq!(res.caller_audio.len(), res.agent_audio.len());
    assert_eq!(res.caller_audio.len() as u64, res.duration_ms * 8);

    // Marks: ordinary ones echoed after their audio; the one queued behind 2 s of audio comes
    // back at once with the clear, flagged as cleared; the loud burst is never played.
    let clear_at = res.clears_ms[0];
    // (Echo marks still waiting behind unplayed audio at that moment come back with it too.)
    let cleared: Vec<_> = res.marks.iter().filter(|m| m.cleared).collect();
    assert!(
        cleared.iter().any(|m| m.name == "before-clear"),
        "{:?}",
        res.marks
    );
    assert!(
        cleared
            .iter()
            .all(|m| m.echoed_ms == clear_at && m.received_ms <= clear_at),
        "{:?}",
        res.marks
    );
    assert!(res
        .marks
        .iter()
        .filter(|m| m.received_ms > clear_at)
        .all(|m| !m.cleared));
    assert!(res.cleared_samples >= 16000);
    assert!(s.marks_back.contains(&"before-clear".to_owned()));
    assert!(res
        .marks
        .iter()
        .filter(|m| !m.cleared)
        .all(|m| m.echoed_ms >= m.received_ms));
    assert!(
        res.agent_audio[(clear_at * 8) as usize..]
            .iter()
            .all(|&x| x.unsigned_abs() < 32000),
        "loud burst never played"
    );
    // The invalid frame was recorded, not fatal.
    assert_eq!(res.invalid_messages().len(), 1);
    assert!(
        matches!(&res.invalid_messages()[0].kind, ReceivedKind::Invalid { error } if error.contains("start"))
    );

    // Stereo WAV: caller left, agent right, same length.
    let (rate, l, r) = pulsara_media::audio::wav::read_stereo(&res.wav_bytes().unwrap()).unwrap();
    assert_eq!(rate, 8000);
    assert_eq!(l, res.caller_audio);
    assert_eq!(r, res.agent_audio);
}

#[tokio::test]
async fn stop_signal_and_server_close_end_the_call() {
    // Server that closes after the start message.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _ = ws.next().await;
        let _ = ws.next().await;
        ws.close(None).await.unwrap();
    });
    let scenario = Scenario::from_toml(SCRIPT, "inline").unwrap();
    let res = run_call(
        &format!("ws://{addr}/media"),
        CallParams::numbered(1, "+1", "+2"),
        &scenario.caller,
        CallerOptions {
            speed: 10.0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(res.end, CallEnd::ServerClosed(_)), "{:?}", res.end);

    // External stop: sends `stop` and ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got_stop = Arc::new(Mutex::new(false));
    let g = got_stop.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            if matches!(twilio::parse_inbound(t.as_str()), Ok(Inbound::Stop(_))) {
                *g.lock().unwrap() = true;
            }
        }
    });
    let opts = CallerOptions {
        speed: 10.0,
        stop: Some(Box::pin(tokio::time::sleep(Duration::from_millis(100)))),
        ..Default::default()
    };
    let res = run_call(
        &format!("ws://{addr}/media"),
        CallParams::numbered(2, "+1", "+2"),
        &scenario.caller,
        opts,
    )
    .await
    .unwrap();
    assert_eq!(res.end, CallEnd::StopSignal);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(*got_stop.lock().unwrap());

    // Nobody listening: a connect error, not a panic.
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = run_call(
        &format!("ws://{free}/media"),
        CallParams::numbered(3, "+1", "+2"),
        &scenario.caller,
        CallerOptions::default(),
    )
    .await;
    assert!(err.is_err());
}
