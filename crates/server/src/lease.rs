//! Signed leases: an EdDSA (Ed25519) JWT per session, verifiable offline with the public key
//! served at `/.well-known/jwks.json`. The signing key lives in the data folder (PKCS#8 PEM,
//! mode 0600), created at first start.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use leasehold_proto::{Jwk, Jwks, LeaseClaims};
use sha2::{Digest, Sha256};

pub const KEY_FILE: &str = "lease-signing-key.pem";
/// Setting that holds the signing key (PKCS#8 PEM) when several nodes share one database.
pub const KEY_SETTING: &str = "lease_signing_key_pem";
pub const ISSUER: &str = "leasehold";

/// A lease's claims take ~250 bytes of JSON (the ids at their longest, more).
const PAYLOAD_GUESS: usize = 384;
/// An Ed25519 signature (64 bytes) in base64url without padding.
const SIGNATURE_B64: usize = 86;

pub struct LeaseSigner {
    key: SigningKey,
    kid: String,
    header_b64: String,
}

impl LeaseSigner {
    pub fn from_key(key: SigningKey) -> Self {
        let public = key.verifying_key();
        let digest = Sha256::digest(public.as_bytes());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        LeaseSigner {
            key,
            kid,
            header_b64,
        }
    }

    /// Loads the key from `data_dir`, creating it at first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let key = if path.exists() {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key: {e}", path.display())
            })?
        } else {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
            write_private(&path, pem.as_bytes())?;
            tracing::info!(path = %path.display(), "created the lease signing key");
            key
        };
        Ok(LeaseSigner::from_key(key))
    }

    /// Loads the key shared by every node of one database from its settings, creating it when
    /// the first node starts: nodes starting at once agree on one key, so a lease signed by one
    /// node verifies with any node's JWKS. (The key is then as secret as the database.)
    pub async fn load_or_create_shared(store: &dyn leasehold_store::Store) -> anyhow::Result<Self> {
        let candidate = SigningKey::generate(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(Default::default())
            .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
        let pem = store
            .put_setting_if_absent(KEY_SETTING, candidate.as_str())
            .await
            .context("storing the lease signing key")?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            anyhow::anyhow!("setting {KEY_SETTING}: not an Ed25519 PKCS#8 key: {e}")
        })?;
        Ok(LeaseSigner::from_key(key))
    }

    pub fn sign(&self, claims: &LeaseClaims) -> String {
        self.sign_json(claims)
    }

    /// Signs any JSON payload as a compact JWS with the same header as leases (the files of
    /// dark sites: see `crate::jws`). The token is written into one string of its final size:
    /// header, payload, then the signature over the two.
    pub fn sign_json(&self, payload: &impl serde::Serialize) -> String {
        // Serializing the wire types of `leasehold_proto` cannot fail.
        let mut json = Vec::with_capacity(PAYLOAD_GUESS);
        let _ = serde_json::to_writer(&mut json, payload);
        let mut token = String::with_capacity(
            self.header_b64.len() + 1 + json.len().div_ceil(3) * 4 + 1 + SIGNATURE_B64,
        );
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        token
    }

    /// This server's public key as a JWK.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    /// This server's id: the RFC 7638 thumbprint of its public key (dark sites bind their
    /// delegations to it).
    pub fn server_id(&self) -> String {
        crate::jws::thumbprint(&self.public_jwk().x)
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
                kid: self.kid.clone(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
            }],
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_proto::UserKind;

    fn claims(id_len: usize) -> LeaseClaims {
        LeaseClaims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            sid: "0190f1e2-aaaa-7bbb-8ccc-0123456789ab".into(),
            lic: "lic_01".into(),
            kind: UserKind::Interactive,
            device_id: "d".repeat(id_len),
            instance_id: "i".repeat(id_len),
            iat: 1_764_000_000,
            exp: 1_764_000_090,
            borrowed: id_len % 2 == 1,
        }
    }

    /// A lease is `base64url(header).base64url(claims).base64url(Ed25519 signature of the two)`,
    /// byte for byte what it was before the token was written into one buffer, and it verifies
    /// with the public key of the JWKS (Ed25519 signatures are deterministic).
    #[test]
    fn the_lease_format_is_the_compact_jws_clients_verify() {
        let signer = LeaseSigner::from_key(SigningKey::from_bytes(&[9; 32]));
        for id_len in [1, 2, 3, 40, 255] {
            let claims = claims(id_len);
            let token = signer.sign(&claims);
            let payload = serde_json::to_vec(&claims).unwrap();
            let input = format!("{}.{}", signer.header_b64, URL_SAFE_NO_PAD.encode(payload));
            let signature = signer.key.sign(input.as_bytes());
            let expected = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
            assert_eq!(token, expected);
            let key = crate::jws::key_of(&signer.jwks().keys[0]).unwrap();
            let verified: LeaseClaims = crate::jws::verify(&token, &key).unwrap();
            assert_eq!(verified, claims);
            let (kid, _) = crate::jws::peek::<LeaseClaims>(&token).unwrap();
            assert_eq!(kid.as_deref(), Some(signer.kid.as_str()));
        }
    }
}
