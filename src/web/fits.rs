//! `/api/v1/fits` and `/api/v1/analysis`: scaling-law fits of stored runs (section 6 of the
//! CompleteP spec) — the Chinchilla surface `L(N, D)`, loss-versus-compute curves `L(C)` per
//! group, and FLOP savings at matched loss between two parameterizations.
//!
//! Every endpoint takes a run `selection` in its JSON body (run ids, a sweep, tags, or the
//! filters of `GET /api/v1/runs`); only `succeeded` runs carrying the numbers a fit needs are
//! used. The maths is [`crate::fit`]; it runs on the blocking pool, and its refusals (too few
//! scales, unreachable loss, ...) answer 422 with the reason.

use super::AppState;
use super::error::ApiError;
use super::runs::{json_object, parse_run_query};
use crate::fit::{
    BootstrapOptions, FitError, FitOptions, Interval, PowerLaw, bootstrap_chinchilla,
    bootstrap_power_law, fit_chinchilla, fit_power_law, flop_savings,
};
use crate::param::Parameterization;
use crate::store::{Comparison, Condition, FilterValue, RunQuery, RunRecord, StoredStatus};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/fits/chinchilla", post(chinchilla_fit))
        .route("/api/v1/fits/compute", post(compute_fit))
        .route("/api/v1/analysis/savings", post(savings_analysis))
}

/// The most runs one selection may hold.
const MAX_SELECTED_RUNS: i64 = 10_000;
/// Runs read from the store per page.
const PAGE: i64 = 1000;
/// The most bootstrap resamples one request may ask for.
const MAX_RESAMPLES: u64 = 5000;

// ---------------------------------------------------------------------------------------------
// Body parsing

/// Builds the store query of a `selection`: exactly one of `run_ids`, `sweep_id`, `tags` or
/// `filters` (the query parameters of `GET /api/v1/runs`, as an object).
fn parse_selection(value: Option<Value>) -> Result<RunQuery, ApiError> {
    const KINDS: &str = "'run_ids', 'sweep_id', 'tags' or 'filters'";
    let Some(Value::Object(selection)) = value else {
        return Err(ApiError::BadRequest(format!(
            "'selection' is required: an object with one of {KINDS}"
        )));
    };
    let mut entries = selection.into_iter();
    let (Some((kind, value)), None) = (entries.next(), entries.next()) else {
        return Err(ApiError::BadRequest(format!(
            "'selection' must have exactly one of {KINDS}"
        )));
    };
    let bad = |what: &str| ApiError::BadRequest(format!("selection '{kind}' must be {what}"));
    match kind.as_str() {
        "run_ids" => {
            let ids: Vec<i64> =
                serde_json::from_value(value).map_err(|_| bad("a list of run ids (integers)"))?;
            if ids.is_empty() || ids.len() > MAX_SELECTED_RUNS as usize {
                return Err(bad(&format!("a list of 1 to {MAX_SELECTED_RUNS} run ids")));
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
        "sweep_id" => {
            let id = value.as_i64().ok_or_else(|| bad("an integer sweep id"))?;
            Ok(RunQuery {
                conditions: vec![Condition {
                    column: "sweep_id",
                    comparison: Comparison::Eq,
                    values: vec![FilterValue::Int(id)],
                }],
                ..RunQuery::default()
            })
        }
        "tags" => {
            let tags: Vec<String> =
                serde_json::from_value(value).map_err(|_| bad("a list of tags (strings)"))?;
            if tags.is_empty() {
                return Err(bad(
                    "a non-empty list of tags (a run must carry all of them)",
                ));
            }
            Ok(RunQuery {
                tags,
                ..RunQuery::default()
            })
        }
        "filters" => {
            let Value::Object(filters) = value else {
                return Err(bad(
                    "an object of filters as on GET /api/v1/runs, e.g. {\"width\": \"in:128,256\"}",
                ));
            };
            let mut pairs = Vec::new();
            for (key, value) in filters {
                if ["sort", "limit", "offset"].contains(&key.as_str()) {
                    return Err(ApiError::BadRequest(format!(
                        "'{key}' is not a filter: a selection holds every matching run"
                    )));
                }
                let values = match value {
                    Value::Array(values) => values,
                    single => vec![single],
                };
                for value in values {
                    let text = match value {
                        Value::String(s) => s,
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
        other => Err(ApiError::BadRequest(format!(
            "unknown selection '{other}': use {KINDS}"
        ))),
    }
}

/// An optional non-negative integer field within `0..=max`.
fn integer_field(
    body: &mut Map<String, Value>,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match body.remove(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_u64().filter(|v| *v <= max).ok_or_else(|| {
            ApiError::BadRequest(format!("'{key}' must be an integer in [0, {max}]"))
        }),
    }
}

/// The bootstrap settings `resamples`, `seed` and `confidence`.
fn bootstrap_fields(body: &mut Map<String, Value>) -> Result<BootstrapOptions, ApiError> {
    let resamples = integer_field(body, "resamples", 1000, MAX_RESAMPLES)? as usize;
    let seed = integer_field(body, "seed", 0, u64::MAX)?;
    let confidence = match body.remove("confidence") {
        None | Some(Value::Null) => 0.95,
        Some(value) => value
            .as_f64()
            .filter(|c| *c > 0.0 && *c < 1.0)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "'confidence' must be a number strictly between 0 and 1".into(),
                )
            })?,
    };
    Ok(BootstrapOptions {
        resamples,
        seed,
        confidence,
    })
}

fn no_unknown_fields(body: &Map<String, Value>, known: &str) -> Result<(), ApiError> {
    match body.keys().next() {
        Some(unknown) => Err(ApiError::BadRequest(format!(
            "unknown field '{unknown}': the body has {known}"
        ))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Selecting runs

/// Every succeeded run the query matches (at most [`MAX_SELECTED_RUNS`]), by id.
async fn select_runs(state: &AppState, mut query: RunQuery) -> Result<Vec<RunRecord>, ApiError> {
    query.conditions.push(Condition {
        column: "status",
        comparison: Comparison::Eq,
        values: vec![FilterValue::Text(StoredStatus::Succeeded.name().into())],
    });
    query.sort = "id";
    query.descending = false;
    query.limit = PAGE;
    query.offset = 0;
    let mut runs = Vec::new();
    loop {
        let (page, total) = state.store.runs(&query).await?;
        if total > MAX_SELECTED_RUNS {
            return Err(ApiError::Unprocessable(format!(
                "the selection holds {total} succeeded runs: at most {MAX_SELECTED_RUNS} can be fitted"
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
fn final_loss(run: &RunRecord) -> Option<f64> {
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
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("fit task failed: {e}")))?
}

fn pair(interval: &Interval) -> Value {
    json!([interval.low, interval.high])
}

/// A power-law fit with its intervals (`null` without resamples) and its resample curves.
struct PowerLawResult {
    curve: PowerLaw,
    intervals: Value,
    curves: Vec<PowerLaw>,
}

impl PowerLawResult {
    /// `{"E", "A", "b", "intervals"}`.
    fn to_json(&self) -> Value {
        let c = &self.curve;
        json!({"E": c.e, "A": c.a, "b": c.b, "intervals": self.intervals})
    }
}

/// Fits `L(C)` to `(FLOPs, loss)` points, bootstrapped when `resamples > 0`; a refusal is its
/// message.
fn power_law(
    points: &[(f64, f64)],
    run_ids: &[i64],
    bootstrap: &BootstrapOptions,
) -> Result<PowerLawResult, String> {
    let options = FitOptions::default();
    if bootstrap.resamples == 0 {
        let fit = fit_power_law(points, &options).map_err(|e| refusal(e, run_ids))?;
        return Ok(PowerLawResult {
            curve: fit.curve,
            intervals: Value::Null,
            curves: Vec::new(),
        });
    }
    let b = bootstrap_power_law(points, bootstrap, &options).map_err(|e| refusal(e, run_ids))?;
    Ok(PowerLawResult {
        curve: b.fit.curve,
        intervals: json!({"E": pair(&b.e), "A": pair(&b.a), "b": pair(&b.b)}),
        curves: b.curves,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

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
    request_body(content = super::openapi::ChinchillaFitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The fitted surface with its intervals", body = super::openapi::ChinchillaFitResult),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::openapi::ErrorBody),
        (status = 422, description = "A selection the fit refuses: too few runs or scales, too many runs", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn chinchilla_fit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut body = json_object(body)?;
    let query = parse_selection(body.remove("selection"))?;
    let exclude = integer_field(&mut body, "exclude_highest_loss", 0, u64::MAX)? as usize;
    let bootstrap = bootstrap_fields(&mut body)?;
    no_unknown_fields(
        &body,
        "'selection', 'exclude_highest_loss', 'resamples', 'seed' and 'confidence'",
    )?;

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

    let result = blocking(move || {
        let options = FitOptions::default();
        let unprocessable = |e| ApiError::Unprocessable(refusal(e, &ids));
        if bootstrap.resamples == 0 {
            let fit = fit_chinchilla(&points, &options).map_err(unprocessable)?;
            return Ok((fit, None));
        }
        let b = bootstrap_chinchilla(&points, &bootstrap, &options).map_err(unprocessable)?;
        let intervals = json!({
            "E": pair(&b.e), "A": pair(&b.a), "B": pair(&b.b),
            "alpha": pair(&b.alpha), "beta": pair(&b.beta),
        });
        Ok((b.fit, Some(intervals)))
    })
    .await?;
    let (fit, intervals) = result;
    let s = fit.surface;
    Ok(Json(json!({
        "E": s.e, "A": s.a, "B": s.b, "alpha": s.alpha, "beta": s.beta,
        "intervals": intervals,
        "n_runs": fit.n,
        "objective": fit.objective,
        "excluded_run_ids": excluded,
    }))
    .into_response())
}

/// Fits loss against compute, per group of the selected runs.
///
/// `L(C) = E + A C^-b` with `C` the training FLOPs and `L` the final validation loss (training
/// loss when there is none), per parameterization (`group_by: "parameterization"`, the default)
/// or over all runs (`"none"`, group `all`). Groups the fit refuses are listed in `refused` with
/// the reason instead of failing the request.
#[utoipa::path(
    post,
    path = "/api/v1/fits/compute",
    tag = "fits",
    request_body(content = super::openapi::ComputeFitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One fit per group, and the groups that could not be fitted", body = super::openapi::ComputeFitResult),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::openapi::ErrorBody),
        (status = 422, description = "No usable runs in the selection, or too many", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn compute_fit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut body = json_object(body)?;
    let query = parse_selection(body.remove("selection"))?;
    let by_parameterization = match body.remove("group_by") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) if s == "parameterization" => true,
        Some(Value::String(s)) if s == "none" => false,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "'group_by' must be \"parameterization\" or \"none\"".into(),
            ));
        }
    };
    let bootstrap = bootstrap_fields(&mut body)?;
    no_unknown_fields(
        &body,
        "'selection', 'group_by', 'resamples', 'seed' and 'confidence'",
    )?;

    let groups = compute_groups(&select_runs(&state, query).await?, by_parameterization);
    if groups.is_empty() {
        return Err(ApiError::Unprocessable(
            "the selection has no succeeded runs with FLOPs and a final loss".into(),
        ));
    }
    let (fitted, refused) = blocking(move || {
        let (mut fitted, mut refused) = (Vec::new(), Vec::new());
        for (group, (ids, points)) in groups {
            match power_law(&points, &ids, &bootstrap) {
                Ok(result) => {
                    let mut value = result.to_json();
                    value["group"] = json!(group);
                    value["n_runs"] = json!(points.len());
                    fitted.push(value);
                }
                Err(error) => {
                    refused.push(json!({"group": group, "n_runs": points.len(), "error": error}))
                }
            }
        }
        Ok((fitted, refused))
    })
    .await?;
    Ok(Json(json!({"groups": fitted, "refused": refused})).into_response())
}

/// Run ids and `(FLOPs, loss)` points of each group, groups by name.
type Groups = BTreeMap<String, (Vec<i64>, Vec<(f64, f64)>)>;

fn compute_groups(runs: &[RunRecord], by_parameterization: bool) -> Groups {
    let mut groups = Groups::new();
    for run in runs {
        let (Some(flops), Some(loss)) = (run.flops, final_loss(run)) else {
            continue;
        };
        let name = if by_parameterization {
            run.parameterization.clone()
        } else {
            "all".into()
        };
        let (ids, points) = groups.entry(name).or_default();
        ids.push(run.id);
        points.push((flops, loss));
    }
    groups
}

fn parameterization_field(
    body: &mut Map<String, Value>,
    key: &str,
    default: Parameterization,
) -> Result<String, ApiError> {
    match body.remove(key) {
        None | Some(Value::Null) => Ok(default.name().to_string()),
        Some(Value::String(s)) => s
            .parse::<Parameterization>()
            .map(|p| p.name().to_string())
            .map_err(|e| ApiError::BadRequest(format!("'{key}': {e}"))),
        Some(_) => Err(ApiError::BadRequest(format!(
            "'{key}' must be a parameterization name"
        ))),
    }
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
    request_body(content = super::openapi::SavingsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The savings at the loss used, with an interval", body = super::openapi::SavingsResult),
        (status = 400, description = "Malformed JSON, a bad selection or setting, or an unknown field", body = super::openapi::ErrorBody),
        (status = 422, description = "A group missing or refused by the fit, a loss no curve reaches, or ranges that do not overlap", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn savings_analysis(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut body = json_object(body)?;
    let query = parse_selection(body.remove("selection"))?;
    let candidate = parameterization_field(&mut body, "candidate", Parameterization::CompleteP)?;
    let baseline = parameterization_field(&mut body, "baseline", Parameterization::Mup)?;
    if candidate == baseline {
        return Err(ApiError::BadRequest(format!(
            "'candidate' and 'baseline' are both '{candidate}': compare two parameterizations"
        )));
    }
    let loss = match body.remove("loss") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|l| l.is_finite() && *l > 0.0)
                .ok_or_else(|| ApiError::BadRequest("'loss' must be a positive number".into()))?,
        ),
    };
    let bootstrap = bootstrap_fields(&mut body)?;
    no_unknown_fields(
        &body,
        "'selection', 'candidate', 'baseline', 'loss', 'resamples', 'seed' and 'confidence'",
    )?;

    let mut groups = compute_groups(&select_runs(&state, query).await?, true);
    let mut take = |name: &str| {
        groups.remove(name).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "the selection has no succeeded '{name}' runs with FLOPs and a final loss"
            ))
        })
    };
    let (cand_ids, cand_points) = take(&candidate)?;
    let (base_ids, base_points) = take(&baseline)?;
    let (loss, loss_source) = match loss {
        Some(loss) => (loss, "given"),
        None => {
            let range = |points: &[(f64, f64)]| {
                let losses = points.iter().map(|p| p.1);
                (
                    losses.clone().fold(f64::INFINITY, f64::min),
                    losses.fold(f64::NEG_INFINITY, f64::max),
                )
            };
            let ((cand_low, cand_high), (base_low, base_high)) =
                (range(&cand_points), range(&base_points));
            let (low, high) = (cand_low.max(base_low), cand_high.min(base_high));
            if low > high {
                return Err(ApiError::Unprocessable(format!(
                    "the observed losses do not overlap ({candidate}: {cand_low} to {cand_high}, \
                     {baseline}: {base_low} to {base_high}): give 'loss'"
                )));
            }
            ((low + high) / 2.0, "overlap_midpoint")
        }
    };
    let n_cand = cand_points.len();
    let n_base = base_points.len();
    let (cand_seed, base_seed) = (bootstrap.seed, bootstrap.seed ^ 0x9e37_79b9_7f4a_7c15);
    let (cand, base, savings, interval, unreachable) = blocking(move || {
        let fit = |points: &[(f64, f64)], ids: &[i64], seed, name: &str| {
            let options = BootstrapOptions { seed, ..bootstrap };
            power_law(points, ids, &options)
                .map_err(|e| ApiError::Unprocessable(format!("{name} runs: {e}")))
        };
        let cand = fit(&cand_points, &cand_ids, cand_seed, "candidate")?;
        let base = fit(&base_points, &base_ids, base_seed, "baseline")?;
        let savings = flop_savings(&cand.curve, &base.curve, loss)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        // Resample i of one curve against resample i of the other.
        let values: Vec<f64> = (cand.curves.iter().zip(&base.curves))
            .filter_map(|(c, b)| flop_savings(c, b, loss).ok())
            .collect();
        let unreachable = cand.curves.len() - values.len();
        let interval = (!values.is_empty()).then(|| {
            pair(&Interval::from_resamples(
                savings,
                values,
                bootstrap.confidence,
            ))
        });
        Ok((cand, base, savings, interval, unreachable))
    })
    .await?;
    let summary = |fit: PowerLawResult, name: &str, n: usize| {
        let mut fit = fit.to_json();
        fit["parameterization"] = json!(name);
        fit["n_runs"] = json!(n);
        fit
    };
    Ok(Json(json!({
        "savings": savings,
        "interval": interval,
        "loss": loss,
        "loss_source": loss_source,
        "candidate": summary(cand, &candidate, n_cand),
        "baseline": summary(base, &baseline, n_base),
        "unreachable_resamples": unreachable,
    }))
    .into_response())
}
