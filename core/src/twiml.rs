//! TwiML rendering: the XML documents the edge answers Twilio's voice webhook with. Every text and
//! attribute goes through one escaping writer, so a restaurant's message, a caller's number or a
//! token can never break the document or inject verbs.
//!
//! Documents: [`stream`] (open: hand the call to the bridge) and [`dial`] speak nothing; the
//! documents that speak are methods of the [`SayVoice`] they speak with — [`SayVoice::after_hours`]
//! (closed: the restaurant's mode), [`SayVoice::unknown_number`], [`SayVoice::busy`] and
//! [`SayVoice::fallback`] (something failed: never leave Twilio without an answer),
//! [`SayVoice::say_dial`], [`SayVoice::say_record`], [`SayVoice::say_hangup`] — so no `<Say>` is
//! written without a Twilio locale and a voice that speaks it.
//!
//! `<Say language>` takes a Twilio locale (`it-IT`), not the ElevenLabs agent language (`it`);
//! [`crate::config::RestaurantConfig::say_voice`] maps one to the other. [`SAY_LOCALES`] is the
//! table of locales and voices accepted here, from Twilio's text-to-speech voice list (Amazon
//! Polly and Google voices, as `Polly.<Name>` / `Google.<locale>-<model>-<variant>`).

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

/// One Twilio `<Say>` locale and the voices that speak it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SayLocale {
    /// The `language` attribute value, spelled as Twilio spells it (`it-IT`, `cmn-CN`, `arb`).
    pub code: &'static str,
    /// Amazon Polly voices, as Twilio names them after `Polly.` (`Bianca`, `Adriano-Neural`).
    pub polly: &'static [&'static str],
    /// Whether Google voices (`Google.<code>-…`) exist for the locale.
    pub google: bool,
    /// The default voice of a locale without Polly voices; otherwise the first Polly voice (a
    /// standard one) is the default.
    google_default: &'static str,
}

const fn polly(code: &'static str, voices: &'static [&'static str], google: bool) -> SayLocale {
    SayLocale {
        code,
        polly: voices,
        google,
        google_default: "",
    }
}

const fn google(code: &'static str, default_voice: &'static str) -> SayLocale {
    SayLocale {
        code,
        polly: &[],
        google: true,
        google_default: default_voice,
    }
}

/// The `<Say>` locales a configuration may name, with their voices. Locales missing here may
/// exist at Twilio; add them (with voices that speak them) before a restaurant uses one.
#[rustfmt::skip]
pub const SAY_LOCALES: &[SayLocale] = &[
    polly("en-US", &["Joanna", "Ivy", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli",
        "Joanna-Neural", "Ivy-Neural", "Joey-Neural", "Justin-Neural", "Kendra-Neural",
        "Kevin-Neural", "Kimberly-Neural", "Matthew-Neural", "Salli-Neural", "Ruth-Neural",
        "Stephen-Neural", "Danielle-Neural", "Gregory-Neural"], true),
    polly("en-GB", &["Amy", "Brian", "Emma", "Amy-Neural", "Brian-Neural", "Emma-Neural", "Arthur-Neural"], true),
    polly("en-AU", &["Nicole", "Russell", "Olivia-Neural"], true),
    polly("en-IN", &["Raveena", "Aditi", "Kajal-Neural"], true),
    polly("en-GB-WLS", &["Geraint"], false),
    polly("cy-GB", &["Gwyneth"], false),
    polly("it-IT", &["Bianca", "Carla", "Giorgio", "Bianca-Neural", "Adriano-Neural"], true),
    polly("ja-JP", &["Mizuki", "Takumi", "Takumi-Neural", "Kazuha-Neural", "Tomoko-Neural"], true),
    polly("de-DE", &["Marlene", "Vicki", "Hans", "Vicki-Neural", "Daniel-Neural"], true),
    polly("fr-FR", &["Celine", "Lea", "Mathieu", "Lea-Neural", "Remi-Neural"], true),
    polly("fr-CA", &["Chantal", "Gabrielle-Neural", "Liam-Neural"], true),
    polly("es-ES", &["Lucia", "Conchita", "Enrique", "Lucia-Neural", "Sergio-Neural"], true),
    polly("es-MX", &["Mia", "Mia-Neural", "Andres-Neural"], false),
    polly("es-US", &["Penelope", "Lupe", "Miguel", "Lupe-Neural", "Pedro-Neural"], true),
    polly("pt-BR", &["Camila", "Vitoria", "Ricardo", "Camila-Neural", "Vitoria-Neural", "Thiago-Neural"], true),
    polly("pt-PT", &["Ines", "Cristiano", "Ines-Neural"], true),
    polly("nl-NL", &["Lotte", "Ruben", "Laura-Neural"], true),
    polly("da-DK", &["Naja", "Mads", "Sofie-Neural"], true),
    polly("nb-NO", &["Liv", "Ida-Neural"], true),
    polly("sv-SE", &["Astrid", "Elin-Neural"], true),
    polly("pl-PL", &["Ewa", "Maja", "Jacek", "Jan", "Ola-Neural"], true),
    polly("ro-RO", &["Carmen"], true),
    polly("ru-RU", &["Tatyana", "Maxim"], true),
    polly("tr-TR", &["Filiz"], true),
    polly("is-IS", &["Dora", "Karl"], true),
    polly("ko-KR", &["Seoyeon", "Seoyeon-Neural"], true),
    polly("cmn-CN", &["Zhiyu", "Zhiyu-Neural"], true),
    polly("hi-IN", &["Aditi", "Kajal-Neural"], true),
    polly("arb", &["Zeina"], false),
    google("fi-FI", "Google.fi-FI-Standard-A"),
    google("bg-BG", "Google.bg-BG-Standard-A"),
    google("cs-CZ", "Google.cs-CZ-Standard-A"),
    google("el-GR", "Google.el-GR-Standard-A"),
    google("fil-PH", "Google.fil-PH-Standard-A"),
    google("hu-HU", "Google.hu-HU-Standard-A"),
    google("id-ID", "Google.id-ID-Standard-A"),
    google("ms-MY", "Google.ms-MY-Standard-A"),
    google("sk-SK", "Google.sk-SK-Standard-A"),
    google("ta-IN", "Google.ta-IN-Standard-C"),
    google("uk-UA", "Google.uk-UA-Standard-A"),
    google("vi-VN", "Google.vi-VN-Standard-A"),
];

/// The table entry for a Twilio locale, spelled exactly as Twilio spells it.
pub fn say_locale(code: &str) -> Option<&'static SayLocale> {
    SAY_LOCALES.iter().find(|l| l.code == code)
}

impl SayLocale {
    /// Whether `voice` (`Polly.Bianca`, `Google.it-IT-Wavenet-B`) speaks this locale.
    pub fn speaks(&self, voice: &str) -> bool {
        if let Some(name) = voice.strip_prefix("Polly.") {
            return self.polly.contains(&name);
        }
        if let Some(rest) = voice.strip_prefix("Google.") {
            // Google voice names are `<locale>-<model>-<variant>`; the model and variant lists
            // change often, so only the locale is checked.
            return self.google
                && rest.strip_prefix(self.code).is_some_and(|tail| {
                    tail.len() > 1
                        && tail.starts_with('-')
                        && tail[1..]
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
        }
        false
    }

    /// The voice for a configuration that names only the locale.
    pub fn default_voice(&self) -> String {
        match self.polly.first() {
            Some(name) => format!("Polly.{name}"),
            None => self.google_default.to_owned(),
        }
    }

    /// The voices a configuration may name for this locale, for error messages.
    pub fn describe_voices(&self) -> String {
        let mut names: Vec<String> = self.polly.iter().map(|p| format!("Polly.{p}")).collect();
        if self.google {
            names.push(format!("Google.{}-<model>-<variant>", self.code));
        }
        names.join(", ")
    }
}

/// Why a `<Say>` language or voice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SayError {
    #[error("{0:?} is not a Twilio <Say> locale known here; use one of {known}", known = known_locales())]
    UnknownLanguage(String),
    #[error("{voice:?} does not speak {language}; voices for {language}: {voices}")]
    VoiceMismatch {
        voice: String,
        language: String,
        voices: String,
    },
}

fn known_locales() -> String {
    SAY_LOCALES
        .iter()
        .map(|l| l.code)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The language and voice every `<Say>` of a document is spoken with: a Twilio locale and a
/// voice that speaks it, checked against [`SAY_LOCALES`] when built. For a restaurant, get it
/// from [`crate::config::RestaurantConfig::say_voice`]; [`SayVoice::default`] (`en-US`,
/// `Polly.Joanna`) is for calls no restaurant is known for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SayVoice {
    language: String,
    voice: String,
}

impl Default for SayVoice {
    fn default() -> Self {
        SayVoice {
            language: "en-US".to_owned(),
            voice: "Polly.Joanna".to_owned(),
        }
    }
}

impl SayVoice {
    /// `language` (a Twilio locale) with `voice`, or with the locale's default voice when `None`.
    ///
    /// # Errors
    /// [`SayError::UnknownLanguage`] for a locale not in [`SAY_LOCALES`] (compared exactly:
    /// `it-IT`, not `it-it` or `it`); [`SayError::VoiceMismatch`] for a voice that does not speak it.
    pub fn new(language: &str, voice: Option<&str>) -> Result<SayVoice, SayError> {
        let locale =
            say_locale(language).ok_or_else(|| SayError::UnknownLanguage(language.to_owned()))?;
        let voice = match voice {
            Some(v) if locale.speaks(v) => v.to_owned(),
            Some(v) => {
                return Err(SayError::VoiceMismatch {
                    voice: v.to_owned(),
                    language: locale.code.to_owned(),
                    voices: locale.describe_voices(),
                })
            }
            None => locale.default_voice(),
        };
        Ok(SayVoice {
            language: locale.code.to_owned(),
            voice,
        })
    }

    /// The `language` attribute (`it-IT`).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The `voice` attribute (`Polly.Bianca`).
    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// Speaks `message`, then hangs up.
    pub fn say_hangup(&self, message: &str) -> String {
        let mut x = Doc::new();
        x.say(message, Some(self));
        x.empty("Hangup", &[]);
        x.finish()
    }

    /// Speaks `message`, then records a voicemail of at most `max_length_secs` after a beep;
    /// Twilio posts the recording to `recording_status_callback_url`.
    ///
    /// The same URL is the `<Record>`'s `action`: without one Twilio requests the *current
    /// document* (the voice webhook) when the recording ends, which would replay the after-hours
    /// message in a loop. The action's reply (an empty `<Response/>`, as the status route gives)
    /// ends the call. With an empty URL neither attribute is set; then the caller must handle
    /// that request itself.
    pub fn say_record(
        &self,
        message: &str,
        max_length_secs: u32,
        recording_status_callback_url: &str,
    ) -> String {
        say_record_doc(
            message,
            Some(self),
            max_length_secs,
            recording_status_callback_url,
        )
    }

    /// Optionally speaks `message`, then dials `number` (ringing `timeout_secs`), presenting
    /// `caller_id` when given.
    pub fn say_dial(
        &self,
        message: Option<&str>,
        number: &str,
        caller_id: Option<&str>,
        timeout_secs: u32,
    ) -> String {
        say_dial_doc(message, Some(self), number, caller_id, timeout_secs)
    }

    /// A polite generic message for a number no restaurant owns, then hang up.
    pub fn unknown_number(&self) -> String {
        self.say_hangup(UNKNOWN_NUMBER_MESSAGE)
    }

    /// The safe answer when something failed: speak `message` (the caller must hear why), then
    /// dial `number` when one is known (the restaurant's fallback or staff line), otherwise hang
    /// up. `message` is spoken in both cases, so it must suit the one the caller gets; an empty
    /// one is skipped.
    pub fn fallback(&self, number: Option<&str>, message: &str) -> String {
        fallback_doc(number, message, Some(self))
    }

    /// All lines are busy: speak `message`, then dial `number` if given, else hang up.
    pub fn busy(&self, message: &str, number: Option<&str>) -> String {
        busy_doc(message, number, Some(self))
    }

    /// The restaurant's after-hours mode: message + hang up, message + voicemail (recording
    /// posted to `recording_callback_url`), or optional message + forward.
    pub fn after_hours(&self, mode: &AfterHours, recording_callback_url: &str) -> String {
        match mode {
            AfterHours::Message { message } => self.say_hangup(message),
            AfterHours::Voicemail {
                message,
                max_length_secs,
            } => self.say_record(message, *max_length_secs, recording_callback_url),
            AfterHours::Forward { message, number } => {
                self.say_dial(message.as_deref(), number, None, DEFAULT_DIAL_TIMEOUT_SECS)
            }
        }
    }
}

const UNKNOWN_NUMBER_MESSAGE: &str = "Sorry, this number is not set up to take calls right now. Please check the number and try again. Goodbye.";

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

/// Dials `number` (ringing `timeout_secs`), presenting `caller_id` when given; nothing is spoken.
pub fn dial(number: &str, caller_id: Option<&str>, timeout_secs: u32) -> String {
    say_dial_doc(None, None, number, caller_id, timeout_secs)
}

fn say_record_doc(
    message: &str,
    voice: Option<&SayVoice>,
    max_length_secs: u32,
    callback: &str,
) -> String {
    let mut x = Doc::new();
    x.say(message, voice);
    if callback.is_empty() {
        // A <Record> with nowhere to report would lose the message and make Twilio fetch this
        // document again: without a callback, nothing is recorded.
        x.empty("Hangup", &[]);
        return x.finish();
    }
    let max = max_length_secs.max(1).to_string();
    let attrs = vec![
        ("maxLength", max.as_str()),
        ("playBeep", "true"),
        ("action", callback),
        ("method", "POST"),
        ("recordingStatusCallback", callback),
        ("recordingStatusCallbackMethod", "POST"),
    ];
    x.empty("Record", &attrs);
    x.empty("Hangup", &[]);
    x.finish()
}

fn say_dial_doc(
    message: Option<&str>,
    voice: Option<&SayVoice>,
    number: &str,
    caller_id: Option<&str>,
    timeout_secs: u32,
) -> String {
    let mut x = Doc::new();
    if let Some(m) = message.filter(|m| !m.trim().is_empty()) {
        x.say(m, voice);
    }
    x.dial(number, caller_id, timeout_secs);
    x.finish()
}

fn fallback_doc(number: Option<&str>, message: &str, voice: Option<&SayVoice>) -> String {
    match number.filter(|n| !n.trim().is_empty()) {
        Some(n) => say_dial_doc(Some(message), voice, n, None, DEFAULT_DIAL_TIMEOUT_SECS),
        None => {
            let mut x = Doc::new();
            if !message.trim().is_empty() {
                x.say(message, voice);
            }
            x.empty("Hangup", &[]);
            x.finish()
        }
    }
}

fn busy_doc(message: &str, number: Option<&str>, voice: Option<&SayVoice>) -> String {
    match number.filter(|n| !n.trim().is_empty()) {
        Some(n) => say_dial_doc(Some(message), voice, n, None, DEFAULT_DIAL_TIMEOUT_SECS),
        None => {
            let mut x = Doc::new();
            x.say(message, voice);
            x.empty("Hangup", &[]);
            x.finish()
        }
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

    /// `<Say>` with the voice's `language` and `voice` (`None`: Twilio's default voice).
    fn say(&mut self, message: &str, voice: Option<&SayVoice>) {
        match voice {
            Some(v) => self.open("Say", &[("language", v.language()), ("voice", v.voice())]),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal, strict XML reader for the subset TwiML uses: declaration, elements, attributes in
    /// double quotes, text, the five named entities and numeric character references. Anything
    /// else is an error, so a well-formedness slip in the writer fails these tests.
    #[derive(Debug, Clone, PartialEq)]
    enum Node {
        El {
            name: String,
            attrs: Vec<(String, String)>,
            children: Vec<Node>,
        },
        Text(String),
    }

    impl Node {
        fn name(&self) -> &str {
            match self {
                Node::El { name, .. } => name,
                Node::Text(_) => "#text",
            }
        }
        fn attr(&self, key: &str) -> Option<&str> {
            match self {
                Node::El { attrs, .. } => attrs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str()),
                Node::Text(_) => None,
            }
        }
        fn children(&self) -> &[Node] {
            match self {
                Node::El { children, .. } => children,
                Node::Text(_) => &[],
            }
        }
        fn text(&self) -> String {
            match self {
                Node::Text(t) => t.clone(),
                Node::El { children, .. } => children.iter().map(Node::text).collect(),
            }
        }
        fn names(&self) -> Vec<&str> {
            self.children().iter().map(Node::name).collect()
        }
    }

    struct Reader<'a> {
        s: &'a str,
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn rest(&self) -> &'a str {
            &self.s[self.pos..]
        }
        fn eat(&mut self, p: &str) -> bool {
            if self.rest().starts_with(p) {
                self.pos += p.len();
                true
            } else {
                false
            }
        }
        fn name(&mut self) -> Result<String, String> {
            let n: String = self
                .rest()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if n.is_empty() {
                return Err(format!("expected a name at {}", self.pos));
            }
            self.pos += n.len();
            Ok(n)
        }
        fn decode(raw: &str) -> Result<String, String> {
            let mut out = String::new();
            let mut it = raw.split('&');
            out.push_str(it.next().unwrap_or(""));
            for part in it {
                let (ent, tail) = part.split_once(';').ok_or("unterminated entity")?;
                let c = match ent {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    e if e.starts_with('#') => {
                        char::from_u32(e[1..].parse::<u32>().map_err(|_| "bad char ref")?)
                            .ok_or("bad char")?
                    }
                    _ => return Err(format!("unknown entity {ent}")),
                };
                out.push(c);
                out.push_str(tail);
            }
            Ok(out)
        }
        fn element(&mut self) -> Result<Node, String> {
            if !self.eat("<") {
                return Err(format!("expected '<' at {}", self.pos));
            }
            let name = self.name()?;
            let mut attrs = Vec::new();
            loop {
                if self.eat("/>") {
                    return Ok(Node::El {
                        name,
                        attrs,
                        children: vec![],
                    });
                }
                if self.eat(">") {
                    break;
                }
                if !self.eat(" ") {
                    return Err(format!("expected space at {}", self.pos));
                }
                let key = self.name()?;
                if !self.eat("=\"") {
                    return Err("attribute without =\"".into());
                }
                let end = self.rest().find('"').ok_or("unterminated attribute")?;
                let raw = &self.rest()[..end];
                if raw.contains('<') {
                    return Err("'<' in attribute".into());
                }
                attrs.push((key, Self::decode(raw)?));
                self.pos += end + 1;
            }
            let mut children = Vec::new();
            loop {
                if self.eat("</") {
                    let close = self.name()?;
                    if close != name || !self.eat(">") {
                        return Err(format!("mismatched </{close}> for <{name}>"));
                    }
                    return Ok(Node::El {
                        name,
                        attrs,
                        children,
                    });
                }
                if self.rest().starts_with('<') {
                    children.push(self.element()?);
                } else {
                    let end = self.rest().find('<').ok_or("unterminated element")?;
                    let raw = &self.rest()[..end];
                    if raw.contains('>') {
                        return Err("raw '>' in text".into());
                    }
                    children.push(Node::Text(Self::decode(raw)?));
                    self.pos += end;
                }
            }
        }
    }

    fn parse(doc: &str) -> Node {
        let mut r = Reader { s: doc, pos: 0 };
        assert!(r.eat(XML_DECL), "missing declaration: {doc}");
        let root = r.element().unwrap_or_else(|e| panic!("{e}: {doc}"));
        assert_eq!(r.rest(), "", "trailing content: {doc}");
        assert_eq!(root.name(), "Response");
        root
    }

    const NASTY: &str = "Tom & Jerry's <b>\"café\"</b> ]]> \u{0}\u{1b}\ttab\nline";
    const NASTY_CLEAN: &str = "Tom & Jerry's <b>\"café\"</b> ]]> \ttab\nline";

    #[test]
    fn stream_document_round_trips_parameters() {
        let doc = stream(
            "wss://bridge.example.com/media",
            &[
                ("handoff", "v1.k1.abc.def"),
                ("caller", "+1 <&> \"'"),
                ("evil", NASTY),
            ],
        )
        .unwrap();
        let root = parse(&doc);
        assert_eq!(root.names(), ["Connect"]);
        let s = &root.children()[0].children()[0];
        assert_eq!(s.name(), "Stream");
        assert_eq!(s.attr("url"), Some("wss://bridge.example.com/media"));
        let params: Vec<(&str, &str)> = s
            .children()
            .iter()
            .map(|p| (p.attr("name").unwrap(), p.attr("value").unwrap()))
            .collect();
        assert_eq!(
            params,
            [
                ("handoff", "v1.k1.abc.def"),
                ("caller", "+1 <&> \"'"),
                ("evil", NASTY_CLEAN)
            ]
        );
        assert!(!doc.contains("<b>") && !doc.contains("Jerry's"));
    }

    #[test]
    fn stream_url_rules() {
        assert_eq!(stream("ws://h/media", &[]), Err(TwimlError::NotWss));
        assert_eq!(stream("https://h/media", &[]), Err(TwimlError::NotWss));
        assert_eq!(stream("wss", &[]), Err(TwimlError::NotWss));
        assert_eq!(stream("", &[]), Err(TwimlError::NotWss));
        assert_eq!(
            stream("wss://h/media?token=x", &[]),
            Err(TwimlError::QueryInUrl)
        );
        assert_eq!(stream("wss://h/media#x", &[]), Err(TwimlError::QueryInUrl));
        assert_eq!(stream("wss:///media", &[]), Err(TwimlError::NoHost));
        assert_eq!(
            stream("wss://h/m", &[("", "v")]),
            Err(TwimlError::EmptyParameterName)
        );
        let many: Vec<(&str, &str)> = (0..=MAX_STREAM_PARAMETERS).map(|_| ("k", "v")).collect();
        assert_eq!(
            stream("wss://h/m", &many),
            Err(TwimlError::TooManyParameters(MAX_STREAM_PARAMETERS + 1))
        );
        assert!(stream("WSS://h:8443/media", &[]).is_ok());
        // The url attribute can itself carry markup characters safely.
        let doc = stream("wss://h/a&b\"c", &[]).unwrap();
        assert_eq!(
            parse(&doc).children()[0].children()[0].attr("url"),
            Some("wss://h/a&b\"c")
        );
    }

    fn italian() -> SayVoice {
        SayVoice::new("it-IT", Some("Polly.Bianca")).unwrap()
    }

    /// Every `<Say>` in `root` carries exactly this language and voice.
    fn assert_spoken_with(root: &Node, voice: &SayVoice) {
        let says: Vec<&Node> = root
            .children()
            .iter()
            .filter(|n| n.name() == "Say")
            .collect();
        assert!(!says.is_empty(), "no <Say> in {root:?}");
        for say in says {
            assert_eq!(say.attr("language"), Some(voice.language()), "{say:?}");
            assert_eq!(say.attr("voice"), Some(voice.voice()), "{say:?}");
        }
    }

    #[test]
    fn say_hangup_escapes_and_sets_language_and_voice() {
        let root = parse(&italian().say_hangup(NASTY));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_spoken_with(&root, &italian());
        assert_eq!(root.children()[0].text(), NASTY_CLEAN);
    }

    #[test]
    fn an_italian_restaurant_speaks_it_it_with_an_italian_voice_in_every_document() {
        let it = italian();
        let vm = AfterHours::Voicemail {
            message: "Siamo chiusi. Lasci un messaggio dopo il segnale.".into(),
            max_length_secs: 90,
        };
        let fwd = AfterHours::Forward {
            message: Some("La inoltriamo".into()),
            number: "+390612345600".into(),
        };
        let msg = AfterHours::Message {
            message: "Siamo chiusi".into(),
        };
        for doc in [
            it.after_hours(&vm, "https://e/rec"),
            it.after_hours(&fwd, ""),
            it.after_hours(&msg, ""),
            it.busy("Linee occupate", Some("+390612345600")),
            it.busy("Linee occupate", None),
            it.fallback(None, "Ci scusi"),
            it.say_dial(Some("Ci scusi"), "+390612345600", None, 30),
            it.say_record("Ci scusi", 120, ""),
        ] {
            let root = parse(&doc);
            assert_spoken_with(&root, &it);
            assert!(
                doc.contains(r#"<Say language="it-IT" voice="Polly.Bianca">"#),
                "{doc}"
            );
            // The ElevenLabs code never reaches Twilio.
            assert!(!doc.contains(r#"language="it""#), "{doc}");
        }
    }

    #[test]
    fn say_voice_accepts_only_known_locales_and_voices_that_speak_them() {
        let it = SayVoice::new("it-IT", None).unwrap();
        assert_eq!((it.language(), it.voice()), ("it-IT", "Polly.Bianca"));
        let ja = SayVoice::new("ja-JP", Some("Polly.Takumi-Neural")).unwrap();
        assert_eq!(ja.voice(), "Polly.Takumi-Neural");
        SayVoice::new("it-IT", Some("Google.it-IT-Wavenet-B")).unwrap();
        assert_eq!(
            SayVoice::new("uk-UA", None).unwrap().voice(),
            "Google.uk-UA-Standard-A"
        );
        for lang in ["it", "it-it", "IT-IT", "", "en_US", "xx-XX"] {
            assert_eq!(
                SayVoice::new(lang, None),
                Err(SayError::UnknownLanguage(lang.to_owned())),
                "{lang:?}"
            );
        }
        for voice in [
            "Polly.Mizuki",
            "Polly.bianca",
            "Bianca",
            "man",
            "alice",
            "Google.ja-JP-Standard-A",
            "Google.it-IT",
            "Google.it-IT-",
            "Google.it-ITX-Standard-A",
            "Google.it-IT-Standard-A\"/><Hangup",
        ] {
            let err = SayVoice::new("it-IT", Some(voice)).unwrap_err();
            assert!(
                matches!(err, SayError::VoiceMismatch { .. }),
                "{voice}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("it-IT") && text.contains("Polly.Bianca"),
                "{text}"
            );
        }
        // No Google voices for Arabic (arb) here: only Polly.Zeina.
        assert!(SayVoice::new("arb", Some("Google.arb-Standard-A")).is_err());
        assert_eq!(SayVoice::default().language(), "en-US");
        assert_eq!(SayVoice::default().voice(), "Polly.Joanna");
    }

    #[test]
    fn the_locale_table_is_consistent() {
        let mut codes: Vec<&str> = SAY_LOCALES.iter().map(|l| l.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), SAY_LOCALES.len(), "a locale is listed twice");
        for l in SAY_LOCALES {
            let v = l.default_voice();
            assert!(
                l.speaks(&v),
                "{}: default voice {v} does not speak it",
                l.code
            );
            assert_eq!(SayVoice::new(l.code, None).unwrap().voice(), v);
            for p in l.polly {
                assert!(
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                    "{}: {p}",
                    l.code
                );
            }
        }
        assert!(SayVoice::default() == SayVoice::new("en-US", None).unwrap());
    }

    #[test]
    fn say_record_has_beep_length_and_callback() {
        let root = parse(&SayVoice::default().say_record(
            "Leave a message & we'll call back",
            90,
            "https://edge.example/rec?a=1&b=2",
        ));
        assert_eq!(root.names(), ["Say", "Record", "Hangup"]);
        let rec = &root.children()[1];
        assert_eq!(rec.attr("maxLength"), Some("90"));
        assert_eq!(rec.attr("playBeep"), Some("true"));
        assert_eq!(
            rec.attr("recordingStatusCallback"),
            Some("https://edge.example/rec?a=1&b=2")
        );
        // An action is required, or Twilio re-requests the voice webhook after recording (loop).
        assert_eq!(rec.attr("action"), Some("https://edge.example/rec?a=1&b=2"));
        assert_eq!(rec.attr("method"), Some("POST"));
        assert_eq!(
            root.children()[0].text(),
            "Leave a message & we'll call back"
        );
        let min = parse(&SayVoice::default().say_record("m", 0, "https://b/rec"));
        assert_eq!(min.children()[1].attr("maxLength"), Some("1"));
    }

    #[test]
    fn say_dial_variants() {
        let en = SayVoice::default();
        let root = parse(&en.say_dial(
            Some("Connecting you <now>"),
            "+390612345678",
            Some("+15550001111"),
            20,
        ));
        assert_eq!(root.names(), ["Say", "Dial"]);
        assert_spoken_with(&root, &en);
        let dial_el = &root.children()[1];
        assert_eq!(dial_el.text(), "+390612345678");
        assert_eq!(dial_el.attr("callerId"), Some("+15550001111"));
        assert_eq!(dial_el.attr("timeout"), Some("20"));
        let root = parse(&dial("+1<script>", None, 0));
        assert_eq!(root.names(), ["Dial"]);
        assert_eq!(root.children()[0].text(), "+1<script>");
        assert_eq!(root.children()[0].attr("callerId"), None);
        assert_eq!(root.children()[0].attr("timeout"), Some("5"));
        assert_eq!(
            parse(&en.say_dial(Some("  "), "+1", None, 30)).names(),
            ["Dial"]
        );
        assert_eq!(parse(&en.say_dial(None, "+1", None, 30)).names(), ["Dial"]);
    }

    #[test]
    fn unknown_number_is_polite_and_hangs_up() {
        let root = parse(&SayVoice::default().unknown_number());
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_spoken_with(&root, &SayVoice::default());
        assert!(root.children()[0].text().starts_with("Sorry"));
    }

    #[test]
    fn fallback_says_why_then_dials_when_it_can() {
        let it = italian();
        let root = parse(&it.fallback(Some("+15550001111"), "Sorry & one moment"));
        assert_eq!(root.names(), ["Say", "Dial"]);
        assert_spoken_with(&root, &it);
        assert_eq!(root.children()[0].text(), "Sorry & one moment");
        assert_eq!(root.children()[1].text(), "+15550001111");
        // Nothing to say: just the transfer (never an empty <Say>).
        assert_eq!(
            parse(&it.fallback(Some("+15550001111"), " ")).names(),
            ["Dial"]
        );
        assert_eq!(parse(&it.fallback(None, "")).names(), ["Hangup"]);
        for none in [None, Some(""), Some(" ")] {
            let root = parse(&it.fallback(none, "Sorry & goodbye"));
            assert_eq!(root.names(), ["Say", "Hangup"]);
            assert_spoken_with(&root, &it);
            assert_eq!(root.children()[0].text(), "Sorry & goodbye");
        }
    }

    #[test]
    fn busy_forwards_or_hangs_up() {
        let it = italian();
        let root = parse(&it.busy("All lines busy", Some("+15550001111")));
        assert_eq!(root.names(), ["Say", "Dial"]);
        assert_spoken_with(&root, &it);
        let root = parse(&it.busy("All <lines> busy", None));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_eq!(root.children()[0].text(), "All <lines> busy");
    }

    #[test]
    fn a_record_without_a_callback_is_never_emitted() {
        let root = parse(&SayVoice::default().say_record("m", 5, ""));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        let root = parse(&SayVoice::default().say_record("m", 5, "https://b/twilio/recording"));
        assert_eq!(root.names(), ["Say", "Record", "Hangup"]);
        assert_eq!(
            root.children()[1].attr("action"),
            Some("https://b/twilio/recording")
        );
    }

    #[test]
    fn after_hours_follows_the_mode() {
        let en = SayVoice::default();
        let msg = AfterHours::Message {
            message: "We're closed".into(),
        };
        let root = parse(&en.after_hours(&msg, "https://e/rec"));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_spoken_with(&root, &en);
        assert_eq!(root.children()[0].text(), "We're closed");

        let vm = AfterHours::Voicemail {
            message: "Leave a message".into(),
            max_length_secs: 60,
        };
        let root = parse(&italian().after_hours(&vm, "https://e/rec"));
        assert_eq!(root.names(), ["Say", "Record", "Hangup"]);
        assert_spoken_with(&root, &italian());
        assert_eq!(root.children()[1].attr("maxLength"), Some("60"));
        assert_eq!(
            root.children()[1].attr("recordingStatusCallback"),
            Some("https://e/rec")
        );

        let ja = SayVoice::new("ja-JP", None).unwrap();
        let fwd = AfterHours::Forward {
            message: Some("Forwarding".into()),
            number: "+81312345678".into(),
        };
        let root = parse(&ja.after_hours(&fwd, ""));
        assert_eq!(root.names(), ["Say", "Dial"]);
        assert_spoken_with(&root, &ja);
        assert_eq!(root.children()[1].text(), "+81312345678");
        let fwd = AfterHours::Forward {
            message: None,
            number: "+81312345678".into(),
        };
        assert_eq!(parse(&ja.after_hours(&fwd, "")).names(), ["Dial"]);
    }

    #[test]
    fn every_document_is_well_formed_for_arbitrary_text() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(200), |(text in any::<String>(), value in any::<String>())| {
            let doc = SayVoice::default().say_hangup(&text);
            let root = parse(&doc);
            let clean: String = text.chars().filter(|c| is_xml_char(*c) || matches!(c, '\t' | '\n' | '\r')).collect();
            prop_assert_eq!(root.children()[0].text(), clean);
            let doc = stream("wss://h/m", &[("k", &value)]).unwrap();
            parse(&doc);
        });
    }
}
