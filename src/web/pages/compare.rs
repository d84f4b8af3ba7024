//! `GET /compare?ids=1,2,3`: runs side by side.

use super::{
    ChartView, Choice, Page, PageError, chart_or_message, flatten, fmt_count, fmt_loss, fmt_opt,
    fmt_sci, legend_label, render, run_label, shape, status_text, url,
};
use crate::store::RunRecord;
use crate::web::AppState;
use crate::web::charts;
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::BTreeMap;

/// Most runs one comparison shows.
const MAX_COMPARE: usize = 20;

struct CompareRun {
    href: String,
    label: String,
    color: String,
    status: String,
    status_class: &'static str,
}

struct CompareRow {
    key: String,
    values: Vec<String>,
    differs: bool,
}

#[derive(Template)]
#[template(path = "compare.html")]
struct CompareTemplate {
    page: Page,
    runs: Vec<CompareRun>,
    /// Rows of outcomes: a label and one value per run.
    results: Vec<(&'static str, Vec<String>)>,
    rows: Vec<CompareRow>,
    show_all: bool,
    toggle_href: String,
    same_count: usize,
    chart: String,
    axes: Vec<Choice>,
    scales: Vec<Choice>,
    x_title: &'static str,
}

fn compare_ids(params: &[(String, String)]) -> Result<Vec<i64>, PageError> {
    let mut ids = Vec::new();
    for (_, value) in params.iter().filter(|(k, _)| k == "ids") {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id: i64 = part.parse().map_err(|_| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    format!("'ids' must be run ids separated by commas, got '{part}'"),
                )
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.len() > MAX_COMPARE {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_COMPARE} runs can be compared at once"),
        ));
    }
    Ok(ids)
}

pub(super) async fn compare(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) =
        query.map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let ids = compare_ids(&params)?;
    let view = ChartView::from_params(&params);
    let show_all = params.iter().any(|(k, v)| k == "all" && v == "1");
    let mut runs = Vec::new();
    let mut series = Vec::new();
    for id in &ids {
        let run = state.store.run(*id).await?;
        let label = legend_label(&run);
        series.push((label, state.store.metrics(*id).await?));
        runs.push(run);
    }
    let configs: Vec<BTreeMap<String, String>> = runs.iter().map(|r| flatten(&r.config)).collect();
    let keys: std::collections::BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    let all_rows: Vec<CompareRow> = keys
        .into_iter()
        .map(|key| {
            let values: Vec<String> = configs
                .iter()
                .map(|c| c.get(key).cloned().unwrap_or_else(|| "(absent)".into()))
                .collect();
            let differs = values.iter().any(|v| *v != values[0]);
            CompareRow {
                key: key.clone(),
                values,
                differs,
            }
        })
        .collect();
    let same_count = all_rows.iter().filter(|r| !r.differs).count();
    let rows = all_rows
        .into_iter()
        .filter(|r| show_all || r.differs)
        .collect();
    let ids_param = ids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut base = vec![("ids".to_string(), ids_param.clone())];
    if show_all {
        base.push(("all".into(), "1".into()));
    }
    let (axes, scales) = view.choices("/compare", &base);
    let mut toggle = vec![("ids".to_string(), ids_param)];
    if !show_all {
        toggle.push(("all".into(), "1".into()));
    }
    toggle.push(("x".into(), view.x.name().into()));
    toggle.push(("scale".into(), view.scale().into()));
    let chart = if series.is_empty() {
        String::new()
    } else {
        chart_or_message(&series, view)
    };
    let row = |label, value: fn(&RunRecord) -> String| (label, runs.iter().map(value).collect());
    let results = vec![
        row("Parameterization", |r| r.parameterization.clone()),
        row("Width × depth", shape),
        row("Final val loss", |r| fmt_opt(r.final_val_loss, fmt_loss)),
        row("Final train loss", |r| {
            fmt_opt(r.final_train_loss, fmt_loss)
        }),
        row("Tokens", |r| fmt_opt(r.tokens.map(|t| t as f64), fmt_count)),
        row("FLOPs", |r| fmt_opt(r.flops, fmt_sci)),
    ];
    let template = CompareTemplate {
        page: Page::new(
            if runs.is_empty() {
                "Compare runs".to_string()
            } else {
                format!(
                    "Compare {}",
                    series
                        .iter()
                        .map(|s| s.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            "runs",
        ),
        runs: runs
            .iter()
            .enumerate()
            .map(|(i, run)| CompareRun {
                href: format!("/runs/{}", run.id),
                label: run_label(run),
                color: charts::series_css_color(i),
                status: status_text(run),
                status_class: run.status.name(),
            })
            .collect(),
        results,
        rows,
        show_all,
        toggle_href: url("/compare", &toggle),
        same_count,
        chart,
        axes,
        scales,
        x_title: view.x.title(),
    };
    render(StatusCode::OK, &template)
}
