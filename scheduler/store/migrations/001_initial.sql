-- Nodes (agents), jobs and their versions, workloads (instances), their event history, logs and tokens.
CREATE TABLE nodes (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  status text NOT NULL CHECK (status IN ('ready', 'down', 'draining')),
  cpu double precision NOT NULL,
  memory_mb integer NOT NULL,
  disk_mb integer NOT NULL,
  capabilities jsonb NOT NULL DEFAULT '{}',
  version text NOT NULL DEFAULT '',
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
  id text PRIMARY KEY,
  key text NOT NULL UNIQUE,
  cluster text NOT NULL,
  role text NOT NULL,
  environment text NOT NULL,
  name text NOT NULL,
  current_version integer NOT NULL,
  status text NOT NULL CHECK (status IN ('active', 'stopped')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE job_versions (
  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  version integer NOT NULL,
  spec jsonb NOT NULL,
  spec_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, version)
);

CREATE TABLE workloads (
  id text PRIMARY KEY,
  job_id text NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  job_version integer NOT NULL,
  instance integer NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'starting', 'running', 'stopping', 'stopped', 'failed', 'lost')),
  node_id text REFERENCES nodes(id),
  cpu double precision NOT NULL,
  memory_mb integer NOT NULL,
  disk_mb integer NOT NULL,
  isolation text NOT NULL,
  pending_reason text,
  error text,
  restarts integer NOT NULL DEFAULT 0,
  ports jsonb NOT NULL DEFAULT '{}',
  processes jsonb NOT NULL DEFAULT '[]',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz
);
CREATE INDEX workloads_job_idx ON workloads (job_id);
CREATE INDEX workloads_node_active_idx ON workloads (node_id) WHERE status IN ('starting', 'running', 'stopping');
CREATE INDEX workloads_pending_idx ON workloads (created_at) WHERE status = 'pending';

CREATE TABLE workload_events (
  id bigserial PRIMARY KEY,
  workload_id text NOT NULL REFERENCES workloads(id) ON DELETE CASCADE,
  ts timestamptz NOT NULL DEFAULT now(),
  from_status text,
  to_status text NOT NULL,
  reason text NOT NULL DEFAULT ''
);
CREATE INDEX workload_events_workload_idx ON workload_events (workload_id, id);

CREATE TABLE workload_logs (
  id bigserial PRIMARY KEY,
  workload_id text NOT NULL REFERENCES workloads(id) ON DELETE CASCADE,
  process text NOT NULL,
  stream text NOT NULL,
  run integer NOT NULL,
  ts double precision NOT NULL,
  line text NOT NULL
);
CREATE INDEX workload_logs_workload_idx ON workload_logs (workload_id, id);

CREATE TABLE api_tokens (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  kind text NOT NULL CHECK (kind IN ('client', 'agent')),
  token_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
