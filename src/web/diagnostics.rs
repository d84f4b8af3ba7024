//! `/api/v1/diagnostics`: coordinate checks and the linearization check, run in the background and
//! stored.
//!
//! A diagnostic is queued with its kind and options (validated first), runs on the server's one
//! diagnostics worker (queued -> running -> succeeded or failed) and keeps its result. Kinds:
//! `coord-depth` and `coord-width` ([`crate::coord`]), `linearization` ([`crate::linearize`]).

use super::body::json_body;
use super::error::ApiError;
use super::{AppState, ServerSettings};
use crate::jobs::{DiagnosticError, DiagnosticKind, DiagnosticProgress, DiagnosticSpec};
use crate::limits::{estimate_run_memory, model_vocab};
use crate::store::DiagnosticRecord;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/diagnostics",
            get(list_diagnostics).post(create_diagnostic),
        )
        .route("/api/v1/diagnostics/{id}", get(get_diagnostic))
}

#[derive(OpenApi)]
#[openapi(
    paths(create_diagnostic, list_diagnostics, get_diagnostic),
    components(schemas(
        CreateDiagnostic,
        DiagnosticView,
        DiagnosticList,
        DiagnosticKind,
        DiagnosticProgress,
        crate::store::DiagnosticStatus,
    )),
    tags((name = "diagnostics", description = "Coordinate checks over depth and width, and the relative distance from linearization over depth, run in the background."))
)]
struct Doc;

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

/// Largest number of diagnostics a listing returns.
const LIST_LIMIT: i64 = 200;

impl From<DiagnosticError> for ApiError {
    fn from(e: DiagnosticError) -> Self {
        match e {
            DiagnosticError::Malformed(m) => ApiError::BadRequest(m),
            DiagnosticError::Invalid(m) => ApiError::Unprocessable(m),
            DiagnosticError::Store(e) => e.into(),
        }
    }
}

/// A diagnostic to queue: its kind, and options of that kind (the document describes each
/// kind's options). Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"kind": "linearization", "options": {"depths": [2, 4, 8], "seeds": 1}}))]
pub(crate) struct CreateDiagnostic {
    kind: DiagnosticKind,
    /// The kind's options; every field is optional. Coordinate checks: `parameterizations`,
    /// `depths` and `width` (coord-depth) or `widths` and `depth` (coord-width), `steps`,
    /// `seeds`, `lr`, `batch`, `context`, `d_head`, `attention_scale`. Linearization:
    /// `parameterizations`, `depths`, `width`, `seeds`, `lr`, `batch`, `context`, `d_head`,
    /// `attention_scale`.
    #[schema(value_type = Option<Object>)]
    options: Option<Value>,
}

/// A stored diagnostic and, while it runs, its progress.
#[derive(Serialize, ToSchema)]
#[schema(as = DiagnosticDetail)]
pub(crate) struct DiagnosticView {
    #[serde(flatten)]
    pub record: DiagnosticRecord,
    /// While it runs.
    pub progress: Option<DiagnosticProgress>,
}

/// The diagnostics, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct DiagnosticList {
    diagnostics: Vec<DiagnosticView>,
}

pub(crate) fn view(state: &AppState, record: DiagnosticRecord) -> DiagnosticView {
    DiagnosticView {
        progress: state.jobs.diagnostic_progress(record.id),
        record,
    }
}

/// Admission control for a diagnostic: its options parsed and validated as the queue would,
/// then refused (422) when the largest model it trains would not fit the server's memory limit
/// (the worker trains one model at a time).
pub(crate) fn admit_diagnostic(
    kind: DiagnosticKind,
    options: &Value,
    settings: &ServerSettings,
) -> Result<(), ApiError> {
    admit_spec(&DiagnosticSpec::parse(kind, options)?, settings)
}

/// [`admit_diagnostic`] for options already parsed.
pub(crate) fn admit_spec(spec: &DiagnosticSpec, settings: &ServerSettings) -> Result<(), ApiError> {
    let models = match spec {
        DiagnosticSpec::Coord(o) => o.run_configs(),
        DiagnosticSpec::Linearization(o) => o.run_configs(),
    };
    let largest = models
        .iter()
        .map(|config| (config, estimate_run_memory(config, model_vocab(config))))
        .max_by_key(|(_, estimate)| estimate.total_bytes());
    if let Some((config, estimate)) = largest {
        let what = format!(
            "its largest model ({} x {}, batch {}, context {})",
            config.width, config.depth, config.batch, config.context
        );
        estimate
            .admit(settings.max_run_memory_bytes, &what)
            .map_err(ApiError::Unprocessable)?;
    }
    Ok(())
}

/// Queues a diagnostic.
///
/// `options` may leave out any field (each takes the kind's default) and is checked before
/// anything is stored: an unknown field is a 400, a value out of range, a grid point the
/// trainer would refuse or a largest model whose estimated peak memory is above the server's
/// limit (`--max-run-memory-gib`) a 422. The diagnostic runs after those queued before it, one
/// at a time.
#[utoipa::path(
    post,
    path = "/api/v1/diagnostics",
    tag = "diagnostics",
    request_body(content = CreateDiagnostic, content_type = "application/json"),
    responses(
        (status = 202, description = "The queued diagnostic", body = DiagnosticView),
        (status = 400, description = "Malformed JSON, an unknown field or an unknown option", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "A missing or unknown kind, an option the diagnostic refuses, or a largest model above the server's memory limit", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_diagnostic(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let CreateDiagnostic { kind, options } = json_body(body)?;
    let options = options.unwrap_or(Value::Null);
    admit_diagnostic(kind, &options, &state.settings)?;
    let id = state.jobs.enqueue_diagnostic(kind, &options, None).await?;
    let record = state
        .store
        .diagnostic(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("diagnostic {id} vanished")))?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, record))).into_response())
}

/// Lists the diagnostics, newest first (at most 200).
#[utoipa::path(
    get,
    path = "/api/v1/diagnostics",
    tag = "diagnostics",
    responses(
        (status = 200, description = "The diagnostics, newest first, with their results", body = DiagnosticList),
    )
)]
async fn list_diagnostics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let diagnostics: Vec<DiagnosticView> = state
        .store
        .diagnostics(LIST_LIMIT)
        .await?
        .into_iter()
        .map(|record| view(&state, record))
        .collect();
    Ok(Json(DiagnosticList { diagnostics }).into_response())
}

/// Returns a diagnostic: its status, options, progress and, once it succeeded, its result.
#[utoipa::path(
    get,
    path = "/api/v1/diagnostics/{id}",
    tag = "diagnostics",
    params(("id" = i64, Path, description = "Diagnostic id")),
    responses(
        (status = 200, description = "The diagnostic", body = DiagnosticView),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such diagnostic", body = super::error::ErrorBody),
    )
)]
async fn get_diagnostic(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::BadRequest("the diagnostic id must be an integer".into()))?;
    let record = state
        .store
        .diagnostic(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("diagnostic {id} not found")))?;
    Ok(Json(view(&state, record)).into_response())
}
