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
