//! A relay tool's answer as an MCP tool result: pretty-printed as its text content (for people
//! reading a chat client's transcript) and compact as its `structuredContent` (for programs),
//! written straight to the result's JSON text, with no `Value` tree built and written again
//! (`relay_get_status` is what every client of the reference scenario asks for).

use serde::Serialize;

use crate::mcp::Payload;

/// The result's shape: one text content, and the same answer structured.
#[derive(Serialize)]
struct ToolResult<'a, T: ?Sized> {
    content: [TextContent<'a>; 1],
    #[serde(rename = "structuredContent")]
    structured_content: &'a T,
}

#[derive(Serialize)]
struct TextContent<'a> {
    r#type: &'static str,
    text: &'a str,
}

/// `answer` as a tool result.
pub(super) fn tool_result<T: Serialize + ?Sized>(answer: &T) -> Payload {
    let text = serde_json::to_string_pretty(answer).unwrap_or_default();
    let result = ToolResult { content: [TextContent { r#type: "text", text: &text }], structured_content: answer };
    let written = serde_json::value::to_raw_value(&result).ok().and_then(Payload::written);
    // A backend's `serverInfo` nested too deep for a result: written from its value, as before.
    written.unwrap_or_else(|| serde_json::to_value(&result).unwrap_or_default().into())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_answer_is_the_text_pretty_printed_and_the_structured_content() {
        let answer = json!({"b": [1, "two\n\"quoted\""], "a": null});
        let result = super::tool_result(&answer);
        assert!(result.unread_text().is_some(), "written as text, not a value");
        let text = result.text();
        assert!(!text.contains('\n'), "one line: {text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["structuredContent"], answer);
        assert_eq!(value["content"][0]["type"], "text");
        let shown = value["content"][0]["text"].as_str().unwrap();
        assert_eq!(shown, serde_json::to_string_pretty(&answer).unwrap());
        assert_eq!(serde_json::from_str::<serde_json::Value>(shown).unwrap(), answer);
        assert!(!result.is_tool_error());
    }

    #[test]
    fn an_answer_too_deep_for_a_result_is_still_answered_as_a_value() {
        let mut answer = json!(null);
        for _ in 0..130 {
            answer = json!([answer]);
        }
        let result = super::tool_result(&answer);
        assert!(result.unread_text().is_none(), "kept as the value it was");
        assert_eq!(result["structuredContent"], answer);
    }
}
