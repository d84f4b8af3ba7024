//! Diagnostics pages: the list of coordinate checks and linearization checks with a form to
//! launch each kind (`GET, POST /diagnostics`), and one diagnostic's page with its status,
//! charts and tables (`GET /diagnostics/{id}`). [`results_html`] renders a diagnostic's results
//! as a fragment that other pages (a coordinate-check study) embed.

use super::{
    FieldView, Page, PageError, SelectOption, fmt_real, fmt_time, parse_whole, render, same_origin,
};
use crate::coord::{CoordAxis, CoordTable};
use crate::jobs::{DiagnosticError, DiagnosticKind};
use crate::linearize::LinearizeTable;
use crate::param::Parameterization;
use crate::store::{DiagnosticRecord, DiagnosticStatus};
use crate::web::AppState;
use crate::web::charts::{self, diagnostics as diagnostic_charts};
use crate::web::error::ApiError;
use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Map, Value};

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/diagnostics", get(diagnostics_list).post(launch))
        .route("/diagnostics/{id}", get(diagnostic_page))
}

/// Diagnostics the list page shows.
const LIST_LIMIT: i64 = 200;

// ---------------------------------------------------------------------------------------------
// The launch forms

#[derive(Clone, Copy, PartialEq)]
enum OptionKind {
    /// Checkboxes, one per parameterization.
    Parameterizations,
    /// Whole numbers separated by commas.
    IntegerList,
    Integer,
    Real,
    /// A `<select>` of the attention scales.
    AttentionScale,
}

/// One option of a diagnostic as a form field.
struct OptionField {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: OptionKind,
}

const fn option(
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: OptionKind,
) -> OptionField {
    OptionField {
        name,
        label,
        hint,
        kind,
    }
}

/// Every option of every kind, in the order the forms show them; a kind shows those its
/// defaults have.
const OPTION_FIELDS: [OptionField; 12] = [
    option("parameterizations", "", "", OptionKind::Parameterizations),
    option(
        "depths",
        "Depths L",
        "separated by commas; the smallest is the base depth",
        OptionKind::IntegerList,
    ),
    option(
        "widths",
        "Widths N",
        "separated by commas; the smallest is the base width",
        OptionKind::IntegerList,
    ),
    option(
        "width",
        "Width N",
        "a multiple of d_head",
        OptionKind::Integer,
    ),
    option("depth", "Depth L", "blocks", OptionKind::Integer),
    option(
        "steps",
        "Steps",
        "training steps per model",
        OptionKind::Integer,
    ),
    option(
        "seeds",
        "Seeds",
        "models per point, averaged",
        OptionKind::Integer,
    ),
    option(
        "lr",
        "Base learning rate",
        "constant; the plan scales it per group",
        OptionKind::Real,
    ),
    option("batch", "Batch", "sequences per step", OptionKind::Integer),
    option(
        "context",
        "Context T",
        "tokens per sequence",
        OptionKind::Integer,
    ),
    option("d_head", "Head dimension", "", OptionKind::Integer),
    option(
        "attention_scale",
        "Attention scale",
        "equal across parameterizations",
        OptionKind::AttentionScale,
    ),
];

const ATTENTION_SCALES: [(&str, &str); 3] = [
    ("d_head", "1 / d_head"),
    ("sqrt_d_head", "1 / sqrt(d_head)"),
    ("width", "1 / N"),
];

/// The parameterizations a diagnostic compares (a custom alpha has no single value here).
const PARAMETERIZATIONS: [Parameterization; 4] = [
    Parameterization::Sp,
    Parameterization::Mup,
    Parameterization::DepthMup,
    Parameterization::CompleteP,
];

fn description(kind: DiagnosticKind) -> &'static str {
    match kind {
        DiagnosticKind::CoordDepth => {
            "Trains each depth for a few steps at a fixed learning rate and width and records the mean absolute final residual stream (paper Fig. 7). Depth-muP and CompleteP should stay flat; SP and muP grow with depth."
        }
        DiagnosticKind::CoordWidth => {
            "The same over widths at a fixed depth (muP's classic check). muP-style parameterizations stay flat; SP grows with width."
        }
        DiagnosticKind::Linearization => {
            "Takes one AdamW step and measures how far the middle block's residual branches move from their first-order prediction (paper Fig. 6). Depth-muP falls like L^-1/2 (lazy); CompleteP stays flat. SP is the same as muP here (the width is the base width)."
        }
    }
}

/// A JSON option value as form text: lists joined by commas.
fn option_text(value: &Value) -> String {
    match value {
        Value::Array(items) => items.iter().map(option_text).collect::<Vec<_>>().join(", "),
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A launch form as typed (or as the defaults fill it).
struct FormValues {
    parameterizations: Vec<String>,
    values: Map<String, Value>,
}

impl FormValues {
    fn defaults(kind: DiagnosticKind) -> FormValues {
        let defaults = kind.default_options();
        let parameterizations = match defaults.get("parameterizations") {
            Some(Value::Array(items)) => items.iter().map(option_text).collect(),
            _ => Vec::new(),
        };
        let values = defaults
            .into_iter()
            .filter(|(k, _)| k != "parameterizations")
            .map(|(k, v)| {
                let text = option_text(&v);
                (k, Value::String(text))
            })
            .collect();
        FormValues {
            parameterizations,
            values,
        }
    }

    /// Reads posted pairs for `kind`: repeated `parameterizations`, the last value of each
    /// option the kind has.
    fn from_pairs(kind: DiagnosticKind, pairs: &[(String, String)]) -> FormValues {
        let defaults = kind.default_options();
        let mut form = FormValues {
            parameterizations: Vec::new(),
            values: Map::new(),
        };
        for (key, value) in pairs {
            if key == "parameterizations" {
                form.parameterizations.push(value.clone());
            } else if key != "kind" && defaults.contains_key(key) {
                form.values
                    .insert(key.clone(), Value::String(value.trim().to_string()));
            }
        }
        form
    }

    fn text(&self, name: &str) -> &str {
        self.values.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// The `options` object the API takes, or the message and the field at fault. Empty fields
    /// are left out (they take the defaults).
    fn to_options(
        &self,
        kind: DiagnosticKind,
    ) -> Result<Map<String, Value>, (String, &'static str)> {
        let defaults = kind.default_options();
        let mut options = Map::new();
        for field in OPTION_FIELDS
            .iter()
            .filter(|f| defaults.contains_key(f.name))
        {
            let raw = self.text(field.name);
            let whole = |text: &str| {
                parse_whole(text).map(Value::from).ok_or_else(|| {
                    (
                        format!("{} must be whole numbers, got '{text}'", field.name),
                        field.name,
                    )
                })
            };
            let value = match field.kind {
                OptionKind::Parameterizations => Value::Array(
                    self.parameterizations
                        .iter()
                        .map(|p| Value::String(p.clone()))
                        .collect(),
                ),
                _ if raw.is_empty() => continue,
                OptionKind::IntegerList => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(whole)
                        .collect::<Result<_, _>>()?,
                ),
                OptionKind::Integer => whole(raw)?,
                OptionKind::Real => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Value::from)
                    .ok_or_else(|| {
                        (
                            format!("{} must be a number, got '{raw}'", field.name),
                            field.name,
                        )
                    })?,
                OptionKind::AttentionScale => Value::String(raw.to_string()),
            };
            options.insert(field.name.to_string(), value);
        }
        Ok(options)
    }
}

/// A launch form as the template draws it.
struct LaunchForm {
    kind: &'static str,
    title: &'static str,
    description: &'static str,
    parameterizations: Vec<SelectOption>,
    parameterizations_invalid: bool,
    fields: Vec<FieldView>,
    attention_scales: Vec<SelectOption>,
    error: String,
}

fn launch_form(
    kind: DiagnosticKind,
    form: &FormValues,
    error: &str,
    invalid: Option<&str>,
) -> LaunchForm {
    let defaults = kind.default_options();
    let fields = OPTION_FIELDS
        .iter()
        .filter(|f| {
            defaults.contains_key(f.name)
                && matches!(
                    f.kind,
                    OptionKind::IntegerList | OptionKind::Integer | OptionKind::Real
                )
        })
        .map(|f| FieldView {
            name: f.name,
            label: f.label,
            hint: f.hint,
            input_type: if f.kind == OptionKind::IntegerList {
                "text"
            } else {
                "number"
            },
            step: if f.kind == OptionKind::Integer {
                "1"
            } else {
                "any"
            },
            value: form.text(f.name).to_string(),
            invalid: invalid == Some(f.name),
        })
        .collect();
    let scale = form.text("attention_scale");
    LaunchForm {
        kind: kind.name(),
        title: kind.title(),
        description: description(kind),
        parameterizations: PARAMETERIZATIONS
            .iter()
            .map(|p| SelectOption {
                value: p.name().to_string(),
                label: p.name().to_string(),
                selected: form.parameterizations.iter().any(|q| q == p.name()),
            })
            .collect(),
        parameterizations_invalid: invalid == Some("parameterizations"),
        fields,
        attention_scales: ATTENTION_SCALES
            .iter()
            .map(|(value, label)| SelectOption {
                value: value.to_string(),
                label: label.to_string(),
                selected: *value == scale,
            })
            .collect(),
        error: error.to_string(),
    }
}

/// The option an error message is about, if it names one.
fn culprit(kind: DiagnosticKind, message: &str) -> Option<&'static str> {
    if message.contains("multiple of d_head") {
        return Some(match kind {
            DiagnosticKind::CoordWidth => "widths",
            _ => "width",
        });
    }
    let defaults = kind.default_options();
    OPTION_FIELDS
        .iter()
        .filter(|f| defaults.contains_key(f.name))
        .map(|f| f.name)
        .find(|name| super::mentions(message, name))
}

// ---------------------------------------------------------------------------------------------
// GET, POST /diagnostics

struct DiagnosticRow {
    id: i64,
    href: String,
    title: &'static str,
    status: &'static str,
    summary: String,
    study: Option<(String, i64)>,
    created: String,
    finished: String,
}

#[derive(Template)]
#[template(path = "diagnostics.html")]
struct DiagnosticsTemplate {
    page: Page,
    rows: Vec<DiagnosticRow>,
    forms: Vec<LaunchForm>,
}

/// A short description of a diagnostic's grid: `4 parameterizations, depths 2-32, 2 seeds`.
fn grid_summary(record: &DiagnosticRecord) -> String {
    let options = &record.options;
    let count = |key: &str| options.get(key).and_then(Value::as_array).map(Vec::len);
    let range = |key: &str| {
        let sizes: Vec<u64> = options
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        match (sizes.iter().min(), sizes.iter().max()) {
            (Some(lo), Some(hi)) if lo != hi => format!("{lo}–{hi}"),
            (Some(lo), _) => lo.to_string(),
            _ => "—".into(),
        }
    };
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if let Some(n) = count("parameterizations") {
        parts.push(plural(n, "parameterization"));
    }
    if options.get("widths").is_some() {
        parts.push(format!("widths {}", range("widths")));
    } else if options.get("depths").is_some() {
        parts.push(format!("depths {}", range("depths")));
    }
    if let Some(seeds) = options.get("seeds").and_then(Value::as_u64) {
        parts.push(plural(seeds as usize, "seed"));
    }
    parts.join(", ")
}

fn diagnostic_row(record: &DiagnosticRecord) -> DiagnosticRow {
    DiagnosticRow {
        id: record.id,
        href: format!("/diagnostics/{}", record.id),
        title: DiagnosticKind::parse(&record.kind).map_or("Unknown diagnostic", |k| k.title()),
        status: record.status.name(),
        summary: grid_summary(record),
        study: record.sweep_id.map(|id| (format!("/studies/{id}"), id)),
        created: fmt_time(&record.created_at),
        finished: record
            .finished_at
            .as_deref()
            .map_or_else(|| "—".into(), fmt_time),
    }
}

/// The list page; `refused` re-shows one kind's form with the values typed and the reason.
async fn list_page(
    state: &AppState,
    refused: Option<(DiagnosticKind, &FormValues, &str, Option<&str>)>,
) -> Result<Response, PageError> {
    let rows = state
        .store
        .diagnostics(LIST_LIMIT)
        .await?
        .iter()
        .map(diagnostic_row)
        .collect();
    let forms = DiagnosticKind::ALL
        .into_iter()
        .map(|kind| match refused {
            Some((k, form, error, invalid)) if k == kind => launch_form(kind, form, error, invalid),
            _ => launch_form(kind, &FormValues::defaults(kind), "", None),
        })
        .collect();
    let status = if refused.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        status,
        &DiagnosticsTemplate {
            page: Page::new("Diagnostics", "diagnostics"),
            rows,
            forms,
        },
    )
}

async fn diagnostics_list(State(state): State<AppState>) -> Result<Response, PageError> {
    list_page(&state, None).await
}

/// `POST /diagnostics`: validates the options as the API does and queues the diagnostic, then
/// 303 to its page; invalid options show the list again with the form as typed and the reason
/// (422).
async fn launch(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(pairs) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let kind = pairs
        .iter()
        .find(|(k, _)| k == "kind")
        .and_then(|(_, v)| DiagnosticKind::parse(v))
        .ok_or_else(|| {
            PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the form names no known diagnostic kind",
            )
        })?;
    let form = FormValues::from_pairs(kind, &pairs);
    let options = match form.to_options(kind) {
        Ok(options) => options,
        Err((message, field)) => {
            return list_page(&state, Some((kind, &form, &message, Some(field)))).await;
        }
    };
    let options = Value::Object(options);
    match crate::web::diagnostics::admit_diagnostic(kind, &options, &state.settings) {
        Ok(()) => {}
        Err(ApiError::Unprocessable(message) | ApiError::BadRequest(message)) => {
            let field = culprit(kind, &message);
            return list_page(&state, Some((kind, &form, &message, field))).await;
        }
        Err(other) => return Err(other.into()),
    }
    match state.jobs.enqueue_diagnostic(kind, &options, None).await {
        Ok(id) => Ok(Redirect::to(&format!("/diagnostics/{id}")).into_response()),
        Err(DiagnosticError::Malformed(message) | DiagnosticError::Invalid(message)) => {
            let field = culprit(kind, &message);
            list_page(&state, Some((kind, &form, &message, field))).await
        }
        Err(DiagnosticError::Store(e)) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// GET /diagnostics/{id}

struct ProgressView {
    done: u64,
    total: u64,
    percent: u64,
    last: String,
}

#[derive(Template)]
#[template(path = "diagnostic.html")]
struct DiagnosticTemplate {
    page: Page,
    id: i64,
    title: &'static str,
    kind: String,
    status: &'static str,
    is_final: bool,
    created: String,
    started: String,
    finished: String,
    study: Option<(String, i64)>,
    options: Vec<(String, String)>,
    progress: Option<ProgressView>,
    results: String,
}

async fn diagnostic_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, PageError> {
    let id = path.map(|Path(id)| id).map_err(|_| {
        PageError::not_found("there is no such diagnostic: diagnostic ids are integers")
    })?;
    let record = state
        .store
        .diagnostic(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("diagnostic {id} not found")))?;
    let time = |t: &Option<String>| t.as_deref().map_or_else(|| "—".into(), fmt_time);
    let options = record
        .options
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), option_text(v)))
                .collect()
        })
        .unwrap_or_default();
    let progress = state.jobs.diagnostic_progress(id).map(|p| ProgressView {
        percent: (p.done * 100).checked_div(p.total).unwrap_or(0),
        done: p.done,
        total: p.total,
        last: p.last,
    });
    let title = DiagnosticKind::parse(&record.kind).map_or("Unknown diagnostic", |k| k.title());
    let template = DiagnosticTemplate {
        page: Page::new(format!("Diagnostic #{id} {title}"), "diagnostics"),
        id,
        title,
        kind: record.kind.clone(),
        status: record.status.name(),
        is_final: record.status.is_final(),
        created: fmt_time(&record.created_at),
        started: time(&record.started_at),
        finished: time(&record.finished_at),
        study: record.sweep_id.map(|id| (format!("/studies/{id}"), id)),
        options,
        progress,
        results: results_html(&record),
    };
    render(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------------------------
// Results fragment

/// A fitted slope as text: `+0.52`, or a dash without a fit.
fn slope_text(slope: Option<f64>) -> String {
    slope.map_or_else(|| "—".into(), |k| format!("{k:+.2}"))
}

fn coord_expectation(axis: CoordAxis, p: Parameterization) -> &'static str {
    use Parameterization as P;
    match (axis, p) {
        (CoordAxis::Depth, P::Sp | P::Mup) => {
            "grows: about L^1/2 at step 1 (k ≈ +0.5), about linearly or faster after a few steps"
        }
        (CoordAxis::Depth, P::DepthMup) => "flat at every step (k ≈ 0)",
        (CoordAxis::Depth, P::CompleteP) => {
            "falls like L^-1/2 at step 1 (the L branches enter with weight 1/L), flat afterwards"
        }
        (CoordAxis::Width, P::Sp) => "grows with width (k > 0), faster once training starts",
        (CoordAxis::Width, _) => "flat at every step (k ≈ 0)",
        (_, P::Alpha) => "between depth-muP and CompleteP",
    }
}

fn linearization_expectation(p: Parameterization) -> &'static str {
    match p {
        Parameterization::DepthMup => "falls like L^-1/2 (k ≈ -0.5): deep branches learn lazily",
        Parameterization::CompleteP => "flat (k ≈ 0): every branch keeps learning non-linearly",
        Parameterization::Sp | Parameterization::Mup => {
            "flat (k ≈ 0): no depth rule for the learning rate"
        }
        Parameterization::Alpha => "falls like L^(alpha - 1)",
    }
}

struct SlopeRow {
    parameterization: &'static str,
    color: String,
    slopes: Vec<String>,
    expected: &'static str,
}

struct ValueRow {
    parameterization: &'static str,
    color: String,
    cells: Vec<String>,
}

struct CoordView {
    axis: &'static str,
    size_label: &'static str,
    last_step: u64,
    first_chart: String,
    last_chart: String,
    slopes: Vec<SlopeRow>,
    sizes: Vec<String>,
    values: Vec<ValueRow>,
}

struct LinearizationView {
    chart: String,
    lr: String,
    step: String,
    depths: Vec<String>,
    /// MLP-branch distances.
    values: Vec<ValueRow>,
    /// Attention-branch / whole-block distances.
    other_values: Vec<ValueRow>,
    slopes: Vec<SlopeRow>,
}

#[derive(Template)]
#[template(path = "diagnostic_results.html")]
struct ResultsTemplate {
    message: String,
    coord: Option<CoordView>,
    linearization: Option<LinearizationView>,
}

fn chart_or_message(chart: Result<String, charts::ChartError>) -> String {
    chart.unwrap_or_else(|e| {
        tracing::warn!("{e}");
        charts::message_svg("the chart could not be drawn")
    })
}

/// The sizes present in `series` order, and each parameterization's values at them.
fn size_columns<F: Fn(Parameterization) -> Vec<(f64, String)>>(
    parameterizations: &[Parameterization],
    cells: F,
) -> (Vec<String>, Vec<ValueRow>) {
    let mut sizes: Vec<f64> = Vec::new();
    let per_p: Vec<(Parameterization, Vec<(f64, String)>)> =
        parameterizations.iter().map(|&p| (p, cells(p))).collect();
    for (_, values) in &per_p {
        for (size, _) in values {
            if !sizes.contains(size) {
                sizes.push(*size);
            }
        }
    }
    sizes.sort_by(f64::total_cmp);
    let rows = per_p
        .into_iter()
        .map(|(p, values)| ValueRow {
            parameterization: p.name(),
            color: diagnostic_charts::parameterization_css_color(p),
            cells: sizes
                .iter()
                .map(|s| {
                    values
                        .iter()
                        .find(|(size, _)| size == s)
                        .map_or_else(|| "—".into(), |(_, v)| v.clone())
                })
                .collect(),
        })
        .collect();
    (sizes.iter().map(|s| format!("{s}")).collect(), rows)
}

fn coord_view(table: &CoordTable) -> CoordView {
    let last = table.last_step();
    let parameterizations = table.parameterizations();
    let slopes = table.slopes();
    let slope = |p: Parameterization, step: u64| {
        slopes
            .iter()
            .find(|s| s.parameterization == p && s.step == step)
            .and_then(|s| s.slope)
    };
    let (sizes, values) = size_columns(&parameterizations, |p| {
        let first = table.series(p, 1, |r| r.residual);
        let later = table.series(p, last, |r| r.residual);
        first
            .iter()
            .map(|&(size, a)| {
                let b = later.iter().find(|(s, _)| *s == size).map(|(_, v)| *v);
                let text = match b {
                    Some(b) if last > 1 => format!("{} / {}", fmt_real(a), fmt_real(b)),
                    _ => fmt_real(a),
                };
                (size, text)
            })
            .collect()
    });
    CoordView {
        axis: match table.axis {
            CoordAxis::Depth => "depth",
            CoordAxis::Width => "width",
        },
        size_label: match table.axis {
            CoordAxis::Depth => "Depth L",
            CoordAxis::Width => "Width N",
        },
        last_step: last,
        first_chart: chart_or_message(diagnostic_charts::coord_chart(table, 1)),
        last_chart: chart_or_message(diagnostic_charts::coord_chart(table, last)),
        slopes: parameterizations
            .iter()
            .map(|&p| SlopeRow {
                parameterization: p.name(),
                color: diagnostic_charts::parameterization_css_color(p),
                slopes: vec![slope_text(slope(p, 1)), slope_text(slope(p, last))],
                expected: coord_expectation(table.axis, p),
            })
            .collect(),
        sizes,
        values,
    }
}

fn linearization_view(table: &LinearizeTable) -> LinearizationView {
    let parameterizations = table.parameterizations();
    let (depths, values) = size_columns(&parameterizations, |p| {
        table
            .series(p)
            .into_iter()
            .map(|(depth, d)| (depth, fmt_real(d)))
            .collect()
    });
    let (_, other_values) = size_columns(&parameterizations, |p| {
        table
            .rows
            .iter()
            .filter(|r| r.parameterization == p)
            .map(|r| {
                let text = format!(
                    "{} / {}",
                    fmt_real(r.attention_distance),
                    fmt_real(r.block_distance)
                );
                (r.depth as f64, text)
            })
            .collect()
    });
    LinearizationView {
        chart: chart_or_message(diagnostic_charts::linearization_chart(table)),
        lr: fmt_real(table.lr),
        step: fmt_real(table.finite_difference_step),
        depths,
        values,
        other_values,
        slopes: parameterizations
            .iter()
            .map(|&p| {
                let slopes = table.slopes_of(p);
                SlopeRow {
                    parameterization: p.name(),
                    color: diagnostic_charts::parameterization_css_color(p),
                    slopes: vec![
                        slope_text(slopes.and_then(|s| s.slope)),
                        slope_text(slopes.and_then(|s| s.attention_slope)),
                        slope_text(slopes.and_then(|s| s.block_slope)),
                    ],
                    expected: linearization_expectation(p),
                }
            })
            .collect(),
    }
}

/// A diagnostic's results as an HTML fragment (no page layout): for a succeeded coordinate
/// check, mean |final residual| against depth or width at step 1 and the last step (log-log
/// charts), the fitted exponents with the behaviour each parameterization should show, and the
/// values; for a succeeded linearization check, the distance against depth (log-log chart), the
/// values and the exponents. Other diagnostics get a sentence about their status.
pub(crate) fn results_html(record: &DiagnosticRecord) -> String {
    let mut template = ResultsTemplate {
        message: String::new(),
        coord: None,
        linearization: None,
    };
    let kind = DiagnosticKind::parse(&record.kind);
    match (record.status, &record.result, kind) {
        (DiagnosticStatus::Succeeded, Some(result), Some(kind)) => {
            let parsed = match kind {
                DiagnosticKind::CoordDepth | DiagnosticKind::CoordWidth => {
                    serde_json::from_value::<CoordTable>(result.clone())
                        .map(|table| template.coord = Some(coord_view(&table)))
                }
                DiagnosticKind::Linearization => {
                    serde_json::from_value::<LinearizeTable>(result.clone())
                        .map(|table| template.linearization = Some(linearization_view(&table)))
                }
            };
            if let Err(e) = parsed {
                template.message = format!("The stored result could not be read: {e}.");
            }
        }
        (DiagnosticStatus::Succeeded, _, _) => {
            template.message = "The diagnostic succeeded but stored no result it can show.".into();
        }
        (DiagnosticStatus::Queued, _, _) => {
            template.message = "Waiting for the diagnostics before it to finish.".into();
        }
        (DiagnosticStatus::Running, _, _) => {
            template.message = "Running: the results appear here when every model is done.".into();
        }
        (DiagnosticStatus::Failed, _, _) => {
            template.message = format!(
                "Failed: {}",
                record.error.as_deref().unwrap_or("no reason was recorded")
            );
        }
        (DiagnosticStatus::Interrupted, _, _) => {
            template.message =
                "Interrupted: the server stopped before it finished. Launch it again.".into();
        }
    }
    template.render().unwrap_or_else(|e| {
        tracing::error!("rendering a diagnostic's results failed: {e}");
        "<p>The results could not be rendered.</p>".into()
    })
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
    fn default_forms_give_the_default_options() {
        for kind in DiagnosticKind::ALL {
            let options = FormValues::defaults(kind).to_options(kind).unwrap();
            assert_eq!(options, kind.default_options(), "{kind}");
        }
    }

    #[test]
    fn posted_forms_become_options_or_name_the_bad_field() {
        let kind = DiagnosticKind::Linearization;
        let form = FormValues::from_pairs(
            kind,
            &pairs(&[
                ("kind", "linearization"),
                ("parameterizations", "depth-mup"),
                ("parameterizations", "completep"),
                ("depths", "2, 4,8,"),
                ("lr", "0.01"),
                ("seeds", ""),
                ("steps", "3"),
            ]),
        );
        let options = form.to_options(kind).unwrap();
        assert_eq!(options["depths"], serde_json::json!([2, 4, 8]));
        assert_eq!(
            options["parameterizations"],
            serde_json::json!(["depth-mup", "completep"])
        );
        assert_eq!(options["lr"], 0.01);
        assert!(!options.contains_key("seeds"), "empty takes the default");
        assert!(!options.contains_key("steps"), "not an option of this kind");
        let bad = FormValues::from_pairs(kind, &pairs(&[("depths", "2, deep")]));
        assert_eq!(bad.to_options(kind).unwrap_err().1, "depths");
        assert_eq!(
            culprit(
                DiagnosticKind::CoordWidth,
                "completep at width 100: width 100 is not a multiple of d_head 32"
            ),
            Some("widths")
        );
    }

    #[test]
    fn fragments_describe_every_status() {
        let record = |status, result: Option<Value>, error: Option<&str>| DiagnosticRecord {
            id: 1,
            kind: "linearization".into(),
            status,
            options: Value::Null,
            result,
            error: error.map(String::from),
            sweep_id: None,
            created_at: "2025-01-01T00:00:00Z".into(),
            started_at: None,
            finished_at: None,
        };
        assert!(results_html(&record(DiagnosticStatus::Queued, None, None)).contains("Waiting"));
        assert!(
            results_html(&record(
                DiagnosticStatus::Failed,
                None,
                Some("out of memory")
            ))
            .contains("out of memory")
        );
        let garbled = record(
            DiagnosticStatus::Succeeded,
            Some(serde_json::json!({"rows": 3})),
            None,
        );
        assert!(results_html(&garbled).contains("could not be read"));
    }
}
