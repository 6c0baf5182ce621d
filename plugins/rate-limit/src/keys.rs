//! Bucket keys. A principal id or tool name is the client's (or its authorization server's) to
//! make as long as it likes, and the host refuses keys past its limit: a key that cannot be
//! stored must never mean "no limit". So a key longer than [`MAX_PLAIN`] is replaced by the
//! SHA-256 of the whole key (its kind kept in front), which the host always takes.

use sha2::{Digest, Sha256};

/// Keys up to this long are kept as they are (readable in the store).
pub const MAX_PLAIN: usize = 128;

/// The key of the bucket of `kind` for `parts` (e.g. `principal`, `[id]`).
pub fn bucket(kind: &str, parts: &[&str]) -> String {
    let plain = format!("{kind}:{}", parts.join(":"));
    if plain.len() <= MAX_PLAIN {
        return plain;
    }
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed: `a:b` + `c` and `a` + `b:c` are different buckets.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}#sha256:{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed_and_stay_distinct() {
        assert_eq!(bucket("principal", &["alice"]), "principal:alice");
        let long = "a".repeat(600);
        let key = bucket("principal", &[&long]);
        assert!(key.len() <= MAX_PLAIN && key.starts_with("principal#sha256:"), "{key}");
        assert_ne!(key, bucket("principal", &[&"a".repeat(601)]));
        assert_ne!(bucket("tool", &[&long, "x:y"]), bucket("tool", &[&format!("{long}:x"), "y"]));
    }
}
