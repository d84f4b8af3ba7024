//! `shapewise worker`: trains a server's queued runs on this machine.
//!
//! The worker registers with the server, claims a queued run of its device, trains it with the
//! same trainer as `shapewise train`, and sends the metric points in batches with each
//! heartbeat (every quarter of the server's lease), which keeps its lease on the run and
//! brings back a cancellation. It reports the end of the run and claims the next.
//!
//! - While the server is unreachable it keeps training, holds the points, and retries; if its
//!   lease lapsed meanwhile the server refuses the attempt (409) and the worker drops it (the
//!   run was queued again and another worker restarts it from step 0).
//! - On SIGTERM or SIGINT it stops its run between two steps and leaves: the run goes back to
//!   the queue at once, the attempt not counted, and the process exits 0.
//! - A token the server refuses (401, 403) is a usage error: exit code 2.

use crate::client::{ApiClient, ClientError};
use crate::store::MetricPoint;
use crate::train::{Flow, RunSummary, TrainEvent, Trainer, train_with};
use crate::web::workers::{
    Claimed, FinishRun, Heartbeat, HeartbeatAnswer, LeaveAnswer, MAX_POINTS_PER_BEAT,
    RegisterWorker, Registered, WorkerDevice,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait before asking again when the server is unreachable.
const RETRY: Duration = Duration::from_secs(2);
/// How long an idle worker waits between claims.
const IDLE: Duration = Duration::from_secs(1);
/// How often waits look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// What the worker is asked to do.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// `http://HOST:PORT` of the server.
    pub server: String,
    pub token: Option<String>,
    pub device: WorkerDevice,
    /// Shown on the workers page; default `HOST-PID`.
    pub name: Option<String>,
    /// Leave after this many runs.
    pub max_runs: Option<u64>,
}

/// Why the worker stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The server refused the worker (a wrong token, a role that may not): exit code 2.
    #[error("{0}")]
    Refused(String),
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Sleeps `duration` unless `stop` is raised first; returns whether it was.
fn sleep_unless(stop: &AtomicBool, duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(TICK.min(until - Instant::now()));
    }
    stop.load(Ordering::Relaxed)
}

/// A refusal that retrying cannot fix.
fn refused(e: &ClientError) -> Option<WorkerError> {
    match e {
        ClientError::Refused {
            status: 401 | 403, ..
        } => Some(WorkerError::Refused(format!(
            "{e} (check --token / SHAPEWISE_TOKEN: a worker needs a writer's token)"
        ))),
        ClientError::Refused {
            status: 400 | 404 | 405 | 415 | 422,
            ..
        } => Some(WorkerError::Refused(format!(
            "{e} (is this a shapewise server of the same version?)"
        ))),
        _ => None,
    }
}

/// Runs the worker until `stop` is raised (then it hands its run back) or `max_runs` runs are
/// done.
pub fn run_worker(options: &WorkerOptions, stop: Arc<AtomicBool>) -> Result<(), WorkerError> {
    let client =
        ApiClient::new(&options.server, options.token.as_deref()).map_err(WorkerError::Refused)?;
    let host = host_name();
    let registration = RegisterWorker {
        name: (options.name.clone()).unwrap_or_else(|| format!("{host}-{}", std::process::id())),
        host,
        device: options.device,
    };
    let mut done = 0u64;
    'register: loop {
        let Some(worker) = register(&client, &registration, &stop)? else {
            return Ok(());
        };
        tracing::info!(
            "registered with {} as worker {} '{}' ({}; lease {} s)",
            client.server(),
            worker.id,
            registration.name,
            registration.device.name(),
            worker.lease_secs
        );
        loop {
            if stop.load(Ordering::Relaxed) || options.max_runs.is_some_and(|max| done >= max) {
                leave(&client, worker.id);
                return Ok(());
            }
            let path = format!("/api/v1/workers/{}/claim", worker.id);
            match client.json::<Claimed>("POST", &path, None::<&()>) {
                Ok(Some(claimed)) => {
                    if train_claimed(&client, &worker, claimed, &stop) {
                        done += 1;
                    }
                }
                Ok(None) => {
                    sleep_unless(&stop, IDLE);
                }
                // The server forgot the worker (a new database): register again.
                Err(ClientError::Refused { status: 404, .. }) => continue 'register,
                Err(e) => {
                    if let Some(fatal) = refused(&e) {
                        return Err(fatal);
                    }
                    tracing::warn!("{e}; retrying in {} s", RETRY.as_secs());
                    sleep_unless(&stop, RETRY);
                }
            }
        }
    }
}

/// Registers, retrying while the server is unreachable; `None` when stopped meanwhile.
fn register(
    client: &ApiClient,
    registration: &RegisterWorker,
    stop: &AtomicBool,
) -> Result<Option<Registered>, WorkerError> {
    loop {
        match client.json::<Registered>("POST", "/api/v1/workers", Some(registration)) {
            Ok(Some(worker)) => return Ok(Some(worker)),
            Ok(None) => {
                return Err(WorkerError::Refused(format!(
                    "{} answered the registration with no body",
                    client.server()
                )));
            }
            Err(e) => {
                if let Some(fatal) = refused(&e) {
                    return Err(fatal);
                }
                tracing::warn!("{e}; retrying in {} s", RETRY.as_secs());
                if sleep_unless(stop, RETRY) {
                    return Ok(None);
                }
            }
        }
    }
}

/// Leaves the server (handing back a held run); an unreachable server lets the lease lapse.
fn leave(client: &ApiClient, worker_id: i64) {
    let path = format!("/api/v1/workers/{worker_id}");
    match client.json::<LeaveAnswer>("DELETE", &path, None::<&()>) {
        Ok(Some(LeaveAnswer {
            handed_back: Some(run_id),
        })) => tracing::info!("left; run {run_id} went back to the queue"),
        Ok(_) => tracing::info!("left"),
        Err(e) => tracing::warn!("leaving failed ({e}); a held run returns when its lease lapses"),
    }
}

/// Points trained and not yet accepted by the server, and the end of training.
#[derive(Default)]
struct Progress {
    points: Vec<MetricPoint>,
    outcome: Option<Result<RunSummary, String>>,
}

/// Trains one claimed run to its end, heartbeating; returns whether its end was reported
/// (false when the lease was lost or the worker was stopped and handed the run back).
fn train_claimed(
    client: &ApiClient,
    worker: &Registered,
    claimed: Claimed,
    stop: &Arc<AtomicBool>,
) -> bool {
    let (run_id, attempt) = (claimed.run_id, claimed.attempt);
    let c = &claimed.config;
    tracing::info!(
        "run {run_id} (attempt {attempt}): {} {}x{}, lr {}",
        c.parameterization.name(),
        c.width,
        c.depth,
        c.lr
    );
    let progress = Arc::new(Mutex::new(Progress::default()));
    let halt = Arc::new(AtomicBool::new(false));
    let training = {
        let (progress, halt, stop) = (progress.clone(), halt.clone(), stop.clone());
        let config = claimed.config.clone();
        std::thread::spawn(move || {
            let outcome = Trainer::new(&config)
                .map_err(|e| e.to_string())
                .map(|mut trainer| {
                    train_with(&mut trainer, &mut |event| {
                        if let TrainEvent::Metric(row) = event {
                            let point = MetricPoint::from(row);
                            progress
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .points
                                .push(point);
                        }
                        if halt.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                            Flow::Stop
                        } else {
                            Flow::Continue
                        }
                    })
                });
            progress.lock().unwrap_or_else(|e| e.into_inner()).outcome = Some(outcome);
        })
    };
    let beat = Duration::from_secs_f64(worker.heartbeat_secs.max(0.05));
    let path = format!("/api/v1/workers/{}/heartbeat", worker.id);
    loop {
        let finished = {
            let until = Instant::now() + beat;
            loop {
                let ended = progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .outcome
                    .is_some();
                if ended || Instant::now() >= until {
                    break ended;
                }
                std::thread::sleep(TICK);
            }
        };
        if stop.load(Ordering::Relaxed) {
            // Stopped: the run goes back to the queue when the worker leaves.
            let _ = training.join();
            return false;
        }
        if finished {
            break;
        }
        let points = next_batch(&mut progress.lock().unwrap_or_else(|e| e.into_inner()).points);
        let tokens_per_sec = throughput(&points);
        let beat_body = Heartbeat {
            run_id: Some(run_id),
            attempt: Some(attempt),
            tokens_per_sec,
            points,
        };
        match client.json::<HeartbeatAnswer>("POST", &path, Some(&beat_body)) {
            Ok(Some(answer)) => {
                if answer.cancel {
                    tracing::info!("run {run_id}: cancelled on the server; stopping");
                    halt.store(true, Ordering::Relaxed);
                }
            }
            Ok(None) => {}
            // The lease is lost (409), or the server forgot the worker (404): another attempt
            // owns the run now. (408 and 429 are worth retrying, as is a 5xx.)
            Err(ClientError::Refused { status, detail, .. })
                if (400..500).contains(&status) && status != 408 && status != 429 =>
            {
                tracing::warn!("run {run_id}: {detail} ({status}); dropping this attempt");
                halt.store(true, Ordering::Relaxed);
                let _ = training.join();
                return false;
            }
            Err(e) => {
                tracing::warn!("run {run_id}: heartbeat failed ({e}); keeping the points");
                let mut held = progress.lock().unwrap_or_else(|e| e.into_inner());
                let newer = std::mem::take(&mut held.points);
                held.points = beat_body.points;
                held.points.extend(newer);
            }
        }
    }
    let _ = training.join();
    let (points, outcome) = {
        let mut held = progress.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut held.points), held.outcome.take())
    };
    let outcome = outcome.unwrap_or_else(|| Err("training ended without a result".into()));
    // Points beyond one request's limit go first, in heartbeats.
    let mut points = points;
    while points.len() > MAX_POINTS_PER_BEAT {
        let beat_body = Heartbeat {
            run_id: Some(run_id),
            attempt: Some(attempt),
            tokens_per_sec: None,
            points: next_batch(&mut points),
        };
        if let Err(e) = client.send("POST", &path, Some(&beat_body)) {
            tracing::warn!("run {run_id}: sending its last points failed: {e}");
            return false;
        }
    }
    let end = FinishRun {
        run_id,
        attempt,
        points,
        summary: outcome.as_ref().ok().cloned(),
        error: outcome.as_ref().err().cloned(),
    };
    let path = format!("/api/v1/workers/{}/finish", worker.id);
    // Retry an unreachable server for as long as the lease would last.
    let deadline = Instant::now() + Duration::from_secs_f64(worker.lease_secs);
    loop {
        match client.send("POST", &path, Some(&end)) {
            Ok(_) => {
                match &outcome {
                    Ok(summary) => tracing::info!(
                        "run {run_id}: {} after {} steps, final train loss {:.4}",
                        summary.status.name(),
                        summary.steps,
                        summary.final_train_loss
                    ),
                    Err(message) => tracing::warn!("run {run_id} failed: {message}"),
                }
                return true;
            }
            Err(ClientError::Unreachable { .. }) if Instant::now() < deadline => {
                if sleep_unless(stop, RETRY) {
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!("run {run_id}: reporting its end failed: {e}");
                return false;
            }
        }
    }
}

/// The oldest points, at most one request's worth ([`MAX_POINTS_PER_BEAT`]), taken from `held`.
fn next_batch(held: &mut Vec<MetricPoint>) -> Vec<MetricPoint> {
    let rest = held.split_off(held.len().min(MAX_POINTS_PER_BEAT));
    std::mem::replace(held, rest)
}

/// Tokens per second of the latest point that records its wall time.
fn throughput(points: &[MetricPoint]) -> Option<f64> {
    let last = points.iter().rev().find(|p| p.wall_secs.is_some())?;
    let secs = last.wall_secs?;
    (secs > 0.0).then(|| last.tokens as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: i64) -> MetricPoint {
        MetricPoint {
            step,
            tokens: step,
            flops: 0.0,
            train_loss: None,
            val_loss: None,
            lr: None,
            wall_secs: Some(step as f64 / 100.0),
        }
    }

    #[test]
    fn held_points_go_out_oldest_first_in_batches_the_server_accepts() {
        let mut held: Vec<MetricPoint> = (1..=25_000).map(point).collect();
        let sizes: Vec<(usize, i64)> = std::iter::from_fn(|| {
            let batch = next_batch(&mut held);
            (!batch.is_empty()).then(|| (batch.len(), batch[0].step))
        })
        .collect();
        assert_eq!(sizes, [(10_000, 1), (10_000, 10_001), (5_000, 20_001)]);
        // Tokens per second from the last point with a wall time: 25,000 tokens in 250 s.
        let all: Vec<MetricPoint> = (1..=25_000).map(point).collect();
        assert_eq!(throughput(&all), Some(100.0));
    }
}
