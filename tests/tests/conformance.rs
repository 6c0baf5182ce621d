//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios)
//! against the relay over Streamable HTTP, with a fixture backend behind it that implements the
//! scenarios' tools, resources and prompts with the official TypeScript SDK
//! (`tests/clients/fixtures/conformance-server.mjs`, over stdio). Scenarios that cannot pass
//! are listed, with the reason, in `tests/conformance/expected-failures.yml`; the suite fails
//! on any unexpected failure and on any listed scenario that now passes.

use relay_tests::{Relay, conformance_fixture_entry, repo_root};

#[tokio::test]
async fn official_conformance_suite_through_the_relay() {
    let relay = Relay::start(&format!("backends:\n{}", conformance_fixture_entry("fixture"))).await;
    relay.wait_ready("fixture").await;
    let suite = repo_root().join("tests/clients/node_modules/.bin/conformance");
    assert!(suite.exists(), "{} is missing: run scripts/test.sh (it runs npm ci)", suite.display());
    let baseline = repo_root().join("tests/conformance/expected-failures.yml");
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(600),
        tokio::process::Command::new(suite)
            .args(["server", "--url", &relay.http("/mcp"), "--expected-failures"])
            .arg(baseline)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the suite finishes")
    .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.split("=== SUMMARY ===").nth(1).unwrap_or(&stdout);
    println!("{summary}");
    assert!(
        output.status.success(),
        "conformance baseline check failed:\n{summary}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(summary.contains("server-initialize: 1 passed"), "{summary}");
}
