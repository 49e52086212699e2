-- The foreign key from a workload to its node checked, one row at a time (a trigger call each), what the
-- statements that name a node already guarantee: only the placement apply (store/placement-apply.ts) and
-- a submit's placed insert (store/placed-insert.ts) set workloads.node_id, and both to a node row they
-- hold locked FOR UPDATE in the same statement (and find ready); every other write of it sets NULL. A
-- node is removed only by store/nodes.ts deleteNode, whose transaction locks the node row first, then
-- clears node_id on its workloads and deletes the row: a placement that locked the node before it has
-- committed, and is cleared with the rest; one after it finds no node row, and leaves its workloads
-- pending. Its check was a tenth of the apply's PostgreSQL time (17.6 of 183 ms for 2,000 placements).
ALTER TABLE workloads DROP CONSTRAINT workloads_node_id_fkey;
