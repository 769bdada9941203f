//! The HMACs and the digest every signing scheme is built from (TC3, API 2.0, Wangsu API key and
//! AK/SK), in one place.
//!
//! The signing modules stay pure functions over bytes; this module is their only contact with
//! the `hmac` crate. Verification compares tags in constant time ([`verify_hmac`]), so an
//! emulator check leaks nothing about how much of a forged signature was right.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The hash under an HMAC: the schemes use SHA-1 (API 2.0 default, Wangsu API key) and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
}

/// `HMAC-SHA1(key, msg)`, raw bytes.
pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac(Hash::Sha1, key, msg)
}

/// `HMAC-SHA256(key, msg)`, raw bytes.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac(Hash::Sha256, key, msg)
}

/// `HMAC-<hash>(key, msg)`, raw bytes.
pub fn hmac(hash: Hash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => keyed::<Hmac<Sha1>>(key)
            .chain_update(msg)
            .finalize()
            .into_bytes()
            .to_vec(),
        Hash::Sha256 => keyed::<Hmac<Sha256>>(key)
            .chain_update(msg)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

/// Whether `tag` is `HMAC-<hash>(key, msg)`, compared in constant time.
pub fn verify_hmac(hash: Hash, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    match hash {
        Hash::Sha1 => keyed::<Hmac<Sha1>>(key).chain_update(msg).verify_slice(tag),
        Hash::Sha256 => keyed::<Hmac<Sha256>>(key)
            .chain_update(msg)
            .verify_slice(tag),
    }
    .is_ok()
}

/// `hex(sha256(data))`, lowercase: the payload and canonical-request hashes of TC3 and AK/SK.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An HMAC keyed with `key`: the one place a MAC is keyed.
fn keyed<M: KeyInit>(key: &[u8]) -> M {
    // Invariant: HMAC accepts keys of any length (RFC 2104: longer keys are hashed, shorter ones
    // padded), so `new_from_slice` cannot return `InvalidLength` for `Hmac<Sha1>` or
    // `Hmac<Sha256>`, the only types this module keys.
    #[allow(clippy::expect_used)]
    M::new_from_slice(key).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_and_2202_vectors_and_any_key_length() {
        // RFC 2202 test case 2 and RFC 4231 test case 2 ("Jefe").
        let msg = b"what do ya want for nothing?";
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", msg)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        let tag = hmac_sha256(b"Jefe", msg);
        assert_eq!(
            hex::encode(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hmac(Hash::Sha256, b"Jefe", msg, &tag));
        assert!(!verify_hmac(Hash::Sha256, b"Jeff", msg, &tag));
        assert!(!verify_hmac(Hash::Sha1, b"Jefe", msg, &tag));
        // Empty and longer-than-a-block keys are valid HMAC keys.
        for key in [&b""[..], &[7u8; 200][..]] {
            assert_eq!(hmac_sha256(key, msg).len(), 32);
            assert_eq!(hmac_sha1(key, msg).len(), 20);
        }
    }
}
