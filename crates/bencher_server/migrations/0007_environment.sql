-- What each job was measured on (`completed.environment`: the runner's noise probe and
-- the fingerprint of its environment), kept with the job and copied to its report when
-- the report is processed. `environment_changed` is 1 when the report's fingerprint
-- differs from its baseline's (the previous report with one on the same branch head,
-- testbed and Spec), 0 when it matches, NULL when there is nothing to compare.
ALTER TABLE job ADD COLUMN environment TEXT;
ALTER TABLE report ADD COLUMN environment TEXT;
ALTER TABLE report ADD COLUMN environment_changed BIGINT;
