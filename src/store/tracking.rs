//! Runs tracked through the MLflow-compatible API: experiments, and the params, tags and metric
//! values those runs log (migration `0006_mlflow.sql`).
//!
//! A tracked run is a row of `runs` (source `imported`) with an experiment. Params and metrics
//! with a shapewise meaning fill its columns and its metric series as they arrive
//! ([`COLUMN_PARAMS`], [`SeriesKey`]); every value is also kept as logged, so the MLflow API
//! reads back exactly what was written. When the run ends, its final losses, tokens and FLOPs
//! are derived from what it logged, and it takes part in every analysis.

use super::{MetricPoint, Store, StoreError, StoredStatus, insert_tags};
use sqlx::{QueryBuilder, Row, Sqlite};

/// An MLflow experiment. Its runs carry its name as a shapewise tag.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    pub id: i64,
    pub name: String,
    pub artifact_location: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub updated_ms: i64,
    pub tags: Vec<(String, String)>,
}

/// One logged metric value.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedMetric {
    pub key: String,
    /// NaN when the client logged NaN.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub step: i64,
}

/// What one request logs to a run.
#[derive(Clone, Debug, Default)]
pub struct LogBatch {
    pub metrics: Vec<LoggedMetric>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

/// A tracked run as the MLflow API shows it.
#[derive(Clone, Debug)]
pub struct TrackedRun {
    pub id: i64,
    pub name: Option<String>,
    pub experiment_id: i64,
    pub status: StoredStatus,
    pub user: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// The latest value of each metric (highest step, then latest timestamp).
    pub metrics: Vec<LoggedMetric>,
}

/// The params that fill a run's columns, with the column and whether it holds an integer.
/// `params` and `n_params` both name the non-embedding parameter count.
pub const COLUMN_PARAMS: [(&str, &str, bool); 10] = [
    ("width", "width", true),
    ("depth", "depth", true),
    ("lr", "lr", false),
    ("params", "params_non_embedding", true),
    ("n_params", "params_non_embedding", true),
    ("context", "context", true),
    ("vocab", "vocab", true),
    ("tokens", "tokens", true),
    ("alpha", "alpha", false),
    ("batch", "batch", true),
];

/// The metrics that fill a run's metric series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesKey {
    TrainLoss,
    ValLoss,
    Tokens,
    Flops,
}

impl SeriesKey {
    /// `train_loss` (or `loss`), `val_loss`, `tokens`, `flops`.
    pub fn of(key: &str) -> Option<SeriesKey> {
        match key {
            "train_loss" | "loss" => Some(SeriesKey::TrainLoss),
            "val_loss" => Some(SeriesKey::ValLoss),
            "tokens" => Some(SeriesKey::Tokens),
            "flops" => Some(SeriesKey::Flops),
            _ => None,
        }
    }
}

/// A param value as the number its column holds: integers accept `64`, `64.0` and `6.4e1`
/// (whole numbers only); `None` when it is not one (the param is then only kept as logged).
fn column_value(value: &str, integer: bool) -> Option<f64> {
    let x: f64 = value.trim().parse().ok().filter(|x: &f64| x.is_finite())?;
    if integer && (x.fract() != 0.0 || !(0.0..=9.0e15).contains(&x)) {
        return None;
    }
    Some(x)
}

/// The metric points a batch's series metrics make, one per step, in step order: the values
/// of each step merged (tokens and FLOPs 0 where not logged; the stored row keeps the larger).
pub fn series_points(metrics: &[LoggedMetric]) -> Vec<MetricPoint> {
    let mut by_step: std::collections::BTreeMap<i64, MetricPoint> = Default::default();
    for m in metrics {
        let Some(key) = SeriesKey::of(&m.key) else {
            continue;
        };
        let point = by_step.entry(m.step).or_insert(MetricPoint {
            step: m.step,
            tokens: 0,
            flops: 0.0,
            train_loss: None,
            val_loss: None,
            lr: None,
            wall_secs: None,
        });
        let value = Some(m.value).filter(|v| v.is_finite());
        match key {
            SeriesKey::TrainLoss => point.train_loss = value.or(point.train_loss),
            SeriesKey::ValLoss => point.val_loss = value.or(point.val_loss),
            SeriesKey::Tokens => point.tokens = point.tokens.max(m.value.max(0.0) as i64),
            SeriesKey::Flops => point.flops = point.flops.max(m.value.max(0.0)),
        }
    }
    by_step.into_values().collect()
}

const EXPERIMENT_COLUMNS: &str = "id, name, artifact_location, created_ms, updated_ms, \
    (SELECT json_group_array(json_array(key, value)) FROM experiment_tags t \
     WHERE t.experiment_id = experiments.id) AS tag_pairs";

fn pairs(json: Option<String>) -> Vec<(String, String)> {
    json.and_then(|t| serde_json::from_str::<Vec<(String, String)>>(&t).ok())
        .unwrap_or_default()
}

fn experiment_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Experiment, sqlx::Error> {
    Ok(Experiment {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        artifact_location: row.try_get("artifact_location")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        tags: pairs(row.try_get("tag_pairs")?),
    })
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// The experiment with this id.
    pub async fn experiment(&self, id: i64) -> Result<Option<Experiment>, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(experiment_from_row).transpose()?)
    }

    /// The experiment with this name.
    pub async fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE name = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(experiment_from_row).transpose()?)
    }

    /// Every experiment, by id.
    pub async fn experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        let sql = format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(experiment_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Creates an experiment; `None` when one of that name exists.
    pub async fn create_experiment(
        &self,
        name: &str,
        artifact_location: &str,
        tags: &[(String, String)],
    ) -> Result<Option<i64>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let now = now_ms();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO experiments (name, artifact_location, created_ms, updated_ms) \
             VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(artifact_location)
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            for (key, value) in tags {
                sqlx::query(
                    "INSERT OR REPLACE INTO experiment_tags (experiment_id, key, value) \
                     VALUES (?, ?, ?)",
                )
                .bind(id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Creates a running tracked run in `experiment`, tagged with its name; its id.
    pub async fn create_tracked_run(
        &self,
        experiment: &Experiment,
        name: Option<&str>,
        start_ms: i64,
        tags: &[(String, String)],
        created_by: Option<&str>,
    ) -> Result<i64, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (name, source, status, config, parameterization, experiment_id, \
             created_by, started_at) VALUES (?, 'imported', 'running', '{}', 'unknown', ?, ?, \
             strftime('%Y-%m-%dT%H:%M:%fZ', ? / 1000.0, 'unixepoch')) RETURNING id",
        )
        .bind(name)
        .bind(experiment.id)
        .bind(created_by)
        .bind(start_ms)
        .fetch_one(&mut *tx)
        .await?;
        insert_tags(&mut tx, id, std::slice::from_ref(&experiment.name)).await?;
        insert_key_tags(&mut tx, id, tags).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Logs params, tags and metric values to a tracked run, atomically: params fill their
    /// columns ([`COLUMN_PARAMS`]; `parameterization` its column when it names one), series
    /// metrics its metric series. Returns the series points written. A param logged again
    /// with another value is refused ([`StoreError::Invalid`]), as MLflow does.
    pub async fn log_to_tracked_run(
        &self,
        run_id: i64,
        batch: &LogBatch,
    ) -> Result<Vec<MetricPoint>, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        self.tracked_experiment(&mut tx, run_id).await?;
        for (key, value) in &batch.params {
            let old: Option<String> =
                sqlx::query_scalar("SELECT value FROM run_params WHERE run_id = ? AND key = ?")
                    .bind(run_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            match old {
                Some(old) if old == *value => continue,
                Some(old) => {
                    return Err(StoreError::Invalid(format!(
                        "param '{key}' of run {run_id} was logged as '{old}': a param cannot \
                         change (got '{value}')"
                    )));
                }
                None => {}
            }
            sqlx::query("INSERT INTO run_params (run_id, key, value) VALUES (?, ?, ?)")
                .bind(run_id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            if let Some((_, column, integer)) = COLUMN_PARAMS.iter().find(|(p, ..)| p == key) {
                if let Some(x) = column_value(value, *integer) {
                    let sql = format!("UPDATE runs SET {column} = ? WHERE id = ?");
                    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    let query = if *integer {
                        query.bind(x as i64)
                    } else {
                        query.bind(x)
                    };
                    query.bind(run_id).execute(&mut *tx).await?;
                }
            } else if key == "parameterization" {
                let name = value.trim().to_ascii_lowercase();
                if name.parse::<crate::param::Parameterization>().is_ok() {
                    sqlx::query("UPDATE runs SET parameterization = ? WHERE id = ?")
                        .bind(name)
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        insert_key_tags(&mut tx, run_id, &batch.tags).await?;
        if let Some((_, name)) = batch.tags.iter().find(|(k, _)| k == "mlflow.runName") {
            sqlx::query("UPDATE runs SET name = ? WHERE id = ?")
                .bind(name)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        // 6 bound values per row: 1000 rows per statement stays under SQLite's limit.
        for chunk in batch.metrics.chunks(1000) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO logged_metrics (run_id, key, step, timestamp, value, nan) ",
            );
            insert.push_values(chunk, |mut b, m| {
                b.push_bind(run_id)
                    .push_bind(&m.key)
                    .push_bind(m.step)
                    .push_bind(m.timestamp)
                    .push_bind(if m.value.is_nan() { 0.0 } else { m.value })
                    .push_bind(m.value.is_nan());
            });
            insert.build().execute(&mut *tx).await?;
        }
        let points = series_points(&batch.metrics);
        for chunk in points.chunks(500) {
            let mut upsert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO metrics (run_id, step, tokens, flops, train_loss, val_loss) ",
            );
            upsert.push_values(chunk, |mut b, p| {
                b.push_bind(run_id)
                    .push_bind(p.step)
                    .push_bind(p.tokens)
                    .push_bind(p.flops)
                    .push_bind(p.train_loss)
                    .push_bind(p.val_loss);
            });
            upsert.push(
                " ON CONFLICT (run_id, step) DO UPDATE SET \
                 tokens = max(tokens, excluded.tokens), flops = max(flops, excluded.flops), \
                 train_loss = coalesce(excluded.train_loss, train_loss), \
                 val_loss = coalesce(excluded.val_loss, val_loss)",
            );
            upsert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(points)
    }

    /// The experiment of a tracked run; [`StoreError::NotFound`] for no run, and
    /// [`StoreError::Invalid`] for a run this server trained or imported otherwise.
    async fn tracked_experiment(
        &self,
        tx: &mut sqlx::Transaction<'static, Sqlite>,
        run_id: i64,
    ) -> Result<i64, StoreError> {
        let row: Option<Option<i64>> =
            sqlx::query_scalar("SELECT experiment_id FROM runs WHERE id = ?")
                .bind(run_id)
                .fetch_optional(&mut **tx)
                .await?;
        match row {
            None => Err(StoreError::NotFound(run_id)),
            Some(None) => Err(StoreError::Invalid(format!(
                "run {run_id} was not logged through the MLflow API"
            ))),
            Some(Some(experiment)) => Ok(experiment),
        }
    }

    /// Updates a tracked run's name and status; a final status also sets its end time and what
    /// the analyses read: final losses (the last of each series), tokens (the `tokens` param,
    /// else the last `tokens` value), FLOPs (the last `flops` value, else `6 P D` from the
    /// `params` and tokens), and the series' missing tokens and FLOPs, spread evenly over the
    /// steps when only the totals are known.
    pub async fn update_tracked_run(
        &self,
        run_id: i64,
        status: Option<StoredStatus>,
        end_ms: Option<i64>,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        self.tracked_experiment(&mut tx, run_id).await?;
        if let Some(name) = name {
            sqlx::query("UPDATE runs SET name = ? WHERE id = ?")
                .bind(name)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(status) = status {
            sqlx::query("UPDATE runs SET status = ? WHERE id = ?")
                .bind(status.name())
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            if status.is_final() {
                let end = end_ms.unwrap_or_else(now_ms);
                sqlx::query(FINALIZE)
                    .bind(end)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(SPREAD_TOTALS)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tracked run with its params, tags and latest metric values.
    pub async fn tracked_run(&self, run_id: i64) -> Result<TrackedRun, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, experiment_id, status, created_by, \
             CAST(round((julianday(started_at) - 2440587.5) * 86400000) AS INTEGER) AS start_ms, \
             CAST(round((julianday(finished_at) - 2440587.5) * 86400000) AS INTEGER) AS end_ms, \
             (SELECT json_group_array(json_array(key, value)) FROM run_params p \
              WHERE p.run_id = runs.id) AS param_pairs, \
             (SELECT json_group_array(json_array(key, value)) FROM run_key_tags t \
              WHERE t.run_id = runs.id) AS tag_pairs \
             FROM runs WHERE id = ? AND experiment_id IS NOT NULL",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(run_id))?;
        let latest = sqlx::query(
            // One index seek per metric key, not one per logged value.
            "SELECT m.key, m.value, m.nan, m.timestamp, m.step \
             FROM (SELECT DISTINCT key FROM logged_metrics WHERE run_id = ?1) AS k \
             JOIN logged_metrics AS m ON m.run_id = ?1 AND m.key = k.key \
             AND (m.step, m.timestamp) = (SELECT step, timestamp FROM logged_metrics AS l \
              WHERE l.run_id = ?1 AND l.key = k.key ORDER BY step DESC, timestamp DESC LIMIT 1) \
             GROUP BY m.key",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        let status: String = row.try_get("status")?;
        Ok(TrackedRun {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            experiment_id: row.try_get("experiment_id")?,
            status: StoredStatus::parse(&status),
            user: row.try_get("created_by")?,
            start_ms: row.try_get("start_ms")?,
            end_ms: row.try_get("end_ms")?,
            params: pairs(row.try_get("param_pairs")?),
            tags: pairs(row.try_get("tag_pairs")?),
            metrics: latest
                .iter()
                .map(logged_from_row)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether a run was logged through the MLflow API.
    pub async fn is_tracked_run(&self, run_id: i64) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM runs WHERE id = ? AND experiment_id IS NOT NULL")
                .bind(run_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// The tracked runs of some experiments, newest first, at most `limit`.
    pub async fn tracked_run_ids(
        &self,
        experiment_ids: &[i64],
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if experiment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut select = QueryBuilder::<Sqlite>::new("SELECT id FROM runs WHERE experiment_id IN ");
        select.push_tuples(experiment_ids, |mut b, id| {
            b.push_bind(*id);
        });
        select.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        Ok(select.build_query_scalar().fetch_all(&self.pool).await?)
    }

    /// Every value logged for one metric of a run, by step then timestamp: `limit` from
    /// `offset`.
    pub async fn metric_history(
        &self,
        run_id: i64,
        key: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<LoggedMetric>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, value, nan, timestamp, step FROM logged_metrics WHERE run_id = ? AND key = ? \
             ORDER BY step, timestamp LIMIT ? OFFSET ?",
        )
        .bind(run_id)
        .bind(key)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(logged_from_row).collect::<Result<_, _>>()?)
    }
}

fn logged_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<LoggedMetric, sqlx::Error> {
    let nan: bool = row.try_get("nan")?;
    Ok(LoggedMetric {
        key: row.try_get("key")?,
        value: if nan { f64::NAN } else { row.try_get("value")? },
        timestamp: row.try_get("timestamp")?,
        step: row.try_get("step")?,
    })
}

async fn insert_key_tags(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    run_id: i64,
    tags: &[(String, String)],
) -> Result<(), StoreError> {
    for (key, value) in tags {
        sqlx::query("INSERT OR REPLACE INTO run_key_tags (run_id, key, value) VALUES (?, ?, ?)")
            .bind(run_id)
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The end time and what the analyses read of a run that ended (see
/// [`Store::update_tracked_run`]). Binds: end time (ms), run id.
const FINALIZE: &str = "UPDATE runs SET \
    finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch'), \
    final_train_loss = (SELECT train_loss FROM metrics WHERE run_id = runs.id \
        AND train_loss IS NOT NULL ORDER BY step DESC LIMIT 1), \
    final_val_loss = coalesce((SELECT val_loss FROM metrics WHERE run_id = runs.id \
        AND val_loss IS NOT NULL ORDER BY step DESC LIMIT 1), \
        (SELECT train_loss FROM metrics WHERE run_id = runs.id \
        AND train_loss IS NOT NULL ORDER BY step DESC LIMIT 1)), \
    tokens = coalesce(tokens, (SELECT nullif(max(tokens), 0) FROM metrics WHERE run_id = runs.id)), \
    flops = coalesce((SELECT nullif(max(flops), 0) FROM metrics WHERE run_id = runs.id), \
        6.0 * params_non_embedding * coalesce(tokens, \
        (SELECT nullif(max(tokens), 0) FROM metrics WHERE run_id = runs.id))) \
    WHERE id = ?2";

/// Fills a finished run's series points that logged no tokens or FLOPs: its totals spread
/// evenly over the steps (`step / last step` of each). Bind: run id.
const SPREAD_TOTALS: &str = "UPDATE metrics SET \
    tokens = CASE WHEN tokens = 0 THEN coalesce(CAST(step * 1.0 / \
        (SELECT max(step) FROM metrics m WHERE m.run_id = metrics.run_id) * \
        (SELECT tokens FROM runs WHERE id = metrics.run_id) AS INTEGER), 0) ELSE tokens END, \
    flops = CASE WHEN flops = 0 THEN coalesce(step * 1.0 / \
        (SELECT max(step) FROM metrics m WHERE m.run_id = metrics.run_id) * \
        (SELECT flops FROM runs WHERE id = metrics.run_id), 0) ELSE flops END \
    WHERE run_id = ?1 AND step > 0 AND (tokens = 0 OR flops = 0)";

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(key: &str, step: i64, value: f64) -> LoggedMetric {
        LoggedMetric {
            key: key.into(),
            value,
            timestamp: 1,
            step,
        }
    }

    #[test]
    fn series_metrics_merge_by_step_and_others_are_left_out() {
        let points = series_points(&[
            logged("loss", 2, 3.0),
            logged("val_loss", 2, 3.5),
            logged("tokens", 2, 2048.0),
            logged("grad_norm", 2, 0.1),
            logged("train_loss", 1, f64::NAN),
            logged("flops", 1, 1e9),
        ]);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].step, 1);
        assert_eq!(points[0].train_loss, None);
        assert_eq!(points[0].flops, 1e9);
        assert_eq!(points[1].train_loss, Some(3.0));
        assert_eq!(points[1].val_loss, Some(3.5));
        assert_eq!(points[1].tokens, 2048);
    }

    #[test]
    fn column_params_parse_whole_numbers_and_reals() {
        assert_eq!(column_value("64", true), Some(64.0));
        assert_eq!(column_value(" 6.4e1 ", true), Some(64.0));
        assert_eq!(column_value("64.5", true), None);
        assert_eq!(column_value("-1", true), None);
        assert_eq!(column_value("wide", true), None);
        assert_eq!(column_value("3e-3", false), Some(0.003));
        assert_eq!(column_value("inf", false), None);
    }
}
