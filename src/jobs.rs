//! Background training: a pool of workers that claim queued jobs from the database, train them
//! with burn on blocking threads (one job uses every core, so the default pool size is 1), write
//! metrics in batched transactions and publish them to live viewers.
//!
//! Cancellation is checked between training steps. A job whose training fails (or panics) ends
//! as `failed` with the message; the server keeps serving.

use crate::store::{ClaimedJob, MetricPoint, Store, StoredStatus};
use crate::train::{Flow, RunSummary, TrainEvent, Trainer, train_with};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};

/// How often buffered metric rows are committed and the database's cancel flag is read.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How long an idle worker sleeps before looking for work without being woken.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// What live viewers receive.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// New metric points of a run.
    Metrics {
        run_id: i64,
        points: Vec<MetricPoint>,
    },
    /// A run changed status.
    Status { run_id: i64, status: StoredStatus },
}

/// The queue's handle: wake workers, cancel jobs, subscribe to events.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    wake: Arc<Notify>,
    events: broadcast::Sender<RunEvent>,
    stop_flags: Arc<Mutex<HashMap<i64, Arc<AtomicBool>>>>,
}

impl Jobs {
    /// A queue over `store` with no workers yet.
    pub fn new(store: Store) -> Jobs {
        Jobs {
            store,
            wake: Arc::new(Notify::new()),
            events: broadcast::channel(1024).0,
            stop_flags: Arc::default(),
        }
    }

    /// Tells idle workers that a job was queued.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Live metric and status events of every run.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    /// Publishes a status change (also used by the API for cancellations of queued runs).
    pub fn publish_status(&self, run_id: i64, status: StoredStatus) {
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(RunEvent::Status { run_id, status });
    }

    /// Cancels a run: a queued job at once, a running one before its next step.
    pub async fn cancel(&self, run_id: i64) -> Result<StoredStatus, crate::store::StoreError> {
        let status = self.store.request_cancel(run_id).await?;
        if let Some(flag) = self
            .stop_flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&run_id)
        {
            flag.store(true, Ordering::Relaxed);
        }
        if status == StoredStatus::Cancelled {
            self.publish_status(run_id, status);
        }
        Ok(status)
    }

    /// Starts `count` workers on the tokio runtime.
    pub fn spawn_workers(&self, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..count)
            .map(|_| {
                let jobs = self.clone();
                tokio::spawn(async move { jobs.work().await })
            })
            .collect()
    }

    async fn work(self) {
        loop {
            // Register interest before looking, so a wake between the two is not lost.
            let woken = self.wake.notified();
            match self.store.claim_job().await {
                Ok(Some(job)) => self.run_job(job).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, woken).await;
                }
                Err(e) => {
                    tracing::error!("claiming a job failed: {e}");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = job.run_id))]
    async fn run_job(&self, job: ClaimedJob) {
        self.publish_status(job.run_id, StoredStatus::Running);
        let stop = Arc::new(AtomicBool::new(false));
        self.stop_flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.run_id, stop.clone());
        let (rows_tx, mut rows_rx) = mpsc::unbounded_channel::<MetricPoint>();
        let config = job.config.clone();
        let trainer_stop = stop.clone();
        let training = tokio::task::spawn_blocking(move || -> Result<RunSummary, String> {
            let mut trainer = Trainer::new(&config).map_err(|e| e.to_string())?;
            Ok(train_with(&mut trainer, &mut |event| {
                if let TrainEvent::Metric(row) = event {
                    // The receiver lives until training returns.
                    let _ = rows_tx.send(MetricPoint::from(row));
                }
                if trainer_stop.load(Ordering::Relaxed) {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }))
        });

        let mut buffer = Vec::new();
        let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tokio::select! {
                row = rows_rx.recv() => match row {
                    Some(point) => buffer.push(point),
                    None => break,
                },
                _ = ticker.tick() => {
                    self.flush(job.run_id, &mut buffer).await;
                    if self.store.should_stop(job.job_id).await.unwrap_or(false) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        self.flush(job.run_id, &mut buffer).await;
        let outcome = match training.await {
            Ok(result) => result,
            Err(e) => Err(format!("training crashed: {e}")),
        };
        self.stop_flags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.run_id);
        let status = match &outcome {
            Ok(summary) => StoredStatus::from(summary.status),
            Err(message) => {
                tracing::warn!("run {} failed: {message}", job.run_id);
                StoredStatus::Failed
            }
        };
        if let Err(e) = self
            .store
            .finish_job(&job, outcome.as_ref().map_err(String::as_str))
            .await
        {
            tracing::error!("recording the end of run {} failed: {e}", job.run_id);
        }
        self.publish_status(job.run_id, status);
    }

    async fn flush(&self, run_id: i64, buffer: &mut Vec<MetricPoint>) {
        if buffer.is_empty() {
            return;
        }
        let points = std::mem::take(buffer);
        match self.store.append_metrics(run_id, &points).await {
            Ok(()) => {
                let _ = self.events.send(RunEvent::Metrics { run_id, points });
            }
            // A deleted run has no row to attach metrics to; anything else is logged.
            Err(e) => tracing::warn!("storing metrics of run {run_id} failed: {e}"),
        }
    }
}
