//! The router: one aggregated catalog over every upstream, and dispatch of each call to the
//! tool's owner. The catalog is rebuilt (never edited) whenever an upstream's tools change and
//! published as an immutable snapshot; in-flight requests keep the snapshot they started with.

mod catalog;
mod error;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

pub use catalog::{Catalog, Owner, PREFIX_SEPARATOR};
pub use error::RouterError;

use crate::plugins::Plugins;
use crate::upstream::{Builtin, Upstreams};

/// Routes requests to upstreams by catalog ownership.
pub struct Router {
    /// The running upstreams.
    upstreams: Arc<Upstreams>,
    /// The relay's own tools.
    builtin: Arc<Builtin>,
    /// Adapter plugins.
    plugins: Arc<Plugins>,
    /// The catalog and the source generations it was built from. Rebuilt on first use after
    /// any source changed, so a tool is routable as soon as its upstream published it.
    cache: Mutex<(Generations, Arc<Catalog>)>,
    /// The catalog as last announced to sessions (for `notifications/tools/list_changed`).
    announced: watch::Sender<Arc<Catalog>>,
}

/// Change counters of the catalog's sources (upstreams, adapters).
type Generations = (u64, u64);

/// The outcome of a routed call, with the backend that served it (for the call log).
pub struct Routed {
    /// The backend that owns the tool (`relay` for built-ins), if the tool was found.
    pub backend: Option<String>,
    /// The call's result or why it failed.
    pub result: Result<Value, RouterError>,
}

impl Router {
    /// Builds the first catalog and starts the task that announces catalog changes.
    pub fn new(upstreams: Arc<Upstreams>, builtin: Arc<Builtin>, plugins: Arc<Plugins>) -> Arc<Self> {
        let generations = (upstreams.generation(), plugins.generation());
        let first = Arc::new(Catalog::build(&builtin.tools(), &upstreams, &plugins));
        let router = Arc::new(Self {
            upstreams,
            builtin,
            plugins,
            cache: Mutex::new((generations, first.clone())),
            announced: watch::Sender::new(first),
        });
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
                router.announced.send_if_modified(|current| {
                    let modified = current.tools() != next.tools();
                    *current = next;
                    modified
                });
            }
        });
        router
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        let generations = (self.upstreams.generation(), self.plugins.generation());
        let mut cache = self.cache.lock().expect("catalog lock");
        if cache.0 != generations {
            *cache = (generations, Arc::new(Catalog::build(&self.builtin.tools(), &self.upstreams, &self.plugins)));
        }
        cache.1.clone()
    }

    /// Changes whenever the tools clients see change (for `notifications/tools/list_changed`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.announced.subscribe()
    }

    /// Calls the tool that the catalog lists as `name`.
    pub async fn call_tool(&self, name: &str, arguments: Option<Value>) -> Routed {
        let catalog = self.catalog();
        let Some(entry) = catalog.get(name) else {
            return Routed { backend: None, result: Err(RouterError::UnknownTool(name.to_owned())) };
        };
        match &entry.owner {
            Owner::Builtin => Routed {
                backend: Some(Owner::BUILTIN_NAME.to_owned()),
                result: Ok(self.builtin.call(&entry.upstream_name, arguments.unwrap_or_else(|| json!({}))).await),
            },
            Owner::Backend(backend) => {
                let result = match self.upstreams.get(backend) {
                    None => Err(RouterError::UnknownTool(name.to_owned())),
                    Some(upstream) => {
                        let mut params = json!({"name": entry.upstream_name});
                        if let Some(arguments) = arguments {
                            params["arguments"] = arguments;
                        }
                        upstream
                            .request("tools/call", Some(params), upstream.call_timeout())
                            .await
                            .map_err(|source| RouterError::Upstream { backend: backend.clone(), source })
                    }
                };
                Routed { backend: Some(backend.clone()), result }
            }
            Owner::Adapter(adapter) => {
                let arguments = arguments.unwrap_or_else(|| json!({}));
                let result = self
                    .plugins
                    .call_tool(adapter, &entry.upstream_name, &arguments)
                    .await
                    .map_err(|source| RouterError::Adapter { adapter: adapter.clone(), source });
                Routed { backend: Some(adapter.clone()), result }
            }
        }
    }
}
