//! `echo-adapter`: the smallest useful adapter, and the template to copy for a new one.
//!
//! It offers two tools: `echo` returns its message, `count` increments a counter kept in the
//! host's `kv` store (so the count survives a reload of the plugin).

use std::sync::OnceLock;

use relay::plugin::{config, kv, log};
use serde_json::{Value, json};

wit_bindgen::generate!({ path: "../../wit", world: "adapter" });

use exports::relay::plugin::tools::{Guest, Tool, ToolError};

struct EchoAdapter;

impl Guest for EchoAdapter {
    fn list_tools() -> Vec<Tool> {
        vec![
            Tool {
                name: "echo".into(),
                description: "Return the message, with the configured prefix".into(),
                input_schema:
                    json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]})
                        .to_string(),
            },
            Tool {
                name: "count".into(),
                description: "Increment and return a counter that survives plugin reloads".into(),
                input_schema: json!({"type": "object", "properties": {}}).to_string(),
            },
        ]
    }

    fn call_tool(name: String, arguments: String) -> Result<String, ToolError> {
        match name.as_str() {
            "echo" => {
                /// Only the field the tool reads, borrowed from the arguments where it can be.
                #[derive(serde::Deserialize)]
                struct Echo<'a> {
                    #[serde(borrow)]
                    message: Option<std::borrow::Cow<'a, str>>,
                }
                let echo: Echo =
                    serde_json::from_str(&arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
                let message = echo
                    .message
                    .ok_or_else(|| ToolError::InvalidArguments("\"message\" (string) is required".into()))?;
                Ok(text(&format!("{}{message}", prefix())))
            }
            "count" => {
                let count = kv::increment("count", 1, None).map_err(|e| ToolError::Failed(format!("{e:?}")))?;
                log::log(log::Level::Debug, &format!("count is now {count}"));
                Ok(text(&count.to_string()))
            }
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }
}

/// The `prefix` from the plugin's configuration (empty by default), read once per instance:
/// the host keeps instances warm between calls, and an instance's configuration never changes
/// (a new configuration comes with new instances).
fn prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let config: Value = serde_json::from_str(&config::get_json()).unwrap_or(Value::Null);
        config["prefix"].as_str().unwrap_or("").to_owned()
    })
}

/// An MCP `CallToolResult` with one text item, written without building a JSON tree.
fn text(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string serializes");
    format!(r#"{{"content":[{{"type":"text","text":{quoted}}}]}}"#)
}

export!(EchoAdapter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_mcp_call_tool_results() {
        let result: Value = serde_json::from_str(&text("hi \"there\"")).unwrap();
        assert_eq!(result, json!({"content": [{"type": "text", "text": "hi \"there\""}]}));
        let result: Value = serde_json::from_str(&text("hi")).unwrap();
        assert_eq!(result, json!({"content": [{"type": "text", "text": "hi"}]}));
    }

    #[test]
    fn every_listed_schema_is_json() {
        for tool in EchoAdapter::list_tools() {
            assert!(serde_json::from_str::<Value>(&tool.input_schema).unwrap().is_object(), "{}", tool.name);
        }
    }
}
