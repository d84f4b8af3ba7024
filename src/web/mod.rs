//! The HTTP server: REST API under `/api/v1` (one module per resource), health check, start-up
//! and graceful shutdown. [`router`] is the seam tests call without a socket.

mod analysis;
pub mod auth;
pub(crate) mod body;
mod bounds;
mod charts;
mod diagnostics;
mod error;
mod export;
mod fits;
mod imports;
mod mlflow;
mod openapi;
mod pages;
mod plan;
mod recommend;
pub mod runs;
mod server;
mod studies;
mod sweeps;
mod tokens;
pub mod workers;

pub use error::ApiError;
pub use recommend::recommend_from_csv;

use crate::jobs::Jobs;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest accepted request body: room for a batch import of thousands of runs or metric rows.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub jobs: Jobs,
    pub settings: Arc<ServerSettings>,
}

impl AppState {
    /// The state of a server over `store` and `jobs` enforcing `settings`.
    pub fn new(store: Store, jobs: Jobs, settings: ServerSettings) -> AppState {
        AppState {
            store,
            jobs,
            settings: Arc::new(settings),
        }
    }
}

/// Whether requests must prove who they come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every request but `/healthz`, sign-in and static files needs a token or a session.
    On,
    /// Nobody signs in; anyone who reaches the port may do anything.
    Off,
    /// On, unless the server listens only on a loopback address.
    Auto,
}

/// What the server enforces, resolved from [`ServeConfig`] at start.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Requests need a bearer token or a session cookie.
    pub auth: bool,
    /// The server listens on a loopback address only, so only `Host` headers naming loopback
    /// are answered (a defence against DNS rebinding).
    pub loopback_only: bool,
    /// Folders (canonical, links resolved) under which runs, sweeps and studies may read data
    /// files. Empty: no file data at all, only the built-in corpus.
    pub data_roots: Vec<PathBuf>,
    /// Largest estimated peak memory of one training run or diagnostic model, in bytes.
    pub max_run_memory_bytes: u64,
    /// Seconds a remote worker's claim lasts without a heartbeat.
    pub lease_secs: f64,
    /// Training workers inside the server process (`--workers`).
    pub in_process_workers: usize,
}

impl Default for ServerSettings {
    /// Auth off, any `Host`, no data roots, the default memory limit.
    fn default() -> Self {
        ServerSettings {
            auth: false,
            loopback_only: false,
            data_roots: Vec::new(),
            max_run_memory_bytes: crate::limits::default_max_run_memory_bytes(1),
            lease_secs: DEFAULT_LEASE_SECS as f64,
            in_process_workers: 1,
        }
    }
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
    /// 0 means the server only serves: runs stay queued until a worker takes them.
    #[arg(long, env = "SHAPEWISE_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Require a token or a session: `on`, `off`, or `auto` (on unless listening only on
    /// loopback).
    #[arg(long, env = "SHAPEWISE_AUTH", value_enum, default_value_t = AuthMode::Auto)]
    pub auth: AuthMode,
    /// A folder runs, sweeps and studies may read data from (repeatable; links are resolved).
    /// Default: `data/` beside the database.
    #[arg(long = "data-dir", env = "SHAPEWISE_DATA_DIRS", value_delimiter = ',')]
    pub data_dirs: Vec<PathBuf>,
    /// Largest estimated peak memory of one run, in GiB. Default: the machine's memory, less a
    /// quarter for the server, shared among the workers.
    #[arg(long, env = "SHAPEWISE_MAX_RUN_MEMORY_GIB")]
    pub max_run_memory_gib: Option<f64>,
    /// An admin token to accept (created at start if no token has this secret; at least 32
    /// characters). Without it, the first start with auth on and no admin prints a new one.
    #[arg(long, env = "SHAPEWISE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, env = "SHAPEWISE_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's head; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "SHAPEWISE_HEADER_TIMEOUT_SECS", default_value_t = server::DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: u64,
    /// Seconds a remote worker's claim on a run lasts without a heartbeat (workers beat every
    /// quarter of it); a run whose lease lapses goes back to the queue, the attempt counted.
    #[arg(long, env = "SHAPEWISE_LEASE_SECS", default_value_t = DEFAULT_LEASE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_secs: u64,
}

/// Default of `serve --lease-secs`.
pub const DEFAULT_LEASE_SECS: u64 = 60;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db: PathBuf::from("shapewise.db"),
            workers: 1,
            auth: AuthMode::Auto,
            data_dirs: Vec::new(),
            max_run_memory_gib: None,
            admin_token: None,
            max_connections: server::DEFAULT_MAX_CONNECTIONS,
            header_timeout_secs: server::DEFAULT_HEADER_TIMEOUT_SECS,
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }
}

impl ServerSettings {
    /// The settings `config` asks for on a server bound to `addr`: `auto` auth is on unless
    /// `addr` is loopback; the data roots default to `data/` beside the database (created if
    /// missing) and are canonicalized; the memory limit defaults to a share of the machine.
    pub fn resolve(config: &ServeConfig, addr: SocketAddr) -> Result<ServerSettings, ServeError> {
        let loopback_only = addr.ip().is_loopback();
        let auth = match config.auth {
            AuthMode::On => true,
            AuthMode::Off => false,
            AuthMode::Auto => !loopback_only,
        };
        let dirs = if config.data_dirs.is_empty() {
            let beside = config.db.parent().filter(|p| !p.as_os_str().is_empty());
            let default = beside.unwrap_or(std::path::Path::new(".")).join("data");
            std::fs::create_dir_all(&default).map_err(|source| ServeError::DataDir {
                path: default.clone(),
                source,
            })?;
            vec![default]
        } else {
            config.data_dirs.clone()
        };
        let data_roots = dirs
            .into_iter()
            .map(|dir| {
                std::fs::canonicalize(&dir)
                    .map_err(|source| ServeError::DataDir { path: dir, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_run_memory_bytes = match config.max_run_memory_gib {
            Some(gib) if gib.is_finite() && gib > 0.0 => (gib * (1u64 << 30) as f64) as u64,
            Some(gib) => {
                return Err(ServeError::Setting(format!(
                    "--max-run-memory-gib must be a positive number, got {gib}"
                )));
            }
            None => crate::limits::default_max_run_memory_bytes(config.workers),
        };
        Ok(ServerSettings {
            auth,
            loopback_only,
            data_roots,
            max_run_memory_bytes,
            lease_secs: config.lease_secs as f64,
            in_process_workers: config.workers,
        })
    }
}

/// With auth on: accepts `--admin-token` (`SHAPEWISE_ADMIN_TOKEN`), or, when no admin token
/// exists yet, creates one and prints it once to the log.
async fn bootstrap_admin(
    store: &Store,
    config: &ServeConfig,
    settings: &ServerSettings,
) -> Result<(), ServeError> {
    let database = |source| ServeError::Database {
        path: config.db.clone(),
        source,
    };
    if let Some(secret) = &config.admin_token {
        if secret.chars().count() < 32 {
            return Err(ServeError::Setting(
                "SHAPEWISE_ADMIN_TOKEN (--admin-token) must have at least 32 characters".into(),
            ));
        }
        if store
            .ensure_token("admin", crate::auth::Role::Admin, secret)
            .await
            .map_err(database)?
        {
            tracing::info!("admin token from SHAPEWISE_ADMIN_TOKEN stored");
        }
        return Ok(());
    }
    if settings.auth && !store.has_admin_token().await.map_err(database)? {
        let (_, secret) = store
            .create_token("admin", crate::auth::Role::Admin)
            .await
            .map_err(database)?;
        tracing::warn!(
            "no admin token existed, so one was created; it is shown this once. Sign in at /login with:\n{secret}"
        );
    }
    Ok(())
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
        .merge(tokens::router())
        .merge(mlflow::router())
        .merge(workers::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .fallback(auth::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth::screen))
        .layer(middleware::from_fn(server::request_timeout))
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
    #[error("cannot use data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setting(String),
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
    let settings = ServerSettings::resolve(config, listener.local_addr()?)?;
    bootstrap_admin(&store, config, &settings).await?;
    tracing::info!(
        "authentication {}, data roots: {}, run memory limit {:.1} GiB, {} training worker(s)",
        if settings.auth {
            "on"
        } else {
            "off (loopback only)"
        },
        if settings.data_roots.is_empty() {
            "none".to_string()
        } else {
            settings
                .data_roots
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        settings.max_run_memory_bytes as f64 / (1u64 << 30) as f64,
        config.workers
    );
    let jobs = Jobs::new(store.clone());
    let mut workers = jobs.spawn_workers(config.workers);
    workers.push(jobs.spawn_lease_reaper(settings.lease_secs));
    let app = router(AppState::new(store, jobs, settings));
    let header_timeout = std::time::Duration::from_secs(config.header_timeout_secs.max(1));
    server::serve_connections(
        listener,
        app,
        config.max_connections.max(1),
        header_timeout,
        shutdown,
    )
    .await;
    for worker in workers {
        worker.abort();
    }
    Ok(())
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
