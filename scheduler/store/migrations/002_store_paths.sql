-- What each job version's closure is (from the cache's narinfos), what each node's store holds, and
-- how much each workload had to fetch: closure-aware placement and fleet provenance.
CREATE TABLE job_closure (
  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  version integer NOT NULL,
  path text NOT NULL,
  nar_size bigint NOT NULL,
  PRIMARY KEY (job_id, version, path)
);
CREATE INDEX job_closure_path_idx ON job_closure (path);

CREATE TABLE node_store_paths (
  node_id text NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  path text NOT NULL,
  PRIMARY KEY (node_id, path)
);
CREATE INDEX node_store_paths_path_idx ON node_store_paths (path);

ALTER TABLE workloads ADD COLUMN fetched_paths integer;
ALTER TABLE workloads ADD COLUMN fetched_bytes bigint;
