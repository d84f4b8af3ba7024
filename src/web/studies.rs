//! `/api/v1/studies`: one-click studies ([`crate::study`]). A study is stored as a sweep whose
//! `kind` names the study; its runs are ordinary queued runs of that sweep, and a coordinate-check
//! study owns diagnostics instead of runs.
//!
//! `POST /api/v1/studies` with `"dry_run": true` answers the settings and the run-time estimate
//! without queuing anything, so a client can show the cost before launch.

use super::body::json_body;
use super::error::ApiError;
use super::{AppState, ServerSettings};
use crate::jobs::{DiagnosticKind, DiagnosticSpec};
use crate::store::{
    Comparison, Condition, FilterValue, NewRun, RunQuery, StoredStatus, SweepRecord,
};
use crate::study::{
    ComputeEfficiencySettings, DepthTransferSettings, Estimate, Job, StudyError, StudyKind,
    StudySize, Throughput, TimedRun, estimate, estimate_jobs, seconds_between,
    settings_with_overrides,
};
use crate::train::RunConfig;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/studies", post(create_study).get(list_studies))
        .route("/api/v1/studies/{id}", get(get_study))
}

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(create_study, list_studies, get_study),
    components(schemas(CreateStudy, StudyPlan, StudyCreated, StudySummary, StudyDetail, EstimateView, Throughput)),
    tags((name = "studies", description = "One-click studies: depth transfer, coordinate check, compute efficiency; their run-time estimates and results."))
)]
struct Doc;

/// Most finished runs the run-time calibration reads.
const CALIBRATION_RUNS: i64 = 200;

// ---------------------------------------------------------------------------------------------
// Expanding a request

/// A study ready to launch: its settings, its runs and what they cost. Serialized, it is the
/// dry run's answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StudyPreview)]
pub(crate) struct StudyPlan {
    pub kind: StudyKind,
    pub size: StudySize,
    pub name: String,
    /// Every setting: the size's defaults with the request's overrides.
    #[schema(value_type = Object)]
    pub settings: Value,
    #[serde(skip)]
    #[schema(ignore)]
    pub runs: Vec<RunConfig>,
    #[serde(skip)]
    #[schema(ignore)]
    pub tags: Vec<String>,
    /// Whether finished runs of the same configuration are reused (the request's `reuse`).
    #[serde(skip)]
    #[schema(ignore)]
    pub reuse: bool,
    /// For each run, the finished run it reuses, if any.
    #[serde(skip)]
    #[schema(ignore)]
    pub reused: Vec<Option<i64>>,
    /// The diagnostics of a coordinate-check study, validated.
    #[serde(skip)]
    #[schema(ignore)]
    pub diagnostics: Vec<(DiagnosticKind, Value)>,
    pub estimate: EstimateView,
}

/// What a study will cost: an [`Estimate`] with its duration in words.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EstimateBody)]
pub(crate) struct EstimateView {
    /// Runs to train.
    pub runs: usize,
    /// Runs reused from finished runs of the same configuration (not trained, not counted).
    pub reused: usize,
    /// Training FLOPs of all runs, validation passes included.
    pub flops: f64,
    /// Estimated seconds, one run at a time.
    pub seconds: f64,
    /// The same in words, e.g. "52 min".
    pub duration: String,
    /// The measured speed behind the estimate.
    pub throughput: Throughput,
}

impl From<Estimate> for EstimateView {
    fn from(e: Estimate) -> EstimateView {
        EstimateView {
            runs: e.runs,
            reused: 0,
            flops: e.flops,
            seconds: e.seconds,
            duration: crate::study::human_duration(e.seconds),
            throughput: e.throughput,
        }
    }
}

fn invalid(e: StudyError) -> ApiError {
    ApiError::Unprocessable(e.to_string())
}

/// Refuses a study with more than [`super::sweeps::MAX_SWEEP_RUNS`] runs, counted from the
/// lengths of its lists before any run is built (`lists` multiply to an upper bound of the
/// runs), so no request makes the server build millions of configs.
fn bounded_grid(lists: &[usize]) -> Result<(), ApiError> {
    let bound = lists.iter().fold(1usize, |a, &n| a.saturating_mul(n));
    if bound > super::sweeps::MAX_SWEEP_RUNS {
        return Err(ApiError::Unprocessable(format!(
            "the study's lists make up to {bound} runs; at most {} per study",
            super::sweeps::MAX_SWEEP_RUNS
        )));
    }
    Ok(())
}

/// A run of a study as messages name it: `completep 128x8 lr 0.01`.
fn run_label(run: &RunConfig) -> String {
    format!(
        "run {} {}x{} lr {}",
        run.parameterization.name(),
        run.width,
        run.depth,
        run.lr
    )
}

/// This server's throughput, fitted to its most recent succeeded local runs
/// ([`Throughput::calibrate`]).
pub(crate) async fn throughput(state: &AppState) -> Result<Throughput, ApiError> {
    let query = RunQuery {
        conditions: vec![
            Condition {
                column: "status",
                comparison: Comparison::Eq,
                values: vec![FilterValue::Text(StoredStatus::Succeeded.name().into())],
            },
            Condition {
                column: "source",
                comparison: Comparison::Eq,
                values: vec![FilterValue::Text("local".into())],
            },
        ],
        sort: "id",
        descending: true,
        limit: CALIBRATION_RUNS,
        ..RunQuery::default()
    };
    let (runs, _) = state.store.runs(&query).await?;
    let timed: Vec<TimedRun> = runs
        .iter()
        .filter(|r| r.reused_from.is_none())
        .filter_map(|r| {
            let tokens = r.tokens? as f64;
            Some(TimedRun {
                job: Job {
                    flops: r.flops?,
                    width_token_blocks: tokens * (r.depth? * r.width?) as f64,
                },
                seconds: seconds_between(r.started_at.as_deref()?, r.finished_at.as_deref()?)?,
            })
        })
        .collect();
    Ok(Throughput::calibrate(&timed))
}

/// Expands a study request (kind, size, name, settings overrides, tags) into its runs and their
/// estimated cost. The runs are not yet checked against the corpus: see [`check_study`].
pub(crate) async fn plan_study(
    state: &AppState,
    body: Map<String, Value>,
) -> Result<StudyPlan, ApiError> {
    plan_requested_study(state, super::body::from_object(body)?).await
}

/// [`plan_study`] of a parsed request.
async fn plan_requested_study(
    state: &AppState,
    request: CreateStudy,
) -> Result<StudyPlan, ApiError> {
    let kind = request.kind;
    let size = request.size.unwrap_or_default();
    let name = match request.name {
        None => format!("{} ({})", kind.title(), size.name()),
        Some(s) if !s.is_empty() && s.chars().count() <= 200 => s,
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "'name' must be a string of 1 to 200 characters".into(),
            ));
        }
    };
    let overrides = request.settings;
    let tags = request
        .tags
        .unwrap_or_else(|| vec![kind.name().to_string()]);
    let reuse = request.reuse.unwrap_or(true);
    let (settings, runs) = match kind {
        StudyKind::DepthTransfer => {
            let s = settings_with_overrides(&DepthTransferSettings::for_size(size), overrides)
                .map_err(invalid)?;
            bounded_grid(&[
                s.parameterizations.len(),
                s.depths.len(),
                s.lrs.len(),
                s.seeds.len(),
            ])?;
            let runs = s.runs().map_err(invalid)?;
            (serde_json::to_value(&s), runs)
        }
        StudyKind::ComputeEfficiency => {
            let s = settings_with_overrides(&ComputeEfficiencySettings::for_size(size), overrides)
                .map_err(invalid)?;
            bounded_grid(&[
                s.parameterizations.len(),
                s.params.len(),
                s.depths.len(),
                s.seeds.len(),
            ])?;
            // Widths are derived from the targets: bound them (and the depths and d_head)
            // before any parameter count is computed from them.
            if s.d_head > crate::limits::MAX_WIDTH {
                return Err(ApiError::Unprocessable(format!(
                    "d_head must be at most {}, got {}",
                    crate::limits::MAX_WIDTH,
                    s.d_head
                )));
            }
            if let Some(&depth) = s
                .depths
                .iter()
                .find(|&&d| d == 0 || d > crate::limits::MAX_DEPTH)
            {
                return Err(ApiError::Unprocessable(format!(
                    "depths must be between 1 and {}, got {depth}",
                    crate::limits::MAX_DEPTH
                )));
            }
            let most = crate::flops::params_non_embedding(crate::limits::MAX_WIDTH, 1, true);
            if let Some(&target) = s.params.iter().find(|&&p| p > most) {
                return Err(ApiError::Unprocessable(format!(
                    "params must be at most {most} (width {} at depth 1), got {target}",
                    crate::limits::MAX_WIDTH
                )));
            }
            let runs = s.runs().map_err(invalid)?;
            (serde_json::to_value(&s), runs)
        }
        StudyKind::CoordCheck => {
            let (settings, diagnostics, jobs) = coord_check_plan(size, overrides, &state.settings)?;
            let estimate = estimate_jobs(&jobs, throughput(state).await?);
            return Ok(StudyPlan {
                kind,
                size,
                name,
                settings,
                runs: Vec::new(),
                tags,
                reuse: false,
                reused: Vec::new(),
                diagnostics,
                estimate: estimate.into(),
            });
        }
    };
    let settings = settings.map_err(|e| ApiError::Internal(e.to_string()))?;
    if runs.len() > super::sweeps::MAX_SWEEP_RUNS {
        return Err(ApiError::Unprocessable(format!(
            "the study has {} runs; at most {} per study",
            runs.len(),
            super::sweeps::MAX_SWEEP_RUNS
        )));
    }
    // Admission before anything else computes with the runs' sizes.
    admit_all(&runs, &state.settings)?;
    let plan = StudyPlan {
        kind,
        size,
        name,
        settings,
        runs,
        tags,
        reuse,
        reused: Vec::new(),
        diagnostics: Vec::new(),
        estimate: estimate_jobs(&[], Throughput::default()).into(),
    };
    with_reuse_and_estimate(state, plan).await
}

/// Finds the finished runs the plan can reuse (when it asks to) and estimates the cost of the
/// runs left to train.
async fn with_reuse_and_estimate(
    state: &AppState,
    mut plan: StudyPlan,
) -> Result<StudyPlan, ApiError> {
    plan.reused = if plan.reuse {
        state.store.reusable_runs(&plan.runs).await?
    } else {
        vec![None; plan.runs.len()]
    };
    let to_train: Vec<RunConfig> = plan
        .runs
        .iter()
        .zip(&plan.reused)
        .filter(|(_, reused)| reused.is_none())
        .map(|(run, _)| run.clone())
        .collect();
    let vocab = plan.runs.first().map_or(256, crate::limits::model_vocab);
    let estimate = estimate(&to_train, vocab, throughput(state).await?)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    plan.estimate = EstimateView {
        reused: plan.runs.len() - to_train.len(),
        ..estimate.into()
    };
    Ok(plan)
}

/// The stored settings, the diagnostics with their options, and their cost.
type CoordCheckPlan = (Value, Vec<(DiagnosticKind, Value)>, Vec<Job>);

/// The diagnostics of a coordinate-check study: each kind with its default options, changed by
/// the size (seeds: 1 for `small`, the defaults, twice the defaults for `large`) and by the
/// request's `settings` (`{"coord-depth": {...}, "coord-width": {...}, "linearization": {...}}`).
/// Returns the settings to store, the validated diagnostics and their cost for the estimate.
fn coord_check_plan(
    size: StudySize,
    overrides: Option<Map<String, Value>>,
    server: &ServerSettings,
) -> Result<CoordCheckPlan, ApiError> {
    let mut overrides = overrides.unwrap_or_default();
    let names: Vec<&str> = DiagnosticKind::ALL.iter().map(|k| k.name()).collect();
    if let Some(unknown) = overrides.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ApiError::Unprocessable(format!(
            "unknown setting '{unknown}': this study has {}",
            names.join(", ")
        )));
    }
    let (mut settings, mut diagnostics, mut jobs) = (Map::new(), Vec::new(), Vec::new());
    for kind in DiagnosticKind::ALL {
        let mut options = kind.default_options();
        let default_seeds = options.get("seeds").and_then(Value::as_u64).unwrap_or(1);
        let seeds = match size {
            StudySize::Small => 1,
            StudySize::Default => default_seeds,
            StudySize::Large => 2 * default_seeds,
        };
        options.insert("seeds".into(), seeds.into());
        match overrides.remove(kind.name()) {
            None | Some(Value::Null) => {}
            Some(Value::Object(given)) => options.extend(given),
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "setting '{}' must be an object of its options",
                    kind.name()
                )));
            }
        }
        let options = Value::Object(options);
        let spec = DiagnosticSpec::parse(kind, &options)
            .map_err(|e| ApiError::Unprocessable(format!("{}: {e}", kind.name())))?;
        super::diagnostics::admit_spec(&spec, server).map_err(|e| match e {
            ApiError::Unprocessable(m) => ApiError::Unprocessable(format!("{}: {m}", kind.name())),
            other => other,
        })?;
        jobs.extend(diagnostic_jobs(&spec));
        settings.insert(kind.name().into(), options.clone());
        diagnostics.push((kind, options));
    }
    Ok((Value::Object(settings), diagnostics, jobs))
}

/// The models a diagnostic trains, as estimate jobs (vocabulary 256, the built-in corpus's).
/// A linearization point costs about two training steps: one step, and forward passes at
/// `theta_0`, `theta_1` and the two finite-difference points.
fn diagnostic_jobs(spec: &DiagnosticSpec) -> Vec<Job> {
    const VOCAB: usize = 256;
    let mut jobs = Vec::new();
    match spec {
        DiagnosticSpec::Coord(o) => {
            let shapes: Vec<(usize, usize)> = match o.axis {
                crate::coord::CoordAxis::Depth => o.depths.iter().map(|&d| (o.width, d)).collect(),
                crate::coord::CoordAxis::Width => o.widths.iter().map(|&w| (w, o.depth)).collect(),
            };
            for _ in 0..o.parameterizations.len() as u64 * o.seeds {
                for &(width, depth) in &shapes {
                    jobs.push(Job::training(
                        width, depth, o.context, VOCAB, o.batch, o.steps,
                    ));
                }
            }
        }
        DiagnosticSpec::Linearization(o) => {
            for _ in 0..o.parameterizations.len() as u64 * o.seeds {
                for &depth in &o.depths {
                    jobs.push(Job::training(o.width, depth, o.context, VOCAB, o.batch, 2));
                }
            }
        }
    }
    jobs
}

/// Checks every run of a planned study as `POST /api/v1/runs` would, the corpus included (its
/// data confined to the server's data roots), off the async threads. Returns the plan with the
/// runs reading their data by resolved path.
pub(crate) async fn check_study(
    state: &AppState,
    mut plan: StudyPlan,
) -> Result<StudyPlan, ApiError> {
    if plan.runs.is_empty() {
        return Ok(plan);
    }
    let runs = std::mem::take(&mut plan.runs);
    let roots = state.settings.data_roots.clone();
    plan.runs = super::runs::blocking_check(move || {
        runs.into_iter()
            .map(|run| {
                let label = run_label(&run);
                super::runs::confine_and_check(run, &roots).map_err(|e| format!("{label}: {e}"))
            })
            .collect()
    })
    .await?;
    // Tokenized text knows its vocabulary only now.
    admit_all(&plan.runs, &state.settings)?;
    // The checked runs read their data by resolved path, as stored runs do.
    with_reuse_and_estimate(state, plan).await
}

/// [`super::runs::admit`] for every run of a study, naming the run that does not fit.
fn admit_all(runs: &[RunConfig], settings: &ServerSettings) -> Result<(), ApiError> {
    for run in runs {
        super::runs::admit(run, settings).map_err(|e| match e {
            ApiError::Unprocessable(m) => {
                ApiError::Unprocessable(format!("{}: {m}", run_label(run)))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// Stores a planned study and queues its runs; returns the study (a sweep) and the run ids.
pub(crate) async fn launch_study(
    state: &AppState,
    plan: &StudyPlan,
) -> Result<(SweepRecord, Vec<i64>), ApiError> {
    let spec = json!({
        "kind": plan.kind,
        "size": plan.size,
        "settings": plan.settings,
        "estimate": plan.estimate,
    });
    let runs: Vec<NewRun> = plan
        .runs
        .iter()
        .map(|config| NewRun {
            name: None,
            tags: plan.tags.clone(),
            config: config.clone(),
            sweep_id: None,
            created_by: super::auth::creator(),
        })
        .collect();
    let (id, run_ids) = state
        .store
        .create_study_sweep(plan.kind.name(), &plan.name, &spec, &runs, &plan.reused)
        .await?;
    state.jobs.wake();
    for (kind, options) in &plan.diagnostics {
        state
            .jobs
            .enqueue_diagnostic(*kind, options, Some(id))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    Ok((state.store.sweep(id).await?, run_ids))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Plans (`dry_run`) or launches a one-click study.
///
/// `kind` is `depth-transfer`, `coord-check` or `compute-efficiency`; `size` (`small`,
/// `default`, `large`) picks the defaults, sized so that `default` concludes on a 2-core CPU
/// (compute efficiency in at most 75 minutes, depth transfer in about three hours); `settings`
/// overrides any of them. The answer carries the estimated run time,
/// from this server's measured throughput.
#[utoipa::path(
    post,
    path = "/api/v1/studies",
    tag = "studies",
    request_body(content = CreateStudy, content_type = "application/json"),
    responses(
        (status = 200, description = "Dry run: the settings and the estimate; nothing queued", body = StudyPlan),
        (status = 201, description = "The study and its queued runs", body = StudyCreated),
        (status = 400, description = "Malformed JSON or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "An unknown kind or size, or settings that give invalid runs", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_study(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CreateStudy = json_body(body)?;
    let dry_run = request.dry_run.unwrap_or(false);
    let plan = check_study(&state, plan_requested_study(&state, request).await?).await?;
    if dry_run {
        return Ok(Json(plan).into_response());
    }
    let (study, run_ids) = launch_study(&state, &plan).await?;
    Ok((
        StatusCode::CREATED,
        Json(StudyCreated {
            study,
            run_ids,
            estimate: plan.estimate,
        }),
    )
        .into_response())
}

/// Every study, newest first, with its progress.
#[utoipa::path(
    get,
    path = "/api/v1/studies",
    tag = "studies",
    responses((status = 200, description = "The studies", body = Vec<StudySummary>))
)]
async fn list_studies(State(state): State<AppState>) -> Result<Response, ApiError> {
    let studies: Vec<StudySummary> = state
        .store
        .sweeps()
        .await?
        .into_iter()
        .filter(|(sweep, _, _)| sweep.kind != "grid")
        .map(|(study, runs, finished)| StudySummary {
            study,
            runs,
            finished,
        })
        .collect();
    Ok(Json(studies).into_response())
}

/// One study: its settings, progress and the analysis of its finished runs so far.
#[utoipa::path(
    get,
    path = "/api/v1/studies/{id}",
    tag = "studies",
    params(("id" = i64, Path, description = "Study id")),
    responses(
        (status = 200, description = "The study", body = StudyDetail),
        (status = 400, description = "The id is not an integer", body = super::error::ErrorBody),
        (status = 404, description = "No such study", body = super::error::ErrorBody),
    )
)]
async fn get_study(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest("the study id must be an integer".into()))?;
    let study = state.store.sweep(id).await?;
    if study.kind == "grid" {
        return Err(ApiError::NotFound(format!(
            "sweep {id} is a plain sweep, not a study: see /api/v1/sweeps/{id}"
        )));
    }
    let (runs, _) = state
        .store
        .runs(&super::sweeps::sweep_runs_query(id))
        .await?;
    let counts = StoredStatus::ALL
        .into_iter()
        .map(|status| {
            (
                status.name(),
                runs.iter().filter(|r| r.status == status).count(),
            )
        })
        .collect();
    let query = super::sweeps::sweep_runs_query(id);
    let analysis = match StudyKind::parse(&study.kind) {
        Some(StudyKind::DepthTransfer) => {
            let options = super::analysis::TransferReportOptions::default();
            json!({"transfer": report_json(super::analysis::transfer_report(&state, query, options).await)})
        }
        Some(StudyKind::ComputeEfficiency) => {
            let compute = super::fits::compute_report(
                &state,
                query.clone(),
                super::fits::ComputeOptions {
                    by_parameterization: true,
                    bootstrap: Default::default(),
                },
            );
            let tolerance = super::analysis::tolerance_report(&state, query, Default::default());
            let (compute, tolerance) = tokio::join!(compute, tolerance);
            json!({"compute": report_json(compute), "shape_tolerance": report_json(tolerance)})
        }
        Some(StudyKind::CoordCheck) => {
            json!({"diagnostics": state.store.diagnostics_of_sweep(id).await?})
        }
        None => json!({}),
    };
    Ok(Json(StudyDetail {
        study,
        progress: StudyProgress {
            total: runs.len(),
            counts,
        },
        analysis,
    })
    .into_response())
}

/// A report as JSON, or `{"error": reason}` when the runs cannot support it (yet).
fn report_json<T: Serialize>(report: Result<T, ApiError>) -> Value {
    match report {
        Ok(report) => serde_json::to_value(report).unwrap_or(Value::Null),
        Err(e) => json!({"error": e.to_string()}),
    }
}

// ---------------------------------------------------------------------------------------------
// Request and response bodies

pub(crate) mod bodies {
    use super::EstimateView;
    use crate::store::SweepRecord;
    use crate::study::{StudyKind, StudySize};
    use serde::{Deserialize, Serialize};
    use serde_json::{Map, Value};
    use std::collections::BTreeMap;
    use utoipa::ToSchema;

    /// A study request. Unknown fields are refused.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(example = json!({"kind": "depth-transfer", "size": "small", "settings": {"width": 64}, "dry_run": true}))]
    pub struct CreateStudy {
        pub kind: StudyKind,
        /// `default` when absent.
        pub size: Option<StudySize>,
        /// 1 to 200 characters; defaults to the kind's title and the size.
        #[schema(min_length = 1, max_length = 200)]
        pub name: Option<String>,
        /// Settings to change from the size's defaults (the dry-run answer lists them all); a
        /// setting the kind does not have, or a value it refuses, is a 422.
        #[schema(value_type = Option<Object>)]
        pub settings: Option<Map<String, Value>>,
        /// Tags of the study's runs (default: the kind).
        pub tags: Option<Vec<String>>,
        /// Take finished runs of exactly the same configuration (trained here, succeeded or
        /// diverged) instead of training them again; default true.
        pub reuse: Option<bool>,
        /// Only plan and estimate.
        pub dry_run: Option<bool>,
    }

    /// A launched study.
    #[derive(Serialize, ToSchema)]
    pub struct StudyCreated {
        pub study: SweepRecord,
        pub run_ids: Vec<i64>,
        pub estimate: EstimateView,
    }

    /// A study in the list.
    #[derive(Serialize, ToSchema)]
    pub struct StudySummary {
        pub study: SweepRecord,
        pub runs: i64,
        /// Runs that have ended.
        pub finished: i64,
    }

    /// Run counts of a study.
    #[derive(Serialize, ToSchema)]
    pub struct StudyProgress {
        pub total: usize,
        /// Runs per status (every status, zeros included).
        pub counts: BTreeMap<&'static str, usize>,
    }

    /// One study.
    #[derive(Serialize, ToSchema)]
    pub struct StudyDetail {
        pub study: SweepRecord,
        pub progress: StudyProgress,
        /// The analysis of the finished runs so far: `transfer` (depth transfer, as
        /// `POST /api/v1/analysis/transfer`), `compute` and `shape_tolerance` (compute
        /// efficiency, as `POST /api/v1/fits/compute` and `/api/v1/analysis/shape-tolerance`),
        /// or `diagnostics` (coordinate check); each report is `{"error": reason}` while the
        /// runs cannot support it.
        #[schema(value_type = Object)]
        pub analysis: Value,
    }
}
use bodies::*;
