//! The signature of a delivery: `Leasehold-Signature: t=<unix seconds>,v1=<hex>`, where the hex
//! is HMAC-SHA256 keyed with the endpoint's secret over `t + "." + body`. A receiver recomputes
//! it, compares in constant time and refuses a `t` too far from its own clock (the README's
//! Python and Node snippets use five minutes), which bounds replays. HMAC rather than Ed25519:
//! ten lines with any language's standard library, and a secret per endpoint, so one
//! receiver's leaked secret forges nothing for another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "leasehold-signature";

/// A new endpoint secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// The hex HMAC-SHA256 of `t.body` under `secret`.
pub fn mac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header's value for `body` signed at `t` (unix seconds).
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac_hex(secret, t, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_timestamp_dot_body() {
        let header = signature_header("whsec_k", 1700000000, b"{\"a\":1}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_k").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(header, format!("t=1700000000,v1={expected}"));
        assert_eq!(expected.len(), 64);
        // RFC 4231 test case 2 (key "Jefe"), with the message split as "t.body".
        assert_eq!(mac_hex("Jefe", 0, b"what do ya want for nothing?"), {
            let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"0.what do ya want for nothing?");
            hex::encode(m.finalize().into_bytes())
        });
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64);
        assert_ne!(a, b);
    }
}
