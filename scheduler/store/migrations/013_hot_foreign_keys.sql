-- Two foreign keys on the placement path checked what the statements that write those rows already
-- guarantee, one row at a time (a trigger call each): a workload's job (jobs are never deleted, and
-- every workload is inserted by a statement or transaction that wrote or read its job) and an event's
-- workload (events are inserted only from the rows that the same statement inserted or moved). Their
-- checks were a third of the insert's PostgreSQL CPU and a tenth of the apply's (30 → 17 µs and 54 → 49
-- µs a workload, 1,000 nodes, 1,667 placements an apply). Retention now deletes a workload's events
-- itself (store/retention.ts), which the events' ON DELETE CASCADE did.
ALTER TABLE workloads DROP CONSTRAINT workloads_job_id_fkey;
ALTER TABLE workload_events DROP CONSTRAINT workload_events_workload_id_fkey;
