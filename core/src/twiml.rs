//! TwiML rendering: the XML documents the edge answers Twilio's voice webhook with. Every text and
//! attribute goes through one escaping writer, so a restaurant's message, a caller's number or a
//! token can never break the document or inject verbs.
//!
//! Documents: [`stream`] (open: hand the call to the bridge), [`after_hours`] (closed: the
//! restaurant's mode), [`unknown_number`], [`busy`] and [`fallback`] (something failed: never leave
//! Twilio without an answer).

use crate::config::AfterHours;

/// How long `<Dial>` rings before giving up, when the caller has no better value.
pub const DEFAULT_DIAL_TIMEOUT_SECS: u32 = 30;
/// Twilio's `<Parameter>` count is small in practice; more means a bug upstream.
pub const MAX_STREAM_PARAMETERS: usize = 32;
const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    #[error("stream URL must start with wss:// (Twilio Media Streams only connect over secure WebSockets)")]
    NotWss,
    #[error("stream URL must not contain a query string or fragment; pass values as <Parameter>s")]
    QueryInUrl,
    #[error("stream URL has no host")]
    NoHost,
    #[error("too many stream parameters ({0}; at most {MAX_STREAM_PARAMETERS})")]
    TooManyParameters(usize),
    #[error("stream parameter names must not be empty")]
    EmptyParameterName,
}

/// `<Connect><Stream url=…>` with one `<Parameter>` per `(name, value)`.
///
/// # Errors
/// [`TwimlError`] when the URL is not `wss://host…`, carries `?` or `#`, or the parameters are
/// unusable.
pub fn stream(url: &str, params: &[(&str, &str)]) -> Result<String, TwimlError> {
    let lower = url.get(..6).map(str::to_ascii_lowercase);
    if lower.as_deref() != Some("wss://") {
        return Err(TwimlError::NotWss);
    }
    if url.contains(['?', '#']) {
        return Err(TwimlError::QueryInUrl);
    }
    if url[6..]
        .split('/')
        .next()
        .is_none_or(|h| h.trim().is_empty())
    {
        return Err(TwimlError::NoHost);
    }
    if params.len() > MAX_STREAM_PARAMETERS {
        return Err(TwimlError::TooManyParameters(params.len()));
    }
    if params.iter().any(|(n, _)| n.is_empty()) {
        return Err(TwimlError::EmptyParameterName);
    }
    let mut x = Doc::new();
    x.open("Connect", &[]);
    x.open("Stream", &[("url", url)]);
    for (name, value) in params {
        x.empty("Parameter", &[("name", name), ("value", value)]);
    }
    x.close("Stream");
    x.close("Connect");
    Ok(x.finish())
}

/// Speaks `message` in `language` (a Twilio `<Say>` language such as `"en-US"`), then hangs up.
pub fn say_hangup(message: &str, language: &str) -> String {
    let mut x = Doc::new();
    x.say(message, Some(language));
    x.empty("Hangup", &[]);
    x.finish()
}

/// Speaks `message`, then records a voicemail of at most `max_length_secs` after a beep; Twilio
/// posts the recording to `recording_status_callback_url`.
pub fn say_record(
    message: &str,
    max_length_secs: u32,
    recording_status_callback_url: &str,
) -> String {
    say_record_in(
        message,
        None,
        max_length_secs,
        recording_status_callback_url,
    )
}

fn say_record_in(
    message: &str,
    language: Option<&str>,
    max_length_secs: u32,
    callback: &str,
) -> String {
    let mut x = Doc::new();
    x.say(message, language);
    let max = max_length_secs.max(1).to_string();
    let mut attrs = vec![("maxLength", max.as_str()), ("playBeep", "true")];
    if !callback.is_empty() {
        attrs.push(("recordingStatusCallback", callback));
        attrs.push(("recordingStatusCallbackMethod", "POST"));
    }
    x.empty("Record", &attrs);
    x.empty("Hangup", &[]);
    x.finish()
}

/// Optionally speaks `message`, then dials `number` (ringing `timeout_secs`), presenting
/// `caller_id` when given.
pub fn say_dial(
    message: Option<&str>,
    number: &str,
    caller_id: Option<&str>,
    timeout_secs: u32,
) -> String {
    say_dial_in(message, None, number, caller_id, timeout_secs)
}

fn say_dial_in(
    message: Option<&str>,
    language: Option<&str>,
    number: &str,
    caller_id: Option<&str>,
    timeout_secs: u32,
) -> String {
    let mut x = Doc::new();
    if let Some(m) = message.filter(|m| !m.trim().is_empty()) {
        x.say(m, language);
    }
    x.dial(number, caller_id, timeout_secs);
    x.finish()
}

/// A polite generic message for a number no restaurant owns, then hang up.
pub fn unknown_number(language: &str) -> String {
    say_hangup(
        "Sorry, this number is not set up to take calls right now. Please check the number and try again. Goodbye.",
        language,
    )
}

/// The safe answer when something failed: dial `number` when one is known (the restaurant's
/// fallback or staff line), otherwise speak `apology` and hang up.
pub fn fallback(number: Option<&str>, apology: &str) -> String {
    match number.filter(|n| !n.trim().is_empty()) {
        Some(n) => say_dial(None, n, None, DEFAULT_DIAL_TIMEOUT_SECS),
        None => {
            let mut x = Doc::new();
            x.say(apology, None);
            x.empty("Hangup", &[]);
            x.finish()
        }
    }
}

/// All lines are busy: speak `message`, then dial `number` if given, else hang up.
pub fn busy(message: &str, number: Option<&str>) -> String {
    match number.filter(|n| !n.trim().is_empty()) {
        Some(n) => say_dial(Some(message), n, None, DEFAULT_DIAL_TIMEOUT_SECS),
        None => say_hangup_in(message, None),
    }
}

fn say_hangup_in(message: &str, language: Option<&str>) -> String {
    let mut x = Doc::new();
    x.say(message, language);
    x.empty("Hangup", &[]);
    x.finish()
}

/// The restaurant's after-hours mode: message + hang up, message + voicemail (recording posted to
/// `recording_callback_url`), or optional message + forward.
pub fn after_hours(mode: &AfterHours, language: &str, recording_callback_url: &str) -> String {
    match mode {
        AfterHours::Message { message } => say_hangup(message, language),
        AfterHours::Voicemail {
            message,
            max_length_secs,
        } => say_record_in(
            message,
            Some(language),
            *max_length_secs,
            recording_callback_url,
        ),
        AfterHours::Forward { message, number } => say_dial_in(
            message.as_deref(),
            Some(language),
            number,
            None,
            DEFAULT_DIAL_TIMEOUT_SECS,
        ),
    }
}

/// A tiny XML writer: every attribute value and text node is escaped, characters XML 1.0 forbids
/// are dropped.
struct Doc {
    out: String,
}

impl Doc {
    fn new() -> Self {
        let mut out = String::with_capacity(512);
        out.push_str(XML_DECL);
        out.push_str("<Response>");
        Doc { out }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</Response>");
        self.out
    }

    fn tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.tag(name, attrs);
        self.out.push('>');
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.tag(name, attrs);
        self.out.push_str("/>");
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn text(&mut self, text: &str) {
        escape_into(&mut self.out, text);
    }

    fn say(&mut self, message: &str, language: Option<&str>) {
        match language.filter(|l| !l.trim().is_empty()) {
            Some(l) => self.open("Say", &[("language", l)]),
            None => self.open("Say", &[]),
        }
        self.text(message);
        self.close("Say");
    }

    fn dial(&mut self, number: &str, caller_id: Option<&str>, timeout_secs: u32) {
        let timeout = timeout_secs.clamp(5, 600).to_string();
        let mut attrs = vec![("timeout", timeout.as_str())];
        if let Some(c) = caller_id.filter(|c| !c.is_empty()) {
            attrs.push(("callerId", c));
        }
        self.open("Dial", &attrs);
        self.text(number);
        self.close("Dial");
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Tabs and newlines in attributes would be normalised away by parsers: keep them exact.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// XML 1.0 `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}
