//! Reading TwiML the way Twilio does, for everything on the Twilio side of the stand-ins: the
//! caller simulator taking its `<Stream>` from the edge's answer, the front door telling a stream
//! from a voicemail or a forward, the demo checking `<Say>` languages, and tests reading the
//! TwiML of a call update. One XML reader (roxmltree), one owned tree.

use std::collections::BTreeMap;

/// One element: its name, attributes (entities decoded), text and child elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    /// The element's own text (entities decoded, not trimmed); empty when it has none.
    pub text: String,
    pub children: Vec<Element>,
}

/// Why a document is not TwiML Twilio would run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    #[error("TwiML does not parse: {0}")]
    Xml(String),
    #[error("TwiML's root element is <{0}>, not <Response>")]
    Root(String),
}

/// Parses a TwiML document; its root must be `<Response>`, as Twilio requires.
///
/// # Errors
/// [`TwimlError::Xml`] for malformed XML, [`TwimlError::Root`] for another root element.
pub fn parse(xml: &str) -> Result<Element, TwimlError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| TwimlError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(TwimlError::Root(root.tag_name().name().to_owned()));
    }
    Ok(owned(root))
}

fn owned(node: roxmltree::Node<'_, '_>) -> Element {
    Element {
        name: node.tag_name().name().to_owned(),
        attributes: node
            .attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect(),
        text: node
            .children()
            .filter(roxmltree::Node::is_text)
            .filter_map(|t| t.text())
            .collect(),
        children: node.children().filter(roxmltree::Node::is_element).map(owned).collect(),
    }
}

impl Element {
    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Every element below this one named `name`, in document order.
    pub fn all(&self, name: &str) -> Vec<&Element> {
        let mut found = Vec::new();
        self.collect(name, &mut found);
        found
    }

    /// The first element below this one named `name`, in document order.
    pub fn find(&self, name: &str) -> Option<&Element> {
        self.all(name).into_iter().next()
    }

    fn collect<'a>(&'a self, name: &str, found: &mut Vec<&'a Element>) {
        for child in &self.children {
            if child.name == name {
                found.push(child);
            }
            child.collect(name, found);
        }
    }

    /// The `<Stream url>` and its `<Parameter name value>`s: what Twilio opens a Media Stream
    /// with.
    pub fn stream(&self) -> Option<(String, BTreeMap<String, String>)> {
        let stream = self.find("Stream")?;
        let url = stream.attr("url")?.to_owned();
        let parameters = stream
            .all("Parameter")
            .into_iter()
            .filter_map(|p| Some((p.attr("name")?.to_owned(), p.attr("value")?.to_owned())))
            .collect();
        Some((url, parameters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stream_with_parameters_and_decodes_entities() {
        let doc = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://b.example/media?a=1&amp;b=2"><Parameter name="token" value="x&lt;y"/><Parameter name="region" value="eu"/></Stream></Connect></Response>"#,
        )
        .unwrap();
        let (url, params) = doc.stream().unwrap();
        assert_eq!(url, "wss://b.example/media?a=1&b=2");
        assert_eq!(params["token"], "x<y");
        assert_eq!(params["region"], "eu");
    }

    #[test]
    fn finds_nested_elements_in_order_with_text() {
        let doc = parse(r#"<Response><Say language="it-IT">Ciao</Say><Dial><Number> +39 </Number></Dial><Say>Bye</Say></Response>"#).unwrap();
        let says: Vec<_> = doc.all("Say").iter().map(|s| s.text.clone()).collect();
        assert_eq!(says, ["Ciao", "Bye"]);
        assert_eq!(doc.find("Say").and_then(|s| s.attr("language")), Some("it-IT"));
        assert_eq!(doc.find("Number").map(|n| n.text.trim()), Some("+39"));
        assert!(doc.stream().is_none());
    }

    #[test]
    fn refuses_what_twilio_would_not_run() {
        assert!(matches!(parse("<Response><Say>unclosed</Response>"), Err(TwimlError::Xml(_))));
        assert_eq!(parse("<Play>x</Play>"), Err(TwimlError::Root("Play".into())));
        assert!(matches!(parse(""), Err(TwimlError::Xml(_))));
    }
}
