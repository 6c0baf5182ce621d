//! Requests addressed by URI: `resources/read` (seen by the interceptors bound to the owner),
//! `resources/subscribe` and `resources/unsubscribe` (one upstream subscription shared by every
//! session that asked). A listed resource goes to its owner; any other URI to the backends whose
//! templates match it, best match first. A caller may address only what its view of the
//! catalog shows: a resource an interceptor hid from it is unknown to it, whichever template
//! would also match its URI (the URI as listed: the relay does not know which other spellings
//! a backend takes for the same resource), and so is the original URI of a resource two
//! backends offer.

use serde_json::{Value, json};

use super::subscriptions::{Joined, Source};
use super::{Catalog, Owner, Router, RouterError};
use crate::access::Principal;
use crate::mcp::{Addressed, Payload, Related};
use crate::plugins::{CallHook, Caller, RESOURCES_READ};
use crate::upstream::UpstreamError;

impl Router {
    /// `resources/read` for `caller`, through the interceptors bound to its owner (and with the
    /// caller's own credential where the owner is called as each user).
    pub async fn read_resource(
        &self,
        request: &Addressed,
        related: Option<&Related>,
        caller: &Caller,
    ) -> Result<Payload, RouterError> {
        let view = self.view_with_uri(&request.target, &caller.principal).await?;
        Ok(self.by_uri(RESOURCES_READ, request, related, &view, Some(caller)).await?.0)
    }

    /// `resources/subscribe` for one session; the upstream subscription is shared (made for the
    /// first subscriber, but every subscriber must be shown the URI). Later subscribers wait
    /// for the first one's: it may fail, and then none of them is subscribed.
    pub async fn subscribe_resource(&self, request: &Addressed, principal: &Principal) -> Result<Value, RouterError> {
        let uri = &request.target;
        let view = self.view_with_uri(uri, principal).await?;
        // A session refused here is not subscribed: its count goes back now (one that ends
        // while it waits gives it back as it ends).
        match self.subscriptions.join(uri, |source| self.serves(&source.owner)) {
            Joined::First(making) => match self.by_uri("resources/subscribe", request, None, &view, None).await {
                Ok((_, source)) => self.subscriptions.made(uri, making, source),
                Err(e) => {
                    drop(making);
                    self.subscriptions.release(uri);
                    return Err(e);
                }
            },
            Joined::Waiting(mut made) => {
                let subscribed = made.wait_for(Option::is_some).await.is_ok_and(|made| *made == Some(true));
                if !subscribed {
                    self.subscriptions.release(uri);
                    return Err(RouterError::Unroutable(format!(
                        "the backend's subscription to {uri} failed (made for another session at the same time); subscribe again"
                    )));
                }
            }
        }
        Ok(json!({}))
    }

    /// `resources/unsubscribe` for one session (the last one ends the upstream subscription
    /// where it was made, whatever the catalog names now and this session's principal sees).
    pub async fn unsubscribe_resource(&self, request: &Addressed) -> Result<Value, RouterError> {
        let Some(Source { owner, uri }) = self.subscriptions.release(&request.target) else { return Ok(json!({})) };
        if self.serves(&owner) {
            self.forward(&owner, "resources/unsubscribe", request.to_params(&uri), None, None).await?;
        } else {
            // A backend removed since holds no subscription to end; one added again under its
            // name is not to make it.
            self.upstreams.forget_kept_subscription(owner.name(), &uri);
        }
        Ok(json!({}))
    }

    /// Whether `owner` is a backend the relay runs now.
    fn serves(&self, owner: &Owner) -> bool {
        matches!(owner, Owner::Backend(name) if self.upstreams.get(name).is_some())
    }

    /// `principal`'s view, when `uri` is one it may address: listed in its view, or not a
    /// listed resource at all (a template's). A listed resource its view hides is unknown, and
    /// so is the original URI of a resource two backends offer (listed as `relay://` URIs):
    /// a template matching it would reach the resource around its view and its interceptors.
    async fn view_with_uri(&self, uri: &str, principal: &Principal) -> Result<std::sync::Arc<Catalog>, RouterError> {
        let view = self.catalog_for(principal).await;
        let whole = self.catalog();
        if view.resources().get(uri).is_none()
            && (whole.resources().get(uri).is_some() || whole.resources().is_moved(uri))
        {
            return Err(RouterError::UnknownResource(uri.to_owned()));
        }
        Ok(view)
    }

    /// Sends `method` for `request.target` by `catalog`; with `reader`, the interceptors bound
    /// to the owner see the read, and it carries the reader's credential where needed. Gives
    /// the answer and where it was sent.
    async fn by_uri(
        &self,
        method: &'static str,
        request: &Addressed,
        related: Option<&Related>,
        catalog: &Catalog,
        reader: Option<&Caller>,
    ) -> Result<(Payload, Source), RouterError> {
        let uri = &request.target;
        if let Some(entry) = catalog.resources().get(uri) {
            let forward = async |request: &Addressed| {
                let params = request.to_params(&entry.upstream_name);
                let mut result = self.forward(&entry.owner, method, params, related, reader).await?;
                // Contents name the URI the client asked for, not the backend's own (a result
                // that names the URI the client asked for is passed on as it came).
                if entry.upstream_name != *uri
                    && let Some(contents) = result.get_mut("contents").and_then(Value::as_array_mut)
                {
                    for item in contents.iter_mut().filter(|c| c["uri"] == entry.upstream_name.as_str()) {
                        item["uri"] = Value::String(uri.clone());
                    }
                }
                Ok(result)
            };
            let source = Source { owner: entry.owner.clone(), uri: entry.upstream_name.clone() };
            let Some(reader) = reader else { return Ok((forward(request).await?, source)) };
            let principal = &reader.principal;
            let hook = CallHook { principal, method, backend: entry.owner.name(), name: &entry.catalog_name };
            return Ok((self.intercepted(&hook, request, forward).await?, source));
        }
        let mut last = RouterError::UnknownResource(uri.clone());
        for owner in catalog.template_owners(uri) {
            let forward =
                async |request: &Addressed| self.forward(owner, method, request.to_params(uri), related, reader).await;
            let attempt = match reader {
                Some(reader) => {
                    let principal = &reader.principal;
                    let hook = CallHook { principal, method, backend: owner.name(), name: uri };
                    self.intercepted(&hook, request, forward).await
                }
                None => forward(request).await,
            };
            match attempt {
                Ok(result) => return Ok((result, Source { owner: owner.clone(), uri: uri.clone() })),
                // The backend does not have it: the next template's may.
                Err(e) if declined(&e) => last = e,
                // Any other answer (an interceptor's, a failure) is final: the URI goes to no
                // backend that was not chosen for it.
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// Whether a template's backend answered that it does not have the resource (not found, not a
/// URI it takes, no resources at all): the next matching template's backend is asked then.
fn declined(error: &RouterError) -> bool {
    use crate::mcp::error_codes::{INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND};
    matches!(error, RouterError::Upstream { source: UpstreamError::Rpc(rpc), .. }
        if matches!(rpc.code, RESOURCE_NOT_FOUND | INVALID_PARAMS | METHOD_NOT_FOUND))
}
