//! The fan-out: every requested model is asked at once (one `wasi:http` request each, polled
//! together), each within its own deadline and retry budget; answers are written to files and
//! the outcomes summed up as `success`, `partial_success` or `failure`.

use serde_json::{Value, json};

use crate::chat::{Answer, Usage};
use crate::config::{ModelConfig, Settings};
use crate::files;
use crate::relay::plugin::{clock, kv};

/// How one model's request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The answer, or why there is none.
    pub result: Result<Answer, String>,
    /// Requests sent (1 + retries).
    pub attempts: u32,
    /// Wall time from the first request to the end.
    pub duration_ms: u64,
}

/// A model to ask: its requested name, and its configuration when it is known.
struct Job<'a> {
    requested: &'a str,
    model: Option<(&'a str, &'a ModelConfig)>,
}

/// Asks every model in `requested` with `content`; returns the report for the client.
pub fn run(settings: &Settings, requested: &[String], content: &str, output_dir: &str) -> Value {
    let started = clock::monotonic_ns();
    // A model named twice (or by name and alias) is asked once.
    let mut jobs: Vec<Job> = Vec::with_capacity(requested.len());
    for name in requested {
        let model = settings.resolve(name);
        let repeated =
            jobs.iter().any(|j| j.requested == name || (model.is_some() && j.model.map(|m| m.0) == model.map(|m| m.0)));
        if !repeated {
            jobs.push(Job { requested: name, model });
        }
    }
    let known: Vec<(&str, &ModelConfig)> = jobs.iter().filter_map(|j| j.model).collect();
    let mut answers = ask_all(&known, content).into_iter();
    let stem = format!("{}-{}", clock::now_ms(), kv::increment("sequence", 1, None).unwrap_or(0));

    let mut results = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let Some((name, model)) = job.model else {
            let error = format!("unknown model {} (configured: {})", job.requested, settings.names());
            results.push(entry(job.requested, None, Err(error), 0, 0, None));
            continue;
        };
        let outcome = answers.next().expect("one outcome per known model");
        let written = outcome.result.map(|answer| {
            files::write_answer(output_dir, &stem, name, &answer.content).map(|path| (path, answer.usage))
        });
        let provider_model = Some(model.provider_model(name));
        let (result, file) = match written {
            Ok(Ok((path, usage))) => (Ok(usage), Some(path)),
            Ok(Err(error)) | Err(error) => (Err(error), None),
        };
        results.push(entry(name, provider_model, result, outcome.attempts, outcome.duration_ms, file));
    }
    let duration_ms = (clock::monotonic_ns().saturating_sub(started)) / 1_000_000;
    summarise(results, output_dir, duration_ms)
}

/// One model's entry in the report.
fn entry(
    model: &str,
    provider_model: Option<&str>,
    result: Result<Usage, String>,
    attempts: u32,
    duration_ms: u64,
    output_file: Option<String>,
) -> Value {
    let (status, tokens, error) = match result {
        Ok(usage) => (
            "success",
            json!({"prompt": usage.prompt_tokens, "completion": usage.completion_tokens, "total": usage.total_tokens}),
            Value::Null,
        ),
        Err(error) => ("failure", Value::Null, json!(error)),
    };
    json!({
        "model": model,
        "provider_model": provider_model,
        "status": status,
        "output_file": output_file,
        "duration_ms": duration_ms,
        "duration": duration_ms as f64 / 1000.0,
        "tokens": tokens,
        "attempts": attempts,
        "error": error,
    })
}

/// The report: overall status and message over the entries.
pub fn summarise(results: Vec<Value>, output_dir: &str, duration_ms: u64) -> Value {
    let succeeded = results.iter().filter(|r| r["status"] == "success").count();
    let status = match succeeded {
        n if n == results.len() => "success",
        0 => "failure",
        _ => "partial_success",
    };
    let message = format!("{succeeded} of {} model(s) answered; answers are in {output_dir}", results.len());
    let mut report = json!({
        "status": status,
        "message": message,
        "results": results,
        "output_dir": output_dir,
        "duration_ms": duration_ms,
    });
    // The single-model form the reference clients read (`result.output_file`).
    let files: Vec<&Value> = report["results"].as_array().into_iter().flatten().map(|r| &r["output_file"]).collect();
    if let [file] = files.as_slice() {
        report["output_file"] = (*file).clone();
    }
    report
}

/// Asks every model at once and waits for all of them; outcomes come back in order.
#[cfg(target_arch = "wasm32")]
fn ask_all(models: &[(&str, &ModelConfig)], content: &str) -> Vec<Outcome> {
    let asks = models.iter().map(|(name, model)| provider::ask(name, model, content));
    // The wstd reactor polls every request together.
    wstd::runtime::block_on(futures::future::join_all(asks))
}

/// Off wasm there is no `wasi:http`: every model fails (only the native unit tests get here).
#[cfg(not(target_arch = "wasm32"))]
fn ask_all(models: &[(&str, &ModelConfig)], _content: &str) -> Vec<Outcome> {
    let error = || Err("provider calls need the wasm32-wasip2 build".to_owned());
    models.iter().map(|_| Outcome { result: error(), attempts: 0, duration_ms: 0 }).collect()
}

#[cfg(target_arch = "wasm32")]
mod provider {
    //! One model's exchange over `wasi:http`, with retries and a deadline.

    use wstd::future::FutureExt;
    use wstd::http::{Body, Client, Request};
    use wstd::time::{Duration, Instant};

    use super::Outcome;
    use crate::chat::{self, Answer, Verdict};
    use crate::config::ModelConfig;

    /// Asks `model` within its deadline.
    pub async fn ask(name: &str, model: &ModelConfig, content: &str) -> Outcome {
        let started = Instant::now();
        let key = model.api_key_env.as_deref().and_then(|v| std::env::var(v).ok());
        if let (Some(variable), None) = (&model.api_key_env, &key) {
            let error = format!("API key variable {variable} is not set (or not in the plugin's grants.env)");
            return Outcome { result: Err(error), attempts: 0, duration_ms: 0 };
        }
        let body = chat::request_body(model.provider_model(name), content, model.max_tokens);
        let mut attempts = 0u32;
        let deadline = Duration::from_millis(model.timeout_ms);
        let result = match exchange(model, key.as_deref(), &body, &mut attempts).timeout(deadline).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within the model's timeout of {} ms", model.timeout_ms)),
        };
        Outcome {
            result: result.map_err(|e| chat::redact(&e, key.as_deref())),
            attempts,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Sends the request, retrying 429 and 5xx answers with capped backoff.
    async fn exchange(
        model: &ModelConfig,
        key: Option<&str>,
        body: &str,
        attempts: &mut u32,
    ) -> Result<Answer, String> {
        loop {
            *attempts += 1;
            let mut request = Request::post(model.endpoint()).header("content-type", "application/json");
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            let request =
                request.body(Body::from(body.to_owned())).map_err(|e| format!("building the request: {e}"))?;
            let response =
                Client::new().send(request).await.map_err(|e| format!("request to the provider failed: {e}"))?;
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut response_body = response.into_body();
            // The key out before anything is cut from the answer for an error message: an excerpt
            // could cut an echoed key short, past what a later redaction recognises.
            let text = chat::redact(
                response_body.str_contents().await.map_err(|e| format!("reading the provider's answer failed: {e}"))?,
                key,
            );
            match chat::verdict(status) {
                Verdict::Read => return chat::parse_answer(&text),
                Verdict::Retry if *attempts <= model.max_retries => {
                    let wait = chat::backoff_ms(*attempts, retry_after.as_deref());
                    wstd::task::sleep(Duration::from_millis(wait)).await;
                }
                Verdict::Retry => {
                    return Err(format!(
                        "{} (gave up after {} attempts)",
                        chat::error_message(status, &text),
                        attempts
                    ));
                }
                Verdict::Fail => return Err(chat::error_message(status, &text)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: &str, file: Option<&str>) -> Value {
        json!({"status": status, "output_file": file})
    }

    #[test]
    fn status_is_success_partial_or_failure() {
        let all = summarise(vec![result("success", Some("/o/a.md")), result("success", Some("/o/b.md"))], "/o", 5);
        assert_eq!(all["status"], "success");
        assert!(all.get("output_file").is_none(), "several files: no single output_file");
        let some = summarise(vec![result("success", Some("/o/a.md")), result("failure", None)], "/o", 5);
        assert_eq!(some["status"], "partial_success");
        assert_eq!(some["message"], "1 of 2 model(s) answered; answers are in /o");
        let none = summarise(vec![result("failure", None)], "/o", 5);
        assert_eq!(none["status"], "failure");
        let one = summarise(vec![result("success", Some("/o/a.md"))], "/o", 5);
        assert_eq!(one["output_file"], "/o/a.md");
    }

    #[test]
    fn entries_carry_usage_or_the_error() {
        let usage = Usage { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
        let ok = entry("gpt-4o", Some("gpt-4o"), Ok(usage), 1, 1500, Some("/o/x.md".into()));
        assert_eq!(ok["tokens"]["total"], 5);
        assert_eq!(ok["duration"], 1.5);
        let failed = entry("x", None, Err("unknown model x".into()), 0, 0, None);
        assert_eq!(failed["status"], "failure");
        assert_eq!(failed["error"], "unknown model x");
    }
}
