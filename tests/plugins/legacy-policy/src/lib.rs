//! A policy built against relay:plugin 0.1.0 (`wit/v0.1`): it counts requests in `kv`, logs,
//! and denies the tool `relay_list_servers` saying how many requests it has seen.

use relay::plugin::types::{Denial, DenialCode, RequestInfo};
use relay::plugin::{kv, log};

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "policy" });

struct LegacyPolicy;

impl exports::relay::plugin::policy_check::Guest for LegacyPolicy {
    fn check(request: RequestInfo) -> Result<(), Denial> {
        let seen = kv::increment("seen", 1, None).unwrap_or(-1);
        log::log(log::Level::Info, &format!("legacy policy saw {} ({seen})", request.method));
        if request.tool.as_deref() == Some("relay_list_servers") {
            return Err(Denial {
                code: DenialCode::Forbidden,
                message: format!("legacy policy says no (request {seen})"),
                retry_after_ms: None,
            });
        }
        Ok(())
    }
}

export!(LegacyPolicy);
