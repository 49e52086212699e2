-- How an ended workload ended (Aurora's FINISHED / FAILED / KILLED / LOST): finished on its own with
-- success, failed, stopped (by a user, an update or a drain), or lost with its node. Existing rows get
-- theirs from their history: a stopped workload that was never asked to stop finished.
ALTER TABLE workloads ADD COLUMN outcome text CHECK (outcome IN ('finished', 'failed', 'stopped', 'lost'));
UPDATE workloads w SET outcome = CASE
    WHEN w.status <> 'stopped' THEN w.status
    WHEN EXISTS (SELECT 1 FROM workload_events e WHERE e.workload_id = w.id AND e.to_status = 'stopping')
      OR NOT EXISTS (SELECT 1 FROM workload_events e WHERE e.workload_id = w.id AND e.to_status = 'running')
      THEN 'stopped'
    ELSE 'finished' END
  WHERE w.status IN ('stopped', 'failed', 'lost');
-- Aurora's back-off for flapping tasks: a restarted workload is not placed before not_before;
-- restart_delay_ms is the delay it waited, doubled for the next restart while it keeps flapping.
ALTER TABLE workloads ADD COLUMN not_before timestamptz;
ALTER TABLE workloads ADD COLUMN restart_delay_ms integer NOT NULL DEFAULT 0;
