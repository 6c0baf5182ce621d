//! `redact`: an interceptor that masks secrets and personal data in tool results before they
//! reach the client: API keys and tokens of common shapes, private keys, e-mail addresses, and
//! patterns from its configuration. What it masked is counted in the result's
//! `_meta["relay/redacted"]`. Requests pass unchanged (held: the host does not ask for each),
//! and results that hold none of the literals its rules need are passed by the host unread.

mod masking;

use std::sync::{Once, OnceLock};

use exports::relay::plugin::interception::{
    CallInfo, Guest, ListDecision, ListItem, ListKind, RequestDecision, ResultDecision,
};
use relay::plugin::types::Principal;
use relay::plugin::{config, log, verdict};

wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

struct Redact;

/// The compiled rules of this instance (instances are kept warm; the configuration does not
/// change while one lives).
fn masker() -> &'static Result<masking::Masker, String> {
    static MASKER: OnceLock<Result<masking::Masker, String>> = OnceLock::new();
    MASKER.get_or_init(|| {
        let settings: masking::Settings =
            serde_json::from_str(&config::get_json()).map_err(|e| format!("configuration: {e}"))?;
        masking::Masker::new(&settings)
    })
}

/// Tells the host, once per instance, which literals a result must hold for this hook to have
/// anything to mask; the host then passes results without them by itself.
fn name_needed_literals(masker: &masking::Masker) {
    static NAMED: Once = Once::new();
    NAMED.call_once(|| {
        if let Some(literals) = masker.needed_literals() {
            verdict::pass_results_without(literals);
        }
    });
}

impl Guest for Redact {
    fn on_list(_principal: Principal, _kind: ListKind, _items: Vec<ListItem>) -> ListDecision {
        ListDecision::Pass
    }

    fn on_request(_call: CallInfo, _arguments: String) -> RequestDecision {
        // Requests always pass: the host need not ask again (for a minute, or until a reload).
        verdict::hold(u32::MAX, 60_000);
        RequestDecision::Proceed
    }

    fn on_result(call: CallInfo, result: String) -> ResultDecision {
        let masker = match masker() {
            Ok(masker) => masker,
            Err(problem) => {
                log::log(log::Level::Error, &format!("redact {problem}"));
                // Misconfigured: fail (the host's on_error decides), never pass unmasked.
                panic!("redact is misconfigured: {problem}");
            }
        };
        name_needed_literals(masker);
        match masker.redact_result(&result) {
            Some(redacted) => {
                log::log(log::Level::Debug, &format!("masked parts of {}/{}'s result", call.backend, call.name));
                ResultDecision::Replace(redacted)
            }
            None => ResultDecision::Pass,
        }
    }
}

export!(Redact);
