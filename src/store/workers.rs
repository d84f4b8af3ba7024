//! Remote workers and their leases (migration `0007_workers.sql`).
//!
//! A worker registers with its name, host and device, then claims queued jobs of its device
//! ([`Store::claim`]). Its claim is a lease until `lease_until`; every heartbeat or metric batch
//! of the claimed attempt pushes the lease forward ([`Store::renew_lease`]). A job whose lease
//! lapses is released like a crashed one ([`Store::expire_leases`]): queued again as
//! `interrupted` with the attempt counted, failed after [`super::MAX_ATTEMPTS`] attempts. The
//! next claim deletes the metrics the earlier attempt stored, and requests naming an attempt
//! that is no longer the job's are refused ([`LeaseError::Lost`]), so the stored series is
//! always one attempt's. A worker that leaves (SIGTERM) hands its job back at once, without
//! counting the attempt ([`Store::leave`]).

use super::{
    MetricPoint, Released, Store, StoreError, StoredStatus, finish_in, insert_metrics, release_job,
};
use crate::train::RunSummary;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

/// Seconds since the Unix epoch, as leases and heartbeats are stored.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow, utoipa::ToSchema)]
pub struct WorkerRecord {
    pub id: i64,
    pub name: String,
    /// The machine it runs on, as it reported it.
    pub host: String,
    /// `cpu` or `gpu`: the runs it claims.
    pub device: String,
    /// The token that registered it (`null` with authentication off).
    pub created_by: Option<String>,
    pub registered_at: String,
    /// Unix seconds of its last request.
    pub last_seen: f64,
    /// When it left (SIGTERM, `--max-runs` reached); `null` while registered.
    pub left_at: Option<String>,
    /// Training throughput of its current or last run.
    pub tokens_per_sec: Option<f64>,
    /// Runs it finished (succeeded, diverged, failed or cancelled).
    pub runs_done: i64,
    /// The run it holds a lease on.
    pub current_run_id: Option<i64>,
}

/// Why a worker's request about a claimed run was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The run is no longer this attempt's: the lease lapsed (and the run was released or
    /// claimed again), the run was deleted, or it already ended.
    #[error(
        "run {run_id} is no longer leased to worker {worker_id} (attempt {attempt}): its lease lapsed or the run ended"
    )]
    Lost {
        worker_id: i64,
        run_id: i64,
        attempt: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LeaseError {
    fn from(e: sqlx::Error) -> Self {
        LeaseError::Store(e.into())
    }
}

const WORKER_COLUMNS: &str = "workers.*, (SELECT run_id FROM jobs WHERE jobs.worker_id = \
    workers.id AND jobs.state = 'running' ORDER BY jobs.id LIMIT 1) AS current_run_id";

/// The most workers a listing returns.
pub const MAX_LISTED_WORKERS: i64 = 1000;

impl Store {
    /// Registers a worker; returns its id.
    pub async fn register_worker(
        &self,
        name: &str,
        host: &str,
        device: &str,
        created_by: Option<&str>,
    ) -> Result<i64, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO workers (name, host, device, created_by, last_seen) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(name)
        .bind(host)
        .bind(device)
        .bind(created_by)
        .bind(unix_now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A worker by id.
    pub async fn worker(&self, id: i64) -> Result<Option<WorkerRecord>, StoreError> {
        let sql = format!("SELECT {WORKER_COLUMNS} FROM workers WHERE id = ?");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The workers, registered ones first, then newest first (at most
    /// [`MAX_LISTED_WORKERS`]).
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let sql = format!(
            "SELECT {WORKER_COLUMNS} FROM workers ORDER BY left_at IS NOT NULL, id DESC LIMIT ?"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(MAX_LISTED_WORKERS)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The devices of the workers seen within `since_secs` that have not left.
    pub async fn live_devices(&self, since_secs: f64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT device FROM workers WHERE left_at IS NULL AND last_seen >= ?",
        )
        .bind(unix_now() - since_secs)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a sign of life of a registered worker (and its throughput, when given); returns
    /// its device, or `None` when it is unknown or has left.
    pub async fn touch_worker(
        &self,
        id: i64,
        tokens_per_sec: Option<f64>,
    ) -> Result<Option<String>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let device = sqlx::query_scalar(
            "UPDATE workers SET last_seen = ?, tokens_per_sec = COALESCE(?, tokens_per_sec) \
             WHERE id = ? AND left_at IS NULL RETURNING device",
        )
        .bind(unix_now())
        .bind(tokens_per_sec)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(device)
    }

    /// Renews the lease of `attempt` of run `run_id` held by `worker_id` for `lease_secs`,
    /// stores the metric points it sends and the worker's sign of life (and throughput, when
    /// given), in one transaction. Returns whether the run's cancellation was requested (the
    /// worker stops at its next step).
    pub async fn renew_lease(
        &self,
        worker_id: i64,
        run_id: i64,
        attempt: i64,
        lease_secs: f64,
        points: &[MetricPoint],
        tokens_per_sec: Option<f64>,
    ) -> Result<bool, LeaseError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let now = unix_now();
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET lease_until = ? WHERE run_id = ? AND state = 'running' \
             AND worker_id = ? AND attempts = ? RETURNING cancel_requested",
        )
        .bind(now + lease_secs)
        .bind(run_id)
        .bind(worker_id)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(cancel) = cancel else {
            return Err(LeaseError::Lost {
                worker_id,
                run_id,
                attempt,
            });
        };
        insert_metrics(&mut tx, run_id, points).await?;
        sqlx::query(
            "UPDATE workers SET last_seen = ?, tokens_per_sec = COALESCE(?, tokens_per_sec) \
             WHERE id = ?",
        )
        .bind(now)
        .bind(tokens_per_sec)
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(cancel != 0)
    }

    /// Records how a worker's attempt ended, with its last metric points (its lease checked as
    /// in [`Store::renew_lease`]), in one transaction.
    pub async fn finish_leased(
        &self,
        worker_id: i64,
        run_id: i64,
        attempt: i64,
        points: &[MetricPoint],
        outcome: Result<&RunSummary, &str>,
    ) -> Result<(), LeaseError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let job_id: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE run_id = ? AND state = 'running' AND worker_id = ? \
             AND attempts = ?",
        )
        .bind(run_id)
        .bind(worker_id)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job_id) = job_id else {
            return Err(LeaseError::Lost {
                worker_id,
                run_id,
                attempt,
            });
        };
        insert_metrics(&mut tx, run_id, points).await?;
        finish_in(&mut tx, job_id, run_id, outcome).await?;
        sqlx::query(
            "UPDATE workers SET last_seen = ?, runs_done = runs_done + 1, \
             tokens_per_sec = COALESCE(?, tokens_per_sec) WHERE id = ?",
        )
        .bind(unix_now())
        .bind(outcome.ok().map(|s| s.tokens_per_sec))
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A worker leaves: the job it holds goes back to the queue at once, its attempt not
    /// counted (or ends `cancelled` if its cancellation was requested). Returns the run handed
    /// back and its status, if it held one.
    pub async fn leave(&self, worker_id: i64) -> Result<Option<(i64, StoredStatus)>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let held: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT id, run_id, cancel_requested FROM jobs WHERE worker_id = ? \
             AND state = 'running' ORDER BY id LIMIT 1",
        )
        .bind(worker_id)
        .fetch_optional(&mut *tx)
        .await?;
        let handed_back = match held {
            Some((job_id, run_id, 0)) => {
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', attempts = attempts - 1, \
                     worker_id = NULL, lease_until = NULL WHERE id = ?",
                )
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE runs SET status = 'queued' WHERE id = ?")
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                Some((run_id, StoredStatus::Queued))
            }
            Some((job_id, run_id, _)) => {
                let released = release_job(&mut tx, job_id, "its worker left").await?;
                released.map(|r| (run_id, r.status()))
            }
            None => None,
        };
        sqlx::query(
            "UPDATE workers SET left_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), last_seen = ? \
             WHERE id = ? AND left_at IS NULL",
        )
        .bind(unix_now())
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(handed_back)
    }

    /// Releases every job whose lease has lapsed, as a crash ([`Store::release_interrupted_job`]
    /// counts the attempt). Returns each released run and what became of it.
    pub async fn expire_leases(&self) -> Result<Vec<(i64, Released)>, StoreError> {
        let now = unix_now();
        // A cheap read first: most calls find nothing to release.
        let lapsed: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT jobs.id, jobs.run_id, COALESCE(workers.name, '?') FROM jobs \
             LEFT JOIN workers ON workers.id = jobs.worker_id \
             WHERE jobs.state = 'running' AND jobs.lease_until < ?",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        if lapsed.is_empty() {
            return Ok(Vec::new());
        }
        let (_turn, mut tx) = self.begin_write().await?;
        let mut released = Vec::new();
        for (job_id, run_id, worker) in lapsed {
            // Renewed since the read: still leased.
            let still_lapsed: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE id = ? AND state = 'running' AND lease_until < ?",
            )
            .bind(job_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if still_lapsed.is_none() {
                continue;
            }
            let reason = format!("the lease of worker '{worker}' lapsed");
            if let Some(what) = release_job(&mut tx, job_id, &reason).await? {
                tracing::warn!("run {run_id}: {reason}");
                released.push((run_id, what));
            }
        }
        tx.commit().await?;
        Ok(released)
    }
}
