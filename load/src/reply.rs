//! What the load generator reads of a message from the server: whether it answers the
//! request, and whether it is an error. The result is checked to be JSON but not decoded into
//! a tree (it is not used): decoding every answer, a status report of some kilobytes in the
//! reference scenario, cost the load generator more CPU than the relay spent answering, on the
//! cores the two share.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::Failure;

/// The JSON-RPC error code of a relay that drains: nothing new starts there, another
/// instance takes the request.
const DRAINING: i64 = -32004;

/// One JSON-RPC message, as far as the load generator reads it.
#[derive(Deserialize)]
pub struct Reply<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<RpcError<'a>>,
}

/// A JSON-RPC error's code and message.
#[derive(Deserialize)]
struct RpcError<'a> {
    #[serde(default)]
    code: i64,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

impl<'a> Reply<'a> {
    /// Reads `text`, which must be one JSON object.
    pub fn parse(text: &'a str) -> Result<Self, Failure> {
        serde_json::from_str(text).map_err(|e| Failure::new("protocol", e))
    }

    /// Whether it answers the request whose id is written `id` (not a request of the server's
    /// own, which has a method).
    pub fn answers(&self, id: &str) -> bool {
        self.method.is_none() && self.id.is_some_and(|own| own.get() == id)
    }

    /// Whether it answers some request.
    pub fn is_answer(&self) -> bool {
        self.method.is_none() && self.id.is_some()
    }

    /// The answer as the caller's outcome: an error (retryable when the relay drains), or a
    /// result.
    pub fn outcome(self) -> Result<(), Failure> {
        if let Some(error) = self.error {
            let code = error.code;
            if code == DRAINING {
                return Err(Failure::retryable(format!("rpc {code}"), error.message));
            }
            return Err(Failure::new(format!("rpc {code}"), error.message));
        }
        match self.result {
            Some(_) => Ok(()),
            None => Err(Failure::new("protocol", "an answer without result or error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_errors_and_requests_of_the_server_are_told_apart() {
        let answer =
            Reply::parse(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\"b"}]}}"#).unwrap();
        assert!(answer.answers("1") && !answer.answers("2") && answer.is_answer());
        assert!(answer.outcome().is_ok());

        let asks = Reply::parse(r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#).unwrap();
        assert!(!asks.answers("1") && !asks.is_answer(), "a request of the server's is no answer");

        let draining = Reply::parse(r#"{"id":1,"error":{"code":-32004,"message":"draining \u00e9"}}"#).unwrap();
        let failure = draining.outcome().unwrap_err();
        assert!(failure.retryable && failure.kind == "rpc -32004" && failure.detail == "draining é", "{failure:?}");
        let refused =
            Reply::parse(r#"{"id":1,"error":{"code":-32600,"message":"no"}}"#).unwrap().outcome().unwrap_err();
        assert!(!refused.retryable && refused.kind == "rpc -32600");

        assert_eq!(Reply::parse(r#"{"id":1}"#).unwrap().outcome().unwrap_err().kind, "protocol");
        assert_eq!(
            Reply::parse(r#"{"id":1,"result":{"x":[1,}}"#).err().unwrap().kind,
            "protocol",
            "checked to be JSON"
        );
    }
}
