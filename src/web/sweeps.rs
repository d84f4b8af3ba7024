//! `/api/v1/sweeps`: a named grid of runs (parameterizations x shapes x learning rates x seeds,
//! the shapes a grid of widths x depths or a list; other settings shared) queued in one request,
//! and its progress.

use super::body::{from_object, json_object};
use super::error::ApiError;
use super::runs::{CreateRun, Tags, parse_new_run};
use super::{AppState, ServerSettings};
use crate::param::Parameterization;
use crate::store::{
    Comparison, Condition, FilterValue, NewRun, RunQuery, RunRecord, StoredStatus, SweepRecord,
};
use crate::train::RunConfig;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sweeps", post(create_sweep))
        .route("/api/v1/sweeps/{id}", get(get_sweep))
}

/// Largest grid one request may queue.
pub const MAX_SWEEP_RUNS: usize = 1000;

/// A grid of runs: every combination of parameterization, width, depth, learning rate and seed
/// (at most 1000 runs, else 422), with the other settings shared. Every grid point is checked
/// as a run (422 naming the point). Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "lr-sweep", "parameterizations": ["sp", "completep"], "widths": [128, 256],
    "depths": [2, 8], "lrs": [0.001, 0.003, 0.01], "seeds": [0],
    "config": {"tokens": 1000000, "data": {"kind": "builtin", "seed": 0, "vocab": 256}},
    "tags": ["lr-sweep"]
}))]
pub(crate) struct CreateSweep {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(min_items = 1)]
    parameterizations: Vec<Parameterization>,
    /// With `depths`, the grid of shapes (or give `shapes` instead).
    #[schema(min_items = 1)]
    widths: Option<Vec<usize>>,
    #[schema(min_items = 1)]
    depths: Option<Vec<usize>>,
    /// A list of shapes instead of the grid `widths x depths`.
    #[schema(min_items = 1, max_items = 1000)]
    shapes: Option<Vec<SweepShape>>,
    /// Base learning rates: one list for every parameterization, or an object with one list per
    /// parameterization (`{"mup": [0.008], "completep": [0.008, 0.016]}`).
    #[schema(value_type = Object)]
    lrs: SweepLrs,
    #[serde(default = "first_seed")]
    #[schema(required = false, min_items = 1, default = json!([0]))]
    seeds: Vec<u64>,
    /// Settings shared by every run of the grid (the grid's `lr` and `seed` replace theirs;
    /// `parameterization`, `width`, `depth`, `name` and `tags` are the sweep's to set).
    #[schema(value_type = Option<RunConfig>)]
    config: Option<Map<String, Value>>,
    /// Tags of every run of the grid: at most 64 of 1 to 100 characters.
    #[schema(value_type = Option<Vec<String>>, max_items = 64)]
    tags: Option<Tags>,
}

fn first_seed() -> Vec<u64> {
    vec![0]
}

/// A sweep's base learning rates: one list for every parameterization, or one list each.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of learning rates, or an object of one list per parameterization"
)]
enum SweepLrs {
    All(Vec<f64>),
    Each(BTreeMap<String, Vec<f64>>),
}

/// One shape of a sweep's list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SweepShape {
    width: usize,
    depth: usize,
    /// Training tokens of this shape's runs (instead of the shared `tokens` or
    /// `tokens_per_param`).
    tokens: Option<u64>,
}

/// The created sweep and its queued runs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SweepCreated {
    sweep: SweepRecord,
    run_ids: Vec<i64>,
}

/// Run counts of a sweep by status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SweepProgress {
    total: i64,
    /// Runs that ended (succeeded, failed, diverged or cancelled).
    finished: i64,
    /// Queued or interrupted (queued again).
    queued: i64,
    running: i64,
    succeeded: i64,
    diverged: i64,
    failed: i64,
    cancelled: i64,
    /// `finished / total`.
    fraction_done: f64,
}

/// A sweep, its progress and its runs (by id).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SweepDetail {
    sweep: SweepRecord,
    progress: SweepProgress,
    runs: Vec<RunRecord>,
}

/// Refuses an empty list: every axis of a grid needs a value.
fn non_empty<T>(list: &[T], key: &str) -> Result<(), ApiError> {
    if list.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "'{key}' must be a non-empty list"
        )));
    }
    Ok(())
}

impl CreateSweep {
    /// The base learning rates of each parameterization, in the order of `parameterizations`.
    fn lrs_by_parameterization(&self) -> Result<Vec<Vec<f64>>, ApiError> {
        match &self.lrs {
            SweepLrs::All(all) => {
                non_empty(all, "lrs")?;
                // Bounded before the lists are copied per parameterization.
                if all.len().saturating_mul(self.parameterizations.len()) > MAX_SWEEP_RUNS {
                    return Err(ApiError::Unprocessable(format!(
                        "the grid has more than {MAX_SWEEP_RUNS} runs"
                    )));
                }
                Ok(vec![all.clone(); self.parameterizations.len()])
            }
            SweepLrs::Each(by) => {
                let lists = self
                    .parameterizations
                    .iter()
                    .map(|p| {
                        by.get(p.name())
                            .filter(|l| !l.is_empty())
                            .cloned()
                            .ok_or_else(|| {
                                ApiError::Unprocessable(format!(
                                    "'lrs' has no non-empty list for the parameterization {}",
                                    p.name()
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let named = |key: &String| self.parameterizations.iter().any(|p| p.name() == key);
                if let Some(other) = by.keys().find(|key| !named(key)) {
                    return Err(ApiError::Unprocessable(format!(
                        "'lrs' names '{other}', which is not one of the sweep's parameterizations"
                    )));
                }
                Ok(lists)
            }
        }
    }

    /// The shapes: the grid `widths x depths`, or the list `shapes` (exactly one of the two
    /// forms), each with its own token count when the list gives one.
    fn shapes(&self) -> Result<Vec<(usize, usize, Option<u64>)>, ApiError> {
        match (&self.shapes, &self.widths, &self.depths) {
            (Some(shapes), None, None) => {
                if shapes.is_empty() || shapes.len() > MAX_SWEEP_RUNS {
                    return Err(ApiError::Unprocessable(format!(
                        "'shapes' must be a list of 1 to {MAX_SWEEP_RUNS} objects \
                         {{\"width\": W, \"depth\": L}}, each with an optional \"tokens\""
                    )));
                }
                Ok(shapes
                    .iter()
                    .map(|s| (s.width, s.depth, s.tokens))
                    .collect())
            }
            (Some(_), ..) => Err(ApiError::Unprocessable(
                "give either 'shapes' or 'widths' and 'depths', not both".into(),
            )),
            (None, widths, depths) => {
                let widths = widths.as_deref().unwrap_or_default();
                let depths = depths.as_deref().unwrap_or_default();
                non_empty(widths, "widths")?;
                non_empty(depths, "depths")?;
                if widths.len().saturating_mul(depths.len()) > MAX_SWEEP_RUNS {
                    return Err(ApiError::Unprocessable(format!(
                        "the grid has more than {MAX_SWEEP_RUNS} runs"
                    )));
                }
                Ok(widths
                    .iter()
                    .flat_map(|&w| depths.iter().map(move |&d| (w, d, None)))
                    .collect())
            }
        }
    }
}

/// Checks a sweep request (the JSON object `POST /api/v1/sweeps` takes) and expands its grid:
/// the sweep's name, the spec to store, and one new run per grid point (every point validated and
/// admitted as a run by `settings`: sizes, memory, data roots). Shared by the API and the
/// new-sweep form, so both accept and refuse the same sweeps.
pub(crate) async fn build_sweep(
    body: Map<String, Value>,
    settings: &ServerSettings,
) -> Result<(String, Value, Vec<NewRun>), ApiError> {
    let spec = Value::Object(body.clone());
    let request: CreateSweep = from_object(body)?;
    if request.name.is_empty() || request.name.chars().count() > 200 {
        return Err(ApiError::Unprocessable(
            "'name' must be a string of 1 to 200 characters".into(),
        ));
    }
    non_empty(&request.parameterizations, "parameterizations")?;
    non_empty(&request.seeds, "seeds")?;
    let shapes = request.shapes()?;
    let lrs = request.lrs_by_parameterization()?;
    let shared = request.config.clone().unwrap_or_default();
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
    let shared: RunConfig = from_object(shared).map_err(|e| match e {
        ApiError::Unprocessable(m) => ApiError::Unprocessable(format!("'config': {m}")),
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("'config': {m}")),
        other => other,
    })?;
    // Every integer in range and the LR positive, even where the grid replaces them.
    shared
        .check_bounds()
        .map_err(|e| ApiError::Unprocessable(format!("'config': {e}")))?;
    if !(shared.lr.is_finite() && shared.lr > 0.0) {
        return Err(ApiError::Unprocessable(format!(
            "'config': 'lr' must be positive, got {}",
            shared.lr
        )));
    }
    let total = [
        lrs.iter().map(Vec::len).sum(),
        shapes.len(),
        request.seeds.len(),
    ]
    .iter()
    .fold(1usize, |product, n| product.saturating_mul(*n));
    if total > MAX_SWEEP_RUNS {
        return Err(ApiError::Unprocessable(format!(
            "the grid has {total} runs; at most {MAX_SWEEP_RUNS} per sweep"
        )));
    }
    let tags = request.tags.clone().map(Tags::into_vec).unwrap_or_default();
    // Shape by shape, the parameterizations alternate at each LR index and seed, so a sweep
    // stopped partway still compares them on the same shapes.
    let longest = lrs.iter().map(Vec::len).max().unwrap_or(0);
    let mut runs = Vec::with_capacity(total);
    for &(width, depth, tokens) in &shapes {
        for i in 0..longest {
            for &seed in &request.seeds {
                for (&parameterization, lr) in request.parameterizations.iter().zip(&lrs) {
                    let Some(&lr) = lr.get(i) else { continue };
                    let config = RunConfig {
                        parameterization,
                        width,
                        depth,
                        lr,
                        seed,
                        tokens: tokens.or(shared.tokens),
                        ..shared.clone()
                    };
                    let point = format!(
                        "{} {width}x{depth} lr {lr} seed {seed}",
                        parameterization.name()
                    );
                    let new = parse_new_run(CreateRun::of(config, tags.clone()), settings)
                        .await
                        .map_err(|e| match e {
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
    Ok((request.name, spec, runs))
}

/// Queues a sweep: every combination of a grid of settings as one run.
///
/// The grid is `parameterizations x shapes x lrs x seeds` (at most 1000 runs), the shapes either
/// `widths x depths` or the list `shapes`, the LRs one list for all parameterizations or an
/// object of one list per parameterization; `config` holds the settings the runs share. Runs are
/// queued shape by shape with the parameterizations alternating. Every grid point is checked before any run is queued.
#[utoipa::path(
    post,
    path = "/api/v1/sweeps",
    tag = "sweeps",
    request_body(content = CreateSweep, content_type = "application/json"),
    responses(
        (status = 201, description = "The sweep and its queued runs", body = SweepCreated),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "A missing list, too many runs, or an invalid grid point", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_sweep(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (name, spec, runs) = build_sweep(json_object(body)?, &state.settings).await?;
    let (id, run_ids) = state.store.create_sweep(&name, &spec, &runs).await?;
    state.jobs.wake();
    let sweep = state.store.sweep(id).await?;
    Ok((StatusCode::CREATED, Json(SweepCreated { sweep, run_ids })).into_response())
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
        (status = 200, description = "The sweep, its progress and its runs", body = SweepDetail),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such sweep", body = super::error::ErrorBody),
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
    let count = |s: StoredStatus| runs.iter().filter(|r| r.status == s).count() as i64;
    let finished = runs.iter().filter(|r| r.status.is_final()).count();
    let progress = SweepProgress {
        total,
        finished: finished as i64,
        queued: count(StoredStatus::Queued) + count(StoredStatus::Interrupted),
        running: count(StoredStatus::Running),
        succeeded: count(StoredStatus::Succeeded),
        diverged: count(StoredStatus::Diverged),
        failed: count(StoredStatus::Failed),
        cancelled: count(StoredStatus::Cancelled),
        fraction_done: if total > 0 {
            finished as f64 / total as f64
        } else {
            0.0
        },
    };
    Ok(Json(SweepDetail {
        sweep,
        progress,
        runs,
    })
    .into_response())
}
