//! API key material: generation, parsing and constant-time checking.
//!
//! A generated key reads `maas_<id>_<secret>`: the id (12 hex digits) is public and finds the
//! row; the secret is 24 random bytes. Only sha256 of the whole key is stored. A plain sha256 is
//! enough because the secret has 192 bits of entropy: there is nothing to brute-force.
//! A bootstrap key from `MAAS_ADMIN_KEY` may be any string; it lives under the id
//! [`BOOTSTRAP_KEY_ID`].

use rand::RngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Id under which the `MAAS_ADMIN_KEY` bootstrap key is stored.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";

/// A freshly generated key: the full text (shown once) and its id.
pub struct GeneratedKey {
    /// Public id.
    pub id: String,
    /// The whole key, to be shown to the user once.
    pub secret: String,
}

/// Makes a new random key.
pub fn generate() -> GeneratedKey {
    let mut rng = rand::thread_rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = format!("maas_{id}_{}", hex::encode(secret));
    GeneratedKey { id, secret }
}

/// The id a presented key claims: the middle of `maas_<id>_<secret>`, else the bootstrap id.
pub fn id_of(presented: &str) -> &str {
    presented
        .strip_prefix("maas_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
        .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or(BOOTSTRAP_KEY_ID)
}

/// sha256 of the key text, as stored.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Whether `presented` is the key whose stored hash is `stored_hash`, in constant time.
pub fn matches(presented: &str, stored_hash: &[u8]) -> bool {
    hash(presented).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_their_id_and_match_their_hash() {
        let k = generate();
        assert_eq!(id_of(&k.secret), k.id);
        assert!(matches(&k.secret, &hash(&k.secret)));
        assert!(!matches(&format!("{}x", k.secret), &hash(&k.secret)));
    }

    #[test]
    fn free_form_keys_belong_to_the_bootstrap_id() {
        assert_eq!(id_of("my-admin-secret"), BOOTSTRAP_KEY_ID);
        assert_eq!(id_of("maas_short_x"), BOOTSTRAP_KEY_ID);
    }
}
