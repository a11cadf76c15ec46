//! Signing of requests from the edge and the bridge to the dashboard API, so the dashboard can
//! trust who is asking and that nothing was changed or replayed on the way.
//!
//! Headers: `X-Pulsara-Key-Id`, `X-Pulsara-Timestamp` (unix s), `X-Pulsara-Nonce`,
//! `X-Pulsara-Signature` = base64(HMAC-SHA256(secret, canonical)) where canonical is
//!
//! ```text
//! {METHOD}\n{path_and_query}\n{timestamp}\n{nonce}\n{hex sha256(body)}
//! ```
//!
//! with METHOD upper-cased. The receiver accepts ±[`TOLERANCE_SECS`] and remembers each
//! (key id, nonce) for the window in a [`ReplayGuard`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::crypto::{ct_eq, hmac_sha256, sha256_hex};
use crate::secret::Secret;
use crate::webhooks::{ReplayError, ReplayGuard};

pub const HEADER_KEY_ID: &str = "X-Pulsara-Key-Id";
pub const HEADER_TIMESTAMP: &str = "X-Pulsara-Timestamp";
pub const HEADER_NONCE: &str = "X-Pulsara-Nonce";
pub const HEADER_SIGNATURE: &str = "X-Pulsara-Signature";
/// Accepted clock difference, both directions.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// Longest key id and nonce accepted.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a signed request was refused. Messages never contain secrets or signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    #[error("request is not signed: header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {0} is empty, too long or has invalid characters")]
    MalformedHeader(&'static str),
    #[error("request timestamp is not unix seconds")]
    BadTimestamp,
    #[error(
        "request timestamp is {0} s old; outside the {TOLERANCE_SECS} s tolerance (check clocks)"
    )]
    Stale(i64),
    #[error("request timestamp is {0} s in the future; outside the {TOLERANCE_SECS} s tolerance (check clocks)")]
    Future(i64),
    #[error("key id {0:?} is unknown or revoked")]
    UnknownKey(String),
    #[error("request signature does not match (wrong secret, or method, path, timestamp, nonce or body changed)")]
    BadSignature,
    #[error("request nonce was already used; refusing the replay")]
    ReplayedNonce,
}

/// The four `X-Pulsara-*` headers for a request. `nonce` must be unique per key within the
/// tolerance window (the caller draws it from its random source).
pub fn sign(
    key_id: &str,
    secret: &Secret,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let sig = STANDARD.encode(mac(secret, method, path_and_query, &ts, nonce, body));
    vec![
        (HEADER_KEY_ID, key_id.to_owned()),
        (HEADER_TIMESTAMP, ts),
        (HEADER_NONCE, nonce.to_owned()),
        (HEADER_SIGNATURE, sig),
    ]
}

fn mac(
    secret: &Secret,
    method: &str,
    path_and_query: &str,
    ts: &str,
    nonce: &str,
    body: &[u8],
) -> [u8; 32] {
    let method = method.to_ascii_uppercase();
    let body_hash = sha256_hex(body);
    hmac_sha256(
        secret.expose().as_bytes(),
        &[
            method.as_bytes(),
            b"\n",
            path_and_query.as_bytes(),
            b"\n",
            ts.as_bytes(),
            b"\n",
            nonce.as_bytes(),
            b"\n",
            body_hash.as_bytes(),
        ],
    )
}

/// Verifies a signed request and returns its key id.
///
/// `lookup` maps a key id to its secret (`None` for unknown or revoked keys); `header` returns a
/// request header by name (it must match names case-insensitively, as HTTP does). The nonce is
/// remembered only once the signature is valid, so forged requests cannot burn nonces.
///
/// # Errors
/// A [`RequestAuthError`] per reason, checked in this order: missing/malformed headers, timestamp
/// window, unknown key, signature, replayed nonce.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    lookup: impl Fn(&str) -> Option<Secret>,
    method: &str,
    path_and_query: &str,
    header: &impl Fn(&str) -> Option<String>,
    body: &[u8],
    now_unix: i64,
    nonces: &mut ReplayGuard,
) -> Result<String, RequestAuthError> {
    let get = |name: &'static str| -> Result<String, RequestAuthError> {
        let v = header(name).ok_or(RequestAuthError::MissingHeader(name))?;
        let v = v.trim();
        if v.is_empty() || v.len() > MAX_TOKEN_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RequestAuthError::MalformedHeader(name));
        }
        Ok(v.to_owned())
    };
    let key_id = get(HEADER_KEY_ID)?;
    let ts_raw = get(HEADER_TIMESTAMP)?;
    let nonce = get(HEADER_NONCE)?;
    let signature = get(HEADER_SIGNATURE)?;
    if ts_raw.len() > 12 || !ts_raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestAuthError::BadTimestamp);
    }
    let ts: i64 = ts_raw.parse().map_err(|_| RequestAuthError::BadTimestamp)?;
    let age = now_unix.saturating_sub(ts);
    if age > TOLERANCE_SECS {
        return Err(RequestAuthError::Stale(age));
    }
    if -age > TOLERANCE_SECS {
        return Err(RequestAuthError::Future(-age));
    }
    let secret = lookup(&key_id)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RequestAuthError::UnknownKey(key_id.clone()))?;
    let given = STANDARD
        .decode(&signature)
        .map_err(|_| RequestAuthError::BadSignature)?;
    let expected = mac(&secret, method, path_and_query, &ts_raw, &nonce, body);
    if !ct_eq(&expected, &given) {
        return Err(RequestAuthError::BadSignature);
    }
    // Remember past the far edge of the window, so a nonce cannot come back while its timestamp
    // is still acceptable.
    match nonces.check_and_insert(
        &format!("{key_id}\n{nonce}"),
        ts + TOLERANCE_SECS + 1,
        now_unix,
    ) {
        Ok(()) => Ok(key_id),
        Err(ReplayError::Replayed) => Err(RequestAuthError::ReplayedNonce),
        Err(ReplayError::BadId) => Err(RequestAuthError::MalformedHeader(HEADER_NONCE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "dash-secret-0123456789";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"call_sid":"CA1"}"#;

    fn lookup(id: &str) -> Option<Secret> {
        match id {
            "edge-1" => Some(Secret::new(SECRET)),
            "revoked" => Some(Secret::new("")),
            _ => None,
        }
    }

    fn headers_of<'a>(list: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| {
            list.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    fn signed(
        method: &str,
        path: &str,
        ts: i64,
        nonce: &str,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        sign(
            "edge-1",
            &Secret::new(SECRET),
            method,
            path,
            ts,
            nonce,
            body,
        )
    }

    #[test]
    fn known_answers_computed_with_python_hmac() {
        let h = signed("post", "/v1/calls?x=1", NOW, "n-0001", BODY);
        assert_eq!(
            h,
            vec![
                (HEADER_KEY_ID, "edge-1".to_owned()),
                (HEADER_TIMESTAMP, "1700000000".to_owned()),
                (HEADER_NONCE, "n-0001".to_owned()),
                (
                    HEADER_SIGNATURE,
                    "iO7cZ6CeEYBbHkUJWig2kDfHnDOQbmvNXzD0aR8dAkk=".to_owned()
                ),
            ]
        );
        let h = signed(
            "GET",
            "/v1/restaurants/by-number/%2B390612345678",
            NOW,
            "abc",
            b"",
        );
        assert_eq!(h[3].1, "8ih215bK1q138dOFXtH4g7NEjUzqd02ywhpEhEzrFas=");
    }

    #[test]
    fn valid_request_is_accepted_once() {
        let h = signed("POST", "/v1/calls?x=1", NOW, "n-0001", BODY);
        let mut guard = ReplayGuard::new(100);
        let id = verify(
            lookup,
            "POST",
            "/v1/calls?x=1",
            &headers_of(&h),
            BODY,
            NOW + 10,
            &mut guard,
        )
        .unwrap();
        assert_eq!(id, "edge-1");
        assert_eq!(
            verify(
                lookup,
                "POST",
                "/v1/calls?x=1",
                &headers_of(&h),
                BODY,
                NOW + 20,
                &mut guard
            ),
            Err(RequestAuthError::ReplayedNonce)
        );
        // Still refused at the far edge of the window.
        assert_eq!(
            verify(
                lookup,
                "POST",
                "/v1/calls?x=1",
                &headers_of(&h),
                BODY,
                NOW + TOLERANCE_SECS,
                &mut guard
            ),
            Err(RequestAuthError::ReplayedNonce)
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let h = signed("POST", "/v1/calls", NOW, "n1", BODY);
        let mut guard = ReplayGuard::new(100);
        for (i, name) in [
            HEADER_KEY_ID,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
        ]
        .into_iter()
        .enumerate()
        {
            let mut partial = h.clone();
            partial.remove(i);
            assert_eq!(
                verify(
                    lookup,
                    "POST",
                    "/v1/calls",
                    &headers_of(&partial),
                    BODY,
                    NOW,
                    &mut guard
                ),
                Err(RequestAuthError::MissingHeader(name))
            );
            let mut empty = h.clone();
            empty[i].1 = String::new();
            assert_eq!(
                verify(
                    lookup,
                    "POST",
                    "/v1/calls",
                    &headers_of(&empty),
                    BODY,
                    NOW,
                    &mut guard
                ),
                Err(RequestAuthError::MalformedHeader(name))
            );
        }
        let mut bad_ts = h.clone();
        bad_ts[1].1 = "17e8".into();
        assert_eq!(
            verify(
                lookup,
                "POST",
                "/v1/calls",
                &headers_of(&bad_ts),
                BODY,
                NOW,
                &mut guard
            ),
            Err(RequestAuthError::BadTimestamp)
        );
        assert!(
            guard.is_empty(),
            "nothing is remembered for refused requests"
        );
    }

    #[test]
    fn stale_future_unknown_and_revoked_keys() {
        let mut guard = ReplayGuard::new(100);
        let h = signed("GET", "/v1/x", NOW, "n1", b"");
        verify(
            lookup,
            "GET",
            "/v1/x",
            &headers_of(&h),
            b"",
            NOW + TOLERANCE_SECS,
            &mut guard,
        )
        .unwrap();
        let h = signed("GET", "/v1/x", NOW, "n2", b"");
        assert_eq!(
            verify(
                lookup,
                "GET",
                "/v1/x",
                &headers_of(&h),
                b"",
                NOW + TOLERANCE_SECS + 1,
                &mut guard
            ),
            Err(RequestAuthError::Stale(TOLERANCE_SECS + 1))
        );
        assert_eq!(
            verify(
                lookup,
                "GET",
                "/v1/x",
                &headers_of(&h),
                b"",
                NOW - TOLERANCE_SECS - 1,
                &mut guard
            ),
            Err(RequestAuthError::Future(TOLERANCE_SECS + 1))
        );
        for kid in ["nobody", "revoked"] {
            let h = sign(kid, &Secret::new(SECRET), "GET", "/v1/x", NOW, "n3", b"");
            assert_eq!(
                verify(
                    lookup,
                    "GET",
                    "/v1/x",
                    &headers_of(&h),
                    b"",
                    NOW,
                    &mut guard
                ),
                Err(RequestAuthError::UnknownKey(kid.to_owned()))
            );
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let mut guard = ReplayGuard::new(100);
        let h = signed("POST", "/v1/calls", NOW, "n1", BODY);
        let bad = |method: &str,
                   path: &str,
                   body: &[u8],
                   hs: &[(&'static str, String)],
                   g: &mut ReplayGuard| {
            verify(lookup, method, path, &headers_of(hs), body, NOW, g)
        };
        assert_eq!(
            bad("PUT", "/v1/calls", BODY, &h, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            bad("POST", "/v1/calls?a=1", BODY, &h, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        assert_eq!(
            bad("POST", "/v1/calls", b"{}", &h, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        let mut other_nonce = h.clone();
        other_nonce[2].1 = "n2".into();
        assert_eq!(
            bad("POST", "/v1/calls", BODY, &other_nonce, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        let mut other_ts = h.clone();
        other_ts[1].1 = (NOW + 1).to_string();
        assert_eq!(
            bad("POST", "/v1/calls", BODY, &other_ts, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        let wrong_secret = sign(
            "edge-1",
            &Secret::new("another-secret-value"),
            "POST",
            "/v1/calls",
            NOW,
            "n1",
            BODY,
        );
        assert_eq!(
            bad("POST", "/v1/calls", BODY, &wrong_secret, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        let mut empty_sig = h.clone();
        empty_sig[3].1 = "AAAA".into();
        assert_eq!(
            bad("POST", "/v1/calls", BODY, &empty_sig, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        let mut not_b64 = h.clone();
        not_b64[3].1 = "%%%".into();
        assert_eq!(
            bad("POST", "/v1/calls", BODY, &not_b64, &mut guard),
            Err(RequestAuthError::BadSignature)
        );
        // Forged attempts did not burn the nonce: the genuine request still goes through.
        assert!(guard.is_empty());
        bad("POST", "/v1/calls", BODY, &h, &mut guard).unwrap();
        // Method case does not matter.
        let h2 = signed("POST", "/v1/calls", NOW, "n9", BODY);
        bad("post", "/v1/calls", BODY, &h2, &mut guard).unwrap();
    }

    #[test]
    fn nonces_are_per_key() {
        let lookup2 = |id: &str| match id {
            "a" => Some(Secret::new("secret-a-123456")),
            "b" => Some(Secret::new("secret-b-123456")),
            _ => None,
        };
        let mut guard = ReplayGuard::new(100);
        let ha = sign(
            "a",
            &Secret::new("secret-a-123456"),
            "GET",
            "/",
            NOW,
            "same",
            b"",
        );
        let hb = sign(
            "b",
            &Secret::new("secret-b-123456"),
            "GET",
            "/",
            NOW,
            "same",
            b"",
        );
        verify(lookup2, "GET", "/", &headers_of(&ha), b"", NOW, &mut guard).unwrap();
        verify(lookup2, "GET", "/", &headers_of(&hb), b"", NOW, &mut guard).unwrap();
    }

    #[test]
    fn errors_never_contain_the_secret() {
        let mut guard = ReplayGuard::new(10);
        let h = sign(
            "edge-1",
            &Secret::new("wrong-secret-xyz"),
            "GET",
            "/",
            NOW,
            "n",
            b"",
        );
        let err = verify(lookup, "GET", "/", &headers_of(&h), b"", NOW, &mut guard).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains(SECRET) && !text.contains("wrong-secret-xyz") && !text.contains(&h[3].1)
        );
    }
}
