-- High availability: node secrets, the leader lease, the coordinator registry, which coordinator holds
-- each agent's socket (with an epoch that fences a stale holder out) and the agent command outbox.
CREATE TABLE node_secrets (
  node_id text PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
  secret_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mxc_leader (
  name text PRIMARY KEY,
  holder text NOT NULL,
  epoch bigint NOT NULL,
  expires_at timestamptz NOT NULL
);

CREATE TABLE mxc_coordinators (
  id text PRIMARY KEY,
  url text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE node_sessions (
  node_id text PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
  coordinator_id text,
  conn_epoch bigint NOT NULL DEFAULT 0,
  connected_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_commands (
  id bigserial PRIMARY KEY,
  node_id text NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  message jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_commands_node_idx ON agent_commands (node_id, id);

CREATE TABLE mxc_settings (
  name text PRIMARY KEY,
  value text NOT NULL
);
