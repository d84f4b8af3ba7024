//! The MLflow-compatible API through the router: what the official client sends (that client
//! itself runs in CI, `tests/mlflow/client.py`), its refusals in MLflow's error shape, and a
//! tracked run feeding shapewise's own API.

use super::api::{call, router_app};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const API: &str = "/api/2.0/mlflow";

async fn post(app: &axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        &format!("{API}/{path}"),
        Some(&body.to_string()),
    )
    .await
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, Value) {
    call(app, "GET", &format!("{API}/{path}"), None).await
}

fn refused(answer: &(StatusCode, Value), status: StatusCode, code: &str, text: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(text), "{message}");
}

#[tokio::test]
async fn experiments_runs_and_logs_read_back_as_logged() {
    let (app, _) = router_app("mlflow-api").await;

    // Experiments: the client looks one up by name, creates it when missing.
    refused(
        &get(&app, "experiments/get-by-name?experiment_name=proxies").await,
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        "'proxies' does not exist",
    );
    let (status, created) = post(&app, "experiments/create", json!({"name": "proxies"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let experiment_id = created["experiment_id"].as_str().unwrap().to_string();
    refused(
        &post(&app, "experiments/create", json!({"name": "proxies"})).await,
        StatusCode::CONFLICT,
        "RESOURCE_ALREADY_EXISTS",
        "already exists",
    );
    refused(
        &post(&app, "experiments/create", json!({"name": "x".repeat(101)})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "1 to 100 characters",
    );
    let (_, found) = get(&app, "experiments/get-by-name?experiment_name=proxies").await;
    assert_eq!(found["experiment"]["experiment_id"], experiment_id.as_str());
    let (_, all) = post(
        &app,
        "experiments/search",
        json!({"filter": "name = 'Default'"}),
    )
    .await;
    assert_eq!(all["experiments"].as_array().unwrap().len(), 1, "{all}");

    // A run: created running, tagged with its experiment's name.
    let (status, run) = post(
        &app,
        "runs/create",
        json!({"experiment_id": experiment_id, "start_time": 1_700_000_000_000i64,
               "run_name": "p1", "tags": [{"key": "mlflow.user", "value": "ada"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["run"]["info"]["status"], "RUNNING");
    assert_eq!(run["run"]["info"]["start_time"], 1_700_000_000_000i64);
    let id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();

    // A batch: params fill the columns, the loss the series; NaN is kept as NaN.
    let metrics: Vec<Value> = (1..=5)
        .map(|step| json!({"key": "loss", "value": 4.0 - 0.1 * step as f64, "timestamp": 1, "step": step}))
        .chain([json!({"key": "grad_norm", "value": "NaN", "timestamp": 1, "step": 5})])
        .collect();
    let (status, answer) = post(
        &app,
        "runs/log-batch",
        json!({"run_id": id, "metrics": metrics,
               "params": [{"key": "parameterization", "value": "mup"}, {"key": "width", "value": "128"},
                          {"key": "depth", "value": "8"}, {"key": "params", "value": "1.5e6"},
                          {"key": "tokens", "value": "30000000"}, {"key": "optimizer", "value": "adamw"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({}));
    let (_, history) = get(
        &app,
        &format!("metrics/get-history?run_id={id}&metric_key=grad_norm"),
    )
    .await;
    assert_eq!(history["metrics"][0]["value"], "NaN", "{history}");
    let (_, page) = get(
        &app,
        &format!("metrics/get-history?run_id={id}&metric_key=loss&max_results=2"),
    )
    .await;
    assert_eq!(page["metrics"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_page_token"], "2");

    // Refusals name the field and keep the run as it was: 400 for a request of the wrong
    // shape, 422 for a value the server refuses.
    refused(
        &post(
            &app,
            "runs/log-batch",
            json!({"run_id": id, "metrics": [{"key": "loss", "value": "lots", "timestamp": 1}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
        "'metrics[0].value'",
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|s| json!({"key": "loss", "value": 1.0, "timestamp": 1, "step": s}))
        .collect();
    refused(
        &post(
            &app,
            "runs/log-batch",
            json!({"run_id": id, "metrics": too_many}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "at most 1000 metrics, got 1001",
    );
    refused(
        &post(
            &app,
            "runs/log-parameter",
            json!({"run_id": id, "key": "width", "value": "256"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "cannot change",
    );
    refused(
        &post(&app, "runs/update", json!({"run_id": id, "status": "DONE"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "unknown run status 'DONE'",
    );
    refused(
        &post(
            &app,
            "runs/log-metric",
            json!({"run_id": "999", "key": "loss", "value": 1.0, "timestamp": 1}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        "run '999' not found",
    );
    refused(
        &post(
            &app,
            "runs/search",
            json!({"experiment_ids": [experiment_id], "filter": "params.width ~ 1"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "invalid filter",
    );

    refused(
        &post(
            &app,
            "runs/search",
            json!({"experiment_ids": vec!["0"; 1001]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "at most 1000 experiment ids",
    );

    // Finished: the run joins shapewise's runs with its final loss, tokens and FLOPs, and the
    // series points get their share of the tokens.
    let (status, info) = post(
        &app,
        "runs/update",
        json!({"run_id": id, "status": "FINISHED", "end_time": 1_700_000_060_000i64}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["run_info"]["status"], "FINISHED");
    assert_eq!(info["run_info"]["end_time"], 1_700_000_060_000i64);
    let (_, listed) = call(
        &app,
        "GET",
        "/api/v1/runs?parameterization=mup&width=128&tag=proxies",
        None,
    )
    .await;
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{listed}");
    let r = &runs[0];
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["name"], "p1");
    assert_eq!(r["depth"], 8);
    assert_eq!(r["params_non_embedding"], 1_500_000);
    assert_eq!(r["tokens"], 30_000_000);
    assert_eq!(r["flops"], 6.0 * 1.5e6 * 3e7);
    assert!(
        (r["final_val_loss"].as_f64().unwrap() - 3.5).abs() < 1e-12,
        "{r}"
    );
    let (_, series) = call(&app, "GET", &format!("/api/v1/runs/{id}/metrics"), None).await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 5);
    assert_eq!(points[4]["tokens"], 30_000_000);
    assert_eq!(points[0]["tokens"], 6_000_000);

    // Read back through MLflow: latest metric values, params, tags; search by them.
    let (_, got) = get(&app, &format!("runs/get?run_id={id}")).await;
    let data = &got["run"]["data"];
    assert_eq!(data["metrics"].as_array().unwrap().len(), 2, "{data}");
    assert!(
        data["params"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "optimizer", "value": "adamw"}))
    );
    assert!(
        data["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "mlflow.user", "value": "ada"}))
    );
    let (_, found) = post(
        &app,
        "runs/search",
        json!({"experiment_ids": [experiment_id], "filter": "attributes.status = 'FINISHED' and metrics.loss <= 3.5"}),
    )
    .await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 1, "{found}");

    // The run page shows what was logged beyond the columns.
    let response = app
        .clone()
        .oneshot(
            Request::get(format!("/runs/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        html.contains("params.optimizer") && html.contains("adamw"),
        "{html}"
    );
    assert!(
        html.contains("tags.mlflow.user") && html.contains("metrics.grad_norm"),
        "{html}"
    );

    // A run this server trained is not an MLflow run.
    let (_, local) = call(&app, "POST", "/api/v1/runs", Some(&json!({"parameterization": "sp", "width": 64, "depth": 2, "d_head": 32, "context": 16, "batch": 4, "tokens": 64,
        "data": {"kind": "builtin", "seed": 0, "vocab": 32}}).to_string())).await;
    let local_id = local["id"].as_i64().unwrap_or_else(|| panic!("{local}"));
    refused(
        &post(
            &app,
            "runs/set-tag",
            json!({"run_id": local_id.to_string(), "key": "k", "value": "v"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_PARAMETER_VALUE",
        "was not logged through the MLflow API",
    );
    refused(
        &get(&app, &format!("runs/get?run_id={local_id}")).await,
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        "not found",
    );
}
