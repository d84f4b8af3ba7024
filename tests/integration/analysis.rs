//! The analysis endpoints and page: LR transfer and width/depth tolerance recovered from runs
//! with planted losses, the refusals, and the analysis page with its charts.

use super::api::{call, router_app};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::flops::FlopBreakdown;
use shapewise::param::Parameterization;
use shapewise::store::{NewRun, Store};
use shapewise::train::{RunStatus, RunSummary};
use std::collections::BTreeSet;
use tower::ServiceExt;

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", uri, Some(&body.to_string())).await
}

async fn import(app: &axum::Router, runs: Vec<Value>) {
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
}

/// Status and body text of a page.
async fn page(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// The documented properties of the schema a route's 200 response refers to.
async fn documented_fields(app: &axum::Router, path: &str) -> BTreeSet<String> {
    let (_, doc) = call(app, "GET", "/api/v1/openapi.json", None).await;
    let pointer = format!(
        "/paths/{}/post/responses/200/content/application~1json/schema/$ref",
        path.replace('/', "~1")
    );
    let name = doc.pointer(&pointer).and_then(Value::as_str).unwrap();
    let name = name.rsplit('/').next().unwrap();
    keys(&doc["components"]["schemas"][name]["properties"])
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// The planted optimum `log2 lr*(L) = -7 + drift log2(L / 2)` at depth `L`.
fn planted_optimum(drift: f64, depth: f64) -> f64 {
    -7.0 + drift * (depth / 2.0).log2()
}

/// Imports LR grids (`2^-11 .. 2^-3`, one octave apart) at depths 2 to 16, width 64, tagged
/// `transfer`: `completep` with no drift and one seed, `mup` with a drift of -0.5 octave per
/// doubling and two seeds whose losses differ by up to +-0.004. Loss `3 + 0.06 (log2 lr - log2 lr*)^2`.
async fn import_transfer_grids(app: &axum::Router) {
    let mut runs = Vec::new();
    for (parameterization, drift, seeds) in [("completep", 0.0, 1), ("mup", -0.5, 2)] {
        for depth in [2i64, 4, 8, 16] {
            let optimum = planted_optimum(drift, depth as f64);
            for k in -11..=-3 {
                let x = f64::from(k);
                for seed in 0..seeds {
                    // Opposite for the two seeds, so their mean is the planted bowl.
                    let wobble = ((k * 7 + depth as i32) % 5) as f64 / 2.0 - 1.0;
                    let noise = if seeds > 1 {
                        0.004 * (2 * seed - 1) as f64 * wobble
                    } else {
                        0.0
                    };
                    runs.push(json!({
                        "parameterization": parameterization, "width": 64, "depth": depth,
                        "lr": x.exp2(), "params": 100_000 * depth, "flops": 1e15 * depth as f64,
                        "final_loss": 3.0 + 0.06 * (x - optimum).powi(2) + noise,
                        "seed": seed, "tags": ["transfer"]
                    }));
                }
            }
        }
    }
    import(app, runs).await;
}

/// Stores a `mup` run at `lr` and `depth` (width 64) that diverged: created as a queued local
/// run, claimed and finished as the trainer finishes a diverged run.
async fn diverged_run(store: &Store, lr: f64, depth: usize) {
    let config = shapewise::train::RunConfig {
        depth,
        lr,
        ..super::tiny_run(Parameterization::Mup)
    };
    let run = NewRun {
        name: None,
        tags: vec!["transfer".into()],
        config,
        sweep_id: None,
        created_by: None,
    };
    let id = store.create_run(&run).await.unwrap();
    let job = store.claim_job().await.unwrap().unwrap();
    assert_eq!(job.run_id, id);
    let summary = RunSummary {
        status: RunStatus::Diverged,
        final_train_loss: f64::NAN,
        final_val_loss: None,
        steps: 3,
        tokens: 96,
        flops: 1e9,
        flops_breakdown: FlopBreakdown::default(),
        params_non_embedding: 100_000,
        tokens_per_sec: 1000.0,
        wall_secs: 0.1,
        entropy_floor: None,
    };
    store.finish_job(&job, Ok(&summary)).await.unwrap();
}

#[tokio::test]
async fn transfer_recovers_planted_drifts_and_counts_diverged_runs() {
    let (app, store) = router_app("analysis-transfer").await;
    import_transfer_grids(&app).await;
    // The learning rate above every mup grid diverged at each depth.
    for depth in [2, 4, 8, 16] {
        diverged_run(&store, 0.25, depth).await;
    }
    let request = json!({"selection": {"tags": ["transfer"]}, "resamples": 200, "seed": 7});
    let (status, report) = post(&app, "/api/v1/analysis/transfer", request).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    println!("transfer: {report}");
    assert_eq!(report["axis"], "depth");
    assert_eq!(report["refused"], json!([]));
    assert_eq!(
        keys(&report),
        documented_fields(&app, "/api/v1/analysis/transfer").await
    );
    let groups = report["parameterizations"].as_array().unwrap();
    let names: Vec<&str> = (groups.iter())
        .map(|g| g["parameterization"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["completep", "mup"]);

    let completep = &groups[0];
    assert!(number(&completep["drift"]).abs() < 0.05, "{completep}");
    assert_eq!(completep["transfers"], true);
    // One seed, four depths: the Student-t interval.
    assert_eq!(completep["method"], "student_t");
    assert_eq!(completep["interval_within_threshold"], true);
    assert_eq!(completep["conclusive"], true, "{completep}");
    assert_eq!(
        (
            completep["n_runs"].as_u64(),
            completep["n_diverged"].as_u64()
        ),
        (Some(36), Some(0))
    );

    let mup = &groups[1];
    assert!((number(&mup["drift"]) + 0.5).abs() < 0.05, "{mup}");
    assert_eq!(mup["transfers"], false);
    // Two seeds are too few to resample: the Student-t interval of the seed-averaged optima.
    assert_eq!(mup["method"], "student_t");
    let [low, high] = [0, 1].map(|i| number(&mup["drift_interval"][i]));
    assert!(
        low <= -0.5 + 0.05 && (-0.5 - 0.05..-0.25).contains(&high),
        "{mup}"
    );
    assert_eq!(mup["interval_within_threshold"], false);
    assert_eq!(mup["conclusive"], true, "{mup}");
    assert_eq!(report["conclusive"], true);
    assert_eq!(
        (mup["n_runs"].as_u64(), mup["n_diverged"].as_u64()),
        (Some(76), Some(4))
    );
    let optima = mup["optima"].as_array().unwrap();
    assert_eq!(optima.len(), 4);
    for optimum in optima {
        let depth = number(&optimum["size"]);
        let planted = planted_optimum(-0.5, depth);
        assert!(
            (number(&optimum["log2_lr"]) - planted).abs() < 0.05,
            "{optimum}"
        );
        assert!(
            (number(&optimum["lr"]) / planted.exp2() - 1.0).abs() < 0.05,
            "{optimum}"
        );
        assert!(
            (number(&optimum["predicted_loss"]) - 3.0).abs() < 0.01,
            "{optimum}"
        );
        assert_eq!(optimum["from_vertex"], true);
        assert_eq!(optimum["edge"], Value::Null);
        assert_eq!(
            (optimum["points"].as_u64(), optimum["diverged"].as_u64()),
            (Some(19), Some(1))
        );
        // Optima get intervals from a bootstrap over seeds only (at least 5 seeds).
        assert_eq!(optimum["log2_lr_interval"], Value::Null, "{optimum}");
    }

    // Filters narrow the selection like GET /api/v1/runs; two depths give a drift without an
    // interval; a single depth is refused with the reason.
    let request = json!({
        "selection": {"filters": {"parameterization": "completep", "depth": "in:4,8"}},
        "resamples": 0
    });
    let (status, two) = post(&app, "/api/v1/analysis/transfer", request).await;
    assert_eq!(status, StatusCode::OK, "{two}");
    let only = &two["parameterizations"][0];
    assert_eq!(only["drift_interval"], Value::Null);
    assert_eq!(only["method"], Value::Null);
    // Without an interval the drift is inconclusive, and says what would settle it.
    assert_eq!(only["conclusive"], false, "{only}");
    assert!(only["next_runs"].as_str().unwrap().contains("second seed"));
    assert_eq!(two["conclusive"], false);
    assert!(number(&only["drift"]).abs() < 1e-6, "{only}");
    let request = json!({"selection": {"filters": {"depth": "8"}}, "threshold": 0.1});
    let (status, one) = post(&app, "/api/v1/analysis/transfer", request).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["parameterizations"], json!([]));
    assert_eq!(one["threshold"], 0.1);
    let error = one["refused"][0]["error"].as_str().unwrap();
    assert!(error.contains("2 or more depths, got 1"), "{one}");

    // Across width: every run has width 64, so nothing to read.
    let request = json!({"selection": {"tags": ["transfer"]}, "axis": "width", "resamples": 0});
    let (status, width) = post(&app, "/api/v1/analysis/transfer", request).await;
    assert_eq!(status, StatusCode::OK, "{width}");
    assert_eq!(width["axis"], "width");
    assert!(
        width["refused"][1]["error"]
            .as_str()
            .unwrap()
            .contains("widths, got 1"),
        "{width}"
    );
}

/// Loss of a shape with ratio `N:L` at compute `C`: `L*(C) (1 + 0.02 (ln(N:L) - ln 48)^2)` with
/// `L*(C) = 1.8 + 391 C^-0.15`.
fn planted_shape_loss(ratio: f64, flops: f64) -> f64 {
    (1.8 + 391.0 * flops.powf(-0.15)) * (1.0 + 0.02 * (ratio.ln() - 48f64.ln()).powi(2))
}

/// Imports `completep` runs at three compute scales (1e16, 1e17, 1e18 FLOPs, each spread over
/// 1%), depth 4 and N:L from 8 to 256, tagged `shapes`.
async fn import_shape_grid(app: &axum::Router) {
    let mut runs = Vec::new();
    for scale in [1e16, 1e17, 1e18] {
        for (i, ratio) in [8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
            .into_iter()
            .enumerate()
        {
            let flops = scale * (1.0 + 0.002 * i as f64);
            runs.push(json!({
                "parameterization": "completep", "width": (ratio * 4.0) as i64, "depth": 4,
                "params": 1_000_000, "flops": flops, "lr": 0.01,
                "final_loss": planted_shape_loss(ratio, flops), "tags": ["shapes"]
            }));
        }
    }
    import(app, runs).await;
}

#[tokio::test]
async fn shape_tolerance_recovers_the_planted_optimum_and_range() {
    let (app, _) = router_app("analysis-shapes").await;
    import_shape_grid(&app).await;
    let request = json!({"selection": {"tags": ["shapes"]}, "resamples": 100, "seed": 2});
    let (status, report) = post(&app, "/api/v1/analysis/shape-tolerance", request).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    println!("tolerance: {report}");
    assert_eq!(
        keys(&report),
        documented_fields(&app, "/api/v1/analysis/shape-tolerance").await
    );
    assert_eq!(report["tolerance"], 0.01);
    let completep = &report["parameterizations"][0];
    assert_eq!(completep["parameterization"], "completep");
    assert_eq!(completep["n_runs"], 18);
    let scales = completep["scales"].as_array().unwrap();
    assert_eq!(scales.len(), 3);
    // Within 1%: |ln(N:L) - ln 48| <= sqrt(0.01 / 0.02), up to the small FLOPs spread in a scale.
    let half = 0.5f64.sqrt();
    for scale in scales {
        assert!(
            (number(&scale["optimal_width_depth_ratio"]) / 48.0 - 1.0).abs() < 0.03,
            "{scale}"
        );
        let [low, high] = [0, 1].map(|i| number(&scale["ratio_range"][i]));
        assert!((low.ln() - (48f64.ln() - half)).abs() < 0.05, "{scale}");
        assert!((high.ln() - (48f64.ln() + half)).abs() < 0.05, "{scale}");
        assert_eq!(scale["range_clipped_low"], false);
        assert_eq!(scale["from_vertex"], true);
        let [low, high] = [0, 1].map(|i| number(&scale["ratio_interval"][i]));
        assert!(low <= 48.0 * 1.03 && high >= 48.0 / 1.03, "{scale}");
        assert_eq!(
            (scale["points"].as_u64(), scale["shapes"].as_u64()),
            (Some(6), Some(6))
        );
        assert_eq!(scale["observed_ratio_range"], json!([8.0, 256.0]));
        let flops = number(&scale["flops"]);
        let optimal = number(&scale["optimal_loss"]);
        assert!(
            (optimal / planted_shape_loss(48.0, flops) - 1.0).abs() < 0.01,
            "{scale}"
        );
    }
    let penalty = &completep["penalty"];
    assert!(
        (number(&penalty["optimal_width_depth_ratio"]) / 48.0 - 1.0).abs() < 0.03,
        "{penalty}"
    );
    assert!(
        (number(&penalty["curvature"]) - 0.02).abs() < 0.002,
        "{penalty}"
    );
    assert_eq!(completep["conclusive"], true, "{completep}");
    assert_eq!(report["conclusive"], true);

    // Only the largest scale, with a wide tolerance: the range reaches both ends of the shapes.
    let request = json!({
        "selection": {"filters": {"flops": "ge:5e17"}}, "tolerance": 0.2, "resamples": 0
    });
    let (status, wide) = post(&app, "/api/v1/analysis/shape-tolerance", request).await;
    assert_eq!(status, StatusCode::OK, "{wide}");
    let scale = &wide["parameterizations"][0]["scales"][0];
    assert_eq!(scale["ratio_interval"], Value::Null);
    assert_eq!(
        (&scale["range_clipped_low"], &scale["range_clipped_high"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(scale["ratio_range"], json!([8.0, 256.0]));

    // Shapes that stop short of the optimum (N:L 8 to 32, planted 48): inconclusive.
    let request = json!({
        "selection": {"filters": {"width": "in:32,64,128"}}, "resamples": 0
    });
    let (status, short) = post(&app, "/api/v1/analysis/shape-tolerance", request).await;
    assert_eq!(status, StatusCode::OK, "{short}");
    let only = &short["parameterizations"][0];
    assert_eq!(only["conclusive"], false, "{only}");
    assert!(
        only["warnings"][0]
            .as_str()
            .unwrap()
            .contains("at an edge of the shapes tried"),
        "{only}"
    );
    assert!(
        only["next_runs"]
            .as_str()
            .unwrap()
            .contains("beyond that edge")
    );

    // Two shapes per scale are refused with the reason.
    let request = json!({"selection": {"filters": {"width": "in:32,64"}}, "resamples": 0});
    let (status, two) = post(&app, "/api/v1/analysis/shape-tolerance", request).await;
    assert_eq!(status, StatusCode::OK, "{two}");
    let error = two["refused"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("at least 3 distinct shapes")
            && error.contains("2 distinct shapes N:L, need 3"),
        "{two}"
    );
}

#[tokio::test]
async fn analysis_endpoints_refuse_bad_bodies() {
    let (app, _) = router_app("analysis-refusals").await;
    import_shape_grid(&app).await;
    let tags = json!({"tags": ["shapes"]});
    let transfer = "/api/v1/analysis/transfer";
    let tolerance = "/api/v1/analysis/shape-tolerance";
    let cases: Vec<(&str, Value, StatusCode)> = vec![
        (transfer, json!({}), StatusCode::BAD_REQUEST),
        (
            transfer,
            json!({"selection": {"sweep": 1}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "axis": "height"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "threshold": -0.1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "threshold": "wide"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "resamples": 6000}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "confidence": 1.5}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": tags, "tolerance": 0.01}),
            StatusCode::BAD_REQUEST,
        ),
        (
            tolerance,
            json!({"selection": tags, "tolerance": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            tolerance,
            json!({"selection": tags, "tolerance": 2}),
            StatusCode::BAD_REQUEST,
        ),
        (
            tolerance,
            json!({"selection": tags, "scale_factor": 0.5}),
            StatusCode::BAD_REQUEST,
        ),
        (
            tolerance,
            json!({"selection": tags, "axis": "depth"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            tolerance,
            json!({"selection": {"run_ids": []}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            transfer,
            json!({"selection": {"tags": ["nothing-has-this"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            tolerance,
            json!({"selection": {"tags": ["nothing-has-this"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (uri, body, expected) in cases {
        let (status, answer) = post(&app, uri, body.clone()).await;
        assert_eq!(status, expected, "{uri} {body}: {answer}");
        assert_eq!(keys(&answer), ["detail", "error"].map(String::from).into());
    }
    // The shape runs carry no diverged runs and one learning rate: the transfer refusal says
    // what is missing.
    let (status, body) = post(&app, transfer, json!({"selection": tags, "resamples": 0})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let error = body["refused"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("1 learning rate with a finite loss, need 3"),
        "{body}"
    );
    let (status, _) = call(&app, "POST", transfer, Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&app, "POST", tolerance, Some("[1, 2]")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn the_analysis_page_renders_every_section_with_charts() {
    let (app, _) = router_app("analysis-page").await;
    import_transfer_grids(&app).await;
    import_shape_grid(&app).await;

    let (status, html) = page(&app, "/analysis").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Choose runs above") && !html.contains("<svg"));
    assert!(html.contains("aria-current=\"page\">Analysis"));

    let (status, html) = page(&app, "/analysis?tags=shapes&resamples=30").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for text in [
        "Loss versus compute",
        "Relative residuals",
        "FLOP savings compare two fitted parameterizations",
        "Width/depth tolerance",
        "N:L within 1%",
        "Pooled over scales (18 runs)",
        "width-to-depth ratio N:L (log scale)",
        "Learning-rate transfer",
        "1 learning rate with a finite loss, need 3",
    ] {
        assert!(html.contains(text), "{text}");
    }
    assert!(html.matches("<svg").count() >= 3);

    let (status, html) = page(&app, "/analysis?tags=transfer&resamples=30").await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "Drift (octaves per doubling of depth)",
        "does not transfer",
        "transfers: |drift| &#60; 0.25, interval inside",
        "Student-t",
        "learning rate (log2 scale)",
        "completep",
    ] {
        assert!(html.contains(text), "{text}");
    }
    // The shapes' section says why it cannot be read from these runs.
    assert!(html.contains("at least 3 distinct shapes"), "{html}");

    let (status, html) = page(&app, "/analysis?tags=transfer&resamples=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("resamples must be a whole number"), "{html}");
    assert!(!html.contains("<svg"));
}
