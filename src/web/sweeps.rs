//! `/api/v1/sweeps`: a named grid of runs (parameterizations x shapes x learning rates x seeds,
//! the shapes a grid of widths x depths or a list; other settings shared) queued in one request,
//! and its progress.

use super::body::{from_object, json_object};
use super::error::ApiError;
use super::runs::parse_new_run;
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

/// The base learning rates of each parameterization, in the order of `parameterizations`: the
/// list `lrs` for every one, or an object of one list per parameterization (each at its own
/// tuned rates).
fn sweep_lrs(
    body: &mut Map<String, Value>,
    parameterizations: &[Value],
) -> Result<Vec<Vec<Value>>, ApiError> {
    let mut by_parameterization = match body.remove("lrs") {
        Some(Value::Object(by)) => by,
        other => {
            let all = list(body, "lrs", other)?;
            // Bounded before the lists are copied per parameterization.
            if all.len().saturating_mul(parameterizations.len()) > MAX_SWEEP_RUNS {
                return Err(ApiError::Unprocessable(format!(
                    "the grid has more than {MAX_SWEEP_RUNS} runs"
                )));
            }
            return Ok(vec![all; parameterizations.len()]);
        }
    };
    let key = |p: &Value| p.as_str().map_or_else(|| p.to_string(), String::from);
    let lists = parameterizations
        .iter()
        .map(|p| {
            list(&mut by_parameterization, &key(p), None).map_err(|_| {
                ApiError::Unprocessable(format!(
                    "'lrs' has no non-empty list for the parameterization {}",
                    key(p)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(other) = by_parameterization.keys().next() {
        return Err(ApiError::Unprocessable(format!(
            "'lrs' names '{other}', which is not one of the sweep's parameterizations"
        )));
    }
    Ok(lists)
}

/// One shape of a sweep: width, depth and, for a shape of a list, its own token count.
struct SweepShape {
    width: Value,
    depth: Value,
    tokens: Option<Value>,
}

/// The shapes of a sweep: the grid `widths x depths`, or a list `shapes` of `{"width",
/// "depth"}` objects, each with an optional `tokens` (exactly one of the two forms). More than
/// [`MAX_SWEEP_RUNS`] shapes are refused here, before any is built.
fn sweep_shapes(body: &mut Map<String, Value>) -> Result<Vec<SweepShape>, ApiError> {
    let Some(shapes) = body.remove("shapes") else {
        let widths = list(body, "widths", None)?;
        let depths = list(body, "depths", None)?;
        if widths.len().saturating_mul(depths.len()) > MAX_SWEEP_RUNS {
            return Err(ApiError::Unprocessable(format!(
                "the grid has more than {MAX_SWEEP_RUNS} runs"
            )));
        }
        return Ok(widths
            .iter()
            .flat_map(|w| {
                depths.iter().map(move |d| SweepShape {
                    width: w.clone(),
                    depth: d.clone(),
                    tokens: None,
                })
            })
            .collect());
    };
    if body.contains_key("widths") || body.contains_key("depths") {
        return Err(ApiError::Unprocessable(
            "give either 'shapes' or 'widths' and 'depths', not both".into(),
        ));
    }
    let shape_error = || {
        ApiError::Unprocessable(format!(
            "'shapes' must be a list of 1 to {MAX_SWEEP_RUNS} objects {{\"width\": W, \"depth\": L}}, \
             each with an optional \"tokens\""
        ))
    };
    let Value::Array(shapes) = shapes else {
        return Err(shape_error());
    };
    if shapes.is_empty() || shapes.len() > MAX_SWEEP_RUNS {
        return Err(shape_error());
    }
    shapes
        .into_iter()
        .map(|shape| match shape {
            Value::Object(mut s) => {
                let (Some(width), Some(depth)) = (s.remove("width"), s.remove("depth")) else {
                    return Err(shape_error());
                };
                let tokens = s.remove("tokens");
                if !s.is_empty() {
                    return Err(shape_error());
                }
                Ok(SweepShape {
                    width,
                    depth,
                    tokens,
                })
            }
            _ => Err(shape_error()),
        })
        .collect()
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
    let shapes = sweep_shapes(&mut body)?;
    let lrs = sweep_lrs(&mut body, &parameterizations)?;
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
            "unknown field '{unknown}': a sweep has name, parameterizations, widths, depths \
             (or shapes), lrs, seeds, config, tags"
        )));
    }
    let total = [lrs.iter().map(Vec::len).sum(), shapes.len(), seeds.len()]
        .iter()
        .fold(1usize, |product, n| product.saturating_mul(*n));
    if total > MAX_SWEEP_RUNS {
        return Err(ApiError::Unprocessable(format!(
            "the grid has {total} runs; at most {MAX_SWEEP_RUNS} per sweep"
        )));
    }
    // Shape by shape, the parameterizations alternate at each LR index and seed, so a sweep
    // stopped partway still compares them on the same shapes.
    let longest = lrs.iter().map(Vec::len).max().unwrap_or(0);
    let mut runs = Vec::with_capacity(total);
    for shape in &shapes {
        let (w, d) = (&shape.width, &shape.depth);
        for i in 0..longest {
            for seed in &seeds {
                for (p, lr) in parameterizations.iter().zip(&lrs) {
                    let Some(lr) = lr.get(i) else { continue };
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
                    if let Some(tokens) = &shape.tokens {
                        run.remove("tokens_per_param");
                        run.insert("tokens".into(), tokens.clone());
                    }
                    if let Some(tags) = &tags {
                        run.insert("tags".into(), tags.clone());
                    }
                    let point = format!("{p} {w}x{d} lr {lr} seed {seed}");
                    let point_error = |e| match e {
                        ApiError::Unprocessable(m) | ApiError::BadRequest(m) => {
                            ApiError::Unprocessable(format!("grid point {point}: {m}"))
                        }
                        other => other,
                    };
                    let new = parse_new_run(from_object(run).map_err(point_error)?, settings)
                        .await
                        .map_err(point_error)?;
                    runs.push(new);
                }
            }
        }
    }
    Ok((name, spec, runs))
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
