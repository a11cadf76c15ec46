//! Provisioning a restaurant's ElevenLabs agent: the agents and tools API client
//! ([`AgentsApi`]) and one sync ([`sync`]), used by `pulsara agents sync|show` and by the
//! embedded dashboard's sync job ([`crate::agent_sync`]).
//!
//! A sync, for one restaurant, in an order that leaves nothing half-written on bad input:
//! 1. every tool's specification is checked, and the agent named by the restaurant (if any) is
//!    read: a missing agent, a refused key or a bad schema stop here, before any write;
//! 2. each tool is a workspace client tool: created when the restaurant has none yet, patched
//!    where it drifted;
//! 3. the agent is created with the whole specification, or patched with exactly the fields that
//!    drifted ([`pulsara_core::agent::drift`]): a second run changes nothing;
//! 4. the result ([`SyncReport::synced`] and the agent id) is what the caller writes back to the
//!    restaurant, so the bridge knows which overrides the agent allows.
//!
//! A restaurant with no agent id is first looked up by its `restaurant:<id>` tag: an agent an
//! earlier sync created but could not write back (a crash, the dashboard down) is adopted with
//! the tools it declares, never created a second time. Two tagged agents are an error naming
//! both, for a human to choose.
//!
//! Requests carry `xi-api-key`; 429 and 5xx are retried with exponential backoff (honouring
//! `Retry-After`) within a bounded number of attempts. Errors never include the key.

use std::collections::BTreeMap;
use std::time::Duration;

use pulsara_core::agent::{self, Drift, ToolSpec};
use pulsara_core::config::{AgentSynced, RestaurantConfig};
use pulsara_core::secret::Secret;
use serde_json::{json, Value};

/// Where the agents API is and how to reach it.
#[derive(Debug, Clone)]
pub struct AgentsApiConfig {
    /// `https://api.elevenlabs.io` (or the emulator's base URL).
    pub base_url: String,
    pub api_key: Secret,
    /// Per request.
    pub timeout: Duration,
    /// Attempts per request for 429/5xx/connection failures (at least 1).
    pub attempts: u32,
    /// First backoff; doubles per attempt, capped at 8 s (or `Retry-After`, capped at 30 s).
    pub backoff: Duration,
}

impl AgentsApiConfig {
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        AgentsApiConfig {
            base_url: base_url.into(),
            api_key,
            timeout: Duration::from_secs(15),
            attempts: 5,
            backoff: Duration::from_millis(250),
        }
    }
}

/// Why an agents API request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    #[error("the ElevenLabs API refused the API key ({status}); check ELEVENLABS_API_KEY")]
    Unauthorized { status: u16 },
    #[error("{what} does not exist in the ElevenLabs workspace")]
    NotFound { what: String },
    #[error("the ElevenLabs API refused {what} ({status}): {detail}")]
    Rejected {
        what: String,
        status: u16,
        detail: String,
    },
    #[error(
        "the ElevenLabs API is unavailable for {what} after {attempts} attempts (last: {last})"
    )]
    Unavailable {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("tool {tool:?} of restaurant {restaurant:?}: {reason}")]
    Tool {
        restaurant: String,
        tool: String,
        reason: String,
    },
    #[error("the ElevenLabs API answered {what} with something unexpected: {detail}")]
    Protocol { what: String, detail: String },
    #[error("restaurant {restaurant:?} has no agent id and {} agents are tagged {tag:?} ({}): set agent.elevenlabs_agent_id to the one to keep", ids.len(), ids.join(", "))]
    Ambiguous {
        restaurant: String,
        tag: String,
        ids: Vec<String>,
    },
}

impl AgentsError {
    /// Worth trying again later (the job retries these; the rest wait for an edit).
    pub fn is_transient(&self) -> bool {
        matches!(self, AgentsError::Unavailable { .. })
    }
}

/// The ElevenLabs agents and tools API.
#[derive(Clone)]
pub struct AgentsApi {
    cfg: AgentsApiConfig,
    http: reqwest::Client,
}

const MAX_BACKOFF: Duration = Duration::from_secs(8);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_DETAIL: usize = 300;
const MAX_LIST_PAGES: usize = 50;

impl AgentsApi {
    /// # Errors
    /// The HTTP client cannot be built (TLS backend).
    pub fn new(cfg: AgentsApiConfig) -> Result<Self, AgentsError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| AgentsError::Protocol {
                what: "client setup".into(),
                detail: e.to_string(),
            })?;
        Ok(AgentsApi { cfg, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.cfg.base_url.trim_end_matches('/'))
    }

    /// One request with retries; `Ok(None)` for 404.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Option<Value>, AgentsError> {
        let attempts = self.cfg.attempts.max(1);
        let mut backoff = self.cfg.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .header("xi-api-key", self.cfg.api_key.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let wait = match req.send().await {
                Err(e) => {
                    last = describe_reqwest(&e);
                    backoff
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                    let text = resp.text().await.unwrap_or_default();
                    match status {
                        200..=299 => {
                            let v = if text.trim().is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&text).map_err(|e| AgentsError::Protocol {
                                    what: what.to_owned(),
                                    detail: format!("not JSON: {e}"),
                                })?
                            };
                            return Ok(Some(v));
                        }
                        401 | 403 => return Err(AgentsError::Unauthorized { status }),
                        404 => return Ok(None),
                        s if crate::is_transient_status(s) => {
                            last = format!("{s} {}", clip(&text));
                            retry_after.unwrap_or(backoff)
                        }
                        _ => {
                            return Err(AgentsError::Rejected {
                                what: what.to_owned(),
                                status,
                                detail: clip(&text),
                            })
                        }
                    }
                }
            };
            if attempt < attempts {
                tracing::debug!(
                    what,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "agents API: retrying"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Err(AgentsError::Unavailable {
            what: what.to_owned(),
            attempts,
            last,
        })
    }

    async fn must(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, AgentsError> {
        self.send(method, path, body, what)
            .await?
            .ok_or_else(|| AgentsError::NotFound {
                what: what.to_owned(),
            })
    }

    /// `GET /v1/convai/agents/{id}`; `None` when it does not exist.
    pub async fn agent(&self, agent_id: &str) -> Result<Option<Value>, AgentsError> {
        let what = format!("agent {agent_id:?}");
        self.send(
            reqwest::Method::GET,
            &format!("v1/convai/agents/{}", seg(agent_id)),
            None,
            &what,
        )
        .await
    }

    /// `GET /v1/convai/agents?tags=…`, every page → the ids of the agents tagged `tag` that are
    /// not archived, newest first as the API lists them.
    pub async fn agents_tagged(&self, tag: &str) -> Result<Vec<String>, AgentsError> {
        let what = format!("agents tagged {tag:?}");
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        // Bounded: a workspace holds at most a few thousand agents, 100 a page.
        for _ in 0..MAX_LIST_PAGES {
            let mut path = format!("v1/convai/agents?page_size=100&archived=false&tags={}", seg(tag));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", seg(c)));
            }
            let page = self.must(reqwest::Method::GET, &path, None, &what).await?;
            let Some(agents) = page["agents"].as_array() else {
                return Err(AgentsError::Protocol { what, detail: "no \"agents\" list in the answer".into() });
            };
            for a in agents {
                // The filter is the API's; the tag is checked again so a looser server cannot
                // make another restaurant's agent ours.
                if a["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag)) {
                    ids.push(id_field(a, "agent_id", &what)?);
                }
            }
            match (page["has_more"].as_bool(), page["next_cursor"].as_str()) {
                (Some(true), Some(next)) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(ids),
            }
        }
        Err(AgentsError::Protocol { what, detail: format!("more than {MAX_LIST_PAGES} pages") })
    }

    /// `POST /v1/convai/agents/create` → the new agent's id.
    pub async fn create_agent(&self, doc: &Value) -> Result<String, AgentsError> {
        let v = self
            .must(
                reqwest::Method::POST,
                "v1/convai/agents/create",
                Some(doc),
                "creating an agent",
            )
            .await?;
        id_field(&v, "agent_id", "creating an agent")
    }

    /// `PATCH /v1/convai/agents/{id}` with a partial document → the whole agent.
    pub async fn patch_agent(&self, agent_id: &str, patch: &Value) -> Result<Value, AgentsError> {
        let what = format!("agent {agent_id:?}");
        self.must(
            reqwest::Method::PATCH,
            &format!("v1/convai/agents/{}", seg(agent_id)),
            Some(patch),
            &what,
        )
        .await
    }

    /// `GET /v1/convai/tools/{id}`; `None` when it does not exist.
    pub async fn tool(&self, tool_id: &str) -> Result<Option<Value>, AgentsError> {
        let what = format!("tool {tool_id:?}");
        self.send(
            reqwest::Method::GET,
            &format!("v1/convai/tools/{}", seg(tool_id)),
            None,
            &what,
        )
        .await
    }

    /// `POST /v1/convai/tools` → the new tool's id.
    pub async fn create_tool(&self, tool_config: &Value) -> Result<String, AgentsError> {
        let what = format!("creating tool {}", tool_config["name"]);
        let v = self
            .must(
                reqwest::Method::POST,
                "v1/convai/tools",
                Some(&json!({ "tool_config": tool_config })),
                &what,
            )
            .await?;
        id_field(&v, "id", &what)
    }

    /// `PATCH /v1/convai/tools/{id}` with the whole `tool_config`.
    pub async fn patch_tool(&self, tool_id: &str, tool_config: &Value) -> Result<(), AgentsError> {
        let what = format!("tool {tool_id:?}");
        self.must(
            reqwest::Method::PATCH,
            &format!("v1/convai/tools/{}", seg(tool_id)),
            Some(&json!({ "tool_config": tool_config })),
            &what,
        )
        .await
        .map(|_| ())
    }
}

/// Everything but RFC 3986's unreserved characters.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment or query value (ids and cursors are opaque strings from the
/// API or the configuration).
fn seg(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, NOT_UNRESERVED).to_string()
}

fn id_field(v: &Value, field: &str, what: &str) -> Result<String, AgentsError> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AgentsError::Protocol {
            what: what.to_owned(),
            detail: format!("no {field:?} in the answer"),
        })
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    // reqwest's messages name the URL, never headers: the key cannot leak through them.
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_DETAIL {
        return s.to_owned();
    }
    s.chars().take(MAX_DETAIL).collect::<String>() + "…"
}

/// What one sync found and did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub restaurant_id: String,
    /// The agent's id (empty only for a dry run that would create it).
    pub agent_id: String,
    pub created_agent: bool,
    /// The restaurant had no agent id and the agent tagged for it was taken as its own.
    pub adopted_agent: bool,
    /// Tool names created (or, in a dry run, to be created).
    pub created_tools: Vec<String>,
    /// Per tool name, what drifted (and was repaired unless a dry run).
    pub tool_drift: BTreeMap<String, Vec<Drift>>,
    /// What drifted on the agent (all of the specification when it is created).
    pub agent_drift: Vec<Drift>,
    /// The state to write back to the restaurant.
    pub synced: AgentSynced,
    pub dry_run: bool,
}

impl SyncReport {
    /// Nothing was (or would be) created or changed.
    pub fn is_noop(&self) -> bool {
        !self.created_agent
            && self.created_tools.is_empty()
            && self.tool_drift.values().all(Vec::is_empty)
            && self.agent_drift.is_empty()
    }

    /// Whether the restaurant's stored agent id and synced state differ from this result.
    pub fn changes(&self, cfg: &RestaurantConfig) -> bool {
        !self.agent_id.is_empty()
            && (cfg.agent.elevenlabs_agent_id != self.agent_id
                || cfg.agent.synced.as_ref() != Some(&self.synced))
    }

    /// `cfg` with the agent id and synced state of this result.
    pub fn apply(&self, cfg: &RestaurantConfig) -> RestaurantConfig {
        let mut out = cfg.clone();
        out.agent.elevenlabs_agent_id = self.agent_id.clone();
        out.agent.synced = Some(self.synced.clone());
        out
    }

    /// A readable account: one line per action, each drifted field as `path / - have / + want`.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let verb = |done: &str, would: &str| {
            if self.dry_run {
                would.to_owned()
            } else {
                done.to_owned()
            }
        };
        let mut out = String::new();
        let agent = if self.agent_id.is_empty() {
            "(new)"
        } else {
            &self.agent_id
        };
        let _ = writeln!(out, "restaurant {} → agent {agent}", self.restaurant_id);
        if self.adopted_agent {
            let _ = writeln!(
                out,
                "  {} the agent tagged {} (created earlier, its id never stored)",
                verb("adopted", "would adopt"),
                agent::restaurant_tag(&self.restaurant_id)
            );
        }
        if self.is_noop() {
            let _ = writeln!(out, "  in sync: nothing to change");
            return out;
        }
        for t in &self.created_tools {
            let _ = writeln!(out, "  {} client tool {t}", verb("created", "would create"));
        }
        for (t, drifts) in &self.tool_drift {
            for d in drifts {
                let _ = writeln!(
                    out,
                    "  {} tool {t}: {}",
                    verb("repaired", "drift in"),
                    indent(&d.to_string())
                );
            }
        }
        if self.created_agent {
            let _ = writeln!(out, "  {} the agent", verb("created", "would create"));
        } else {
            for d in &self.agent_drift {
                let _ = writeln!(
                    out,
                    "  {} {}",
                    verb("repaired", "drift:"),
                    indent(&d.to_string())
                );
            }
        }
        out
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n    ")
}

/// A restaurant's tools with their specifications, in the restaurant's order.
///
/// # Errors
/// [`AgentsError::Tool`] for a tool without a specification or with one ElevenLabs would refuse.
pub fn tool_specs(
    cfg: &RestaurantConfig,
    spec_of: impl Fn(&str) -> Option<ToolSpec>,
) -> Result<Vec<(String, ToolSpec)>, AgentsError> {
    cfg.tools
        .iter()
        .map(|t| {
            let err = |reason: String| AgentsError::Tool {
                restaurant: cfg.id.clone(),
                tool: t.name.clone(),
                reason,
            };
            let spec = spec_of(&t.module_sha256).ok_or_else(|| {
                err(format!(
                    "module {} has no tool specification (a tool.json next to the policy, uploaded with it)",
                    t.module_sha256
                ))
            })?;
            spec.validate().map_err(|e| err(e.to_string()))?;
            Ok((t.name.clone(), spec))
        })
        .collect()
}

/// Brings the restaurant's agent and tools to their specification (or, with `dry_run`, only says
/// what it would change). See the module documentation for the order of steps.
///
/// # Errors
/// The agent id names no agent, the API refuses the key or a document, or stays unavailable.
pub async fn sync(
    api: &AgentsApi,
    cfg: &RestaurantConfig,
    tools: &[(String, ToolSpec)],
    dry_run: bool,
) -> Result<SyncReport, AgentsError> {
    let mut report = SyncReport {
        restaurant_id: cfg.id.clone(),
        agent_id: cfg.agent.elevenlabs_agent_id.clone(),
        dry_run,
        ..SyncReport::default()
    };
    // 1. Read before writing anything.
    let existing_agent = if cfg.agent.elevenlabs_agent_id.is_empty() {
        let tag = agent::restaurant_tag(&cfg.id);
        match api.agents_tagged(&tag).await?.as_slice() {
            [] => None,
            [id] => {
                tracing::warn!(restaurant = %cfg.id, agent = %id, "adopting the agent tagged for this restaurant (an earlier sync created it without storing its id)");
                report.agent_id = id.clone();
                report.adopted_agent = true;
                Some(api.agent(id).await?.ok_or_else(|| AgentsError::NotFound { what: format!("agent {id:?} (listed, then gone)") })?)
            }
            ids => return Err(AgentsError::Ambiguous { restaurant: cfg.id.clone(), tag, ids: ids.to_vec() }),
        }
    } else {
        Some(
            api.agent(&cfg.agent.elevenlabs_agent_id)
                .await?
                .ok_or_else(|| AgentsError::NotFound {
                    what: format!(
                        "agent {:?} (restaurant {}: agent.elevenlabs_agent_id)",
                        cfg.agent.elevenlabs_agent_id, cfg.id
                    ),
                })?,
        )
    };
    let mut known_ids = cfg
        .agent
        .synced
        .as_ref()
        .map(|s| s.tool_ids.clone())
        .unwrap_or_default();
    let mut existing_tools = BTreeMap::new();
    // An adopted agent's client tools are this restaurant's too, by name.
    if let (true, Some(have)) = (report.adopted_agent, &existing_agent) {
        let declared = agent::at(have, "conversation_config.agent.prompt.tool_ids").and_then(Value::as_array).cloned().unwrap_or_default();
        for id in declared.iter().filter_map(Value::as_str) {
            let Some(t) = api.tool(id).await? else { continue };
            if let Some(name) = t["tool_config"]["name"].as_str() {
                if tools.iter().any(|(n, _)| n == name) && !known_ids.contains_key(name) {
                    known_ids.insert(name.to_owned(), id.to_owned());
                    existing_tools.insert(name.to_owned(), (id.to_owned(), t.clone()));
                }
            }
        }
    }
    for (name, _) in tools {
        if existing_tools.contains_key(name) {
            continue;
        }
        if let Some(id) = known_ids.get(name) {
            if let Some(t) = api.tool(id).await? {
                existing_tools.insert(name.clone(), (id.clone(), t));
            }
        }
    }
    // 2. Tools.
    let mut tool_ids = BTreeMap::new();
    let mut ordered_ids = Vec::new();
    for (name, spec) in tools {
        let want = agent::tool_config(name, spec);
        match existing_tools.get(name) {
            Some((id, have)) => {
                let d = agent::drift(&want, &have["tool_config"]);
                if !d.is_empty() && !dry_run {
                    api.patch_tool(id, &want).await?;
                }
                if !d.is_empty() {
                    report.tool_drift.insert(name.clone(), d);
                }
                tool_ids.insert(name.clone(), id.clone());
                ordered_ids.push(id.clone());
            }
            None => {
                report.created_tools.push(name.clone());
                if !dry_run {
                    let id = api.create_tool(&want).await?;
                    tool_ids.insert(name.clone(), id.clone());
                    ordered_ids.push(id);
                }
            }
        }
    }
    // 3. The agent.
    let want = agent::agent_document(cfg, &ordered_ids);
    let have = match existing_agent {
        None => {
            report.created_agent = true;
            report.agent_drift = agent::drift(&want, &json!({}));
            if dry_run {
                return Ok(report);
            }
            let id = api.create_agent(&want).await?;
            report.agent_id = id.clone();
            api.agent(&id).await?.ok_or_else(|| AgentsError::Protocol {
                what: format!("agent {id:?}"),
                detail: "created, then not found".into(),
            })?
        }
        Some(have) => {
            // In a dry run, tools still to be created cannot have ids yet: compare the rest.
            let mut want = want;
            if dry_run && !report.created_tools.is_empty() {
                if let Some(p) = want.pointer_mut("/conversation_config/agent/prompt") {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("tool_ids");
                    }
                }
                report.agent_drift.push(Drift {
                    path: "conversation_config.agent.prompt.tool_ids".into(),
                    have: agent::at(&have, "conversation_config.agent.prompt.tool_ids").cloned(),
                    want: json!(report
                        .created_tools
                        .iter()
                        .map(|t| format!("<new {t}>"))
                        .collect::<Vec<_>>()),
                });
            }
            let d = agent::drift(&want, &have);
            report.agent_drift.extend(d.iter().cloned());
            if d.is_empty() || dry_run {
                have
            } else {
                api.patch_agent(&report.agent_id, &agent::patch_for(&d))
                    .await?
            }
        }
    };
    report.synced = AgentSynced {
        overrides: agent::overrides_allowed(&have),
        tool_ids,
        spec_sha256: agent::spec_sha256(cfg, tools),
    };
    Ok(report)
}

/// What the bridge needs of a restaurant's agent next to what the agent has: the drift of the
/// agent and of each tool (`pulsara agents show`).
///
/// # Errors
/// As [`sync`].
pub async fn show(
    api: &AgentsApi,
    cfg: &RestaurantConfig,
    tools: &[(String, ToolSpec)],
) -> Result<SyncReport, AgentsError> {
    sync(api, cfg, tools, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("agent_01AB-x.y~"), "agent_01AB-x.y~");
        assert_eq!(seg("a/../b?c"), "a%2F..%2Fb%3Fc");
    }

    #[test]
    fn details_are_clipped() {
        let long = "x".repeat(1000);
        assert!(clip(&long).chars().count() <= MAX_DETAIL + 1);
    }
}
