//! An adapter built against relay:plugin 0.1.0 (`wit/v0.1`): one tool, `legacy_echo`, and an
//! error for any other name.

use exports::relay::plugin::tools::{Guest, Tool, ToolError};

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "adapter" });

struct LegacyAdapter;

impl Guest for LegacyAdapter {
    fn list_tools() -> Vec<Tool> {
        vec![Tool {
            name: "legacy_echo".into(),
            description: "Echoes its arguments".into(),
            input_schema: r#"{"type": "object"}"#.into(),
        }]
    }

    fn call_tool(name: String, arguments: String) -> Result<String, ToolError> {
        if name != "legacy_echo" {
            return Err(ToolError::UnknownTool(name));
        }
        let text = format!("legacy: {arguments}").replace('"', "'");
        Ok(format!(r#"{{"content": [{{"type": "text", "text": "{text}"}}]}}"#))
    }
}

export!(LegacyAdapter);
