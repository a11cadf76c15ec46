//! Where policy module bytes come from. Modules are addressed by the hex sha256 of their bytes;
//! a source may be untrusted (the host verifies every fetched module against its hash before use,
//! see [`crate::PolicyHost`]).
//!
//! Implementations: [`DirSource`] (a directory of `.wasm` files plus `manifest.json`, what `cargo
//! xtask build-wasm` writes to `target/policies`), [`MemorySource`] (tests, caches); the dashboard
//! client implements [`ModuleSource`] over `GET /v1/policies/{sha256}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use pulsara_core::crypto::sha256_hex;
use pulsara_policy_abi::manifest::{self, Manifest};
use thiserror::Error;

/// Why a source could not deliver a module.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SourceError {
    #[error("no module with this hash")]
    NotFound,
    #[error("{0}")]
    Unavailable(String),
}

/// A store of policy modules by sha256.
///
/// Called from blocking threads (the host itself is synchronous; the bridge runs it on
/// `spawn_blocking`), so an implementation may block on I/O.
pub trait ModuleSource: Send + Sync {
    /// The bytes of module `sha256` (lower-case hex). Not trusted: the host re-hashes them.
    ///
    /// # Errors
    /// [`SourceError::NotFound`] when the source has no such module, otherwise `Unavailable`.
    fn fetch(&self, sha256: &str) -> Result<Vec<u8>, SourceError>;

    /// Resolves a `builtin:<name>` module reference (example restaurants before the dashboard
    /// seeds real hashes) to a sha256. `None` when the source does not know the name.
    fn resolve_builtin(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Modules held in memory.
#[derive(Default)]
pub struct MemorySource {
    modules: RwLock<HashMap<String, Vec<u8>>>,
    builtins: RwLock<HashMap<String, String>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` under their own hash, returning it.
    pub fn insert(&self, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        self.insert_as(&sha, bytes);
        sha
    }

    /// Adds `bytes` under `sha256` without checking (tests use this to plant a mismatch).
    pub fn insert_as(&self, sha256: &str, bytes: Vec<u8>) {
        if let Ok(mut m) = self.modules.write() {
            m.insert(sha256.to_owned(), bytes);
        }
    }

    /// Registers `builtin:<name>` → `sha256`.
    pub fn name_builtin(&self, name: &str, sha256: &str) {
        if let Ok(mut m) = self.builtins.write() {
            m.insert(name.to_owned(), sha256.to_owned());
        }
    }
}

impl ModuleSource for MemorySource {
    fn fetch(&self, sha256: &str) -> Result<Vec<u8>, SourceError> {
        let m = self.modules.read().map_err(|_| SourceError::Unavailable("lock poisoned".into()))?;
        m.get(sha256).cloned().ok_or(SourceError::NotFound)
    }

    fn resolve_builtin(&self, name: &str) -> Option<String> {
        self.builtins.read().ok()?.get(name).cloned()
    }
}

/// A directory of modules: every `*.wasm` file is indexed by the hash of its bytes when the
/// source is opened, and `manifest.json` ([`pulsara_policy_abi::manifest`]) names the built-ins.
pub struct DirSource {
    dir: PathBuf,
    by_hash: HashMap<String, PathBuf>,
    manifest: Manifest,
}

/// Files larger than this are not policy modules.
const MAX_MODULE_BYTES: u64 = 32 << 20;

impl DirSource {
    /// Indexes `dir`.
    ///
    /// # Errors
    /// When the directory cannot be read or `manifest.json` exists but is not a manifest.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, SourceError> {
        let dir = dir.as_ref().to_path_buf();
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            SourceError::Unavailable(format!(
                "cannot read policy module directory {}: {e} (run `cargo xtask build-wasm`)",
                dir.display()
            ))
        })?;
        let mut by_hash = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_wasm = path.extension().is_some_and(|e| e == "wasm");
            let small = entry.metadata().map(|m| m.is_file() && m.len() <= MAX_MODULE_BYTES).unwrap_or(false);
            if is_wasm && small {
                if let Ok(bytes) = std::fs::read(&path) {
                    by_hash.insert(sha256_hex(&bytes), path);
                }
            }
        }
        let manifest_path = dir.join(manifest::FILE_NAME);
        let manifest = match Manifest::read(&manifest_path) {
            Ok(m) => m,
            Err(manifest::ManifestError::Io { .. }) => Manifest::default(),
            Err(e) => return Err(SourceError::Unavailable(e.to_string())),
        };
        Ok(Self { dir, by_hash, manifest })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest: built-in name → module.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

impl ModuleSource for DirSource {
    fn fetch(&self, sha256: &str) -> Result<Vec<u8>, SourceError> {
        let path = self.by_hash.get(sha256).ok_or(SourceError::NotFound)?;
        std::fs::read(path).map_err(|e| SourceError::Unavailable(format!("{}: {e}", path.display())))
    }

    fn resolve_builtin(&self, name: &str) -> Option<String> {
        self.manifest.get(name).map(|m| m.sha256.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_source_indexes_by_content_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"module a").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let sha = sha256_hex(b"module a");
        std::fs::write(dir.path().join("manifest.json"), format!("{{\"a\":\"{sha}\"}}")).unwrap();
        let src = DirSource::open(dir.path()).unwrap();
        assert_eq!(src.fetch(&sha).unwrap(), b"module a");
        assert_eq!(src.fetch(&sha256_hex(b"ignored")), Err(SourceError::NotFound));
        assert_eq!(src.resolve_builtin("a"), Some(sha));
        assert!(DirSource::open(dir.path().join("missing")).is_err());
        std::fs::write(dir.path().join("manifest.json"), "{\"a\": \"not a hash\"}").unwrap();
        assert!(DirSource::open(dir.path()).is_err());
    }
}
