-- Bounded reads of metric series.
--
-- The validation points of a run (the rows with a validation loss, usually a small fraction of its
-- rows) in step order, so that charts can sample them with index seeks instead of scanning every
-- row of a long run. The training series is sampled through the primary key (run_id, step).
CREATE INDEX metrics_val ON metrics (run_id, step) WHERE val_loss IS NOT NULL;
