-- Agents number their log messages per stream (one per agent process) and keep each until the coordinator
-- acknowledges it committed; a message sent again (its coordinator died after reading it, or after the
-- commit but before the ack) is stored once: the stream's highest stored number is kept here, and a
-- message numbered no higher is a resend. Rows of old streams go with retention.
CREATE TABLE log_streams (
  stream text PRIMARY KEY,
  node_id text NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
  seq bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log_streams_node ON log_streams (node_id);
CREATE INDEX log_streams_updated ON log_streams (updated_at);
