//! Integration tests of the diagnostics feature: tiny coordinate and linearization checks queued
//! through the API and run by the real diagnostics worker, refused requests, the pages, and the
//! start-up recovery of diagnostics a stopped server left unfinished.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::jobs::{DiagnosticError, DiagnosticKind, Jobs};
use shapewise::store::{DiagnosticStatus, Store, StoreError};
use shapewise::web::{AppState, ServeConfig, ServerSettings, router, serve_on};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shapewise-diagnostics-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("test.db")
}

/// The app with its workers running (the diagnostics worker among them).
struct App {
    router: axum::Router,
    jobs: Jobs,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    async fn start(name: &str) -> App {
        let store = Store::open(&temp_db(name)).await.unwrap();
        let jobs = Jobs::new(store.clone());
        let workers = jobs.spawn_workers(1);
        App {
            router: router(AppState::new(
                store,
                jobs.clone(),
                ServerSettings::default(),
            )),
            jobs,
            workers,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, String, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            location,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn json(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        let (status, _, text) = self.send(request).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn page(&self, uri: &str) -> (StatusCode, String) {
        let (status, _, body) = self
            .send(Request::get(uri).body(Body::empty()).unwrap())
            .await;
        (status, body)
    }

    async fn post_form(
        &self,
        uri: &str,
        form: &str,
        origin: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(header::HOST, "localhost");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        self.send(request.body(Body::from(form.to_string())).unwrap())
            .await
    }

    /// Polls a diagnostic until it has ended.
    async fn wait(&self, id: i64, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, diagnostic) = self
                .json("GET", &format!("/api/v1/diagnostics/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{diagnostic}");
            if ["succeeded", "failed", "interrupted"]
                .contains(&diagnostic["status"].as_str().unwrap_or(""))
            {
                return diagnostic;
            }
            assert!(
                started.elapsed() < limit,
                "diagnostic {id} did not end: {diagnostic}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// Options of a linearization check small enough for a debug build: width 32, depths 1 and 4.
fn tiny_linearization() -> Value {
    json!({
        "parameterizations": ["depth-mup", "completep"], "depths": [1, 4], "width": 32,
        "d_head": 16, "seeds": 1, "batch": 2, "context": 16, "lr": 0.01
    })
}

#[tokio::test]
async fn a_linearization_check_runs_in_the_background_and_stores_its_result() {
    let app = App::start("linearization").await;
    let body = json!({"kind": "linearization", "options": tiny_linearization()}).to_string();
    let (status, queued) = app.json("POST", "/api/v1/diagnostics", Some(&body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["kind"], "linearization");
    assert!(["queued", "running"].contains(&queued["status"].as_str().unwrap()));
    // Every option is stored, the defaults filled in.
    assert_eq!(queued["options"]["depths"], json!([1, 4]));
    assert_eq!(queued["options"]["attention_scale"], "d_head");
    assert!(queued["result"].is_null() && queued["sweep_id"].is_null());
    let id = queued["id"].as_i64().unwrap();

    let done = app.wait(id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["progress"].is_null(), "no progress once it ended");
    let result = &done["result"];
    assert_eq!(result["finite_difference_step"], 1e-3);
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "two parameterizations x two depths");
    for row in rows {
        for key in ["distance", "attention_distance", "block_distance"] {
            let distance = row[key].as_f64().unwrap();
            assert!(distance > 0.0 && distance < 1.0, "{key}: {row}");
        }
        assert_eq!(row["block"], row["depth"].as_u64().unwrap() / 2);
        assert_eq!(row["distance_per_seed"].as_array().unwrap().len(), 1);
    }
    // The base depth is the smallest: at depth 1 both rules give the same model and step.
    let at = |p: &str, depth: u64| {
        rows.iter()
            .find(|r| r["parameterization"] == p && r["depth"] == depth)
            .unwrap()
    };
    assert_eq!(
        at("depth-mup", 1)["distance"],
        at("completep", 1)["distance"]
    );
    // depth-muP's block learning rate is m_L^-1/2 = 1/2 of CompleteP's at depth 4, and the
    // distance follows the size of the update.
    assert_eq!(
        at("depth-mup", 4)["hidden_lr"].as_f64().unwrap() * 2.0,
        at("completep", 4)["hidden_lr"].as_f64().unwrap()
    );
    assert!(
        at("depth-mup", 4)["distance"].as_f64() < at("completep", 4)["distance"].as_f64(),
        "{result}"
    );
    let slopes = result["slopes"].as_array().unwrap();
    assert_eq!(slopes.len(), 2);
    for key in ["slope", "attention_slope", "block_slope"] {
        assert!(slopes.iter().all(|s| s[key].is_f64()), "{key}: {result}");
    }

    let (status, list) = app.json("GET", "/api/v1/diagnostics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["diagnostics"][0]["id"], id);

    // The page shows the chart, the exponents and the expected behaviour.
    let (status, html) = app.page(&format!("/diagnostics/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "<svg role=\"img\" aria-label=\"Relative distance from linearization of the MLP branch",
        "Fitted exponent k of distance",
        "deep branches learn lazily",
        "data-final=\"true\"",
    ] {
        assert!(html.contains(text), "the page lacks '{text}'");
    }
}

#[tokio::test]
async fn a_depth_coordinate_check_stores_every_step_and_its_slopes() {
    let app = App::start("coord").await;
    let options = json!({
        "parameterizations": ["sp", "completep"], "depths": [1, 2, 4], "width": 32,
        "d_head": 16, "steps": 2, "seeds": 1, "batch": 2, "context": 8
    });
    let id = app
        .jobs
        .enqueue_diagnostic(DiagnosticKind::CoordDepth, &options, None)
        .await
        .unwrap();
    let done = app.wait(id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = &done["result"];
    assert_eq!(result["axis"], "depth");
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 3 * 2, "parameterizations x depths x steps");
    assert!(rows.iter().all(|r| r["residual"].as_f64().unwrap() > 0.0));
    // Slopes at step 1 and the last step for each parameterization. At initialisation SP's
    // residual grows with depth (L branches of weight 1 add up) and CompleteP's does not.
    let slope = |p: &str, step: u64| {
        result["slopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["parameterization"] == p && s["step"] == step)
            .and_then(|s| s["slope"].as_f64())
            .unwrap()
    };
    assert!(slope("sp", 1) > slope("completep", 1) + 0.2, "{result}");
    assert!(slope("sp", 2).is_finite());

    let (status, html) = app.page(&format!("/diagnostics/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "Mean absolute final residual stream versus depth at step 1",
        "at step 2",
        "Fitted exponent k of mean |final residual|",
        "flat afterwards",
    ] {
        assert!(html.contains(text), "the page lacks '{text}'");
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_store_nothing() {
    let app = App::start("refused").await;
    let cases: [(&str, StatusCode, &str); 10] = [
        ("{", StatusCode::BAD_REQUEST, "invalid JSON"),
        ("[1]", StatusCode::BAD_REQUEST, "JSON object"),
        (
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field 'kind'",
        ),
        (
            r#"{"kind": "coord-height"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant 'coord-height', expected one of 'coord-depth', 'coord-width', 'linearization'",
        ),
        (
            r#"{"kind": "linearization", "name": "x"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field 'name'",
        ),
        (
            r#"{"kind": "linearization", "options": 3}"#,
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            r#"{"kind": "coord-depth", "options": {"widths": [64]}}"#,
            StatusCode::BAD_REQUEST,
            "unknown option 'widths'",
        ),
        (
            r#"{"kind": "coord-width", "options": {"widths": [64, 100]}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "multiple of d_head",
        ),
        (
            r#"{"kind": "linearization", "options": {"lr": 0}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "lr must be a positive number",
        ),
        (
            r#"{"kind": "linearization", "options": {"depths": "deep"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "option 'depths': invalid type",
        ),
    ];
    for (body, expected, reason) in cases {
        let (status, error) = app.json("POST", "/api/v1/diagnostics", Some(body)).await;
        assert_eq!(status, expected, "{body}: {error}");
        let detail = error["detail"].as_str().unwrap_or("");
        assert!(detail.contains(reason), "{body}: {detail}");
    }
    let (_, list) = app.json("GET", "/api/v1/diagnostics", None).await;
    assert_eq!(list["diagnostics"], json!([]));
    let (status, _) = app.json("GET", "/api/v1/diagnostics/999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.json("GET", "/api/v1/diagnostics/abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A study that does not exist cannot own a diagnostic.
    let missing = app
        .jobs
        .enqueue_diagnostic(DiagnosticKind::Linearization, &Value::Null, Some(999))
        .await;
    assert!(matches!(
        missing,
        Err(DiagnosticError::Store(StoreError::SweepNotFound(999)))
    ));
}

#[tokio::test]
async fn the_pages_list_launch_and_show_diagnostics() {
    let app = App::start("pages").await;
    let (status, html) = app.page("/diagnostics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No diagnostics yet"));
    for kind in DiagnosticKind::ALL {
        assert!(
            html.contains(&format!("name=\"kind\" value=\"{}\"", kind.name())),
            "no form for {kind}"
        );
    }
    // The forms carry the defaults.
    assert!(html.contains("value=\"2, 4, 8, 16, 32\""));

    // A form from another site is refused; an invalid one comes back with the reason.
    let form = "kind=linearization&parameterizations=completep&depths=1%2C2&width=32&d_head=16\
                &seeds=1&batch=2&context=8&lr=0.01&attention_scale=d_head";
    let (status, _, _) = app
        .post_form("/diagnostics", form, Some("https://elsewhere.example"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, html) = app
        .post_form("/diagnostics", &form.replace("width=32", "width=40"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("The diagnostic was not launched"), "{html}");
    assert!(
        html.contains("value=\"40\""),
        "the form keeps what was typed"
    );
    let (_, list) = app.json("GET", "/api/v1/diagnostics", None).await;
    assert_eq!(list["diagnostics"], json!([]));

    let (status, location, _) = app
        .post_form("/diagnostics", form, Some("http://localhost"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let id: i64 = location
        .strip_prefix("/diagnostics/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("redirected to '{location}'"));
    let (status, html) = app.page(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("Diagnostic #{id} Distance from linearization")));
    assert!(
        html.contains("<code>depths</code></dt><dd>1, 2</dd>"),
        "{html}"
    );
    app.wait(id, Duration::from_secs(120)).await;
    let (_, html) = app.page("/diagnostics").await;
    assert!(html.contains(&format!("href=\"/diagnostics/{id}\"")));
    assert!(html.contains("status-succeeded"));
    let (status, _) = app.page("/diagnostics/12345").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unfinished_diagnostics_are_interrupted_at_the_next_start() {
    let db = temp_db("interrupted");
    let (sweep, running, failed, waiting) = {
        let store = Store::open(&db).await.unwrap();
        let (sweep, _) = store.create_sweep("study", &json!({}), &[]).await.unwrap();
        let options = json!({"seeds": 1});
        let running = store
            .create_diagnostic("linearization", &options, Some(sweep))
            .await
            .unwrap();
        let failed = store
            .create_diagnostic("coord-depth", &options, None)
            .await
            .unwrap();
        let waiting = store
            .create_diagnostic("coord-width", &options, None)
            .await
            .unwrap();
        // The oldest is claimed first; the second one fails before the server stops, the third
        // is still queued.
        assert_eq!(store.claim_diagnostic().await.unwrap().unwrap().id, running);
        let claimed = store.claim_diagnostic().await.unwrap().unwrap();
        assert_eq!((claimed.id, claimed.kind.as_str()), (failed, "coord-depth"));
        store.finish_diagnostic(failed, Err("boom")).await.unwrap();
        (sweep, running, failed, waiting)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServeConfig {
        addr: listener.local_addr().unwrap(),
        db: db.clone(),
        workers: 1,
        ..ServeConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_on(&config, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let store = Store::open(&db).await.unwrap();
    let status = |id| {
        let store = store.clone();
        async move { store.diagnostic(id).await.unwrap().unwrap().status }
    };
    let started = Instant::now();
    while status(running).await != DiagnosticStatus::Interrupted {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not interrupted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    let _ = server.await;
    assert_eq!(
        status(failed).await,
        DiagnosticStatus::Failed,
        "ended before"
    );
    assert_eq!(status(waiting).await, DiagnosticStatus::Interrupted);
    let newest = store.diagnostics(10).await.unwrap();
    let ids: Vec<i64> = newest.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![waiting, failed, running], "newest first");
    assert!(newest.iter().all(|d| d.status.is_final()));
    let of_study = store.diagnostics_of_sweep(sweep).await.unwrap();
    assert_eq!(of_study.len(), 1);
    assert_eq!(of_study[0].id, running);
    assert!(of_study[0].finished_at.is_some());
    let failed = store.diagnostic(failed).await.unwrap().unwrap();
    assert_eq!(failed.error.as_deref(), Some("boom"));
}

#[test]
fn the_linearize_command_prints_the_table_and_refuses_bad_options() {
    let out_dir = temp_db("cli").with_file_name("out");
    let run = |width: &str| {
        let mut args = vec![
            "linearize",
            "--params",
            "depth-mup,completep",
            "--depths",
            "1,2",
            "--width",
            width,
            "--d-head",
            "16",
            "--seeds",
            "1",
            "--batch",
            "2",
            "--context",
            "8",
            "--json",
            "--out",
        ];
        let out = out_dir.to_str().unwrap().to_string();
        args.push(&out);
        std::process::Command::new(env!("CARGO_BIN_EXE_shapewise"))
            .args(&args)
            .output()
            .expect("the shapewise binary runs")
    };
    let ok = run("32");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let table: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(table["rows"].as_array().unwrap().len(), 4);
    assert!(out_dir.join("linearize.csv").exists() && out_dir.join("linearize.json").exists());
    let refused = run("40");
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("multiple of d_head"), "{message}");
}
