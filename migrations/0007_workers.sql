-- Remote workers and leases.
--
-- A worker (`shapewise worker`) registers, then claims queued jobs of its device. A claim by a
-- worker is a lease: `lease_until` (Unix seconds) is pushed forward by each heartbeat or metric
-- batch; a job whose lease lapses is released like a crashed one (an attempt counted). The
-- server's own in-process workers hold their jobs without a lease (`worker_id` and
-- `lease_until` NULL); those are released when the server starts again.

CREATE TABLE workers (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    host           TEXT NOT NULL,
    device         TEXT NOT NULL CHECK (device IN ('cpu', 'gpu')),
    created_by     TEXT,
    registered_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Unix seconds of the last request the worker made.
    last_seen      REAL NOT NULL,
    -- Set when the worker leaves (SIGTERM, --max-runs reached).
    left_at        TEXT,
    -- Training throughput of its current or last run.
    tokens_per_sec REAL,
    runs_done      INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE jobs ADD COLUMN worker_id INTEGER REFERENCES workers(id);
ALTER TABLE jobs ADD COLUMN lease_until REAL;
-- The device the run asks for, copied from its config: `cpu`, `gpu` or `cpu_ndarray`.
ALTER TABLE jobs ADD COLUMN device TEXT NOT NULL DEFAULT 'cpu';
UPDATE jobs SET device = COALESCE(
    (SELECT json_extract(config, '$.device') FROM runs WHERE runs.id = jobs.run_id), 'cpu');
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';
