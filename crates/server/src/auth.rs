//! Credentials: random tokens and secrets (256 bits), stored only as SHA-256 hashes, and the
//! `Auth` extractor that turns `Authorization: Bearer <token>` into a `Principal`.
//!
//! Tokens are looked up by their hash, so the lookup never compares secret bytes; client
//! secrets are compared hash to hash in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use leasehold_store::{Principal, TokenHash};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// A new random token: `prefix` + 256 random bits, base64url.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new public identifier (not secret): `prefix` + 128 random bits, hex.
pub fn new_public_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn secret_matches(presented: &str, stored: &TokenHash) -> bool {
    hash_token(presented).ct_eq(stored).into()
}

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
            })?;
        let credential = state
            .store
            .find_credential(&hash_token(token), state.clock.now())
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or expired token".into()))?;
        Ok(Auth(credential.principal))
    }
}

impl Auth {
    /// Root or the admin of `account_id`; other account admins get 403, others 403.
    pub fn require_account_admin(&self, account_id: &str) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Root => Ok(()),
            Principal::AccountAdmin { account_id: own } if own == account_id => Ok(()),
            Principal::AccountAdmin { .. } => Err(ApiError::Forbidden(
                "this token administers another account".into(),
            )),
            _ => Err(ApiError::Forbidden(
                "this call needs an account admin token".into(),
            )),
        }
    }

    /// Whether the caller may see resources of `account_id` (root or its admin).
    pub fn administers(&self, account_id: &str) -> bool {
        match &self.0 {
            Principal::Root => true,
            Principal::AccountAdmin { account_id: own } => own == account_id,
            _ => false,
        }
    }

    pub fn require_root(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Root => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this call needs the root admin token".into(),
            )),
        }
    }

    /// The caller's account, for any principal but root.
    pub fn account_id(&self) -> Option<&str> {
        match &self.0 {
            Principal::Root => None,
            Principal::AccountAdmin { account_id }
            | Principal::User { account_id, .. }
            | Principal::ServiceAccess { account_id, .. } => Some(account_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = new_token("lh_usr_");
        let b = new_token("lh_usr_");
        assert_ne!(a, b);
        assert!(a.starts_with("lh_usr_"));
        assert_eq!(a.len(), "lh_usr_".len() + 43);
    }

    #[test]
    fn secrets_match_only_their_hash() {
        let stored = hash_token("s3cret");
        assert!(secret_matches("s3cret", &stored));
        assert!(!secret_matches("s3cret ", &stored));
    }
}
