//! Hex spellings of bytes and of SHA-256 digests, one home for every place that names
//! something by its digest (plugin content hashes, session tags and records, stored
//! credentials, certificate fields) or reads a digest back.

use sha2::{Digest, Sha256};

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// The SHA-256 of `bytes`, as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// 64 hex digits (either case) as the 32 bytes they spell; `None` for anything else.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_refuses_what_is_not_32_bytes() {
        let bytes = [0xab_u8; 32];
        assert_eq!(super::parse_hex32(&super::hex(&bytes)), Some(bytes));
        assert_eq!(super::parse_hex32(&"AB".repeat(32)), Some(bytes));
        assert_eq!(super::parse_hex32("abc"), None);
        assert_eq!(super::parse_hex32(&"zz".repeat(32)), None);
        assert_eq!(super::sha256_hex(b"").len(), 64);
    }
}
