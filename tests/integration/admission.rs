//! Admission control through the router: data confined to the server's data roots (refusals
//! that reveal nothing about the file system and never block), bounds on every size, and the
//! peak-memory limit for runs, sweeps and diagnostics.

use super::api::call;
use axum::http::StatusCode;
use serde_json::{Value, json};
use shapewise::jobs::Jobs;
use shapewise::store::Store;
use shapewise::web::{AppState, ServerSettings, router};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The memory limit of these tests' servers: tiny runs fit, anything sizeable does not.
const LIMIT: u64 = 2 << 30;

/// A scratch folder with a data root inside it (`root/`) and a file outside it
/// (`outside/secret.txt`).
struct Scratch {
    dir: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("shapewise-admission-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside").join("secret.txt"), text(4000)).unwrap();
        let root = std::fs::canonicalize(dir.join("root")).unwrap();
        Scratch { dir, root }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ASCII text of `len` bytes.
fn text(len: usize) -> String {
    "the quick brown fox jumps over the lazy dog\n"
        .chars()
        .cycle()
        .take(len)
        .collect()
}

async fn app(scratch: &Scratch) -> axum::Router {
    let store = Store::open(&scratch.dir.join("test.db")).await.unwrap();
    let jobs = Jobs::new(store.clone());
    router(AppState::new(
        store,
        jobs,
        ServerSettings {
            data_roots: vec![scratch.root.clone()],
            max_run_memory_bytes: LIMIT,
            ..ServerSettings::default()
        },
    ))
}

/// A tiny run on `data`.
fn run_on(data: Value) -> Value {
    json!({
        "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32, "context": 16,
        "batch": 4, "tokens": 640, "base_width": 64, "base_depth": 2, "lr": 0.01, "data": data
    })
}

fn text_run(path: &str) -> Value {
    run_on(json!({"kind": "text", "path": path}))
}

/// `call`, failing the test if the answer takes more than 10 s (a blocked open would hang).
async fn prompt_call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let body = body.to_string();
    tokio::time::timeout(Duration::from_secs(10), call(app, method, uri, Some(&body)))
        .await
        .unwrap_or_else(|_| panic!("{method} {uri} did not answer within 10 s: {body}"))
}

fn refusal(path: &str) -> String {
    format!(
        "data path '{path}' is not a readable data file or folder under the server's data roots"
    )
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test]
async fn data_outside_the_roots_or_not_regular_is_refused_alike() {
    let scratch = Scratch::new("refused");
    let app = app(&scratch).await;
    let root = &scratch.root;
    let outside = scratch.dir.join("outside").join("secret.txt");
    std::os::unix::fs::symlink(&outside, root.join("link.txt")).unwrap();
    mkfifo(&root.join("pipe"));
    std::fs::create_dir(root.join("with-pipe")).unwrap();
    std::fs::write(root.join("with-pipe").join("a.txt"), text(4000)).unwrap();
    mkfifo(&root.join("with-pipe").join("b.txt"));
    std::fs::create_dir(root.join("with-link")).unwrap();
    std::fs::write(root.join("with-link").join("a.txt"), text(4000)).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("with-link").join("b.txt")).unwrap();
    let outside_dir = scratch.dir.join("outside");
    std::fs::write(outside_dir.join("train.bin"), [0u8; 4000]).unwrap();
    std::fs::write(outside_dir.join("val.bin"), [0u8; 4000]).unwrap();
    let outside_text = outside.display().to_string();
    let outside_dir_text = outside_dir.display().to_string();
    let traversal = "../outside/secret.txt";
    let cases: Vec<(&str, Value)> = vec![
        ("/etc/passwd", text_run("/etc/passwd")),
        (
            "../../../../../../etc/passwd",
            text_run("../../../../../../etc/passwd"),
        ),
        (traversal, text_run(traversal)),
        (&outside_text, text_run(&outside_text)),
        ("link.txt", text_run("link.txt")),
        ("/proc/self/environ", text_run("/proc/self/environ")),
        ("/dev/zero", text_run("/dev/zero")),
        ("pipe", text_run("pipe")),
        ("with-pipe", text_run("with-pipe")),
        ("with-link", text_run("with-link")),
        ("missing.txt", text_run("missing.txt")),
        ("/", text_run("/")),
        (
            &outside_dir_text,
            run_on(json!({"kind": "nano_gpt", "dir": outside_dir_text, "vocab": 256})),
        ),
    ];
    for (path, body) in &cases {
        let (status, answer) = prompt_call(&app, "POST", "/api/v1/runs", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        assert_eq!(answer["detail"], refusal(path), "{path}");
    }
    // Sweeps and studies refuse the same data, and nothing was created.
    let sweep = json!({
        "name": "s", "parameterizations": ["completep"], "widths": [64], "depths": [2],
        "lrs": [0.01], "config": {"d_head": 32, "context": 16, "batch": 4, "tokens": 640,
        "data": {"kind": "text", "path": "/etc/passwd"}}
    });
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/sweeps", &sweep).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .ends_with(&refusal("/etc/passwd")),
        "{answer}"
    );
    let (_, runs) = call(&app, "GET", "/api/v1/runs", None).await;
    assert_eq!(runs["total"], 0, "{runs}");
}

#[tokio::test]
async fn data_under_the_roots_is_accepted_and_resolved() {
    let scratch = Scratch::new("accepted");
    let app = app(&scratch).await;
    let root = &scratch.root;
    std::fs::write(root.join("corpus.txt"), text(4000)).unwrap();
    std::fs::create_dir_all(root.join("folder").join("sub")).unwrap();
    std::fs::write(root.join("folder").join("a.txt"), text(3000)).unwrap();
    std::fs::write(root.join("folder").join("sub").join("b.txt"), text(1000)).unwrap();
    std::os::unix::fs::symlink(root.join("corpus.txt"), root.join("folder").join("c.txt")).unwrap();
    let absolute = root.join("corpus.txt").display().to_string();
    for (given, resolved) in [
        ("corpus.txt", root.join("corpus.txt")),
        (absolute.as_str(), root.join("corpus.txt")),
        ("folder", root.join("folder")),
        ("folder/../corpus.txt", root.join("corpus.txt")),
    ] {
        let (status, run) = prompt_call(&app, "POST", "/api/v1/runs", &text_run(given)).await;
        assert_eq!(status, StatusCode::CREATED, "{given}: {run}");
        assert_eq!(
            run["config"]["data"]["path"],
            resolved.display().to_string(),
            "{given}"
        );
    }
    // A readable file too short for the context: the message names the path as given.
    std::fs::write(root.join("short.txt"), text(50)).unwrap();
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/runs", &text_run("short.txt")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("short.txt has too few tokens"),
        "{detail}"
    );
    assert!(!detail.contains(&root.display().to_string()), "{detail}");
}

#[tokio::test]
async fn sizes_beyond_the_bounds_are_refused_naming_the_bound() {
    let scratch = Scratch::new("bounds");
    let app = app(&scratch).await;
    let with = |key: &str, value: Value| {
        let mut body = run_on(json!({"kind": "builtin", "seed": 0, "vocab": 64}));
        body[key] = value;
        body
    };
    let cases = [
        (
            with("width", json!(65536)),
            "'width' must be an integer from 1 to 16384, got 65536",
        ),
        (
            with("width", json!(1u64 << 40)),
            "'width' must be an integer from 1 to 16384",
        ),
        (
            with("depth", json!(1u64 << 63)),
            "'depth' must be an integer from 1 to 1024",
        ),
        (
            with("batch", json!(10_000_000)),
            "'batch' must be an integer from 1 to 65536, got 10000000",
        ),
        (
            with("context", json!(100_000)),
            "'context' must be an integer from 1 to 65536",
        ),
        (
            with("vocab", json!(1u64 << 30)),
            "'vocab' must be an integer from 1 to 1048576",
        ),
        (
            with("val_sequences", json!(100_000)),
            "'val_sequences' must be an integer from 1 to 65536",
        ),
        (
            with("base_width", json!(1u64 << 20)),
            "'base_width' must be an integer from 1 to 16384",
        ),
        (
            with("base_depth", json!(5000)),
            "'base_depth' must be an integer from 1 to 1024",
        ),
        (
            with("tokens", json!(1e14 as u64)),
            "'tokens' must be an integer from 1 to 10000000000000",
        ),
        (
            with("log_every", json!(0)),
            "'log_every' must be an integer from 1 to",
        ),
    ];
    for (body, expected) in &cases {
        for uri in ["/api/v1/runs", "/api/v1/runs/estimate"] {
            let (status, answer) = prompt_call(&app, "POST", uri, body).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{uri} {body}: {answer}"
            );
            let detail = answer["detail"].as_str().unwrap();
            assert!(
                detail.contains(expected),
                "{uri}: {detail} lacks {expected}"
            );
        }
    }
    let (_, runs) = call(&app, "GET", "/api/v1/runs", None).await;
    assert_eq!(runs["total"], 0, "{runs}");
}

#[tokio::test]
async fn runs_above_the_memory_limit_are_refused_naming_estimate_and_limit() {
    let scratch = Scratch::new("memory");
    let app = app(&scratch).await;
    let builtin = json!({"kind": "builtin", "seed": 0, "vocab": 64});
    // Within every bound, far above 2 GiB: 4096 x 32 has 6.4e9 parameters.
    let mut wide = run_on(builtin.clone());
    wide["width"] = json!(4096);
    wide["depth"] = json!(32);
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/runs", &wide).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.starts_with("this run needs about "), "{detail}");
    assert!(detail.contains("at peak (parameters "), "{detail}");
    assert!(detail.contains("activations "), "{detail}");
    assert!(
        detail.ends_with("above the server's limit of 2.0 GiB (--max-run-memory-gib)"),
        "{detail}"
    );
    // Width 64 with a batch within the bound but activations far above the limit.
    let mut batch = run_on(builtin.clone());
    batch["batch"] = json!(65536);
    batch["context"] = json!(1024);
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/runs", &batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("above the server's limit")
    );

    // The estimate endpoint answers both, and says which fit.
    let (status, small) =
        prompt_call(&app, "POST", "/api/v1/runs/estimate", &run_on(builtin)).await;
    assert_eq!(status, StatusCode::OK, "{small}");
    assert_eq!(small["fits"], true);
    assert_eq!(small["limit_bytes"], LIMIT);
    let bytes = small["memory_bytes"].as_u64().unwrap();
    assert!(bytes > 100 << 20 && bytes < 1 << 30, "{small}");
    assert!(small["memory_gib"].as_f64().unwrap() > 0.0);
    assert_eq!(
        small["params_non_embedding"],
        2 * (12 * 64 * 64 + 13 * 64) + 2 * 64
    );
    assert!(small["flops"].as_f64().unwrap() > 0.0);
    assert!(
        small["detail"]
            .as_str()
            .unwrap()
            .contains("within the server's limit")
    );
    let (status, large) = prompt_call(&app, "POST", "/api/v1/runs/estimate", &wide).await;
    assert_eq!(status, StatusCode::OK, "{large}");
    assert_eq!(large["fits"], false);
    assert!(large["memory_bytes"].as_u64().unwrap() > LIMIT);
    assert_eq!(large["detail"], detail);

    let (_, runs) = call(&app, "GET", "/api/v1/runs", None).await;
    assert_eq!(runs["total"], 0, "{runs}");
}

#[tokio::test]
async fn a_sweep_with_one_point_above_the_limit_creates_nothing() {
    let scratch = Scratch::new("sweep");
    let app = app(&scratch).await;
    let sweep = json!({
        "name": "one too big", "parameterizations": ["completep"], "widths": [64, 4096],
        "depths": [2, 32], "lrs": [0.01], "config": {"d_head": 32, "context": 16, "batch": 4,
        "tokens": 640, "data": {"kind": "builtin", "seed": 0, "vocab": 64}}
    });
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/sweeps", &sweep).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("grid point completep 4096x2 lr 0.01 seed 0: this run needs about "),
        "{detail}"
    );
    let mut bounded = sweep.clone();
    bounded["widths"] = json!([64, 1u64 << 40]);
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/sweeps", &bounded).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("must be an integer from 1 to 16384"),
        "{answer}"
    );
    let (_, runs) = call(&app, "GET", "/api/v1/runs", None).await;
    assert_eq!(runs["total"], 0, "{runs}");
}

#[tokio::test]
async fn diagnostics_with_huge_models_are_refused() {
    let scratch = Scratch::new("diagnostics");
    let app = app(&scratch).await;
    // Within the coordinate check's own bounds, but the widest model needs far more than 2 GiB.
    let wide = json!({"kind": "coord-width", "options": {
        "parameterizations": ["mup"], "widths": [64, 2048], "depth": 64, "batch": 256,
        "context": 1024, "seeds": 1, "steps": 1
    }});
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/diagnostics", &wide).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("its largest model (2048 x 64, batch 256, context 1024) needs about "),
        "{detail}"
    );
    assert!(detail.ends_with("(--max-run-memory-gib)"), "{detail}");
    let deep = json!({"kind": "linearization", "options": {
        "parameterizations": ["completep"], "depths": [2, 256], "width": 2048, "batch": 256,
        "context": 1024, "seeds": 1
    }});
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/diagnostics", &deep).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let huge = json!({"kind": "coord-width", "options": {"widths": [64, 1u64 << 40]}});
    let (status, _) = prompt_call(&app, "POST", "/api/v1/diagnostics", &huge).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let many = json!({"kind": "coord-depth", "options": {
        "parameterizations": ["mup"], "depths": (1..=100).collect::<Vec<u64>>(), "seeds": 1
    }});
    let (status, answer) = prompt_call(&app, "POST", "/api/v1/diagnostics", &many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("at most 64"),
        "{answer}"
    );
    let (_, listed) = call(&app, "GET", "/api/v1/diagnostics", None).await;
    assert_eq!(listed["diagnostics"], json!([]), "{listed}");
}

#[tokio::test]
async fn the_new_run_form_shows_the_estimate_without_javascript() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let scratch = Scratch::new("form");
    let app = app(&scratch).await;
    let request = Request::builder()
        .uri("/runs/new")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8(bytes.to_vec()).unwrap();
    let at = html
        .find(r#"id="run-estimate""#)
        .expect("an estimate element");
    let element = &html[at..at + 400.min(html.len() - at)];
    assert!(element.contains(r#"aria-live="polite""#), "{element}");
    assert!(element.contains(" at peak (parameters "), "{element}");
    assert!(element.contains("s limit of 2.0 GiB</output>"), "{element}");
}

#[tokio::test]
async fn studies_train_on_the_teams_data_under_the_roots_only() {
    let scratch = Scratch::new("study-data");
    let app = app(&scratch).await;
    std::fs::write(scratch.root.join("corpus.txt"), text(200_000)).unwrap();
    let study = |data: Value| {
        json!({
            "kind": "compute-efficiency", "size": "small",
            "settings": {"params": [12500], "depths": [2], "data": data},
        })
    };
    let (status, created) = prompt_call(
        &app,
        "POST",
        "/api/v1/studies",
        &study(json!({"kind": "text", "path": "corpus.txt"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["study"]["id"].as_i64().unwrap();
    let (_, sweep) = prompt_call(&app, "GET", &format!("/api/v1/sweeps/{id}"), &json!(null)).await;
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{sweep}");
    for run in runs {
        assert_eq!(
            run["config"]["data"],
            json!({"kind": "text", "path": scratch.root.join("corpus.txt").display().to_string()})
        );
    }
    let (status, refused) = prompt_call(
        &app,
        "POST",
        "/api/v1/studies",
        &study(json!({"kind": "text", "path": "../outside/secret.txt"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");

    // With a tokenizer, every run of the study takes its vocabulary.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer.json"),
        scratch.root.join("tokenizer.json"),
    )
    .unwrap();
    let data = json!({"kind": "text", "path": "corpus.txt", "tokenizer": "tokenizer.json"});
    let (status, created) = prompt_call(&app, "POST", "/api/v1/studies", &study(data)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["study"]["id"].as_i64().unwrap();
    let (_, sweep) = prompt_call(&app, "GET", &format!("/api/v1/sweeps/{id}"), &json!(null)).await;
    for run in sweep["runs"].as_array().unwrap() {
        assert_eq!(run["config"]["vocab"], 320, "{run}");
        assert_eq!(run["vocab"], 320, "{run}");
    }
}

#[tokio::test]
async fn tokenized_text_runs_take_the_tokenizers_vocab_and_train() {
    let scratch = Scratch::new("tokenizer");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in ["corpus.txt", "tokenizer.json"] {
        std::fs::copy(data.join(name), scratch.root.join(name)).unwrap();
    }
    std::fs::write(scratch.root.join("broken.json"), r#"{"model": {}}"#).unwrap();
    std::fs::write(scratch.dir.join("outside").join("tokenizer.json"), "{}").unwrap();
    let store = Store::open(&scratch.dir.join("test.db")).await.unwrap();
    let jobs = Jobs::new(store.clone());
    let workers = jobs.spawn_workers(1);
    let settings = ServerSettings {
        data_roots: vec![scratch.root.clone()],
        max_run_memory_bytes: LIMIT,
        ..ServerSettings::default()
    };
    let app = router(AppState::new(store, jobs, settings));
    let tokenized = |tokenizer: &str| {
        run_on(json!({"kind": "text", "path": "corpus.txt", "tokenizer": tokenizer}))
    };

    for (tokenizer, needle) in [
        (
            "../outside/tokenizer.json",
            refusal("../outside/tokenizer.json"),
        ),
        ("missing.json", refusal("missing.json")),
        (
            "broken.json",
            "broken.json is not a usable Hugging Face tokenizer.json".to_string(),
        ),
    ] {
        let (status, body) = prompt_call(&app, "POST", "/api/v1/runs", &tokenized(tokenizer)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&needle), "{detail}");
        assert!(
            !detail.contains(&*scratch.root.to_string_lossy()),
            "{detail}"
        );
    }

    let (status, run) =
        prompt_call(&app, "POST", "/api/v1/runs", &tokenized("tokenizer.json")).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["vocab"], 320, "{run}");
    assert_eq!(run["config"]["vocab"], 320, "{run}");
    assert_eq!(
        run["config"]["data"]["tokenizer"],
        scratch.root.join("tokenizer.json").display().to_string()
    );
    let started = std::time::Instant::now();
    let done = loop {
        let (_, run) = prompt_call(&app, "GET", &format!("/api/v1/runs/{id}"), &json!(null)).await;
        if !["queued", "running"].contains(&run["status"].as_str().unwrap()) {
            break run;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    // A model that only guesses uniformly scores ln 320 = 5.77 nats; the run learned something.
    let loss = done["final_train_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss < 320f64.ln(), "{done}");
    for worker in workers {
        worker.abort();
    }
}
