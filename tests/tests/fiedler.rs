//! The Fiedler adapter plugin end to end: the real relay loads `fiedler.wasm`, which fans a
//! prompt out through `wasi:http` to a mock OpenAI-compatible server on loopback. The reference
//! plan's cases (simple query, large document, three models in parallel, invalid model), every
//! provider failure, the file and host grants, run-time settings, a hot reload between two
//! calls, and every client transport.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use relay_tests::{
    HttpSession, LineClient, MockOpenAi, Relay, copy_plugin, eventually, plugin_wasm, py_client_mode, rebuilt,
    replace_file, ts_client,
};
use serde_json::{Value, json};

const KEY: &str = "sk-test-fiedler-0123456789";

/// A relay whose only plugin is Fiedler, pointed at `mock`. Reads are granted in `docs/`,
/// writes in `out/`.
struct Setup {
    relay: Relay,
    dir: PathBuf,
    _tempdir: tempfile::TempDir,
}

impl Setup {
    async fn start(mock: &MockOpenAi) -> Setup {
        Self::start_with_deadline(mock, 60_000).await
    }

    /// With `limits.deadline_ms` for the whole plugin call.
    async fn start_with_deadline(mock: &MockOpenAi, deadline_ms: u64) -> Setup {
        Self::start_with_limits(mock, deadline_ms, "").await
    }

    /// With `limits.deadline_ms` and `more` limits (`, name: value`...).
    async fn start_with_limits(mock: &MockOpenAi, deadline_ms: u64, more: &str) -> Setup {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tempdir.path()).unwrap();
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        let wasm = copy_plugin(&dir, "fiedler");
        let base = mock.base_url();
        let model = |provider: &str, extra: &str| format!("{{base_url: '{base}', model: {provider}{extra}}}");
        let relay_yaml = format!(
            "plugin_cache_dir: cache\nplugins:\n  - name: fiedler\n    world: adapter\n    path: {wasm}\n    grants:\n      env: [FIEDLER_TEST_KEY]\n      clock: true\n      http: ['{authority}']\n      files: {{read: [docs], write: [out]}}\n    limits: {{deadline_ms: {deadline_ms}, memory_mb: 64{more}}}\n    config:\n      output_dir: {out}\n      default_models: [gpt-4o]\n      models:\n        gpt-4o: {gpt}\n        gemini-2.5-pro: {gemini}\n        deepseek: {deepseek}\n        slow-a: {slow_a}\n        slow-b: {slow_b}\n        slow-c: {slow_c}\n        broken: {broken}\n        locked: {locked}\n        leaky: {leaky}\n        flaky: {flaky}\n        garbage: {garbage}\n        stuck: {stuck}\n        elsewhere: {{base_url: 'http://127.0.0.1:9/v1'}}\n        nokey: {nokey}\n        stuck-long: {stuck_long}\n",
            wasm = wasm.display(),
            authority = mock.authority(),
            out = dir.join("out").display(),
            gpt = model("gpt-4o", ", api_key_env: FIEDLER_TEST_KEY, aliases: [gpt]"),
            gemini = model("gemini-2.5-pro", ""),
            deepseek = model("deepseek-chat", ""),
            slow_a = model("slow-1500", ""),
            slow_b = model("slow-1501", ""),
            slow_c = model("slow-1502", ""),
            broken = model("status-500", ", max_retries: 2"),
            locked = model("status-401", ", api_key_env: FIEDLER_TEST_KEY"),
            leaky = model("leaky", ", api_key_env: FIEDLER_TEST_KEY"),
            flaky = model("flaky-2", ""),
            garbage = model("garbage", ""),
            stuck = model("hang", ", timeout_ms: 500"),
            nokey = model("gpt-4o", ", api_key_env: FIEDLER_UNSET_KEY"),
            stuck_long = model("hang", ", timeout_ms: 60000"),
        );
        let relay = Relay::start_files(&dir, &relay_yaml, "backends: []\n", &[("FIEDLER_TEST_KEY", KEY)]).await;
        Setup { relay, dir, _tempdir: tempdir }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

/// `fiedler_send` over the newline transport; returns the structured report and `isError`.
async fn send(client: &mut LineClient, arguments: Value) -> (Value, bool) {
    let reply = client.call_tool("fiedler_send", arguments).await;
    let result = &reply["result"];
    assert!(result.is_object(), "fiedler_send answers with a tool result: {reply}");
    (result["structuredContent"].clone(), result["isError"] == true)
}

fn entry<'a>(report: &'a Value, model: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model)
        .unwrap_or_else(|| panic!("{model}: {report}"))
}

fn read(path: &Value) -> String {
    std::fs::read_to_string(path.as_str().unwrap_or_else(|| panic!("no output_file: {path}"))).unwrap()
}

#[tokio::test]
async fn reference_cases_simple_large_document_parallel_and_invalid_model() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start(&mock).await;
    let mut client = setup.relay.line_client().await;
    let names = client.tool_names().await;
    for tool in
        ["fiedler_send", "fiedler_list_models", "fiedler_get_config", "fiedler_set_models", "fiedler_set_output"]
    {
        assert!(names.iter().any(|n| n == tool), "{tool} missing: {names:?}");
    }

    // Simple query.
    let (report, failed) = send(&mut client, json!({"models": ["gpt-4o"], "prompt": "What is 2+2?"})).await;
    assert_eq!(report["status"], "success", "{report}");
    assert!(!failed);
    let gpt = entry(&report, "gpt-4o");
    assert_eq!(gpt["status"], "success");
    assert!(gpt["tokens"]["total"].as_u64().unwrap() > 0, "{gpt}");
    let answer = read(&gpt["output_file"]);
    assert!(answer.contains("[gpt-4o]") && answer.contains("What is 2+2?"), "{answer}");
    assert!(gpt["output_file"].as_str().unwrap().starts_with(setup.out().to_str().unwrap()));
    assert_eq!(report["output_file"], gpt["output_file"], "the single-model form");
    let seen = mock.seen();
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));

    // Large document (the reference plan's ~140 KB).
    let document = setup.dir.join("docs/test_large.md");
    std::fs::write(&document, "Large content ".repeat(10_000)).unwrap();
    let (report, _) = send(
        &mut client,
        json!({"models": ["gemini-2.5-pro"], "prompt": "Summarize this document", "files": [document]}),
    )
    .await;
    assert_eq!(report["status"], "success", "{report}");
    assert!(!read(&report["output_file"]).is_empty());
    let sent = mock.seen().into_iter().find(|s| s.model == "gemini-2.5-pro").unwrap();
    assert!(sent.content_chars >= 140_000, "the whole document went out: {} chars", sent.content_chars);

    // Three models in parallel: about as long as the slowest (1.5 s), not the sum (4.5 s).
    let started = Instant::now();
    let (report, _) =
        send(&mut client, json!({"models": ["slow-a", "slow-b", "slow-c"], "prompt": "Explain quantum computing"}))
            .await;
    let elapsed = started.elapsed();
    println!("fiedler_send to three 1.5 s models took {elapsed:?} (sum of latencies 4.5 s)");
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(report["results"].as_array().unwrap().len(), 3);
    assert_eq!(mock.max_in_flight(), 3, "all three requests were in flight at once");
    assert!(elapsed < Duration::from_millis(3500), "three 1.5 s models took {elapsed:?}");

    // Invalid model: alone it fails the call; beside a good one it is a partial success.
    let (report, failed) = send(&mut client, json!({"models": ["invalid-model"], "prompt": "This should fail"})).await;
    assert_eq!(report["status"], "failure");
    assert!(failed, "an all-failed send is a tool error");
    let error = entry(&report, "invalid-model")["error"].as_str().unwrap();
    assert!(error.contains("unknown model invalid-model") && error.contains("gpt-4o"), "{error}");
    let (report, _) = send(&mut client, json!({"models": ["gpt", "invalid-model", "gpt-4o"], "prompt": "2+2?"})).await;
    assert_eq!(report["status"], "partial_success", "{report}");
    assert_eq!(report["results"].as_array().unwrap().len(), 2, "a model named twice is asked once: {report}");
    assert_eq!(entry(&report, "gpt-4o")["status"], "success", "aliases resolve");
}

#[tokio::test]
async fn provider_failures_are_per_model_retried_and_never_leak_the_key() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start(&mock).await;
    let mut client = setup.relay.line_client().await;
    let models = json!(["gpt-4o", "broken", "flaky", "garbage", "stuck", "locked", "leaky", "elsewhere", "nokey"]);
    let (report, failed) = send(&mut client, json!({"models": models, "prompt": "hello"})).await;
    assert_eq!(report["status"], "partial_success", "{report}");
    assert!(!failed);
    assert_eq!(entry(&report, "gpt-4o")["status"], "success");

    let flaky = entry(&report, "flaky");
    assert_eq!(flaky["status"], "success", "two 429s, then an answer: {flaky}");
    assert_eq!(flaky["attempts"], 3);
    let broken = entry(&report, "broken");
    let error = broken["error"].as_str().unwrap();
    assert!(error.contains("HTTP 500") && error.contains("after 3 attempts"), "{error}");
    assert_eq!(mock.seen().iter().filter(|s| s.model == "status-500").count(), 3);
    let garbage = entry(&report, "garbage")["error"].as_str().unwrap().to_owned();
    assert!(garbage.contains("malformed JSON"), "{garbage}");
    let stuck = entry(&report, "stuck")["error"].as_str().unwrap().to_owned();
    assert!(stuck.contains("timeout of 500 ms"), "{stuck}");
    let locked = entry(&report, "locked");
    assert_eq!(locked["attempts"], 1, "a 401 is not retried");
    assert!(locked["error"].as_str().unwrap().contains("HTTP 401"), "{locked}");
    let elsewhere = entry(&report, "elsewhere")["error"].as_str().unwrap().to_lowercase();
    assert!(
        elsewhere.contains("not in this plugin's grants.http"),
        "a host outside grants.http is refused: {elsewhere}"
    );

    let nokey = entry(&report, "nokey")["error"].as_str().unwrap().to_owned();
    assert!(nokey.contains("FIEDLER_UNSET_KEY is not set"), "{nokey}");

    // The 401 bodies echoed the key (one where an excerpt cuts it); neither the result nor the
    // relay's log may carry it, nor any part of it.
    assert!(!report.to_string().contains(KEY), "{report}");
    let leaky = entry(&report, "leaky")["error"].as_str().unwrap().to_owned();
    assert!(leaky.contains("HTTP 401"), "{leaky}");
    for part in KEY.as_bytes().windows(8) {
        let part = std::str::from_utf8(part).unwrap();
        assert!(!leaky.contains(part), "a part of the key, {part:?}, in {leaky}");
    }
    assert!(!setup.relay.log().contains(KEY), "the key reached the log");
    assert!(setup.relay.log().contains("outgoing HTTP refused"), "the refused host is logged");

    // All failing is a failure.
    let (report, failed) = send(&mut client, json!({"models": ["broken", "garbage"], "prompt": "x"})).await;
    assert_eq!(report["status"], "failure");
    assert!(failed);

    // More names than the configuration has are no request for models (each costs an entry).
    let many: Vec<String> = (0..200).map(|i| format!("nope-{i}")).collect();
    let refused = client.call_tool("fiedler_send", json!({"models": many, "prompt": "x"})).await;
    assert!(refused.to_string().contains("200 models named; at most"), "{refused}");
}

#[tokio::test]
async fn files_come_only_from_granted_directories() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start(&mock).await;
    let mut client = setup.relay.line_client().await;
    let secret = setup.dir.join("secret.txt");
    std::fs::write(&secret, "not for models").unwrap();
    let sneaky = setup.dir.join("docs/../secret.txt");
    for path in [secret.clone(), sneaky, PathBuf::from("/etc/hostname")] {
        let reply =
            client.call_tool("fiedler_send", json!({"models": ["gpt-4o"], "prompt": "x", "files": [path]})).await;
        assert_eq!(reply["result"]["isError"], true, "{reply}");
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("outside the directories granted"), "{}: {text}", path.display());
    }
    assert!(mock.seen().is_empty(), "nothing was sent for a refused file");

    // The output directory may move only inside the writable grant.
    let moved = setup.out().join("run-2");
    let reply = client.call_tool("fiedler_set_output", json!({"output_dir": moved})).await;
    assert_eq!(reply["result"]["structuredContent"]["output_dir"], moved.to_str().unwrap(), "{reply}");
    let (report, _) = send(&mut client, json!({"prompt": "2+2?"})).await;
    assert!(report["output_file"].as_str().unwrap().starts_with(moved.to_str().unwrap()), "{report}");
    let reply = client.call_tool("fiedler_set_output", json!({"output_dir": "/etc/fiedler"})).await;
    assert_eq!(reply["result"]["isError"], true, "{reply}");
    assert!(!Path::new("/etc/fiedler").exists());
}

#[tokio::test]
async fn settings_survive_a_hot_reload_between_two_calls() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start(&mock).await;
    let mut client = setup.relay.line_client().await;

    let listed = client.call_tool("fiedler_list_models", json!({})).await;
    let models = &listed["result"]["structuredContent"]["models"];
    let gpt = models.as_array().unwrap().iter().find(|m| m["name"] == "gpt-4o").unwrap();
    assert_eq!(gpt["api_key_configured"], true);
    assert!(!listed.to_string().contains(KEY));
    let set = client.call_tool("fiedler_set_models", json!({"models": ["deepseek", "gpt"]})).await;
    assert_eq!(set["result"]["structuredContent"]["default_models"], json!(["deepseek", "gpt-4o"]), "{set}");
    let unknown = client.call_tool("fiedler_set_models", json!({"models": ["nope"]})).await;
    assert_eq!(unknown["result"]["isError"], true);

    let (before, _) = send(&mut client, json!({"prompt": "first"})).await;
    assert_eq!(before["results"].as_array().unwrap().len(), 2, "the default set is used: {before}");

    let status = setup.relay.plugin_status("fiedler").await["hash"].clone();
    replace_file(&setup.dir.join("fiedler.wasm"), &rebuilt(&std::fs::read(plugin_wasm("fiedler")).unwrap(), "v2"));
    eventually("the new fiedler build", || async {
        (setup.relay.plugin_status("fiedler").await["hash"] != status).then_some(())
    })
    .await;

    let (after, _) = send(&mut client, json!({"prompt": "second"})).await;
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["results"].as_array().unwrap().len(), 2, "defaults live in kv and survive the reload");
    let config = client.call_tool("fiedler_get_config", json!({})).await;
    assert_eq!(config["result"]["structuredContent"]["default_models"], json!(["deepseek", "gpt-4o"]));
    assert_eq!(mock.seen().iter().filter(|s| s.model == "deepseek-chat").count(), 2);
}

#[tokio::test]
async fn fiedler_send_through_every_client_transport() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start(&mock).await;
    let call = json!([{"name": "fiedler_send", "arguments": {"models": ["gpt-4o", "deepseek"], "prompt": "2+2?"}}]);
    let check = |report: &Value, via: &str| {
        let result = &report["results"][0];
        assert_eq!(result["structuredContent"]["status"], "success", "{via}: {report}");
        assert_eq!(result["structuredContent"]["results"].as_array().unwrap().len(), 2, "{via}");
    };
    check(&ts_client("http", &setup.relay.http("/mcp"), call.clone()).await, "TypeScript SDK, Streamable HTTP");
    check(&ts_client("ws", &setup.relay.ws("/ws"), call.clone()).await, "TypeScript SDK, WebSocket");
    check(&py_client_mode("legacy", &setup.relay.http("/mcp"), call.clone(), json!([])).await, "Python SDK");
    check(&py_client_mode("2026-07-28", &setup.relay.http("/mcp"), call, json!([])).await, "Python SDK, 2026-07-28");

    let mut line = setup.relay.line_client().await;
    let (report, _) = send(&mut line, json!({"models": ["gpt-4o"], "prompt": "2+2?"})).await;
    assert_eq!(report["status"], "success", "newline JSON-RPC: {report}");

    let session = HttpSession::open(&setup.relay.http("/mcp"), json!({})).await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "fiedler_send", "arguments": {"models": ["gpt-4o"], "prompt": "2+2?"}}});
    let text = session.post(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"\"status\":\"success\""#) || text.contains(r#""status":"success""#), "{text}");
}

#[tokio::test]
async fn the_plugin_deadline_ends_a_call_waiting_on_a_provider() {
    // The epoch deadline only interrupts running guest code; a guest waiting on wasi:http is
    // in the host, where the relay's own timer ends the call.
    let mock = MockOpenAi::start().await;
    let setup = Setup::start_with_deadline(&mock, 1000).await;
    let mut client = setup.relay.line_client().await;
    let started = Instant::now();
    let reply = client.call_tool("fiedler_send", json!({"models": ["stuck-long"], "prompt": "x"})).await;
    let elapsed = started.elapsed();
    assert!(reply.to_string().contains("exceeded its 1000 ms deadline"), "{reply}");
    assert!(elapsed < Duration::from_secs(10), "ended by the deadline, not the model's 60 s timeout: {elapsed:?}");
    let (report, _) = send(&mut client, json!({"models": ["gpt-4o"], "prompt": "still serving?"})).await;
    assert_eq!(report["status"], "success", "the plugin keeps serving: {report}");
}

/// A request over the plugin's cap on outgoing requests waits for one to finish (the plugin
/// call's deadline bounds the wait): a fan-out over more models than the cap asks them in turn
/// instead of failing the rest with a bare "connection reset".
#[tokio::test]
async fn requests_over_the_outgoing_cap_wait_their_turn() {
    let mock = MockOpenAi::start().await;
    let setup = Setup::start_with_limits(&mock, 60_000, ", max_outgoing_requests: 1").await;
    let mut client = setup.relay.line_client().await;
    let (report, failed) = send(&mut client, json!({"models": ["slow-a", "slow-b"], "prompt": "x"})).await;
    assert!(!failed && report["status"] == "success", "{report}");
    assert_eq!(mock.max_in_flight(), 1, "never two at once");
    assert!(report["duration_ms"].as_u64().unwrap() >= 3000, "one after the other: {report}");
}
