#![allow(dead_code)]
//! The shipped restaurants' agents, created in an emulator's workspace from the same
//! specification a sync uses (`pulsara_core::agent`): each built-in tool from its `tool.json`,
//! then the agent with the restaurant's settings and tags.
use std::collections::BTreeMap;
use std::path::Path;

use pulsara_core::agent::{self, ToolSpec};
use pulsara_core::config::RestaurantConfig;
use pulsara_emulators::workspace::Workspace;
use serde_json::Value;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The built-in tool `name`'s specification.
pub fn builtin_spec(name: &str) -> ToolSpec {
    let path = root().join(format!("policies/guests/builtins/{name}/tool.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ToolSpec::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Creates every shipped restaurant's agent in `workspace`; restaurant id → agent id.
pub fn provision(workspace: &Workspace) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("restaurants"))
        .unwrap()
        .flatten()
    {
        let file = entry.path().join("restaurant.json");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let cfg: RestaurantConfig = serde_json::from_str(&text).unwrap();
        let mut tool_ids = Vec::new();
        for t in &cfg.tools {
            let builtin = t
                .module_sha256
                .strip_prefix("builtin:")
                .expect("shipped tools are built-ins");
            let config = agent::tool_config(&t.name, &builtin_spec(builtin));
            tool_ids.push(created(
                workspace,
                "/v1/convai/tools",
                &serde_json::json!({ "tool_config": config }),
                "id",
            ));
        }
        let doc = agent::agent_document(&cfg, &tool_ids);
        ids.insert(
            cfg.id.clone(),
            created(workspace, "/v1/convai/agents/create", &doc, "agent_id"),
        );
    }
    ids
}

fn created(workspace: &Workspace, path: &str, body: &Value, id_field: &str) -> String {
    let resp = workspace.request("POST", path, body);
    assert_eq!(resp.status, 200, "POST {path}: {}", resp.body);
    resp.body[id_field].as_str().unwrap().to_owned()
}
