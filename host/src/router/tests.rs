//! The router driven in-process, no socket: two stdio backends (the test fixture, a child
//! process on pipes) that offer the same tools, prompts and resources, and the relay's own
//! tools. Routing by the client-facing name, collisions, the way back to the owner's own names.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Router, RouterError};
use crate::access::{Principal, TransportKind};
use crate::admin::RelayTools;
use crate::config::{BackendStore, BackendsFile, UpstreamConfig};
use crate::lifecycle::Lifecycle;
use crate::mcp::{Addressed, Completion, ToolCall};
use crate::plugins::{Caller, KvStore, NoBackends, Plugins};
use crate::upstream::{State, Upstreams};

/// A router over backends `a` (which also offers `only_a`) and `b`, both ready.
async fn router(dir: &std::path::Path) -> Arc<Router> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/stdio_server.py");
    let entry = |name: &str, extra: &str| {
        format!(
            "  - {{name: {name}, command: python3, args: [{script}, --name, {name}, --prompts, p, --resources, 'file:///x'{extra}]}}\n"
        )
    };
    let yaml = format!("backends:\n{}{}", entry("a", ", --tools, only_a"), entry("b", ""));
    let backends = BackendsFile::parse(&yaml).unwrap().validate().unwrap();
    let upstreams = Arc::new(Upstreams::new(UpstreamConfig::default(), 1 << 20));
    upstreams.reconcile(&backends);
    let ready = async {
        while !upstreams.list().iter().all(|u| u.status().state == State::Ready) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), ready).await.expect("both fixture backends ready");
    let plugins = Plugins::load(&[], &dir.join("relay.yaml"), None, Arc::new(KvStore::default()), Arc::new(NoBackends))
        .await
        .unwrap();
    let lifecycle = Arc::new(Lifecycle::new("test".into()));
    let store = BackendStore::new(dir.join("backends.yaml"));
    let tools = Arc::new(RelayTools::new(
        upstreams.clone(),
        store,
        lifecycle,
        plugins.clone(),
        Vec::new(),
        Arc::default(),
        crate::credentials::Credentials::new(
            crate::credentials::Vault::from_env(Arc::default()),
            Some(plugins.clone()),
        ),
    ));
    Router::new(upstreams, tools, plugins)
}

fn caller() -> Caller {
    Caller {
        principal: Principal::open_access(false),
        session_id: "s".into(),
        transport: TransportKind::Line,
        admit: Arc::new(|_| Box::pin(async { Ok(()) })),
        bearer: None,
    }
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall { name: name.into(), arguments: Some(arguments.into()), meta: None }
}

fn text(result: &Value) -> &str {
    result.pointer("/content/0/text").and_then(Value::as_str).unwrap_or_else(|| panic!("no text in {result}"))
}

#[tokio::test]
async fn tools_route_by_exposed_name_and_collisions_name_their_backend() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(dir.path()).await;
    let catalog = router.catalog();
    assert!(catalog.get("echo").is_none(), "a colliding name is exposed only prefixed");
    assert!(catalog.get("a__echo").is_some() && catalog.get("b__echo").is_some());
    assert!(catalog.get("only_a").is_some(), "a unique name stays as it is");

    let routed = router.call_tool(call("b__echo", json!({"message": "m"})), None, &caller()).await;
    assert_eq!(routed.backend.as_deref(), Some("b"));
    assert_eq!(text(&routed.result.unwrap()), "b: m", "b got its own name back");
    let routed = router.call_tool(call("a__echo", json!({"message": "m"})), None, &caller()).await;
    assert_eq!(text(&routed.result.unwrap()), "a: m");

    let status = router.call_tool(call("relay_get_status", json!({})), None, &caller()).await;
    assert_eq!(status.backend.as_deref(), Some("relay"));
    let status = status.result.unwrap();
    let report = &status["structuredContent"];
    assert_eq!(report["instance"], "test");
    // Every part of the report, and the same report as text for clients that read only that.
    let backends: Vec<_> = report["backends"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(backends, ["a", "b"]);
    assert!(report["backends"][0]["server_info"].is_object(), "{report}");
    assert_eq!(report["kv"]["backend"], "memory");
    assert!(report["sessions_by_transport"].is_object() && report["plugins"].is_array() && report["tls"].is_null());
    let text: Value = serde_json::from_str(status["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, report);

    let unknown = router.call_tool(call("echo", json!({})), None, &caller()).await;
    assert!(matches!(unknown.result, Err(RouterError::UnknownTool(name)) if name == "echo"));
}

#[tokio::test]
async fn prompts_resources_and_completions_go_to_their_owner_under_its_own_names() {
    let dir = tempfile::tempdir().unwrap();
    let router = router(dir.path()).await;

    let prompt = Addressed::prompt(Some(json!({"name": "b__p"}))).unwrap();
    let got = router.get_prompt(&prompt, None, &caller()).await.unwrap();
    assert_eq!(got.pointer("/messages/0/content/text"), Some(&json!("b: p")));
    let missing = Addressed::prompt(Some(json!({"name": "p"}))).unwrap();
    assert!(matches!(router.get_prompt(&missing, None, &caller()).await, Err(RouterError::UnknownPrompt(_))));

    let catalog = router.catalog();
    let exposed = catalog
        .resources()
        .entries()
        .iter()
        .find(|e| e.owner == super::Owner::Backend("b".into()))
        .map(|e| e.name.clone())
        .unwrap();
    assert_ne!(exposed, "file:///x", "colliding URIs are rewritten per backend");
    let read = router
        .read_resource(&Addressed::resource(Some(json!({"uri": exposed}))).unwrap(), None, &caller())
        .await
        .unwrap();
    assert_eq!(read.pointer("/contents/0/text"), Some(&json!("b: file:///x")), "b read its own URI");
    assert_eq!(read.pointer("/contents/0/uri"), Some(&json!(exposed)), "the client sees the URI it asked for");
    let nowhere = Addressed::resource(Some(json!({"uri": "file:///nowhere"}))).unwrap();
    assert!(matches!(router.read_resource(&nowhere, None, &caller()).await, Err(RouterError::UnknownResource(_))));

    let odd = Completion::parse(Some(json!({"ref": {"type": "ref/odd"}, "argument": {}}))).unwrap();
    assert!(matches!(router.complete(&odd, None, &caller()).await, Err(RouterError::Unroutable(_))));
}
