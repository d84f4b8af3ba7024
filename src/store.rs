//! SQLite storage of runs, metric series and the job queue, through sqlx.
//!
//! The database is opened in WAL mode (readers never block the writer) with a busy timeout, and
//! the migrations in `migrations/` are embedded in the binary and applied at start. The pool has
//! one connection per concurrent reader but SQLite allows a single writer, so writes take turns:
//!
//! - every write (a transaction or a single statement) first takes the store's writer turn, a
//!   fair in-process queue, so this process's writers never race each other for SQLite's lock;
//! - every write transaction starts as a writer (`BEGIN IMMEDIATE`). A deferred transaction that
//!   reads and then writes must upgrade its lock, and SQLite refuses an upgrade at once
//!   (`database is locked`, no busy wait) whenever another connection wrote in the meantime; an
//!   immediate one waits for the lock under the busy timeout before reading anything, and a
//!   `BEGIN` still refused (another process holding the lock past the timeout) is retried;
//! - single-statement writes outside transactions take the lock when they start, so the busy
//!   timeout covers them.
//!
//! Write transactions are short (a run row, or a batch of metric rows).
//!
//! Reads of a run's metric series are bounded: pages ([`Store::metrics_page`]) and downsampled
//! views ([`Store::metrics_downsampled`], [`Store::metrics_overview`]) read a number of rows
//! proportional to what they return, never the whole series.

use crate::train::{MetricRow, RunConfig, RunStatus, RunSummary};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

mod tracking;
mod workers;
pub use tracking::{
    COLUMN_PARAMS, Experiment, LogBatch, LoggedMetric, SeriesKey, TrackedRun, now_ms, series_points,
};
pub use workers::{LeaseError, WorkerRecord, unix_now};

/// A storage failure. `NotFound` and `Invalid` are the caller's fault; the rest are internal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run {0} not found")]
    NotFound(i64),
    #[error("sweep {0} not found")]
    SweepNotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Where a run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    /// Trained by this server.
    Local,
    /// Trained elsewhere and imported.
    Imported,
}

/// The lifecycle of a stored run: the trainer's outcomes plus the queue's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoredStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Diverged,
    Cancelled,
    /// Was running when the server stopped; its job is queued again.
    Interrupted,
}

impl StoredStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [StoredStatus; 7] = [
        StoredStatus::Queued,
        StoredStatus::Running,
        StoredStatus::Succeeded,
        StoredStatus::Failed,
        StoredStatus::Diverged,
        StoredStatus::Cancelled,
        StoredStatus::Interrupted,
    ];

    /// The value in the `status` column.
    pub fn name(self) -> &'static str {
        match self {
            StoredStatus::Queued => "queued",
            StoredStatus::Running => "running",
            StoredStatus::Succeeded => "succeeded",
            StoredStatus::Failed => "failed",
            StoredStatus::Diverged => "diverged",
            StoredStatus::Cancelled => "cancelled",
            StoredStatus::Interrupted => "interrupted",
        }
    }

    fn parse(name: &str) -> StoredStatus {
        StoredStatus::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or(StoredStatus::Failed)
    }

    /// Whether the run has ended (nothing will change it any more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StoredStatus::Succeeded
                | StoredStatus::Failed
                | StoredStatus::Diverged
                | StoredStatus::Cancelled
        )
    }
}

impl From<RunStatus> for StoredStatus {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Succeeded => StoredStatus::Succeeded,
            RunStatus::Diverged => StoredStatus::Diverged,
            RunStatus::Cancelled => StoredStatus::Cancelled,
        }
    }
}

/// A run as stored.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: i64,
    pub name: Option<String>,
    pub source: RunSource,
    pub status: StoredStatus,
    /// The full run config (for local runs) as JSON.
    pub config: Value,
    pub parameterization: String,
    pub alpha: Option<f64>,
    pub width: Option<i64>,
    pub depth: Option<i64>,
    pub d_head: Option<i64>,
    pub context: Option<i64>,
    pub vocab: Option<i64>,
    pub lr: Option<f64>,
    pub init_std: Option<f64>,
    pub eps: Option<f64>,
    pub weight_decay: Option<f64>,
    pub batch: Option<i64>,
    pub tokens: Option<i64>,
    pub seed: Option<i64>,
    pub dataset: Option<String>,
    pub sweep_id: Option<i64>,
    pub tags: Vec<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub final_train_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub params_non_embedding: Option<i64>,
    pub flops: Option<f64>,
    pub flops_dense: Option<f64>,
    pub flops_unembedding: Option<f64>,
    pub flops_attention: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub error: Option<String>,
    /// The name of the token that created it (none when authentication is off).
    pub created_by: Option<String>,
    /// The run this one copies: a study took that finished run of the same configuration
    /// instead of training it again.
    pub reused_from: Option<i64>,
    /// Jobs ahead of this one in the queue (queued runs only).
    pub queue_position: Option<i64>,
}

/// One stored metric point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricPoint {
    pub step: i64,
    pub tokens: i64,
    pub flops: f64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub lr: Option<f64>,
    pub wall_secs: Option<f64>,
}

impl From<&MetricRow> for MetricPoint {
    fn from(row: &MetricRow) -> Self {
        MetricPoint {
            step: row.step as i64,
            tokens: row.tokens as i64,
            flops: row.flops,
            train_loss: Some(row.train_loss).filter(|l| l.is_finite()),
            val_loss: row.val_loss,
            lr: Some(row.lr),
            wall_secs: Some(row.wall_secs),
        }
    }
}

/// Columns a runs listing may filter and sort on (a whitelist: names never come from users
/// into SQL unchecked).
pub const FILTER_COLUMNS: [&str; 26] = [
    "id",
    "name",
    "source",
    "status",
    "parameterization",
    "alpha",
    "width",
    "depth",
    "d_head",
    "context",
    "vocab",
    "lr",
    "init_std",
    "eps",
    "weight_decay",
    "batch",
    "tokens",
    "seed",
    "dataset",
    "sweep_id",
    "created_at",
    "final_train_loss",
    "final_val_loss",
    "params_non_embedding",
    "flops",
    "tokens_per_sec",
];

/// A comparison in a runs filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

/// A value compared against a column.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Int(i64),
    Real(f64),
    Text(String),
}

/// One condition `column op value(s)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub column: &'static str,
    pub comparison: Comparison,
    pub values: Vec<FilterValue>,
}

/// A runs query: conditions (ANDed), required tags, order and page.
#[derive(Clone, Debug, PartialEq)]
pub struct RunQuery {
    pub conditions: Vec<Condition>,
    pub tags: Vec<String>,
    pub sort: &'static str,
    pub descending: bool,
    pub limit: i64,
    pub offset: i64,
}

impl Default for RunQuery {
    fn default() -> Self {
        RunQuery {
            conditions: Vec::new(),
            tags: Vec::new(),
            sort: "id",
            descending: true,
            limit: 100,
            offset: 0,
        }
    }
}

/// A run to create.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub config: RunConfig,
    pub sweep_id: Option<i64>,
    /// The name of the token that asked for it (none when authentication is off).
    pub created_by: Option<String>,
}

/// A run trained elsewhere, validated by the API.
#[derive(Clone, Debug)]
pub struct ImportedRun {
    pub name: Option<String>,
    pub parameterization: String,
    pub alpha: Option<f64>,
    pub width: Option<i64>,
    pub depth: Option<i64>,
    pub lr: Option<f64>,
    /// Non-embedding parameters.
    pub params: i64,
    pub tokens: i64,
    pub flops: f64,
    /// The `6 P D` part of `flops` when the importer gave tokens only.
    pub flops_dense: Option<f64>,
    pub final_loss: f64,
    pub dataset: Option<String>,
    pub tags: Vec<String>,
    pub metrics: Vec<MetricPoint>,
    /// Any other fields the importer sent, kept as the run's config.
    pub extra: Value,
    /// The name of the token that imported it (none when authentication is off).
    pub created_by: Option<String>,
}

/// A stored sweep.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SweepRecord {
    pub id: i64,
    pub name: String,
    /// `grid` for a plain sweep; a study's kind (`depth-transfer`, `coord-check`,
    /// `compute-efficiency`) for the run set of a one-click study.
    pub kind: String,
    /// The grid (or the study's settings) as it was requested.
    pub spec: Value,
    pub created_at: String,
}

/// A claimed job: the run to train.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub run_id: i64,
    /// Which claim of the job this is (1 for the first): a worker's requests name it, so those
    /// of an attempt whose lease lapsed are refused.
    pub attempt: i64,
    pub config: RunConfig,
}

const RUN_COLUMNS: &str = "runs.*, \
    (SELECT json_group_array(tag) FROM run_tags WHERE run_tags.run_id = runs.id) AS tag_list, \
    (SELECT COUNT(*) FROM jobs AS ahead WHERE ahead.state = 'queued' AND ahead.id < \
        (SELECT id FROM jobs WHERE jobs.run_id = runs.id AND jobs.state = 'queued')) AS queue_ahead";

fn run_from_row(row: &SqliteRow) -> Result<RunRecord, sqlx::Error> {
    let config: String = row.try_get("config")?;
    let tags: Option<String> = row.try_get("tag_list")?;
    let status: String = row.try_get("status")?;
    let source: String = row.try_get("source")?;
    let status = StoredStatus::parse(&status);
    Ok(RunRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        source: if source == "imported" {
            RunSource::Imported
        } else {
            RunSource::Local
        },
        status,
        config: serde_json::from_str(&config).unwrap_or(Value::Null),
        parameterization: row.try_get("parameterization")?,
        alpha: row.try_get("alpha")?,
        width: row.try_get("width")?,
        depth: row.try_get("depth")?,
        d_head: row.try_get("d_head")?,
        context: row.try_get("context")?,
        vocab: row.try_get("vocab")?,
        lr: row.try_get("lr")?,
        init_std: row.try_get("init_std")?,
        eps: row.try_get("eps")?,
        weight_decay: row.try_get("weight_decay")?,
        batch: row.try_get("batch")?,
        tokens: row.try_get("tokens")?,
        seed: row.try_get("seed")?,
        dataset: row.try_get("dataset")?,
        sweep_id: row.try_get("sweep_id")?,
        tags: tags
            .and_then(|t| serde_json::from_str::<Vec<String>>(&t).ok())
            .unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        final_train_loss: row.try_get("final_train_loss")?,
        final_val_loss: row.try_get("final_val_loss")?,
        params_non_embedding: row.try_get("params_non_embedding")?,
        flops: row.try_get("flops")?,
        flops_dense: row.try_get("flops_dense")?,
        flops_unembedding: row.try_get("flops_unembedding")?,
        flops_attention: row.try_get("flops_attention")?,
        tokens_per_sec: row.try_get("tokens_per_sec")?,
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
        reused_from: row.try_get("reused_from")?,
        queue_position: (status == StoredStatus::Queued || status == StoredStatus::Interrupted)
            .then(|| row.try_get("queue_ahead"))
            .transpose()?,
    })
}

fn dataset_name(config: &RunConfig) -> String {
    match &config.data {
        crate::data::DataSource::Builtin { seed, vocab } => format!("builtin:{seed}:{vocab}"),
        crate::data::DataSource::Text {
            path,
            tokenizer: None,
        } => format!("text:{}", path.display()),
        crate::data::DataSource::Text {
            path,
            tokenizer: Some(tokenizer),
        } => format!("text:{}:{}", path.display(), tokenizer.display()),
        crate::data::DataSource::NanoGpt { dir, vocab } => {
            format!("nanogpt:{}:{vocab}", dir.display())
        }
    }
}

/// How many times a job may be claimed: its first attempt and two retries. A job found
/// `running` at start-up (its server or worker crashed mid-run) counts that claim as an attempt;
/// one interrupted on its last attempt fails instead of being queued again, so a run that kills
/// the server cannot crash it in a loop. [`Store::release_interrupted_job`] does the counting, so
/// every way of losing a claimed job (a crash found at start-up, and later a worker lease that
/// lapsed) counts against this same limit.
pub const MAX_ATTEMPTS: i64 = 3;

/// How many times a `BEGIN IMMEDIATE` refused with `database is locked` (after the busy timeout:
/// another process holds the write lock) is tried again before the error is returned.
const BEGIN_RETRIES: u32 = 3;

/// A write transaction with the writer turn it holds: keep both alive until the commit (bind the
/// turn to a named variable such as `_turn`, never `_`).
type WriteTurn<'a> = tokio::sync::MutexGuard<'a, ()>;

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The writer turn: one write at a time from this process, first come first served.
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// Whether a database error is SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code).
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            writer: Arc::default(),
        })
    }

    /// Waits for this process's writer turn (for a single-statement write).
    async fn write_turn(&self) -> WriteTurn<'_> {
        self.writer.lock().await
    }

    /// Takes the writer turn and starts a write transaction with `BEGIN IMMEDIATE`, retrying a
    /// `BEGIN` refused because another process held the lock past the busy timeout. Once it has
    /// begun, the transaction holds SQLite's write lock: its statements and its commit never wait
    /// for another writer (in WAL mode readers do not block a commit).
    async fn begin_write(&self) -> Result<(WriteTurn<'_>, Transaction<'static>), StoreError> {
        let turn = self.write_turn().await;
        let mut retries = 0;
        loop {
            match self.pool.begin_with("BEGIN IMMEDIATE").await {
                Ok(tx) => return Ok((turn, tx)),
                Err(e) if is_busy(&e) && retries < BEGIN_RETRIES => {
                    retries += 1;
                    tracing::warn!("the database is locked by another process; retry {retries}");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(retries))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates a local run and queues its job, atomically.
    pub async fn create_run(&self, new: &NewRun) -> Result<i64, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let id = insert_local_run(&mut tx, new).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates a sweep and all its runs (queued), atomically.
    pub async fn create_sweep(
        &self,
        name: &str,
        spec: &Value,
        runs: &[NewRun],
    ) -> Result<(i64, Vec<i64>), StoreError> {
        self.create_sweep_of_kind("grid", name, spec, runs).await
    }

    /// Creates a sweep of `kind` (`grid`, or a study's kind) and all its runs (queued),
    /// atomically.
    pub async fn create_sweep_of_kind(
        &self,
        kind: &str,
        name: &str,
        spec: &Value,
        runs: &[NewRun],
    ) -> Result<(i64, Vec<i64>), StoreError> {
        self.create_study_sweep(kind, name, spec, runs, &[]).await
    }

    /// For each config, the latest finished run (succeeded or diverged, trained here) with exactly
    /// that configuration, to reuse instead of training it again: the run that was trained, not a
    /// copy of it.
    pub async fn reusable_runs(
        &self,
        configs: &[RunConfig],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut found = Vec::with_capacity(configs.len());
        for config in configs {
            let text =
                serde_json::to_string(config).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT COALESCE(reused_from, id) FROM runs WHERE config = ? AND source = 'local' \
                 AND status IN ('succeeded', 'diverged') ORDER BY id DESC LIMIT 1",
            )
            .bind(text)
            .fetch_optional(&self.pool)
            .await?;
            found.push(id);
        }
        Ok(found)
    }

    /// Creates a sweep of `kind` and its runs atomically: run `i` is queued, or, where
    /// `reuse[i]` names a finished run, a copy of that run (its row, final losses, timings and
    /// metric series) with this sweep's name, tags and creator. `reuse` may be empty.
    pub async fn create_study_sweep(
        &self,
        kind: &str,
        name: &str,
        spec: &Value,
        runs: &[NewRun],
        reuse: &[Option<i64>],
    ) -> Result<(i64, Vec<i64>), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let sweep_id: i64 = sqlx::query_scalar(
            "INSERT INTO sweeps (kind, name, spec) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(kind)
        .bind(name)
        .bind(spec.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(runs.len());
        for run in runs {
            let run = NewRun {
                sweep_id: Some(sweep_id),
                ..run.clone()
            };
            let id = match reuse.get(ids.len()).copied().flatten() {
                Some(source) => copy_run(&mut tx, source, &run).await?,
                None => insert_local_run(&mut tx, &run).await?,
            };
            ids.push(id);
        }
        tx.commit().await?;
        Ok((sweep_id, ids))
    }

    /// A sweep's name, grid and creation time.
    pub async fn sweep(&self, id: i64) -> Result<SweepRecord, StoreError> {
        let row: Option<(i64, String, String, String, String)> =
            sqlx::query_as("SELECT id, kind, name, spec, created_at FROM sweeps WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let (id, kind, name, spec, created_at) = row.ok_or(StoreError::SweepNotFound(id))?;
        Ok(SweepRecord {
            id,
            kind,
            name,
            spec: serde_json::from_str(&spec).unwrap_or(Value::Null),
            created_at,
        })
    }

    /// Every sweep, newest first, each with its number of runs and how many of them have ended
    /// (succeeded, failed, diverged or cancelled): `(sweep, runs, finished)`.
    pub async fn sweeps(&self) -> Result<Vec<(SweepRecord, i64, i64)>, StoreError> {
        let rows: Vec<(i64, String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT s.id, s.kind, s.name, s.spec, s.created_at, COUNT(r.id), \
             COALESCE(SUM(r.status IN ('succeeded', 'failed', 'diverged', 'cancelled')), 0) \
             FROM sweeps s LEFT JOIN runs r ON r.sweep_id = s.id \
             GROUP BY s.id ORDER BY s.id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, kind, name, spec, created_at, total, finished)| {
                let sweep = SweepRecord {
                    id,
                    kind,
                    name,
                    spec: serde_json::from_str(&spec).unwrap_or(Value::Null),
                    created_at,
                };
                (sweep, total, finished)
            })
            .collect())
    }

    /// Stores runs trained elsewhere, with their metric series, atomically.
    pub async fn import_runs(&self, runs: &[ImportedRun]) -> Result<Vec<i64>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let mut ids = Vec::with_capacity(runs.len());
        for run in runs {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (name, source, status, config, parameterization, alpha, width, depth, lr, \
                 tokens, params_non_embedding, flops, flops_dense, final_train_loss, final_val_loss, dataset, \
                 created_by, finished_at) \
                 VALUES (?, 'imported', 'succeeded', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) RETURNING id",
            )
            .bind(&run.name)
            .bind(run.extra.to_string())
            .bind(&run.parameterization)
            .bind(run.alpha)
            .bind(run.width)
            .bind(run.depth)
            .bind(run.lr)
            .bind(run.tokens)
            .bind(run.params)
            .bind(run.flops)
            .bind(run.flops_dense)
            .bind(run.final_loss)
            .bind(run.final_loss)
            .bind(&run.dataset)
            .bind(&run.created_by)
            .fetch_one(&mut *tx)
            .await?;
            insert_tags(&mut tx, id, &run.tags).await?;
            insert_metrics(&mut tx, id, &run.metrics).await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// One run.
    pub async fn run(&self, id: i64) -> Result<RunRecord, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        Ok(run_from_row(&row)?)
    }

    /// Runs matching a query, and the total number of matches (for pagination).
    pub async fn runs(&self, query: &RunQuery) -> Result<(Vec<RunRecord>, i64), StoreError> {
        let mut select = QueryBuilder::<Sqlite>::new(format!("SELECT {RUN_COLUMNS} FROM runs"));
        push_where(&mut select, query);
        select.push(format!(
            " ORDER BY {} {} , id DESC LIMIT ",
            query.sort,
            if query.descending { "DESC" } else { "ASC" }
        ));
        select
            .push_bind(query.limit)
            .push(" OFFSET ")
            .push_bind(query.offset);
        let rows = select.build().fetch_all(&self.pool).await?;
        let runs = rows
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM runs");
        push_where(&mut count, query);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok((runs, total))
    }

    /// Deletes a run with its metrics, tags and job. A running job stops at its next step
    /// (its worker finds the run gone).
    pub async fn delete_run(&self, id: i64) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let deleted = sqlx::query("DELETE FROM runs WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Adds and removes tags of a run.
    pub async fn edit_tags(
        &self,
        id: i64,
        add: &[String],
        remove: &[String],
    ) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(id));
        }
        for tag in add {
            sqlx::query("INSERT OR IGNORE INTO run_tags (run_id, tag) VALUES (?, ?)")
                .bind(id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        for tag in remove {
            sqlx::query("DELETE FROM run_tags WHERE run_id = ? AND tag = ?")
                .bind(id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends metric rows in one transaction (a row at an existing step replaces it, so a
    /// re-run after an interruption rewrites the same deterministic steps).
    pub async fn append_metrics(
        &self,
        run_id: i64,
        points: &[MetricPoint],
    ) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (_turn, mut tx) = self.begin_write().await?;
        insert_metrics(&mut tx, run_id, points).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A run's whole metric series in step order, in memory: for runs known to be short. The
    /// API reads series through [`Store::metrics_page`] and [`Store::metrics_downsampled`].
    pub async fn metrics(&self, run_id: i64) -> Result<Vec<MetricPoint>, StoreError> {
        self.ensure_run(run_id).await?;
        let sql = format!("SELECT {POINT_COLUMNS} FROM metrics WHERE run_id = ? ORDER BY step");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(point_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Up to `limit` points of a run's series after step `after_step` (from the start if
    /// `None`), in step order, and the `after_step` of the next page (`None` at the end). Reads
    /// at most `limit + 1` rows.
    pub async fn metrics_page(
        &self,
        run_id: i64,
        after_step: Option<i64>,
        limit: usize,
    ) -> Result<MetricsPage, StoreError> {
        self.ensure_run(run_id).await?;
        let rows_wanted = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let query = match after_step {
            Some(after) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {POINT_COLUMNS} FROM metrics WHERE run_id = ? AND step > ? \
                 ORDER BY step LIMIT ?"
            )))
            .bind(run_id)
            .bind(after),
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {POINT_COLUMNS} FROM metrics WHERE run_id = ? ORDER BY step LIMIT ?"
            )))
            .bind(run_id),
        };
        let rows = query.bind(rows_wanted).fetch_all(&self.pool).await?;
        let mut points = rows
            .iter()
            .map(point_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_after_step = if points.len() > limit {
            points.truncate(limit);
            points.last().map(|p| p.step)
        } else {
            None
        };
        Ok(MetricsPage {
            points,
            next_after_step,
        })
    }

    /// A run's series downsampled to at most `target` points (`target >= 2`) while reading at
    /// most [`sample_budget`]`(target)` rows, however long the series:
    ///
    /// - the first and the last point are kept;
    /// - the steps strictly between them are cut into `(target - 2) / 2` equal step ranges
    ///   (buckets), and each keeps its point of lowest and of highest training loss (one point
    ///   if they coincide; a bucket where no point has a training loss keeps its first point);
    /// - when the first-to-last step range holds at most the budget of steps, every row is read,
    ///   so each bucket's extremes are exact; a longer series is sampled: the rows read are the
    ///   first row at or after each of `budget - 2` evenly spaced steps, so each bucket's
    ///   extremes are those of about `2 * budget / target` evenly spread rows of it (a spike
    ///   shorter than the spacing of the samples may be missed);
    /// - a series of at most `target` rows read comes back whole.
    pub async fn metrics_downsampled(
        &self,
        run_id: i64,
        target: usize,
    ) -> Result<Vec<MetricPoint>, StoreError> {
        self.ensure_run(run_id).await?;
        self.sample(run_id, target, SampledRows::All).await
    }

    /// A bounded view of a run's series for charts: [`Store::metrics_downsampled`] to
    /// `points`, merged with the run's validation points downsampled the same way (the rows that
    /// have a validation loss, with each bucket's lowest and highest validation loss) to
    /// `points`. At most `2 * points` points, in step order.
    pub async fn metrics_overview(
        &self,
        run_id: i64,
        points: usize,
    ) -> Result<Vec<MetricPoint>, StoreError> {
        self.ensure_run(run_id).await?;
        let mut merged = self.sample(run_id, points, SampledRows::All).await?;
        merged.extend(self.sample(run_id, points, SampledRows::Val).await?);
        merged.sort_by_key(|p| p.step);
        merged.dedup_by_key(|p| p.step);
        Ok(merged)
    }

    async fn ensure_run(&self, run_id: i64) -> Result<(), StoreError> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        exists.map(|_| ()).ok_or(StoreError::NotFound(run_id))
    }

    /// The downsampling behind [`Store::metrics_downsampled`], over all rows or the rows with a
    /// validation loss (through the partial index `metrics_val`).
    async fn sample(
        &self,
        run_id: i64,
        target: usize,
        rows: SampledRows,
    ) -> Result<Vec<MetricPoint>, StoreError> {
        let (index, only) = match rows {
            SampledRows::All => ("", ""),
            SampledRows::Val => ("INDEXED BY metrics_val", "AND val_loss IS NOT NULL"),
        };
        // Two single-ended index seeks: `MIN(step), MAX(step)` together would scan the run.
        let end = |order: &str| {
            format!(
                "SELECT step FROM metrics {index} WHERE run_id = ? {only} ORDER BY step {order} LIMIT 1"
            )
        };
        let first: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(end("ASC")))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        let last: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(end("DESC")))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new());
        };
        let key: fn(&MetricPoint) -> Option<f64> = match rows {
            SampledRows::All => |p: &MetricPoint| p.train_loss,
            SampledRows::Val => |p: &MetricPoint| p.val_loss,
        };
        let mut sampler = Downsampler::new(first, last, target, key);
        let budget = sample_budget(target);
        let span = i128::from(last) - i128::from(first) + 1;
        let mut stream = if span <= budget as i128 {
            // Steps are distinct integers: the range holds at most `budget` rows; read them all.
            let sql = format!(
                "SELECT {POINT_COLUMNS} FROM metrics {index} \
                 WHERE run_id = ?1 {only} AND step >= ?2 AND step <= ?3 ORDER BY step"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(run_id)
                .bind(first)
                .bind(last)
                .fetch(&self.pool)
        } else {
            // One index seek per probe: the first row at or after each probed step.
            let sql = format!(
                "SELECT {PROBED_COLUMNS} FROM json_each(?2) AS probe CROSS JOIN metrics AS m \
                 WHERE m.run_id = ?1 AND m.step = (SELECT s.step FROM metrics AS s {index} \
                 WHERE s.run_id = ?1 {only} AND s.step >= probe.value ORDER BY s.step LIMIT 1)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(run_id)
                .bind(probe_steps(first, last, budget))
                .fetch(&self.pool)
        };
        while let Some(row) = stream.next().await {
            sampler.push(point_from_row(&row?)?);
        }
        Ok(sampler.finish())
    }

    /// Claims the oldest queued job of a device this build trains on, for the server's own
    /// workers (no lease), and marks its run running.
    pub async fn claim_job(&self) -> Result<Option<ClaimedJob>, StoreError> {
        let devices: Vec<&str> = (crate::train::available_devices().into_iter())
            .map(|d| d.name())
            .collect();
        self.claim(None, &devices, None).await
    }

    /// Claims the oldest queued job of one of `devices`: for `worker` (its id) leased until
    /// now + `lease_secs`, for the server (`None`) without a lease. The run restarts from step
    /// 0, so the metrics an earlier attempt stored are deleted: the series never holds two
    /// attempts.
    pub(crate) async fn claim(
        &self,
        worker: Option<i64>,
        devices: &[&str],
        lease_secs: Option<f64>,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let devices =
            serde_json::to_string(devices).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (_turn, mut tx) = self.begin_write().await?;
        let job: Option<(i64, i64, i64, String)> = sqlx::query_as(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker_id = ?1, \
             lease_until = ?2 + ?3 \
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' \
             AND device IN (SELECT value FROM json_each(?4)) ORDER BY id LIMIT 1) \
             RETURNING id, run_id, attempts, (SELECT config FROM runs WHERE runs.id = jobs.run_id)",
        )
        .bind(worker)
        .bind(lease_secs.map(|_| unix_now()))
        .bind(lease_secs)
        .bind(devices)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((job_id, run_id, attempt, config)) = job else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE runs SET status = 'running', started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM metrics WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let config =
            serde_json::from_str(&config).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(Some(ClaimedJob {
            job_id,
            run_id,
            attempt,
            config,
        }))
    }

    /// Records how a job ended.
    pub async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: Result<&RunSummary, &str>,
    ) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        finish_in(&mut tx, job.job_id, job.run_id, outcome).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Asks a run's job to stop: a queued job is cancelled at once, a running one at its next
    /// step. Returns the run's status after the request.
    pub async fn request_cancel(&self, run_id: i64) -> Result<StoredStatus, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE id = ? AND status IN ('queued', 'interrupted')",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE jobs SET state = 'done' WHERE run_id = ? AND state = 'queued'")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE run_id = ? AND state = 'running'")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        drop(_turn);
        Ok(self.run(run_id).await?.status)
    }

    /// Whether a running job should stop: cancel requested, or its run deleted.
    pub async fn should_stop(&self, job_id: i64) -> Result<bool, StoreError> {
        let flag: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = ?")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(flag.is_none_or(|f| f != 0))
    }

    /// At start-up: jobs the server's own workers left `running` are released as interrupted (see
    /// [`Store::release_interrupted_job`]): queued again while they have attempts left (they
    /// restart from step 0, their stored metrics replaced), failed once they have been
    /// interrupted [`MAX_ATTEMPTS`] times. Jobs leased by remote workers keep their lease: the
    /// worker may still be training, and a lapsed lease releases the job. Returns how many were
    /// queued again.
    pub async fn requeue_interrupted(&self) -> Result<u64, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let running: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND worker_id IS NULL ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut requeued = 0;
        for job_id in running {
            let released = release_job(&mut tx, job_id, "server or worker crash").await?;
            if released == Some(Released::Requeued) {
                requeued += 1;
            }
        }
        tx.commit().await?;
        Ok(requeued)
    }

    /// Releases a claimed job that stopped without finishing (its server or worker crashed;
    /// `reason` says how, e.g. `server or worker crash`). Its claim counted as an attempt: with
    /// fewer than [`MAX_ATTEMPTS`] attempts the run becomes `interrupted` and its job is queued
    /// again; on its last attempt the run ends `failed` with the error
    /// `interrupted N times (reason); not retried again` and the job is done, so the queue moves
    /// on. A job whose cancellation was requested ends `cancelled` instead. Returns what was
    /// done, or `None` if the job is not running (already released or finished).
    pub async fn release_interrupted_job(
        &self,
        job_id: i64,
        reason: &str,
    ) -> Result<Option<Released>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let released = release_job(&mut tx, job_id, reason).await?;
        tx.commit().await?;
        Ok(released)
    }
}

/// What [`Store::release_interrupted_job`] did with a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Queued again (its run is `interrupted`).
    Requeued,
    /// Interrupted on its last attempt: its run is `failed`.
    Failed,
    /// Its cancellation had been requested: its run is `cancelled`.
    Cancelled,
}

impl Released {
    /// The run's status after the release. A job a worker handed back is `queued`; one
    /// released after a crash or a lapsed lease is `interrupted` (both wait in the queue).
    pub fn status(self) -> StoredStatus {
        match self {
            Released::Requeued => StoredStatus::Interrupted,
            Released::Failed => StoredStatus::Failed,
            Released::Cancelled => StoredStatus::Cancelled,
        }
    }
}

/// The release of one interrupted job, inside a write transaction.
async fn release_job(
    tx: &mut Transaction<'_>,
    job_id: i64,
    reason: &str,
) -> Result<Option<Released>, StoreError> {
    let job: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT run_id, attempts, cancel_requested FROM jobs WHERE id = ? AND state = 'running'",
    )
    .bind(job_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((run_id, attempts, cancel_requested)) = job else {
        return Ok(None);
    };
    let released = if cancel_requested != 0 {
        Released::Cancelled
    } else if attempts >= MAX_ATTEMPTS {
        Released::Failed
    } else {
        Released::Requeued
    };
    let finished = "finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    let (run_update, job_state) = match released {
        Released::Requeued => (
            "UPDATE runs SET status = 'interrupted' WHERE id = ?".to_string(),
            "queued",
        ),
        Released::Cancelled => (
            format!("UPDATE runs SET status = 'cancelled', {finished} WHERE id = ?"),
            "done",
        ),
        Released::Failed => (
            format!("UPDATE runs SET status = 'failed', error = ?, {finished} WHERE id = ?"),
            "done",
        ),
    };
    let mut update = sqlx::query(sqlx::AssertSqlSafe(run_update));
    if released == Released::Failed {
        tracing::warn!("run {run_id} was interrupted {attempts} times; it is not retried again");
        update = update.bind(format!(
            "interrupted {attempts} times ({reason}); not retried again"
        ));
    }
    update.bind(run_id).execute(&mut **tx).await?;
    sqlx::query("UPDATE jobs SET state = ? WHERE id = ?")
        .bind(job_state)
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(Some(released))
}

type Transaction<'a> = sqlx::Transaction<'a, Sqlite>;

/// Records how job `job_id` of run `run_id` ended, inside a write transaction.
async fn finish_in(
    tx: &mut Transaction<'_>,
    job_id: i64,
    run_id: i64,
    outcome: Result<&RunSummary, &str>,
) -> Result<(), StoreError> {
    let update = match outcome {
        Ok(s) => sqlx::query(
            "UPDATE runs SET status = ?, finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
             final_train_loss = ?, final_val_loss = ?, tokens = ?, flops = ?, flops_dense = ?, \
             flops_unembedding = ?, flops_attention = ?, tokens_per_sec = ?, params_non_embedding = ? \
             WHERE id = ?",
        )
        .bind(StoredStatus::from(s.status).name())
        .bind(Some(s.final_train_loss).filter(|l| l.is_finite()))
        .bind(s.final_val_loss)
        .bind(s.tokens as i64)
        .bind(s.flops)
        .bind(s.flops_breakdown.dense)
        .bind(s.flops_breakdown.unembedding)
        .bind(s.flops_breakdown.attention)
        .bind(s.tokens_per_sec)
        .bind(s.params_non_embedding as i64)
        .bind(run_id),
        Err(message) => sqlx::query(
            "UPDATE runs SET status = 'failed', finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
             error = ? WHERE id = ?",
        )
        .bind(message)
        .bind(run_id),
    };
    update.execute(&mut **tx).await?;
    sqlx::query("UPDATE jobs SET state = 'done', lease_until = NULL WHERE id = ?")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_local_run(tx: &mut Transaction<'_>, new: &NewRun) -> Result<i64, StoreError> {
    let c = &new.config;
    let config = serde_json::to_string(c).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let vocab = c.vocab.or(match &c.data {
        crate::data::DataSource::Builtin { vocab, .. }
        | crate::data::DataSource::NanoGpt { vocab, .. } => Some(*vocab),
        crate::data::DataSource::Text {
            tokenizer: None, ..
        } => Some(256),
        crate::data::DataSource::Text {
            tokenizer: Some(_), ..
        } => None,
    });
    let tokens = c.total_steps().map(|s| s * c.tokens_per_step()).ok();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (name, source, status, config, parameterization, alpha, width, depth, d_head, \
         context, vocab, lr, init_std, eps, weight_decay, batch, tokens, seed, dataset, sweep_id, \
         params_non_embedding, created_by) \
         VALUES (?, 'local', 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&new.name)
    .bind(config)
    .bind(c.parameterization.name())
    .bind(c.parameterization.depth_alpha(c.alpha).ok().flatten())
    .bind(c.width as i64)
    .bind(c.depth as i64)
    .bind(c.d_head as i64)
    .bind(c.context as i64)
    .bind(vocab.map(|v| v as i64))
    .bind(c.lr)
    .bind(c.init_std)
    .bind(c.eps)
    .bind(c.weight_decay)
    .bind(c.batch as i64)
    .bind(tokens.map(|t| t as i64))
    .bind(c.seed as i64)
    .bind(dataset_name(c))
    .bind(new.sweep_id)
    .bind(c.params_non_embedding() as i64)
    .bind(&new.created_by)
    .fetch_one(&mut **tx)
    .await?;
    insert_tags(tx, id, &new.tags).await?;
    sqlx::query("INSERT INTO jobs (run_id, state, device) VALUES (?, 'queued', ?)")
        .bind(id)
        .bind(c.device.name())
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Copies the finished run `source` into `new`'s sweep (with `new`'s name, tags and creator),
/// with its metric series; the copy records `reused_from = source`.
async fn copy_run(tx: &mut Transaction<'_>, source: i64, new: &NewRun) -> Result<i64, StoreError> {
    macro_rules! copied {
        () => {
            "source, status, config, parameterization, alpha, width, depth, d_head, context, \
             vocab, lr, init_std, eps, weight_decay, batch, tokens, seed, dataset, started_at, \
             finished_at, final_train_loss, final_val_loss, params_non_embedding, flops, \
             flops_dense, flops_unembedding, flops_attention, tokens_per_sec, error"
        };
    }
    let id: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO runs (name, sweep_id, created_by, reused_from, ",
        copied!(),
        ") SELECT ?, ?, ?, id, ",
        copied!(),
        " FROM runs WHERE id = ? RETURNING id"
    ))
    .bind(&new.name)
    .bind(new.sweep_id)
    .bind(&new.created_by)
    .bind(source)
    .fetch_optional(&mut **tx)
    .await?;
    let id = id.ok_or(StoreError::NotFound(source))?;
    sqlx::query(
        "INSERT INTO metrics (run_id, step, tokens, flops, train_loss, val_loss, lr, wall_secs) \
         SELECT ?, step, tokens, flops, train_loss, val_loss, lr, wall_secs FROM metrics WHERE run_id = ?",
    )
    .bind(id)
    .bind(source)
    .execute(&mut **tx)
    .await?;
    insert_tags(tx, id, &new.tags).await?;
    Ok(id)
}

async fn insert_tags(
    tx: &mut Transaction<'_>,
    run_id: i64,
    tags: &[String],
) -> Result<(), StoreError> {
    for tag in tags {
        sqlx::query("INSERT OR IGNORE INTO run_tags (run_id, tag) VALUES (?, ?)")
            .bind(run_id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_metrics(
    tx: &mut Transaction<'_>,
    run_id: i64,
    points: &[MetricPoint],
) -> Result<(), StoreError> {
    // 8 bound values per row stays under SQLite's 32766-parameter limit at 100 rows per statement.
    for chunk in points.chunks(100) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT OR REPLACE INTO metrics (run_id, step, tokens, flops, train_loss, val_loss, lr, wall_secs) ",
        );
        insert.push_values(chunk, |mut b, p| {
            b.push_bind(run_id)
                .push_bind(p.step)
                .push_bind(p.tokens)
                .push_bind(p.flops)
                .push_bind(p.train_loss)
                .push_bind(p.val_loss)
                .push_bind(p.lr)
                .push_bind(p.wall_secs);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bounded reads of metric series

/// The columns of a [`MetricPoint`], as [`point_from_row`] reads them.
const POINT_COLUMNS: &str = "step, tokens, flops, train_loss, val_loss, lr, wall_secs";
/// The same columns of the table aliased `m`.
const PROBED_COLUMNS: &str =
    "m.step, m.tokens, m.flops, m.train_loss, m.val_loss, m.lr, m.wall_secs";

/// Rows a downsampled read may look at per point it returns (see [`Store::metrics_downsampled`]).
pub const SAMPLES_PER_POINT: usize = 8;
/// The most rows one downsampled read looks at, however many points it returns.
pub const MAX_SAMPLES: usize = 100_000;

/// How many rows a downsampled read of `target` points looks at:
/// `SAMPLES_PER_POINT * target`, at most [`MAX_SAMPLES`] (but never fewer than `target`).
pub fn sample_budget(target: usize) -> usize {
    target
        .saturating_mul(SAMPLES_PER_POINT)
        .min(MAX_SAMPLES)
        .max(target)
        .max(2)
}

fn point_from_row(row: &SqliteRow) -> Result<MetricPoint, sqlx::Error> {
    Ok(MetricPoint {
        step: row.try_get("step")?,
        tokens: row.try_get("tokens")?,
        flops: row.try_get("flops")?,
        train_loss: row.try_get("train_loss")?,
        val_loss: row.try_get("val_loss")?,
        lr: row.try_get("lr")?,
        wall_secs: row.try_get("wall_secs")?,
    })
}

/// Which rows of a run a downsampled read considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SampledRows {
    /// Every row; buckets keep their extremes of training loss.
    All,
    /// The rows with a validation loss; buckets keep their extremes of validation loss.
    Val,
}

/// `count >= 2` probe steps for a sampled read of `[first, last]` (with `last - first + 1 >
/// count`): `first`, `count - 2` evenly spaced steps strictly between, and `last`, as a JSON
/// array for `json_each`.
fn probe_steps(first: i64, last: i64, count: usize) -> String {
    let inner = count.saturating_sub(2) as i128;
    let span = i128::from(last) - i128::from(first) - 1;
    let mut json = String::with_capacity(count * 12);
    json.push('[');
    json.push_str(&first.to_string());
    for j in 0..inner {
        let step = i128::from(first) + 1 + j * span / inner;
        json.push(',');
        json.push_str(&step.to_string());
    }
    json.push(',');
    json.push_str(&last.to_string());
    json.push(']');
    json
}

/// One page of a run's series.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsPage {
    pub points: Vec<MetricPoint>,
    /// The `after_step` of the next page; `None` at the end of the series.
    pub next_after_step: Option<i64>,
}

/// Downsamples a series fed in step order, in memory proportional to its output: keeps at most
/// `target` points, namely the first (at step `first`) and last (at step `last`) points and,
/// in each of `(target - 2) / 2` equal ranges of the steps strictly between, the points where
/// `key` (a loss) is lowest and highest; a bucket where no point has the key keeps its first
/// point. When at most `target` points are fed, all of them are kept. Points outside
/// `[first, last]`, or not after the previous point, are ignored.
pub struct Downsampler {
    first: i64,
    last: i64,
    target: usize,
    key: fn(&MetricPoint) -> Option<f64>,
    previous: Option<i64>,
    /// Whether more than `target` points have been fed.
    overflowed: bool,
    /// Every point so far, while there are at most `target`.
    kept: Vec<MetricPoint>,
    /// Once there are more: the first and last points and the buckets.
    head: Option<MetricPoint>,
    tail: Option<MetricPoint>,
    buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    lowest: Option<(f64, MetricPoint)>,
    highest: Option<(f64, MetricPoint)>,
    first: Option<MetricPoint>,
}

impl Downsampler {
    /// A downsampler of the series from step `first` to step `last`, to `target` points.
    pub fn new(
        first: i64,
        last: i64,
        target: usize,
        key: fn(&MetricPoint) -> Option<f64>,
    ) -> Downsampler {
        Downsampler {
            first,
            last,
            target,
            key,
            previous: None,
            overflowed: false,
            kept: Vec::new(),
            head: None,
            tail: None,
            buckets: Vec::new(),
        }
    }

    /// Feeds the next point.
    pub fn push(&mut self, point: MetricPoint) {
        if point.step < self.first
            || point.step > self.last
            || self.previous.is_some_and(|p| point.step <= p)
        {
            return;
        }
        self.previous = Some(point.step);
        if !self.overflowed {
            if self.kept.len() < self.target {
                self.kept.push(point);
                return;
            }
            // More than `target` points: from now on, keep the ends and extremes only.
            self.overflowed = true;
            self.buckets = vec![Bucket::default(); self.target.saturating_sub(2) / 2];
            for kept in std::mem::take(&mut self.kept) {
                self.place(kept);
            }
        }
        self.place(point);
    }

    fn place(&mut self, point: MetricPoint) {
        if point.step == self.first {
            self.head = Some(point);
            return;
        }
        if point.step == self.last {
            self.tail = Some(point);
            return;
        }
        let inner = i128::from(self.last) - i128::from(self.first) - 1;
        if self.buckets.is_empty() || inner <= 0 {
            return;
        }
        let offset = i128::from(point.step) - i128::from(self.first) - 1;
        let count = self.buckets.len();
        let index = (offset * count as i128 / inner) as usize;
        let bucket = &mut self.buckets[index.min(count - 1)];
        match (self.key)(&point).filter(|v| !v.is_nan()) {
            Some(value) => {
                if bucket.lowest.as_ref().is_none_or(|(low, _)| value < *low) {
                    bucket.lowest = Some((value, point.clone()));
                }
                if bucket
                    .highest
                    .as_ref()
                    .is_none_or(|(high, _)| value > *high)
                {
                    bucket.highest = Some((value, point));
                }
            }
            None => {
                if bucket.first.is_none() {
                    bucket.first = Some(point);
                }
            }
        }
    }

    /// The kept points, in step order.
    pub fn finish(self) -> Vec<MetricPoint> {
        if !self.overflowed {
            return self.kept;
        }
        let mut out = Vec::with_capacity(self.target);
        out.extend(self.head);
        for bucket in self.buckets {
            match (bucket.lowest, bucket.highest) {
                (Some((_, low)), Some((_, high))) => {
                    let (a, b) = if low.step <= high.step {
                        (low, high)
                    } else {
                        (high, low)
                    };
                    let same = a.step == b.step;
                    out.push(a);
                    if !same {
                        out.push(b);
                    }
                }
                _ => out.extend(bucket.first),
            }
        }
        out.extend(self.tail);
        out
    }
}

fn push_where(builder: &mut QueryBuilder<Sqlite>, query: &RunQuery) {
    let mut first = true;
    let mut and = |b: &mut QueryBuilder<Sqlite>| {
        b.push(if first { " WHERE " } else { " AND " });
        first = false;
    };
    for condition in &query.conditions {
        and(builder);
        let op = match condition.comparison {
            Comparison::Eq => "=",
            Comparison::Ne => "!=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::In => "IN",
        };
        builder.push(format!("{} {op} ", condition.column));
        if condition.comparison == Comparison::In {
            builder.push("(");
            let mut values = builder.separated(", ");
            for v in &condition.values {
                match v {
                    FilterValue::Int(i) => values.push_bind(*i),
                    FilterValue::Real(r) => values.push_bind(*r),
                    FilterValue::Text(t) => values.push_bind(t.clone()),
                };
            }
            builder.push(")");
        } else {
            match &condition.values[0] {
                FilterValue::Int(i) => builder.push_bind(*i),
                FilterValue::Real(r) => builder.push_bind(*r),
                FilterValue::Text(t) => builder.push_bind(t.clone()),
            };
        }
    }
    for tag in &query.tags {
        and(builder);
        builder
            .push("EXISTS (SELECT 1 FROM run_tags WHERE run_tags.run_id = runs.id AND run_tags.tag = ")
            .push_bind(tag.clone())
            .push(")");
    }
}

// ---------------------------------------------------------------------------------------------
// Diagnostics
//
// Coordinate checks and linearization checks run in the background, one at a time: queued ->
// running -> succeeded (with a result) or failed (with the error); a diagnostic left queued or
// running by a stopped server becomes interrupted at the next start. Their options and results
// are JSON; `sweep_id` ties a diagnostic to the study that launched it.

/// The lifecycle of a stored diagnostic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Queued or running when the server stopped; it does not run again.
    Interrupted,
}

impl DiagnosticStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [DiagnosticStatus; 5] = [
        DiagnosticStatus::Queued,
        DiagnosticStatus::Running,
        DiagnosticStatus::Succeeded,
        DiagnosticStatus::Failed,
        DiagnosticStatus::Interrupted,
    ];

    /// The value in the `status` column.
    pub fn name(self) -> &'static str {
        match self {
            DiagnosticStatus::Queued => "queued",
            DiagnosticStatus::Running => "running",
            DiagnosticStatus::Succeeded => "succeeded",
            DiagnosticStatus::Failed => "failed",
            DiagnosticStatus::Interrupted => "interrupted",
        }
    }

    fn parse(name: &str) -> DiagnosticStatus {
        DiagnosticStatus::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or(DiagnosticStatus::Failed)
    }

    /// Whether the diagnostic has ended (nothing will change it any more).
    pub fn is_final(self) -> bool {
        !matches!(self, DiagnosticStatus::Queued | DiagnosticStatus::Running)
    }
}

/// A diagnostic as stored.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DiagnosticRecord {
    pub id: i64,
    /// `coord-depth`, `coord-width` or `linearization`.
    pub kind: String,
    pub status: DiagnosticStatus,
    /// The options it runs with, every default filled in.
    #[schema(value_type = Object)]
    pub options: Value,
    /// The result (succeeded diagnostics only): for a coordinate check `axis`, `rows` (mean
    /// absolute activations per parameterization, size and step) and `slopes` (growth exponent
    /// of the final residual at step 1 and the last step); for a linearization check `lr`,
    /// `finite_difference_step`, `rows` (distance per parameterization and depth) and `slopes`
    /// (exponent of distance against depth).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it failed (failed diagnostics only).
    pub error: Option<String>,
    /// The study it belongs to, if any.
    pub sweep_id: Option<i64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A diagnostic claimed by the runner.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedDiagnostic {
    pub id: i64,
    pub kind: String,
    pub options: Value,
}

const DIAGNOSTIC_COLUMNS: &str =
    "id, kind, status, config, result, error, sweep_id, created_at, started_at, finished_at";

fn diagnostic_from_row(row: &SqliteRow) -> Result<DiagnosticRecord, sqlx::Error> {
    let options: String = row.try_get("config")?;
    let result: String = row.try_get("result")?;
    let status: String = row.try_get("status")?;
    Ok(DiagnosticRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: DiagnosticStatus::parse(&status),
        options: serde_json::from_str(&options).unwrap_or(Value::Null),
        result: serde_json::from_str(&result)
            .ok()
            .filter(|v: &Value| !v.is_null()),
        error: row.try_get("error")?,
        sweep_id: row.try_get("sweep_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl Store {
    /// Stores a queued diagnostic of `kind` with its (validated) options; `sweep_id`, if given,
    /// must name an existing sweep.
    pub async fn create_diagnostic(
        &self,
        kind: &str,
        options: &Value,
        sweep_id: Option<i64>,
    ) -> Result<i64, StoreError> {
        if let Some(sweep) = sweep_id {
            self.sweep(sweep).await?;
        }
        let _turn = self.write_turn().await;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO diagnostics (kind, config, result, status, sweep_id) \
             VALUES (?, ?, 'null', 'queued', ?) RETURNING id",
        )
        .bind(kind)
        .bind(options.to_string())
        .bind(sweep_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// One diagnostic, or `None` if there is no such id.
    pub async fn diagnostic(&self, id: i64) -> Result<Option<DiagnosticRecord>, StoreError> {
        let sql = format!("SELECT {DIAGNOSTIC_COLUMNS} FROM diagnostics WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(diagnostic_from_row).transpose()?)
    }

    /// The newest `limit` diagnostics, newest first.
    pub async fn diagnostics(&self, limit: i64) -> Result<Vec<DiagnosticRecord>, StoreError> {
        let sql = format!("SELECT {DIAGNOSTIC_COLUMNS} FROM diagnostics ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(diagnostic_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The diagnostics of sweep (study) `sweep_id`, oldest first.
    pub async fn diagnostics_of_sweep(
        &self,
        sweep_id: i64,
    ) -> Result<Vec<DiagnosticRecord>, StoreError> {
        let sql =
            format!("SELECT {DIAGNOSTIC_COLUMNS} FROM diagnostics WHERE sweep_id = ? ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(sweep_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(diagnostic_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Claims the oldest queued diagnostic and marks it running.
    pub async fn claim_diagnostic(&self) -> Result<Option<ClaimedDiagnostic>, StoreError> {
        let _turn = self.write_turn().await;
        let row: Option<(i64, String, String)> = sqlx::query_as(
            "UPDATE diagnostics SET status = 'running', \
             started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE id = (SELECT id FROM diagnostics WHERE status = 'queued' ORDER BY id LIMIT 1) \
             RETURNING id, kind, config",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, kind, options)| ClaimedDiagnostic {
            id,
            kind,
            options: serde_json::from_str(&options).unwrap_or(Value::Null),
        }))
    }

    /// Records how a running diagnostic ended: its result, or the error.
    pub async fn finish_diagnostic(
        &self,
        id: i64,
        outcome: Result<&Value, &str>,
    ) -> Result<(), StoreError> {
        let update = match outcome {
            Ok(result) => sqlx::query(
                "UPDATE diagnostics SET status = 'succeeded', result = ?, error = NULL, \
                 finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            )
            .bind(result.to_string()),
            Err(message) => sqlx::query(
                "UPDATE diagnostics SET status = 'failed', error = ?, \
                 finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            )
            .bind(message),
        };
        let _turn = self.write_turn().await;
        update.bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// At start-up: diagnostics left queued or running by a stopped server become
    /// `interrupted` (they do not run again; launch them anew). Returns how many.
    pub async fn interrupt_diagnostics(&self) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        Ok(sqlx::query(
            "UPDATE diagnostics SET status = 'interrupted', \
             finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE status IN ('queued', 'running')",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

impl Store {
    /// The connection pool, for storage code kept beside its domain (tokens in [`crate::auth`]).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_evenly_spaced_strictly_inside_the_ends() {
        let probes: Vec<i64> = serde_json::from_str(&probe_steps(10, 1009, 12)).unwrap();
        assert_eq!(probes.len(), 12);
        assert_eq!((probes[0], probes[11]), (10, 1009));
        assert!(probes.windows(2).all(|w| w[0] < w[1]));
        let gaps: Vec<i64> = probes[1..11].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (99..=100).contains(g)), "{gaps:?}");
        // Extreme steps do not overflow.
        let probes: Vec<i64> = serde_json::from_str(&probe_steps(i64::MIN, i64::MAX, 5)).unwrap();
        assert_eq!((probes[0], probes[4]), (i64::MIN, i64::MAX));
        assert!(probes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn budgets_grow_with_the_target_up_to_a_cap() {
        assert_eq!(sample_budget(2), 16);
        assert_eq!(sample_budget(1000), 8000);
        assert_eq!(sample_budget(100_000), MAX_SAMPLES);
    }
}
