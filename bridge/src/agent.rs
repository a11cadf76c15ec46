//! The ElevenLabs side: fetch a signed URL with the API key (kept server-side), open the ConvAI
//! WebSocket, send `conversation_initiation_client_data`, and wait for
//! `conversation_initiation_metadata` (answering pings meanwhile).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsara_core::call_record::EndReasonDetail;
use pulsara_core::secret::Secret;
use pulsara_media::convai::{
    self, ClientMessage, InitiationClientData, InitiationMetadata, ServerMessage,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type AgentSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An agent session opened up to its `conversation_initiation_metadata`, or why it was not.
pub type ConnectResult = Result<(AgentSocket, InitiationMetadata), AgentError>;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("signed URL request failed: HTTP {0}")]
    SignedUrlStatus(u16),
    #[error("signed URL request failed: {0}")]
    SignedUrlTransport(String),
    #[error("signed URL answer is unusable: {0}")]
    SignedUrlBody(String),
    #[error("agent WebSocket connect failed: {0}")]
    Connect(String),
    #[error("agent did not send conversation_initiation_metadata in time")]
    NoMetadata,
    #[error("agent closed the conversation during set-up")]
    ClosedEarly,
    /// ElevenLabs refused the conversation and said why (its `error` event, the close frame).
    #[error("agent refused the conversation: {}", .0.describe())]
    Refused(EndReasonDetail),
}

/// Longest error message or close reason kept from ElevenLabs.
const MAX_DETAIL_CHARS: usize = 300;

fn clip(s: &str) -> String {
    s.chars().take(MAX_DETAIL_CHARS).collect()
}

/// Folds an `error` event into `detail`.
pub fn note_error(detail: &mut EndReasonDetail, e: &convai::AgentErrorEvent) {
    detail.error_type = e.error_type.as_deref().map(clip);
    detail.error_code = e.code;
    detail.error_message = e.message.as_deref().map(clip);
}

/// Folds a close frame into `detail`.
pub fn note_close(detail: &mut EndReasonDetail, code: u16, reason: &str) {
    detail.close_code = Some(code);
    detail.close_reason = (!reason.is_empty()).then(|| clip(reason));
}

/// Connects calls to ElevenLabs.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    api_key: Secret,
    ws: WebSocketConfig,
}

impl AgentClient {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        api_key: Secret,
        limits: &crate::config::Limits,
    ) -> Self {
        let ws = WebSocketConfig::default()
            .read_buffer_size(limits.ws_read_buffer_bytes)
            .write_buffer_size(limits.ws_write_buffer_bytes)
            .max_write_buffer_size(
                limits
                    .ws_max_write_buffer_bytes
                    .max(limits.ws_max_frame_bytes + 1),
            )
            .max_message_size(Some(limits.ws_max_message_bytes))
            .max_frame_size(Some(limits.ws_max_frame_bytes));
        AgentClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            ws,
        }
    }

    /// `GET {base}/v1/convai/conversation/get-signed-url?agent_id=…` with `xi-api-key`.
    ///
    /// # Errors
    /// [`AgentError`] for transport errors, non-2xx answers and bodies without a ws(s) URL.
    pub async fn signed_url(
        &self,
        agent_id: &str,
        timeout: Duration,
    ) -> Result<String, AgentError> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/convai/conversation/get-signed-url",
                self.base
            ))
            .query(&[("agent_id", agent_id)])
            .header("xi-api-key", self.api_key.expose())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| AgentError::SignedUrlTransport(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(AgentError::SignedUrlStatus(resp.status().as_u16()));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| AgentError::SignedUrlBody(e.without_url().to_string()))?;
        let url = body["signed_url"].as_str().unwrap_or_default();
        if !(url.starts_with("wss://") || url.starts_with("ws://")) {
            return Err(AgentError::SignedUrlBody(
                "signed_url is missing or not ws(s)".into(),
            ));
        }
        Ok(url.to_owned())
    }

    /// Signed URL → WebSocket → initiation → metadata, all within `timeout`.
    ///
    /// # Errors
    /// [`AgentError`] naming the step that failed.
    pub async fn connect(
        &self,
        agent_id: &str,
        init: &InitiationClientData,
        timeout: Duration,
    ) -> Result<(AgentSocket, InitiationMetadata), AgentError> {
        tokio::time::timeout(timeout, self.connect_inner(agent_id, init, timeout))
            .await
            .map_err(|_| AgentError::NoMetadata)?
    }

    async fn connect_inner(
        &self,
        agent_id: &str,
        init: &InitiationClientData,
        timeout: Duration,
    ) -> Result<(AgentSocket, InitiationMetadata), AgentError> {
        let url = self.signed_url(agent_id, timeout).await?;
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(self.ws), true)
                .await
                .map_err(|e| AgentError::Connect(redact_query(&e.to_string())))?;
        let hello = ClientMessage::ConversationInitiationClientData(init.clone()).to_json();
        ws.send(Message::text(hello))
            .await
            .map_err(|e| AgentError::Connect(e.to_string()))?;
        // What the server says before it closes: its `error` event, then the close frame.
        let mut refused: Option<EndReasonDetail> = None;
        let gone = |refused: Option<EndReasonDetail>| {
            refused.map_or(AgentError::ClosedEarly, AgentError::Refused)
        };
        while let Some(msg) = ws.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(_) if refused.is_some() => return Err(gone(refused)),
                Err(e) => return Err(AgentError::Connect(e.to_string())),
            };
            let text = match msg {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    if let Some(f) = frame {
                        note_close(refused.get_or_insert_with(Default::default), f.code.into(), &f.reason);
                    }
                    return Err(gone(refused));
                }
                _ => continue,
            };
            match convai::parse_server(&text) {
                Ok(ServerMessage::ConversationInitiationMetadata(meta)) => return Ok((ws, meta)),
                Ok(ServerMessage::Ping { event_id, .. }) => {
                    let _ = ws.send(Message::text(convai::pong_json(event_id))).await;
                }
                Ok(ServerMessage::Error(e)) => {
                    note_error(refused.get_or_insert_with(Default::default), &e);
                }
                _ => {}
            }
        }
        Err(gone(refused))
    }
}

/// Signed URLs carry a token in the query; never log it.
fn redact_query(s: &str) -> String {
    match s.find('?') {
        Some(i) => format!("{}?…", &s[..i]),
        None => s.to_owned(),
    }
}
