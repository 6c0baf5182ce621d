//! Tests of [`super`]: each against a local hyper server that counts the connections it accepts.

use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tokio::net::TcpListener;

use super::*;

/// How the test server treats a connection after answering on it.
#[derive(Clone, Copy)]
enum After {
    KeepAlive,
    /// Closes it 20 ms after it opened, without saying so in its answer (as a server
    /// whose keep-alive timeout runs out does).
    Close,
}

/// A local HTTP/1.1 server answering every request with `body` (and its `Host` header in
/// `x-host`); counts the connections it accepted.
async fn server(body: &'static str, after: After) -> (Uri, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri: Uri = format!("http://{}/mcp", listener.local_addr().unwrap()).parse().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| async move {
                let host = request.headers().get(header::HOST).cloned().unwrap_or(HeaderValue::from_static(""));
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                response.headers_mut().insert("x-host", host);
                if body.is_empty() {
                    *response.status_mut() = http::StatusCode::ACCEPTED;
                }
                Ok::<_, std::convert::Infallible>(response)
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                match after {
                    After::KeepAlive => drop(connection.await),
                    After::Close => drop(tokio::time::timeout(Duration::from_millis(20), connection).await),
                }
            });
        }
    });
    (uri, accepted)
}

fn pool(uri: &Uri) -> Arc<HttpPool> {
    HttpPool::start(super::super::http_client::connector(Duration::from_secs(2)), uri).unwrap()
}

fn post(uri: &Uri) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::from_static(b"{}")));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    request
}

async fn read(pool: &Arc<HttpPool>, uri: &Uri) -> (Bytes, HeaderValue) {
    let response = pool.request(post(uri)).await.unwrap();
    let host = response.headers()["x-host"].clone();
    (response.into_body().collect().await.unwrap().to_bytes(), host)
}

#[tokio::test]
async fn a_connection_read_to_the_end_is_reused_and_carries_the_host() {
    let (uri, accepted) = server("answer", After::KeepAlive).await;
    let pool = pool(&uri);
    for _ in 0..5 {
        let (body, host) = read(&pool, &uri).await;
        assert_eq!(body, "answer");
        assert_eq!(host, uri.authority().unwrap().as_str(), "a port that is not 80 is in Host");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for calls one after another");
}

#[tokio::test]
async fn concurrent_calls_take_a_connection_each_then_share_them() {
    let (uri, accepted) = server("answer", After::KeepAlive).await;
    let pool = pool(&uri);
    let calls = (0..4).map(|_| read(&pool, &uri));
    futures::future::join_all(calls).await;
    let opened = accepted.load(Ordering::SeqCst);
    assert!((1..=4).contains(&opened), "{opened}");
    let calls = (0..4).map(|_| read(&pool, &uri));
    futures::future::join_all(calls).await;
    assert_eq!(accepted.load(Ordering::SeqCst), opened, "idle connections are reused");
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_without_failing_the_call() {
    let (uri, accepted) = server("answer", After::Close).await;
    let pool = pool(&uri);
    for _ in 0..3 {
        assert_eq!(read(&pool, &uri).await.0, "answer");
        // Let the server's close arrive while the connection sits idle.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_sweep_closes_idle_connections_the_server_closed_and_keeps_the_others() {
    let (closing, _) = server("answer", After::Close).await;
    let closed_pool = pool(&closing);
    read(&closed_pool, &closing).await;
    assert_eq!(closed_pool.lane().lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    closed_pool.sweep();
    assert!(closed_pool.lane().lock().unwrap().is_empty(), "closed by the server while idle");

    let (open, _) = server("answer", After::KeepAlive).await;
    let open_pool = pool(&open);
    read(&open_pool, &open).await;
    open_pool.sweep();
    assert_eq!(open_pool.lane().lock().unwrap().len(), 1, "a live idle connection stays");
}

#[tokio::test]
async fn a_body_dropped_unread_closes_its_connection() {
    let (uri, accepted) = server("answer", After::KeepAlive).await;
    let pool = pool(&uri);
    drop(pool.request(post(&uri)).await.unwrap());
    assert!(pool.lane().lock().unwrap().is_empty(), "a half-read connection never goes back");
    assert_eq!(read(&pool, &uri).await.0, "answer");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_without_a_body_frees_its_connection_at_once() {
    let (uri, accepted) = server("", After::KeepAlive).await;
    let pool = pool(&uri);
    for _ in 0..3 {
        let response = pool.request(post(&uri)).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::ACCEPTED);
        drop(response);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_connections_and_other_origins_are_connect_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri: Uri = format!("http://{}/mcp", listener.local_addr().unwrap()).parse().unwrap();
    drop(listener);
    let pool = pool(&uri);
    assert!(pool.request(post(&uri)).await.unwrap_err().is_connect());
    let elsewhere: Uri = "http://127.0.0.1:1/mcp".parse().unwrap();
    assert!(pool.request(post(&elsewhere)).await.unwrap_err().is_connect());
}

#[tokio::test]
async fn each_worker_reuses_the_connections_it_opened_and_no_other() {
    let (uri, accepted) = server("answer", After::KeepAlive).await;
    let mut pool = HttpPool::new(super::super::http_client::connector(Duration::from_secs(2)), &uri).unwrap();
    pool.idle = (0..2).map(|_| Mutex::default()).collect();
    let pool = Arc::new(pool);
    crate::workers::pretend_to_be(0);
    read(&pool, &uri).await;
    crate::workers::pretend_to_be(1);
    read(&pool, &uri).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "worker 1 does not take worker 0's idle connection");
    read(&pool, &uri).await;
    crate::workers::pretend_to_be(0);
    read(&pool, &uri).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "each reuses its own");
    assert_eq!(pool.idle.iter().map(|lane| lane.lock().unwrap().len()).collect::<Vec<_>>(), [1, 1]);
}
