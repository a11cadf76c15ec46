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
///
/// The same URL is the `<Record>`'s `action`: without one Twilio requests the *current document*
/// (the voice webhook) when the recording ends, which would replay the after-hours message in a
/// loop. The action's reply (an empty `<Response/>`, as the status route gives) ends the call.
/// With an empty URL neither attribute is set; then the caller must handle that request itself.
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
        attrs.push(("action", callback));
        attrs.push(("method", "POST"));
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

    #[test]
    fn say_hangup_escapes_and_sets_language() {
        let root = parse(&say_hangup(NASTY, "it-IT"));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_eq!(root.children()[0].attr("language"), Some("it-IT"));
        assert_eq!(root.children()[0].text(), NASTY_CLEAN);
        // Language itself is escaped; empty language is omitted.
        let root = parse(&say_hangup("hi", "en\"><Hangup/>"));
        assert_eq!(root.children()[0].attr("language"), Some("en\"><Hangup/>"));
        assert_eq!(
            parse(&say_hangup("hi", "")).children()[0].attr("language"),
            None
        );
    }

    #[test]
    fn say_record_has_beep_length_and_callback() {
        let root = parse(&say_record(
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
        let no_cb = parse(&say_record("m", 0, ""));
        assert_eq!(no_cb.children()[1].attr("recordingStatusCallback"), None);
        assert_eq!(no_cb.children()[1].attr("action"), None);
        assert_eq!(no_cb.children()[1].attr("maxLength"), Some("1"));
    }

    #[test]
    fn say_dial_variants() {
        let root = parse(&say_dial(
            Some("Connecting you <now>"),
            "+390612345678",
            Some("+15550001111"),
            20,
        ));
        assert_eq!(root.names(), ["Say", "Dial"]);
        let dial = &root.children()[1];
        assert_eq!(dial.text(), "+390612345678");
        assert_eq!(dial.attr("callerId"), Some("+15550001111"));
        assert_eq!(dial.attr("timeout"), Some("20"));
        let root = parse(&say_dial(None, "+1<script>", None, 0));
        assert_eq!(root.names(), ["Dial"]);
        assert_eq!(root.children()[0].text(), "+1<script>");
        assert_eq!(root.children()[0].attr("callerId"), None);
        assert_eq!(root.children()[0].attr("timeout"), Some("5"));
        assert_eq!(
            parse(&say_dial(Some("  "), "+1", None, 30)).names(),
            ["Dial"]
        );
    }

    #[test]
    fn unknown_number_is_polite_and_hangs_up() {
        let root = parse(&unknown_number("en-US"));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert!(root.children()[0].text().starts_with("Sorry"));
    }

    #[test]
    fn fallback_dials_when_it_can() {
        let root = parse(&fallback(Some("+15550001111"), "Sorry & goodbye"));
        assert_eq!(root.names(), ["Dial"]);
        assert_eq!(root.children()[0].text(), "+15550001111");
        for none in [None, Some(""), Some(" ")] {
            let root = parse(&fallback(none, "Sorry & goodbye"));
            assert_eq!(root.names(), ["Say", "Hangup"]);
            assert_eq!(root.children()[0].text(), "Sorry & goodbye");
        }
    }

    #[test]
    fn busy_forwards_or_hangs_up() {
        assert_eq!(
            parse(&busy("All lines busy", Some("+15550001111"))).names(),
            ["Say", "Dial"]
        );
        let root = parse(&busy("All <lines> busy", None));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_eq!(root.children()[0].text(), "All <lines> busy");
    }

    #[test]
    fn after_hours_follows_the_mode() {
        let msg = AfterHours::Message {
            message: "We're closed".into(),
        };
        let root = parse(&after_hours(&msg, "en-US", "https://e/rec"));
        assert_eq!(root.names(), ["Say", "Hangup"]);
        assert_eq!(root.children()[0].attr("language"), Some("en-US"));
        assert_eq!(root.children()[0].text(), "We're closed");

        let vm = AfterHours::Voicemail {
            message: "Leave a message".into(),
            max_length_secs: 60,
        };
        let root = parse(&after_hours(&vm, "it-IT", "https://e/rec"));
        assert_eq!(root.names(), ["Say", "Record", "Hangup"]);
        assert_eq!(root.children()[0].attr("language"), Some("it-IT"));
        assert_eq!(root.children()[1].attr("maxLength"), Some("60"));
        assert_eq!(
            root.children()[1].attr("recordingStatusCallback"),
            Some("https://e/rec")
        );

        let fwd = AfterHours::Forward {
            message: Some("Forwarding".into()),
            number: "+81312345678".into(),
        };
        let root = parse(&after_hours(&fwd, "ja-JP", ""));
        assert_eq!(root.names(), ["Say", "Dial"]);
        assert_eq!(root.children()[1].text(), "+81312345678");
        let fwd = AfterHours::Forward {
            message: None,
            number: "+81312345678".into(),
        };
        assert_eq!(parse(&after_hours(&fwd, "ja-JP", "")).names(), ["Dial"]);
    }

    #[test]
    fn every_document_is_well_formed_for_arbitrary_text() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(200), |(text in any::<String>(), value in any::<String>())| {
            let doc = say_hangup(&text, &value);
            let root = parse(&doc);
            let clean: String = text.chars().filter(|c| is_xml_char(*c) || matches!(c, '\t' | '\n' | '\r')).collect();
            prop_assert_eq!(root.children()[0].text(), clean);
            let doc = stream("wss://h/m", &[("k", &value)]).unwrap();
            parse(&doc);
        });
    }
}
