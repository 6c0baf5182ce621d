//! `tool-filter`: an interceptor that decides what a caller sees and may call: allow and deny
//! rules by tool, backend and role (refused tools are hidden from `tools/list` and refused by
//! name), renames and description overrides, and parameters pinned or dropped (and hidden from
//! input schemas), from its configuration.

mod listing;
mod rules;

use std::sync::OnceLock;

use exports::relay::plugin::interception::{
    CallInfo, Guest, ListDecision, ListItem, ListKind, RequestDecision, ResultDecision,
};
use relay::plugin::types::{Denial, DenialCode, Principal};
use relay::plugin::{config, log};

wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

struct ToolFilter;

/// The compiled rules; a misconfiguration traps every hook (the host's `on_error` decides),
/// never lets everything through.
fn rules() -> &'static rules::Rules {
    static RULES: OnceLock<Result<rules::Rules, String>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        let settings = serde_json::from_str(&config::get_json()).map_err(|e| format!("configuration: {e}"))?;
        rules::Rules::new(settings)
    });
    match rules {
        Ok(rules) => rules,
        Err(problem) => {
            log::log(log::Level::Error, &format!("tool-filter {problem}"));
            panic!("tool-filter is misconfigured: {problem}");
        }
    }
}

impl Guest for ToolFilter {
    fn on_list(principal: Principal, kind: ListKind, items: Vec<ListItem>) -> ListDecision {
        if kind != ListKind::Tools {
            return ListDecision::Pass;
        }
        let rules = rules();
        let edits: Vec<listing::Edit> = items
            .iter()
            .map(|item| listing::edit_tool(rules, &item.backend, &item.name, &principal.roles, &item.definition))
            .collect();
        if edits.iter().all(|e| *e == listing::Edit::Keep) {
            return ListDecision::Pass;
        }
        let answers = items.into_iter().zip(edits).map(|(item, edit)| match edit {
            listing::Edit::Keep => Some(item.definition),
            listing::Edit::Hide => None,
            listing::Edit::Replace(tool) => Some(tool.to_string()),
        });
        ListDecision::Edit(answers.collect())
    }

    fn on_request(call: CallInfo, arguments: String) -> RequestDecision {
        // Its rules are about tools: the prompts and resources of its backends pass.
        if call.method != "tools/call" {
            return RequestDecision::Proceed;
        }
        match rules().decide(&call.name, &call.backend, &call.principal.roles, &arguments) {
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
