//! `/api/v1/runs`: create, list, inspect, cancel, delete and tag runs; their metrics, live.

use super::body::json_body;
use super::error::ApiError;
use super::{AppState, ServerSettings};
use crate::flops::FlopBreakdown;
use crate::limits::{MemoryEstimate, estimate_run_memory, model_vocab};
use crate::store::{
    Comparison, Condition, Downsampler, FILTER_COLUMNS, FilterValue, MetricPoint, NewRun, RunQuery,
    StoredStatus,
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
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::ToSchema;

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

/// At most [`MAX_TAGS`] tags of 1 to [`MAX_TAG_LEN`] characters, as a request gives them.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(try_from = "Vec<String>")]
pub(crate) struct Tags(Vec<String>);

impl TryFrom<Vec<String>> for Tags {
    type Error = String;

    fn try_from(tags: Vec<String>) -> Result<Tags, String> {
        if tags.len() > MAX_TAGS {
            return Err(format!("at most {MAX_TAGS} tags per run"));
        }
        let too_long = |t: &String| t.is_empty() || t.chars().count() > MAX_TAG_LEN;
        if let Some(bad) = tags.iter().find(|t| too_long(t)) {
            return Err(format!(
                "tag '{bad}' must have between 1 and {MAX_TAG_LEN} characters"
            ));
        }
        Ok(Tags(tags))
    }
}

impl Tags {
    pub(crate) fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// A run to train: its scaling rule and shape (`parameterization`, `width` and `depth`, all
/// required), any other run setting, and an optional name and tags. Unknown fields are refused
/// (400). Integers out of range are refused (422) before
/// anything else; so is a width that is not a multiple of `d_head`, a vocabulary below the
/// corpus's, or a device this build lacks.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "parameterization": "completep", "width": 256, "depth": 8, "lr": 0.01, "tokens": 2000000,
    "data": {"kind": "builtin", "seed": 0, "vocab": 256}, "name": "cp-256x8", "tags": ["demo"]
}))]
pub(crate) struct CreateRun {
    /// Display name, at most 200 characters.
    #[schema(max_length = 200)]
    name: Option<String>,
    /// At most 64 tags of 1 to 100 characters.
    #[schema(value_type = Option<Vec<String>>, max_items = 64)]
    tags: Option<Tags>,
    /// The run settings: the shape and rule, and every other setting with its default.
    #[serde(flatten)]
    settings: RunConfig,
}

/// Read as a [`RunConfig`] (which refuses unknown fields) plus `name` and `tags`, rather than
/// with `#[serde(flatten)]`, which would lose the path of an error inside the config (and let
/// unknown fields through).
impl<'de> Deserialize<'de> for CreateRun {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CreateRun, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Labels {
            name: Option<String>,
            tags: Option<Tags>,
        }
        let mut body = serde_json::Map::deserialize(deserializer)?;
        let labels = ["name", "tags"]
            .into_iter()
            .filter_map(|key| body.remove_entry(key))
            .collect();
        let labels: Labels = at_path(labels)?;
        if let Some(missing) = ["parameterization", "width", "depth"]
            .into_iter()
            .find(|key| !body.contains_key(*key))
        {
            return Err(D::Error::missing_field(missing));
        }
        let settings: RunConfig = at_path(body)?;
        Ok(CreateRun {
            name: labels.name,
            tags: labels.tags,
            settings,
        })
    }
}

/// `T` from a JSON object, an error naming the path of the field at fault.
fn at_path<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    object: serde_json::Map<String, serde_json::Value>,
) -> Result<T, E> {
    serde_path_to_error::deserialize(serde_json::Value::Object(object))
        .map_err(|e| E::custom(super::body::path_message(e)))
}

impl CreateRun {
    /// A request for `settings` with `tags` and no name.
    pub(crate) fn of(settings: RunConfig, tags: Vec<String>) -> CreateRun {
        CreateRun {
            name: None,
            tags: Some(Tags(tags)),
            settings,
        }
    }

    /// Splits the request into name, tags and the [`RunConfig`] it asks for, unchecked.
    fn split(self) -> Result<(Option<String>, Vec<String>, RunConfig), ApiError> {
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_LEN)
        {
            return Err(ApiError::Unprocessable(format!(
                "'name' must be a string of at most {MAX_NAME_LEN} characters"
            )));
        }
        let tags = self.tags.map(Tags::into_vec).unwrap_or_default();
        Ok((self.name, tags, self.settings))
    }
}

/// Longest a request waits for its data to be checked (the corpus is read in full, at most
/// [`crate::data::MAX_DATA_BYTES`]); past it the request is refused and the check is abandoned.
const DATA_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The paths a data source reads: none, its file or folder, and its tokenizer.
fn data_paths(data: &crate::data::DataSource) -> Vec<&FsPath> {
    match data {
        crate::data::DataSource::Builtin { .. } => Vec::new(),
        crate::data::DataSource::Text { path, tokenizer } => std::iter::once(path.as_path())
            .chain(tokenizer.as_deref())
            .collect(),
        crate::data::DataSource::NanoGpt { dir, .. } => vec![dir],
    }
}

/// Confines `config`'s data to `roots` ([`crate::data::confine`]) and checks the run as the
/// trainer would, the corpus read. Blocking. The returned config reads the resolved paths;
/// messages name the paths as the request gave them, never the resolved ones.
pub(crate) fn confine_and_check(config: RunConfig, roots: &[PathBuf]) -> Result<RunConfig, String> {
    let data = crate::data::confine(&config.data, roots).map_err(|refused| {
        tracing::info!("data refused: {}", refused.reason());
        refused.to_string()
    })?;
    let renames: Vec<(String, String)> = data_paths(&data)
        .iter()
        .zip(data_paths(&config.data))
        .map(|(resolved, shown)| (resolved.display().to_string(), shown.display().to_string()))
        .collect();
    let shown = |e: crate::train::TrainError| {
        renames
            .iter()
            .fold(e.to_string(), |message, (resolved, shown)| {
                message.replace(resolved.as_str(), shown)
            })
    };
    let config = RunConfig { data, ..config }
        .with_tokenizer_vocab()
        .map_err(shown)?;
    config.check().map_err(shown)?;
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
    body: CreateRun,
    settings: &ServerSettings,
) -> Result<NewRun, ApiError> {
    let (name, tags, config) = body.split()?;
    admit(&config, settings)?;
    let roots = settings.data_roots.clone();
    let config = blocking_check(move || confine_and_check(config, &roots)).await?;
    // Tokenized text knows its vocabulary only now.
    admit(&config, settings)?;
    Ok(NewRun {
        name,
        tags,
        config,
        sweep_id: None,
        created_by: super::auth::creator(),
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
    request_body(content = CreateRun, content_type = "application/json"),
    responses(
        (status = 200, description = "The estimate", body = RunEstimate),
        (status = 400, description = "Malformed JSON or a field of the wrong type", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "A config the trainer would refuse", body = super::error::ErrorBody),
    )
)]
async fn estimate_run(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (_, _, config) = json_body::<CreateRun>(body)?.split()?;
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
    request_body(content = CreateRun, content_type = "application/json"),
    responses(
        (status = 201, description = "The queued run", body = crate::store::RunRecord),
        (status = 400, description = "Malformed JSON or a field of the wrong type", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 422, description = "A config the trainer would refuse, a run above the server's memory limit, or data that is not a readable file or folder under the server's data roots", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_run(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new = parse_new_run(json_body(body)?, &state.settings).await?;
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
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
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
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
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

/// The outcome of a cancel request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CancelResult {
    id: i64,
    /// The run's status now.
    status: StoredStatus,
    /// `done`, or when the run is training: it stops before its next step.
    note: String,
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
        (status = 200, description = "The run's status after the request", body = CancelResult),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
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
    Ok(Json(CancelResult {
        id,
        status,
        note: note.into(),
    })
    .into_response())
}

/// Adds and removes tags of a run.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/tags",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    request_body(content = TagEdit, content_type = "application/json"),
    responses(
        (status = 200, description = "The run with its new tags", body = crate::store::RunRecord),
        (status = 400, description = "Malformed body or unknown field", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
        (status = 422, description = "Too many tags, or a tag that is empty or too long", body = super::error::ErrorBody),
    )
)]
async fn edit_tags(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let edit: TagEdit = json_body(body)?;
    let tags = |list: Option<Tags>| list.map(Tags::into_vec).unwrap_or_default();
    let (add, remove) = (tags(edit.add), tags(edit.remove));
    state.store.edit_tags(id, &add, &remove).await?;
    Ok(Json(state.store.run(id).await?).into_response())
}

/// Tags to add and remove (either may be omitted), each list at most 64 tags of 1 to 100
/// characters. A run keeps at most 64 tags.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"add": ["baseline"], "remove": ["draft"]}))]
pub(crate) struct TagEdit {
    #[schema(value_type = Option<Vec<String>>, max_items = 64)]
    add: Option<Tags>,
    #[schema(value_type = Option<Vec<String>>, max_items = 64)]
    remove: Option<Tags>,
}

/// Keeps at most `target` points of a series in step order: the first and last, and in each of
/// `(target - 2) / 2` equal ranges of the steps between them (buckets) the points of lowest and
/// highest training loss, so spikes and dips survive downsampling (a bucket where no point has a
/// training loss keeps its first point). A series of at most `target` points is returned whole.
/// The same rule as [`crate::store::Store::metrics_downsampled`], which applies it to a bounded
/// sample of a stored series.
pub fn downsample(points: Vec<MetricPoint>, target: usize) -> Vec<MetricPoint> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return points;
    };
    let mut sampler = Downsampler::new(first.step, last.step, target, |p| p.train_loss);
    for point in points {
        sampler.push(point);
    }
    sampler.finish()
}

/// The page of `GET /api/v1/runs/{id}/metrics` without `points` or `limit`.
const DEFAULT_METRICS_PAGE: usize = 10_000;
/// The largest page `limit` may ask for.
const MAX_METRICS_PAGE: usize = 100_000;
/// The most points `points` may ask for.
const MAX_METRICS_POINTS: usize = 100_000;

/// A run's metric series: one page of it, or a downsampled view.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MetricSeries {
    run_id: i64,
    /// The points, by step.
    points: Vec<MetricPoint>,
    /// The `after_step` that continues the series; `null` on its last page, and always `null`
    /// with `points`.
    next_after_step: Option<i64>,
}

/// Returns a run's metric series, one page at a time or downsampled.
///
/// Without `points`, the series is paged: at most `limit` points (default 10000, at most 100000)
/// after step `after_step` (from the start without it); `next_after_step` is the `after_step` of
/// the next page, `null` on the last. Follow it to walk the whole series, each point once.
///
/// With `points`, at most that many points of the whole series: the first and last, and the
/// lowest and highest training loss of equal step ranges in between, so spikes and dips survive.
/// It reads at most 8 rows per point asked for (100000 in all): a series whose step range is
/// longer is sampled at evenly spaced steps and each range's extremes are those of its sampled
/// rows. `points` cannot be combined with `limit` or `after_step`.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/metrics",
    tag = "runs",
    params(
        ("id" = i64, Path, description = "Run id"),
        ("points" = Option<u32>, Query, minimum = 2, maximum = 100000, description = "Downsample the whole series to at most this many points (2 to 100000)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Points per page without `points` (1 to 100000, default 10000)"),
        ("after_step" = Option<i64>, Query, description = "Start the page after this step (the previous page's `next_after_step`)"),
    ),
    responses(
        (status = 200, description = "The page or the downsampled series, by step", body = MetricSeries),
        (status = 400, description = "Bad id, bad `points`, `limit` or `after_step`, or an unknown parameter", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
        (status = 422, description = "`points` combined with `limit` or `after_step`", body = super::error::ErrorBody),
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
    let mut limit = None;
    let mut after_step = None;
    for (key, value) in params {
        match key.as_str() {
            "points" => {
                let n: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (2..=MAX_METRICS_POINTS).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "'points' must be an integer in [2, {MAX_METRICS_POINTS}]"
                        ))
                    })?;
                target = Some(n);
            }
            "limit" => {
                let n: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_METRICS_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "'limit' must be an integer in [1, {MAX_METRICS_PAGE}]"
                        ))
                    })?;
                limit = Some(n);
            }
            "after_step" => {
                let step: i64 = value.parse().map_err(|_| {
                    ApiError::BadRequest("'after_step' must be an integer (a step)".into())
                })?;
                after_step = Some(step);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter '{other}': use 'points', or 'limit' and 'after_step'"
                )));
            }
        }
    }
    let (points, next_after_step) = match target {
        Some(_) if limit.is_some() || after_step.is_some() => {
            return Err(ApiError::Unprocessable(
                "'points' downsamples the whole series: it cannot be combined with 'limit' or \
                 'after_step'"
                    .into(),
            ));
        }
        Some(n) => (state.store.metrics_downsampled(id, n).await?, None),
        None => {
            let page = state
                .store
                .metrics_page(id, after_step, limit.unwrap_or(DEFAULT_METRICS_PAGE))
                .await?;
            (page.points, page.next_after_step)
        }
    };
    Ok(Json(MetricSeries {
        run_id: id,
        points,
        next_after_step,
    })
    .into_response())
}

/// Streams a run's progress as server-sent events.
///
/// With `Accept: text/event-stream` (as `EventSource` sends): server-sent events for one run,
/// `metrics` with new points and `status` on changes (also sent once on connecting); each
/// event's `data` is a JSON `RunEvent`, and keep-alive comments are sent while idle. Any other
/// `Accept` gets the current status once, as a JSON `RunEvent`, so a client that cannot stream
/// can poll.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "With `Accept: text/event-stream`, a stream of `event: status|metrics` / `data: <RunEvent JSON>` frames until the client leaves; otherwise the current status as one `RunEvent`", content(
            (crate::jobs::RunEvent = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such run", body = super::error::ErrorBody),
    )
)]
async fn run_events(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let id = run_id(path)?;
    let run = state.store.run(id).await?;
    let streams = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
    if !streams {
        return Ok(Json(crate::jobs::RunEvent::Status {
            run_id: id,
            status: run.status,
        })
        .into_response());
    }
    let initial = Event::default()
        .event("status")
        .json_data(crate::jobs::RunEvent::Status {
            run_id: id,
            status: run.status,
        })
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

/// What a filter column holds, and so what its values must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// Integers: `[+-]?[0-9]+` (beyond the `i64` range, compared as reals).
    Integer,
    /// Reals: decimal numbers such as `3`, `-0.5`, `.25` or `1e-3` (no `inf` or `nan`).
    Real,
    /// Text: anything.
    Text,
}

/// The kind of a filter column ([`FILTER_COLUMNS`]).
pub(crate) fn column_kind(column: &str) -> ColumnKind {
    match column {
        "id"
        | "width"
        | "depth"
        | "d_head"
        | "context"
        | "vocab"
        | "batch"
        | "tokens"
        | "seed"
        | "sweep_id"
        | "params_non_embedding" => ColumnKind::Integer,
        "alpha" | "lr" | "init_std" | "eps" | "weight_decay" | "final_train_loss"
        | "final_val_loss" | "flops" | "tokens_per_sec" => ColumnKind::Real,
        _ => ColumnKind::Text,
    }
}

/// Most values of all filters and tags of one query together (each is an SQL parameter).
pub(crate) const MAX_QUERY_VALUES: usize = 10_000;
/// Most filters and tags of one query together (they are ANDed: SQLite bounds the depth of an
/// expression).
pub(crate) const MAX_QUERY_TERMS: usize = 200;
/// Most `tag` parameters of a run listing (the document's `maxItems`).
pub(crate) const MAX_QUERY_TAGS: usize = 100;

const INTEGER_TEXT: &str = "[+-]?[0-9]+";
const REAL_TEXT: &str = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?";

/// The regular expression (ECMA 262, anchored) of the values a filter on an integer or real
/// `column` accepts: a number (equality), `in:` and a comma-separated list of numbers, `ne:`,
/// `lt:`, `le:`, `gt:` or `ge:` and a number, or nothing (the filter is ignored). `None` for a
/// text column, which takes anything (an `in:` list is split at commas).
pub(crate) fn filter_pattern(column: &str) -> Option<String> {
    let value = match column_kind(column) {
        ColumnKind::Integer => INTEGER_TEXT,
        ColumnKind::Real => REAL_TEXT,
        ColumnKind::Text => return None,
    };
    Some(format!(
        "^((ne|lt|le|gt|ge):{value}|in:{value}(,{value})*|{value})?$"
    ))
}

/// Whether `text` is an integer as [`INTEGER_TEXT`] spells it.
fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `text` is a decimal number as [`REAL_TEXT`] spells it.
fn is_real_text(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(whole)
        && digits(fraction)
        && (!whole.is_empty() || !fraction.is_empty())
        && (mantissa.contains('.') || !whole.is_empty());
    mantissa_ok && exponent.is_none_or(is_integer_text)
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
    let parse = |text: &str| -> Result<FilterValue, ApiError> {
        match column_kind(column) {
            ColumnKind::Integer if is_integer_text(text) => Ok(match text.parse() {
                Ok(n) => FilterValue::Int(n),
                // Beyond i64: compared as a real (it matches no stored integer exactly).
                Err(_) => FilterValue::Real(text.parse().unwrap_or(f64::NAN)),
            }),
            ColumnKind::Integer => Err(ApiError::BadRequest(format!(
                "filter '{column}' needs an integer, got '{text}'"
            ))),
            ColumnKind::Real if is_real_text(text) => text
                .parse()
                .map(FilterValue::Real)
                .map_err(|_| ApiError::BadRequest(format!("filter '{column}': bad number"))),
            ColumnKind::Real => Err(ApiError::BadRequest(format!(
                "filter '{column}' needs a number, got '{text}'"
            ))),
            ColumnKind::Text => Ok(FilterValue::Text(text.to_string())),
        }
    };
    let values = if comparison == Comparison::In {
        let count = rest.split(',').count();
        if count > MAX_QUERY_VALUES {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_QUERY_VALUES} values in an 'in:' list, got {count}"
            )));
        }
        rest.split(',').map(parse).collect::<Result<Vec<_>, _>>()?
    } else {
        vec![parse(rest)?]
    };
    Ok(Condition {
        column,
        comparison,
        values,
    })
}

/// Query parameters of the runs listing and its CSV export. Filters are ANDed; each takes a
/// value (equality), `in:a,b,c`, or `ne:`, `lt:`, `le:`, `gt:`, `ge:` followed by a value;
/// integer columns take integers and real columns decimal numbers (the `pattern` of each
/// parameter). An empty filter or tag is ignored, as HTML forms send the fields left blank.
/// At most 200 filters and tags, and 10000 values, in all. The filters are dynamic (any
/// column, with an operator; `tag` repeated), so [`parse_run_query`] reads the pairs and this
/// type only describes them.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunFilters {
    /// Only runs carrying this tag; repeat the parameter to require several (at most 100).
    #[param(max_items = 100)]
    tag: Option<Vec<String>>,
    /// Column to sort by (any filter column), `-column` for descending. Newest first by default.
    #[param(example = "-final_val_loss")]
    sort: Option<String>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = json!(100), example = 20)]
    limit: Option<i64>,
    /// Runs to skip.
    #[param(minimum = 0, maximum = 9223372036854775807_i64, default = json!(0), example = 0)]
    offset: Option<i64>,
    /// Filter on the run id (integer).
    id: Option<String>,
    /// Filter on the name (text).
    name: Option<String>,
    /// Filter on the source: `local` or `imported`.
    #[param(example = "imported")]
    source: Option<String>,
    /// Filter on the status: `queued`, `running`, `succeeded`, `failed`, `diverged`,
    /// `cancelled` or `interrupted`.
    #[param(example = "in:succeeded,diverged")]
    status: Option<String>,
    /// Filter on the parameterization (text).
    #[param(example = "completep")]
    parameterization: Option<String>,
    /// Filter on alpha (number).
    alpha: Option<String>,
    /// Filter on the width (integer).
    #[param(example = "ge:256")]
    width: Option<String>,
    /// Filter on the depth (integer).
    depth: Option<String>,
    /// Filter on the head dimension (integer).
    d_head: Option<String>,
    /// Filter on the context length (integer).
    context: Option<String>,
    /// Filter on the vocabulary (integer).
    vocab: Option<String>,
    /// Filter on the base learning rate (number).
    lr: Option<String>,
    /// Filter on the base init standard deviation (number).
    init_std: Option<String>,
    /// Filter on the base AdamW epsilon (number).
    eps: Option<String>,
    /// Filter on the base weight decay (number).
    weight_decay: Option<String>,
    /// Filter on the batch size (integer).
    batch: Option<String>,
    /// Filter on the training tokens (integer).
    tokens: Option<String>,
    /// Filter on the seed (integer).
    seed: Option<String>,
    /// Filter on the dataset (text).
    dataset: Option<String>,
    /// Filter on the sweep id (integer).
    sweep_id: Option<String>,
    /// Filter on the creation time (text, ISO 8601 UTC such as `2026-01-31T12:00:00.000Z`).
    created_at: Option<String>,
    /// Filter on the final training loss (number).
    final_train_loss: Option<String>,
    /// Filter on the final validation loss (number).
    #[param(example = "lt:3.5")]
    final_val_loss: Option<String>,
    /// Filter on the non-embedding parameters (integer).
    params_non_embedding: Option<String>,
    /// Filter on the training FLOPs (number).
    flops: Option<String>,
    /// Filter on the training throughput (number).
    tokens_per_sec: Option<String>,
}

/// Builds a [`RunQuery`] from query parameters: `column=value`, `column=in:a,b`,
/// `column=ge:x` (also `gt`, `le`, `lt`, `ne`), `tag=t` (repeatable), `sort=column` or
/// `sort=-column` (descending), `limit` (1..=1000, default 100), `offset`. An empty filter or
/// tag is ignored (HTML forms send the fields left blank); at most [`MAX_QUERY_TERMS`] filters
/// and tags, and [`MAX_QUERY_VALUES`] values, in all.
pub fn parse_run_query(params: Vec<(String, String)>) -> Result<RunQuery, ApiError> {
    let mut query = RunQuery::default();
    let mut values = 0;
    // Filters and tags given, empty ones included (the document's limit counts them all).
    let (mut terms, mut tags) = (0, 0);
    for (key, value) in params {
        let filter = key == "tag" || FILTER_COLUMNS.contains(&key.as_str());
        terms += usize::from(filter);
        tags += usize::from(key == "tag");
        if terms > MAX_QUERY_TERMS || tags > MAX_QUERY_TAGS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_QUERY_TAGS} tags, and {MAX_QUERY_TERMS} filters and tags in all"
            )));
        }
        if filter && value.is_empty() {
            continue;
        }
        match key.as_str() {
            "tag" => {
                values += 1;
                query.tags.push(value);
            }
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
                let condition = parse_condition(column, &value)?;
                values += condition.values.len();
                query.conditions.push(condition);
            }
        }
        if values > MAX_QUERY_VALUES {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_QUERY_VALUES} filter values and tags in all"
            )));
        }
    }
    Ok(query)
}

/// One page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunList {
    runs: Vec<crate::store::RunRecord>,
    /// Runs matching the filters, over all pages.
    total: i64,
    limit: i64,
    offset: i64,
}

/// Lists runs, filtered, sorted and paged.
///
/// Any column below filters the runs: `column=value` for equality, `column=in:a,b,c` for a list,
/// or `column=ne:x` (also `lt:`, `le:`, `gt:`, `ge:`). Filters are ANDed; `tag` may be repeated.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "runs",
    params(RunFilters),
    responses(
        (status = 200, description = "One page of runs", body = RunList),
        (status = 400, description = "Unknown filter, bad value or bad paging", body = super::error::ErrorBody),
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = parse_run_query(params)?;
    let (runs, total) = state.store.runs(&query).await?;
    Ok(Json(RunList {
        runs,
        total,
        limit: query.limit,
        offset: query.offset,
    })
    .into_response())
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
    fn downsampling_never_exceeds_the_target() {
        let points: Vec<MetricPoint> = (0..100).map(|s| point(s * 3, (s % 5) as f64)).collect();
        for target in 2..=100 {
            let kept = downsample(points.clone(), target);
            assert!(kept.len() <= target, "{} > {target}", kept.len());
            assert_eq!(kept.first().unwrap().step, 0);
            assert_eq!(kept.last().unwrap().step, 297);
        }
        assert_eq!(
            downsample(points.clone(), 100),
            points,
            "short enough: whole"
        );
        assert_eq!(downsample(Vec::new(), 10), Vec::new());
        // Points without a training loss keep one point per bucket.
        let val_only: Vec<MetricPoint> = (0..50)
            .map(|s| MetricPoint {
                train_loss: None,
                val_loss: Some(1.0),
                ..point(s, 0.0)
            })
            .collect();
        assert_eq!(downsample(val_only, 12).len(), 2 + 5);
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

    #[test]
    fn empty_filters_are_ignored_and_numbers_spelled_as_the_pattern_says() {
        let q = parse_run_query(vec![
            ("width".into(), String::new()),
            ("tag".into(), String::new()),
            ("name".into(), String::new()),
        ])
        .unwrap();
        assert!(q.conditions.is_empty() && q.tags.is_empty());
        for good in [
            "1", "+1", "-0.5", ".5", "5.", "1e-3", "2E+10", "in:1,2.5", "ge:.25",
        ] {
            assert!(
                parse_run_query(vec![("lr".into(), good.into())]).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "inf", "NaN", ".", "e5", "1e", "1.2.3", " 1", "in:", "in:1,", "ge:",
        ] {
            assert!(
                parse_run_query(vec![("lr".into(), bad.into())]).is_err(),
                "{bad}"
            );
        }
        for good in ["7", "-7", "+7", "in:1,2", "ne:0", "99999999999999999999"] {
            assert!(
                parse_run_query(vec![("width".into(), good.into())]).is_ok(),
                "{good}"
            );
        }
        for bad in ["1.0", "1e3", "x", "in:1,,2", "--1"] {
            assert!(
                parse_run_query(vec![("width".into(), bad.into())]).is_err(),
                "{bad}"
            );
        }
        let many: Vec<(String, String)> = (0..=MAX_QUERY_TERMS)
            .map(|i| ("tag".to_string(), format!("t{i}")))
            .collect();
        assert!(parse_run_query(many).is_err());
        // Empty tags count against the limit too.
        let empty: Vec<(String, String)> = (0..=MAX_QUERY_TAGS)
            .map(|_| ("tag".to_string(), String::new()))
            .collect();
        assert!(parse_run_query(empty).is_err());
        for column in FILTER_COLUMNS {
            assert_eq!(
                filter_pattern(column).is_none(),
                column_kind(column) == ColumnKind::Text,
                "{column}"
            );
        }
    }
}
