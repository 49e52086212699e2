-- Rolling updates: a job resubmitted with an update_config replaces its instances batch by batch,
-- watching each batch, and rolls back on failure when asked to.
CREATE TABLE job_updates (
  id text PRIMARY KEY,
  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  from_version integer NOT NULL,
  to_version integer NOT NULL,
  status text NOT NULL CHECK (status IN ('rolling', 'succeeded', 'failed', 'rolled_back', 'cancelled')),
  rollback boolean NOT NULL DEFAULT false,
  next_instance integer NOT NULL DEFAULT 0,
  message text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_updates_job_idx ON job_updates (job_id, created_at);
CREATE INDEX job_updates_rolling_idx ON job_updates (status) WHERE status = 'rolling';
