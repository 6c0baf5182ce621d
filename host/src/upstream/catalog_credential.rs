//! The credential an upstream's own connection carries when its backend lists its catalog as
//! the first user who authorized it (`credentials: {mode: oauth, catalog: first_user}`): the
//! connection (handshake, lists, the relay's own requests) is made with that user's token,
//! since the backend wants one for `initialize` and the relay has no service credential. The
//! credential step lives above this layer; it hands the upstreams a source at start.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;

use crate::config::{Backend, CredentialMode};

/// Gives the header a backend's own connection carries: `Ok(None)` while nobody has
/// authorized the backend yet.
pub trait CatalogCredential: Send + Sync {
    /// The header for `backend`'s connection now.
    fn catalog_header<'a>(&'a self, backend: &'a Backend) -> BoxFuture<'a, Result<Option<super::Credential>, String>>;
}

/// The source, set once the credential step exists (shared by every upstream).
pub type CatalogCredentialSlot = Arc<OnceLock<Arc<dyn CatalogCredential>>>;

/// The headers `backend`'s connection is made with: its configured `headers`, with the
/// catalog user's credential in place of its own for a `first_user` catalog.
pub async fn connection_headers(
    source: &CatalogCredentialSlot,
    backend: &Backend,
    headers: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let first_user = matches!(&backend.credentials, CredentialMode::Oauth { catalog, .. } if catalog.is_first_user());
    if !first_user {
        return Ok(headers.clone());
    }
    let source = source.get().ok_or("the credential step is not ready yet")?;
    let (name, value) = source.catalog_header(backend).await?.ok_or(
        "nobody has authorized this backend yet: its catalog is listed as the first user who does (relay_auth_status gives them the URL)",
    )?;
    let mut headers = headers.clone();
    headers.retain(|k, _| !k.eq_ignore_ascii_case(name.as_str()));
    headers.insert(name.to_string(), value.to_str().map_err(|_| "an unusable token")?.to_owned());
    Ok(headers)
}
