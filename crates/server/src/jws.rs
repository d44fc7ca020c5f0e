//! Compact JWS (RFC 7515) with EdDSA (RFC 8037) for the files of dark sites: the server's
//! identity (its lease signing key, named by its RFC 7638 thumbprint), signing a JSON payload,
//! and verifying one against a given public key. The header is the one leases carry
//! (`alg: EdDSA`, `kid`); the payload's own `typ` field says which file it is.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use leasehold_proto::Jwk;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Why a JWS did not verify.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// The public key of a JWK, when it is an Ed25519 one.
pub fn key_of(jwk: &Jwk) -> Result<VerifyingKey, Invalid> {
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(invalid("the key is not an Ed25519 (OKP) key"));
    }
    key_from_x(&jwk.x)
}

/// The public key from a JWK's `x` (base64url of its 32 bytes).
pub fn key_from_x(x: &str) -> Result<VerifyingKey, Invalid> {
    let bytes = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| invalid("the key is not base64url"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid("an Ed25519 key has 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not an Ed25519 public key"))
}

/// A compact JWS taken apart: the header's `kid`, the payload part (base64url), the signed
/// input and the signature part. Refused unless it has three parts and an EdDSA header.
struct Parts<'a> {
    kid: Option<String>,
    payload: &'a str,
    signing_input: &'a str,
    signature: &'a str,
}

fn parts(jws: &str) -> Result<Parts<'_>, Invalid> {
    let mut split = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (split.next(), split.next(), split.next(), split.next())
    else {
        return Err(invalid("not a compact JWS (three base64url parts)"));
    };
    let header_json: serde_json::Value = decode_json(header)?;
    if header_json.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
        return Err(invalid("the JWS is not signed with EdDSA"));
    }
    let kid = header_json
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_owned);
    Ok(Parts {
        kid,
        payload,
        signing_input: &jws[..header.len() + 1 + payload.len()],
        signature,
    })
}

/// The header's `kid` and the decoded payload of a compact JWS, *not verified*: only to pick
/// the key to verify it with.
pub fn peek<T: DeserializeOwned>(jws: &str) -> Result<(Option<String>, T), Invalid> {
    let parts = parts(jws)?;
    Ok((parts.kid, decode_json(parts.payload)?))
}

fn decode_json<T: DeserializeOwned>(part: &str) -> Result<T, Invalid> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid("a part of the JWS is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the JWS's content: {e}")))
}

/// Verifies a compact JWS with `key` and answers its payload. The signature is checked before
/// the payload is read: a file that does not verify is refused as such, whatever it says.
pub fn verify<T: DeserializeOwned>(jws: &str, key: &VerifyingKey) -> Result<T, Invalid> {
    let parts = parts(jws)?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| invalid("the signature is not base64url"))?;
    let signature =
        Signature::from_slice(&signature).map_err(|_| invalid("not an Ed25519 signature"))?;
    key.verify_strict(parts.signing_input.as_bytes(), &signature)
        .map_err(|_| invalid("the signature does not verify"))?;
    decode_json(parts.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the test expects and the file is not.
    #[derive(Debug, serde::Deserialize)]
    struct Receipt {
        #[serde(rename = "returned_at")]
        _returned_at: String,
    }

    #[test]
    fn the_signature_is_checked_before_the_content_is_read() {
        use ed25519_dalek::SigningKey;
        let site = crate::lease::LeaseSigner::from_key(SigningKey::from_bytes(&[1; 32]));
        let other = crate::lease::LeaseSigner::from_key(SigningKey::from_bytes(&[2; 32]));
        let report = site.sign_json(&serde_json::json!({"typ": "report"}));
        let site_key = key_of(&site.jwks().keys[0]).unwrap();
        let other_key = key_of(&other.jwks().keys[0]).unwrap();

        // Another key: refused as unsigned, though the content is not a receipt either.
        let unsigned = verify::<Receipt>(&report, &other_key).unwrap_err();
        assert!(
            unsigned.to_string().contains("does not verify"),
            "{unsigned}"
        );
        // The right key: signed, and then refused for what it says.
        let misread = verify::<Receipt>(&report, &site_key).unwrap_err();
        assert!(misread.to_string().contains("returned_at"), "{misread}");
        let read: serde_json::Value = verify(&report, &site_key).unwrap();
        assert_eq!(read["typ"], "report");
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
