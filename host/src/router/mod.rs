//! The router: one aggregated catalog over every upstream, and dispatch of each call to the
//! tool's owner. The catalog is rebuilt (never edited) whenever an upstream's tools change and
//! published as an immutable snapshot; in-flight requests keep the snapshot they started with.

mod catalog;
mod error;
mod log_levels;
mod notifications;
mod resources;
mod section;
mod subscriptions;
#[cfg(test)]
mod tests;
mod views;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

pub use crate::mcp::Related;
pub use catalog::{Catalog, Entry, Owner, PREFIX_SEPARATOR, Section, Template};
pub use error::RouterError;

use crate::admin::RelayTools;
use crate::mcp::{Addressed, Completion, CompletionRef, ListKind, Payload, ToolCall};
use crate::plugins::{CallHook, Caller, PROMPTS_GET, Plugins, TOOLS_CALL};
use crate::upstream::Upstreams;

/// Routes requests to upstreams by catalog ownership.
pub struct Router {
    /// The running upstreams.
    upstreams: Arc<Upstreams>,
    /// The relay's own tools.
    builtin: Arc<RelayTools>,
    /// Adapter plugins.
    plugins: Arc<Plugins>,
    /// The catalog and the source generations it was built from. Rebuilt on first use after
    /// any source changed, so a tool is routable as soon as its upstream published it. Read
    /// without a lock on every request; two callers that see a change may both rebuild.
    cache: ArcSwap<(Generations, Arc<Catalog>)>,
    /// What each principal sees of the catalog, when interceptors edit lists.
    views: views::Views,
    /// The catalog as last announced to sessions (for the `list_changed` notifications; each
    /// session compares its own view).
    announced: watch::Sender<Arc<Catalog>>,
    /// Upstream notifications meant for clients, already mapped to client-facing names.
    client_events: broadcast::Sender<ClientEvent>,
    /// How many sessions subscribe to each exposed resource URI (the upstream subscription is
    /// made for the first and dropped with the last).
    subscriptions: subscriptions::Subscriptions,
    /// The log levels sessions asked for, and the one the backends were asked for.
    log_levels: log_levels::LogLevels,
}

/// A notification from an upstream on its way to client sessions.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// `notifications/resources/updated` for this client-facing URI (to its subscribers).
    ResourceUpdated(String),
    /// `notifications/message` (to sessions that set a log level at or below it).
    Log(Value),
    /// `notifications/elicitation/complete` for this `elicitationId` from this backend (to the
    /// session whose client that backend asked with it): a user finished what a backend's URL
    /// elicitation, or the relay's own authorization link for it, asked of them.
    ElicitationComplete { backend: String, id: String },
}

/// Change counters of the catalog's sources (upstreams, adapters).
type Generations = (u64, u64);

/// The outcome of a routed call, with the backend that served it (for the call log).
pub struct Routed {
    /// The backend that owns the tool (`relay` for built-ins), if the tool was found.
    pub backend: Option<String>,
    /// The call's result or why it failed.
    pub result: Result<Payload, RouterError>,
}

impl Router {
    /// Builds the first catalog and starts the task that announces catalog changes.
    pub fn new(upstreams: Arc<Upstreams>, builtin: Arc<RelayTools>, plugins: Arc<Plugins>) -> Arc<Self> {
        let generations = (upstreams.generation(), plugins.generation());
        let first = Arc::new(Catalog::build(&builtin.tools(), &upstreams, &plugins));
        let router = Arc::new(Self {
            upstreams,
            builtin,
            plugins,
            cache: ArcSwap::from_pointee((generations, first.clone())),
            views: views::Views::default(),
            announced: watch::Sender::new(first),
            client_events: broadcast::Sender::new(1024),
            subscriptions: Default::default(),
            log_levels: Default::default(),
        });
        tokio::spawn(notifications::route_notifications(Arc::downgrade(&router), router.upstreams.notifications()));
        let weak = Arc::downgrade(&router);
        let mut upstream_changes = router.upstreams.subscribe();
        let mut adapter_changes = router.plugins.subscribe();
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    changed = upstream_changes.changed() => changed,
                    changed = adapter_changes.changed() => changed,
                };
                if changed.is_err() {
                    break;
                }
                let Some(router) = weak.upgrade() else { break };
                let next = router.catalog();
                // With interceptors, a reload may change what callers see of an unchanged
                // catalog: sessions are woken and compare their own views.
                let edited = router.plugins.edits_lists();
                router.announced.send_if_modified(|current| {
                    let modified = edited || ListKind::ALL.iter().any(|&kind| current.differs(&next, kind));
                    *current = next;
                    modified
                });
            }
        });
        router
    }

    /// The current catalog (as the relay has it, before interceptors edit it per caller: see
    /// [`Router::catalog_for`]).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot().1
    }

    /// The current catalog and the source generations it was built from.
    fn snapshot(&self) -> (Generations, Arc<Catalog>) {
        let generations = (self.upstreams.generation(), self.plugins.generation());
        let cached = self.cache.load();
        if cached.0 == generations {
            return (generations, cached.1.clone());
        }
        let built = Arc::new(Catalog::build(&self.builtin.tools(), &self.upstreams, &self.plugins));
        self.cache.store(Arc::new((generations, built.clone())));
        (generations, built)
    }

    /// The capabilities to advertise to clients: the union of what the upstreams offer, plus
    /// tools (the relay's own) and `listChanged` everywhere (the relay announces every change of
    /// its aggregated lists, whatever each upstream does). An upstream that has not finished
    /// its first handshake counts as offering everything: a client cannot learn of a capability
    /// after its own `initialize`, but an empty list does no harm.
    pub fn capabilities(&self) -> Value {
        let upstreams = self.upstreams.list();
        let identities: Vec<_> = upstreams.iter().filter_map(|u| u.status().identity).collect();
        let pending = identities.len() < upstreams.len();
        let offered = |name: &str| pending || identities.iter().any(|i| i.has(name));
        let mut capabilities = json!({"tools": {"listChanged": true}});
        if offered("prompts") {
            capabilities["prompts"] = json!({"listChanged": true});
        }
        if offered("resources") {
            let subscribe = pending
                || identities.iter().any(|i| i.capabilities.pointer("/resources/subscribe") == Some(&json!(true)));
            capabilities["resources"] = json!({"subscribe": subscribe, "listChanged": true});
        }
        for name in ["logging", "completions"] {
            if offered(name) {
                capabilities[name] = json!({});
            }
        }
        capabilities
    }

    /// Changes whenever the tools clients see change (for `notifications/tools/list_changed`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.announced.subscribe()
    }

    /// Upstream notifications for clients.
    pub fn client_events(&self) -> broadcast::Receiver<ClientEvent> {
        self.client_events.subscribe()
    }

    /// Tells the sessions that the URL elicitation `id` made for `backend` is done (the session
    /// that asked its client with it sends `notifications/elicitation/complete`).
    pub fn elicitation_completed(&self, backend: String, id: String) {
        let _ = self.client_events.send(ClientEvent::ElicitationComplete { backend, id });
    }

    /// `prompts/get`: routed by the prompt's name as `caller` sees it.
    pub async fn get_prompt(
        &self,
        request: &Addressed,
        related: Option<&Related>,
        caller: &Caller,
    ) -> Result<Payload, RouterError> {
        let principal = &caller.principal;
        let catalog = self.catalog_for(principal).await;
        let name = &request.target;
        let entry = catalog.prompts().get(name).ok_or_else(|| RouterError::UnknownPrompt(name.clone()))?;
        let hook = CallHook { principal, method: PROMPTS_GET, backend: entry.owner.name(), name: &entry.catalog_name };
        self.intercepted(&hook, request, async |request| {
            self.forward(&entry.owner, PROMPTS_GET, request.to_params(&entry.upstream_name), related, Some(caller))
                .await
        })
        .await
    }

    /// Runs `forward` with the request hooks of the interceptors bound to `hook` before and
    /// their result hooks after (for prompts and resources; tools have their own path).
    async fn intercepted(
        &self,
        hook: &CallHook<'_>,
        request: &Addressed,
        forward: impl AsyncFnOnce(&Addressed) -> Result<Payload, RouterError>,
    ) -> Result<Payload, RouterError> {
        let Some(interception) = self.plugins.interception(hook) else { return forward(request).await };
        let replaced = interception.request(&request.arguments().into()).await.map_err(RouterError::Intercepted)?;
        let result = match replaced {
            None => forward(request).await?,
            Some(arguments) => forward(&request.with_arguments(arguments)).await?,
        };
        interception.result(result).await.map_err(RouterError::Intercepted)
    }

    /// `completion/complete`: routed by the prompt or resource template it completes.
    pub async fn complete(
        &self,
        request: &Completion,
        related: Option<&Related>,
        caller: &Caller,
    ) -> Result<Payload, RouterError> {
        let catalog = self.catalog_for(&caller.principal).await;
        let (owner, target) = match &request.reference {
            CompletionRef::Prompt(name) => {
                let entry = catalog.prompts().get(name).ok_or_else(|| RouterError::UnknownPrompt(name.clone()))?;
                (&entry.owner, &entry.upstream_name)
            }
            // A template keeps its URI; a listed resource is known to its owner by its own.
            CompletionRef::Resource(uri) => match (catalog.template_owner(uri), catalog.resources().get(uri)) {
                (Some(owner), _) => (owner, uri),
                (None, Some(entry)) => (&entry.owner, &entry.upstream_name),
                (None, None) => return Err(RouterError::UnknownResource(uri.clone())),
            },
            CompletionRef::Other(kind) => {
                return Err(RouterError::Unroutable(format!("cannot complete a ref of type {kind:?}")));
            }
        };
        self.forward(owner, "completion/complete", request.to_params(target), related, Some(caller)).await
    }

    /// Sends `method` to the backend `owner`, for `caller` when a client asked (with its own
    /// credential where the backend is called as each user). With `related`, what the backend
    /// sends about the request (progress, log messages, its own requests) comes back to that
    /// client.
    async fn forward(
        &self,
        owner: &Owner,
        method: &str,
        params: Value,
        related: Option<&Related>,
        caller: Option<&Caller>,
    ) -> Result<Payload, RouterError> {
        let Owner::Backend(backend) = owner else {
            return Err(RouterError::Unroutable(format!("{method} is not served by {}", owner.name())));
        };
        let upstream =
            self.upstreams.get(backend).ok_or_else(|| RouterError::Unroutable(format!("backend {backend} is gone")))?;
        let credential = match caller {
            Some(caller) => self.credential_for(&upstream, caller).await?,
            None => None,
        };
        upstream
            .request_as(method, Some(params.into()), upstream.call_timeout(), related, credential.as_ref())
            .await
            .map_err(|source| RouterError::Upstream { backend: backend.clone(), source })
    }

    /// The credential a request of `caller` to `upstream` carries: the caller's own where the
    /// backend is called as each user (`credentials:`), none otherwise (its static headers).
    async fn credential_for(
        &self,
        upstream: &crate::upstream::Upstream,
        caller: &Caller,
    ) -> Result<Option<crate::upstream::Credential>, RouterError> {
        self.builtin
            .credentials()
            .header_for(&upstream.backend, &caller.principal, caller.bearer.as_ref())
            .await
            .map_err(RouterError::Credential)
    }

    /// Calls the tool that `caller` sees listed as `call.name` (in its view now); see
    /// [`Router::call_tool_in`].
    pub async fn call_tool(&self, call: ToolCall, related: Option<&Related>, caller: &Caller) -> Routed {
        let view = self.catalog_for(&caller.principal).await;
        self.call_tool_in(&view, call, related, caller).await
    }

    /// Calls the tool that `view` (the caller's view, the one its request was admitted by)
    /// lists as `call.name`; `related` is where its progress notifications go. Interceptors
    /// bound to the call see its arguments before and its result after (the relay's own tools
    /// are not intercepted).
    pub async fn call_tool_in(
        &self,
        catalog: &Catalog,
        mut call: ToolCall,
        related: Option<&Related>,
        caller: &Caller,
    ) -> Routed {
        let name = call.name.clone();
        let Some(entry) = catalog.get(&name) else {
            return Routed { backend: None, result: Err(RouterError::UnknownTool(name)) };
        };
        let owner = entry.owner.name().to_owned();
        let hook =
            CallHook { principal: &caller.principal, method: TOOLS_CALL, backend: &owner, name: &entry.catalog_name };
        let interception = match entry.owner {
            Owner::Builtin => None,
            _ => self.plugins.interception(&hook),
        };
        // Plugins' calls are boxed where they are made (`invoke`); the relay's own tools, which
        // only some calls run, are boxed here: every call's future would otherwise be as large
        // as theirs (4.8 KB), and be copied whole into its box per call.
        if let Some(interception) = &interception {
            // What the interceptors read travels on, written from the value they read (their
            // text, while no hook was called to read them).
            let arguments = call.arguments.take().unwrap_or_else(|| json!({}).into());
            match interception.request(&arguments).await {
                Ok(replaced) => call.arguments = Some(replaced.map_or_else(|| arguments.as_read(), Payload::from)),
                Err(refusal) => return Routed { backend: Some(owner), result: Err(RouterError::Intercepted(refusal)) },
            }
        }
        let result = match &entry.owner {
            Owner::Builtin => {
                let arguments = call.arguments.map_or_else(|| json!({}), Payload::into_value);
                Ok(Box::pin(self.builtin.call(&entry.upstream_name, arguments, &caller.principal)).await)
            }
            Owner::Backend(backend) => match self.upstreams.get(backend) {
                None => Err(RouterError::UnknownTool(name.clone())),
                Some(upstream) => {
                    // A per-user backend is called with the caller's own credential.
                    match self.credential_for(&upstream, caller).await {
                        Err(error) => Err(error),
                        Ok(credential) => {
                            let params = call.into_params(&entry.upstream_name);
                            let timeout = upstream.call_timeout();
                            upstream
                                .request_as("tools/call", Some(params), timeout, related, credential.as_ref())
                                .await
                                .map_err(|source| RouterError::Upstream { backend: backend.clone(), source })
                        }
                    }
                }
            },
            Owner::Adapter(adapter) => {
                let arguments = call.arguments.unwrap_or_else(|| json!({}).into());
                self.plugins
                    .call_tool(adapter, &entry.upstream_name, &arguments, Some(caller.clone()))
                    .await
                    .map_err(|source| RouterError::Adapter { adapter: adapter.clone(), source })
            }
        };
        let result = match (result, &interception) {
            (Ok(result), Some(interception)) => interception.result(result).await.map_err(RouterError::Intercepted),
            (other, _) => other,
        };
        Routed { backend: Some(owner), result }
    }
}
