//! `/api/v1/fits` and `/api/v1/analysis`: scaling-law fits of stored runs (section 6 of the
//! CompleteP spec) — the Chinchilla surface `L(N, D)`, loss-versus-compute curves `L(C)` per
//! group, and FLOP savings at matched loss between two parameterizations.
//!
//! Every endpoint takes a run `selection` in its JSON body (run ids, a sweep, tags, or the
//! filters of `GET /api/v1/runs`); only `succeeded` runs carrying the numbers a fit needs are
//! used. The maths is [`crate::fit`]; it runs on the blocking pool, and its refusals (too few
//! scales, unreachable loss, ...) answer 422 with the reason.
//!
//! The pages share the handlers' logic: [`compute_report`] fits every group on its compute
//! frontier, with one shared `E` when the runs name the same data (see
//! [`crate::fit::frontier`]), with its goodness of fit (relative residuals, RMSE of the
//! log-loss, `R^2`), its verdict ([`crate::verdict`]) and the bootstrap curves for confidence
//! bands; [`savings_between`] reads FLOP savings off two fitted groups, and [`savings_report`]
//! is the savings endpoint, read off the same report so that the page and the endpoint agree.
//! The bootstrap is seeded by the request's seed mixed with the names of the groups fitted
//! together.

use super::AppState;
use super::body::{as_bad_request, json_body};
use super::error::ApiError;
use super::runs::parse_run_query;
use crate::data::{Corpus, DataSource};
use crate::fit::frontier::{
    EBound, MIN_FRONTIER_SCALES, bootstrap_frontiers, compute_scales, fit_frontiers,
};
use crate::fit::matched::matched_savings;
use crate::fit::{
    BootstrapOptions, FitError, FitOptions, Interval, PowerLaw, bootstrap_chinchilla,
    fit_chinchilla, flop_savings, power_law_goodness,
};
use crate::numbers::significant;
use crate::param::Parameterization;
use crate::rng::mix64;
use crate::store::{Comparison, Condition, FilterValue, RunQuery, RunRecord, StoredStatus};
use crate::verdict::Verdict;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/fits/chinchilla", post(chinchilla_fit))
        .route("/api/v1/fits/compute", post(compute_fit))
        .route("/api/v1/analysis/savings", post(savings_analysis))
}

/// The most runs one selection may hold.
pub(crate) const MAX_SELECTED_RUNS: i64 = 10_000;
/// The most tags a selection by tags may name.
pub(crate) const MAX_SELECTED_TAGS: usize = 100;
/// The most values a list of one filter of a selection may hold (each is a condition, ANDed:
/// a bound, a second bound, an exclusion).
pub(crate) const MAX_FILTER_VALUES: usize = 4;
/// The largest seed (seeds are stored as SQLite integers).
pub(crate) const MAX_SEED: u64 = i64::MAX as u64;
/// Runs read from the store per page.
const PAGE: i64 = 1000;
/// The most bootstrap resamples one request may ask for.
pub(crate) const MAX_RESAMPLES: u64 = 5000;

// ---------------------------------------------------------------------------------------------
// Body parsing

/// The runs an analysis uses: exactly one of `run_ids`, `sweep_id`, `tags` (runs carrying all
/// of them) or `filters` (the filters of `GET /api/v1/runs` as an object, e.g.
/// `{"parameterization": "in:mup,completep", "width": "ge:256"}`; no `sort`, `limit` or
/// `offset`). Only `succeeded` runs with the numbers the fit needs are used, at most 10000.
/// (Described in full by the document: an object with exactly one of the four.)
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = json!({"tags": ["chinchilla"]}))]
pub(crate) enum RunSelection {
    RunIds(Vec<i64>),
    SweepId(i64),
    Tags(Vec<String>),
    Filters(SelectionFilters),
}

/// The filters of a selection: the filters of `GET /api/v1/runs` as an object, each a
/// string as in the query (an empty one is ignored), a number, or a list of those (ANDed,
/// at most 4). `tag` requires a tag. (The document lists every column.)
#[derive(Debug, Deserialize, ToSchema)]
#[schema(
    as = RunFilterValues,
    value_type = Object,
    example = json!({"parameterization": "in:mup,completep", "width": "ge:256"})
)]
pub(crate) struct SelectionFilters(Map<String, Value>);

impl RunSelection {
    /// The store query of the selection.
    pub(crate) fn query(self) -> Result<RunQuery, ApiError> {
        let bad = |kind: &str, what: &str| {
            ApiError::BadRequest(format!("selection '{kind}' must be {what}"))
        };
        match self {
            RunSelection::RunIds(ids) => {
                if ids.is_empty() || ids.len() > MAX_SELECTED_RUNS as usize {
                    return Err(bad(
                        "run_ids",
                        &format!("a list of 1 to {MAX_SELECTED_RUNS} run ids"),
                    ));
                }
                Ok(RunQuery {
                    conditions: vec![Condition {
                        column: "id",
                        comparison: Comparison::In,
                        values: ids.into_iter().map(FilterValue::Int).collect(),
                    }],
                    ..RunQuery::default()
                })
            }
            RunSelection::SweepId(id) => Ok(RunQuery {
                conditions: vec![Condition {
                    column: "sweep_id",
                    comparison: Comparison::Eq,
                    values: vec![FilterValue::Int(id)],
                }],
                ..RunQuery::default()
            }),
            RunSelection::Tags(tags) => {
                if tags.is_empty() || tags.len() > MAX_SELECTED_TAGS {
                    return Err(bad(
                        "tags",
                        &format!(
                            "a list of 1 to {MAX_SELECTED_TAGS} tags (a run must carry all of them)"
                        ),
                    ));
                }
                Ok(RunQuery {
                    tags,
                    ..RunQuery::default()
                })
            }
            RunSelection::Filters(SelectionFilters(filters)) => filter_query(filters),
        }
    }
}

/// The query of a selection's `filters`: each a string as in the query string, a number, or a
/// list of those (at most [`MAX_FILTER_VALUES`]), read by the runs listing's own parser.
fn filter_query(filters: Map<String, Value>) -> Result<RunQuery, ApiError> {
    let mut pairs = Vec::new();
    for (key, value) in filters {
        if ["sort", "limit", "offset"].contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "'{key}' is not a filter: a selection holds every matching run"
            )));
        }
        let values = match value {
            Value::Array(values) if values.len() > MAX_FILTER_VALUES => {
                return Err(ApiError::BadRequest(format!(
                    "filter '{key}' lists more than {MAX_FILTER_VALUES} values"
                )));
            }
            Value::Array(values) => values,
            single => vec![single],
        };
        for value in values {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n)
                    if super::runs::column_kind(&key) == super::runs::ColumnKind::Integer
                        && n.as_i64().is_none() =>
                {
                    return Err(ApiError::BadRequest(format!(
                        "filter '{key}' needs an integer (64-bit), got {n}"
                    )));
                }
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "filter '{key}' must be a string or a number"
                    )));
                }
            };
            pairs.push((key.clone(), text));
        }
    }
    parse_run_query(pairs)
}

/// The bootstrap settings every fit request takes, each checked against its range (400 naming
/// the field): `resamples` (at most [`MAX_RESAMPLES`], 1000 by default), `seed` (at most
/// [`MAX_SEED`], 0 by default) and `confidence` (in (0, 1), 0.95 by default).
pub(crate) fn bootstrap_options(
    resamples: Option<u64>,
    seed: Option<u64>,
    confidence: Option<f64>,
) -> Result<BootstrapOptions, ApiError> {
    let resamples = resamples.unwrap_or(1000);
    if resamples > MAX_RESAMPLES {
        return Err(ApiError::BadRequest(format!(
            "'resamples' must be an integer in [0, {MAX_RESAMPLES}]"
        )));
    }
    let seed = seed.unwrap_or(0);
    if seed > MAX_SEED {
        return Err(ApiError::BadRequest(format!(
            "'seed' must be an integer in [0, {MAX_SEED}]"
        )));
    }
    let confidence = confidence.unwrap_or(0.95);
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(ApiError::BadRequest(
            "'confidence' must be a number strictly between 0 and 1".into(),
        ));
    }
    Ok(BootstrapOptions {
        resamples: resamples as usize,
        seed,
        confidence,
    })
}

// ---------------------------------------------------------------------------------------------
// Selecting runs

/// Every succeeded run the query matches (at most [`MAX_SELECTED_RUNS`]), by id.
pub(crate) async fn select_runs(
    state: &AppState,
    query: RunQuery,
) -> Result<Vec<RunRecord>, ApiError> {
    select_runs_with_status(state, query, &[StoredStatus::Succeeded]).await
}

/// Every run the query matches whose status is one of `statuses` (at most
/// [`MAX_SELECTED_RUNS`]), by id.
pub(crate) async fn select_runs_with_status(
    state: &AppState,
    mut query: RunQuery,
    statuses: &[StoredStatus],
) -> Result<Vec<RunRecord>, ApiError> {
    query.conditions.push(Condition {
        column: "status",
        comparison: Comparison::In,
        values: (statuses.iter())
            .map(|s| FilterValue::Text(s.name().into()))
            .collect(),
    });
    query.sort = "id";
    query.descending = false;
    query.limit = PAGE;
    query.offset = 0;
    let names: Vec<&str> = statuses.iter().map(|s| s.name()).collect();
    let mut runs = Vec::new();
    loop {
        let (page, total) = state.store.runs(&query).await?;
        if total > MAX_SELECTED_RUNS {
            return Err(ApiError::Unprocessable(format!(
                "the selection holds {total} {} runs: at most {MAX_SELECTED_RUNS} can be fitted",
                names.join(" or ")
            )));
        }
        let last = (page.len() as i64) < PAGE;
        runs.extend(page);
        if last || runs.len() as i64 >= total {
            return Ok(runs);
        }
        query.offset += PAGE;
    }
}

/// The final loss of a run: validation if measured, else training.
pub(crate) fn final_loss(run: &RunRecord) -> Option<f64> {
    run.final_val_loss.or(run.final_train_loss)
}

/// A fit refusal as a 422, naming the run rather than its index among the fitted points.
fn refusal(error: FitError, run_ids: &[i64]) -> String {
    match error {
        FitError::InvalidPoint {
            index,
            quantity,
            value,
        } => match run_ids.get(index) {
            Some(id) => format!("run {id}: {quantity} must be positive and finite, got {value}"),
            None => error.to_string(),
        },
        other => other.to_string(),
    }
}

/// Runs a fit on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("fit task failed: {e}")))?
}

/// A percentile interval `[low, high]`; its schema is that of every `[f64; 2]` interval of the
/// API.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
#[schema(value_type = Vec<f64>, example = json!([1.78, 1.86]))]
pub(crate) struct Bounds(pub [f64; 2]);

impl From<&Interval> for Bounds {
    fn from(interval: &Interval) -> Bounds {
        Bounds(bounds(interval))
    }
}

fn bounds(interval: &Interval) -> [f64; 2] {
    [interval.low, interval.high]
}

// ---------------------------------------------------------------------------------------------
// Loss against compute: the report the endpoint and the pages share

/// How the runs of a compute report are grouped and bootstrapped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ComputeOptions {
    /// One fit per parameterization (else one over all runs, group `all`).
    pub by_parameterization: bool,
    /// `resamples: 0` fits once, without intervals.
    pub bootstrap: BootstrapOptions,
}

impl Default for ComputeOptions {
    fn default() -> Self {
        ComputeOptions {
            by_parameterization: true,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// Bootstrap intervals `[low, high]` of a compute curve's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct PowerLawBounds {
    #[serde(rename = "E")]
    #[schema(value_type = Bounds)]
    pub e: [f64; 2],
    #[serde(rename = "A")]
    #[schema(value_type = Bounds)]
    pub a: [f64; 2],
    #[schema(value_type = Bounds)]
    pub b: [f64; 2],
}

/// One run of a compute fit, against the fitted curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ComputeResidual {
    pub run_id: i64,
    /// Training FLOPs.
    pub flops: f64,
    /// Final loss (validation, else training; nats/token).
    pub loss: f64,
    /// `L(C)` of the fitted curve at the run's FLOPs.
    pub fitted: f64,
    /// `(loss - fitted) / fitted`.
    pub relative_residual: f64,
    /// Whether the run is its compute scale's best, one of the points fitted.
    pub on_frontier: bool,
}

/// The curve `L(C) = E + A C^-b` of one group (`C` in FLOPs) fitted on its compute frontier,
/// how well it fits, and whether its runs support it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ComputeGroupFit {
    /// The parameterization, or `all`.
    pub group: String,
    /// Irreducible loss (nats/token).
    #[serde(rename = "E")]
    pub e: f64,
    #[serde(rename = "A")]
    pub a: f64,
    pub b: f64,
    /// `null` with `resamples: 0`.
    pub intervals: Option<PowerLawBounds>,
    /// Whether `E` is shared with the other groups of the report (they were trained on the
    /// same data, so their irreducible loss is the same).
    pub shared_e: bool,
    /// The data's known entropy floor (nats/token), the lower bound of `E`; `null` when
    /// unknown (then 0 is the bound).
    pub floor: Option<f64>,
    /// Set when `E` sits on a bound: `floor` or `lowest_loss`.
    #[schema(value_type = Option<String>)]
    pub e_bound: Option<EBound>,
    pub n_runs: usize,
    /// FLOPs of each compute scale's best run (the frontier), increasing.
    pub compute_scales: Vec<f64>,
    /// Every run, in id order, with its relative residual.
    pub residuals: Vec<ComputeResidual>,
    /// Root-mean-square of `ln loss - ln fitted` over the frontier runs.
    pub rmse_log_loss: f64,
    /// `1 - SS_res / SS_tot` of the frontier runs' loss; `null` when every loss is equal.
    pub r_squared: Option<f64>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The confidence level of the intervals.
    #[serde(skip)]
    pub confidence: f64,
    /// The curve fitted to every bootstrap resample (empty without resamples): confidence bands
    /// and savings intervals come from these. Groups fitted together pair by index.
    #[serde(skip)]
    pub curves: Vec<PowerLaw>,
}

impl ComputeGroupFit {
    /// The fitted curve.
    pub fn curve(&self) -> PowerLaw {
        PowerLaw {
            e: self.e,
            a: self.a,
            b: self.b,
        }
    }
}

/// A group the fit refused.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ComputeRefusal {
    pub group: String,
    pub n_runs: usize,
    /// Why, e.g. too few distinct compute scales.
    pub error: String,
}

/// One fit per group, and the groups that could not be fitted.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct ComputeReport {
    pub groups: Vec<ComputeGroupFit>,
    pub refused: Vec<ComputeRefusal>,
    /// Whether the groups share one `E` (every run of the selection names the same data).
    pub shared_e: bool,
    /// The findings of every group together.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The bootstrap seed of a fit: the request's seed mixed with the names of the groups fitted
/// together, so that a group's interval does not depend on groups fitted apart from it.
fn group_seed(seed: u64, group: &str) -> u64 {
    // FNV-1a of the name.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(seed ^ hash)
}

/// One group's runs: ids and `(FLOPs, loss)` points.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupRuns {
    pub ids: Vec<i64>,
    pub points: Vec<(f64, f64)>,
}

/// Fits the frontiers of `groups`: together with one shared `E` when they come from the same
/// data, else each with its own (see [`fit_groups_jointly`]).
pub(crate) fn fit_groups(
    groups: &[(String, GroupRuns)],
    same_data: bool,
    floor: Option<f64>,
    bootstrap: &BootstrapOptions,
) -> (Vec<ComputeGroupFit>, Vec<ComputeRefusal>) {
    if same_data {
        return fit_groups_jointly(groups, floor, true, bootstrap);
    }
    let mut all = (Vec::new(), Vec::new());
    for group in groups {
        let (fits, refused) =
            fit_groups_jointly(std::slice::from_ref(group), floor, false, bootstrap);
        all.0.extend(fits);
        all.1.extend(refused);
    }
    all
}

/// Fits the frontiers of `groups` jointly with one `E` bounded below by `floor` (see
/// [`crate::fit::frontier`]), bootstrapped when `resamples > 0`; a group the fit cannot take
/// (fewer than 3 compute scales) is refused alone, the rest are fitted together.
fn fit_groups_jointly(
    groups: &[(String, GroupRuns)],
    floor: Option<f64>,
    shared: bool,
    bootstrap: &BootstrapOptions,
) -> (Vec<ComputeGroupFit>, Vec<ComputeRefusal>) {
    let mut refused = Vec::new();
    let mut fitted: Vec<&(String, GroupRuns)> = Vec::new();
    for group in groups {
        let flops: Vec<f64> = group.1.points.iter().map(|p| p.0).collect();
        let scales = compute_scales(&flops).len();
        if scales < MIN_FRONTIER_SCALES {
            refused.push(ComputeRefusal {
                group: group.0.clone(),
                n_runs: flops.len(),
                error: FitError::TooFewScales {
                    quantity: "compute scales",
                    needed: MIN_FRONTIER_SCALES,
                    got: scales,
                }
                .to_string(),
            });
        } else {
            fitted.push(group);
        }
    }
    if fitted.is_empty() {
        return (Vec::new(), refused);
    }
    let names: Vec<&str> = fitted.iter().map(|g| g.0.as_str()).collect();
    let points: Vec<&[(f64, f64)]> = fitted.iter().map(|g| g.1.points.as_slice()).collect();
    let lower = floor.unwrap_or(0.0);
    let outcome = if bootstrap.resamples == 0 {
        fit_frontiers(&points, lower).map(|fit| (fit, None))
    } else {
        let seeded = BootstrapOptions {
            seed: group_seed(bootstrap.seed, &names.join("\u{1f}")),
            ..*bootstrap
        };
        bootstrap_frontiers(&points, lower, &seeded).map(|b| (b.fit.clone(), Some(b)))
    };
    let (fit, boot) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            for (name, runs) in fitted {
                refused.push(ComputeRefusal {
                    group: name.clone(),
                    n_runs: runs.points.len(),
                    error: refusal(error.clone(), &runs.ids),
                });
            }
            return (Vec::new(), refused);
        }
    };
    let mut fits = Vec::with_capacity(fitted.len());
    for (k, (name, runs)) in fitted.into_iter().enumerate() {
        let curve = fit.curves[k];
        let frontier = &fit.frontiers[k];
        let frontier_points: Vec<(f64, f64)> = frontier.iter().map(|&i| runs.points[i]).collect();
        let goodness = power_law_goodness(&curve, &frontier_points);
        let residuals = (runs.ids.iter().zip(&runs.points).enumerate())
            .map(|(i, (&run_id, &(flops, loss)))| {
                let fitted = curve.loss(flops);
                ComputeResidual {
                    run_id,
                    flops,
                    loss,
                    fitted,
                    relative_residual: (loss - fitted) / fitted,
                    on_frontier: frontier.contains(&i),
                }
            })
            .collect();
        let compute_scales: Vec<f64> = frontier_points.iter().map(|p| p.0).collect();
        let mut verdict = Verdict::new();
        verdict.check_coverage(&compute_scales);
        match fit.e_bound {
            Some(EBound::Floor) => verdict.warn(match floor {
                Some(f) => format!(
                    "E sits on the data's entropy floor ({}): the runs do not pin the \
                     irreducible loss",
                    significant(f)
                ),
                None => "E sits on its lower bound 0: the runs do not pin the irreducible loss"
                    .to_string(),
            }),
            Some(EBound::LowestLoss) => verdict.warn(format!(
                "E sits just below the lowest loss observed ({}): the curves have not started \
                 to bend, so the irreducible loss is not identified",
                significant(fit.lowest_loss)
            )),
            None => {}
        }
        let (intervals, curves) = match &boot {
            Some(b) => (
                Some(PowerLawBounds {
                    e: bounds(&b.e),
                    a: bounds(&b.a[k]),
                    b: bounds(&b.b[k]),
                }),
                b.resamples.iter().map(|r| r[k]).collect(),
            ),
            None => (None, Vec::new()),
        };
        fits.push(ComputeGroupFit {
            group: name.clone(),
            e: curve.e,
            a: curve.a,
            b: curve.b,
            intervals,
            shared_e: shared && points.len() > 1,
            floor,
            e_bound: fit.e_bound,
            n_runs: runs.points.len(),
            compute_scales,
            residuals,
            rmse_log_loss: goodness.rmse_log_loss,
            r_squared: goodness.r_squared,
            verdict,
            confidence: bootstrap.confidence,
            curves,
        });
    }
    (fits, refused)
}

/// Fits loss against compute per group of the selected succeeded runs (see
/// `POST /api/v1/fits/compute`): on each group's compute frontier, with one `E` shared by all
/// groups when every run names the same data, bounded below by the data's entropy floor when
/// it is known. Groups the fit refuses are listed with the reason; a selection without any run
/// carrying FLOPs and a final loss is refused (422).
pub(crate) async fn compute_report(
    state: &AppState,
    query: RunQuery,
    options: ComputeOptions,
) -> Result<ComputeReport, ApiError> {
    let runs = select_runs(state, query).await?;
    let groups = compute_groups(&runs, options.by_parameterization);
    if groups.is_empty() {
        return Err(ApiError::Unprocessable(
            "the selection has no succeeded runs with FLOPs and a final loss".into(),
        ));
    }
    let bootstrap = options.bootstrap;
    let data = DataOfRuns::of(&runs);
    blocking(move || {
        let groups: Vec<(String, GroupRuns)> = groups.into_iter().collect();
        let (fits, refused) = fit_groups(&groups, data.same, data.floor(), &bootstrap);
        let mut verdict = Verdict::new();
        if fits.is_empty() {
            verdict.inconclusive("no group could be fitted");
        }
        if !data.same {
            verdict.warn(
                "the runs come from different data, so each group has an irreducible loss of its \
                 own; compare groups trained on the same data",
            );
        }
        for fit in &fits {
            verdict.absorb(&fit.group, &fit.verdict);
        }
        Ok(ComputeReport {
            shared_e: data.same && fits.len() > 1,
            groups: fits,
            refused,
            verdict,
        })
    })
    .await
}

/// What the selected runs say about their data (read from their records, no IO).
pub(crate) struct DataOfRuns {
    /// Every run names the same data (`dataset`), or none names any.
    pub same: bool,
    /// That data when it is the built-in corpus, whose entropy floor is known.
    builtin: Option<DataSource>,
    /// The runs' distinct `(context, val_sequences)`: the validation sets the floor is measured on.
    settings: BTreeSet<(usize, usize)>,
}

impl DataOfRuns {
    /// At most this many distinct `(context, val_sequences)` settings are measured.
    const MAX_SETTINGS: usize = 8;

    pub fn of(runs: &[RunRecord]) -> DataOfRuns {
        let datasets: BTreeSet<Option<&str>> = runs.iter().map(|r| r.dataset.as_deref()).collect();
        let same = datasets.len() <= 1;
        let builtin = same.then(|| runs.first()).flatten().and_then(|run| {
            let data: DataSource = serde_json::from_value(run.config.get("data")?.clone()).ok()?;
            matches!(data, DataSource::Builtin { .. }).then_some(data)
        });
        let settings = runs
            .iter()
            .filter_map(|r| {
                let number = |key| r.config.get(key)?.as_u64().map(|v| v as usize);
                Some((number("context")?, number("val_sequences")?))
            })
            .collect();
        DataOfRuns {
            same,
            builtin,
            settings,
        }
    }

    /// The data's entropy floor (nats/token) when every run trained on the same built-in
    /// corpus: the lowest floor over the runs' validation sets, less two standard errors. It
    /// generates those sets: call it on the blocking pool.
    pub fn floor(&self) -> Option<f64> {
        let data = self.builtin.as_ref()?;
        if self.settings.is_empty() || self.settings.len() > Self::MAX_SETTINGS {
            return None;
        }
        self.settings
            .iter()
            .map(|&(context, sequences)| {
                let floor = Corpus::open(data, context).ok()?.entropy_floor(sequences)?;
                Some(floor.nats_per_token - 2.0 * floor.standard_error)
            })
            .try_fold(f64::INFINITY, |low, f| Some(low.min(f?)))
            .filter(|f| f.is_finite() && *f > 0.0)
    }
}

/// Each group's runs, groups by name.
fn compute_groups(runs: &[RunRecord], by_parameterization: bool) -> BTreeMap<String, GroupRuns> {
    let mut groups: BTreeMap<String, GroupRuns> = BTreeMap::new();
    for run in runs {
        let (Some(flops), Some(loss)) = (run.flops, final_loss(run)) else {
            continue;
        };
        let name = if by_parameterization {
            run.parameterization.clone()
        } else {
            "all".into()
        };
        let group = groups.entry(name).or_default();
        group.ids.push(run.id);
        group.points.push((flops, loss));
    }
    groups
}

// ---------------------------------------------------------------------------------------------
// FLOP savings at matched loss

/// Where the loss of a savings comparison came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LossSource {
    /// The request gave it.
    Given,
    /// The midpoint of the range of final losses both groups observed.
    OverlapMidpoint,
}

/// How the headline savings were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SavingsMethod {
    /// From the runs both sides trained at the same FLOPs ([`crate::fit::matched`]).
    MatchedCompute,
    /// Read off the two fitted curves at one loss.
    Curves,
}

/// Savings from runs matched at equal compute: at each compute both trained, the
/// baseline's loss minus the candidate's, worth `exp(dL / sigma)` times the baseline's
/// compute with `sigma = -dL/d ln C` of its fitted frontier; averaged in log.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct MatchedView {
    /// Computes trained by both.
    pub computes: usize,
    /// The smallest and largest matched compute (FLOPs).
    #[schema(value_type = Bounds)]
    pub compute_range: [f64; 2],
    /// Mean log compute ratio `r`; the savings are `1 - exp(-r)`.
    pub log_ratio: f64,
    /// Standard error of `r` from the scatter of the pairs.
    pub se_pairs: f64,
    /// Standard error of `r` from the baseline slope's bootstrap.
    pub se_slope: f64,
    /// Mean loss difference (baseline minus candidate, nats/token) per matched compute.
    pub loss_differences: Vec<f64>,
}

/// FLOP savings of one fitted group over another: from the runs matched at equal compute when
/// there are at least [`crate::fit::matched::MIN_MATCHED_COMPUTES`] such computes, else read
/// off the two fitted curves at one loss (both readings are kept).
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct Savings {
    /// The share of the baseline's FLOPs the candidate does without (0.2: 20% fewer FLOPs;
    /// negative: more), by `method`.
    pub savings: f64,
    /// Its interval; `null` when the curves are the method and have no resamples reaching the
    /// loss.
    #[schema(value_type = Option<Bounds>)]
    pub interval: Option<[f64; 2]>,
    pub method: SavingsMethod,
    /// The matched-compute estimate; `null` with fewer than 4 computes trained by both.
    pub matched: Option<MatchedView>,
    /// `1 - C_candidate(L) / C_baseline(L)` off the fitted curves.
    pub curve_savings: f64,
    /// Percentile interval of `curve_savings` from the resample curves paired by index; `None`
    /// without resamples or when no pair reaches the loss.
    #[schema(value_type = Option<Bounds>)]
    pub curve_interval: Option<[f64; 2]>,
    /// The loss the curves are compared at.
    pub loss: f64,
    pub loss_source: LossSource,
    /// Resample pairs left out because a curve never reaches the loss.
    pub unreachable_resamples: usize,
    /// `conclusive` is `false` when the runs cannot support the savings (see `warnings`): an
    /// interval wider than ±10 points or spanning 0, fewer than 4 compute scales or less than a
    /// decade, or either curve's own findings.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The savings of `candidate` over `baseline` at `loss`, or at the midpoint of the range of
/// final losses both observed; a refusal is its message (ranges that do not overlap, a loss a
/// curve never reaches).
pub(crate) fn savings_between(
    candidate: &ComputeGroupFit,
    baseline: &ComputeGroupFit,
    loss: Option<f64>,
) -> Result<Savings, String> {
    let (loss, loss_source) = match loss {
        Some(loss) => (loss, LossSource::Given),
        None => {
            let range = |fit: &ComputeGroupFit| {
                let losses = fit.residuals.iter().map(|r| r.loss);
                (
                    losses.clone().fold(f64::INFINITY, f64::min),
                    losses.fold(f64::NEG_INFINITY, f64::max),
                )
            };
            let ((cand_low, cand_high), (base_low, base_high)) =
                (range(candidate), range(baseline));
            let (low, high) = (cand_low.max(base_low), cand_high.min(base_high));
            if low > high {
                return Err(format!(
                    "the observed losses do not overlap ({}: {cand_low} to {cand_high}, \
                     {}: {base_low} to {base_high}): give 'loss'",
                    candidate.group, baseline.group
                ));
            }
            ((low + high) / 2.0, LossSource::OverlapMidpoint)
        }
    };
    let savings =
        flop_savings(&candidate.curve(), &baseline.curve(), loss).map_err(|e| e.to_string())?;
    // Resample i of one curve against resample i of the other.
    let values: Vec<f64> = (candidate.curves.iter().zip(&baseline.curves))
        .filter_map(|(c, b)| flop_savings(c, b, loss).ok())
        .collect();
    let paired = candidate.curves.len().min(baseline.curves.len());
    let unreachable = paired - values.len();
    let interval = (!values.is_empty()).then(|| {
        bounds(&Interval::from_resamples(
            savings,
            values,
            candidate.confidence,
        ))
    });
    let runs = |fit: &ComputeGroupFit| -> Vec<(f64, f64)> {
        fit.residuals.iter().map(|r| (r.flops, r.loss)).collect()
    };
    let matched = matched_savings(
        &runs(candidate),
        &runs(baseline),
        &baseline.curve(),
        &baseline.curves,
        candidate.confidence,
    );
    let (headline, headline_interval, method) = match &matched {
        Some(m) => (
            m.savings,
            Some([m.interval.low, m.interval.high]),
            SavingsMethod::MatchedCompute,
        ),
        None => (savings, interval, SavingsMethod::Curves),
    };
    let mut verdict = Verdict::new();
    verdict.check_savings_interval(headline_interval);
    if method == SavingsMethod::Curves && paired > 0 && unreachable * 20 > paired {
        verdict.warn(format!(
            "{unreachable} of {paired} resamples never reach the loss {}: the interval leaves \
             them out",
            significant(loss)
        ));
    }
    if !(candidate.shared_e && baseline.shared_e) {
        verdict.warn("the two curves were fitted with separate irreducible losses");
    }
    verdict.absorb(&candidate.group, &candidate.verdict);
    verdict.absorb(&baseline.group, &baseline.verdict);
    // After the fits' own suggestions (compute scales for coverage come first).
    if method == SavingsMethod::MatchedCompute && !verdict.conclusive {
        verdict.suggest(
            "train another seed of the runs both parameterizations trained at the same \
             compute (the interval narrows as one over the square root of the runs)",
        );
    }
    Ok(Savings {
        savings: headline,
        interval: headline_interval,
        method,
        matched: matched.map(|m| MatchedView {
            computes: m.computes.len(),
            compute_range: [m.computes[0], m.computes[m.computes.len() - 1]],
            log_ratio: m.log_ratio,
            se_pairs: m.se_pairs,
            se_slope: m.se_slope,
            loss_differences: m.loss_differences,
        }),
        curve_savings: savings,
        curve_interval: interval,
        loss,
        loss_source,
        unreachable_resamples: unreachable,
        verdict,
    })
}

/// What a savings comparison compares.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SavingsOptions {
    /// The candidate parameterization's name.
    pub candidate: String,
    /// The baseline parameterization's name.
    pub baseline: String,
    /// The loss to compare at; the overlap midpoint when `None`.
    pub loss: Option<f64>,
    pub bootstrap: BootstrapOptions,
}

/// One side of a savings comparison: its curve and the runs behind it.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SavingsCurve {
    pub parameterization: String,
    #[serde(rename = "E")]
    pub e: f64,
    #[serde(rename = "A")]
    pub a: f64,
    pub b: f64,
    pub intervals: Option<PowerLawBounds>,
    pub n_runs: usize,
    /// Whether `E` is shared with the other parameterizations (the runs name the same data).
    pub shared_e: bool,
    /// FLOPs of each compute scale's best run (the frontier the curve is fitted on).
    pub compute_scales: Vec<f64>,
}

impl From<&ComputeGroupFit> for SavingsCurve {
    fn from(fit: &ComputeGroupFit) -> Self {
        SavingsCurve {
            parameterization: fit.group.clone(),
            e: fit.e,
            a: fit.a,
            b: fit.b,
            intervals: fit.intervals,
            n_runs: fit.n_runs,
            shared_e: fit.shared_e,
            compute_scales: fit.compute_scales.clone(),
        }
    }
}

/// The answer of `POST /api/v1/analysis/savings`: how much compute the candidate saves.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub(crate) struct SavingsReport {
    #[serde(flatten)]
    pub savings: Savings,
    pub candidate: SavingsCurve,
    pub baseline: SavingsCurve,
}

/// FLOP savings of one parameterization over another among the selected succeeded runs (see
/// `POST /api/v1/analysis/savings`): read off the same fits as [`compute_report`] (so the page
/// and the endpoint agree); refusals are 422s.
pub(crate) async fn savings_report(
    state: &AppState,
    query: RunQuery,
    options: SavingsOptions,
) -> Result<SavingsReport, ApiError> {
    let compute = ComputeOptions {
        by_parameterization: true,
        bootstrap: options.bootstrap,
    };
    let mut report = compute_report(state, query, compute).await?;
    let mut take = |name: &str, role: &str| {
        if let Some(at) = report.groups.iter().position(|g| g.group == name) {
            return Ok(report.groups.swap_remove(at));
        }
        Err(ApiError::Unprocessable(
            match report.refused.iter().find(|r| r.group == name) {
                Some(refusal) => format!("{role} runs: {}", refusal.error),
                None => format!(
                    "the selection has no succeeded '{name}' runs with FLOPs and a final loss"
                ),
            },
        ))
    };
    let candidate = take(&options.candidate, "candidate")?;
    let baseline = take(&options.baseline, "baseline")?;
    let savings =
        savings_between(&candidate, &baseline, options.loss).map_err(ApiError::Unprocessable)?;
    Ok(SavingsReport {
        savings,
        candidate: SavingsCurve::from(&candidate),
        baseline: SavingsCurve::from(&baseline),
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A Chinchilla fit of the selected runs. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selection": {"tags": ["chinchilla"]}, "exclude_highest_loss": 5, "resamples": 200, "seed": 1}))]
pub(crate) struct ChinchillaFitRequest {
    selection: RunSelection,
    /// Leave out this many runs of highest final loss (Epoch left out 5); fewer than the
    /// usable runs (else 422).
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    exclude_highest_loss: Option<u64>,
    /// Bootstrap resamples; 0 fits once, without intervals.
    #[schema(default = 1000, minimum = 0, maximum = 5000)]
    resamples: Option<u64>,
    /// Seed of the resampling.
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    seed: Option<u64>,
    /// Two-sided confidence level of the intervals, in (0, 1).
    #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    confidence: Option<f64>,
}

/// Bootstrap intervals of the surface's parameters.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChinchillaBounds {
    #[serde(rename = "E")]
    #[schema(value_type = Bounds)]
    e: [f64; 2],
    #[serde(rename = "A")]
    #[schema(value_type = Bounds)]
    a: [f64; 2],
    #[serde(rename = "B")]
    #[schema(value_type = Bounds)]
    b: [f64; 2],
    #[schema(value_type = Bounds)]
    alpha: [f64; 2],
    #[schema(value_type = Bounds)]
    beta: [f64; 2],
}

/// The fitted surface `L(N, D) = E + A / N^alpha + B / D^beta`; `conclusive` is `false` when
/// the runs cover fewer than 4 compute scales (`6 N D`) or less than a decade (see `warnings`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChinchillaFit {
    /// Irreducible loss.
    #[serde(rename = "E")]
    e: f64,
    #[serde(rename = "A")]
    a: f64,
    #[serde(rename = "B")]
    b: f64,
    alpha: f64,
    beta: f64,
    /// `null` with `resamples: 0`.
    intervals: Option<ChinchillaBounds>,
    /// Runs fitted.
    n_runs: usize,
    /// Summed Huber loss of the log-loss residuals at the optimum.
    objective: f64,
    /// The highest-loss runs left out.
    excluded_run_ids: Vec<i64>,
    #[serde(flatten)]
    verdict: Verdict,
}

/// How a compute fit groups the runs: one curve per `parameterization`, or `none` (one curve).
#[derive(Debug, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupBy {
    Parameterization,
    None,
}

/// Loss-versus-compute fits of the selected runs. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selection": {"sweep_id": 3}, "group_by": "parameterization", "resamples": 500}))]
pub(crate) struct ComputeFitRequest {
    selection: RunSelection,
    #[schema(default = "parameterization")]
    group_by: Option<GroupBy>,
    /// Bootstrap resamples; 0 fits once, without intervals.
    #[schema(default = 1000, minimum = 0, maximum = 5000)]
    resamples: Option<u64>,
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    seed: Option<u64>,
    /// Two-sided confidence level of the intervals, in (0, 1).
    #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    confidence: Option<f64>,
}

/// FLOP savings of one parameterization over another at matched loss (two different ones:
/// the same twice is refused with 422). Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selection": {"tags": ["compute-efficiency"]}, "candidate": "completep", "baseline": "mup", "resamples": 500}))]
pub(crate) struct SavingsRequest {
    selection: RunSelection,
    #[schema(default = "completep")]
    candidate: Option<Parameterization>,
    #[schema(default = "mup")]
    baseline: Option<Parameterization>,
    /// The loss to compare at; the midpoint of the loss range both groups observed when absent.
    #[schema(exclusive_minimum = 0.0)]
    loss: Option<f64>,
    /// Bootstrap resamples of each group; 0 gives no interval.
    #[schema(default = 1000, minimum = 0, maximum = 5000)]
    resamples: Option<u64>,
    #[schema(default = 0, minimum = 0, maximum = 9223372036854775807_i64)]
    seed: Option<u64>,
    /// Two-sided confidence level of the intervals, in (0, 1).
    #[schema(default = 0.95, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    confidence: Option<f64>,
}

/// Fits the Chinchilla loss surface to the selected runs.
///
/// `L(N, D) = E + A / N^alpha + B / D^beta` with `N` the non-embedding parameters, `D` the
/// training tokens and `L` the final validation loss (training loss when there is none), fitted
/// as Epoch AI refitted Chinchilla: Huber loss (delta 1e-3) on log-loss, L-BFGS from a grid of
/// 4500 starts. Intervals are bootstrap percentiles (`null` with `resamples: 0`).
#[utoipa::path(
    post,
    path = "/api/v1/fits/chinchilla",
    tag = "fits",
    request_body(content = ChinchillaFitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The fitted surface with its intervals", body = ChinchillaFit),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "A selection the fit refuses: too few runs or scales, too many runs", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn chinchilla_fit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChinchillaFitRequest = json_body(body).map_err(as_bad_request)?;
    let query = request.selection.query()?;
    let exclude = request.exclude_highest_loss.unwrap_or(0);
    if exclude > i64::MAX as u64 {
        return Err(ApiError::BadRequest(format!(
            "'exclude_highest_loss' must be an integer in [0, {}]",
            i64::MAX
        )));
    }
    let exclude = exclude as usize;
    let bootstrap = bootstrap_options(request.resamples, request.seed, request.confidence)?;

    let mut runs: Vec<(i64, (f64, f64, f64))> = select_runs(&state, query)
        .await?
        .iter()
        .filter_map(|run| {
            let point = (
                run.params_non_embedding? as f64,
                run.tokens? as f64,
                final_loss(run)?,
            );
            Some((run.id, point))
        })
        .collect();
    if runs.is_empty() {
        return Err(ApiError::Unprocessable(
            "the selection has no succeeded runs with parameters, tokens and a final loss".into(),
        ));
    }
    if exclude >= runs.len() {
        return Err(ApiError::Unprocessable(format!(
            "'exclude_highest_loss' is {exclude} but the selection has only {} usable runs",
            runs.len()
        )));
    }
    // Highest loss first (ties: lower id first), then back to id order.
    runs.sort_by(|(i, p), (j, q)| q.2.total_cmp(&p.2).then(i.cmp(j)));
    let mut excluded: Vec<i64> = runs.drain(..exclude).map(|(id, _)| id).collect();
    excluded.sort_unstable();
    runs.sort_by_key(|(id, _)| *id);
    let ids: Vec<i64> = runs.iter().map(|(id, _)| *id).collect();
    let points: Vec<(f64, f64, f64)> = runs.iter().map(|(_, p)| *p).collect();

    let fitted = points.clone();
    let result = blocking(move || {
        let (points, options) = (fitted, FitOptions::default());
        let unprocessable = |e| ApiError::Unprocessable(refusal(e, &ids));
        if bootstrap.resamples == 0 {
            let fit = fit_chinchilla(&points, &options).map_err(unprocessable)?;
            return Ok((fit, None));
        }
        let b = bootstrap_chinchilla(&points, &bootstrap, &options).map_err(unprocessable)?;
        let intervals = ChinchillaBounds {
            e: bounds(&b.e),
            a: bounds(&b.a),
            b: bounds(&b.b),
            alpha: bounds(&b.alpha),
            beta: bounds(&b.beta),
        };
        Ok((b.fit, Some(intervals)))
    })
    .await?;
    let (fit, intervals) = result;
    let s = fit.surface;
    // The compute scales the runs cover (training FLOPs 6 N D, grouped as the compute fits do).
    let flops: Vec<f64> = points.iter().map(|&(n, d, _)| 6.0 * n * d).collect();
    let scales: Vec<f64> = compute_scales(&flops)
        .iter()
        .map(|scale| {
            scale
                .iter()
                .map(|&i| flops[i])
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let mut verdict = Verdict::new();
    verdict.check_coverage(&scales);
    Ok(Json(ChinchillaFit {
        e: s.e,
        a: s.a,
        b: s.b,
        alpha: s.alpha,
        beta: s.beta,
        intervals,
        n_runs: fit.n,
        objective: fit.objective,
        excluded_run_ids: excluded,
        verdict,
    })
    .into_response())
}

/// Fits loss against compute, per group of the selected runs.
///
/// `L(C) = E + A C^-b` with `C` the training FLOPs and `L` the final validation loss (training
/// loss when there is none), per parameterization (`group_by: "parameterization"`, the default)
/// or over all runs (`"none"`, group `all`). Each fit comes with its goodness: every run's
/// relative residual `(L - L(C)) / L(C)`, the RMSE of the log-loss and `R^2`. Groups the fit
/// refuses are listed in `refused` with the reason instead of failing the request.
#[utoipa::path(
    post,
    path = "/api/v1/fits/compute",
    tag = "fits",
    request_body(content = ComputeFitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One fit per group, and the groups that could not be fitted", body = ComputeReport),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "No usable runs in the selection, or too many", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn compute_fit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ComputeFitRequest = json_body(body).map_err(as_bad_request)?;
    let query = request.selection.query()?;
    let by_parameterization = request.group_by != Some(GroupBy::None);
    let bootstrap = bootstrap_options(request.resamples, request.seed, request.confidence)?;
    let options = ComputeOptions {
        by_parameterization,
        bootstrap,
    };
    Ok(Json(compute_report(&state, query, options).await?).into_response())
}

/// FLOP savings of one parameterization over another at matched loss.
///
/// Fits `L(C) = E + A C^-b` to the selected runs of the `candidate` and of the `baseline`
/// parameterization and reports `1 - C_candidate(L) / C_baseline(L)`, the fraction of the
/// baseline's compute the candidate saves at loss `L` (negative: it needs more). `L` is `loss`
/// when given, else the midpoint of the range of final losses both groups observed. The
/// interval pairs the two bootstraps' curves by index; resamples where a curve never reaches
/// `L` are counted in `unreachable_resamples` and left out.
#[utoipa::path(
    post,
    path = "/api/v1/analysis/savings",
    tag = "fits",
    request_body(content = SavingsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The savings at the loss used, with an interval", body = SavingsReport),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::error::ErrorBody),
        (status = 422, description = "The same parameterization as candidate and baseline, a group missing or refused by the fit, a loss no curve reaches, or ranges that do not overlap", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn savings_analysis(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: SavingsRequest = json_body(body).map_err(as_bad_request)?;
    let query = request.selection.query()?;
    let candidate = request.candidate.unwrap_or(Parameterization::CompleteP);
    let baseline = request.baseline.unwrap_or(Parameterization::Mup);
    if candidate == baseline {
        return Err(ApiError::Unprocessable(format!(
            "'candidate' and 'baseline' are both '{candidate}': compare two parameterizations"
        )));
    }
    let loss = match request.loss {
        Some(loss) if !(loss.is_finite() && loss > 0.0) => {
            return Err(ApiError::BadRequest(
                "'loss' must be a positive number".into(),
            ));
        }
        loss => loss,
    };
    let bootstrap = bootstrap_options(request.resamples, request.seed, request.confidence)?;
    let options = SavingsOptions {
        candidate: candidate.name().to_string(),
        baseline: baseline.name().to_string(),
        loss,
        bootstrap,
    };
    Ok(Json(savings_report(&state, query, options).await?).into_response())
}
