//! Phone number normalisation to E.164 (`+` and up to 15 digits), so the number a caller dialled
//! (Twilio's `To`) can be matched against the numbers in restaurant configurations however either
//! side wrote it.
//!
//! [`normalize_e164`] never guesses a country: input must be international (`+…`, `00…` or
//! `tel:+…`). [`normalize_with_default`] takes an explicit country calling code for national numbers.

/// Fewest digits accepted in a full number (country code included). The shortest numbers in
/// service (a few small territories) have 7.
pub const MIN_DIGITS: usize = 7;
/// E.164's maximum, country code included.
pub const MAX_DIGITS: usize = 15;
/// Longest input looked at; anything longer is refused before parsing.
const MAX_INPUT: usize = 64;

/// Why a phone number could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number is longer than {MAX_INPUT} characters")]
    InputTooLong,
    #[error("phone number contains {0:?}; only digits, '+', spaces, '-', '.', '/' and parentheses are allowed")]
    InvalidCharacter(char),
    #[error("'+' may only appear at the start of a phone number")]
    MisplacedPlus,
    #[error("phone number has no country code; write it as +<country code><number> or pass a default country code")]
    NoCountryCode,
    #[error("country calling codes never start with 0")]
    LeadingZero,
    #[error("phone number has {0} digits; at least {MIN_DIGITS} are needed")]
    TooShort(usize),
    #[error("phone number has {0} digits; E.164 allows at most {MAX_DIGITS}")]
    TooLong(usize),
    #[error("default country calling code {0:?} must be 1 to 3 digits, not starting with 0")]
    InvalidDefaultCc(String),
}

/// Normalises an international number to E.164 (`+` followed by digits).
///
/// Accepts visual separators (`+1 (718) 555-0100`), a `tel:` URI (parameters such as `;ext=` are
/// dropped) and the `00` international prefix (`0039…` → `+39…`).
///
/// # Errors
/// [`PhoneError`] for empty input, letters or other characters, a national number (no country
/// code), or a digit count outside 7..=15.
pub fn normalize_e164(raw: &str) -> Result<String, PhoneError> {
    match parse(raw)? {
        Parsed::International(digits) => finish(digits),
        Parsed::National(_) => Err(PhoneError::NoCountryCode),
    }
}

/// Like [`normalize_e164`], but a national number (no `+`/`00`) is completed with `default_cc`
/// (e.g. `"1"`, `"+39"`). The national trunk prefix is removed where that country uses one:
/// a leading `1` of an 11-digit NANP number, a leading `0` elsewhere — except Italy, San Marino
/// and the Vatican (`39`, `378`, `379`), where the `0` is part of the number.
///
/// # Errors
/// As [`normalize_e164`], plus [`PhoneError::InvalidDefaultCc`].
pub fn normalize_with_default(raw: &str, default_cc: &str) -> Result<String, PhoneError> {
    let cc = default_cc.trim().trim_start_matches('+');
    if cc.is_empty()
        || cc.len() > 3
        || !cc.bytes().all(|b| b.is_ascii_digit())
        || cc.starts_with('0')
    {
        return Err(PhoneError::InvalidDefaultCc(
            default_cc.chars().take(8).collect(),
        ));
    }
    match parse(raw)? {
        Parsed::International(digits) => finish(digits),
        Parsed::National(digits) => {
            let national = match cc {
                "1" if digits.len() == 11 && digits.starts_with('1') => &digits[1..],
                "39" | "378" | "379" => &digits[..],
                "1" => &digits[..],
                _ => digits.strip_prefix('0').unwrap_or(&digits),
            };
            if national.is_empty() {
                return Err(PhoneError::TooShort(0));
            }
            finish(format!("{cc}{national}"))
        }
    }
}

enum Parsed {
    International(String),
    National(String),
}

fn parse(raw: &str) -> Result<Parsed, PhoneError> {
    if raw.len() > MAX_INPUT {
        return Err(PhoneError::InputTooLong);
    }
    let mut s = raw.trim();
    if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tel:")) {
        s = s[4..].split(';').next().unwrap_or("").trim();
    }
    if s.is_empty() {
        return Err(PhoneError::Empty);
    }
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            '+' => return Err(PhoneError::MisplacedPlus),
            ' ' | '-' | '.' | '/' | '(' | ')' | '\u{a0}' => {}
            other => return Err(PhoneError::InvalidCharacter(other)),
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    if plus {
        return Ok(Parsed::International(digits));
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return Ok(Parsed::International(rest.to_owned()));
    }
    Ok(Parsed::National(digits))
}

fn finish(digits: String) -> Result<String, PhoneError> {
    if digits.starts_with('0') {
        return Err(PhoneError::LeadingZero);
    }
    if digits.len() < MIN_DIGITS {
        return Err(PhoneError::TooShort(digits.len()));
    }
    if digits.len() > MAX_DIGITS {
        return Err(PhoneError::TooLong(digits.len()));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_international_forms() {
        assert_eq!(normalize_e164("+1 (718) 555-0100").unwrap(), "+17185550100");
        assert_eq!(normalize_e164("+390612345678").unwrap(), "+390612345678");
        assert_eq!(
            normalize_e164("tel:+1-718-555-0100").unwrap(),
            "+17185550100"
        );
        assert_eq!(
            normalize_e164("TEL:+1-718-555-0100;ext=12").unwrap(),
            "+17185550100"
        );
        assert_eq!(normalize_e164("0017185550100").unwrap(), "+17185550100");
        assert_eq!(
            normalize_e164("  +81 3.1234.5678 ").unwrap(),
            "+81312345678"
        );
        assert_eq!(normalize_e164("+44 20 7946 0958").unwrap(), "+442079460958");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(normalize_e164(""), Err(PhoneError::Empty));
        assert_eq!(normalize_e164("  "), Err(PhoneError::Empty));
        assert_eq!(normalize_e164("tel:"), Err(PhoneError::Empty));
        assert_eq!(normalize_e164("+"), Err(PhoneError::Empty));
        assert_eq!(
            normalize_e164("+1-800-FLOWERS"),
            Err(PhoneError::InvalidCharacter('F'))
        );
        assert_eq!(
            normalize_e164("anonymous"),
            Err(PhoneError::InvalidCharacter('a'))
        );
        assert_eq!(
            normalize_e164("+1+2025550100"),
            Err(PhoneError::MisplacedPlus)
        );
        assert_eq!(normalize_e164("+0123456789"), Err(PhoneError::LeadingZero));
        assert_eq!(normalize_e164("+123456"), Err(PhoneError::TooShort(6)));
        assert_eq!(
            normalize_e164("+1234567890123456"),
            Err(PhoneError::TooLong(16))
        );
        assert_eq!(
            normalize_e164(&"1".repeat(100)),
            Err(PhoneError::InputTooLong)
        );
        assert_eq!(normalize_e164("7185550100"), Err(PhoneError::NoCountryCode));
        // Multi-byte characters where "tel:" would be (found by the property test below).
        assert_eq!(
            normalize_e164(".\u{11d62}?"),
            Err(PhoneError::InvalidCharacter('\u{11d62}'))
        );
        assert_eq!(
            normalize_e164("(718) 555-0100"),
            Err(PhoneError::NoCountryCode)
        );
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(normalize_e164("+1234567").unwrap(), "+1234567");
        assert_eq!(
            normalize_e164("+123456789012345").unwrap(),
            "+123456789012345"
        );
    }

    #[test]
    fn national_numbers_need_an_explicit_country_code() {
        assert_eq!(
            normalize_with_default("(718) 555-0100", "1").unwrap(),
            "+17185550100"
        );
        assert_eq!(
            normalize_with_default("1 718 555 0100", "+1").unwrap(),
            "+17185550100"
        );
        assert_eq!(
            normalize_with_default("06 1234 5678", "39").unwrap(),
            "+390612345678"
        );
        assert_eq!(
            normalize_with_default("020 7946 0958", "44").unwrap(),
            "+442079460958"
        );
        assert_eq!(
            normalize_with_default("03-1234-5678", "81").unwrap(),
            "+81312345678"
        );
        // International input ignores the default.
        assert_eq!(
            normalize_with_default("+33 1 23 45 67 89", "1").unwrap(),
            "+33123456789"
        );
        assert!(matches!(
            normalize_with_default("555", "1"),
            Err(PhoneError::TooShort(4))
        ));
        for bad in ["", "0", "1234", "x1", "+"] {
            assert!(
                matches!(
                    normalize_with_default("7185550100", bad),
                    Err(PhoneError::InvalidDefaultCc(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn output_is_canonical_and_idempotent(raw in "\\PC{0,40}|[+0 ()0-9.-]{0,24}") {
            if let Ok(n) = normalize_e164(&raw) {
                proptest::prop_assert!(n.starts_with('+'));
                let digits = &n[1..];
                proptest::prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
                proptest::prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()));
                proptest::prop_assert!(!digits.starts_with('0'));
                proptest::prop_assert_eq!(normalize_e164(&n), Ok(n.clone()));
            }
            let _ = normalize_with_default(&raw, "39");
        }
    }
}
