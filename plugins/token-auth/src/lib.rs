//! `token-auth`: bearer tokens from configuration, each mapped to a principal and roles; and,
//! with mTLS, verified client certificate subjects mapped the same way.
//!
//! Tokens are compared in constant time (SHA-256 digests compared with `subtle`), and no token
//! is ever written to a log or a denial message.

mod dn;
mod tokens;

use std::sync::OnceLock;

use relay::plugin::types::{ConnectInfo, Denial, DenialCode, Principal};
use relay::plugin::{config, log};

wit_bindgen::generate!({ path: "../../wit", world: "auth" });

struct TokenAuth;

impl exports::relay::plugin::authenticator::Guest for TokenAuth {
    fn authenticate(info: ConnectInfo) -> Result<Principal, Denial> {
        let table = match table() {
            Ok(table) => table,
            Err(problem) => {
                log::log(log::Level::Error, &format!("token-auth configuration: {problem}"));
                return Err(deny("authentication is misconfigured"));
            }
        };
        // A client certificate the host verified and this table lists is enough on its own.
        if let Some((principal, roles)) = info.client_cert_subject.as_deref().and_then(|s| table.by_subject(s)) {
            log::log(
                log::Level::Info,
                &format!("authenticated {} as {principal} by client certificate", info.remote_addr),
            );
            return Ok(Principal { id: principal.to_owned(), roles: roles.to_vec() });
        }
        let Some(token) = info.token.as_deref().filter(|t| !t.is_empty()) else {
            log::log(log::Level::Info, &format!("denied {}: no token", info.remote_addr));
            return Err(deny("a bearer token is required"));
        };
        match table.find(token) {
            Some(entry) => {
                log::log(log::Level::Info, &format!("authenticated {} as {}", info.remote_addr, entry.principal));
                Ok(Principal { id: entry.principal.clone(), roles: entry.roles.clone() })
            }
            None => {
                log::log(log::Level::Info, &format!("denied {}: unknown token", info.remote_addr));
                Err(deny("invalid bearer token"))
            }
        }
    }
}

/// The token table, built on the first call of this instance. The host keeps instances warm,
/// so later calls reuse it; configuration cannot change without a new instance.
fn table() -> &'static Result<tokens::Table, String> {
    static TABLE: OnceLock<Result<tokens::Table, String>> = OnceLock::new();
    TABLE.get_or_init(|| tokens::Table::from_config(&config::get_json(), |name| std::env::var(name).ok()))
}

fn deny(message: &str) -> Denial {
    Denial { code: DenialCode::Unauthenticated, message: message.to_owned(), retry_after_ms: None }
}

export!(TokenAuth);
