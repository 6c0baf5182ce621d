//! Verifying a compact JWS bearer token (RFC 7515/7519) against a key set: the signature with
//! the key its `kid` names (RS256, ES256 or EdDSA only: `none` and HMAC are refused, so a
//! public key can never be used as an HMAC secret), then `iss`, `aud`, `exp` and `nbf`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::jwks::{Jwk, KeySet};

/// Why a token was refused: a short phrase for the client and the log, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not three base64url parts of JSON.
    Malformed(&'static str),
    /// An algorithm this plugin does not accept (`none`, HMAC, anything unknown).
    Algorithm(String),
    /// No key in the set has the token's `kid` (the caller may refresh the set once).
    UnknownKey(String),
    /// The signature does not verify.
    Signature,
    /// The header names an extension in `crit` (RFC 7515 section 4.1.11): none is understood
    /// here, so the token must be refused.
    Critical(String),
    /// A claim check failed.
    Claim(&'static str),
}

/// Text from the token quoted in a rejection, cut to 64 characters: a token is the client's
/// to make as long as it likes, and rejections reach logs and the client.
fn clip(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Malformed(what) => write!(f, "malformed token: {what}"),
            Rejection::Algorithm(alg) => write!(f, "algorithm {:?} is not accepted", clip(alg)),
            Rejection::UnknownKey(kid) => write!(f, "no key with kid {:?}", clip(kid)),
            Rejection::Critical(ext) => write!(f, "critical extension {:?} is not understood", clip(ext)),
            Rejection::Signature => write!(f, "bad signature"),
            Rejection::Claim(what) => write!(f, "{what}"),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the verifier must understand; any at all is refused.
    crit: Option<Value>,
}

/// What the claims must say.
#[derive(Debug, Clone)]
pub struct Expect {
    /// `iss` must equal this.
    pub issuer: String,
    /// `aud` (a string or a list) must contain this: the relay's canonical resource URL.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Verified {
    /// All claims, for `sub` and the roles claim.
    pub claims: Value,
    /// `exp`, seconds since the epoch.
    pub expires: u64,
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| Rejection::Malformed(what))
}

/// Verifies `token` against `keys` and `expect` at `now` (seconds since the epoch).
pub fn verify(token: &str, keys: &KeySet, expect: &Expect, now: u64) -> Result<Verified, Rejection> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed("not three parts"));
    };
    let header: Header =
        serde_json::from_slice(&decode(header_b64, "header")?).map_err(|_| Rejection::Malformed("header"))?;
    if !matches!(header.alg.as_str(), "RS256" | "ES256" | "EdDSA") {
        return Err(Rejection::Algorithm(header.alg));
    }
    if let Some(crit) = &header.crit {
        let named = crit.as_array().and_then(|c| c.first()).and_then(Value::as_str).unwrap_or("(malformed crit)");
        return Err(Rejection::Critical(named.to_owned()));
    }
    let kid = header.kid.unwrap_or_default();
    let key = keys.find(&kid).ok_or_else(|| Rejection::UnknownKey(kid.clone()))?;
    let signature = decode(signature_b64, "signature")?;
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    check_signature(key, &header.alg, signed.as_bytes(), &signature)?;
    let claims: Value =
        serde_json::from_slice(&decode(claims_b64, "claims")?).map_err(|_| Rejection::Malformed("claims"))?;
    let expires = check_claims(&claims, expect, now)?;
    Ok(Verified { claims, expires })
}

/// The signature check: the key's type must be the algorithm's (a JWK's own `alg`, when set,
/// must match too).
fn check_signature(key: &Jwk, alg: &str, signed: &[u8], signature: &[u8]) -> Result<(), Rejection> {
    if key.alg.as_deref().is_some_and(|a| a != alg) {
        return Err(Rejection::Algorithm(alg.to_owned()));
    }
    let verified = match (alg, key.kty.as_str(), key.crv.as_deref()) {
        ("RS256", "RSA", _) => {
            use rsa::signature::Verifier;
            let n = rsa::BigUint::from_bytes_be(&decode(key.n.as_deref().unwrap_or(""), "n")?);
            let e = rsa::BigUint::from_bytes_be(&decode(key.e.as_deref().unwrap_or(""), "e")?);
            let public = rsa::RsaPublicKey::new(n, e).map_err(|_| Rejection::Malformed("RSA key"))?;
            let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
            let signature = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| Rejection::Signature)?;
            verifier.verify(signed, &signature).is_ok()
        }
        ("ES256", "EC", Some("P-256")) => {
            use p256::ecdsa::signature::Verifier;
            let x = decode(key.x.as_deref().unwrap_or(""), "x")?;
            let y = decode(key.y.as_deref().unwrap_or(""), "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err(Rejection::Malformed("EC key"));
            }
            let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
            let verifier =
                p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|_| Rejection::Malformed("EC key"))?;
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| Rejection::Signature)?;
            verifier.verify(signed, &signature).is_ok()
        }
        ("EdDSA", "OKP", Some("Ed25519")) => {
            let x: [u8; 32] = decode(key.x.as_deref().unwrap_or(""), "x")?
                .try_into()
                .map_err(|_| Rejection::Malformed("Ed25519 key"))?;
            let verifier =
                ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| Rejection::Malformed("Ed25519 key"))?;
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| Rejection::Signature)?;
            verifier.verify_strict(signed, &signature).is_ok()
        }
        _ => return Err(Rejection::Algorithm(format!("{alg} with a {} key", key.kty))),
    };
    if verified { Ok(()) } else { Err(Rejection::Signature) }
}

/// `iss`, `aud`, `exp` (required) and `nbf` (when present); returns `exp`.
fn check_claims(claims: &Value, expect: &Expect, now: u64) -> Result<u64, Rejection> {
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer.as_str()) {
        return Err(Rejection::Claim("wrong issuer"));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == expect.audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expect.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(Rejection::Claim("wrong audience"));
    }
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or(Rejection::Claim("no exp claim"))?;
    if now > exp.saturating_add(expect.leeway_secs) {
        return Err(Rejection::Claim("expired"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(Rejection::Claim("nbf is not a number"))?;
        if now.saturating_add(expect.leeway_secs) < nbf {
            return Err(Rejection::Claim("not yet valid"));
        }
    }
    if claims.get("sub").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(Rejection::Claim("no sub claim"));
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect() -> Expect {
        Expect { issuer: "https://as.test".into(), audience: "https://relay.test/mcp".into(), leeway_secs: 30 }
    }

    fn claims(extra: Value) -> Value {
        let mut base = json!({"iss": "https://as.test", "aud": "https://relay.test/mcp", "sub": "alice", "exp": 2000});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn claims_are_checked_with_leeway() {
        assert_eq!(check_claims(&claims(json!({})), &expect(), 1000), Ok(2000));
        assert_eq!(check_claims(&claims(json!({})), &expect(), 2030), Ok(2000), "within leeway");
        assert_eq!(check_claims(&claims(json!({})), &expect(), 2031), Err(Rejection::Claim("expired")));
        assert_eq!(
            check_claims(&claims(json!({"nbf": 1100})), &expect(), 1000),
            Err(Rejection::Claim("not yet valid"))
        );
        assert!(check_claims(&claims(json!({"aud": ["x", "https://relay.test/mcp"]})), &expect(), 1000).is_ok());
        assert_eq!(
            check_claims(&claims(json!({"aud": "https://other"})), &expect(), 1000),
            Err(Rejection::Claim("wrong audience"))
        );
        assert_eq!(
            check_claims(&claims(json!({"iss": "https://evil"})), &expect(), 1000),
            Err(Rejection::Claim("wrong issuer"))
        );
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key_is_looked_up() {
        let keys = KeySet::parse(r#"{"keys": []}"#).unwrap();
        for alg in ["none", "HS256", "RS512"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k"}}"#));
            let body = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
            let token = format!("{header}.{body}.");
            assert_eq!(verify(&token, &keys, &expect(), 1000).unwrap_err(), Rejection::Algorithm(alg.into()));
        }
        assert_eq!(verify("a.b", &keys, &expect(), 1000).unwrap_err(), Rejection::Malformed("not three parts"));
    }

    #[test]
    fn crit_is_refused_and_long_header_values_are_clipped() {
        let keys = KeySet::parse(r#"{"keys": []}"#).unwrap();
        let body = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k","crit":["x-unknown"]}"#);
        let refused = verify(&format!("{header}.{body}.sig"), &keys, &expect(), 1000).unwrap_err();
        assert_eq!(refused, Rejection::Critical("x-unknown".into()));
        let huge = "A".repeat(3 << 20);
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{huge}"}}"#));
        let message = verify(&format!("{header}.{body}."), &keys, &expect(), 1000).unwrap_err().to_string();
        assert!(message.len() < 120, "{} bytes", message.len());
    }
}
