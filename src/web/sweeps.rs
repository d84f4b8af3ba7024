//! `/api/v1/sweeps`: a named grid of runs (parameterizations x widths x depths x learning rates x
//! seeds, other settings shared) queued in one request, and its progress.

use super::error::ApiError;
use super::runs::{json_object, parse_new_run};
use super::{AppState, ServerSettings};
use crate::store::{Comparison, Condition, FilterValue, NewRun, RunQuery, StoredStatus};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sweeps", post(create_sweep))
        .route("/api/v1/sweeps/{id}", get(get_sweep))
}

/// Largest grid one request may queue.
pub const MAX_SWEEP_RUNS: usize = 1000;

fn list(
    body: &mut Map<String, Value>,
    key: &str,
    default: Option<Value>,
) -> Result<Vec<Value>, ApiError> {
    match body.remove(key).or(default) {
        Some(Value::Array(values)) if !values.is_empty() => Ok(values),
        Some(_) => Err(ApiError::Unprocessable(format!(
            "'{key}' must be a non-empty list"
        ))),
        None => Err(ApiError::Unprocessable(format!(
            "'{key}' is required (a list)"
        ))),
    }
}

/// Checks a sweep request (the JSON object `POST /api/v1/sweeps` takes) and expands its grid:
/// the sweep's name, the spec to store, and one new run per grid point (every point validated and
/// admitted as a run by `settings`: sizes, memory, data roots). Shared by the API and the
/// new-sweep form, so both accept and refuse the same sweeps.
pub(crate) async fn build_sweep(
    mut body: Map<String, Value>,
    settings: &ServerSettings,
) -> Result<(String, Value, Vec<NewRun>), ApiError> {
    let spec = Value::Object(body.clone());
    let name = match body.remove("name") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 200 => s,
        _ => {
            return Err(ApiError::Unprocessable(
                "'name' is required: a string of 1 to 200 characters".into(),
            ));
        }
    };
    let parameterizations = list(&mut body, "parameterizations", None)?;
    let widths = list(&mut body, "widths", None)?;
    let depths = list(&mut body, "depths", None)?;
    let lrs = list(&mut body, "lrs", None)?;
    let seeds = list(&mut body, "seeds", Some(json!([0])))?;
    let shared = match body.remove("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(config)) => config,
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "'config' must be an object of run settings".into(),
            ));
        }
    };
    // The grid and the sweep itself set these; `lr` and `seed` are run settings the grid
    // overrides.
    if let Some(key) = ["parameterization", "width", "depth", "name", "tags"]
        .into_iter()
        .find(|key| shared.contains_key(*key))
    {
        return Err(ApiError::BadRequest(format!(
            "'config' cannot set '{key}': the sweep's grid, name and tags set it"
        )));
    }
    let tags = body.remove("tags");
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "unknown field '{unknown}': a sweep has name, parameterizations, widths, depths, lrs, seeds, config, tags"
        )));
    }
    let total = [&parameterizations, &widths, &depths, &lrs, &seeds]
        .iter()
        .fold(1usize, |product, list| product.saturating_mul(list.len()));
    if total > MAX_SWEEP_RUNS {
        return Err(ApiError::Unprocessable(format!(
            "the grid has {total} runs; at most {MAX_SWEEP_RUNS} per sweep"
        )));
    }
    let mut runs = Vec::with_capacity(total);
    for p in &parameterizations {
        for w in &widths {
            for d in &depths {
                for lr in &lrs {
                    for seed in &seeds {
                        let mut run = shared.clone();
                        for (key, value) in [
                            ("parameterization", p),
                            ("width", w),
                            ("depth", d),
                            ("lr", lr),
                            ("seed", seed),
                        ] {
                            run.insert(key.into(), value.clone());
                        }
                        if let Some(tags) = &tags {
                            run.insert("tags".into(), tags.clone());
                        }
                        let point = format!("{p} {w}x{d} lr {lr} seed {seed}");
                        let new = parse_new_run(run, settings).await.map_err(|e| match e {
                            ApiError::Unprocessable(m) | ApiError::BadRequest(m) => {
                                ApiError::Unprocessable(format!("grid point {point}: {m}"))
                            }
                            other => other,
                        })?;
                        runs.push(new);
                    }
                }
            }
        }
    }
    Ok((name, spec, runs))
}

/// Queues a sweep: every combination of a grid of settings as one run.
///
/// The grid is `parameterizations x widths x depths x lrs x seeds` (at most 1000 runs); `config`
/// holds the settings the runs share. Every grid point is checked before any run is queued.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps",
    tag = "sweeps",
    request_body(content = super::openapi::CreateSweep, content_type = "application/json"),
    responses(
        (status = 201, description = "The sweep and its queued runs", body = super::openapi::SweepCreated),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = super::openapi::ErrorBody),
        (status = 422, description = "A missing list, too many runs, or an invalid grid point", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_sweep(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_object(body)?;
    let (name, spec, runs) = build_sweep(body, &state.settings).await?;
    let (id, run_ids) = state.store.create_sweep(&name, &spec, &runs).await?;
    state.jobs.wake();
    let sweep = state.store.sweep(id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"sweep": sweep, "run_ids": run_ids})),
    )
        .into_response())
}

/// The runs of sweep `id`, oldest first (all of them: a sweep has at most [`MAX_SWEEP_RUNS`]).
pub(crate) fn sweep_runs_query(id: i64) -> RunQuery {
    RunQuery {
        conditions: vec![Condition {
            column: "sweep_id",
            comparison: Comparison::Eq,
            values: vec![FilterValue::Int(id)],
        }],
        sort: "id",
        descending: false,
        limit: MAX_SWEEP_RUNS as i64,
        ..RunQuery::default()
    }
}

/// Returns a sweep with its progress and runs.
#[utoipa::path(
    get,
    path = "/api/v1/sweeps/{id}",
    tag = "sweeps",
    params(("id" = i64, Path, description = "Sweep id")),
    responses(
        (status = 200, description = "The sweep, its progress and its runs", body = super::openapi::SweepDetail),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such sweep", body = super::openapi::ErrorBody),
    )
)]
async fn get_sweep(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) =
        path.map_err(|_| ApiError::BadRequest("the sweep id must be an integer".into()))?;
    let sweep = state.store.sweep(id).await?;
    let (runs, total) = state.store.runs(&sweep_runs_query(id)).await?;
    let count = |s: StoredStatus| runs.iter().filter(|r| r.status == s).count();
    let finished = runs.iter().filter(|r| r.status.is_final()).count();
    let progress = json!({
        "total": total,
        "finished": finished,
        "queued": count(StoredStatus::Queued) + count(StoredStatus::Interrupted),
        "running": count(StoredStatus::Running),
        "succeeded": count(StoredStatus::Succeeded),
        "diverged": count(StoredStatus::Diverged),
        "failed": count(StoredStatus::Failed),
        "cancelled": count(StoredStatus::Cancelled),
        "fraction_done": if total > 0 { finished as f64 / total as f64 } else { 0.0 },
    });
    Ok(Json(json!({"sweep": sweep, "progress": progress, "runs": runs})).into_response())
}
