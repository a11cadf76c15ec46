//! Fuzzes the other header parsers that read network bytes: Standard Webhooks and ElevenLabs
//! signature headers, dashboard request-signing headers, and phone numbers from Twilio's `To`.
//! None may panic, and a header made of fuzz bytes must never verify.
//!
//! Run: `cd core/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run signed_headers -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulsara_core::secret::Secret;
use pulsara_core::webhooks::{self, ReplayGuard};
use pulsara_core::{phone, request_auth};

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut f = text.splitn(5, '\n');
    let (a, b, c, d) = (f.next(), f.next(), f.next(), f.next());
    let body = f.next().unwrap_or_default().as_bytes();

    let secrets = [Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")];
    // A random signature header must not verify (the timestamp may be anything in range).
    assert!(webhooks::verify(&secrets, a, b, c, body, NOW).is_err());
    assert!(webhooks::verify_elevenlabs(&Secret::new("el"), a, body, NOW, 1800).is_err());

    let headers = |name: &str| match name {
        request_auth::HEADER_KEY_ID => a.map(str::to_owned),
        request_auth::HEADER_TIMESTAMP => b.map(str::to_owned),
        request_auth::HEADER_NONCE => c.map(str::to_owned),
        request_auth::HEADER_SIGNATURE => d.map(str::to_owned),
        _ => None,
    };
    let mut guard = ReplayGuard::new(8);
    let lookup = |_: &str| Some(Secret::new("dash-secret"));
    assert!(request_auth::verify(lookup, "POST", "/v1/calls", &headers, body, NOW, &mut guard).is_err());

    if let Ok(n) = phone::normalize_e164(&text) {
        assert_eq!(phone::normalize_e164(&n), Ok(n.clone()));
    }
    let _ = phone::normalize_with_default(&text, "39");
});
