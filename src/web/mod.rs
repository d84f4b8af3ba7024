//! The HTTP server: REST API under `/api/v1` (one module per resource), health check, start-up
//! and graceful shutdown. [`router`] is the seam tests call without a socket.

mod analysis;
mod charts;
mod diagnostics;
mod error;
mod export;
mod fits;
mod imports;
mod openapi;
mod pages;
mod plan;
mod recommend;
pub mod runs;
mod studies;
mod sweeps;

pub use error::ApiError;

use crate::jobs::Jobs;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;

/// How long open connections (live-event streams, slow clients) may last after a shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Largest accepted request body: room for a batch import of thousands of runs or metric rows.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub jobs: Jobs,
}

/// Server settings, from flags or environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "SHAPEWISE_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// SQLite database file (created and migrated at start).
    #[arg(long, env = "SHAPEWISE_DB", default_value = "shapewise.db")]
    pub db: PathBuf,
    /// Training jobs run at once. One job already uses every core, so more only helps on
    /// machines with many cores or GPUs.
    #[arg(long, env = "SHAPEWISE_WORKERS", default_value_t = 1)]
    pub workers: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: PathBuf::from("shapewise.db"),
            workers: 1,
        }
    }
}

/// Every route of the application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(runs::router())
        .merge(imports::router())
        .merge(sweeps::router())
        .merge(export::router())
        .merge(plan::router())
        .merge(fits::router())
        .merge(analysis::router())
        .merge(recommend::router())
        .merge(diagnostics::router())
        .merge(studies::router())
        .merge(openapi::router())
        .merge(pages::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open database {path}: {source}")]
    Database {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the store, re-queues interrupted jobs, starts the workers and serves on `listener`
/// until `shutdown` resolves.
pub async fn serve_on(
    config: &ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Store::open(&config.db)
        .await
        .map_err(|source| ServeError::Database {
            path: config.db.clone(),
            source,
        })?;
    let requeued = store
        .requeue_interrupted()
        .await
        .map_err(|source| ServeError::Database {
            path: config.db.clone(),
            source,
        })?;
    if requeued > 0 {
        tracing::info!("re-queued {requeued} interrupted run(s)");
    }
    let interrupted =
        store
            .interrupt_diagnostics()
            .await
            .map_err(|source| ServeError::Database {
                path: config.db.clone(),
                source,
            })?;
    if interrupted > 0 {
        tracing::info!("marked {interrupted} unfinished diagnostic(s) interrupted");
    }
    let jobs = Jobs::new(store.clone());
    let workers = jobs.spawn_workers(config.workers.max(1));
    let app = router(AppState { store, jobs });
    // Graceful shutdown waits for open connections, and a live-events stream never ends by
    // itself: after the signal, connections get a grace period, then the server stops anyway.
    let signalled = Arc::new(Notify::new());
    let notify = signalled.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    let result = tokio::select! {
        result = server => result,
        _ = async {
            signalled.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("closing connections still open after {} s", SHUTDOWN_GRACE.as_secs());
            Ok(())
        }
    };
    for worker in workers {
        worker.abort();
    }
    Ok(result?)
}

/// `shapewise serve`: binds `config.addr` and serves until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    tracing::info!("shapewise listening on http://{}", config.addr);
    serve_on(&config, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
