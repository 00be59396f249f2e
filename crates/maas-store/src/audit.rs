//! The audit chain's hash: each entry commits to its fields and to the previous entry's hash,
//! so editing or removing any row breaks every hash after it.

use sha2::{Digest as _, Sha256};

/// The hash that opens the chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hash of one entry, hex. The fields are hashed as a JSON array so no two field lists collide.
pub fn entry_hash(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([seq, at, actor, action, target, detail, prev_hash]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_hash() {
        let base = entry_hash(1, "t", "a", "x", "y", "{}", GENESIS_HASH);
        assert_ne!(base, entry_hash(2, "t", "a", "x", "y", "{}", GENESIS_HASH));
        assert_ne!(base, entry_hash(1, "t", "b", "x", "y", "{}", GENESIS_HASH));
        assert_ne!(
            base,
            entry_hash(1, "t", "a", "x", "y", "{\"k\":1}", GENESIS_HASH)
        );
        // Shifting text between fields must not collide.
        assert_ne!(
            entry_hash(1, "t", "ab", "c", "y", "{}", GENESIS_HASH),
            entry_hash(1, "t", "a", "bc", "y", "{}", GENESIS_HASH)
        );
    }
}
