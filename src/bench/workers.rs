//! Server headroom under many workers (`shapewise bench-workers`): simulated workers register,
//! claim a run each, then heartbeat with metric batches as fast as the server answers (or every
//! `interval`), all at once, over real HTTP. Reported: metric points stored per second and the
//! median and 99th percentile of the claim and heartbeat latencies.
//!
//! Each simulated worker needs a queued run to claim: the benchmark queues them first (tiny
//! configs on a server started with `--workers 0`, so nothing trains them).

use crate::client::{ApiClient, ClientError};
use crate::store::MetricPoint;
use crate::web::workers::{
    Claimed, FinishRun, Heartbeat, HeartbeatAnswer, RegisterWorker, Registered, WorkerDevice,
};
use serde::Serialize;
use serde_json::json;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct HeadroomOptions {
    pub server: String,
    pub token: Option<String>,
    /// Simulated workers, each on its own thread.
    pub workers: usize,
    /// Metric points per heartbeat.
    pub batch: usize,
    /// How long the heartbeats run.
    pub seconds: f64,
    /// Time between the starts of a worker's heartbeats, the workers' phases spread evenly over
    /// it (zero: each beats as soon as the last is answered).
    pub interval: Duration,
}

/// The measurement.
#[derive(Clone, Debug, Serialize)]
pub struct HeadroomResult {
    pub workers: usize,
    pub batch: usize,
    pub seconds: f64,
    /// Metric points the server accepted per second, over all workers.
    pub points_per_sec: f64,
    pub heartbeats: usize,
    pub heartbeat_p50_ms: f64,
    pub heartbeat_p99_ms: f64,
    pub claims: usize,
    pub claim_p50_ms: f64,
    pub claim_p99_ms: f64,
}

/// The `q` quantile (nearest rank) of a sample, in milliseconds.
fn quantile_ms(sorted_secs: &[f64], q: f64) -> f64 {
    if sorted_secs.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_secs.len() as f64).ceil() as usize).clamp(1, sorted_secs.len());
    sorted_secs[rank - 1] * 1e3
}

/// What one simulated worker measured: its claim latency, its heartbeat latencies (seconds)
/// and the points the server accepted.
type WorkerSample = (f64, Vec<f64>, usize);

/// When every simulated worker has claimed its run: the heartbeats start together then.
struct StartLine {
    barrier: Barrier,
    start: OnceLock<Instant>,
}

impl StartLine {
    fn wait(&self) -> Instant {
        self.barrier.wait();
        *self.start.get_or_init(Instant::now)
    }
}

/// One simulated worker: registers and claims; once all have claimed, heartbeats for
/// `options.seconds`.
fn simulate(
    client: &ApiClient,
    index: usize,
    options: &HeadroomOptions,
    line: &StartLine,
) -> Result<WorkerSample, ClientError> {
    let claimed = register_and_claim(client, index);
    // Every thread reaches the line, even one that failed, so no other waits for it forever.
    let start = line.wait();
    let (worker, claimed, claim_secs) = claimed?;
    let path = format!("/api/v1/workers/{}/heartbeat", worker.id);
    let until = start + Duration::from_secs_f64(options.seconds);
    let (mut latencies, mut points, mut step) = (Vec::new(), 0, 0i64);
    // Paced workers beat on a fixed schedule, each at its own phase of the interval (workers
    // that started together would otherwise beat in bursts).
    let phase = options
        .interval
        .mul_f64(index as f64 / options.workers as f64);
    let mut next = start + phase;
    while Instant::now() < until {
        if !options.interval.is_zero() {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += options.interval;
        }
        beat(
            client,
            &path,
            &claimed,
            options.batch,
            &mut step,
            &mut latencies,
        )?;
        points += options.batch;
    }
    // End the run, so that a later benchmark on the same server claims fresh runs.
    let end = FinishRun {
        run_id: claimed.run_id,
        attempt: claimed.attempt,
        points: Vec::new(),
        summary: None,
        error: Some("simulated by shapewise bench-workers".into()),
    };
    let finish_path = format!("/api/v1/workers/{}/finish", worker.id);
    client.send("POST", &finish_path, Some(&end))?;
    let leave_path = format!("/api/v1/workers/{}", worker.id);
    client.send("DELETE", &leave_path, None::<&()>)?;
    Ok((claim_secs, latencies, points))
}

/// Registers simulated worker `index` and claims a run; returns the worker, its claim and the
/// claim's latency in seconds.
fn register_and_claim(
    client: &ApiClient,
    index: usize,
) -> Result<(Registered, Claimed, f64), ClientError> {
    let registration = RegisterWorker {
        name: format!("bench-{index}"),
        host: crate::worker::host_name(),
        device: WorkerDevice::Cpu,
    };
    let worker: Registered = client
        .json("POST", "/api/v1/workers", Some(&registration))?
        .ok_or_else(|| ClientError::Malformed("no registration".into()))?;
    let claim_path = format!("/api/v1/workers/{}/claim", worker.id);
    let began = Instant::now();
    let claimed: Claimed = client
        .json("POST", &claim_path, None::<&()>)?
        .ok_or_else(|| ClientError::Malformed("no queued run to claim".into()))?;
    Ok((worker, claimed, began.elapsed().as_secs_f64()))
}

/// One heartbeat carrying `batch` new points; its latency is appended to `latencies`.
fn beat(
    client: &ApiClient,
    path: &str,
    claimed: &Claimed,
    batch: usize,
    step: &mut i64,
    latencies: &mut Vec<f64>,
) -> Result<(), ClientError> {
    let points: Vec<MetricPoint> = (0..batch)
        .map(|_| {
            *step += 1;
            let step = *step;
            MetricPoint {
                step,
                tokens: step * 1024,
                flops: step as f64 * 1e9,
                train_loss: Some(3.0 + 1.0 / step as f64),
                val_loss: None,
                lr: Some(1e-3),
                wall_secs: Some(step as f64 * 1e-3),
            }
        })
        .collect();
    let body = Heartbeat {
        run_id: Some(claimed.run_id),
        attempt: Some(claimed.attempt),
        tokens_per_sec: None,
        points,
    };
    let began = Instant::now();
    client.json::<HeartbeatAnswer>("POST", path, Some(&body))?;
    latencies.push(began.elapsed().as_secs_f64());
    Ok(())
}

/// Queues one run per simulated worker, then runs them all at once.
pub fn run_headroom(options: &HeadroomOptions) -> Result<HeadroomResult, ClientError> {
    let mut client = ApiClient::new(&options.server, options.token.as_deref())
        .map_err(ClientError::Malformed)?;
    client.read_timeout = Duration::from_secs(30);
    for _ in 0..options.workers {
        let run = json!({
            "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32,
            "context": 16, "batch": 4, "tokens": 64_000_000u64, "base_width": 64,
            "base_depth": 2, "tags": ["bench-workers"],
            "data": {"kind": "builtin", "seed": 0, "vocab": 32}
        });
        client.send("POST", "/api/v1/runs", Some(&run))?;
    }
    let line = StartLine {
        barrier: Barrier::new(options.workers),
        start: OnceLock::new(),
    };
    let outcomes: Vec<Result<WorkerSample, ClientError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.workers)
            .map(|i| {
                let (client, line) = (&client, &line);
                scope.spawn(move || simulate(client, i, options, line))
            })
            .collect();
        (handles.into_iter())
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ClientError::Malformed("a worker thread panicked".into()))
                })
            })
            .collect()
    });
    let elapsed = (line.start.get()).map_or(0.0, |start| start.elapsed().as_secs_f64());
    let (mut claims, mut beats, mut points) = (Vec::new(), Vec::new(), 0);
    for outcome in outcomes {
        let (claim, latencies, accepted) = outcome?;
        claims.push(claim);
        beats.extend(latencies);
        points += accepted;
    }
    claims.sort_by(f64::total_cmp);
    beats.sort_by(f64::total_cmp);
    Ok(HeadroomResult {
        workers: options.workers,
        batch: options.batch,
        seconds: elapsed,
        points_per_sec: points as f64 / elapsed,
        heartbeats: beats.len(),
        heartbeat_p50_ms: quantile_ms(&beats, 0.5),
        heartbeat_p99_ms: quantile_ms(&beats, 0.99),
        claims: claims.len(),
        claim_p50_ms: quantile_ms(&claims, 0.5),
        claim_p99_ms: quantile_ms(&claims, 0.99),
    })
}
