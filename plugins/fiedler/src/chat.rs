//! The OpenAI-compatible chat-completions exchange, without the network: the request body, how
//! an answer is read, which failures are worth a retry and how long to wait before it.

use serde_json::{Value, json};

/// What a model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The assistant message's text.
    pub content: String,
    /// Token usage as the provider reported it (zeros when it did not).
    pub usage: Usage,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the completion.
    pub completion_tokens: u64,
    /// Both together.
    pub total_tokens: u64,
}

/// What to do after a provider's HTTP status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// 2xx: read the answer.
    Read,
    /// 429 or 5xx: try again after a backoff, if time and retries remain.
    Retry,
    /// Any other status: give up with the provider's message.
    Fail,
}

/// The request body for `model`.
pub fn request_body(model: &str, content: &str, max_tokens: u32) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    })
    .to_string()
}

/// How a status is handled.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Read,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// Reads a chat-completions response body.
pub fn parse_answer(body: &str) -> Result<Answer, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("provider sent malformed JSON ({e}): {}", excerpt(body)))?;
    let content = value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("provider response has no choices[0].message.content: {}", excerpt(body)))?;
    let count = |field: &str| value.pointer(&format!("/usage/{field}")).and_then(Value::as_u64).unwrap_or(0);
    let usage = Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        total_tokens: count("total_tokens"),
    };
    Ok(Answer { content: content.to_owned(), usage })
}

/// The provider's own explanation of a failed request (`error.message`), or the body's start.
pub fn error_message(status: u16, body: &str) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| excerpt(body));
    format!("provider answered HTTP {status}: {detail}")
}

/// The wait before retry number `attempt` (1-based): the provider's `Retry-After` seconds when
/// given, else 250 ms doubling; capped at 4 s either way.
pub fn backoff_ms(attempt: u32, retry_after: Option<&str>) -> u64 {
    const CAP_MS: u64 = 4_000;
    let hinted = retry_after.and_then(|s| s.trim().parse::<f64>().ok()).map(|secs| (secs * 1000.0) as u64);
    hinted.unwrap_or_else(|| 250u64.saturating_mul(1 << attempt.saturating_sub(1).min(10))).min(CAP_MS)
}

/// Removes a secret from text that may echo it (a provider's error message, say).
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if secret.len() >= 4 => text.replace(secret, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// At most 200 characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_openai_request() {
        let body: Value = serde_json::from_str(&request_body("gpt-4o", "2+2?", 64)).unwrap();
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["messages"][0], json!({"role": "user", "content": "2+2?"}));
        assert_eq!(body["max_tokens"], 64);
    }

    #[test]
    fn reads_answers_and_usage() {
        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop"}],
                       "usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
        let answer = parse_answer(body).unwrap();
        assert_eq!(answer.content, "4");
        assert_eq!(answer.usage.total_tokens, 6);
        assert!(parse_answer("{not json").unwrap_err().contains("malformed JSON"));
        assert!(parse_answer(r#"{"choices": []}"#).unwrap_err().contains("choices[0]"));
    }

    #[test]
    fn retries_only_rate_limits_and_server_errors() {
        assert_eq!(verdict(200), Verdict::Read);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(401), Verdict::Fail);
        assert_eq!(verdict(404), Verdict::Fail);
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        assert_eq!(backoff_ms(1, None), 250);
        assert_eq!(backoff_ms(3, None), 1000);
        assert_eq!(backoff_ms(30, None), 4000);
        assert_eq!(backoff_ms(1, Some("2")), 2000);
        assert_eq!(backoff_ms(1, Some("3600")), 4000);
    }

    #[test]
    fn provider_errors_are_explained_and_secrets_redacted() {
        let message = error_message(401, r#"{"error":{"message":"Incorrect API key provided: sk-secret-123"}}"#);
        assert_eq!(message, "provider answered HTTP 401: Incorrect API key provided: sk-secret-123");
        assert!(!redact(&message, Some("sk-secret-123")).contains("sk-secret"));
    }
}
