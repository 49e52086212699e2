-- Client tokens get a scope (read < push < admin); tokens made before scopes existed keep full access.
ALTER TABLE api_tokens ADD COLUMN scope text NOT NULL DEFAULT 'admin' CHECK (scope IN ('read', 'push', 'admin'));

-- Who pushed each cache path (the token's name) and with which NarHash: provenance, and the record a
-- conflicting second upload is refused against.
CREATE TABLE cache_pushes (
  path text PRIMARY KEY,
  nar_hash text NOT NULL,
  pushed_by text NOT NULL,
  pushed_at timestamptz NOT NULL DEFAULT now()
);
