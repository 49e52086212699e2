-- The coordinator keeps a bounded tail of each workload's log (MXC_LOG_LINES_KEPT): what it dropped of
-- a workload's older lines is counted here, so a reader is told lines are missing, not left guessing.
CREATE TABLE workload_log_trims (
  workload_id text PRIMARY KEY REFERENCES workloads(id) ON DELETE CASCADE,
  dropped bigint NOT NULL,
  -- lines of the workload with a smaller id are gone
  before_id bigint NOT NULL
);
