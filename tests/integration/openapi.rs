//! The OpenAPI document (`/api/v1/openapi.json`) and its HTML rendering (`/api/docs`): every
//! route is described, documented parameters are accepted, and live responses have the
//! documented fields.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::jobs::Jobs;
use shapewise::store::Store;
use shapewise::web::{AppState, ServerSettings, router};
use std::collections::BTreeSet;
use tower::ServiceExt;

async fn router_app(name: &str) -> axum::Router {
    let dir = std::env::temp_dir().join(format!("shapewise-openapi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("test.db")).await.unwrap();
    let jobs = Jobs::new(store.clone());
    router(AppState::new(store, jobs, ServerSettings::default()))
}

/// Status, content type and body of one request.
async fn fetch(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, bytes.to_vec())
}

async fn json_call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, bytes) = fetch(app, method, uri, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn document(app: &axum::Router) -> Value {
    let (status, content_type, bytes) = fetch(app, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// The property names of a component schema.
fn schema_fields(doc: &Value, name: &str) -> BTreeSet<String> {
    keys(
        doc.pointer(&format!("/components/schemas/{name}/properties"))
            .unwrap_or_else(|| panic!("no schema {name} with properties")),
    )
}

/// The component schema a response of an operation refers to.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a str {
    let ptr = format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema/$ref",
        path.replace('~', "~0").replace('/', "~1")
    );
    doc.pointer(&ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{method} {path} {status}: no JSON schema reference"))
        .rsplit('/')
        .next()
        .unwrap()
}

/// Every API operation the server routes: the `/api/` entries of the access policy (which a
/// security test checks against the router itself).
fn routes() -> Vec<(String, &'static str)> {
    shapewise::web::auth::POLICY
        .iter()
        .filter(|(_, path, _)| path.starts_with("/api/v1/") || path.starts_with("/api/2.0/"))
        .map(|(method, path, _)| (method.to_ascii_lowercase(), *path))
        .collect()
}

#[tokio::test]
async fn the_document_describes_every_route() {
    let app = router_app("routes").await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "openapi version: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    let routes = routes();
    for (method, path) in &routes {
        let (method, path) = (method.as_str(), *path);
        let op = paths
            .get(path)
            .and_then(|item| item.get(method))
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let summary = op["summary"].as_str().unwrap_or("");
        assert!(!summary.is_empty(), "{method} {path} has no summary");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
        if path.contains("{id}") {
            let params = op["parameters"].as_array().expect("parameters");
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "id" && p["in"] == "path"),
                "{method} {path} does not document its id"
            );
        }
        if method == "post" && path.ends_with(".csv") {
            assert!(
                op.pointer("/requestBody/content/text~1csv/schema")
                    .is_some(),
                "{method} {path} has no CSV request body"
            );
        } else if method == "post" && !path.ends_with("/cancel") && !path.ends_with("/claim") {
            assert!(
                op.pointer("/requestBody/content/application~1json/schema/$ref")
                    .is_some(),
                "{method} {path} has no request body schema"
            );
        }
        // Every error is the {"error", "detail"} object; the MLflow API's handlers answer in
        // MLflow's shape (its guards, 401, 403 and 415, in shapewise's).
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = response.pointer("/content/application~1json/schema/$ref");
                let mlflow = path.starts_with("/api/2.0/mlflow/")
                    && schema == Some(&json!("#/components/schemas/MlflowErrorBody"));
                assert!(
                    mlflow || schema == Some(&json!("#/components/schemas/ErrorBody")),
                    "{method} {path} {status}"
                );
            }
        }
    }
    // Nothing outside the router's routes.
    let documented: usize = paths.values().map(|item| keys(item).len()).sum();
    assert_eq!(documented, routes.len(), "unexpected documented operations");
    assert_eq!(
        schema_fields(&doc, "ErrorBody"),
        ["detail", "error"].map(String::from).into()
    );
}

#[tokio::test]
async fn the_docs_page_renders_the_document() {
    let app = router_app("page").await;
    let (status, content_type, bytes) = fetch(&app, "GET", "/api/docs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(bytes).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    for text in [
        "/api/v1/sweeps",
        "/api/v1/runs/{id}/metrics.csv",
        "Queues a sweep",
        "CreateRun",
        "RunRecord",
        "/api/v1/openapi.json",
    ] {
        assert!(html.contains(text), "the page lacks '{text}'");
    }
    for external in ["<script", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "the page loads '{external}'");
    }
}

/// A value for a documented query parameter: its example, else a number.
fn sample(param: &Value) -> String {
    match param
        .get("example")
        .or_else(|| param.pointer("/schema/example"))
    {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "1".into(),
    }
}

fn query_string(doc: &Value, path: &str) -> String {
    doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| {
            let value: String = sample(p)
                .chars()
                .map(|c| match c {
                    ':' => "%3A".to_string(),
                    ',' => "%2C".to_string(),
                    c => c.to_string(),
                })
                .collect();
            format!("{}={value}", p["name"].as_str().unwrap())
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn documented_query_parameters_are_accepted() {
    let app = router_app("params").await;
    let doc = document(&app).await;
    let plan = format!("/api/v1/plan?{}", query_string(&doc, "/api/v1/plan"));
    let (status, body) = json_call(&app, "GET", &plan, None).await;
    assert_eq!(status, StatusCode::OK, "{plan}: {body}");
    assert_eq!(keys(&body), schema_fields(&doc, "ParamPlan"));
    for path in ["/api/v1/runs", "/api/v1/runs.csv"] {
        let uri = format!("{path}?{}", query_string(&doc, path));
        let (status, _, bytes) = fetch(&app, "GET", &uri, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let (status, _) = json_call(&app, "GET", "/api/v1/runs?widht=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn live_responses_have_the_documented_fields() {
    let app = router_app("shapes").await;
    let doc = document(&app).await;
    let check = |value: &Value, path: &str, method: &str, status: &str| {
        let name = response_schema(&doc, path, method, status);
        assert_eq!(
            keys(value),
            schema_fields(&doc, name),
            "{method} {path}: {name}"
        );
    };

    let import = json!({"runs": [{
        "name": "external", "parameterization": "mup", "width": 256, "depth": 4,
        "params": 3_000_000, "tokens": 60_000_000, "final_loss": 3.5, "tags": ["ext"],
        "metrics": [{"step": 0, "tokens": 1, "train_loss": 9.0}]
    }]});
    let (status, imported) = json_call(&app, "POST", "/api/v1/runs/import", Some(import)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    check(&imported, "/api/v1/runs/import", "post", "201");
    let id = imported["ids"][0].as_i64().unwrap();

    let (status, appended) = json_call(
        &app,
        "POST",
        &format!("/api/v1/runs/{id}/metrics"),
        Some(json!({"points": [{"step": 10, "flops": 1e12, "val_loss": 5.0}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{appended}");
    check(&appended, "/api/v1/runs/{id}/metrics", "post", "200");

    let (_, list) = json_call(&app, "GET", "/api/v1/runs", None).await;
    check(&list, "/api/v1/runs", "get", "200");
    let (_, run) = json_call(&app, "GET", &format!("/api/v1/runs/{id}"), None).await;
    check(&run, "/api/v1/runs/{id}", "get", "200");
    check(&list["runs"][0], "/api/v1/runs/{id}", "get", "200");
    let (_, metrics) = json_call(&app, "GET", &format!("/api/v1/runs/{id}/metrics"), None).await;
    check(&metrics, "/api/v1/runs/{id}/metrics", "get", "200");
    assert_eq!(
        keys(&metrics["points"][0]),
        schema_fields(&doc, "MetricPoint")
    );
    let (_, tagged) = json_call(
        &app,
        "POST",
        &format!("/api/v1/runs/{id}/tags"),
        Some(json!({"add": ["a"], "remove": ["ext"]})),
    )
    .await;
    check(&tagged, "/api/v1/runs/{id}/tags", "post", "200");
    let (_, cancelled) = json_call(&app, "POST", &format!("/api/v1/runs/{id}/cancel"), None).await;
    check(&cancelled, "/api/v1/runs/{id}/cancel", "post", "200");

    let sweep = json!({
        "name": "doc-sweep", "parameterizations": ["completep"], "widths": [64],
        "depths": [2], "lrs": [0.01, 0.02],
        "config": {"d_head": 32, "context": 16, "batch": 4, "tokens": 640,
                   "data": {"kind": "builtin", "seed": 0, "vocab": 32}}
    });
    let (status, created) = json_call(&app, "POST", "/api/v1/sweeps", Some(sweep)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    check(&created, "/api/v1/sweeps", "post", "201");
    assert_eq!(keys(&created["sweep"]), schema_fields(&doc, "SweepRecord"));
    let sweep_id = created["sweep"]["id"].as_i64().unwrap();
    let (_, detail) = json_call(&app, "GET", &format!("/api/v1/sweeps/{sweep_id}"), None).await;
    check(&detail, "/api/v1/sweeps/{id}", "get", "200");
    assert_eq!(
        keys(&detail["progress"]),
        schema_fields(&doc, "SweepProgress")
    );

    let run_body = json!({
        "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32, "context": 16,
        "batch": 4, "tokens": 640, "data": {"kind": "builtin", "seed": 0, "vocab": 32},
        "name": "doc-run", "tags": ["t"]
    });
    let (status, queued) = json_call(&app, "POST", "/api/v1/runs", Some(run_body)).await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");
    check(&queued, "/api/v1/runs", "post", "201");

    let (status, missing) = json_call(&app, "GET", "/api/v1/runs/999999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(keys(&missing), schema_fields(&doc, "ErrorBody"));
    let kinds = doc
        .pointer("/components/schemas/ErrorKind/enum")
        .and_then(Value::as_array)
        .unwrap();
    assert!(kinds.contains(&missing["error"]));
}

/// What the document promises about requests, the server keeps: what the schemas forbid is
/// refused with 400 or 422 (never a 500 or a panic), and what they allow is not refused with
/// 400. (Schemathesis checks the same at scale: `.ci/fuzz_api.sh`.)
#[tokio::test]
async fn the_server_is_as_strict_as_the_document() {
    let app = router_app("strict").await;
    let two_63 = "9223372036854775808";
    let body = |text: String| Some(serde_json::from_str::<Value>(&text).unwrap());
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(&str, String, Option<Value>, StatusCode)> = vec![
        // Integers out of their documented range, however large: 422 before any arithmetic.
        (
            "POST",
            "/api/v1/runs".into(),
            body(format!(
                r#"{{"parameterization": "completep", "width": {two_63}, "depth": 8}}"#
            )),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(
                json!({"parameterization": "completep", "width": 16448, "depth": 2, "d_head": 64}),
            ),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            body(format!(
                r#"{{"parameterization": "completep", "width": 64, "depth": 2, "seed": {two_63}}}"#
            )),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(json!({"parameterization": "mup", "width": 64, "depth": 2,
                        "data": {"kind": "builtin", "seed": 0, "vocab": 64, "colour": 1}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/sweeps".into(),
            body(format!(
                r#"{{"name": "s", "parameterizations": ["sp"], "widths": [{two_63}], "depths": [2], "lrs": [0.01]}}"#
            )),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/sweeps".into(),
            Some(
                json!({"name": "s", "parameterizations": ["sp"], "widths": [64], "depths": [2],
                        "lrs": [0.01], "config": {"width": 128}}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        // Empty filters are ignored; filters take the numbers their pattern describes.
        (
            "GET",
            "/api/v1/runs?id=&name=&width=&lr=&tag=".into(),
            None,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/runs.csv?id=in:1,%2B2,-3&lr=ge:.5e-3&width=99999999999999999999".into(),
            None,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/runs?lr=inf".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v1/runs?id=in:".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        // Selections: integral floats are integers; unknown and empty keys are refused.
        (
            "POST",
            "/api/v1/fits/compute".into(),
            Some(json!({"selection": {"run_ids": [1.0, 2.0]}, "resamples": 10.0})),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/fits/compute".into(),
            Some(
                json!({"selection": {"filters": {"width": ["", 256.0], "lr": 0.5}},
                        "confidence": 0.9999999999999999}),
            ),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/fits/compute".into(),
            Some(json!({"selection": {"filters": {"": ""}}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/fits/compute".into(),
            Some(json!({"selection": {"filters": {"width": [1, 2, 3, 4, 5]}}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/analysis/savings".into(),
            Some(json!({"selection": {"tags": ["x"]}, "candidate": "mup", "baseline": "mup"})),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/runs/1/tags".into(),
            Some(json!({"add": ["a"], "colour": "red"})),
            StatusCode::BAD_REQUEST,
        ),
        // The planner: a budget whose product overflows, and tokens per parameter so few that
        // a search for the width would overflow.
        (
            "POST",
            "/api/v1/plan/recommend".into(),
            Some(json!({"selection": {"tags": ["x"]}, "device_hours": 1e300,
                        "flops_per_second": 1e300, "vocab": 256, "context": 128})),
            unprocessable,
        ),
        (
            "POST",
            "/api/v1/plan/recommend".into(),
            Some(json!({"selection": {"tags": ["x"]}, "budget_flops": 1e20,
                        "tokens_per_param": 5e-324, "vocab": 256, "context": 128})),
            unprocessable,
        ),
        // A plan whose scaled numbers overflow is refused rather than answered with nulls.
        (
            "GET",
            "/api/v1/plan?param=mup&width=16384&depth=2&base_width=1&weight_decay=1e308".into(),
            None,
            unprocessable,
        ),
        (
            "GET",
            "/api/v1/plan?param=mup&width=16448&depth=2".into(),
            None,
            unprocessable,
        ),
        // An import whose derived FLOPs overflow.
        (
            "POST",
            "/api/v1/runs/import".into(),
            Some(
                json!({"runs": [{"parameterization": "mup", "params": 1_000_000_000_000_000_000_i64,
                                  "tokens": 1e300, "final_loss": 3.0}]}),
            ),
            unprocessable,
        ),
        // Studies: `settings: null` is "no changes".
        (
            "POST",
            "/api/v1/studies".into(),
            Some(
                json!({"kind": "depth-transfer", "size": "small", "settings": null, "dry_run": true}),
            ),
            StatusCode::OK,
        ),
        // Diagnostics: at most 64 sizes.
        (
            "POST",
            "/api/v1/diagnostics".into(),
            Some(json!({"kind": "linearization", "options": {"depths": vec![2; 65]}})),
            unprocessable,
        ),
    ];
    for (method, uri, body, expected) in cases {
        let (status, _, bytes) = fetch(&app, method, &uri, body.clone()).await;
        assert_eq!(
            status,
            expected,
            "{method} {uri} {}: {}",
            body.unwrap_or(Value::Null),
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// The document's request schemas carry the server's rules: bounds from the table the
/// handlers check, closed objects, the budget's two forms, one options schema per diagnostic.
#[tokio::test]
async fn the_document_states_the_request_rules() {
    let app = router_app("rules").await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateRun"]["properties"]["width"]["maximum"],
        16384
    );
    assert_eq!(
        schemas["CreateRun"]["properties"]["seed"]["maximum"],
        json!(i64::MAX)
    );
    assert_eq!(schemas["CreateRun"]["additionalProperties"], false);
    assert_eq!(
        schemas["RecommendRequest"]["anyOf"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        keys(&schemas["CreateDiagnostic"]["discriminator"]["mapping"]),
        ["coord-depth", "coord-width", "linearization"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        schemas["CreateStudy"]["properties"]["settings"]["type"],
        json!(["object", "null"])
    );
    let params = doc["paths"]["/api/v1/runs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let width = params.iter().find(|p| p["name"] == "width").unwrap();
    assert!(width["schema"]["pattern"].as_str().unwrap().contains("in:"));
    let name = params.iter().find(|p| p["name"] == "name").unwrap();
    assert_eq!(name["schema"], json!({"type": "string"}));
}
