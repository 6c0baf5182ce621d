//! JSON Web Key Sets (RFC 7517): the public keys tokens are verified with.

use serde::Deserialize;

/// One public key; only the members the accepted algorithms use.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// The key id tokens name in their header.
    #[serde(default)]
    pub kid: Option<String>,
    /// The algorithm the key is for, when the set says.
    #[serde(default)]
    pub alg: Option<String>,
    /// `P-256` or `Ed25519`.
    #[serde(default)]
    pub crv: Option<String>,
    /// RSA modulus and exponent (base64url).
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    /// EC / OKP coordinates (base64url).
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
    /// `sig` for signing keys; keys for encryption are skipped.
    #[serde(default, rename = "use")]
    pub usage: Option<String>,
}

/// A key set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS document.
    pub fn parse(json: &str) -> Result<KeySet, String> {
        serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))
    }

    /// The signing key with id `kid` (a token without a `kid` matches a set of one key).
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        let signing = || self.keys.iter().filter(|k| k.usage.as_deref().is_none_or(|u| u == "sig"));
        if kid.is_empty() {
            let mut all = signing();
            return match (all.next(), all.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            };
        }
        signing().find(|k| k.kid.as_deref() == Some(kid))
    }
}
