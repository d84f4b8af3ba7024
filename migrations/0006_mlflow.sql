-- MLflow-compatible tracking: experiments, and what runs logged through the MLflow REST API
-- record beyond shapewise's columns.
--
-- A tracked run is a row of `runs` (source 'imported') with an `experiment_id`; the params,
-- metrics and tags that fill shapewise's columns and metric series are copied there as they
-- arrive, and every param, tag and metric value is also kept as logged, so the MLflow API reads
-- back exactly what was written. Experiment 0 is MLflow's `Default`.

CREATE TABLE experiments (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL DEFAULT '',
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
);
INSERT INTO experiments (id, name, created_ms, updated_ms) VALUES (0, 'Default', 0, 0);

CREATE TABLE experiment_tags (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
) WITHOUT ROWID;

ALTER TABLE runs ADD COLUMN experiment_id INTEGER REFERENCES experiments(id);
CREATE INDEX runs_experiment ON runs (experiment_id) WHERE experiment_id IS NOT NULL;

CREATE TABLE run_params (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

CREATE TABLE run_key_tags (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;

-- Every logged value. SQLite stores no NaN: a NaN is stored as 0 with `nan` set. Identical
-- entries (a retried request) are stored once.
CREATE TABLE logged_metrics (
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    step      INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    value     REAL NOT NULL,
    nan       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, key, step, timestamp, value, nan)
) WITHOUT ROWID;
