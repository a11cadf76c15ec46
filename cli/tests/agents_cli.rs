//! `pulsara agents sync|show`, the binary, against the embedded dashboard and the ElevenLabs
//! emulator's agents API: a missing agent is created and its id stored back, a second run
//! changes nothing, `--dry-run` prints drift as a diff and writes nothing, a restaurant that
//! fails makes the exit status nonzero without stopping the others, and no key is ever printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use pulsara_core::secret::Secret;
use pulsara_dashboard::auth::{SigningKey, SigningKeys};
use pulsara_dashboard::embedded::{EmbeddedDashboard, EmbeddedOptions};
use pulsara_dashboard::keys::Scope;
use pulsara_dashboard::seed::SeedOptions;
use pulsara_emulators::elevenlabs::{self, ElevenLabsConfig};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pulsara");
const XI_KEY: &str = "xi_cli_test_key_93be";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

async fn pulsara(dash: &EmbeddedDashboard, admin_key: &Secret, emu: &elevenlabs::Running, args: &[&str]) -> (bool, String) {
    let out: Output = tokio::process::Command::new(BIN)
        .args(["agents"])
        .args(args)
        .env("DASHBOARD_URL", dash.url())
        .env("DASHBOARD_API_KEY", admin_key.expose())
        .env("ELEVENLABS_API_KEY", XI_KEY)
        .env("ELEVENLABS_BASE_URL", emu.base_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("pulsara runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(XI_KEY) && !text.contains(admin_key.expose()), "a key was printed:\n{text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sync_creates_then_changes_nothing_and_dry_run_shows_drift() {
    let emu = elevenlabs::spawn(ElevenLabsConfig::new(XI_KEY, vec![])).await.expect("emulator");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dash = EmbeddedDashboard::start(
        listener,
        EmbeddedOptions {
            db_path: None,
            restaurants_dir: Some(root().join("restaurants")),
            seed: SeedOptions { manifest: Some(root().join("target/policies/manifest.json")), strict: true },
            signing_keys: SigningKeys::new(vec![SigningKey {
                id: "unused".into(),
                scope: Scope::Admin,
                secret: Secret::new("unused-signing-secret-of-this-test"),
            }]),
        },
        pulsara_dashboard::system_clock(),
    )
    .await
    .expect("embedded dashboard (run `cargo xtask build-policies` first)");
    let now = (dash.state.clock())();
    let admin_key = dash.store.create_api_key(Scope::Admin, "ops", now).unwrap().key;
    // A restaurant onboarded with no agent yet.
    let mut cfg = dash.store.restaurant("trattoria-roma").unwrap().unwrap();
    cfg.id = "roma-nuova".into();
    cfg.phone_numbers = vec!["+390699900100".into()];
    cfg.agent.elevenlabs_agent_id = String::new();
    cfg.agent.synced = None;
    dash.store.upsert_restaurant(&cfg, now).unwrap();

    let (ok, text) = pulsara(&dash, &admin_key, &emu, &["sync", "--restaurant", "roma-nuova"]).await;
    assert!(ok, "{text}");
    assert!(text.contains("created the agent") && text.contains("created client tool take_order"), "{text}");
    let stored = dash.store.restaurant("roma-nuova").unwrap().unwrap();
    let agent_id = stored.agent.elevenlabs_agent_id.clone();
    assert!(emu.recorder.workspace().agent(&agent_id).is_some(), "{text}");
    assert!(stored.agent.synced.is_some());

    // A second run changes nothing, on either side.
    let writes = |emu: &elevenlabs::Running| emu.recorder.workspace().requests().iter().filter(|(m, _, _)| m != "GET").count();
    let before = (writes(&emu), stored.version);
    let (ok, text) = pulsara(&dash, &admin_key, &emu, &["sync", "--restaurant", "roma-nuova"]).await;
    assert!(ok && text.contains("in sync: nothing to change"), "{text}");
    assert_eq!((writes(&emu), dash.store.restaurant("roma-nuova").unwrap().unwrap().version), before);

    // A hand edit in the workspace: `--dry-run` and `show` print the diff and write nothing.
    let r = reqwest::Client::new()
        .patch(format!("{}/v1/convai/agents/{agent_id}", emu.base_url()))
        .header("xi-api-key", XI_KEY)
        .json(&json!({"conversation_config": {"agent": {"first_message": "Edited by hand"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = writes(&emu);
    for args in [&["sync", "--restaurant", "roma-nuova", "--dry-run"][..], &["show", "roma-nuova"][..]] {
        let (ok, text) = pulsara(&dash, &admin_key, &emu, args).await;
        assert!(ok, "{text}");
        assert!(text.contains("drift:") && text.contains("conversation_config.agent.first_message"), "{text}");
        assert!(text.contains("Edited by hand") && text.contains(&cfg.agent.first_message), "{text}");
    }
    assert_eq!(writes(&emu), before, "dry runs write nothing");

    // Every restaurant: the seeded ones get their agents, one naming an agent this workspace
    // does not have says so, the drifted one is repaired anyway, and the exit status is a failure.
    let mut gone = dash.store.restaurant("sakura-sushi").unwrap().unwrap();
    gone.agent.elevenlabs_agent_id = "agent_gone".into();
    dash.store.upsert_restaurant(&gone, now).unwrap();
    let (ok, text) = pulsara(&dash, &admin_key, &emu, &["sync"]).await;
    assert!(!ok, "{text}");
    assert!(text.contains("restaurant sakura-sushi: FAILED") && text.contains("does not exist"), "{text}");
    assert!(text.contains("repaired"), "{text}");
    for seeded in ["trattoria-roma", "brooklyn-smokehouse"] {
        let id = dash.store.restaurant(seeded).unwrap().unwrap().agent.elevenlabs_agent_id;
        assert!(emu.recorder.workspace().agent(&id).is_some(), "{seeded}: {text}");
    }
    let agent = emu.recorder.workspace().agent(&agent_id).unwrap();
    assert_eq!(agent["conversation_config"]["agent"]["first_message"], json!(cfg.agent.first_message));

    // Settings missing: a clear error naming them.
    let out = tokio::process::Command::new(BIN)
        .args(["agents", "sync"])
        .env_remove("DASHBOARD_URL")
        .env_remove("ELEVENLABS_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DASHBOARD_URL"), "{out:?}");

    dash.stop().await;
    emu.shutdown().await;
}
