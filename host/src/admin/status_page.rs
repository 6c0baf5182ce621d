//! The status page (`GET /status`): the status report as one small HTML page, with no script,
//! no external asset and no build step, refreshing itself every few seconds. Every value is
//! HTML-escaped: backend names, errors and plugin messages are text from outside the relay.

use std::fmt::Write as _;

use serde_json::Value;

/// Seconds between refreshes.
const REFRESH_SECS: u32 = 5;

/// The page for `report` (as [`super::RelayTools::status_report`] builds it).
pub fn render(report: &Value) -> String {
    let mut page = String::new();
    let text = |v: &Value| escape(&plain(v));
    let instance = match report["instance"].as_str() {
        Some("") | None => "relay".to_owned(),
        Some(colour) => escape(colour),
    };
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECS}">
<title>relay {instance}</title><style>
body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} h1{{margin:0 0 .2em}} .sub{{color:#666;margin-bottom:1.5em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}} th,td{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}
th{{background:#f3f3f3}} .ready{{color:#070}} .bad{{color:#b00}} code{{font-size:12px}}
</style></head><body>
<h1 id="instance">relay {instance}</h1>
<div class="sub">version {version} · up {uptime} · {sessions} sessions ({by_transport}) · refreshes every {REFRESH_SECS} s</div>
<p id="state"><b class="{state_class}">{state}</b> · kv {kv_backend}: <span class="{kv_class}">{kv}</span> · TLS: {tls}</p>
"#,
        state = text(&report["state"]),
        state_class = if report["state"] == "ready" { "ready" } else { "bad" },
        kv_backend = text(&report["kv"]["backend"]),
        kv = if report["kv"]["reachable"] == true {
            "reachable".to_owned()
        } else {
            format!("unreachable ({})", text(&report["kv"]["error"]))
        },
        kv_class = if report["kv"]["reachable"] == true { "ready" } else { "bad" },
        tls = match (report["tls"]["days_left"].as_f64(), report["tls"]["files_error"].as_str()) {
            (Some(days), None) => format!("certificate expires in {days} days"),
            (Some(days), Some(_)) => format!(
                "certificate expires in {days} days; <span class=\"bad\">the files on disk are not in use: {}</span>",
                text(&report["tls"]["files_error"])
            ),
            (None, _) => "off".to_owned(),
        },
        version = text(&report["version"]),
        uptime = uptime(report["uptime_secs"].as_f64().unwrap_or(0.0)),
        sessions = text(&report["sessions"]),
        by_transport = report["sessions_by_transport"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{} {}", escape(k), plain(v))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
    );
    page.push_str("<h2>Backends</h2><table id=\"backends\"><tr><th>name</th><th>state</th><th>since</th><th>transport</th><th>tools</th><th>requests</th><th>errors</th><th>last error</th></tr>\n");
    for backend in report["backends"].as_array().into_iter().flatten() {
        let state = plain(&backend["state"]);
        let class = if state == "ready" { "ready" } else { "bad" };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            text(&backend["name"]),
            escape(&state),
            since(backend["state_since"].as_u64()),
            text(&backend["transport"]),
            text(&backend["tools"]),
            text(&backend["requests"]),
            text(&backend["errors"]),
            text(&backend["last_error"]),
        );
    }
    page.push_str("</table><h2>Plugins</h2><table id=\"plugins\"><tr><th>name</th><th>world</th><th>hash</th><th>loaded</th><th>calls</th><th>denials</th><th>traps</th><th>last error</th></tr>\n");
    for plugin in report["plugins"].as_array().into_iter().flatten() {
        let hash = plain(&plugin["hash"]);
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            text(&plugin["name"]),
            text(&plugin["world"]),
            escape(&hash[..hash.len().min(12)]),
            ago(plugin["loaded_at"].as_u64().unwrap_or(0)),
            text(&plugin["calls"]),
            text(&plugin["denials"]),
            text(&plugin["traps"]),
            text(&plugin["last_error"]),
        );
    }
    let forward = &report["log_forward"];
    let _ = write!(
        page,
        "</table><h2>Log forwarding</h2><p id=\"log-forward\">connected: {} · dropped records: {}</p>\n<p><a href=\"status.json\">status.json</a> · <a href=\"metrics\">metrics</a></p></body></html>\n",
        text(&forward["connected"]),
        text(&forward["dropped"]),
    );
    page
}

/// A JSON value as plain text (`-` for null).
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How long ago a Unix time was, as the page shows it.
fn since(at: Option<u64>) -> String {
    let Some(at) = at else { return String::new() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{} ago", uptime(now.saturating_sub(at) as f64))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn uptime(secs: f64) -> String {
    let secs = secs as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// How long ago the Unix time `secs` was.
fn ago(secs: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{} ago", uptime(now.saturating_sub(secs) as f64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn outside_text_is_escaped_and_every_section_is_there() {
        let report = json!({
            "instance": "blue", "version": "0.1.0", "uptime_secs": 4000.0, "sessions": 2,
            "sessions_by_transport": {"line": 1, "http": 1},
            "backends": [{"name": "alpha", "state": "down", "transport": "websocket", "tools": 3,
                "requests": 5, "errors": 1, "last_error": "<script>alert(1)</script>"}],
            "plugins": [{"name": "rate-limit", "world": "policy", "hash": "0123456789abcdef", "loaded_at": 1_764_460_800u64,
                "calls": 9, "denials": 1, "traps": 0, "last_error": null}],
            "log_forward": {"connected": true, "dropped": 0},
        });
        let page = render(&report);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("relay blue") && page.contains("alpha") && page.contains("rate-limit"));
        assert!(page.contains(" ago</td>"), "{page}");
        assert!(page.contains("1 h 6 min"));
    }
}
