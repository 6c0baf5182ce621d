//! The keep-alive connections of one Streamable HTTP upstream, each driven by the request that
//! holds it rather than by a task of its own.
//!
//! hyper's pooled client (`hyper_util`'s legacy client) spawns a task per connection and hands
//! every request to it, and every answer back, through channels: wake-ups across tasks, often
//! across threads, on each call. Here a request takes an idle connection (or opens one), polls
//! it itself while it waits for the answer's head, and hands it on to the answer's body, which
//! polls it while it is read and puts it back when the body ends. A request or body dropped
//! midway drops its connection with it (HTTP/1.1 cannot abandon one exchange and keep the
//! connection), so nothing half-read ever returns to the pool. hyper still does all of HTTP.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::Service;

use super::http_client::{IDLE_PER_HOST, IDLE_TIMEOUT, error_chain};

type Stream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// How often the idle connections are looked over when no call does it: those expired, and
/// those the server closed, are closed on our side too (no socket waits in `CLOSE_WAIT`).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be opened (refused, unreachable, TLS handshake), or the request
    /// names another origin than the pool's.
    #[error("{0}")]
    Connect(String),
    /// The exchange failed on an open connection.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
    /// A new connection closed before the request could be sent on it.
    #[error("the connection closed before the request was sent")]
    Closed,
}

impl PoolError {
    /// True when nothing was sent: no connection could be opened.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// One connection: the handle requests are sent on and the state machine that does its IO.
/// Boxed wherever it is held: it is large, and it moves on every request.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<Stream, Full<Bytes>>,
}

/// One worker's idle connections, the most recently used last, each with when it went idle.
type IdleLane = Mutex<VecDeque<(Box<Conn>, Instant)>>;

/// The connections to one origin (scheme, host and port).
pub struct HttpPool {
    connector: HttpsConnector<HttpConnector>,
    /// Where every request of this pool goes.
    origin: Uri,
    /// The `Host` header every request carries (the port only when not the scheme's default).
    host: HeaderValue,
    /// Idle connections of each worker ([`crate::workers`]), the most recently used last, each
    /// with when it went idle. A connection is polled by the worker that opened it, whose
    /// runtime watches its socket: handed to another, every read would wake across threads.
    idle: Box<[IdleLane]>,
}

impl HttpPool {
    /// A pool for the origin of `endpoint`, connecting through `connector`, whose idle
    /// connections are looked over every [`SWEEP_EVERY`] while the pool lives.
    pub fn start(connector: HttpsConnector<HttpConnector>, endpoint: &Uri) -> Result<Arc<Self>, PoolError> {
        let pool = Arc::new(Self::new(connector, endpoint)?);
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.sweep();
            }
        });
        Ok(pool)
    }

    /// A pool for the origin of `endpoint`, connecting through `connector`.
    fn new(connector: HttpsConnector<HttpConnector>, endpoint: &Uri) -> Result<Self, PoolError> {
        let (Some(scheme), Some(authority)) = (endpoint.scheme(), endpoint.authority()) else {
            return Err(PoolError::Connect("the URL names no scheme and host".into()));
        };
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::from_str(&host).map_err(|e| PoolError::Connect(e.to_string()))?;
        let origin = origin_of(scheme.clone(), authority.clone())?;
        let idle = (0..crate::workers::count()).map(|_| Mutex::default()).collect();
        Ok(Self { connector, origin, host, idle })
    }

    /// Sends `request` (its URI absolute, of this pool's origin) and returns the answer's head;
    /// its body holds the connection until it is read to the end.
    pub async fn request(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let uri = request.uri();
        if uri.scheme() != self.origin.scheme() || uri.authority() != self.origin.authority() {
            return Err(PoolError::Connect("the request names another origin than its connections".into()));
        }
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        request.headers_mut().entry(header::HOST).or_insert_with(|| self.host.clone());
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                // Boxed: once per connection, and 2.4 KB every request would carry.
                None => (Box::pin(self.connect()).await?, false),
            };
            match send(&mut conn, request).await {
                Ok(head) => {
                    let conn = if head.body().is_end_stream() {
                        // Nothing to read (a 202, a redirect): the connection is free now.
                        self.checkin(conn);
                        None
                    } else {
                        Some(conn)
                    };
                    return Ok(head.map(|body| PooledBody { body, conn, pool: self.clone() }));
                }
                // An idle connection the server had closed: nothing was sent, try the next.
                Err(Unsent(Some(unsent), _)) if reused => request = unsent,
                Err(Unsent(_, Some(error))) => return Err(PoolError::Exchange(error)),
                Err(Unsent(_, None)) => return Err(PoolError::Closed),
            }
        }
    }

    /// The idle connections of the worker running this code.
    fn lane(&self) -> &IdleLane {
        &self.idle[crate::workers::current() % self.idle.len()]
    }

    /// The most recently used idle connection of this worker still open and not expired.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.lane().lock().expect("pool lock");
        while let Some((conn, since)) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection whose exchange ended cleanly back for the next request, and closes
    /// the longest idle one if it expired (so a pool that shrank does not keep its peak).
    fn checkin(&self, conn: Box<Conn>) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.lane().lock().expect("pool lock");
        if idle.front().is_some_and(|(_, since)| since.elapsed() >= IDLE_TIMEOUT) {
            idle.pop_front();
        }
        if idle.len() < IDLE_PER_HOST {
            idle.push_back((conn, Instant::now()));
        }
    }

    /// Closes the idle connections that expired or that the server closed: each idle driver
    /// is polled once, which reads a pending end of stream (with a no-op waker, so the task
    /// that last used the connection is not woken for it).
    fn sweep(&self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for lane in &self.idle {
            lane.lock().expect("pool lock").retain_mut(|(conn, since)| {
                since.elapsed() < IDLE_TIMEOUT && conn.driver.poll_without_shutdown(&mut cx).is_pending()
            });
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, PoolError> {
        let stream =
            self.connector.clone().call(self.origin.clone()).await.map_err(|e| PoolError::Connect(error_chain(&*e)))?;
        let (sender, driver) = http1::handshake(stream).await?;
        Ok(Box::new(Conn { sender, driver }))
    }
}

fn origin_of(scheme: Scheme, authority: Authority) -> Result<Uri, PoolError> {
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| PoolError::Connect(e.to_string()))
}

/// A request that got no answer, given back when it was never sent (no error: the connection
/// had closed).
struct Unsent(Option<Request<Full<Bytes>>>, Option<hyper::Error>);

/// Sends `request` on `conn`, polling the connection itself until the answer's head arrives.
async fn send(conn: &mut Conn, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, Unsent> {
    let Conn { sender, driver } = conn;
    // Ready for a request: an idle connection the server closed says so here, when its driver
    // reads the end of the stream (and finishes).
    let ready = std::future::poll_fn(|cx| {
        if driver.poll_without_shutdown(cx).is_ready() {
            return Poll::Ready(Err(None));
        }
        sender.poll_ready(cx).map_err(Some)
    })
    .await;
    if let Err(error) = ready {
        return Err(Unsent(Some(request), error));
    }
    let mut answer = std::pin::pin!(sender.try_send_request(request));
    let mut driver_done = false;
    std::future::poll_fn(|cx| {
        if !driver_done {
            // When the connection fails or ends, hyper fails the answer; only it is left to poll.
            driver_done = driver.poll_without_shutdown(cx).is_ready();
        }
        answer.as_mut().poll(cx)
    })
    .await
    .map_err(|mut e| Unsent(e.take_message(), Some(e.into_error())))
}

/// An answer's body, read on the connection it came on, which goes back to the pool once the
/// body is read to the end. Dropped before that, it closes the connection.
pub struct PooledBody {
    body: Incoming,
    /// `None` once the connection ended or went back to the pool.
    conn: Option<Box<Conn>>,
    pool: Arc<HttpPool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("holds_connection", &self.conn.is_some()).finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && conn.driver.poll_without_shutdown(cx).is_ready()
        {
            // Closed by the server, or failed: what it sent is queued in the body already.
            this.conn = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame
            && let Some(conn) = this.conn.take()
        {
            this.pool.checkin(conn);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[path = "http_pool_tests.rs"]
mod tests;
