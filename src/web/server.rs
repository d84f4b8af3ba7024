//! The connection loop: HTTP/1.1 over TCP with the limits a shared service needs.
//!
//! - At most `max_connections` connections at once; one more is answered `503` and closed at
//!   once, so sockets (file descriptors) never run out and health checks keep answering.
//! - A connection that has not sent a complete request head within `header_timeout` is
//!   closed: a half-sent request line, slowly dribbled headers, and idle keep-alive connections
//!   alike (hyper's header-read timer runs whenever the connection waits for a request).
//! - A request whose response has not started within [`REQUEST_TIMEOUT`] (a slowly sent body,
//!   a computation that runs away) is answered `408` by [`request_timeout`]. Live-event streams
//!   start their response at once, so they are not cut; they end with the client or at shutdown.
//! - On shutdown, connections finish their current request; after [`SHUTDOWN_GRACE`] the rest
//!   are dropped.

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The default time a connection may take to send a complete request head, which is also how
/// long an idle keep-alive connection stays open (seconds).
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 15;

/// How long a request may take until its response starts (body upload included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long open connections may last after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The default connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Answers `408` when the inner service has not produced a response head in
/// [`REQUEST_TIMEOUT`].
pub async fn request_timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => super::error::ErrorBody::response(
            StatusCode::REQUEST_TIMEOUT,
            super::error::ErrorKind::Timeout,
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves (see the module docs).
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let (close_tx, close_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: back off a little.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut close_rx = close_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!("connection ended: {e}");
                    }
                }
                _ = close_rx.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(close_tx);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::info!(
            "closing connections still open after {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Answers a connection over the limit with `503` and closes it.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    const BODY: &str =
        r#"{"error":"unavailable","detail":"too many connections; try again later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        stream.write_all(response.as_bytes()),
    )
    .await;
    let _ = stream.shutdown().await;
}
