//! The analysis endpoints: the Chinchilla surface on Epoch's digitised Chinchilla runs, compute
//! curves and FLOP savings on planted runs, and the refusals.

use super::api::{call, router_app};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const CHINCHILLA_CSV: &str = include_str!("../data/chinchilla_approach3.csv");

/// Imports Epoch's 245 Chinchilla runs (params, training FLOPs, loss) tagged `chinchilla`;
/// returns their ids in file order.
async fn import_chinchilla(app: &axum::Router) -> Vec<i64> {
    let runs: Vec<Value> = (CHINCHILLA_CSV.lines().skip(1))
        .map(|line| {
            let v: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
            json!({
                // The file's counts as they come from pandas: floats, not all whole numbers.
                "parameterization": "sp", "params": v[0], "flops": v[1],
                "final_loss": v[2], "tags": ["chinchilla"]
            })
        })
        .collect();
    assert_eq!(runs.len(), 245);
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    serde_json::from_value(imported["ids"].clone()).unwrap()
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", uri, Some(&body.to_string())).await
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
    let reference = doc.pointer(&pointer).and_then(Value::as_str).unwrap();
    schema_fields(&doc, reference)
}

/// The properties of a component schema, with those of the schemas it combines by `allOf`.
fn schema_fields(doc: &Value, reference: &str) -> BTreeSet<String> {
    let name = reference.rsplit('/').next().unwrap();
    let schema = &doc["components"]["schemas"][name];
    let mut fields = match schema.get("properties") {
        Some(properties) => keys(properties),
        None => BTreeSet::new(),
    };
    for part in schema["allOf"].as_array().into_iter().flatten() {
        match part["$ref"].as_str() {
            Some(inner) => fields.extend(schema_fields(doc, inner)),
            None => fields.extend(keys(&part["properties"])),
        }
    }
    fields
}

#[tokio::test]
async fn chinchilla_fit_reproduces_epochs_numbers() {
    let (app, _) = router_app("fits-chinchilla").await;
    let ids = import_chinchilla(&app).await;
    let request = json!({
        "selection": {"tags": ["chinchilla"]}, "exclude_highest_loss": 5, "resamples": 100
    });
    let (status, fit) = post(&app, "/api/v1/fits/chinchilla", request).await;
    assert_eq!(status, StatusCode::OK, "{fit}");
    println!("chinchilla fit: {fit}");
    let value = |k: &str| fit[k].as_f64().unwrap();
    // Epoch (arXiv 2404.10102): E 1.82, alpha 0.35, beta 0.37.
    assert!((value("E") - 1.82).abs() < 0.03, "{fit}");
    assert!((value("alpha") - 0.35).abs() < 0.02, "{fit}");
    assert!((value("beta") - 0.37).abs() < 0.02, "{fit}");
    for k in ["E", "A", "B", "alpha", "beta"] {
        let [low, high] = [0, 1].map(|i| fit["intervals"][k][i].as_f64().unwrap());
        assert!(low <= value(k) && value(k) <= high, "{k}: {fit}");
    }
    assert_eq!(fit["n_runs"], 240);
    assert_eq!(fit["conclusive"], true, "{fit}");
    assert!(value("objective") > 0.0);
    // The five excluded are the five highest losses of the file.
    let mut by_loss: Vec<(f64, i64)> = (CHINCHILLA_CSV.lines().skip(1))
        .zip(&ids)
        .map(|(line, id)| (line.rsplit(',').next().unwrap().parse().unwrap(), *id))
        .collect();
    by_loss.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut highest: Vec<i64> = by_loss[..5].iter().map(|p| p.1).collect();
    highest.sort_unstable();
    assert_eq!(fit["excluded_run_ids"], json!(highest));
    assert_eq!(
        keys(&fit),
        documented_fields(&app, "/api/v1/fits/chinchilla").await
    );

    // Without resamples: the same surface, no intervals.
    let request = json!({
        "selection": {"run_ids": ids}, "exclude_highest_loss": 5, "resamples": 0
    });
    let (status, once) = post(&app, "/api/v1/fits/chinchilla", request).await;
    assert_eq!(status, StatusCode::OK, "{once}");
    assert_eq!(once["intervals"], Value::Null);
    assert!((once["E"].as_f64().unwrap() - value("E")).abs() < 1e-9);
}

/// The planted curves: the baseline `L(C) = 1.8 + A C^-0.15` and a candidate reaching every loss
/// with 80% of the compute (`A_candidate = A 1.25^-0.15`), i.e. savings of exactly 0.2.
const E: f64 = 1.8;
const B: f64 = 0.15;
const A: f64 = 391.0;

/// Imports 20 runs per parameterization over four decades of compute, with a deterministic
/// multiplicative noise of at most 0.5%.
async fn import_planted(app: &axum::Router) {
    let mut runs = Vec::new();
    for (k, (parameterization, a)) in [("mup", A), ("completep", A * 1.25f64.powf(-B))]
        .into_iter()
        .enumerate()
    {
        for i in 0..20 {
            let flops = 1e15 * 10f64.powf(4.0 * (i as f64 + 0.5 * k as f64) / 20.0);
            let noise = ((i * 37 + k * 11) % 21) as f64 / 20.0 - 0.5; // in [-0.5, 0.5]
            let loss = (E + a * flops.powf(-B)) * (1.0 + 0.01 * noise);
            runs.push(json!({
                "parameterization": parameterization, "params": 1_000_000, "flops": flops,
                "final_loss": loss, "tags": ["planted"], "width": 128 * (1 + k as i64)
            }));
        }
    }
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
}

/// `GET uri` as text.
async fn get_text(app: &axum::Router, uri: &str) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{uri}");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_chinchilla_csv_imports_as_written_and_an_export_round_trips() {
    let (app, store) = router_app("fits-chinchilla-csv").await;
    // The file as pandas writes it: params, train_flops, loss; float counts.
    let uri = "/api/v1/runs/import.csv?parameterization=sp&tags=chinchilla";
    let (status, imported) = call(&app, "POST", uri, Some(CHINCHILLA_CSV)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported["ids"].as_array().unwrap().len(), 245);
    let request = json!({
        "selection": {"tags": ["chinchilla"]}, "exclude_highest_loss": 5, "resamples": 0
    });
    let (status, fit) = post(&app, "/api/v1/fits/chinchilla", request).await;
    assert_eq!(status, StatusCode::OK, "{fit}");
    let value = |k: &str| fit[k].as_f64().unwrap();
    assert!((value("E") - 1.82).abs() < 0.03, "{fit}");
    assert!((value("alpha") - 0.35).abs() < 0.02, "{fit}");
    assert!((value("beta") - 0.37).abs() < 0.02, "{fit}");

    // The export imported again: the same runs, under the tags of the file.
    let exported = get_text(&app, "/api/v1/runs.csv?tag=chinchilla&sort=id&limit=1000").await;
    let exported = exported.replace(",chinchilla,", ",again,");
    let (status, again) = call(&app, "POST", "/api/v1/runs/import.csv", Some(&exported)).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    let first = imported["ids"].as_array().unwrap();
    for (a, b) in first.iter().zip(again["ids"].as_array().unwrap()) {
        let (a, b) = (
            store.run(a.as_i64().unwrap()).await.unwrap(),
            store.run(b.as_i64().unwrap()).await.unwrap(),
        );
        assert_eq!(
            (
                &a.parameterization,
                a.params_non_embedding,
                a.tokens,
                a.flops
            ),
            (
                &b.parameterization,
                b.params_non_embedding,
                b.tokens,
                b.flops
            )
        );
        assert_eq!(a.final_val_loss, b.final_val_loss);
        assert_eq!(b.tags, ["again"]);
    }

    // A bad row refuses the whole file, naming the row; no rows, or no header, too.
    let (_, before) = store.runs(&Default::default()).await.unwrap();
    for (csv, status, message) in [
        (
            "parameterization,params,tokens,final_loss\nmup,1000,2e4,3.1\nmup,12.5,2e4,3.0\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            "row 2: 'params': a count must be a whole number",
        ),
        (
            "parameterization,params,tokens,final_loss\nxyz,1000,2e4,3.1\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            "row 1: unknown parameterization",
        ),
        (
            "parameterization,params,tokens,final_loss\nmup,1000,2e4\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            "row 1",
        ),
        (
            "parameterization,params,tokens,final_loss\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            "no rows",
        ),
    ] {
        let (got, answer) = call(&app, "POST", "/api/v1/runs/import.csv", Some(csv)).await;
        assert_eq!(got, status, "{csv}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(message), "{csv}: {detail}");
    }
    let (_, after) = store.runs(&Default::default()).await.unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn savings_from_runs_matched_at_equal_compute_recover_a_planted_multiplier() {
    let (app, _) = router_app("fits-matched").await;
    // Both parameterizations at the same 10 computes over 3 decades, three shapes per compute
    // up to 4% above the frontier (the same shapes for both: the penalty cancels in the pairs),
    // two seeds, 0.3% independent noise per run. The candidate reaches every loss with 80% of
    // the compute: savings 0.2.
    let mut runs = Vec::new();
    for i in 0..10 {
        let flops = 1e15 * 10f64.powf(3.0 * i as f64 / 9.0);
        for shape in 0..3 {
            let penalty =
                1.0 + 0.04 * ((i * 7 + shape * 5) % 11) as f64 / 10.0 * (shape as f64 / 2.0);
            let flops = flops * (1.0 + 0.01 * shape as f64);
            for seed in 0..2 {
                for (k, (parameterization, a)) in [("mup", A), ("completep", A * 1.25f64.powf(-B))]
                    .into_iter()
                    .enumerate()
                {
                    let noise = ((i * 13 + shape * 7 + seed * 5 + k * 3) % 11) as f64 / 10.0 - 0.5;
                    let loss = (E + a * flops.powf(-B)) * penalty * (1.0 + 0.006 * noise);
                    runs.push(json!({
                        "parameterization": parameterization, "params": 1_000_000, "flops": flops,
                        "final_loss": loss, "tags": ["matched"], "width": 128, "depth": 2 + shape,
                        "seed": seed
                    }));
                }
            }
        }
    }
    let body = json!({ "runs": runs }).to_string();
    let (status, imported) = call(&app, "POST", "/api/v1/runs/import", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let request = json!({
        "selection": {"tags": ["matched"]}, "candidate": "completep", "baseline": "mup",
        "resamples": 200
    });
    let (status, savings) = post(&app, "/api/v1/analysis/savings", request).await;
    assert_eq!(status, StatusCode::OK, "{savings}");
    println!("matched savings: {savings}");
    assert_eq!(savings["method"], "matched_compute");
    assert_eq!(savings["matched"]["computes"], 30);
    let estimate = savings["savings"].as_f64().unwrap();
    assert!((estimate - 0.2).abs() < 0.03, "{savings}");
    let [low, high] = [0, 1].map(|i| savings["interval"][i].as_f64().unwrap());
    assert!(low <= 0.2 && 0.2 <= high && high - low < 0.2, "{savings}");
    assert_eq!(savings["conclusive"], true, "{savings}");
    // The same runs read off the two curves: the shapes scatter the frontier, the interval is
    // wider.
    let [curve_low, curve_high] = [0, 1].map(|i| savings["curve_interval"][i].as_f64().unwrap());
    assert!(curve_high - curve_low > high - low, "{savings}");
}

#[tokio::test]
async fn compute_fits_and_savings_recover_planted_curves() {
    let (app, _) = router_app("fits-savings").await;
    import_planted(&app).await;

    let request = json!({"selection": {"tags": ["planted"]}, "resamples": 50, "seed": 3});
    let (status, fits) = post(&app, "/api/v1/fits/compute", request).await;
    assert_eq!(status, StatusCode::OK, "{fits}");
    assert_eq!(fits["refused"], json!([]));
    let groups = fits["groups"].as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["completep", "mup"]);
    for group in groups {
        assert_eq!(group["n_runs"], 20);
        assert!((group["b"].as_f64().unwrap() - B).abs() < 0.03, "{group}");
        assert!((group["E"].as_f64().unwrap() - E).abs() < 0.1, "{group}");
        let [low, high] = [0, 1].map(|i| group["intervals"]["b"][i].as_f64().unwrap());
        assert!(low <= high, "{group}");
        // Goodness of fit: the planted noise is at most 0.5% per run.
        let residuals = group["residuals"].as_array().unwrap();
        assert_eq!(residuals.len(), 20);
        for r in residuals {
            let relative = r["relative_residual"].as_f64().unwrap();
            assert!(relative.abs() < 0.008, "{r}");
            let (loss, fitted) = (r["loss"].as_f64().unwrap(), r["fitted"].as_f64().unwrap());
            assert!(((loss - fitted) / fitted - relative).abs() < 1e-12, "{r}");
            assert!(r["run_id"].as_i64().is_some() && r["flops"].as_f64().unwrap() >= 1e15);
        }
        let rmse = group["rmse_log_loss"].as_f64().unwrap();
        assert!(rmse > 0.0 && rmse < 0.005, "{group}");
        assert!(group["r_squared"].as_f64().unwrap() > 0.99, "{group}");
    }
    assert_eq!(
        keys(&fits),
        documented_fields(&app, "/api/v1/fits/compute").await
    );
    let (_, doc) = call(&app, "GET", "/api/v1/openapi.json", None).await;
    let schema = |name: &str| schema_fields(&doc, name);
    assert_eq!(keys(&groups[0]), schema("ComputeGroupFit"));
    assert_eq!(keys(&groups[0]["residuals"][0]), schema("ComputeResidual"));

    // One group over all runs; filters select like GET /api/v1/runs.
    let request = json!({"selection": {"tags": ["planted"]}, "group_by": "none", "resamples": 0});
    let (status, all) = post(&app, "/api/v1/fits/compute", request).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["groups"][0]["group"], "all");
    assert_eq!(all["groups"][0]["n_runs"], 40);
    let request = json!({"selection": {"filters": {"width": "in:256"}}, "resamples": 0});
    let (status, filtered) = post(&app, "/api/v1/fits/compute", request).await;
    assert_eq!(status, StatusCode::OK, "{filtered}");
    assert_eq!(filtered["groups"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["groups"][0]["group"], "completep");

    let request = json!({
        "selection": {"tags": ["planted"]}, "candidate": "completep", "baseline": "mup",
        "resamples": 100, "seed": 1
    });
    let (status, savings) = post(&app, "/api/v1/analysis/savings", request).await;
    assert_eq!(status, StatusCode::OK, "{savings}");
    println!("savings: {savings}");
    let estimate = savings["savings"].as_f64().unwrap();
    assert!((estimate - 0.2).abs() < 0.05, "{savings}");
    let [low, high] = [0, 1].map(|i| savings["interval"][i].as_f64().unwrap());
    assert!(low <= 0.2 && 0.2 <= high, "{savings}");
    assert_eq!(savings["loss_source"], "overlap_midpoint");
    // No compute trained by both: the savings are read off the curves.
    assert_eq!(savings["method"], "curves");
    assert_eq!(savings["matched"], Value::Null);
    assert_eq!(savings["candidate"]["n_runs"], 20);
    assert_eq!(savings["baseline"]["parameterization"], "mup");
    assert_eq!(
        keys(&savings),
        documented_fields(&app, "/api/v1/analysis/savings").await
    );

    // At a given loss the planted savings are 0.2 there too.
    let request = json!({"selection": {"tags": ["planted"]}, "loss": 2.5, "resamples": 20});
    let (status, at) = post(&app, "/api/v1/analysis/savings", request).await;
    assert_eq!(status, StatusCode::OK, "{at}");
    assert_eq!(
        (at["loss"].as_f64(), &at["loss_source"]),
        (Some(2.5), &json!("given"))
    );
    assert!((at["savings"].as_f64().unwrap() - 0.2).abs() < 0.05, "{at}");
    // A loss below both curves' E is refused.
    let request = json!({"selection": {"tags": ["planted"]}, "loss": 1.0, "resamples": 0});
    let (status, body) = post(&app, "/api/v1/analysis/savings", request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
}

#[tokio::test]
async fn fits_refuse_bad_requests_and_unfittable_selections() {
    let (app, _) = router_app("fits-refusals").await;
    let ids = import_chinchilla(&app).await;

    // Three runs cannot determine the exponents: 422 for the surface, a refused group for L(C).
    let three = json!({"run_ids": &ids[..3]});
    let (status, body) = post(
        &app,
        "/api/v1/fits/chinchilla",
        json!({"selection": three, "resamples": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("4 distinct"),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/api/v1/fits/compute",
        json!({"selection": three, "resamples": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["groups"], json!([]));
    assert_eq!(body["refused"][0]["group"], "sp");
    assert_eq!(body["refused"][0]["n_runs"], 3);
    let error = body["refused"][0]["error"].as_str().unwrap();
    assert!(error.contains("3 distinct compute scales, got 1"), "{body}");
    assert_eq!(body["conclusive"], false, "{body}");

    let tags = json!({"tags": ["chinchilla"]});
    let cases: Vec<(&str, Value, StatusCode)> = vec![
        (
            "/api/v1/fits/chinchilla",
            json!({"selection": {"sweep": 1}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/chinchilla",
            json!({"resamples": 10}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/chinchilla",
            json!({"selection": {"tags": ["chinchilla"], "sweep_id": 1}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/chinchilla",
            json!({"selection": tags, "resamples": 5001}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/chinchilla",
            json!({"selection": tags, "resamples": -1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": tags, "resamples": "many"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": tags, "confidence": 1.0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": tags, "group_by": "width"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": tags, "resample": 10}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": {"filters": {"widht": "1"}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": {"filters": {"limit": "10"}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": {"run_ids": []}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/fits/chinchilla",
            json!({"selection": tags, "exclude_highest_loss": 245, "resamples": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/fits/compute",
            json!({"selection": {"tags": ["nothing-has-this"]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/analysis/savings",
            json!({"selection": tags, "candidate": "mup", "baseline": "mup"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/analysis/savings",
            json!({"selection": tags, "candidate": "mupp"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/analysis/savings",
            json!({"selection": tags, "resamples": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (uri, body, expected) in cases {
        let (status, answer) = post(&app, uri, body.clone()).await;
        assert_eq!(status, expected, "{uri} {body}: {answer}");
        assert_eq!(keys(&answer), ["detail", "error"].map(String::from).into());
    }
    let (status, _) = call(&app, "POST", "/api/v1/fits/chinchilla", Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
