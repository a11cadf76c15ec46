//! Fuzzes what the edge does with an untrusted voice webhook: parse the form body, validate the
//! signature header (valid, mutated and arbitrary), including port handling of arbitrary URLs.
//!
//! Run (cargo-fuzz 0.13; `RUSTC_BOOTSTRAP=1` lets a stable toolchain accept its `-Z` flags):
//! `cd core/fuzz && mkdir -p corpus/twilio_form && RUSTC_BOOTSTRAP=1 cargo fuzz run twilio_form corpus/twilio_form seeds -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsara_core::secret::Secret;
use pulsara_core::twilio;

fuzz_target!(|data: &[u8]| {
    // Layout: <url>\n<header>\n<form body>; missing parts are empty.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let token = Secret::new("fuzz-token");

    let Ok(params) = twilio::parse_form(body) else { return };
    assert!(params.len() <= twilio::MAX_FORM_PARAMS);

    // Arbitrary header: must never panic, and a random header essentially never validates.
    let _ = twilio::validate(&token, &url, &params, Some(&header));
    let _ = twilio::validate_json(&token, &url, body, Some(&header));

    // The genuine signature validates whenever the URL is usable; any change to it does not.
    let good = twilio::compute_signature(&token, &url, &params);
    match twilio::validate(&token, &url, &params, Some(&good)) {
        Ok(()) => {
            let injected = ("Injected".to_owned(), "1".to_owned());
            if !params.contains(&injected) {
                let mut tampered = params.clone();
                tampered.push(injected);
                assert!(twilio::validate(&token, &url, &tampered, Some(&good)).is_err());
            }
        }
        Err(twilio::SignatureError::InvalidUrl(_)) => {}
        Err(e) => panic!("genuine signature refused: {e}"),
    }
});
