//! Verdicts on planted data: thin runs (3 compute scales within 1.2 decades, 1.5% noise) give
//! inconclusive savings and plans with the reasons and what to run next; rich runs (10 scales
//! over 4 decades, 0.3% noise) give conclusive ones that recover the planted 20% saving.

use super::api::{call, router_app};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::flops::params_non_embedding;
use shapewise::rng::SplitMix64;
use tower::ServiceExt;

/// Planted `L_p(C) = E + A_p C^-b`: CompleteP reaches every loss with 80% of muP's compute.
const E: f64 = 2.0;
const A: f64 = 391.0;
const B: f64 = 0.15;

/// Imports muP and CompleteP runs, two shapes per compute scale (the second 1% worse), with
/// relative noise of standard deviation `noise`, tagged `tag`.
async fn import(app: &axum::Router, tag: &str, scales: &[f64], noise: f64, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut runs = Vec::new();
    for (parameterization, a) in [("mup", A), ("completep", A * 1.25f64.powf(-B))] {
        for &flops in scales {
            for (shape, (width, depth)) in [(256i64, 4i64), (128, 8)].into_iter().enumerate() {
                // A sum of 12 uniforms less 6: mean 0, variance 1.
                let z: f64 = (0..12).map(|_| rng.next_f64()).sum::<f64>() - 6.0;
                let loss =
                    (E + a * flops.powf(-B)) * (1.0 + 0.01 * shape as f64) * (1.0 + noise * z);
                let params = params_non_embedding(width as usize, depth as usize, true) as i64;
                runs.push(json!({
                    "parameterization": parameterization, "width": width, "depth": depth,
                    "params": params, "tokens": 20 * params, "flops": flops * (1.0 + 0.02 * shape as f64),
                    "final_loss": loss, "tags": [tag], "vocab": 256, "context": 128,
                }));
            }
        }
    }
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
}

fn scales(from: f64, decades: f64, count: usize) -> Vec<f64> {
    (0..count)
        .map(|i| from * 10f64.powf(decades * i as f64 / (count - 1) as f64))
        .collect()
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", uri, Some(&body.to_string())).await
}

async fn page(app: &axum::Router, uri: &str) -> String {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn warnings(answer: &Value) -> Vec<String> {
    answer["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {answer}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn thin_runs_give_inconclusive_savings_and_plans_with_what_to_run_next() {
    let (app, _) = router_app("verdicts-thin").await;
    let thin = scales(1e13, 1.2, 3);
    import(&app, "thin", &thin, 0.015, 1).await;
    let selection = json!({"tags": ["thin"]});

    let (status, savings) = post(
        &app,
        "/api/v1/analysis/savings",
        json!({"selection": selection, "resamples": 200, "seed": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{savings}");
    println!("thin savings: {savings}");
    assert_eq!(savings["conclusive"], false, "{savings}");
    let reasons = warnings(&savings);
    assert!(
        reasons.iter().any(|w| w.contains("3 compute scales")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|w| w.contains("wider than ±10 points")),
        "{reasons:?}"
    );
    let next = savings["next_runs"].as_str().unwrap();
    assert!(
        next.contains("add 1 compute scale at 6.34e14 FLOPs"),
        "{next}"
    );
    assert_eq!(savings["candidate"]["shared_e"], true);

    // The same selection fitted per parameterization: each group says why.
    let (status, fits) = post(
        &app,
        "/api/v1/fits/compute",
        json!({"selection": selection, "resamples": 50}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{fits}");
    assert_eq!(fits["conclusive"], false);
    assert_eq!(fits["shared_e"], true);
    for group in fits["groups"].as_array().unwrap() {
        assert_eq!(group["conclusive"], false, "{group}");
        assert_eq!(group["compute_scales"].as_array().unwrap().len(), 3);
        assert_eq!(group["E"], fits["groups"][0]["E"]);
    }

    // A plan 60,000 times beyond the largest run, at another vocabulary.
    let largest = thin[2] * 1.02;
    let (status, plan) = post(
        &app,
        "/api/v1/plan/recommend",
        json!({
            "selection": selection, "budget_flops": largest * 6e4, "vocab": 50257,
            "context": 128, "resamples": 50
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    println!("thin plan: {plan}");
    assert_eq!(plan["conclusive"], false);
    let all = warnings(&plan);
    assert!(all.iter().any(|w| w.contains("60000 times")), "{all:?}");
    assert!(
        all.iter()
            .any(|w| w.contains("vocabulary (50257)") && w.contains("256")),
        "{all:?}"
    );
    for p in plan["parameterizations"].as_array().unwrap() {
        assert_eq!(p["conclusive"], false, "{p}");
    }

    // The pages show the badge and the reasons instead of a headline number.
    let html = page(&app, "/analysis?tags=thin&resamples=50").await;
    assert!(html.contains("badge-inconclusive"), "{html}");
    assert!(html.contains("is wider than ±10 points"));
    assert!(html.contains("To conclude: "));
    // The fits lack scales: the page links the planner on the same runs, which offers them.
    let link = html
        .split("href=\"/planner?")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no planner link: {html}"))
        .replace("&#38;", "&");
    assert!(
        link.contains("vocab=256") && link.contains("context=128") && link.contains("tags=thin"),
        "{link}"
    );
    let html = page(&app, &format!("/planner?{link}&resamples=20")).await;
    assert!(
        html.contains("Make the plan conclusive") && html.contains("Queue 2 runs"),
        "{html}"
    );
    let html = page(
        &app,
        "/planner?tags=thin&budget_flops=1e19&vocab=50257&context=128&resamples=20",
    )
    .await;
    assert!(html.contains("badge-inconclusive"));
    assert!(html.contains("beyond 100x a fitted curve is a guess"));
}

#[tokio::test]
async fn rich_runs_give_conclusive_answers_that_recover_the_planted_saving() {
    let (app, _) = router_app("verdicts-rich").await;
    let rich = scales(1e13, 4.0, 10);
    import(&app, "rich", &rich, 0.003, 2).await;
    let selection = json!({"tags": ["rich"]});

    let (status, savings) = post(
        &app,
        "/api/v1/analysis/savings",
        json!({"selection": selection, "resamples": 200, "seed": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{savings}");
    println!("rich savings: {savings}");
    assert_eq!(savings["conclusive"], true, "{savings}");
    assert_eq!(savings["next_runs"], Value::Null);
    let estimate = savings["savings"].as_f64().unwrap();
    assert!((estimate - 0.2).abs() < 0.05, "{savings}");
    let [low, high] = [0, 1].map(|i| savings["interval"][i].as_f64().unwrap());
    assert!(low > 0.0 && high - low <= 0.2, "{savings}");

    let (status, plan) = post(
        &app,
        "/api/v1/plan/recommend",
        json!({
            "selection": selection, "budget_flops": rich[9] * 5.0, "vocab": 256,
            "context": 128, "resamples": 50
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["conclusive"], true, "{plan}");
    let html = page(&app, "/analysis?tags=rich&resamples=50").await;
    assert!(!html.contains("badge-inconclusive"), "{html}");
    // Past 10x the largest run: a warning, still conclusive.
    let (status, plan) = post(
        &app,
        "/api/v1/plan/recommend",
        json!({
            "selection": selection, "budget_flops": rich[9] * 50.0, "vocab": 256,
            "context": 128, "resamples": 0
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["conclusive"], true, "{plan}");
    assert!(
        warnings(&plan).iter().any(|w| w.contains("49 times")),
        "{plan}"
    );
}
