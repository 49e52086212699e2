-- Incremental scheduling snapshot. Each node row carries what its active workloads hold (kept by
-- statement triggers on workloads, in the changing transaction) and the transaction that last changed
-- what the scheduler sees of it (`change_xid`), so a coordinator reads only the nodes changed since its
-- last read, and the placement apply re-checks capacity on the locked node rows alone, however many
-- workloads are active.
ALTER TABLE nodes
  ADD COLUMN used_cpu numeric NOT NULL DEFAULT 0,
  ADD COLUMN used_memory_mb bigint NOT NULL DEFAULT 0,
  ADD COLUMN used_disk_mb bigint NOT NULL DEFAULT 0,
  ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();

UPDATE nodes SET used_cpu = u.cpu, used_memory_mb = u.memory_mb, used_disk_mb = u.disk_mb
FROM (
  SELECT node_id, sum(cpu::numeric) AS cpu, sum(memory_mb) AS memory_mb, sum(disk_mb) AS disk_mb
  FROM workloads WHERE status IN ('starting', 'running', 'stopping') AND node_id IS NOT NULL
  GROUP BY node_id
) u
WHERE nodes.id = u.node_id;

-- What the scheduler sees changed (not a heartbeat's last_seen_at): stamp the changing transaction.
CREATE FUNCTION mxc_nodes_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.change_xid := pg_current_xact_id();
  RETURN NEW;
END $$;

CREATE TRIGGER nodes_stamp_change BEFORE UPDATE ON nodes FOR EACH ROW
  WHEN ((OLD.status, OLD.cpu, OLD.memory_mb, OLD.disk_mb, OLD.capabilities,
         OLD.used_cpu, OLD.used_memory_mb, OLD.used_disk_mb)
        IS DISTINCT FROM
        (NEW.status, NEW.cpu, NEW.memory_mb, NEW.disk_mb, NEW.capabilities,
         NEW.used_cpu, NEW.used_memory_mb, NEW.used_disk_mb))
  EXECUTE FUNCTION mxc_nodes_stamp_change();

-- Per statement on workloads: the resources of rows that hold them (active, with a node) after minus
-- before, summed per node and added to the node rows, locked in id order as every other statement that
-- locks several nodes does (lockNodes, touchNodes), so they cannot deadlock each other.

CREATE FUNCTION mxc_workloads_usage_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH delta AS (
    SELECT node_id, sum(cpu::numeric) AS cpu, sum(memory_mb)::bigint AS memory_mb, sum(disk_mb)::bigint AS disk_mb
    FROM new_rows WHERE node_id IS NOT NULL AND status IN ('starting', 'running', 'stopping')
    GROUP BY node_id
  ), locked AS (
    SELECT n.id FROM nodes n JOIN delta d ON d.node_id = n.id ORDER BY n.id FOR UPDATE OF n
  )
  UPDATE nodes SET used_cpu = nodes.used_cpu + d.cpu, used_memory_mb = nodes.used_memory_mb + d.memory_mb,
    used_disk_mb = nodes.used_disk_mb + d.disk_mb
  FROM delta d, locked l WHERE nodes.id = d.node_id AND l.id = d.node_id;
  RETURN NULL;
END $$;

CREATE FUNCTION mxc_workloads_usage_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH changed AS (
    SELECT node_id, cpu::numeric AS cpu, memory_mb::bigint AS memory_mb, disk_mb::bigint AS disk_mb
    FROM new_rows WHERE node_id IS NOT NULL AND status IN ('starting', 'running', 'stopping')
    UNION ALL
    SELECT node_id, -cpu::numeric, -memory_mb::bigint, -disk_mb::bigint
    FROM old_rows WHERE node_id IS NOT NULL AND status IN ('starting', 'running', 'stopping')
  ), delta AS (
    SELECT node_id, sum(cpu) AS cpu, sum(memory_mb) AS memory_mb, sum(disk_mb) AS disk_mb
    FROM changed GROUP BY node_id
    HAVING sum(cpu) <> 0 OR sum(memory_mb) <> 0 OR sum(disk_mb) <> 0
  ), locked AS (
    SELECT n.id FROM nodes n JOIN delta d ON d.node_id = n.id ORDER BY n.id FOR UPDATE OF n
  )
  UPDATE nodes SET used_cpu = nodes.used_cpu + d.cpu, used_memory_mb = nodes.used_memory_mb + d.memory_mb,
    used_disk_mb = nodes.used_disk_mb + d.disk_mb
  FROM delta d, locked l WHERE nodes.id = d.node_id AND l.id = d.node_id;
  RETURN NULL;
END $$;

CREATE FUNCTION mxc_workloads_usage_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH delta AS (
    SELECT node_id, sum(cpu::numeric) AS cpu, sum(memory_mb)::bigint AS memory_mb, sum(disk_mb)::bigint AS disk_mb
    FROM old_rows WHERE node_id IS NOT NULL AND status IN ('starting', 'running', 'stopping')
    GROUP BY node_id
  ), locked AS (
    SELECT n.id FROM nodes n JOIN delta d ON d.node_id = n.id ORDER BY n.id FOR UPDATE OF n
  )
  UPDATE nodes SET used_cpu = nodes.used_cpu - d.cpu, used_memory_mb = nodes.used_memory_mb - d.memory_mb,
    used_disk_mb = nodes.used_disk_mb - d.disk_mb
  FROM delta d, locked l WHERE nodes.id = d.node_id AND l.id = d.node_id;
  RETURN NULL;
END $$;

CREATE TRIGGER workloads_usage_insert AFTER INSERT ON workloads REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION mxc_workloads_usage_insert();
CREATE TRIGGER workloads_usage_update AFTER UPDATE ON workloads
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION mxc_workloads_usage_update();
CREATE TRIGGER workloads_usage_delete AFTER DELETE ON workloads REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION mxc_workloads_usage_delete();
