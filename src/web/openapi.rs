//! The OpenAPI description of the REST API: `GET /api/v1/openapi.json` serves the document that
//! utoipa generates from the `#[utoipa::path]` attributes on the handlers, and `GET /api/docs`
//! renders the same document as one plain HTML page (server-side, inline CSS, no scripts and no
//! external assets).
//!
//! The handlers parse their bodies and queries by hand (so that every problem maps to a precise
//! 400 or 422), so the request and response schemas below are documentation-only mirrors of what
//! the handlers accept and return; they are never constructed. The mirrors of the run config and
//! the plan keep `param.rs`, `train.rs` and `data.rs` free of OpenAPI derives, and the tests below
//! (and `tests/integration/openapi.rs`, against live responses) check them against the real types
//! so they cannot drift silently.

use super::AppState;
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde_json::{Value, json};
use std::fmt::Write;
use std::sync::LazyLock;
use utoipa::OpenApi;

mod strict;

/// The routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/docs", get(docs_page))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shapewise",
        description = "Train and compare transformer runs under width and depth scaling rules \
            (SP, muP, depth-muP, CompleteP), import runs trained elsewhere, queue sweeps and \
            export results. Every error is a JSON object `{\"error\": kind, \"detail\": message}`."
    ),
    paths(
        super::runs::list_runs,
        super::runs::create_run,
        super::runs::estimate_run,
        super::runs::get_run,
        super::runs::delete_run,
        super::runs::cancel_run,
        super::runs::edit_tags,
        super::runs::run_metrics,
        super::imports::append_metrics,
        super::runs::run_events,
        super::imports::import_runs,
        super::imports::import_runs_csv,
        super::sweeps::create_sweep,
        super::sweeps::get_sweep,
        super::export::runs_csv,
        super::export::metrics_csv,
        super::plan::get_plan,
        super::fits::chinchilla_fit,
        super::fits::compute_fit,
        super::fits::savings_analysis,
        super::tokens::whoami,
        super::tokens::list_tokens,
        super::tokens::create_token,
        super::tokens::revoke_token,
        openapi_json,
    ),
    components(schemas(crate::jobs::RunEvent, super::error::ErrorKind, super::fits::SelectionFilters)),
    tags(
        (name = "runs", description = "Create, list, inspect, cancel, delete and tag runs; their metrics, live."),
        (name = "imports", description = "Runs trained elsewhere: batch imports and appended metrics."),
        (name = "sweeps", description = "A named grid of runs queued in one request, and its progress."),
        (name = "export", description = "CSV exports for pandas and spreadsheets."),
        (name = "plan", description = "What a parameterization does to each parameter group at a target shape."),
        (name = "fits", description = "Scaling-law fits of stored runs: the Chinchilla surface, loss versus compute, FLOP savings at matched loss."),
        (name = "tokens", description = "API tokens and roles (admins), and who the caller is."),
        (name = "meta", description = "This description of the API."),
        (name = "mlflow", description = "The MLflow tracking REST API (2.0): the official MLflow client logs here unchanged."),
    )
)]
struct ApiDoc;

/// The OpenAPI document of the REST API as served: [`document`] with the request rules the
/// derives cannot state ([`strict`]).
pub fn document_json() -> Value {
    let mut doc =
        serde_json::to_value(document()).expect("the OpenAPI document serializes to JSON");
    strict::tighten(&mut doc);
    doc
}

/// The OpenAPI document of the REST API, as the derives describe it.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for part in [
        super::analysis::api_doc(),
        super::recommend::api_doc(),
        super::diagnostics::api_doc(),
        super::studies::api_doc(),
        super::mlflow::api_doc(),
        super::workers::api_doc(),
    ] {
        doc.merge(part);
    }
    // The package declares no license: leave the field out rather than send an empty name.
    doc.info.license = None;
    describe_guards(&mut doc);
    doc
}

/// Adds what the request guards answer to every operation: the bearer scheme and 401/403 on
/// routes that need a role, 415 on API writes (see [`super::auth`]).
fn describe_guards(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            (axum::http::Method::GET, &mut item.get),
            (axum::http::Method::POST, &mut item.post),
            (axum::http::Method::PUT, &mut item.put),
            (axum::http::Method::DELETE, &mut item.delete),
            (axum::http::Method::PATCH, &mut item.patch),
        ] {
            let Some(operation) = operation else { continue };
            let responses = &mut operation.responses.responses;
            if super::auth::access(&method, path) != Some(super::auth::Access::Public) {
                operation.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                responses.insert(
                    "401".into(),
                    error("No valid token (when authentication is on)"),
                );
                responses.insert("403".into(), error("The token's role may not do this"));
            }
            if matches!(
                method,
                axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::PATCH
            ) {
                responses.insert(
                    "415".into(),
                    error("The body was not sent as `Content-Type: application/json`"),
                );
            }
        }
    }
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| document_json().to_string());

static DOCS_HTML: LazyLock<String> = LazyLock::new(|| render_docs(&document_json()));

/// The OpenAPI description of this API.
///
/// Generated from the handlers; `GET /api/docs` renders it as a browsable page.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1, JSON)", body = Object))
)]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

async fn docs_page() -> Html<&'static str> {
    Html(DOCS_HTML.as_str())
}

// ---------------------------------------------------------------------------------------------
// The HTML page

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const STYLE: &str = "
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{margin:.2rem 0}h1 small{font-size:.9rem;color:#667;font-weight:normal}
h2{margin-top:2.5rem;border-bottom:2px solid #d8dce3;padding-bottom:.3rem;text-transform:capitalize}
h3{margin:0;font-size:1.05rem;font-family:ui-monospace,Menlo,Consolas,monospace}
h4{margin:1rem 0 .3rem;font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:#556}
a{color:#1f5fbf;text-decoration:none}a:hover{text-decoration:underline}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
code{background:#eef0f4;padding:0 .25em;border-radius:3px}
pre{background:#1d2330;color:#e8eaf0;padding:.8rem;border-radius:6px;overflow:auto}
.op,.schema{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}
.summary{font-weight:600;margin:.4rem 0}
.method{display:inline-block;min-width:4.2em;text-align:center;color:#fff;border-radius:4px;padding:.1em .4em;margin-right:.5em;font-size:.8rem;font-weight:700;text-transform:uppercase}
.get{background:#2f7d4a}.post{background:#1f5fbf}.delete{background:#b3261e}.put,.patch{background:#9a6700}
.options,.head,.trace{background:#667}
table{border-collapse:collapse;width:100%;margin:.3rem 0}
th,td{text-align:left;vertical-align:top;border-bottom:1px solid #e4e7ec;padding:.35rem .5rem}
th{font-size:.8rem;color:#556;font-weight:600}
td:first-child{white-space:nowrap}
.req{color:#b3261e;font-size:.8rem}.muted{color:#667}
nav ul{columns:2;padding-left:1.2rem}nav li{break-inside:avoid}
";

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `text` and turns `` `code` `` spans into `<code>`.
fn inline_text(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// A description (a little Markdown: paragraphs, `-` lists and code spans) as HTML.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        let lines: Vec<&str> = block.lines().map(str::trim).collect();
        if lines.iter().all(|l| l.starts_with("- ")) {
            out.push_str("<ul>");
            for line in lines {
                let _ = write!(out, "<li>{}</li>", inline_text(&line[2..]));
            }
            out.push_str("</ul>");
        } else {
            let _ = write!(out, "<p>{}</p>", inline_text(&lines.join(" ")));
        }
    }
    out
}

fn anchor(prefix: &str, name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{prefix}-{slug}")
}

/// The name of a component schema from a `$ref`.
fn ref_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// A schema's type, briefly, with links to component schemas.
fn type_html(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = ref_name(reference);
        return format!("<a href=\"#{}\">{}</a>", anchor("schema", name), esc(name));
    }
    for (key, separator) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " &amp; ")] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            return list
                .iter()
                .map(type_html)
                .collect::<Vec<_>>()
                .join(separator);
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let parts: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "array" => format!(
                "array of {}",
                schema.get("items").map_or_else(|| "any".into(), type_html)
            ),
            "null" => "null".into(),
            other => match schema.get("format").and_then(Value::as_str) {
                Some(format) => format!(
                    "{} <span class=\"muted\">({})</span>",
                    esc(other),
                    esc(format)
                ),
                None => esc(other),
            },
        })
        .collect();
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(" | ")
    }
}

/// Constraints and defaults of a schema, as a short note.
fn constraints(schema: &Value) -> String {
    let mut notes = Vec::new();
    for (key, label) in [
        ("default", "default"),
        ("minimum", "min"),
        ("exclusiveMinimum", "above"),
        ("maximum", "max"),
        ("exclusiveMaximum", "below"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("pattern", "pattern"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("example", "e.g."),
    ] {
        if let Some(value) = schema.get(key) {
            notes.push(format!("{label} <code>{}</code>", esc(&value.to_string())));
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"muted\">({})</span>", notes.join(", "))
    }
}

/// A schema's description, or that of the first member of a `oneOf` or `allOf` holding one
/// (utoipa describes an optional reference on the reference, inside `oneOf: [ref, null]`).
fn description_of(schema: &Value) -> Option<&str> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .or_else(|| {
            ["oneOf", "allOf"]
                .iter()
                .filter_map(|key| schema.get(*key).and_then(Value::as_array))
                .flatten()
                .find_map(|member| member.get("description").and_then(Value::as_str))
        })
}

/// The properties of an object schema as a table, required ones first.
fn properties_table(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<(&String, &Value)> = properties.iter().collect();
    fields.sort_by_key(|(name, _)| !required.contains(&name.as_str()));
    let mut out = String::from("<table><tr><th>Field</th><th>Type</th><th>Description</th></tr>");
    for (name, property) in fields {
        let flag = if required.contains(&name.as_str()) {
            " <span class=\"req\">required</span>"
        } else {
            ""
        };
        let description = description_of(property)
            .map(inline_text)
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{flag}</td><td>{}</td><td>{description}{}</td></tr>",
            esc(name),
            type_html(property),
            constraints(property)
        );
    }
    out.push_str("</table>");
    out
}

/// The body of a component schema: description, fields, variants, values, example.
fn schema_body(schema: &Value) -> String {
    let mut out = String::new();
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&prose(description));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let _ = write!(
            out,
            "<p>One of: {}</p>",
            type_html(&json!({"enum": values}))
        );
    }
    out.push_str(&properties_table(schema));
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            if part.get("$ref").is_some() {
                let _ = write!(out, "<p>Also every field of {}.</p>", type_html(part));
            } else {
                out.push_str(&properties_table(part));
            }
        }
    }
    if let Some(variants) = (schema.get("oneOf"))
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        out.push_str("<p>One of:</p><ul>");
        for variant in variants {
            out.push_str("<li>");
            match (variant.get("description"))
                .or_else(|| variant.get("title"))
                .and_then(Value::as_str)
            {
                Some(description) => out.push_str(&inline_text(description)),
                None => out.push_str(&type_html(variant)),
            }
            out.push_str(&properties_table(variant));
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
    if let Some(example) = schema.get("example") {
        let pretty = serde_json::to_string_pretty(example).unwrap_or_default();
        let _ = write!(out, "<h4>Example</h4><pre>{}</pre>", esc(&pretty));
    }
    out
}

/// The content map of a request body or response: media type and schema.
fn content_html(content: Option<&Value>) -> String {
    let Some(content) = content.and_then(Value::as_object) else {
        return "<span class=\"muted\">no body</span>".into();
    };
    content
        .iter()
        .map(|(media, body)| {
            let schema = body.get("schema").map(type_html).unwrap_or_default();
            format!("<code>{}</code> {schema}", esc(media))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

fn operation_html(path: &str, method: &str, op: &Value) -> String {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or(method);
    let mut out = format!(
        "<article class=\"op\" id=\"{}\"><h3><span class=\"method {method}\">{method}</span>{}</h3>",
        anchor("op", id),
        esc(path)
    );
    if let Some(summary) = op.get("summary").and_then(Value::as_str) {
        let _ = write!(out, "<p class=\"summary\">{}</p>", inline_text(summary));
    }
    if let Some(description) = op.get("description").and_then(Value::as_str) {
        out.push_str(&prose(description));
    }
    if let Some(parameters) = op.get("parameters").and_then(Value::as_array) {
        out.push_str("<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr>");
        for p in parameters {
            let get = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
            let flag = if p.get("required").and_then(Value::as_bool) == Some(true) {
                " <span class=\"req\">required</span>"
            } else {
                ""
            };
            let schema = p.get("schema").cloned().unwrap_or(Value::Null);
            let mut notes = constraints(&schema);
            if let Some(example) = p.get("example") {
                notes.push_str(&format!(
                    " <span class=\"muted\">(e.g. <code>{}</code>)</span>",
                    esc(&example.to_string())
                ));
            }
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{flag}</td><td>{}</td><td>{}</td><td>{}{notes}</td></tr>",
                esc(get("name")),
                esc(get("in")),
                type_html(&schema),
                inline_text(get("description"))
            );
        }
        out.push_str("</table>");
    }
    if let Some(body) = op.get("requestBody") {
        out.push_str("<h4>Request body</h4><p>");
        if let Some(description) = body.get("description").and_then(Value::as_str) {
            let _ = write!(out, "{}<br>", inline_text(description));
        }
        out.push_str(&content_html(body.get("content")));
        out.push_str("</p>");
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.push_str(
            "<h4>Responses</h4><table><tr><th>Status</th><th>Description</th><th>Body</th></tr>",
        );
        for (status, response) in responses {
            let description = response
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(status),
                inline_text(description),
                content_html(response.get("content"))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</article>");
    out
}

/// Renders an OpenAPI document (as JSON) as one self-contained HTML page: the operations grouped
/// by tag, then the component schemas.
pub fn render_docs(doc: &Value) -> String {
    let info = doc.get("info").cloned().unwrap_or(Value::Null);
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let title = text(&info, "title");
    let mut operations: Vec<(String, String, String, &Value)> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let tag = op
                        .get("tags")
                        .and_then(|t| t.get(0))
                        .and_then(Value::as_str)
                        .unwrap_or("other")
                        .to_string();
                    operations.push((tag, path.clone(), method.to_string(), op));
                }
            }
        }
    }
    let mut tags: Vec<(String, String)> = doc
        .get("tags")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| (text(t, "name"), text(t, "description")))
                .collect()
        })
        .unwrap_or_default();
    for (tag, ..) in &operations {
        if !tags.iter().any(|(name, _)| name == tag) {
            tags.push((tag.clone(), String::new()));
        }
    }

    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} API</title><style>{STYLE}</style></head><body><main>",
        esc(&title)
    );
    let _ = write!(
        out,
        "<h1>{} API <small>v{} &middot; OpenAPI {}</small></h1>{}\
         <p>Machine-readable: <a href=\"/api/v1/openapi.json\"><code>/api/v1/openapi.json</code></a></p>",
        esc(&title),
        esc(&text(&info, "version")),
        esc(&text(doc, "openapi")),
        prose(&text(&info, "description"))
    );
    out.push_str("<nav><h4>Operations</h4><ul>");
    for (tag, _) in &tags {
        for (_, path, method, op) in operations.iter().filter(|o| &o.0 == tag) {
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or(method);
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><span class=\"method {method}\">{method}</span>{}</a></li>",
                anchor("op", id),
                esc(path)
            );
        }
    }
    out.push_str("</ul></nav>");
    for (tag, description) in &tags {
        let ops: Vec<_> = operations.iter().filter(|o| &o.0 == tag).collect();
        if ops.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "<section><h2 id=\"{}\">{}</h2>",
            anchor("tag", tag),
            esc(tag)
        );
        out.push_str(&prose(description));
        for (_, path, method, op) in ops {
            out.push_str(&operation_html(path, method, op));
        }
        out.push_str("</section>");
    }
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        out.push_str("<section><h2 id=\"schemas\">Schemas</h2>");
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<article class=\"schema\" id=\"{}\"><h3>{}</h3>{}</article>",
                anchor("schema", name),
                esc(name),
                schema_body(schema)
            );
        }
        out.push_str("</section>");
    }
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn doc() -> Value {
        document_json()
    }

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        doc.pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    fn property_names(schema: &Value) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            names.extend(property_names(part));
        }
        names
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// Values of a plain string enum schema.
    fn enum_values(schema: &Value) -> BTreeSet<String> {
        schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn run_config_documents_its_defaults_and_create_run_is_one_closed_object() {
        let doc = doc();
        let config = serde_json::to_value(crate::train::RunConfig::default()).unwrap();
        let settings = schema(&doc, "RunConfig");
        assert_eq!(property_names(settings), keys(&config));
        for (key, value) in config.as_object().unwrap() {
            if value.is_null() {
                continue;
            }
            assert_eq!(
                settings["properties"][key]["default"], *value,
                "documented default of '{key}'"
            );
        }
        // CreateRun: one closed object, every RunConfig field, the shape and the rule required,
        // name and tags.
        let create = schema(&doc, "CreateRun");
        assert!(create.get("allOf").is_none());
        assert_eq!(create["additionalProperties"], json!(false));
        let mut expected = property_names(settings);
        expected.extend(["depth", "name", "parameterization", "tags", "width"].map(String::from));
        assert_eq!(property_names(create), expected);
        let required: BTreeSet<String> =
            serde_json::from_value(create["required"].clone()).unwrap();
        assert_eq!(
            required,
            ["depth", "parameterization", "width"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn run_integers_have_the_ranges_the_handlers_check() {
        let doc = doc();
        let create = schema(&doc, "CreateRun");
        for range in crate::web::bounds::RUN_INTEGERS {
            let property = &create["properties"][range.key];
            assert_eq!(property["minimum"], json!(range.min), "{}", range.key);
            assert_eq!(property["maximum"], json!(range.max), "{}", range.key);
        }
        assert_eq!(
            schema(&doc, "RunConfig")["additionalProperties"],
            json!(false)
        );
    }

    /// Every request body is a closed object (or a choice of closed objects), but an imported
    /// run, whose extra fields are kept as its config, and the MLflow API's, which accept the
    /// fields newer MLflow clients add (as MLflow's own server does).
    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc = doc();
        fn closed(doc: &Value, schema: &Value, at: &str) {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                let name = ref_name(reference);
                let target = &doc["components"]["schemas"][name];
                if name == "ImportedRun" || target.get("enum").is_some() {
                    return;
                }
                return closed(doc, target, &format!("{at} > {name}"));
            }
            for key in ["oneOf", "anyOf"] {
                // Variants that only require properties constrain the object around them.
                if let Some(variants) = schema.get(key).and_then(Value::as_array)
                    && schema.get("properties").is_none()
                {
                    for variant in variants.iter().filter(|v| v["type"] != "null") {
                        closed(doc, variant, at);
                    }
                    return;
                }
            }
            assert_eq!(schema["type"], "object", "{at}: {schema}");
            assert_eq!(schema["additionalProperties"], json!(false), "{at}");
            for (name, property) in schema["properties"].as_object().unwrap() {
                let inner = property.get("items").unwrap_or(property);
                let nested = inner.get("$ref").is_some()
                    || inner["type"] == "object"
                    || inner.pointer("/oneOf/0/$ref").is_some();
                if nested {
                    closed(doc, inner, &format!("{at}.{name}"));
                }
            }
        }
        let mut bodies = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            if path.starts_with("/api/2.0/mlflow/") {
                continue;
            }
            for (method, operation) in item.as_object().unwrap() {
                if let Some(schema) =
                    operation.pointer("/requestBody/content/application~1json/schema")
                {
                    closed(&doc, schema, &format!("{method} {path}"));
                    bodies += 1;
                }
            }
        }
        assert!(bodies >= 15, "{bodies} request bodies");
    }

    #[test]
    fn diagnostic_requests_document_each_kinds_options() {
        let doc = doc();
        for kind in crate::jobs::DiagnosticKind::ALL {
            let options = doc["components"]["schemas"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(name, s)| {
                    name.ends_with("Diagnostic")
                        && s.pointer("/properties/kind/enum/0") == Some(&json!(kind.name()))
                })
                .map(|(name, _)| name.replace("Diagnostic", "Options"))
                .unwrap_or_else(|| panic!("no request for {kind}"));
            assert_eq!(
                property_names(schema(&doc, &options)),
                kind.default_options().keys().cloned().collect(),
                "{options}"
            );
        }
    }

    #[test]
    fn the_plan_mirror_matches_a_real_plan() {
        use crate::param::{BaseHparams, BaseShape, PlanRequest, plan};
        let doc = doc();
        let real = plan(&PlanRequest {
            parameterization: crate::param::Parameterization::CompleteP,
            alpha: None,
            width: 512,
            depth: 8,
            d_head: 64,
            base: BaseShape::default(),
            hparams: BaseHparams::default(),
            attention_scale: None,
        })
        .unwrap();
        let real = serde_json::to_value(real).unwrap();
        assert_eq!(property_names(schema(&doc, "ParamPlan")), keys(&real));
        assert_eq!(
            property_names(schema(&doc, "Groups")),
            keys(&real["groups"])
        );
        assert_eq!(
            property_names(schema(&doc, "GroupRule")),
            keys(&real["groups"]["embedding"])
        );
    }

    #[test]
    fn every_filter_column_is_a_documented_parameter() {
        let doc = doc();
        for path in ["/api/v1/runs", "/api/v1/runs.csv"] {
            let params: BTreeSet<String> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            for column in crate::store::FILTER_COLUMNS
                .iter()
                .chain(&["tag", "sort", "limit", "offset"])
            {
                assert!(
                    params.contains(*column),
                    "{path} does not document '{column}'"
                );
            }
        }
    }

    #[tokio::test]
    async fn error_kinds_are_the_documented_ones() {
        use super::super::ApiError;
        let documented = enum_values(schema(&doc(), "ErrorKind"));
        for error in [
            ApiError::BadRequest("x".into()),
            ApiError::Unprocessable("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::PayloadTooLarge("x".into()),
            ApiError::Internal("x".into()),
        ] {
            let response = error.into_response();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(keys(&body), ["detail", "error"].map(String::from).into());
            assert!(documented.contains(body["error"].as_str().unwrap()));
        }
    }

    #[test]
    fn the_page_escapes_and_links() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(inline_text("a `b<c` d"), "a <code>b&lt;c</code> d");
        let html = render_docs(&doc());
        assert!(html.contains("id=\"schema-RunRecord\""));
        assert!(html.contains("href=\"#schema-RunRecord\""));
        assert!(!html.contains("<script"));
    }
}
