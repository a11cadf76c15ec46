//! Tiny JSON string escaping for the hand-built hot-path frames (media, mark, audio chunk), where
//! going through `serde_json::Value` would cost an allocation per field.

/// Append `s` to `out` as a JSON string literal (with quotes).
pub(crate) fn push_str_lit(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_round_trip() {
        let s = "a\"b\\c\nd\u{1}é";
        let mut out = String::new();
        super::push_str_lit(&mut out, s);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, s);
    }
}

/// A string that borrows from the input when it has no escapes. (`Option<Cow<str>>` with
/// `#[serde(borrow)]` always allocates; this wrapper does not.)
#[derive(Debug)]
pub(crate) struct CowStr<'a>(pub std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}
