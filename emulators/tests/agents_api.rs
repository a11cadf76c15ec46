//! The agents and tools API of the ElevenLabs emulator over loopback, with reqwest.
use pulsara_emulators::elevenlabs::{spawn, ElevenLabsConfig, Running};
use pulsara_emulators::workspace::MAX_BODY_BYTES;
use serde_json::{json, Value};

const KEY: &str = "xi_test_key";

struct Api {
    emu: Running,
    http: reqwest::Client,
}

struct Resp {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Api {
    async fn start() -> Api {
        let emu = spawn(ElevenLabsConfig::new(KEY, vec![]))
            .await
            .expect("spawn");
        Api {
            emu,
            http: reqwest::Client::new(),
        }
    }

    async fn raw(&self, method: &str, path: &str, key: Option<&str>, body: Vec<u8>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.emu.base_url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.header("xi-api-key", k);
        }
        let r = req.send().await.expect("send");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            retry_after,
            body,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, path, Some(KEY), bytes).await
    }
}

fn tool_config(name: &str) -> Value {
    json!({
        "type": "client",
        "name": name,
        "description": "Book a table.",
        "expects_response": true,
        "response_timeout_secs": 10,
        "parameters": {
            "type": "object",
            "properties": {
                "party_size": { "type": "integer", "description": "Guests" },
                "time": { "type": "string", "description": "HH:MM", "enum": ["19:00", "20:00"] },
                "notes": { "type": "array", "items": { "type": "string", "description": "a note" } },
                "guest": {
                    "type": "object",
                    "properties": { "name": { "type": "string", "description": "Name" } },
                    "required": ["name"]
                }
            },
            "required": ["party_size", "time"]
        }
    })
}

/// The `detail` list of a 422, checked for shape; returns the locations.
fn locs(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 422, "{}", r.body);
    let detail = r.body["detail"].as_array().expect("detail list");
    assert!(!detail.is_empty());
    for d in detail {
        assert!(
            d["msg"].is_string() && d["type"].is_string() && d["loc"].is_array(),
            "{d}"
        );
    }
    detail.iter().map(|d| d["loc"].clone()).collect()
}

#[tokio::test]
async fn agent_and_tool_lifecycle() {
    let api = Api::start().await;
    let ws = api.emu.recorder.workspace();

    let t = api
        .call(
            "POST",
            "/v1/convai/tools",
            Some(json!({ "tool_config": tool_config("book_table") })),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let tool_id = t.body["id"].as_str().unwrap().to_owned();
    assert!(tool_id.starts_with("tool_"));
    assert_eq!(t.body["tool_config"]["name"], "book_table");
    assert_eq!(t.body["tool_config"]["response_timeout_secs"], 10);
    assert_eq!(t.body["access_info"]["is_creator"], true);
    assert_eq!(t.body["usage_stats"]["avg_latency_secs"], 0.0);

    let got = api
        .call("GET", &format!("/v1/convai/tools/{tool_id}"), None)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, t.body);

    let mut changed = tool_config("book_table");
    changed["description"] = json!("Book a table for tonight.");
    changed
        .as_object_mut()
        .unwrap()
        .remove("response_timeout_secs");
    let p = api
        .call(
            "PATCH",
            &format!("/v1/convai/tools/{tool_id}"),
            Some(json!({ "tool_config": changed })),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(
        p.body["tool_config"]["description"],
        "Book a table for tonight."
    );
    // The config is replaced: the dropped field is back at its default.
    assert_eq!(p.body["tool_config"]["response_timeout_secs"], 20);

    let list = api.call("GET", "/v1/convai/tools", None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["tools"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["has_more"], false);
    assert_eq!(list.body["next_cursor"], Value::Null);
    assert_eq!(ws.tools().len(), 1);

    let create = json!({
        "name": "Bistro",
        "tags": ["pulsara", "r1"],
        "conversation_config": {
            "asr": { "user_input_audio_format": "ulaw_8000" },
            "tts": { "agent_output_audio_format": "ulaw_8000", "voice_id": "v1" },
            "agent": {
                "first_message": "Hello",
                "prompt": { "prompt": "You take bookings.", "tool_ids": [tool_id] }
            }
        },
        "platform_settings": {
            "overrides": { "conversation_config_override": { "agent": { "first_message": true } } }
        }
    });
    let c = api
        .call("POST", "/v1/convai/agents/create", Some(create))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let agent_id = c.body["agent_id"].as_str().unwrap().to_owned();
    assert!(agent_id.starts_with("agent_"));
    assert_eq!(c.body.as_object().unwrap().len(), 1);

    let g = api
        .call("GET", &format!("/v1/convai/agents/{agent_id}"), None)
        .await;
    assert_eq!(g.status, 200);
    let a = &g.body;
    let cc = &a["conversation_config"];
    assert_eq!(a["agent_id"], agent_id.as_str());
    assert_eq!(a["name"], "Bistro");
    assert_eq!(a["tags"], json!(["pulsara", "r1"]));
    assert_eq!(cc["asr"]["user_input_audio_format"], "ulaw_8000");
    assert_eq!(cc["tts"]["agent_output_audio_format"], "ulaw_8000");
    assert_eq!(cc["tts"]["voice_id"], "v1");
    assert_eq!(cc["agent"]["first_message"], "Hello");
    assert_eq!(cc["agent"]["prompt"]["tool_ids"], json!([tool_id]));
    // Defaults filled in.
    assert_eq!(cc["agent"]["language"], "en");
    assert_eq!(
        cc["conversation"]["client_events"],
        json!([
            "audio",
            "interruption",
            "agent_response",
            "user_transcript",
            "tentative_user_transcript",
            "conversation_initiation_metadata",
            "ping"
        ])
    );
    let ov = &a["platform_settings"]["overrides"]["conversation_config_override"];
    assert_eq!(ov["agent"]["first_message"], true);
    assert_eq!(ov["agent"]["language"], false);
    assert_eq!(ov["agent"]["prompt"]["prompt"], false);
    assert_eq!(ov["tts"]["voice_id"], false);
    assert!(a["metadata"]["created_at_unix_secs"].is_u64());
    assert_eq!(ws.agent(&agent_id).as_ref(), Some(a));

    // Defaults for an agent that sets nothing.
    let bare = api
        .call(
            "POST",
            "/v1/convai/agents/create",
            Some(json!({ "conversation_config": {} })),
        )
        .await;
    assert_eq!(bare.status, 200, "{}", bare.body);
    let bare = ws.agent(bare.body["agent_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        bare["conversation_config"]["asr"]["user_input_audio_format"],
        "pcm_16000"
    );
    assert_eq!(
        bare["conversation_config"]["tts"]["agent_output_audio_format"],
        "pcm_16000"
    );
    assert_eq!(
        bare["conversation_config"]["agent"]["prompt"]["tool_ids"],
        json!([])
    );

    let patch = json!({
        "tags": ["pulsara"],
        "conversation_config": {
            "conversation": { "client_events": ["audio", "client_tool_call"] },
            "agent": { "prompt": { "prompt": "New prompt." } }
        }
    });
    let p = api
        .call(
            "PATCH",
            &format!("/v1/convai/agents/{agent_id}"),
            Some(patch),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let cc = &p.body["conversation_config"];
    assert_eq!(p.body["tags"], json!(["pulsara"]));
    assert_eq!(
        cc["conversation"]["client_events"],
        json!(["audio", "client_tool_call"])
    );
    assert_eq!(cc["agent"]["prompt"]["prompt"], "New prompt.");
    // Merged, not replaced.
    assert_eq!(cc["agent"]["prompt"]["tool_ids"], json!([tool_id]));
    assert_eq!(cc["agent"]["first_message"], "Hello");
    assert_eq!(cc["asr"]["user_input_audio_format"], "ulaw_8000");
    assert_eq!(p.body["name"], "Bistro");
    assert_eq!(ws.agent(&agent_id).unwrap(), p.body);

    let list = api.call("GET", "/v1/convai/agents", None).await;
    assert_eq!(list.status, 200);
    let agents = list.body["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(list.body["has_more"], false);
    assert_eq!(list.body["next_cursor"], Value::Null);
    let ours = agents
        .iter()
        .find(|s| s["agent_id"] == agent_id.as_str())
        .unwrap();
    assert_eq!(ours["name"], "Bistro");
    assert_eq!(ours["tags"], json!(["pulsara"]));
    assert_eq!(ours["voice_id"], "v1");

    // A tool an agent uses is only deleted with force, which takes it out of the agent.
    let d = api
        .call("DELETE", &format!("/v1/convai/tools/{tool_id}"), None)
        .await;
    assert_eq!(d.status, 409, "{}", d.body);
    let d = api
        .call(
            "DELETE",
            &format!("/v1/convai/tools/{tool_id}?force=true"),
            None,
        )
        .await;
    assert_eq!(d.status, 200);
    assert_eq!(
        ws.agent(&agent_id).unwrap()["conversation_config"]["agent"]["prompt"]["tool_ids"],
        json!([])
    );

    let d = api
        .call("DELETE", &format!("/v1/convai/agents/{agent_id}"), None)
        .await;
    assert_eq!(d.status, 200);
    assert!(ws.agent(&agent_id).is_none());

    let methods: Vec<(String, u16)> = ws.requests().into_iter().map(|(m, _, s)| (m, s)).collect();
    assert_eq!(methods.len(), 12);
    assert_eq!(methods[0], ("POST".to_owned(), 200));
    assert_eq!(methods[9], ("DELETE".to_owned(), 409));
    api.emu.shutdown().await;
}

#[tokio::test]
async fn every_route_needs_the_key_and_unknown_ids_are_404() {
    let api = Api::start().await;
    let routes = [
        ("POST", "/v1/convai/agents/create"),
        ("GET", "/v1/convai/agents"),
        ("GET", "/v1/convai/agents/agent_x"),
        ("PATCH", "/v1/convai/agents/agent_x"),
        ("DELETE", "/v1/convai/agents/agent_x"),
        ("POST", "/v1/convai/tools"),
        ("GET", "/v1/convai/tools"),
        ("GET", "/v1/convai/tools/tool_x"),
        ("PATCH", "/v1/convai/tools/tool_x"),
        ("DELETE", "/v1/convai/tools/tool_x"),
    ];
    for (method, path) in routes {
        for key in [None, Some("wrong"), Some("")] {
            let r = api.raw(method, path, key, b"{}".to_vec()).await;
            assert_eq!(r.status, 401, "{method} {path} {key:?}");
            assert_eq!(r.body["detail"]["status"], "invalid_api_key");
            assert!(r.body["detail"]["message"].is_string());
        }
    }
    let valid_agent = json!({ "conversation_config": {} });
    let valid_tool = json!({ "tool_config": tool_config("t") });
    for (method, path, body) in [
        ("GET", "/v1/convai/agents/agent_x", None),
        ("PATCH", "/v1/convai/agents/agent_x", Some(valid_agent)),
        ("DELETE", "/v1/convai/agents/agent_x", None),
        ("GET", "/v1/convai/tools/tool_x", None),
        ("PATCH", "/v1/convai/tools/tool_x", Some(valid_tool)),
        ("DELETE", "/v1/convai/tools/tool_x", None),
    ] {
        let r = api.call(method, path, body).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert!(r.body["detail"]["message"].is_string(), "{}", r.body);
    }
    assert_eq!(api.emu.recorder.workspace().requests().len(), 36);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn validation_errors_are_fastapis() {
    let api = Api::start().await;
    let create =
        |body: &'static str| api.raw("POST", "/v1/convai/agents/create", Some(KEY), body.into());

    // Not JSON, not an object, empty.
    let r = create("{\"conversation_config\": ").await;
    assert_eq!(locs(&r)[0][0], "body");
    assert_eq!(r.body["detail"][0]["type"], "json_invalid");
    let r = create("[1, 2]").await;
    assert_eq!(locs(&r), [json!(["body"])]);
    assert_eq!(r.body["detail"][0]["type"], "model_attributes_type");
    assert_eq!(locs(&create("").await), [json!(["body"])]);

    // Missing conversation_config.
    let r = create(r#"{"name": "x"}"#).await;
    assert_eq!(locs(&r), [json!(["body", "conversation_config"])]);
    assert_eq!(r.body["detail"][0]["type"], "missing");

    // Unknown audio formats, client events; wrong types.
    let r = create(
        r#"{"conversation_config": {"asr": {"user_input_audio_format": "mp3_44100"},
            "tts": {"agent_output_audio_format": "ulaw_16000"},
            "conversation": {"client_events": ["audio", "bogus"]}}}"#,
    )
    .await;
    assert_eq!(
        locs(&r),
        [
            json!([
                "body",
                "conversation_config",
                "asr",
                "user_input_audio_format"
            ]),
            json!([
                "body",
                "conversation_config",
                "tts",
                "agent_output_audio_format"
            ]),
            json!([
                "body",
                "conversation_config",
                "conversation",
                "client_events",
                1
            ]),
        ]
    );
    assert_eq!(r.body["detail"][0]["type"], "enum");
    assert!(r.body["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("'ulaw_8000'"));
    let r = create(
        r#"{"name": 5, "tags": "x", "conversation_config": {"agent": {"first_message": true,
            "prompt": {"tool_ids": "t"}}, "conversation": {"max_duration_seconds": 1.5}},
            "platform_settings": {"overrides": {"conversation_config_override":
            {"agent": {"language": "yes"}}}}}"#,
    )
    .await;
    assert_eq!(
        locs(&r),
        [
            json!([
                "body",
                "conversation_config",
                "conversation",
                "max_duration_seconds"
            ]),
            json!(["body", "conversation_config", "agent", "first_message"]),
            json!(["body", "conversation_config", "agent", "prompt", "tool_ids"]),
            json!([
                "body",
                "platform_settings",
                "overrides",
                "conversation_config_override",
                "agent",
                "language"
            ]),
            json!(["body", "name"]),
            json!(["body", "tags"]),
        ]
    );
    let r = create(r#"{"conversation_config": "x"}"#).await;
    assert_eq!(locs(&r), [json!(["body", "conversation_config"])]);

    // A tool id that is not in the workspace.
    let r =
        create(r#"{"conversation_config": {"agent": {"prompt": {"tool_ids": ["tool_nope"]}}}}"#)
            .await;
    assert_eq!(
        locs(&r),
        [json!([
            "body",
            "conversation_config",
            "agent",
            "prompt",
            "tool_ids",
            0
        ])]
    );

    // PATCH is checked the same way and changes nothing when refused.
    let ok = create(r#"{"conversation_config": {}}"#).await;
    let id = ok.body["agent_id"].as_str().unwrap().to_owned();
    let before = api.emu.recorder.workspace().agent(&id).unwrap();
    let r = api
        .call(
            "PATCH",
            &format!("/v1/convai/agents/{id}"),
            Some(json!({"conversation_config": {"tts": {"agent_output_audio_format": "wav"}}})),
        )
        .await;
    assert_eq!(
        locs(&r),
        [json!([
            "body",
            "conversation_config",
            "tts",
            "agent_output_audio_format"
        ])]
    );
    assert_eq!(api.emu.recorder.workspace().agent(&id).unwrap(), before);
    assert_eq!(api.emu.recorder.workspace().agents().len(), 1);

    // Tools.
    let tool = |cfg: Value| {
        api.call(
            "POST",
            "/v1/convai/tools",
            Some(json!({ "tool_config": cfg })),
        )
    };
    let base = ["body", "tool_config", "client"];
    let at = |rest: &[Value]| {
        let mut l: Vec<Value> = base.iter().map(|s| json!(s)).collect();
        l.extend_from_slice(rest);
        Value::Array(l)
    };
    let r = api.call("POST", "/v1/convai/tools", Some(json!({}))).await;
    assert_eq!(locs(&r), [json!(["body", "tool_config"])]);
    let r = tool(json!({"type": "webhook", "name": "w", "description": "d"})).await;
    assert_eq!(locs(&r), [json!(["body", "tool_config", "type"])]);
    assert!(r.body["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("client tools only"));
    let r = tool(json!({"type": "telepathy", "name": "w", "description": "d"})).await;
    assert_eq!(locs(&r), [json!(["body", "tool_config"])]);
    assert_eq!(r.body["detail"][0]["type"], "union_tag_invalid");
    let r = tool(json!({"name": "w", "description": "d"})).await;
    assert_eq!(r.body["detail"][0]["type"], "union_tag_not_found");
    let r = tool(json!({"type": "client"})).await;
    assert_eq!(
        locs(&r),
        [at(&[json!("name")]), at(&[json!("description")])]
    );
    let r = tool(json!({"type": "client", "name": "", "description": ""})).await;
    assert_eq!(
        locs(&r),
        [at(&[json!("name")]), at(&[json!("description")])]
    );
    assert_eq!(r.body["detail"][0]["type"], "string_too_short");
    for bad in ["has space", "dot.name", &"x".repeat(65)] {
        let r = tool(json!({"type": "client", "name": bad, "description": "d"})).await;
        assert_eq!(locs(&r), [at(&[json!("name")])], "{bad}");
        assert_eq!(r.body["detail"][0]["type"], "string_pattern_mismatch");
    }
    let ok = tool(
        json!({"type": "client", "name": "a-Z_9".to_owned() + &"x".repeat(59), "description": "d"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r =
        tool(json!({"type": "client", "name": "n", "description": "d", "expects_response": "yes"}))
            .await;
    assert_eq!(locs(&r), [at(&[json!("expects_response")])]);
    for secs in [json!(0), json!(121), json!(-1), json!(2.5), json!("10")] {
        let r = tool(json!({"type": "client", "name": "n", "description": "d", "response_timeout_secs": secs})).await;
        assert_eq!(locs(&r), [at(&[json!("response_timeout_secs")])], "{secs}");
    }
    let ok = tool(json!({"type": "client", "name": "n", "description": "d",
        "response_timeout_secs": -1, "expects_response": true}))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let p = |params: Value| {
        tool(json!({"type": "client", "name": "n", "description": "d", "parameters": params}))
    };
    let params = |rest: &[Value]| {
        let mut l = vec![json!("parameters")];
        l.extend_from_slice(rest);
        at(&l)
    };
    let r = p(json!("x")).await;
    assert_eq!(locs(&r), [params(&[])]);
    let r = p(json!({"type": "array"})).await;
    assert_eq!(locs(&r), [params(&[json!("type")])]);
    let r = p(json!({"type": "object", "properties": {"a": {"type": "string", "description": "a"}}, "required": ["b"]})).await;
    assert_eq!(locs(&r), [params(&[json!("required"), json!(0)])]);
    let r = p(json!({"type": "object", "properties": {"a": {"type": "date", "description": "a"}}}))
        .await;
    assert_eq!(
        locs(&r),
        [params(&[json!("properties"), json!("a"), json!("type")])]
    );
    let r = p(json!({"type": "object", "properties": {"a": {"type": "string"}}})).await;
    assert_eq!(locs(&r), [params(&[json!("properties"), json!("a")])]);
    let r = p(json!({"type": "object", "properties": {"a": {"type": "string", "description": "a", "dynamic_variable": "v"}}})).await;
    assert_eq!(locs(&r), [params(&[json!("properties"), json!("a")])]);
    let r =
        p(json!({"type": "object", "properties": {"a": {"type": "integer", "description": 3}}}))
            .await;
    assert_eq!(
        locs(&r),
        [params(&[
            json!("properties"),
            json!("a"),
            json!("description")
        ])]
    );
    let r = p(json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}})).await;
    assert_eq!(
        locs(&r),
        [params(&[json!("properties"), json!("a"), json!("items")])]
    );
    let r = p(json!({"type": "object", "properties": {"o": {"type": "object", "properties": {"x": {"type": "number", "description": "x"}}, "required": ["y"]}}})).await;
    assert_eq!(
        locs(&r),
        [params(&[
            json!("properties"),
            json!("o"),
            json!("required"),
            json!(0)
        ])]
    );
    let r = p(json!({"type": "object", "properties": [], "required": "a"})).await;
    assert_eq!(
        locs(&r),
        [params(&[json!("properties")]), params(&[json!("required")])]
    );
    let r = api
        .raw("GET", "/v1/convai/agents?page_size=101", Some(KEY), vec![])
        .await;
    assert_eq!(locs(&r), [json!(["query", "page_size"])]);
    assert_eq!(api.emu.recorder.workspace().tools().len(), 2);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let api = Api::start().await;
    let big = format!(
        r#"{{"conversation_config": {{}}, "name": "{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let r = api
        .raw(
            "POST",
            "/v1/convai/agents/create",
            Some(KEY),
            big.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body["detail"]["message"].is_string());
    // Just under the limit is served.
    let name_len = MAX_BODY_BYTES - r#"{"conversation_config": {}, "name": ""}"#.len();
    let fits = format!(
        r#"{{"conversation_config": {{}}, "name": "{}"}}"#,
        "x".repeat(name_len)
    );
    let r = api
        .raw(
            "POST",
            "/v1/convai/agents/create",
            Some(KEY),
            fits.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn injected_faults_come_first_then_service_resumes() {
    let api = Api::start().await;
    let ws = api.emu.recorder.workspace();
    ws.fail_next(429, 3, Some(1));
    for _ in 0..3 {
        let r = api.call("GET", "/v1/convai/agents", None).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert!(r.body["detail"]["message"].is_string());
    }
    let r = api.call("GET", "/v1/convai/agents", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.retry_after, None);
    ws.fail_next(503, 1, None);
    let r = api.call("GET", "/v1/convai/tools", None).await;
    assert_eq!((r.status, r.retry_after), (503, None));
    let statuses: Vec<u16> = ws.requests().into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(statuses, [429, 429, 429, 200, 503]);
    // The conversation routes are not the API's: not counted, not failed.
    ws.fail_next(500, 1, None);
    let r = api
        .raw(
            "GET",
            "/v1/convai/conversation/get-signed-url?agent_id=nope",
            Some(KEY),
            vec![],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(ws.requests().len(), 5);
    api.emu.shutdown().await;
}

#[tokio::test]
async fn junk_bodies_never_break_the_server() {
    let api = Api::start().await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fragments: [&[u8]; 14] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"null",
        b"1e999",
        b"\"tool_config\"",
        b"\"conversation_config\"",
        b"\"type\"",
        b"\"client\"",
        b"\xff\xfe",
    ];
    let routes = [
        ("POST", "/v1/convai/agents/create"),
        ("POST", "/v1/convai/tools"),
    ];
    for i in 0..300 {
        let mut body = Vec::new();
        for _ in 0..(next() % 12) {
            body.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
        }
        let (method, path) = routes[i % routes.len()];
        let r = api.raw(method, path, Some(KEY), body.clone()).await;
        assert!(
            r.status == 200 || r.status == 422,
            "{} for {:?}",
            r.status,
            String::from_utf8_lossy(&body)
        );
    }
    // Deep nesting and wrong shapes at every level of a tool schema.
    let mut deep = json!({"type": "string", "description": "leaf"});
    for _ in 0..60 {
        deep = json!({"type": "array", "items": deep});
    }
    let r = api
        .call(
            "POST",
            "/v1/convai/tools",
            Some(
                json!({"tool_config": {"type": "client", "name": "d", "description": "d",
                "parameters": {"type": "object", "properties": {"p": deep}}}}),
            ),
        )
        .await;
    assert!(r.status == 200 || r.status == 422);
    let r = api.raw("GET", "/emulator/healthz", None, vec![]).await;
    assert_eq!(r.status, 200);
    api.emu.shutdown().await;
}
