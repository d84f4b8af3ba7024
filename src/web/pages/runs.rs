//! The runs table (`GET /`) and one run's page, its chart and cancel button (`/runs/{id}`).

use super::{
    ChartView, Choice, PARAMETERIZATIONS, Page, PageError, SelectOption, chart_or_message, flatten,
    fmt_count, fmt_loss, fmt_opt, fmt_real, fmt_sci, fmt_time, options, page_run_id, render,
    run_label, same_origin, shape, status_text, url,
};
use crate::store::{RunQuery, RunRecord, RunSource, StoredStatus};
use crate::train::RunConfig;
use crate::web::AppState;
use askama::Template;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

struct Column {
    label: &'static str,
    href: String,
    /// `ascending`, `descending` or `none` (for `aria-sort`).
    sort: &'static str,
}

struct RunRow {
    id: i64,
    href: String,
    name: String,
    parameterization: String,
    shape: String,
    lr: String,
    tokens: String,
    status: String,
    status_class: &'static str,
    error: String,
    final_val_loss: String,
    flops: String,
    created: String,
    created_iso: String,
    tags: Vec<String>,
    /// `(href, label)` of the run's sweep or study.
    sweep: Option<(String, String)>,
}

impl RunRow {
    fn new(run: &RunRecord) -> RunRow {
        RunRow {
            id: run.id,
            href: format!("/runs/{}", run.id),
            name: run.name.clone().unwrap_or_default(),
            parameterization: match run.alpha {
                Some(alpha) if run.parameterization == "alpha" => {
                    format!("alpha {}", fmt_real(alpha))
                }
                _ => run.parameterization.clone(),
            },
            shape: shape(run),
            lr: fmt_opt(run.lr, fmt_real),
            tokens: fmt_opt(run.tokens.map(|t| t as f64), fmt_count),
            status: status_text(run),
            status_class: run.status.name(),
            error: run.error.clone().unwrap_or_default(),
            final_val_loss: fmt_opt(run.final_val_loss, fmt_loss),
            flops: fmt_opt(run.flops, fmt_sci),
            created: fmt_time(&run.created_at),
            created_iso: run.created_at.clone(),
            tags: run.tags.clone(),
            sweep: run
                .sweep_id
                .map(|id| (format!("/sweeps/{id}"), format!("sweep #{id}"))),
        }
    }
}

struct FilterForm {
    parameterization: Vec<SelectOption>,
    status: Vec<SelectOption>,
    width: String,
    depth: String,
    tag: String,
    limit: Vec<SelectOption>,
    /// Parameters the form has no field for (kept as hidden inputs): sort and URL-only filters.
    hidden: Vec<(String, String)>,
    /// The URL-only filters, for display.
    extra: String,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexTemplate {
    page: Page,
    filters: FilterForm,
    columns: Vec<Column>,
    runs: Vec<RunRow>,
    total: i64,
    showing: String,
    prev_href: String,
    next_href: String,
    error: String,
    filtered: bool,
}

const SORT_COLUMNS: [(&str, &str); 9] = [
    ("Run", "id"),
    ("Parameterization", "parameterization"),
    ("Width × depth", "width"),
    ("LR", "lr"),
    ("Tokens", "tokens"),
    ("Status", "status"),
    ("Final val loss", "final_val_loss"),
    ("FLOPs", "flops"),
    ("Created (UTC)", "created_at"),
];

pub(super) async fn index(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) =
        query.map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    // Empty form fields mean "any".
    let params: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };

    let parsed = crate::web::runs::parse_run_query(params.clone());
    let (query, error) = match parsed {
        Ok(q) => (q, None),
        Err(e) => (RunQuery::default(), Some(e)),
    };
    let (runs, total) = match &error {
        None => state.store.runs(&query).await?,
        Some(_) => (Vec::new(), 0),
    };

    // The filter form: fields for the common filters, hidden inputs for the rest.
    let param_value = get("parameterization");
    let status_value = get("status");
    let param_choices: Vec<(&str, &str)> = std::iter::once(("", "any"))
        .chain(PARAMETERIZATIONS.iter().map(|(v, _)| (*v, *v)))
        .collect();
    let status_choices: Vec<(&str, &str)> = std::iter::once(("", "any"))
        .chain(StoredStatus::ALL.iter().map(|s| (s.name(), s.name())))
        .collect();
    let in_select = |choices: &[(&str, &str)], v: &str| choices.iter().any(|(c, _)| *c == v);
    let mut hidden = Vec::new();
    let mut extra = Vec::new();
    let mut seen_tag = false;
    for (key, value) in &params {
        let field = match key.as_str() {
            "parameterization" => in_select(&param_choices, value),
            "status" => in_select(&status_choices, value),
            "width" | "depth" | "limit" | "offset" => true,
            "tag" if !seen_tag => {
                seen_tag = true;
                true
            }
            _ => false,
        };
        if !field {
            hidden.push((key.clone(), value.clone()));
            if key != "sort" {
                extra.push(format!("{key}={value}"));
            }
        }
    }
    let limit = query.limit.to_string();
    let mut limit_choices: Vec<(String, String)> = ["25", "50", "100", "250", "1000"]
        .iter()
        .map(|l| (l.to_string(), l.to_string()))
        .collect();
    if !limit_choices.iter().any(|(v, _)| *v == limit) {
        limit_choices.push((limit.clone(), limit.clone()));
    }
    let limit_choices: Vec<(&str, &str)> = limit_choices
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let filters = FilterForm {
        parameterization: options(&param_choices, &param_value),
        status: options(&status_choices, &status_value),
        width: get("width"),
        depth: get("depth"),
        tag: get("tag"),
        limit: options(&limit_choices, &limit),
        hidden,
        extra: extra.join(", "),
    };

    // Sort links keep every filter and go back to the first page.
    let without = |drop: &[&str]| -> Vec<(String, String)> {
        params
            .iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let columns = SORT_COLUMNS
        .iter()
        .map(|(label, column)| {
            let current = query.sort == *column;
            let next = if current && !query.descending {
                format!("-{column}")
            } else {
                column.to_string()
            };
            let mut link = without(&["sort", "offset"]);
            link.push(("sort".into(), next));
            Column {
                label,
                href: url("/", &link),
                sort: match (current, query.descending) {
                    (false, _) => "none",
                    (true, false) => "ascending",
                    (true, true) => "descending",
                },
            }
        })
        .collect();

    let page_link = |offset: i64| {
        let mut link = without(&["offset"]);
        if offset > 0 {
            link.push(("offset".into(), offset.to_string()));
        }
        url("/", &link)
    };
    let prev_href = if query.offset > 0 {
        page_link((query.offset - query.limit).max(0))
    } else {
        String::new()
    };
    let next_href = if query.offset + query.limit < total {
        page_link(query.offset + query.limit)
    } else {
        String::new()
    };
    let showing = if runs.is_empty() {
        String::new()
    } else {
        format!(
            "{}–{} of {total}",
            query.offset + 1,
            query.offset + runs.len() as i64
        )
    };
    let filtered = params
        .iter()
        .any(|(k, _)| !matches!(k.as_str(), "sort" | "limit" | "offset"));
    let template = IndexTemplate {
        page: Page::new("Runs", "runs"),
        filters,
        columns,
        runs: runs.iter().map(RunRow::new).collect(),
        total,
        showing,
        prev_href,
        next_href,
        error: error.as_ref().map(ToString::to_string).unwrap_or_default(),
        filtered,
    };
    let status = match &error {
        Some(e) => e.status_code(),
        None => StatusCode::OK,
    };
    render(status, &template)
}

// ---------------------------------------------------------------------------------------------
// GET /runs/{id}: one run

/// The run page and its chart draw a bounded view of the series, however long the run: its
/// training loss downsampled to this many points (each bucket's lowest and highest loss) and as
/// many validation points (see [`crate::store::Store::metrics_overview`]).
const CHART_POINTS: usize = 1000;

struct PlanGroup {
    name: &'static str,
    description: &'static str,
    init_std: String,
    lr: String,
    weight_decay: String,
    eps: String,
}

struct PlanView {
    parameterization: String,
    multipliers: Vec<(&'static str, String)>,
    groups: Vec<PlanGroup>,
}

fn plan_view(config: &RunConfig) -> Result<PlanView, String> {
    let plan = config.plan().map_err(|e| e.to_string())?;
    let g = &plan.groups;
    let group = |name, description, rule: &crate::param::GroupRule| PlanGroup {
        name,
        description,
        init_std: match rule.init_std {
            None => "1 (gain), 0 (bias)".into(),
            Some(std) => fmt_real(std),
        },
        lr: fmt_real(rule.lr),
        weight_decay: fmt_real(rule.weight_decay),
        eps: fmt_real(rule.eps),
    };
    Ok(PlanView {
        parameterization: match plan.alpha {
            Some(alpha) => format!("{} (alpha {})", plan.parameterization, fmt_real(alpha)),
            None => plan.parameterization.to_string(),
        },
        multipliers: vec![
            ("width multiplier m_N = N / N_base", fmt_real(plan.m_n)),
            ("depth multiplier m_L = L / L_base", fmt_real(plan.m_l)),
            (
                "residual branch multiplier",
                fmt_real(plan.residual_multiplier),
            ),
            ("logits multiplier", fmt_real(plan.logits_multiplier)),
            (
                "attention scale",
                format!(
                    "{} ({})",
                    fmt_real(plan.attention_scale),
                    match plan.attention_scale_rule {
                        crate::param::AttentionScale::DHead => "1/d_head",
                        crate::param::AttentionScale::SqrtDHead => "1/sqrt(d_head)",
                        crate::param::AttentionScale::Width => "1/width",
                    }
                ),
            ),
        ],
        groups: vec![
            group("embedding", "token and position embeddings", &g.embedding),
            group(
                "hidden_weights",
                "QKV, attention output, MLP weights",
                &g.hidden_weights,
            ),
            group("hidden_biases", "biases of those layers", &g.hidden_biases),
            group(
                "block_norms",
                "pre-LN gains and biases in blocks",
                &g.block_norms,
            ),
            group("final_norm", "final LayerNorm", &g.final_norm),
            group("unembedding", "output projection", &g.unembedding),
        ],
    })
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunTemplate {
    page: Page,
    /// Why a queued run waits for nothing (no live worker of its device), else empty.
    waiting: String,
    id: i64,
    title: String,
    status: String,
    status_class: &'static str,
    is_final: bool,
    error: String,
    tags: Vec<String>,
    summary: Vec<(&'static str, String)>,
    config: Vec<(String, String)>,
    plan: Option<PlanView>,
    plan_note: String,
    chart: String,
    chart_src: String,
    axes: Vec<Choice>,
    scales: Vec<Choice>,
    x_title: &'static str,
}

fn summary_rows(run: &RunRecord) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Status", status_text(run)),
        (
            "Source",
            match (run.source, run.reused_from) {
                (RunSource::Local, None) => "trained here".into(),
                (RunSource::Local, Some(id)) => format!("a copy of run {id} (same configuration)"),
                (RunSource::Imported, _) => "imported".into(),
            },
        ),
        (
            "Parameterization",
            match run.alpha {
                Some(alpha) => format!("{} (alpha {})", run.parameterization, fmt_real(alpha)),
                None => run.parameterization.clone(),
            },
        ),
        ("Width × depth", shape(run)),
        (
            "Non-embedding parameters",
            fmt_opt(run.params_non_embedding.map(|p| p as f64), fmt_count),
        ),
        ("Final train loss", fmt_opt(run.final_train_loss, fmt_loss)),
        ("Final val loss", fmt_opt(run.final_val_loss, fmt_loss)),
        ("Tokens", fmt_opt(run.tokens.map(|t| t as f64), fmt_count)),
        ("FLOPs", fmt_opt(run.flops, fmt_sci)),
        ("Tokens per second", fmt_opt(run.tokens_per_sec, fmt_count)),
        ("Dataset", run.dataset.clone().unwrap_or_else(|| "—".into())),
        ("Created (UTC)", fmt_time(&run.created_at)),
        (
            "Started (UTC)",
            run.started_at.as_deref().map_or("—".into(), fmt_time),
        ),
        (
            "Finished (UTC)",
            run.finished_at.as_deref().map_or("—".into(), fmt_time),
        ),
    ];
    if let Some(sweep) = run.sweep_id {
        rows.push(("Sweep", sweep.to_string()));
    }
    rows
}

pub(super) async fn run_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let id = page_run_id(path)?;
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let view = ChartView::from_params(&params);
    let run = state.store.run(id).await?;
    let metrics = state.store.metrics_overview(id, CHART_POINTS).await?;
    let label = run_label(&run);
    let chart = chart_or_message(&[(label.clone(), metrics)], view);
    let path = format!("/runs/{id}");
    let (axes, scales) = view.choices(&path, &[]);
    let (plan, plan_note) = match run.source {
        RunSource::Local => match serde_json::from_value::<RunConfig>(run.config.clone()) {
            Ok(config) => match plan_view(&config) {
                Ok(plan) => (Some(plan), String::new()),
                Err(e) => (None, format!("The plan could not be computed: {e}")),
            },
            Err(e) => (None, format!("The stored config could not be read: {e}")),
        },
        RunSource::Imported => (
            None,
            "Imported runs keep no full config, so no per-group plan is shown.".into(),
        ),
    };
    let waiting = match (run.status, run.config.get("device").and_then(Value::as_str)) {
        (StoredStatus::Queued | StoredStatus::Interrupted, Some(device)) => {
            crate::web::workers::waiting_note(&state, device).await?
        }
        _ => None,
    };
    let template = RunTemplate {
        page: Page::new(format!("Run {label}"), "runs"),
        waiting: waiting.unwrap_or_default(),
        id,
        title: label,
        status: status_text(&run),
        status_class: run.status.name(),
        is_final: run.status.is_final(),
        error: run.error.clone().unwrap_or_default(),
        tags: run.tags.clone(),
        summary: summary_rows(&run),
        config: match state.store.tracked_run(id).await {
            // Logged through the MLflow API: its params, tags and latest metric values.
            Ok(tracked) => (tracked.params.into_iter())
                .map(|(k, v)| (format!("params.{k}"), v))
                .chain(
                    tracked
                        .tags
                        .into_iter()
                        .map(|(k, v)| (format!("tags.{k}"), v)),
                )
                .chain(
                    (tracked.metrics.iter())
                        .map(|m| (format!("metrics.{}", m.key), fmt_real(m.value))),
                )
                .collect(),
            Err(_) => flatten(&run.config).into_iter().collect(),
        },
        plan,
        plan_note,
        chart,
        chart_src: url(
            &format!("/runs/{id}/chart.svg"),
            &[
                ("x".into(), view.x.name().into()),
                ("scale".into(), view.scale().into()),
            ],
        ),
        axes,
        scales,
        x_title: view.x.title(),
    };
    render(StatusCode::OK, &template)
}

/// `GET /runs/{id}/chart.svg?x=&scale=`: the loss chart alone, for live updates.
pub(super) async fn run_chart(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let id = page_run_id(path)?;
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let view = ChartView::from_params(&params);
    let run = state.store.run(id).await?;
    let metrics = state.store.metrics_overview(id, CHART_POINTS).await?;
    let svg = chart_or_message(&[(run_label(&run), metrics)], view);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        svg,
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct CancelForm {
    next: Option<String>,
}

/// `POST /runs/{id}/cancel`: cancels, then back to the run's page (or the queue).
pub(super) async fn cancel_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<i64>, PathRejection>,
    form: Result<Form<CancelForm>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let id = page_run_id(path)?;
    state.jobs.cancel(id).await?;
    let next = form.ok().and_then(|Form(f)| f.next);
    let target = match next.as_deref() {
        Some("queue") => "/queue".to_string(),
        _ => format!("/runs/{id}"),
    };
    Ok(Redirect::to(&target).into_response())
}
