//! The OpenAPI document is the contract: this test parses it, validates every example payload
//! against its schema (a JSON Schema subset: type, required, properties, enum, items, $ref,
//! allOf, oneOf, nullable, additionalProperties), deserialises each example into the Rust type
//! that implements it, and checks the other direction: whatever the Rust types serialise is
//! described by the schema (no field of core's config/call-record model missing from the doc).

use pulsara_core::call_record::CallRecord;
use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_dashboard::events::DashboardEvent;
use serde_json::Value;

fn doc() -> Value {
    let raw = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.yaml"))
        .expect("api/openapi.yaml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&raw).expect("openapi.yaml is valid YAML");
    serde_json::to_value(yaml).expect("YAML maps to JSON")
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.trim_start_matches('#');
            let target = doc
                .pointer(ptr)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Validates `v` against `schema`; `strict` makes properties the schema does not list an error
/// (unless it allows additionalProperties).
fn validate(
    doc: &Value,
    schema: &Value,
    v: &Value,
    path: &str,
    strict: bool,
    errs: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if schema.get("allOf").is_none()
            && schema.get("oneOf").is_none()
            && schema.get("type").is_some()
        {
            errs.push(format!("{path}: null but schema is not nullable"));
            return;
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        if v.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        for s in all {
            validate(doc, s, v, path, strict, errs);
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(doc, s, v, path, strict, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errs.push(format!(
                "{path}: matches {passing} of the oneOf alternatives, expected exactly 1"
            ));
        }
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            errs.push(format!("{path}: expected {t}, got {v}"));
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array) {
        if !en.contains(v) {
            errs.push(format!("{path}: {v} not in enum {en:?}"));
        }
    }
    if let (Some(obj), true) = (
        v.as_object(),
        schema.get("type").and_then(Value::as_str) == Some("object"),
    ) {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    errs.push(format!("{path}: missing required {r}"));
                }
            }
        }
        let additional = schema.get("additionalProperties");
        for (k, val) in obj {
            let p = format!("{path}.{k}");
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                validate(doc, ps, val, &p, strict, errs);
            } else if let Some(add) = additional {
                if add.is_object() {
                    validate(doc, add, val, &p, strict, errs);
                }
            } else if strict {
                errs.push(format!("{p}: property not described by the schema"));
            }
        }
    }
    if let (Some(arr), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, item) in arr.iter().enumerate() {
            validate(doc, items, item, &format!("{path}[{i}]"), strict, errs);
        }
    }
}

fn check(doc: &Value, schema_name: &str, v: &Value, strict: bool) {
    let schema = doc
        .pointer(&format!("/components/schemas/{schema_name}"))
        .unwrap_or_else(|| panic!("no schema {schema_name}"));
    let mut errs = Vec::new();
    validate(doc, schema, v, schema_name, strict, &mut errs);
    assert!(errs.is_empty(), "{schema_name}:\n{}", errs.join("\n"));
}

#[test]
fn document_has_every_contract_endpoint() {
    let d = doc();
    assert!(d["openapi"].as_str().unwrap().starts_with("3.0"));
    for (path, method) in [
        ("/v1/restaurants/by-number/{e164}", "get"),
        ("/v1/restaurants/{id}", "get"),
        ("/v1/restaurants/{id}/knowledge-base", "get"),
        ("/v1/policies/{sha256}", "get"),
        ("/v1/calls", "post"),
        ("/v1/calls/{call_sid}/events", "post"),
        ("/v1/post-call", "post"),
        ("/v1/admin/restaurants/{id}", "put"),
        ("/v1/admin/restaurants/{id}/knowledge-base", "put"),
        ("/v1/admin/restaurants/{id}/tools", "put"),
        ("/v1/policies/{sha256}/tool", "get"),
        ("/v1/admin/policies/{sha256}/tool", "put"),
        ("/v1/admin/agent-sync", "get"),
    ] {
        assert!(
            d["paths"][path][method].is_object(),
            "missing {method} {path}"
        );
    }
    assert!(d["components"]["securitySchemes"]["signedRequest"].is_object());
    assert!(d["components"]["securitySchemes"]["apiKey"].is_object());
    // Every $ref resolves.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    assert!(
                        doc.pointer(r.trim_start_matches('#')).is_some(),
                        "dangling {r}"
                    );
                }
                m.values().for_each(|x| walk(doc, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(doc, x)),
            _ => {}
        }
    }
    walk(&d, &d);
}

#[test]
fn every_example_validates_and_deserialises_into_the_rust_type() {
    let d = doc();
    let examples = d["components"]["examples"].as_object().expect("examples");
    assert!(examples.len() >= 9);
    for (name, ex) in examples {
        let ty = ex["x-rust-type"]
            .as_str()
            .unwrap_or_else(|| panic!("example {name} has no x-rust-type"));
        let value = &ex["value"];
        check(&d, ty, value, true);
        let reserialised = match ty {
            "RestaurantConfig" => {
                let cfg = serde_json::from_value::<RestaurantConfig>(value.clone()).unwrap();
                // The contract's own example must load: its languages are ones both vendors know.
                cfg.validate()
                    .unwrap_or_else(|e| panic!("example {name}: {e}"));
                serde_json::to_value(cfg)
            }
            "KnowledgeBase" => serde_json::to_value(
                serde_json::from_value::<KnowledgeBase>(value.clone()).unwrap(),
            ),
            "CallRecord" => {
                serde_json::to_value(serde_json::from_value::<CallRecord>(value.clone()).unwrap())
            }
            "DashboardEvent" => serde_json::to_value(
                serde_json::from_value::<DashboardEvent>(value.clone()).unwrap(),
            ),
            _ => Ok(value.clone()),
        }
        .unwrap();
        // What the Rust types write (with every default filled in) is also described.
        check(&d, ty, &reserialised, true);
    }
}

#[test]
fn example_restaurant_files_match_the_schema() {
    let d = doc();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../restaurants");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let Ok(raw) = std::fs::read(p.join("restaurant.json")) else {
            continue;
        };
        let cfg: RestaurantConfig = serde_json::from_slice(&raw).unwrap();
        cfg.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        check(
            &d,
            "RestaurantConfig",
            &serde_json::to_value(&cfg).unwrap(),
            true,
        );
        if let Ok(raw) = std::fs::read(p.join("knowledge_base.json")) {
            let kb: KnowledgeBase = serde_json::from_slice(&raw).unwrap();
            check(
                &d,
                "KnowledgeBase",
                &serde_json::to_value(&kb).unwrap(),
                true,
            );
        }
        n += 1;
    }
    assert!(n >= 3, "expected the three example restaurants, found {n}");
}

#[test]
fn enriched_record_with_summary_and_sentiment_is_described() {
    let d = doc();
    let mut rec: CallRecord =
        serde_json::from_value(d["components"]["examples"]["CallRecord"]["value"].clone()).unwrap();
    pulsara_dashboard::pipeline::enrich(&mut rec);
    assert!(rec.summary.is_some() && rec.sentiment.is_some());
    check(&d, "CallRecord", &serde_json::to_value(&rec).unwrap(), true);
}

#[test]
fn the_validator_itself_rejects_bad_payloads() {
    let d = doc();
    let mut errs = Vec::new();
    let schema = d.pointer("/components/schemas/RestaurantConfig").unwrap();
    validate(
        &d,
        schema,
        &serde_json::json!({"id": 5}),
        "x",
        true,
        &mut errs,
    );
    assert!(
        errs.iter().any(|e| e.contains("expected string")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("missing required agent")),
        "{errs:?}"
    );
    errs.clear();
    let ev = serde_json::json!({"type": "menu.updated", "data": {"restaurant_id": "r", "version": 1}, "extra": 1});
    validate(
        &d,
        d.pointer("/components/schemas/DashboardEvent").unwrap(),
        &ev,
        "e",
        true,
        &mut errs,
    );
    assert!(errs.iter().any(|e| e.contains("not in enum")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("not described")), "{errs:?}");
}
