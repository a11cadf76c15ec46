//! Who is calling the dashboard API: signed requests (HMAC over method, path+query, timestamp,
//! nonce and body hash; `pulsara_core::request_auth`) from edges and bridges holding a signing key,
//! and/or `Authorization: Bearer <API key>` ([`crate::keys`]). Each credential carries one scope;
//! each route accepts a set of scopes.
//!
//! Rules: at least one credential must be present; every credential presented must be valid
//! (a bad signature is not rescued by a good API key); the request passes when one valid
//! credential has an accepted scope. Nonces are remembered in memory (bounded
//! [`ReplayGuard`]) and in SQLite, so a replay is refused even across a restart.

use std::sync::Mutex;

use http::HeaderMap;
use pulsara_core::request_auth::{self, RequestAuthError, TOLERANCE_SECS};
use pulsara_core::secret::Secret;
use pulsara_core::webhooks::ReplayGuard;

use crate::keys::{KeyRejection, Scope};
use crate::store::{Store, StoreError};

/// Nonces remembered in memory (per process); beyond this the oldest are dropped and SQLite is
/// still the authority.
pub const NONCE_MEMORY: usize = 200_000;

/// A shared-secret signing key an edge or bridge signs with.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    pub scope: Scope,
    pub secret: Secret,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DASHBOARD_SIGNING_KEYS is malformed: {0} (expected id:scope:secret[,id:scope:secret…])")]
pub struct KeyRingError(String);

/// The signing keys the dashboard accepts.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys(Vec<SigningKey>);

impl SigningKeys {
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self(keys)
    }

    /// Parses `id:scope:secret[,id:scope:secret…]` (the `DASHBOARD_SIGNING_KEYS` setting).
    ///
    /// # Errors
    /// A malformed entry, an unknown scope, an empty secret or a duplicate id. The message names
    /// the entry by position and id only.
    pub fn parse(raw: &Secret) -> Result<Self, KeyRingError> {
        let mut out: Vec<SigningKey> = Vec::new();
        for (i, entry) in raw
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let mut parts = entry.splitn(3, ':');
            let (Some(id), Some(scope), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(KeyRingError(format!(
                    "entry {} has fewer than three parts",
                    i + 1
                )));
            };
            let scope: Scope = scope
                .parse()
                .map_err(|e| KeyRingError(format!("entry {} ({id}): {e}", i + 1)))?;
            if id.is_empty() || secret.is_empty() {
                return Err(KeyRingError(format!(
                    "entry {} has an empty id or secret",
                    i + 1
                )));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(KeyRingError(format!("key id {id:?} appears twice")));
            }
            out.push(SigningKey {
                id: id.to_owned(),
                scope,
                secret: Secret::new(secret),
            });
        }
        Ok(Self(out))
    }

    pub fn get(&self, id: &str) -> Option<&SigningKey> {
        self.0.iter().find(|k| k.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Signing key id or API key id.
    pub key_id: String,
    pub scope: Scope,
    pub via: &'static str,
}

/// Why a request was refused; maps to 401/403/503 with a JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("request is not authenticated: sign it (X-Pulsara-* headers) or send Authorization: Bearer <API key>")]
    Missing,
    #[error("{0}")]
    Signature(#[from] RequestAuthError),
    #[error("{0}")]
    ApiKey(#[from] KeyRejection),
    #[error("Authorization header must be \"Bearer <API key>\"")]
    BadAuthorizationHeader,
    #[error("credential scope {have} may not call this endpoint (needs one of: {need})")]
    Forbidden { have: String, need: String },
    #[error("authentication storage failed: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::Signature(e) => match e {
                RequestAuthError::MissingHeader(_) => "missing_signature_header",
                RequestAuthError::MalformedHeader(_) => "malformed_signature_header",
                RequestAuthError::BadTimestamp => "bad_timestamp",
                RequestAuthError::Stale(_) => "stale_timestamp",
                RequestAuthError::Future(_) => "future_timestamp",
                RequestAuthError::UnknownKey(_) => "unknown_key",
                RequestAuthError::BadSignature => "bad_signature",
                RequestAuthError::ReplayedNonce => "replayed_nonce",
            },
            AuthError::ApiKey(KeyRejection::Malformed) => "malformed_api_key",
            AuthError::ApiKey(KeyRejection::Unknown) => "unknown_api_key",
            AuthError::ApiKey(KeyRejection::Revoked) => "revoked_api_key",
            AuthError::ApiKey(KeyRejection::Expired) => "expired_api_key",
            AuthError::BadAuthorizationHeader => "bad_authorization_header",
            AuthError::Forbidden { .. } => "forbidden_scope",
            AuthError::Store(_) => "auth_storage_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            AuthError::Store(_) => 503,
            _ => 401,
        }
    }
}

/// The verifier held by the server.
pub struct Authenticator {
    keys: SigningKeys,
    store: Store,
    nonces: Mutex<ReplayGuard>,
}

impl Authenticator {
    pub fn new(keys: SigningKeys, store: Store) -> Self {
        Self {
            keys,
            store,
            nonces: Mutex::new(ReplayGuard::new(NONCE_MEMORY)),
        }
    }

    /// Authenticates a request and checks its scope against `allowed`. Blocking: a signed
    /// request's nonce is written to SQLite, so async callers run this in `spawn_blocking`.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub fn check(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
        allowed: &[Scope],
    ) -> Result<Principal, AuthError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let signed = [
            request_auth::HEADER_KEY_ID,
            request_auth::HEADER_SIGNATURE,
            request_auth::HEADER_TIMESTAMP,
            request_auth::HEADER_NONCE,
        ]
        .iter()
        .any(|h| headers.contains_key(*h));
        let bearer = headers.get(http::header::AUTHORIZATION);

        let mut principals = Vec::new();
        if signed {
            let key_id = {
                let mut guard = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
                request_auth::verify(
                    |id| self.keys.get(id).map(|k| k.secret.clone()),
                    method,
                    path_and_query,
                    &header,
                    body,
                    now,
                    &mut guard,
                )?
            };
            let nonce = header(request_auth::HEADER_NONCE).unwrap_or_default();
            if !self
                .store
                .remember_nonce(&key_id, nonce.trim(), now, 2 * TOLERANCE_SECS + 2)?
            {
                return Err(RequestAuthError::ReplayedNonce.into());
            }
            let scope = self
                .keys
                .get(&key_id)
                .map(|k| k.scope)
                .unwrap_or(Scope::Edge);
            principals.push(Principal {
                key_id,
                scope,
                via: "signature",
            });
        }
        if let Some(v) = bearer {
            let v = v.to_str().map_err(|_| AuthError::BadAuthorizationHeader)?;
            let key = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or(AuthError::BadAuthorizationHeader)?;
            let info = self.store.authenticate_api_key(key.trim(), now)??;
            principals.push(Principal {
                key_id: info.id,
                scope: info.scope,
                via: "api_key",
            });
        }
        if principals.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(p) = principals.iter().find(|p| allowed.contains(&p.scope)) {
            return Ok(p.clone());
        }
        Err(AuthError::Forbidden {
            have: principals
                .iter()
                .map(|p| p.scope.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            need: allowed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ring_parses_and_errors_do_not_leak_secrets() {
        let ring = SigningKeys::parse(&Secret::new("edge1:edge:s3cretA, bridge1:bridge:s3:cretB"))
            .unwrap();
        assert_eq!(ring.get("edge1").unwrap().scope, Scope::Edge);
        assert_eq!(ring.get("bridge1").unwrap().secret.expose(), "s3:cretB");
        for bad in [
            "x:edge",
            "x:root:topsecret",
            "x:edge:topsecret,x:edge:topsecret2",
            ":edge:topsecret",
        ] {
            let err = SigningKeys::parse(&Secret::new(bad))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("topsecret"), "{err}");
        }
    }
}
