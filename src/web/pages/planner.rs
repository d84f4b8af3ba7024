//! The planner page: a compute budget in, ranked shapes out (`GET /planner`), and the button
//! that queues the sweep confirming the recommendation (`POST /planner/sweep`).
//!
//! The form's fields are those of `POST /api/v1/plan/recommend`, with the run selection as a
//! sweep id or tags (neither: every succeeded run); the page builds the API's body from them and
//! answers with the same planner, so both refuse and recommend alike.

use super::{
    FieldView, Fieldset, Page, PageError, fmt_count, fmt_loss, fmt_real, fmt_sci, mentions,
    parse_whole, render, same_origin,
};
use crate::plan::{Candidate, FALLBACK_WIDTH_DEPTH_RATIO, GIB, RankedShape};
use crate::verdict::Verdict;
use crate::web::AppState;
use crate::web::charts::{self, planner::ShapePoint};
use crate::web::error::ApiError;
use crate::web::recommend::{
    PlanOutcome, create_confirming_sweep, create_extension_sweep, no_penalty_note, parse_request,
    plan_request,
};
use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/planner", get(planner_page))
        .route("/planner/sweep", axum::routing::post(confirm_sweep))
        .route("/planner/extend", axum::routing::post(extend_sweep))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Integer,
    Real,
    Text,
}

/// One input of the form.
struct Field {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: Kind,
    /// Shown when the field is empty.
    default: &'static str,
}

const fn field(
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: Kind,
    default: &'static str,
) -> Field {
    Field {
        name,
        label,
        hint,
        kind,
        default,
    }
}

const BUDGET_FIELDS: [Field; 3] = [
    field(
        "budget_flops",
        "Budget, FLOPs",
        "training FLOPs, e.g. 1e20; or leave empty and give the two below",
        Kind::Real,
        "",
    ),
    field(
        "device_hours",
        "Device-hours",
        "with the FLOP rate below",
        Kind::Real,
        "",
    ),
    field(
        "flops_per_second",
        "Sustained FLOP/s per device",
        "peak times utilisation, e.g. 4e14",
        Kind::Real,
        "",
    ),
];

const MODEL_FIELDS: [Field; 4] = [
    field(
        "vocab",
        "Vocabulary V",
        "tokens in the vocabulary",
        Kind::Integer,
        "256",
    ),
    field(
        "context",
        "Context T",
        "tokens per sequence",
        Kind::Integer,
        "128",
    ),
    field(
        "d_head",
        "Head dimension",
        "widths are multiples of it",
        Kind::Integer,
        "64",
    ),
    field(
        "tokens_per_param",
        "Tokens per parameter",
        "default: the median of the fitted runs, else 20",
        Kind::Real,
        "",
    ),
];

const LIMIT_FIELDS: [Field; 5] = [
    field(
        "max_depth",
        "Deepest model (blocks)",
        "default 256",
        Kind::Integer,
        "",
    ),
    field(
        "min_width",
        "Narrowest width",
        "optional",
        Kind::Integer,
        "",
    ),
    field("max_width", "Widest width", "optional", Kind::Integer, ""),
    field(
        "memory_gib",
        "Memory per device, GiB",
        "fp32 weights, gradients, AdamW moments and one micro-batch of activations",
        Kind::Real,
        "",
    ),
    field(
        "batch",
        "Micro-batch (sequences)",
        "for the memory estimate; default 16",
        Kind::Integer,
        "",
    ),
];

const RUN_FIELDS: [Field; 4] = [
    field(
        "sweep_id",
        "Sweep id",
        "fit the runs of this sweep (e.g. a compute-efficiency study)",
        Kind::Integer,
        "",
    ),
    field(
        "tags",
        "Tags",
        "or the runs carrying all these tags, separated by commas; neither: every succeeded run",
        Kind::Text,
        "",
    ),
    field(
        "resamples",
        "Bootstrap resamples",
        "per parameterization; 0: no intervals (default 200)",
        Kind::Integer,
        "",
    ),
    field(
        "top",
        "Shapes per parameterization",
        "rows in each table (default 5)",
        Kind::Integer,
        "",
    ),
];

fn all_fields() -> impl Iterator<Item = &'static Field> {
    BUDGET_FIELDS
        .iter()
        .chain(&MODEL_FIELDS)
        .chain(&LIMIT_FIELDS)
        .chain(&RUN_FIELDS)
}

/// The form as typed: the known fields' trimmed, non-empty values, in field order.
struct PlannerForm {
    values: Vec<(&'static str, String)>,
}

impl PlannerForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> PlannerForm {
        let values = all_fields()
            .filter_map(|f| {
                let value = pairs.iter().rev().find(|(k, _)| k == f.name)?.1.trim();
                (!value.is_empty()).then(|| (f.name, value.to_string()))
            })
            .collect();
        PlannerForm { values }
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a budget was typed (else the page shows the form only).
    fn has_budget(&self) -> bool {
        BUDGET_FIELDS.iter().any(|f| self.value(f.name).is_some())
    }

    /// The body of `POST /api/v1/plan/recommend`, or the message and the field at fault.
    fn to_json(&self) -> Result<Map<String, Value>, (String, &'static str)> {
        let mut body = Map::new();
        for f in all_fields() {
            let Some(text) = self.value(f.name) else {
                continue;
            };
            let value = match f.kind {
                Kind::Integer => json!(parse_whole(text).ok_or_else(|| (
                    format!("{} must be a whole number, got '{text}'", f.label),
                    f.name
                ))?),
                Kind::Real => json!(
                    text.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| (
                            format!("{} must be a number, got '{text}'", f.label),
                            f.name
                        ))?
                ),
                Kind::Text => continue,
            };
            if f.name != "sweep_id" {
                body.insert(f.name.into(), value);
            }
        }
        let tags: Vec<&str> = self
            .value("tags")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        let selection = match (self.value("sweep_id"), tags.is_empty()) {
            (Some(_), false) => {
                return Err((
                    "select the runs by a sweep id or by tags, not both".into(),
                    "sweep_id",
                ));
            }
            (Some(id), true) => json!({"sweep_id": parse_whole(id)}),
            (None, false) => json!({ "tags": tags }),
            (None, true) => json!({"filters": {}}),
        };
        body.insert("selection".into(), selection);
        Ok(body)
    }

    /// The typed values as hidden inputs of the confirm form.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        self.values.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Views

/// A row of a shapes table.
struct ShapeRow {
    rank: usize,
    shape: String,
    heads: usize,
    ratio: String,
    params: String,
    params_total: String,
    tokens: String,
    tokens_per_param: String,
    memory: String,
    penalty: String,
    loss: String,
    interval: String,
}

fn interval_text(interval: Option<(f64, f64)>, format: fn(f64) -> String) -> String {
    interval.map_or_else(
        || "—".into(),
        |(low, high)| format!("{} – {}", format(low), format(high)),
    )
}

/// A relative excess as a percentage, `< 0.001%` when smaller.
fn percent(fraction: f64) -> String {
    if fraction < 1e-5 {
        "< 0.001%".into()
    } else {
        format!("{}%", fmt_real(100.0 * fraction))
    }
}

fn candidate_row(rank: usize, c: &Candidate) -> ShapeRow {
    ShapeRow {
        rank,
        shape: format!("{} × {}", c.width, c.depth),
        heads: c.heads,
        ratio: fmt_real(c.width_depth_ratio),
        params: fmt_count(c.params_non_embedding as f64),
        params_total: fmt_count(c.params_total as f64),
        tokens: fmt_count(c.tokens as f64),
        tokens_per_param: fmt_real(c.tokens_per_param),
        memory: fmt_real(c.memory_bytes / GIB),
        penalty: "—".into(),
        loss: "—".into(),
        interval: "—".into(),
    }
}

fn ranked_row(rank: usize, s: &RankedShape) -> ShapeRow {
    ShapeRow {
        penalty: percent(s.relative_penalty),
        loss: fmt_loss(s.loss),
        interval: interval_text(s.interval.map(|i| (i.low, i.high)), fmt_loss),
        ..candidate_row(rank, &s.shape)
    }
}

/// A row of a matched-compute table.
struct MatchedRow {
    parameterization: String,
    flops: String,
    ratio: String,
    interval: String,
}

/// One parameterization's results.
struct PlanView {
    name: String,
    color: String,
    n_runs: usize,
    tokens_per_param: String,
    curve: String,
    curve_intervals: String,
    extrapolation: String,
    loss_at_budget: String,
    loss_interval: String,
    penalty: String,
    shapes: Vec<ShapeRow>,
    matched_loss: String,
    matched: Vec<MatchedRow>,
    verdict: Verdict,
}

/// The confirming sweep, as the page describes it.
struct SweepView {
    summary: Vec<(&'static str, String)>,
    hidden: Vec<(&'static str, String)>,
}

/// The runs that would make the plan conclusive, as the page offers them.
struct ExtensionView {
    computes: String,
    summary: Vec<(&'static str, String)>,
    runs: usize,
    duration: String,
    hidden: Vec<(&'static str, String)>,
}

struct Results {
    budget: String,
    architecture: String,
    note: String,
    candidates_ratio: String,
    candidates: Vec<ShapeRow>,
    plans: Vec<PlanView>,
    refused: Vec<(String, usize, String)>,
    chart: String,
    sweep: Option<SweepView>,
    extension: Option<ExtensionView>,
}

#[derive(Template)]
#[template(path = "planner.html")]
struct PlannerTemplate {
    page: Page,
    fieldsets: Vec<Fieldset>,
    error: String,
    results: Option<Results>,
    fallback_ratio: f64,
}

fn fieldsets(form: &PlannerForm, invalid: &[&str]) -> Vec<Fieldset> {
    let view = |f: &Field| FieldView {
        name: f.name,
        label: f.label,
        hint: f.hint,
        input_type: if f.kind == Kind::Text {
            "text"
        } else {
            "number"
        },
        step: if f.kind == Kind::Integer { "1" } else { "any" },
        value: form.value(f.name).unwrap_or(f.default).to_string(),
        invalid: invalid.contains(&f.name),
    };
    let set = |legend, fields: &[Field]| Fieldset {
        legend,
        fields: fields.iter().map(view).collect(),
        advanced: false,
        open: true,
    };
    vec![
        set("Compute budget", &BUDGET_FIELDS),
        set("Model", &MODEL_FIELDS),
        set("Limits", &LIMIT_FIELDS),
        set("Fitted runs", &RUN_FIELDS),
    ]
}

fn results(outcome: &PlanOutcome, top: usize, form: &PlannerForm) -> Results {
    let budget = outcome.budget.flops();
    let plans = outcome
        .plans
        .iter()
        .enumerate()
        .map(|(index, plan)| {
            let group = outcome.group(&plan.parameterization);
            let fit = group.and_then(|g| g.fit.as_ref().ok());
            let c = plan.curve;
            let best = &plan.shapes[0];
            PlanView {
                name: plan.parameterization.clone(),
                color: charts::series_css_color(index),
                n_runs: group.map_or(0, |g| g.n_runs),
                tokens_per_param: fmt_real(plan.tokens_per_param),
                curve: format!(
                    "L(C) = {} + {} C^-{}",
                    fmt_real(c.e),
                    fmt_real(c.a),
                    fmt_real(c.b)
                ),
                curve_intervals: fit.and_then(|f| f.intervals).map_or_else(
                    || "no intervals (0 resamples)".into(),
                    |i| {
                        format!(
                            "E {}, A {}, b {}",
                            interval_text(Some((i.e[0], i.e[1])), fmt_real),
                            interval_text(Some((i.a[0], i.a[1])), fmt_real),
                            interval_text(Some((i.b[0], i.b[1])), fmt_real)
                        )
                    },
                ),
                extrapolation: fit.map_or_else(
                    || "—".into(),
                    |f| {
                        format!(
                            "{}× the largest run ({} FLOPs)",
                            fmt_real(budget / f.largest_run_flops),
                            fmt_sci(f.largest_run_flops)
                        )
                    },
                ),
                loss_at_budget: fmt_loss(plan.loss_at_budget),
                loss_interval: interval_text(
                    plan.loss_at_budget_interval.map(|i| (i.low, i.high)),
                    fmt_loss,
                ),
                penalty: match plan.penalty {
                    Some(p) => format!(
                        "relative excess loss {} × (ln(N:L) − ln {})²: the optimal N:L is {}",
                        fmt_real(p.curvature),
                        fmt_real(p.log_ratio_optimum.exp()),
                        fmt_real(p.log_ratio_optimum.exp())
                    ),
                    None => no_penalty_note(outcome, &plan.parameterization),
                },
                shapes: (plan.shapes.iter().take(top).enumerate())
                    .map(|(i, s)| ranked_row(i + 1, s))
                    .collect(),
                matched_loss: fmt_loss(best.loss),
                matched: plan
                    .matched_compute
                    .iter()
                    .map(|m| MatchedRow {
                        parameterization: m.parameterization.clone(),
                        flops: m
                            .flops
                            .map_or_else(|| m.refusal.clone().unwrap_or_default(), fmt_sci),
                        ratio: m.ratio.map_or("—".into(), |r| format!("{}×", fmt_real(r))),
                        interval: interval_text(m.interval.map(|i| (i.low, i.high)), fmt_sci),
                    })
                    .collect(),
                verdict: fit.map_or_else(Verdict::new, |f| f.verdict.clone()),
            }
        })
        .collect();
    let series: Vec<(String, Vec<ShapePoint>)> = outcome
        .plans
        .iter()
        .map(|plan| {
            let points = plan
                .shapes
                .iter()
                .map(|s| ShapePoint {
                    width_depth_ratio: s.shape.width_depth_ratio,
                    loss: s.loss,
                    interval: s.interval.map(|i| (i.low, i.high)),
                })
                .collect();
            (plan.parameterization.clone(), points)
        })
        .collect();
    let chart = if series.is_empty() {
        String::new()
    } else {
        charts::planner::shape_loss_chart(&series).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            charts::message_svg("the chart could not be drawn")
        })
    };
    let sweep = outcome.confirm_sweep.as_ref().map(|body| SweepView {
        summary: sweep_summary(body),
        hidden: form.hidden(),
    });
    let extension = outcome.extension.as_ref().map(|e| ExtensionView {
        computes: (e.computes.iter())
            .map(|&c| fmt_sci(c))
            .collect::<Vec<_>>()
            .join(", "),
        summary: sweep_summary(&e.sweep),
        runs: e.estimate.runs,
        duration: e.estimate.duration.clone(),
        hidden: form.hidden(),
    });
    let a = outcome.architecture;
    Results {
        budget: fmt_sci(budget),
        architecture: format!(
            "vocabulary {}, context {}, d_head {}, {}; the runs trained on {}",
            a.vocab,
            a.context,
            a.d_head,
            if a.biases { "with biases" } else { "no biases" },
            if outcome.datasets.is_empty() {
                "no data yet".to_string()
            } else {
                outcome.datasets.join(", ")
            }
        ),
        note: outcome.note.clone().unwrap_or_default(),
        candidates_ratio: fmt_real(outcome.tokens_per_param),
        candidates: (outcome.candidates.iter().take(top.max(10)).enumerate())
            .map(|(i, c)| candidate_row(i + 1, c))
            .collect(),
        plans,
        refused: (outcome.groups.iter())
            .filter_map(|g| Some((g.name.clone(), g.n_runs, g.fit.as_ref().err()?.clone())))
            .collect(),
        chart,
        sweep,
        extension,
    }
}

/// A sweep body the planner wrote, as the page describes it: parameterizations, shapes with
/// their tokens, base learning rates.
fn sweep_summary(body: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), String::from);
    let list = |v: Option<&Value>| match v {
        Some(Value::Array(values)) => values.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => "—".into(),
    };
    let shapes = (body
        .get("shapes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten())
    .map(|s| {
        let tokens = s["tokens"].as_f64().map_or("—".into(), fmt_count);
        format!("{} × {} on {tokens} tokens", s["width"], s["depth"])
    })
    .collect::<Vec<_>>()
    .join("; ");
    let lrs = match body.get("lrs") {
        Some(Value::Object(by)) => by
            .iter()
            .map(|(p, lrs)| format!("{p} {}", list(Some(lrs))))
            .collect::<Vec<_>>()
            .join("; "),
        other => list(other),
    };
    vec![
        ("Parameterizations", list(body.get("parameterizations"))),
        ("Width × depth", shapes),
        ("Base learning rates", lrs),
    ]
}

/// The fields a refusal is about.
fn culprits(message: &str) -> Vec<&'static str> {
    all_fields()
        .map(|f| f.name)
        .filter(|name| mentions(message, name))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /planner`: the form, and with a budget the plan; a refused plan shows the form again with
/// the reason (400 or 422).
pub(super) async fn planner_page(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let form = PlannerForm::from_pairs(pairs);
    let template = |status: StatusCode, error: String, invalid: Vec<&str>, results| {
        let template = PlannerTemplate {
            page: Page::new("Planner", "planner"),
            fieldsets: fieldsets(&form, &invalid),
            error,
            results,
            fallback_ratio: FALLBACK_WIDTH_DEPTH_RATIO,
        };
        render(status, &template)
    };
    if !form.has_budget() {
        return template(StatusCode::OK, String::new(), Vec::new(), None);
    }
    let body = match form.to_json() {
        Ok(body) => body,
        Err((message, field)) => {
            return template(StatusCode::BAD_REQUEST, message, vec![field], None);
        }
    };
    let planned = match parse_request(body) {
        Ok(request) => plan_request(&state, &request)
            .await
            .map(|outcome| (outcome, request.top)),
        Err(e) => Err(e),
    };
    match planned {
        Ok((outcome, top)) => {
            let results = results(&outcome, top, &form);
            template(StatusCode::OK, String::new(), Vec::new(), Some(results))
        }
        Err(ApiError::Internal(detail)) => Err(ApiError::Internal(detail).into()),
        Err(e) => {
            let message = e.to_string();
            let invalid = culprits(&message);
            template(e.status_code(), message, invalid, None)
        }
    }
}

/// Plans again from the posted fields of a planner button (refused from another site).
async fn replan(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
    resamples: Option<u64>,
) -> Result<PlanOutcome, PageError> {
    same_origin(headers)?;
    let Form(pairs) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let mut body = PlannerForm::from_pairs(pairs)
        .to_json()
        .map_err(|(message, _)| PageError::new(StatusCode::BAD_REQUEST, message))?;
    if let Some(resamples) = resamples {
        body.insert("resamples".into(), json!(resamples));
    }
    let request = parse_request(body)?;
    Ok(plan_request(state, &request).await?)
}

/// `POST /planner/sweep`: plans again from the posted fields (without resamples: the ranking
/// does not use them), queues the confirming sweep, then 303 to its page.
pub(super) async fn confirm_sweep(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let outcome = replan(&state, &headers, form, Some(0)).await?;
    let (id, _) = create_confirming_sweep(&state, &outcome).await?;
    Ok(Redirect::to(&format!("/sweeps/{id}")).into_response())
}

/// `POST /planner/extend`: plans again from the posted fields (the verdict is the page's),
/// queues the sweep that would make the plan conclusive, then 303 to its page.
pub(super) async fn extend_sweep(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    let outcome = replan(&state, &headers, form, None).await?;
    let id = create_extension_sweep(&state, &outcome).await?;
    Ok(Redirect::to(&format!("/sweeps/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_form_builds_the_api_body() {
        let form = PlannerForm::from_pairs(pairs(&[
            ("budget_flops", " 1e18 "),
            ("vocab", "256"),
            ("context", "128"),
            ("max_width", ""),
            ("memory_gib", "0.5"),
            ("tags", "study, cp"),
            ("bogus", "x"),
        ]));
        assert!(form.has_budget());
        let body = form.to_json().unwrap();
        assert_eq!(body["budget_flops"], json!(1e18));
        assert_eq!(body["vocab"], json!(256));
        assert_eq!(body["memory_gib"], json!(0.5));
        assert_eq!(body["selection"], json!({"tags": ["study", "cp"]}));
        assert!(!body.contains_key("max_width") && !body.contains_key("bogus"));
        let request = parse_request(body).unwrap();
        assert_eq!(request.budget.flops(), 1e18);
        assert_eq!(request.architecture.vocab, 256);

        let all = PlannerForm::from_pairs(pairs(&[("device_hours", "2"), ("sweep_id", "7")]));
        assert_eq!(all.to_json().unwrap()["selection"], json!({"sweep_id": 7}));
        let none = PlannerForm::from_pairs(pairs(&[("budget_flops", "1e18")]));
        assert_eq!(none.to_json().unwrap()["selection"], json!({"filters": {}}));
        let both = PlannerForm::from_pairs(pairs(&[("sweep_id", "7"), ("tags", "a")]));
        assert_eq!(both.to_json().unwrap_err().1, "sweep_id");
        let bad = PlannerForm::from_pairs(pairs(&[("vocab", "many")]));
        assert_eq!(bad.to_json().unwrap_err().1, "vocab");
        assert_eq!(
            culprits("'min_width' must be an integer from 1 to 1048576"),
            vec!["min_width"]
        );
    }
}
