//! The analysis page (`GET /analysis`): fits, savings, LR transfer and width/depth tolerance of
//! a run selection.
//!
//! A GET form chooses the runs (a sweep, tags, or parameterization, width and depth filters as
//! on the runs page) and the settings; every section is computed by the same report functions
//! as the API ([`crate::web::fits::compute_report`], [`crate::web::analysis::transfer_report`],
//! [`crate::web::analysis::tolerance_report`]) and shows the refusal message instead when the
//! runs cannot support it.

use super::{
    PARAMETERIZATIONS, Page, PageError, SelectOption, fmt_loss, fmt_real, fmt_sci, options, render,
};
use crate::fit::BootstrapOptions;
use crate::fit::transfer::{DEFAULT_DRIFT_THRESHOLD, SizeAxis};
use crate::numbers::significant;
use crate::verdict::Verdict;
use crate::web::AppState;
use crate::web::analysis::{
    ParameterizationTolerance, ParameterizationTransfer, ToleranceReport, ToleranceReportOptions,
    TransferReport, TransferReportOptions, tolerance_report, transfer_report,
};
use crate::web::charts::{self, analysis as analysis_charts};
use crate::web::error::ApiError;
use crate::web::fits::{
    ComputeGroupFit, ComputeOptions, ComputeReport, compute_report, savings_between,
};
use crate::web::runs::parse_run_query;
use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/analysis", get(analysis_page))
}

/// Bootstrap resamples when the form names none: enough for stable 95% intervals, quick
/// enough for a page.
const DEFAULT_PAGE_RESAMPLES: usize = 200;
/// The most resamples the page runs.
const MAX_PAGE_RESAMPLES: usize = 2000;
/// The order candidates are preferred in the savings table: a row compares a parameterization
/// with every one after it.
const SAVINGS_ORDER: [&str; 5] = ["completep", "depth-mup", "alpha", "mup", "sp"];

/// The form as typed.
#[derive(Clone, Debug, Default)]
struct AnalysisForm {
    sweep_id: String,
    tags: String,
    parameterization: String,
    width: String,
    depth: String,
    axis: String,
    threshold: String,
    tolerance: String,
    resamples: String,
    seed: String,
}

impl AnalysisForm {
    fn from_params(params: &[(String, String)]) -> AnalysisForm {
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        AnalysisForm {
            sweep_id: get("sweep_id"),
            tags: get("tags"),
            parameterization: get("parameterization"),
            width: get("width"),
            depth: get("depth"),
            axis: get("axis"),
            threshold: get("threshold"),
            tolerance: get("tolerance"),
            resamples: get("resamples"),
            seed: get("seed"),
        }
    }

    /// Whether the form chooses any runs (a page without a selection only shows the form).
    fn selects(&self) -> bool {
        [
            &self.sweep_id,
            &self.tags,
            &self.parameterization,
            &self.width,
            &self.depth,
        ]
        .iter()
        .any(|v| !v.is_empty())
    }
}

/// The parsed form.
struct Settings {
    query: crate::store::RunQuery,
    axis: SizeAxis,
    threshold: f64,
    tolerance: f64,
    bootstrap: BootstrapOptions,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn parse_form(form: &AnalysisForm) -> Result<Settings, ApiError> {
    let mut pairs = Vec::new();
    if !form.sweep_id.is_empty() {
        let id: i64 = (form.sweep_id.parse())
            .map_err(|_| bad(format!("sweep '{}' is not a sweep id", form.sweep_id)))?;
        pairs.push(("sweep_id".to_string(), id.to_string()));
    }
    for tag in form
        .tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        pairs.push(("tag".to_string(), tag.to_string()));
    }
    for (key, value) in [
        ("parameterization", &form.parameterization),
        ("width", &form.width),
        ("depth", &form.depth),
    ] {
        if !value.is_empty() {
            pairs.push((key.to_string(), value.clone()));
        }
    }
    let query = parse_run_query(pairs)?;
    let axis = match form.axis.as_str() {
        "" | "depth" => SizeAxis::Depth,
        "width" => SizeAxis::Width,
        other => return Err(bad(format!("axis '{other}' must be depth or width"))),
    };
    let number = |text: &str, default: f64, name: &str, valid: &dyn Fn(f64) -> bool| {
        if text.is_empty() {
            return Ok(default);
        }
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && valid(*v))
            .ok_or_else(|| bad(format!("{name} '{text}' is out of range")))
    };
    let threshold = number(
        &form.threshold,
        DEFAULT_DRIFT_THRESHOLD,
        "the drift threshold",
        &|v| v > 0.0,
    )?;
    // The form takes the tolerance in percent.
    let tolerance = number(&form.tolerance, 1.0, "the tolerance", &|v| {
        v > 0.0 && v <= 100.0
    })? / 100.0;
    let resamples = match form.resamples.as_str() {
        "" => DEFAULT_PAGE_RESAMPLES,
        text => text
            .parse::<usize>()
            .ok()
            .filter(|r| *r <= MAX_PAGE_RESAMPLES)
            .ok_or_else(|| {
                bad(format!(
                    "resamples must be a whole number from 0 to {MAX_PAGE_RESAMPLES}"
                ))
            })?,
    };
    let seed = match form.seed.as_str() {
        "" => 0,
        text => text
            .parse::<u64>()
            .map_err(|_| bad("the seed must be a whole number"))?,
    };
    Ok(Settings {
        query,
        axis,
        threshold,
        tolerance,
        bootstrap: BootstrapOptions {
            resamples,
            seed,
            confidence: 0.95,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Views

/// `0.153 [0.141, 0.166]`.
fn with_interval(estimate: f64, interval: Option<[f64; 2]>, format: fn(f64) -> String) -> String {
    match interval {
        Some([low, high]) => format!("{} [{}, {}]", format(estimate), format(low), format(high)),
        None => format(estimate),
    }
}

fn chart_or_message(chart: Result<String, charts::ChartError>) -> String {
    chart.unwrap_or_else(|e| {
        tracing::warn!("{e}");
        charts::message_svg("the chart could not be drawn")
    })
}

/// The message a section shows in place of its content.
fn refusal(error: &ApiError) -> String {
    if let ApiError::Internal(detail) = error {
        tracing::error!("internal error: {detail}");
    }
    error.to_string()
}

struct ComputeRow {
    group: String,
    e: String,
    a: String,
    b: String,
    n_runs: usize,
    rmse: String,
    r_squared: String,
}

struct RefusedRow {
    name: String,
    n_runs: usize,
    error: String,
}

struct SavingsRow {
    candidate: String,
    baseline: String,
    savings: String,
    /// How the savings were measured: the matched computes, or the loss the curves meet at.
    basis: String,
    /// The other reading, for comparison.
    other: String,
    /// Whether the savings come from runs matched at equal compute.
    matched: bool,
    verdict: Verdict,
}

struct ComputeSection {
    chart: String,
    residual_chart: String,
    rows: Vec<ComputeRow>,
    refused: Vec<RefusedRow>,
    savings: Vec<SavingsRow>,
    verdict: Verdict,
}

fn compute_section(report: &ComputeReport) -> ComputeSection {
    let rows = (report.groups.iter())
        .map(|g| {
            let i = g.intervals;
            ComputeRow {
                group: g.group.clone(),
                e: with_interval(g.e, i.map(|i| i.e), fmt_real),
                a: with_interval(g.a, i.map(|i| i.a), fmt_real),
                b: with_interval(g.b, i.map(|i| i.b), fmt_real),
                n_runs: g.n_runs,
                rmse: format!("{:.2}%", 100.0 * g.rmse_log_loss),
                r_squared: g.r_squared.map_or("—".into(), |r| format!("{r:.4}")),
            }
        })
        .collect();
    let refused = (report.refused.iter())
        .map(|r| RefusedRow {
            name: r.group.clone(),
            n_runs: r.n_runs,
            error: r.error.clone(),
        })
        .collect();
    ComputeSection {
        chart: chart_or_message(analysis_charts::compute_chart(&report.groups)),
        residual_chart: chart_or_message(analysis_charts::residual_chart(&report.groups)),
        rows,
        refused,
        savings: savings_rows(&report.groups),
        verdict: report.verdict.clone(),
    }
}

/// Savings of every fitted parameterization over each one after it in [`SAVINGS_ORDER`]
/// (unknown names last, by name), at the overlap midpoint of their losses.
fn savings_rows(groups: &[ComputeGroupFit]) -> Vec<SavingsRow> {
    let rank = |name: &str| {
        SAVINGS_ORDER
            .iter()
            .position(|p| *p == name)
            .unwrap_or(SAVINGS_ORDER.len())
    };
    let mut ordered: Vec<&ComputeGroupFit> = groups.iter().collect();
    ordered.sort_by(|a, b| {
        rank(&a.group)
            .cmp(&rank(&b.group))
            .then(a.group.cmp(&b.group))
    });
    let mut rows = Vec::new();
    for (i, candidate) in ordered.iter().enumerate() {
        for baseline in &ordered[i + 1..] {
            let percent = |value: f64, interval: Option<[f64; 2]>| {
                with_interval(
                    value * 100.0,
                    interval.map(|[l, h]| [l * 100.0, h * 100.0]),
                    |v| format!("{}%", significant(v)),
                )
            };
            let at_loss =
                |s: &crate::web::fits::Savings| format!("curves at loss {}", fmt_loss(s.loss));
            let row = match savings_between(candidate, baseline, None) {
                Ok(s) => {
                    let (basis, other) = match &s.matched {
                        Some(m) => (
                            format!(
                                "{} computes trained by both, {} to {} FLOPs",
                                m.computes,
                                fmt_sci(m.compute_range[0]),
                                fmt_sci(m.compute_range[1])
                            ),
                            format!(
                                "{}: {}",
                                at_loss(&s),
                                percent(s.curve_savings, s.curve_interval)
                            ),
                        ),
                        None => (at_loss(&s), String::new()),
                    };
                    SavingsRow {
                        candidate: candidate.group.clone(),
                        baseline: baseline.group.clone(),
                        savings: percent(s.savings, s.interval),
                        basis,
                        other,
                        matched: s.matched.is_some(),
                        verdict: s.verdict,
                    }
                }
                Err(error) => {
                    let mut verdict = Verdict::new();
                    verdict.inconclusive(error);
                    SavingsRow {
                        candidate: candidate.group.clone(),
                        baseline: baseline.group.clone(),
                        savings: "—".into(),
                        basis: "—".into(),
                        other: String::new(),
                        matched: false,
                        verdict,
                    }
                }
            };
            rows.push(row);
        }
    }
    rows
}

struct OptimumRow {
    size: String,
    lr: String,
    log2_lr: String,
    predicted_loss: String,
    note: String,
    points: usize,
    diverged: usize,
}

struct TransferView {
    parameterization: String,
    chart: String,
    drift: String,
    method: String,
    verdict: String,
    n_runs: usize,
    n_diverged: usize,
    optima: Vec<OptimumRow>,
    conclusive: bool,
    warnings: Vec<String>,
    next_runs: Option<String>,
}

fn transfer_view(p: &ParameterizationTransfer, threshold: f64) -> TransferView {
    let optima = (p.optima.iter())
        .map(|o| {
            let mut notes = Vec::new();
            if !o.from_vertex {
                notes.push("best grid point".to_string());
            }
            if let Some(edge) = &o.edge {
                notes.push(format!("at the {edge} edge of the grid"));
            }
            OptimumRow {
                size: fmt_real(o.size),
                lr: with_interval(o.lr, o.lr_interval, fmt_real),
                log2_lr: with_interval(o.log2_lr, o.log2_lr_interval, |v| format!("{v:.2}")),
                predicted_loss: fmt_loss(o.predicted_loss),
                note: notes.join("; "),
                points: o.points,
                diverged: o.diverged,
            }
        })
        .collect();
    let verdict = match (p.transfers, p.interval_within_threshold) {
        (true, Some(true)) => {
            format!("transfers: |drift| < {threshold}, interval inside ±{threshold}")
        }
        (true, Some(false)) => {
            format!("transfers (|drift| < {threshold}), but the interval reaches past ±{threshold}")
        }
        (true, None) => format!("transfers: |drift| < {threshold} (no interval)"),
        (false, _) => format!("does not transfer: |drift| ≥ {threshold}"),
    };
    TransferView {
        parameterization: p.parameterization.clone(),
        chart: chart_or_message(analysis_charts::transfer_chart(&p.fit)),
        drift: with_interval(p.drift, p.drift_interval, |v| format!("{v:+.3}")),
        method: match p.method.as_deref() {
            Some("seed_bootstrap") => "bootstrap over seeds".into(),
            Some("student_t") => "Student-t".into(),
            _ => "none".into(),
        },
        verdict,
        n_runs: p.n_runs,
        n_diverged: p.n_diverged,
        optima,
        conclusive: p.conclusive,
        warnings: p.warnings.clone(),
        next_runs: p.next_runs.clone(),
    }
}

struct TransferSection {
    axis: &'static str,
    views: Vec<TransferView>,
    refused: Vec<RefusedRow>,
}

fn transfer_section(report: &TransferReport, axis: SizeAxis) -> TransferSection {
    TransferSection {
        axis: axis.name(),
        views: (report.parameterizations.iter())
            .map(|p| transfer_view(p, report.threshold))
            .collect(),
        refused: (report.refused.iter())
            .map(|r| RefusedRow {
                name: r.parameterization.clone(),
                n_runs: r.n_runs,
                error: r.error.clone(),
            })
            .collect(),
    }
}

struct ScaleRow {
    flops: String,
    optimum: String,
    optimal_loss: String,
    range: String,
    note: String,
    points: usize,
    shapes: usize,
}

struct ToleranceView {
    parameterization: String,
    chart: String,
    scales: Vec<ScaleRow>,
    penalty: String,
    n_runs: usize,
    conclusive: bool,
    warnings: Vec<String>,
    next_runs: Option<String>,
}

fn tolerance_view(p: &ParameterizationTolerance, tolerance: f64) -> ToleranceView {
    let scales = (p.scales.iter())
        .map(|s| {
            let mut notes = Vec::new();
            if !s.from_vertex {
                notes.push("best shape tried".to_string());
            }
            if let Some(edge) = &s.edge {
                notes.push(format!("at the {edge} edge of the shapes"));
            }
            let [low, high] = s.ratio_range;
            let range = format!(
                "{}{} to {}{}",
                if s.range_clipped_low { "≤ " } else { "" },
                fmt_real(low),
                if s.range_clipped_high { "≥ " } else { "" },
                fmt_real(high)
            );
            ScaleRow {
                flops: fmt_sci(s.flops),
                optimum: with_interval(s.optimal_width_depth_ratio, s.ratio_interval, fmt_real),
                optimal_loss: fmt_loss(s.optimal_loss),
                range,
                note: notes.join("; "),
                points: s.points,
                shapes: s.shapes,
            }
        })
        .collect();
    let penalty = match &p.penalty {
        Some(penalty) => format!(
            "L/L* − 1 = {} · (ln(N:L) − ln {})²: within {}% for N:L from {} to {}",
            fmt_real(penalty.curvature),
            fmt_real(penalty.optimal_width_depth_ratio),
            fmt_real(tolerance * 100.0),
            fmt_real(penalty.ratio_range[0]),
            fmt_real(penalty.ratio_range[1])
        ),
        None => "no pooled penalty: the losses do not rise away from any shape".into(),
    };
    ToleranceView {
        parameterization: p.parameterization.clone(),
        chart: chart_or_message(analysis_charts::tolerance_chart(&p.fit)),
        scales,
        penalty,
        n_runs: p.n_runs,
        conclusive: p.conclusive,
        warnings: p.warnings.clone(),
        next_runs: p.next_runs.clone(),
    }
}

struct ToleranceSection {
    tolerance: String,
    views: Vec<ToleranceView>,
    refused: Vec<RefusedRow>,
}

fn tolerance_section(report: &ToleranceReport) -> ToleranceSection {
    ToleranceSection {
        tolerance: fmt_real(report.tolerance * 100.0),
        views: (report.parameterizations.iter())
            .map(|p| tolerance_view(p, report.tolerance))
            .collect(),
        refused: (report.refused.iter())
            .map(|r| RefusedRow {
                name: r.parameterization.clone(),
                n_runs: r.n_runs,
                error: r.error.clone(),
            })
            .collect(),
    }
}

#[derive(Template)]
#[template(path = "analysis.html")]
struct AnalysisTemplate {
    page: Page,
    form: AnalysisForm,
    parameterizations: Vec<SelectOption>,
    axes: Vec<SelectOption>,
    /// Why the form could not be used; empty when it could.
    error: String,
    /// Whether the form selects runs (else only the form is shown).
    selected: bool,
    /// The rendered [`AnalysisSections`].
    sections: String,
    /// For a finished study whose answer is inconclusive: the runs that would conclude it.
    offer: Option<super::studies::ExtensionOffer>,
    /// For another selection whose compute fits lack scales: the planner on the same runs,
    /// which offers to queue them.
    planner_offer: Option<super::studies::ExtensionOffer>,
}

/// The planner on the selection's runs (a sweep or tags) at four times their largest compute,
/// at the runs' most common vocabulary and context, when a compute fit lacks scales: its page
/// lists the runs that would conclude the fits with their estimated time and queues them on
/// confirmation. `None` for selections the planner form cannot express (filters) or fits that
/// lack nothing.
async fn planner_offer(
    state: &AppState,
    form: &AnalysisForm,
    settings: &Settings,
    report: &ComputeReport,
) -> Option<super::studies::ExtensionOffer> {
    let filtered = [&form.parameterization, &form.width, &form.depth]
        .iter()
        .any(|v| !v.is_empty());
    let lacking = report.groups.iter().any(|g| {
        !g.verdict.conclusive && !crate::verdict::scales_to_add(&g.compute_scales).is_empty()
    });
    if filtered || !lacking {
        return None;
    }
    let largest = (report.groups.iter())
        .flat_map(|g| g.compute_scales.iter().copied())
        .fold(0.0, f64::max);
    let runs = crate::web::fits::select_runs(state, settings.query.clone())
        .await
        .ok()?;
    // The indexed column, else an imported run's config, as the planner reads them.
    let most_common = |key: &str, column: fn(&crate::store::RunRecord) -> Option<i64>| {
        let mut counts = std::collections::BTreeMap::new();
        for run in &runs {
            if let Some(value) = column(run).or_else(|| run.config.get(key)?.as_i64()) {
                *counts.entry(value).or_insert(0) += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v)
    };
    let vocab = most_common("vocab", |r| r.vocab)?;
    let context = most_common("context", |r| r.context)?;
    let selection = if form.sweep_id.is_empty() {
        ("tags", form.tags.clone())
    } else {
        ("sweep_id", form.sweep_id.clone())
    };
    let query = serde_urlencoded::to_string([
        ("budget_flops", format!("{:e}", largest * 4.0)),
        ("vocab", vocab.to_string()),
        ("context", context.to_string()),
        (selection.0, selection.1),
    ])
    .ok()?;
    Some(super::studies::ExtensionOffer {
        what: "The compute fits lack scales. The planner on these runs, at 4 times their largest \
               compute, lists the runs that would conclude them with their estimated time."
            .into(),
        href: format!("/planner?{query}"),
    })
}

/// The analysis sections (loss versus compute with savings, LR transfer, width/depth
/// tolerance); `None` leaves a section out.
#[derive(Template)]
#[template(path = "analysis_sections.html")]
struct AnalysisSections {
    resamples: usize,
    compute: Option<Result<ComputeSection, String>>,
    transfer: Option<Result<TransferSection, String>>,
    tolerance: Option<Result<ToleranceSection, String>>,
}

impl AnalysisSections {
    fn html(&self) -> String {
        self.render().unwrap_or_else(|e| {
            tracing::error!("rendering the analysis sections failed: {e}");
            "<p class=\"refusal\">The analysis could not be rendered.</p>".into()
        })
    }
}

/// Which analyses a study page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StudyAnalyses {
    /// LR transfer across depth.
    Transfer,
    /// Loss versus compute with savings, and the width/depth tolerance.
    ComputeEfficiency,
}

/// Runs that would make a study's inconclusive analysis conclusive.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Addition {
    /// Compute scales to add (FLOPs).
    Scales(Vec<f64>),
    /// Another seed of every run: the analysis's interval comes from the scatter of the runs
    /// (the drift's optima, the matched savings' pairs), which more seeds average down.
    Seed,
}

/// What a compute-efficiency analysis lacks: the scales a fit needs for coverage
/// ([`crate::verdict::scales_to_add`], for the group with the fewest); else, when a saving is
/// inconclusive though measured on matched computes, another seed; else, when the fits or a
/// saving are still inconclusive, two scales 4x and 16x above the largest (the far end pins the
/// exponent). `None` when everything is conclusive. `savings` are the section's rows of
/// `report` ([`compute_section`]), not computed again.
fn compute_addition(report: &ComputeReport, savings: &[SavingsRow]) -> Option<Addition> {
    let fewest = report
        .groups
        .iter()
        .min_by_key(|g| g.compute_scales.len())?;
    let coverage = crate::verdict::scales_to_add(&fewest.compute_scales);
    if !coverage.is_empty() {
        return Some(Addition::Scales(coverage));
    }
    if savings
        .iter()
        .any(|row| !row.verdict.conclusive && row.matched)
    {
        return Some(Addition::Seed);
    }
    if report.verdict.conclusive && savings.iter().all(|row| row.verdict.conclusive) {
        return None;
    }
    let largest = report
        .groups
        .iter()
        .flat_map(|g| g.compute_scales.iter().copied())
        .fold(0.0, f64::max);
    Some(Addition::Scales(vec![largest * 4.0, largest * 16.0]))
}

/// The analysis sections of a study's runs, with the default settings (as the analysis page
/// without a form), and what would make them conclusive.
pub(super) async fn study_sections(
    state: &AppState,
    query: crate::store::RunQuery,
    which: StudyAnalyses,
) -> (String, Option<Addition>) {
    let bootstrap = BootstrapOptions {
        resamples: DEFAULT_PAGE_RESAMPLES,
        ..BootstrapOptions::default()
    };
    let mut sections = AnalysisSections {
        resamples: DEFAULT_PAGE_RESAMPLES,
        compute: None,
        transfer: None,
        tolerance: None,
    };
    let mut addition = None;
    match which {
        StudyAnalyses::Transfer => {
            let options = TransferReportOptions {
                bootstrap,
                ..TransferReportOptions::default()
            };
            let report = transfer_report(state, query, options).await;
            if report.as_ref().is_ok_and(|r| !r.conclusive) {
                addition = Some(Addition::Seed);
            }
            sections.transfer = Some(
                (report.as_ref())
                    .map(|r| transfer_section(r, SizeAxis::Depth))
                    .map_err(refusal),
            );
        }
        StudyAnalyses::ComputeEfficiency => {
            let compute_options = ComputeOptions {
                by_parameterization: true,
                bootstrap,
            };
            let tolerance_options = ToleranceReportOptions {
                bootstrap,
                ..ToleranceReportOptions::default()
            };
            let (compute, tolerance) = tokio::join!(
                compute_report(state, query.clone(), compute_options),
                tolerance_report(state, query, tolerance_options),
            );
            let section = compute.as_ref().map(compute_section);
            if let (Ok(report), Ok(section)) = (&compute, &section) {
                addition = compute_addition(report, &section.savings);
            }
            sections.compute = Some(section.map_err(refusal));
            sections.tolerance = Some(tolerance.as_ref().map(tolerance_section).map_err(refusal));
        }
    }
    (sections.html(), addition)
}

/// When the selection is a finished study: the offer of the runs that would conclude its
/// inconclusive answer, as on the study page (another seed for a transfer drift; compute
/// scales or a seed for a compute-efficiency study, see [`compute_addition`]).
async fn study_offer(
    state: &AppState,
    sweep_id: i64,
    compute: Option<(&ComputeReport, &ComputeSection)>,
    transfer: Option<&crate::web::analysis::TransferReport>,
) -> Option<super::studies::ExtensionOffer> {
    let (sweep, total, finished) = state
        .store
        .sweeps()
        .await
        .ok()?
        .into_iter()
        .find(|(s, _, _)| s.id == sweep_id)?;
    if total == 0 || finished < total {
        return None;
    }
    let kind = crate::study::StudyKind::parse(&sweep.kind)?;
    let addition = match kind {
        crate::study::StudyKind::ComputeEfficiency => {
            let (report, section) = compute?;
            compute_addition(report, &section.savings)?
        }
        crate::study::StudyKind::DepthTransfer => {
            (!transfer?.conclusive).then_some(Addition::Seed)?
        }
        crate::study::StudyKind::CoordCheck => return None,
    };
    let size = sweep.spec["size"].as_str().unwrap_or("default");
    super::studies::extension_offer(kind, &sweep.spec["settings"], size, &addition)
}

/// `GET /analysis`.
async fn analysis_page(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) =
        query.map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let form = AnalysisForm::from_params(&params);
    let mut choices = vec![("", "any")];
    choices.extend(PARAMETERIZATIONS);
    let parameterizations = options(&choices, &form.parameterization);
    let axes = options(
        &[("depth", "depth"), ("width", "width")],
        if form.axis.is_empty() {
            "depth"
        } else {
            &form.axis
        },
    );
    let mut template = AnalysisTemplate {
        page: Page::new("Analysis", "analysis"),
        form: form.clone(),
        parameterizations,
        axes,
        error: String::new(),
        selected: form.selects(),
        sections: String::new(),
        offer: None,
        planner_offer: None,
    };
    if !template.selected {
        return render(StatusCode::OK, &template);
    }
    let settings = match parse_form(&form) {
        Ok(settings) => settings,
        Err(error) => {
            template.error = error.to_string();
            template.selected = false;
            return render(StatusCode::BAD_REQUEST, &template);
        }
    };
    let compute_options = ComputeOptions {
        by_parameterization: true,
        bootstrap: settings.bootstrap,
    };
    let transfer_options = TransferReportOptions {
        axis: settings.axis,
        threshold: settings.threshold,
        bootstrap: settings.bootstrap,
    };
    let tolerance_options = ToleranceReportOptions {
        tolerance: settings.tolerance,
        bootstrap: settings.bootstrap,
        ..ToleranceReportOptions::default()
    };
    let (compute, transfer, tolerance) = tokio::join!(
        compute_report(&state, settings.query.clone(), compute_options),
        transfer_report(&state, settings.query.clone(), transfer_options),
        tolerance_report(&state, settings.query.clone(), tolerance_options),
    );
    let section = compute.as_ref().map(compute_section);
    template.offer = match form.sweep_id.trim().parse::<i64>() {
        Ok(id) => {
            let compute = compute.as_ref().ok().zip(section.as_ref().ok());
            study_offer(&state, id, compute, transfer.as_ref().ok()).await
        }
        Err(_) => None,
    };
    if template.offer.is_none()
        && let Ok(report) = &compute
    {
        template.planner_offer = planner_offer(&state, &form, &settings, report).await;
    }
    template.sections = AnalysisSections {
        resamples: settings.bootstrap.resamples,
        compute: Some(section.map_err(refusal)),
        transfer: Some(
            (transfer.as_ref())
                .map(|r| transfer_section(r, settings.axis))
                .map_err(refusal),
        ),
        tolerance: Some(tolerance.as_ref().map(tolerance_section).map_err(refusal)),
    }
    .html();
    render(StatusCode::OK, &template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_into_queries_and_settings() {
        let params: Vec<(String, String)> = [
            ("tags", "a, b"),
            ("parameterization", "mup"),
            ("depth", "in:2,4"),
            ("axis", "width"),
            ("tolerance", "2"),
            ("resamples", "50"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let form = AnalysisForm::from_params(&params);
        assert!(form.selects());
        let settings = parse_form(&form).unwrap();
        assert_eq!(settings.query.tags, ["a", "b"]);
        assert_eq!(settings.query.conditions.len(), 2);
        assert_eq!(settings.axis, SizeAxis::Width);
        assert!((settings.tolerance - 0.02).abs() < 1e-12);
        assert_eq!(settings.bootstrap.resamples, 50);
        assert_eq!(settings.threshold, DEFAULT_DRIFT_THRESHOLD);

        for (key, value) in [
            ("sweep_id", "three"),
            ("axis", "height"),
            ("threshold", "-1"),
            ("resamples", "100000"),
            ("width", "wide"),
        ] {
            let form = AnalysisForm::from_params(&[(key.to_string(), value.to_string())]);
            assert!(parse_form(&form).is_err(), "{key}={value}");
        }
        assert!(!AnalysisForm::default().selects());
    }
}
