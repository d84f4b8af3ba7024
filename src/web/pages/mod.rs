//! The browser UI: server-rendered HTML pages (askama templates in `templates/`), the chart
//! fragments they embed and the static files they load (`static/`, compiled into the binary).
//!
//! Pages work without JavaScript: filters and sorting are links and GET forms, creating and
//! cancelling runs and sweeps are POST forms that redirect. `static/app.js` only adds live updates
//! on a run's page (server-sent events, then a re-fetched chart), a timed refresh of an unfinished
//! sweep's page, the live run count of the new-sweep form and the `ids=1,2,3` form of the compare
//! URL.

mod account;
mod analysis;
mod compare;
mod diagnostics;
mod new_run;
mod planner;
mod queue;
mod runs;
mod studies;
mod sweeps;

use super::AppState;
use super::charts::{self, XAxis};
use super::error::ApiError;
use crate::store::{MetricPoint, RunRecord, StoreError};
use askama::Template;
use axum::Router;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use compare::compare;
use new_run::{new_run_form, new_run_submit};
use queue::queue;
use runs::{cancel_run, index, run_chart, run_page};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use sweeps::{new_sweep_form, new_sweep_submit, sweep_page, sweeps_list};

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
        .route("/workers", get(queue::workers_page))
        .route("/sweeps", get(sweeps_list))
        .route("/sweeps/new", get(new_sweep_form).post(new_sweep_submit))
        .route("/sweeps/{id}", get(sweep_page))
        .route("/static/style.css", get(style_css))
        .route("/static/app.js", get(app_js))
        .merge(account::routes())
        .merge(analysis::routes())
        .merge(planner::routes())
        .merge(diagnostics::routes())
        .merge(studies::routes())
}

// ---------------------------------------------------------------------------------------------
// Static files

const STYLE_CSS: &str = include_str!("../../../static/style.css");
const APP_JS: &str = include_str!("../../../static/app.js");

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

/// What the layout needs: the title, which nav entry is current, the static files' version,
/// and who is signed in (empty when authentication is off).
struct Page {
    title: String,
    nav: &'static str,
    version: &'static str,
    user: String,
    admin: bool,
}

impl Page {
    fn new(title: impl Into<String>, nav: &'static str) -> Page {
        let caller = crate::web::auth::current();
        let signed_in = caller.as_ref().filter(|c| c.token_id.is_some());
        Page {
            title: title.into(),
            nav,
            version: ASSET_VERSION.as_str(),
            user: signed_in
                .map(|c| format!("{} ({})", c.name, c.role))
                .unwrap_or_default(),
            admin: signed_in.is_some_and(|c| c.role == crate::auth::Role::Admin),
        }
    }
}

/// An HTML error page with `status` and `message` (for the request guards).
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    PageError::new(status, message).into_response()
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

/// A JSON value as a page shows it: list items comma-separated, strings bare, anything else
/// as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run as a chart legend names it among others: id, parameterization, shape and learning
/// rate (`#12 completep 64×4 lr 0.01`), then its name if it has one.
fn legend_label(run: &RunRecord) -> String {
    let mut label = format!("#{} {}", run.id, run.parameterization);
    if let (Some(w), Some(d)) = (run.width, run.depth) {
        label.push_str(&format!(" {w}×{d}"));
    }
    if let Some(lr) = run.lr {
        label.push_str(&format!(" lr {}", fmt_real(lr)));
    }
    if let Some(name) = run.name.as_deref().filter(|n| !n.is_empty()) {
        label.push_str(&format!(" {name}"));
    }
    label
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

/// Refuses form posts from other sites, or from an opaque (`null`) origin: a page elsewhere
/// must not create or cancel runs here.
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if crate::web::auth::same_origin(headers) {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this form must be submitted from shapewise's own pages",
        ))
    }
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
// Form pieces shared by the new-run and new-sweep forms

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
    fn configs_flatten_to_dotted_keys() {
        let rows = flatten(&serde_json::json!({"a": 1, "data": {"kind": "builtin"}, "t": null}));
        assert_eq!(rows["a"], "1");
        assert_eq!(rows["data.kind"], "builtin");
        assert_eq!(rows["t"], "—");
    }
}
