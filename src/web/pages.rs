//! The browser UI: server-rendered HTML pages (askama templates in `templates/`), the chart
//! fragments they embed and the static files they load (`static/`, compiled into the binary).
//!
//! Pages work without JavaScript: filters and sorting are links and GET forms, creating and
//! cancelling runs and sweeps are POST forms that redirect. `static/app.js` only adds live updates
//! on a run's page (server-sent events, then a re-fetched chart), a timed refresh of an unfinished
//! sweep's page, the live run count of the new-sweep form and the `ids=1,2,3` form of the compare
//! URL.

use super::AppState;
use super::charts::{self, XAxis};
use super::error::ApiError;
use crate::store::{MetricPoint, RunQuery, RunRecord, RunSource, StoreError, StoredStatus};
use crate::train::RunConfig;
use askama::Template;
use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The routes of the UI.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/runs/new", get(new_run_form).post(new_run_submit))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/chart.svg", get(run_chart))
        .route("/runs/{id}/cancel", axum::routing::post(cancel_run))
        .route("/compare", get(compare))
        .route("/queue", get(queue))
        .route("/sweeps", get(sweeps_list))
        .route("/sweeps/new", get(new_sweep_form).post(new_sweep_submit))
        .route("/sweeps/{id}", get(sweep_page))
        .route("/static/style.css", get(style_css))
        .route("/static/app.js", get(app_js))
}

// ---------------------------------------------------------------------------------------------
// Static files

const STYLE_CSS: &str = include_str!("../../static/style.css");
const APP_JS: &str = include_str!("../../static/app.js");

/// A short hash of the static files, appended to their URLs so they can be cached for good.
static ASSET_VERSION: LazyLock<String> = LazyLock::new(|| {
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in STYLE_CSS.bytes().chain(APP_JS.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
});

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // URLs carry the content hash (`?v=`), so a cached copy never goes stale.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// What the layout needs: the title, which nav entry is current, the static files' version.
struct Page {
    title: String,
    nav: &'static str,
    version: &'static str,
}

impl Page {
    fn new(title: impl Into<String>, nav: &'static str) -> Page {
        Page {
            title: title.into(),
            nav,
            version: ASSET_VERSION.as_str(),
        }
    }
}

/// An option of a `<select>`.
struct SelectOption {
    value: String,
    label: String,
    selected: bool,
}

fn options(choices: &[(&str, &str)], current: &str) -> Vec<SelectOption> {
    choices
        .iter()
        .map(|(value, label)| SelectOption {
            value: value.to_string(),
            label: label.to_string(),
            selected: *value == current,
        })
        .collect()
}

/// A link in a group of alternatives (chart axis, scale), one of them current.
struct Choice {
    label: &'static str,
    href: String,
    current: bool,
}

const PARAMETERIZATIONS: [(&str, &str); 5] = [
    ("sp", "SP"),
    ("mup", "muP"),
    ("depth-mup", "depth-muP (alpha 0.5)"),
    ("completep", "CompleteP (alpha 1)"),
    ("alpha", "muP + depth, custom alpha"),
];

const STATUSES: [StoredStatus; 7] = [
    StoredStatus::Queued,
    StoredStatus::Running,
    StoredStatus::Succeeded,
    StoredStatus::Failed,
    StoredStatus::Diverged,
    StoredStatus::Cancelled,
    StoredStatus::Interrupted,
];

/// Percent-encodes a query component: everything but RFC 3986's unreserved characters and the
/// `:` and `,` of filters such as `width=in:64,128` (both legal in a query).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~:,".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `path?k=v&...` from pairs (no `?` without pairs).
fn url(path: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// A number for tables: up to four significant digits, scientific outside [1e-3, 1e5).
fn fmt_real(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return fmt_sci(v);
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 7) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Scientific notation with three significant digits: `1.23e12`.
fn fmt_sci(v: f64) -> String {
    let text = format!("{v:.2e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            format!("{mantissa}e{exponent}")
        }
        None => text,
    }
}

/// A count with an SI suffix: `950`, `12.5k`, `3M`, `1.2G`.
fn fmt_count(v: f64) -> String {
    let a = v.abs();
    if a < 1e4 {
        return format!("{v:.0}");
    }
    let (scale, suffix) = if a < 1e6 {
        (1e3, "k")
    } else if a < 1e9 {
        (1e6, "M")
    } else if a < 1e12 {
        (1e9, "G")
    } else {
        (1e12, "T")
    };
    format!("{}{suffix}", fmt_real(v / scale))
}

fn fmt_opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "—".into())
}

fn fmt_loss(v: f64) -> String {
    format!("{v:.4}")
}

/// `2025-06-01T12:34:56.789Z` as `2025-06-01 12:34`.
fn fmt_time(iso: &str) -> String {
    iso.get(..16)
        .map(|t| t.replace('T', " "))
        .unwrap_or_else(|| iso.to_string())
}

/// "queued (position 3)" for queued runs, else the status name.
fn status_text(run: &RunRecord) -> String {
    match run.queue_position {
        Some(ahead) => format!("{} (position {})", run.status.name(), ahead + 1),
        None => run.status.name().to_string(),
    }
}

fn run_label(run: &RunRecord) -> String {
    match &run.name {
        Some(name) if !name.is_empty() => format!("#{} {name}", run.id),
        _ => format!("#{}", run.id),
    }
}

fn shape(run: &RunRecord) -> String {
    match (run.width, run.depth) {
        (Some(w), Some(d)) => format!("{w} × {d}"),
        (Some(w), None) => format!("{w} × ?"),
        (None, Some(d)) => format!("? × {d}"),
        (None, None) => "—".into(),
    }
}

/// A JSON config as `(dotted.key, value)` rows, in key order.
fn flatten(value: &Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, v) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, v, out);
                }
            }
            Value::Null => {
                out.insert(prefix.to_string(), "—".into());
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if !value.is_null() {
        walk("", value, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A page that could not be shown: rendered as an HTML error page.
struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(detail) = &e {
            tracing::error!("internal error: {detail}");
        }
        PageError::new(e.status_code(), e.to_string())
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate {
    page: Page,
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let reason = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let template = ErrorTemplate {
            page: Page::new(reason.clone(), ""),
            status: self.status.as_u16(),
            reason,
            message: self.message,
        };
        match template.render() {
            Ok(body) => (self.status, Html(body)).into_response(),
            Err(_) => (self.status, template.message).into_response(),
        }
    }
}

/// Renders a template into an HTML response with `status`.
fn render(status: StatusCode, template: &impl Template) -> Result<Response, PageError> {
    let body = template.render().map_err(|e| {
        tracing::error!("rendering a page failed: {e}");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be rendered",
        )
    })?;
    Ok((status, Html(body)).into_response())
}

fn page_run_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, PageError> {
    path.map(|Path(id)| id)
        .map_err(|_| PageError::not_found("there is no such run: run ids are integers"))
}

/// Refuses form posts from other sites (a page elsewhere must not create or cancel runs here).
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let forbidden = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "this form must be submitted from shapewise's own pages",
        )
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return Err(forbidden());
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let (Some(origin), Some(host)) = (origin, host) {
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        if origin != "null" && !origin_host.eq_ignore_ascii_case(host) {
            return Err(forbidden());
        }
    }
    Ok(())
}

/// Chart settings from `x` and `scale` query parameters (unknown values fall back to defaults).
#[derive(Clone, Copy)]
struct ChartView {
    x: XAxis,
    log: bool,
}

impl ChartView {
    fn from_params(params: &[(String, String)]) -> ChartView {
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        ChartView {
            x: get("x").and_then(XAxis::parse).unwrap_or_default(),
            log: get("scale") != Some("linear"),
        }
    }

    fn scale(self) -> &'static str {
        if self.log { "log" } else { "linear" }
    }

    /// Links to the same page with another x axis, and with the other scale.
    fn choices(self, path: &str, base: &[(String, String)]) -> (Vec<Choice>, Vec<Choice>) {
        let link = |x: XAxis, scale: &str| {
            let mut params = base.to_vec();
            params.push(("x".into(), x.name().into()));
            params.push(("scale".into(), scale.into()));
            url(path, &params)
        };
        let axes = XAxis::ALL
            .into_iter()
            .map(|x| Choice {
                label: x.label(),
                href: link(x, self.scale()),
                current: x == self.x,
            })
            .collect();
        let scales = [("log-log", true), ("linear", false)]
            .into_iter()
            .map(|(label, log)| Choice {
                label,
                href: link(self.x, if log { "log" } else { "linear" }),
                current: log == self.log,
            })
            .collect();
        (axes, scales)
    }
}

fn chart_or_message(series: &[(String, Vec<MetricPoint>)], view: ChartView) -> String {
    charts::loss_chart(series, view.x, view.log).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        charts::message_svg("the chart could not be drawn")
    })
}

// ---------------------------------------------------------------------------------------------
// GET /: the runs table

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

async fn index(
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

    let parsed = super::runs::parse_run_query(params.clone());
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
        .chain(STATUSES.iter().map(|s| (s.name(), s.name())))
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
            match run.source {
                RunSource::Local => "trained here".into(),
                RunSource::Imported => "imported".into(),
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

async fn run_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let id = page_run_id(path)?;
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let view = ChartView::from_params(&params);
    let run = state.store.run(id).await?;
    let metrics = state.store.metrics(id).await?;
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
    let template = RunTemplate {
        page: Page::new(format!("Run {label}"), "runs"),
        id,
        title: label,
        status: status_text(&run),
        status_class: run.status.name(),
        is_final: run.status.is_final(),
        error: run.error.clone().unwrap_or_default(),
        tags: run.tags.clone(),
        summary: summary_rows(&run),
        config: flatten(&run.config).into_iter().collect(),
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
async fn run_chart(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, PageError> {
    let id = page_run_id(path)?;
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let view = ChartView::from_params(&params);
    let run = state.store.run(id).await?;
    let metrics = state.store.metrics(id).await?;
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
struct CancelForm {
    next: Option<String>,
}

/// `POST /runs/{id}/cancel`: cancels, then back to the run's page (or the queue).
async fn cancel_run(
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

// ---------------------------------------------------------------------------------------------
// GET, POST /runs/new: the new-run form

/// The form's fields, as typed (every field optional: missing ones take the config defaults).
#[derive(Clone, Debug, Default, Deserialize)]
struct NewRunForm {
    parameterization: Option<String>,
    alpha: Option<String>,
    width: Option<String>,
    depth: Option<String>,
    d_head: Option<String>,
    context: Option<String>,
    batch: Option<String>,
    lr: Option<String>,
    init_std: Option<String>,
    tokens: Option<String>,
    tokens_per_param: Option<String>,
    seed: Option<String>,
    base_width: Option<String>,
    base_depth: Option<String>,
    weight_decay: Option<String>,
    eps: Option<String>,
    data_vocab: Option<String>,
    data_seed: Option<String>,
    name: Option<String>,
    tags: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldKind {
    Integer,
    Real,
    Text,
}

/// One input of the form: its name, label, hint and kind.
struct FieldSpec {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    kind: FieldKind,
    get: fn(&NewRunForm) -> &Option<String>,
}

const MODEL_FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "alpha",
        label: "Alpha",
        hint: "only for “muP + depth, custom alpha”: a value in [0.5, 1]",
        kind: FieldKind::Real,
        get: |f| &f.alpha,
    },
    FieldSpec {
        name: "width",
        label: "Width N",
        hint: "a multiple of d_head",
        kind: FieldKind::Integer,
        get: |f| &f.width,
    },
    FieldSpec {
        name: "depth",
        label: "Depth L (blocks)",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.depth,
    },
    FieldSpec {
        name: "d_head",
        label: "Head dimension d_head",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.d_head,
    },
    FieldSpec {
        name: "context",
        label: "Context length T",
        hint: "tokens per sequence",
        kind: FieldKind::Integer,
        get: |f| &f.context,
    },
];

const TRAINING_FIELDS: [FieldSpec; 6] = [
    FieldSpec {
        name: "lr",
        label: "Base learning rate",
        hint: "eta at the base shape; the plan scales it per group",
        kind: FieldKind::Real,
        get: |f| &f.lr,
    },
    FieldSpec {
        name: "init_std",
        label: "Base init std",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.init_std,
    },
    FieldSpec {
        name: "batch",
        label: "Batch (sequences per step)",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.batch,
    },
    FieldSpec {
        name: "tokens",
        label: "Training tokens",
        hint: "leave empty to use tokens per parameter",
        kind: FieldKind::Integer,
        get: |f| &f.tokens,
    },
    FieldSpec {
        name: "tokens_per_param",
        label: "Tokens per parameter",
        hint: "used when training tokens is empty (20 is Chinchilla-optimal)",
        kind: FieldKind::Real,
        get: |f| &f.tokens_per_param,
    },
    FieldSpec {
        name: "seed",
        label: "Seed",
        hint: "initial weights and batch order",
        kind: FieldKind::Integer,
        get: |f| &f.seed,
    },
];

const BASE_FIELDS: [FieldSpec; 4] = [
    FieldSpec {
        name: "base_width",
        label: "Base width N_base",
        hint: "the shape the base hyperparameters were tuned at",
        kind: FieldKind::Integer,
        get: |f| &f.base_width,
    },
    FieldSpec {
        name: "base_depth",
        label: "Base depth L_base",
        hint: "",
        kind: FieldKind::Integer,
        get: |f| &f.base_depth,
    },
    FieldSpec {
        name: "weight_decay",
        label: "Base weight decay",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.weight_decay,
    },
    FieldSpec {
        name: "eps",
        label: "Base AdamW epsilon",
        hint: "",
        kind: FieldKind::Real,
        get: |f| &f.eps,
    },
];

const DATA_FIELDS: [FieldSpec; 2] = [
    FieldSpec {
        name: "data_vocab",
        label: "Corpus vocabulary",
        hint: "tokens of the built-in corpus, 16 to 65536",
        kind: FieldKind::Integer,
        get: |f| &f.data_vocab,
    },
    FieldSpec {
        name: "data_seed",
        label: "Corpus seed",
        hint: "the corpus content (not the run's seed)",
        kind: FieldKind::Integer,
        get: |f| &f.data_seed,
    },
];

const LABEL_FIELDS: [FieldSpec; 2] = [
    FieldSpec {
        name: "name",
        label: "Name",
        hint: "optional",
        kind: FieldKind::Text,
        get: |f| &f.name,
    },
    FieldSpec {
        name: "tags",
        label: "Tags",
        hint: "optional, separated by commas",
        kind: FieldKind::Text,
        get: |f| &f.tags,
    },
];

fn all_fields() -> impl Iterator<Item = &'static FieldSpec> {
    MODEL_FIELDS
        .iter()
        .chain(&TRAINING_FIELDS)
        .chain(&BASE_FIELDS)
        .chain(&DATA_FIELDS)
        .chain(&LABEL_FIELDS)
}

/// An input as the template draws it.
struct FieldView {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    /// `number` or `text`.
    input_type: &'static str,
    /// The `step` of number inputs.
    step: &'static str,
    value: String,
    invalid: bool,
}

struct Fieldset {
    legend: &'static str,
    fields: Vec<FieldView>,
    /// Drawn inside a closed `<details>` unless one of its fields is invalid.
    advanced: bool,
    open: bool,
}

#[derive(Template)]
#[template(path = "new_run.html")]
struct NewRunTemplate {
    page: Page,
    parameterizations: Vec<SelectOption>,
    parameterization_invalid: bool,
    fieldsets: Vec<Fieldset>,
    error: String,
}

impl NewRunForm {
    /// The form pre-filled with the config defaults.
    fn defaults() -> NewRunForm {
        let c = RunConfig::default();
        let (data_seed, data_vocab) = match c.data {
            crate::data::DataSource::Builtin { seed, vocab } => (seed, vocab),
            _ => (0, 256),
        };
        let s = |v: String| Some(v);
        NewRunForm {
            parameterization: s(c.parameterization.name().into()),
            alpha: None,
            width: s(c.width.to_string()),
            depth: s(c.depth.to_string()),
            d_head: s(c.d_head.to_string()),
            context: s(c.context.to_string()),
            batch: s(c.batch.to_string()),
            lr: s(c.lr.to_string()),
            init_std: s(c.init_std.to_string()),
            tokens: None,
            tokens_per_param: s(c.tokens_per_param.to_string()),
            seed: s(c.seed.to_string()),
            base_width: s(c.base_width.to_string()),
            base_depth: s(c.base_depth.to_string()),
            weight_decay: s(c.weight_decay.to_string()),
            eps: s(c.eps.to_string()),
            data_vocab: s(data_vocab.to_string()),
            data_seed: s(data_seed.to_string()),
            name: None,
            tags: None,
        }
    }

    /// The create-run JSON body the API takes, or the message and the field at fault.
    fn to_json(&self) -> Result<Map<String, Value>, (String, &'static str)> {
        let mut body = Map::new();
        fn text(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        if let Some(p) = text(&self.parameterization) {
            body.insert("parameterization".into(), p.into());
        }
        let mut data = Map::new();
        data.insert("kind".into(), "builtin".into());
        data.insert("seed".into(), 0.into());
        data.insert("vocab".into(), 256.into());
        for spec in all_fields() {
            let Some(raw) = text((spec.get)(self)) else {
                continue;
            };
            let value: Value = match spec.kind {
                FieldKind::Integer => parse_whole(raw)
                    .ok_or_else(|| {
                        (
                            format!(
                                "{} must be a whole number of at least 0, got '{raw}'",
                                spec.name
                            ),
                            spec.name,
                        )
                    })?
                    .into(),
                FieldKind::Real => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        (
                            format!("{} must be a number, got '{raw}'", spec.name),
                            spec.name,
                        )
                    })?
                    .into(),
                FieldKind::Text if spec.name == "tags" => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.into()))
                        .collect(),
                ),
                FieldKind::Text => raw.into(),
            };
            match spec.name {
                "data_vocab" => {
                    data.insert("vocab".into(), value);
                }
                "data_seed" => {
                    data.insert("seed".into(), value);
                }
                name => {
                    body.insert(name.into(), value);
                }
            }
        }
        body.insert("data".into(), Value::Object(data));
        Ok(body)
    }
}

/// A non-negative whole number, also written as `3e6` or `3000000.0`.
fn parse_whole(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().or_else(|| {
        let v: f64 = text.parse().ok()?;
        (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9.0e15).then_some(v as u64)
    })
}

/// Whether `message` names `field` as a word (so `width` does not match `base_width`).
fn mentions(message: &str, field: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    message.match_indices(field).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let after = message[at + field.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn new_run_template(form: &NewRunForm, error: &str, invalid: &[&str]) -> NewRunTemplate {
    let view = |specs: &[FieldSpec]| -> Vec<FieldView> {
        specs
            .iter()
            .map(|spec| FieldView {
                name: spec.name,
                label: spec.label,
                hint: spec.hint,
                input_type: if spec.kind == FieldKind::Text {
                    "text"
                } else {
                    "number"
                },
                step: if spec.kind == FieldKind::Integer {
                    "1"
                } else {
                    "any"
                },
                value: (spec.get)(form).clone().unwrap_or_default(),
                invalid: invalid.contains(&spec.name),
            })
            .collect()
    };
    let fieldset = |legend, specs: &[FieldSpec], advanced: bool| {
        let fields = view(specs);
        let open = !advanced || fields.iter().any(|f| f.invalid);
        Fieldset {
            legend,
            fields,
            advanced,
            open,
        }
    };
    NewRunTemplate {
        page: Page::new("New run", "new"),
        parameterizations: options(
            &PARAMETERIZATIONS,
            form.parameterization.as_deref().unwrap_or_default(),
        ),
        parameterization_invalid: invalid.contains(&"parameterization"),
        fieldsets: vec![
            fieldset("Model shape", &MODEL_FIELDS, false),
            fieldset("Training", &TRAINING_FIELDS, false),
            fieldset("Base shape and hyperparameters", &BASE_FIELDS, true),
            fieldset("Data: built-in corpus", &DATA_FIELDS, false),
            fieldset("Labels", &LABEL_FIELDS, false),
        ],
        error: error.to_string(),
    }
}

async fn new_run_form() -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &new_run_template(&NewRunForm::defaults(), "", &[]),
    )
}

/// `POST /runs/new`: creates and queues the run, then 303 to its page; an invalid run shows the
/// form again with the values typed and the reason (422).
async fn new_run_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<NewRunForm>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(form) = form.map_err(|e| PageError::new(e.status(), e.body_text()))?;
    let refuse = |message: String, invalid: Vec<&str>| {
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &new_run_template(&form, &message, &invalid),
        )
    };
    let body = match form.to_json() {
        Ok(body) => body,
        Err((message, field)) => return refuse(message, vec![field]),
    };
    let new = match super::runs::parse_new_run(body).await {
        Ok(new) => new,
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(e) => {
            let message = e.to_string();
            let invalid: Vec<&str> = std::iter::once("parameterization")
                .chain(all_fields().map(|f| f.name))
                .filter(|name| mentions(&message, name))
                .collect();
            return refuse(message, invalid);
        }
    };
    let id = state.store.create_run(&new).await?;
    state.jobs.wake();
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

// ---------------------------------------------------------------------------------------------
// GET /compare?ids=1,2,3

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

async fn compare(
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
        let label = run_label(&run);
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

// ---------------------------------------------------------------------------------------------
// GET /queue

struct QueueRow {
    position: String,
    id: i64,
    href: String,
    name: String,
    status: &'static str,
    parameterization: String,
    shape: String,
    tokens: String,
    since: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueueTemplate {
    page: Page,
    rows: Vec<QueueRow>,
    more: i64,
}

async fn queue(State(state): State<AppState>) -> Result<Response, PageError> {
    let query = super::runs::parse_run_query(vec![
        ("status".into(), "in:running,queued,interrupted".into()),
        ("sort".into(), "id".into()),
        ("limit".into(), "1000".into()),
    ])?;
    let (mut runs, total) = state.store.runs(&query).await?;
    // Running first (oldest start first), then the queue in order.
    runs.sort_by_key(|r| {
        (
            r.status != StoredStatus::Running,
            r.queue_position.unwrap_or(i64::MAX),
            r.started_at.clone(),
            r.id,
        )
    });
    let rows = runs
        .iter()
        .map(|run| QueueRow {
            position: match run.queue_position {
                Some(ahead) => (ahead + 1).to_string(),
                None => "training".into(),
            },
            id: run.id,
            href: format!("/runs/{}", run.id),
            name: run.name.clone().unwrap_or_default(),
            status: run.status.name(),
            parameterization: run.parameterization.clone(),
            shape: shape(run),
            tokens: fmt_opt(run.tokens.map(|t| t as f64), fmt_count),
            since: match (&run.started_at, run.status) {
                (Some(started), StoredStatus::Running) => format!("started {}", fmt_time(started)),
                _ => format!("created {}", fmt_time(&run.created_at)),
            },
        })
        .collect();
    let template = QueueTemplate {
        page: Page::new("Queue", "queue"),
        rows,
        more: total - runs.len() as i64,
    };
    render(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------------------------
// GET, POST /sweeps/new: the new-sweep form

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
        max_runs: super::sweeps::MAX_SWEEP_RUNS,
        error: error.to_string(),
    }
}

async fn new_sweep_form() -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &new_sweep_template(&NewSweepForm::defaults(), "", &[]),
    )
}

/// `POST /sweeps/new`: validates the grid as the API does, queues every run, then 303 to the
/// sweep's page; an invalid sweep shows the form again with the values typed and the reason (422).
async fn new_sweep_submit(
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
    let (name, spec, runs) = match super::sweeps::build_sweep(body).await {
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
struct Progress {
    total: usize,
    finished: usize,
    counts: Vec<(&'static str, usize)>,
}

impl Progress {
    fn of(runs: &[RunRecord]) -> Progress {
        Progress {
            total: runs.len(),
            finished: runs.iter().filter(|r| r.status.is_final()).count(),
            counts: STATUSES
                .iter()
                .map(|s| (s.name(), runs.iter().filter(|r| r.status == *s).count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    fn percent(&self) -> usize {
        (self.finished * 100).checked_div(self.total).unwrap_or(0)
    }
}

#[derive(Template)]
#[template(path = "sweep.html")]
struct SweepTemplate {
    page: Page,
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

/// A grid axis of a stored spec as text: `64, 128`.
fn spec_list(spec: &Value, key: &str) -> String {
    match spec.get(key) {
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
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

async fn sweep_page(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, PageError> {
    let id = path
        .map(|Path(id)| id)
        .map_err(|_| PageError::not_found("there is no such sweep: sweep ids are integers"))?;
    let sweep = state.store.sweep(id).await?;
    let (runs, _) = state
        .store
        .runs(&super::sweeps::sweep_runs_query(id))
        .await?;
    let progress = Progress::of(&runs);
    let spec = &sweep.spec;
    let seeds = if spec.get("seeds").is_some() {
        spec_list(spec, "seeds")
    } else {
        "0".into()
    };
    let grid = vec![
        ("Parameterizations", spec_list(spec, "parameterizations")),
        ("Widths", spec_list(spec, "widths")),
        ("Depths", spec_list(spec, "depths")),
        ("Base learning rates", spec_list(spec, "lrs")),
        ("Seeds", seeds),
    ];
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
        id,
        name: sweep.name.clone(),
        created: fmt_time(&sweep.created_at),
        is_final: progress.finished == progress.total,
        grid,
        shared: spec
            .get("config")
            .map(|c| flatten(c).into_iter().collect())
            .unwrap_or_default(),
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

async fn sweeps_list(State(state): State<AppState>) -> Result<Response, PageError> {
    let sweeps = state
        .store
        .sweeps()
        .await?
        .into_iter()
        .map(|(sweep, total, finished)| {
            let axis = |key: &str, one: &str, many: &str| {
                let n = match sweep.spec.get(key) {
                    Some(Value::Array(values)) => values.len(),
                    _ => 1,
                };
                format!("{n} {}", if n == 1 { one } else { many })
            };
            SweepRow {
                href: format!("/sweeps/{}", sweep.id),
                id: sweep.id,
                name: sweep.name.clone(),
                grid: [
                    axis("parameterizations", "parameterization", "parameterizations"),
                    axis("widths", "width", "widths"),
                    axis("depths", "depth", "depths"),
                    axis("lrs", "LR", "LRs"),
                    axis("seeds", "seed", "seeds"),
                ]
                .join(" × "),
                created: fmt_time(&sweep.created_at),
                total,
                finished,
                percent: (finished * 100).checked_div(total).unwrap_or(0),
            }
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
    fn formatting() {
        assert_eq!(fmt_real(0.00390625), "0.003906");
        assert_eq!(fmt_real(0.0009765625), "9.77e-4");
        assert_eq!(fmt_real(128.0), "128");
        assert_eq!(fmt_sci(1.234e12), "1.23e12");
        assert_eq!(fmt_count(3_000_000.0), "3M");
        assert_eq!(fmt_count(12_500.0), "12.5k");
        assert_eq!(fmt_time("2025-06-01T12:34:56.789Z"), "2025-06-01 12:34");
        assert_eq!(encode("in:1,2 x&y"), "in:1,2%20x%26y");
    }

    #[test]
    fn field_mentions_are_whole_words() {
        let m = "width 100 is not a multiple of d_head 64";
        assert!(mentions(m, "width") && mentions(m, "d_head"));
        assert!(!mentions("base_width must be positive", "width"));
    }

    #[test]
    fn the_form_builds_the_api_body() {
        let mut form = NewRunForm::defaults();
        form.tags = Some(" a, b ,,".into());
        form.tokens = Some("3e6".into());
        let body = form.to_json().unwrap();
        assert_eq!(body["width"], 128);
        assert_eq!(body["tokens"], 3_000_000);
        assert_eq!(body["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(body["data"]["vocab"], 256);
        assert!(!body.contains_key("alpha"));
        form.width = Some("wide".into());
        assert_eq!(form.to_json().unwrap_err().1, "width");
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

    #[test]
    fn configs_flatten_to_dotted_keys() {
        let rows = flatten(&serde_json::json!({"a": 1, "data": {"kind": "builtin"}, "t": null}));
        assert_eq!(rows["a"], "1");
        assert_eq!(rows["data.kind"], "builtin");
        assert_eq!(rows["t"], "—");
    }
}
