//! Hot-path costs per 20 ms frame: what the bridge pays for each Twilio media frame and each
//! ElevenLabs audio chunk. Run: `cargo bench -p pulsara-media --bench codecs`.
use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pulsara_media::audio::{mulaw, Converter, Format, Resampler};
use pulsara_media::{convai, twilio};

fn frame_payload() -> String {
    let bytes: Vec<u8> = (0..160u32).map(|i| (i * 37 % 256) as u8).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn bench(c: &mut Criterion) {
    let payload = frame_payload();
    let inbound = format!(
        r#"{{"event":"media","sequenceNumber":"1234","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","media":{{"track":"inbound","chunk":"1233","timestamp":"24660","payload":"{payload}"}}}}"#
    );
    let el_audio = convai::audio_json(&payload, 77).unwrap();

    c.bench_function("twilio::parse_inbound(media 20ms)", |b| {
        b.iter(|| twilio::parse_inbound(black_box(&inbound)).unwrap())
    });
    c.bench_function("pass-through twilio media -> user_audio_chunk", |b| {
        b.iter(
            || match twilio::parse_inbound(black_box(&inbound)).unwrap() {
                twilio::Inbound::Media(m) => convai::user_audio_chunk_json(&m.payload).unwrap(),
                _ => unreachable!(),
            },
        )
    });
    c.bench_function("pass-through convai audio -> twilio media + mark", |b| {
        b.iter(
            || match convai::parse_server(black_box(&el_audio)).unwrap() {
                convai::ServerMessage::Audio {
                    audio_b64,
                    event_id,
                } => {
                    let m = twilio::media_json("MZ18ad3ab5a668481ce02b83e7395059f0", &audio_b64)
                        .unwrap();
                    let k = twilio::mark_json(
                        "MZ18ad3ab5a668481ce02b83e7395059f0",
                        &event_id.to_string(),
                    );
                    (m, k)
                }
                _ => unreachable!(),
            },
        )
    });
    let pcm: Vec<i16> = (0..160)
        .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
        .collect();
    c.bench_function("mulaw encode+decode 160 samples", |b| {
        b.iter(|| {
            let mut acc = 0i32;
            for &s in black_box(&pcm) {
                acc += mulaw::decode(mulaw::encode(s)) as i32;
            }
            acc
        })
    });
    let ulaw: Vec<u8> = pcm.iter().map(|&s| mulaw::encode(s)).collect();
    let mut up = Converter::new(Format::Ulaw8000, Format::Pcm(16000));
    let mut out = Vec::new();
    c.bench_function("transcode 20ms ulaw_8000 -> pcm_16000", |b| {
        b.iter(|| {
            out.clear();
            up.process(black_box(&ulaw), &mut out);
        })
    });
    let pcm16: Vec<u8> = pulsara_media::audio::pcm::samples_to_bytes(&[1000i16; 320]);
    let mut down = Converter::new(Format::Pcm(16000), Format::Ulaw8000);
    c.bench_function("transcode 20ms pcm_16000 -> ulaw_8000", |b| {
        b.iter(|| {
            out.clear();
            down.process(black_box(&pcm16), &mut out);
        })
    });
    let pcm44: Vec<u8> = pulsara_media::audio::pcm::samples_to_bytes(&[1000i16; 882]);
    let mut down44 = Converter::new(Format::Pcm(44100), Format::Ulaw8000);
    c.bench_function("transcode 20ms pcm_44100 -> ulaw_8000", |b| {
        b.iter(|| {
            out.clear();
            down44.process(black_box(&pcm44), &mut out);
        })
    });
    c.bench_function("Resampler::new(8000, 22050) (shared bank)", |b| {
        b.iter(|| Resampler::new(8000, 22050))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
