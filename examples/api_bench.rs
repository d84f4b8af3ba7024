//! Server benchmark: metric ingest through the HTTP API, latency of the runs list on a database
//! holding 10,000 runs and 1,000,000 metric points, and reads of one long run (1,000,000 more
//! points): downsampled, paged, and its page.
//!
//! ```sh
//! cargo run --release --example api_bench                    # 10000 runs x 100 points, long run of 1000000
//! cargo run --release --example api_bench -- 2000 50 200000  # smaller database
//! ```
//!
//! Requests go over real HTTP/1.1 on loopback (a fresh connection per request, as a simple client
//! would do), to a server started in-process on port 0 with a database in a temp folder.

mod support;

use serde_json::{Value, json};
use shapewise::store::{ImportedRun, MetricPoint, Store};
use std::time::Instant;
use support::request;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn points(start: i64, count: i64) -> Vec<MetricPoint> {
    (start..start + count)
        .map(|step| MetricPoint {
            step,
            tokens: step * 2048,
            flops: step as f64 * 1.0e12,
            train_loss: Some(5.0 / (1.0 + step as f64).ln_1p()),
            val_loss: (step % 10 == 0).then_some(4.0),
            lr: Some(1e-3),
            wall_secs: Some(step as f64 * 0.1),
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(10_000);
    let points_per_run = args.get(1).copied().unwrap_or(100);
    let long_points = args.get(2).copied().unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("shapewise-api-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("bench.db");

    // Seed the database through the store (the import path the API uses).
    let store = Store::open(&db).await.expect("open store");
    let seeding = Instant::now();
    let params = ["sp", "mup", "depth-mup", "completep"];
    for batch_start in (0..runs).step_by(500) {
        let batch: Vec<ImportedRun> = (batch_start..(batch_start + 500).min(runs))
            .map(|i| ImportedRun {
                name: Some(format!("seed-{i}")),
                parameterization: params[i as usize % 4].to_string(),
                alpha: None,
                width: Some(64 << (i % 5)),
                depth: Some(2 << (i % 4)),
                lr: Some(1e-3 * (1 + i % 7) as f64),
                params: 1_000_000 + i,
                tokens: 20_000_000,
                flops: 1.2e14,
                flops_dense: None,
                final_loss: 3.0 + (i % 100) as f64 * 0.01,
                dataset: Some("bench".into()),
                tags: vec![format!("group-{}", i % 10)],
                metrics: points(1, points_per_run),
                extra: json!({}),
                created_by: None,
            })
            .collect();
        store.import_runs(&batch).await.expect("seed");
    }
    let seed_secs = seeding.elapsed().as_secs_f64();
    println!(
        "seeded {runs} runs and {} metric points in {seed_secs:.1} s ({:.0} points/s through the store)",
        runs * points_per_run,
        (runs * points_per_run) as f64 / seed_secs
    );
    // One long run, appended in batches as a training run or a streaming import writes it.
    let seeding = Instant::now();
    let long_run = ImportedRun {
        name: Some("long".into()),
        parameterization: "completep".into(),
        alpha: None,
        width: Some(512),
        depth: Some(16),
        lr: Some(1e-3),
        params: 50_000_000,
        tokens: long_points * 2048,
        flops: 6.0 * 5.0e7 * (long_points * 2048) as f64,
        flops_dense: None,
        final_loss: 2.9,
        dataset: Some("bench".into()),
        tags: Vec::new(),
        metrics: Vec::new(),
        extra: json!({}),
        created_by: None,
    };
    let long_id = store.import_runs(&[long_run]).await.expect("long run")[0];
    for start in (0..long_points).step_by(10_000) {
        let count = 10_000.min(long_points - start);
        store
            .append_metrics(long_id, &points(start, count))
            .await
            .expect("append");
    }
    println!(
        "long run {long_id}: {long_points} points appended in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    drop(store);

    let server = support::Server::start(db.clone(), 1).await;
    let addr = server.addr;

    let results = tokio::task::spawn_blocking(move || {
        // Ingest: batches of 1000 points appended to one imported run.
        let batch_size: i64 = 1000;
        let requests: i64 = 50;
        let mut ingest = Vec::new();
        for r in 0..requests {
            let body = json!({"points": (0..batch_size).map(|i| {
                let step = 1_000_000 + r * batch_size + i;
                json!({"step": step, "tokens": step * 2048, "train_loss": 3.0, "wall_secs": 1.0})
            }).collect::<Vec<Value>>()})
            .to_string();
            let started = Instant::now();
            let (status, response) = request(addr, "POST", "/api/v1/runs/1/metrics", &body);
            assert_eq!(status, 200, "ingest failed: {response}");
            ingest.push(started.elapsed().as_secs_f64());
        }
        let total: f64 = ingest.iter().sum();
        println!(
            "ingest: {} points in {requests} requests of {batch_size}: {:.0} points/s",
            requests * batch_size,
            (requests * batch_size) as f64 / total
        );

        for (label, path) in [
            ("runs list, first page of 100", "/api/v1/runs"),
            (
                "runs list, filtered and sorted",
                "/api/v1/runs?parameterization=completep&width=in:128,256&sort=-final_val_loss&limit=50",
            ),
            ("runs list, tag filter", "/api/v1/runs?tag=group-3&limit=100&offset=200"),
            ("one run's metrics (100 points)", "/api/v1/runs/42/metrics"),
        ] {
            let mut latencies: Vec<f64> = (0..200)
                .map(|_| {
                    let started = Instant::now();
                    let (status, response) = request(addr, "GET", path, "");
                    assert_eq!(status, 200, "{path} failed: {response}");
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            latencies.sort_by(f64::total_cmp);
            println!(
                "{label}: p50 {:.2} ms, p99 {:.2} ms (200 requests)",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
        }

        // Reads of the long run: latency and response size.
        for (label, path, rounds) in [
            (
                "long run, downsampled to 100 points",
                format!("/api/v1/runs/{long_id}/metrics?points=100"),
                20,
            ),
            (
                "long run, downsampled to 1000 points",
                format!("/api/v1/runs/{long_id}/metrics?points=1000"),
                20,
            ),
            (
                "long run, default page (10000 points)",
                format!("/api/v1/runs/{long_id}/metrics?after_step=500000"),
                20,
            ),
            ("long run, its page", format!("/runs/{long_id}"), 10),
        ] {
            let mut bytes = 0;
            let mut latencies: Vec<f64> = (0..rounds)
                .map(|_| {
                    let started = Instant::now();
                    let (status, response) = request(addr, "GET", &path, "");
                    assert_eq!(status, 200, "{path} failed");
                    bytes = response.len();
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            latencies.sort_by(f64::total_cmp);
            println!(
                "{label}: p50 {:.1} ms, max {:.1} ms ({rounds} requests), {bytes} bytes",
                percentile(&latencies, 0.5),
                latencies[latencies.len() - 1],
            );
        }
    })
    .await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    results.expect("benchmark");
}
