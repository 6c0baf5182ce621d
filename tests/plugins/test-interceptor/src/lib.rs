//! A configurable interceptor for the end-to-end tests. Configuration:
//! `deny: [tool]` refuses those tools (forbidden); `pin: {param: value}` sets those arguments
//! of tool calls; `trap: [tool]` traps on those tools' requests; `tag: "text"` appends text to
//! the first text of each result (a tool's content, a prompt's message, a resource's
//! contents). Lists: `hide: [name]` hides those items, `rename: {name: new}` renames them,
//! `hide_for: {principal: [name]}` hides items from one principal only, `trap_list: true` traps
//! in the list hook, `trap_list_of: [backend]` traps when asked about those backends' items,
//! `short_list: true` answers with one item too few; `describe_bytes: n` gives every item a
//! description of n bytes.

use exports::relay::plugin::interception::{
    CallInfo, Guest, ListDecision, ListItem, ListKind, RequestDecision, ResultDecision,
};
use relay::plugin::config;
use relay::plugin::types::{Denial, DenialCode, Principal};
use serde_json::Value;

wit_bindgen::generate!({ path: "../../../wit", world: "interceptor" });

struct TestInterceptor;

fn settings() -> Value {
    serde_json::from_str(&config::get_json()).unwrap_or_default()
}

fn listed(settings: &Value, key: &str, name: &str) -> bool {
    settings[key].as_array().is_some_and(|names| names.iter().any(|n| n == name))
}

impl Guest for TestInterceptor {
    fn on_list(principal: Principal, _kind: ListKind, items: Vec<ListItem>) -> ListDecision {
        let settings = settings();
        if settings["trap_list"] == true {
            panic!("told to trap on lists");
        }
        if items.iter().any(|item| listed(&settings, "trap_list_of", &item.backend)) {
            panic!("told to trap on this backend's lists");
        }
        let mut answers: Vec<Option<String>> = items
            .into_iter()
            .map(|item| {
                let hidden_for_principal = settings["hide_for"][&principal.id]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == item.name.as_str()));
                if listed(&settings, "hide", &item.name) || hidden_for_principal {
                    return None;
                }
                let rename = settings["rename"][&item.name].as_str();
                let describe = settings["describe_bytes"].as_u64();
                if rename.is_none() && describe.is_none() {
                    return Some(item.definition);
                }
                let mut definition: Value = serde_json::from_str(&item.definition).unwrap_or_default();
                if let Some(new_name) = rename {
                    definition["name"] = Value::from(new_name);
                }
                if let Some(bytes) = describe {
                    definition["description"] = Value::from("D".repeat(bytes as usize));
                }
                Some(definition.to_string())
            })
            .collect();
        if settings["short_list"] == true {
            answers.pop();
        }
        ListDecision::Edit(answers)
    }

    fn on_request(call: CallInfo, arguments: String) -> RequestDecision {
        let settings = settings();
        if listed(&settings, "trap", &call.name) {
            panic!("told to trap on {}", call.name);
        }
        if listed(&settings, "deny", &call.name) {
            return RequestDecision::Deny(Denial {
                code: DenialCode::Forbidden,
                message: format!("{} is not for {}", call.name, call.principal.id),
                retry_after_ms: None,
            });
        }
        match settings["pin"].as_object().filter(|_| call.method == "tools/call") {
            Some(pins) => {
                let mut arguments: Value = serde_json::from_str(&arguments).unwrap_or_default();
                for (key, value) in pins {
                    arguments[key] = value.clone();
                }
                RequestDecision::Replace(arguments.to_string())
            }
            None => RequestDecision::Proceed,
        }
    }

    fn on_result(_call: CallInfo, result: String) -> ResultDecision {
        let Some(tag) = settings()["tag"].as_str().map(str::to_owned) else { return ResultDecision::Pass };
        let mut result: Value = serde_json::from_str(&result).unwrap_or_default();
        for pointer in ["/content/0/text", "/messages/0/content/text", "/contents/0/text"] {
            if let Some(text) = result.pointer_mut(pointer) {
                *text = Value::from(format!("{}{tag}", text.as_str().unwrap_or_default()));
            }
        }
        ResultDecision::Replace(result.to_string())
    }
}

export!(TestInterceptor);
