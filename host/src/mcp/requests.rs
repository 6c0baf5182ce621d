//! Client requests the relay routes, typed once by the session: what they target (tool or
//! prompt name, resource URI, completion reference) is read out and checked here, and the rest
//! of the params travels on as the client sent it (with the stateless envelope taken out of
//! `_meta`). The router maps the client-facing target to the owner's own and rebuilds the
//! params for it; no layer re-reads or edits raw params.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Payload, RpcError, envelope, error_codes};

/// `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The client-facing tool name.
    pub name: String,
    /// The call's arguments (an object), if any: the client's text, passed on as it came
    /// unless an interceptor reads it.
    pub arguments: Option<Payload>,
    /// `_meta` (progress token and the like), without the stateless envelope or the client's
    /// credential.
    pub meta: Option<Value>,
}

/// A request addressed by one name or URI: `prompts/get` (by `name`), `resources/read`,
/// `resources/subscribe` and `resources/unsubscribe` (by `uri`).
#[derive(Debug, Clone, PartialEq)]
pub struct Addressed {
    /// The client-facing name or URI.
    pub target: String,
    /// Which field holds it.
    key: &'static str,
    /// Every other field, `_meta` without the envelope.
    rest: Map<String, Value>,
}

/// `completion/complete`.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// What is completed.
    pub reference: CompletionRef,
    /// The `ref` object as sent (its name or URI is replaced for the owner).
    sent_ref: Map<String, Value>,
    /// Every other field (`argument`, `context`, `_meta` without the envelope).
    rest: Map<String, Value>,
}

/// The `ref` of a completion request.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionRef {
    /// `ref/prompt`, by the client-facing prompt name.
    Prompt(String),
    /// `ref/resource`, by the client-facing URI or URI template.
    Resource(String),
    /// A ref type the relay cannot route.
    Other(String),
}

/// The longest progress token taken (as JSON text). It comes back in each of the call's
/// progress notifications: a megabyte token made each a megabyte (one request of 1 MB came
/// back as 200 MB, pinning memory and CPU for every other client).
const MAX_PROGRESS_TOKEN: usize = 256;

fn invalid(message: String) -> RpcError {
    RpcError::new(error_codes::INVALID_PARAMS, message)
}

/// `_meta` as it may travel on: its progress token, if any, a string or an integer (as the
/// spec has it) of at most [`MAX_PROGRESS_TOKEN`] bytes.
fn checked_meta(meta: Option<Value>) -> Result<Option<Value>, RpcError> {
    let token = meta.as_ref().and_then(|meta| meta.get("progressToken"));
    let fits = match token {
        None | Some(Value::Null) => true,
        Some(Value::String(token)) => token.len() <= MAX_PROGRESS_TOKEN,
        Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
        Some(_) => false,
    };
    if !fits {
        let message =
            format!("_meta.progressToken must be a string of at most {MAX_PROGRESS_TOKEN} bytes or an integer");
        return Err(invalid(message));
    }
    Ok(meta)
}

/// The params as an object, with `_meta` stripped of the stateless envelope.
fn object(params: Option<Value>, needs: &str) -> Result<Map<String, Value>, RpcError> {
    let Some(Value::Object(mut params)) = params else { return Err(invalid(format!("params need {needs}"))) };
    if let Some(meta) = checked_meta(envelope::strip(params.remove("_meta")))? {
        params.insert("_meta".into(), meta);
    }
    Ok(params)
}

/// The members of `tools/call`'s params the relay reads, from their text: the arguments are
/// only delimited, not decoded. Every other member is skipped (none travels on).
#[derive(serde::Deserialize)]
struct ToolCallText<'a> {
    name: Option<Value>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta")]
    meta: Option<Value>,
}

impl ToolCall {
    /// Reads `{name, arguments?, _meta?}`; `_meta` loses the stateless envelope and any
    /// credential ([`call_meta`]).
    pub fn parse(params: Option<Payload>) -> Result<Self, RpcError> {
        if let Some(read) = params.as_ref().and_then(Payload::unread_text).and_then(Self::parse_text) {
            return read;
        }
        let mut params = object(params.map(Payload::into_value), "{name, arguments}")?;
        let Some(Value::String(name)) = params.remove("name") else { return Err(no_name()) };
        let arguments = match params.remove("arguments") {
            None | Some(Value::Null) => None,
            Some(arguments @ Value::Object(_)) => Some(arguments.into()),
            Some(_) => return Err(no_object()),
        };
        Ok(Self { name, arguments, meta: call_meta(params.remove("_meta"))? })
    }

    /// [`ToolCall::parse`] of params as their text, the arguments kept as text; `None` for
    /// params this cannot read as [`ToolCall::parse`] reads a value (not an object, or a member
    /// sent twice, which serde refuses where a value keeps the last): those are read as a value.
    fn parse_text(params: &RawValue) -> Option<Result<Self, RpcError>> {
        // serde reads a struct from an array too (by position): params must be an object.
        if !params.get().starts_with('{') {
            return None;
        }
        let read = serde_json::from_str::<ToolCallText>(params.get()).ok()?;
        let arguments = match read.arguments {
            None => None,
            Some(raw) if raw.get() == "null" => None,
            // A member of params that passed `Payload::from_raw`'s checks passes them too.
            Some(raw) if raw.get().starts_with('{') => Some(Payload::checked(raw.to_owned())),
            Some(_) => return Some(Err(no_object())),
        };
        let Some(Value::String(name)) = read.name else { return Some(Err(no_name())) };
        Some(call_meta(read.meta).map(|meta| Self { name, arguments, meta }))
    }

    /// The params for the tool's owner, which knows it as `upstream_name`: written at once,
    /// the arguments as their text when nothing read them.
    pub fn into_params(self, upstream_name: &str) -> Payload {
        #[derive(serde::Serialize)]
        struct Params<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            arguments: Option<&'a Payload>,
            #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
            meta: Option<&'a Value>,
        }
        let params = Params { name: upstream_name, arguments: self.arguments.as_ref(), meta: self.meta.as_ref() };
        // Written on one line by `serde_json` from values and checked text: checked text too.
        Payload::checked(serde_json::value::to_raw_value(&params).expect("JSON values serialise"))
    }
}

/// A tool call's `_meta` as it travels on, however the params were read: without the
/// stateless envelope and without the client's credential (an emptied one not at all).
fn call_meta(meta: Option<Value>) -> Result<Option<Value>, RpcError> {
    checked_meta(envelope::strip(meta.and_then(envelope::without_credentials)))
}

fn no_name() -> RpcError {
    invalid("tools/call needs \"name\" (string)".into())
}

fn no_object() -> RpcError {
    invalid("\"arguments\" must be an object".into())
}

impl Addressed {
    /// A `prompts/get` request (`name` required).
    pub fn prompt(params: Option<Value>) -> Result<Self, RpcError> {
        Self::parse(params, "name")
    }

    /// A resource request (`uri` required).
    pub fn resource(params: Option<Value>) -> Result<Self, RpcError> {
        Self::parse(params, "uri")
    }

    /// A request for the resource `uri` and nothing else: the relay's own, for a session it
    /// takes up or ends.
    pub fn of_resource(uri: String) -> Self {
        Self { target: uri, key: "uri", rest: Map::new() }
    }

    fn parse(params: Option<Value>, key: &'static str) -> Result<Self, RpcError> {
        let mut rest = object(params, &format!("\"{key}\""))?;
        let Some(Value::String(target)) = rest.remove(key) else {
            return Err(invalid(format!("params need \"{key}\" (string)")));
        };
        Ok(Self { target, key, rest })
    }

    /// The `arguments` object (a prompt's; `{}` when none was sent).
    pub fn arguments(&self) -> Value {
        self.rest.get("arguments").filter(|a| a.is_object()).cloned().unwrap_or_else(|| Value::Object(Map::new()))
    }

    /// The same request with `arguments` instead (an interceptor replaced them).
    pub fn with_arguments(&self, arguments: Value) -> Self {
        let mut request = self.clone();
        request.rest.insert("arguments".into(), arguments);
        request
    }

    /// The params for the owner, which knows the target as `upstream_target`.
    pub fn to_params(&self, upstream_target: &str) -> Value {
        let mut params = self.rest.clone();
        params.insert(self.key.into(), upstream_target.into());
        Value::Object(params)
    }
}

impl Completion {
    /// Reads `{ref: {type, name | uri}, argument, context?, _meta?}`.
    pub fn parse(params: Option<Value>) -> Result<Self, RpcError> {
        let mut rest = object(params, "\"ref\"")?;
        let Some(Value::Object(sent_ref)) = rest.remove("ref") else {
            return Err(invalid("params need \"ref\" (object)".into()));
        };
        let field = |key: &str| sent_ref.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let reference = match field("type").as_str() {
            "ref/prompt" => CompletionRef::Prompt(field("name")),
            "ref/resource" => CompletionRef::Resource(field("uri")),
            other => CompletionRef::Other(other.to_owned()),
        };
        Ok(Self { reference, sent_ref, rest })
    }

    /// The params for the owner, which knows the prompt or URI as `upstream_target`.
    pub fn to_params(&self, upstream_target: &str) -> Value {
        let mut reference = self.sent_ref.clone();
        match &self.reference {
            CompletionRef::Prompt(_) => reference.insert("name".into(), upstream_target.into()),
            CompletionRef::Resource(_) => reference.insert("uri".into(), upstream_target.into()),
            CompletionRef::Other(_) => None,
        };
        let mut params = self.rest.clone();
        params.insert("ref".into(), Value::Object(reference));
        Value::Object(params)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Params as a client's text, and as a value: a tool call reads them alike.
    fn both(text: &str) -> [Option<Payload>; 2] {
        let raw = RawValue::from_string(text.to_owned()).unwrap();
        let unread = Payload::from_raw(raw).unwrap();
        assert!(unread.unread_text().is_some());
        [Some(unread), Some(serde_json::from_str::<Value>(text).unwrap().into())]
    }

    #[test]
    fn a_tool_call_keeps_arguments_and_meta_and_drops_the_envelope_and_the_credential() {
        let params = r#"{"name": "echo", "arguments": {"text": "hi", "n": 1.50},
            "_meta": {"progressToken": 3, "io.modelcontextprotocol/protocolVersion": "2026-07-28", "Authorization": "Bearer t"},
            "stray": true}"#
            .replace('\n', "");
        for params in both(&params) {
            let call = ToolCall::parse(params).unwrap();
            assert_eq!(call.name, "echo");
            let params = call.into_params("upstream_echo");
            let expected =
                r#"{"name": "upstream_echo", "arguments": {"text": "hi", "n": 1.50}, "_meta": {"progressToken": 3}}"#;
            assert_eq!(*params, serde_json::from_str::<Value>(expected).unwrap());
        }
        // The arguments travel as the client wrote them (member order, spacing, number text).
        let [unread, _] = both(r#"{"arguments": { "z": 1.50, "a": [true] }, "name": "t"}"#);
        let written = ToolCall::parse(unread).unwrap().into_params("u");
        assert_eq!(written.text(), r#"{"name":"u","arguments":{ "z": 1.50, "a": [true] }}"#);
        // A member sent twice is read as a value reads it (the last one), its arguments written
        // from that value: nothing downstream can read them another way.
        let [unread, _] = both(r#"{"name": "t", "arguments": {"p": "a"}, "arguments": {"p": "b"}}"#);
        let call = ToolCall::parse(unread).unwrap();
        assert_eq!(call.into_params("t").text(), r#"{"name":"t","arguments":{"p":"b"}}"#);
        for bad in [
            "[]",
            r#"["t", {}]"#,
            r#"["t", {}, null]"#,
            r#"{"name": 1}"#,
            r#"{"name": "t", "arguments": [1]}"#,
            r#"{"arguments": {}}"#,
        ] {
            for params in both(bad) {
                let error = ToolCall::parse(params).unwrap_err();
                assert_eq!(error.code, error_codes::INVALID_PARAMS, "{bad}");
            }
        }
        let none = ToolCall::parse(both(r#"{"name": "t", "arguments": null}"#)[0].clone()).unwrap();
        assert_eq!(none.arguments, None);
    }

    #[test]
    fn a_progress_token_is_a_short_string_or_an_integer() {
        let call = |token: Value| json!({"name": "t", "_meta": {"progressToken": token}}).to_string();
        for token in [json!("abc-1"), json!(7), json!("x".repeat(256))] {
            for params in both(&call(token.clone())) {
                assert_eq!(ToolCall::parse(params).unwrap().meta, Some(json!({"progressToken": token})));
            }
        }
        for token in [json!("x".repeat(257)), json!(1.5), json!({"a": 1}), json!([1])] {
            for params in both(&call(token.clone())) {
                assert_eq!(ToolCall::parse(params).unwrap_err().code, error_codes::INVALID_PARAMS, "{token}");
            }
            let read = json!({"uri": "file:///a", "_meta": {"progressToken": token}});
            assert!(Addressed::resource(Some(read)).is_err(), "{token}");
        }
    }

    #[test]
    fn addressed_requests_pass_every_other_field_and_swap_the_target() {
        let prompt = Addressed::prompt(Some(json!({"name": "p", "arguments": {"x": "1"}}))).unwrap();
        assert_eq!(prompt.target, "p");
        assert_eq!(prompt.to_params("q"), json!({"name": "q", "arguments": {"x": "1"}}));
        let resource = Addressed::resource(Some(json!({"uri": "file:///a"}))).unwrap();
        assert_eq!(resource.to_params("file:///b"), json!({"uri": "file:///b"}));
        assert!(Addressed::resource(Some(json!({"name": "x"}))).is_err());
        assert!(Addressed::prompt(None).is_err());
    }

    #[test]
    fn completion_refs_are_read_and_rebuilt() {
        let params = json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": "v"}});
        let completion = Completion::parse(Some(params)).unwrap();
        assert_eq!(completion.reference, CompletionRef::Prompt("p".into()));
        assert_eq!(
            completion.to_params("q"),
            json!({"ref": {"type": "ref/prompt", "name": "q"}, "argument": {"name": "a", "value": "v"}})
        );
        let other = Completion::parse(Some(json!({"ref": {"type": "ref/odd"}}))).unwrap();
        assert_eq!(other.reference, CompletionRef::Other("ref/odd".into()));
        assert!(Completion::parse(Some(json!({"argument": {}}))).is_err());
    }
}
