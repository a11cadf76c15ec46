//! Twilio request signature validation (`X-Twilio-Signature`), so the edge only acts on webhooks
//! that really come from Twilio.
//!
//! The signature is `base64(HMAC-SHA1(auth token, URL + name1 + value1 + name2 + value2 …))` with
//! the POST parameters sorted by name (then value; repeated names contribute every value). Twilio is
//! inconsistent about the default port in the URL, so, like its own helper libraries, [`validate`]
//! accepts the signature computed over the URL with and without `:443`/`:80`. The URL must be the
//! public URL rebuilt from configuration, never from the `Host` header.
//!
//! JSON bodies are signed through a `bodySHA256` query parameter instead ([`validate_json`]).
//! The Media Streams WebSocket upgrade is signed over its `wss://` URL with no parameters:
//! `validate(token, "wss://host/media", &[], header)` handles it (`:443` variants included).
//! Twilio adds parameters without notice, so callers sign over every received parameter
//! ([`parse_form`] returns them all). A (name, value) pair that occurs twice is signed once, as
//! Twilio's Python and Node libraries do (both de-duplicate a name's values before sorting them).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::crypto::{ct_eq, hmac_sha1, sha256_hex};
use crate::secret::Secret;

/// Largest form body [`parse_form`] accepts. Twilio's voice webhooks are a few KiB.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Most parameters [`parse_form`] accepts.
pub const MAX_FORM_PARAMS: usize = 256;
/// Length of an HMAC-SHA1 digest.
const SHA1_LEN: usize = 20;
/// Longest header worth decoding (a valid one is 28 characters).
const MAX_HEADER_LEN: usize = 128;

/// Why a request's Twilio signature was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Twilio-Signature header is missing")]
    Missing,
    #[error("X-Twilio-Signature header is empty")]
    Empty,
    #[error("X-Twilio-Signature header is not valid base64")]
    NotBase64,
    #[error("X-Twilio-Signature has {0} bytes; an HMAC-SHA1 has 20")]
    WrongLength(usize),
    #[error("X-Twilio-Signature does not match; check TWILIO_AUTH_TOKEN and that PUBLIC_BASE_URL is the URL Twilio calls")]
    Mismatch,
    #[error("the Twilio auth token is not configured")]
    NoAuthToken,
    #[error("URL {0:?} is not an absolute http(s) URL")]
    InvalidUrl(String),
    #[error("JSON request URL has no bodySHA256 query parameter")]
    MissingBodyHash,
    #[error("body does not match the bodySHA256 query parameter")]
    BodyHashMismatch,
}

/// Why a form body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form body has {0} bytes; the limit is {MAX_FORM_BYTES}")]
    TooLarge(usize),
    #[error("form body has more than {MAX_FORM_PARAMS} parameters")]
    TooManyParams,
}

/// The expected `X-Twilio-Signature` for `url` and POST `params` (base64 HMAC-SHA1).
pub fn compute_signature(auth_token: &Secret, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(raw_signature(auth_token, url, params))
}

fn raw_signature(auth_token: &Secret, url: &str, params: &[(String, String)]) -> [u8; SHA1_LEN] {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * sorted.len());
    parts.push(url.as_bytes());
    for (k, v) in sorted {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    hmac_sha1(auth_token.expose().as_bytes(), &parts)
}

/// Checks `header` (the `X-Twilio-Signature` value) against `url` + `params`.
///
/// # Errors
/// A distinct [`SignatureError`] for a missing, empty, non-base64 or wrong-length header, an
/// unconfigured token, an unusable URL, or a mismatch. The comparison is constant-time.
pub fn validate(
    auth_token: &Secret,
    url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let given = decode_header(header)?;
    if auth_token.is_empty() {
        return Err(SignatureError::NoAuthToken);
    }
    let alternate = port_variant(url)?;
    let mut ok = ct_eq(&raw_signature(auth_token, url, params), &given);
    if let Some(alt) = alternate {
        // Always compute both, so timing does not reveal which form matched.
        ok |= ct_eq(&raw_signature(auth_token, &alt, params), &given);
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks a JSON-bodied request: the signature covers the URL (which carries
/// `bodySHA256=<hex sha256 of the body>`) with no parameters, then the body must match that hash.
///
/// # Errors
/// As [`validate`], plus [`SignatureError::MissingBodyHash`] and
/// [`SignatureError::BodyHashMismatch`].
pub fn validate_json(
    auth_token: &Secret,
    url: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    validate(auth_token, url, &[], header)?;
    let query = url
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .ok_or(SignatureError::MissingBodyHash)?;
    let expected = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.to_ascii_lowercase())
        .ok_or(SignatureError::MissingBodyHash)?;
    if ct_eq(sha256_hex(body).as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::BodyHashMismatch)
    }
}

/// Parses an `application/x-www-form-urlencoded` body into every (name, value) pair, in order.
/// Invalid UTF-8 is replaced (U+FFFD), which then fails signature validation rather than panicking.
///
/// # Errors
/// [`FormError::TooLarge`] over [`MAX_FORM_BYTES`], [`FormError::TooManyParams`] over
/// [`MAX_FORM_PARAMS`].
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(FormError::TooLarge(body.len()));
    }
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.len() == MAX_FORM_PARAMS {
            return Err(FormError::TooManyParams);
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn decode_header(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    if header.is_empty() {
        return Err(SignatureError::Empty);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::WrongLength(header.len() * 3 / 4));
    }
    let bytes = STANDARD
        .decode(header)
        .map_err(|_| SignatureError::NotBase64)?;
    if bytes.len() != SHA1_LEN {
        return Err(SignatureError::WrongLength(bytes.len()));
    }
    Ok(bytes)
}

/// The same URL with the scheme's default port added (when absent) or removed (when it is the
/// default port). `None` when the URL carries a non-default port (only one form is then valid).
fn port_variant(url: &str) -> Result<Option<String>, SignatureError> {
    let invalid = || SignatureError::InvalidUrl(url.chars().take(200).collect());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return Err(invalid()),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    if host_port.is_empty() {
        return Err(invalid());
    }
    // A port is a `:digits` suffix outside IPv6 brackets.
    let port_sep = host_port
        .rfind(':')
        .filter(|&i| !host_port[i..].contains(']'));
    let prefix = &url[..scheme.len() + 3 + host_start];
    match port_sep {
        None => Ok(Some(format!("{prefix}{host_port}:{default_port}{tail}"))),
        Some(i) => {
            let port = &host_port[i + 1..];
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            if port == default_port {
                Ok(Some(format!("{prefix}{}{tail}", &host_port[..i])))
            } else {
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn token() -> Secret {
        Secret::new("12345")
    }

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn known_answer_vectors() {
        assert_eq!(
            compute_signature(&token(), URL, &params("+12349013030")),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert_eq!(
            compute_signature(&token(), URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        validate(
            &token(),
            URL,
            &params("+12349013030"),
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        )
        .unwrap();
        validate(
            &token(),
            URL,
            &params("+14158675309"),
            Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        )
        .unwrap();
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let mut p = params("+12349013030");
        p.reverse();
        assert_eq!(
            compute_signature(&token(), URL, &p),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn header_problems_have_distinct_errors() {
        let p = params("+12349013030");
        assert_eq!(
            validate(&token(), URL, &p, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            validate(&token(), URL, &p, Some("")),
            Err(SignatureError::Empty)
        );
        assert_eq!(
            validate(&token(), URL, &p, Some("  ")),
            Err(SignatureError::Empty)
        );
        assert_eq!(
            validate(&token(), URL, &p, Some("not base64!!")),
            Err(SignatureError::NotBase64)
        );
        assert_eq!(
            validate(&token(), URL, &p, Some("AAAA")),
            Err(SignatureError::WrongLength(3))
        );
        // Prefix of the right signature: decodes, but too short.
        assert_eq!(
            validate(&token(), URL, &p, Some("0/KCTR6DLpKmkAf8")),
            Err(SignatureError::WrongLength(12))
        );
        let long = "A".repeat(400);
        assert!(matches!(
            validate(&token(), URL, &p, Some(&long)),
            Err(SignatureError::WrongLength(_))
        ));
        // Right length, wrong bytes.
        assert_eq!(
            validate(&token(), URL, &p, Some("1/KCTR6DLpKmkAf8muzZqo1nDgQ=")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_token_fails_closed() {
        let p = params("+12349013030");
        let sig = compute_signature(&Secret::new(""), URL, &p);
        assert_eq!(
            validate(&Secret::new(""), URL, &p, Some(&sig)),
            Err(SignatureError::NoAuthToken)
        );
    }

    #[test]
    fn tampered_extra_and_missing_params_fail() {
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut tampered = params("+12349013030");
        tampered[2].1 = "1235".into();
        assert_eq!(
            validate(&token(), URL, &tampered, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        let mut extra = params("+12349013030");
        extra.push(("CallStatus".into(), "ringing".into()));
        assert_eq!(
            validate(&token(), URL, &extra, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        let mut fewer = params("+12349013030");
        fewer.pop();
        assert_eq!(
            validate(&token(), URL, &fewer, Some(sig)),
            Err(SignatureError::Mismatch)
        );
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert_eq!(
            validate(&token(), other_url, &params("+12349013030"), Some(sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(
                &Secret::new("54321"),
                URL,
                &params("+12349013030"),
                Some(sig)
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn repeated_names_are_all_signed_sorted_by_value() {
        let p: Vec<(String, String)> = vec![
            ("A".into(), "2".into()),
            ("B".into(), "x".into()),
            ("A".into(), "1".into()),
        ];
        let manual = STANDARD.encode(hmac_sha1(b"12345", &[b"https://x.test/hA1A2Bx"]));
        assert_eq!(compute_signature(&token(), "https://x.test/h", &p), manual);
        validate(&token(), "https://x.test/h", &p, Some(&manual)).unwrap();
        let dropped = &p[..2];
        assert_eq!(
            validate(&token(), "https://x.test/h", dropped, Some(&manual)),
            Err(SignatureError::Mismatch)
        );
        // An exact duplicate pair counts once, as in Twilio's libraries.
        let mut dup = p.clone();
        dup.push(("A".into(), "2".into()));
        assert_eq!(
            compute_signature(&token(), "https://x.test/h", &dup),
            manual
        );
    }

    #[test]
    fn default_port_variants_are_accepted() {
        let p = params("+12349013030");
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        // Signed without port, received with it.
        validate(
            &token(),
            with_port,
            &p,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        )
        .unwrap();
        // Signed with port, received without it.
        let sig = compute_signature(&token(), with_port, &p);
        assert_ne!(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        validate(&token(), URL, &p, Some(&sig)).unwrap();
        // http and :80.
        let sig = compute_signature(&token(), "http://h.test:80/v", &p);
        validate(&token(), "http://h.test/v", &p, Some(&sig)).unwrap();
        // The wrong default port is not accepted.
        let sig = compute_signature(&token(), "https://h.test:80/v", &p);
        assert_eq!(
            validate(&token(), "https://h.test/v", &p, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        // A non-default port must match exactly.
        let sig = compute_signature(&token(), "https://h.test:8443/v", &p);
        validate(&token(), "https://h.test:8443/v", &p, Some(&sig)).unwrap();
        assert_eq!(
            validate(&token(), "https://h.test/v", &p, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn port_variant_handles_userinfo_ipv6_and_bare_hosts() {
        assert_eq!(
            port_variant("https://u:p@h.test/x").unwrap().unwrap(),
            "https://u:p@h.test:443/x"
        );
        assert_eq!(
            port_variant("https://u:p@h.test:443?q").unwrap().unwrap(),
            "https://u:p@h.test?q"
        );
        assert_eq!(
            port_variant("http://[::1]/x").unwrap().unwrap(),
            "http://[::1]:80/x"
        );
        assert_eq!(
            port_variant("http://[::1]:80/x").unwrap().unwrap(),
            "http://[::1]/x"
        );
        assert_eq!(
            port_variant("https://h.test").unwrap().unwrap(),
            "https://h.test:443"
        );
        assert_eq!(
            port_variant("wss://h.test/media").unwrap().unwrap(),
            "wss://h.test:443/media"
        );
        assert_eq!(
            port_variant("ws://h.test:80/media").unwrap().unwrap(),
            "ws://h.test/media"
        );
        assert!(port_variant("ftp://h.test/").is_err());
        assert!(port_variant("h.test/x").is_err());
        assert!(port_variant("https:///x").is_err());
        assert!(port_variant("https://h.test:44x3/").is_err());
    }

    #[test]
    fn media_stream_upgrade_url_validates() {
        let sig = compute_signature(&token(), "wss://bridge.test:443/media", &[]);
        validate(&token(), "wss://bridge.test/media", &[], Some(&sig)).unwrap();
        validate(&token(), "wss://bridge.test:443/media", &[], Some(&sig)).unwrap();
        assert_eq!(
            validate(&token(), "wss://bridge.test/other", &[], Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn invalid_url_is_an_error_not_a_panic() {
        let p = params("+12349013030");
        assert!(matches!(
            validate(
                &token(),
                "/relative",
                &p,
                Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
            ),
            Err(SignatureError::InvalidUrl(_))
        ));
    }

    #[test]
    fn json_body_via_body_sha256() {
        let body = br#"{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}"#;
        let hash = "5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9";
        assert_eq!(sha256_hex(body), hash);
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={hash}");
        let sig = compute_signature(&token(), &url, &[]);
        validate_json(&token(), &url, body, Some(&sig)).unwrap();
        // Port variant works for JSON too.
        let with_port = format!("https://mycompany.com:443/myapp.php?bodySHA256={hash}");
        validate_json(&token(), &with_port, body, Some(&sig)).unwrap();
        // Tampered body.
        assert_eq!(
            validate_json(&token(), &url, b"{\"CallSid\":\"CA0\"}", Some(&sig)),
            Err(SignatureError::BodyHashMismatch)
        );
        // Missing hash parameter.
        let plain = "https://mycompany.com/myapp.php?foo=1";
        let sig = compute_signature(&token(), plain, &[]);
        assert_eq!(
            validate_json(&token(), plain, body, Some(&sig)),
            Err(SignatureError::MissingBodyHash)
        );
        // Signature over a different hash.
        assert_eq!(
            validate_json(&token(), &url, body, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn parse_form_decodes_and_bounds() {
        let p = parse_form(b"CallSid=CA1&From=%2B14155550100&Caller=+14155550100&A=1&A=2").unwrap();
        assert_eq!(p[1], ("From".into(), "+14155550100".into()));
        // '+' decodes to a space, exactly as Twilio's own libraries see it.
        assert_eq!(p[2], ("Caller".into(), " 14155550100".into()));
        assert_eq!(p.iter().filter(|(k, _)| k == "A").count(), 2);
        assert_eq!(parse_form(b"").unwrap(), vec![]);
        assert_eq!(
            parse_form(&vec![b'a'; MAX_FORM_BYTES + 1]),
            Err(FormError::TooLarge(MAX_FORM_BYTES + 1))
        );
        let many: String = (0..=MAX_FORM_PARAMS).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(parse_form(many.as_bytes()), Err(FormError::TooManyParams));
        let exactly: String = (0..MAX_FORM_PARAMS).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(
            parse_form(exactly.as_bytes()).unwrap().len(),
            MAX_FORM_PARAMS
        );
        // Invalid UTF-8 does not panic.
        assert_eq!(parse_form(b"a=%FF").unwrap()[0].1, "\u{FFFD}");
    }

    #[test]
    fn form_round_trip_validates() {
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
        let p = parse_form(body).unwrap();
        validate(&token(), URL, &p, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        #[test]
        fn signatures_round_trip_and_detect_changes(
            pairs in proptest::collection::vec(("[A-Za-z]{1,8}", "\\PC{0,12}"), 0..12),
            path in "[a-z/]{0,12}",
        ) {
            let params: Vec<(String, String)> = pairs;
            let url = format!("https://edge.test/{path}");
            let sig = compute_signature(&token(), &url, &params);
            proptest::prop_assert_eq!(validate(&token(), &url, &params, Some(&sig)), Ok(()));
            let mut shuffled = params.clone();
            shuffled.reverse();
            proptest::prop_assert_eq!(validate(&token(), &url, &shuffled, Some(&sig)), Ok(()));
            let mut extra = params.clone();
            extra.push(("Zz9".into(), "1".into())); // names generated above have no digits
            proptest::prop_assert_eq!(validate(&token(), &url, &extra, Some(&sig)), Err(SignatureError::Mismatch));
            // Through an encoded form body and back.
            let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
            let parsed = parse_form(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(validate(&token(), &url, &parsed, Some(&sig)), Ok(()));
        }

        #[test]
        fn arbitrary_input_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), url in "\\PC{0,60}", header in "\\PC{0,40}") {
            if let Ok(p) = parse_form(&body) {
                let _ = validate(&token(), &url, &p, Some(&header));
            }
            let _ = validate_json(&token(), &url, &body, Some(&header));
        }
    }
}
