//! `credential`: an auth plugin tells the host when the credential it is verifying stops
//! being valid. The answer belongs to one `authenticate` call, so it lives in the store's data
//! (cleared before each call, read after it), not in the plugin's shared context.

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::auth::relay::plugin::credential::{self, Host};

/// What one `authenticate` call said of its credential.
#[derive(Debug, Default, Clone, Copy)]
pub struct CredentialNote {
    /// The earliest `expires-at` the call gave, in ms since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// The view the generated `Host` trait is implemented on.
pub struct Credential<'a>(pub &'a mut CredentialNote);

struct HasCredential;

impl HasData for HasCredential {
    type Data<'a> = Credential<'a>;
}

/// Adds `credential` to `linker`; `get` finds the current call's note in the store data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> Credential<'_>,
) -> wasmtime::Result<()> {
    credential::add_to_linker::<T, HasCredential>(linker, get)
}

impl Host for Credential<'_> {
    fn expires_at(&mut self, unix_ms: u64) {
        let earliest = self.0.expires_at_ms.map_or(unix_ms, |known| known.min(unix_ms));
        self.0.expires_at_ms = Some(earliest);
    }
}
