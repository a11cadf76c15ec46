//! The embedded dashboard API v1 over axum: the routes of `api/openapi.yaml`, each
//! authenticated ([`crate::auth`]) and scoped, answering errors as
//! `{"error":{"code":"…","message":"…"}}`.
//!
//! Entry points: [`router`] (mount it in-process) and [`serve`] (own listener + shutdown future).
//!
//! Every handler does its authentication and storage work in one `spawn_blocking` call: SQLite
//! (the nonce written by each signed request, records, admin edits) never runs on a tokio
//! worker.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use pulsara_core::call_record::CallRecord;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig, ToolBinding};
use pulsara_core::secret::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::auth::{AuthError, Authenticator, SigningKeys};
use crate::events::{DashboardEvent, EventType};
use crate::keys::Scope;
use crate::store::{PutOutcome, Store, StoreError, WebhookSubscription};
use crate::webhook_out::WebhookSender;
use crate::Clock;

/// Largest JSON request body (call records with long transcripts fit easily).
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;
/// Largest policy module upload.
pub const MAX_MODULE_BODY: usize = 16 * 1024 * 1024;

const READERS: &[Scope] = &[Scope::Edge, Scope::Bridge, Scope::Admin];
const BRIDGE: &[Scope] = &[Scope::Bridge, Scope::Admin];
const ADMIN: &[Scope] = &[Scope::Admin];

/// Shared state of the embedded dashboard.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    auth: Arc<Authenticator>,
    webhooks: WebhookSender,
    clock: Clock,
    /// Wakes the agent sync job ([`crate::agent_sync`]) when an edit requests a sync.
    agent_sync_wake: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(store: Store, signing_keys: SigningKeys, clock: Clock) -> Self {
        Self {
            auth: Arc::new(Authenticator::new(signing_keys, store.clone())),
            webhooks: WebhookSender::new(store.clone(), clock.clone()),
            store,
            clock,
            agent_sync_wake: Arc::default(),
        }
    }

    pub fn webhooks(&self) -> &WebhookSender {
        &self.webhooks
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The notifier the agent sync job waits on.
    pub fn agent_sync_wake(&self) -> Arc<tokio::sync::Notify> {
        self.agent_sync_wake.clone()
    }

    /// Requests a sync of the restaurant's agent (durably) and wakes the job.
    ///
    /// # Errors
    /// The store fails.
    pub fn request_agent_sync(&self, restaurant_id: &str) -> Result<(), StoreError> {
        self.store
            .request_agent_sync(restaurant_id, (self.clock)())?;
        self.agent_sync_wake.notify_one();
        Ok(())
    }
}

/// An API error with its JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        if matches!(e, AuthError::Store(_)) {
            tracing::error!(error = %e, "authentication storage failed");
        } else {
            tracing::info!(code = e.code(), reason = %e, "dashboard request refused");
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::not_found(m),
            StoreError::Invalid(m) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            other => {
                tracing::error!(error = %other, "dashboard storage error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_error",
                    "storage is unavailable; retry later",
                )
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// What a request is signed over (method, path and query, headers, body): taken whole by the
/// handlers that authenticate it, as their last extractor.
struct Signed {
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Signed {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .cloned()
            .unwrap_or_else(|| OriginalUri(req.uri().clone()));
        let (method, headers) = (req.method().clone(), req.headers().clone());
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            method,
            uri,
            headers,
            body,
        })
    }
}

impl AppState {
    /// Runs one request's work (authentication, which remembers the nonce, and every store
    /// call) on tokio's blocking pool. SQLite may fsync or wait out another writer for up to its
    /// busy timeout; that must not hold the worker thread that other requests run on (and, in
    /// `pulsara serve`, calls' audio). A panic in `f` is raised again in the handler.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let st = self.clone();
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&st))).await {
            Ok(res) => res,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_error",
                "storage is unavailable; retry later",
            )),
        }
    }

    /// Authenticates `req` for one of the `allowed` scopes, then runs `f` with it; both on the
    /// blocking pool (see [`AppState::blocking`]).
    async fn authorized<T: Send + 'static>(
        &self,
        req: Signed,
        allowed: &'static [Scope],
        f: impl FnOnce(&AppState, Signed) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.blocking(move |st| {
            let pq = req.uri.0.path_and_query().map_or("/", |p| p.as_str());
            st.auth.check(
                req.method.as_str(),
                pq,
                &req.headers,
                &req.body,
                (st.clock)(),
                allowed,
            )?;
            f(st, req)
        })
        .await
    }
}

/// The API v1 router over `state`.
pub fn router(state: AppState) -> Router {
    let admin_policies = Router::new()
        .route("/v1/admin/policies", post(upload_policy))
        .layer(DefaultBodyLimit::max(MAX_MODULE_BODY));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/restaurants", get(list_restaurants))
        .route("/v1/restaurants/by-number/{e164}", get(by_number))
        .route("/v1/restaurants/{id}", get(restaurant))
        .route("/v1/restaurants/{id}/knowledge-base", get(knowledge_base))
        .route("/v1/policies/{sha256}", get(policy))
        .route("/v1/policies/{sha256}/tool", get(policy_tool))
        .route(
            "/v1/admin/policies/{sha256}/tool",
            put(admin_put_policy_tool),
        )
        .route("/v1/admin/agent-sync", get(admin_agent_sync))
        .route("/v1/calls", post(post_call_record).get(list_calls))
        .route("/v1/calls/{call_sid}", get(get_call))
        .route("/v1/calls/{call_sid}/events", post(post_event))
        .route("/v1/post-call", post(post_post_call))
        .route("/v1/admin/restaurants/{id}", put(admin_put_restaurant))
        .route(
            "/v1/admin/restaurants/{id}/knowledge-base",
            put(admin_put_kb),
        )
        .route("/v1/admin/restaurants/{id}/tools", put(admin_put_tools))
        .route("/v1/admin/webhooks", post(admin_add_webhook))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(admin_policies)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, behind `pulsara-net`'s listener
/// (header and idle deadlines, a cap on unserved connections) with its defaults.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        state,
        pulsara_net::ServeConfig::default(),
        shutdown,
    )
    .await
}

/// As [`serve`], with the listener's deadlines and caps from `net`.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    net: pulsara_net::ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    pulsara_net::serve(listener, router(state), net, shutdown).await
}

fn etag_of(version: u64) -> String {
    format!("\"{version}\"")
}

/// 304 when `If-None-Match` names the current version; otherwise the JSON with an ETag.
fn versioned(headers: &HeaderMap, version: u64, body: impl serde::Serialize) -> Response {
    let etag = etag_of(version);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        });
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Largest page of `GET /v1/restaurants`.
pub const MAX_RESTAURANT_PAGE: usize = 500;

#[derive(Deserialize)]
struct RestaurantListQuery {
    /// Ids after this one (the previous page's `next_after`).
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/restaurants`: every restaurant's id and configuration version, by id, in pages
/// (what a bridge warms its tool modules from).
async fn list_restaurants(
    State(st): State<AppState>,
    Query(q): Query<RestaurantListQuery>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, READERS, move |st, _| {
        let limit = q.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_RESTAURANT_PAGE {
            return Err(ApiError::bad_request(format!(
                "limit must be from 1 to {MAX_RESTAURANT_PAGE}"
            )));
        }
        let ids = st.store.restaurant_ids()?;
        let start = match &q.after {
            Some(after) => ids.partition_point(|id| id.as_str() <= after.as_str()),
            None => 0,
        };
        let page = &ids[start.min(ids.len())..ids.len().min(start.saturating_add(limit))];
        let mut restaurants = Vec::with_capacity(page.len());
        for id in page {
            // A restaurant deleted between the two reads is simply not listed.
            if let Some(cfg) = st.store.restaurant(id)? {
                restaurants.push(json!({ "id": cfg.id, "version": cfg.version }));
            }
        }
        let next_after = (start + page.len() < ids.len())
            .then(|| page.last().cloned())
            .flatten();
        Ok(Json(json!({ "restaurants": restaurants, "next_after": next_after })).into_response())
    })
    .await
}

async fn by_number(State(st): State<AppState>, Path(e164): Path<String>, req: Signed) -> ApiResult {
    st.authorized(req, READERS, move |st, Signed { headers, .. }| {
        let cfg = st
            .store
            .restaurant_by_number(&e164)?
            .ok_or_else(|| ApiError::not_found(format!("no restaurant owns number {e164}")))?;
        Ok(versioned(&headers, cfg.version, &cfg))
    })
    .await
}

async fn restaurant(State(st): State<AppState>, Path(id): Path<String>, req: Signed) -> ApiResult {
    st.authorized(req, READERS, move |st, Signed { headers, .. }| {
        let cfg = st
            .store
            .restaurant(&id)?
            .ok_or_else(|| ApiError::not_found(format!("restaurant {id:?}")))?;
        Ok(versioned(&headers, cfg.version, &cfg))
    })
    .await
}

async fn knowledge_base(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, READERS, move |st, Signed { headers, .. }| {
        let kb = st
            .store
            .knowledge_base(&id)?
            .ok_or_else(|| ApiError::not_found(format!("knowledge base of restaurant {id:?}")))?;
        Ok(versioned(&headers, kb.version, &kb))
    })
    .await
}

async fn policy(State(st): State<AppState>, Path(sha): Path<String>, req: Signed) -> ApiResult {
    st.authorized(req, BRIDGE, move |st, _| {
        if !pulsara_core::crypto::is_sha256_hex(&sha.to_ascii_lowercase()) {
            return Err(ApiError::bad_request(
                "policy id must be a 64-character hex sha256",
            ));
        }
        let bytes = st
            .store
            .policy(&sha.to_ascii_lowercase())?
            .ok_or_else(|| ApiError::not_found(format!("policy module {sha}")))?;
        let mut resp = bytes.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/wasm"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        Ok(resp)
    })
    .await
}

/// The policy path parameter as a lower-case sha256, or a 400.
fn module_sha(sha: &str) -> Result<String, ApiError> {
    let sha = sha.to_ascii_lowercase();
    if pulsara_core::crypto::is_sha256_hex(&sha) {
        Ok(sha)
    } else {
        Err(ApiError::bad_request(
            "policy id must be a 64-character hex sha256",
        ))
    }
}

async fn policy_tool(
    State(st): State<AppState>,
    Path(sha): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, BRIDGE, move |st, _| {
        let sha = module_sha(&sha)?;
        let spec = st
            .store
            .policy_tool(&sha)?
            .ok_or_else(|| ApiError::not_found(format!("tool specification of module {sha}")))?;
        Ok(Json(spec).into_response())
    })
    .await
}

async fn admin_put_policy_tool(
    State(st): State<AppState>,
    Path(sha): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        let sha = module_sha(&sha)?;
        if st.store.policy(&sha)?.is_none() {
            return Err(ApiError::not_found(format!(
                "policy module {sha} (upload it first: POST /v1/admin/policies)"
            )));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("body is not UTF-8 JSON"))?;
        let spec = pulsara_core::agent::ToolSpec::from_json(text).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_tool",
                e.to_string(),
            )
        })?;
        st.store.put_policy_tool(&sha, &spec)?;
        // Every restaurant offering the tool gets its agent's copy updated.
        for id in st.store.restaurants_using(&sha)? {
            st.request_agent_sync(&id)?;
        }
        Ok(Json(spec).into_response())
    })
    .await
}

async fn admin_agent_sync(State(st): State<AppState>, req: Signed) -> ApiResult {
    st.authorized(req, ADMIN, move |st, _| {
        let rows = st.store.agent_syncs()?;
        let restaurants: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let agent_id = st
                    .store
                    .restaurant(&r.restaurant_id)
                    .ok()
                    .flatten()
                    .map(|c| c.agent.elevenlabs_agent_id)
                    .unwrap_or_default();
                let state = if r.requested <= r.done {
                    "synced"
                } else if r.attempts > 0 {
                    "retrying"
                } else {
                    "pending"
                };
                json!({
                    "restaurant_id": r.restaurant_id,
                    "state": state,
                    "agent_id": agent_id,
                    "requested": r.requested,
                    "done": r.done,
                    "attempts": r.attempts,
                    "next_at": r.next_at,
                    "last_error": r.last_error,
                    "updated_at": r.updated_at,
                })
            })
            .collect();
        Ok(Json(json!({ "restaurants": restaurants })).into_response())
    })
    .await
}

async fn post_call_record(State(st): State<AppState>, req: Signed) -> ApiResult {
    st.authorized(req, BRIDGE, move |st, Signed { headers, body, .. }| {
        let mut record: CallRecord = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body is not a CallRecord: {e}")))?;
        if record.call_sid.is_empty() || record.restaurant_id.is_empty() {
            return Err(ApiError::bad_request(
                "call_sid and restaurant_id are required",
            ));
        }
        if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
            if key != record.call_sid {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must equal the record's call_sid",
                ));
            }
        } else {
            return Err(ApiError::bad_request(
                "Idempotency-Key header (the call_sid) is required",
            ));
        }
        crate::pipeline::enrich(&mut record);
        let outcome = st.store.put_call(&record, (st.clock)())?;
        let status = match outcome {
            PutOutcome::Created => {
                tracing::info!(call_sid = %record.call_sid, restaurant_id = %record.restaurant_id, "call record stored");
                StatusCode::CREATED
            }
            PutOutcome::Duplicate => {
                tracing::info!(call_sid = %record.call_sid, "duplicate call record ignored (idempotency)");
                StatusCode::OK
            }
        };
        Ok((
            status,
            Json(json!({"call_sid": record.call_sid, "duplicate": outcome == PutOutcome::Duplicate})),
        )
            .into_response())
    })
    .await
}

#[derive(Deserialize)]
struct ListQuery {
    restaurant_id: Option<String>,
    limit: Option<u32>,
}

async fn list_calls(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, _| {
        let calls = st
            .store
            .calls(q.restaurant_id.as_deref(), q.limit.unwrap_or(100))?;
        Ok(Json(json!({ "calls": calls })).into_response())
    })
    .await
}

async fn get_call(State(st): State<AppState>, Path(sid): Path<String>, req: Signed) -> ApiResult {
    st.authorized(req, ADMIN, move |st, _| {
        let mut call = st
            .store
            .call(&sid)?
            .ok_or_else(|| ApiError::not_found(format!("call {sid}")))?;
        let events = st.store.call_events(&sid)?;
        if let Some(o) = call.as_object_mut() {
            o.insert("events".into(), Value::Array(events));
        }
        Ok(Json(call).into_response())
    })
    .await
}

async fn post_event(State(st): State<AppState>, Path(sid): Path<String>, req: Signed) -> ApiResult {
    st.authorized(req, READERS, move |st, Signed { body, .. }| {
        let event: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("event is not JSON: {e}")))?;
        if !event.is_object() {
            return Err(ApiError::bad_request("event must be a JSON object"));
        }
        st.store.add_call_event(&sid, &event, (st.clock)())?;
        Ok((StatusCode::ACCEPTED, Json(json!({"call_sid": sid}))).into_response())
    })
    .await
}

async fn post_post_call(State(st): State<AppState>, req: Signed) -> ApiResult {
    st.authorized(req, READERS, move |st, Signed { body, .. }| {
        let payload: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("payload is not JSON: {e}")))?;
        let merged = st
            .store
            .put_post_call(&payload, (st.clock)())
            .map_err(|e| match e {
                StoreError::Invalid(m) => ApiError::bad_request(m),
                other => other.into(),
            })?;
        Ok((StatusCode::ACCEPTED, Json(json!({"merged_into": merged}))).into_response())
    })
    .await
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not a valid {what}: {e}")))
}

async fn admin_put_restaurant(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        let mut cfg: RestaurantConfig = parse_json(&body, "RestaurantConfig")?;
        if cfg.id != id {
            return Err(ApiError::bad_request("body id differs from the path id"));
        }
        check_tool_modules(st, &cfg.tools)?;
        let current = st.store.restaurant(&id)?;
        // The agent id and synced state belong to the agent sync: an edit that leaves the id
        // out keeps them (so it never makes the sync create a second agent).
        if cfg.agent.elevenlabs_agent_id.is_empty() {
            if let Some(current) = &current {
                cfg.agent.elevenlabs_agent_id.clone_from(&current.agent.elevenlabs_agent_id);
                cfg.agent.synced.clone_from(&current.agent.synced);
            }
        }
        let tools_changed = current.is_none_or(|c| c.tools != cfg.tools);
        let stored = st.store.update_restaurant(cfg, (st.clock)())?;
        st.request_agent_sync(&id)?;
        st.webhooks.publish(DashboardEvent::new(
            EventType::RestaurantUpdated,
            &id,
            stored.version,
        ));
        // Bridges load a restaurant's new modules on `policy.updated`, as after a tools edit.
        if tools_changed {
            st.webhooks.publish(DashboardEvent::new(EventType::PolicyUpdated, &id, stored.version));
        }
        Ok(versioned(&HeaderMap::new(), stored.version, &stored))
    })
    .await
}

async fn admin_put_kb(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        let kb: KnowledgeBase = parse_json(&body, "KnowledgeBase")?;
        if kb.restaurant_id != id {
            return Err(ApiError::bad_request(
                "body restaurant_id differs from the path id",
            ));
        }
        let stored = st.store.update_knowledge_base(kb)?;
        st.webhooks.publish(DashboardEvent::new(
            EventType::KnowledgeBaseUpdated,
            &id,
            stored.version,
        ));
        Ok(versioned(&HeaderMap::new(), stored.version, &stored))
    })
    .await
}

async fn admin_put_tools(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        let tools: Vec<ToolBinding> = parse_json(&body, "list of ToolBinding")?;
        check_tool_modules(st, &tools)?;
        let mut cfg = st
            .store
            .restaurant(&id)?
            .ok_or_else(|| ApiError::not_found(format!("restaurant {id:?}")))?;
        cfg.tools = tools;
        let stored = st.store.update_restaurant(cfg, (st.clock)())?;
        st.request_agent_sync(&id)?;
        st.webhooks.publish(DashboardEvent::new(
            EventType::PolicyUpdated,
            &id,
            stored.version,
        ));
        Ok(versioned(&HeaderMap::new(), stored.version, &stored))
    })
    .await
}

/// Every tool names a module the dashboard holds (`422 unknown_module` otherwise): a restaurant
/// is never stored with a tool no bridge can load and no agent sync can describe.
fn check_tool_modules(st: &AppState, tools: &[ToolBinding]) -> Result<(), ApiError> {
    for t in tools {
        if st.store.policy(&t.module_sha256)?.is_some() {
            continue;
        }
        let hint = if t.module_sha256.starts_with("builtin:") {
            "builtin:<name> is resolved only when seeding from files; name the module by the sha256 `POST /v1/admin/policies` returned"
        } else {
            "upload it first (POST /v1/admin/policies)"
        };
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_module",
            format!("tool {:?} references module {:?}, which is not uploaded: {hint}", t.name, t.module_sha256),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct PolicyQuery {
    name: Option<String>,
}

async fn upload_policy(
    State(st): State<AppState>,
    Query(q): Query<PolicyQuery>,
    req: Signed,
) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        if !body.starts_with(b"\0asm") {
            return Err(ApiError::bad_request(
                "body is not a WebAssembly module (missing \\0asm magic)",
            ));
        }
        let sha = st
            .store
            .put_policy(q.name.as_deref().unwrap_or("uploaded"), &body)?;
        Ok((StatusCode::CREATED, Json(json!({"sha256": sha}))).into_response())
    })
    .await
}

#[derive(Deserialize)]
struct WebhookReq {
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

async fn admin_add_webhook(State(st): State<AppState>, req: Signed) -> ApiResult {
    st.authorized(req, ADMIN, move |st, Signed { body, .. }| {
        let req: WebhookReq = parse_json(&body, "webhook subscription")?;
        if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
            return Err(ApiError::bad_request("url must be http(s)"));
        }
        let secret = req.secret.unwrap_or_else(new_webhook_secret);
        let sub = WebhookSubscription {
            url: req.url.clone(),
            secret: Secret::new(secret.clone()),
        };
        if pulsara_core::webhooks::sign(&sub.secret, "probe", 0, b"").is_err() {
            return Err(ApiError::bad_request("secret must be whsec_<base64>"));
        }
        st.store.add_webhook(&sub)?;
        // The secret is returned once, to the admin who registered it.
        Ok((
            StatusCode::CREATED,
            Json(json!({"url": req.url, "secret": secret})),
        )
            .into_response())
    })
    .await
}

/// A fresh `whsec_` secret (24 random bytes).
pub fn new_webhook_secret() -> String {
    use base64::Engine;
    let b = pulsara_core::random::bytes::<24>();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b)
    )
}
