-- The transaction that inserted each workload. Pending rows are only ever inserted (no transition leads
-- back to pending), so the pending rows inserted since a pass read the backlog are those with a
-- created_xid at or past that read's snapshot xmin: a pass whose backlog fits nowhere re-plans it only
-- when some appeared or room grew (scheduler/placement.ts), instead of reading all of it every sweep.
-- Rows from before this migration have none; they are read by every coordinator's first pass.
ALTER TABLE workloads ADD COLUMN created_xid xid8;
ALTER TABLE workloads ALTER COLUMN created_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX workloads_pending_xid_idx ON workloads (created_xid) WHERE status = 'pending';
