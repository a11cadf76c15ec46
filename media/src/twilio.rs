//! Twilio Media Streams (bidirectional `<Connect><Stream>`) messages, both directions, sans-IO.
//!
//! [`Inbound`] is what Twilio sends to a stream server (`connected`, `start`, `media`, `dtmf`,
//! `mark`, `stop`); [`Outbound`] is the only set a server may send back (`media`, `mark`, `clear`).
//! Both directions parse *and* serialize, because the caller simulator plays Twilio.
//!
//! Wire fidelity: numbers Twilio sends as strings (`sequenceNumber`, `chunk`, `timestamp`) are
//! written as strings and read as strings (a bare JSON number is tolerated on input). They are
//! exposed as `u64` for convenience.
//!
//! Hot path: a `media` frame parses without allocating when it has no JSON escapes: `stream_sid`,
//! `track` and `payload` borrow from the frame text (`Cow::Borrowed`). [`media_json`] builds the
//! outbound frame by concatenation around already-validated base64, so the bridge forwards a
//! payload it never decodes.
use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use crate::json::{push_str_lit, CowStr};
use crate::{is_valid_base64, CodecError};

/// Largest Twilio → server frame accepted. Real frames are ~300 bytes (media) to a few KB (`start`
/// with custom parameters).
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;
/// Largest server → Twilio frame accepted by [`parse_outbound`] (a server may batch audio).
pub const MAX_OUTBOUND_BYTES: usize = 1024 * 1024;

/// A message from Twilio to the stream server.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound<'a> {
    Connected(Connected),
    Start(Start),
    Media(Media<'a>),
    Dtmf(Dtmf),
    Mark(Mark),
    Stop(Stop),
    /// A well-formed frame with an `event` this codec does not know (Twilio adds events without
    /// notice); callers log and ignore it.
    Unknown {
        event: String,
    },
}

/// `{"event":"connected","protocol":"Call","version":"1.0.0"}`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub protocol: String,
    pub version: String,
}

/// The `start` message: stream metadata and the `<Parameter>`s from the TwiML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub sequence_number: u64,
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    pub tracks: Vec<String>,
    pub custom_parameters: BTreeMap<String, String>,
    pub media_format: MediaFormat,
}

/// `start.mediaFormat`; these are real JSON numbers on the wire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct MediaFormat {
    pub encoding: String,
    #[serde(rename = "sampleRate")]
    pub sample_rate: u32,
    pub channels: u32,
}

impl Default for MediaFormat {
    fn default() -> Self {
        MediaFormat {
            encoding: "audio/x-mulaw".into(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// One 20 ms audio frame from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    pub sequence_number: u64,
    pub stream_sid: Cow<'a, str>,
    pub track: Cow<'a, str>,
    pub chunk: u64,
    /// Milliseconds since the stream started.
    pub timestamp: u64,
    /// Base64 μ-law as received (validated alphabet), never decoded here.
    pub payload: Cow<'a, str>,
}

impl Media<'_> {
    /// Detach from the frame text.
    pub fn into_owned(self) -> Media<'static> {
        Media {
            sequence_number: self.sequence_number,
            stream_sid: Cow::Owned(self.stream_sid.into_owned()),
            track: Cow::Owned(self.track.into_owned()),
            chunk: self.chunk,
            timestamp: self.timestamp,
            payload: Cow::Owned(self.payload.into_owned()),
        }
    }
}

/// A key press.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtmf {
    pub sequence_number: u64,
    pub stream_sid: String,
    pub track: String,
    pub digit: String,
}

/// Echo of a server mark once the audio before it has played (or was cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub sequence_number: u64,
    pub stream_sid: String,
    pub name: String,
}

/// The stream ended (hang-up or TwiML replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub sequence_number: u64,
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
}

impl<'a> Inbound<'a> {
    /// Detach from the frame text.
    pub fn into_owned(self) -> Inbound<'static> {
        match self {
            Inbound::Connected(c) => Inbound::Connected(c),
            Inbound::Start(s) => Inbound::Start(s),
            Inbound::Media(m) => Inbound::Media(m.into_owned()),
            Inbound::Dtmf(d) => Inbound::Dtmf(d),
            Inbound::Mark(m) => Inbound::Mark(m),
            Inbound::Stop(s) => Inbound::Stop(s),
            Inbound::Unknown { event } => Inbound::Unknown { event },
        }
    }

    /// The `event` name on the wire.
    pub fn event(&self) -> &str {
        match self {
            Inbound::Connected(_) => "connected",
            Inbound::Start(_) => "start",
            Inbound::Media(_) => "media",
            Inbound::Dtmf(_) => "dtmf",
            Inbound::Mark(_) => "mark",
            Inbound::Stop(_) => "stop",
            Inbound::Unknown { event } => event,
        }
    }

    /// Serialize exactly as Twilio does (used by the caller simulator).
    pub fn to_json(&self) -> String {
        match self {
            Inbound::Connected(c) => {
                json!({"event":"connected","protocol":c.protocol,"version":c.version}).to_string()
            }
            Inbound::Start(s) => json!({
                "event": "start",
                "sequenceNumber": s.sequence_number.to_string(),
                "streamSid": s.stream_sid,
                "start": {
                    "accountSid": s.account_sid,
                    "streamSid": s.stream_sid,
                    "callSid": s.call_sid,
                    "tracks": s.tracks,
                    "customParameters": s.custom_parameters,
                    "mediaFormat": s.media_format,
                }
            })
            .to_string(),
            Inbound::Media(m) => {
                let mut out = String::with_capacity(160 + m.payload.len() + m.stream_sid.len());
                out.push_str("{\"event\":\"media\",\"sequenceNumber\":\"");
                out.push_str(&m.sequence_number.to_string());
                out.push_str("\",\"streamSid\":");
                push_str_lit(&mut out, &m.stream_sid);
                out.push_str(",\"media\":{\"track\":");
                push_str_lit(&mut out, &m.track);
                out.push_str(",\"chunk\":\"");
                out.push_str(&m.chunk.to_string());
                out.push_str("\",\"timestamp\":\"");
                out.push_str(&m.timestamp.to_string());
                out.push_str("\",\"payload\":");
                push_payload(&mut out, &m.payload);
                out.push_str("}}");
                out
            }
            Inbound::Dtmf(d) => json!({
                "event": "dtmf",
                "streamSid": d.stream_sid,
                "sequenceNumber": d.sequence_number.to_string(),
                "dtmf": {"track": d.track, "digit": d.digit}
            })
            .to_string(),
            Inbound::Mark(m) => json!({
                "event": "mark",
                "streamSid": m.stream_sid,
                "sequenceNumber": m.sequence_number.to_string(),
                "mark": {"name": m.name}
            })
            .to_string(),
            Inbound::Stop(s) => json!({
                "event": "stop",
                "streamSid": s.stream_sid,
                "sequenceNumber": s.sequence_number.to_string(),
                "stop": {"accountSid": s.account_sid, "callSid": s.call_sid}
            })
            .to_string(),
            Inbound::Unknown { event } => json!({ "event": event }).to_string(),
        }
    }
}

fn push_payload(out: &mut String, payload: &str) {
    if is_valid_base64(payload) {
        out.push('"');
        out.push_str(payload);
        out.push('"');
    } else {
        push_str_lit(out, payload);
    }
}

/// A counter Twilio sends as a string (a bare JSON number is tolerated). Parsed straight from
/// the token, without buffering (an untagged enum would buffer every field).
struct NumStr(Result<u64, String>);

impl<'de> Deserialize<'de> for NumStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a string holding one")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NumStr, E> {
                Ok(NumStr(v.parse().map_err(|_| v.chars().take(24).collect())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumStr, E> {
                Ok(NumStr(Ok(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumStr, E> {
                Ok(NumStr(u64::try_from(v).map_err(|_| v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumStr, E> {
                Ok(NumStr(Err(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

impl NumStr {
    fn get(&self, event: &'static str, field: &'static str) -> Result<u64, CodecError> {
        self.0
            .clone()
            .map_err(|s| CodecError::Malformed(format!("`{event}.{field}` is not a number: {s:?}")))
    }
}

fn num(
    v: &Option<NumStr>,
    event: &'static str,
    field: &'static str,
) -> Result<u64, CodecError> {
    v.as_ref()
        .ok_or(CodecError::MissingField { event, field })?
        .get(event, field)
}

#[derive(Deserialize)]
struct RawInbound<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "sequenceNumber")]
    sequence_number: Option<NumStr>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<CowStr<'a>>,
    protocol: Option<String>,
    version: Option<String>,
    start: Option<RawStart>,
    #[serde(borrow)]
    media: Option<RawMedia<'a>>,
    dtmf: Option<RawDtmf>,
    mark: Option<RawMark>,
    stop: Option<RawStop>,
}

#[derive(Deserialize)]
struct RawStart {
    #[serde(rename = "accountSid")]
    account_sid: Option<String>,
    #[serde(rename = "streamSid")]
    stream_sid: Option<String>,
    #[serde(rename = "callSid")]
    call_sid: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(rename = "customParameters", default)]
    custom_parameters: BTreeMap<String, String>,
    #[serde(rename = "mediaFormat", default)]
    media_format: MediaFormat,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(borrow)]
    track: Option<CowStr<'a>>,
    chunk: Option<NumStr>,
    timestamp: Option<NumStr>,
    #[serde(borrow)]
    payload: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct RawDtmf {
    track: Option<String>,
    digit: Option<String>,
}

#[derive(Deserialize)]
struct RawMark {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawStop {
    #[serde(rename = "accountSid", default)]
    account_sid: String,
    #[serde(rename = "callSid", default)]
    call_sid: String,
}

fn check_len(text: &str, max: usize) -> Result<(), CodecError> {
    if text.len() > max {
        return Err(CodecError::TooLarge {
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Parse one Twilio → server text frame.
///
/// # Errors
/// [`CodecError::TooLarge`] over [`MAX_INBOUND_BYTES`], [`CodecError::Malformed`] for bad JSON or
/// non-numeric counters, [`CodecError::MissingField`] when a known event lacks a required field,
/// [`CodecError::InvalidBase64`] for a media payload outside the base64 alphabet. Unknown events
/// are `Ok(Inbound::Unknown)`.
pub fn parse_inbound(text: &str) -> Result<Inbound<'_>, CodecError> {
    check_len(text, MAX_INBOUND_BYTES)?;
    let raw: RawInbound<'_> = serde_json::from_str(text).map_err(CodecError::malformed)?;
    let stream_sid: Option<Cow<'_, str>> = raw.stream_sid.map(|c| c.0);
    let seq = |event| num(&raw.sequence_number, event, "sequenceNumber");
    let sid = |event| -> Result<String, CodecError> {
        stream_sid
            .as_deref()
            .map(str::to_owned)
            .ok_or(CodecError::MissingField {
                event,
                field: "streamSid",
            })
    };
    Ok(match raw.event.as_ref() {
        "connected" => Inbound::Connected(Connected {
            protocol: raw.protocol.unwrap_or_default(),
            version: raw.version.unwrap_or_default(),
        }),
        "start" => {
            let s = raw.start.ok_or(CodecError::MissingField {
                event: "start",
                field: "start",
            })?;
            let stream_sid =
                match s.stream_sid {
                    Some(x) => x,
                    None => stream_sid.as_deref().map(str::to_owned).ok_or(
                        CodecError::MissingField {
                            event: "start",
                            field: "streamSid",
                        },
                    )?,
                };
            Inbound::Start(Start {
                sequence_number: num(&raw.sequence_number, "start", "sequenceNumber")?,
                stream_sid,
                account_sid: s.account_sid.ok_or(CodecError::MissingField {
                    event: "start",
                    field: "accountSid",
                })?,
                call_sid: s.call_sid.ok_or(CodecError::MissingField {
                    event: "start",
                    field: "callSid",
                })?,
                tracks: s.tracks,
                custom_parameters: s.custom_parameters,
                media_format: s.media_format,
            })
        }
        "media" => {
            let sequence_number = seq("media")?;
            let m = raw.media.ok_or(CodecError::MissingField {
                event: "media",
                field: "media",
            })?;
            let payload = m
                .payload
                .ok_or(CodecError::MissingField {
                    event: "media",
                    field: "payload",
                })?
                .0;
            if !is_valid_base64(&payload) {
                return Err(CodecError::InvalidBase64);
            }
            Inbound::Media(Media {
                sequence_number,
                stream_sid: stream_sid.clone().ok_or(CodecError::MissingField {
                    event: "media",
                    field: "streamSid",
                })?,
                track: m.track.map(|c| c.0).unwrap_or(Cow::Borrowed("inbound")),
                chunk: num(&m.chunk, "media", "chunk")?,
                timestamp: num(&m.timestamp, "media", "timestamp")?,
                payload,
            })
        }
        "dtmf" => {
            let d = raw.dtmf.as_ref().ok_or(CodecError::MissingField {
                event: "dtmf",
                field: "dtmf",
            })?;
            Inbound::Dtmf(Dtmf {
                sequence_number: seq("dtmf")?,
                stream_sid: sid("dtmf")?,
                track: d.track.clone().unwrap_or_else(|| "inbound_track".into()),
                digit: d.digit.clone().ok_or(CodecError::MissingField {
                    event: "dtmf",
                    field: "digit",
                })?,
            })
        }
        "mark" => {
            let m = raw.mark.as_ref().ok_or(CodecError::MissingField {
                event: "mark",
                field: "mark",
            })?;
            Inbound::Mark(Mark {
                sequence_number: seq("mark")?,
                stream_sid: sid("mark")?,
                name: m.name.clone().ok_or(CodecError::MissingField {
                    event: "mark",
                    field: "name",
                })?,
            })
        }
        "stop" => {
            let s = raw.stop.as_ref().ok_or(CodecError::MissingField {
                event: "stop",
                field: "stop",
            })?;
            Inbound::Stop(Stop {
                sequence_number: seq("stop")?,
                stream_sid: sid("stop")?,
                account_sid: s.account_sid.clone(),
                call_sid: s.call_sid.clone(),
            })
        }
        other => Inbound::Unknown {
            event: other.to_owned(),
        },
    })
}

/// A message from the stream server to Twilio. Twilio accepts nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Audio to play: base64 μ-law 8 kHz.
    Media {
        stream_sid: Cow<'a, str>,
        payload_b64: Cow<'a, str>,
    },
    /// Ask Twilio to echo `name` once the audio sent before it has played.
    Mark {
        stream_sid: Cow<'a, str>,
        name: Cow<'a, str>,
    },
    /// Drop buffered audio; pending marks come back at once.
    Clear { stream_sid: Cow<'a, str> },
}

impl Outbound<'_> {
    /// Serialize to the wire form. Always valid JSON (a payload that is not base64 is escaped,
    /// not spliced).
    pub fn to_json(&self) -> String {
        match self {
            Outbound::Media {
                stream_sid,
                payload_b64,
            } => media_json_unchecked(stream_sid, payload_b64),
            Outbound::Mark { stream_sid, name } => mark_json(stream_sid, name),
            Outbound::Clear { stream_sid } => clear_json(stream_sid),
        }
    }

    /// The stream this message addresses.
    pub fn stream_sid(&self) -> &str {
        match self {
            Outbound::Media { stream_sid, .. }
            | Outbound::Mark { stream_sid, .. }
            | Outbound::Clear { stream_sid } => stream_sid,
        }
    }

    /// Detach from the frame text.
    pub fn into_owned(self) -> Outbound<'static> {
        let o = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match self {
            Outbound::Media {
                stream_sid,
                payload_b64,
            } => Outbound::Media {
                stream_sid: o(stream_sid),
                payload_b64: o(payload_b64),
            },
            Outbound::Mark { stream_sid, name } => Outbound::Mark {
                stream_sid: o(stream_sid),
                name: o(name),
            },
            Outbound::Clear { stream_sid } => Outbound::Clear {
                stream_sid: o(stream_sid),
            },
        }
    }
}

/// Build an outbound `media` frame by concatenation (hot path).
///
/// # Errors
/// [`CodecError::InvalidBase64`] when `payload_b64` is not standard padded base64.
pub fn media_json(stream_sid: &str, payload_b64: &str) -> Result<String, CodecError> {
    if !is_valid_base64(payload_b64) {
        return Err(CodecError::InvalidBase64);
    }
    Ok(media_json_unchecked(stream_sid, payload_b64))
}

fn media_json_unchecked(stream_sid: &str, payload_b64: &str) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + payload_b64.len());
    out.push_str("{\"event\":\"media\",\"streamSid\":");
    push_str_lit(&mut out, stream_sid);
    out.push_str(",\"media\":{\"payload\":");
    push_payload(&mut out, payload_b64);
    out.push_str("}}");
    out
}

/// `{"event":"mark","streamSid":…,"mark":{"name":…}}`
pub fn mark_json(stream_sid: &str, name: &str) -> String {
    let mut out = String::with_capacity(64 + stream_sid.len() + name.len());
    out.push_str("{\"event\":\"mark\",\"streamSid\":");
    push_str_lit(&mut out, stream_sid);
    out.push_str(",\"mark\":{\"name\":");
    push_str_lit(&mut out, name);
    out.push_str("}}");
    out
}

/// `{"event":"clear","streamSid":…}`
pub fn clear_json(stream_sid: &str) -> String {
    let mut out = String::with_capacity(40 + stream_sid.len());
    out.push_str("{\"event\":\"clear\",\"streamSid\":");
    push_str_lit(&mut out, stream_sid);
    out.push('}');
    out
}

#[derive(Deserialize)]
struct RawOutbound<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "streamSid", borrow)]
    stream_sid: Option<CowStr<'a>>,
    #[serde(borrow)]
    media: Option<RawOutMedia<'a>>,
    #[serde(borrow)]
    mark: Option<RawOutMark<'a>>,
}

#[derive(Deserialize)]
struct RawOutMedia<'a> {
    #[serde(borrow)]
    payload: Option<CowStr<'a>>,
}

#[derive(Deserialize)]
struct RawOutMark<'a> {
    #[serde(borrow)]
    name: Option<CowStr<'a>>,
}

/// Parse a server → Twilio frame strictly, as Twilio would (anything but `media`, `mark`,
/// `clear` is an error, like Twilio's error 31924).
///
/// # Errors
/// [`CodecError::UnknownType`] for any other event; size, JSON, missing-field and base64 errors
/// as in [`parse_inbound`].
pub fn parse_outbound(text: &str) -> Result<Outbound<'_>, CodecError> {
    check_len(text, MAX_OUTBOUND_BYTES)?;
    let raw: RawOutbound<'_> = serde_json::from_str(text).map_err(CodecError::malformed)?;
    let event: &'static str = match raw.event.as_ref() {
        "media" => "media",
        "mark" => "mark",
        "clear" => "clear",
        other => return Err(CodecError::UnknownType(other.to_owned())),
    };
    let stream_sid = raw
        .stream_sid
        .ok_or(CodecError::MissingField {
            event,
            field: "streamSid",
        })?
        .0;
    Ok(match event {
        "media" => {
            let payload = raw
                .media
                .and_then(|m| m.payload)
                .ok_or(CodecError::MissingField {
                    event,
                    field: "media.payload",
                })?
                .0;
            if !is_valid_base64(&payload) {
                return Err(CodecError::InvalidBase64);
            }
            Outbound::Media {
                stream_sid,
                payload_b64: payload,
            }
        }
        "mark" => {
            let name = raw
                .mark
                .and_then(|m| m.name)
                .ok_or(CodecError::MissingField {
                    event,
                    field: "mark.name",
                })?
                .0;
            Outbound::Mark { stream_sid, name }
        }
        _ => Outbound::Clear { stream_sid },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
    const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","start":{"accountSid":"AC123","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA456","tracks":["inbound"],"customParameters":{"handoff":"tok.en","restaurant_id":"trattoria-roma"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
    const MEDIA: &str = r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"/////w=="}}"#;
    const DTMF: &str = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"0"}}"#;
    const MARK: &str =
        r#"{"event":"mark","streamSid":"MZ1","sequenceNumber":"6","mark":{"name":"agent-7"}}"#;
    const STOP: &str = r#"{"event":"stop","streamSid":"MZ1","sequenceNumber":"7","stop":{"accountSid":"AC123","callSid":"CA456"}}"#;

    #[test]
    fn known_answers_inbound() {
        assert_eq!(
            parse_inbound(CONNECTED).unwrap(),
            Inbound::Connected(Connected {
                protocol: "Call".into(),
                version: "1.0.0".into()
            })
        );
        let Inbound::Start(s) = parse_inbound(START).unwrap() else {
            panic!("not start")
        };
        assert_eq!(s.sequence_number, 1);
        assert_eq!(s.call_sid, "CA456");
        assert_eq!(s.account_sid, "AC123");
        assert_eq!(s.tracks, vec!["inbound"]);
        assert_eq!(s.custom_parameters["handoff"], "tok.en");
        assert_eq!(s.media_format, MediaFormat::default());
        let Inbound::Media(m) = parse_inbound(MEDIA).unwrap() else {
            panic!("not media")
        };
        assert_eq!((m.sequence_number, m.chunk, m.timestamp), (3, 2, 40));
        assert_eq!(m.payload, "/////w==");
        assert!(
            matches!(m.payload, Cow::Borrowed(_)),
            "payload must borrow from the frame"
        );
        assert!(matches!(m.stream_sid, Cow::Borrowed(_)));
        assert_eq!(
            parse_inbound(DTMF).unwrap(),
            Inbound::Dtmf(Dtmf {
                sequence_number: 5,
                stream_sid: "MZ1".into(),
                track: "inbound_track".into(),
                digit: "0".into()
            })
        );
        assert_eq!(
            parse_inbound(MARK).unwrap(),
            Inbound::Mark(Mark {
                sequence_number: 6,
                stream_sid: "MZ1".into(),
                name: "agent-7".into()
            })
        );
        assert_eq!(
            parse_inbound(STOP).unwrap(),
            Inbound::Stop(Stop {
                sequence_number: 7,
                stream_sid: "MZ1".into(),
                account_sid: "AC123".into(),
                call_sid: "CA456".into()
            })
        );
    }

    #[test]
    fn inbound_round_trips_and_keeps_strings() {
        for frame in [CONNECTED, START, MEDIA, DTMF, MARK, STOP] {
            let msg = parse_inbound(frame).unwrap();
            let text = msg.to_json();
            let again = parse_inbound(&text).unwrap();
            assert_eq!(msg, again, "{frame}");
            // Semantically identical JSON to Twilio's own frame (field order aside).
            let a: serde_json::Value = serde_json::from_str(frame).unwrap();
            let b: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(a, b, "{frame}");
        }
    }

    #[test]
    fn numbers_as_bare_json_numbers_tolerated() {
        let f = r#"{"event":"media","sequenceNumber":3,"streamSid":"MZ1","media":{"track":"inbound","chunk":2,"timestamp":40,"payload":"AA=="}}"#;
        let Inbound::Media(m) = parse_inbound(f).unwrap() else {
            panic!()
        };
        assert_eq!((m.sequence_number, m.chunk, m.timestamp), (3, 2, 40));
        assert!(m.clone().into_owned() == m);
        assert!(Inbound::Media(m)
            .to_json()
            .contains(r#""sequenceNumber":"3""#));
    }

    #[test]
    fn unknown_event_is_a_value_not_an_error() {
        let got = parse_inbound(r#"{"event":"transcription","streamSid":"MZ1"}"#).unwrap();
        assert_eq!(
            got,
            Inbound::Unknown {
                event: "transcription".into()
            }
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert!(matches!(
            parse_inbound("not json"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(parse_inbound("{}"), Err(CodecError::Malformed(_))));
        assert!(matches!(
            parse_inbound(r#"{"event":5}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            parse_inbound(r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1"}"#),
            Err(CodecError::MissingField { field: "media", .. })
        ));
        assert!(matches!(
            parse_inbound(
                r#"{"event":"media","sequenceNumber":"x","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"AA=="}}"#
            ),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            parse_inbound(
                r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"chunk":"1","timestamp":"0","payload":"A\"}"}}"#
            ),
            Err(CodecError::InvalidBase64)
        ));
        assert!(matches!(
            parse_inbound(r#"{"event":"start","sequenceNumber":"1","start":{"streamSid":"MZ"}}"#),
            Err(CodecError::MissingField { .. })
        ));
        let big = format!(
            r#"{{"event":"media","pad":"{}"}}"#,
            "a".repeat(MAX_INBOUND_BYTES)
        );
        assert!(matches!(
            parse_inbound(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn outbound_known_answers_and_round_trip() {
        let media = media_json("MZ1", "/////w==").unwrap();
        assert_eq!(
            media,
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"/////w=="}}"#
        );
        assert_eq!(
            mark_json("MZ1", "m\"1"),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m\"1"}}"#
        );
        assert_eq!(clear_json("MZ1"), r#"{"event":"clear","streamSid":"MZ1"}"#);
        for text in [media.clone(), mark_json("MZ1", "m\"1"), clear_json("MZ1")] {
            let parsed = parse_outbound(&text).unwrap();
            assert_eq!(parsed.stream_sid(), "MZ1");
            assert_eq!(parsed.to_json(), text);
        }
        let Outbound::Media { payload_b64, .. } = parse_outbound(&media).unwrap() else {
            panic!()
        };
        assert!(matches!(payload_b64, Cow::Borrowed(_)));
        assert!(matches!(
            media_json("MZ1", "no\"pe"),
            Err(CodecError::InvalidBase64)
        ));
        // The infallible builder still yields valid JSON for a bad payload.
        let odd = Outbound::Media {
            stream_sid: "MZ1".into(),
            payload_b64: "a\"b".into(),
        }
        .to_json();
        assert!(serde_json::from_str::<serde_json::Value>(&odd).is_ok());
    }

    #[test]
    fn outbound_is_strict() {
        assert!(matches!(
            parse_outbound(r#"{"event":"start","streamSid":"MZ1"}"#),
            Err(CodecError::UnknownType(e)) if e == "start"
        ));
        assert!(matches!(
            parse_outbound(r#"{"event":"clear"}"#),
            Err(CodecError::MissingField { .. })
        ));
        assert!(matches!(
            parse_outbound(r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#),
            Err(CodecError::MissingField { .. })
        ));
        assert!(matches!(
            parse_outbound("[]"),
            Err(CodecError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_inbound_never_panics(s in "\\PC{0,400}") {
            let _ = parse_inbound(&s);
            let _ = parse_outbound(&s);
        }

        #[test]
        fn media_round_trip(seq in 0u64..u64::MAX, chunk in 0u64..1_000_000, ts in 0u64..100_000_000,
                            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), sid in "[A-Za-z0-9\"\\\\]{1,40}") {
            use base64::Engine as _;
            let payload = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let m = Inbound::Media(Media { sequence_number: seq, stream_sid: sid.clone().into(), track: "inbound".into(), chunk, timestamp: ts, payload: payload.into() });
            let text = m.to_json();
            proptest::prop_assert_eq!(parse_inbound(&text).unwrap(), m);
        }
    }
}
