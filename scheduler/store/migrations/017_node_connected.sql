-- Whether the node's agent holds a socket to a coordinator: cleared when its socket closes, set again
-- when it says hello. The scheduler places nothing on a node whose agent is known to be gone (its
-- status stays `ready` until the heartbeat TTL passes, so that a reconnect keeps its workloads), and the
-- change is stamped like every other column the scheduler sees, so each coordinator's view reads it.
ALTER TABLE nodes ADD COLUMN connected boolean NOT NULL DEFAULT true;

DROP TRIGGER nodes_stamp_change ON nodes;
CREATE TRIGGER nodes_stamp_change BEFORE UPDATE ON nodes FOR EACH ROW
  WHEN ((OLD.status, OLD.connected, OLD.cpu, OLD.memory_mb, OLD.disk_mb, OLD.capabilities,
         OLD.used_cpu, OLD.used_memory_mb, OLD.used_disk_mb)
        IS DISTINCT FROM
        (NEW.status, NEW.connected, NEW.cpu, NEW.memory_mb, NEW.disk_mb, NEW.capabilities,
         NEW.used_cpu, NEW.used_memory_mb, NEW.used_disk_mb))
  EXECUTE FUNCTION mxc_nodes_stamp_change();
