//! Verifying (and producing) signed webhooks: the dashboard's Standard Webhooks to the edge and
//! the bridge, and ElevenLabs' post-call webhook to the edge. A forged webhook could invalidate
//! caches at will or inject call data, so both fail closed.
//!
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` = space-separated
//!   `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`; the key is the base64 part of
//!   `whsec_<base64>`. Several secrets are tried (rotation), ±[`TOLERANCE_SECS`].
//!   Secrets are decoded as the reference library does (`standardwebhooks` `Webhook.__init__`:
//!   optional `whsec_` prefix, standard alphabet, padding optional); [`parse_secrets`] checks a
//!   rotation list once, when the configuration is loaded, so a bad entry stops start-up instead
//!   of failing every delivery.
//! - ElevenLabs: `ElevenLabs-Signature: t=<unix>,v0=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! Replay protection is the caller's job: [`ReplayGuard`] is a small bounded memory of ids for it.

use std::collections::{BTreeSet, HashMap};

use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::crypto::{ct_eq, hmac_sha256};
use crate::secret::Secret;

/// Standard Webhooks' timestamp tolerance, both directions.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// ElevenLabs' usual tolerance for post-call webhooks.
pub const ELEVENLABS_TOLERANCE_SECS: i64 = 30 * 60;
/// Longest webhook id accepted (ids are remembered for replay protection).
pub const MAX_ID_LEN: usize = 256;
/// Longest signature header worth parsing.
const MAX_SIGNATURE_HEADER: usize = 4096;
/// The secret's base64, read as the reference library reads it: it appends `==` before decoding
/// (so unpadded secrets work and surplus padding is ignored) and does not insist on zero trailing
/// bits. Here the trailing padding is stripped and the rest decoded without padding.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Why a webhook was refused. Messages never contain secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook secret is configured; refusing all webhooks")]
    NoSecret,
    #[error("webhook secret is malformed; expected whsec_<base64>")]
    BadSecret,
    #[error("webhook header {0} is missing")]
    MissingHeader(&'static str),
    #[error("webhook id is empty or longer than {MAX_ID_LEN} characters")]
    BadId,
    #[error("webhook timestamp is not unix seconds")]
    BadTimestamp,
    #[error("webhook timestamp is {0} s old; outside the tolerance (check clocks, or a replay)")]
    Stale(i64),
    #[error("webhook timestamp is {0} s in the future; outside the tolerance (check clocks)")]
    Future(i64),
    #[error("webhook signature header is malformed")]
    MalformedSignature,
    #[error("webhook signature header has no signature of a supported version")]
    NoSupportedSignature,
    #[error("webhook signature does not match any configured secret")]
    Mismatch,
}

/// Why a list of Standard Webhooks secrets was refused. Names the entry by position, never by
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretListError {
    #[error("no secret given; expected whsec_<base64>[,whsec_<base64>…]")]
    Empty,
    #[error("entry {position} of {count} is not whsec_<base64> (standard base64 alphabet A-Z a-z 0-9 + /, padding optional) or decodes to an empty key")]
    Malformed { position: usize, count: usize },
}

/// A remembered id was seen again before it expired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("id was already used; refusing the replay")]
    Replayed,
    #[error("id is empty or longer than {MAX_ID_LEN} characters")]
    BadId,
}

/// Checks a Standard Webhooks delivery against any of `secrets` (`whsec_<base64>`; the prefix is
/// optional).
///
/// # Errors
/// A [`WebhookError`] per reason: no usable secret, missing header, bad id or timestamp, stale or
/// future timestamp (±[`TOLERANCE_SECS`]), no `v1` entry, or no matching signature. Entries of
/// other versions are ignored; `v1,` with an empty or wrong-length signature never matches.
pub fn verify(
    secrets: &[Secret],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), WebhookError> {
    let keys = secrets
        .iter()
        .map(decode_secret)
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let id = id.ok_or(WebhookError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(WebhookError::MissingHeader("webhook-timestamp"))?;
    let header = signature_header.ok_or(WebhookError::MissingHeader("webhook-signature"))?;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(WebhookError::BadId);
    }
    let ts = parse_ts(timestamp)?;
    check_window(ts, now_unix, TOLERANCE_SECS)?;
    if header.len() > MAX_SIGNATURE_HEADER {
        return Err(WebhookError::MalformedSignature);
    }
    let mut candidates = Vec::new();
    for entry in header.split_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            return Err(WebhookError::MalformedSignature);
        };
        if version == "v1" {
            candidates.push(STANDARD.decode(sig).unwrap_or_default());
        }
    }
    if candidates.is_empty() {
        return Err(WebhookError::NoSupportedSignature);
    }
    let ts_str = ts.to_string();
    let mut ok = false;
    for key in &keys {
        let expected = hmac_sha256(key, &[id.as_bytes(), b".", ts_str.as_bytes(), b".", body]);
        for c in &candidates {
            ok |= ct_eq(&expected, c);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(WebhookError::Mismatch)
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for a delivery.
///
/// # Errors
/// [`WebhookError::NoSecret`] / [`WebhookError::BadSecret`] for an unusable secret.
pub fn sign(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    let key = decode_secret(secret)?;
    let ts = timestamp.to_string();
    let mac = hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    Ok(format!("v1,{}", STANDARD.encode(mac)))
}

/// Parses a rotation list of Standard Webhooks secrets (`whsec_<base64>`, separated by commas
/// and/or whitespace; the prefix is optional) and checks that each one decodes to a key, so a
/// configuration loader can refuse a bad list before any delivery arrives.
///
/// # Errors
/// [`SecretListError::Empty`] for a list without entries; [`SecretListError::Malformed`] naming
/// the first unusable entry by its position.
pub fn parse_secrets(spec: &str) -> Result<Vec<Secret>, SecretListError> {
    let entries: Vec<&str> = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(SecretListError::Empty);
    }
    let count = entries.len();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let secret = Secret::new(e);
            decode_secret(&secret)
                .map(|_| secret)
                .map_err(|_| SecretListError::Malformed {
                    position: i + 1,
                    count,
                })
        })
        .collect()
}

/// The HMAC key of a `whsec_` secret, decoded as the reference library decodes it: the prefix
/// is optional and the base64 may be padded, unpadded or over-padded. Unlike the reference,
/// characters outside the standard alphabet (including `-`/`_` of the URL-safe one and padding
/// in the middle) are refused rather than silently dropped: a secret that decodes to a
/// different key than the sender's would fail every delivery.
fn decode_secret(secret: &Secret) -> Result<Vec<u8>, WebhookError> {
    let raw = secret.expose().trim();
    if raw.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let b64 = raw.strip_prefix("whsec_").unwrap_or(raw);
    let key = SECRET_BASE64
        .decode(b64.trim_end_matches('='))
        .map_err(|_| WebhookError::BadSecret)?;
    if key.is_empty() {
        return Err(WebhookError::BadSecret);
    }
    Ok(key)
}

fn parse_ts(raw: &str) -> Result<i64, WebhookError> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::BadTimestamp);
    }
    raw.parse().map_err(|_| WebhookError::BadTimestamp)
}

fn check_window(ts: i64, now: i64, tolerance: i64) -> Result<(), WebhookError> {
    let age = now.saturating_sub(ts);
    if age > tolerance {
        return Err(WebhookError::Stale(age));
    }
    if -age > tolerance {
        return Err(WebhookError::Future(-age));
    }
    Ok(())
}

/// Checks an ElevenLabs post-call webhook's `ElevenLabs-Signature` header.
///
/// # Errors
/// [`WebhookError::NoSecret`] when `secret` is empty (fail closed), a missing or malformed header,
/// a timestamp outside `tolerance_secs` either way, or no matching `v0` signature.
pub fn verify_elevenlabs(
    secret: &Secret,
    header: Option<&str>,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookError> {
    if secret.expose().is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let header = header.ok_or(WebhookError::MissingHeader("ElevenLabs-Signature"))?;
    if header.len() > MAX_SIGNATURE_HEADER {
        return Err(WebhookError::MalformedSignature);
    }
    let mut ts = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(WebhookError::MalformedSignature)?;
        match k {
            "t" => ts = Some(v),
            "v0" => sigs.push(v),
            _ => {}
        }
    }
    let ts_raw = ts.ok_or(WebhookError::MalformedSignature)?;
    let ts = parse_ts(ts_raw)?;
    check_window(ts, now_unix, tolerance_secs)?;
    if sigs.is_empty() {
        return Err(WebhookError::NoSupportedSignature);
    }
    let expected = hex::encode(hmac_sha256(
        secret.expose().as_bytes(),
        &[ts_raw.trim().as_bytes(), b".", body],
    ));
    let mut ok = false;
    for s in sigs {
        ok |= ct_eq(
            expected.as_bytes(),
            s.trim().to_ascii_lowercase().as_bytes(),
        );
    }
    if ok {
        Ok(())
    } else {
        Err(WebhookError::Mismatch)
    }
}

/// The `ElevenLabs-Signature` value for `body` at `timestamp` (tests, emulators).
pub fn sign_elevenlabs(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret.expose().as_bytes(), &[ts.as_bytes(), b".", body]);
    format!("t={ts},v0={}", hex::encode(mac))
}

/// A bounded memory of recently seen ids (webhook ids, request nonces, handoff tokens), each kept
/// until its expiry. Pure: every call takes `now`.
///
/// When full, expired ids are evicted first; if none has expired, the id closest to expiry is
/// dropped (the bound wins over perfect memory; size it for the expected rate × window).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    capacity: usize,
    expiry: HashMap<String, i64>,
    by_expiry: BTreeSet<(i64, String)>,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            expiry: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Records `id` until `expires_at` (unix s).
    ///
    /// # Errors
    /// [`ReplayError::Replayed`] when `id` is already remembered and not expired at `now`;
    /// [`ReplayError::BadId`] for an empty or over-long id.
    pub fn check_and_insert(
        &mut self,
        id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), ReplayError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(ReplayError::BadId);
        }
        self.evict_expired(now);
        if self.expiry.contains_key(id) {
            return Err(ReplayError::Replayed);
        }
        while self.expiry.len() >= self.capacity {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.expiry.remove(&first.1);
        }
        self.expiry.insert(id.to_owned(), expires_at);
        self.by_expiry.insert((expires_at, id.to_owned()));
        Ok(())
    }

    /// Whether `id` is remembered and not expired at `now`.
    pub fn contains(&self, id: &str, now: i64) -> bool {
        self.expiry.get(id).is_some_and(|&e| e > now)
    }

    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }

    fn evict_expired(&mut self, now: i64) {
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp > now {
                break;
            }
            if let Some((_, id)) = self.by_expiry.pop_first() {
                self.expiry.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secrets() -> Vec<Secret> {
        vec![Secret::new(SECRET)]
    }

    fn check(sig: &str, now: i64) -> Result<(), WebhookError> {
        verify(
            &secrets(),
            Some(ID),
            Some(&TS.to_string()),
            Some(sig),
            BODY,
            now,
        )
    }

    #[test]
    fn standard_webhooks_vector() {
        assert_eq!(sign(&Secret::new(SECRET), ID, TS, BODY).unwrap(), SIG);
        check(SIG, TS).unwrap();
        // Without the whsec_ prefix the key is the same.
        let bare = [Secret::new(SECRET.trim_start_matches("whsec_"))];
        verify(&bare, Some(ID), Some("1649367553"), Some(SIG), BODY, TS).unwrap();
    }

    /// 16 key bytes, so the base64 carries `==`; the signatures were computed with the reference
    /// library (`standardwebhooks` 1.1.0, `Webhook(secret).sign`) for the padded, unpadded and
    /// bare forms alike.
    const PADDED_SECRET: &str = "whsec_cHVsc2FyYS13ZWJob29rcw==";
    const PADDED_SIG: &str = "v1,j4kwtZ+QZWaHCFNlrZShdwC6m7R1KA51qU4w7JAbNU4=";

    #[test]
    fn padding_is_optional_as_in_the_reference_library() {
        let ts = TS.to_string();
        for form in [
            PADDED_SECRET,
            "whsec_cHVsc2FyYS13ZWJob29rcw",
            "whsec_cHVsc2FyYS13ZWJob29rcw=",
            "whsec_cHVsc2FyYS13ZWJob29rcw====",
            "cHVsc2FyYS13ZWJob29rcw",
        ] {
            let s = [Secret::new(form)];
            assert_eq!(
                sign(&s[0], ID, TS, BODY).as_deref(),
                Ok(PADDED_SIG),
                "{form}"
            );
            verify(&s, Some(ID), Some(&ts), Some(PADDED_SIG), BODY, TS).unwrap();
        }
        // The reference ignores non-zero trailing bits too: "YR" is the key "a", like "YQ".
        assert_eq!(
            sign(&Secret::new("whsec_YR"), ID, TS, BODY),
            sign(&Secret::new("whsec_YQ=="), ID, TS, BODY)
        );
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "whsec_",
            "whsec_====",
            "whsec_!!!",
            "whsec_cHVsc2FyYS13ZWJob29rcw-_",
            "whsec_YQ==YQ==",
            "whsec_cHVsc2FyYS13ZWJob29rc",
            "whsec_cHVz c2Fy",
        ] {
            assert_eq!(
                sign(&Secret::new(bad), ID, TS, BODY),
                Err(WebhookError::BadSecret),
                "{bad}"
            );
        }
    }

    #[test]
    fn secret_lists_are_checked_entry_by_entry_without_echoing_values() {
        let list = parse_secrets(&format!(" {SECRET}, whsec_cHVsc2FyYS13ZWJob29rcw\n")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            parse_secrets(&format!("{SECRET} {PADDED_SECRET}"))
                .unwrap()
                .len(),
            2
        );
        let err = parse_secrets(&format!("{SECRET},whsec_n0t!base64")).unwrap_err();
        assert_eq!(
            err,
            SecretListError::Malformed {
                position: 2,
                count: 2
            }
        );
        let text = err.to_string();
        assert!(text.contains("entry 2 of 2"), "{text}");
        assert!(
            !text.contains("n0t!base64") && !text.contains("C2FVsBQI"),
            "{text}"
        );
        assert_eq!(parse_secrets(" , "), Err(SecretListError::Empty));
        assert_eq!(parse_secrets(""), Err(SecretListError::Empty));
    }

    #[test]
    fn empty_and_wrong_length_signatures_never_match() {
        assert_eq!(check("v1,", TS), Err(WebhookError::Mismatch));
        assert_eq!(
            check("v1,tZ1I4/hDygAJgO5T", TS),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(check("v1,not-base64!", TS), Err(WebhookError::Mismatch));
        let longer = format!("{}AAAA", SIG.trim_end_matches('='));
        assert_eq!(check(&longer, TS), Err(WebhookError::Mismatch));
        assert_eq!(check("", TS), Err(WebhookError::NoSupportedSignature));
        assert_eq!(check("v1a", TS), Err(WebhookError::MalformedSignature));
    }

    #[test]
    fn several_entries_and_unknown_versions() {
        check(&format!("v1,AAAA v2,whatever {SIG}"), TS).unwrap();
        check(&format!("v1a,xyz {SIG}"), TS).unwrap();
        // Only unknown versions: nothing to check against.
        assert_eq!(
            check("v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=", TS),
            Err(WebhookError::NoSupportedSignature)
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        check(SIG, TS + TOLERANCE_SECS).unwrap();
        check(SIG, TS - TOLERANCE_SECS).unwrap();
        assert_eq!(
            check(SIG, TS + TOLERANCE_SECS + 1),
            Err(WebhookError::Stale(TOLERANCE_SECS + 1))
        );
        assert_eq!(
            check(SIG, TS - TOLERANCE_SECS - 1),
            Err(WebhookError::Future(TOLERANCE_SECS + 1))
        );
        for bad in ["", "abc", "-5", "1649367553.0", "99999999999999999999"] {
            assert_eq!(
                verify(&secrets(), Some(ID), Some(bad), Some(SIG), BODY, TS),
                Err(WebhookError::BadTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_headers_and_secrets() {
        let ts = TS.to_string();
        assert_eq!(
            verify(&secrets(), None, Some(&ts), Some(SIG), BODY, TS),
            Err(WebhookError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(&secrets(), Some(ID), None, Some(SIG), BODY, TS),
            Err(WebhookError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            verify(&secrets(), Some(ID), Some(&ts), None, BODY, TS),
            Err(WebhookError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            verify(&[], Some(ID), Some(&ts), Some(SIG), BODY, TS),
            Err(WebhookError::NoSecret)
        );
        assert_eq!(
            verify(&[Secret::new("")], Some(ID), Some(&ts), Some(SIG), BODY, TS),
            Err(WebhookError::NoSecret)
        );
        assert_eq!(
            verify(
                &[Secret::new("whsec_!!!")],
                Some(ID),
                Some(&ts),
                Some(SIG),
                BODY,
                TS
            ),
            Err(WebhookError::BadSecret)
        );
        assert_eq!(
            sign(&Secret::new("whsec_"), ID, TS, BODY),
            Err(WebhookError::BadSecret)
        );
        assert_eq!(
            verify(&secrets(), Some(""), Some(&ts), Some(SIG), BODY, TS),
            Err(WebhookError::BadId)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let ts = TS.to_string();
        let other_body = br#"{"email":"evil@example.com","username":"test_user"}"#;
        assert_eq!(
            verify(&secrets(), Some(ID), Some(&ts), Some(SIG), other_body, TS),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify(
                &secrets(),
                Some("msg_other"),
                Some(&ts),
                Some(SIG),
                BODY,
                TS
            ),
            Err(WebhookError::Mismatch)
        );
        let ts2 = (TS + 1).to_string();
        assert_eq!(
            verify(&secrets(), Some(ID), Some(&ts2), Some(SIG), BODY, TS),
            Err(WebhookError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let old = Secret::new(SECRET);
        let new = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let both = [new.clone(), old.clone()];
        let ts = TS.to_string();
        verify(&both, Some(ID), Some(&ts), Some(SIG), BODY, TS).unwrap();
        let new_sig = sign(&new, ID, TS, BODY).unwrap();
        verify(&both, Some(ID), Some(&ts), Some(&new_sig), BODY, TS).unwrap();
        assert_eq!(
            verify(&[old], Some(ID), Some(&ts), Some(&new_sig), BODY, TS),
            Err(WebhookError::Mismatch)
        );
        // A sender in the middle of rotation sends both signatures.
        verify(
            &[new],
            Some(ID),
            Some(&ts),
            Some(&format!("{SIG} {new_sig}")),
            BODY,
            TS,
        )
        .unwrap();
    }

    const EL_SECRET: &str = "wsec_test";
    const EL_BODY: &[u8] = br#"{"type":"post_call_transcription"}"#;
    // Computed independently with Python's hmac module.
    const EL_HEX: &str = "8580fe46ca40876a1f93f7a34277501134e83d7dd8472e950b34c3b9c4d1e248";

    #[test]
    fn elevenlabs_known_answer_and_round_trip() {
        let header = sign_elevenlabs(&Secret::new(EL_SECRET), 1_700_000_000, EL_BODY);
        assert_eq!(header, format!("t=1700000000,v0={EL_HEX}"));
        verify_elevenlabs(
            &Secret::new(EL_SECRET),
            Some(&header),
            EL_BODY,
            1_700_000_100,
            ELEVENLABS_TOLERANCE_SECS,
        )
        .unwrap();
        // Order of fields and upper-case hex do not matter.
        let reordered = format!("v0={} , t=1700000000", EL_HEX.to_uppercase());
        verify_elevenlabs(
            &Secret::new(EL_SECRET),
            Some(&reordered),
            EL_BODY,
            1_700_000_000,
            60,
        )
        .unwrap();
    }

    #[test]
    fn elevenlabs_negative_cases() {
        let s = Secret::new(EL_SECRET);
        let header = format!("t=1700000000,v0={EL_HEX}");
        let now = 1_700_000_000;
        assert_eq!(
            verify_elevenlabs(&Secret::new(""), Some(&header), EL_BODY, now, 60),
            Err(WebhookError::NoSecret)
        );
        assert_eq!(
            verify_elevenlabs(&s, None, EL_BODY, now, 60),
            Err(WebhookError::MissingHeader("ElevenLabs-Signature"))
        );
        assert_eq!(
            verify_elevenlabs(&s, Some(&header), EL_BODY, now + 61, 60),
            Err(WebhookError::Stale(61))
        );
        assert_eq!(
            verify_elevenlabs(&s, Some(&header), EL_BODY, now - 61, 60),
            Err(WebhookError::Future(61))
        );
        assert_eq!(
            verify_elevenlabs(&s, Some(&header), b"{}", now, 60),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_elevenlabs(&s, Some("t=1700000000,v0="), EL_BODY, now, 60),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_elevenlabs(
                &s,
                Some(&format!("t=1700000000,v0={}", &EL_HEX[..32])),
                EL_BODY,
                now,
                60
            ),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_elevenlabs(&s, Some("t=1700000000"), EL_BODY, now, 60),
            Err(WebhookError::NoSupportedSignature)
        );
        assert_eq!(
            verify_elevenlabs(&s, Some(&format!("v0={EL_HEX}")), EL_BODY, now, 60),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            verify_elevenlabs(&s, Some("garbage"), EL_BODY, now, 60),
            Err(WebhookError::MalformedSignature)
        );
        assert_eq!(
            verify_elevenlabs(&s, Some(&format!("t=abc,v0={EL_HEX}")), EL_BODY, now, 60),
            Err(WebhookError::BadTimestamp)
        );
        assert_eq!(
            verify_elevenlabs(&Secret::new("other"), Some(&header), EL_BODY, now, 60),
            Err(WebhookError::Mismatch)
        );
    }

    #[test]
    fn replay_guard_refuses_repeats_until_expiry() {
        let mut g = ReplayGuard::new(10);
        g.check_and_insert("a", 100, 0).unwrap();
        assert_eq!(g.check_and_insert("a", 100, 50), Err(ReplayError::Replayed));
        assert!(g.contains("a", 99));
        assert!(!g.contains("a", 100));
        // Expired: accepted again.
        g.check_and_insert("a", 200, 100).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g.check_and_insert("", 1, 0), Err(ReplayError::BadId));
        assert_eq!(
            g.check_and_insert(&"x".repeat(MAX_ID_LEN + 1), 1, 0),
            Err(ReplayError::BadId)
        );
    }

    #[test]
    fn replay_guard_is_bounded_and_evicts_expired_first() {
        let mut g = ReplayGuard::new(3);
        g.check_and_insert("short", 10, 0).unwrap();
        g.check_and_insert("long1", 1000, 0).unwrap();
        g.check_and_insert("long2", 1000, 0).unwrap();
        // At t=20 "short" has expired and goes first; the live ones stay.
        g.check_and_insert("new", 1000, 20).unwrap();
        assert_eq!(g.len(), 3);
        assert!(g.contains("long1", 20) && g.contains("long2", 20) && g.contains("new", 20));
        // Full of live ids: the one closest to expiry is dropped, never more than capacity.
        g.check_and_insert("soon", 500, 30).unwrap();
        assert_eq!(g.len(), 3);
        for i in 0..1000 {
            g.check_and_insert(&format!("id{i}"), 2000 + i, 40).unwrap();
        }
        assert_eq!(g.len(), 3);
        assert!(g.contains("id999", 40));
    }

    proptest::proptest! {
        #[test]
        fn sign_verify_round_trip(
            id in "[a-zA-Z0-9_]{1,40}",
            ts in 1_000_000_000i64..2_000_000_000,
            skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            flip in 0usize..256,
        ) {
            let sig = sign(&Secret::new(SECRET), &id, ts, &body).unwrap();
            let ts_s = ts.to_string();
            proptest::prop_assert_eq!(verify(&secrets(), Some(&id), Some(&ts_s), Some(&sig), &body, ts + skew), Ok(()));
            if !body.is_empty() {
                let mut changed = body.clone();
                changed[flip % body.len()] ^= 1;
                proptest::prop_assert_eq!(
                    verify(&secrets(), Some(&id), Some(&ts_s), Some(&sig), &changed, ts),
                    Err(WebhookError::Mismatch)
                );
            }
            let el = sign_elevenlabs(&Secret::new(EL_SECRET), ts, &body);
            proptest::prop_assert_eq!(verify_elevenlabs(&Secret::new(EL_SECRET), Some(&el), &body, ts + skew, TOLERANCE_SECS), Ok(()));
        }
    }
}
