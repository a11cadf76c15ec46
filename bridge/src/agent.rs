//! The ElevenLabs side: fetch a signed URL with the API key (kept server-side), open the ConvAI
//! WebSocket, send `conversation_initiation_client_data`, and wait for
//! `conversation_initiation_metadata` (answering pings meanwhile).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pulsara_core::secret::Secret;
use pulsara_media::convai::{
    self, ClientMessage, InitiationClientData, InitiationMetadata, ServerMessage,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type AgentSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
        while let Some(msg) = ws.next().await {
            let msg = msg.map_err(|e| AgentError::Connect(e.to_string()))?;
            let Message::Text(text) = msg else {
                if matches!(msg, Message::Close(_)) {
                    return Err(AgentError::ClosedEarly);
                }
                continue;
            };
            match convai::parse_server(&text) {
                Ok(ServerMessage::ConversationInitiationMetadata(meta)) => return Ok((ws, meta)),
                Ok(ServerMessage::Ping { event_id, .. }) => {
                    let _ = ws.send(Message::text(convai::pong_json(event_id))).await;
                }
                _ => {}
            }
        }
        Err(AgentError::ClosedEarly)
    }
}

/// Signed URLs carry a token in the query; never log it.
fn redact_query(s: &str) -> String {
    match s.find('?') {
        Some(i) => format!("{}?…", &s[..i]),
        None => s.to_owned(),
    }
}
