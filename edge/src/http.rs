//! Plain HTTP values the edge core works on, so the decision logic never sees `worker::Request`
//! or axum types: each shell converts its request into an [`Inbound`], and a [`Reply`] back.
//! Outgoing dashboard requests are described as [`Outbound`] and their answers as [`Upstream`].

/// Largest request body any route accepts (Twilio's webhooks are a few KiB; ElevenLabs' post-call
/// payloads with transcript are larger but well under this).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest dashboard response body the edge reads (a restaurant configuration is a few KiB).
pub const MAX_UPSTREAM_BYTES: usize = 256 * 1024;

/// `Content-Type` of TwiML replies.
pub const TWIML: &str = "text/xml; charset=utf-8";
/// `Content-Type` of plain-text replies.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json";

/// An incoming request as the core sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Upper-case method, e.g. `"POST"`.
    pub method: String,
    /// Path without query, e.g. `"/twilio/voice"`.
    pub path: String,
    /// Query without `?` (empty when none). Part of the URL Twilio signs.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Inbound {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `path?query`, or `path` when there is no query.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// What the edge answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn twiml(body: String) -> Self {
        Self {
            status: 200,
            content_type: TWIML,
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            content_type: TEXT,
            body: String::new(),
        }
    }
}

/// A request to the dashboard, already signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The dashboard's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstream {
    pub status: u16,
    /// The `ETag` header, if any.
    pub etag: Option<String>,
    pub body: Vec<u8>,
}
