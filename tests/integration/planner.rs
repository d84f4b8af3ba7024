//! Integration tests of the planner feature: `POST /api/v1/plan/recommend` on imported runs with
//! planted losses, its refusals and the confirming sweep, and the `/planner` page.

use super::api::{call, router_app};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::flops::{FlopBreakdown, params_non_embedding};
use std::collections::BTreeSet;
use tower::ServiceExt;

/// Planted `L_p(C) = E + A C^-b`: CompleteP reaches every loss with 80% of muP's compute.
const E: f64 = 1.8;
const A: f64 = 391.0;
const B: f64 = 0.15;
/// Planted width/depth penalties `curvature (ln(N:L) - ln optimum)^2`.
const MUP_OPTIMUM: f64 = 100.0;
const MUP_CURVATURE: f64 = 0.01;
const CP_OPTIMUM: f64 = 30.0;
const CP_CURVATURE: f64 = 0.005;

/// The five shapes of every compute scale: N:L of 8, 16, 32, 64 and 128.
const SHAPES: [(i64, i64); 5] = [(256, 32), (256, 16), (512, 16), (512, 8), (1024, 8)];
/// The four compute scales, FLOPs.
const SCALES: [f64; 4] = [1e15, 1e16, 1e17, 1e18];
/// The budget planned in the tests: ten times the largest run.
const BUDGET: f64 = 1e19;

fn a_of(parameterization: &str) -> f64 {
    match parameterization {
        "completep" => A * 1.25f64.powf(-B),
        _ => A,
    }
}

fn planted_loss(parameterization: &str, flops: f64, ratio: f64) -> f64 {
    let (optimum, curvature): (f64, f64) = match parameterization {
        "completep" => (CP_OPTIMUM, CP_CURVATURE),
        _ => (MUP_OPTIMUM, MUP_CURVATURE),
    };
    let excess = curvature * (ratio.ln() - optimum.ln()).powi(2);
    (E + a_of(parameterization) * flops.powf(-B)) * (1.0 + excess)
}

/// Imports muP and CompleteP runs at four compute scales and five shapes each (20 tokens per
/// parameter, base LR 0.01), plus SP runs at two scales only; all tagged `planted`.
async fn import_planted(app: &axum::Router) {
    import_planted_at(app, &SCALES, "planted", true).await;
}

/// Imports muP and CompleteP runs at `scales` (five shapes each), with SP's two runs when asked.
async fn import_planted_at(app: &axum::Router, scales: &[f64], tag: &str, with_sp: bool) {
    let mut runs = Vec::new();
    for parameterization in ["mup", "completep"] {
        for &flops in scales {
            for (width, depth) in SHAPES {
                let params = params_non_embedding(width as usize, depth as usize, true) as i64;
                let ratio = width as f64 / depth as f64;
                runs.push(json!({
                    "parameterization": parameterization, "width": width, "depth": depth,
                    "params": params, "tokens": 20 * params, "flops": flops, "lr": 0.01,
                    "final_loss": planted_loss(parameterization, flops, ratio),
                    "tags": [tag],
                }));
            }
        }
    }
    let sp_scales: &[f64] = if with_sp { &[1e15, 1e16] } else { &[] };
    for &flops in sp_scales {
        runs.push(json!({
            "parameterization": "sp", "width": 512, "depth": 8, "params": 25_000_000,
            "tokens": 500_000_000, "flops": flops, "final_loss": 3.0, "tags": ["planted"],
        }));
    }
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
}

async fn recommend(app: &axum::Router, body: Value) -> (StatusCode, Value) {
    let body = body.to_string();
    call(app, "POST", "/api/v1/plan/recommend", Some(&body)).await
}

/// The property names of a component schema of the OpenAPI document.
async fn documented(app: &axum::Router, schema: &str) -> BTreeSet<String> {
    let (_, doc) = call(app, "GET", "/api/v1/openapi.json", None).await;
    property_names(&doc, &doc["components"]["schemas"][schema])
}

/// The properties of a schema, through `allOf` parts (flattened fields) and references.
fn property_names(doc: &Value, schema: &Value) -> BTreeSet<String> {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.trim_start_matches("#/components/schemas/");
        return property_names(doc, &doc["components"]["schemas"][name]);
    }
    let mut names: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        names.extend(property_names(doc, part));
    }
    names
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn f(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[tokio::test]
async fn the_planner_ranks_planted_shapes_and_matches_compute() {
    let (app, _) = router_app("planner-ranks").await;
    import_planted(&app).await;
    let request = json!({
        "selection": {"tags": ["planted"]}, "budget_flops": BUDGET, "vocab": 256,
        "context": 128, "max_depth": 48, "min_width": 128, "max_width": 8192,
        "memory_gib": 64, "batch": 8, "top": 4, "resamples": 40, "seed": 2
    });
    let (status, plan) = recommend(&app, request).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    println!("plan: {plan}");
    assert_eq!(plan["budget_flops"], json!(BUDGET));
    assert_eq!(plan["note"], Value::Null);
    // SP has two compute scales: refused with the reason.
    assert_eq!(plan["refused"][0]["parameterization"], "sp");
    assert_eq!(plan["refused"][0]["n_runs"], 2);
    let reason = plan["refused"][0]["error"].as_str().unwrap();
    assert!(
        reason.contains("3 distinct compute scales, got 2"),
        "{reason}"
    );

    // CompleteP needs less compute for every loss: it plans the lower loss, first.
    let plans = plan["parameterizations"].as_array().unwrap();
    let names: Vec<&str> = plans
        .iter()
        .map(|p| p["parameterization"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["completep", "mup"]);
    for (p, optimum, curvature) in [
        (&plans[0], CP_OPTIMUM, CP_CURVATURE),
        (&plans[1], MUP_OPTIMUM, MUP_CURVATURE),
    ] {
        let name = p["parameterization"].as_str().unwrap();
        assert_eq!(p["n_runs"], 20);
        assert!((f(&p["tokens_per_param"]) - 20.0).abs() < 1e-9, "{p}");
        // The planted curve and penalty are recovered.
        let fit = &p["fit"];
        assert!((f(&fit["b"]) - B).abs() < 0.005, "{name}: {fit}");
        assert!((f(&fit["E"]) - E).abs() < 0.02, "{name}: {fit}");
        assert_eq!(f(&fit["largest_run_flops"]), 1e18);
        assert!((f(&fit["extrapolation"]) - 10.0).abs() < 1e-9);
        let penalty = &p["shape_penalty"];
        assert!(
            (f(&penalty["optimal_width_depth_ratio"]) / optimum - 1.0).abs() < 0.02,
            "{name}: {penalty}"
        );
        assert!(
            (f(&penalty["curvature"]) / curvature - 1.0).abs() < 0.02,
            "{name}: {penalty}"
        );
        assert_eq!(p["shape_note"], Value::Null);
        let planted_at_budget = E + a_of(name) * BUDGET.powf(-B);
        let loss_at_budget = f(&p["loss_at_budget"]);
        assert!(
            (loss_at_budget / planted_at_budget - 1.0).abs() < 1e-3,
            "{name}: {loss_at_budget} vs {planted_at_budget}"
        );
        let [low, high] = [0, 1].map(|i| f(&p["loss_at_budget_interval"][i]));
        assert!(low <= high && low < loss_at_budget * 1.01 && high > loss_at_budget * 0.99);

        let shapes = p["shapes"].as_array().unwrap();
        assert_eq!(shapes.len(), 4);
        let mut previous = 0.0;
        for (rank, s) in shapes.iter().enumerate() {
            assert_eq!(s["rank"], rank + 1);
            let (width, depth) = (s["width"].as_u64().unwrap(), s["depth"].as_u64().unwrap());
            assert!(
                width % 64 == 0 && (128..=8192).contains(&width) && depth <= 48,
                "{s}"
            );
            assert_eq!(s["heads"].as_u64().unwrap() * 64, width);
            assert!(f(&s["memory_gib"]) <= 64.0);
            let per_token =
                FlopBreakdown::for_tokens(width as usize, depth as usize, 128, 256, true, 1)
                    .total();
            let flops = f(&s["flops"]);
            assert!(flops <= BUDGET && BUDGET - flops < per_token, "{s}");
            assert_eq!(s["tokens"].as_u64().unwrap(), (BUDGET / per_token) as u64);
            // Predicted loss = L(budget) (1 + curvature (ln(N:L) - ln optimum)^2).
            let ratio = f(&s["width_depth_ratio"]);
            assert!((ratio / (width as f64 / depth as f64) - 1.0).abs() < 1e-12);
            let excess = f(&s["relative_penalty"]);
            let planted_excess = curvature * (ratio.ln() - optimum.ln()).powi(2);
            assert!(
                (excess - planted_excess).abs() < 0.02 * planted_excess + 1e-5,
                "{s}"
            );
            let loss = f(&s["predicted_loss"]);
            assert!((loss / (loss_at_budget * (1.0 + excess)) - 1.0).abs() < 1e-12);
            assert!(loss >= previous, "ranked by predicted loss");
            previous = loss;
            let [low, high] = [0, 1].map(|i| f(&s["interval"][i]));
            assert!(low <= loss * 1.01 && loss * 0.99 <= high, "{s}");
        }
        // The best shape's N:L is near the planted optimum.
        let best = f(&shapes[0]["width_depth_ratio"]);
        assert!(
            (best.ln() - optimum.ln()).abs() < 0.3,
            "{name}: best N:L {best}"
        );
    }

    // muP needs more compute than the budget for CompleteP's best loss, at its optimal shape:
    // C = (A / (loss - E))^(1 / b) read off the planted curve.
    let cp_best = f(&plans[0]["shapes"][0]["predicted_loss"]);
    let matched = &plans[0]["matched_compute"][0];
    assert_eq!(matched["parameterization"], "mup");
    assert_eq!(f(&matched["loss"]), cp_best);
    let by_hand = (A / (cp_best - E)).powf(1.0 / B);
    assert!(
        (f(&matched["flops"]) / by_hand - 1.0).abs() < 0.03,
        "{matched} vs {by_hand}"
    );
    assert!((f(&matched["ratio"]) - f(&matched["flops"]) / BUDGET).abs() < 1e-9);
    // About 1.25 times the budget, less what CompleteP's best shape loses to its penalty.
    assert!((1.1..1.3).contains(&f(&matched["ratio"])), "{matched}");
    assert_eq!(matched["refusal"], Value::Null);
    let [low, high] = [0, 1].map(|i| f(&matched["interval"][i]));
    assert!(low <= f(&matched["flops"]) * 1.05 && high >= f(&matched["flops"]) * 0.95);

    // The confirming sweep: the best parameterization at its runs' LR on the recommended
    // shape and on shapes at least 4x deeper and 4x wider for their size, each at the plan's
    // tokens per parameter.
    // The imported runs name no dataset.
    assert_eq!(plan["data"], json!(["unrecorded"]));

    let sweep = &plan["confirm_sweep"];
    assert_eq!(sweep["parameterizations"], json!(["completep"]));
    let best = &plans[0]["shapes"][0];
    let shapes = sweep["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 3, "{sweep}");
    assert_eq!(
        shapes[0],
        json!({"width": best["width"], "depth": best["depth"], "tokens": best["tokens"]})
    );
    // A deeper shape at least 2x away in N:L and a wider one 4x away (max_depth 48 leaves
    // none 4x deeper).
    let ratio = |s: &Value| f(&s["width"]) / f(&s["depth"]);
    assert!(ratio(&shapes[1]) <= ratio(&shapes[0]) / 2.0, "{sweep}");
    assert!(ratio(&shapes[2]) >= ratio(&shapes[0]) * 4.0, "{sweep}");
    assert_eq!(sweep["lrs"], json!([0.01]));
    assert_eq!(sweep["config"]["tokens"], Value::Null);
    assert_eq!(sweep["config"]["vocab"], 256);
    assert_eq!(sweep["config"]["context"], 128);
    assert_eq!(sweep["config"]["batch"], 8);
    assert_eq!(plan["sweep"], Value::Null);

    // Every answer has the documented fields.
    for (value, schema) in [
        (&plan, "RecommendResult"),
        (&plans[0], "ParameterizationRecommendation"),
        (&plans[0]["fit"], "PlannedFit"),
        (&plans[0]["shape_penalty"], "ShapePenaltyBody"),
        (&plans[0]["shapes"][0], "RecommendedShape"),
        (&plans[0]["matched_compute"][0], "MatchedComputeBody"),
        (&plan["candidate_shapes"][0], "CandidateShape"),
        (&plan["refused"][0], "RefusedParameterization"),
    ] {
        assert_eq!(keys(value), documented(&app, schema).await, "{schema}");
    }

    // The ready body is accepted as is by POST /api/v1/sweeps.
    let (status, created) = call(&app, "POST", "/api/v1/sweeps", Some(&sweep.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["run_ids"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn device_hours_budgets_and_create_sweep() {
    let (app, _) = router_app("planner-sweep").await;
    import_planted(&app).await;
    // 2.5 device-hours at 1.11e15 FLOP/s: 1e19 FLOPs.
    let request = json!({
        "selection": {"tags": ["planted"]}, "device_hours": 2.5,
        "flops_per_second": 1e19 / (2.5 * 3600.0), "vocab": 256, "context": 128,
        "resamples": 0, "create_sweep": true, "top": 1
    });
    let (status, plan) = recommend(&app, request).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert!((f(&plan["budget_flops"]) / 1e19 - 1.0).abs() < 1e-12);
    // Without resamples there are no intervals.
    let best = &plan["parameterizations"][0];
    assert_eq!(best["fit"]["intervals"], Value::Null);
    assert_eq!(best["shapes"][0]["interval"], Value::Null);
    assert_eq!(best["shapes"].as_array().unwrap().len(), 1);
    let id = plan["sweep"]["id"].as_i64().unwrap();
    // Shapes the server would refuse (here for memory) are left out; the recommended one stays.
    let shapes = plan["confirm_sweep"]["shapes"].as_array().unwrap().len();
    assert!((1..=3).contains(&shapes), "{plan}");
    assert_eq!(plan["sweep"]["run_ids"].as_array().unwrap().len(), shapes);
    assert_eq!(keys(&plan["sweep"]), documented(&app, "CreatedSweep").await);
    let (status, sweep) = call(&app, "GET", &format!("/api/v1/sweeps/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{sweep}");
    assert_eq!(sweep["progress"]["total"], shapes);
    // The sweep keeps what it checks: each shape's predicted loss.
    let check = &sweep["sweep"]["spec"]["plan"];
    assert_eq!(check["parameterization"], "completep");
    assert_eq!(check["predictions"].as_array().unwrap().len(), shapes);
    assert_eq!(
        check["predictions"][0]["loss"],
        best["shapes"][0]["predicted_loss"]
    );
    let run = &sweep["runs"][0];
    assert_eq!(run["width"], best["shapes"][0]["width"]);
    assert_eq!(run["depth"], best["shapes"][0]["depth"]);
    // The trainer rounds the token count up to whole steps of 16 sequences of 128 tokens.
    let tokens = best["shapes"][0]["tokens"].as_u64().unwrap();
    assert_eq!(run["tokens"], tokens.div_ceil(16 * 128) * 16 * 128);
    assert_eq!(run["tags"], json!(["planner"]));
}

#[tokio::test]
async fn without_fitted_runs_the_planner_lists_shapes_and_says_what_to_run() {
    let (app, _) = router_app("planner-empty").await;
    let request = json!({
        "selection": {"tags": ["nothing"]}, "budget_flops": 1e17, "vocab": 256,
        "context": 128, "d_head": 32, "tokens_per_param": 10, "top": 3
    });
    let (status, plan) = recommend(&app, request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["parameterizations"], json!([]));
    assert_eq!(plan["confirm_sweep"], Value::Null);
    let note = plan["note"].as_str().unwrap();
    assert!(note.contains("compute-efficiency study"), "{note}");
    assert_eq!(plan["tokens_per_param"], json!(10.0));
    let shapes = plan["candidate_shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 3);
    // Ranked by closeness of N:L to 62.
    let distance = |s: &Value| (f(&s["width_depth_ratio"]) / 62.0).ln().abs();
    assert!(distance(&shapes[0]) <= distance(&shapes[1]));
    assert!(distance(&shapes[1]) <= distance(&shapes[2]));
    for s in shapes {
        assert_eq!(s["width"].as_u64().unwrap() % 32, 0);
        assert!(f(&s["flops"]) <= 1e17);
        assert!((f(&s["tokens_per_param"]) / 10.0).ln().abs() < 0.5, "{s}");
    }
    // Nothing fitted: no sweep to create.
    let mut create = request;
    create["create_sweep"] = json!(true);
    let (status, body) = recommend(&app, create).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("compute-efficiency")
    );
}

#[tokio::test]
async fn bad_bodies_are_refused_with_the_reason() {
    let (app, _) = router_app("planner-bad").await;
    let base = json!({
        "selection": {"tags": ["x"]}, "budget_flops": 1e18, "vocab": 256, "context": 128
    });
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases = [
        (
            without("selection"),
            StatusCode::BAD_REQUEST,
            "'selection' is required",
        ),
        (
            without("budget_flops"),
            StatusCode::BAD_REQUEST,
            "a budget is required",
        ),
        (
            without("vocab"),
            StatusCode::BAD_REQUEST,
            "'vocab' is required",
        ),
        (
            with("budget_flops", json!(-1)),
            StatusCode::BAD_REQUEST,
            "'budget_flops' must be a positive number",
        ),
        (
            with("budget_flops", json!(1e40)),
            StatusCode::BAD_REQUEST,
            "at most 1e35",
        ),
        (
            with("device_hours", json!(3)),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            with("context", json!(0)),
            StatusCode::BAD_REQUEST,
            "'context' must be an integer",
        ),
        (
            with("d_head", json!("64")),
            StatusCode::BAD_REQUEST,
            "'d_head': invalid type: string \"64\"",
        ),
        (
            with("confidence", json!(1.5)),
            StatusCode::BAD_REQUEST,
            "'confidence'",
        ),
        (
            with("create_sweep", json!("yes")),
            StatusCode::BAD_REQUEST,
            "'create_sweep'",
        ),
        (
            with("width", json!(512)),
            StatusCode::BAD_REQUEST,
            "unknown field 'width'",
        ),
        (with("min_width", json!(1024)), StatusCode::OK, ""),
        (
            with("max_width", json!(32)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no multiple of d_head 64",
        ),
        (
            with("budget_flops", json!(1e6)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "raise the budget",
        ),
        (
            with("memory_gib", json!(1e-6)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "more memory than the limit",
        ),
    ];
    for (body, expected, detail) in cases {
        let (status, answer) = recommend(&app, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        if !detail.is_empty() {
            let text = answer["detail"].as_str().unwrap_or("");
            assert!(text.contains(detail), "{body}: {text}");
        }
    }
    let mut both = without("budget_flops");
    both["device_hours"] = json!(2);
    let (status, answer) = recommend(&app, both).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["detail"].as_str().unwrap().contains("go together"));
    let (status, _) = call(&app, "POST", "/api/v1/plan/recommend", Some("[1]")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Status, `Location` and body text of one page request.
async fn page(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = (response.headers().get(header::LOCATION))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, location, String::from_utf8(bytes.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_planner_page_plans_and_creates_the_confirming_sweep() {
    let (app, _) = router_app("planner-page").await;

    // The empty form.
    let (status, _, html) = page(&app, get("/planner")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<form id=\"planner-form\"") && html.contains("name=\"budget_flops\""));
    assert!(!html.contains("Create confirming sweep"));

    // Nothing fitted: what to run, and the candidate shapes of the budget.
    let (status, _, html) = page(
        &app,
        get("/planner?budget_flops=1e17&vocab=256&context=128&tags=none"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Nothing is fitted yet") && html.contains("compute-efficiency study"));
    assert!(html.contains("id=\"candidate-shapes\""));
    assert!(!html.contains("Create confirming sweep"));

    // A refused plan shows the reason and marks the field.
    let (status, _, html) = page(
        &app,
        get("/planner?budget_flops=1e17&vocab=256&context=128&max_width=32"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("no multiple of d_head 64"), "{html}");
    assert!(
        html.contains(
            "id=\"max_width\" name=\"max_width\" type=\"number\" step=\"1\" value=\"32\""
        )
    );
    let (status, _, html) = page(&app, get("/planner?budget_flops=lots&vocab=256")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("must be a number, got &#39;lots&#39;"),
        "{html}"
    );

    // With fitted runs: tables per parameterization, the chart and the button.
    import_planted(&app).await;
    let query = "budget_flops=1e19&vocab=256&context=128&max_depth=48&tags=planted&resamples=20";
    let (status, _, html) = page(&app, get(&format!("/planner?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for text in [
        "Plan for 1e19 FLOPs",
        "id=\"plan-completep\"",
        "id=\"plan-mup\"",
        "<svg role=\"img\"",
        "Compute the others need",
        "Create confirming sweep",
        "3 distinct compute scales, got 2",
    ] {
        assert!(html.contains(text), "{text}");
    }
    assert!(html.find("id=\"plan-completep\"") < html.find("id=\"plan-mup\""));
    assert!(html.contains("<input type=\"hidden\" name=\"budget_flops\" value=\"1e19\">"));

    // The button: refused from another site, else the sweep is created and shown.
    let form = "budget_flops=1e19&vocab=256&context=128&max_depth=48&tags=planted";
    let post = |cross_site: bool| {
        let mut request = Request::post("/planner/sweep")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if cross_site {
            request = request.header("sec-fetch-site", "cross-site");
        }
        request.body(Body::from(form)).unwrap()
    };
    let (status, _, _) = page(&app, post(true)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location, _) = page(&app, post(false)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let id: i64 = location.strip_prefix("/sweeps/").unwrap().parse().unwrap();
    let (status, sweep) = call(&app, "GET", &format!("/api/v1/sweeps/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sweep["sweep"]["spec"]["parameterizations"],
        json!(["completep"])
    );
    assert_eq!(sweep["progress"]["total"], 3);
    let (status, _, html) = page(&app, get(&location)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("confirm plan"));
    assert!(
        html.contains("Plan check: predicted against observed"),
        "{html}"
    );
    assert!(
        html.contains("Waiting for 3 of 3 shapes to finish."),
        "{html}"
    );
}

#[tokio::test]
async fn an_inconclusive_plan_offers_the_runs_that_would_conclude_it() {
    let (app, _) = router_app("planner-extend").await;
    // Three compute scales (one short of a conclusive fit), and a budget 1000 times the largest
    // run (ten times past the extrapolation limit).
    import_planted_at(&app, &SCALES[..3], "three", false).await;
    let request = json!({
        "selection": {"tags": ["three"]}, "budget_flops": 1e20, "vocab": 256,
        "context": 128, "max_depth": 48, "batch": 8, "resamples": 0
    });
    let (status, plan) = recommend(&app, request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["conclusive"], false);
    let warnings = plan["warnings"].to_string();
    assert!(warnings.contains("3 compute scales"), "{warnings}");
    assert!(
        warnings.contains("1000 times the largest run"),
        "{warnings}"
    );

    // The scale coverage lacks (4 times the largest) and the budget over 100, each with the
    // best plan's shape there, under both parameterizations at their runs' LR.
    let extend = &plan["extend_sweep"];
    assert_eq!(extend["computes"], json!([4e17, 1e18]), "{extend}");
    let sweep = &extend["sweep"];
    assert_eq!(sweep["parameterizations"], json!(["completep", "mup"]));
    assert_eq!(sweep["lrs"], json!({"completep": [0.01], "mup": [0.01]}));
    let shapes = sweep["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 2);
    for (shape, compute) in shapes.iter().zip([4e17, 1e18]) {
        let (width, depth) = (f(&shape["width"]) as usize, f(&shape["depth"]) as usize);
        let tokens = shape["tokens"].as_u64().unwrap();
        let flops = FlopBreakdown::for_tokens(width, depth, 128, 256, true, tokens).total();
        assert!((flops / compute - 1.0).abs() < 0.01, "{shape}: {flops:e}");
    }
    assert_eq!(extend["estimate"]["runs"], 4);
    assert!(f(&extend["estimate"]["seconds"]) > 0.0);
    assert_eq!(keys(extend), documented(&app, "ExtendSweep").await);

    // The page offers it with its cost; the button queues it, parameterizations alternating.
    let query =
        "budget_flops=1e20&vocab=256&context=128&max_depth=48&batch=8&tags=three&resamples=0";
    let (status, _, html) = page(&app, get(&format!("/planner?{query}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Make the plan conclusive") && html.contains("Queue 4 runs"),
        "{html}"
    );
    let post = Request::post("/planner/extend")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(query))
        .unwrap();
    let (status, location, _) = page(&app, post).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    let id: i64 = location.strip_prefix("/sweeps/").unwrap().parse().unwrap();
    let (_, created) = call(&app, "GET", &format!("/api/v1/sweeps/{id}"), None).await;
    let runs = created["runs"].as_array().unwrap();
    let order: Vec<(&str, i64)> = runs
        .iter()
        .map(|r| {
            (
                r["parameterization"].as_str().unwrap(),
                r["width"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(order.len(), 4);
    assert_eq!([order[0].0, order[1].0], ["completep", "mup"]);
    assert_eq!(order[0].1, order[1].1);
    let html = page(&app, get(&location)).await.2;
    assert!(html.contains("completep: 0.01; mup: 0.01"), "{html}");

    // A conclusive plan offers nothing.
    import_planted(&app).await;
    let (_, plan) = recommend(
        &app,
        json!({"selection": {"tags": ["planted"]}, "budget_flops": 1e19, "vocab": 256,
               "context": 128, "max_depth": 48, "resamples": 0}),
    )
    .await;
    assert_eq!(plan["conclusive"], true, "{plan}");
    assert_eq!(plan["extend_sweep"], Value::Null);
}
