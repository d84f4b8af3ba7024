//! Studies: the list with one launch card per kind (`GET /studies`, each size's estimated run
//! time shown before launch), a preview of custom settings (`GET /studies/preview`), the launch
//! (`POST /studies`) and one study's page (`GET /studies/{id}`) with its progress and results.

use super::analysis::Addition;
use super::sweeps::Progress;
use super::{
    Page, PageError, fmt_count, fmt_loss, fmt_opt, fmt_real, fmt_sci, fmt_time, render,
    same_origin, shape, status_text, value_text,
};
use crate::store::{DiagnosticRecord, DiagnosticStatus};
use crate::study::{StudyKind, StudySize, human_duration};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::studies::{StudyPlan, check_study, launch_study, plan_study};
use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The routes of these pages.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies", get(studies_page).post(launch))
        .route("/studies/preview", get(preview))
        .route("/studies/{id}", get(study_page))
}

// ---------------------------------------------------------------------------------------------
// The request a form carries

/// The fields of a launch or preview form: kind, size, name, settings overrides as JSON, and
/// one field `s.KEY` per setting of the preview form (these win over the JSON).
#[derive(Clone, Default)]
struct StudyForm {
    kind: String,
    size: String,
    name: String,
    settings: String,
    fields: Vec<(String, String)>,
}

/// The settings of `kind` at `size` before any override, as the preview form's type hints
/// (`None` for a kind whose settings are all objects: the coordinate check's).
fn default_settings(kind: &str, size: &str) -> Option<Map<String, Value>> {
    let size = StudySize::parse(size).unwrap_or_default();
    let value = match StudyKind::parse(kind)? {
        StudyKind::DepthTransfer => {
            serde_json::to_value(crate::study::DepthTransferSettings::for_size(size))
        }
        StudyKind::ComputeEfficiency => {
            serde_json::to_value(crate::study::ComputeEfficiencySettings::for_size(size))
        }
        StudyKind::CoordCheck => return None,
    };
    match value {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// A preview form field back as JSON, typed like its default `hint`: a list from
/// comma-separated items, a number or a string as written, an object from JSON.
fn setting_field_value(key: &str, text: &str, hint: Option<&Value>) -> Result<Value, ApiError> {
    let item = |t: &str| serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::from(t));
    Ok(match hint {
        Some(Value::Array(_)) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(item)
                .collect(),
        ),
        Some(Value::String(_)) => Value::from(text),
        Some(Value::Number(_) | Value::Bool(_)) => item(text),
        _ => serde_json::from_str(text).map_err(|e| {
            ApiError::Unprocessable(format!("setting '{key}' is not valid JSON: {e}"))
        })?,
    })
}

impl StudyForm {
    fn from_pairs(pairs: HashMap<String, String>) -> StudyForm {
        let get = |key: &str| {
            pairs
                .get(key)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let mut fields: Vec<(String, String)> = pairs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("s.")?.to_string(), v.trim().to_string())))
            .collect();
        fields.sort();
        StudyForm {
            kind: get("kind"),
            size: get("size"),
            name: get("name"),
            settings: get("settings"),
            fields,
        }
    }

    /// The JSON body `POST /api/v1/studies` would take.
    fn to_body(&self) -> Result<Map<String, Value>, ApiError> {
        let mut body = Map::new();
        body.insert("kind".into(), self.kind.clone().into());
        if !self.size.is_empty() {
            body.insert("size".into(), self.size.clone().into());
        }
        if !self.name.is_empty() {
            body.insert("name".into(), self.name.clone().into());
        }
        let mut settings = Map::new();
        if !self.settings.is_empty() {
            let Value::Object(given) = serde_json::from_str(&self.settings).map_err(|e| {
                ApiError::Unprocessable(format!("the settings are not valid JSON: {e}"))
            })?
            else {
                return Err(ApiError::Unprocessable(
                    "the settings must be a JSON object, e.g. {\"width\": 64}".into(),
                ));
            };
            settings = given;
        }
        let hints = default_settings(&self.kind, &self.size).unwrap_or_default();
        for (key, text) in &self.fields {
            settings.insert(key.clone(), setting_field_value(key, text, hints.get(key))?);
        }
        if !settings.is_empty() {
            body.insert("settings".into(), Value::Object(settings));
        }
        Ok(body)
    }
}

// ---------------------------------------------------------------------------------------------
// GET /studies: the list and the launch cards

struct SizeEstimate {
    size: &'static str,
    checked: bool,
    runs: String,
    flops: String,
    duration: String,
}

struct KindCard {
    kind: &'static str,
    title: &'static str,
    question: &'static str,
    what: &'static str,
    sizes: Vec<SizeEstimate>,
    /// Why the kind cannot be planned here, if it cannot.
    unavailable: String,
}

struct StudyRow {
    href: String,
    id: i64,
    name: String,
    kind: &'static str,
    created: String,
    total: i64,
    finished: i64,
    percent: i64,
}

#[derive(Template)]
#[template(path = "studies.html")]
struct StudiesTemplate {
    page: Page,
    cards: Vec<KindCard>,
    studies: Vec<StudyRow>,
    error: String,
    form: StudyFormView,
    calibration: String,
}

/// The values to put back into a refused form.
#[derive(Default)]
struct StudyFormView {
    kind: String,
    name: String,
    settings: String,
}

fn what_it_trains(kind: StudyKind) -> &'static str {
    match kind {
        StudyKind::DepthTransfer => {
            "Width 64, depths 1 to 16, seven base learning rates half an octave apart at every depth, three seeds, under muP and CompleteP (large: depth-muP and depth 32 too). Shows each parameterization's optimal learning rate per depth and its drift in octaves per doubling of depth, with intervals."
        }
        StudyKind::CoordCheck => {
            "Ten training steps of every depth (and width) at a fixed learning rate, measuring the residual stream, and the relative distance from linearization of a block after one step. No long training: minutes."
        }
        StudyKind::ComputeEfficiency => {
            "Four model sizes (12.5k to 100k parameters) at depths 2, 4 and 8, every model trained on 20 tokens per parameter, two seeds, under muP and CompleteP at their tuned learning rates. Fits loss against FLOPs, the FLOPs CompleteP saves at matched loss (from the runs both trained at the same compute), and the range of width:depth ratios within 1% of the best loss."
        }
    }
}

async fn cards(state: &AppState) -> (Vec<KindCard>, String) {
    let mut cards = Vec::new();
    let mut calibration = String::new();
    for kind in StudyKind::ALL {
        let mut sizes = Vec::new();
        let mut unavailable = String::new();
        for size in StudySize::ALL {
            let mut body = Map::new();
            body.insert("kind".into(), kind.name().into());
            body.insert("size".into(), size.name().into());
            match plan_study(state, body).await {
                Ok(plan) => {
                    calibration = calibration_text(&plan);
                    sizes.push(SizeEstimate {
                        size: size.name(),
                        checked: size == StudySize::Default,
                        runs: plan.estimate.runs.to_string(),
                        flops: fmt_sci(plan.estimate.flops),
                        duration: plan.estimate.duration.clone(),
                    });
                }
                Err(e) => unavailable = e.to_string(),
            }
        }
        cards.push(KindCard {
            kind: kind.name(),
            title: kind.title(),
            question: kind.question(),
            what: what_it_trains(kind),
            sizes,
            unavailable,
        });
    }
    (cards, calibration)
}

fn calibration_text(plan: &StudyPlan) -> String {
    let t = plan.estimate.throughput;
    let speed = format!(
        "{} GFLOP/s, {} ns per token, block and unit of width and {} s per run",
        fmt_real(t.flops_per_second / 1e9),
        fmt_real(t.seconds_per_width_token_block * 1e9),
        fmt_real(t.seconds_per_run)
    );
    if t.calibrated_on == 0 {
        format!(
            "Estimates assume {speed}, measured on a 2-core CPU; they are scaled to this server's own runs once {} have succeeded.",
            crate::study::MIN_CALIBRATION_RUNS
        )
    } else {
        format!(
            "Estimates use {speed}, scaled to the last {} succeeded runs on this server, one run at a time.",
            t.calibrated_on
        )
    }
}

async fn studies_template(
    state: &AppState,
    error: String,
    form: StudyFormView,
) -> Result<StudiesTemplate, PageError> {
    let studies = state
        .store
        .sweeps()
        .await?
        .into_iter()
        .filter_map(|(sweep, total, finished)| {
            let kind = StudyKind::parse(&sweep.kind)?;
            Some(StudyRow {
                href: format!("/studies/{}", sweep.id),
                id: sweep.id,
                name: sweep.name,
                kind: kind.title(),
                created: fmt_time(&sweep.created_at),
                total,
                finished,
                percent: (finished * 100).checked_div(total).unwrap_or(0),
            })
        })
        .collect();
    let (cards, calibration) = cards(state).await;
    Ok(StudiesTemplate {
        page: Page::new("Studies", "studies"),
        cards,
        studies,
        error,
        form,
        calibration,
    })
}

async fn studies_page(State(state): State<AppState>) -> Result<Response, PageError> {
    let template = studies_template(&state, String::new(), StudyFormView::default()).await?;
    render(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------------------------
// GET /studies/preview and POST /studies

#[derive(Template)]
#[template(path = "study_preview.html")]
struct PreviewTemplate {
    page: Page,
    kind: String,
    title: &'static str,
    size: &'static str,
    name: String,
    /// Every setting and its value as the form shows it.
    settings: Vec<(String, String)>,
    runs: usize,
    reused: usize,
    flops: String,
    duration: String,
    calibration: String,
}

async fn preview(
    State(state): State<AppState>,
    Query(pairs): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let form = StudyForm::from_pairs(pairs);
    let plan = match form.to_body() {
        Ok(body) => plan_study(&state, body).await,
        Err(e) => Err(e),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(e) => return refuse(&state, &form, e).await,
    };
    let template = PreviewTemplate {
        page: Page::new(format!("Preview: {}", plan.name), "studies"),
        kind: plan.kind.name().into(),
        title: plan.kind.title(),
        size: plan.size.name(),
        name: plan.name.clone(),
        settings: match &plan.settings {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), value_text(v)))
                .collect(),
            _ => Vec::new(),
        },
        runs: plan.estimate.runs,
        reused: plan.estimate.reused,
        flops: fmt_sci(plan.estimate.flops),
        duration: plan.estimate.duration.clone(),
        calibration: calibration_text(&plan),
    };
    render(StatusCode::OK, &template)
}

/// The studies page again, with the refusal and the submitted values.
async fn refuse(
    state: &AppState,
    form: &StudyForm,
    error: ApiError,
) -> Result<Response, PageError> {
    let view = StudyFormView {
        kind: form.kind.clone(),
        name: form.name.clone(),
        settings: form.settings.clone(),
    };
    let template = studies_template(state, error.to_string(), view).await?;
    render(StatusCode::UNPROCESSABLE_ENTITY, &template)
}

async fn launch(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(pairs) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let form = StudyForm::from_pairs(pairs);
    let planned = match form.to_body() {
        Ok(body) => match plan_study(&state, body).await {
            Ok(plan) => check_study(&state, plan).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let plan = match planned {
        Ok(plan) => plan,
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(e) => return refuse(&state, &form, e).await,
    };
    let (study, _) = launch_study(&state, &plan).await?;
    Ok(Redirect::to(&format!("/studies/{}", study.id)).into_response())
}

// ---------------------------------------------------------------------------------------------
// GET /studies/{id}

impl Progress {
    /// The progress of a study made of diagnostics.
    fn of_diagnostics(diagnostics: &[DiagnosticRecord]) -> Progress {
        Progress {
            total: diagnostics.len(),
            finished: diagnostics.iter().filter(|d| d.status.is_final()).count(),
            counts: DiagnosticStatus::ALL
                .iter()
                .map(|s| {
                    (
                        s.name(),
                        diagnostics.iter().filter(|d| d.status == *s).count(),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// A diagnostic kind as a section title.
fn diagnostic_title(kind: &str) -> &'static str {
    match kind {
        "coord-depth" => "Coordinate check over depth",
        "coord-width" => "Coordinate check over width",
        "linearization" => "Distance from linearization over depth",
        _ => "Diagnostic",
    }
}

struct StudyRunRow {
    href: String,
    id: i64,
    parameterization: String,
    shape: String,
    lr: String,
    status: String,
    status_class: &'static str,
    final_val_loss: String,
}

#[derive(Template)]
#[template(path = "study.html")]
struct StudyTemplate {
    page: Page,
    id: i64,
    name: String,
    title: &'static str,
    question: &'static str,
    size: String,
    created: String,
    estimate: String,
    remaining: String,
    is_final: bool,
    progress: Progress,
    /// What the progress counts: runs, or diagnostics.
    unit: &'static str,
    settings: Vec<(String, String)>,
    /// The kind's results, as HTML built by the analysis and diagnostics pages.
    results: String,
    /// Runs that would make a finished, inconclusive study conclusive.
    extension: Option<ExtensionOffer>,
    runs: Vec<StudyRunRow>,
}

/// The offer to extend a study, behind the preview's confirmation.
pub(super) struct ExtensionOffer {
    /// What the extension adds, as a sentence.
    pub what: String,
    pub href: String,
}

async fn study_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, PageError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| PageError::not_found("there is no such study: study ids are integers"))?;
    let study = state.store.sweep(id).await?;
    let Some(kind) = StudyKind::parse(&study.kind) else {
        return Ok(Redirect::to(&format!("/sweeps/{id}")).into_response());
    };
    let (runs, _) = state
        .store
        .runs(&crate::web::sweeps::sweep_runs_query(id))
        .await?;
    let diagnostics = state.store.diagnostics_of_sweep(id).await?;
    let progress = if kind == StudyKind::CoordCheck {
        Progress::of_diagnostics(&diagnostics)
    } else {
        Progress::of(&runs)
    };
    let estimate_seconds = study.spec["estimate"]["seconds"].as_f64();
    let unfinished = progress.total - progress.finished;
    let remaining = match estimate_seconds {
        Some(seconds) if unfinished > 0 && progress.total > 0 => format!(
            "about {} left",
            human_duration(seconds * unfinished as f64 / progress.total as f64)
        ),
        _ => String::new(),
    };
    let settings = study.spec["settings"]
        .as_object()
        .map(|s| {
            s.iter()
                .map(|(k, v)| (k.clone(), setting_text(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut extension = None;
    let results = match kind {
        StudyKind::CoordCheck => diagnostics
            .iter()
            .map(|d| {
                format!(
                    "<section class=\"analysis-section\"><h2><a href=\"/diagnostics/{}\">{}</a></h2>{}</section>",
                    d.id,
                    diagnostic_title(&d.kind),
                    super::diagnostics::results_html(d)
                )
            })
            .collect(),
        _ => {
            let (html, addition) = study_results(&state, kind, id).await;
            if let Some(addition) = addition.filter(|_| progress.finished == progress.total) {
                let size = study.spec["size"].as_str().unwrap_or("default");
                extension = extension_offer(kind, &study.spec["settings"], size, &addition);
            }
            html
        }
    };
    let rows = runs
        .iter()
        .map(|run| StudyRunRow {
            href: format!("/runs/{}", run.id),
            id: run.id,
            parameterization: run.parameterization.clone(),
            shape: shape(run),
            lr: fmt_opt(run.lr, fmt_real),
            status: status_text(run),
            status_class: run.status.name(),
            final_val_loss: fmt_opt(run.final_val_loss, fmt_loss),
        })
        .collect();
    let template = StudyTemplate {
        page: Page::new(format!("Study #{id} {}", study.name), "studies"),
        id,
        name: study.name.clone(),
        title: kind.title(),
        question: kind.question(),
        size: study.spec["size"].as_str().unwrap_or("custom").to_string(),
        created: fmt_time(&study.created_at),
        estimate: study.spec["estimate"]["duration"]
            .as_str()
            .unwrap_or("—")
            .to_string(),
        remaining,
        is_final: progress.finished == progress.total,
        progress,
        unit: if kind == StudyKind::CoordCheck {
            "diagnostics"
        } else {
            "runs"
        },
        settings,
        results,
        extension,
        runs: rows,
    };
    render(StatusCode::OK, &template)
}

/// A setting for people: lists joined by commas, learning rates as powers of two.
fn setting_text(value: &Value) -> String {
    match value {
        Value::Array(items) => items
            .iter()
            .map(setting_text)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Number(n) => match n.as_f64() {
            Some(x) if x > 0.0 && x < 1.0 && x.log2().fract() == 0.0 => {
                format!("2^{}", x.log2())
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The results section of a study: the analysis of its finished runs so far, as an HTML
/// fragment (the analysis page's sections), and the runs that would make it conclusive.
async fn study_results(state: &AppState, kind: StudyKind, id: i64) -> (String, Option<Addition>) {
    use super::analysis::{StudyAnalyses, study_sections};
    let runs = crate::web::sweeps::sweep_runs_query(id);
    match kind {
        StudyKind::DepthTransfer => study_sections(state, runs, StudyAnalyses::Transfer).await,
        StudyKind::ComputeEfficiency => {
            study_sections(state, runs, StudyAnalyses::ComputeEfficiency).await
        }
        StudyKind::CoordCheck => (String::new(), None),
    }
}

/// The offer to extend a finished study: the preview of the same study with `addition`, which
/// reuses every run already trained (same configurations) and trains only the new ones; the
/// preview shows them and their estimated time, and launches only when confirmed.
///
/// - Another seed: `seeds` gains the next one.
/// - Compute scales (a compute-efficiency study): `params` gains the parameter counts that
///   train them, `P = sqrt(C / (6 r))` at `r` tokens per parameter (from `C = 6 P D`,
///   `D = r P`), to three significant digits.
///
/// `None` when the settings do not have what the addition changes.
pub(super) fn extension_offer(
    kind: StudyKind,
    settings: &Value,
    size: &str,
    addition: &Addition,
) -> Option<ExtensionOffer> {
    let mut extended = settings.as_object()?.clone();
    let what = match addition {
        Addition::Seed => {
            let seeds: Vec<u64> = serde_json::from_value(settings.get("seeds")?.clone()).ok()?;
            let next = seeds.iter().max().map_or(0, |s| s + 1);
            extended.insert(
                "seeds".into(),
                serde_json::json!([seeds, vec![next]].concat()),
            );
            format!(
                "Add seed {next} to every run: the runs already trained are reused, only the new \
                 seed trains."
            )
        }
        Addition::Scales(scales) => {
            let tokens_per_param = settings.get("tokens_per_param")?.as_f64()?;
            if scales.is_empty() || tokens_per_param.is_nan() || tokens_per_param <= 0.0 {
                return None;
            }
            let mut params: Vec<u64> =
                serde_json::from_value(settings.get("params")?.clone()).ok()?;
            let added: Vec<u64> = scales
                .iter()
                .map(|c| {
                    let p = (c / (6.0 * tokens_per_param)).sqrt();
                    let unit = 10f64.powi(p.log10().floor() as i32 - 2);
                    ((p / unit).round() * unit) as u64
                })
                .collect();
            params.extend(&added);
            extended.insert("params".into(), serde_json::json!(params));
            let list = |items: Vec<String>| items.join(", ");
            format!(
                "Add compute scales at {} FLOPs: the same study with {} non-embedding parameters \
                 too (the runs already trained are reused).",
                list(
                    scales
                        .iter()
                        .map(|c| crate::numbers::significant(*c))
                        .collect()
                ),
                list(added.iter().map(|p| fmt_count(*p as f64)).collect())
            )
        }
    };
    let query = serde_urlencoded::to_string([
        ("kind", kind.name()),
        ("size", size),
        ("settings", &Value::Object(extended).to_string()),
    ])
    .ok()?;
    Some(ExtensionOffer {
        what,
        href: format!("/studies/preview?{query}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_offer_previews_the_same_study_with_more_scales_or_a_seed() {
        let settings = serde_json::json!({"params": [12500, 25000], "tokens_per_param": 20.0, "depths": [2, 4], "seeds": [0, 1]});
        let extended = |offer: &ExtensionOffer| {
            let query = offer.href.strip_prefix("/studies/preview?").unwrap();
            let pairs: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap();
            assert_eq!(pairs["kind"], "compute-efficiency");
            serde_json::from_str::<Value>(&pairs["settings"]).unwrap()
        };
        // C = 6 P (20 P) = 120 P^2: 1.2e12 FLOPs is P = 100,000.
        let scales = Addition::Scales(vec![1.2e12, 4.8e12]);
        let offer =
            extension_offer(StudyKind::ComputeEfficiency, &settings, "default", &scales).unwrap();
        assert!(
            offer.what.contains("1.2e12, 4.8e12 FLOPs"),
            "{}",
            offer.what
        );
        assert!(offer.what.contains("100k, 200k"), "{}", offer.what);
        let with_scales = extended(&offer);
        assert_eq!(
            with_scales["params"],
            serde_json::json!([12500, 25000, 100000, 200000])
        );
        assert_eq!(with_scales["depths"], serde_json::json!([2, 4]));
        let offer = extension_offer(
            StudyKind::ComputeEfficiency,
            &settings,
            "default",
            &Addition::Seed,
        )
        .unwrap();
        assert!(offer.what.contains("seed 2"), "{}", offer.what);
        assert_eq!(extended(&offer)["seeds"], serde_json::json!([0, 1, 2]));
        let empty = Addition::Scales(Vec::new());
        assert!(
            extension_offer(StudyKind::ComputeEfficiency, &settings, "default", &empty).is_none()
        );
        let no_settings = serde_json::json!({});
        assert!(
            extension_offer(
                StudyKind::ComputeEfficiency,
                &no_settings,
                "default",
                &scales
            )
            .is_none()
        );
    }
}
