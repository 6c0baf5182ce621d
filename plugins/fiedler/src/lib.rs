//! `fiedler`: multi-model LLM fan-out as an adapter plugin. One `fiedler_send` call sends a
//! prompt (and files) to several OpenAI-compatible chat-completions endpoints at once, writes
//! each answer to its own file under the output directory and returns every outcome.
//!
//! Everything it touches is granted in relay.yaml: the provider hosts (`grants.http`), the API
//! key variables (`grants.env`), the directories files are read from and answers written to
//! (`grants.files`), the clock. The default model set and output directory chosen at run time
//! live in the host's `kv`, so they survive a reload of the plugin.

mod chat;
mod config;
mod fanout;
mod files;

use relay::plugin::{config as host_config, kv, log};
use serde_json::{Value, json};

wit_bindgen::generate!({ path: "../../wit", world: "adapter" });

use exports::relay::plugin::tools::{Guest, Tool, ToolError};

use config::Settings;

/// `kv` key of the default model set chosen with `fiedler_set_models`.
const DEFAULT_MODELS_KEY: &str = "default_models";
/// `kv` key of the output directory chosen with `fiedler_set_output`.
const OUTPUT_DIR_KEY: &str = "output_dir";

struct Fiedler;

impl Guest for Fiedler {
    fn list_tools() -> Vec<Tool> {
        let tool = |name: &str, description: &str, schema: Value| Tool {
            name: name.into(),
            description: description.into(),
            input_schema: schema.to_string(),
        };
        let strings = json!({"type": "array", "items": {"type": "string"}});
        vec![
            tool(
                "fiedler_send",
                "Send a prompt (and files) to several LLMs in parallel; every answer is written to its own file",
                json!({"type": "object", "properties": {
                    "prompt": {"type": "string", "description": "The prompt"},
                    "models": {"type": "array", "items": {"type": "string"}, "description": "Model names or aliases (default: the default set)"},
                    "files": {"type": "array", "items": {"type": "string"}, "description": "Paths of files to include, in granted directories"},
                }, "required": ["prompt"]}),
            ),
            tool("fiedler_list_models", "The configured models, their aliases and limits", json!({"type": "object"})),
            tool("fiedler_get_config", "The default models and the output directory", json!({"type": "object"})),
            tool(
                "fiedler_set_models",
                "Set the default model set",
                json!({"type": "object", "properties": {"models": strings}, "required": ["models"]}),
            ),
            tool(
                "fiedler_set_output",
                "Set the directory answers are written to (it must be granted writable)",
                json!({"type": "object", "properties": {"output_dir": {"type": "string"}}, "required": ["output_dir"]}),
            ),
        ]
    }

    fn call_tool(name: String, arguments: String) -> Result<String, ToolError> {
        let arguments: Value = match arguments.trim() {
            "" => json!({}),
            text => serde_json::from_str(text).map_err(|e| ToolError::InvalidArguments(e.to_string()))?,
        };
        let settings = Settings::parse(&host_config::get_json()).map_err(ToolError::Failed)?;
        match name.as_str() {
            "fiedler_send" => send(&settings, &arguments),
            "fiedler_list_models" => Ok(structured(list_models(&settings))),
            "fiedler_get_config" => Ok(structured(json!({
                "default_models": default_models(&settings),
                "output_dir": output_dir(&settings),
                "models": settings.models.keys().collect::<Vec<_>>(),
            }))),
            "fiedler_set_models" => set_models(&settings, &arguments),
            "fiedler_set_output" => set_output(&arguments),
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }
}

fn send(settings: &Settings, arguments: &Value) -> Result<String, ToolError> {
    let invalid = |message: &str| ToolError::InvalidArguments(message.to_owned());
    let prompt = arguments["prompt"].as_str().filter(|p| !p.trim().is_empty());
    let prompt = prompt.ok_or_else(|| invalid("\"prompt\" (non-empty string) is required"))?;
    let models = match &arguments["models"] {
        Value::Null => default_models(settings),
        value => string_list(value).ok_or_else(|| invalid("\"models\" must be an array of strings"))?,
    };
    if models.is_empty() {
        return Err(invalid("no models: name some in \"models\" or set defaults with fiedler_set_models"));
    }
    // Each name costs an entry in the answer (and its checks): a list longer than every name
    // and alias configured is no request for models, and could be made to cost a lot.
    let most = settings.models.len() + settings.models.values().map(|m| m.aliases.len()).sum::<usize>();
    if models.len() > most {
        return Err(invalid(&format!(
            "{} models named; at most {most} (every configured name and alias)",
            models.len()
        )));
    }
    let paths = match &arguments["files"] {
        Value::Null => Vec::new(),
        value => string_list(value).ok_or_else(|| invalid("\"files\" must be an array of paths"))?,
    };
    let documents = files::read_all(&paths, settings.max_file_bytes).map_err(ToolError::InvalidArguments)?;
    let content = files::compose(prompt, &documents);
    let output_dir = output_dir(settings);
    let report = fanout::run(settings, &models, &content, &output_dir);
    log::log(
        log::Level::Info,
        &format!("fiedler_send: {} model(s), status {}, {} ms", models.len(), report["status"], report["duration_ms"]),
    );
    let failed = report["status"] == "failure";
    Ok(json!({
        "content": [{"type": "text", "text": report.to_string()}],
        "structuredContent": report,
        "isError": failed,
    })
    .to_string())
}

fn list_models(settings: &Settings) -> Value {
    let models: Vec<Value> = settings
        .models
        .iter()
        .map(|(name, model)| {
            json!({
                "name": name,
                "provider_model": model.provider_model(name),
                "endpoint": model.endpoint(),
                "aliases": model.aliases,
                "timeout_ms": model.timeout_ms,
                "max_tokens": model.max_tokens,
                "api_key_configured": model.api_key_env.as_deref().is_some_and(|v| std::env::var(v).is_ok()),
            })
        })
        .collect();
    json!({"models": models, "default_models": default_models(settings)})
}

fn set_models(settings: &Settings, arguments: &Value) -> Result<String, ToolError> {
    let models = string_list(&arguments["models"])
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ToolError::InvalidArguments("\"models\" must be a non-empty array of strings".into()))?;
    let mut canonical = Vec::new();
    for model in &models {
        let (name, _) = settings.resolve(model).ok_or_else(|| {
            ToolError::InvalidArguments(format!("unknown model {model} (configured: {})", settings.names()))
        })?;
        canonical.push(name.to_owned());
    }
    kv::set(DEFAULT_MODELS_KEY, &json!(canonical).to_string(), None)
        .map_err(|e| ToolError::Failed(format!("{e:?}")))?;
    Ok(structured(json!({"default_models": canonical})))
}

fn set_output(arguments: &Value) -> Result<String, ToolError> {
    let dir = arguments["output_dir"]
        .as_str()
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| ToolError::InvalidArguments("\"output_dir\" must be an absolute path".into()))?;
    files::ensure_writable(dir).map_err(ToolError::InvalidArguments)?;
    kv::set(OUTPUT_DIR_KEY, dir, None).map_err(|e| ToolError::Failed(format!("{e:?}")))?;
    Ok(structured(json!({"output_dir": dir})))
}

/// The default model set: chosen at run time, else configured.
fn default_models(settings: &Settings) -> Vec<String> {
    kv::get(DEFAULT_MODELS_KEY)
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| settings.default_models.clone())
}

/// The output directory: chosen at run time, else configured.
fn output_dir(settings: &Settings) -> String {
    kv::get(OUTPUT_DIR_KEY).ok().flatten().unwrap_or_else(|| settings.output_dir.clone())
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// An MCP `CallToolResult` carrying `value` as structured content and as text.
fn structured(value: Value) -> String {
    json!({"content": [{"type": "text", "text": value.to_string()}], "structuredContent": value}).to_string()
}

export!(Fiedler);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_schema_is_json() {
        for tool in Fiedler::list_tools() {
            assert!(serde_json::from_str::<Value>(&tool.input_schema).unwrap().is_object(), "{}", tool.name);
        }
    }

    #[test]
    fn structured_results_carry_text_too() {
        let result: Value = serde_json::from_str(&structured(json!({"a": 1}))).unwrap();
        assert_eq!(result["structuredContent"]["a"], 1);
        assert_eq!(result["content"][0]["text"], r#"{"a":1}"#);
    }
}
