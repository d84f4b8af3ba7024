//! Background work: a pool of workers that claim queued training jobs from the database, train
//! them with burn on blocking threads (one job uses every core, so the default pool size is 1),
//! write metrics in batched transactions and publish them to live viewers; and one diagnostics
//! worker that runs coordinate checks and linearization checks, one at a time.
//!
//! Cancellation is checked between training steps. A job whose training fails (or panics) ends
//! as `failed` with the message; the server keeps serving. A job interrupted by a crash of its
//! server or worker is queued again at the next start, up to
//! [`MAX_ATTEMPTS`](crate::store::MAX_ATTEMPTS) claims in all (then it ends `failed`), so a run
//! that crashes the server cannot make it crash in a loop. Diagnostics are not cancellable; one
//! that fails or panics ends as `failed` with the message.

use crate::coord::{CoordAxis, CoordOptions, run_coord_check};
use crate::linearize::{LinearizeOptions, run_linearization};
use crate::store::{ClaimedDiagnostic, ClaimedJob, MetricPoint, Store, StoreError, StoredStatus};
use crate::train::{Flow, RunSummary, TrainEvent, Trainer, train_with};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc};

/// How often buffered metric rows are committed and the database's cancel flag is read.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How long an idle worker sleeps before looking for work without being woken.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// What live viewers receive as the `data` of each server-sent event; the event name is the
/// `event` field.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// New metric points of a run.
    Metrics {
        run_id: i64,
        points: Vec<MetricPoint>,
    },
    /// A run changed status (also sent once on connecting).
    Status { run_id: i64, status: StoredStatus },
}

/// The queue's handle: wake workers, cancel jobs, subscribe to events.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    wake: Arc<Notify>,
    events: broadcast::Sender<RunEvent>,
    stop_flags: Arc<Mutex<HashMap<i64, Arc<AtomicBool>>>>,
    diagnostic_wake: Arc<Notify>,
    diagnostic_progress: Arc<Mutex<HashMap<i64, DiagnosticProgress>>>,
}

impl Jobs {
    /// A queue over `store` with no workers yet.
    pub fn new(store: Store) -> Jobs {
        Jobs {
            store,
            wake: Arc::new(Notify::new()),
            events: broadcast::channel(1024).0,
            stop_flags: Arc::default(),
            diagnostic_wake: Arc::new(Notify::new()),
            diagnostic_progress: Arc::default(),
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

    /// Publishes new metric points of a run trained elsewhere (logged through the API).
    pub fn publish_metrics(&self, run_id: i64, points: Vec<MetricPoint>) {
        let _ = self.events.send(RunEvent::Metrics { run_id, points });
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

    /// Starts `count` training workers and the diagnostics worker on the tokio runtime. With
    /// `count == 0` nothing is started: the server only serves, and queued runs and diagnostics
    /// stay queued until a server with workers opens the database.
    pub fn spawn_workers(&self, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
        if count == 0 {
            return Vec::new();
        }
        let mut handles: Vec<_> = (0..count)
            .map(|_| {
                let jobs = self.clone();
                tokio::spawn(async move { jobs.work().await })
            })
            .collect();
        let jobs = self.clone();
        handles.push(tokio::spawn(async move { jobs.work_diagnostics().await }));
        handles
    }

    /// Starts the task that releases the jobs of remote workers whose lease lapsed (see
    /// [`Store::expire_leases`]), looking every quarter of the lease (at most every 5 s).
    pub fn spawn_lease_reaper(&self, lease_secs: f64) -> tokio::task::JoinHandle<()> {
        let jobs = self.clone();
        let period = Duration::from_secs_f64((lease_secs / 4.0).clamp(0.25, 5.0));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                match jobs.store.expire_leases().await {
                    Ok(released) if !released.is_empty() => {
                        for (run_id, what) in released {
                            jobs.publish_status(run_id, what.status());
                        }
                        jobs.wake();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("releasing lapsed leases failed: {e}"),
                }
            }
        })
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

// ---------------------------------------------------------------------------------------------
// Diagnostics

/// The diagnostics the runner knows (section 5 of the CompleteP spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DiagnosticKind {
    /// Coordinate check over depth at a fixed width ([`crate::coord`], paper Fig. 7).
    CoordDepth,
    /// Coordinate check over width at a fixed depth ([`crate::coord`], muP's classic check).
    CoordWidth,
    /// Relative distance from linearization over depth ([`crate::linearize`], paper Fig. 6).
    Linearization,
}

impl DiagnosticKind {
    /// Every kind, in the order the pages offer them.
    pub const ALL: [DiagnosticKind; 3] = [
        DiagnosticKind::CoordDepth,
        DiagnosticKind::CoordWidth,
        DiagnosticKind::Linearization,
    ];

    /// The name used in the API and the database.
    pub fn name(self) -> &'static str {
        match self {
            DiagnosticKind::CoordDepth => "coord-depth",
            DiagnosticKind::CoordWidth => "coord-width",
            DiagnosticKind::Linearization => "linearization",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<DiagnosticKind> {
        DiagnosticKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A title for pages.
    pub fn title(self) -> &'static str {
        match self {
            DiagnosticKind::CoordDepth => "Depth coordinate check",
            DiagnosticKind::CoordWidth => "Width coordinate check",
            DiagnosticKind::Linearization => "Distance from linearization",
        }
    }

    /// The default options, as the JSON object the API takes.
    pub fn default_options(self) -> Map<String, Value> {
        match self {
            DiagnosticKind::CoordDepth => coord_fields(&CoordOptions::defaults(CoordAxis::Depth)),
            DiagnosticKind::CoordWidth => coord_fields(&CoordOptions::defaults(CoordAxis::Width)),
            DiagnosticKind::Linearization => object(&LinearizeOptions::default()),
        }
    }

    fn axis(self) -> Option<CoordAxis> {
        match self {
            DiagnosticKind::CoordDepth => Some(CoordAxis::Depth),
            DiagnosticKind::CoordWidth => Some(CoordAxis::Width),
            DiagnosticKind::Linearization => None,
        }
    }
}

impl std::fmt::Display for DiagnosticKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value serialized as a JSON object (empty if it is not one).
fn object<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The fields of coordinate-check options a user sets for its axis: not the axis itself (the
/// kind fixes it), nor the size list and fixed size of the other axis.
fn coord_fields(options: &CoordOptions) -> Map<String, Value> {
    let mut map = object(options);
    let unused: [&str; 3] = match options.axis {
        CoordAxis::Depth => ["axis", "widths", "depth"],
        CoordAxis::Width => ["axis", "depths", "width"],
    };
    for key in unused {
        map.remove(key);
    }
    map
}

/// A diagnostic's options could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticError {
    /// The options are not a JSON object, or name a field the kind does not have.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed but refused: a value of the wrong type or out of range, or a grid point the
    /// trainer would reject.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `base` with the `given` fields replacing its own, as typed options. A value of the wrong type
/// is refused with the name of its field (serde's message alone does not say which).
fn read_options<T: serde::de::DeserializeOwned>(
    base: &Map<String, Value>,
    given: &Map<String, Value>,
) -> Result<T, DiagnosticError> {
    let merge = |skip: Option<&str>| {
        let mut merged = base.clone();
        for (key, value) in given {
            if Some(key.as_str()) != skip {
                merged.insert(key.clone(), value.clone());
            }
        }
        serde_json::from_value::<T>(Value::Object(merged))
    };
    merge(None).map_err(|e| {
        let culprit = given.keys().find(|key| merge(Some(key)).is_ok());
        DiagnosticError::Invalid(match culprit {
            Some(key) => format!("option '{key}': {e}"),
            None => format!("options: {e}"),
        })
    })
}

/// A validated diagnostic: its kind and every option.
#[derive(Clone, Debug, PartialEq)]
pub enum DiagnosticSpec {
    Coord(CoordOptions),
    Linearization(LinearizeOptions),
}

impl DiagnosticSpec {
    /// Reads the options of a `kind` (a JSON object; fields left out take the kind's defaults,
    /// `null` counts as `{}`) and validates them.
    pub fn parse(kind: DiagnosticKind, options: &Value) -> Result<DiagnosticSpec, DiagnosticError> {
        let given = match options {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            _ => {
                return Err(DiagnosticError::Malformed(
                    "'options' must be a JSON object".into(),
                ));
            }
        };
        let defaults = kind.default_options();
        if let Some(unknown) = given.keys().find(|k| !defaults.contains_key(*k)) {
            let known: Vec<&str> = defaults.keys().map(String::as_str).collect();
            return Err(DiagnosticError::Malformed(format!(
                "unknown option '{unknown}' for {kind}: it has {}",
                known.join(", ")
            )));
        }
        let base = match kind.axis() {
            Some(axis) => object(&CoordOptions::defaults(axis)),
            None => defaults,
        };
        let spec = match kind.axis() {
            Some(_) => DiagnosticSpec::Coord(read_options(&base, &given)?),
            None => DiagnosticSpec::Linearization(read_options(&base, &given)?),
        };
        let checked = match &spec {
            DiagnosticSpec::Coord(o) => o.validate(),
            DiagnosticSpec::Linearization(o) => o.validate(),
        };
        checked.map_err(DiagnosticError::Invalid)?;
        Ok(spec)
    }

    /// Its kind.
    pub fn kind(&self) -> DiagnosticKind {
        match self {
            DiagnosticSpec::Coord(o) => match o.axis {
                CoordAxis::Depth => DiagnosticKind::CoordDepth,
                CoordAxis::Width => DiagnosticKind::CoordWidth,
            },
            DiagnosticSpec::Linearization(_) => DiagnosticKind::Linearization,
        }
    }

    /// Every option, as stored and shown.
    pub fn options(&self) -> Value {
        Value::Object(match self {
            DiagnosticSpec::Coord(o) => coord_fields(o),
            DiagnosticSpec::Linearization(o) => object(o),
        })
    }

    /// Models it trains.
    pub fn model_count(&self) -> u64 {
        match self {
            DiagnosticSpec::Coord(o) => o.model_count(),
            DiagnosticSpec::Linearization(o) => o.model_count(),
        }
    }

    /// Runs it (blocking, minutes): the result as JSON, or the error message. `progress` is
    /// called with a label after each model.
    ///
    /// A coordinate check's result is its [`crate::coord::CoordTable`] (`axis`, `rows`) plus
    /// `slopes` ([`crate::coord::CoordSlope`] at step 1 and the last step); a linearization
    /// check's is its [`crate::linearize::LinearizeTable`].
    pub fn run(&self, progress: &mut dyn FnMut(&str)) -> Result<Value, String> {
        let result = match self {
            DiagnosticSpec::Coord(o) => {
                let table = run_coord_check(o, progress).map_err(|e| e.to_string())?;
                let mut map = object(&table);
                map.insert(
                    "slopes".into(),
                    serde_json::to_value(table.slopes()).map_err(|e| e.to_string())?,
                );
                Value::Object(map)
            }
            DiagnosticSpec::Linearization(o) => {
                let table = run_linearization(o, progress).map_err(|e| e.to_string())?;
                serde_json::to_value(&table).map_err(|e| e.to_string())?
            }
        };
        Ok(result)
    }
}

/// How far a running diagnostic has got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DiagnosticProgress {
    /// Models done.
    pub done: u64,
    /// Models in all.
    pub total: u64,
    /// The last model done (`completep depth 8 seed 1`), empty before the first.
    pub last: String,
}

impl Jobs {
    /// Validates a diagnostic's options (a JSON object, defaults for the fields left out),
    /// stores it queued (tied to study `sweep_id` if given, which must exist) and wakes the
    /// diagnostics worker. Returns its id.
    pub async fn enqueue_diagnostic(
        &self,
        kind: DiagnosticKind,
        options: &Value,
        sweep_id: Option<i64>,
    ) -> Result<i64, DiagnosticError> {
        let spec = DiagnosticSpec::parse(kind, options)?;
        let id = self
            .store
            .create_diagnostic(kind.name(), &spec.options(), sweep_id)
            .await?;
        self.diagnostic_wake.notify_waiters();
        Ok(id)
    }

    /// The progress of diagnostic `id` while it runs.
    pub fn diagnostic_progress(&self, id: i64) -> Option<DiagnosticProgress> {
        self.diagnostic_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    async fn work_diagnostics(self) {
        loop {
            let woken = self.diagnostic_wake.notified();
            match self.store.claim_diagnostic().await {
                Ok(Some(diagnostic)) => self.run_diagnostic(diagnostic).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, woken).await;
                }
                Err(e) => {
                    tracing::error!("claiming a diagnostic failed: {e}");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(diagnostic_id = claimed.id))]
    async fn run_diagnostic(&self, claimed: ClaimedDiagnostic) {
        let id = claimed.id;
        let spec = DiagnosticKind::parse(&claimed.kind)
            .ok_or_else(|| format!("unknown diagnostic kind '{}'", claimed.kind))
            .and_then(|kind| {
                DiagnosticSpec::parse(kind, &claimed.options).map_err(|e| e.to_string())
            });
        let outcome = match spec {
            Ok(spec) => {
                let progress = self.diagnostic_progress.clone();
                let update = move |entry: DiagnosticProgress| {
                    progress
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, entry);
                };
                let total = spec.model_count();
                update(DiagnosticProgress {
                    done: 0,
                    total,
                    last: String::new(),
                });
                let running = tokio::task::spawn_blocking(move || {
                    let mut done = 0;
                    spec.run(&mut |label| {
                        done += 1;
                        update(DiagnosticProgress {
                            done,
                            total,
                            last: label.to_string(),
                        });
                    })
                });
                match running.await {
                    Ok(result) => result,
                    Err(e) => Err(format!("the diagnostic crashed: {e}")),
                }
            }
            Err(message) => Err(message),
        };
        self.diagnostic_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Err(message) = &outcome {
            tracing::warn!("diagnostic {id} failed: {message}");
        }
        if let Err(e) = self
            .store
            .finish_diagnostic(id, outcome.as_ref().map_err(String::as_str))
            .await
        {
            tracing::error!("recording the end of diagnostic {id} failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_take_defaults_and_refuse_unknown_or_invalid_fields() {
        for kind in DiagnosticKind::ALL {
            let spec = DiagnosticSpec::parse(kind, &Value::Null).unwrap();
            assert_eq!(spec.kind(), kind);
            assert_eq!(spec.options(), Value::Object(kind.default_options()));
            assert_eq!(DiagnosticKind::parse(kind.name()), Some(kind));
        }
        let spec = DiagnosticSpec::parse(
            DiagnosticKind::CoordDepth,
            &json!({"depths": [1, 2], "steps": 3, "parameterizations": ["mup"]}),
        )
        .unwrap();
        let DiagnosticSpec::Coord(options) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            (options.axis, options.depths.clone(), options.steps),
            (CoordAxis::Depth, vec![1, 2], 3)
        );
        assert_eq!(options.width, 128, "a default");
        assert_eq!(spec.model_count(), 2 * 2);
        assert!(spec.options().get("widths").is_none());
        let malformed = |kind, options: Value| {
            matches!(
                DiagnosticSpec::parse(kind, &options),
                Err(DiagnosticError::Malformed(_))
            )
        };
        let invalid = |kind, options: Value| match DiagnosticSpec::parse(kind, &options) {
            Err(DiagnosticError::Invalid(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(malformed(
            DiagnosticKind::CoordDepth,
            json!({"widths": [64]})
        ));
        assert!(malformed(
            DiagnosticKind::CoordWidth,
            json!({"axis": "depth"})
        ));
        assert!(malformed(DiagnosticKind::Linearization, json!([1])));
        assert!(
            invalid(DiagnosticKind::Linearization, json!({"depths": "many"})).contains("depths")
        );
        assert!(invalid(DiagnosticKind::CoordWidth, json!({"widths": [100]})).contains("d_head"));
        assert!(invalid(DiagnosticKind::Linearization, json!({"lr": -1.0})).contains("lr"));
    }
}
