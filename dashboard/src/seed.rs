//! Seeding the embedded dashboard from a directory of restaurant files:
//! `restaurants/<id>/restaurant.json` (RestaurantConfig) and `restaurants/<id>/knowledge_base.json`
//! (KnowledgeBase).
//!
//! Tool modules may be referenced as `"builtin:<name>"`; they are resolved through the policy
//! build manifest (`target/policies/manifest.json`, written by `cargo xtask build-wasm`) to the
//! module's sha256, and the module bytes are stored so `GET /v1/policies/{sha256}` serves them,
//! with the tool specification the manifest carries (`GET /v1/policies/{sha256}/tool`).
//! The bytes are hashed here and must match the manifest. Every restaurant read requests an
//! agent sync ([`crate::agent_sync`]).
//!
//! Every configuration must pass [`RestaurantConfig::validate`] (the ElevenLabs agent language and
//! the Twilio `<Say>` locale and voice); the error names the file and the field.
//!
//! A restaurant already in the database at the same or a newer version is left alone, so admin
//! edits survive restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pulsara_core::config::{KnowledgeBase, RestaurantConfig};
use pulsara_policy_abi::manifest::{builtin_name, Manifest, ManifestError};

use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Manifest(String),
    #[error("restaurant {restaurant:?}: tool {tool:?} references {reference:?}, which the policy manifest does not provide (run `cargo xtask build-wasm`)")]
    UnresolvedModule {
        restaurant: String,
        tool: String,
        reference: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the policy build manifest ([`pulsara_policy_abi::manifest`] has the accepted shapes).
///
/// # Errors
/// Unreadable or malformed manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest, SeedError> {
    Manifest::read(path).map_err(|e| match e {
        ManifestError::Io { path, source } => SeedError::Io { path, source },
        ManifestError::Json { path, source } => SeedError::Json { path, source },
        ManifestError::Shape(message) => SeedError::Manifest(message),
    })
}

#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// The policy manifest; `None` means `builtin:` references cannot be resolved.
    pub manifest: Option<PathBuf>,
    /// When false, tools whose module cannot be resolved are dropped with a warning instead of
    /// failing the seed (useful before the policy modules are built).
    pub strict: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Restaurants written (new or newer on disk).
    pub seeded: Vec<String>,
    /// Restaurants left as stored (same or newer version in the database).
    pub kept: Vec<String>,
    /// Policy modules stored: (name, sha256).
    pub modules: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SeedError> {
    let raw = std::fs::read(path).map_err(|source| SeedError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&raw).map_err(|source| SeedError::Json {
        path: path.into(),
        source,
    })
}

/// Seeds `store` from `dir` (see the module docs).
///
/// # Errors
/// Unreadable/invalid files, unresolvable modules (strict mode), hash mismatches, number
/// conflicts, database failures.
pub fn seed_from_dir(
    store: &Store,
    dir: &Path,
    opts: &SeedOptions,
    now: i64,
) -> Result<SeedReport, SeedError> {
    let manifest = match &opts.manifest {
        Some(p) if p.exists() => read_manifest(p)?,
        Some(p) if opts.strict => {
            return Err(SeedError::Manifest(format!(
                "policy manifest {} does not exist; run `cargo xtask build-wasm` first",
                p.display()
            )))
        }
        _ => Manifest::default(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| SeedError::Io {
            path: dir.into(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("restaurant.json").is_file())
        .collect();
    entries.sort();
    let mut report = SeedReport::default();
    let mut stored_modules: BTreeMap<String, String> = BTreeMap::new();
    for rdir in entries {
        let cfg_path = rdir.join("restaurant.json");
        let mut cfg: RestaurantConfig = read_json(&cfg_path)?;
        cfg.validate().map_err(|e| SeedError::Invalid {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?;
        let mut tools = Vec::with_capacity(cfg.tools.len());
        for mut tool in std::mem::take(&mut cfg.tools) {
            if let Some(name) = builtin_name(&tool.module_sha256) {
                let resolved = match stored_modules.get(name) {
                    Some(sha) => Some(sha.clone()),
                    None => match manifest.get(name) {
                        Some(m) => {
                            let bytes = std::fs::read(&m.path).map_err(|source| SeedError::Io {
                                path: m.path.clone(),
                                source,
                            })?;
                            let sha = pulsara_core::crypto::sha256_hex(&bytes);
                            if sha != m.sha256 {
                                return Err(SeedError::Invalid {
                                    path: m.path.clone(),
                                    message: format!(
                                        "module hashes to {sha}, manifest says {}",
                                        m.sha256
                                    ),
                                });
                            }
                            store.put_policy(name, &bytes)?;
                            if let Some(spec) = &m.tool {
                                store.put_policy_tool(&sha, spec)?;
                            }
                            stored_modules.insert(name.to_owned(), sha.clone());
                            report.modules.push((name.to_owned(), sha.clone()));
                            Some(sha)
                        }
                        None => None,
                    },
                };
                match resolved {
                    Some(sha) => tool.module_sha256 = sha,
                    None if opts.strict => {
                        return Err(SeedError::UnresolvedModule {
                            restaurant: cfg.id.clone(),
                            tool: tool.name.clone(),
                            reference: tool.module_sha256.clone(),
                        })
                    }
                    None => {
                        report.warnings.push(format!(
                            "restaurant {}: tool {} dropped, module {} not built",
                            cfg.id, tool.name, tool.module_sha256
                        ));
                        continue;
                    }
                }
            } else if !pulsara_core::crypto::is_sha256_hex(&tool.module_sha256.to_ascii_lowercase())
            {
                return Err(SeedError::Invalid {
                    path: cfg_path.clone(),
                    message: format!(
                        "tool {:?}: module_sha256 must be 64 hex chars or builtin:<name>",
                        tool.name
                    ),
                });
            }
            tools.push(tool);
        }
        cfg.tools = tools;
        let stored_version = store.restaurant(&cfg.id)?.map(|c| c.version);
        if stored_version.is_some_and(|v| v >= cfg.version) {
            report.kept.push(cfg.id.clone());
        } else {
            store.upsert_restaurant(&cfg, now)?;
            report.seeded.push(cfg.id.clone());
        }
        // Kept ones too: the policy build may have changed a tool's specification.
        store.request_agent_sync(&cfg.id, now)?;
        let kb_path = rdir.join("knowledge_base.json");
        if kb_path.is_file() {
            let kb: KnowledgeBase = read_json(&kb_path)?;
            if kb.restaurant_id != cfg.id {
                return Err(SeedError::Invalid {
                    path: kb_path,
                    message: format!(
                        "restaurant_id {:?} differs from {:?}",
                        kb.restaurant_id, cfg.id
                    ),
                });
            }
            let stored_kb = store.knowledge_base(&cfg.id)?.map(|k| k.version);
            if stored_kb.is_none_or(|v| v < kb.version) {
                store.upsert_knowledge_base(&kb)?;
            }
        } else {
            report
                .warnings
                .push(format!("restaurant {}: no knowledge_base.json", cfg.id));
        }
    }
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn restaurant(dir: &Path, version: u64, tool_ref: &str) {
        restaurant_with_agent(
            dir,
            version,
            tool_ref,
            serde_json::json!({"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "hi"}),
        );
    }

    fn restaurant_with_agent(dir: &Path, version: u64, tool_ref: &str, agent: Value) {
        let r = dir.join("r1");
        std::fs::create_dir_all(&r).unwrap();
        let cfg = serde_json::json!({
            "id": "r1", "version": version, "name": "R1", "phone_numbers": ["+15550001111"],
            "time_zone": "UTC", "hours": {"weekly": []},
            "after_hours": {"mode": "message", "message": "closed"},
            "agent": agent,
            "tools": [{"name": "take_order", "module_sha256": tool_ref}]
        });
        std::fs::write(r.join("restaurant.json"), cfg.to_string()).unwrap();
        std::fs::write(
            r.join("knowledge_base.json"),
            r#"{"restaurant_id":"r1","version":1}"#,
        )
        .unwrap();
    }

    /// The policy build writes a flat `{name: sha256}` manifest next to `<name>.wasm`.
    #[test]
    fn flat_manifest_resolves_builtins_and_checks_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let (rdir, pdir) = (tmp.path().join("restaurants"), tmp.path().join("policies"));
        std::fs::create_dir_all(&pdir).unwrap();
        restaurant(&rdir, 1, "builtin:take_order");
        let module = b"\0asm\x01\0\0\0take_order".to_vec();
        let sha = pulsara_core::crypto::sha256_hex(&module);
        std::fs::write(pdir.join("take_order.wasm"), &module).unwrap();
        let manifest = pdir.join("manifest.json");
        std::fs::write(
            &manifest,
            serde_json::json!({ "take_order": sha }).to_string(),
        )
        .unwrap();
        let store = Store::open_in_memory().unwrap();
        let opts = SeedOptions {
            manifest: Some(manifest.clone()),
            strict: true,
        };
        let report = seed_from_dir(&store, &rdir, &opts, 0).unwrap();
        assert_eq!(report.seeded, vec!["r1"]);
        assert_eq!(
            store.restaurant("r1").unwrap().unwrap().tools[0].module_sha256,
            sha
        );
        assert_eq!(store.policy(&sha).unwrap().unwrap(), module);
        // Same version again: kept (admin edits survive restarts).
        assert_eq!(
            seed_from_dir(&store, &rdir, &opts, 0).unwrap().kept,
            vec!["r1"]
        );
        // Bytes that do not match the manifest are refused.
        std::fs::write(pdir.join("take_order.wasm"), b"\0asm tampered").unwrap();
        let err = seed_from_dir(&Store::open_in_memory().unwrap(), &rdir, &opts, 0).unwrap_err();
        assert!(err.to_string().contains("manifest says"), "{err}");
    }

    #[test]
    fn a_config_with_unusable_languages_is_refused_naming_file_and_field() {
        let tmp = tempfile::tempdir().unwrap();
        let rdir = tmp.path().join("restaurants");
        let lenient = SeedOptions {
            manifest: None,
            strict: false,
        };
        let agent = |extra: Value| {
            let mut a = serde_json::json!({"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "ciao"});
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            a
        };
        for (extra, field) in [
            // A Twilio locale where the ElevenLabs code belongs.
            (serde_json::json!({"language": "it-IT"}), "agent.language"),
            // The ElevenLabs code where the Twilio locale belongs.
            (
                serde_json::json!({"language": "it", "twilio_say": {"language": "it"}}),
                "agent.twilio_say.language",
            ),
            (
                serde_json::json!({"language": "it", "twilio_say": {"voice": "Polly.Mizuki"}}),
                "agent.twilio_say.voice",
            ),
        ] {
            restaurant_with_agent(&rdir, 1, "builtin:take_order", agent(extra));
            let store = Store::open_in_memory().unwrap();
            let err = seed_from_dir(&store, &rdir, &lenient, 0).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("restaurant.json") && text.contains(field),
                "{field}: {text}"
            );
            assert!(store.restaurant("r1").unwrap().is_none());
        }
        restaurant_with_agent(
            &rdir,
            1,
            "builtin:take_order",
            agent(
                serde_json::json!({"language": "it", "twilio_say": {"language": "it-IT", "voice": "Polly.Bianca"}}),
            ),
        );
        let store = Store::open_in_memory().unwrap();
        seed_from_dir(&store, &rdir, &lenient, 0).unwrap();
        let cfg = store.restaurant("r1").unwrap().unwrap();
        assert_eq!(cfg.say_voice().language(), "it-IT");
    }

    #[test]
    fn unresolved_builtins_fail_strict_and_are_dropped_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let rdir = tmp.path().join("restaurants");
        restaurant(&rdir, 1, "builtin:take_order");
        let missing = tmp.path().join("none/manifest.json");
        let strict = SeedOptions {
            manifest: Some(missing.clone()),
            strict: true,
        };
        let err = seed_from_dir(&Store::open_in_memory().unwrap(), &rdir, &strict, 0).unwrap_err();
        assert!(err.to_string().contains("cargo xtask build-wasm"), "{err}");
        let lenient = SeedOptions {
            manifest: Some(missing),
            strict: false,
        };
        let store = Store::open_in_memory().unwrap();
        let report = seed_from_dir(&store, &rdir, &lenient, 0).unwrap();
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("take_order dropped")),
            "{report:?}"
        );
        assert!(store.restaurant("r1").unwrap().unwrap().tools.is_empty());
        // A tool reference that is neither a hash nor builtin:<name> is a clear error.
        restaurant(&rdir, 2, "latest");
        let err = seed_from_dir(&store, &rdir, &lenient, 0).unwrap_err();
        assert!(err.to_string().contains("64 hex chars"), "{err}");
    }
}
