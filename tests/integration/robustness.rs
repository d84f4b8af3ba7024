//! Robustness under load and failure: concurrent writes never answer 5xx, a run interrupted again
//! and again stops being retried, long metric series are read in bounded pieces, and a server
//! without workers only serves.

use crate::api::call;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use shapewise::jobs::Jobs;
use shapewise::param::Parameterization;
use shapewise::store::{
    ImportedRun, MAX_ATTEMPTS, MetricPoint, NewRun, Released, Store, StoredStatus,
};
use shapewise::web::{AppState, ServeConfig, ServerSettings, router, serve_on};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shapewise-robustness-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("test.db")
}

fn app_on(store: &Store) -> axum::Router {
    router(AppState::new(
        store.clone(),
        Jobs::new(store.clone()),
        ServerSettings::default(),
    ))
}

/// An imported run with no metrics yet.
fn imported(name: &str) -> ImportedRun {
    ImportedRun {
        name: Some(name.into()),
        parameterization: "mup".into(),
        alpha: None,
        width: Some(256),
        depth: Some(4),
        lr: Some(1e-3),
        params: 3_000_000,
        tokens: 60_000_000,
        flops: 1.08e15,
        flops_dense: None,
        final_loss: 3.0,
        dataset: None,
        tags: Vec::new(),
        metrics: Vec::new(),
        extra: json!({}),
        created_by: None,
    }
}

/// Metric points at steps `start..start + count`: a smooth training loss (`spike(step)` where
/// given) and a validation point every 100 steps.
fn points(start: i64, count: i64, spike: impl Fn(i64) -> Option<f64>) -> Vec<MetricPoint> {
    (start..start + count)
        .map(|step| MetricPoint {
            step,
            tokens: step * 2048,
            flops: step as f64 * 1e12,
            train_loss: Some(spike(step).unwrap_or(3.0 + 2.0 / (1.0 + step as f64).sqrt())),
            val_loss: (step % 100 == 0).then_some(3.5 + (step / 100 % 7) as f64 * 0.01),
            lr: Some(1e-3),
            wall_secs: Some(step as f64 * 0.01),
        })
        .collect()
}

async fn get_raw(app: &axum::Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn steps(body: &Value) -> Vec<i64> {
    body["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points: {body}"))
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect()
}

/// Tag edits (a read, then writes, in one transaction) while metric batches are appended without
/// pause, through this store and through a second pool on the same file (as another process
/// would write): every edit answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_edits_during_metric_ingest_all_succeed() {
    const TASKS: usize = 8;
    const EDITS: usize = 200;
    let db = temp_db("tags");
    let store = Store::open(&db).await.unwrap();
    let other = Store::open(&db).await.unwrap();
    let app = app_on(&store);
    let id = store.import_runs(&[imported("busy")]).await.unwrap()[0];

    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let ingest = |writer: Store, offset: i64| {
        let (stop, batches) = (stop.clone(), batches.clone());
        tokio::spawn(async move {
            let mut step = offset;
            while !stop.load(Ordering::Relaxed) {
                writer
                    .append_metrics(id, &points(step, 500, |_| None))
                    .await
                    .expect("appending metrics failed");
                batches.fetch_add(1, Ordering::Relaxed);
                step += 500;
            }
        })
    };
    let ingesters = [ingest(store.clone(), 0), ingest(other.clone(), 1 << 40)];

    let started = Instant::now();
    let editors: Vec<_> = (0..TASKS)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..EDITS {
                    let body = json!({
                        "add": [format!("t{task}-{}", i % 5)],
                        "remove": [format!("t{task}-{}", (i + 2) % 5)],
                    })
                    .to_string();
                    let (status, answer) = call(
                        &app,
                        "POST",
                        &format!("/api/v1/runs/{id}/tags"),
                        Some(&body),
                    )
                    .await;
                    if status != StatusCode::OK {
                        failures.push(format!("{status}: {answer}"));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for editor in editors {
        failures.extend(editor.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for ingester in ingesters {
        ingester.await.unwrap();
    }
    let batches = batches.load(Ordering::Relaxed);
    eprintln!(
        "{} tag edits in {elapsed:.1?} during {batches} metric batches of 500: {} failed",
        TASKS * EDITS,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} tag edits failed, e.g. {}",
        failures.len(),
        TASKS * EDITS,
        failures[0]
    );
    assert!(batches >= 2, "the ingest did not overlap the edits");

    // The last edit of each task added tag (EDITS - 1) % 5 and removed (EDITS + 1) % 5; the tags
    // are the net effect of every edit in order.
    let (status, run) = call(&app, "GET", &format!("/api/v1/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Vec<&str> = run["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for task in 0..TASKS {
        let mut expected = std::collections::BTreeSet::new();
        for i in 0..EDITS {
            expected.insert(i % 5);
            expected.remove(&((i + 2) % 5));
        }
        for tag in 0..5 {
            let name = format!("t{task}-{tag}");
            assert_eq!(
                tags.contains(&name.as_str()),
                expected.contains(&tag),
                "{name} in {tags:?}"
            );
        }
    }
}

/// A job interrupted on each of its `MAX_ATTEMPTS` claims ends failed, and the queue moves on.
#[tokio::test]
async fn a_job_interrupted_three_times_fails_and_the_queue_moves_on() {
    assert_eq!(MAX_ATTEMPTS, 3);
    let store = Store::open(&temp_db("crash-loop")).await.unwrap();
    let new_run = |name: &str| NewRun {
        name: Some(name.into()),
        tags: Vec::new(),
        config: crate::tiny_run(Parameterization::CompleteP),
        sweep_id: None,
        created_by: None,
    };
    let crasher = store.create_run(&new_run("crasher")).await.unwrap();
    let next = store.create_run(&new_run("next")).await.unwrap();

    for attempt in 1..=MAX_ATTEMPTS {
        let job = store.claim_job().await.unwrap().expect("a queued job");
        assert_eq!(job.run_id, crasher, "attempt {attempt}");
        assert_eq!(
            store.run(crasher).await.unwrap().status,
            StoredStatus::Running
        );
        // The server dies mid-run; the next start releases the job.
        let requeued = store.requeue_interrupted().await.unwrap();
        let run = store.run(crasher).await.unwrap();
        if attempt < MAX_ATTEMPTS {
            assert_eq!(requeued, 1, "attempt {attempt}");
            assert_eq!(run.status, StoredStatus::Interrupted);
            assert_eq!(run.error, None);
        } else {
            assert_eq!(requeued, 0);
            assert_eq!(run.status, StoredStatus::Failed);
            assert_eq!(
                run.error.as_deref(),
                Some("interrupted 3 times (server or worker crash); not retried again")
            );
            assert!(run.finished_at.is_some());
        }
    }
    // Another start changes nothing more.
    assert_eq!(store.requeue_interrupted().await.unwrap(), 0);
    assert_eq!(
        store.run(crasher).await.unwrap().status,
        StoredStatus::Failed
    );

    let job = store.claim_job().await.unwrap().expect("the next job");
    assert_eq!(job.run_id, next);
    // The counting is one function: a release of a running job re-queues it, a second does
    // nothing (it is no longer running).
    assert_eq!(
        store
            .release_interrupted_job(job.job_id, "worker lease lapsed")
            .await
            .unwrap(),
        Some(Released::Requeued)
    );
    assert_eq!(
        store
            .release_interrupted_job(job.job_id, "worker lease lapsed")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.run(next).await.unwrap().status,
        StoredStatus::Interrupted
    );
    assert_eq!(store.claim_job().await.unwrap().unwrap().run_id, next);
    assert!(store.claim_job().await.unwrap().is_none());
}

/// A run of 200,000 points: downsampled reads keep the ends and a loss spike, pages walk the
/// whole series once, and the run page draws a bounded chart.
#[tokio::test]
async fn long_series_are_read_in_bounded_pieces() {
    const LEN: i64 = 200_000;
    let store = Store::open(&temp_db("long")).await.unwrap();
    let app = app_on(&store);
    let id = store.import_runs(&[imported("long")]).await.unwrap()[0];
    // A spike of 1,000 steps in the middle: longer than the sampling interval of `points=100`.
    let spike = |step: i64| (120_000..121_000).contains(&step).then_some(9.0);
    for start in (0..LEN).step_by(10_000) {
        store
            .append_metrics(id, &points(start, 10_000, spike))
            .await
            .unwrap();
    }
    let uri = |query: &str| format!("/api/v1/runs/{id}/metrics?{query}");

    let (status, sampled) = call(&app, "GET", &uri("points=100"), None).await;
    assert_eq!(status, StatusCode::OK, "{sampled}");
    let kept = steps(&sampled);
    assert!(
        kept.len() <= 100 && kept.len() >= 50,
        "{} points",
        kept.len()
    );
    assert_eq!((kept[0], kept[kept.len() - 1]), (0, LEN - 1));
    assert!(kept.windows(2).all(|w| w[0] < w[1]));
    assert!(
        sampled["points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["train_loss"] == 9.0),
        "the spike was lost"
    );
    assert_eq!(sampled["next_after_step"], Value::Null);
    let (_, two) = call(&app, "GET", &uri("points=2"), None).await;
    assert_eq!(steps(&two), [0, LEN - 1]);

    // Pages of 50,000 walk the series once, in order.
    let mut seen = Vec::with_capacity(LEN as usize);
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let query = match after {
            Some(step) => format!("limit=50000&after_step={step}"),
            None => "limit=50000".into(),
        };
        let (status, page) = call(&app, "GET", &uri(&query), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(steps(&page));
        match page["next_after_step"].as_i64() {
            Some(step) => {
                assert_eq!(Some(&step), seen.last());
                after = Some(step);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 4);
    assert!(
        seen.iter().copied().eq(0..LEN),
        "not every step once in order"
    );

    // Without parameters: the first page of 10,000.
    let (_, first) = call(&app, "GET", &uri(""), None).await;
    assert_eq!(steps(&first).len(), 10_000);
    assert_eq!(first["next_after_step"], 9_999);
    let (_, tail) = call(&app, "GET", &uri("after_step=199990"), None).await;
    assert_eq!(steps(&tail), (199_991..LEN).collect::<Vec<_>>());
    assert_eq!(tail["next_after_step"], Value::Null);

    for conflicting in ["points=100&limit=10", "points=10&after_step=5"] {
        let (status, body) = call(&app, "GET", &uri(conflicting), None).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{conflicting}: {body}"
        );
    }
    for bad in [
        "limit=0",
        "limit=100001",
        "after_step=later",
        "points=1",
        "offset=10",
    ] {
        let (status, body) = call(&app, "GET", &uri(bad), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = call(&app, "GET", "/api/v1/runs/999999/metrics?points=10", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", "/api/v1/runs/999999/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The run page and its chart draw at most 1,000 training and 1,000 validation points.
    let overview = store.metrics_overview(id, 1000).await.unwrap();
    assert!(overview.len() <= 2000, "{}", overview.len());
    let val_points = overview.iter().filter(|p| p.val_loss.is_some()).count();
    // About two per bucket of the validation sample, and a few training samples that have one.
    assert!(val_points >= 500, "{val_points} validation points");
    assert!(overview.iter().any(|p| p.train_loss == Some(9.0)));
    for page in [format!("/runs/{id}"), format!("/runs/{id}/chart.svg")] {
        let (status, body) = get_raw(&app, &page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(body.len() < 1_000_000, "{page}: {} bytes", body.len());
    }
}

/// On a short series the downsampled read is exact: a one-step spike survives.
#[tokio::test]
async fn short_series_downsample_exactly() {
    let store = Store::open(&temp_db("short")).await.unwrap();
    let id = store.import_runs(&[imported("short")]).await.unwrap()[0];
    store
        .append_metrics(id, &points(0, 1000, |s| (s == 500).then_some(9.0)))
        .await
        .unwrap();
    let kept = store.metrics_downsampled(id, 20).await.unwrap();
    assert!(kept.len() <= 20);
    assert_eq!((kept[0].step, kept[kept.len() - 1].step), (0, 999));
    assert!(kept.iter().any(|p| p.step == 500), "the spike was lost");
    // At most `target` rows come back whole.
    assert_eq!(
        store.metrics_downsampled(id, 1000).await.unwrap().len(),
        1000
    );
    // A re-written step replaces its row.
    store
        .append_metrics(id, &points(500, 1, |_| Some(1.0)))
        .await
        .unwrap();
    let page = store.metrics_page(id, Some(499), 2).await.unwrap();
    assert_eq!(page.points[0].step, 500);
    assert_eq!(page.points[0].train_loss, Some(1.0));
    assert_eq!(page.next_after_step, Some(501));
    let empty = store.import_runs(&[imported("empty")]).await.unwrap()[0];
    assert!(
        store
            .metrics_downsampled(empty, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.metrics_overview(empty, 10).await.unwrap().is_empty());
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
    let payload = response.split_once("\r\n\r\n").map_or("", |(_, p)| p);
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// `--workers 0`: the server serves, but runs and diagnostics stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_workers_leaves_runs_queued() {
    let db = temp_db("no-workers");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        addr,
        db: db.clone(),
        workers: 0,
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
    let request = move |method: &'static str, path: String, body: Option<Value>| {
        tokio::task::spawn_blocking(move || http(addr, method, &path, body))
    };
    let run = json!({
        "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32, "context": 16,
        "batch": 4, "tokens": 640, "data": {"kind": "builtin", "seed": 0, "vocab": 32}
    });
    let (status, created) = request("POST", "/api/v1/runs".into(), Some(run))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let diagnostic = json!({"kind": "linearization", "options": {
        "parameterizations": ["completep"], "depths": [1, 2], "width": 32, "d_head": 16,
        "seeds": 1, "batch": 2, "context": 16, "lr": 0.01
    }});
    let (status, queued) = request("POST", "/api/v1/diagnostics".into(), Some(diagnostic))
        .await
        .unwrap();
    assert_eq!(status, 202, "{queued}");
    let diagnostic_id = queued["id"].as_i64().unwrap();

    // Longer than a worker's idle poll (2 s): a worker would have claimed both by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, run) = request("GET", format!("/api/v1/runs/{id}"), None)
        .await
        .unwrap();
    assert_eq!(run["status"], "queued", "{run}");
    let (_, diagnostic) = request("GET", format!("/api/v1/diagnostics/{diagnostic_id}"), None)
        .await
        .unwrap();
    assert_eq!(diagnostic["status"], "queued", "{diagnostic}");
    let _ = stop.send(());
    server.await.unwrap();
}
