//! Turns one inbound text message into a [`Message`], enforcing the size and depth limits.

use serde_json::{Value, json};

use super::{Limits, Message, Response, RpcError, error_codes, json_depth_exceeds};

/// Why an inbound message was refused; converts into the JSON-RPC error response to send.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than `max_message_bytes`.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// Nested deeper than `max_json_depth`.
    #[error("JSON nested deeper than the limit of {limit} levels")]
    TooDeep { limit: usize },
    /// Not JSON at all.
    #[error("parse error: {0}")]
    Parse(#[from] serde_json::Error),
    /// JSON, but not a JSON-RPC message; carries the ready error response.
    #[error("invalid request")]
    Invalid(Box<Response>),
}

impl DecodeError {
    /// The error response the peer gets (id is `null` unless the message had a readable id).
    pub fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            DecodeError::TooLarge { size, limit } => Response::err(
                Value::Null,
                RpcError::new(error_codes::INVALID_REQUEST, message).with_data(json!({"size": size, "limit": limit})),
            ),
            DecodeError::TooDeep { limit } => Response::err(
                Value::Null,
                RpcError::new(error_codes::INVALID_REQUEST, message).with_data(json!({"limit": limit})),
            ),
            DecodeError::Parse(_) => Response::err(Value::Null, RpcError::new(error_codes::PARSE_ERROR, message)),
            DecodeError::Invalid(response) => *response,
        }
    }
}

/// Decodes one message. Limits are checked before parsing so that hostile input costs little.
pub fn decode(text: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if text.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge { size: text.len(), limit: limits.max_message_bytes });
    }
    if json_depth_exceeds(text, limits.max_json_depth) {
        return Err(DecodeError::TooDeep { limit: limits.max_json_depth });
    }
    Message::from_slice(text)?.map_err(|r| DecodeError::Invalid(Box::new(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_refusal_to_its_code() {
        let limits = Limits { max_message_bytes: 64, max_json_depth: 4, ..Limits::default() };
        let code = |text: &str| decode(text.as_bytes(), &limits).unwrap_err().into_response().outcome.unwrap_err().code;
        assert_eq!(code("{nope"), error_codes::PARSE_ERROR);
        assert_eq!(code(&"x".repeat(65)), error_codes::INVALID_REQUEST);
        assert_eq!(code("[[[[[[1]]]]]]"), error_codes::INVALID_REQUEST);
        assert_eq!(code(r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#), error_codes::INVALID_REQUEST);
        assert!(decode(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &limits).is_ok());
    }
}
