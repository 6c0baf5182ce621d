//! One function per MCP method a session answers, and the dispatch that picks it: the
//! stateless rules (methods 2026-07-28 removed), the policy chain, and the stamping of
//! stateless results happen here, once, for every method.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};

use super::Session;
use crate::mcp::{
    Addressed, Completion, ListKind, Notification, Payload, Related, Request, Response, RpcError, ToolCall, Trace,
    error_codes, version,
};
use crate::mcp::{LOG_LEVELS, log_rank};
use crate::mcp::{clip, envelope};
use crate::metrics::{method_label, metrics};
use crate::plugins::Refusal;
use crate::router::Catalog;

/// What kind of failure an error code is, for `relay_errors_total{kind}`: the client's own
/// mistakes (and steps it must take: a URL elicitation), refusals, the drain's refusals, and
/// failures of the relay or its backends (what `HighErrorRate` reads: a deploy's drain or a
/// user's first OAuth sign-in is not one).
pub(super) fn error_kind(code: i64) -> &'static str {
    match code {
        error_codes::PARSE_ERROR
        | error_codes::INVALID_REQUEST
        | error_codes::METHOD_NOT_FOUND
        | error_codes::INVALID_PARAMS
        | error_codes::RESOURCE_NOT_FOUND
        | error_codes::HEADER_MISMATCH
        | error_codes::UNSUPPORTED_PROTOCOL_VERSION
        | error_codes::MISSING_CLIENT_CAPABILITY
        | error_codes::URL_ELICITATION_REQUIRED => "client",
        error_codes::UNAUTHENTICATED | error_codes::FORBIDDEN | error_codes::AUTH_THROTTLED => "denied",
        error_codes::RATE_LIMITED => "rate_limited",
        error_codes::REQUEST_CANCELLED => "cancelled",
        error_codes::UPSTREAM_UNAVAILABLE => "upstream",
        error_codes::REQUEST_TIMEOUT => "timeout",
        error_codes::SERVER_BUSY => "busy",
        error_codes::SHUTTING_DOWN => "draining",
        _ => "internal",
    }
}

/// How a result went: `tool_error` when a tool said it failed (`isError`), `ok` otherwise.
fn result_outcome(result: &Payload) -> &'static str {
    if result.is_tool_error() { "tool_error" } else { "ok" }
}

impl Session {
    /// Answers one client request, counted in the metrics by method and outcome.
    /// A tool call's name, once read, goes in `tool` (cut short, as its records quote it).
    pub(super) async fn handle_request(
        &self,
        request: Request,
        related: Option<&Related>,
        tool: &OnceLock<String>,
    ) -> Response {
        let started = Instant::now();
        let method = method_label(&request.method);
        let response = self.answer(request, related, tool).await;
        let (outcome, kind) = match &response.outcome {
            Ok(result) => (result_outcome(result), None),
            Err(error) => ("error", Some(error_kind(error.code))),
        };
        metrics().clients.request(method, outcome, kind, started.elapsed());
        response
    }

    /// Answers one client request: refused if 2026-07-28 removed its method or the policy says
    /// no, otherwise by its method's function.
    async fn answer(&self, request: Request, related: Option<&Related>, tool: &OnceLock<String>) -> Response {
        let Request { id, method, params } = request;
        if self.stateless && STATELESS_REMOVED.contains(&method.as_str()) {
            let message = format!("Method not found: {method} is not part of protocol version {}", self.version());
            return Response::err(id, RpcError::new(error_codes::METHOD_NOT_FOUND, message).with_data(json!(method)));
        }
        // A tool call is admitted and routed by one view of the catalog: a policy bound to a
        // tool judges the call that is then made.
        let view = match method.as_str() {
            "tools/call" => Some(self.router.catalog_for(&self.principal).await),
            _ => None,
        };
        // The client's credential is for the relay alone: never passed on (no token
        // passthrough). A tool call's `_meta` loses it as the call is read (its arguments stay
        // text); every other request's params are read as a value here.
        let (call, params) = match method.as_str() {
            "tools/call" => (Some(ToolCall::parse(params)), None),
            _ => {
                let mut params = params.map(Payload::into_value);
                envelope::strip_credentials(&mut params);
                (None, params)
            }
        };
        let name = call.as_ref().and_then(|call| Some(call.as_ref().ok()?.name.as_str()));
        if let Some(name) = name {
            let _ = tool.set(clip(name).into_owned());
        }
        if let Err(refusal) = self.admit(&method, name, view.as_deref()).await {
            return Response::err(id, refusal.into());
        }
        // What a backend answered is passed on as it came (a [`Payload`]); what the relay
        // answers itself is a value.
        let mut outcome = match call {
            Some(call) => self.call_tool(call, related, view.as_deref().expect("tools/call has a view")).await,
            // Boxed: every call's future would otherwise be as large as the largest of these.
            None => Box::pin(self.answer_other(&method, params, related)).await,
        };
        outcome = outcome.map_err(|error| self.for_this_client(error));
        if self.stateless
            && let Ok(result) = &mut outcome
        {
            envelope::stamp(&method, result, &envelope::server_info());
        }
        Response { id, outcome }
    }

    /// Every method but `tools/call`: routed to a backend, or answered here.
    async fn answer_other(
        &self,
        method: &str,
        params: Option<Value>,
        related: Option<&Related>,
    ) -> Result<Payload, RpcError> {
        match method {
            "prompts/get" => self.get_prompt(params, related).await,
            "resources/read" => self.read_resource(params, related).await,
            "completion/complete" => self.complete(params, related).await,
            _ => self.answer_here(method, params).await.map(Payload::from),
        }
    }

    /// The methods the relay answers itself, from its own state.
    async fn answer_here(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        match method {
            "initialize" => Ok(self.initialize(params.as_ref())),
            "server/discover" if self.stateless => Ok(self.discover()),
            "ping" => Ok(json!({})),
            "tools/list" => self.list(ListKind::Tools, params.as_ref()).await,
            "prompts/list" => self.list(ListKind::Prompts, params.as_ref()).await,
            "resources/list" => self.list(ListKind::Resources, params.as_ref()).await,
            "resources/templates/list" => self.list(ListKind::ResourceTemplates, params.as_ref()).await,
            "resources/subscribe" => self.subscribe(params).await,
            "resources/unsubscribe" => self.unsubscribe(params).await,
            "logging/setLevel" => self.set_log_level(params).await,
            _ => Err(RpcError::new(error_codes::METHOD_NOT_FOUND, format!("Method not found: {}", clip(method)))),
        }
    }

    /// The protocol version this session speaks (negotiated, or from the stateless envelope).
    fn version(&self) -> String {
        self.state.lock().expect("session lock").protocol_version.clone().unwrap_or_default()
    }

    /// `server/discover`: what `initialize` would have said, for stateless clients.
    fn discover(&self) -> Value {
        let versions: Vec<&str> = version::STATELESS.iter().chain(version::SUPPORTED).copied().collect();
        let mut capabilities = self.router.capabilities();
        if let Some(resources) = capabilities.get_mut("resources") {
            // Stateless clients have no standing subscriptions.
            resources["subscribe"] = json!(false);
        }
        json!({
            "supportedVersions": versions,
            "capabilities": capabilities,
            "instructions": INSTRUCTIONS,
        })
    }

    /// Runs the policy chain on a request (of `tool`, for a tool call).
    async fn admit(&self, method: &str, tool: Option<&str>, view: Option<&Catalog>) -> Result<(), Refusal> {
        let route = tool.zip(view).and_then(|(tool, view)| view.route(tool));
        let info = self.caller.asking(method, tool, route);
        let outcome = self.policy.check(&info).await;
        if let Err(Refusal::Denied(denial)) = &outcome
            && denial.code == crate::access::DenialCode::RateLimited
        {
            metrics().access.rate_limited();
        }
        if let Err(refusal) = &outcome {
            tracing::info!(target: "relay::policy", session = %self.tag(), principal = %self.principal.id, method = %clip(method), tool = %clip(info.tool.unwrap_or("-")), reason = %clip(&refusal.to_string()), "request refused");
        }
        outcome
    }

    /// Client notifications: `notifications/cancelled` aborts the request it names.
    pub(super) fn handle_notification(&self, notification: Notification) {
        match notification.method.as_str() {
            "notifications/initialized" => tracing::debug!(session = %self.tag(), "client initialized"),
            "notifications/cancelled" => {
                let id = notification.params.as_ref().and_then(|p| p.get("requestId")).map(Value::to_string);
                let task = id.as_ref().and_then(|id| self.inflight.lock().expect("inflight lock").remove(id));
                if let Some((_, task)) = task {
                    // Dropping the request's future tells its upstream (notifications/cancelled).
                    task.abort();
                    tracing::info!(session = %self.tag(), request = %clip(id.as_deref().unwrap_or("-")), "request cancelled by the client");
                }
            }
            method => tracing::debug!(session = %self.tag(), method = %clip(method), "client notification ignored"),
        }
    }

    /// `initialize`: negotiates the version and records what the client can answer.
    fn initialize(&self, params: Option<&Value>) -> Value {
        let requested = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        let client =
            params.and_then(|p| p.get("clientInfo")?.get("name")).and_then(Value::as_str).map(|c| clip(c).into_owned());
        let negotiated = version::negotiate(requested);
        let capabilities = params.and_then(|p| p.get("capabilities")).cloned().unwrap_or(Value::Null);
        self.client_requests.declare(capabilities, false);
        tracing::info!(session = %self.tag(), transport = self.transport.as_str(), principal = %self.principal.id, client = client.as_deref().unwrap_or("-"), requested = requested.map(clip).as_deref(), negotiated, "session initialized");
        let mut state = self.state.lock().expect("session lock");
        state.protocol_version = Some(negotiated.to_owned());
        state.client_name = client;
        json!({
            "protocolVersion": negotiated,
            "capabilities": self.router.capabilities(),
            "serverInfo": envelope::server_info(),
            "instructions": INSTRUCTIONS,
        })
    }

    /// A list request: the whole list of `kind`, as this session's principal sees it, in one
    /// page.
    async fn list(&self, kind: ListKind, params: Option<&Value>) -> Result<Value, RpcError> {
        if params.and_then(|p| p.get("cursor")).is_some_and(|c| !c.is_null()) {
            // The relay answers every list in one page and hands out no cursors.
            return Err(RpcError::new(
                error_codes::INVALID_PARAMS,
                "invalid cursor: the relay lists everything in one page",
            ));
        }
        let catalog = self.router.catalog_for(&self.principal).await;
        let definitions: Vec<&Value> = match kind {
            ListKind::Tools => catalog.tools().iter().map(|e| &e.definition).collect(),
            ListKind::Prompts => catalog.prompts().entries().iter().map(|e| &e.definition).collect(),
            ListKind::Resources => catalog.resources().entries().iter().map(|e| &e.definition).collect(),
            ListKind::ResourceTemplates => catalog.templates().iter().map(|t| &t.definition).collect(),
        };
        Ok(json!({ kind.field(): definitions }))
    }

    /// `prompts/get`, routed by the prompt's name.
    async fn get_prompt(&self, params: Option<Value>, related: Option<&Related>) -> Result<Payload, RpcError> {
        let request = Addressed::prompt(params)?;
        Ok(self.router.get_prompt(&request, related, &self.caller).await?)
    }

    /// `resources/read`, routed by the URI.
    async fn read_resource(&self, params: Option<Value>, related: Option<&Related>) -> Result<Payload, RpcError> {
        let request = Addressed::resource(params)?;
        Ok(self.router.read_resource(&request, related, &self.caller).await?)
    }

    /// `completion/complete`, routed by the prompt or resource it completes.
    async fn complete(&self, params: Option<Value>, related: Option<&Related>) -> Result<Payload, RpcError> {
        let request = Completion::parse(params)?;
        Ok(self.router.complete(&request, related, &self.caller).await?)
    }

    /// `resources/subscribe`: this session hears of the URI's updates from now on.
    async fn subscribe(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let request = Addressed::resource(params)?;
        // Claimed before it is made: subscribed already (or being subscribed, by a request
        // running at the same time), it is counted once, as one unsubscribe ends it.
        if !self.state.lock().expect("session lock").subscriptions.insert(request.target.clone()) {
            return Ok(json!({}));
        }
        let subscribed = self.router.subscribe_resource(&request, &self.principal).await;
        if subscribed.is_err() {
            self.state.lock().expect("session lock").subscriptions.remove(&request.target);
        }
        Ok(subscribed?)
    }

    /// `resources/unsubscribe`; unsubscribing from what this session never subscribed to is a
    /// no-op, so one session cannot end another's subscription.
    async fn unsubscribe(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let request = Addressed::resource(params)?;
        let subscribed = self.state.lock().expect("session lock").subscriptions.remove(&request.target);
        if !subscribed {
            return Ok(json!({}));
        }
        Ok(self.router.unsubscribe_resource(&request).await?)
    }

    /// `logging/setLevel`: this session's level, what it hears of the backends' log messages;
    /// the backends are asked for the most verbose level of all sessions.
    async fn set_log_level(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let level = params.as_ref().and_then(|p| p.get("level")).and_then(Value::as_str).unwrap_or("");
        let rank = log_rank(level).ok_or_else(|| {
            RpcError::new(error_codes::INVALID_PARAMS, format!("level must be one of {}", LOG_LEVELS.join(", ")))
        })?;
        let previous = self.client_requests.log_level().replace(Some(rank));
        self.router.hold_log_level(previous, Some(rank)).await;
        Ok(json!({}))
    }

    /// `tools/call`, logged as one structured record (tool, backend, duration, outcome).
    async fn call_tool(
        &self,
        call: Result<ToolCall, RpcError>,
        related: Option<&Related>,
        view: &Catalog,
    ) -> Result<Payload, RpcError> {
        let mut call = call?;
        let name = call.name.clone();
        // Logs name the session by its tag, and quote the client's tool name cut short.
        let (session, principal, tool) = (self.tag(), self.principal.id.as_str(), clip(&name));
        // The backend sees the same trace, with the relay's hop as its parent span.
        let trace = Trace::of(call.meta.as_ref());
        let meta = call.meta.get_or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("traceparent".into(), trace.traceparent().into());
        }
        let trace_id = trace.trace_id();
        let route = view.route(&name);
        let backend = route.map_or("-", |r| r.backend);
        tracing::info!(target: "relay::call", session = %session, principal, %tool, backend, trace_id, "Tool call received");
        let started = Instant::now();
        let routed = self.router.call_tool_in(view, call, related, &self.caller).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let backend = routed.backend.as_deref().unwrap_or("-");
        match &routed.result {
            Ok(result) => {
                let outcome = result_outcome(result);
                tracing::info!(target: "relay::call", session = %session, principal, %tool, backend, trace_id, duration_ms, outcome, "Tool call finished");
            }
            Err(error) => {
                let error = clip(&error.to_string()).into_owned();
                tracing::info!(target: "relay::call", session = %session, principal, %tool, backend, trace_id, duration_ms, outcome = "error", %error, "Tool call finished");
            }
        }
        routed.result.map_err(RpcError::from)
    }

    /// An error as this client can take it: URL-mode elicitation (`-32042`) only for a client
    /// that declared `elicitation.url` (which then hears when each completes); others get
    /// `-32011` with the same message and data (which carry the URL).
    fn for_this_client(&self, mut error: RpcError) -> RpcError {
        if error.code != error_codes::URL_ELICITATION_REQUIRED {
            return error;
        }
        if !self.client_requests.takes_elicitation("url") {
            error.code = error_codes::UNAUTHENTICATED;
            return error;
        }
        // Their completion is announced to this client (and no other), when the backend that
        // asked tells it (and no other backend).
        let elicitations = error.data.as_ref().and_then(|d| d.get("elicitations")).and_then(Value::as_array);
        let asker = error.data.as_ref().and_then(|d| d.get("backend")).and_then(Value::as_str);
        if let Some(backend) = asker {
            for elicitation in elicitations.into_iter().flatten() {
                self.client_requests.await_elicitation(backend, elicitation);
            }
        }
        error
    }
}

/// Methods of the handshake era that 2026-07-28 removed (the envelope replaces the handshake
/// and the per-request log level replaces `logging/setLevel`; there are no standing
/// subscriptions without a session).
const STATELESS_REMOVED: &[&str] =
    &["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

const INSTRUCTIONS: &str = "Tools from every backend behind this relay. Colliding names are prefixed `<backend>__`; relay_* tools manage the relay.";
