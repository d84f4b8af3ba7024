-- Studies and stored diagnostics.
--
-- A study is a sweep with a kind other than 'grid' (depth-transfer, coord-check,
-- compute-efficiency); its runs point at it through runs.sweep_id. A diagnostic (coordinate check,
-- linearization check) runs in the background, so it has a status; a coord-check study owns its
-- diagnostics through diagnostics.sweep_id.

ALTER TABLE sweeps ADD COLUMN kind TEXT NOT NULL DEFAULT 'grid';

ALTER TABLE diagnostics ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded'
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted'));
ALTER TABLE diagnostics ADD COLUMN error TEXT;
ALTER TABLE diagnostics ADD COLUMN started_at TEXT;
ALTER TABLE diagnostics ADD COLUMN finished_at TEXT;
ALTER TABLE diagnostics ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id) ON DELETE SET NULL;
CREATE INDEX diagnostics_sweep ON diagnostics (sweep_id);
