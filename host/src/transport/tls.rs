//! Native TLS on the one port (rustls with the ring provider, no OpenSSL): TLS 1.2 and 1.3
//! with forward-secret AEAD suites only, optional or required client certificates (mTLS), and
//! certificate rotation without a restart: new handshakes use whatever pair was last loaded
//! well, and a bad pair on disk keeps the old one (and says why).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::{CryptoProvider, ring};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use x509_parser::certificate::Validity;

use crate::config::TlsConfig;
use crate::file_watch::{WatchGuard, watch_files};

/// The first byte of a TLS record carrying a handshake (a ClientHello, on a new connection).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Why a certificate, key or CA could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind needed.
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    /// rustls refused the pair (e.g. the key is not the certificate's).
    #[error("{0}")]
    Rejected(String),
}

/// The suites offered: ECDHE key exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305.
fn provider() -> CryptoProvider {
    use ring::cipher_suite::*;
    CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_256_GCM_SHA384,
            TLS13_AES_128_GCM_SHA256,
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring::default_provider()
    }
}

fn file_error(path: &std::path::Path, problem: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), problem: problem.to_string() }
}

/// The PEM certificates in the file at `path` (a chain, or CAs to trust): at least one.
pub fn certificates(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The PEM private key in the file at `path`.
pub fn private_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// Builds the server configuration from `config`'s (resolved) files.
pub fn server_config(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let certs = certificates(&config.cert)?;
    let key = private_key(&config.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if config.client_cert_required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Rejected(e.to_string()))?)
        }
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| TlsError::Rejected(e.to_string()))?;
    // Every transport here is HTTP/1.1 (or raw newline JSON-RPC, which offers no ALPN).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// The listener's TLS: the configuration new handshakes use, swapped when the files change.
pub struct Tls {
    config: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// Why the files on disk are not in use (`None` when they are).
    last_error: Mutex<Option<String>>,
    /// How many times a pair was loaded (a retry after a half-done rotation checks it).
    loads: std::sync::atomic::AtomicU64,
    /// When the certificate in use expires (Unix seconds).
    running_not_after: std::sync::atomic::AtomicI64,
}

/// How long a rotation may leave the certificate and key unmatched before it is an error.
const ROTATION_SETTLE: Duration = Duration::from_secs(5);

/// A connection after its handshake, and the verified client certificate's subject, if any.
pub type Accepted<S> = (TlsStream<S>, Option<String>);

impl Tls {
    /// Loads `config` (paths already resolved); fails if the files are not a usable pair.
    pub fn load(config: TlsConfig) -> Result<Arc<Self>, TlsError> {
        let server = server_config(&config)?;
        let validity = validity(&config.cert);
        // Served anyway at start (there is no other), but said loudly.
        if let Some(problem) = validity.as_ref().and_then(validity_problem) {
            tracing::error!(cert = %config.cert.display(), "{problem}: clients that check it will refuse the relay");
        }
        let expires = expiry(validity.as_ref());
        report(expires, None);
        Ok(Arc::new(Self {
            config,
            current: ArcSwap::from_pointee(server),
            last_error: Mutex::new(None),
            loads: Default::default(),
            running_not_after: expires.into(),
        }))
    }

    /// Whether plaintext connections are refused.
    pub fn required(&self) -> bool {
        self.config.required
    }

    /// Loads the files again; on failure the running pair stays, and the reason is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        match self.replacement() {
            Ok((server, expires)) => {
                self.swap_in(server, expires);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS files rejected; the running certificate stays");
                *self.last_error.lock().expect("tls error lock") = Some(e.to_string());
                let running = crate::metrics::metrics().access.tls_state().map_or(0, |(not_after, _)| not_after);
                report(running, Some(e.to_string()));
                Err(e)
            }
        }
    }

    /// Why the files on disk are not in use, if they are not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("tls error lock").clone()
    }

    /// Reloads whenever the certificate, key or client CA file changes (a certificate not valid
    /// now is refused like a pair that does not load, unless the running one has expired; one
    /// valid within a day is taken when it becomes valid). A
    /// rotation replaces the files one after the other, so a pair that does not match (yet) is
    /// not an error at first: the running certificate stays, and the files are tried again after
    /// [`ROTATION_SETTLE`]; only a pair still unusable then is reported (and shown by /status).
    pub fn watch(self: &Arc<Self>) -> notify::Result<WatchGuard> {
        let paths = [Some(&self.config.cert), Some(&self.config.key), self.config.client_ca.as_ref()];
        let tls = Arc::downgrade(self);
        watch_files(paths.into_iter().flatten().cloned().collect(), Duration::from_millis(200), move |_| {
            let Some(current) = tls.upgrade() else { return };
            let loads = current.loads.load(std::sync::atomic::Ordering::Acquire);
            match current.replacement() {
                Ok((server, expires)) => current.swap_in(server, expires),
                Err(e) => {
                    tracing::info!(reason = %e, settle_secs = ROTATION_SETTLE.as_secs(), "TLS files changed but are not a usable pair yet (a rotation half done?); the running certificate stays, checking again shortly");
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(ROTATION_SETTLE);
                        // Unless a later change loaded a good pair meanwhile.
                        let unchanged = |tls: &Tls| tls.loads.load(std::sync::atomic::Ordering::Acquire) == loads;
                        let Some(wait) =
                            tls.upgrade().filter(|t| unchanged(t) && t.reload().is_err()).and_then(|t| t.valid_in())
                        else {
                            return;
                        };
                        // A certificate issued by a clock a little ahead of ours is taken once
                        // it is valid.
                        std::thread::sleep(wait);
                        if let Some(tls) = tls.upgrade().filter(|t| unchanged(t)) {
                            let _ = tls.reload();
                        }
                    });
                }
            }
        })
    }

    /// The configuration from the files on disk, to replace the running one: a usable pair,
    /// whose certificate is valid now unless the running one has expired (one expired or not
    /// valid yet would fail every handshake that checks it, while the running one still
    /// serves; one not valid yet is tried again when it becomes valid, see [`Tls::watch`]).
    /// With it, when its certificate expires.
    fn replacement(&self) -> Result<(ServerConfig, i64), TlsError> {
        let server = server_config(&self.config)?;
        let validity = validity(&self.config.cert);
        let expires = expiry(validity.as_ref());
        let Some(problem) = validity.as_ref().and_then(validity_problem) else { return Ok((server, expires)) };
        let now = x509_parser::time::ASN1Time::now().timestamp();
        if self.running_not_after.load(std::sync::atomic::Ordering::Acquire) >= now {
            return Err(file_error(&self.config.cert, problem));
        }
        tracing::warn!(cert = %self.config.cert.display(), "{problem}: taken anyway");
        Ok((server, expires))
    }

    /// How long until the certificate on disk becomes valid, when it is not valid yet but will
    /// be within a day.
    fn valid_in(&self) -> Option<Duration> {
        let from = validity(&self.config.cert)?.not_before.timestamp();
        let wait = from.checked_sub(x509_parser::time::ASN1Time::now().timestamp())?;
        let wait = u64::try_from(wait).ok().filter(|secs| *secs <= 24 * 3600)?;
        Some(Duration::from_secs(wait + 1))
    }

    /// Serves `server`, whose certificate expires at `expires` (Unix seconds), from now on.
    fn swap_in(&self, server: ServerConfig, expires: i64) {
        self.running_not_after.store(expires, std::sync::atomic::Ordering::Release);
        self.current.store(Arc::new(server));
        *self.last_error.lock().expect("tls error lock") = None;
        self.loads.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        report(expires, None);
        tracing::info!(cert = %self.config.cert.display(), "TLS certificate reloaded; new handshakes use it");
    }

    /// Runs the server side of a handshake on `stream`.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) -> io::Result<Accepted<S>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        let stream = acceptor.accept(stream).await?;
        let subject = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(subject_of);
        Ok((stream, subject))
    }
}

/// Tells the metrics (and so `/status`) when the certificate in use expires, and why the files
/// on disk are not in use, if they are not: `relay_config_file_rejected{file="tls"}` is 1
/// meanwhile, as for the other files a restart would fail on.
fn report(expires: i64, error: Option<String>) {
    let metrics = crate::metrics::metrics();
    metrics.process.config_file("tls", error.is_none());
    metrics.access.tls_certificate(expires, error);
}

/// The validity period of the first certificate in the PEM file at `path`.
fn validity(path: &std::path::Path) -> Option<Validity> {
    let der = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().clone())
}

/// When a certificate with `validity` expires (Unix seconds; 0 when unknown).
fn expiry(validity: Option<&Validity>) -> i64 {
    validity.map_or(0, |v| v.not_after.timestamp())
}

/// Why a certificate with `validity` is not valid now, if it is not.
fn validity_problem(validity: &Validity) -> Option<String> {
    (!validity.is_valid()).then(|| {
        format!("the certificate is not valid now (valid from {} to {})", validity.not_before, validity.not_after)
    })
}

/// The subject of a (verified) certificate, escaped as RFC 4514 says (`CN=agent-7, O=Example`;
/// see `subject`); `None` if it cannot be read.
fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(super::subject::render(cert.subject()))
}
