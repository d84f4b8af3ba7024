//! `/api/v1/diagnostics`: coordinate checks and the linearization check, run in the background and
//! stored.
//!
//! A diagnostic is queued with its kind and options (validated first), runs on the server's one
//! diagnostics worker (queued -> running -> succeeded or failed) and keeps its result. Kinds:
//! `coord-depth` and `coord-width` ([`crate::coord`]), `linearization` ([`crate::linearize`]).

use super::body::json_object;
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
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::OpenApi;

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
        schemas::CreateDiagnostic,
        schemas::DiagnosticDetail,
        schemas::DiagnosticList,
        schemas::DiagnosticKind,
        schemas::DiagnosticProgress,
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

/// A stored diagnostic and, while it runs, its progress.
#[derive(Serialize)]
pub(crate) struct DiagnosticView {
    #[serde(flatten)]
    pub record: DiagnosticRecord,
    pub progress: Option<DiagnosticProgress>,
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

/// The kinds as a sentence: `coord-depth, coord-width or linearization`.
fn kind_names() -> String {
    let names: Vec<&str> = DiagnosticKind::ALL.iter().map(|k| k.name()).collect();
    let (last, rest) = names.split_last().unwrap_or((&"", &[]));
    format!("{} or {last}", rest.join(", "))
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
    request_body(content = schemas::CreateDiagnostic, content_type = "application/json"),
    responses(
        (status = 202, description = "The queued diagnostic", body = schemas::DiagnosticDetail),
        (status = 400, description = "Malformed JSON, an unknown field or an unknown option", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = super::openapi::ErrorBody),
        (status = 422, description = "A missing or unknown kind, an option the diagnostic refuses, or a largest model above the server's memory limit", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_diagnostic(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut body = json_object(body)?;
    let kind = match body.remove("kind") {
        Some(Value::String(name)) => DiagnosticKind::parse(&name).ok_or_else(|| {
            ApiError::Unprocessable(format!("unknown kind '{name}': use {}", kind_names()))
        })?,
        _ => {
            return Err(ApiError::Unprocessable(format!(
                "'kind' is required: {}",
                kind_names()
            )));
        }
    };
    let options = body.remove("options").unwrap_or(Value::Null);
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "unknown field '{unknown}': a diagnostic has kind and options"
        )));
    }
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
        (status = 200, description = "The diagnostics, newest first, with their results", body = schemas::DiagnosticList),
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
    Ok(Json(json!({ "diagnostics": diagnostics })).into_response())
}

/// Returns a diagnostic: its status, options, progress and, once it succeeded, its result.
#[utoipa::path(
    get,
    path = "/api/v1/diagnostics/{id}",
    tag = "diagnostics",
    params(("id" = i64, Path, description = "Diagnostic id")),
    responses(
        (status = 200, description = "The diagnostic", body = schemas::DiagnosticDetail),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such diagnostic", body = super::openapi::ErrorBody),
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

/// The documentation-only request and response shapes (the handlers parse and answer with
/// `serde_json` values of these shapes).
#[allow(dead_code)]
mod schemas {
    use crate::store::DiagnosticStatus;
    use utoipa::ToSchema;

    /// A diagnostic: `coord-depth` (mean activation sizes over depth at a fixed width, paper
    /// Fig. 7), `coord-width` (the same over width at a fixed depth) or `linearization` (relative
    /// distance of a block's one-step update from its linearization over depth, paper Fig. 6).
    #[derive(ToSchema)]
    #[serde(rename_all = "kebab-case")]
    pub enum DiagnosticKind {
        CoordDepth,
        CoordWidth,
        Linearization,
    }

    /// A diagnostic to queue: its kind, and options of that kind (the document describes each
    /// kind's options).
    #[derive(ToSchema)]
    #[schema(example = json!({"kind": "linearization", "options": {"depths": [2, 4, 8], "seeds": 1}}))]
    pub struct CreateDiagnostic {
        kind: DiagnosticKind,
        /// The kind's options; every field is optional. Coordinate checks: `parameterizations`,
        /// `depths` and `width` (coord-depth) or `widths` and `depth` (coord-width), `steps`,
        /// `seeds`, `lr`, `batch`, `context`, `d_head`, `attention_scale`. Linearization:
        /// `parameterizations`, `depths`, `width`, `seeds`, `lr`, `batch`, `context`, `d_head`,
        /// `attention_scale`.
        #[schema(value_type = Option<Object>)]
        options: Option<serde_json::Value>,
    }

    /// How far a running diagnostic has got.
    #[derive(ToSchema)]
    pub struct DiagnosticProgress {
        /// Models done.
        done: u64,
        /// Models in all.
        total: u64,
        /// The last model done.
        last: String,
    }

    /// A stored diagnostic.
    #[derive(ToSchema)]
    pub struct DiagnosticDetail {
        id: i64,
        kind: DiagnosticKind,
        status: DiagnosticStatus,
        /// Every option it runs with, defaults filled in.
        #[schema(value_type = Object)]
        options: serde_json::Value,
        /// Once succeeded: for a coordinate check `axis`, `rows` (mean absolute activations per
        /// parameterization, size and step) and `slopes` (growth exponent of the final residual
        /// at step 1 and the last step); for a linearization check `lr`,
        /// `finite_difference_step`, `rows` (distance per parameterization and depth) and
        /// `slopes` (exponent of distance against depth).
        #[schema(value_type = Option<Object>)]
        result: Option<serde_json::Value>,
        /// Why it failed.
        error: Option<String>,
        /// The study it belongs to.
        sweep_id: Option<i64>,
        created_at: String,
        started_at: Option<String>,
        finished_at: Option<String>,
        /// While it runs.
        progress: Option<DiagnosticProgress>,
    }

    /// The diagnostics, newest first.
    #[derive(ToSchema)]
    pub struct DiagnosticList {
        diagnostics: Vec<DiagnosticDetail>,
    }
}
