//! JSON-RPC 2.0 message types as MCP uses them (no batches since 2025-06-18).

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::payload::Payload;
use super::rpc_error::{RpcError, error_codes};

/// A request: has an id and expects exactly one response.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The caller's id (string or number), echoed in the response.
    pub id: Value,
    /// The method name, e.g. `tools/call`.
    pub method: String,
    /// The params object (or array), when present: as its sender wrote it until something
    /// reads it ([`Payload`]), so a forwarded call's arguments are not decoded and written again.
    pub params: Option<Payload>,
}

/// A notification: no id, no response.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The method name, e.g. `notifications/initialized`.
    pub method: String,
    /// The params object, when present.
    pub params: Option<Value>,
}

/// A response to a request: a result or an error, never both.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request this answers (`null` when the request could not be read).
    pub id: Value,
    /// The outcome: a result as a backend sent it (passed on as text) or as the relay built it.
    pub outcome: Result<Payload, RpcError>,
}

impl Response {
    /// A successful response.
    pub fn ok(id: Value, result: impl Into<Payload>) -> Self {
        Self { id, outcome: Ok(result.into()) }
    }

    /// An error response.
    pub fn err(id: Value, error: RpcError) -> Self {
        Self { id, outcome: Err(error) }
    }
}

/// Any JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Expects a response.
    Request(Request),
    /// Fire and forget.
    Notification(Notification),
    /// Answers a request.
    Response(Response),
}

impl Message {
    /// Classifies a parsed JSON value; `Err` carries the error response to send back.
    pub fn from_value(value: Value) -> Result<Self, Response> {
        let Value::Object(mut obj) = value else {
            let msg = if value.is_array() {
                "batches are not supported; send one JSON-RPC message at a time"
            } else {
                "a JSON-RPC message must be an object"
            };
            return Err(invalid(Value::Null, msg));
        };
        let id = obj.remove("id");
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid(id.unwrap_or(Value::Null), "\"jsonrpc\" must be \"2.0\""));
        }
        if let Some(id) = &id
            && !(id.is_string() || id.is_number())
        {
            return Err(invalid(Value::Null, "\"id\" must be a string or a number"));
        }
        let params = obj.remove("params");
        if let Some(p) = &params
            && !(p.is_object() || p.is_array())
        {
            return Err(invalid(id.unwrap_or(Value::Null), "\"params\" must be an object"));
        }
        match (obj.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => {
                Ok(Message::Request(Request { id, method, params: params.map(Payload::from) }))
            }
            (Some(Value::String(method)), None) => Ok(Message::Notification(Notification { method, params })),
            (Some(_), id) => Err(invalid(id.unwrap_or(Value::Null), "\"method\" must be a string")),
            (None, Some(id)) => {
                if let Some(result) = obj.remove("result") {
                    Ok(Message::Response(Response::ok(id, result)))
                } else if let Some(error) = obj.get("error") {
                    Ok(Message::Response(Response::err(id, RpcError::from_value(error))))
                } else {
                    Err(invalid(id, "a message with an id needs \"method\", \"result\" or \"error\""))
                }
            }
            (None, None) => Err(invalid(Value::Null, "not a JSON-RPC request, notification or response")),
        }
    }

    /// Reads one message from its JSON text. A well-formed message is read straight into its
    /// parts, with no map built for its envelope (every call is read twice so, once from its
    /// client and once from its backend); anything else is read as a value and judged by
    /// [`Message::from_value`], so each refusal keeps one home and one wording.
    pub fn from_slice(text: &[u8]) -> Result<Result<Self, Response>, serde_json::Error> {
        // Read as text: members it skips are checked to be UTF-8 too (the value path checks
        // every string; serde skips an ignored one unchecked).
        match std::str::from_utf8(text) {
            Ok(text) => Self::from_text(text),
            Err(_) => serde_json::from_slice::<Value>(text).map(Message::from_value),
        }
    }

    /// [`Message::from_slice`] of text already known to be UTF-8 (a backend's answer once its
    /// body was checked, an SSE event, a line).
    pub fn from_text(text: &str) -> Result<Result<Self, Response>, serde_json::Error> {
        let object = text.trim_start_matches(|c: char| c.is_ascii_whitespace()).starts_with('{');
        if object
            && let Ok(envelope) = serde_json::from_str::<Envelope>(text)
            && let Some(message) = envelope.into_message()
        {
            return Ok(Ok(message));
        }
        serde_json::from_str::<Value>(text).map(Message::from_value)
    }

    /// The JSON form of the message.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request(r) => {
                with_params(json!({"jsonrpc": "2.0", "id": r.id, "method": r.method}), r.params.as_deref())
            }
            Message::Notification(n) => with_params(json!({"jsonrpc": "2.0", "method": n.method}), n.params.as_ref()),
            Message::Response(r) => match &r.outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": r.id, "result": result}),
                Err(e) => json!({"jsonrpc": "2.0", "id": r.id, "error": e.to_value()}),
            },
        }
    }

    /// The message serialised on one line, as every transport sends it (written from the
    /// message as it is: params and results are not copied first).
    pub fn to_text(&self) -> String {
        fn wire<P: serde::Serialize>(wire: Wire<'_, P>) -> String {
            serde_json::to_string(&wire).expect("JSON values serialise")
        }
        match self {
            Message::Request(r) => {
                wire(Wire { id: Some(&r.id), method: Some(&r.method), params: r.params.as_ref(), ..Wire::EMPTY })
            }
            Message::Notification(n) => {
                wire(Wire { method: Some(&n.method), params: n.params.as_ref(), ..Wire::EMPTY })
            }
            Message::Response(r) => match &r.outcome {
                Ok(result) => wire(Wire::<Value> { id: Some(&r.id), result: Some(result), ..Wire::EMPTY }),
                Err(e) => wire(Wire::<Value> { id: Some(&r.id), error: Some(e.to_value()), ..Wire::EMPTY }),
            },
        }
    }
}

/// A request of the relay's own (numbered by its connection) on one line, from borrowed parts
/// (an upstream request that may be re-sent keeps its params and is not copied for each
/// attempt). The id is written as a number straight away: as a `Value` it would be a string
/// allocated for each request (numbers keep their text).
pub fn request_text(id: u64, method: &str, params: Option<&Payload>) -> String {
    /// The members in the order [`Wire`] writes them.
    #[derive(serde::Serialize)]
    struct RequestWire<'a> {
        id: u64,
        jsonrpc: &'static str,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a Payload>,
    }
    serde_json::to_string(&RequestWire { id, jsonrpc: "2.0", method, params }).expect("JSON values serialise")
}

/// Any JSON-RPC message as written on the wire, fields in the order `to_value` gives them;
/// `P` is what its params are (a request's [`Payload`], a notification's value).
#[derive(serde::Serialize)]
struct Wire<'a, P> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a P>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Payload>,
}

/// A message's members as read from the wire, before they are judged; `Some(Null)` for a
/// member that is present and `null` (which is not the same as absent). The params and the
/// result are kept as the text they came as ([`Payload`]).
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    jsonrpc: Option<&'a str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, borrow, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

impl Envelope<'_> {
    /// The message, when it is one exactly as [`Message::from_value`] would read it; `None`
    /// for anything that function refuses (it then says why).
    fn into_message(self) -> Option<Message> {
        let id_ok = self.id.as_ref().is_none_or(|id| id.is_string() || id.is_number());
        let params_ok = self.params.is_none_or(|p| p.get().starts_with(['{', '[']));
        if self.jsonrpc != Some("2.0") || !id_ok || !params_ok {
            return None;
        }
        // Params no value can hold ([`Payload::from_raw`]) are read as a value, and refused so.
        let params = self.params;
        match (self.method, self.id) {
            (Some(Value::String(method)), Some(id)) => {
                let params = match params {
                    Some(params) => Some(Payload::from_raw(params.to_owned())?),
                    None => None,
                };
                Some(Message::Request(Request { id, method, params }))
            }
            (Some(Value::String(method)), None) => {
                let params = match params {
                    Some(params) => Some(serde_json::from_str(params.get()).ok()?),
                    None => None,
                };
                Some(Message::Notification(Notification { method, params }))
            }
            (None, Some(id)) => match (self.result, &self.error) {
                // A result no value can hold ([`Payload::from_raw`]): read as a value, and
                // refused so.
                (Some(result), _) => Some(Message::Response(Response::ok(id, Payload::from_raw(result.to_owned())?))),
                (None, Some(error)) => Some(Message::Response(Response::err(id, RpcError::from_value(error)))),
                (None, None) => None,
            },
            _ => None,
        }
    }
}

/// A member that is present, `null` included (`Option`'s own reading takes `null` for absent).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl<P: 'static> Wire<'_, P> {
    const EMPTY: Wire<'static, P> =
        Wire { error: None, id: None, jsonrpc: "2.0", method: None, params: None, result: None };
}

fn with_params(mut value: Value, params: Option<&Value>) -> Value {
    if let Some(p) = params {
        value["params"] = p.clone();
    }
    value
}

fn invalid(id: Value, message: &str) -> Response {
    Response::err(id, RpcError::new(error_codes::INVALID_REQUEST, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, Response> {
        Message::from_value(serde_json::from_str(text).unwrap())
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), Ok(Message::Request(_))));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification(_))
        ));
        let Ok(Message::Response(r)) = parse(r#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no"}}"#) else {
            panic!("not a response")
        };
        assert_eq!(r.outcome.unwrap_err().code, -1);
    }

    #[test]
    fn a_request_of_the_relays_own_is_written_as_any_request_is() {
        let params = serde_json::json!({"name": "echo", "arguments": {"n": 18446744073709551615u64}});
        let text = request_text(u64::MAX, "tools/call", Some(&params.clone().into()));
        let request = Request { id: u64::MAX.into(), method: "tools/call".into(), params: Some(params.into()) };
        assert_eq!(text, Message::Request(request).to_text());
        assert_eq!(request_text(7, "ping", None), r#"{"id":7,"jsonrpc":"2.0","method":"ping"}"#);
    }

    #[test]
    fn rejects_what_is_not_json_rpc() {
        for bad in [r#"[]"#, r#"{"id":1,"method":"x"}"#, r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, r#"3"#] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.outcome.unwrap_err().code, error_codes::INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn reading_text_directly_agrees_with_reading_a_value() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#" {"method":"tools/call","params":{"name":"x","n":1.50},"id":"a","jsonrpc":"2.0","extra":1}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":7,"result":{"a":[1,2]},"error":{"code":1}}"#,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-5,"message":"no","data":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":null,"result":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"params":3,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2\u002e0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":2,"id":1,"method":"x"}"#,
            r#"["jsonrpc","2.0"]"#,
            r#"3"#,
        ] {
            assert_eq!(Message::from_slice(text.as_bytes()).unwrap(), parse(text), "{text}");
        }
        assert!(Message::from_slice(b"{nope").is_err());
        let unread = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\",\"x\":\"\xff\xfe\"}";
        assert!(Message::from_slice(unread).is_err(), "invalid UTF-8 in a member nobody reads is still refused");
    }

    #[test]
    fn round_trips_through_text() {
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#;
        let msg = parse(text).unwrap();
        assert_eq!(parse(&msg.to_text()).unwrap(), msg);
    }

    #[test]
    fn a_result_read_from_text_is_written_as_it_came() {
        let text = r#"{"jsonrpc":"2.0","id":7,"result":{"z": 1.50, "a": [true]}}"#;
        let Ok(Ok(Message::Response(mut response))) = Message::from_text(text) else { panic!("a response") };
        response.id = "client-id".into();
        let written = Message::Response(response).to_text();
        assert_eq!(written, r#"{"id":"client-id","jsonrpc":"2.0","result":{"z": 1.50, "a": [true]}}"#);
        // A result too deep to read is refused as it was when results were read as values.
        let deep = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        assert!(Message::from_text(&deep).is_err());
        let deepest = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{}{}}}"#, "[".repeat(127), "]".repeat(127));
        assert!(matches!(Message::from_text(&deepest), Ok(Ok(Message::Response(_)))));
        assert!(Message::from_text(r#"{"jsonrpc":"2.0","id":7,"result":{"t":"\ud800"}}"#).is_err(), "half a character");
    }
}
