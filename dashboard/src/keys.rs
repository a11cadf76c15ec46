//! API keys for the dashboard API: created, listed, revoked and rotated by `pulsara keys …`,
//! stored only as hashes, each with one scope (`edge`, `bridge`, `admin`).
//!
//! Key format: `pk_<id>_<secret>` where `<id>` is 12 random hex characters (the lookup handle,
//! not secret) and `<secret>` is 32 random bytes in base64url. The database keeps
//! `sha256(whole key)` and compares it in constant time.
//!
//! Why SHA-256 and not argon2: argon2/bcrypt exist to slow down guessing of *low-entropy*
//! passwords. These keys carry 256 bits from the OS RNG, so no offline guessing is feasible
//! whatever the hash; a memory-hard hash would only add ~50 ms and megabytes of RAM to *every*
//! API request, turning authentication into a denial-of-service lever.
//!
//! Rotation creates a new key with the same scope and label and lets the old one live on for a
//! grace period (`expires_at`), so clients can be redeployed without an outage.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pulsara_core::secret::Secret;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::store::{db, Store, StoreError};

/// Who a key (or a signing key) speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Edge,
    Bridge,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Edge => "edge",
            Scope::Bridge => "bridge",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edge" => Ok(Scope::Edge),
            "bridge" => Ok(Scope::Bridge),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}; use edge, bridge or admin"
            )),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly created key: the only time its full value exists outside the caller's hands.
#[derive(Debug)]
pub struct CreatedKey {
    pub id: String,
    pub scope: Scope,
    /// Show once, then forget. `Debug` redacts it.
    pub key: Secret,
}

/// A stored key as listed (no secret material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub scope: Scope,
    pub label: String,
    pub created_at: i64,
    /// Set on a rotated key: it stops working at this time.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub rotated_to: Option<String>,
}

impl KeyInfo {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// Why a presented key was refused. Messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    #[error("API key is malformed; expected pk_<id>_<secret>")]
    Malformed,
    #[error("API key is not known")]
    Unknown,
    #[error("API key has been revoked")]
    Revoked,
    #[error("API key has expired (it was rotated; use the new key)")]
    Expired,
}

fn new_key() -> (String, String) {
    let id = pulsara_core::random::hex_token(6);
    let secret = pulsara_core::random::bytes::<32>();
    let key = format!("pk_{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    (id, key)
}

fn parse_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("pk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32)
        .then_some(id)
}

fn row_to_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    let scope: String = r.get(1)?;
    Ok(KeyInfo {
        id: r.get(0)?,
        scope: scope.parse().unwrap_or(Scope::Edge),
        label: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        rotated_to: r.get(6)?,
    })
}

const INFO_COLS: &str = "id, scope, label, created_at, expires_at, revoked_at, rotated_to";

impl Store {
    /// Creates a key; the returned value is the only copy of the key.
    pub fn create_api_key(
        &self,
        scope: Scope,
        label: &str,
        now: i64,
    ) -> Result<CreatedKey, StoreError> {
        let (id, key) = new_key();
        self.lock()
            .execute(
                "INSERT INTO api_keys (id, scope, label, key_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, scope.as_str(), label, pulsara_core::crypto::sha256_hex(key.as_bytes()), now],
            )
            .map_err(db("create API key"))?;
        Ok(CreatedKey {
            id,
            scope,
            key: Secret::new(key),
        })
    }

    pub fn list_api_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare(&format!(
                "SELECT {INFO_COLS} FROM api_keys ORDER BY created_at, id"
            ))
            .map_err(db("list API keys"))?;
        let rows = st.query_map([], row_to_info).map_err(db("list API keys"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(db("list API keys"))
    }

    /// Revokes a key at once.
    ///
    /// # Errors
    /// `NotFound` when no key has this id.
    pub fn revoke_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now],
            )
            .map_err(db("revoke API key"))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("API key {id:?}")));
        }
        Ok(())
    }

    /// Issues a replacement for key `id` (same scope and label); the old key keeps working for
    /// `grace_secs`, then expires.
    ///
    /// # Errors
    /// `NotFound` for an unknown id, `Invalid` for a revoked or already expired key.
    pub fn rotate_api_key(
        &self,
        id: &str,
        grace_secs: i64,
        now: i64,
    ) -> Result<CreatedKey, StoreError> {
        let old: KeyInfo = self
            .lock()
            .query_row(
                &format!("SELECT {INFO_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                row_to_info,
            )
            .optional()
            .map_err(db("read API key"))?
            .ok_or_else(|| StoreError::NotFound(format!("API key {id:?}")))?;
        if !old.is_active(now) {
            return Err(StoreError::Invalid(format!(
                "API key {id:?} is revoked or expired; create a new one"
            )));
        }
        let created = self.create_api_key(old.scope, &old.label, now)?;
        self.lock()
            .execute(
                "UPDATE api_keys SET expires_at = ?2, rotated_to = ?3 WHERE id = ?1",
                params![id, now + grace_secs.max(0), created.id],
            )
            .map_err(db("expire rotated API key"))?;
        Ok(created)
    }

    /// Checks a presented key. Returns the key's id and scope.
    pub fn authenticate_api_key(
        &self,
        key: &str,
        now: i64,
    ) -> Result<Result<KeyInfo, KeyRejection>, StoreError> {
        let Some(id) = parse_id(key) else {
            return Ok(Err(KeyRejection::Malformed));
        };
        let row: Option<(KeyInfo, String)> = self
            .lock()
            .query_row(
                &format!("SELECT {INFO_COLS}, key_hash FROM api_keys WHERE id = ?1"),
                [id],
                |r| Ok((row_to_info(r)?, r.get(7)?)),
            )
            .optional()
            .map_err(db("read API key"))?;
        let Some((info, hash)) = row else {
            return Ok(Err(KeyRejection::Unknown));
        };
        let presented = pulsara_core::crypto::sha256_hex(key.as_bytes());
        if !pulsara_core::crypto::ct_eq(presented.as_bytes(), hash.as_bytes()) {
            return Ok(Err(KeyRejection::Unknown));
        }
        if info.revoked_at.is_some() {
            return Ok(Err(KeyRejection::Revoked));
        }
        if info.expires_at.is_some_and(|e| now >= e) {
            return Ok(Err(KeyRejection::Expired));
        }
        Ok(Ok(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let store = Store::open_in_memory().unwrap();
        let k = store
            .create_api_key(Scope::Bridge, "eu bridge", 100)
            .unwrap();
        assert!(!format!("{k:?}").contains(k.key.expose()));
        let info = store
            .authenticate_api_key(k.key.expose(), 101)
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.id.as_str(), info.scope),
            (k.id.as_str(), Scope::Bridge)
        );
        // Tampered secret with the right id.
        let mut bad = k.key.expose().to_owned();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            store.authenticate_api_key(&bad, 101).unwrap(),
            Err(KeyRejection::Unknown)
        );
        assert_eq!(
            store.authenticate_api_key("Bearer nonsense", 101).unwrap(),
            Err(KeyRejection::Malformed)
        );
        store.revoke_api_key(&k.id, 102).unwrap();
        assert_eq!(
            store.authenticate_api_key(k.key.expose(), 103).unwrap(),
            Err(KeyRejection::Revoked)
        );
        assert!(matches!(
            store.revoke_api_key("nope", 1),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn only_hashes_are_stored() {
        let store = Store::open_in_memory().unwrap();
        let k = store.create_api_key(Scope::Admin, "ops", 1).unwrap();
        let conn = store.lock();
        let dump: Vec<String> = conn
            .prepare("SELECT id || scope || label || key_hash FROM api_keys")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let secret_part = k.key.expose().rsplit('_').next().unwrap();
        assert!(dump.iter().all(|row| !row.contains(secret_part)));
    }

    #[test]
    fn rotation_keeps_old_key_for_grace_period() {
        let store = Store::open_in_memory().unwrap();
        let old = store.create_api_key(Scope::Edge, "edge", 1_000).unwrap();
        let new = store.rotate_api_key(&old.id, 3_600, 2_000).unwrap();
        assert_eq!(new.scope, Scope::Edge);
        assert!(store
            .authenticate_api_key(old.key.expose(), 5_599)
            .unwrap()
            .is_ok());
        assert_eq!(
            store.authenticate_api_key(old.key.expose(), 5_600).unwrap(),
            Err(KeyRejection::Expired)
        );
        assert!(store
            .authenticate_api_key(new.key.expose(), 9_999)
            .unwrap()
            .is_ok());
        let list = store.list_api_keys().unwrap();
        let o = list.iter().find(|i| i.id == old.id).unwrap();
        assert_eq!(o.rotated_to.as_deref(), Some(new.id.as_str()));
        assert_eq!(o.expires_at, Some(5_600));
        // A rotated-and-expired key cannot be rotated again.
        assert!(store.rotate_api_key(&old.id, 10, 6_000).is_err());
    }
}
