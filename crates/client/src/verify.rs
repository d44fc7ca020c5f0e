//! Offline verification of signed leases.
//!
//! Every session a Leasehold server opens carries a lease: a compact JWT (RFC 7519) signed with
//! the server's Ed25519 key (RFC 8037, `alg: "EdDSA"`). The public keys are published at
//! `/.well-known/jwks.json`. An application that has the key set (fetched once with
//! [`Client::lease_verifier`](crate::Client::lease_verifier), or shipped by the vendor) can
//! check a lease without talking to the server:
//!
//! 1. the lease is three base64url segments without padding, `header.payload.signature`;
//! 2. the header is `{"alg": "EdDSA", "typ": "JWT", "kid": ...}` and `kid` names a known key;
//! 3. the signature is a valid Ed25519 signature (strict verification) of `header.payload`;
//! 4. the payload decodes as [`LeaseClaims`] and `now < exp` (plus an optional leeway).
//!
//! The current time is an argument, so the check is deterministic and testable.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use leasehold_proto::{Jwks, LeaseClaims};
use serde::Deserialize;

use crate::error::{ClientError, Result};

/// Leases longer than this are refused before any decoding (a real one is well under 1 KiB).
const MAX_LEASE_LEN: usize = 8 * 1024;

/// The JOSE header of a lease.
#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Verifies signed leases against a set of Ed25519 public keys, offline.
///
/// Cheap to clone; build it once and share it.
#[derive(Debug, Clone)]
pub struct LeaseVerifier {
    keys: HashMap<String, VerifyingKey>,
    leeway_secs: i64,
    issuer: Option<String>,
}

impl LeaseVerifier {
    /// Builds a verifier from a key set as served at `/.well-known/jwks.json`.
    ///
    /// Keys that are not Ed25519 (`kty` other than `OKP` or `crv` other than `Ed25519`) are
    /// skipped. Fails with [`ClientError::Decode`] when an Ed25519 key is malformed or when no
    /// usable key is left.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                tracing::debug!(kid = %jwk.kid, kty = %jwk.kty, crv = %jwk.crv, "skipping a key that is not Ed25519");
                continue;
            }
            if !jwk.alg.is_empty() && jwk.alg != "EdDSA" {
                return Err(ClientError::Decode(format!(
                    "jwks: key {:?} has alg {:?}, expected EdDSA",
                    jwk.kid, jwk.alg
                )));
            }
            if !jwk.use_.is_empty() && jwk.use_ != "sig" {
                tracing::debug!(kid = %jwk.kid, use_ = %jwk.use_, "skipping a key not meant for signatures");
                continue;
            }
            let key = decode_public_key(&jwk.x)
                .map_err(|why| ClientError::Decode(format!("jwks: key {:?}: {why}", jwk.kid)))?;
            keys.insert(jwk.kid.clone(), key);
        }
        if keys.is_empty() {
            return Err(ClientError::Decode(
                "jwks: no usable Ed25519 signing key".to_owned(),
            ));
        }
        Ok(LeaseVerifier {
            keys,
            leeway_secs: 0,
            issuer: None,
        })
    }

    /// Builds a verifier from raw keys: `(kid, 32-byte Ed25519 public key)`.
    pub fn from_keys<I, K>(keys: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, [u8; 32])>,
        K: Into<String>,
    {
        let mut map = HashMap::new();
        for (kid, bytes) in keys {
            let kid = kid.into();
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| ClientError::Decode(format!("key {kid:?}: {e}")))?;
            map.insert(kid, key);
        }
        if map.is_empty() {
            return Err(ClientError::Decode("no Ed25519 key given".to_owned()));
        }
        Ok(LeaseVerifier {
            keys: map,
            leeway_secs: 0,
            issuer: None,
        })
    }

    /// Accepts leases up to `secs` seconds past their `exp`, to absorb clock skew between the
    /// server and this machine. Zero by default.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = i64::try_from(secs).unwrap_or(i64::MAX);
        self
    }

    /// Also requires the `iss` claim to equal `issuer`. Not checked by default.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The key ids this verifier knows.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies a lease and returns its claims.
    ///
    /// `now_unix_secs` is the current time in seconds since the Unix epoch; the lease is valid
    /// while `now_unix_secs < exp + leeway`. Fails with [`ClientError::LeaseInvalid`] when the
    /// lease is malformed, names an unknown key, is not signed by that key (tampered header or
    /// payload, wrong key), uses another algorithm, or has expired.
    pub fn verify(&self, jwt: &str, now_unix_secs: i64) -> Result<LeaseClaims> {
        let claims = self.verify_signature(jwt)?;
        if now_unix_secs >= claims.exp.saturating_add(self.leeway_secs) {
            return Err(invalid(format!(
                "expired at {} (now {now_unix_secs})",
                claims.exp
            )));
        }
        if let Some(issuer) = &self.issuer {
            if &claims.iss != issuer {
                return Err(invalid(format!(
                    "issued by {:?}, expected {issuer:?}",
                    claims.iss
                )));
            }
        }
        Ok(claims)
    }

    /// Checks format, key and signature, and decodes the claims, without looking at `exp`.
    fn verify_signature(&self, jwt: &str) -> Result<LeaseClaims> {
        if jwt.len() > MAX_LEASE_LEN {
            return Err(invalid(format!("longer than {MAX_LEASE_LEN} bytes")));
        }
        let mut parts = jwt.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWT (three dot-separated segments)"));
        };

        let header_bytes = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|e| invalid(format!("header is not base64url: {e}")))?;
        let header: Header = serde_json::from_slice(&header_bytes)
            .map_err(|e| invalid(format!("header is not valid JSON: {e}")))?;
        if header.alg != "EdDSA" {
            return Err(invalid(format!("algorithm {:?} is not EdDSA", header.alg)));
        }
        if let Some(typ) = &header.typ {
            if !typ.eq_ignore_ascii_case("JWT") {
                return Err(invalid(format!("type {typ:?} is not JWT")));
            }
        }
        let kid = header.kid.ok_or_else(|| invalid("header has no kid"))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| invalid(format!("unknown key id {kid:?}")))?;

        let signature_bytes = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|e| invalid(format!("signature is not base64url: {e}")))?;
        let signature = Signature::from_slice(&signature_bytes)
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = &jwt.as_bytes()[..signed_len];
        key.verify_strict(signed, &signature)
            .map_err(|_| invalid("bad signature"))?;

        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|e| invalid(format!("payload is not base64url: {e}")))?;
        serde_json::from_slice(&payload).map_err(|e| invalid(format!("bad claims: {e}")))
    }
}

fn invalid(why: impl Into<String>) -> ClientError {
    ClientError::LeaseInvalid(why.into())
}

fn decode_public_key(x: &str) -> std::result::Result<VerifyingKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|e| format!("x is not base64url: {e}"))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("x is {} bytes, expected 32", bytes.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("x is not an Ed25519 point: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use leasehold_proto::{Jwk, UserKind};

    const NOW: i64 = 1_750_000_000;

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn jwk(kid: &str, key: &SigningKey) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
            kid: kid.into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    fn claims(exp: i64) -> LeaseClaims {
        LeaseClaims {
            iss: "leasehold".into(),
            sub: "alice".into(),
            sid: "ses_1".into(),
            lic: "lic_1".into(),
            kind: UserKind::Interactive,
            device_id: "laptop".into(),
            instance_id: "app-1".into(),
            iat: NOW - 10,
            exp,
            borrowed: false,
        }
    }

    fn sign_raw(header: &str, payload: &[u8], key: &SigningKey) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    fn sign(kid: &str, claims: &LeaseClaims, key: &SigningKey) -> String {
        let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#);
        sign_raw(&header, &serde_json::to_vec(claims).unwrap(), key)
    }

    fn verifier() -> LeaseVerifier {
        LeaseVerifier::from_jwks(&Jwks {
            keys: vec![jwk("k1", &signing_key(1)), jwk("k2", &signing_key(2))],
        })
        .unwrap()
    }

    fn assert_invalid(result: Result<LeaseClaims>, needle: &str) {
        match result {
            Err(ClientError::LeaseInvalid(why)) => {
                assert!(why.contains(needle), "{why:?} should mention {needle:?}")
            }
            other => panic!("expected LeaseInvalid({needle}), got {other:?}"),
        }
    }

    #[test]
    fn a_good_lease_verifies_and_yields_its_claims() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        assert_eq!(verifier().verify(&jwt, NOW).unwrap(), claims(NOW + 60));
        // Any key of the set works when the kid names it.
        let jwt = sign("k2", &claims(NOW + 60), &signing_key(2));
        assert_eq!(verifier().verify(&jwt, NOW).unwrap().sub, "alice");
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        let parts: Vec<&str> = jwt.split('.').collect();
        let mut forged = claims(NOW + 60);
        forged.sub = "mallory".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_invalid(verifier().verify(&tampered, NOW), "bad signature");
    }

    #[test]
    fn a_tampered_header_is_rejected() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        let parts: Vec<&str> = jwt.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k1"}"#);
        let tampered = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_invalid(verifier().verify(&tampered, NOW), "bad signature");
    }

    #[test]
    fn a_flipped_signature_bit_is_rejected() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[5] ^= 0x01;
        let tampered = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert_invalid(verifier().verify(&tampered, NOW), "bad signature");
    }

    #[test]
    fn a_lease_signed_with_another_key_is_rejected() {
        // Claims to be k1 but is signed with a key outside the set.
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(9));
        assert_invalid(verifier().verify(&jwt, NOW), "bad signature");
        // Signed with k2's key but naming k1.
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(2));
        assert_invalid(verifier().verify(&jwt, NOW), "bad signature");
    }

    #[test]
    fn an_unknown_or_missing_kid_is_rejected() {
        let jwt = sign("k9", &claims(NOW + 60), &signing_key(1));
        assert_invalid(verifier().verify(&jwt, NOW), "unknown key id");
        let jwt = sign_raw(
            r#"{"alg":"EdDSA","typ":"JWT"}"#,
            &serde_json::to_vec(&claims(NOW + 60)).unwrap(),
            &signing_key(1),
        );
        assert_invalid(verifier().verify(&jwt, NOW), "no kid");
    }

    #[test]
    fn an_expired_lease_is_rejected_at_and_after_exp() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        assert!(verifier().verify(&jwt, NOW + 59).is_ok());
        assert_invalid(verifier().verify(&jwt, NOW + 60), "expired");
        assert_invalid(verifier().verify(&jwt, NOW + 3600), "expired");
    }

    #[test]
    fn leeway_accepts_a_lease_shortly_after_exp() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        let lenient = verifier().with_leeway(30);
        assert!(lenient.verify(&jwt, NOW + 89).is_ok());
        assert_invalid(lenient.verify(&jwt, NOW + 90), "expired");
    }

    #[test]
    fn other_algorithms_are_rejected() {
        let payload = serde_json::to_vec(&claims(NOW + 60)).unwrap();
        for alg in ["none", "HS256", "RS256", "ES256"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#);
            let jwt = sign_raw(&header, &payload, &signing_key(1));
            assert_invalid(verifier().verify(&jwt, NOW), "not EdDSA");
        }
        let jwt = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        assert_invalid(verifier().verify(&jwt, NOW), "not EdDSA");
    }

    #[test]
    fn malformed_leases_are_rejected() {
        let v = verifier();
        for jwt in ["", "a", "a.b", "a.b.c.d", "!!!.b.c", "a.b.c"] {
            assert!(
                matches!(v.verify(jwt, NOW), Err(ClientError::LeaseInvalid(_))),
                "{jwt:?}"
            );
        }
        // Padding is not allowed in compact JWTs.
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        assert_invalid(v.verify(&format!("{jwt}=="), NOW), "signature");
        // A signature of the wrong length.
        let (signing_input, _) = jwt.rsplit_once('.').unwrap();
        let short = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode([0u8; 10]));
        assert_invalid(v.verify(&short, NOW), "64 bytes");
        // A huge input is refused before decoding.
        assert_invalid(v.verify(&"a".repeat(MAX_LEASE_LEN + 1), NOW), "longer");
    }

    #[test]
    fn a_validly_signed_payload_that_is_not_lease_claims_is_rejected() {
        let jwt = sign_raw(
            r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#,
            br#"{"sub":"alice"}"#,
            &signing_key(1),
        );
        assert_invalid(verifier().verify(&jwt, NOW), "bad claims");
    }

    #[test]
    fn the_issuer_is_checked_when_asked_for() {
        let jwt = sign("k1", &claims(NOW + 60), &signing_key(1));
        assert!(verifier()
            .with_issuer("leasehold")
            .verify(&jwt, NOW)
            .is_ok());
        assert_invalid(
            verifier().with_issuer("someone-else").verify(&jwt, NOW),
            "issued by",
        );
    }

    #[test]
    fn key_sets_without_a_usable_key_or_with_a_broken_key_are_refused() {
        let mut rsa = jwk("r1", &signing_key(1));
        rsa.kty = "RSA".into();
        assert!(matches!(
            LeaseVerifier::from_jwks(&Jwks {
                keys: vec![rsa.clone()]
            }),
            Err(ClientError::Decode(_))
        ));
        // Non-Ed25519 keys are skipped when an Ed25519 one is present.
        let v = LeaseVerifier::from_jwks(&Jwks {
            keys: vec![rsa, jwk("k1", &signing_key(1))],
        })
        .unwrap();
        assert_eq!(v.key_ids().collect::<Vec<_>>(), vec!["k1"]);

        let mut short = jwk("k1", &signing_key(1));
        short.x = URL_SAFE_NO_PAD.encode([1u8; 31]);
        assert!(matches!(
            LeaseVerifier::from_jwks(&Jwks { keys: vec![short] }),
            Err(ClientError::Decode(_))
        ));
    }

    #[test]
    fn a_verifier_can_be_built_from_raw_keys() {
        let key = signing_key(3);
        let v = LeaseVerifier::from_keys([("k3", key.verifying_key().to_bytes())]).unwrap();
        let jwt = sign("k3", &claims(NOW + 60), &key);
        assert!(v.verify(&jwt, NOW).is_ok());
    }
}
