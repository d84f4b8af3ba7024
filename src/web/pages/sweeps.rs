//! Sweeps: the new-sweep form (`GET, POST /sweeps/new`), one sweep's page (`/sweeps/{id}`)
//! and the list of every sweep (`GET /sweeps`).

use super::{
    FieldView, Fieldset, Page, PageError, SelectOption, flatten, fmt_count, fmt_loss, fmt_opt,
    fmt_real, fmt_time, mentions, parse_whole, render, same_origin, shape, status_text, value_text,
};
use crate::numbers::significant;
use crate::store::{RunRecord, StoredStatus};
use crate::train::RunConfig;
use crate::web::AppState;
use crate::web::charts;
use crate::web::error::ApiError;
use askama::Template;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The parameterizations a sweep form offers (a custom alpha needs a value per run).
const SWEEP_PARAMETERIZATIONS: [(&str, &str); 4] = [
    ("sp", "SP"),
    ("mup", "muP"),
    ("depth-mup", "depth-muP (alpha 0.5)"),
    ("completep", "CompleteP (alpha 1)"),
];

#[derive(Clone, Copy, PartialEq)]
enum SweepFieldKind {
    /// Whole numbers separated by commas (a grid axis).
    IntegerList,
    /// Numbers separated by commas (a grid axis).
    RealList,
    Integer,
    Real,
    Text,
}

/// One text input of the sweep form.
struct SweepField {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: SweepFieldKind,
}

const fn sweep_field(
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: SweepFieldKind,
) -> SweepField {
    SweepField {
        name,
        label,
        hint,
        kind,
    }
}

const SWEEP_NAME_FIELD: SweepField = sweep_field("name", "Name", "required", SweepFieldKind::Text);

const SWEEP_GRID_FIELDS: [SweepField; 4] = [
    sweep_field(
        "widths",
        "Widths N",
        "separated by commas; each a multiple of d_head",
        SweepFieldKind::IntegerList,
    ),
    sweep_field(
        "depths",
        "Depths L (blocks)",
        "separated by commas",
        SweepFieldKind::IntegerList,
    ),
    sweep_field(
        "lrs",
        "Base learning rates",
        "separated by commas, e.g. 0.003, 0.01, 0.03",
        SweepFieldKind::RealList,
    ),
    sweep_field(
        "seeds",
        "Seeds",
        "separated by commas; empty means seed 0",
        SweepFieldKind::IntegerList,
    ),
];

const SWEEP_SHARED_FIELDS: [SweepField; 5] = [
    sweep_field(
        "d_head",
        "Head dimension d_head",
        "",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "context",
        "Context length T",
        "tokens per sequence",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "batch",
        "Batch (sequences per step)",
        "",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "tokens",
        "Training tokens",
        "leave empty to use tokens per parameter",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "tokens_per_param",
        "Tokens per parameter",
        "used when training tokens is empty",
        SweepFieldKind::Real,
    ),
];

const SWEEP_BASE_FIELDS: [SweepField; 2] = [
    sweep_field(
        "base_width",
        "Base width N_base",
        "the shape the base learning rate refers to",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "base_depth",
        "Base depth L_base",
        "",
        SweepFieldKind::Integer,
    ),
];

const SWEEP_DATA_FIELDS: [SweepField; 2] = [
    sweep_field(
        "data_vocab",
        "Corpus vocabulary",
        "tokens of the built-in corpus, 16 to 65536",
        SweepFieldKind::Integer,
    ),
    sweep_field(
        "data_seed",
        "Corpus seed",
        "the corpus content (not the runs' seeds)",
        SweepFieldKind::Integer,
    ),
];

const SWEEP_LABEL_FIELDS: [SweepField; 1] = [sweep_field(
    "tags",
    "Tags",
    "optional, separated by commas; every run gets them",
    SweepFieldKind::Text,
)];

fn sweep_fields() -> impl Iterator<Item = &'static SweepField> {
    std::iter::once(&SWEEP_NAME_FIELD)
        .chain(&SWEEP_GRID_FIELDS)
        .chain(&SWEEP_SHARED_FIELDS)
        .chain(&SWEEP_BASE_FIELDS)
        .chain(&SWEEP_DATA_FIELDS)
        .chain(&SWEEP_LABEL_FIELDS)
}

/// The sweep form as typed: the checked parameterizations and every text field by name.
#[derive(Clone, Debug, Default)]
struct NewSweepForm {
    parameterizations: Vec<String>,
    values: BTreeMap<&'static str, String>,
}

/// Items of a comma-separated list, trimmed, empty ones dropped.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl NewSweepForm {
    /// The form pre-filled with the config defaults and a three-point learning-rate grid.
    fn defaults() -> NewSweepForm {
        let c = RunConfig::default();
        let (data_seed, data_vocab) = match c.data {
            crate::data::DataSource::Builtin { seed, vocab } => (seed, vocab),
            _ => (0, 256),
        };
        let values = [
            ("widths", c.width.to_string()),
            ("depths", c.depth.to_string()),
            ("lrs", "0.003, 0.01, 0.03".to_string()),
            ("seeds", "0".to_string()),
            ("d_head", c.d_head.to_string()),
            ("context", c.context.to_string()),
            ("batch", c.batch.to_string()),
            ("tokens_per_param", c.tokens_per_param.to_string()),
            ("base_width", c.base_width.to_string()),
            ("base_depth", c.base_depth.to_string()),
            ("data_vocab", data_vocab.to_string()),
            ("data_seed", data_seed.to_string()),
        ]
        .into_iter()
        .collect();
        NewSweepForm {
            parameterizations: vec![c.parameterization.name().to_string()],
            values,
        }
    }

    /// Reads posted pairs: repeated `parameterizations`, the last value of every other field.
    fn from_pairs(pairs: Vec<(String, String)>) -> NewSweepForm {
        let mut form = NewSweepForm::default();
        for (key, value) in pairs {
            if key == "parameterizations" {
                form.parameterizations.push(value);
            } else if let Some(field) = sweep_fields().find(|f| f.name == key) {
                form.values.insert(field.name, value);
            }
        }
        form
    }

    fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", |v| v.trim())
    }

    /// How many runs the grid makes (an empty seed list counts as one seed).
    fn grid_size(&self) -> usize {
        let count = |name| list_items(self.value(name)).count();
        self.parameterizations.len()
            * count("widths")
            * count("depths")
            * count("lrs")
            * count("seeds").max(1)
    }

    /// The create-sweep JSON body the API takes, or the message and the field at fault.
    fn to_json(&self) -> Result<Map<String, Value>, (String, &'static str)> {
        let number = |field: &SweepField, raw: &str| -> Result<Value, (String, &'static str)> {
            match field.kind {
                SweepFieldKind::Integer | SweepFieldKind::IntegerList => {
                    parse_whole(raw).map(Value::from).ok_or_else(|| {
                        (
                            format!(
                                "{} must be whole numbers of at least 0, got '{raw}'",
                                field.name
                            ),
                            field.name,
                        )
                    })
                }
                _ => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Value::from)
                    .ok_or_else(|| {
                        (
                            format!("{} must be numbers, got '{raw}'", field.name),
                            field.name,
                        )
                    }),
            }
        };
        let mut body = Map::new();
        body.insert("name".into(), self.value("name").into());
        body.insert(
            "parameterizations".into(),
            self.parameterizations
                .iter()
                .map(|p| Value::String(p.clone()))
                .collect(),
        );
        let mut config = Map::new();
        let mut data = Map::new();
        data.insert("kind".into(), "builtin".into());
        data.insert("seed".into(), 0.into());
        data.insert("vocab".into(), 256.into());
        for field in sweep_fields() {
            let raw = self.value(field.name);
            if raw.is_empty() {
                continue;
            }
            let value = match field.kind {
                SweepFieldKind::IntegerList | SweepFieldKind::RealList => Value::Array(
                    list_items(raw)
                        .map(|item| number(field, item))
                        .collect::<Result<_, _>>()?,
                ),
                SweepFieldKind::Integer | SweepFieldKind::Real => number(field, raw)?,
                SweepFieldKind::Text => Value::String(raw.into()),
            };
            match field.name {
                "name" => {}
                "tags" => {
                    body.insert(
                        "tags".into(),
                        list_items(raw).map(|t| Value::String(t.into())).collect(),
                    );
                }
                "widths" | "depths" | "lrs" | "seeds" => {
                    body.insert(field.name.into(), value);
                }
                "data_vocab" => {
                    data.insert("vocab".into(), value);
                }
                "data_seed" => {
                    data.insert("seed".into(), value);
                }
                name => {
                    config.insert(name.into(), value);
                }
            }
        }
        config.insert("data".into(), Value::Object(data));
        body.insert("config".into(), Value::Object(config));
        Ok(body)
    }
}

/// The fields a sweep error message is about (the grid point it names is not a culprit).
fn sweep_culprits(message: &str) -> Vec<&'static str> {
    let reason = match message.strip_prefix("grid point ") {
        Some(rest) => rest.split_once(": ").map_or(rest, |(_, reason)| reason),
        None => message,
    };
    let words: [(&str, &[&str]); 6] = [
        (
            "parameterizations",
            &["parameterizations", "parameterization"],
        ),
        ("widths", &["widths", "width"]),
        ("depths", &["depths", "depth"]),
        ("lrs", &["lrs", "lr"]),
        ("seeds", &["seeds", "seed"]),
        ("data_vocab", &["vocab", "data_vocab"]),
    ];
    let mut culprits: Vec<&'static str> = words
        .iter()
        .filter(|(_, names)| names.iter().any(|n| mentions(reason, n)))
        .map(|(field, _)| *field)
        .collect();
    for name in sweep_fields().map(|f| f.name) {
        if !culprits.contains(&name) && mentions(reason, name) {
            culprits.push(name);
        }
    }
    culprits
}

#[derive(Template)]
#[template(path = "new_sweep.html")]
struct NewSweepTemplate {
    page: Page,
    name: FieldView,
    parameterizations: Vec<SelectOption>,
    parameterizations_invalid: bool,
    fieldsets: Vec<Fieldset>,
    grid_size: usize,
    max_runs: usize,
    error: String,
}

fn new_sweep_template(form: &NewSweepForm, error: &str, invalid: &[&str]) -> NewSweepTemplate {
    let view = |field: &SweepField| FieldView {
        name: field.name,
        label: field.label,
        hint: field.hint,
        input_type: match field.kind {
            SweepFieldKind::Integer | SweepFieldKind::Real => "number",
            _ => "text",
        },
        step: if field.kind == SweepFieldKind::Integer {
            "1"
        } else {
            "any"
        },
        value: form.values.get(field.name).cloned().unwrap_or_default(),
        invalid: invalid.contains(&field.name),
    };
    let fieldset = |legend, fields: &[SweepField]| Fieldset {
        legend,
        fields: fields.iter().map(view).collect(),
        advanced: false,
        open: true,
    };
    NewSweepTemplate {
        page: Page::new("New sweep", "sweeps"),
        name: view(&SWEEP_NAME_FIELD),
        parameterizations: SWEEP_PARAMETERIZATIONS
            .iter()
            .map(|(value, label)| SelectOption {
                value: value.to_string(),
                label: label.to_string(),
                selected: form.parameterizations.iter().any(|p| p == value),
            })
            .collect(),
        parameterizations_invalid: invalid.contains(&"parameterizations"),
        fieldsets: vec![
            fieldset("Grid: one run per combination", &SWEEP_GRID_FIELDS),
            fieldset("Shared settings", &SWEEP_SHARED_FIELDS),
            fieldset("Base shape", &SWEEP_BASE_FIELDS),
            fieldset("Data: built-in corpus", &SWEEP_DATA_FIELDS),
            fieldset("Labels", &SWEEP_LABEL_FIELDS),
        ],
        grid_size: form.grid_size(),
        max_runs: crate::web::sweeps::MAX_SWEEP_RUNS,
        error: error.to_string(),
    }
}

pub(super) async fn new_sweep_form() -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &new_sweep_template(&NewSweepForm::defaults(), "", &[]),
    )
}

/// `POST /sweeps/new`: validates the grid as the API does, queues every run, then 303 to the
/// sweep's page; an invalid sweep shows the form again with the values typed and the reason (422).
pub(super) async fn new_sweep_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(pairs) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let form = NewSweepForm::from_pairs(pairs);
    let refuse = |message: String, invalid: Vec<&str>| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &new_sweep_template(&form, &message, &invalid),
        )
    };
    let body = match form.to_json() {
        Ok(body) => body,
        Err((message, field)) => return refuse(message, vec![field]),
    };
    let (name, spec, runs) = match crate::web::sweeps::build_sweep(body, &state.settings).await {
        Ok(built) => built,
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(e) => {
            let message = e.to_string();
            let invalid = sweep_culprits(&message);
            return refuse(message, invalid);
        }
    };
    let (id, _) = state.store.create_sweep(&name, &spec, &runs).await?;
    state.jobs.wake();
    Ok(Redirect::to(&format!("/sweeps/{id}")).into_response())
}

// ---------------------------------------------------------------------------------------------
// GET /sweeps/{id}: one sweep

struct SweepRunRow {
    id: i64,
    href: String,
    name: String,
    parameterization: String,
    shape: String,
    lr: String,
    seed: String,
    status: String,
    status_class: &'static str,
    final_val_loss: String,
}

/// A sweep's progress: runs in all, ended, and the count of each status present.
/// How far a set of runs (a sweep's, a study's) has got: how many ended, a count per status.
pub(super) struct Progress {
    pub(super) total: usize,
    pub(super) finished: usize,
    pub(super) counts: Vec<(&'static str, usize)>,
}

impl Progress {
    pub(super) fn of(runs: &[RunRecord]) -> Progress {
        Progress {
            total: runs.len(),
            finished: runs.iter().filter(|r| r.status.is_final()).count(),
            counts: StoredStatus::ALL
                .iter()
                .map(|s| (s.name(), runs.iter().filter(|r| r.status == *s).count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    pub(super) fn percent(&self) -> usize {
        (self.finished * 100).checked_div(self.total).unwrap_or(0)
    }
}

/// One shape of a confirming sweep: its predicted loss against the loss observed.
struct PlanCheckRow {
    shape: String,
    recommended: bool,
    tokens: String,
    predicted: String,
    observed: String,
    /// `yes`, `no`, or empty while unobserved or without an interval.
    inside: &'static str,
}

/// The closed loop of a sweep created from a plan (its spec's `plan`): predicted against
/// observed losses per shape, and whether the recommendation held.
struct PlanCheckView {
    summary: String,
    rows: Vec<PlanCheckRow>,
    verdict: String,
    /// `Some(true)` held, `Some(false)` did not, `None` not yet known.
    held: Option<bool>,
}

/// Relative noise of comparing two runs' losses: two standard deviations of the difference
/// of two log-losses, each scattered as the frontier runs scatter about the fit
/// (`2 sqrt(2) rmse`), and never below 0.2%.
fn comparison_noise(rmse_log_loss: f64) -> f64 {
    (2.0 * std::f64::consts::SQRT_2 * rmse_log_loss).max(0.002)
}

/// What the plan check reads of a run.
struct CheckedRun<'a> {
    parameterization: &'a str,
    shape: (Option<i64>, Option<i64>),
    status: StoredStatus,
    loss: Option<f64>,
}

/// Reads a stored plan check against the sweep's runs. `None` when the spec has no plan.
fn plan_check_view(plan: &Value, runs: &[RunRecord]) -> Option<PlanCheckView> {
    let runs: Vec<CheckedRun> = runs
        .iter()
        .map(|r| CheckedRun {
            parameterization: &r.parameterization,
            shape: (r.width, r.depth),
            status: r.status,
            loss: r.final_val_loss,
        })
        .collect();
    check_plan(plan, &runs)
}

/// Predicted against observed, per shape of `plan` (see [`plan_check_view`]).
fn check_plan(plan: &Value, runs: &[CheckedRun]) -> Option<PlanCheckView> {
    let parameterization = plan.get("parameterization")?.as_str()?;
    let shape_of = |v: &Value| Some((v.get("width")?.as_i64()?, v.get("depth")?.as_i64()?));
    let recommended = shape_of(plan.get("recommended")?)?;
    let noise = comparison_noise(plan.get("rmse_log_loss")?.as_f64()?);
    let budget = plan.get("budget_flops")?.as_f64()?;
    let mut rows = Vec::new();
    // (shape, observed mean loss) of every shape whose runs all succeeded.
    let mut observed: Vec<((i64, i64), f64)> = Vec::new();
    let mut pending = 0;
    let mut inside_count = (0, 0);
    for prediction in plan.get("predictions")?.as_array()? {
        let shape = shape_of(prediction)?;
        let loss = prediction.get("loss")?.as_f64()?;
        let interval = prediction
            .get("interval")
            .and_then(Value::as_array)
            .and_then(|b| Some((b.first()?.as_f64()?, b.get(1)?.as_f64()?)));
        let runs: Vec<&CheckedRun> = runs
            .iter()
            .filter(|r| {
                r.parameterization == parameterization && r.shape == (Some(shape.0), Some(shape.1))
            })
            .collect();
        let losses: Vec<f64> = runs
            .iter()
            .filter(|r| r.status == StoredStatus::Succeeded)
            .filter_map(|r| r.loss)
            .collect();
        let all_ended = !runs.is_empty() && runs.iter().all(|r| r.status.is_final());
        let (observed_text, inside) =
            if !runs.is_empty() && runs.iter().any(|r| r.status == StoredStatus::Diverged) {
                ("diverged".to_string(), "")
            } else if all_ended && !losses.is_empty() {
                let mean = losses.iter().sum::<f64>() / losses.len() as f64;
                observed.push((shape, mean));
                let inside = match interval {
                    Some((low, high)) => {
                        inside_count.1 += 1;
                        if (low..=high).contains(&mean) {
                            inside_count.0 += 1;
                            "yes"
                        } else {
                            "no"
                        }
                    }
                    None => "",
                };
                (fmt_loss(mean), inside)
            } else {
                pending += 1;
                ("—".to_string(), "")
            };
        rows.push(PlanCheckRow {
            shape: format!("{} x {}", shape.0, shape.1),
            recommended: shape == recommended,
            tokens: prediction
                .get("tokens")
                .and_then(Value::as_f64)
                .map_or("—".into(), fmt_count),
            predicted: match interval {
                Some((low, high)) => {
                    format!("{} [{}, {}]", fmt_loss(loss), fmt_loss(low), fmt_loss(high))
                }
                None => fmt_loss(loss),
            },
            observed: observed_text,
            inside,
        });
    }
    let shape_text = |s: (i64, i64)| format!("{} x {}", s.0, s.1);
    let best = observed.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
    let mine = observed
        .iter()
        .find(|(s, _)| *s == recommended)
        .map(|o| o.1);
    let (verdict, held) = match (mine, best) {
        _ if pending > 0 => (
            format!("Waiting for {pending} of {} shapes to finish.", rows.len()),
            None,
        ),
        (Some(mine), Some((best_shape, best_loss))) => {
            let gap = mine / best_loss - 1.0;
            let coverage = if inside_count.1 > 0 {
                format!(
                    " {} of {} observed losses lie inside their predicted intervals.",
                    inside_count.0, inside_count.1
                )
            } else {
                String::new()
            };
            if gap <= noise {
                let against = if best_shape == recommended {
                    "it is the best shape trained".to_string()
                } else {
                    format!(
                        "within noise ({}%) of the best shape trained, {} at {}",
                        significant(noise * 100.0),
                        shape_text(best_shape),
                        fmt_loss(best_loss)
                    )
                };
                (
                    format!(
                        "The recommendation held: {} reached {}; {against}.{coverage}",
                        shape_text(recommended),
                        fmt_loss(mine)
                    ),
                    Some(true),
                )
            } else {
                (
                    format!(
                        "The recommendation did not hold: {} reached {}, {}% below the \
                         recommended {} ({}), more than the noise of a comparison ({}%).{coverage}",
                        shape_text(best_shape),
                        fmt_loss(best_loss),
                        significant(gap * 100.0),
                        shape_text(recommended),
                        fmt_loss(mine),
                        significant(noise * 100.0)
                    ),
                    Some(false),
                )
            }
        }
        _ => (
            "The recommended shape has no finished loss, so the recommendation cannot be checked."
                .to_string(),
            Some(false),
        ),
    };
    Some(PlanCheckView {
        summary: format!(
            "This sweep was created by the planner for a budget of {} FLOPs: {parameterization} \
             on the recommended shape ({}) and on a deeper and a wider shape of the same budget \
             (N:L {} times smaller and larger where the budget allows, else {} times), each \
             predicted from the runs the plan was fitted on.",
            significant(budget),
            shape_text(recommended),
            significant(crate::web::recommend::CONFIRM_RATIO_STEP),
            significant(crate::web::recommend::CONFIRM_RATIO_STEP.sqrt())
        ),
        rows,
        verdict,
        held,
    })
}

#[derive(Template)]
#[template(path = "sweep.html")]
struct SweepTemplate {
    page: Page,
    check: Option<PlanCheckView>,
    id: i64,
    name: String,
    created: String,
    is_final: bool,
    grid: Vec<(&'static str, String)>,
    shared: Vec<(String, String)>,
    tags: Vec<String>,
    progress: Progress,
    runs: Vec<SweepRunRow>,
    chart: String,
}

/// A grid axis of a stored spec as text: `64, 128`; one list per parameterization as
/// `mup: 0.008; completep: 0.008, 0.016`.
fn spec_list(spec: &Value, key: &str) -> String {
    match spec.get(key) {
        Some(list @ Value::Array(_)) => value_text(list),
        Some(Value::Object(lists)) => lists
            .iter()
            .map(|(name, list)| format!("{name}: {}", value_text(list)))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "—".into(),
    }
}

fn parameterization_label(run: &RunRecord) -> String {
    match run.alpha {
        Some(alpha) if run.parameterization == "alpha" => format!("alpha {}", fmt_real(alpha)),
        _ => run.parameterization.clone(),
    }
}

/// The chart's lines: one per (parameterization, width, depth) of the succeeded runs, final
/// validation loss averaged over seeds at each learning rate. Widths appear in the labels only
/// when the sweep has several.
fn lr_lines(runs: &[RunRecord]) -> Vec<(String, Vec<(f64, f64)>)> {
    type Key = (String, i64, i64);
    let mut order: Vec<Key> = Vec::new();
    let mut sums: BTreeMap<Key, Vec<(f64, f64, usize)>> = BTreeMap::new();
    for run in runs {
        let (Some(lr), Some(loss), Some(width), Some(depth)) =
            (run.lr, run.final_val_loss, run.width, run.depth)
        else {
            continue;
        };
        if run.status != StoredStatus::Succeeded || !loss.is_finite() {
            continue;
        }
        let key = (parameterization_label(run), width, depth);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        let points = sums.entry(key).or_default();
        match points.iter_mut().find(|(x, _, _)| *x == lr) {
            Some(point) => {
                point.1 += loss;
                point.2 += 1;
            }
            None => points.push((lr, loss, 1)),
        }
    }
    let mut widths: Vec<i64> = runs.iter().filter_map(|r| r.width).collect();
    widths.sort_unstable();
    widths.dedup();
    order.sort_by(|a, b| (&a.0, a.2, a.1).cmp(&(&b.0, b.2, b.1)));
    order
        .into_iter()
        .map(|key| {
            let label = if widths.len() > 1 {
                format!("{}, {} × {}", key.0, key.1, key.2)
            } else {
                format!("{}, depth {}", key.0, key.2)
            };
            let points = sums[&key]
                .iter()
                .map(|(lr, sum, n)| (*lr, sum / *n as f64))
                .collect();
            (label, points)
        })
        .collect()
}

pub(super) async fn sweep_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, PageError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| PageError::not_found("there is no such sweep: sweep ids are integers"))?;
    let sweep = state.store.sweep(id).await?;
    let (runs, _) = state
        .store
        .runs(&crate::web::sweeps::sweep_runs_query(id))
        .await?;
    let progress = Progress::of(&runs);
    let spec = &sweep.spec;
    // A study's settings, or the grid of a sweep.
    let lists = spec
        .get("settings")
        .filter(|s| s.is_object())
        .unwrap_or(spec);
    let seeds = match lists.get("seeds") {
        Some(_) => spec_list(lists, "seeds"),
        None => "0".into(),
    };
    let grid: Vec<(&'static str, String)> = [
        ("Parameterizations", "parameterizations"),
        ("Target parameter counts", "params"),
        ("Widths", "widths"),
        ("Depths", "depths"),
        ("Base learning rates", "lrs"),
    ]
    .into_iter()
    .filter(|(_, key)| lists.get(*key).is_some())
    .map(|(label, key)| (label, spec_list(lists, key)))
    .chain(spec.get("shapes").map(|shapes| {
        let text = shapes
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{} x {}", s["width"], s["depth"]))
            .collect::<Vec<_>>()
            .join(", ");
        ("Shapes", text)
    }))
    .chain(std::iter::once(("Seeds", seeds)))
    .collect();
    let tags = match spec.get("tags") {
        Some(Value::Array(tags)) => tags
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let lines = lr_lines(&runs);
    let chart = charts::lr_sweep_chart(&lines).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        charts::message_svg("the chart could not be drawn")
    });
    let rows = runs
        .iter()
        .map(|run| SweepRunRow {
            id: run.id,
            href: format!("/runs/{}", run.id),
            name: run.name.clone().unwrap_or_default(),
            parameterization: parameterization_label(run),
            shape: shape(run),
            lr: fmt_opt(run.lr, fmt_real),
            seed: run.seed.map_or("—".into(), |s| s.to_string()),
            status: status_text(run),
            status_class: run.status.name(),
            final_val_loss: fmt_opt(run.final_val_loss, fmt_loss),
        })
        .collect();
    let template = SweepTemplate {
        page: Page::new(format!("Sweep #{id} {}", sweep.name), "sweeps"),
        check: spec
            .get("plan")
            .and_then(|plan| plan_check_view(plan, &runs)),
        id,
        name: sweep.name.clone(),
        created: fmt_time(&sweep.created_at),
        is_final: progress.finished == progress.total,
        grid,
        shared: match (spec.get("config"), spec.get("settings")) {
            (Some(config), _) => flatten(config).into_iter().collect(),
            // A study's settings other than its lists.
            (None, Some(Value::Object(settings))) => {
                let scalars: Map<String, Value> = settings
                    .iter()
                    .filter(|(_, v)| !v.is_array())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                flatten(&Value::Object(scalars)).into_iter().collect()
            }
            _ => Vec::new(),
        },
        tags,
        progress,
        runs: rows,
        chart,
    };
    render(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------------------------
// GET /sweeps: every sweep

struct SweepRow {
    href: String,
    id: i64,
    name: String,
    grid: String,
    created: String,
    total: i64,
    finished: i64,
    percent: i64,
}

#[derive(Template)]
#[template(path = "sweeps.html")]
struct SweepsTemplate {
    page: Page,
    sweeps: Vec<SweepRow>,
}

/// The lists of a sweep's spec as counts, `2 parameterizations × 3 shapes × 5 LRs × 1 seed`;
/// a study's from its settings, prefixed with its kind and size.
fn grid_summary(spec: &Value) -> String {
    let (lists, prefix) = match spec.get("settings") {
        Some(settings @ Value::Object(_)) => (
            settings,
            format!(
                "{} ({}): ",
                spec["kind"].as_str().unwrap_or("study"),
                spec["size"].as_str().unwrap_or("custom")
            ),
        ),
        _ => (spec, String::new()),
    };
    let axes = [
        ("parameterizations", "parameterization", "parameterizations"),
        ("params", "parameter count", "parameter counts"),
        ("shapes", "shape", "shapes"),
        ("widths", "width", "widths"),
        ("depths", "depth", "depths"),
        ("lrs", "LR", "LRs"),
        ("seeds", "seed", "seeds"),
    ];
    let parts: Vec<String> = axes
        .iter()
        .filter_map(|(key, one, many)| {
            // A sweep without seeds trains seed 0.
            let n = match lists.get(*key) {
                None if *key == "seeds" && lists.get("parameterizations").is_some() => 1,
                // One list per parameterization: the longest.
                Some(Value::Object(by)) => (by.values())
                    .filter_map(|l| Some(l.as_array()?.len()))
                    .max()?,
                value => value?.as_array()?.len(),
            };
            Some(format!("{n} {}", if n == 1 { one } else { many }))
        })
        .collect();
    if parts.is_empty() {
        return format!("{prefix}diagnostics")
            .trim_end_matches(": ")
            .to_string();
    }
    format!("{prefix}{}", parts.join(" × "))
}

pub(super) async fn sweeps_list(State(state): State<AppState>) -> Result<Response, PageError> {
    let sweeps = state
        .store
        .sweeps()
        .await?
        .into_iter()
        .map(|(sweep, total, finished)| SweepRow {
            href: format!("/sweeps/{}", sweep.id),
            id: sweep.id,
            name: sweep.name.clone(),
            grid: grid_summary(&sweep.spec),
            created: fmt_time(&sweep.created_at),
            total,
            finished,
            percent: (finished * 100).checked_div(total).unwrap_or(0),
        })
        .collect();
    render(
        StatusCode::OK,
        &SweepsTemplate {
            page: Page::new("Sweeps", "sweeps"),
            sweeps,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_and_studies_are_summarised_by_their_real_lists() {
        let grid = serde_json::json!({
            "parameterizations": ["mup", "completep"], "widths": [64], "depths": [2, 4],
            "lrs": [0.01, 0.02, 0.04], "seeds": [0],
        });
        assert_eq!(
            grid_summary(&grid),
            "2 parameterizations × 1 width × 2 depths × 3 LRs × 1 seed"
        );
        let listed = serde_json::json!({
            "parameterizations": ["completep"], "shapes": [{"width": 64, "depth": 4}, {"width": 32, "depth": 16}],
            "lrs": [0.01],
        });
        assert_eq!(
            grid_summary(&listed),
            "1 parameterization × 2 shapes × 1 LR × 1 seed"
        );
        let study = serde_json::json!({
            "kind": "compute-efficiency", "size": "default",
            "settings": {"parameterizations": ["mup", "completep"], "params": [1, 2, 3, 4],
                         "depths": [2, 4, 8], "lrs": [0.01, 0.009], "seeds": [0], "d_head": 16},
        });
        assert_eq!(
            grid_summary(&study),
            "compute-efficiency (default): 2 parameterizations × 4 parameter counts × 3 depths × 2 LRs × 1 seed"
        );
    }

    #[test]
    fn a_plan_check_says_whether_the_recommendation_held() {
        let plan = serde_json::json!({
            "budget_flops": 6e12, "parameterization": "completep",
            "recommended": {"width": 64, "depth": 4}, "rmse_log_loss": 0.002,
            "predictions": [
                {"width": 64, "depth": 4, "tokens": 4e6, "loss": 3.0, "interval": [2.95, 3.05]},
                {"width": 32, "depth": 16, "tokens": 4e6, "loss": 3.05, "interval": [3.0, 3.1]},
                {"width": 128, "depth": 1, "tokens": 4e6, "loss": 3.08, "interval": null},
            ],
        });
        let run = |shape: (i64, i64), status, loss| CheckedRun {
            parameterization: "completep",
            shape: (Some(shape.0), Some(shape.1)),
            status,
            loss: Some(loss),
        };
        let done = StoredStatus::Succeeded;
        // Within the noise (2 sqrt(2) 0.2% = 0.57%) of a better shape: held.
        let runs = [
            run((64, 4), done, 3.010),
            run((32, 16), done, 3.000),
            run((128, 1), done, 3.2),
        ];
        let check = check_plan(&plan, &runs).unwrap();
        assert_eq!(check.held, Some(true), "{}", check.verdict);
        assert!(
            check.verdict.contains("within noise (0.566%)"),
            "{}",
            check.verdict
        );
        assert!(
            check.verdict.contains("2 of 2 observed losses"),
            "{}",
            check.verdict
        );
        assert!(check.rows[0].recommended && !check.rows[1].recommended);
        assert_eq!(check.rows[0].inside, "yes");
        assert_eq!(check.rows[2].inside, "");
        // A shape 1% better than the recommended one: not held.
        let runs = [
            run((64, 4), done, 3.03),
            run((32, 16), done, 3.0),
            run((128, 1), done, 3.2),
        ];
        let check = check_plan(&plan, &runs).unwrap();
        assert_eq!(check.held, Some(false), "{}", check.verdict);
        assert!(
            check.verdict.contains("32 x 16 reached 3.0000, 1% below"),
            "{}",
            check.verdict
        );
        // Unfinished or diverged shapes.
        let runs = [
            run((64, 4), StoredStatus::Running, 3.0),
            run((32, 16), StoredStatus::Diverged, 9.0),
        ];
        let check = check_plan(&plan, &runs).unwrap();
        assert_eq!(check.held, None);
        assert_eq!(check.verdict, "Waiting for 2 of 3 shapes to finish.");
        assert_eq!(check.rows[1].observed, "diverged");
        // Other parameterizations' runs do not count; a spec without a plan has no check.
        let other = [CheckedRun {
            parameterization: "mup",
            ..run((64, 4), done, 2.0)
        }];
        assert_eq!(check_plan(&plan, &other).unwrap().held, None);
        assert!(check_plan(&serde_json::json!({}), &runs).is_none());
    }

    #[test]
    fn the_sweep_form_builds_the_api_body() {
        let mut form = NewSweepForm::defaults();
        form.values.insert("name", " lr scan ".into());
        form.values.insert("widths", "64, 128,".into());
        form.values.insert("seeds", "".into());
        form.values.insert("tags", "a, b".into());
        form.values.insert("tokens", "2560".into());
        form.parameterizations = vec!["mup".into(), "completep".into()];
        assert_eq!(form.grid_size(), 2 * 2 * 3);
        let body = form.to_json().unwrap();
        assert_eq!(body["name"], "lr scan");
        assert_eq!(body["widths"], serde_json::json!([64, 128]));
        assert_eq!(body["lrs"], serde_json::json!([0.003, 0.01, 0.03]));
        assert!(
            !body.contains_key("seeds"),
            "empty seeds take the API's default"
        );
        assert_eq!(
            body["parameterizations"],
            serde_json::json!(["mup", "completep"])
        );
        assert_eq!(body["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(body["config"]["tokens"], 2560);
        assert_eq!(body["config"]["data"]["kind"], "builtin");
        assert!(!body["config"].as_object().unwrap().contains_key("widths"));
        form.values.insert("lrs", "0.01, fast".into());
        assert_eq!(form.to_json().unwrap_err().1, "lrs");
        let pairs = vec![
            ("parameterizations".to_string(), "sp".to_string()),
            ("parameterizations".to_string(), "mup".to_string()),
            ("widths".to_string(), "64".to_string()),
            ("bogus".to_string(), "x".to_string()),
        ];
        let posted = NewSweepForm::from_pairs(pairs);
        assert_eq!(posted.parameterizations, vec!["sp", "mup"]);
        assert_eq!(posted.value("widths"), "64");
    }

    #[test]
    fn sweep_errors_mark_the_fields_they_are_about() {
        let culprits = sweep_culprits(
            "grid point mup 100x2 lr 0.01 seed 0: width 100 is not a multiple of d_head 32",
        );
        assert_eq!(culprits, vec!["widths", "d_head"]);
        assert_eq!(
            sweep_culprits("'lrs' must be a non-empty list"),
            vec!["lrs"]
        );
    }
}
