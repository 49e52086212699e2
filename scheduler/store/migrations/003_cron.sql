-- Cron jobs: when each one runs next (NULL for other jobs and stopped ones).
ALTER TABLE jobs ADD COLUMN next_run_at timestamptz;
CREATE INDEX jobs_next_run_idx ON jobs (next_run_at) WHERE next_run_at IS NOT NULL;
