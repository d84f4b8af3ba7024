//! `/api/v1/analysis`: LR transfer and width/depth tolerance of stored runs (sections 5 and 6
//! of the CompleteP spec).
//!
//! - `POST /api/v1/analysis/transfer`: the optimal learning rate per depth (or width) of each
//!   parameterization, its drift in octaves per doubling and the verdict
//!   ([`crate::fit::transfer`]).
//! - `POST /api/v1/analysis/shape-tolerance`: per compute scale, the optimal width-to-depth
//!   ratio `N:L`, the range of `N:L` within a tolerance of the optimal loss, and the penalty
//!   pooled over scales ([`crate::fit::shape`]).
//!
//! Both take a run `selection` as the fit endpoints do. The pages call [`transfer_report`] and
//! [`tolerance_report`], so the page and the API accept, refuse and answer alike.

use super::AppState;
use super::body::{as_bad_request, json_body};
use super::error::ApiError;
use super::fits::{blocking, bootstrap_options, final_loss, select_runs, select_runs_with_status};
use crate::fit::BootstrapOptions;
use crate::fit::shape::{
    DEFAULT_SCALE_FACTOR, DEFAULT_TOLERANCE, ShapeOptions, ShapePoint, ShapeTolerance,
    fit_shape_tolerance,
};
use crate::fit::transfer::{
    DEFAULT_DRIFT_THRESHOLD, SizeAxis, TransferFit, TransferOptions, TransferPoint, fit_transfer,
};
use crate::numbers::significant;
use crate::store::{RunQuery, RunRecord, StoredStatus};
use crate::verdict::Verdict;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::{OpenApi, ToSchema};

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/analysis/transfer", post(transfer_analysis))
        .route("/api/v1/analysis/shape-tolerance", post(tolerance_analysis))
}

/// The OpenAPI description of this resource's routes (merged into the API document).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    paths(transfer_analysis, tolerance_analysis),
    components(schemas(TransferRequest, ToleranceRequest)),
    tags((name = "analysis", description = "Learning-rate transfer across depth or width, and width/depth tolerance at matched compute."))
)]
struct Doc;

// ---------------------------------------------------------------------------------------------
// LR transfer

/// Settings of a transfer report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TransferReportOptions {
    /// Which size varies: depth (default) or width.
    pub axis: SizeAxis,
    /// `|drift|` below this transfers (octaves per doubling; default 0.25).
    pub threshold: f64,
    /// The bootstrap over seeds.
    pub bootstrap: BootstrapOptions,
}

impl Default for TransferReportOptions {
    fn default() -> Self {
        TransferReportOptions {
            axis: SizeAxis::Depth,
            threshold: DEFAULT_DRIFT_THRESHOLD,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// The optimal learning rate of one size.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct TransferOptimum {
    /// The depth (blocks) or width.
    pub size: f64,
    /// The optimal learning rate `lr*`.
    pub lr: f64,
    /// `log2(lr*)`.
    pub log2_lr: f64,
    /// Bootstrap interval `[low, high]` of `log2(lr*)` over seeds; `null` without a seed
    /// bootstrap.
    #[schema(value_type = Option<super::fits::Bounds>)]
    pub log2_lr_interval: Option<[f64; 2]>,
    /// The same interval as learning rates.
    #[schema(value_type = Option<super::fits::Bounds>)]
    pub lr_interval: Option<[f64; 2]>,
    /// Loss at the optimum: the quadratic's value at its vertex, else the best grid point's
    /// mean loss (nats/token).
    pub predicted_loss: f64,
    /// Whether the optimum is the vertex of the quadratic in `log2(lr)` (else the best grid
    /// learning rate).
    pub from_vertex: bool,
    /// `low` or `high` when the best grid point is the lowest or highest learning rate tried.
    pub edge: Option<String>,
    /// The grid's best learning rate.
    pub best_grid_lr: f64,
    /// Runs at this size.
    pub points: usize,
    /// Of which diverged.
    pub diverged: usize,
}

/// A size without an optimum.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SkippedSizeBody {
    pub size: f64,
    pub points: usize,
    pub diverged: usize,
    /// Why, e.g. too few learning rates with a finite loss.
    pub reason: String,
}

/// The transfer analysis of one parameterization.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ParameterizationTransfer {
    pub parameterization: String,
    /// Runs analysed (succeeded and diverged).
    pub n_runs: usize,
    /// Of which diverged.
    pub n_diverged: usize,
    /// The optimum of every size that has one, by ascending size.
    pub optima: Vec<TransferOptimum>,
    /// Sizes without an optimum.
    pub skipped: Vec<SkippedSizeBody>,
    /// Octaves the optimal learning rate moves per doubling of the size (OLS slope of
    /// `log2(lr*)` on `log2(size)`).
    pub drift: f64,
    /// Interval `[low, high]` of the drift; `null` with two sizes and one seed.
    #[schema(value_type = Option<super::fits::Bounds>)]
    pub drift_interval: Option<[f64; 2]>,
    /// `seed_bootstrap` (at least 5 seeds per grid point) or `student_t` (fewer seeds, 3 sizes
    /// or more); `null` without an interval.
    pub method: Option<String>,
    /// `|drift| < threshold`.
    pub transfers: bool,
    /// Whether the whole interval lies within `(-threshold, threshold)`; `null` without one.
    pub interval_within_threshold: Option<bool>,
    /// `false` when the runs cannot settle the drift: no interval, one wider than ±0.25 octave
    /// per doubling, or one across the threshold (see `warnings`).
    pub conclusive: bool,
    /// Reasons for `conclusive: false` first, then optima at a grid edge, skipped sizes, mixed
    /// shapes, ...
    pub warnings: Vec<String>,
    /// What to run next to make the drift conclusive.
    pub next_runs: Option<String>,
    /// The whole fit, for charts.
    #[serde(skip)]
    pub fit: TransferFit,
}

/// A parameterization the analysis refused.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct RefusedParameterization {
    pub parameterization: String,
    pub n_runs: usize,
    /// Why, and what to add.
    pub error: String,
}

/// LR transfer per parameterization.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct TransferReport {
    /// `depth` or `width`.
    pub axis: String,
    /// The verdict's threshold (octaves per doubling).
    pub threshold: f64,
    /// The confidence level of the intervals.
    pub confidence: f64,
    pub parameterizations: Vec<ParameterizationTransfer>,
    pub refused: Vec<RefusedParameterization>,
    /// Whether every parameterization's drift is conclusive (and there is at least one).
    pub conclusive: bool,
}

fn pair(interval: Option<crate::fit::Interval>) -> Option<[f64; 2]> {
    interval.map(|i| [i.low, i.high])
}

/// The size of a run along `axis`.
fn run_size(run: &RunRecord, axis: SizeAxis) -> Option<i64> {
    match axis {
        SizeAxis::Depth => run.depth,
        SizeAxis::Width => run.width,
    }
}

/// The seed of a run: the column for runs trained here, the `seed` field an importer sent
/// otherwise, 0 when neither.
fn run_seed(run: &RunRecord) -> u64 {
    run.seed
        .or_else(|| run.config.get("seed").and_then(Value::as_i64))
        .map_or(0, |s| s as u64)
}

/// The parameterization a run is grouped under.
fn group_name(run: &RunRecord) -> String {
    run.parameterization.clone()
}

/// Values as `64, 128` for messages.
fn list(values: &BTreeSet<i64>) -> String {
    let text: Vec<String> = values.iter().map(i64::to_string).collect();
    text.join(", ")
}

/// LR transfer of the selected runs, per parameterization (see
/// `POST /api/v1/analysis/transfer`).
///
/// Succeeded runs enter with their final validation loss (training loss when there is none),
/// diverged runs as diverged; runs without a learning rate or the size are left out. Failed
/// and cancelled runs say nothing about the learning rate and are not selected. A selection
/// without any usable run is refused (422).
pub(crate) async fn transfer_report(
    state: &AppState,
    query: RunQuery,
    options: TransferReportOptions,
) -> Result<TransferReport, ApiError> {
    let runs = select_runs_with_status(
        state,
        query,
        &[StoredStatus::Succeeded, StoredStatus::Diverged],
    )
    .await?;
    let axis = options.axis;
    // Per group: the points, and the other dimension's values (held fixed in a clean study).
    let mut groups: BTreeMap<String, (Vec<TransferPoint>, BTreeSet<i64>)> = BTreeMap::new();
    for run in &runs {
        let (Some(lr), Some(size)) = (run.lr, run_size(run, axis)) else {
            continue;
        };
        let loss = match run.status {
            StoredStatus::Diverged => None,
            _ => match final_loss(run) {
                Some(loss) => Some(loss),
                None => continue,
            },
        };
        let other = match axis {
            SizeAxis::Depth => run.width,
            SizeAxis::Width => run.depth,
        };
        let (points, others) = groups.entry(group_name(run)).or_default();
        points.push(TransferPoint {
            size: size as f64,
            lr,
            loss,
            seed: run_seed(run),
        });
        others.extend(other);
    }
    if groups.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "the selection has no succeeded or diverged runs with a learning rate, a {} and a \
             final loss",
            axis.name()
        )));
    }
    let fit_options = TransferOptions {
        axis,
        threshold: options.threshold,
        bootstrap: options.bootstrap,
    };
    blocking(move || {
        let mut report = TransferReport {
            axis: axis.name().into(),
            threshold: options.threshold,
            confidence: options.bootstrap.confidence,
            parameterizations: Vec::new(),
            refused: Vec::new(),
            conclusive: false,
        };
        let threshold = options.threshold;
        for (parameterization, (points, others)) in groups {
            let fit = match fit_transfer(&points, &fit_options) {
                Ok(fit) => fit,
                Err(e) => {
                    report.refused.push(RefusedParameterization {
                        parameterization,
                        n_runs: points.len(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let mut verdict = Verdict::new();
            verdict.check_drift(pair(fit.drift_interval), threshold);
            if others.len() > 1 {
                let other = match axis {
                    SizeAxis::Depth => SizeAxis::Width,
                    SizeAxis::Width => SizeAxis::Depth,
                };
                verdict.warn(format!(
                    "the runs span {} {} ({}): their optima mix them; select one {} to read \
                     the transfer across {}",
                    others.len(),
                    other.plural(),
                    list(&others),
                    other.name(),
                    axis.plural()
                ));
            }
            for warning in &fit.warnings {
                verdict.warn(warning.clone());
            }
            let optima = (fit.optima.iter())
                .map(|o| {
                    let log2_lr_interval = pair(o.interval);
                    TransferOptimum {
                        size: o.size,
                        lr: o.lr,
                        log2_lr: o.log2_lr,
                        log2_lr_interval,
                        lr_interval: log2_lr_interval.map(|[l, h]| [l.exp2(), h.exp2()]),
                        predicted_loss: o.predicted_loss,
                        from_vertex: o.from_vertex,
                        edge: o.edge.map(|e| e.name().to_string()),
                        best_grid_lr: o.best_grid_lr,
                        points: o.points,
                        diverged: o.diverged,
                    }
                })
                .collect();
            let skipped = (fit.skipped.iter())
                .map(|s| SkippedSizeBody {
                    size: s.size,
                    points: s.points,
                    diverged: s.diverged,
                    reason: s.reason.clone(),
                })
                .collect();
            report.parameterizations.push(ParameterizationTransfer {
                parameterization,
                n_runs: fit.points,
                n_diverged: fit.diverged,
                optima,
                skipped,
                drift: fit.drift,
                drift_interval: pair(fit.drift_interval),
                method: fit.method.map(|m| m.name().to_string()),
                transfers: fit.transfers,
                interval_within_threshold: fit.interval_within_threshold,
                conclusive: verdict.conclusive,
                warnings: verdict.warnings,
                next_runs: verdict.next_runs,
                fit,
            });
        }
        report.conclusive = !report.parameterizations.is_empty()
            && report.parameterizations.iter().all(|p| p.conclusive);
        Ok(report)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Width/depth tolerance

/// Settings of a tolerance report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ToleranceReportOptions {
    /// Relative loss above the optimum still tolerated (default 0.01).
    pub tolerance: f64,
    /// FLOPs ratio within one compute scale (default 1.5).
    pub scale_factor: f64,
    /// The bootstrap of each scale's optimum.
    pub bootstrap: BootstrapOptions,
}

impl Default for ToleranceReportOptions {
    fn default() -> Self {
        ToleranceReportOptions {
            tolerance: DEFAULT_TOLERANCE,
            scale_factor: DEFAULT_SCALE_FACTOR,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// The width/depth tolerance at one compute scale.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ScaleToleranceBody {
    /// Geometric mean of the scale's training FLOPs.
    pub flops: f64,
    /// `[lowest, highest]` FLOPs of the scale's runs.
    #[schema(value_type = super::fits::Bounds)]
    pub flops_range: [f64; 2],
    /// The optimal width-to-depth ratio `N:L`.
    pub optimal_width_depth_ratio: f64,
    /// Bootstrap interval `[low, high]` of it; `null` without resamples.
    #[schema(value_type = Option<super::fits::Bounds>)]
    pub ratio_interval: Option<[f64; 2]>,
    /// The fitted loss at the optimum (nats/token).
    pub optimal_loss: f64,
    /// `[low, high]` `N:L` whose fitted loss is within the tolerance of the optimal loss.
    #[schema(value_type = super::fits::Bounds)]
    pub ratio_range: [f64; 2],
    /// The range stops at the lowest shape tried (it may extend below).
    pub range_clipped_low: bool,
    /// The range stops at the highest shape tried (it may extend above).
    pub range_clipped_high: bool,
    /// Whether the optimum is the quadratic's vertex (else the best shape tried).
    pub from_vertex: bool,
    /// `low` or `high` when the best shape is the lowest or highest `N:L` tried (and the
    /// vertex is not inside them).
    pub edge: Option<String>,
    /// `[lowest, highest]` `N:L` tried.
    #[schema(value_type = super::fits::Bounds)]
    pub observed_ratio_range: [f64; 2],
    /// Runs of the scale.
    pub points: usize,
    /// Distinct `N:L` among them.
    pub shapes: usize,
}

/// A compute scale with too few shapes.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SkippedScaleBody {
    pub flops: f64,
    pub points: usize,
    pub shapes: usize,
    pub reason: String,
}

/// The penalty pooled over scales: `L / L* - 1 = curvature (ln(N:L) - log_ratio_optimum)^2`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct PooledPenalty {
    pub log_ratio_optimum: f64,
    /// `exp(log_ratio_optimum)`.
    pub optimal_width_depth_ratio: f64,
    pub curvature: f64,
    /// `[low, high]` `N:L` with a predicted excess below the tolerance.
    #[schema(value_type = super::fits::Bounds)]
    pub ratio_range: [f64; 2],
}

/// The tolerance analysis of one parameterization.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ParameterizationTolerance {
    pub parameterization: String,
    /// Runs analysed.
    pub n_runs: usize,
    /// Fitted scales, by ascending FLOPs.
    pub scales: Vec<ScaleToleranceBody>,
    /// Scales with fewer than three shapes.
    pub skipped: Vec<SkippedScaleBody>,
    /// `null` when the pooled losses show no positive curvature.
    pub penalty: Option<PooledPenalty>,
    /// `false` when the runs cannot place the optimal `N:L`: no pooled penalty, or a scale's
    /// optimum at an edge of the shapes tried (see `warnings`).
    pub conclusive: bool,
    /// Reasons for `conclusive: false` first, then the fit's own warnings.
    pub warnings: Vec<String>,
    /// What to run next to make the tolerance conclusive.
    pub next_runs: Option<String>,
    /// The whole fit, for charts.
    #[serde(skip)]
    pub fit: ShapeTolerance,
}

/// Width/depth tolerance per parameterization.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ToleranceReport {
    /// Relative loss above the optimum tolerated.
    pub tolerance: f64,
    /// Runs whose FLOPs lie within this factor of a scale's cheapest run share the scale.
    pub scale_factor: f64,
    pub confidence: f64,
    pub parameterizations: Vec<ParameterizationTolerance>,
    pub refused: Vec<RefusedParameterization>,
    /// Whether every parameterization's tolerance is conclusive (and there is at least one).
    pub conclusive: bool,
}

/// Width/depth tolerance of the selected succeeded runs, per parameterization (see
/// `POST /api/v1/analysis/shape-tolerance`). A selection without any run carrying a width, a
/// depth, FLOPs and a final loss is refused (422).
pub(crate) async fn tolerance_report(
    state: &AppState,
    query: RunQuery,
    options: ToleranceReportOptions,
) -> Result<ToleranceReport, ApiError> {
    let runs = select_runs(state, query).await?;
    let mut groups: BTreeMap<String, Vec<ShapePoint>> = BTreeMap::new();
    for run in &runs {
        let (Some(width), Some(depth), Some(flops), Some(loss)) =
            (run.width, run.depth, run.flops, final_loss(run))
        else {
            continue;
        };
        groups.entry(group_name(run)).or_default().push(ShapePoint {
            width: width as f64,
            depth: depth as f64,
            flops,
            loss,
        });
    }
    if groups.is_empty() {
        return Err(ApiError::Unprocessable(
            "the selection has no succeeded runs with a width, a depth, FLOPs and a final loss"
                .into(),
        ));
    }
    let fit_options = ShapeOptions {
        tolerance: options.tolerance,
        scale_factor: options.scale_factor,
        bootstrap: options.bootstrap,
    };
    blocking(move || {
        let mut report = ToleranceReport {
            tolerance: options.tolerance,
            scale_factor: options.scale_factor,
            confidence: options.bootstrap.confidence,
            parameterizations: Vec::new(),
            refused: Vec::new(),
            conclusive: false,
        };
        for (parameterization, points) in groups {
            let fit = match fit_shape_tolerance(&points, &fit_options) {
                Ok(fit) => fit,
                Err(e) => {
                    report.refused.push(RefusedParameterization {
                        parameterization,
                        n_runs: points.len(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let scales = (fit.scales.iter())
                .map(|s| ScaleToleranceBody {
                    flops: s.flops,
                    flops_range: [s.flops_min, s.flops_max],
                    optimal_width_depth_ratio: s.ratio_optimum,
                    ratio_interval: pair(s.interval),
                    optimal_loss: s.optimal_loss,
                    ratio_range: s.ratio_range,
                    range_clipped_low: s.range_clipped_low,
                    range_clipped_high: s.range_clipped_high,
                    from_vertex: s.from_vertex,
                    edge: s.edge.map(|e| e.name().to_string()),
                    observed_ratio_range: s.observed_ratio_range,
                    points: s.points.len(),
                    shapes: s.shapes,
                })
                .collect();
            let skipped = (fit.skipped.iter())
                .map(|s| SkippedScaleBody {
                    flops: s.flops,
                    points: s.points,
                    shapes: s.shapes,
                    reason: s.reason.clone(),
                })
                .collect();
            let penalty = fit.penalty.map(|p| PooledPenalty {
                log_ratio_optimum: p.log_ratio_optimum,
                optimal_width_depth_ratio: p.ratio_optimum(),
                curvature: p.curvature,
                ratio_range: p.ratio_range(options.tolerance),
            });
            let mut verdict = Verdict::new();
            if penalty.is_none() {
                verdict.inconclusive(
                    "the runs show no width/depth penalty (no positive curvature in ln N:L)",
                );
                verdict.suggest("add shapes further from the best one at each compute scale");
            }
            let edges: Vec<String> = (fit.scales.iter())
                .filter_map(|s| {
                    let edge = s.edge?;
                    Some(format!("{} ({} N:L)", significant(s.flops), edge.name()))
                })
                .collect();
            if !edges.is_empty() {
                verdict.inconclusive(format!(
                    "the best shape is at an edge of the shapes tried at {}: the optimum may lie \
                     beyond",
                    edges.join(", ")
                ));
                verdict.suggest("add shapes beyond that edge at those compute scales");
            }
            for warning in &fit.warnings {
                verdict.warn(warning.clone());
            }
            report.parameterizations.push(ParameterizationTolerance {
                parameterization,
                n_runs: points.len(),
                scales,
                skipped,
                penalty,
                conclusive: verdict.conclusive,
                warnings: verdict.warnings,
                next_runs: verdict.next_runs,
                fit,
            });
        }
        report.conclusive = !report.parameterizations.is_empty()
            && report.parameterizations.iter().all(|p| p.conclusive);
        Ok(report)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Body parsing

/// `value` (else `default`) where `valid`, else a 400 saying what `key` must be.
fn checked(
    value: Option<f64>,
    key: &str,
    default: f64,
    what: &str,
    valid: impl Fn(f64) -> bool,
) -> Result<f64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && valid(v) => Ok(v),
        Some(_) => Err(ApiError::BadRequest(format!("'{key}' must be {what}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// LR transfer across depth (or width), per parameterization.
///
/// For each parameterization of the selected runs: the final loss averaged over seeds per
/// size and learning rate; per size, a least-squares quadratic in `log2(lr)` through the best
/// grid point and up to two neighbours on each side, whose vertex is the optimal learning rate
/// `lr*` (the best grid point, flagged, when the vertex is not inside the fitted points); the
/// **drift**, the OLS slope of `log2(lr*)` against `log2(size)` in octaves per doubling; its
/// interval (a bootstrap over seeds with at least 5 seeds per grid point, else the Student-t
/// interval with 3 sizes or more); and the verdict `|drift| < threshold`. Succeeded runs enter
/// with their final validation loss (training loss when there is none); diverged runs count
/// as worse than any finite loss. Parameterizations the analysis refuses (fewer than two sizes
/// with an optimum) are listed in `refused` with the reason.
#[utoipa::path(
    post,
    path = "/api/v1/analysis/transfer",
    tag = "analysis",
    request_body(content = TransferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The optima, drift and verdict per parameterization", body = TransferReport),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "No usable runs in the selection, or too many", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn transfer_analysis(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: TransferRequest = json_body(body).map_err(as_bad_request)?;
    let query = request.selection.query()?;
    let axis = match request.axis {
        None | Some(SizeAxisName::Depth) => SizeAxis::Depth,
        Some(SizeAxisName::Width) => SizeAxis::Width,
    };
    let threshold = checked(
        request.threshold,
        "threshold",
        DEFAULT_DRIFT_THRESHOLD,
        "a positive number of octaves per doubling",
        |v| v > 0.0,
    )?;
    let bootstrap = bootstrap_options(request.resamples, request.seed, request.confidence)?;
    let options = TransferReportOptions {
        axis,
        threshold,
        bootstrap,
    };
    Ok(Json(transfer_report(&state, query, options).await?).into_response())
}

/// Width/depth tolerance at matched compute, per parameterization.
///
/// The selected succeeded runs of each parameterization are grouped into compute scales (runs
/// whose FLOPs lie within `scale_factor`, 1.5 by default, of the scale's cheapest run). Per
/// scale with three shapes or more: a least-squares quadratic of the final loss in
/// `ln(N:L)` (`N:L` = width / depth), its optimum `N:L` with a bootstrap interval, the optimal
/// loss, and the range of `N:L` whose fitted loss is within `tolerance` (1% by default) of it,
/// flagged where it reaches the shapes tried. Pooled over scales, each normalised by its own
/// optimal loss: the penalty `L / L* - 1 = curvature (ln(N:L) - log_ratio_optimum)^2`.
#[utoipa::path(
    post,
    path = "/api/v1/analysis/shape-tolerance",
    tag = "analysis",
    request_body(content = ToleranceRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The tolerance per compute scale and the pooled penalty, per parameterization", body = ToleranceReport),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "No usable runs in the selection, or too many", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn tolerance_analysis(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ToleranceRequest = json_body(body).map_err(as_bad_request)?;
    let query = request.selection.query()?;
    let tolerance = checked(
        request.tolerance,
        "tolerance",
        DEFAULT_TOLERANCE,
        "a fraction of the optimal loss in (0, 1]",
        |v| v > 0.0 && v <= 1.0,
    )?;
    let scale_factor = checked(
        request.scale_factor,
        "scale_factor",
        DEFAULT_SCALE_FACTOR,
        "a FLOPs ratio of at least 1",
        |v| v >= 1.0,
    )?;
    let bootstrap = bootstrap_options(request.resamples, request.seed, request.confidence)?;
    let options = ToleranceReportOptions {
        tolerance,
        scale_factor,
        bootstrap,
    };
    Ok(Json(tolerance_report(&state, query, options).await?).into_response())
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The size a transfer analysis varies.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum SizeAxisName {
    Depth,
    Width,
}

/// An LR-transfer analysis of the selected runs. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selection": {"sweep_id": 3}, "axis": "depth", "threshold": 0.25, "resamples": 500, "seed": 1}))]
struct TransferRequest {
    selection: super::fits::RunSelection,
    /// Which size varies across the runs.
    #[schema(default = "depth")]
    axis: Option<SizeAxisName>,
    /// `|drift|` below this transfers, in octaves per doubling.
    #[schema(default = 0.25, exclusive_minimum = 0.0)]
    threshold: Option<f64>,
    /// Bootstrap resamples over seeds (used with at least 5 seeds per grid point); 0 skips it.
    #[schema(default = 1000, minimum = 0, maximum = 5000)]
    resamples: Option<u64>,
    /// Seed of the resampling.
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    seed: Option<u64>,
    /// Two-sided confidence level of the intervals, in (0, 1).
    #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    confidence: Option<f64>,
}

/// A width/depth tolerance analysis of the selected runs. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selection": {"tags": ["compute-efficiency"]}, "tolerance": 0.01, "resamples": 500}))]
struct ToleranceRequest {
    selection: super::fits::RunSelection,
    /// Relative loss above the optimum still tolerated (0.01: within 1%).
    #[schema(default = 0.01, exclusive_minimum = 0.0, maximum = 1.0)]
    tolerance: Option<f64>,
    /// Runs whose FLOPs lie within this factor of a scale's cheapest run share the scale.
    #[schema(default = 1.5, minimum = 1.0)]
    scale_factor: Option<f64>,
    /// Bootstrap resamples of each scale's runs; 0 gives no interval.
    #[schema(default = 1000, minimum = 0, maximum = 5000)]
    resamples: Option<u64>,
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    seed: Option<u64>,
    /// Two-sided confidence level of the intervals, in (0, 1).
    #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    confidence: Option<f64>,
}
