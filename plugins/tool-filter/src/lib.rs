//! `tool-filter`: an interceptor that decides which tools a caller may call and with what:
//! an allow list, deny rules with roles exempt, and parameters pinned or dropped, from its
//! configuration. (Hiding and renaming tools in `tools/list` come with the list hooks.)

mod rules;

use std::sync::OnceLock;

use exports::relay::plugin::interception::{CallInfo, Guest, RequestDecision, ResultDecision};
use relay::plugin::types::{Denial, DenialCode};
use relay::plugin::{config, log};

wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

struct ToolFilter;

fn rules() -> &'static Result<rules::Rules, String> {
    static RULES: OnceLock<Result<rules::Rules, String>> = OnceLock::new();
    RULES.get_or_init(|| {
        let settings = serde_json::from_str(&config::get_json()).map_err(|e| format!("configuration: {e}"))?;
        rules::Rules::new(settings)
    })
}

impl Guest for ToolFilter {
    fn on_request(call: CallInfo, arguments: String) -> RequestDecision {
        let rules = match rules() {
            Ok(rules) => rules,
            Err(problem) => {
                log::log(log::Level::Error, &format!("tool-filter {problem}"));
                // Misconfigured: fail (on_error decides), never let everything through.
                panic!("tool-filter is misconfigured: {problem}");
            }
        };
        match rules.decide(&call.name, &call.principal.roles, &arguments) {
            rules::Decision::Allow(None) => RequestDecision::Proceed,
            rules::Decision::Allow(Some(arguments)) => RequestDecision::Replace(arguments.to_string()),
            rules::Decision::Deny(message) => {
                log::log(log::Level::Info, &format!("refused {} for {}", call.name, call.principal.id));
                RequestDecision::Deny(Denial { code: DenialCode::Forbidden, message, retry_after_ms: None })
            }
        }
    }

    fn on_result(_call: CallInfo, _result: String) -> ResultDecision {
        ResultDecision::Pass
    }
}

export!(ToolFilter);
