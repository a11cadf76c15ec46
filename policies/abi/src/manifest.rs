//! The policy build manifest and `builtin:<name>` module references: the one place that knows
//! their shapes. `cargo xtask build-wasm` writes `manifest.json` next to the `<name>.wasm`
//! components; the policy host's directory source and the dashboard's seeding read it to turn a
//! tool's `builtin:<name>` reference into the module's sha256 (and file).
//!
//! Accepted manifest shapes: `{"modules": {...}}` or the map itself, where the map is
//! `name → "sha256"`, `name → {"sha256": "...", "path"|"file": "...", "tool": {...}}` (what the
//! build writes for a policy with a `tool.json`), or a list of `{"name", "sha256", "path",
//! "tool"}`. Module files default to `<manifest dir>/<name>.wasm`. `tool` is the policy's
//! [`ToolSpec`] (description and parameter schema for the voice agent), read from the `tool.json`
//! in its crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pulsara_core::agent::ToolSpec;
use serde_json::Value;

/// The manifest's file name in a policy module directory.
pub const FILE_NAME: &str = "manifest.json";

/// The prefix of a module reference that names a built policy instead of its hash.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The name in a `builtin:<name>` module reference; `None` for anything else (a hash).
pub fn builtin_name(reference: &str) -> Option<&str> {
    reference.strip_prefix(BUILTIN_PREFIX)
}

/// One built policy module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestModule {
    /// Lower-case hex sha256 of the module's bytes.
    pub sha256: String,
    /// The module file (absolute, or relative to the working directory when the manifest's
    /// directory was).
    pub path: PathBuf,
    /// What the voice agent needs to call it, when the policy has a `tool.json`.
    pub tool: Option<ToolSpec>,
}

/// A policy build manifest: built-in name → module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    modules: BTreeMap<String, ManifestModule>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
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
    /// Valid JSON in none of the accepted shapes (the message names the entry).
    #[error("{0}")]
    Shape(String),
}

impl Manifest {
    /// Reads the manifest at `path`; module files are relative to its directory.
    ///
    /// # Errors
    /// Unreadable file, invalid JSON, or an entry in none of the accepted shapes.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let raw = std::fs::read(path).map_err(|source| ManifestError::Io {
            path: path.into(),
            source,
        })?;
        let v: Value = serde_json::from_slice(&raw).map_err(|source| ManifestError::Json {
            path: path.into(),
            source,
        })?;
        Self::from_json(&v, path.parent().unwrap_or(Path::new(".")))
    }

    /// A manifest from its JSON; module files are relative to `dir`.
    ///
    /// # Errors
    /// [`ManifestError::Shape`] for an entry in none of the accepted shapes or without a valid
    /// sha256.
    pub fn from_json(v: &Value, dir: &Path) -> Result<Self, ManifestError> {
        let modules = v.get("modules").unwrap_or(v);
        let mut out = Manifest::default();
        let mut add = |name: &str, entry: &Value| -> Result<(), ManifestError> {
            let (sha, file, tool) = match entry {
                Value::String(s) => (s.clone(), None, None),
                Value::Object(o) => (
                    o.get("sha256")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    o.get("path")
                        .or_else(|| o.get("file"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    o.get("tool"),
                ),
                _ => {
                    return Err(ManifestError::Shape(format!(
                        "manifest entry {name:?} has an unknown shape"
                    )))
                }
            };
            let sha = sha.to_ascii_lowercase();
            if !pulsara_core::crypto::is_sha256_hex(&sha) {
                return Err(ManifestError::Shape(format!(
                    "manifest entry {name:?} has no valid sha256"
                )));
            }
            let tool = match tool {
                None => None,
                Some(t) => {
                    let spec: ToolSpec = serde_json::from_value(t.clone()).map_err(|e| {
                        ManifestError::Shape(format!("manifest entry {name:?} has a bad tool: {e}"))
                    })?;
                    spec.validate().map_err(|e| {
                        ManifestError::Shape(format!("manifest entry {name:?} has a bad tool: {e}"))
                    })?;
                    Some(spec)
                }
            };
            let file = file
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("{name}.wasm")));
            let path = if file.is_absolute() {
                file
            } else {
                dir.join(file)
            };
            out.modules.insert(
                name.to_owned(),
                ManifestModule {
                    sha256: sha,
                    path,
                    tool,
                },
            );
            Ok(())
        };
        match modules {
            Value::Object(map) => {
                for (name, entry) in map {
                    add(name, entry)?;
                }
            }
            Value::Array(list) => {
                for entry in list {
                    let name = entry.get("name").and_then(Value::as_str).ok_or_else(|| {
                        ManifestError::Shape("manifest list entry without a name".into())
                    })?;
                    add(name, entry)?;
                }
            }
            _ => {
                return Err(ManifestError::Shape(
                    "policy manifest must be a JSON object or list".into(),
                ))
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) module `name` with `sha256` and its tool specification, stored as
    /// `<dir>/<name>.wasm`.
    pub fn insert(&mut self, name: &str, sha256: &str, dir: &Path, tool: Option<ToolSpec>) {
        let module = ManifestModule {
            sha256: sha256.to_owned(),
            path: dir.join(format!("{name}.wasm")),
            tool,
        };
        self.modules.insert(name.to_owned(), module);
    }

    /// The manifest as the build writes it: `{name: sha256}` for a module without a tool
    /// specification, `{name: {"sha256", "tool"}}` with one; names sorted, pretty-printed.
    pub fn to_json(&self) -> String {
        let entries: BTreeMap<&str, Value> = self
            .modules
            .iter()
            .map(|(n, m)| {
                let entry = match &m.tool {
                    None => Value::String(m.sha256.clone()),
                    Some(t) => serde_json::json!({ "sha256": m.sha256, "tool": t }),
                };
                (n.as_str(), entry)
            })
            .collect();
        serde_json::to_string_pretty(&entries)
            .unwrap_or_else(|_| unreachable!("strings and tool specifications always serialise"))
    }

    /// Built-in module `name`.
    pub fn get(&self, name: &str) -> Option<&ManifestModule> {
        self.modules.get(name)
    }

    /// The module a `builtin:<name>` reference names; `None` for a hash or an unknown name.
    pub fn resolve(&self, reference: &str) -> Option<&ManifestModule> {
        builtin_name(reference).and_then(|name| self.get(name))
    }

    /// Built-in name → module, names sorted.
    pub fn modules(&self) -> &BTreeMap<String, ManifestModule> {
        &self.modules
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn builtin_references_name_a_module_and_hashes_do_not() {
        assert_eq!(builtin_name("builtin:take_order"), Some("take_order"));
        assert_eq!(builtin_name(A), None);
        assert_eq!(builtin_name("take_order"), None);
        let m = Manifest::from_json(&json!({ "take_order": A }), Path::new("/p")).unwrap();
        assert_eq!(m.resolve("builtin:take_order").unwrap().sha256, A);
        assert_eq!(m.resolve("builtin:book_table"), None);
        assert_eq!(m.resolve("take_order"), None);
        assert_eq!(m.resolve(A), None);
    }

    #[test]
    fn every_accepted_shape_reads_to_the_same_modules() {
        let dir = Path::new("/p");
        let upper = A.to_uppercase();
        let shapes = [
            json!({ "a": A }),
            json!({ "modules": { "a": A } }),
            json!({ "modules": { "a": { "sha256": upper } } }),
            json!({ "a": { "sha256": A, "path": "a.wasm" } }),
            json!({ "a": { "sha256": A, "file": "/p/a.wasm" } }),
            json!([{ "name": "a", "sha256": A, "path": "a.wasm" }]),
            json!({ "modules": [{ "name": "a", "sha256": A }] }),
        ];
        for shape in shapes {
            let m = Manifest::from_json(&shape, dir).unwrap();
            let want = ManifestModule {
                sha256: A.into(),
                path: PathBuf::from("/p/a.wasm"),
                tool: None,
            };
            assert_eq!(m.get("a"), Some(&want), "{shape}");
            assert_eq!(m.len(), 1);
        }
        let other =
            Manifest::from_json(&json!({ "a": { "sha256": A, "path": "out/x.wasm" } }), dir)
                .unwrap();
        assert_eq!(other.get("a").unwrap().path, PathBuf::from("/p/out/x.wasm"));
    }

    #[test]
    fn malformed_manifests_say_which_entry() {
        let dir = Path::new(".");
        for (bad, says) in [
            (json!({ "a": "abc" }), "\"a\" has no valid sha256"),
            (
                json!({ "a": { "path": "a.wasm" } }),
                "\"a\" has no valid sha256",
            ),
            (json!({ "a": 7 }), "\"a\" has an unknown shape"),
            (json!([{ "sha256": A }]), "without a name"),
            (json!("a"), "object or list"),
            (
                json!({ "a": { "sha256": A, "tool": { "description": "d" } } }),
                "\"a\" has a bad tool",
            ),
            (
                json!({ "a": { "sha256": A, "tool": { "description": "d", "parameters": { "type": "string" } } } }),
                "parameters.type",
            ),
        ] {
            let err = Manifest::from_json(&bad, dir).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn what_the_build_writes_reads_back() {
        let dir = Path::new("/out");
        let mut m = Manifest::default();
        let tool = ToolSpec {
            description: "Quote a price.".into(),
            parameters: json!({"type": "object", "properties": {}}),
            expects_response: true,
            response_timeout_secs: None,
        };
        m.insert("b", A, dir, Some(tool));
        m.insert("a", A, dir, None);
        let json = m.to_json();
        assert!(
            json.find("\"a\"").unwrap() < json.find("\"b\"").unwrap(),
            "{json}"
        );
        let back = Manifest::from_json(&serde_json::from_str(&json).unwrap(), dir).unwrap();
        assert_eq!(back, m);
        assert!(!back.is_empty());
    }

    #[test]
    fn reading_names_the_file() {
        let err = Manifest::read(Path::new("/nonexistent/manifest.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/manifest.json"),
            "{err}"
        );
    }
}
