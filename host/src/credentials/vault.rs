//! Callers' own credentials for backends, at rest: one record per (principal, backend) in the
//! `kv` (Redis when configured, so every instance and colour shares them), sealed with
//! AES-256-GCM. The key comes from `RELAY_CREDENTIAL_KEYS` (`id:base64key[,id:base64key...]`,
//! 32-byte keys), or from the file `RELAY_CREDENTIAL_KEYS_FILE` names (the same text; for
//! secret stores that mount files, and so the keys stay out of the process environment): the
//! first encrypts, every one decrypts, so keys rotate by putting a new one
//! first and dropping the old once its records have been rewritten or revoked. The record's key
//! names the principal and backend and is bound into the seal (as associated data): a record
//! copied to another principal's place does not open. Nothing here is logged.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::plugins::{KvError, KvStore};

/// The environment variable holding the keys.
pub const KEYS_ENV: &str = "RELAY_CREDENTIAL_KEYS";
/// The environment variable naming a file that holds them instead.
pub const KEYS_FILE_ENV: &str = "RELAY_CREDENTIAL_KEYS_FILE";

/// Where records live in the kv (plugin prefixes are `[A-Za-z0-9_-]`: no clash).
const PREFIX: &str = "relay.credential:";

/// Why a credential could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No key is configured.
    #[error("the relay has no key to seal credentials with ({KEYS_ENV} or {KEYS_FILE_ENV} is not set)")]
    NoKey,
    /// The key setting is malformed.
    #[error("{KEYS_ENV}: {0}")]
    BadKeys(String),
    /// The kv failed.
    #[error("the credential store is unavailable: {0}")]
    Store(#[from] KvError),
    /// A record that does not open (another key, or tampered with).
    #[error("a stored credential could not be opened (sealed with a key the relay no longer has, or altered)")]
    Unreadable,
}

/// The sealing keys: the first seals, all open.
struct Keys(Vec<(String, LessSafeKey)>);

impl Keys {
    fn parse(text: &str) -> Result<Self, VaultError> {
        let mut keys = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, key) = entry.split_once(':').ok_or_else(|| VaultError::BadKeys("each key is id:base64".into()))?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(VaultError::BadKeys(format!("key id {id:?} must be [A-Za-z0-9_-]+")));
            }
            let bytes = B64.decode(key).map_err(|_| VaultError::BadKeys(format!("key {id} is not base64")))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| VaultError::BadKeys(format!("key {id} is not 32 bytes (openssl rand -base64 32)")))?;
            keys.push((id.to_owned(), LessSafeKey::new(unbound)));
        }
        if keys.is_empty() {
            return Err(VaultError::NoKey);
        }
        Ok(Keys(keys))
    }
}

/// The sealed store.
pub struct Vault {
    kv: Arc<KvStore>,
    keys: Result<Keys, String>,
    random: SystemRandom,
}

impl Vault {
    /// A vault on `kv`, its keys from `RELAY_CREDENTIAL_KEYS` or the file
    /// `RELAY_CREDENTIAL_KEYS_FILE` names (read once, at start).
    pub fn from_env(kv: Arc<KvStore>) -> Self {
        let file = std::env::var_os(KEYS_FILE_ENV).map(std::path::PathBuf::from);
        let keys = keys_from(std::env::var(KEYS_ENV).ok(), file.as_deref()).and_then(|text| Keys::parse(&text));
        Self { kv, keys: keys.map_err(|e| e.to_string()), random: SystemRandom::new() }
    }

    /// A vault with `keys` (the variable's syntax), for tests.
    pub fn with_keys(kv: Arc<KvStore>, keys: &str) -> Result<Self, VaultError> {
        Ok(Self { kv, keys: Ok(Keys::parse(keys)?), random: SystemRandom::new() })
    }

    /// The store underneath (for markers that are not secrets).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Why credentials cannot be sealed, if they cannot.
    pub fn problem(&self) -> Option<&str> {
        self.keys.as_ref().err().map(String::as_str)
    }

    fn keys(&self) -> Result<&Keys, VaultError> {
        self.keys
            .as_ref()
            .map_err(|e| if e.contains("not set") { VaultError::NoKey } else { VaultError::BadKeys(e.clone()) })
    }

    /// Seals and stores `secret` as `principal`'s credential for `backend`, replacing any.
    pub async fn put(&self, principal: &str, backend: &str, secret: &str) -> Result<(), VaultError> {
        self.seal(principal, backend, secret, None).await
    }

    /// [`Vault::put`] for `lifetime` only (an exchanged token, until shortly before it expires).
    pub async fn put_for(
        &self,
        principal: &str,
        backend: &str,
        secret: &str,
        lifetime: std::time::Duration,
    ) -> Result<(), VaultError> {
        self.seal(principal, backend, secret, Some(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX))).await
    }

    async fn seal(&self, principal: &str, backend: &str, secret: &str, ttl_ms: Option<u64>) -> Result<(), VaultError> {
        let (id, key) = &self.keys()?.0[0];
        let place = place(principal, backend);
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| VaultError::Unreadable)?;
        let mut sealed = secret.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(place.as_bytes()), &mut sealed)
            .map_err(|_| VaultError::Unreadable)?;
        let mut record = nonce.to_vec();
        record.extend_from_slice(&sealed);
        self.kv.set(&place, &format!("{id}:{}", B64.encode(record)), ttl_ms, None).await?;
        Ok(())
    }

    /// `principal`'s credential for `backend`, if stored.
    pub async fn get(&self, principal: &str, backend: &str) -> Result<Option<String>, VaultError> {
        let keys = self.keys()?;
        let place = place(principal, backend);
        let Some(record) = self.kv.get(&place).await? else { return Ok(None) };
        let (id, sealed) = record.split_once(':').ok_or(VaultError::Unreadable)?;
        let key = keys.0.iter().find(|(k, _)| k == id).map(|(_, key)| key).ok_or(VaultError::Unreadable)?;
        let mut bytes = B64.decode(sealed).map_err(|_| VaultError::Unreadable)?;
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Unreadable);
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| VaultError::Unreadable)?;
        let opened =
            key.open_in_place(nonce, Aad::from(place.as_bytes()), &mut sealed).map_err(|_| VaultError::Unreadable)?;
        String::from_utf8(opened.to_vec()).map(Some).map_err(|_| VaultError::Unreadable)
    }

    /// Removes `principal`'s credential for `backend`; true if there was one.
    pub async fn delete(&self, principal: &str, backend: &str) -> Result<bool, VaultError> {
        let place = place(principal, backend);
        let existed = self.kv.get(&place).await?.is_some();
        self.kv.delete(&place).await?;
        Ok(existed)
    }
}

/// The keys' text: the variable's value, or the named file's content (not both: which one
/// would win is a guess an operator should not have to make).
fn keys_from(value: Option<String>, file: Option<&std::path::Path>) -> Result<String, VaultError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(VaultError::BadKeys(format!("set {KEYS_ENV} or {KEYS_FILE_ENV}, not both"))),
        (Some(text), None) => Ok(text),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|e| VaultError::BadKeys(format!("{KEYS_FILE_ENV} ({}): {e}", path.display()))),
        (None, None) => Err(VaultError::NoKey),
    }
}

/// The kv key of `principal`'s credential for `backend` (the principal by digest: ids may hold
/// any character).
fn place(principal: &str, backend: &str) -> String {
    format!("{PREFIX}{}:{backend}", crate::digest::sha256_hex(principal.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxwdHhobGBkWFxQVEhMQEQ4PDA0KCwgJBgcEBQIDAAE=";

    #[tokio::test]
    async fn sealed_per_principal_and_backend_and_rotated_by_key_order() {
        let kv = Arc::new(KvStore::default());
        let vault = Vault::with_keys(kv.clone(), K1).unwrap();
        vault.put("alice", "github", "ghp_alice").await.unwrap();
        assert_eq!(vault.get("alice", "github").await.unwrap().as_deref(), Some("ghp_alice"));
        assert_eq!(vault.get("bob", "github").await.unwrap(), None);
        // At rest: sealed, naming the key, holding neither the secret nor the principal.
        let stored = kv.get(&place("alice", "github")).await.unwrap().unwrap();
        assert!(stored.starts_with("k1:") && !stored.contains("ghp_alice"), "{stored}");
        assert!(!place("alice", "github").contains("alice"));
        // Moved to bob's place, it does not open.
        kv.set(&place("bob", "github"), &stored, None, None).await.unwrap();
        assert!(matches!(vault.get("bob", "github").await, Err(VaultError::Unreadable)));
        // Rotation: a new key first still opens the old record; new records use it.
        let rotated = Vault::with_keys(kv.clone(), &format!("{K2},{K1}")).unwrap();
        assert_eq!(rotated.get("alice", "github").await.unwrap().as_deref(), Some("ghp_alice"));
        rotated.put("carol", "github", "c").await.unwrap();
        assert!(kv.get(&place("carol", "github")).await.unwrap().unwrap().starts_with("k2:"));
        // Without the old key, the old record does not open (and says so).
        let only_new = Vault::with_keys(kv.clone(), K2).unwrap();
        assert!(matches!(only_new.get("alice", "github").await, Err(VaultError::Unreadable)));
        assert!(vault.delete("alice", "github").await.unwrap());
        assert_eq!(vault.get("alice", "github").await.unwrap(), None);
        assert!(Vault::with_keys(kv.clone(), "k1:c2hvcnQ=").is_err(), "a short key is refused");
        assert!(matches!(Vault::with_keys(kv, ""), Err(VaultError::NoKey)));
    }

    #[test]
    fn keys_come_from_the_variable_or_a_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("{K2},{K1}\n")).unwrap();
        assert_eq!(keys_from(None, Some(&file)).unwrap(), format!("{K2},{K1}"));
        assert_eq!(keys_from(Some(K1.into()), None).unwrap(), K1);
        assert!(keys_from(Some(K1.into()), Some(&file)).unwrap_err().to_string().contains("not both"));
        assert!(matches!(keys_from(None, None), Err(VaultError::NoKey)));
        let missing = keys_from(None, Some(&dir.path().join("nope"))).unwrap_err().to_string();
        assert!(missing.contains(KEYS_FILE_ENV) && missing.contains("nope"), "{missing}");
    }
}
