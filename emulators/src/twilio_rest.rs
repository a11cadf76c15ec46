//! Twilio REST API emulator: the two endpoints the bridge uses, with Basic auth, recording every
//! request and answering with Twilio-shaped JSON.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, form `Twiml=…`, `Url=…` or
//!   `Status=completed|canceled` (the only two statuses an update may set) → 200 call resource.
//!   None of them → 400 (code 21205-like); another `Status` → 400. A call ended with `Status` is
//!   gone: any later update of it → 404 (code 20404), as Twilio answers for a call no longer live.
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form `To`, `From` or
//!   `MessagingServiceSid`, `Body` → 201 message resource; missing fields → 400 (code 21604/21602).
//!
//! Auth: HTTP Basic `AccountSid:AuthToken`; wrong or missing → 401 (code 20003); a path account
//! that differs from the authenticated one → 404 (code 20404). Call updates are broadcast, so
//! the demo can end the simulated Media Stream the way Twilio does when a call's TwiML is replaced
//! (see [`RestRecorder::wait_call_update`]).
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine as _;
use serde::Serialize;
use subtle::ConstantTimeEq;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// Accepted credentials.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub account_sid: String,
    pub auth_token: String,
}

/// One accepted request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestRequest {
    CallUpdate {
        call_sid: String,
        twiml: Option<String>,
        url: Option<String>,
        status: Option<String>,
    },
    Message {
        sid: String,
        to: String,
        from: Option<String>,
        messaging_service_sid: Option<String>,
        body: String,
    },
}

/// One accepted call update, as a test or the bench reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallUpdate {
    pub call_sid: String,
    /// `Twiml=` (empty when the update carried none).
    pub twiml: String,
    /// `Status=` (`completed` or `canceled` ends the call).
    pub status: Option<String>,
    /// When the emulator accepted it.
    pub at: Instant,
}

/// Every request, accepted (with when) or not.
#[derive(Debug, Default)]
pub struct RestRecorder {
    accepted: Mutex<Vec<(Instant, RestRequest)>>,
    rejected: Mutex<Vec<(u16, String)>>,
    updates: Mutex<Option<broadcast::Sender<RestRequest>>>,
}

impl RestRecorder {
    pub fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(RestRecorder {
            updates: Mutex::new(Some(tx)),
            ..Default::default()
        })
    }

    /// Accepted requests, in order.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Accepted updates of `call_sid`, in order, with when each arrived.
    pub fn updates_for(&self, call_sid: &str) -> Vec<CallUpdate> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(at, r)| match r {
                RestRequest::CallUpdate { call_sid: c, twiml, status, .. } if c == call_sid => Some(CallUpdate {
                    call_sid: c.clone(),
                    twiml: twiml.clone().unwrap_or_default(),
                    status: status.clone(),
                    at: *at,
                }),
                _ => None,
            })
            .collect()
    }

    /// The first accepted update of `call_sid`, waiting up to `timeout` for it.
    pub async fn wait_for(self: &Arc<Self>, call_sid: &str, timeout: Duration) -> Option<CallUpdate> {
        let _ = tokio::time::timeout(timeout, self.wait_call_update(call_sid)).await;
        self.updates_for(call_sid).into_iter().next()
    }

    /// How many requests were refused for their credentials (401).
    pub fn unauthorized(&self) -> usize {
        self.rejected().iter().filter(|(status, _)| *status == 401).count()
    }

    /// Rejected requests: (status, path).
    pub fn rejected(&self) -> Vec<(u16, String)> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Accepted call updates for `call_sid`.
    pub fn call_updates(&self, call_sid: &str) -> Vec<RestRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r, RestRequest::CallUpdate { call_sid: c, .. } if c == call_sid))
            .collect()
    }

    /// Accepted SMS messages.
    pub fn messages(&self) -> Vec<RestRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r, RestRequest::Message { .. }))
            .collect()
    }

    /// Resolves when `call_sid` is updated (immediately if it already was). Use it as the
    /// caller simulator's stop signal.
    pub fn wait_call_update(
        self: &Arc<Self>,
        call_sid: &str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let call_sid = call_sid.to_owned();
        let mut rx = me
            .updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|t| t.subscribe());
        async move {
            if !me.call_updates(&call_sid).is_empty() {
                return;
            }
            let Some(rx) = rx.as_mut() else {
                return std::future::pending().await;
            };
            loop {
                match rx.recv().await {
                    Ok(RestRequest::CallUpdate { call_sid: c, .. }) if c == call_sid => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !me.call_updates(&call_sid).is_empty() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await
                    }
                }
            }
        }
    }

    fn accept(&self, r: RestRequest) {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), r.clone()));
        if let Some(tx) = self
            .updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = tx.send(r);
        }
    }

    fn reject(&self, status: StatusCode, path: String) {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((status.as_u16(), path));
    }
}

struct RestState {
    config: RestConfig,
    recorder: Arc<RestRecorder>,
    counter: AtomicU64,
    /// Calls ended through `Status=`.
    ended: Mutex<std::collections::HashSet<String>>,
}

/// Serve until `shutdown` resolves.
///
/// # Errors
/// Accept-loop I/O errors.
pub async fn run(
    listener: TcpListener,
    config: RestConfig,
    recorder: Arc<RestRecorder>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = Arc::new(RestState {
        config,
        recorder,
        counter: AtomicU64::new(1),
        ended: Mutex::default(),
    });
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            post(update_call),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(create_message),
        )
        .with_state(state);
    tracing::info!(%addr, "Twilio REST emulator listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A running REST emulator started by [`spawn`].
pub struct RunningRest {
    pub addr: SocketAddr,
    pub recorder: Arc<RestRecorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningRest {
    /// `http://127.0.0.1:PORT`, the value for the bridge's `TWILIO_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Keeps the emulator serving for as long as the runtime lives and hands back its
    /// recorder (tests that never stop it early).
    pub fn detach(mut self) -> Arc<RestRecorder> {
        if let Some(stop) = self.stop.take() {
            // Dropping the sender would stop the server; it is kept for the runtime's lifetime.
            std::mem::forget(stop);
        }
        self.recorder.clone()
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}

/// Start on `127.0.0.1:0` in the background.
///
/// # Errors
/// Binding the listener.
pub async fn spawn(config: RestConfig) -> std::io::Result<RunningRest> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let recorder = RestRecorder::new();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, config, recorder.clone(), async move {
        let _ = rx.await;
    }));
    Ok(RunningRest {
        addr,
        recorder,
        stop: Some(stop),
        task,
    })
}

/// [`spawn`] for tests that keep it for the whole runtime: the recorder and the base URL.
///
/// # Errors
/// Binding the listener.
pub async fn spawn_detached(account_sid: &str, auth_token: &str) -> std::io::Result<(Arc<RestRecorder>, String)> {
    let running = spawn(RestConfig { account_sid: account_sid.to_owned(), auth_token: auth_token.to_owned() }).await?;
    let base = running.base_url();
    Ok((running.detach(), base))
}

/// One-line entry for `pulsara emulate twilio-rest --listen ADDR`.
///
/// # Errors
/// Bind/accept errors.
pub async fn serve(
    listen: SocketAddr,
    config: RestConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    run(listener, config, RestRecorder::new(), shutdown).await
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// `Some(error response)` when the request must be refused.
fn authenticate(st: &RestState, headers: &HeaderMap, path_account: &str) -> Option<Response> {
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let ok = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(user, pass)| {
            bool::from(user.as_bytes().ct_eq(st.config.account_sid.as_bytes()))
                & bool::from(pass.as_bytes().ct_eq(st.config.auth_token.as_bytes()))
        });
    if !ok {
        return Some(twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    if path_account != st.config.account_sid {
        return Some(twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        ));
    }
    None
}

fn now_rfc2822() -> String {
    // Twilio dates look like "Sat, 28 Nov 2026 18:00:00 +0000"; a fixed-format stand-in is enough.
    "Sat, 28 Nov 2026 18:00:00 +0000".to_owned()
}

async fn update_call(
    State(st): State<Arc<RestState>>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account}/Calls/{call}");
    if let Some(resp) = authenticate(&st, &headers, &account) {
        st.recorder.reject(resp.status(), path);
        return resp;
    }
    let Some(call_sid) = call
        .strip_suffix(".json")
        .filter(|c| c.starts_with("CA") && c.len() > 2)
    else {
        st.recorder.reject(StatusCode::NOT_FOUND, path);
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    };
    let twiml = form.get("Twiml").cloned();
    let url = form.get("Url").cloned();
    let status = form.get("Status").cloned();
    if twiml.is_none() && url.is_none() && status.is_none() {
        st.recorder.reject(StatusCode::BAD_REQUEST, path);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21205,
            "Either Url, Twiml or Status is required",
        );
    }
    if status.as_deref().is_some_and(|s| s != "completed" && s != "canceled") {
        st.recorder.reject(StatusCode::BAD_REQUEST, path);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            20001,
            "Status must be canceled or completed",
        );
    }
    {
        let mut ended = st.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.contains(call_sid) {
            drop(ended);
            st.recorder.reject(StatusCode::NOT_FOUND, path);
            return twilio_error(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            );
        }
        if status.is_some() {
            ended.insert(call_sid.to_owned());
        }
    }
    st.recorder.accept(RestRequest::CallUpdate {
        call_sid: call_sid.to_owned(),
        twiml,
        url,
        status: status.clone(),
    });
    let date = now_rfc2822();
    Json(json!({
        "sid": call_sid,
        "account_sid": account,
        "api_version": "2010-04-01",
        "status": status.unwrap_or_else(|| "in-progress".into()),
        "direction": "inbound",
        "date_created": date,
        "date_updated": date,
        "uri": format!("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json"),
    }))
    .into_response()
}

async fn create_message(
    State(st): State<Arc<RestState>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = format!("/2010-04-01/Accounts/{account}/Messages.json");
    if let Some(resp) = authenticate(&st, &headers, &account) {
        st.recorder.reject(resp.status(), path);
        return resp;
    }
    let Some(to) = form.get("To").filter(|t| !t.is_empty()).cloned() else {
        st.recorder.reject(StatusCode::BAD_REQUEST, path);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    let from = form.get("From").cloned();
    let mss = form.get("MessagingServiceSid").cloned();
    if from.is_none() && mss.is_none() {
        st.recorder.reject(StatusCode::BAD_REQUEST, path);
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    let Some(body) = form.get("Body").filter(|b| !b.is_empty()).cloned() else {
        st.recorder.reject(StatusCode::BAD_REQUEST, path);
        return twilio_error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    let sid = format!("SM{:032x}", st.counter.fetch_add(1, Ordering::Relaxed));
    st.recorder.accept(RestRequest::Message {
        sid: sid.clone(),
        to: to.clone(),
        from: from.clone(),
        messaging_service_sid: mss.clone(),
        body: body.clone(),
    });
    let date = now_rfc2822();
    (
        StatusCode::CREATED,
        Json(json!({
            "sid": sid,
            "account_sid": account,
            "api_version": "2010-04-01",
            "to": to,
            "from": from,
            "messaging_service_sid": mss,
            "body": body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "date_created": date,
            "date_updated": date,
            "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
        })),
    )
        .into_response()
}
