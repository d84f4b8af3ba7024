//! Runs trained elsewhere: `POST /api/v1/runs/import` (a batch of runs, each with optional
//! metric series), `POST /api/v1/runs/import.csv` (the columns of the CSV export) and
//! `POST /api/v1/runs/{id}/metrics` (append points to an imported run, e.g. from a notebook
//! while it trains).
//!
//! When an import gives only FLOPs, tokens are `flops / (6 params)`; when it gives only tokens,
//! FLOPs are the plain `6 params tokens` (the dense component of [`crate::flops`]).

use super::AppState;
use super::body::{json_body, json_object, path_message};
use super::error::ApiError;
use crate::numbers::Count;
use crate::param::Parameterization;
use crate::store::{ImportedRun, MetricPoint, RunSource};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs/import", post(import_runs))
        .route("/api/v1/runs/import.csv", post(import_runs_csv))
}

const MAX_RUNS_PER_IMPORT: usize = 10_000;
const MAX_POINTS_PER_REQUEST: usize = 100_000;

/// One metric point sent by an importer: `step`, `tokens` or `flops` (the other is derived
/// from `6 * params * tokens`; a point with neither, or whose derived value overflows, is
/// refused with 422), and `train_loss` or `val_loss` (422 without either). Unknown fields
/// are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"step": 100, "tokens": 409600, "train_loss": 4.1, "lr": 0.001}))]
pub(crate) struct MetricPointIn {
    #[schema(value_type = i64, minimum = 0, maximum = 9223372036854775807_i64)]
    step: Count,
    #[schema(exclusive_minimum = 0.0)]
    tokens: Option<f64>,
    #[schema(exclusive_minimum = 0.0)]
    flops: Option<f64>,
    #[schema(exclusive_minimum = 0.0)]
    train_loss: Option<f64>,
    #[schema(exclusive_minimum = 0.0)]
    val_loss: Option<f64>,
    #[schema(exclusive_minimum = 0.0)]
    lr: Option<f64>,
    wall_secs: Option<f64>,
}

/// A run trained elsewhere. Give `tokens` or `flops` (the other is derived from
/// `6 * params * tokens`; 422 without either, or when the derived value overflows). Fields
/// not listed here are kept as the run's config. Counts (`params`, `width`, `depth`, a
/// point's `step`) take any JSON number: a float within 0.01% of a whole number (as pandas
/// and CSV files give them) is rounded; a fractional, negative or non-finite count is a 422
/// naming the field (`run 3: 'metrics[1].step': ...`).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ImportedRun)]
pub(crate) struct RunIn {
    name: Option<String>,
    #[schema(value_type = crate::param::Parameterization)]
    parameterization: String,
    /// Required (0.5 to 1) for `parameterization = "alpha"`; for the others absent or their
    /// own (0.5 for `depth-mup`, 1 for `completep`).
    alpha: Option<f64>,
    /// Non-embedding parameters.
    #[schema(value_type = i64, minimum = 1, maximum = 9223372036854775807_i64)]
    params: Count,
    /// The final loss (positive).
    #[schema(exclusive_minimum = 0.0)]
    final_loss: f64,
    /// Training tokens.
    #[schema(exclusive_minimum = 0.0)]
    tokens: Option<f64>,
    /// Training FLOPs.
    #[schema(exclusive_minimum = 0.0)]
    flops: Option<f64>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9223372036854775807_i64)]
    width: Option<Count>,
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9223372036854775807_i64)]
    depth: Option<Count>,
    #[schema(exclusive_minimum = 0.0)]
    lr: Option<f64>,
    dataset: Option<String>,
    tags: Option<Vec<String>>,
    /// The run's metric series, at most 100000 points.
    #[schema(max_items = 100000)]
    metrics: Option<Vec<MetricPointIn>>,
    /// Every other field, kept as the run's config.
    #[serde(flatten)]
    #[schema(ignore)]
    extra: serde_json::Map<String, Value>,
}

/// A batch of runs to import.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"runs": [{
    "name": "external-1", "parameterization": "mup", "width": 512, "depth": 4,
    "params": 12582912, "tokens": 251658240, "final_loss": 3.21, "tags": ["nanogpt"],
    "metrics": [{"step": 0, "tokens": 0.1, "train_loss": 10.8}]
}]}))]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRuns {
    #[schema(min_items = 1, max_items = 10000)]
    runs: Vec<RunIn>,
}

/// The ids of the imported runs, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportResult {
    ids: Vec<i64>,
}

/// Points to append to an imported run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendMetrics {
    #[schema(max_items = 100000)]
    points: Vec<MetricPointIn>,
}

/// How many points were appended.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AppendResult {
    run_id: i64,
    appended: u64,
}

fn finite_positive(name: &str, value: Option<f64>, context: &str) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(ApiError::Unprocessable(format!(
            "{context}: '{name}' must be a positive finite number, got {v}"
        ))),
        other => Ok(other),
    }
}

/// Refuses tokens or FLOPs derived from the other (`6 params tokens`) that overflow to infinity
/// or underflow to zero.
fn finite_derived(tokens: f64, flops: f64, context: &str) -> Result<(), ApiError> {
    for (name, value) in [("tokens", tokens), ("flops", flops)] {
        if !(value.is_finite() && value > 0.0) {
            return Err(ApiError::Unprocessable(format!(
                "{context}: the derived '{name}' ({value}) is not a positive finite number: give \
                 both 'tokens' and 'flops'"
            )));
        }
    }
    Ok(())
}

/// Validates points; `params` converts between tokens and FLOPs when only one is given.
fn points(
    raw: Vec<MetricPointIn>,
    params: f64,
    context: &str,
) -> Result<Vec<MetricPoint>, ApiError> {
    if raw.len() > MAX_POINTS_PER_REQUEST {
        return Err(ApiError::PayloadTooLarge(format!(
            "{context}: at most {MAX_POINTS_PER_REQUEST} points per request"
        )));
    }
    raw.into_iter()
        .map(|p| {
            let step = i64::try_from(p.step.0).map_err(|_| {
                ApiError::Unprocessable(format!("{context}: step {} is too large", p.step.0))
            })?;
            let at = format!("{context}, step {step}");
            for (name, value) in [
                ("train_loss", p.train_loss),
                ("val_loss", p.val_loss),
                ("lr", p.lr),
            ] {
                finite_positive(name, value, &at)?;
            }
            if p.train_loss.is_none() && p.val_loss.is_none() {
                return Err(ApiError::Unprocessable(format!(
                    "{at}: give 'train_loss' or 'val_loss'"
                )));
            }
            let (tokens, flops) = match (
                finite_positive("tokens", p.tokens, &at)?,
                finite_positive("flops", p.flops, &at)?,
            ) {
                (Some(t), Some(f)) => (t, f),
                (Some(t), None) => (t, 6.0 * params * t),
                (None, Some(f)) => (f / (6.0 * params), f),
                (None, None) => {
                    return Err(ApiError::Unprocessable(format!(
                        "{at}: give 'tokens' or 'flops'"
                    )));
                }
            };
            finite_derived(tokens, flops, &at)?;
            Ok(MetricPoint {
                step,
                tokens: tokens.round() as i64,
                flops,
                train_loss: p.train_loss,
                val_loss: p.val_loss,
                lr: p.lr,
                wall_secs: p.wall_secs,
            })
        })
        .collect()
}

/// A run of an import as its typed form, errors naming `context` and the field's path.
fn run_in(value: Value, context: &str) -> Result<RunIn, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!(
            "{context} must be a JSON object"
        )));
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::Unprocessable(format!("{context}: {}", path_message(e))))
}

/// Checks a run to import and derives what it leaves out.
fn imported_run(run: RunIn, context: &str) -> Result<ImportedRun, ApiError> {
    let parsed: Parameterization =
        run.parameterization
            .parse()
            .map_err(|e: crate::param::ParamError| {
                ApiError::Unprocessable(format!("{context}: {e}"))
            })?;
    let alpha = parsed
        .depth_alpha(run.alpha)
        .map_err(|e| ApiError::Unprocessable(format!("{context}: {e}")))?;
    let params = i64::try_from(run.params.0)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "{context}: 'params' (non-embedding parameters) must be above 0 and below 2^63"
            ))
        })?;
    let final_loss = finite_positive("final_loss", Some(run.final_loss), context)?.expect("given");
    let tokens = finite_positive("tokens", run.tokens, context)?;
    let flops = finite_positive("flops", run.flops, context)?;
    let p = params as f64;
    let (tokens, flops, flops_dense) = match (tokens, flops) {
        (Some(t), Some(f)) => (t, f, None),
        (Some(t), None) => (t, 6.0 * p * t, Some(6.0 * p * t)),
        (None, Some(f)) => (f / (6.0 * p), f, None),
        (None, None) => {
            return Err(ApiError::Unprocessable(format!(
                "{context}: give 'tokens' or 'flops'"
            )));
        }
    };
    finite_derived(tokens, flops, context)?;
    let positive_int = |name: &str, v: Option<Count>| match v.map(|c| i64::try_from(c.0)) {
        None => Ok(None),
        Some(Ok(x)) if x > 0 => Ok(Some(x)),
        Some(_) => Err(ApiError::Unprocessable(format!(
            "{context}: '{name}' must be a positive whole number below 2^63"
        ))),
    };
    Ok(ImportedRun {
        name: run.name,
        parameterization: run.parameterization,
        alpha,
        width: positive_int("width", run.width)?,
        depth: positive_int("depth", run.depth)?,
        lr: finite_positive("lr", run.lr, context)?,
        params,
        tokens: tokens.round() as i64,
        flops,
        flops_dense,
        final_loss,
        dataset: run.dataset,
        tags: run.tags.unwrap_or_default(),
        metrics: points(run.metrics.unwrap_or_default(), p, context)?,
        extra: Value::Object(run.extra),
        created_by: super::auth::creator(),
    })
}

/// Imports runs trained elsewhere, each with an optional metric series.
///
/// Up to 10000 runs per request, stored with source `imported` and status `succeeded`. The whole
/// batch is refused if any run is invalid; errors name the run's index.
#[utoipa::path(
    post,
    path = "/api/v1/runs/import",
    tag = "imports",
    request_body(content = ImportRuns, content_type = "application/json"),
    responses(
        (status = 201, description = "The new runs' ids, in request order", body = ImportResult),
        (status = 400, description = "Malformed JSON, or not `{\"runs\": [...]}`", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "An invalid run or point", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn import_runs(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let object = json_object(body)?;
    let body: ImportRuns =
        serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
            // `runs[3].metrics[1].step` reads `run 3: 'metrics[1].step'`.
            let path = e.path().to_string();
            let message = e.inner().to_string().replace('`', "'");
            let in_run = path
                .strip_prefix("runs[")
                .and_then(|rest| rest.split_once(']'));
            match in_run {
                Some((index, "")) => ApiError::Unprocessable(format!("run {index}: {message}")),
                Some((index, field)) => ApiError::Unprocessable(format!(
                    "run {index}: '{}': {message}",
                    field.trim_start_matches('.')
                )),
                None if message.contains("unknown field '") => {
                    ApiError::BadRequest(format!("{message}: the body is {{\"runs\": [...]}}"))
                }
                None => {
                    ApiError::BadRequest(format!("the body must be {{\"runs\": [...]}}: {message}"))
                }
            }
        })?;
    if body.runs.is_empty() || body.runs.len() > MAX_RUNS_PER_IMPORT {
        return Err(ApiError::Unprocessable(format!(
            "an import holds between 1 and {MAX_RUNS_PER_IMPORT} runs, got {}",
            body.runs.len()
        )));
    }
    let runs = body
        .runs
        .into_iter()
        .enumerate()
        .map(|(i, run)| imported_run(run, &format!("run {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = state.store.import_runs(&runs).await?;
    Ok((StatusCode::CREATED, Json(ImportResult { ids })).into_response())
}

/// Columns of `GET /api/v1/runs.csv` that describe a run's life on the exporting server, not
/// the run: left out of an imported run's config.
const EXPORT_ONLY_COLUMNS: [&str; 10] = [
    "id",
    "source",
    "status",
    "sweep_id",
    "created_at",
    "finished_at",
    "flops_dense",
    "flops_unembedding",
    "flops_attention",
    "tokens_per_sec",
];

/// Columns read as text even when they look like numbers.
const TEXT_COLUMNS: [&str; 4] = ["name", "parameterization", "dataset", "tags"];

/// A CSV row as the JSON run [`imported_run`] takes: empty cells left out, numbers as numbers,
/// `tags` split at `;`, and the export's and pandas' names mapped to the import's
/// (`params_non_embedding`, `n_params` -> `params`; `final_val_loss`, else `final_train_loss`,
/// `loss` -> `final_loss`; `train_flops` -> `flops`). `defaults` fill columns the file lacks.
fn csv_row(header: &[String], record: &csv::StringRecord, defaults: &[(String, String)]) -> Value {
    let mut run = serde_json::Map::new();
    let mut train_loss = None;
    let cells = header
        .iter()
        .map(String::as_str)
        .zip(record.iter())
        .chain(defaults.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (column, cell) in cells {
        let cell = cell.trim();
        let key = match column {
            "params_non_embedding" | "n_params" => "params",
            "final_val_loss" | "loss" => "final_loss",
            "train_flops" => "flops",
            other => other,
        };
        if cell.is_empty() || EXPORT_ONLY_COLUMNS.contains(&key) || run.contains_key(key) {
            continue;
        }
        let number = || {
            cell.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
        };
        let value = if key == "final_train_loss" {
            // Stands in for a missing validation loss, below.
            train_loss = number();
            continue;
        } else if key == "tags" {
            Value::from(
                cell.split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>(),
            )
        } else if TEXT_COLUMNS.contains(&key) {
            Value::from(cell)
        } else {
            number().map_or_else(|| Value::from(cell), Value::Number)
        };
        run.insert(key.to_string(), value);
    }
    if let Some(loss) = train_loss.filter(|_| !run.contains_key("final_loss")) {
        run.insert("final_loss".into(), Value::Number(loss));
    }
    Value::Object(run)
}

/// Imports runs from CSV: the columns of `GET /api/v1/runs.csv`, so an export (or a spreadsheet
/// made from one) round-trips.
///
/// One run per row after a header. The import reads `parameterization`, `params_non_embedding`
/// (or `params`, `n_params`), `tokens` or `flops` (or `train_flops`), `final_val_loss` (else
/// `final_train_loss`; or `final_loss`, `loss`), and the optional `name`, `alpha`, `width`,
/// `depth`, `lr`, `dataset` and `tags` (`;`-separated); other columns are kept as the run's
/// config, and the export's bookkeeping columns (`id`, `status`, `created_at`, ...) are left
/// out. Query parameters give values for columns the file lacks
/// (`?parameterization=sp&tags=chinchilla`). Counts may be floats. The whole file is refused if
/// any row is invalid; errors name the row (1 is the first after the header).
#[utoipa::path(
    post,
    path = "/api/v1/runs/import.csv",
    tag = "imports",
    params(
        ("parameterization" = Option<String>, Query, description = "For rows without one"),
        ("tags" = Option<String>, Query, description = "`;`-separated tags for rows without any"),
    ),
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 201, description = "The new runs' ids, in row order", body = ImportResult),
        (status = 400, description = "An unknown query parameter", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "Not CSV with a header, an invalid row, or more than 10000 rows", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub(super) async fn import_runs_csv(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(defaults) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some((unknown, _)) = defaults
        .iter()
        .find(|(k, _)| k != "parameterization" && k != "tags")
    {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter '{unknown}': give parameterization or tags"
        )));
    }
    let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let runs = runs_from_csv(&body, &defaults)?;
    let ids = state.store.import_runs(&runs).await?;
    Ok((StatusCode::CREATED, Json(ImportResult { ids })).into_response())
}

/// The runs of a CSV with the export's columns (see `POST /api/v1/runs/import.csv`), with
/// `defaults` (`parameterization`, `tags`) for the columns it lacks; a bad row refuses all,
/// naming the row.
pub(crate) fn runs_from_csv(
    body: &[u8],
    defaults: &[(String, String)],
) -> Result<Vec<ImportedRun>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| ApiError::Unprocessable(format!("not CSV with a header: {e}")))?
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(ApiError::Unprocessable("the CSV has no header row".into()));
    }
    let mut runs = Vec::new();
    for (i, record) in reader.records().enumerate() {
        if runs.len() == MAX_RUNS_PER_IMPORT {
            return Err(ApiError::Unprocessable(format!(
                "an import holds at most {MAX_RUNS_PER_IMPORT} runs"
            )));
        }
        let record = record.map_err(|e| ApiError::Unprocessable(format!("row {}: {e}", i + 1)))?;
        let row = format!("row {}", i + 1);
        let run = imported_run(run_in(csv_row(&header, &record, defaults), &row)?, &row)?;
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(ApiError::Unprocessable(
            "the CSV has a header but no rows".into(),
        ));
    }
    Ok(runs)
}

/// Appends metric points to an imported run.
///
/// For runs imported and still training elsewhere, e.g. from a notebook. Runs trained by
/// shapewise refuse this. (Routed with the runs resource, which owns the path.)
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/metrics",
    tag = "imports",
    params(("id" = i64, Path, description = "Run id of an imported run")),
    request_body(content = AppendMetrics, content_type = "application/json"),
    responses(
        (status = 200, description = "How many points were appended", body = AppendResult),
        (status = 400, description = "Malformed JSON or a bad id", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large, or more than 100000 points", body = super::error::ErrorBody),
        (status = 422, description = "An invalid point, or a run trained by shapewise", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub(super) async fn append_metrics(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::BadRequest("the run id must be an integer".into()))?;
    let body: AppendMetrics = json_body(body)?;
    let run = state.store.run(id).await?;
    if run.source != RunSource::Imported {
        return Err(ApiError::Unprocessable(format!(
            "run {id} is trained by shapewise: metrics can only be appended to imported runs"
        )));
    }
    let params = run.params_non_embedding.unwrap_or(1) as f64;
    let points = points(body.points, params, &format!("run {id}"))?;
    state.store.append_metrics(id, &points).await?;
    let appended = points.len() as u64;
    Ok(Json(AppendResult {
        run_id: id,
        appended,
    })
    .into_response())
}
