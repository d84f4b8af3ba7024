//! The REST API: through the router without a socket, and end to end against a real server on
//! port 0 that trains real (tiny) runs.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::jobs::Jobs;
use shapewise::store::Store;
use shapewise::web::{AppState, ServeConfig, ServerSettings, router, serve_on};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shapewise-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("test.db")
}

/// A tiny run that trains in about a second.
fn tiny_run_body(tokens: u64) -> Value {
    json!({
        "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32, "context": 16,
        "batch": 4, "tokens": tokens, "base_width": 64, "base_depth": 2, "lr": 0.01,
        "data": {"kind": "builtin", "seed": 0, "vocab": 32}, "name": "tiny", "tags": ["test"]
    })
}

pub(crate) async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(crate) async fn router_app(name: &str) -> (axum::Router, Store) {
    let store = Store::open(&temp_db(name)).await.unwrap();
    let jobs = Jobs::new(store.clone());
    (
        router(AppState::new(
            store.clone(),
            jobs,
            ServerSettings::default(),
        )),
        store,
    )
}

#[tokio::test]
async fn health_and_plan_through_the_router() {
    let (app, _) = router_app("plan").await;
    let request = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );
    let (status, plan) = call(
        &app,
        "GET",
        "/api/v1/plan?param=completep&width=1024&depth=32&lr=0.01&eps=0.001",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plan["residual_multiplier"], 1.0 / 16.0);
    assert_eq!(plan["groups"]["hidden_weights"]["lr"], 0.0025);
    assert_eq!(plan["groups"]["hidden_weights"]["eps"], 0.001 / 64.0);
}

/// Malformed requests: each answers 4xx with `{"error", "detail"}`, and nothing is stored.
#[tokio::test]
async fn malformed_requests_are_4xx_and_change_nothing() {
    let (app, store) = router_app("malformed").await;
    let mut huge = tiny_run_body(64);
    huge["name"] = json!("x".repeat(9 * 1024 * 1024));
    let huge = huge.to_string();
    let with = |key: &str, value: Value| {
        let mut body = tiny_run_body(64);
        body[key] = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = tiny_run_body(64);
        body.as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("POST", "/api/v1/runs".into(), Some("{not json".into())),
        ("POST", "/api/v1/runs".into(), Some("[1, 2]".into())),
        ("POST", "/api/v1/runs".into(), Some(String::new())),
        ("POST", "/api/v1/runs".into(), Some(without("width"))),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(without("parameterization")),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("parameterization", json!("mupp"))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("width", json!(100))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("width", json!(-64))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("width", json!("wide"))),
        ),
        ("POST", "/api/v1/runs".into(), Some(with("depth", json!(0)))),
        ("POST", "/api/v1/runs".into(), Some(with("lr", json!(-1.0)))),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("tokens", json!(0))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("parameterization", json!("alpha"))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("alpha", json!(2.0))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("widht", json!(64))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with(
                "data",
                json!({"kind": "text", "path": "/no/such/file"}),
            )),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("data", json!({"kind": "floppy"}))),
        ),
        ("POST", "/api/v1/runs".into(), Some(with("vocab", json!(8)))),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("device", json!("tpu"))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("tags", json!("not-a-list"))),
        ),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("tags", json!([""]))),
        ),
        ("POST", "/api/v1/runs".into(), Some(with("name", json!(42)))),
        (
            "POST",
            "/api/v1/runs".into(),
            Some(with("warmup_fraction", json!(1.5))),
        ),
        ("POST", "/api/v1/runs".into(), Some(huge)),
        ("GET", "/api/v1/runs?widht=64".into(), None),
        ("GET", "/api/v1/runs?width=wide".into(), None),
        ("GET", "/api/v1/runs?sort=config".into(), None),
        ("GET", "/api/v1/runs?limit=0".into(), None),
        ("GET", "/api/v1/runs?offset=-1".into(), None),
        ("GET", "/api/v1/runs/abc".into(), None),
        ("GET", "/api/v1/runs/999".into(), None),
        ("GET", "/api/v1/runs/999/metrics".into(), None),
        ("GET", "/api/v1/runs/1/metrics?points=1".into(), None),
        ("POST", "/api/v1/runs/999/cancel".into(), None),
        ("DELETE", "/api/v1/runs/999".into(), None),
        (
            "POST",
            "/api/v1/runs/999/tags".into(),
            Some(r#"{"add": ["a"]}"#.into()),
        ),
        (
            "GET",
            "/api/v1/plan?param=sp&width=100&depth=2".into(),
            None,
        ),
        ("GET", "/api/v1/plan?param=sp&width=64".into(), None),
        (
            "GET",
            "/api/v1/plan?param=alpha&alpha=0.1&width=64&depth=2".into(),
            None,
        ),
        (
            "GET",
            "/api/v1/plan?param=sp&width=64&depth=2&colour=red".into(),
            None,
        ),
    ];
    assert!(cases.len() >= 30);
    for (method, uri, body) in &cases {
        let (status, answer) = call(&app, method, uri, body.as_deref()).await;
        let shown = body.as_deref().map(|b| &b[..b.len().min(80)]);
        assert!(
            status.is_client_error(),
            "{method} {uri} {shown:?}: {status} {answer}"
        );
        assert!(
            answer["error"].is_string() && answer["detail"].is_string(),
            "{method} {uri}: {answer}"
        );
    }
    let (runs, total) = store.runs(&Default::default()).await.unwrap();
    assert_eq!(
        (runs.len(), total),
        (0, 0),
        "a bad request stored something"
    );
}

/// A real server on port 0 with a database file; stopped by dropping or `stop`.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(db: &std::path::Path) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = ServeConfig {
            addr,
            db: db.to_path_buf(),
            workers: 1,
            ..ServeConfig::default()
        };
        let handle = tokio::spawn(async move {
            serve_on(&config, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    /// Stops serving and aborts the workers mid-run, as a killed process would leave things.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.handle).await;
    }

    /// A real HTTP/1.1 request on a fresh connection; returns status and JSON body.
    async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (addr, method, path) = (self.addr, method.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || http(addr, &method, &path, body))
            .await
            .unwrap()
    }

    async fn wait_for(&self, id: i64, done: impl Fn(&Value) -> bool, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (_, run) = self
                .request("GET", &format!("/api/v1/runs/{id}"), None)
                .await;
            if done(&run) {
                return run;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting on run {id}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status: u16 = response[9..12].parse().unwrap();
    let (head, payload) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Reads server-sent events of a run until `wanted` appears in an event line, or times out.
fn read_events_until(addr: SocketAddr, id: i64, wanted: &str, limit: Duration) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(
        stream,
        "GET /api/v1/runs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let found = line.contains(wanted);
        lines.push(line);
        if found || started.elapsed() > limit {
            break;
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_from_queued_to_succeeded_with_live_metrics() {
    let db = temp_db("lifecycle");
    let server = TestServer::start(&db).await;
    let (status, health) = server.request("GET", "/healthz", None).await;
    assert_eq!((status, health), (200, Value::Null));

    let (status, run) = server
        .request("POST", "/api/v1/runs", Some(tiny_run_body(64 * 40)))
        .await;
    assert_eq!(status, 201, "{run}");
    // The idle worker may claim the run before the response is written.
    assert!(
        run["status"] == "queued" || run["status"] == "running",
        "{run}"
    );
    let id = run["id"].as_i64().unwrap();

    let addr = server.addr;
    let events = tokio::task::spawn_blocking(move || {
        read_events_until(
            addr,
            id,
            "\"status\":\"succeeded\"",
            Duration::from_secs(60),
        )
    });
    let run = server
        .wait_for(id, |r| r["status"] == "succeeded", Duration::from_secs(60))
        .await;
    assert!(run["final_val_loss"].as_f64().unwrap() < (32f64).ln());
    assert_eq!(run["tokens"], 64 * 40);
    assert_eq!(run["tags"], json!(["test"]));
    let events = events.await.unwrap();
    assert!(events.iter().any(|l| l == "event: metrics"), "{events:?}");
    assert!(events.iter().any(|l| l.contains("succeeded")), "{events:?}");

    let (_, metrics) = server
        .request("GET", &format!("/api/v1/runs/{id}/metrics"), None)
        .await;
    let points = metrics["points"].as_array().unwrap();
    assert_eq!(points.last().unwrap()["step"], 40);
    let (_, sampled) = server
        .request("GET", &format!("/api/v1/runs/{id}/metrics?points=6"), None)
        .await;
    assert!(sampled["points"].as_array().unwrap().len() <= 6);

    let (_, listed) = server
        .request(
            "GET",
            "/api/v1/runs?status=succeeded&tag=test&width=in:32,64",
            None,
        )
        .await;
    assert_eq!(listed["total"], 1);
    let (_, none) = server.request("GET", "/api/v1/runs?depth=gt:2", None).await;
    assert_eq!(none["total"], 0);

    let (status, tagged) = server
        .request(
            "POST",
            &format!("/api/v1/runs/{id}/tags"),
            Some(json!({"add": ["best"], "remove": ["test"]})),
        )
        .await;
    assert_eq!((status, tagged["tags"].clone()), (200, json!(["best"])));
    let (status, _) = server
        .request("DELETE", &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .request("GET", &format!("/api/v1/runs/{id}"), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_a_queued_one() {
    let db = temp_db("cancel");
    let server = TestServer::start(&db).await;
    let (_, long) = server
        .request("POST", "/api/v1/runs", Some(tiny_run_body(64 * 100_000)))
        .await;
    let (_, queued) = server
        .request("POST", "/api/v1/runs", Some(tiny_run_body(64)))
        .await;
    let (long, queued) = (long["id"].as_i64().unwrap(), queued["id"].as_i64().unwrap());
    server
        .wait_for(long, |r| r["status"] == "running", Duration::from_secs(30))
        .await;
    let (_, waiting) = server
        .request("GET", &format!("/api/v1/runs/{queued}"), None)
        .await;
    assert_eq!(waiting["queue_position"], 0);

    let (status, answer) = server
        .request("POST", &format!("/api/v1/runs/{queued}/cancel"), None)
        .await;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!("cancelled"))
    );
    let (status, _) = server
        .request("POST", &format!("/api/v1/runs/{long}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    let run = server
        .wait_for(
            long,
            |r| r["status"] == "cancelled",
            Duration::from_secs(10),
        )
        .await;
    assert!(run["finished_at"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_requeues_interrupted_runs_and_reruns_them_from_step_0() {
    let db = temp_db("restart");
    let server = TestServer::start(&db).await;
    let (_, run) = server
        .request("POST", "/api/v1/runs", Some(tiny_run_body(64 * 400)))
        .await;
    let id = run["id"].as_i64().unwrap();
    // Wait until some metrics are committed, then stop the server mid-run.
    let started = Instant::now();
    let committed = loop {
        let (_, metrics) = server
            .request("GET", &format!("/api/v1/runs/{id}/metrics"), None)
            .await;
        let points = metrics["points"].as_array().cloned().unwrap_or_default();
        if points.len() >= 3 {
            break points;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no metrics committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.stop().await;

    let store = Store::open(&db).await.unwrap();
    assert_eq!(store.run(id).await.unwrap().status.name(), "running");
    drop(store);

    let server = TestServer::start(&db).await;
    let (_, after) = server
        .request("GET", &format!("/api/v1/runs/{id}"), None)
        .await;
    assert!(
        after["status"] == "interrupted" || after["status"] == "running",
        "after restart: {after}"
    );
    server
        .wait_for(id, |r| r["status"] == "succeeded", Duration::from_secs(120))
        .await;
    // The second attempt replaced the first's points; training is deterministic, so the
    // points committed before the restart come back with the same losses.
    let (_, metrics) = server
        .request("GET", &format!("/api/v1/runs/{id}/metrics"), None)
        .await;
    let kept = metrics["points"].as_array().unwrap();
    for point in &committed {
        let same = kept
            .iter()
            .find(|p| p["step"] == point["step"])
            .expect("a committed point is missing from the re-run");
        assert_eq!(
            same["train_loss"], point["train_loss"],
            "deterministic re-run changed a loss"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn imported_runs_take_flops_or_tokens_and_accept_streamed_metrics() {
    let (app, store) = router_app("import").await;
    let body = json!({"runs": [
        {"parameterization": "mup", "params": 1_000_000, "flops": 6.0e12, "final_loss": 3.2, "width": 256,
         "depth": 4, "tags": ["external"], "framework": "pytorch"},
        {"parameterization": "completep", "params": 2_000_000, "tokens": 4.0e7, "final_loss": 3.0,
         "metrics": [{"step": 10, "tokens": 1.0e6, "train_loss": 4.0}, {"step": 20, "flops": 2.4e13, "val_loss": 3.5}]}
    ]});
    let (status, answer) = call(&app, "POST", "/api/v1/runs/import", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let ids: Vec<i64> = serde_json::from_value(answer["ids"].clone()).unwrap();
    let first = store.run(ids[0]).await.unwrap();
    assert_eq!(first.tokens, Some(1_000_000), "tokens = flops / (6 params)");
    assert_eq!(first.config["framework"], "pytorch");
    assert_eq!(first.status.name(), "succeeded");
    let second = store.run(ids[1]).await.unwrap();
    assert_eq!(second.flops, Some(6.0 * 2.0e6 * 4.0e7));
    let series = store.metrics(ids[1]).await.unwrap();
    assert_eq!(
        series[1].tokens, 2_000_000,
        "tokens = flops / (6 params) per point"
    );

    let append = json!({"points": [{"step": 30, "tokens": 3.0e6, "train_loss": 3.4}]});
    let uri = format!("/api/v1/runs/{}/metrics", ids[1]);
    let (status, answer) = call(&app, "POST", &uri, Some(&append.to_string())).await;
    assert_eq!(
        (status, answer["appended"].clone()),
        (StatusCode::OK, json!(1))
    );
    assert_eq!(store.metrics(ids[1]).await.unwrap().len(), 3);

    let bad_batches = [
        json!({"runs": []}),
        json!({"runs": [{"parameterization": "mup", "flops": 1.0e12, "final_loss": 3.0}]}),
        json!({"runs": [{"parameterization": "mup", "params": 10, "final_loss": 3.0}]}),
        json!({"runs": [{"parameterization": "mup", "params": 10, "tokens": 100, "final_loss": -1.0}]}),
        json!({"runs": [{"parameterization": "xyz", "params": 10, "tokens": 100, "final_loss": 3.0}]}),
        json!({"runs": [{"parameterization": "mup", "params": 10, "tokens": 100, "final_loss": 3.0},
                        {"parameterization": "mup", "params": 10, "tokens": 100, "final_loss": 3.0, "metrics": [{"step": 1}]}]}),
        json!({"rows": []}),
    ];
    for bad in bad_batches {
        let (status, answer) =
            call(&app, "POST", "/api/v1/runs/import", Some(&bad.to_string())).await;
        assert!(status.is_client_error(), "{bad}: {status} {answer}");
    }
    // Counts as floats (pandas, CSV): whole numbers are rounded; the rest is refused with the
    // field's path.
    let refused_counts = [
        (
            json!({"runs": [{"parameterization": "mup", "params": 12.5, "tokens": 100, "final_loss": 3.0}]}),
            "run 0: 'params': a count must be a whole number, got 12.5",
        ),
        (
            json!({"runs": [{"parameterization": "mup", "params": -4.0, "tokens": 100, "final_loss": 3.0}]}),
            "run 0: 'params': a count must not be negative",
        ),
        (
            json!({"runs": [{"parameterization": "mup", "params": 10, "tokens": 100, "final_loss": 3.0,
                             "metrics": [{"step": 1, "tokens": 10, "train_loss": 3.0},
                                         {"step": 2.5, "tokens": 20, "train_loss": 3.0}]}]}),
            "run 0: 'metrics[1].step': a count must be a whole number, got 2.5",
        ),
    ];
    for (bad, message) in refused_counts {
        let (status, answer) =
            call(&app, "POST", "/api/v1/runs/import", Some(&bad.to_string())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(message), "{detail}");
    }
    let (_, total) = store.runs(&Default::default()).await.unwrap();
    assert_eq!(total, 2, "a refused batch stored nothing");
    let floats = json!({"runs": [{"parameterization": "mup", "params": 6795600349.289497,
        "tokens": 1.0e9, "final_loss": 3.0, "width": 128.0, "depth": 4.0,
        "metrics": [{"step": 10.0, "tokens": 1.0e6, "train_loss": 3.5}]}]});
    let (status, answer) = call(
        &app,
        "POST",
        "/api/v1/runs/import",
        Some(&floats.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let run = store.run(answer["ids"][0].as_i64().unwrap()).await.unwrap();
    assert_eq!(
        (run.params_non_embedding, run.width, run.depth),
        (Some(6_795_600_349), Some(128), Some(4))
    );
    assert_eq!(store.metrics(run.id).await.unwrap()[0].step, 10);
    let (_, total) = store.runs(&Default::default()).await.unwrap();
    assert_eq!(total, 3);
    let (status, _) = call(
        &app,
        "POST",
        &uri,
        Some(r#"{"points": [{"step": 1, "train_loss": 3.0}]}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a point needs tokens or flops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_queues_its_grid_reports_progress_and_exports_csv() {
    let db = temp_db("sweep");
    let server = TestServer::start(&db).await;
    let sweep = json!({
        "name": "depth transfer", "parameterizations": ["mup", "completep"], "widths": [64],
        "depths": [1, 2], "lrs": [0.01], "tags": ["sweep-test"],
        "config": {"d_head": 32, "context": 16, "batch": 4, "tokens": 256, "base_width": 64, "base_depth": 1,
                   "data": {"kind": "builtin", "seed": 0, "vocab": 32}}
    });
    let (status, created) = server.request("POST", "/api/v1/sweeps", Some(sweep)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["run_ids"].as_array().unwrap().len(), 4);
    let id = created["sweep"]["id"].as_i64().unwrap();
    let started = Instant::now();
    let progress = loop {
        let (_, sweep) = server
            .request("GET", &format!("/api/v1/sweeps/{id}"), None)
            .await;
        if sweep["progress"]["finished"] == 4 {
            break sweep;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sweep stalled: {}",
            sweep["progress"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress["progress"]["succeeded"], 4);
    assert_eq!(progress["progress"]["fraction_done"], 1.0);

    let csv = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || raw_get(addr, "/api/v1/runs.csv?tag=sweep-test&sort=id")
    })
    .await
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,name,source,status,parameterization"));
    assert_eq!(lines.len(), 5);
    assert!(lines[1].contains(",succeeded,mup,"));
    let run_id = created["run_ids"][0].as_i64().unwrap();
    let metrics = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || raw_get(addr, &format!("/api/v1/runs/{run_id}/metrics.csv"))
    })
    .await
    .unwrap();
    assert!(metrics.starts_with("run_id,step,tokens,flops,train_loss"));
    assert!(metrics.lines().count() > 2);

    let bad = json!({"name": "too big", "parameterizations": ["mup"], "widths": [64, 128], "depths": (1..=30).collect::<Vec<_>>(),
                     "lrs": (1..=20).map(|i| i as f64 * 1e-3).collect::<Vec<_>>()});
    let (status, answer) = server.request("POST", "/api/v1/sweeps", Some(bad)).await;
    assert_eq!(status, 422, "{answer}");
    // One list of LRs per parameterization: every one named, no other.
    for (lrs, refusal) in [
        (
            json!({"mup": [0.01]}),
            "no non-empty list for the parameterization completep",
        ),
        (
            json!({"mup": [0.01], "completep": []}),
            "no non-empty list for the parameterization completep",
        ),
        (
            json!({"mup": [0.01], "completep": [0.02], "sp": [0.1]}),
            "'lrs' names 'sp'",
        ),
        (
            json!(7),
            "'lrs': a list of learning rates, or an object of one list per",
        ),
        (
            json!(
                (0..1001)
                    .map(|i| 1e-3 + i as f64 * 1e-6)
                    .collect::<Vec<_>>()
            ),
            "more than 1000 runs",
        ),
    ] {
        let body = json!({"name": "per-parameterization", "parameterizations": ["mup", "completep"],
                          "widths": [64], "depths": [1], "lrs": lrs});
        let (status, answer) = server.request("POST", "/api/v1/sweeps", Some(body)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(refusal),
            "{answer}"
        );
    }
    let bad_point = json!({"name": "bad", "parameterizations": ["mup"], "widths": [100], "depths": [2], "lrs": [0.01]});
    let (status, answer) = server
        .request("POST", "/api/v1/sweeps", Some(bad_point))
        .await;
    assert_eq!(status, 422);
    assert!(
        answer["detail"].as_str().unwrap().contains("d_head"),
        "{answer}"
    );
    server.stop().await;
}

fn raw_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_asks_a_server_and_prints_its_plan() {
    let db = temp_db("recommend-cli");
    let server = TestServer::start(&db).await;
    // Planted runs: L = 1.8 + 400 C^-0.15 at five scales, two shapes each.
    let runs: Vec<Value> = [1e15, 1e16, 1e17, 1e18, 1e19]
        .iter()
        .flat_map(|&flops: &f64| {
            [(512, 8), (1024, 16)].map(|(width, depth)| {
                json!({"parameterization": "completep", "width": width, "depth": depth,
                       "params": 1_000_000, "tokens": 20_000_000, "flops": flops,
                       "final_loss": 1.8 + 400.0 * flops.powf(-0.15), "tags": ["cli"]})
            })
        })
        .collect();
    let (status, answer) = server
        .request("POST", "/api/v1/runs/import", Some(json!({ "runs": runs })))
        .await;
    assert_eq!(status, 201, "{answer}");
    let url = format!("http://{}", server.addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shapewise"))
            .args([
                "recommend",
                "--server",
                &url,
                "--tags",
                "cli",
                "--budget-flops",
                "1e20",
            ])
            .args([
                "--vocab",
                "256",
                "--context",
                "128",
                "--resamples",
                "20",
                "--top",
                "2",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("completep (fit on 10 runs"), "{out}");
    assert!(out.contains("budget 10x the largest run"), "{out}");
    assert!(out.contains("rank  width x depth"), "{out}");
    server.stop().await;
}
