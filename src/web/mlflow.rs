//! `/api/2.0/mlflow/*`: the MLflow tracking REST API, so that a training script logging with
//! the official MLflow client (`MLFLOW_TRACKING_URI=http://shapewise`, `MLFLOW_TRACKING_TOKEN`
//! for the bearer token) logs into shapewise unchanged.
//!
//! Implemented: experiments (create, get, get-by-name, search), runs (create, update, get,
//! search), logging (log-batch, log-metric, log-parameter, set-tag) and metric histories. An
//! experiment maps to a shapewise tag; params and metrics with a shapewise meaning fill the
//! run's columns and series ([`crate::store::COLUMN_PARAMS`], [`crate::store::SeriesKey`]);
//! every value is also kept as logged. Status: `FINISHED`, `FAILED`, `KILLED` map to succeeded,
//! failed, cancelled. Errors take MLflow's shape, `{"error_code", "message"}`, which the client
//! turns into its exceptions. Requests are typed: each body is a struct deserialized by serde
//! with the path of the offending field in the message, and documented by the same struct.
//! Limits are MLflow's: 1000 metrics, 100 params and 100 tags per batch; keys of at most 250
//! characters, param values of 6000 and tag values of 8000.

use super::AppState;
use crate::store::{
    Experiment, LogBatch, LoggedMetric, StoreError, StoredStatus, TrackedRun, now_ms,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The API's path prefix.
const PREFIX: &str = "/api/2.0/mlflow";

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{PREFIX}/experiments/create"),
            post(create_experiment),
        )
        .route(&format!("{PREFIX}/experiments/get"), get(get_experiment))
        .route(
            &format!("{PREFIX}/experiments/get-by-name"),
            get(get_experiment_by_name),
        )
        .route(
            &format!("{PREFIX}/experiments/search"),
            post(search_experiments),
        )
        .route(&format!("{PREFIX}/runs/create"), post(create_run))
        .route(&format!("{PREFIX}/runs/update"), post(update_run))
        .route(&format!("{PREFIX}/runs/get"), get(get_run))
        .route(&format!("{PREFIX}/runs/search"), post(search_runs))
        .route(&format!("{PREFIX}/runs/log-batch"), post(log_batch))
        .route(&format!("{PREFIX}/runs/log-metric"), post(log_metric))
        .route(&format!("{PREFIX}/runs/log-parameter"), post(log_parameter))
        .route(&format!("{PREFIX}/runs/set-tag"), post(set_tag))
        .route(
            &format!("{PREFIX}/metrics/get-history"),
            get(get_metric_history),
        )
}

/// The OpenAPI description of this resource.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(
        create_experiment, get_experiment, get_experiment_by_name, search_experiments,
        create_run, update_run, get_run, search_runs, log_batch, log_metric, log_parameter,
        set_tag, get_metric_history
    ),
    tags((name = "mlflow", description = "The MLflow tracking REST API (2.0): the official MLflow client logs here unchanged."))
)]
struct Doc;

// ---------------------------------------------------------------------------------------------
// Errors

/// A failure, in MLflow's shape.
#[derive(Debug)]
pub struct MlflowError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// MLflow's error body.
#[derive(Serialize, ToSchema)]
pub struct MlflowErrorBody {
    /// `INVALID_PARAMETER_VALUE`, `RESOURCE_DOES_NOT_EXIST`, `RESOURCE_ALREADY_EXISTS` or
    /// `INTERNAL_ERROR`.
    error_code: String,
    message: String,
}

impl MlflowError {
    /// A well-formed request with a value the server refuses (422).
    fn invalid(message: impl Into<String>) -> MlflowError {
        MlflowError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    /// A request that is not what the operation takes: bad JSON, a wrong type, a missing field
    /// or body (400).
    fn malformed(message: impl Into<String>) -> MlflowError {
        MlflowError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }

    fn missing(message: impl Into<String>) -> MlflowError {
        MlflowError {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{}", self.message);
        }
        let message = if self.status.is_server_error() {
            "internal error".to_string()
        } else {
            self.message
        };
        let body = json!({"error_code": self.code, "message": message});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for MlflowError {
    fn from(e: StoreError) -> MlflowError {
        match e {
            StoreError::NotFound(id) => MlflowError::missing(format!("run '{id}' not found")),
            StoreError::Invalid(message) => MlflowError::invalid(message),
            other => MlflowError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "INTERNAL_ERROR",
                message: other.to_string(),
            },
        }
    }
}

type Answer<T> = Result<Json<T>, MlflowError>;

/// A JSON body as `T`, with the path of the offending field in the message.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> Result<T, MlflowError> {
    let bytes = bytes.map_err(|e| MlflowError::malformed(e.body_text()))?;
    // An object, not an array (serde would read a struct from a positional array).
    if (bytes.iter()).find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(MlflowError::malformed("the body must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            MlflowError::malformed(format!("malformed request body: {}", e.inner()))
        } else {
            MlflowError::malformed(format!("'{path}': {}", e.inner()))
        }
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, MlflowError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| MlflowError::malformed(e.body_text()))
}

// ---------------------------------------------------------------------------------------------
// Values and limits

const MAX_KEY: usize = 250;
const MAX_PARAM_VALUE: usize = 6000;
const MAX_TAG_VALUE: usize = 8000;
const MAX_NAME: usize = 200;
/// An experiment's name is also a shapewise tag.
const MAX_EXPERIMENT_NAME: usize = 100;
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;
/// Most runs or experiments one search answers; more come with a page token.
const MAX_SEARCH_RESULTS: i64 = 1000;
/// Most values of one metric-history page.
const MAX_HISTORY_PAGE: i64 = 25_000;

/// A key: 1 to [`MAX_KEY`] characters.
fn check_key(what: &str, key: &str) -> Result<(), MlflowError> {
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY {
        return Err(MlflowError::invalid(format!(
            "{what} key '{}' must have 1 to {MAX_KEY} characters",
            key.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

fn check_value(what: &str, key: &str, value: &str, max: usize) -> Result<(), MlflowError> {
    if value.chars().count() > max {
        return Err(MlflowError::invalid(format!(
            "{what} '{key}' has a value longer than {max} characters"
        )));
    }
    Ok(())
}

/// A run id: shapewise's integer id, as MLflow's string.
fn run_id(run_id: Option<&str>, run_uuid: Option<&str>) -> Result<i64, MlflowError> {
    let id = run_id
        .filter(|s| !s.is_empty())
        .or(run_uuid)
        .ok_or_else(|| MlflowError::invalid("'run_id' is required"))?;
    id.trim()
        .parse()
        .map_err(|_| MlflowError::missing(format!("run '{id}' not found")))
}

fn experiment_id(id: &str) -> Result<i64, MlflowError> {
    id.trim()
        .parse()
        .map_err(|_| MlflowError::missing(format!("experiment '{id}' not found")))
}

/// An integer given as any JSON number with no fraction (`8322.0` is 8322), within `i64`.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let x = serde_json::Number::deserialize(d)?;
    if let Some(i) = x.as_i64() {
        return Ok(i);
    }
    match x.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number within 64 bits, got {x}"
        ))),
    }
}

/// [`whole`], or `null`.
fn whole_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole")] i64);
    Ok(Option::<Whole>::deserialize(d)?.map(|Whole(i)| i))
}

/// A metric value: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` as protobuf's JSON
/// writes non-finite doubles.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[schema(as = MlflowMetricValue)]
#[serde(untagged)]
enum MetricValue {
    Number(f64),
    Special(SpecialValue),
}

/// A non-finite metric value as protobuf's JSON writes it.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[schema(as = MlflowSpecialValue)]
enum SpecialValue {
    NaN,
    Infinity,
    #[serde(rename = "-Infinity")]
    NegInfinity,
}

impl MetricValue {
    fn get(self) -> f64 {
        match self {
            MetricValue::Number(x) => x,
            MetricValue::Special(SpecialValue::NaN) => f64::NAN,
            MetricValue::Special(SpecialValue::Infinity) => f64::INFINITY,
            MetricValue::Special(SpecialValue::NegInfinity) => f64::NEG_INFINITY,
        }
    }
}

/// A key and a value (a param, or a tag of a run or an experiment).
#[derive(Deserialize, Serialize, ToSchema, Clone)]
#[schema(as = MlflowKeyValue)]
pub struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

/// One metric value as logged.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowMetricIn)]
pub struct MetricIn {
    key: String,
    value: MetricValue,
    /// Milliseconds since the Unix epoch.
    #[serde(deserialize_with = "whole")]
    timestamp: i64,
    #[serde(default, deserialize_with = "whole")]
    step: i64,
}

/// One metric value as read back.
#[derive(Serialize, ToSchema)]
#[schema(as = MlflowMetricOut)]
pub struct MetricOut {
    key: String,
    /// `"NaN"`, `"Infinity"` or `"-Infinity"` for a non-finite value, as MLflow writes them.
    #[schema(value_type = MetricValue)]
    value: serde_json::Value,
    timestamp: i64,
    step: i64,
}

impl From<&LoggedMetric> for MetricOut {
    fn from(m: &LoggedMetric) -> MetricOut {
        let value = if m.value.is_nan() {
            json!("NaN")
        } else if m.value.is_infinite() {
            json!(if m.value > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            })
        } else {
            json!(m.value)
        };
        MetricOut {
            key: m.key.clone(),
            value,
            timestamp: m.timestamp,
            step: m.step,
        }
    }
}

fn logged(m: &MetricIn) -> Result<LoggedMetric, MlflowError> {
    check_key("metric", &m.key)?;
    Ok(LoggedMetric {
        key: m.key.clone(),
        value: m.value.get(),
        timestamp: m.timestamp,
        step: m.step,
    })
}

fn pairs(what: &str, items: &[KeyValue], max: usize) -> Result<Vec<(String, String)>, MlflowError> {
    items
        .iter()
        .map(|kv| {
            check_key(what, &kv.key)?;
            check_value(what, &kv.key, &kv.value, max)?;
            Ok((kv.key.clone(), kv.value.clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Experiments

/// An experiment as MLflow shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = MlflowExperimentOut)]
pub struct ExperimentOut {
    experiment_id: String,
    name: String,
    artifact_location: String,
    /// Always `active`.
    lifecycle_stage: String,
    creation_time: i64,
    last_update_time: i64,
    tags: Vec<KeyValue>,
}

impl From<Experiment> for ExperimentOut {
    fn from(e: Experiment) -> ExperimentOut {
        ExperimentOut {
            experiment_id: e.id.to_string(),
            name: e.name,
            artifact_location: e.artifact_location,
            lifecycle_stage: "active".into(),
            creation_time: e.created_ms,
            last_update_time: e.updated_ms,
            tags: (e.tags.into_iter())
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowExperimentAnswer)]
pub struct ExperimentAnswer {
    experiment: ExperimentOut,
}

/// `experiments/create`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowCreateExperiment)]
pub struct CreateExperiment {
    /// 1 to 100 characters; also the tag of its runs.
    name: String,
    #[serde(default)]
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowExperimentCreated)]
pub struct ExperimentCreated {
    experiment_id: String,
}

/// Creates an experiment.
#[utoipa::path(post, path = "/api/2.0/mlflow/experiments/create", tag = "mlflow",
    request_body = CreateExperiment,
    responses(
        (status = 200, body = ExperimentCreated),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 409, description = "An experiment of that name exists", body = MlflowErrorBody),
        (status = 422, description = "A name that is empty or too long, or a bad tag", body = MlflowErrorBody),
    ))]
async fn create_experiment(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<ExperimentCreated> {
    let request: CreateExperiment = body(bytes)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_EXPERIMENT_NAME {
        return Err(MlflowError::invalid(format!(
            "an experiment name must have 1 to {MAX_EXPERIMENT_NAME} characters"
        )));
    }
    let tags = pairs("experiment tag", &request.tags, MAX_TAG_VALUE)?;
    if tags.len() > MAX_BATCH_TAGS {
        return Err(MlflowError::invalid(format!(
            "at most {MAX_BATCH_TAGS} tags per experiment"
        )));
    }
    let location = request.artifact_location.unwrap_or_default();
    check_value("artifact_location", name, &location, MAX_PARAM_VALUE)?;
    match state
        .store
        .create_experiment(name, &location, &tags)
        .await?
    {
        Some(id) => Ok(Json(ExperimentCreated {
            experiment_id: id.to_string(),
        })),
        None => Err(MlflowError {
            status: StatusCode::CONFLICT,
            code: "RESOURCE_ALREADY_EXISTS",
            message: format!("experiment '{name}' already exists"),
        }),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExperimentIdQuery {
    experiment_id: String,
}

/// One experiment by id.
#[utoipa::path(get, path = "/api/2.0/mlflow/experiments/get", tag = "mlflow",
    params(ExperimentIdQuery),
    responses(
        (status = 200, body = ExperimentAnswer),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn get_experiment(
    State(state): State<AppState>,
    q: Result<Query<ExperimentIdQuery>, QueryRejection>,
) -> Answer<ExperimentAnswer> {
    let q = query(q)?;
    let id = experiment_id(&q.experiment_id)?;
    let experiment = state.store.experiment(id).await?.ok_or_else(|| {
        MlflowError::missing(format!("experiment '{}' not found", q.experiment_id))
    })?;
    Ok(Json(ExperimentAnswer {
        experiment: experiment.into(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExperimentNameQuery {
    experiment_name: String,
}

/// One experiment by name.
#[utoipa::path(get, path = "/api/2.0/mlflow/experiments/get-by-name", tag = "mlflow",
    params(ExperimentNameQuery),
    responses(
        (status = 200, body = ExperimentAnswer),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn get_experiment_by_name(
    State(state): State<AppState>,
    q: Result<Query<ExperimentNameQuery>, QueryRejection>,
) -> Answer<ExperimentAnswer> {
    let q = query(q)?;
    let experiment =
        (state.store.experiment_by_name(&q.experiment_name).await?).ok_or_else(|| {
            MlflowError::missing(format!("experiment '{}' does not exist", q.experiment_name))
        })?;
    Ok(Json(ExperimentAnswer {
        experiment: experiment.into(),
    }))
}

/// `experiments/search`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowSearchExperiments)]
pub struct SearchExperiments {
    #[serde(default, deserialize_with = "whole_or_null")]
    max_results: Option<i64>,
    #[serde(default)]
    page_token: Option<String>,
    /// `name = 'x'` or `name != 'x'` clauses, joined by `AND`.
    #[serde(default)]
    filter: Option<String>,
    /// Accepted and ignored: experiments come by id.
    #[serde(default)]
    #[allow(dead_code)]
    order_by: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    view_type: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowExperimentsFound)]
pub struct ExperimentsFound {
    experiments: Vec<ExperimentOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// Searches experiments.
#[utoipa::path(post, path = "/api/2.0/mlflow/experiments/search", tag = "mlflow",
    request_body = SearchExperiments,
    responses(
        (status = 200, body = ExperimentsFound),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
    ))]
async fn search_experiments(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<ExperimentsFound> {
    let request: SearchExperiments = body(bytes)?;
    let filter = Filter::parse(request.filter.as_deref().unwrap_or(""))?;
    let (offset, limit) = page(request.page_token.as_deref(), request.max_results)?;
    let matching: Vec<Experiment> = (state.store.experiments().await?.into_iter())
        .filter(|e| filter.matches_experiment(e))
        .collect();
    let more = matching.len() as i64 > offset + limit;
    Ok(Json(ExperimentsFound {
        experiments: (matching.into_iter())
            .skip(offset as usize)
            .take(limit as usize)
            .map(ExperimentOut::from)
            .collect(),
        next_page_token: more.then(|| (offset + limit).to_string()),
    }))
}

/// The offset a page token names: the token is the offset of the page's first item.
fn page_offset(token: Option<&str>) -> Result<i64, MlflowError> {
    match token.filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => (t.parse::<i64>().ok().filter(|o| *o >= 0))
            .ok_or_else(|| MlflowError::invalid(format!("invalid page token '{t}'"))),
    }
}

/// The offset and size of a page of search results.
fn page(token: Option<&str>, max_results: Option<i64>) -> Result<(i64, i64), MlflowError> {
    let offset = page_offset(token)?;
    let limit = match max_results {
        None => MAX_SEARCH_RESULTS,
        Some(n) if (1..=50_000).contains(&n) => n.min(MAX_SEARCH_RESULTS),
        Some(n) => {
            return Err(MlflowError::invalid(format!(
                "max_results must be between 1 and 50000, got {n}"
            )));
        }
    };
    Ok((offset, limit))
}

// ---------------------------------------------------------------------------------------------
// Runs

/// A run's identity and state.
#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunInfo)]
pub struct RunInfo {
    run_id: String,
    /// The same as `run_id` (MLflow's older name).
    run_uuid: String,
    run_name: String,
    experiment_id: String,
    user_id: String,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    status: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    artifact_uri: String,
    lifecycle_stage: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunData)]
pub struct RunData {
    /// The latest value of each metric.
    metrics: Vec<MetricOut>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunOut)]
pub struct RunOut {
    info: RunInfo,
    data: RunData,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunAnswer)]
pub struct RunAnswer {
    run: RunOut,
}

/// MLflow's name of a stored status.
fn status_name(status: StoredStatus) -> &'static str {
    match status {
        StoredStatus::Queued => "SCHEDULED",
        StoredStatus::Running => "RUNNING",
        StoredStatus::Succeeded => "FINISHED",
        StoredStatus::Cancelled => "KILLED",
        StoredStatus::Failed | StoredStatus::Diverged | StoredStatus::Interrupted => "FAILED",
    }
}

fn run_info(run: &TrackedRun) -> RunInfo {
    RunInfo {
        run_id: run.id.to_string(),
        run_uuid: run.id.to_string(),
        run_name: run.name.clone().unwrap_or_default(),
        experiment_id: run.experiment_id.to_string(),
        user_id: run.user.clone().unwrap_or_default(),
        status: status_name(run.status).into(),
        start_time: run.start_ms,
        end_time: run.end_ms.filter(|_| run.status.is_final()),
        artifact_uri: String::new(),
        lifecycle_stage: "active".into(),
    }
}

fn run_out(run: TrackedRun) -> RunOut {
    let kv = |pairs: Vec<(String, String)>| {
        (pairs.into_iter())
            .map(|(key, value)| KeyValue { key, value })
            .collect()
    };
    RunOut {
        info: run_info(&run),
        data: RunData {
            metrics: run.metrics.iter().map(MetricOut::from).collect(),
            params: kv(run.params),
            tags: kv(run.tags),
        },
    }
}

/// `runs/create`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowCreateRun)]
pub struct CreateRun {
    /// Default: `0`, MLflow's `Default` experiment.
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<String>,
    /// Milliseconds since the Unix epoch; default now.
    #[serde(default, deserialize_with = "whole_or_null")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Vec<KeyValue>,
    #[serde(default)]
    run_name: Option<String>,
}

/// Creates a run (status `RUNNING`).
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/create", tag = "mlflow",
    request_body = CreateRun,
    responses(
        (status = 200, body = RunAnswer),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, description = "No such experiment", body = MlflowErrorBody),
    ))]
async fn create_run(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<RunAnswer> {
    let request: CreateRun = body(bytes)?;
    let id = experiment_id(request.experiment_id.as_deref().unwrap_or("0"))?;
    let experiment = (state.store.experiment(id).await?)
        .ok_or_else(|| MlflowError::missing(format!("experiment '{id}' not found")))?;
    let tags = pairs("tag", &request.tags, MAX_TAG_VALUE)?;
    if tags.len() > MAX_BATCH_TAGS {
        return Err(MlflowError::invalid(format!(
            "at most {MAX_BATCH_TAGS} tags per request"
        )));
    }
    let name = request
        .run_name
        .filter(|n| !n.is_empty())
        .or_else(|| (tags.iter().find(|(k, _)| k == "mlflow.runName")).map(|(_, v)| v.clone()));
    if let Some(name) = &name {
        check_value("run_name", "run_name", name, MAX_NAME)?;
    }
    let creator = super::auth::creator();
    let run_id = state
        .store
        .create_tracked_run(
            &experiment,
            name.as_deref(),
            request.start_time.unwrap_or_else(now_ms),
            &tags,
            creator.as_deref(),
        )
        .await?;
    state.jobs.publish_status(run_id, StoredStatus::Running);
    let run = state.store.tracked_run(run_id).await?;
    Ok(Json(RunAnswer { run: run_out(run) }))
}

/// `runs/update`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowUpdateRun)]
pub struct UpdateRun {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "whole_or_null")]
    end_time: Option<i64>,
    #[serde(default)]
    run_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunInfoAnswer)]
pub struct RunInfoAnswer {
    run_info: RunInfo,
}

/// Updates a run's status, end time or name. A final status makes its final losses, tokens and
/// FLOPs from what it logged, so it joins the analyses.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/update", tag = "mlflow",
    request_body = UpdateRun,
    responses(
        (status = 200, body = RunInfoAnswer),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn update_run(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<RunInfoAnswer> {
    let request: UpdateRun = body(bytes)?;
    let id = run_id(request.run_id.as_deref(), request.run_uuid.as_deref())?;
    let status = match request.status.as_deref() {
        None => None,
        Some("RUNNING") => Some(StoredStatus::Running),
        Some("SCHEDULED") => Some(StoredStatus::Queued),
        Some("FINISHED") => Some(StoredStatus::Succeeded),
        Some("FAILED") => Some(StoredStatus::Failed),
        Some("KILLED") => Some(StoredStatus::Cancelled),
        Some(other) => {
            return Err(MlflowError::invalid(format!(
                "unknown run status '{other}': RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
            )));
        }
    };
    let name = request.run_name.filter(|n| !n.is_empty());
    if let Some(name) = &name {
        check_value("run_name", "run_name", name, MAX_NAME)?;
    }
    (state.store)
        .update_tracked_run(id, status, request.end_time, name.as_deref())
        .await?;
    if let Some(status) = status {
        state.jobs.publish_status(id, status);
    }
    let run = state.store.tracked_run(id).await?;
    Ok(Json(RunInfoAnswer {
        run_info: run_info(&run),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunIdQuery {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
}

/// One run with its latest metrics, params and tags.
#[utoipa::path(get, path = "/api/2.0/mlflow/runs/get", tag = "mlflow",
    params(RunIdQuery),
    responses(
        (status = 200, body = RunAnswer),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn get_run(
    State(state): State<AppState>,
    q: Result<Query<RunIdQuery>, QueryRejection>,
) -> Answer<RunAnswer> {
    let q = query(q)?;
    let id = run_id(q.run_id.as_deref(), q.run_uuid.as_deref())?;
    let run = state.store.tracked_run(id).await?;
    Ok(Json(RunAnswer { run: run_out(run) }))
}

/// `runs/search`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowSearchRuns)]
pub struct SearchRuns {
    #[serde(default)]
    experiment_ids: Vec<String>,
    /// Clauses joined by `AND`: `params.<key>`, `tags.<key>`, `metrics.<key>` or
    /// `attributes.<status|run_name|run_id>`, an operator (`=`, `!=`, and for metrics `<`, `<=`,
    /// `>`, `>=`) and a quoted string or a number.
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    run_view_type: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "whole_or_null")]
    max_results: Option<i64>,
    /// Accepted and ignored: runs come newest first.
    #[serde(default)]
    #[allow(dead_code)]
    order_by: Vec<String>,
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowRunsFound)]
pub struct RunsFound {
    runs: Vec<RunOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// Most experiments one run search names.
const MAX_SEARCHED_EXPERIMENTS: usize = 1000;

/// Most runs a search reads before filtering: the newest of the experiments. Each is read
/// with its params, tags and latest metrics, so this bounds the work one request can ask for.
const MAX_SEARCHED_RUNS: i64 = 10_000;

/// Searches the runs of some experiments, newest first.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/search", tag = "mlflow",
    request_body = SearchRuns,
    responses(
        (status = 200, body = RunsFound),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
    ))]
async fn search_runs(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<RunsFound> {
    let request: SearchRuns = body(bytes)?;
    let filter = Filter::parse(request.filter.as_deref().unwrap_or(""))?;
    let (offset, limit) = page(request.page_token.as_deref(), request.max_results)?;
    if request.experiment_ids.len() > MAX_SEARCHED_EXPERIMENTS {
        return Err(MlflowError::invalid(format!(
            "a search takes at most {MAX_SEARCHED_EXPERIMENTS} experiment ids"
        )));
    }
    let ids: Vec<i64> = request
        .experiment_ids
        .iter()
        .map(|id| {
            experiment_id(id).map_err(|_| MlflowError::invalid(format!("bad experiment id '{id}'")))
        })
        .collect::<Result<_, _>>()?;
    let candidates = state.store.tracked_run_ids(&ids, MAX_SEARCHED_RUNS).await?;
    let mut runs = Vec::new();
    let mut matched = 0i64;
    for id in candidates {
        let run = state.store.tracked_run(id).await?;
        if !filter.matches_run(&run) {
            continue;
        }
        matched += 1;
        if matched > offset + limit {
            break;
        }
        if matched > offset {
            runs.push(run_out(run));
        }
    }
    Ok(Json(RunsFound {
        runs,
        next_page_token: (matched > offset + limit).then(|| (offset + limit).to_string()),
    }))
}

// ---------------------------------------------------------------------------------------------
// Logging

/// `runs/log-batch`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowLogBatchRequest)]
pub struct LogBatchRequest {
    run_id: String,
    /// At most 1000.
    #[serde(default)]
    metrics: Vec<MetricIn>,
    /// At most 100.
    #[serde(default)]
    params: Vec<KeyValue>,
    /// At most 100.
    #[serde(default)]
    tags: Vec<KeyValue>,
}

/// An empty answer.
#[derive(Serialize, ToSchema)]
#[schema(as = MlflowEmpty)]
pub struct Empty {}

/// Logs metrics, params and tags to a run, atomically.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/log-batch", tag = "mlflow",
    request_body = LogBatchRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "Too many values, a bad key, or a param logged again with another value", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn log_batch(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Empty> {
    let request: LogBatchRequest = body(bytes)?;
    for (what, n, max) in [
        ("metrics", request.metrics.len(), MAX_BATCH_METRICS),
        ("params", request.params.len(), MAX_BATCH_PARAMS),
        ("tags", request.tags.len(), MAX_BATCH_TAGS),
    ] {
        if n > max {
            return Err(MlflowError::invalid(format!(
                "a batch may log at most {max} {what}, got {n}"
            )));
        }
    }
    let batch = LogBatch {
        metrics: request
            .metrics
            .iter()
            .map(logged)
            .collect::<Result<_, _>>()?,
        params: pairs("param", &request.params, MAX_PARAM_VALUE)?,
        tags: pairs("tag", &request.tags, MAX_TAG_VALUE)?,
    };
    log(&state, run_id(Some(&request.run_id), None)?, batch).await
}

async fn log(state: &AppState, id: i64, batch: LogBatch) -> Answer<Empty> {
    let points = state.store.log_to_tracked_run(id, &batch).await?;
    if !points.is_empty() {
        state.jobs.publish_metrics(id, points);
    }
    Ok(Json(Empty {}))
}

/// `runs/log-metric`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowLogMetric)]
pub struct LogMetric {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    #[serde(flatten)]
    metric: MetricIn,
}

/// Logs one metric value.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/log-metric", tag = "mlflow",
    request_body = LogMetric,
    responses(
        (status = 200, body = Empty),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn log_metric(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Empty> {
    let request: LogMetric = body(bytes)?;
    let id = run_id(request.run_id.as_deref(), request.run_uuid.as_deref())?;
    let batch = LogBatch {
        metrics: vec![logged(&request.metric)?],
        ..LogBatch::default()
    };
    log(&state, id, batch).await
}

/// `runs/log-parameter` and `runs/set-tag`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(as = MlflowLogKeyValue)]
pub struct LogKeyValue {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    key: String,
    value: String,
}

/// Logs one param; a param cannot change once logged.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/log-parameter", tag = "mlflow",
    request_body = LogKeyValue,
    responses(
        (status = 200, body = Empty),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn log_parameter(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Empty> {
    log_key_value(&state, bytes, KeyValueKind::Param).await
}

/// Whether a key and value are a param or a tag.
#[derive(Clone, Copy, PartialEq)]
enum KeyValueKind {
    Param,
    Tag,
}

/// Logs one param or tag from a [`LogKeyValue`] body.
async fn log_key_value(
    state: &AppState,
    bytes: Result<Bytes, BytesRejection>,
    kind: KeyValueKind,
) -> Answer<Empty> {
    let request: LogKeyValue = body(bytes)?;
    let id = run_id(request.run_id.as_deref(), request.run_uuid.as_deref())?;
    let (what, max) = match kind {
        KeyValueKind::Param => ("param", MAX_PARAM_VALUE),
        KeyValueKind::Tag => ("tag", MAX_TAG_VALUE),
    };
    check_key(what, &request.key)?;
    check_value(what, &request.key, &request.value, max)?;
    let pair = vec![(request.key, request.value)];
    let batch = match kind {
        KeyValueKind::Param => LogBatch {
            params: pair,
            ..LogBatch::default()
        },
        KeyValueKind::Tag => LogBatch {
            tags: pair,
            ..LogBatch::default()
        },
    };
    log(state, id, batch).await
}

/// Sets one tag of a run.
#[utoipa::path(post, path = "/api/2.0/mlflow/runs/set-tag", tag = "mlflow",
    request_body = LogKeyValue,
    responses(
        (status = 200, body = Empty),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn set_tag(
    State(state): State<AppState>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Empty> {
    log_key_value(&state, bytes, KeyValueKind::Tag).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    run_uuid: Option<String>,
    metric_key: String,
    /// At most 25000 per page (the default).
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = MlflowMetricHistory)]
pub struct MetricHistory {
    metrics: Vec<MetricOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// Every value logged for one metric of a run, by step.
#[utoipa::path(get, path = "/api/2.0/mlflow/metrics/get-history", tag = "mlflow",
    params(HistoryQuery),
    responses(
        (status = 200, body = MetricHistory),
        (status = 400, description = "Malformed", body = MlflowErrorBody),
        (status = 422, description = "A value the server refuses", body = MlflowErrorBody),
        (status = 404, body = MlflowErrorBody),
    ))]
async fn get_metric_history(
    State(state): State<AppState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Answer<MetricHistory> {
    let q = query(q)?;
    let id = run_id(q.run_id.as_deref(), q.run_uuid.as_deref())?;
    if !state.store.is_tracked_run(id).await? {
        return Err(StoreError::NotFound(id).into());
    }
    let offset = page_offset(q.page_token.as_deref())?;
    let limit = match q.max_results {
        None => MAX_HISTORY_PAGE,
        Some(n) if n >= 1 => n.min(MAX_HISTORY_PAGE),
        Some(n) => {
            return Err(MlflowError::invalid(format!(
                "max_results must be at least 1, got {n}"
            )));
        }
    };
    let values = (state.store)
        .metric_history(id, &q.metric_key, offset, limit + 1)
        .await?;
    let more = values.len() as i64 > limit;
    Ok(Json(MetricHistory {
        metrics: values
            .iter()
            .take(limit as usize)
            .map(MetricOut::from)
            .collect(),
        next_page_token: more.then(|| (offset + limit).to_string()),
    }))
}

// ---------------------------------------------------------------------------------------------
// Search filters

/// A search filter: clauses joined by `AND`, each `<entity>.<key> <op> <value>`.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    clauses: Vec<Clause>,
}

#[derive(Debug, PartialEq)]
struct Clause {
    /// `params`, `tags`, `metrics`, `attributes`.
    entity: String,
    key: String,
    op: String,
    value: FilterValue,
}

#[derive(Debug, PartialEq)]
enum FilterValue {
    Text(String),
    Number(f64),
}

impl Filter {
    /// Parses a filter string; an empty one matches everything.
    fn parse(text: &str) -> Result<Filter, MlflowError> {
        let mut rest = text.trim();
        let mut clauses = Vec::new();
        let bad = |why: &str| MlflowError::invalid(format!("invalid filter '{text}': {why}"));
        while !rest.is_empty() {
            // The identifier: `entity.key`, the key possibly quoted with backticks or quotes.
            let (entity, after) = match rest.split_once('.') {
                Some((entity, after)) if !entity.contains(char::is_whitespace) => (entity, after),
                _ => ("attributes", rest),
            };
            let entity = match entity.to_ascii_lowercase().as_str() {
                "params" | "param" | "parameter" | "parameters" => "params",
                "tags" | "tag" => "tags",
                "metrics" | "metric" => "metrics",
                "attributes" | "attribute" | "attr" | "run" => "attributes",
                other => return Err(bad(&format!("unknown entity '{other}'"))),
            };
            let (key, after) = take_word(after).ok_or_else(|| bad("a key is missing"))?;
            let after = after.trim_start();
            let op_len = ["!=", "<=", ">=", "=", "<", ">"]
                .iter()
                .find(|op| after.starts_with(**op))
                .map(|op| op.len())
                .ok_or_else(|| bad(&format!("no operator after '{key}'")))?;
            let op = after[..op_len].to_string();
            let after = after[op_len..].trim_start();
            let (value, after) = if after.starts_with(['\'', '"']) {
                let (word, after) = take_word(after).ok_or_else(|| bad("an unclosed quote"))?;
                (FilterValue::Text(word), after)
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                let number = after[..end].parse::<f64>().map_err(|_| {
                    bad(&format!(
                        "'{}' is neither quoted nor a number",
                        &after[..end]
                    ))
                })?;
                (FilterValue::Number(number), &after[end..])
            };
            clauses.push(Clause {
                entity: entity.into(),
                key,
                op,
                value,
            });
            rest = after.trim_start();
            if rest.is_empty() {
                break;
            }
            let lower = rest.to_ascii_lowercase();
            if !lower.starts_with("and ") {
                return Err(bad("clauses must be joined by AND"));
            }
            rest = rest[4..].trim_start();
        }
        Ok(Filter { clauses })
    }

    fn matches_experiment(&self, e: &Experiment) -> bool {
        self.clauses
            .iter()
            .all(|c| match (c.key.as_str(), &c.value) {
                ("name", FilterValue::Text(v)) => compare_text(&e.name, &c.op, v),
                _ => false,
            })
    }

    fn matches_run(&self, run: &TrackedRun) -> bool {
        let find = |pairs: &[(String, String)], key: &str| {
            pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        };
        self.clauses.iter().all(|c| {
            let actual = match c.entity.as_str() {
                "params" => find(&run.params, &c.key),
                "tags" => find(&run.tags, &c.key),
                "metrics" => {
                    let metric = run.metrics.iter().find(|m| m.key == c.key);
                    return match (metric, &c.value) {
                        (Some(m), FilterValue::Number(v)) => compare_number(m.value, &c.op, *v),
                        _ => false,
                    };
                }
                _ => match c.key.as_str() {
                    "status" => Some(status_name(run.status).to_string()),
                    "run_name" | "name" => run.name.clone(),
                    "run_id" => Some(run.id.to_string()),
                    _ => None,
                },
            };
            match (actual, &c.value) {
                (Some(a), FilterValue::Text(v)) => compare_text(&a, &c.op, v),
                (Some(a), FilterValue::Number(v)) => {
                    a.parse().is_ok_and(|a: f64| compare_number(a, &c.op, *v))
                }
                (None, _) => false,
            }
        })
    }
}

/// A key or quoted value at the start of `text`, and the rest.
fn take_word(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    let quote = text.chars().next()?;
    if matches!(quote, '`' | '"' | '\'') {
        let end = text[1..].find(quote)? + 1;
        return Some((text[1..end].to_string(), &text[end + 1..]));
    }
    let end = text
        .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
        .unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_string(), &text[end..]))
}

fn compare_text(actual: &str, op: &str, value: &str) -> bool {
    match op {
        "=" => actual == value,
        "!=" => actual != value,
        _ => false,
    }
}

fn compare_number(actual: f64, op: &str, value: f64) -> bool {
    match op {
        "=" => actual == value,
        "!=" => actual != value,
        "<" => actual < value,
        "<=" => actual <= value,
        ">" => actual > value,
        ">=" => actual >= value,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_clauses_joined_by_and() {
        let f = Filter::parse(
            "params.width = '64' and metrics.loss < 3.5 AND attributes.status = 'FINISHED'",
        )
        .unwrap();
        assert_eq!(f.clauses.len(), 3);
        assert_eq!(f.clauses[0].key, "width");
        assert_eq!(f.clauses[1].value, FilterValue::Number(3.5));
        assert_eq!(f.clauses[2].entity, "attributes");
        let f = Filter::parse("tags.`my key` != \"a b\"").unwrap();
        assert_eq!(f.clauses[0].key, "my key");
        assert_eq!(f.clauses[0].value, FilterValue::Text("a b".into()));
        assert_eq!(Filter::parse("  ").unwrap(), Filter::default());
        for bad in [
            "params.width",
            "params.width = 'x' or params.depth = '2'",
            "foo.x = 1",
            "params.x = abc",
            "params.x = 'open",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_integers_and_a_missing_one_is_named() {
        assert_eq!(run_id(Some("12"), None).unwrap(), 12);
        assert_eq!(run_id(Some(""), Some("7")).unwrap(), 7);
        assert_eq!(
            run_id(None, None).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            run_id(Some("abc"), None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
