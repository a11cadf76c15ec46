//! The agent sync job of the embedded dashboard against the ElevenLabs emulator's agents API:
//! edits reach the agent with nobody running a command; a second sync writes nothing; drift is
//! repaired; a new tool becomes the agent's; rate limits and outages are retried; an unknown
//! agent id and a refused key are clear errors without the key; an agent created by a sync that
//! never stored its id is adopted, not created again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pulsara_core::config::{RestaurantConfig, ToolBinding};
use pulsara_core::secret::Secret;
use pulsara_dashboard::agents::{self, AgentsApi, AgentsApiConfig, AgentsError};
use pulsara_dashboard::auth::{SigningKey, SigningKeys};
use pulsara_dashboard::client::{ClientConfig, DashboardClient};
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::seed::SeedOptions;
use pulsara_dashboard::store::AgentSyncState;
use pulsara_emulators::elevenlabs::{self, ElevenLabsConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const XI_KEY: &str = "xi_sync_test_key_5f2c";
const ADMIN_SECRET: &str = "admin-secret-for-agent-sync-tests";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Fixture {
    emu: elevenlabs::Running,
    dash: EmbeddedDashboard,
    admin: DashboardClient,
    metrics: prometheus::Registry,
    stop: CancellationToken,
}

impl Fixture {
    async fn start() -> Fixture {
        let emu = elevenlabs::spawn(ElevenLabsConfig::new(XI_KEY, vec![])).await.expect("emulator");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dash = EmbeddedDashboard::start(
            listener,
            EmbeddedOptions {
                db_path: None,
                restaurants_dir: Some(root().join("restaurants")),
                seed: SeedOptions { manifest: Some(root().join("target/policies/manifest.json")), strict: true },
                signing_keys: SigningKeys::new(vec![SigningKey {
                    id: "admin".into(),
                    scope: Scope::Admin,
                    secret: Secret::new(ADMIN_SECRET),
                }]),
            },
            pulsara_dashboard::system_clock(),
        )
        .await
        .expect("embedded dashboard (run `cargo xtask build-policies` first)");
        let admin = DashboardClient::new(
            ClientConfig::new(dash.url()).signing_key("admin", Secret::new(ADMIN_SECRET)),
            pulsara_dashboard::system_clock(),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let (job, _task) = dash.start_agent_sync(api(&emu, XI_KEY), stop.clone());
        let metrics = prometheus::Registry::new();
        metrics.register(Box::new(job.collector().unwrap())).unwrap();
        // The seeded restaurants have no agents yet: the job creates them first.
        dash.wait_agent_syncs(Duration::from_secs(30)).await.expect("seeded agents synced");
        Fixture { emu, dash, admin, metrics, stop }
    }

    /// A restaurant onboarded as seeding does it: stored, and its agent sync requested.
    fn onboard(&self, cfg: &RestaurantConfig) {
        let now = (self.dash.state.clock())();
        self.dash.store.upsert_restaurant(cfg, now).unwrap();
        self.dash.state.request_agent_sync(&cfg.id).unwrap();
    }

    fn sync_row(&self, id: &str) -> Option<AgentSyncState> {
        self.dash.store.agent_syncs().unwrap().into_iter().find(|r| r.restaurant_id == id)
    }

    /// Waits until restaurant `id`'s sync generation `generation` is done.
    async fn synced(&self, id: &str, generation: i64) -> RestaurantConfig {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.sync_row(id);
            if row.as_ref().is_some_and(|r| r.done >= generation) {
                return self.dash.store.restaurant(id).unwrap().unwrap();
            }
            assert!(tokio::time::Instant::now() < deadline, "sync of {id} not done: {row:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until restaurant `id`'s sync has failed `attempts` times.
    async fn failed(&self, id: &str, attempts: i64) -> AgentSyncState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.sync_row(id);
            if let Some(r) = row.as_ref().filter(|r| r.attempts >= attempts) {
                return r.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "sync of {id} did not fail: {row:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn workspace_writes(&self) -> Vec<(String, String, u16)> {
        self.emu.recorder.workspace().requests().into_iter().filter(|(m, _, _)| m != "GET").collect()
    }

    /// One sample of the job's families, as `/metrics` would print it.
    fn metric(&self, name: &str) -> f64 {
        let text = prometheus::TextEncoder::new().encode_to_string(&self.metrics.gather()).unwrap();
        pulsara_emulators::exposition::parse(&text)
            .unwrap()
            .value(name, &[])
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    }

    async fn stop(self) {
        self.stop.cancel();
        self.dash.stop().await;
        self.emu.shutdown().await;
    }
}

fn api(emu: &elevenlabs::Running, key: &str) -> AgentsApi {
    let mut cfg = AgentsApiConfig::new(emu.base_url(), Secret::new(key));
    cfg.backoff = Duration::from_millis(20);
    AgentsApi::new(cfg).unwrap()
}

/// Seeded Trattoria Roma (tools resolved to module hashes) under a new id and number, with no
/// agent yet.
fn new_restaurant(f: &Fixture, id: &str, number: &str) -> RestaurantConfig {
    let mut cfg = f.dash.store.restaurant("trattoria-roma").unwrap().unwrap();
    cfg.id = id.into();
    cfg.version = 1;
    cfg.phone_numbers = vec![number.into()];
    cfg.agent.elevenlabs_agent_id = String::new();
    cfg.agent.synced = None;
    cfg
}

fn generation(f: &Fixture, id: &str) -> i64 {
    f.sync_row(id).map_or(0, |r| r.requested)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_reaches_the_agent_with_no_command_and_a_second_sync_writes_nothing() {
    let f = Fixture::start().await;
    // A new restaurant: its agent and client tools are created and the id stored back.
    let created_before = f.metric("pulsara_agent_sync_agents_created_total");
    assert_eq!(created_before, 3.0, "the seeded restaurants' agents");
    let cfg = new_restaurant(&f, "roma-due", "+390699900001");
    f.onboard(&cfg);
    let stored = f.synced("roma-due", generation(&f, "roma-due")).await;
    let agent_id = stored.agent.elevenlabs_agent_id.clone();
    assert!(!agent_id.is_empty());
    let synced = stored.agent.synced.clone().expect("synced state stored");
    let tool_names: Vec<_> = cfg.tools.iter().map(|t| t.name.clone()).collect();
    assert_eq!(synced.tool_ids.keys().cloned().collect::<Vec<_>>(), {
        let mut n = tool_names.clone();
        n.sort();
        n
    });
    assert_eq!(synced.overrides.len(), pulsara_core::agent::overrides_needed(&cfg).len(), "{synced:?}");
    let agent = f.emu.recorder.workspace().agent(&agent_id).expect("agent in the workspace");
    assert!(agent["tags"].as_array().unwrap().contains(&json!("restaurant:roma-due")), "{agent}");
    assert_eq!(agent["conversation_config"]["agent"]["first_message"], json!(cfg.agent.first_message));
    let mut tool_ids: Vec<Value> = synced.tool_ids.values().map(|v| json!(v)).collect();
    let mut have_ids = agent["conversation_config"]["agent"]["prompt"]["tool_ids"].as_array().unwrap().clone();
    tool_ids.sort_by_key(ToString::to_string);
    have_ids.sort_by_key(ToString::to_string);
    assert_eq!(have_ids, tool_ids);
    assert_eq!(f.metric("pulsara_agent_sync_agents_created_total"), created_before + 1.0);

    // An edit that changes nothing the agent sees: the sync reads and writes nothing.
    let writes = f.workspace_writes().len();
    f.admin.admin_put_restaurant(&cfg).await.unwrap();
    let again = f.synced("roma-due", generation(&f, "roma-due")).await;
    assert_eq!(again.agent.elevenlabs_agent_id, agent_id, "one agent per restaurant");
    assert_eq!(f.workspace_writes().len(), writes, "{:?}", f.workspace_writes());
    assert_eq!(f.emu.recorder.workspace().agents().len(), 4, "the seeded three and this one");

    // A first message edited in the dashboard is on the agent at once.
    let mut edit = new_restaurant(&f, "roma-due", "+390699900001");
    edit.agent.first_message = "Pronto, Roma Due!".into();
    f.admin.admin_put_restaurant(&edit).await.unwrap();
    f.synced("roma-due", generation(&f, "roma-due")).await;
    let agent = f.emu.recorder.workspace().agent(&agent_id).unwrap();
    assert_eq!(agent["conversation_config"]["agent"]["first_message"], json!("Pronto, Roma Due!"));
    assert!(f.workspace_writes().iter().any(|(m, p, s)| m == "PATCH" && p.ends_with(&agent_id) && *s == 200));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_in_the_workspace_is_shown_then_repaired() {
    let f = Fixture::start().await;
    let cfg = new_restaurant(&f, "roma-tre", "+390699900002");
    f.onboard(&cfg);
    let stored = f.synced("roma-tre", generation(&f, "roma-tre")).await;
    let agent_id = stored.agent.elevenlabs_agent_id.clone();
    // Someone edits the agent by hand: another first message, and the language override off.
    let http = reqwest::Client::new();
    let r = http
        .patch(format!("{}/v1/convai/agents/{agent_id}", f.emu.base_url()))
        .header("xi-api-key", XI_KEY)
        .json(&json!({
            "conversation_config": {"agent": {"first_message": "Hello from a hand edit"}},
            "platform_settings": {"overrides": {"conversation_config_override": {"agent": {"language": false}}}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // `show` (and `sync --dry-run`) reports it as a diff and changes nothing.
    let writes = f.workspace_writes().len();
    let tools = agents::tool_specs(&stored, |sha| f.dash.store.policy_tool(sha).unwrap()).unwrap();
    let report = agents::show(&api(&f.emu, XI_KEY), &stored, &tools).await.unwrap();
    let text = report.render();
    assert!(text.contains("conversation_config.agent.first_message"), "{text}");
    assert!(text.contains("Hello from a hand edit") && text.contains(&cfg.agent.first_message), "{text}");
    assert!(text.contains("conversation_config_override.agent.language"), "{text}");
    assert!(!report.synced.overrides.contains(&"agent.language".to_string()), "{:?}", report.synced);
    assert_eq!(f.workspace_writes().len(), writes, "a dry run writes nothing");

    // The next sync repairs both.
    f.admin.admin_put_restaurant(&cfg).await.unwrap();
    let repaired = f.synced("roma-tre", generation(&f, "roma-tre")).await;
    let agent = f.emu.recorder.workspace().agent(&agent_id).unwrap();
    assert_eq!(agent["conversation_config"]["agent"]["first_message"], json!(cfg.agent.first_message));
    assert_eq!(
        agent["platform_settings"]["overrides"]["conversation_config_override"]["agent"]["language"],
        json!(true)
    );
    assert!(repaired.agent.synced.unwrap().overrides.contains(&"agent.language".to_string()));
    assert_eq!(f.metric("pulsara_agent_sync_repaired_total"), 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_added_to_a_restaurant_becomes_its_agents_with_no_other_step() {
    let f = Fixture::start().await;
    let mut cfg = new_restaurant(&f, "roma-quattro", "+390699900003");
    let brooklyn = f.dash.store.restaurant("brooklyn-smokehouse").unwrap().unwrap();
    let book: ToolBinding = brooklyn.tools.iter().find(|t| t.name == "book_table").expect("brooklyn books tables").clone();
    assert!(cfg.tools.iter().all(|t| t.name != "book_table"));
    f.onboard(&cfg);
    let stored = f.synced("roma-quattro", generation(&f, "roma-quattro")).await;
    let agent_id = stored.agent.elevenlabs_agent_id.clone();
    let tools_before = f.emu.recorder.workspace().tools().len();

    cfg.tools.push(book);
    f.admin.admin_put_tools("roma-quattro", &cfg.tools).await.unwrap();
    let stored = f.synced("roma-quattro", generation(&f, "roma-quattro")).await;
    let synced = stored.agent.synced.unwrap();
    let book_id = synced.tool_ids.get("book_table").expect("book_table created").clone();
    assert_eq!(f.emu.recorder.workspace().tools().len(), tools_before + 1);
    let agent = f.emu.recorder.workspace().agent(&agent_id).unwrap();
    assert!(agent["conversation_config"]["agent"]["prompt"]["tool_ids"].as_array().unwrap().contains(&json!(book_id)), "{agent}");
    let tool = f.emu.recorder.workspace().tools().into_iter().find(|t| t["id"] == json!(book_id)).unwrap();
    assert_eq!(tool["tool_config"]["type"], "client");
    assert_eq!(tool["tool_config"]["name"], "book_table");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_outages_are_retried_until_the_agent_is_synced() {
    let f = Fixture::start().await;
    // A 429 storm shorter than one request's attempts: the sync rides it out.
    f.emu.recorder.workspace().fail_next(429, 3, Some(1));
    f.onboard(&new_restaurant(&f, "roma-cinque", "+390699900004"));
    let stored = f.synced("roma-cinque", generation(&f, "roma-cinque")).await;
    assert!(!stored.agent.elevenlabs_agent_id.is_empty());
    assert!(f.emu.recorder.workspace().requests().iter().filter(|(_, _, s)| *s == 429).count() >= 3);

    // An outage longer than that: the attempt fails, is kept on the row and retried later.
    f.emu.recorder.workspace().fail_next(503, 5, None);
    f.onboard(&new_restaurant(&f, "roma-sei", "+390699900005"));
    let failed = f.failed("roma-sei", 1).await;
    assert!(failed.last_error.as_deref().unwrap_or("").contains("unavailable"), "{failed:?}");
    // The retry is scheduled at least the first backoff after the failure, not at once.
    assert!(failed.next_at >= failed.updated_at + 1, "{failed:?}");
    let stored = f.synced("roma-sei", failed.requested).await;
    assert!(!stored.agent.elevenlabs_agent_id.is_empty());
    assert!(f.metric("pulsara_agent_sync_failed_total") >= 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_agent_id_and_a_refused_key_are_clear_errors_without_the_key() {
    let f = Fixture::start().await;
    // A restaurant naming an agent the workspace does not have: its sync fails saying so.
    let mut gone = new_restaurant(&f, "roma-persa", "+390699900009");
    gone.agent.elevenlabs_agent_id = "agent_gone".into();
    f.onboard(&gone);
    let row = f.failed("roma-persa", 1).await;
    let err = row.last_error.unwrap();
    assert!(err.contains("agent_gone") && err.contains("does not exist"), "{err}");
    assert!(f.metric("pulsara_agent_sync_failing") >= 1.0);
    let state = f.admin.admin_agent_sync().await.unwrap();
    let persa = state["restaurants"].as_array().unwrap().iter().find(|r| r["restaurant_id"] == "roma-persa").unwrap().clone();
    assert_eq!(persa["state"], "retrying", "{state}");

    // A key the API refuses names the setting, never the key.
    let cfg = new_restaurant(&f, "roma-sette", "+390699900006");
    let wrong = "xi_wrong_key_77aa91";
    let e = agents::sync(&api(&f.emu, wrong), &cfg, &[], false).await.unwrap_err();
    assert!(matches!(e, AgentsError::Unauthorized { status: 401 }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("ELEVENLABS_API_KEY") && !text.contains(wrong) && !text.contains(XI_KEY), "{text}");
    assert!(!err.contains(XI_KEY));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_created_without_its_id_stored_is_adopted_not_created_again() {
    let f = Fixture::start().await;
    let ws = f.emu.recorder.workspace();
    let cfg = new_restaurant(&f, "roma-otto", "+390699900008");
    // A sync that created the agent and its tools, then died before the write-back.
    let tools = agents::tool_specs(&cfg, |sha| f.dash.store.policy_tool(sha).unwrap()).unwrap();
    let lost = agents::sync(&api(&f.emu, XI_KEY), &cfg, &tools, false).await.unwrap();
    assert!(lost.created_agent && !lost.agent_id.is_empty(), "{lost:?}");
    let (agents_before, tools_before) = (ws.agents().len(), ws.tools().len());

    // The next sync finds it by its restaurant tag and keeps it and its tools.
    let dry = agents::show(&api(&f.emu, XI_KEY), &cfg, &tools).await.unwrap();
    assert!(dry.adopted_agent && !dry.created_agent && dry.created_tools.is_empty(), "{dry:?}");
    assert!(dry.render().contains("would adopt the agent tagged restaurant:roma-otto"), "{}", dry.render());
    f.onboard(&cfg);
    let stored = f.synced("roma-otto", generation(&f, "roma-otto")).await;
    assert_eq!(stored.agent.elevenlabs_agent_id, lost.agent_id);
    assert_eq!(stored.agent.synced.unwrap().tool_ids, lost.synced.tool_ids);
    assert_eq!((ws.agents().len(), ws.tools().len()), (agents_before, tools_before), "nothing created twice");

    // A second agent tagged for the restaurant (a copy made by hand): a restaurant without an
    // agent id is then an error naming both, and nothing is written.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/convai/agents/create", f.emu.base_url()))
        .header("xi-api-key", XI_KEY)
        .json(&json!({"name": "Roma Otto (copy)", "conversation_config": {}, "tags": ["restaurant:roma-otto"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let copy = r.json::<Value>().await.unwrap()["agent_id"].as_str().unwrap().to_owned();
    let writes = f.workspace_writes().len();
    let e = agents::sync(&api(&f.emu, XI_KEY), &cfg, &tools, false).await.unwrap_err();
    assert!(matches!(e, AgentsError::Ambiguous { ref ids, .. } if ids.len() == 2), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&copy) && text.contains(&lost.agent_id) && text.contains("agent.elevenlabs_agent_id"), "{text}");
    assert_eq!(f.workspace_writes().len(), writes);
    f.stop().await;
}
