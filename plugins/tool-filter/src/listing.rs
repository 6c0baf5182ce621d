//! What `tool-filter` makes of the tool list for one caller: tools the caller may not use are
//! hidden (the relay then refuses them by name too), tools are renamed and redescribed, and
//! parameters the client does not choose (pinned or dropped) leave the input schema.

use serde_json::Value;

use crate::rules::Rules;

/// What happens to one listed tool.
#[derive(Debug, PartialEq)]
pub enum Edit {
    /// Listed as it is.
    Keep,
    /// Not listed (and not callable).
    Hide,
    /// Listed with this definition.
    Replace(Value),
}

/// The edit of tool `name` (catalog name) of `backend`, defined as `definition`, for a caller
/// with `roles`.
pub fn edit_tool(rules: &Rules, backend: &str, name: &str, roles: &[String], definition: &str) -> Edit {
    if rules.refusal(name, backend, roles).is_some() {
        return Edit::Hide;
    }
    let renamed = rules.renamed(name, backend);
    let described = rules.described(name, backend);
    let fixed = rules.fixed_params(name, backend);
    if renamed.is_none() && described.is_none() && fixed.is_empty() {
        return Edit::Keep;
    }
    let Ok(original) = serde_json::from_str::<Value>(definition) else { return Edit::Keep };
    let mut tool = original.clone();
    if let Some(new_name) = renamed {
        tool["name"] = Value::from(new_name);
    }
    if let Some(description) = described {
        tool["description"] = Value::from(description);
    }
    if let Some(schema) = tool.get_mut("inputSchema") {
        if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            fixed.iter().for_each(|p| {
                properties.remove(*p);
            });
        }
        if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|r| !r.as_str().is_some_and(|r| fixed.contains(&r)));
        }
    }
    if tool == original { Edit::Keep } else { Edit::Replace(tool) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::Rules;

    fn rules(config: Value) -> Rules {
        Rules::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn hides_renames_redescribes_and_takes_fixed_params_out_of_the_schema() {
        let rules = rules(json!({
            "deny": [{"tools": ["a__env"], "unless_roles": ["admin"]}],
            "rename": {"a__echo": "say"},
            "describe": {"a__echo": "Says it back."},
            "pin": [{"tools": ["a__echo"], "params": {"loud": false}}],
            "drop": [{"tools": ["a__*"], "params": ["secret"]}],
        }));
        let tool = json!({
            "name": "a__echo",
            "description": "Echo",
            "inputSchema": {"type": "object", "properties": {"message": {}, "loud": {}, "secret": {}}, "required": ["message", "secret"]},
        });
        assert_eq!(edit_tool(&rules, "a", "a__env", &[], "{}"), Edit::Hide);
        assert_eq!(edit_tool(&rules, "a", "a__env", &["admin".into()], r#"{"name":"a__env"}"#), Edit::Keep);
        let Edit::Replace(edited) = edit_tool(&rules, "a", "a__echo", &[], &tool.to_string()) else { panic!() };
        assert_eq!(edited["name"], "say");
        assert_eq!(edited["description"], "Says it back.");
        assert_eq!(edited["inputSchema"]["properties"], json!({"message": {}}));
        assert_eq!(edited["inputSchema"]["required"], json!(["message"]));
        assert_eq!(edit_tool(&rules, "b", "b__x", &[], "{}"), Edit::Keep);
    }
}
