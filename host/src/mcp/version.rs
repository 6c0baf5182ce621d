//! Protocol versions the relay speaks to clients, and how one is chosen.

/// Newest first. 2025-03-26 is kept because it is what Streamable HTTP clients assume when
/// they send no `MCP-Protocol-Version` header.
pub const SUPPORTED: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// Stateless versions (no `initialize`; each request carries its version in `_meta`), newest
/// first.
pub const STATELESS: &[&str] = &["2026-07-28"];

/// Versions that begin with the `initialize` handshake, including ones the relay does not speak
/// but recognises (a request naming one is a handshake-era request, not a stateless one).
pub const HANDSHAKE_ERA: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The version the relay prefers and offers when a client asks for one it does not know.
pub const LATEST: &str = SUPPORTED[0];

/// The version the relay itself asks its upstreams for.
pub const UPSTREAM_REQUEST: &str = "2025-06-18";

/// True when the relay speaks `version`.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// True when `version` is a stateless version the relay speaks.
pub fn is_stateless(version: &str) -> bool {
    STATELESS.contains(&version)
}

/// The version to answer an `initialize` with: the client's own when supported, else the latest
/// (the client then decides whether it can continue, as the specification describes).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested.and_then(|r| SUPPORTED.iter().find(|v| **v == r).copied()).unwrap_or(LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_a_supported_version_and_offers_the_latest_otherwise() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("1999-01-01")), LATEST);
        assert_eq!(negotiate(None), LATEST);
    }
}
