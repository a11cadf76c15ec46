//! On-disk cache of precompiled components, so a restart deserialises modules instead of
//! recompiling them. Entries are keyed by the module's sha256 under a directory named after the
//! engine's configuration fingerprint (wasmtime version, compiler settings, fuel/epoch flags): an
//! artefact compiled under another configuration is never offered to this engine.
//!
//! Each artefact `<sha256>.cwasm` has a sibling `<sha256>.cwasm.sha256` holding the artefact's
//! own digest, checked before the artefact is handed to wasmtime: precompiled code is trusted by
//! the engine, so a truncated or altered file must be refused (it is then recompiled).

use std::path::{Path, PathBuf};

use pulsara_core::crypto::sha256_hex;

/// A directory of precompiled artefacts for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Uses `<root>/<fingerprint>/`, creating it.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(root: &Path, fingerprint: &str) -> std::io::Result<Self> {
        let dir = root.join(fingerprint);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, module_sha256: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{module_sha256}.cwasm")), self.dir.join(format!("{module_sha256}.cwasm.sha256")))
    }

    /// The verified artefact for `module_sha256`, or `None` (missing, unreadable or corrupt).
    pub fn get(&self, module_sha256: &str) -> Option<Vec<u8>> {
        let (art, sum) = self.paths(module_sha256);
        let expected = std::fs::read_to_string(sum).ok()?;
        let bytes = std::fs::read(&art).ok()?;
        if sha256_hex(&bytes) != expected.trim() {
            tracing::warn!(module = module_sha256, path = %art.display(), "precompiled artefact is corrupt; recompiling");
            return None;
        }
        Some(bytes)
    }

    /// Stores an artefact (write to a temporary file, then rename, so readers never see half).
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn put(&self, module_sha256: &str, artefact: &[u8]) -> std::io::Result<()> {
        let (art, sum) = self.paths(module_sha256);
        let tmp = self.dir.join(format!("{module_sha256}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, artefact)?;
        std::fs::rename(&tmp, &art)?;
        let tmp_sum = self.dir.join(format!("{module_sha256}.sha256.{}.tmp", std::process::id()));
        std::fs::write(&tmp_sum, sha256_hex(artefact))?;
        std::fs::rename(&tmp_sum, &sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(root.path(), "fp1").unwrap();
        assert!(cache.get("abc").is_none());
        cache.put("abc", b"compiled").unwrap();
        assert_eq!(cache.get("abc").as_deref(), Some(&b"compiled"[..]));
        std::fs::write(cache.dir().join("abc.cwasm"), b"compiled but altered").unwrap();
        assert!(cache.get("abc").is_none());
        let other = ArtifactCache::open(root.path(), "fp2").unwrap();
        assert!(other.get("abc").is_none(), "another engine configuration has its own entries");
    }
}
