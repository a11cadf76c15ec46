//! Every network-facing decoder of pulsara-media on arbitrary input: Twilio frames in both
//! directions, ElevenLabs frames in both directions, the converter on arbitrary audio bytes.
//! Whatever parses must re-serialize to something that parses to the same value.
//! Run: `cd media/fuzz && cargo +nightly fuzz run media_messages`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pulsara_media::audio::{Converter, Format};
use pulsara_media::{convai, twilio};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = twilio::parse_inbound(text) {
            let again = m.to_json();
            if !matches!(m, twilio::Inbound::Unknown { .. }) {
                assert_eq!(twilio::parse_inbound(&again).unwrap(), m);
            }
        }
        if let Ok(m) = twilio::parse_outbound(text) {
            assert_eq!(twilio::parse_outbound(&m.to_json()).unwrap(), m);
        }
        if let Ok(m) = convai::parse_server(text) {
            let _ = convai::parse_server(&m.to_json());
        }
        if let Ok(m) = convai::parse_client(text) {
            let _ = convai::parse_client(&m.to_json());
        }
    }
    let mut out = Vec::new();
    Converter::new(Format::Pcm(44100), Format::Ulaw8000).process(data, &mut out);
    Converter::new(Format::Ulaw8000, Format::Pcm(22050)).process(data, &mut out);
});
