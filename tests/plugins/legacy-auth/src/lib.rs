//! An auth plugin built against relay:plugin 0.1.0 (`wit/v0.1`, whose `connect-info` has no
//! client certificate subject): the token `legacy-token` is the principal `legacy`.

use relay::plugin::types::{ConnectInfo, Denial, DenialCode, Principal};

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "auth" });

struct LegacyAuth;

impl exports::relay::plugin::authenticator::Guest for LegacyAuth {
    fn authenticate(info: ConnectInfo) -> Result<Principal, Denial> {
        match info.token.as_deref() {
            Some("legacy-token") => Ok(Principal { id: "legacy".into(), roles: vec!["admin".into()] }),
            _ => Err(Denial {
                code: DenialCode::Unauthenticated,
                message: "not a legacy token".into(),
                retry_after_ms: None,
            }),
        }
    }
}

export!(LegacyAuth);
