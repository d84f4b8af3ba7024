//! `/api/v1/plan/recommend`: the planner over fitted runs (section 6 of the CompleteP spec).
//!
//! From a compute budget (FLOPs, or device-hours at a sustained FLOP rate), the model's
//! vocabulary and context and optional limits, the planner fits `L(C) = E + A C^-b` to the
//! selected runs of each parameterization, reads the width/depth penalty of their shapes, and
//! ranks the concrete shapes that use the budget ([`crate::plan`] has the method). It also
//! writes the body of a sweep that would confirm the recommendation, and creates it on request.
//!
//! The penalty is the one the width/depth tolerance analysis pools over the runs' compute scales
//! ([`crate::fit::shape`]). With a penalty, `L(C)` is fitted to each run's loss divided by its
//! shape's `1 + excess`: the curve is then that of the optimal shape, as the planner's
//! prediction `L(budget) (1 + excess)` assumes (fitting the raw losses would count the shapes'
//! penalties twice). Runs that record no shape enter the fit as they are.
//!
//! The page `/planner` calls [`plan_request`] with the same body, so the page and the API accept,
//! refuse and answer alike.

use super::body::{as_bad_request, from_object, json_object};
use super::error::ApiError;
use super::fits::{
    Bounds, DataOfRuns, GroupRuns, PowerLawBounds, blocking, bootstrap_options, final_loss,
    fit_groups, select_runs,
};
use super::studies::EstimateView;
use super::{AppState, ServerSettings};
use crate::fit::shape::{ShapeOptions, ShapePenalty, ShapePoint, fit_shape_tolerance};
use crate::fit::{BootstrapOptions, Interval};
use crate::param::{BaseHparams, Parameterization};
use crate::plan::{
    Architecture, Budget, Candidate, DEFAULT_BATCH, DEFAULT_MAX_DEPTH, DEFAULT_TOKENS_PER_PARAM,
    FALLBACK_WIDTH_DEPTH_RATIO, GIB, MatchedCompute, ParameterizationFit, ParameterizationPlan,
    PlanError, RankedShape, ShapeLimits, candidate_shapes, rank_without_fit, recommend,
};
use crate::store::{RunQuery, RunRecord, RunSource};
use crate::verdict::{EXTRAPOLATION_LIMIT, Verdict, scales_to_add};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::OpenApi;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/plan/recommend", post(recommend_shapes))
}

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(recommend_shapes),
    components(schemas(
        RecommendRequest,
        RecommendResult,
        ParameterizationRecommendation,
        PlannedFit,
        ShapePenaltyBody,
        RecommendedShape,
        CandidateShape,
        MatchedComputeBody,
        RefusedParameterization,
        CreatedSweep,
    )),
    tags((name = "planner", description = "From a compute budget to ranked shapes and token counts per fitted parameterization, and the sweep that confirms them."))
)]
struct Doc;

/// Bootstrap resamples per parameterization when the request names none: enough for stable
/// 95% percentile intervals of a three-parameter curve, and quick on a small machine.
const DEFAULT_RESAMPLES: u64 = 200;
/// Ranked shapes returned per parameterization when the request names no `top`.
const DEFAULT_TOP: u64 = 5;
/// The most ranked shapes per parameterization one request may ask for.
const MAX_TOP: u64 = 100;
/// Head dimension when none is given (the paper's).
const DEFAULT_D_HEAD: u64 = 64;
/// The largest memory limit, in GiB (a zebibyte: beyond any machine, and finite in bytes).
const MAX_MEMORY_GIB: f64 = 1e12;
/// Tag of the runs of a confirming sweep.
const CONFIRM_TAG: &str = "planner";
/// Run settings a confirming sweep copies from the selected runs when every local run agrees on
/// them: everything that is neither the shape, the rule, the learning rate, the token count nor
/// the seed.
const SHARED_SETTINGS: [&str; 19] = [
    "base_width",
    "base_depth",
    "init_std",
    "eps",
    "weight_decay",
    "attention_scale",
    "positions",
    "activation",
    "tied_embeddings",
    "biases",
    "batch",
    "schedule",
    "warmup_fraction",
    "grad_clip",
    "beta1",
    "beta2",
    "val_sequences",
    "divergence_factor",
    "data",
];

// ---------------------------------------------------------------------------------------------
// The request

/// A parsed planner request.
pub(crate) struct PlanRequest {
    /// The runs to fit.
    pub selection: RunQuery,
    pub budget: Budget,
    /// Vocabulary, context and head dimension of the shapes (biases come from the runs).
    pub architecture: Architecture,
    /// `r` when given; else each parameterization's runs set it.
    pub tokens_per_param: Option<f64>,
    pub limits: ShapeLimits,
    /// Whether the request gave `batch` (then the confirming sweep uses it).
    pub batch_given: bool,
    /// Ranked shapes to report per parameterization.
    pub top: usize,
    pub bootstrap: BootstrapOptions,
    /// Create the confirming sweep.
    pub create_sweep: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// A plan refusal: out-of-range settings are bad requests, the rest (limits no shape meets,
/// an unusable fit) cannot be processed.
fn plan_error(e: PlanError) -> ApiError {
    match e {
        PlanError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
        other => ApiError::Unprocessable(other.to_string()),
    }
}

/// An optional positive number at most `max`.
fn positive(value: Option<f64>, key: &str, max: f64) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(bad(format!("'{key}' must be a positive number")))
        }
        Some(v) if v > max => Err(bad(format!("'{key}' must be at most {max:e}"))),
        v => Ok(v),
    }
}

/// An optional integer in `1..=max`.
fn integer(value: Option<u64>, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
    match value {
        Some(v) if !(1..=max).contains(&v) => {
            Err(bad(format!("'{key}' must be an integer from 1 to {max}")))
        }
        v => Ok(v),
    }
}

/// Parses and checks a planner body (the JSON object `POST /api/v1/plan/recommend` takes).
pub(crate) fn parse_request(body: Map<String, Value>) -> Result<PlanRequest, ApiError> {
    let request: RecommendRequest = from_object(body).map_err(as_bad_request)?;
    let selection = request
        .selection
        .ok_or_else(|| {
            bad(
                "'selection' is required: an object with one of 'run_ids', 'sweep_id', 'tags' \
                 or 'filters'",
            )
        })?
        .query()?;
    let budget_flops = positive(request.budget_flops, "budget_flops", f64::MAX)?;
    let device_hours = positive(request.device_hours, "device_hours", f64::MAX)?;
    let flops_per_second = positive(request.flops_per_second, "flops_per_second", f64::MAX)?;
    let budget = match (budget_flops, device_hours, flops_per_second) {
        (Some(flops), None, None) => Budget::from_flops(flops).map_err(plan_error)?,
        // Each number is positive and finite: a refusal is about their product (422).
        (None, Some(hours), Some(rate)) => Budget::from_device_hours(hours, rate)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
        (None, None, None) => {
            return Err(bad(
                "a budget is required: 'budget_flops', or 'device_hours' with 'flops_per_second'",
            ));
        }
        (Some(_), _, _) => {
            return Err(bad(
                "give the budget once: 'budget_flops' or 'device_hours' with 'flops_per_second', \
                 not both",
            ));
        }
        (None, _, _) => {
            return Err(bad(
                "'device_hours' and 'flops_per_second' go together: the budget is their product \
                 times 3600",
            ));
        }
    };
    let vocab = integer(request.vocab, "vocab", 1 << 24)?
        .ok_or_else(|| bad("'vocab' is required: the model's vocabulary size"))?;
    let context = integer(request.context, "context", 1 << 24)?
        .ok_or_else(|| bad("'context' is required: the context length in tokens"))?;
    let d_head = integer(request.d_head, "d_head", 4096)?.unwrap_or(DEFAULT_D_HEAD);
    let tokens_per_param = positive(request.tokens_per_param, "tokens_per_param", 1e6)?;
    let max_depth = integer(
        request.max_depth,
        "max_depth",
        crate::plan::MAX_DEPTH as u64,
    )?
    .unwrap_or(DEFAULT_MAX_DEPTH as u64);
    let max_width = integer(
        request.max_width,
        "max_width",
        crate::plan::MAX_WIDTH as u64,
    )?;
    let min_width = integer(
        request.min_width,
        "min_width",
        crate::plan::MAX_WIDTH as u64,
    )?
    .unwrap_or(1);
    let memory = positive(request.memory_gib, "memory_gib", MAX_MEMORY_GIB)?.map(|gib| gib * GIB);
    let batch = integer(request.batch, "batch", 1 << 20)?;
    let top = integer(request.top, "top", MAX_TOP)?.unwrap_or(DEFAULT_TOP);
    let bootstrap = bootstrap_options(
        Some(request.resamples.unwrap_or(DEFAULT_RESAMPLES)),
        request.seed,
        request.confidence,
    )?;
    let create_sweep = request.create_sweep.unwrap_or(false);
    Ok(PlanRequest {
        selection,
        budget,
        architecture: Architecture {
            vocab: vocab as usize,
            context: context as usize,
            d_head: d_head as usize,
            biases: true,
        },
        tokens_per_param,
        limits: ShapeLimits {
            max_depth: max_depth as usize,
            min_width: min_width as usize,
            max_width: max_width.map(|w| w as usize),
            memory_bytes: memory,
            batch: batch.map_or(DEFAULT_BATCH, |b| b as usize),
        },
        batch_given: batch.is_some(),
        top: top as usize,
        bootstrap,
        create_sweep,
    })
}

// ---------------------------------------------------------------------------------------------
// Planning

/// One parameterization's runs, and its fit when there is one.
pub(crate) struct Group {
    /// The parameterization's name (`alpha=0.75` for a custom alpha).
    pub name: String,
    /// Runs with FLOPs and a final loss.
    pub n_runs: usize,
    /// The fit, or why there is none.
    pub fit: Result<GroupFit, String>,
}

/// A fitted parameterization.
pub(crate) struct GroupFit {
    /// Intervals of `E`, `A` and `b` (`None` without resamples).
    pub intervals: Option<PowerLawBounds>,
    /// Whether its `E` is shared with the other parameterizations (same data).
    pub shared_e: bool,
    /// Its findings: compute coverage, `E` on a bound, extrapolation, the floor.
    pub verdict: Verdict,
    /// FLOPs of the largest selected run: the budget over this says how far the plan
    /// extrapolates.
    pub largest_run_flops: f64,
    /// Median base learning rate of the runs, if they record one.
    pub base_lr: Option<f64>,
    /// Scatter of its frontier runs about the fit: root-mean-square of `ln L - ln L(C)`.
    pub rmse_log_loss: f64,
    /// Why the runs give no width/depth penalty (`None`: they give one).
    pub penalty_refusal: Option<String>,
}

/// Everything the planner answers.
pub(crate) struct PlanOutcome {
    pub budget: Budget,
    pub architecture: Architecture,
    /// Every parameterization in the selection, by name.
    pub groups: Vec<Group>,
    /// The plans of the fitted ones, best first.
    pub plans: Vec<ParameterizationPlan>,
    /// `r` of the candidate shapes below: the request's, else the median over all selected runs.
    pub tokens_per_param: f64,
    /// The shapes that use the budget at `tokens_per_param`, ranked by closeness to
    /// [`FALLBACK_WIDTH_DEPTH_RATIO`] (no loss prediction).
    pub candidates: Vec<Candidate>,
    /// The body of `POST /api/v1/sweeps` that confirms the best shape; `None` with nothing fitted.
    pub confirm_sweep: Option<Map<String, Value>>,
    /// The runs that would make an inconclusive plan conclusive; `None` when it is conclusive
    /// or no runs would help.
    pub extension: Option<Extension>,
    /// The distinct `dataset` of the selected runs (`unrecorded` for none).
    pub datasets: Vec<String>,
    /// What to run, when nothing could be fitted.
    pub note: Option<String>,
    /// Whether the runs support the plan: every fitted parameterization's findings, and the
    /// target's differences from the runs.
    pub verdict: Verdict,
}

/// The sweep that extends the selected runs so that the plan becomes conclusive.
pub(crate) struct Extension {
    /// The compute scales (FLOPs) it adds.
    pub computes: Vec<f64>,
    /// The body of `POST /api/v1/sweeps`: every fitted parameterization at its runs' base LR on
    /// the best plan's recommended shape at each compute.
    pub sweep: Map<String, Value>,
    /// What it costs on this server.
    pub estimate: EstimateView,
}

impl PlanOutcome {
    /// The group of a parameterization.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The median of values (none: `None`).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

/// Tokens per non-embedding parameter of the runs that record both.
fn ratios<'a>(runs: impl Iterator<Item = &'a RunRecord>) -> Vec<f64> {
    runs.filter_map(|r| Some(r.tokens? as f64 / r.params_non_embedding? as f64))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect()
}

/// The group a run belongs to: its parameterization, with the alpha for a custom one.
fn group_name(run: &RunRecord) -> String {
    match run.alpha {
        Some(alpha) if run.parameterization == "alpha" => format!("alpha={alpha}"),
        _ => run.parameterization.clone(),
    }
}

/// The settings every selected local run agrees on ([`SHARED_SETTINGS`]); imported runs carry
/// no trainer config and are not consulted.
fn shared_settings(runs: &[&RunRecord]) -> Map<String, Value> {
    let configs: Vec<&Map<String, Value>> = runs
        .iter()
        .filter(|r| r.source == RunSource::Local)
        .filter_map(|r| r.config.as_object())
        .collect();
    let mut shared = Map::new();
    for key in SHARED_SETTINGS {
        let mut values = configs.iter().map(|c| c.get(key));
        if let Some(Some(first)) = values.next()
            && !first.is_null()
            && values.all(|v| v == Some(first))
        {
            shared.insert(key.to_string(), first.clone());
        }
    }
    shared
}

/// The width, depth, FLOPs and final loss of the runs that record them all.
fn shape_points(runs: &[&RunRecord]) -> Vec<ShapePoint> {
    runs.iter()
        .filter_map(|r| {
            Some(ShapePoint {
                width: r.width? as f64,
                depth: r.depth? as f64,
                flops: r.flops?,
                loss: final_loss(r)?,
            })
        })
        .collect()
}

/// The shape penalty of a parameterization's runs, pooled over compute scales by the
/// width/depth tolerance analysis ([`fit_shape_tolerance`], without its bootstrap: the planner
/// uses the pooled penalty only); the reason when there is none.
fn shape_penalty(points: &[ShapePoint]) -> Result<ShapePenalty, String> {
    let options = ShapeOptions {
        bootstrap: BootstrapOptions {
            resamples: 0,
            ..BootstrapOptions::default()
        },
        ..ShapeOptions::default()
    };
    let tolerance = fit_shape_tolerance(points, &options).map_err(|e| e.to_string())?;
    tolerance.penalty.ok_or_else(|| {
        "the losses of its shapes at matched compute show no positive curvature".to_string()
    })
}

/// What one parameterization brings to the planner: its name, `(FLOPs, loss, N:L)` points
/// (`N:L` when the run records its shape) and their run ids, its ratio `r`, median base LR and
/// shape points.
struct GroupData {
    name: String,
    points: Vec<(f64, f64, Option<f64>)>,
    ids: Vec<i64>,
    tokens_per_param: f64,
    base_lr: Option<f64>,
    shapes: Vec<ShapePoint>,
}

/// Fits every parameterization of the selection and plans the budget (see the module docs).
pub(crate) async fn plan_request(
    state: &AppState,
    request: &PlanRequest,
) -> Result<PlanOutcome, ApiError> {
    let runs = select_runs(state, request.selection.clone()).await?;
    let usable: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.flops.is_some() && final_loss(r).is_some())
        .collect();
    let shared = shared_settings(&usable);
    let architecture = Architecture {
        biases: shared
            .get("biases")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..request.architecture
    };
    let mut by_group: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for run in &usable {
        by_group.entry(group_name(run)).or_default().push(run);
    }
    let tokens_per_param = request.tokens_per_param.unwrap_or_else(|| {
        median(ratios(usable.iter().copied())).unwrap_or(DEFAULT_TOKENS_PER_PARAM)
    });
    let candidates = candidate_shapes(
        request.budget,
        &architecture,
        &request.limits,
        tokens_per_param,
    )
    .map_err(plan_error)?;

    let data: Vec<GroupData> = by_group
        .iter()
        .map(|(name, runs)| GroupData {
            name: name.clone(),
            points: runs
                .iter()
                .filter_map(|r| {
                    // Runs that record no shape enter the fit without a ratio.
                    let ratio = (r.width.zip(r.depth)).map(|(w, d)| w as f64 / d as f64);
                    Some((r.flops?, final_loss(r)?, ratio.filter(|x| x.is_finite())))
                })
                .collect(),
            ids: runs.iter().map(|r| r.id).collect(),
            tokens_per_param: request.tokens_per_param.unwrap_or_else(|| {
                median(ratios(runs.iter().copied())).unwrap_or(DEFAULT_TOKENS_PER_PARAM)
            }),
            base_lr: median(runs.iter().filter_map(|r| r.lr).collect()),
            shapes: shape_points(runs),
        })
        .collect();
    let (budget, limits, bootstrap) = (request.budget, request.limits, request.bootstrap);
    let runs_data = DataOfRuns::of(&runs);
    let datasets: Vec<String> = usable
        .iter()
        .map(|r| r.dataset.clone().unwrap_or_else(|| "unrecorded".into()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut target_verdict = Verdict::new();
    // The runs' vocabulary and context: the indexed columns, else an imported run's config.
    type Column = fn(&RunRecord) -> Option<i64>;
    let settings: [(&str, &str, usize, Column); 2] = [
        ("vocabulary", "vocab", architecture.vocab, |r| r.vocab),
        ("context", "context", architecture.context, |r| r.context),
    ];
    for (what, key, target, column) in settings {
        let values: BTreeSet<i64> = usable
            .iter()
            .filter_map(|r| column(r).or_else(|| r.config.get(key).and_then(Value::as_i64)))
            .collect();
        let values: Vec<String> = values.iter().map(i64::to_string).collect();
        target_verdict.check_target(what, &target.to_string(), &values);
    }
    if !runs_data.same {
        target_verdict.warn(
            "the runs come from different data: each parameterization is fitted with an \
             irreducible loss of its own",
        );
    }
    let (groups, plans, extension_shapes) = blocking(move || {
        // `L(C)` is the loss of the optimal shape: with a penalty, each run's loss is divided by
        // its shape's `1 + excess` before the fit, so that the penalty is not counted twice
        // when a shape's loss is predicted as `L(C) (1 + excess)`.
        let penalties: Vec<Result<ShapePenalty, String>> =
            data.iter().map(|g| shape_penalty(&g.shapes)).collect();
        let adjusted: Vec<(String, GroupRuns)> = (data.iter().zip(&penalties))
            .map(|(group, penalty)| {
                let points = (group.points.iter())
                    .map(|&(flops, loss, ratio)| match (penalty, ratio) {
                        (Ok(p), Some(ratio)) => (flops, loss / (1.0 + p.excess(ratio))),
                        _ => (flops, loss),
                    })
                    .collect();
                let runs = GroupRuns {
                    ids: group.ids.clone(),
                    points,
                };
                (group.name.clone(), runs)
            })
            .collect();
        let floor = runs_data.floor();
        let (fitted, refused) = fit_groups(&adjusted, runs_data.same, floor, &bootstrap);
        let largest = (data.iter().flat_map(|g| &g.points)).fold(0.0, |m: f64, p| m.max(p.0));
        let mut groups = Vec::new();
        let mut fits = Vec::new();
        for (group, penalty) in data.into_iter().zip(penalties) {
            let largest_run_flops = group.points.iter().map(|p| p.0).fold(0.0, f64::max);
            let fit = match fitted.iter().find(|f| f.group == group.name) {
                Some(fit) => {
                    fits.push(ParameterizationFit {
                        name: group.name.clone(),
                        curve: fit.curve(),
                        resamples: fit.curves.clone(),
                        tokens_per_param: group.tokens_per_param,
                        penalty: penalty.as_ref().ok().copied(),
                    });
                    let mut verdict = fit.verdict.clone();
                    verdict.check_extrapolation(budget.flops(), largest_run_flops);
                    Ok(GroupFit {
                        intervals: fit.intervals,
                        shared_e: fit.shared_e,
                        verdict,
                        largest_run_flops,
                        base_lr: group.base_lr,
                        rmse_log_loss: fit.rmse_log_loss,
                        penalty_refusal: penalty.err(),
                    })
                }
                None => Err(refused
                    .iter()
                    .find(|r| r.group == group.name)
                    .map_or_else(|| "not fitted".to_string(), |r| r.error.clone())),
            };
            groups.push(Group {
                name: group.name,
                n_runs: group.points.len(),
                fit,
            });
        }
        let plans = recommend(budget, &architecture, &limits, &fits, bootstrap.confidence)
            .map_err(plan_error)?;
        // The best plan's recommended shape at each compute that would make the plan
        // conclusive (no intervals: only the ranking is read).
        let computes = extension_computes(
            fitted.iter().map(|f| f.compute_scales.as_slice()),
            budget.flops(),
            largest,
        );
        let extension_shapes: Vec<(f64, Candidate)> = computes
            .into_iter()
            .filter_map(|c| {
                let at = Budget::from_flops(c).ok()?;
                let plans = recommend(at, &architecture, &limits, &fits, 0.95).ok()?;
                Some((c, plans.first()?.shapes.first()?.shape.clone()))
            })
            .collect();
        // A predicted loss below the data's floor is impossible.
        for plan in &plans {
            if let Some(Ok(fit)) = groups
                .iter_mut()
                .find(|g| g.name == plan.parameterization)
                .map(|g| g.fit.as_mut())
            {
                fit.verdict.check_floor(plan.loss_at_budget, floor);
            }
        }
        Ok((groups, plans, extension_shapes))
    })
    .await?;
    let mut verdict = Verdict::new();
    for group in &groups {
        if let Ok(fit) = &group.fit {
            verdict.absorb(&group.name, &fit.verdict);
        }
    }
    verdict.absorb("", &target_verdict);
    if groups.iter().all(|g| g.fit.is_err()) {
        verdict.inconclusive("no parameterization could be fitted");
    }

    let note = plans.is_empty().then(|| {
        let refused = if groups.is_empty() {
            "The selection has no succeeded runs with FLOPs and a final loss."
        } else {
            "No parameterization in the selection has enough runs to fit loss against compute."
        };
        format!(
            "{refused} Run the compute-efficiency study (the Studies page, or POST \
             /api/v1/studies with kind \"compute-efficiency\"): every parameterization to compare \
             at {} or more compute scales, several width/depth shapes at each, trained at a fixed \
             number of tokens per parameter. Until then the candidate shapes below use the budget \
             at {tokens_per_param} tokens per parameter, ranked by closeness of N:L to \
             {FALLBACK_WIDTH_DEPTH_RATIO}.",
            crate::fit::MIN_DISTINCT_SCALES
        )
    });
    let mut outcome = PlanOutcome {
        budget,
        architecture,
        groups,
        plans,
        tokens_per_param,
        candidates: rank_without_fit(candidates),
        confirm_sweep: None,
        extension: None,
        datasets,
        note,
        verdict,
    };
    let config = sweep_config(&outcome, shared, request);
    outcome.confirm_sweep = confirm_sweep(&outcome, config.clone());
    if let Some(body) = &mut outcome.confirm_sweep {
        admit_confirming_shapes(body, &state.settings).await;
    }
    if !outcome.verdict.conclusive {
        outcome.extension = extension(state, &outcome, &extension_shapes, config).await?;
    }
    Ok(outcome)
}

/// The compute scales (FLOPs) that would make a plan conclusive: those each fit's coverage
/// lacks ([`scales_to_add`], from its compute scales) and, when the budget is more than
/// [`EXTRAPOLATION_LIMIT`] times the largest run, the budget over that limit; increasing,
/// scales within 10% of one another merged.
fn extension_computes<'a>(
    fits: impl Iterator<Item = &'a [f64]>,
    budget: f64,
    largest_run: f64,
) -> Vec<f64> {
    let mut computes: Vec<f64> = fits.flat_map(scales_to_add).collect();
    if budget / largest_run > EXTRAPOLATION_LIMIT {
        computes.push(budget / EXTRAPOLATION_LIMIT);
    }
    computes.sort_by(f64::total_cmp);
    computes.dedup_by(|later, earlier| *later < *earlier * 1.1);
    computes
}

/// The sweep that adds `shapes` (each compute with the best plan's shape there) for every
/// fitted parameterization at its runs' median base LR, and its estimated cost; `None` without
/// shapes, or when the server would refuse the sweep.
async fn extension(
    state: &AppState,
    outcome: &PlanOutcome,
    shapes: &[(f64, Candidate)],
    config: Map<String, Value>,
) -> Result<Option<Extension>, ApiError> {
    let fitted: Vec<(String, f64)> = (outcome.plans.iter())
        .filter(|p| {
            p.parameterization
                .parse::<Parameterization>()
                .is_ok_and(|p| p != Parameterization::Alpha)
        })
        .map(|p| {
            let lr = (outcome.group(&p.parameterization))
                .and_then(|g| g.fit.as_ref().ok()?.base_lr)
                .unwrap_or(BaseHparams::default().lr);
            (p.parameterization.clone(), lr)
        })
        .collect();
    if shapes.is_empty() || fitted.is_empty() {
        return Ok(None);
    }
    let computes: Vec<f64> = shapes.iter().map(|(c, _)| *c).collect();
    let list: Vec<String> = computes.iter().map(|&c| format!("{c:.2e}")).collect();
    let mut sweep = Map::new();
    sweep.insert(
        "name".into(),
        json!(format!("extend plan: compute {} FLOPs", list.join(", "))),
    );
    sweep.insert(
        "parameterizations".into(),
        json!(fitted.iter().map(|(p, _)| p).collect::<Vec<_>>()),
    );
    sweep.insert(
        "shapes".into(),
        json!(
            shapes
                .iter()
                .map(|(_, s)| json!({"width": s.width, "depth": s.depth, "tokens": s.tokens}))
                .collect::<Vec<_>>()
        ),
    );
    sweep.insert(
        "lrs".into(),
        Value::Object(
            fitted
                .iter()
                .map(|(p, lr)| (p.clone(), json!([lr])))
                .collect(),
        ),
    );
    sweep.insert("config".into(), Value::Object(config));
    sweep.insert("tags".into(), json!([CONFIRM_TAG]));
    let Ok((_, _, runs)) = super::sweeps::build_sweep(sweep.clone(), &state.settings).await else {
        return Ok(None);
    };
    let configs: Vec<_> = runs.into_iter().map(|r| r.config).collect();
    let vocab = outcome.architecture.vocab;
    let estimate =
        crate::study::estimate(&configs, vocab, super::studies::throughput(state).await?)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    Ok(Some(Extension {
        computes,
        sweep,
        estimate: estimate.into(),
    }))
}

/// Creates the extending sweep as `POST /api/v1/sweeps` would: the sweep id.
pub(crate) async fn create_extension_sweep(
    state: &AppState,
    outcome: &PlanOutcome,
) -> Result<i64, ApiError> {
    let Some(extension) = &outcome.extension else {
        return Err(ApiError::Unprocessable(
            "the plan is conclusive, or no runs would make it so: there is nothing to add".into(),
        ));
    };
    let (name, spec, runs) =
        super::sweeps::build_sweep(extension.sweep.clone(), &state.settings).await?;
    let (id, _) = state.store.create_sweep(&name, &spec, &runs).await?;
    state.jobs.wake();
    Ok(id)
}

/// How far from the recommended `N:L` (as a factor) the other shapes of a confirming sweep lie.
pub(crate) const CONFIRM_RATIO_STEP: f64 = 4.0;

/// The shapes a confirming sweep trains, best first: the recommended shape, the best-ranked
/// shape at least [`CONFIRM_RATIO_STEP`] times deeper for its width (`N:L` smaller by that
/// factor) and the best-ranked one as much wider, so the sweep tests the ranking and not only
/// the predicted loss; next-ranked shapes fill in where the budget has no such shape.
fn confirming_shapes(plan: &ParameterizationPlan) -> Vec<&RankedShape> {
    let Some(best) = plan.shapes.first() else {
        return Vec::new();
    };
    let ratio = best.shape.width_depth_ratio;
    let mut chosen = vec![best];
    // Deeper, then wider: `CONFIRM_RATIO_STEP` away, else half as far.
    for direction in [-1.0, 1.0] {
        for step in [CONFIRM_RATIO_STEP, CONFIRM_RATIO_STEP.sqrt()] {
            let far = |s: &&RankedShape| {
                direction * (s.shape.width_depth_ratio / ratio).ln() >= step.ln() - 1e-9
            };
            if let Some(s) = plan.shapes.iter().find(far) {
                chosen.push(s);
                break;
            }
        }
    }
    for s in &plan.shapes {
        if chosen.len() >= 3 {
            break;
        }
        if !chosen.iter().any(|c| std::ptr::eq(*c, s)) {
            chosen.push(s);
        }
    }
    chosen
}

/// The settings shared by the runs of a sweep the planner writes: those the selected runs
/// share, with the target's architecture, the request's batch, and no token count (each shape
/// trains on its own).
fn sweep_config(
    outcome: &PlanOutcome,
    shared: Map<String, Value>,
    request: &PlanRequest,
) -> Map<String, Value> {
    let architecture = outcome.architecture;
    let mut config = shared;
    if request.batch_given {
        config.insert("batch".into(), json!(request.limits.batch));
    }
    if !config.contains_key("data") && (16..=65536).contains(&architecture.vocab) {
        config.insert(
            "data".into(),
            json!({"kind": "builtin", "seed": 0, "vocab": architecture.vocab}),
        );
    }
    config.insert("d_head".into(), json!(architecture.d_head));
    config.insert("context".into(), json!(architecture.context));
    config.insert("vocab".into(), json!(architecture.vocab));
    // Each shape trains on its own token count, the budget over its FLOPs per token.
    config.remove("tokens");
    config.remove("tokens_per_param");
    config
}

/// The body of `POST /api/v1/sweeps` that confirms the plan: the best parameterization at its
/// median base LR (the paper's default when none is recorded) on the shapes of
/// [`confirming_shapes`], each with its token count for the budget, with the settings of
/// [`sweep_config`].
fn confirm_sweep(outcome: &PlanOutcome, config: Map<String, Value>) -> Option<Map<String, Value>> {
    let plan = outcome.plans.first()?;
    let parameterization = plan.parameterization.parse::<Parameterization>().ok()?;
    if parameterization == Parameterization::Alpha {
        return None;
    }
    let shapes = confirming_shapes(plan);
    let best = &shapes.first()?.shape;
    let lr = outcome
        .group(&plan.parameterization)
        .and_then(|g| g.fit.as_ref().ok())
        .and_then(|f| f.base_lr)
        .unwrap_or(BaseHparams::default().lr);
    let mut body = Map::new();
    body.insert(
        "name".into(),
        json!(format!(
            "confirm plan {:.3e} FLOPs: {} {} x {}",
            outcome.budget.flops(),
            parameterization.name(),
            best.width,
            best.depth
        )),
    );
    body.insert("parameterizations".into(), json!([parameterization.name()]));
    body.insert(
        "shapes".into(),
        json!(
            shapes
                .iter()
                .map(|s| json!({"width": s.shape.width, "depth": s.shape.depth, "tokens": s.shape.tokens}))
                .collect::<Vec<_>>()
        ),
    );
    body.insert("lrs".into(), json!([lr]));
    body.insert("config".into(), Value::Object(config));
    body.insert("tags".into(), json!([CONFIRM_TAG]));
    Some(body)
}

/// Drops from a confirming sweep's body the shapes, other than the recommended one, that the
/// server would refuse (memory, sizes): each is checked as a sweep of its own would be.
async fn admit_confirming_shapes(body: &mut Map<String, Value>, settings: &ServerSettings) {
    let Some(Value::Array(shapes)) = body.get("shapes").cloned() else {
        return;
    };
    let mut admitted = Vec::with_capacity(shapes.len());
    for (i, shape) in shapes.into_iter().enumerate() {
        let mut one = body.clone();
        one.insert("shapes".into(), json!([shape.clone()]));
        if i == 0 || super::sweeps::build_sweep(one, settings).await.is_ok() {
            admitted.push(shape);
        }
    }
    body.insert("shapes".into(), Value::Array(admitted));
}

/// What a confirming sweep checks, stored in its spec under `plan`: the budget, the
/// parameterization, the recommended shape, the noise of a comparison and the predicted loss
/// with its interval of each shape of the sweep's `body` (read by the sweep page).
fn plan_check(outcome: &PlanOutcome, body: &Map<String, Value>) -> Option<Value> {
    let plan = outcome.plans.first()?;
    let rmse = outcome
        .group(&plan.parameterization)
        .and_then(|g| g.fit.as_ref().ok())
        .map(|f| f.rmse_log_loss)?;
    // The body's shapes, after admission, each with its prediction.
    let predictions: Vec<Value> = body
        .get("shapes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| {
            plan.shapes.iter().find(|s| {
                b["width"].as_u64() == Some(s.shape.width as u64)
                    && b["depth"].as_u64() == Some(s.shape.depth as u64)
            })
        })
        .map(|s| {
            json!({
                "width": s.shape.width,
                "depth": s.shape.depth,
                "tokens": s.shape.tokens,
                "loss": s.loss,
                "interval": bounds(&s.interval),
            })
        })
        .collect();
    let best = &plan.shapes.first()?.shape;
    Some(json!({
        "budget_flops": outcome.budget.flops(),
        "parameterization": plan.parameterization,
        "recommended": {"width": best.width, "depth": best.depth},
        "rmse_log_loss": rmse,
        "predictions": predictions,
    }))
}

/// Creates the confirming sweep as `POST /api/v1/sweeps` would: the sweep id and its run ids.
pub(crate) async fn create_confirming_sweep(
    state: &AppState,
    outcome: &PlanOutcome,
) -> Result<(i64, Vec<i64>), ApiError> {
    let Some(body) = outcome.confirm_sweep.clone() else {
        return Err(ApiError::Unprocessable(
            "no parameterization is fitted, so there is no recommendation to confirm: run the \
             compute-efficiency study first"
                .into(),
        ));
    };
    let check = plan_check(outcome, &body);
    let (name, mut spec, runs) = super::sweeps::build_sweep(body, &state.settings).await?;
    if let (Value::Object(spec), Some(check)) = (&mut spec, check) {
        spec.insert("plan".into(), check);
    }
    let created = state.store.create_sweep(&name, &spec, &runs).await?;
    state.jobs.wake();
    Ok(created)
}

// ---------------------------------------------------------------------------------------------
// The answer

fn bounds(interval: &Option<Interval>) -> Option<Bounds> {
    interval.as_ref().map(Bounds::from)
}

impl From<&Candidate> for CandidateShape {
    fn from(c: &Candidate) -> CandidateShape {
        CandidateShape {
            width: c.width,
            depth: c.depth,
            heads: c.heads,
            width_depth_ratio: c.width_depth_ratio,
            params_non_embedding: c.params_non_embedding,
            params_total: c.params_total,
            tokens: c.tokens,
            tokens_per_param: c.tokens_per_param,
            flops: c.flops.total(),
            memory_gib: c.memory_bytes / GIB,
        }
    }
}

impl From<&MatchedCompute> for MatchedComputeBody {
    fn from(m: &MatchedCompute) -> MatchedComputeBody {
        MatchedComputeBody {
            parameterization: m.parameterization.clone(),
            loss: m.loss,
            flops: m.flops,
            ratio: m.ratio,
            interval: bounds(&m.interval),
            unreachable_resamples: m.unreachable_resamples,
            refusal: m.refusal.clone(),
        }
    }
}

/// The note of a parameterization planned without a shape penalty, with the tolerance
/// analysis's reason.
pub(crate) fn no_penalty_note(outcome: &PlanOutcome, name: &str) -> String {
    let reason = (outcome.group(name))
        .and_then(|g| g.fit.as_ref().ok())
        .and_then(|f| f.penalty_refusal.clone())
        .unwrap_or_default();
    format!(
        "no width/depth penalty for {name} ({reason}): every shape of this budget predicts the \
         same loss, and the shapes are ranked by closeness of N:L to {FALLBACK_WIDTH_DEPTH_RATIO}"
    )
}

/// The answer of `POST /api/v1/plan/recommend` (without the created sweep).
pub(crate) fn outcome_body(outcome: &PlanOutcome, top: usize) -> RecommendResult {
    let budget = outcome.budget.flops();
    let parameterizations = outcome
        .plans
        .iter()
        .map(|plan| {
            let group = outcome.group(&plan.parameterization);
            let fit = group.and_then(|g| g.fit.as_ref().ok());
            let c = plan.curve;
            let largest = fit.map_or(f64::NAN, |f| f.largest_run_flops);
            ParameterizationRecommendation {
                parameterization: plan.parameterization.clone(),
                n_runs: group.map_or(0, |g| g.n_runs),
                tokens_per_param: plan.tokens_per_param,
                fit: PlannedFit {
                    e: c.e,
                    a: c.a,
                    b: c.b,
                    intervals: fit.and_then(|f| f.intervals),
                    shared_e: fit.is_some_and(|f| f.shared_e),
                    largest_run_flops: largest,
                    extrapolation: budget / largest,
                },
                loss_at_budget: plan.loss_at_budget,
                loss_at_budget_interval: bounds(&plan.loss_at_budget_interval),
                shape_penalty: plan.penalty.map(|p| ShapePenaltyBody {
                    log_ratio_optimum: p.log_ratio_optimum,
                    optimal_width_depth_ratio: p.log_ratio_optimum.exp(),
                    curvature: p.curvature,
                }),
                shape_note: (plan.penalty.is_none())
                    .then(|| no_penalty_note(outcome, &plan.parameterization)),
                shapes: (plan.shapes.iter().take(top).enumerate())
                    .map(|(i, s)| RecommendedShape {
                        rank: i + 1,
                        shape: CandidateShape::from(&s.shape),
                        relative_penalty: s.relative_penalty,
                        predicted_loss: s.loss,
                        interval: bounds(&s.interval),
                    })
                    .collect(),
                matched_compute: plan.matched_compute.iter().map(Into::into).collect(),
                verdict: fit.map(|f| f.verdict.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let refused = (outcome.groups.iter())
        .filter_map(|g| {
            Some(RefusedParameterization {
                parameterization: g.name.clone(),
                n_runs: g.n_runs,
                error: g.fit.as_ref().err()?.clone(),
            })
        })
        .collect();
    RecommendResult {
        budget_flops: budget,
        architecture: outcome.architecture,
        parameterizations,
        refused,
        tokens_per_param: outcome.tokens_per_param,
        candidate_shapes: outcome
            .candidates
            .iter()
            .take(top)
            .map(Into::into)
            .collect(),
        note: outcome.note.clone(),
        verdict: outcome.verdict.clone(),
        data: outcome.datasets.clone(),
        confirm_sweep: outcome.confirm_sweep.clone(),
        extend_sweep: outcome.extension.as_ref().map(|e| ExtendSweep {
            computes: e.computes.clone(),
            sweep: e.sweep.clone(),
            estimate: e.estimate.clone(),
        }),
        sweep: None,
    }
}

/// The planner's answer (as `POST /api/v1/plan/recommend` gives it) for the runs of a CSV with
/// the runs export's columns, without a server: the runs are imported into a throw-away
/// database and planned exactly as the server plans them. `defaults` fill the columns the CSV
/// lacks (`parameterization`, `tags`); `body` is the request without its selection (every run
/// of the CSV is selected).
pub async fn recommend_from_csv(
    csv: &[u8],
    defaults: &[(String, String)],
    mut body: Map<String, Value>,
) -> Result<Value, ApiError> {
    let runs = super::imports::runs_from_csv(csv, defaults)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "shapewise-recommend-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::Internal(e.to_string()))?;
    let planned = async {
        let store = crate::store::Store::open(&dir.join("runs.db")).await?;
        store.import_runs(&runs).await?;
        let jobs = crate::jobs::Jobs::new(store.clone());
        let state = AppState::new(store, jobs, ServerSettings::default());
        body.insert("selection".into(), json!({"filters": {}}));
        let request = parse_request(body)?;
        let outcome = plan_request(&state, &request).await?;
        serde_json::to_value(outcome_body(&outcome, request.top))
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    planned
}

/// Recommends shapes and token counts for a compute budget.
///
/// Fits `L(C) = E + A C^-b` to the selected runs of each parameterization (bootstrap intervals
/// with `resamples > 0`) and ranks the shapes that use the budget at the runs' tokens per
/// parameter: widths a multiple of `d_head`, every depth up to `max_depth`, within the width
/// and memory limits. Predicted loss is `L(budget) (1 + curvature (ln(N:L) - optimum)^2)` with
/// the width/depth penalty of the runs; without one, all shapes of the budget predict the same
/// loss and rank by closeness of `N:L` to 62. For each parameterization's best shape, the FLOPs
/// every other fitted one needs for the same loss. `confirm_sweep` is a ready body for `POST
/// /api/v1/sweeps`; `"create_sweep": true` creates it (201, `sweep` holds its id).
#[utoipa::path(
    post,
    path = "/api/v1/plan/recommend",
    tag = "planner",
    request_body(content = RecommendRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Ranked shapes per fitted parameterization, the refused ones, and the confirming sweep's body", body = RecommendResult),
        (status = 201, description = "The same, with the confirming sweep created (`create_sweep: true`)", body = RecommendResult),
        (status = 400, description = "Malformed JSON, a missing or out-of-range setting, a bad selection, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "Limits no shape meets, a budget too small for any model, too many runs, or a sweep that cannot be created", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn recommend_shapes(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_request(json_object(body)?)?;
    if request.create_sweep {
        super::auth::require(crate::auth::Role::Writer)?;
    }
    let outcome = plan_request(&state, &request).await?;
    let mut answer = outcome_body(&outcome, request.top);
    if !request.create_sweep {
        return Ok(Json(answer).into_response());
    }
    let (id, run_ids) = create_confirming_sweep(&state, &outcome).await?;
    answer.sweep = Some(CreatedSweep { id, run_ids });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The request and response bodies.
mod bodies {
    use crate::plan::Architecture;
    use crate::verdict::Verdict;
    use crate::web::fits::{Bounds, PowerLawBounds, RunSelection};
    use crate::web::studies::EstimateView;
    use crate::web::sweeps::CreateSweep;
    use serde::{Deserialize, Serialize};
    use serde_json::{Map, Value};
    use utoipa::ToSchema;

    /// A compute budget and the model's vocabulary and context; optional limits on the shapes.
    /// The budget is `budget_flops`, or `device_hours` times `flops_per_second` times 3600 (at
    /// most 1e35 FLOPs, else 422): exactly one of the two ways. Unknown fields are refused.
    #[derive(Debug, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(example = json!({
        "selection": {"tags": ["compute-study"]}, "budget_flops": 1e20, "vocab": 50257,
        "context": 1024, "max_depth": 64, "memory_gib": 80, "batch": 8, "top": 3
    }))]
    pub struct RecommendRequest {
        #[schema(required = true, value_type = RunSelection)]
        pub selection: Option<RunSelection>,
        /// Training FLOPs to spend.
        #[schema(exclusive_minimum = 0.0, maximum = 1e35)]
        pub budget_flops: Option<f64>,
        /// Device-hours to spend (with `flops_per_second`).
        #[schema(exclusive_minimum = 0.0)]
        pub device_hours: Option<f64>,
        /// FLOP/s one device sustains in training (peak times utilisation).
        #[schema(exclusive_minimum = 0.0)]
        pub flops_per_second: Option<f64>,
        /// Vocabulary size `V`.
        #[schema(required = true, value_type = u64, minimum = 1, maximum = 16777216)]
        pub vocab: Option<u64>,
        /// Context length `T`, in tokens.
        #[schema(required = true, value_type = u64, minimum = 1, maximum = 16777216)]
        pub context: Option<u64>,
        /// Head dimension; widths are multiples of it.
        #[schema(default = 64, minimum = 1, maximum = 4096)]
        pub d_head: Option<u64>,
        /// Tokens per non-embedding parameter; by default the median of each parameterization's
        /// runs (20 without any).
        #[schema(exclusive_minimum = 0.0, maximum = 1e6)]
        pub tokens_per_param: Option<f64>,
        /// Deepest model considered (blocks).
        #[schema(default = 256, minimum = 1, maximum = 10000)]
        pub max_depth: Option<u64>,
        /// Narrowest width allowed.
        #[schema(default = 1, minimum = 1, maximum = 1048576)]
        pub min_width: Option<u64>,
        /// Widest width allowed (at least `min_width`, with a multiple of `d_head` in between,
        /// else 422).
        #[schema(minimum = 1, maximum = 1048576)]
        pub max_width: Option<u64>,
        /// Training memory allowed per replica, GiB: fp32 weights, gradients and AdamW moments
        /// (16 bytes per parameter, embeddings included) plus one micro-batch's activations
        /// (Korthikanti et al. 2022, adapted to fp32 without dropout).
        #[schema(exclusive_minimum = 0.0, maximum = 1e12)]
        pub memory_gib: Option<f64>,
        /// Sequences per micro-batch, for the memory estimate (and the confirming sweep).
        #[schema(default = 16, minimum = 1, maximum = 1048576)]
        pub batch: Option<u64>,
        /// Ranked shapes returned per parameterization.
        #[schema(default = 5, minimum = 1, maximum = 100)]
        pub top: Option<u64>,
        /// Bootstrap resamples per parameterization; 0 fits once, without intervals.
        #[schema(default = 200, minimum = 0, maximum = 5000)]
        pub resamples: Option<u64>,
        #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
        pub seed: Option<u64>,
        /// Two-sided confidence level of the intervals, in (0, 1).
        #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
        pub confidence: Option<f64>,
        /// Create the confirming sweep (201, its id in `sweep`; needs the writer role).
        #[schema(default = false)]
        pub create_sweep: Option<bool>,
    }

    /// The fitted `L(C) = E + A C^-b` a plan uses.
    #[derive(Serialize, ToSchema)]
    pub struct PlannedFit {
        #[serde(rename = "E")]
        pub e: f64,
        #[serde(rename = "A")]
        pub a: f64,
        pub b: f64,
        /// `null` with `resamples: 0`.
        pub intervals: Option<PowerLawBounds>,
        /// Whether `E` is shared with the other parameterizations (the runs name the same data).
        pub shared_e: bool,
        /// FLOPs of the largest run fitted.
        pub largest_run_flops: f64,
        /// The budget over `largest_run_flops`: how far the plan extrapolates the fit.
        pub extrapolation: f64,
    }

    /// The width/depth penalty: relative excess loss `curvature (ln(N:L) - log_ratio_optimum)^2`.
    #[derive(Serialize, ToSchema)]
    pub struct ShapePenaltyBody {
        pub log_ratio_optimum: f64,
        /// `exp(log_ratio_optimum)`.
        pub optimal_width_depth_ratio: f64,
        pub curvature: f64,
    }

    /// A shape that uses the budget, without a loss prediction.
    #[derive(Serialize, ToSchema)]
    pub struct CandidateShape {
        /// Width `N`, a multiple of `d_head`.
        pub width: usize,
        /// Depth `L` (blocks).
        pub depth: usize,
        pub heads: usize,
        /// `N:L`.
        pub width_depth_ratio: f64,
        pub params_non_embedding: u64,
        /// With the untied embedding and unembedding.
        pub params_total: u64,
        /// Training tokens: the budget over the FLOPs per token.
        pub tokens: u64,
        pub tokens_per_param: f64,
        /// Training FLOPs, the budget to within one token.
        pub flops: f64,
        /// Estimated training memory per replica, GiB.
        pub memory_gib: f64,
    }

    /// A ranked shape with its predicted loss.
    #[derive(Serialize, ToSchema)]
    pub struct RecommendedShape {
        /// 1 for the best.
        pub rank: usize,
        #[serde(flatten)]
        pub shape: CandidateShape,
        /// `curvature (ln(N:L) - optimum)^2`; 0 without a penalty.
        pub relative_penalty: f64,
        /// Predicted final loss, nats/token.
        pub predicted_loss: f64,
        /// `null` with `resamples: 0`.
        pub interval: Option<Bounds>,
    }

    /// The compute another parameterization needs, at its optimal shape, to reach the predicted
    /// loss of this one's best shape.
    #[derive(Serialize, ToSchema)]
    pub struct MatchedComputeBody {
        pub parameterization: String,
        pub loss: f64,
        /// `null` when its curve never reaches the loss (see `refusal`).
        pub flops: Option<f64>,
        /// `flops` over the budget.
        pub ratio: Option<f64>,
        /// Bootstrap interval of `flops`, resamples paired by index.
        pub interval: Option<Bounds>,
        pub unreachable_resamples: usize,
        pub refusal: Option<String>,
    }

    /// The plan of one fitted parameterization; `conclusive` is `false` when the runs cannot
    /// support it (see `warnings`: extrapolation, compute coverage, `E` on a bound, a loss
    /// below the known floor, a target unlike the runs), with what to run in `next_runs`.
    #[derive(Serialize, ToSchema)]
    pub struct ParameterizationRecommendation {
        pub parameterization: String,
        pub n_runs: usize,
        /// Tokens per non-embedding parameter of its shapes.
        pub tokens_per_param: f64,
        pub fit: PlannedFit,
        /// `L(budget)`, the loss at the optimal shape.
        pub loss_at_budget: f64,
        pub loss_at_budget_interval: Option<Bounds>,
        /// `null` when no width/depth penalty is fitted (see `shape_note`).
        pub shape_penalty: Option<ShapePenaltyBody>,
        pub shape_note: Option<String>,
        /// The best `top` shapes.
        pub shapes: Vec<RecommendedShape>,
        pub matched_compute: Vec<MatchedComputeBody>,
        #[serde(flatten)]
        pub verdict: Verdict,
    }

    /// A parameterization the fit refused.
    #[derive(Serialize, ToSchema)]
    pub struct RefusedParameterization {
        pub parameterization: String,
        pub n_runs: usize,
        /// Why, e.g. too few distinct compute scales.
        pub error: String,
    }

    /// The sweep that makes an inconclusive plan conclusive: the compute scales its coverage
    /// lacks and, past 100 times the largest run, the budget over 100, each with the best
    /// plan's recommended shape there, under every fitted parameterization at its runs' base LR.
    #[derive(Serialize, ToSchema)]
    pub struct ExtendSweep {
        /// The compute scales (FLOPs) it adds.
        pub computes: Vec<f64>,
        /// A body for `POST /api/v1/sweeps`.
        #[schema(value_type = CreateSweep)]
        pub sweep: Map<String, Value>,
        /// Its cost on this server.
        pub estimate: EstimateView,
    }

    /// The created confirming sweep.
    #[derive(Serialize, ToSchema)]
    pub struct CreatedSweep {
        pub id: i64,
        pub run_ids: Vec<i64>,
    }

    /// The planner's answer; `conclusive` is `false` when the runs cannot support the plan (see
    /// `warnings`), with what to run in `next_runs`.
    #[derive(Serialize, ToSchema)]
    pub struct RecommendResult {
        pub budget_flops: f64,
        /// Vocabulary, context, head dimension, and whether blocks have biases (from the runs).
        pub architecture: Architecture,
        /// Fitted parameterizations, best predicted loss first.
        pub parameterizations: Vec<ParameterizationRecommendation>,
        pub refused: Vec<RefusedParameterization>,
        /// `r` of `candidate_shapes`.
        pub tokens_per_param: f64,
        /// The best `top` shapes that use the budget, by closeness of N:L to 62, without a loss.
        pub candidate_shapes: Vec<CandidateShape>,
        /// What to run, when nothing is fitted.
        pub note: Option<String>,
        #[serde(flatten)]
        pub verdict: Verdict,
        /// The data the selected runs trained on: each distinct `dataset` they record
        /// (`unrecorded` for runs that name none).
        pub data: Vec<String>,
        /// A body for `POST /api/v1/sweeps`; `null` when nothing is fitted.
        #[schema(value_type = Option<CreateSweep>)]
        pub confirm_sweep: Option<Map<String, Value>>,
        /// The runs that would make an inconclusive plan conclusive; `null` when it is
        /// conclusive or no runs would help.
        pub extend_sweep: Option<ExtendSweep>,
        /// The created sweep (`create_sweep: true`), else `null`.
        pub sweep: Option<CreatedSweep>,
    }
}
use bodies::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_computes_add_missing_scales_and_the_budget_over_the_limit() {
        // Three scales (one short), budget 1000x the largest: 4x the largest, and budget / 100.
        let three = [1e15, 1e16, 1e17];
        assert_eq!(
            extension_computes([&three[..]].into_iter(), 1e20, 1e17),
            vec![4e17, 1e18]
        );
        // Two fits lacking the same scale ask for it once; a covered fit within 100x asks nothing.
        assert_eq!(
            extension_computes([&three[..], &three[..]].into_iter(), 1e18, 1e17),
            vec![4e17]
        );
        let four = [1e15, 1e16, 1e17, 1e18];
        assert!(extension_computes([&four[..]].into_iter(), 1e20, 1e18).is_empty());
    }
}
