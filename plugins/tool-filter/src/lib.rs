//! `tool-filter`: an interceptor that decides what a caller sees and may call: allow and deny
//! rules by tool, backend and role (refused tools are hidden from `tools/list` and refused by
//! name), renames and description overrides, and parameters pinned or dropped (and hidden from
//! input schemas), from its configuration. A call it lets through unchanged is held
//! (`verdict.hold`): the host does not ask again for the same caller and tool for a minute.
//! Results always pass, and the host is told so (it does not show them to the plugin).

mod listing;
mod rules;

use std::sync::{Once, OnceLock};

use exports::relay::plugin::interception::{
    CallInfo, Guest, ListDecision, ListItem, ListKind, RequestDecision, ResultDecision,
};
use relay::plugin::types::{Denial, DenialCode, Principal};
use relay::plugin::{config, log, verdict};

/// How long a `proceed` that read no arguments stands (`verdict.hold`): the longest the host
/// allows. A reload of the plugin (new rules) ends it.
const HOLD_MS: u32 = 60_000;

wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

/// Tells the host, once per instance, that this plugin passes every result: no result needs
/// its `on-result` (`verdict.pass-results-without` with no literals), so none is lowered into it.
fn no_result_needs_this_hook() {
    static NAMED: Once = Once::new();
    NAMED.call_once(|| verdict::pass_results_without(&[]));
}

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
        no_result_needs_this_hook();
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
        no_result_needs_this_hook();
        // Its rules are about tools: the prompts and resources of its backends pass.
        if call.method != "tools/call" {
            verdict::hold(u32::MAX, HOLD_MS);
            return RequestDecision::Proceed;
        }
        match rules().decide(&call.name, &call.backend, &call.principal.roles, &arguments) {
            rules::Decision::Allow(None) => {
                // Decided by the tool, its backend and the caller's roles alone (no parameter
                // is pinned or dropped, so the arguments were not read): the host need not ask
                // again for this caller and tool.
                verdict::hold(u32::MAX, HOLD_MS);
                RequestDecision::Proceed
            }
            rules::Decision::Allow(Some(arguments)) => RequestDecision::Replace(arguments.to_string()),
            rules::Decision::Deny(message) => {
                log::log(log::Level::Info, &format!("refused {} for {}", call.name, call.principal.id));
                RequestDecision::Deny(Denial { code: DenialCode::Forbidden, message, retry_after_ms: None })
            }
        }
    }

    fn on_result(_call: CallInfo, _result: String) -> ResultDecision {
        no_result_needs_this_hook();
        ResultDecision::Pass
    }
}

export!(ToolFilter);
