//! The handoff token: how the edge tells a bridge "this call is genuine, for this restaurant and
//! configuration version, routed to your region, within the last minute".
//!
//! Wire form (travels as a `<Parameter name="handoff">` of the Stream TwiML):
//!
//! ```text
//! v1.<key id>.<base64url(claims JSON)>.<base64url(HMAC-SHA256(key, "v1.<key id>.<claims b64>"))>
//! ```
//!
//! The key id selects one key of a [`HandoffKeys`] ring, so keys rotate without dropping calls:
//! edges sign with the newest key while bridges still accept the previous ones. Single use is the
//! bridge's job (it remembers [`HandoffClaims::replay_key`] until expiry).
//!
//! The claims may also carry a [`HandoffFallback`]: what the bridge needs to forward the caller
//! politely when it cannot load the restaurant's configuration (the fallback number, the Twilio
//! `<Say>` locale and voice, the restaurant's apology). Its fields are optional and left out when
//! empty, so a token without them is byte for byte what older edges issued, and a bridge that
//! does not know them ignores them: the format stays `v1` in both directions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::Secret;

/// Longest lifetime a token may have; Twilio opens the stream within a second or two of the TwiML.
pub const MAX_LIFETIME_SECS: i64 = 60;
/// Tolerated clock difference between edge and bridge.
pub const CLOCK_SKEW_SECS: i64 = 5;
const VERSION: &str = "v1";
/// Longest apology carried in a token; a longer one is left out (the bridge then uses its
/// generic message), so a token stays well under the 2 KB the bridge accepts.
pub const MAX_APOLOGY_CHARS: usize = 240;
/// Longest fallback number, `<Say>` locale or voice name carried in a token.
const MAX_FALLBACK_FIELD: usize = 64;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffClaims {
    pub call_sid: String,
    pub restaurant_id: String,
    pub config_version: u64,
    pub region: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds (`iat < exp <= iat + 60`).
    pub exp: i64,
}

/// What the bridge needs to forward a caller when the restaurant's configuration cannot be
/// loaded (dashboard unreachable, nothing cached): signed with the rest of the claims, so a
/// forged number can never be dialled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffFallback {
    /// The restaurant's fallback (else staff) number, E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_number: Option<String>,
    /// The Twilio `<Say>` locale for the apology (`it-IT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say_language: Option<String>,
    /// The Twilio `<Say>` voice (`Polly.Bianca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say_voice: Option<String>,
    /// The restaurant's own apology (at most [`MAX_APOLOGY_CHARS`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apology: Option<String>,
}

impl HandoffFallback {
    /// Drops what a token should not carry: an apology longer than [`MAX_APOLOGY_CHARS`],
    /// empty values, and implausibly long numbers or voice names.
    #[must_use]
    pub fn bounded(self) -> Self {
        let short = |v: Option<String>, max: usize| {
            v.filter(|s| !s.trim().is_empty() && s.chars().count() <= max)
        };
        Self {
            fallback_number: short(self.fallback_number, MAX_FALLBACK_FIELD),
            say_language: short(self.say_language, MAX_FALLBACK_FIELD),
            say_voice: short(self.say_voice, MAX_FALLBACK_FIELD),
            apology: short(self.apology, MAX_APOLOGY_CHARS),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The claims JSON: the core claims, then the optional fallback fields.
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(flatten)]
    claims: &'a HandoffClaims,
    #[serde(flatten)]
    fallback: &'a HandoffFallback,
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(flatten)]
    claims: HandoffClaims,
    #[serde(flatten)]
    fallback: HandoffFallback,
}

impl HandoffClaims {
    /// Identifies this token for single-use tracking.
    pub fn replay_key(&self) -> String {
        format!("{}:{}", self.call_sid, self.iat)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("handoff token is malformed: {0}")]
    Malformed(&'static str),
    #[error("handoff token uses unsupported version; expected v1")]
    UnsupportedVersion,
    #[error("handoff token key id {0:?} is not known to this bridge; check HANDOFF_KEYS rotation")]
    UnknownKey(String),
    #[error("handoff token signature does not match")]
    BadSignature,
    #[error("handoff token expired {0} s ago")]
    Expired(i64),
    #[error("handoff token is issued in the future; check clocks")]
    NotYetValid,
    #[error("handoff token lifetime exceeds {MAX_LIFETIME_SECS} s")]
    LifetimeTooLong,
    #[error("handoff token was issued for another call")]
    WrongCall,
    #[error("handoff token was issued for region {0:?}")]
    WrongRegion(String),
    #[error("handoff key ring is empty or malformed: {0}")]
    BadKeyRing(String),
}

/// A ring of signing keys; the first one signs, all of them verify.
#[derive(Clone)]
pub struct HandoffKeys {
    keys: Vec<(String, Secret)>,
}

impl std::fmt::Debug for HandoffKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("HandoffKeys")
            .field("key_ids", &ids)
            .finish()
    }
}

impl HandoffKeys {
    /// Parses `"kid:secret[,kid:secret…]"`; the first entry is the signing key.
    ///
    /// # Errors
    /// [`HandoffError::BadKeyRing`] for an empty ring, an entry without `:`, an empty id, a secret
    /// shorter than 16 bytes, or a duplicate id. The message never contains a secret.
    pub fn parse(spec: &Secret) -> Result<Self, HandoffError> {
        let mut keys: Vec<(String, Secret)> = Vec::new();
        for (i, entry) in spec.expose().split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| HandoffError::BadKeyRing(format!("entry {i} is not kid:secret")))?;
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(HandoffError::BadKeyRing(format!(
                    "entry {i} has an invalid key id"
                )));
            }
            if key.len() < 16 {
                return Err(HandoffError::BadKeyRing(format!(
                    "key {id:?} is shorter than 16 bytes"
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(HandoffError::BadKeyRing(format!(
                    "key id {id:?} appears twice"
                )));
            }
            keys.push((id.to_owned(), Secret::new(key)));
        }
        if keys.is_empty() {
            return Err(HandoffError::BadKeyRing("no keys".into()));
        }
        Ok(Self { keys })
    }

    /// A ring with a single key.
    pub fn single(id: &str, key: Secret) -> Self {
        Self {
            keys: vec![(id.to_owned(), key)],
        }
    }

    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].0
    }

    fn key(&self, id: &str) -> Option<&Secret> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, s)| s)
    }

    /// Signs `claims` with the newest key.
    ///
    /// # Errors
    /// [`HandoffError::LifetimeTooLong`] if `exp` is not within 60 s after `iat`.
    pub fn issue(&self, claims: &HandoffClaims) -> Result<String, HandoffError> {
        self.issue_with(claims, &HandoffFallback::default())
    }

    /// Signs `claims` plus the caller's fallback (see [`HandoffFallback`]; its oversized fields
    /// are dropped by [`HandoffFallback::bounded`]).
    ///
    /// # Errors
    /// As [`HandoffKeys::issue`].
    pub fn issue_with(
        &self,
        claims: &HandoffClaims,
        fallback: &HandoffFallback,
    ) -> Result<String, HandoffError> {
        if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_LIFETIME_SECS {
            return Err(HandoffError::LifetimeTooLong);
        }
        let (kid, key) = &self.keys[0];
        let fallback = fallback.clone().bounded();
        let wire = WireOut {
            claims,
            fallback: &fallback,
        };
        let payload = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&wire).map_err(|_| HandoffError::Malformed("claims"))?);
        let signed = format!("{VERSION}.{kid}.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(mac(key, signed.as_bytes()).finalize().into_bytes());
        Ok(format!("{signed}.{sig}"))
    }

    /// Checks signature, lifetime and call binding, returning the claims.
    ///
    /// `expected_call_sid` is the CallSid from the Media Stream's `start` message; `region`, when
    /// given, must match the token's region.
    ///
    /// # Errors
    /// One [`HandoffError`] variant per reason; the signature is checked (in constant time) before
    /// anything in the payload is trusted.
    pub fn verify(
        &self,
        token: &str,
        expected_call_sid: &str,
        region: Option<&str>,
        now_unix: i64,
    ) -> Result<HandoffClaims, HandoffError> {
        self.verify_with_fallback(token, expected_call_sid, region, now_unix)
            .map(|(claims, _)| claims)
    }

    /// [`HandoffKeys::verify`], also returning the signed [`HandoffFallback`] (empty for tokens
    /// that carry none).
    ///
    /// # Errors
    /// As [`HandoffKeys::verify`].
    pub fn verify_with_fallback(
        &self,
        token: &str,
        expected_call_sid: &str,
        region: Option<&str>,
        now_unix: i64,
    ) -> Result<(HandoffClaims, HandoffFallback), HandoffError> {
        if token.len() > 2048 {
            return Err(HandoffError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(version), Some(kid), Some(payload), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(HandoffError::Malformed("expected four dot-separated parts"));
        };
        if version != VERSION {
            return Err(HandoffError::UnsupportedVersion);
        }
        let key = self
            .key(kid)
            .ok_or_else(|| HandoffError::UnknownKey(kid.to_owned()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| HandoffError::Malformed("signature is not base64url"))?;
        let signed_len = version.len() + 1 + kid.len() + 1 + payload.len();
        mac(key, &token.as_bytes()[..signed_len])
            .verify_slice(&sig)
            .map_err(|_| HandoffError::BadSignature)?;
        let WireIn { claims, fallback } = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(HandoffError::Malformed("claims are not valid JSON"))?;
        if claims.exp <= claims.iat || claims.exp - claims.iat > MAX_LIFETIME_SECS {
            return Err(HandoffError::LifetimeTooLong);
        }
        if claims.iat > now_unix + CLOCK_SKEW_SECS {
            return Err(HandoffError::NotYetValid);
        }
        if now_unix >= claims.exp + CLOCK_SKEW_SECS {
            return Err(HandoffError::Expired(now_unix - claims.exp));
        }
        if claims.call_sid != expected_call_sid {
            return Err(HandoffError::WrongCall);
        }
        if let Some(region) = region {
            if claims.region != region {
                return Err(HandoffError::WrongRegion(claims.region));
            }
        }
        Ok((claims, fallback.bounded()))
    }
}

fn mac(key: &Secret, msg: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    m.update(msg);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> HandoffKeys {
        HandoffKeys::parse(&Secret::new(
            "k2:second-key-0123456789,k1:first-key-0123456789",
        ))
        .unwrap()
    }

    fn claims() -> HandoffClaims {
        HandoffClaims {
            call_sid: "CA1234567890ABCDE".into(),
            restaurant_id: "trattoria-roma".into(),
            config_version: 7,
            region: "eu-west".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_060,
        }
    }

    /// Known answer computed independently (Python `hmac`/`base64` over the same claims JSON).
    #[test]
    fn known_answer() {
        let token = ring().issue(&claims()).unwrap();
        assert_eq!(
            token,
            "v1.k2.eyJjYWxsX3NpZCI6IkNBMTIzNDU2Nzg5MEFCQ0RFIiwicmVzdGF1cmFudF9pZCI6InRyYXR0b3JpYS1yb21hIiwiY29uZmlnX3ZlcnNpb24iOjcsInJlZ2lvbiI6ImV1LXdlc3QiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDA2MH0.UmMbv88KSFEKnxWRGTFbCbtxPp7WbLEu_1kL58zd9Ag"
        );
    }

    #[test]
    fn round_trip_and_rotation() {
        let token = ring().issue(&claims()).unwrap();
        let got = ring()
            .verify(&token, "CA1234567890ABCDE", Some("eu-west"), 1_700_000_010)
            .unwrap();
        assert_eq!(got, claims());
        // A bridge that has only the old key k1 must not accept a k2 token…
        let old = HandoffKeys::parse(&Secret::new("k1:first-key-0123456789")).unwrap();
        assert_eq!(
            old.verify(&token, "CA1234567890ABCDE", None, 1_700_000_010),
            Err(HandoffError::UnknownKey("k2".into()))
        );
        // …while a token signed with k1 still verifies on a ring that signs with k2.
        let t1 = old.issue(&claims()).unwrap();
        assert!(ring()
            .verify(&t1, "CA1234567890ABCDE", None, 1_700_000_010)
            .is_ok());
    }

    #[test]
    fn rejects_tampering_expiry_and_wrong_call() {
        let keys = ring();
        let token = keys.issue(&claims()).unwrap();
        let now = 1_700_000_010;
        // Flip one character of the payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = HandoffClaims {
            restaurant_id: "other".into(),
            ..claims()
        };
        parts[2] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            keys.verify(&parts.join("."), "CA1234567890ABCDE", None, now),
            Err(HandoffError::BadSignature)
        );
        // Truncated / empty signature.
        let no_sig = format!(
            "{}.{}.{}.",
            parts[0],
            parts[1],
            token.split('.').nth(2).unwrap()
        );
        assert_eq!(
            keys.verify(&no_sig, "CA1234567890ABCDE", None, now),
            Err(HandoffError::BadSignature)
        );
        assert!(matches!(
            keys.verify("garbage", "CA1", None, now),
            Err(HandoffError::Malformed(_))
        ));
        assert_eq!(
            keys.verify(&token, "CA1234567890ABCDE", None, 1_700_000_070),
            Err(HandoffError::Expired(10))
        );
        assert_eq!(
            keys.verify(&token, "CA1234567890ABCDE", None, 1_699_999_000),
            Err(HandoffError::NotYetValid)
        );
        assert_eq!(
            keys.verify(&token, "CAother", None, now),
            Err(HandoffError::WrongCall)
        );
        assert_eq!(
            keys.verify(&token, "CA1234567890ABCDE", Some("us-east"), now),
            Err(HandoffError::WrongRegion("eu-west".into()))
        );
        let long = HandoffClaims {
            exp: claims().iat + 61,
            ..claims()
        };
        assert_eq!(keys.issue(&long), Err(HandoffError::LifetimeTooLong));
    }

    fn fallback() -> HandoffFallback {
        HandoffFallback {
            fallback_number: Some("+390600000099".into()),
            say_language: Some("it-IT".into()),
            say_voice: Some("Polly.Bianca".into()),
            apology: Some("Ci scusiamo, non possiamo rispondere ora.".into()),
        }
    }

    /// Known answer computed independently (Python `json`/`hmac`/`base64`): the fallback fields
    /// follow the core claims, in this order.
    #[test]
    fn known_answer_with_fallback() {
        let token = ring().issue_with(&claims(), &fallback()).unwrap();
        assert_eq!(
            token,
            "v1.k2.eyJjYWxsX3NpZCI6IkNBMTIzNDU2Nzg5MEFCQ0RFIiwicmVzdGF1cmFudF9pZCI6InRyYXR0b3JpYS1yb21hIiwiY29uZmlnX3ZlcnNpb24iOjcsInJlZ2lvbiI6ImV1LXdlc3QiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDA2MCwiZmFsbGJhY2tfbnVtYmVyIjoiKzM5MDYwMDAwMDA5OSIsInNheV9sYW5ndWFnZSI6Iml0LUlUIiwic2F5X3ZvaWNlIjoiUG9sbHkuQmlhbmNhIiwiYXBvbG9neSI6IkNpIHNjdXNpYW1vLCBub24gcG9zc2lhbW8gcmlzcG9uZGVyZSBvcmEuIn0.OxepayYY0vFx5V6UQ6OwG6C-wiREcUpUJwiK950lnkk"
        );
        assert!(token.len() < 512, "{}", token.len());
        let (got, fb) = ring()
            .verify_with_fallback(&token, "CA1234567890ABCDE", Some("eu-west"), 1_700_000_010)
            .unwrap();
        assert_eq!((got, fb), (claims(), fallback()));
    }

    #[test]
    fn fallback_is_compatible_both_ways() {
        // An empty fallback issues exactly the old token…
        assert_eq!(
            ring()
                .issue_with(&claims(), &HandoffFallback::default())
                .unwrap(),
            ring().issue(&claims()).unwrap()
        );
        // …which a new bridge reads with an empty fallback.
        let old = ring().issue(&claims()).unwrap();
        let (_, fb) = ring()
            .verify_with_fallback(&old, "CA1234567890ABCDE", None, 1_700_000_010)
            .unwrap();
        assert!(fb.is_empty());
        // A bridge that predates the fallback fields still verifies a token carrying them.
        let new = ring().issue_with(&claims(), &fallback()).unwrap();
        assert_eq!(
            ring()
                .verify(&new, "CA1234567890ABCDE", None, 1_700_000_010)
                .unwrap(),
            claims()
        );
        let payload = URL_SAFE_NO_PAD
            .decode(new.split('.').nth(2).unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<HandoffClaims>(&payload).unwrap(),
            claims()
        );
    }

    #[test]
    fn fallback_is_signed_and_bounded() {
        let keys = ring();
        let token = keys.issue_with(&claims(), &fallback()).unwrap();
        // Swapping the number for another one breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let wire = WireOut {
            claims: &claims(),
            fallback: &HandoffFallback {
                fallback_number: Some("+19005550100".into()),
                ..fallback()
            },
        };
        parts[2] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap());
        assert_eq!(
            keys.verify_with_fallback(&parts.join("."), "CA1234567890ABCDE", None, 1_700_000_010),
            Err(HandoffError::BadSignature)
        );
        // An apology too long to travel is left out; the rest stays.
        let long = HandoffFallback {
            apology: Some("a".repeat(MAX_APOLOGY_CHARS + 1)),
            ..fallback()
        };
        let token = keys.issue_with(&claims(), &long).unwrap();
        let (_, fb) = keys
            .verify_with_fallback(&token, "CA1234567890ABCDE", None, 1_700_000_010)
            .unwrap();
        assert_eq!(
            fb,
            HandoffFallback {
                apology: None,
                ..fallback()
            }
        );
        let blank = HandoffFallback {
            fallback_number: Some("  ".into()),
            ..Default::default()
        };
        assert!(blank.bounded().is_empty());
    }

    #[test]
    fn key_ring_errors_never_print_secrets() {
        for spec in [
            "",
            "nocolon",
            "k1:tinysecret",
            "k1:first-key-0123456789,k1:first-key-0123456789",
        ] {
            let err = HandoffKeys::parse(&Secret::new(spec))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("first-key") && !err.contains("tinysecret"),
                "{err}"
            );
        }
        assert!(!format!("{:?}", ring()).contains("key-0123"));
    }
}
