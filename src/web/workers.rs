//! `/api/v1/workers`: remote training workers (`shapewise worker`) and their leases.
//!
//! The server owns the database and the queue; workers own the compute. A worker registers
//! (`POST /api/v1/workers`), claims a queued run of its device (`POST .../claim`), trains it,
//! and sends its metric points in batches with each heartbeat (`POST .../heartbeat`), which
//! renews its lease on the run and answers whether the run's cancellation was requested; it
//! reports the end (`POST .../finish`) and hands its run back when it stops (`DELETE`). A run
//! whose lease lapses goes back to the queue ([`crate::store::Store::expire_leases`]); the
//! requests of a lapsed attempt are refused with 409, so a worker that lost its run stops.
//! The same types serialize the worker's requests ([`crate::worker`]) and parse them here.

use super::AppState;
use super::body::{json_body, typed_json_body};
use super::error::ApiError;
use crate::store::{LeaseError, MetricPoint, StoredStatus, WorkerRecord, unix_now};
use crate::train::{RunConfig, RunSummary};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/workers", get(list_workers).post(register_worker))
        .route("/api/v1/workers/{id}", axum::routing::delete(leave))
        .route("/api/v1/workers/{id}/claim", post(claim))
        .route("/api/v1/workers/{id}/heartbeat", post(heartbeat))
        .route("/api/v1/workers/{id}/finish", post(finish))
}

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(register_worker, list_workers, leave, claim, heartbeat, finish),
    components(schemas(RegisterWorker, Registered, Claimed, Heartbeat, HeartbeatAnswer, FinishRun, Finished, LeaveAnswer, WorkerList, WorkerView, WorkerDevice)),
    tags((name = "workers", description = "Remote training workers: registration, claims with leases, heartbeats carrying metrics, and the end of their runs."))
)]
struct Doc;

/// The most metric points one heartbeat may carry.
pub const MAX_POINTS_PER_BEAT: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Bodies

/// The device a worker trains on; it claims only runs that ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WorkerDevice {
    Cpu,
    Gpu,
}

impl WorkerDevice {
    pub fn name(self) -> &'static str {
        match self {
            WorkerDevice::Cpu => "cpu",
            WorkerDevice::Gpu => "gpu",
        }
    }
}

/// A worker introducing itself. Unknown fields are refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "gpu-node-3/0", "host": "gpu-node-3", "device": "gpu"}))]
pub struct RegisterWorker {
    /// 1 to 100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The machine it runs on (at most 255 characters).
    #[schema(max_length = 255)]
    pub host: String,
    pub device: WorkerDevice,
}

/// A registered worker's id and the timing it keeps.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub id: i64,
    /// Seconds a claim lasts without a heartbeat.
    pub lease_secs: f64,
    /// Seconds between heartbeats: a quarter of the lease, at most 5.
    pub heartbeat_secs: f64,
}

/// A claimed run: train `config` from step 0 and name `attempt` in every later request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Claimed {
    pub run_id: i64,
    /// Which claim of the run this is (1 for the first).
    pub attempt: i64,
    pub config: RunConfig,
}

/// A sign of life: with a claimed run (`run_id` and `attempt`), it renews the lease and stores
/// the metric points trained since the last beat (at most 10,000). Unknown fields are refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub run_id: Option<i64>,
    pub attempt: Option<i64>,
    /// Training throughput so far.
    #[schema(minimum = 0.0)]
    pub tokens_per_sec: Option<f64>,
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub points: Vec<MetricPoint>,
}

/// The server's answer to a heartbeat.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// The run's cancellation was requested: stop at the next step and report the end.
    pub cancel: bool,
}

/// How a claimed run ended: its summary, or why training failed. Unknown fields are refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRun {
    pub run_id: i64,
    pub attempt: i64,
    /// The points trained since the last heartbeat.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub points: Vec<MetricPoint>,
    /// The trainer's summary (succeeded, diverged or cancelled); exactly one of `summary` and
    /// `error`.
    pub summary: Option<RunSummary>,
    /// Why training failed.
    pub error: Option<String>,
}

/// The status a finished run was stored with.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Finished {
    pub status: StoredStatus,
}

/// What leaving did with the worker's run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaveAnswer {
    /// The run it handed back to the queue, if it held one.
    pub handed_back: Option<i64>,
}

/// A worker as the workers page shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    pub worker: WorkerRecord,
    /// Seconds since its last request.
    pub seconds_since_seen: f64,
    /// Registered and seen within the lease: it can take runs. Otherwise stale (or left).
    pub live: bool,
}

/// The workers, registered ones first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn worker_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest("the worker id must be an integer".into()))
}

/// The answer to a worker that is not registered (never, or it left).
fn not_registered(id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "worker {id} is not registered (it left, or never registered): register again"
    ))
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Lost { .. } => ApiError::Conflict(e.to_string()),
            LeaseError::Store(e) => e.into(),
        }
    }
}

/// Why a queued run of `device` waits for nothing, or `None` when a worker can take it: the
/// server's own workers train the devices of its build, remote workers the device they
/// registered with while seen within the lease.
pub(crate) async fn waiting_note(
    state: &AppState,
    device: &str,
) -> Result<Option<String>, ApiError> {
    let settings = &state.settings;
    let built: Vec<&str> = (crate::train::available_devices().into_iter())
        .map(|d| d.name())
        .collect();
    if settings.in_process_workers > 0 && built.contains(&device) {
        return Ok(None);
    }
    let live = state.store.live_devices(settings.lease_secs).await?;
    if live.iter().any(|d| d == device) {
        return Ok(None);
    }
    let server = if settings.in_process_workers == 0 {
        "this server trains nothing itself (--workers 0)".to_string()
    } else {
        format!(
            "this server's own workers train only {} runs",
            built.join(" and ")
        )
    };
    Ok(Some(format!(
        "No live worker can take this run: it asks for the {device} device, {server}, and no \
         {device} worker has been seen in the last {} s. Start one with `shapewise worker \
         --server URL --device {device}` (see the workers page).",
        settings.lease_secs
    )))
}

/// Heartbeat period for a lease: a quarter of it, at most 5 s.
pub fn heartbeat_secs(lease_secs: f64) -> f64 {
    (lease_secs / 4.0).min(5.0)
}

/// The view of a worker record: live when registered and seen within `lease_secs`.
pub(crate) fn worker_view(worker: WorkerRecord, lease_secs: f64) -> WorkerView {
    let seconds_since_seen = (unix_now() - worker.last_seen).max(0.0);
    WorkerView {
        live: worker.left_at.is_none() && seconds_since_seen <= lease_secs,
        seconds_since_seen,
        worker,
    }
}

fn checked_points(points: &[MetricPoint]) -> Result<(), ApiError> {
    if points.len() > MAX_POINTS_PER_BEAT {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} metric points in one request; at most {MAX_POINTS_PER_BEAT}",
            points.len()
        )));
    }
    if let Some((i, p)) = points.iter().enumerate().find(|(_, p)| p.step < 0) {
        return Err(ApiError::Unprocessable(format!(
            "'points[{i}].step' must be at least 0, got {}",
            p.step
        )));
    }
    Ok(())
}

/// Registers a worker.
///
/// The worker then claims runs of its device. Its token (a writer's) is recorded as its
/// creator.
#[utoipa::path(
    post,
    path = "/api/v1/workers",
    tag = "workers",
    request_body(content = RegisterWorker, content_type = "application/json"),
    responses(
        (status = 201, description = "The worker's id and its lease timing", body = Registered),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "A name or host that is empty, too long or has control characters, or an unknown device", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn register_worker(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: RegisterWorker = json_body(body)?;
    for (field, value, max) in [("name", &request.name, 100), ("host", &request.host, 255)] {
        let length = value.chars().count();
        if length == 0 || length > max || value.chars().any(char::is_control) {
            return Err(ApiError::Unprocessable(format!(
                "'{field}' must be 1 to {max} characters without control characters"
            )));
        }
    }
    let creator = super::auth::creator();
    let id = state
        .store
        .register_worker(
            &request.name,
            &request.host,
            request.device.name(),
            creator.as_deref(),
        )
        .await?;
    tracing::info!(
        "worker {id} '{}' on {} ({}) registered",
        request.name,
        request.host,
        request.device.name()
    );
    let lease_secs = state.settings.lease_secs;
    let answer = Registered {
        id,
        lease_secs,
        heartbeat_secs: heartbeat_secs(lease_secs),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Every worker (at most 1000), registered ones first: name, host, device, current run,
/// throughput and last sign of life.
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    tag = "workers",
    responses((status = 200, description = "The workers", body = WorkerList))
)]
async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let lease_secs = state.settings.lease_secs;
    let workers = (state.store.workers().await?.into_iter())
        .map(|w| worker_view(w, lease_secs))
        .collect();
    Ok(Json(WorkerList { workers }))
}

/// A worker leaves: the run it holds goes back to the queue at once (the attempt not counted).
#[utoipa::path(
    delete,
    path = "/api/v1/workers/{id}",
    tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The run handed back, if any", body = LeaveAnswer),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such worker", body = super::error::ErrorBody),
    )
)]
async fn leave(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<LeaveAnswer>, ApiError> {
    let id = worker_id(path)?;
    if state.store.worker(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("worker {id} not found")));
    }
    let handed_back = state.store.leave(id).await?;
    if let Some((run_id, status)) = handed_back {
        tracing::info!("worker {id} left; run {run_id} is {}", status.name());
        state.jobs.publish_status(run_id, status);
        state.jobs.wake();
    }
    Ok(Json(LeaveAnswer {
        handed_back: handed_back.map(|(run_id, _)| run_id),
    }))
}

/// Claims the oldest queued run of the worker's device, leased for the server's lease time.
///
/// The run restarts from step 0: the metrics an earlier attempt stored are deleted.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/claim",
    tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The claimed run", body = Claimed),
        (status = 204, description = "No queued run of this worker's device"),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such registered worker", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn claim(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = worker_id(path)?;
    let device = (state.store.touch_worker(id, None).await?).ok_or_else(|| not_registered(id))?;
    let claimed = state
        .store
        .claim(Some(id), &[&device], Some(state.settings.lease_secs))
        .await?;
    let Some(job) = claimed else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    tracing::info!(
        "worker {id} claimed run {} (attempt {})",
        job.run_id,
        job.attempt
    );
    state.jobs.publish_status(job.run_id, StoredStatus::Running);
    Ok(Json(Claimed {
        run_id: job.run_id,
        attempt: job.attempt,
        config: job.config,
    })
    .into_response())
}

/// A heartbeat: renews the worker's lease on its run, stores the metric points it carries and
/// answers whether the run's cancellation was requested.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/heartbeat",
    tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    request_body(content = Heartbeat, content_type = "application/json"),
    responses(
        (status = 200, description = "Whether to stop", body = HeartbeatAnswer),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::error::ErrorBody),
        (status = 404, description = "No such registered worker", body = super::error::ErrorBody),
        (status = 409, description = "The run is no longer this attempt's: its lease lapsed or it ended", body = super::error::ErrorBody),
        (status = 413, description = "More than 10,000 points", body = super::error::ErrorBody),
        (status = 422, description = "`run_id` without `attempt` (or the reverse), points without them, or a point with a negative step", body = super::error::ErrorBody),
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let id = worker_id(path)?;
    let beat: Heartbeat = typed_json_body(body)?;
    checked_points(&beat.points)?;
    let tokens_per_sec = beat.tokens_per_sec.filter(|t| t.is_finite() && *t >= 0.0);
    let (run_id, attempt) = match (beat.run_id, beat.attempt) {
        (Some(run_id), Some(attempt)) => (run_id, attempt),
        (None, None) if beat.points.is_empty() => {
            (state.store.touch_worker(id, tokens_per_sec).await?)
                .ok_or_else(|| not_registered(id))?;
            return Ok(Json(HeartbeatAnswer { cancel: false }));
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "'run_id' and 'attempt' go together, and points need them".into(),
            ));
        }
    };
    // One write transaction: the lease, the points and the worker's last sign of life.
    let lease = state.settings.lease_secs;
    let cancel = (state.store)
        .renew_lease(id, run_id, attempt, lease, &beat.points, tokens_per_sec)
        .await?;
    if !beat.points.is_empty() {
        state.jobs.publish_metrics(run_id, beat.points);
    }
    Ok(Json(HeartbeatAnswer { cancel }))
}

/// The end of a claimed run: its last points and its summary or error.
#[utoipa::path(
    post,
    path = "/api/v1/workers/{id}/finish",
    tag = "workers",
    params(("id" = i64, Path, description = "Worker id")),
    request_body(content = FinishRun, content_type = "application/json"),
    responses(
        (status = 200, description = "The run's status", body = Finished),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::error::ErrorBody),
        (status = 404, description = "No such worker", body = super::error::ErrorBody),
        (status = 409, description = "The run is no longer this attempt's: its lease lapsed or it ended", body = super::error::ErrorBody),
        (status = 413, description = "More than 10,000 points", body = super::error::ErrorBody),
        (status = 422, description = "Not exactly one of `summary` and `error`, or a point with a negative step", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn finish(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Finished>, ApiError> {
    let id = worker_id(path)?;
    let end: FinishRun = typed_json_body(body)?;
    checked_points(&end.points)?;
    let error: Option<String> = (end.error.as_ref()).map(|e| e.chars().take(10_000).collect());
    let outcome: Result<&RunSummary, &str> = match (&end.summary, &error) {
        (Some(summary), None) => Ok(summary),
        (None, Some(error)) => Err(error),
        _ => {
            return Err(ApiError::Unprocessable(
                "give exactly one of 'summary' and 'error'".into(),
            ));
        }
    };
    (state.store)
        .finish_leased(id, end.run_id, end.attempt, &end.points, outcome)
        .await?;
    if !end.points.is_empty() {
        state.jobs.publish_metrics(end.run_id, end.points.clone());
    }
    let status = match outcome {
        Ok(summary) => StoredStatus::from(summary.status),
        Err(_) => StoredStatus::Failed,
    };
    tracing::info!("worker {id}: run {} {}", end.run_id, status.name());
    state.jobs.publish_status(end.run_id, status);
    Ok(Json(Finished { status }))
}
