//! Answer benchmark: how long the answers built from 1,000 finished runs take end to end over
//! HTTP, each with 200 bootstrap resamples: a compute-efficiency study's page (its analysis),
//! the analysis page of the same runs, and a plan from them.
//!
//! ```sh
//! cargo run --release --example answer_bench            # 1000 runs, 5 rounds
//! cargo run --release --example answer_bench -- 400 3   # 400 runs, 3 rounds
//! ```
//!
//! The runs are a study's, finished through the job queue with results from a planted law
//! (`L = (E + A C^-b) (1 + k (ln r - ln r*)^2)`, CompleteP's `A` lower so that it saves about
//! 20% of the FLOPs, 0.3% noise): the benchmark times the store, the fits, the charts and the
//! pages, not training. Requests go over real HTTP/1.1 on loopback to a server started in
//! process on port 0, with no workers.

mod support;

use shapewise::flops::FlopBreakdown;
use shapewise::param::Parameterization;
use shapewise::rng::SplitMix64;
use shapewise::store::{NewRun, Store};
use shapewise::train::{RunConfig, RunStatus, RunSummary};
use std::time::Instant;
use support::request;

/// The planted final loss of a shape at compute `c` under `parameterization`.
fn planted_loss(parameterization: Parameterization, c: f64, width: usize, depth: usize) -> f64 {
    let (e, b, k, best_ratio) = (2.2, 0.12, 0.02, 40.0);
    // A CompleteP curve reaches a loss with 0.8 times muP's compute: A scaled by 0.8^b.
    let a = match parameterization {
        Parameterization::CompleteP => 40.0 * 0.8f64.powf(b),
        _ => 40.0,
    };
    let ratio = width as f64 / depth as f64;
    (e + a * c.powf(-b)) * (1.0 + k * (ratio.ln() - f64::ln(best_ratio)).powi(2))
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = args.first().copied().unwrap_or(1000).max(40);
    let rounds = args.get(1).copied().unwrap_or(5).max(1);
    let dir = std::env::temp_dir().join(format!("shapewise-answer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("bench.db");

    // A study of `runs` runs: 2 parameterizations x 20 compute scales x shapes per scale.
    let store = Store::open(&db).await.expect("open store");
    let seeding = Instant::now();
    let per_scale = runs / 40;
    let mut configs = Vec::new();
    for scale in 0..20 {
        let params = 2e4 * 1.5f64.powi(scale);
        for shape in 0..per_scale {
            let depth = 1 + shape % 24;
            let width =
                (((params / (12.0 * depth as f64)).sqrt() / 16.0).round() as usize).max(1) * 16;
            for parameterization in [Parameterization::Mup, Parameterization::CompleteP] {
                configs.push(RunConfig {
                    parameterization,
                    width,
                    depth,
                    d_head: 16,
                    base_width: 64,
                    base_depth: 1,
                    tokens: None,
                    tokens_per_param: 20.0,
                    ..RunConfig::default()
                });
            }
        }
    }
    let new_runs: Vec<NewRun> = configs
        .iter()
        .map(|config| NewRun {
            name: None,
            tags: vec!["compute-efficiency".into()],
            config: config.clone(),
            sweep_id: None,
            created_by: None,
        })
        .collect();
    let spec = serde_json::json!({"kind": "compute-efficiency", "size": "custom", "settings": {}});
    let (study, _) = store
        .create_sweep_of_kind("compute-efficiency", "bench study", &spec, &new_runs)
        .await
        .expect("study");
    let mut noise = SplitMix64::new(7);
    while let Some(job) = store.claim_job().await.expect("claim") {
        let config = &job.config;
        let params = shapewise::flops::params_non_embedding(config.width, config.depth, true);
        let tokens = (20 * params).max(1);
        let flops = FlopBreakdown::for_tokens(config.width, config.depth, 128, 256, true, tokens);
        let loss = planted_loss(config.parameterization, flops.total(), config.width, config.depth)
            // Uniform noise with a standard deviation of 0.3%.
            * (1.0 + 0.003 * 3f64.sqrt() * (2.0 * noise.next_f64() - 1.0));
        let summary = RunSummary {
            status: RunStatus::Succeeded,
            final_train_loss: loss,
            final_val_loss: Some(loss),
            steps: tokens.div_ceil(2048),
            tokens,
            flops: flops.total(),
            flops_breakdown: flops,
            params_non_embedding: params,
            tokens_per_sec: 10_000.0,
            wall_secs: tokens as f64 / 10_000.0,
            entropy_floor: None,
        };
        store.finish_job(&job, Ok(&summary)).await.expect("finish");
    }
    println!(
        "seeded a study of {} finished runs in {:.1} s",
        configs.len(),
        seeding.elapsed().as_secs_f64()
    );
    drop(store);

    let server = support::Server::start(db.clone(), 0).await;
    let addr = server.addr;

    tokio::task::spawn_blocking(move || {
        let plan = format!(
            r#"{{"selection": {{"sweep_id": {study}}}, "budget_flops": 1e15, "vocab": 256, "context": 128, "d_head": 16, "resamples": 200}}"#
        );
        // Each answer with a text only a fitted answer holds.
        let answers = [
            ("study page (analysis, 200 resamples)", "GET", format!("/studies/{study}"), String::new(), "FLOP savings at matched loss"),
            ("analysis page (200 resamples)", "GET", format!("/analysis?sweep_id={study}"), String::new(), "FLOP savings at matched loss"),
            ("plan (200 resamples)", "POST", "/api/v1/plan/recommend".to_string(), plan, "predicted_loss"),
        ];
        for (label, method, path, body, fitted) in &answers {
            let (status, response) = request(addr, method, path, body);
            assert!(status == 200 && response.contains(fitted), "{path}: {status}");
            let mut seconds: Vec<f64> = (0..rounds)
                .map(|_| {
                    let started = Instant::now();
                    let (status, response) = request(addr, method, path, body);
                    assert_eq!(status, 200, "{path} failed: {}", &response[..response.len().min(2000)]);
                    started.elapsed().as_secs_f64()
                })
                .collect();
            seconds.sort_by(f64::total_cmp);
            println!(
                "{label}: median {:.3} s, slowest {:.3} s ({rounds} requests)",
                seconds[seconds.len() / 2],
                seconds[seconds.len() - 1]
            );
        }
    })
    .await
    .expect("bench");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
