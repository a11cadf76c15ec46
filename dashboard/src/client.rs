//! Typed HTTP client for dashboard API v1 (embedded or remote): every request is signed with the
//! caller's signing key (`pulsara_core::request_auth`) and/or carries its API key, with a
//! timeout, and errors are classified so callers know what is worth retrying.

use std::time::Duration;

use pulsara_core::agent::ToolSpec;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig, ToolBinding};
use pulsara_core::request_auth;
use pulsara_core::secret::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::Clock;

/// How to reach and authenticate to the dashboard.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `http://127.0.0.1:8787` (no trailing slash needed).
    pub base_url: String,
    /// Signing key id + secret (`X-Pulsara-*` headers).
    pub signing_key: Option<(String, Secret)>,
    /// `Authorization: Bearer` API key.
    pub api_key: Option<Secret>,
    /// Per-request timeout (connect + answer).
    pub timeout: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("signing_key_id", &self.signing_key.as_ref().map(|k| &k.0))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            signing_key: None,
            api_key: None,
            timeout: Duration::from_secs(2),
        }
    }
    pub fn signing_key(mut self, id: impl Into<String>, secret: Secret) -> Self {
        self.signing_key = Some((id.into(), secret));
        self
    }
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// A failed dashboard call. Messages carry status, error code and the dashboard's message,
/// never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("dashboard unreachable: {0}")]
    Transport(String),
    #[error("dashboard answered {status} ({code}): {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("dashboard has no {0}")]
    NotFound(String),
    #[error("dashboard answer could not be decoded: {0}")]
    Decode(String),
    #[error("policy module bytes hash to {got}, not the requested {want}; refusing them")]
    HashMismatch { want: String, got: String },
    #[error("invalid argument: {0}")]
    InvalidInput(String),
}

impl ClientError {
    /// Worth retrying later (transport failures, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Status { status, .. } => crate::is_transient_status(*status),
            _ => false,
        }
    }
}

/// A conditional GET's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched<T> {
    Fresh {
        value: T,
        etag: Option<String>,
    },
    /// `304`: the caller's copy (its ETag) is current.
    NotModified,
}

/// One entry of `GET /v1/restaurants`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RestaurantSummary {
    pub id: String,
    pub version: u64,
}

/// Outcome of `POST /v1/calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    Created,
    Duplicate,
}

#[derive(Clone)]
pub struct DashboardClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    clock: Clock,
}

impl std::fmt::Debug for DashboardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardClient")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn segment(s: &str) -> Result<&str, ClientError> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
    {
        return Err(ClientError::InvalidInput(format!(
            "{s:?} is not a valid path segment"
        )));
    }
    Ok(s)
}

impl DashboardClient {
    /// # Errors
    /// The HTTP client cannot be built (TLS backend failure).
    pub fn new(cfg: ClientConfig, clock: Clock) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| ClientError::Transport(format!("cannot build HTTP client: {e}")))?;
        Ok(Self { http, cfg, clock })
    }

    pub fn base_url(&self) -> &str {
        &self.cfg.base_url
    }

    fn auth_headers(&self, method: &str, path_and_query: &str, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some((kid, secret)) = &self.cfg.signing_key {
            let nonce = pulsara_core::random::hex_token(16);
            for (name, value) in request_auth::sign(
                kid,
                secret,
                method,
                path_and_query,
                (self.clock)(),
                &nonce,
                body,
            ) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    h.insert(n, v);
                }
            }
        }
        if let Some(key) = &self.cfg.api_key {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                v.set_sensitive(true);
                h.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        h
    }

    /// Sends one request; `path_and_query` starts with `/`.
    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<(&[u8], &str)>,
        extra: &[(&str, String)],
    ) -> Result<reqwest::Response, ClientError> {
        let base = self.cfg.base_url.trim_end_matches('/');
        let prefix = base
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        let signed_path = format!("{prefix}{path_and_query}");
        let payload = body.map(|b| b.0).unwrap_or(b"");
        let mut req = self
            .http
            .request(method.clone(), format!("{base}{path_and_query}"))
            .headers(self.auth_headers(method.as_str(), &signed_path, payload));
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        if let Some((bytes, ctype)) = body {
            req = req.header("content-type", ctype).body(bytes.to_vec());
        }
        req.send()
            .await
            .map_err(|e| ClientError::Transport(e.without_url().to_string()))
    }

    async fn error_from(resp: reqwest::Response, what: &str) -> ClientError {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(500)
            .collect();
        if status == 404 {
            return ClientError::NotFound(what.to_owned());
        }
        ClientError::Status {
            status,
            code,
            message,
        }
    }

    async fn get_versioned<T: DeserializeOwned>(
        &self,
        path: &str,
        etag: Option<&str>,
        what: &str,
    ) -> Result<Fetched<T>, ClientError> {
        let extra: Vec<(&str, String)> = etag
            .map(|e| vec![("if-none-match", e.to_owned())])
            .unwrap_or_default();
        let resp = self.send(reqwest::Method::GET, path, None, &extra).await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !resp.status().is_success() {
            return Err(Self::error_from(resp, what).await);
        }
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.without_url().to_string()))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("{what}: {e}")))?;
        Ok(Fetched::Fresh { value, etag })
    }

    /// `GET /v1/restaurants`, every page: the id and configuration version of each restaurant,
    /// by id. Stops with an error past `max` restaurants rather than growing without bound.
    ///
    /// # Errors
    /// Transport, status or decoding errors of any page; [`ClientError::InvalidInput`] past `max`.
    pub async fn restaurants(&self, max: usize) -> Result<Vec<RestaurantSummary>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            restaurants: Vec<RestaurantSummary>,
            #[serde(default)]
            next_after: Option<String>,
        }
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!(
                    "/v1/restaurants?limit=500&after={}",
                    segment(a)?.replace('+', "%2B")
                ),
                None => "/v1/restaurants?limit=500".to_owned(),
            };
            let resp = self.send(reqwest::Method::GET, &path, None, &[]).await?;
            if !resp.status().is_success() {
                return Err(Self::error_from(resp, "restaurant list").await);
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ClientError::Transport(e.without_url().to_string()))?;
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Decode(format!("restaurant list: {e}")))?;
            out.extend(page.restaurants);
            if out.len() > max {
                return Err(ClientError::InvalidInput(format!(
                    "the dashboard lists more than {max} restaurants"
                )));
            }
            match page.next_after {
                // A page that does not move forward would loop for ever.
                Some(next) if after.as_deref().is_none_or(|a| next.as_str() > a) => {
                    after = Some(next)
                }
                _ => return Ok(out),
            }
        }
    }

    /// `GET /v1/restaurants/by-number/{e164}`.
    pub async fn restaurant_by_number(
        &self,
        e164: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<RestaurantConfig>, ClientError> {
        let path = format!("/v1/restaurants/by-number/{}", segment(e164)?);
        self.get_versioned(&path, etag, &format!("restaurant for number {e164}"))
            .await
    }

    /// `GET /v1/restaurants/{id}`.
    pub async fn restaurant(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<RestaurantConfig>, ClientError> {
        let path = format!("/v1/restaurants/{}", segment(id)?);
        self.get_versioned(&path, etag, &format!("restaurant {id}"))
            .await
    }

    /// `GET /v1/restaurants/{id}/knowledge-base`.
    pub async fn knowledge_base(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> Result<Fetched<KnowledgeBase>, ClientError> {
        let path = format!("/v1/restaurants/{}/knowledge-base", segment(id)?);
        self.get_versioned(&path, etag, &format!("knowledge base of {id}"))
            .await
    }

    /// `GET /v1/policies/{sha256}`; the bytes are checked against the hash.
    pub async fn policy(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        let want = Self::module_sha(sha256)?;
        let resp = self
            .send(
                reqwest::Method::GET,
                &format!("/v1/policies/{want}"),
                None,
                &[],
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp, &format!("policy module {want}")).await);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(e.without_url().to_string()))?;
        let got = pulsara_core::crypto::sha256_hex(&bytes);
        if got != want {
            return Err(ClientError::HashMismatch { want, got });
        }
        Ok(bytes.to_vec())
    }

    /// `POST /v1/calls` with a serialised CallRecord and its idempotency key (the call sid).
    pub async fn post_call_record(
        &self,
        body: &[u8],
        idempotency_key: &str,
    ) -> Result<PostOutcome, ClientError> {
        let resp = self
            .send(
                reqwest::Method::POST,
                "/v1/calls",
                Some((body, "application/json")),
                &[("idempotency-key", idempotency_key.to_owned())],
            )
            .await?;
        match resp.status().as_u16() {
            201 => Ok(PostOutcome::Created),
            200 => Ok(PostOutcome::Duplicate),
            _ => Err(Self::error_from(resp, "calls endpoint").await),
        }
    }

    async fn post_json(&self, path: &str, body: &Value, what: &str) -> Result<Value, ClientError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let resp = self
            .send(
                reqwest::Method::POST,
                path,
                Some((&bytes, "application/json")),
                &[],
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp, what).await);
        }
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /v1/calls/{call_sid}/events`.
    pub async fn post_event(&self, call_sid: &str, event: &Value) -> Result<(), ClientError> {
        self.post_json(
            &format!("/v1/calls/{}/events", segment(call_sid)?),
            event,
            "events endpoint",
        )
        .await
        .map(|_| ())
    }

    /// `POST /v1/post-call`.
    pub async fn post_post_call(&self, payload: &Value) -> Result<Option<String>, ClientError> {
        let v = self
            .post_json("/v1/post-call", payload, "post-call endpoint")
            .await?;
        Ok(v.get("merged_into")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// `GET /v1/calls/{call_sid}` (admin).
    pub async fn call(&self, call_sid: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/calls/{}", segment(call_sid)?);
        self.get_json(&path, &format!("call {call_sid}")).await
    }

    /// `GET` of a JSON document.
    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, ClientError> {
        let resp = self.send(reqwest::Method::GET, path, None, &[]).await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp, what).await);
        }
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/policies/{sha256}/tool`: the module's tool specification (description and
    /// parameter schema for the voice agent).
    pub async fn policy_tool(&self, sha256: &str) -> Result<ToolSpec, ClientError> {
        let sha = Self::module_sha(sha256)?;
        self.get_json(
            &format!("/v1/policies/{sha}/tool"),
            &format!("tool specification of module {sha}"),
        )
        .await
    }

    /// `PUT /v1/admin/policies/{sha256}/tool` (admin): stores the module's tool specification;
    /// every restaurant offering it gets an agent sync.
    pub async fn admin_put_policy_tool(
        &self,
        sha256: &str,
        spec: &ToolSpec,
    ) -> Result<ToolSpec, ClientError> {
        let sha = Self::module_sha(sha256)?;
        self.put_json(
            &format!("/v1/admin/policies/{sha}/tool"),
            spec,
            "tool specification",
        )
        .await
    }

    /// `GET /v1/admin/agent-sync` (admin): each restaurant's agent sync state.
    pub async fn admin_agent_sync(&self) -> Result<Value, ClientError> {
        self.get_json("/v1/admin/agent-sync", "agent sync state")
            .await
    }

    fn module_sha(sha256: &str) -> Result<String, ClientError> {
        let sha = sha256.to_ascii_lowercase();
        if pulsara_core::crypto::is_sha256_hex(&sha) {
            Ok(sha)
        } else {
            Err(ClientError::InvalidInput(
                "policy id must be a 64-character hex sha256".into(),
            ))
        }
    }

    async fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        what: &str,
    ) -> Result<T, ClientError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        let resp = self
            .send(
                reqwest::Method::PUT,
                path,
                Some((&bytes, "application/json")),
                &[],
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Self::error_from(resp, what).await);
        }
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `PUT /v1/admin/restaurants/{id}` (admin): returns the stored config with its new version.
    pub async fn admin_put_restaurant(
        &self,
        cfg: &RestaurantConfig,
    ) -> Result<RestaurantConfig, ClientError> {
        self.put_json(
            &format!("/v1/admin/restaurants/{}", segment(&cfg.id)?),
            cfg,
            "restaurant",
        )
        .await
    }

    /// `PUT /v1/admin/restaurants/{id}/knowledge-base` (admin).
    pub async fn admin_put_knowledge_base(
        &self,
        kb: &KnowledgeBase,
    ) -> Result<KnowledgeBase, ClientError> {
        self.put_json(
            &format!(
                "/v1/admin/restaurants/{}/knowledge-base",
                segment(&kb.restaurant_id)?
            ),
            kb,
            "knowledge base",
        )
        .await
    }

    /// `PUT /v1/admin/restaurants/{id}/tools` (admin).
    pub async fn admin_put_tools(
        &self,
        id: &str,
        tools: &[ToolBinding],
    ) -> Result<RestaurantConfig, ClientError> {
        self.put_json(
            &format!("/v1/admin/restaurants/{}/tools", segment(id)?),
            &tools,
            "restaurant",
        )
        .await
    }

    /// `POST /v1/admin/webhooks` (admin): registers a receiver; returns its `whsec_` secret.
    pub async fn admin_add_webhook(
        &self,
        url: &str,
        secret: Option<&Secret>,
    ) -> Result<Secret, ClientError> {
        let mut body = serde_json::json!({ "url": url });
        if let Some(s) = secret {
            body["secret"] = Value::String(s.expose().to_owned());
        }
        let v = self
            .post_json("/v1/admin/webhooks", &body, "webhooks endpoint")
            .await?;
        v.get("secret")
            .and_then(Value::as_str)
            .map(Secret::new)
            .ok_or_else(|| ClientError::Decode("webhook registration answer has no secret".into()))
    }
}
