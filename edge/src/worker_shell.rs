//! The Cloudflare Worker shell: `#[event(fetch)]` converts a `worker::Request` into an
//! [`Inbound`], runs [`flow::handle`] with KV (`CONFIG_CACHE`) and `fetch` as its ports, and
//! converts the [`Reply`] back. Nothing is decided here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::{select, Either};
use worker::wasm_bindgen::JsValue;
use worker::{
    console_error, console_log, event, AbortController, Context, Date, Delay, Env, Fetch, Headers,
    KvStore, Method, Request, RequestInit, Response,
};

use crate::flow::{self, Outcome, PortError, Ports};
use crate::http::{Inbound, Outbound, Reply, Upstream, MAX_BODY_BYTES, MAX_UPSTREAM_BYTES};
use crate::settings::Settings;

/// The KV namespace binding for configs and webhook ids.
pub const KV_BINDING: &str = "CONFIG_CACHE";

struct WorkerPorts {
    kv: Option<KvStore>,
    ctx: Context,
}

fn storage(e: impl std::fmt::Display) -> PortError {
    PortError::Storage(e.to_string())
}

impl Ports for WorkerPorts {
    async fn cache_get(&self, key: &str) -> Result<Option<String>, PortError> {
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| storage("KV binding CONFIG_CACHE is missing"))?;
        kv.get(key).text().await.map_err(storage)
    }

    async fn cache_put(&self, key: &str, value: String, ttl_secs: u64) -> Result<(), PortError> {
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| storage("KV binding CONFIG_CACHE is missing"))?;
        kv.put(key, value)
            .map_err(storage)?
            .expiration_ttl(ttl_secs)
            .execute()
            .await
            .map_err(storage)
    }

    async fn send(&self, req: Outbound, timeout_ms: u64) -> Result<Upstream, PortError> {
        exchange(req, timeout_ms).await
    }

    fn background(&self, req: Outbound, timeout_ms: u64) {
        // After the response, within the request's lifetime (`waitUntil`).
        self.ctx.wait_until(async move {
            let url = req.url.clone();
            match exchange(req, timeout_ms).await {
                Ok(r) if (200..300).contains(&r.status) => {}
                Ok(r) => console_log!("background {url} -> {}", r.status),
                Err(e) => console_log!("background {url} failed: {e}"),
            }
        });
    }

    fn nonce(&self) -> String {
        // Uniqueness is what matters for a nonce; fall back to time + Math.random.
        pulsara_core::random::nonce_hex(|| {
            let t = Date::now().as_millis().to_le_bytes();
            let r = (worker::js_sys::Math::random() * 1e15) as u64;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&t);
            bytes[8..].copy_from_slice(&r.to_le_bytes());
            bytes
        })
    }
}

/// One `fetch` exchange, the whole of it within `timeout_ms`; bodies over
/// [`MAX_UPSTREAM_BYTES`] are an error.
async fn exchange(req: Outbound, timeout_ms: u64) -> Result<Upstream, PortError> {
    let controller = AbortController::default();
    let signal = controller.signal();
    let exchange = async move {
        let headers = Headers::new();
        for (k, v) in &req.headers {
            headers
                .set(k, v)
                .map_err(|e| PortError::Network(e.to_string()))?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(req.method.to_owned()))
            .with_headers(headers);
        if !req.body.is_empty() {
            init.with_body(Some(JsValue::from(worker::js_sys::Uint8Array::from(
                req.body.as_slice(),
            ))));
        }
        let request = Request::new_with_init(&req.url, &init)
            .map_err(|e| PortError::Network(e.to_string()))?;
        let mut resp = Fetch::Request(request)
            .send_with_signal(&signal)
            .await
            .map_err(|e| PortError::Network(e.to_string()))?;
        let status = resp.status_code();
        let etag = resp.headers().get("etag").ok().flatten();
        let body = resp
            .bytes()
            .await
            .map_err(|e| PortError::Network(e.to_string()))?;
        if body.len() > MAX_UPSTREAM_BYTES {
            return Err(PortError::Network(format!(
                "dashboard response over {MAX_UPSTREAM_BYTES} bytes"
            )));
        }
        Ok(Upstream { status, etag, body })
    };
    let delay = Delay::from(Duration::from_millis(timeout_ms));
    match select(Box::pin(exchange), delay).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => {
            controller.abort();
            Err(PortError::Timeout(timeout_ms))
        }
    }
}

async fn inbound(req: &mut Request) -> Result<Inbound, Reply> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES) {
        return Err(Reply::text(
            413,
            format!("body of {n} bytes exceeds the {MAX_BODY_BYTES}-byte limit"),
        ));
    }
    let url = req.url().map_err(|_| Reply::text(400, "bad URL"))?;
    let headers = req
        .headers()
        .entries()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let method = req.method().to_string().to_ascii_uppercase();
    let body = if method == "GET" || method == "HEAD" {
        Vec::new()
    } else {
        req.bytes().await.unwrap_or_default()
    };
    Ok(Inbound {
        method,
        path: url.path().to_owned(),
        query: url.query().unwrap_or("").to_owned(),
        headers,
        body,
    })
}

fn response(reply: Reply) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", reply.content_type)?;
    Ok(Response::ok(reply.body)?
        .with_status(reply.status)
        .with_headers(headers))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let settings = Settings::from_lookup(|name| env.var(name).ok().map(|v| v.to_string()));
    if let Err(e) = &settings {
        console_error!("{e}");
    }
    let inbound = match inbound(&mut req).await {
        Ok(i) => i,
        Err(reply) => return response(reply),
    };
    let ports = WorkerPorts {
        kv: env.kv(KV_BINDING).ok(),
        ctx,
    };
    let now =
        DateTime::<Utc>::from_timestamp_millis(Date::now().as_millis() as i64).unwrap_or_default();
    let (reply, outcome) = flow::handle(settings.as_ref(), &ports, &inbound, now).await;
    match &outcome {
        Outcome::Refused { .. } | Outcome::StatusForwarded { ok: false } => {
            console_error!(
                "{} {} -> {} {:?}",
                inbound.method,
                inbound.path,
                reply.status,
                outcome
            )
        }
        _ => console_log!(
            "{} {} -> {} {:?}",
            inbound.method,
            inbound.path,
            reply.status,
            outcome
        ),
    }
    response(reply)
}
