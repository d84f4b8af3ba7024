-- Runs, their metric series, the job queue, sweeps and diagnostics.
--
-- A run keeps its full configuration as JSON and copies the fields people filter and fit on into
-- indexed columns. Imported runs (trained elsewhere) have no config beyond those columns and no job.

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,              -- the grid, as JSON
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE runs (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT,
    source               TEXT NOT NULL CHECK (source IN ('local', 'imported')),
    status               TEXT NOT NULL CHECK (status IN
                           ('queued', 'running', 'succeeded', 'failed', 'diverged', 'cancelled', 'interrupted')),
    config               TEXT NOT NULL,     -- the full run config, JSON
    parameterization     TEXT NOT NULL,
    alpha                REAL,
    width                INTEGER,
    depth                INTEGER,
    d_head               INTEGER,
    context              INTEGER,
    vocab                INTEGER,
    lr                   REAL,
    init_std             REAL,
    eps                  REAL,
    weight_decay         REAL,
    batch                INTEGER,
    tokens               INTEGER,
    seed                 INTEGER,
    dataset              TEXT,
    sweep_id             INTEGER REFERENCES sweeps(id) ON DELETE SET NULL,
    created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at           TEXT,
    finished_at          TEXT,
    final_train_loss     REAL,
    final_val_loss       REAL,
    params_non_embedding INTEGER,
    flops                REAL,
    flops_dense          REAL,
    flops_unembedding    REAL,
    flops_attention      REAL,
    tokens_per_sec       REAL,
    error                TEXT
);
CREATE INDEX runs_parameterization ON runs (parameterization);
CREATE INDEX runs_shape ON runs (width, depth);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_sweep ON runs (sweep_id);

CREATE TABLE run_tags (
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
) WITHOUT ROWID;
CREATE INDEX run_tags_tag ON run_tags (tag);

CREATE TABLE metrics (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step        INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,
    flops       REAL NOT NULL,
    train_loss  REAL,
    val_loss    REAL,
    lr          REAL,
    wall_secs   REAL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

-- One job per local run. A worker claims the oldest queued job; `cancel_requested` is polled
-- between training steps.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL UNIQUE REFERENCES runs(id) ON DELETE CASCADE,
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0,
    enqueued_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX jobs_state ON jobs (state, id);

CREATE TABLE diagnostics (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,              -- e.g. coord_check_depth
    config      TEXT NOT NULL,
    result      TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
