//! Routes for operators rather than MCP clients: `/metrics` (Prometheus, OpenMetrics text) on
//! the main port, and the same on the private listener (`metrics.listen`), which serves
//! nothing else of the relay.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::browser_guard::{self, BrowserRules};
use crate::metrics::metrics;

/// The content type of the OpenMetrics text format, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub async fn render_metrics() -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics().render()).into_response()
}

/// The private listener's routes, behind the same browser rules as the main port.
fn private_app(browser: Arc<BrowserRules>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .layer(axum::middleware::from_fn_with_state(browser, browser_guard::enforce))
}

/// Serves the private listener until `shutdown`.
pub async fn serve_private(listener: TcpListener, browser: Arc<BrowserRules>, shutdown: CancellationToken) {
    let app = private_app(browser);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(error) = served {
        tracing::error!(%error, "metrics listener failed");
    }
}
