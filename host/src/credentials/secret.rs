//! A principal's stored secret for a `per_user_secret` backend, bound to where the backend was
//! when it was stored: a backend name removed and added again elsewhere, or its URL changed, is
//! not sent the secrets stored for the old address (an operator re-pointing a name would
//! otherwise collect every user's key). Secrets stored before the binding are bound at their
//! first use.

use serde::{Deserialize, Serialize};

/// What the vault holds for a principal and a `per_user_secret` backend.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The backend's URL when the secret was stored (compared by origin).
    #[serde(rename = "for")]
    url: String,
    secret: String,
}

/// The vault text of `secret`, stored for the backend at `url`.
pub fn record(secret: &str, url: &str) -> String {
    serde_json::to_string(&Record { url: url.to_owned(), secret: secret.to_owned() }).expect("a record serialises")
}

/// What a stored record says for the backend at `url` now.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored for this backend's origin.
    For(String),
    /// Stored for another origin: the user stores it again.
    Elsewhere,
    /// Stored before secrets were bound (the text is the secret itself): to be bound now.
    Unbound(String),
}

/// Reads a stored record for the backend at `url`.
pub fn read(text: String, url: &str) -> Stored {
    match serde_json::from_str::<Record>(&text) {
        Ok(record) if crate::oauth_url::same_origin(&record.url, url) => Stored::For(record.secret),
        Ok(_) => Stored::Elsewhere,
        Err(_) => Stored::Unbound(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_given_only_to_the_origin_it_was_stored_for() {
        let stored = record("alice-key", "http://127.0.0.1:8000/mcp");
        assert!(!stored.contains("alice-key\"") || stored.contains("\"secret\":\"alice-key\""));
        assert_eq!(read(stored.clone(), "http://127.0.0.1:8000/other"), Stored::For("alice-key".into()));
        assert_eq!(read(stored.clone(), "http://127.0.0.1:9000/mcp"), Stored::Elsewhere, "another port");
        assert_eq!(read(stored.clone(), "https://127.0.0.1:8000/mcp"), Stored::Elsewhere, "another scheme");
        assert_eq!(read(stored, "http://evil.example/mcp"), Stored::Elsewhere);
        assert_eq!(read("plain-old-key".into(), "http://h/mcp"), Stored::Unbound("plain-old-key".into()));
    }
}
