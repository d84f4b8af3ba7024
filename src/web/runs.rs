//! `/api/v1/runs`: create, list, inspect, cancel, delete and tag runs; their metrics, live.

use super::error::ApiError;
use super::{AppState, ServerSettings};
use crate::flops::FlopBreakdown;
use crate::limits::{MemoryEstimate, estimate_run_memory, model_vocab};
use crate::store::{
    Comparison, Condition, FILTER_COLUMNS, FilterValue, MetricPoint, NewRun, RunQuery, StoredStatus,
};
use crate::train::RunConfig;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs", get(list_runs).post(create_run))
        .route("/api/v1/runs/estimate", post(estimate_run))
        .route("/api/v1/runs/{id}", get(get_run).delete(delete_run))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runs/{id}/tags", post(edit_tags))
        .route(
            "/api/v1/runs/{id}/metrics",
            get(run_metrics).post(super::imports::append_metrics),
        )
        .route("/api/v1/runs/{id}/events", get(run_events))
}

const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 100;
const MAX_NAME_LEN: usize = 200;

fn run_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest("the run id must be an integer".into()))
}

/// Parses a JSON object body, mapping size and syntax problems to 413 and 400.
pub(crate) fn json_object(
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => {
            ApiError::PayloadTooLarge("the request body is too large".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
    }
}

fn tag_list(value: Option<Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let tags: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|_| ApiError::BadRequest(format!("'{field}' must be a list of strings")))?,
    };
    if tags.len() > MAX_TAGS {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_TAGS} tags per run"
        )));
    }
    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.len() > MAX_TAG_LEN) {
        return Err(ApiError::Unprocessable(format!(
            "tag '{bad}' must have between 1 and {MAX_TAG_LEN} characters"
        )));
    }
    Ok(tags)
}

/// Longest a request waits for its data to be checked (the corpus is read in full, at most
/// [`crate::data::MAX_DATA_BYTES`]); past it the request is refused and the check is abandoned.
const DATA_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Splits a create-run body into name, tags and the [`RunConfig`] it asks for, unchecked.
fn split_new_run(
    mut body: Map<String, Value>,
) -> Result<(Option<String>, Vec<String>, RunConfig), ApiError> {
    let name = match body.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => Some(s),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "'name' must be a string of at most {MAX_NAME_LEN} characters"
            )));
        }
    };
    let tags = tag_list(body.remove("tags"), "tags")?;
    for required in ["parameterization", "width", "depth"] {
        if !body.contains_key(required) {
            return Err(ApiError::Unprocessable(format!("'{required}' is required")));
        }
    }
    let config: RunConfig = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::Unprocessable(format!("invalid run config: {e}")))?;
    Ok((name, tags, config))
}

/// Admission control: validates `config` (every size within [`crate::limits`]) and refuses it
/// when its estimated peak memory is above the server's limit. Pure arithmetic, no IO.
pub(crate) fn admit(
    config: &RunConfig,
    settings: &ServerSettings,
) -> Result<MemoryEstimate, ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let estimate = estimate_run_memory(config, model_vocab(config));
    estimate
        .admit(settings.max_run_memory_bytes, "this run")
        .map_err(ApiError::Unprocessable)?;
    Ok(estimate)
}

/// The path a data source reads, if any.
fn data_path(data: &crate::data::DataSource) -> Option<&FsPath> {
    match data {
        crate::data::DataSource::Builtin { .. } => None,
        crate::data::DataSource::Text { path } => Some(path),
        crate::data::DataSource::NanoGpt { dir, .. } => Some(dir),
    }
}

/// Confines `config`'s data to `roots` ([`crate::data::confine`]) and checks the run as the
/// trainer would, the corpus read. Blocking. The returned config reads the resolved path;
/// messages name the path as the request gave it, never the resolved one.
pub(crate) fn confine_and_check(config: RunConfig, roots: &[PathBuf]) -> Result<RunConfig, String> {
    let data = crate::data::confine(&config.data, roots).map_err(|refused| {
        tracing::info!("data refused: {}", refused.reason());
        refused.to_string()
    })?;
    let shown = data_path(&config.data).map(|p| p.display().to_string());
    let resolved = data_path(&data).map(|p| p.display().to_string());
    let config = RunConfig { data, ..config };
    config.check().map_err(|e| match (&shown, &resolved) {
        (Some(shown), Some(resolved)) => e.to_string().replace(resolved.as_str(), shown),
        _ => e.to_string(),
    })?;
    Ok(config)
}

/// Runs blocking file-system work off the async threads, for at most [`DATA_CHECK_TIMEOUT`].
pub(crate) async fn blocking_check<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(DATA_CHECK_TIMEOUT, tokio::task::spawn_blocking(work)).await {
        Ok(joined) => joined
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::Unprocessable),
        Err(_) => Err(ApiError::Unprocessable(format!(
            "checking the run's data took longer than {} s: use a smaller corpus",
            DATA_CHECK_TIMEOUT.as_secs()
        ))),
    }
}

/// Splits a create-run body into name, tags and a [`RunConfig`] this server accepts: valid,
/// within its memory limit ([`admit`]), its data under the server's data roots and checked as
/// the trainer would (the corpus read). The config returned reads its data by resolved path.
pub(crate) async fn parse_new_run(
    body: Map<String, Value>,
    settings: &ServerSettings,
) -> Result<NewRun, ApiError> {
    let (name, tags, config) = split_new_run(body)?;
    admit(&config, settings)?;
    let roots = settings.data_roots.clone();
    let config = blocking_check(move || confine_and_check(config, &roots)).await?;
    Ok(NewRun {
        name,
        tags,
        config,
        sweep_id: None,
    })
}

/// What a run would cost: its estimated peak memory against the server's limit, its size and
/// its training FLOPs.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RunEstimate {
    /// Estimated peak memory of training, in bytes.
    memory_bytes: u64,
    /// The same in GiB.
    memory_gib: f64,
    /// The server's limit on one run's estimated peak memory (`--max-run-memory-gib`), in bytes.
    limit_bytes: u64,
    /// Whether the run fits the limit (a run that does not is refused).
    fits: bool,
    /// Non-embedding parameters `P`.
    params_non_embedding: u64,
    /// Training FLOPs of the whole token budget.
    flops: f64,
    /// The estimate in words, with its parts, or why the run would be refused.
    detail: String,
}

impl RunEstimate {
    /// The estimate in words, or why the run would be refused.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    /// Whether the run fits the server's limit.
    pub(crate) fn fits(&self) -> bool {
        self.fits
    }
}

/// Estimates what a run would cost, without queuing it.
///
/// The body is the create-run body. The config is validated as for creation (but its data is
/// not read), and the answer has the estimated peak memory against the server's limit, the
/// non-embedding parameters and the training FLOPs. The new-run form shows it as you type.
#[utoipa::path(
    post,
    path = "/api/v1/runs/estimate",
    tag = "runs",
    request_body(content = super::openapi::CreateRun, content_type = "application/json"),
    responses(
        (status = 200, description = "The estimate", body = RunEstimate),
        (status = 400, description = "Malformed JSON or a field of the wrong type", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = super::openapi::ErrorBody),
        (status = 422, description = "A config the trainer would refuse", body = super::openapi::ErrorBody),
    )
)]
async fn estimate_run(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (_, _, config) = split_new_run(json_object(body)?)?;
    Ok(Json(run_estimate(&config, &state.settings)?).into_response())
}

/// The estimate of a run (validated first), as the estimate endpoint and the new-run page show it.
pub(crate) fn run_estimate(
    config: &RunConfig,
    settings: &ServerSettings,
) -> Result<RunEstimate, ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let vocab = model_vocab(config);
    let memory = estimate_run_memory(config, vocab);
    let limit = settings.max_run_memory_bytes;
    let steps = config
        .total_steps()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let flops = FlopBreakdown::for_tokens(
        config.width,
        config.depth,
        config.context,
        vocab,
        config.biases,
        steps.saturating_mul(config.tokens_per_step()),
    )
    .total();
    let fits = memory.admit(limit, "this run");
    Ok(RunEstimate {
        memory_bytes: memory.total_bytes(),
        memory_gib: memory.total_bytes() as f64 / (1u64 << 30) as f64,
        limit_bytes: limit,
        fits: fits.is_ok(),
        params_non_embedding: config.params_non_embedding(),
        flops,
        detail: match fits {
            Ok(()) => format!(
                "{}, within the server's limit of {}",
                memory.describe(),
                crate::limits::human_bytes(limit)
            ),
            Err(refusal) => refusal,
        },
    })
}

/// Queues a run for training.
///
/// The body is a run config (any field of a `shapewise train` TOML file; `parameterization`,
/// `width` and `depth` are required, the rest have defaults) plus an optional `name` and `tags`.
/// The config is checked as the trainer would before it is queued; its estimated peak memory
/// must fit the server's limit (`--max-run-memory-gib`, see `POST /api/v1/runs/estimate`), and
/// text or nanoGPT data must lie under the server's data roots (`--data-dir`; relative paths
/// are taken relative to the first).
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    tag = "runs",
    request_body(content = super::openapi::CreateRun, content_type = "application/json"),
    responses(
        (status = 201, description = "The queued run", body = crate::store::RunRecord),
        (status = 400, description = "Malformed JSON or a field of the wrong type", body = super::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = super::openapi::ErrorBody),
        (status = 422, description = "A config the trainer would refuse, a run above the server's memory limit, or data that is not a readable file or folder under the server's data roots", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_run(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new = parse_new_run(json_object(body)?, &state.settings).await?;
    let id = state.store.create_run(&new).await?;
    state.jobs.wake();
    let run = state.store.run(id).await?;
    Ok((StatusCode::CREATED, Json(run)).into_response())
}

/// Returns one run.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = crate::store::RunRecord),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
    )
)]
async fn get_run(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let run = state.store.run(run_id(path)?).await?;
    Ok(Json(run).into_response())
}

/// Deletes a run and its metrics, cancelling it first if it is queued or training.
#[utoipa::path(
    delete,
    path = "/api/v1/runs/{id}",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
    )
)]
async fn delete_run(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = run_id(path)?;
    state.jobs.cancel(id).await?;
    state.store.delete_run(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a queued or training run.
///
/// A queued run is cancelled at once; a training run stops before its next step. Cancelling a
/// run that has ended changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run's status after the request", body = super::openapi::CancelResult),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
    )
)]
async fn cancel_run(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let status = state.jobs.cancel(id).await?;
    let note = if status == StoredStatus::Running {
        "the run stops before its next training step"
    } else {
        "done"
    };
    Ok(Json(json!({"id": id, "status": status, "note": note})).into_response())
}

/// Adds and removes tags of a run.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/tags",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = super::openapi::TagEdit, content_type = "application/json"),
    responses(
        (status = 200, description = "The run with its new tags", body = crate::store::RunRecord),
        (status = 400, description = "Malformed body or unknown field", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
        (status = 422, description = "Too many tags, or a tag that is empty or too long", body = super::openapi::ErrorBody),
    )
)]
async fn edit_tags(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let mut body = json_object(body)?;
    let add = tag_list(body.remove("add"), "add")?;
    let remove = tag_list(body.remove("remove"), "remove")?;
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "unknown field '{unknown}': a tag edit has 'add' and 'remove'"
        )));
    }
    state.store.edit_tags(id, &add, &remove).await?;
    Ok(Json(state.store.run(id).await?).into_response())
}

/// Keeps at most `target` points of a series: the first and last, and in each of
/// `(target - 2) / 2` equal buckets of the rest the points of lowest and highest training loss,
/// so spikes and dips survive downsampling.
pub fn downsample(points: Vec<MetricPoint>, target: usize) -> Vec<MetricPoint> {
    if points.len() <= target.max(2) {
        return points;
    }
    let buckets = (target.saturating_sub(2) / 2).max(1);
    let inner = &points[1..points.len() - 1];
    let mut kept = vec![points[0].clone()];
    let loss = |p: &MetricPoint| p.train_loss.unwrap_or(f64::NAN);
    for b in 0..buckets {
        let bucket = &inner[b * inner.len() / buckets..(b + 1) * inner.len() / buckets];
        let Some(lowest) = bucket.iter().min_by(|x, y| loss(x).total_cmp(&loss(y))) else {
            continue;
        };
        let highest = bucket
            .iter()
            .max_by(|x, y| loss(x).total_cmp(&loss(y)))
            .unwrap_or(lowest);
        let (first, second) = if lowest.step <= highest.step {
            (lowest, highest)
        } else {
            (highest, lowest)
        };
        kept.push(first.clone());
        if second.step != first.step {
            kept.push(second.clone());
        }
    }
    kept.push(points[points.len() - 1].clone());
    kept
}

/// Returns the metric series of a run, optionally downsampled.
///
/// With `points`, at most that many points are kept: the first and last, and the lowest and
/// highest training loss of equal buckets in between, so spikes and dips survive.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/metrics",
    tag = "runs",
    params(
        ("id" = i64, Path, description = "Run id"),
        ("points" = Option<u32>, Query, minimum = 2, maximum = 100000, description = "Keep at most this many points (2 to 100000)"),
    ),
    responses(
        (status = 200, description = "The series, by step", body = super::openapi::MetricSeries),
        (status = 400, description = "Bad id, bad `points` or unknown parameter", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
    )
)]
async fn run_metrics(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut target = None;
    for (key, value) in params {
        match key.as_str() {
            "points" => {
                let n: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (2..=100_000).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest("'points' must be an integer in [2, 100000]".into())
                    })?;
                target = Some(n);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter '{other}': use 'points'"
                )));
            }
        }
    }
    let points = state.store.metrics(id).await?;
    let points = match target {
        Some(n) => downsample(points, n),
        None => points,
    };
    Ok(Json(json!({"run_id": id, "points": points})).into_response())
}

/// Streams a run's progress as server-sent events.
///
/// Server-sent events for one run: `metrics` with new points and `status` on changes (also sent
/// once on connecting). Each event's data is a JSON `RunEvent`; keep-alive comments are sent
/// while idle.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "An endless `text/event-stream` of `RunEvent`s", body = String, content_type = "text/event-stream"),
        (status = 400, description = "The id is not an integer", body = super::openapi::ErrorBody),
        (status = 404, description = "No such run", body = super::openapi::ErrorBody),
    )
)]
async fn run_events(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let run = state.store.run(id).await?;
    let initial = Event::default()
        .event("status")
        .json_data(json!({"event": "status", "run_id": id, "status": run.status}))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let updates = BroadcastStream::new(state.jobs.subscribe()).filter_map(move |event| {
        let event = event.ok()?;
        let (run_id, name) = match &event {
            crate::jobs::RunEvent::Metrics { run_id, .. } => (*run_id, "metrics"),
            crate::jobs::RunEvent::Status { run_id, .. } => (*run_id, "status"),
        };
        (run_id == id).then(|| Event::default().event(name).json_data(&event).ok())?
    });
    let stream = tokio_stream::once(initial)
        .chain(updates)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn parse_condition(column: &'static str, value: &str) -> Result<Condition, ApiError> {
    let (comparison, rest) = match value.split_once(':') {
        Some(("in", rest)) => (Comparison::In, rest),
        Some(("ne", rest)) => (Comparison::Ne, rest),
        Some(("lt", rest)) => (Comparison::Lt, rest),
        Some(("le", rest)) => (Comparison::Le, rest),
        Some(("gt", rest)) => (Comparison::Gt, rest),
        Some(("ge", rest)) => (Comparison::Ge, rest),
        _ => (Comparison::Eq, value),
    };
    let integer = [
        "id",
        "width",
        "depth",
        "d_head",
        "context",
        "vocab",
        "batch",
        "tokens",
        "seed",
        "sweep_id",
        "params_non_embedding",
    ];
    let real = [
        "alpha",
        "lr",
        "init_std",
        "eps",
        "weight_decay",
        "final_train_loss",
        "final_val_loss",
        "flops",
        "tokens_per_sec",
    ];
    let parse = |text: &str| -> Result<FilterValue, ApiError> {
        if integer.contains(&column) {
            text.parse().map(FilterValue::Int).map_err(|_| {
                ApiError::BadRequest(format!("filter '{column}' needs an integer, got '{text}'"))
            })
        } else if real.contains(&column) {
            text.parse().map(FilterValue::Real).map_err(|_| {
                ApiError::BadRequest(format!("filter '{column}' needs a number, got '{text}'"))
            })
        } else {
            Ok(FilterValue::Text(text.to_string()))
        }
    };
    let values = if comparison == Comparison::In {
        rest.split(',').map(parse).collect::<Result<Vec<_>, _>>()?
    } else {
        vec![parse(rest)?]
    };
    if values.len() > 1000 {
        return Err(ApiError::BadRequest(
            "at most 1000 values in an 'in:' list".into(),
        ));
    }
    Ok(Condition {
        column,
        comparison,
        values,
    })
}

/// Builds a [`RunQuery`] from query parameters: `column=value`, `column=in:a,b`,
/// `column=ge:x` (also `gt`, `le`, `lt`, `ne`), `tag=t` (repeatable), `sort=column` or
/// `sort=-column` (descending), `limit` (1..=1000, default 100), `offset`.
pub fn parse_run_query(params: Vec<(String, String)>) -> Result<RunQuery, ApiError> {
    let mut query = RunQuery::default();
    for (key, value) in params {
        match key.as_str() {
            "tag" => query.tags.push(value),
            "sort" => {
                let (descending, name) = match value.strip_prefix('-') {
                    Some(name) => (true, name),
                    None => (false, value.as_str()),
                };
                query.sort = FILTER_COLUMNS
                    .iter()
                    .find(|c| **c == name)
                    .ok_or_else(|| ApiError::BadRequest(format!("cannot sort by '{name}'")))?;
                query.descending = descending;
            }
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| {
                        ApiError::BadRequest("'limit' must be an integer in [1, 1000]".into())
                    })?;
            }
            "offset" => {
                query.offset = value.parse().ok().filter(|o| *o >= 0).ok_or_else(|| {
                    ApiError::BadRequest("'offset' must be a non-negative integer".into())
                })?;
            }
            other => {
                let column = FILTER_COLUMNS.iter().find(|c| **c == other).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "unknown filter '{other}': filter on one of {}, or use tag, sort, limit, offset",
                        FILTER_COLUMNS.join(", ")
                    ))
                })?;
                query.conditions.push(parse_condition(column, &value)?);
            }
        }
    }
    Ok(query)
}

/// Lists runs, filtered, sorted and paged.
///
/// Any column below filters the runs: `column=value` for equality, `column=in:a,b,c` for a list,
/// or `column=ne:x` (also `lt:`, `le:`, `gt:`, `ge:`). Filters are ANDed; `tag` may be repeated.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    params(super::openapi::RunFilters),
    responses(
        (status = 200, description = "One page of runs", body = super::openapi::RunList),
        (status = 400, description = "Unknown filter, bad value or bad paging", body = super::openapi::ErrorBody),
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = parse_run_query(params)?;
    let (runs, total) = state.store.runs(&query).await?;
    Ok(
        Json(json!({"runs": runs, "total": total, "limit": query.limit, "offset": query.offset}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: i64, loss: f64) -> MetricPoint {
        MetricPoint {
            step,
            tokens: step,
            flops: step as f64,
            train_loss: Some(loss),
            val_loss: None,
            lr: None,
            wall_secs: None,
        }
    }

    #[test]
    fn downsampling_keeps_ends_and_extremes() {
        let points: Vec<MetricPoint> = (0..1000)
            .map(|s| {
                point(
                    s,
                    if s == 500 {
                        9.0
                    } else {
                        1.0 + (s % 7) as f64 * 0.01
                    },
                )
            })
            .collect();
        let kept = downsample(points, 20);
        assert!(kept.len() <= 20);
        assert_eq!(kept.first().unwrap().step, 0);
        assert_eq!(kept.last().unwrap().step, 999);
        assert!(kept.iter().any(|p| p.step == 500), "the spike survives");
        assert!(kept.windows(2).all(|w| w[0].step < w[1].step));
    }

    #[test]
    fn run_queries_parse_and_refuse_unknown_columns() {
        let q = parse_run_query(vec![
            ("width".into(), "in:128,256".into()),
            ("lr".into(), "ge:0.001".into()),
            ("tag".into(), "sweep-a".into()),
            ("sort".into(), "-final_val_loss".into()),
            ("limit".into(), "10".into()),
        ])
        .unwrap();
        assert_eq!(q.conditions.len(), 2);
        assert_eq!(
            q.conditions[0].values,
            vec![FilterValue::Int(128), FilterValue::Int(256)]
        );
        assert_eq!(q.sort, "final_val_loss");
        assert!(q.descending);
        assert!(parse_run_query(vec![("widht".into(), "1".into())]).is_err());
        assert!(parse_run_query(vec![("width".into(), "big".into())]).is_err());
        assert!(parse_run_query(vec![("sort".into(), "config; DROP TABLE runs".into())]).is_err());
        assert!(parse_run_query(vec![("limit".into(), "0".into())]).is_err());
    }
}
