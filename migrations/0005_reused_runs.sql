-- A study may take a finished run with exactly its configuration instead of training it again:
-- the run is copied into the study (row and metric series) and `reused_from` names the run
-- that was trained. Copies are left out of the run-time calibration.
ALTER TABLE runs ADD COLUMN reused_from INTEGER REFERENCES runs(id) ON DELETE SET NULL;
CREATE INDEX runs_config ON runs (config) WHERE status IN ('succeeded', 'diverged');
