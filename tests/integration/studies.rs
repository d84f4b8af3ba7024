//! One-click studies: planning with estimates, refusals, launching through the API and the form,
//! training the runs for real and showing the results on the study page.

use crate::api::call;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::jobs::Jobs;
use shapewise::store::Store;
use shapewise::web::{AppState, ServerSettings, router};
use std::time::{Duration, Instant};
use tower::ServiceExt;

async fn app(name: &str, workers: usize) -> (axum::Router, Store) {
    let dir = std::env::temp_dir().join(format!("shapewise-studies-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("test.db")).await.unwrap();
    let jobs = Jobs::new(store.clone());
    jobs.spawn_workers(workers);
    let app = router(AppState::new(
        store.clone(),
        jobs,
        ServerSettings::default(),
    ));
    (app, store)
}

async fn page(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, location, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A depth-transfer study small enough to train in seconds: width 32, depths 1 and 2, three
/// learning rates, CompleteP and muP, ten steps per run.
fn tiny_transfer_settings() -> Value {
    json!({
        "parameterizations": ["mup", "completep"], "width": 32, "depths": [1, 2],
        "lrs": [0.004, 0.016, 0.064], "tokens": 640, "d_head": 16, "context": 16, "batch": 4,
        "seeds": [0]
    })
}

#[tokio::test]
async fn a_dry_run_plans_the_default_depth_transfer_and_estimates_it() {
    let (app, store) = app("dry-run", 0).await;
    let (status, plan) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(r#"{"kind": "depth-transfer", "dry_run": true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["kind"], "depth-transfer");
    assert_eq!(plan["size"], "default");
    assert_eq!(plan["settings"]["depths"], json!([1, 2, 4, 8, 16]));
    assert_eq!(plan["settings"]["seeds"], json!([0, 1, 2]));
    assert_eq!(plan["estimate"]["runs"], 210);
    assert_eq!(plan["estimate"]["reused"], 0);
    let seconds = plan["estimate"]["seconds"].as_f64().unwrap();
    assert!((1200.0..11000.0).contains(&seconds), "{seconds}");
    assert_eq!(plan["estimate"]["throughput"]["calibrated_on"], 0);
    // The small size costs less, and the overrides apply on top of it.
    let (_, small) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(r#"{"kind": "depth-transfer", "size": "small", "settings": {"width": 64}, "dry_run": true}"#),
    )
    .await;
    assert_eq!(small["settings"]["width"], 64);
    assert!(small["estimate"]["seconds"].as_f64().unwrap() < seconds / 3.0);
    let (_, compute) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(r#"{"kind": "compute-efficiency", "dry_run": true}"#),
    )
    .await;
    assert_eq!(compute["estimate"]["runs"], 36, "{compute}");
    assert_eq!(
        compute["settings"]["lrs"].as_array().unwrap().len(),
        2,
        "{compute}"
    );
    // A dry run queues nothing.
    assert!(store.sweeps().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_study_requests_are_refused_and_change_nothing() {
    let (app, store) = app("refusals", 0).await;
    for (body, expected, says) in [
        ("not json", StatusCode::BAD_REQUEST, "invalid JSON"),
        (
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field 'kind'",
        ),
        (
            r#"{"kind": "width-transfer"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant 'width-transfer'",
        ),
        (
            r#"{"kind": "depth-transfer", "size": "huge"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "'size': unknown variant 'huge'",
        ),
        (
            r#"{"kind": "depth-transfer", "size": 3}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "'size': invalid type: integer '3'",
        ),
        (
            r#"{"kind": "depth-transfer", "settings": {"widht": 64}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown setting 'widht'",
        ),
        (
            r#"{"kind": "depth-transfer", "settings": {"depths": []}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "'depths' must be a non-empty list",
        ),
        (
            r#"{"kind": "depth-transfer", "settings": {"width": 100}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "multiple",
        ),
        (
            r#"{"kind": "depth-transfer", "settings": [1]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "'settings': invalid type: sequence, expected a map",
        ),
        (
            r#"{"kind": "depth-transfer", "dry_run": "yes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "'dry_run': invalid type",
        ),
        (
            r#"{"kind": "depth-transfer", "colour": "red"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field 'colour'",
        ),
    ] {
        let (status, reply) = call(&app, "POST", "/api/v1/studies", Some(body)).await;
        assert_eq!(status, expected, "{body}: {reply}");
        let detail = reply["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    assert!(store.sweeps().await.unwrap().is_empty());
    let (status, _) = call(&app, "GET", "/api/v1/studies/99", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", "/api/v1/studies/x", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_depth_transfer_study_trains_and_its_page_shows_the_results() {
    let (app, store) = app("transfer", 1).await;
    let body = json!({"kind": "depth-transfer", "name": "tiny transfer", "settings": tiny_transfer_settings()});
    let (status, created) = call(&app, "POST", "/api/v1/studies", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["study"]["id"].as_i64().unwrap();
    assert_eq!(created["study"]["kind"], "depth-transfer");
    assert_eq!(created["run_ids"].as_array().unwrap().len(), 2 * 2 * 3);

    let deadline = Instant::now() + Duration::from_secs(120);
    let detail = loop {
        let (status, detail) = call(&app, "GET", &format!("/api/v1/studies/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        let counts = &detail["progress"]["counts"];
        let ended = ["succeeded", "failed", "diverged", "cancelled"]
            .iter()
            .map(|s| counts[*s].as_u64().unwrap_or(0))
            .sum::<u64>();
        if ended == 12 {
            break detail;
        }
        assert!(
            Instant::now() < deadline,
            "the study did not finish: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(detail["progress"]["counts"]["failed"], 0, "{detail}");
    // The analysis of the finished runs: an optimum per depth and a drift per parameterization
    // (two depths and one seed: a drift without an interval).
    let transfer = &detail["analysis"]["transfer"];
    let fitted = transfer["parameterizations"]
        .as_array()
        .expect("transfer analysis");
    let refused = transfer["refused"].as_array().map_or(0, Vec::len);
    assert_eq!(fitted.len() + refused, 2, "{transfer}");
    for p in fitted {
        assert!(p["drift"].as_f64().is_some_and(f64::is_finite), "{p}");
        assert!(p["drift_interval"].is_null(), "{p}");
        assert_eq!(p["conclusive"], false, "{p}");
        assert_eq!(p["optima"].as_array().unwrap().len(), 2, "{p}");
    }

    // Listed among the studies, and not a plain sweep.
    let (_, list) = call(&app, "GET", "/api/v1/studies", None).await;
    assert_eq!(list[0]["study"]["id"], id);
    assert_eq!(list[0]["runs"], 12);
    let sweeps = store.sweeps().await.unwrap();
    assert_eq!(sweeps[0].0.kind, "depth-transfer");

    let (status, _, html) = page(
        &app,
        Request::get(format!("/studies/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "Depth transfer #",
        "tiny transfer",
        "12 of 12 runs finished",
        "Learning-rate transfer",
        "octaves per doubling of depth",
        "<svg",
        "badge-inconclusive",
        &format!("href=\"/analysis?sweep_id={id}\""),
        &format!("href=\"/planner?sweep_id={id}\""),
        // Inconclusive: the offer of a second seed, behind the preview.
        "Add seed 1 to every run",
        "href=\"/studies/preview?kind=depth-transfer",
    ] {
        assert!(html.contains(expected), "the study page lacks {expected:?}");
    }

    // The analysis page of the study's runs makes the same offer.
    let (status, _, html) = page(
        &app,
        Request::get(format!("/analysis?sweep_id={id}&resamples=20"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Add seed 1 to every run"), "{html}");

    // The same study again, with one more learning rate: the twelve finished runs are reused
    // (copied with their series, nothing trained again), only the four new ones are estimated.
    let mut settings = tiny_transfer_settings();
    settings["lrs"] = json!([0.004, 0.016, 0.064, 0.128]);
    let again = json!({"kind": "depth-transfer", "settings": settings, "dry_run": true});
    let (_, preview) = call(&app, "POST", "/api/v1/studies", Some(&again.to_string())).await;
    assert_eq!(preview["estimate"]["runs"], 4, "{preview}");
    assert_eq!(preview["estimate"]["reused"], 12, "{preview}");
    let fresh =
        json!({"kind": "depth-transfer", "settings": settings, "reuse": false, "dry_run": true});
    let (_, preview) = call(&app, "POST", "/api/v1/studies", Some(&fresh.to_string())).await;
    assert_eq!(preview["estimate"]["runs"], 16, "{preview}");
    assert_eq!(preview["estimate"]["reused"], 0, "{preview}");
    let launch = json!({"kind": "depth-transfer", "settings": settings, "name": "again"});
    let (status, created) = call(&app, "POST", "/api/v1/studies", Some(&launch.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let first: Vec<i64> = (1..=12).collect();
    let mut copies = 0;
    for run_id in created["run_ids"].as_array().unwrap() {
        let (_, run) = call(&app, "GET", &format!("/api/v1/runs/{run_id}"), None).await;
        let Some(source) = run["reused_from"].as_i64() else {
            continue;
        };
        copies += 1;
        assert!(first.contains(&source), "{run}");
        let (_, original) = call(&app, "GET", &format!("/api/v1/runs/{source}"), None).await;
        for field in ["status", "config", "final_val_loss", "flops", "started_at"] {
            assert_eq!(run[field], original[field], "{field}: {run}");
        }
        assert_eq!(run["sweep_id"], created["study"]["id"]);
        let series = |id: i64| {
            let app = app.clone();
            async move {
                call(&app, "GET", &format!("/api/v1/runs/{id}/metrics"), None)
                    .await
                    .1
            }
        };
        let copied = series(run_id.as_i64().unwrap()).await;
        assert_eq!(copied["points"], series(source).await["points"]);
        assert!(!copied["points"].as_array().unwrap().is_empty(), "{copied}");
    }
    assert_eq!(copies, 12);
}

#[tokio::test]
async fn the_studies_page_estimates_every_kind_and_its_form_launches_a_study() {
    let (app, store) = app("form", 0).await;
    let (status, _, html) = page(&app, Request::get("/studies").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "Depth transfer",
        "Compute efficiency",
        "Coordinate check",
        "Estimated time",
        "No studies yet",
        "min",
    ] {
        assert!(
            html.contains(expected),
            "the studies page lacks {expected:?}"
        );
    }

    let form = |settings: &str| {
        format!(
            "kind=depth-transfer&size=small&name=from+the+form&settings={}",
            urlencode(settings)
        )
    };
    let post = |body: String| {
        Request::post("/studies")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    // Refused: the page comes back with the reason and the submitted settings.
    let (status, _, html) = page(&app, post(form(r#"{"width": "wide"}"#))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("invalid settings"), "{html}");
    assert!(
        html.contains("&quot;wide&quot;") || html.contains("&#34;wide&#34;"),
        "the settings were not kept"
    );
    assert!(store.sweeps().await.unwrap().is_empty());

    // Preview lists every setting and the estimate.
    let (status, _, html) = page(
        &app,
        Request::get(format!(
            "/studies/preview?kind=depth-transfer&size=small&settings={}",
            urlencode(r#"{"width": 64}"#)
        ))
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // One field per setting, lists comma-separated.
    for field in [
        r#"name="s.width" type="text" value="64""#,
        r#"name="s.depths" type="text" value="1, 2, 4, 8""#,
        r#"name="s.parameterizations" type="text" value="mup, completep""#,
    ] {
        assert!(html.contains(field), "{field}: {html}");
    }
    assert!(html.contains("preview-duration"));

    // The form's fields come back typed like the defaults: lists, numbers, strings.
    let (status, _, html) = page(
        &app,
        Request::get(
            "/studies/preview?kind=depth-transfer&size=small&s.depths=1%2C+2&s.width=32&s.parameterizations=completep",
        )
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"name="s.depths" type="text" value="1, 2""#),
        "{html}"
    );
    assert!(html.contains(r#"<dd id="preview-runs">14</dd>"#), "{html}");

    let (status, location, _) = page(&app, post(form(&tiny_transfer_settings().to_string()))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let sweeps = store.sweeps().await.unwrap();
    assert_eq!(sweeps.len(), 1);
    assert_eq!(location, format!("/studies/{}", sweeps[0].0.id));
    assert_eq!(sweeps[0].0.name, "from the form");
    assert_eq!(sweeps[0].1, 12);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_coordinate_check_study_queues_its_diagnostics_and_shows_them() {
    let (app, store) = app("coord", 0).await;
    // Tiny diagnostics: width 32, two depths or widths, two steps, one seed.
    let tiny = json!({"parameterizations": ["mup", "completep"], "steps": 2, "seeds": 1,
                      "batch": 2, "context": 16, "d_head": 16});
    let settings = json!({
        "coord-depth": tiny.as_object().unwrap().clone().into_iter().chain([("width".to_string(), json!(32)), ("depths".to_string(), json!([1, 2]))]).collect::<serde_json::Map<_, _>>(),
        "coord-width": tiny.as_object().unwrap().clone().into_iter().chain([("widths".to_string(), json!([32, 64])), ("depth".to_string(), json!(1))]).collect::<serde_json::Map<_, _>>(),
        "linearization": {"parameterizations": ["depth-mup", "completep"], "depths": [1, 2], "width": 32, "seeds": 1, "batch": 2, "context": 16, "d_head": 16},
    });
    let (status, plan) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(&json!({"kind": "coord-check", "settings": settings, "dry_run": true}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    // 2 parameterizations x 2 sizes x 1 seed for each of the three diagnostics.
    assert_eq!(plan["estimate"]["runs"], 12, "{plan}");
    let (status, refused) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(r#"{"kind": "coord-check", "settings": {"coord-height": {}}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(store.sweeps().await.unwrap().is_empty());

    let (status, created) = call(
        &app,
        "POST",
        "/api/v1/studies",
        Some(&json!({"kind": "coord-check", "settings": settings}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["study"]["id"].as_i64().unwrap();
    assert_eq!(created["run_ids"], json!([]));
    let (_, detail) = call(&app, "GET", &format!("/api/v1/studies/{id}"), None).await;
    let diagnostics = detail["analysis"]["diagnostics"].as_array().unwrap();
    let kinds: Vec<&str> = diagnostics
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["coord-depth", "coord-width", "linearization"]);
    let (status, _, html) = page(
        &app,
        Request::get(format!("/studies/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "Coordinate check #",
        "0 of 3 diagnostics finished",
        "Coordinate check over depth",
        "Distance from linearization",
    ] {
        assert!(html.contains(expected), "the study page lacks {expected:?}");
    }
}
