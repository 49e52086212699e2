/** SQL for `job_closure` (each job version's store paths and sizes) and `node_store_paths` (what each node holds). */
import type { Queryable } from './db.js';

export interface ClosurePath {
  path: string;
  nar_size: number;
}

export async function insertJobClosure(
  q: Queryable,
  jobId: string,
  version: number,
  paths: ClosurePath[],
): Promise<void> {
  if (paths.length === 0) return;
  await q.query(
    `INSERT INTO job_closure (job_id, version, path, nar_size)
     SELECT $1, $2, unnest($3::text[]), unnest($4::bigint[]) ON CONFLICT DO NOTHING`,
    [jobId, version, paths.map((p) => p.path), paths.map((p) => p.nar_size)],
  );
}

export async function jobClosure(q: Queryable, jobId: string, version: number): Promise<ClosurePath[]> {
  return q.query<ClosurePath>(
    'SELECT path, nar_size FROM job_closure WHERE job_id = $1 AND version = $2 ORDER BY path',
    [jobId, version],
  );
}

/** Replaces what a node is known to hold (its report on hello); returns how many paths it now holds. */
export async function setNodePaths(q: Queryable, nodeId: string, paths: string[]): Promise<number> {
  await q.query('DELETE FROM node_store_paths WHERE node_id = $1', [nodeId]);
  return (await addNodePaths(q, nodeId, paths)).added;
}

/**
 * Rows per statement for node store paths: embedded PGlite runs a statement on the event loop, so a
 * big list is written in slices with a turn of the loop between them (heartbeats keep being read).
 */
const PATH_SLICE = 500;

async function inSlices(paths: string[], fn: (slice: string[]) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < paths.length; i += PATH_SLICE) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    await fn(paths.slice(i, i + PATH_SLICE));
  }
}

/** What adding paths to a node did: how many were new and kept, and how many new ones found no room. */
export interface PathsAdded {
  added: number;
  refused: number;
}

/**
 * Adds paths a node holds, at most `room` of them new (the first ones given; paths it already holds
 * take no room).
 */
export async function addNodePaths(
  q: Queryable,
  nodeId: string,
  paths: string[],
  room = Number.POSITIVE_INFINITY,
): Promise<PathsAdded> {
  const out = { added: 0, refused: 0 };
  await inSlices(paths, async (slice) => {
    const limit = Math.max(0, Math.min(slice.length, room - out.added));
    const [row] = await q.query<{ added: number; fresh: number }>(
      `WITH fresh AS (
         SELECT DISTINCT u.p FROM unnest($2::text[]) AS u(p)
          WHERE NOT EXISTS (SELECT 1 FROM node_store_paths s WHERE s.node_id = $1 AND s.path = u.p)),
       ins AS (
         INSERT INTO node_store_paths (node_id, path) SELECT $1, p FROM fresh LIMIT $3
         ON CONFLICT DO NOTHING RETURNING 1)
       SELECT (SELECT count(*)::int FROM ins) AS added, (SELECT count(*)::int FROM fresh) AS fresh`,
      [nodeId, slice, limit],
    );
    out.added += row?.added ?? 0;
    out.refused += Math.max(0, (row?.fresh ?? 0) - limit);
  });
  return out;
}

/** Removes paths a node no longer holds; returns how many it held. */
export async function removeNodePaths(q: Queryable, nodeId: string, paths: string[]): Promise<number> {
  let removed = 0;
  await inSlices(paths, async (slice) => {
    const [row] = await q.query<{ n: number }>(
      `WITH del AS (DELETE FROM node_store_paths WHERE node_id = $1 AND path = ANY($2::text[]) RETURNING 1)
       SELECT count(*)::int AS n FROM del`,
      [nodeId, slice],
    );
    removed += row?.n ?? 0;
  });
  return removed;
}

/** How many store paths a node is known to hold. */
export async function nodePathCount(q: Queryable, nodeId: string): Promise<number> {
  const [row] = await q.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM node_store_paths WHERE node_id = $1',
    [nodeId],
  );
  return row?.n ?? 0;
}

/** For the given paths, which nodes hold which of them. */
export async function holders(q: Queryable, paths: string[]): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  if (paths.length === 0) return out;
  const rows = await q.query<{ node_id: string; path: string }>(
    'SELECT node_id, path FROM node_store_paths WHERE path = ANY($1::text[])',
    [paths],
    // Prepared for a submit's few paths; a long list keeps a plan made for its size.
    paths.length <= 64 ? 'mxc_holders_few' : undefined,
  );
  for (const r of rows) {
    const s = out.get(r.node_id) ?? new Set<string>();
    s.add(r.path);
    out.set(r.node_id, s);
  }
  return out;
}

export async function nodePathCounts(q: Queryable, nodeIds?: string[]): Promise<Map<string, number>> {
  const rows = await q.query<{ node_id: string; n: number }>(
    `SELECT node_id, count(*)::int AS n FROM node_store_paths
     ${nodeIds ? 'WHERE node_id = ANY($1::text[])' : ''} GROUP BY node_id`,
    nodeIds ? [nodeIds] : [],
  );
  return new Map(rows.map((r) => [r.node_id, r.n]));
}

export interface Provenance {
  path: string;
  nar_size: number;
  job_id: string;
  job: string;
  version: number;
  current: boolean;
  workloads: { id: string; status: string; node: string | null }[];
  /** The token that uploaded the path to the cache (null: pushed before this was recorded). */
  pushed_by: string | null;
  pushed_at: Date | null;
}

/** Store paths whose name contains `needle` (or equal a full path), with the jobs and live workloads that use them. */
export async function whereUsed(q: Queryable, needle: string): Promise<Provenance[]> {
  const rows = await q.query<Omit<Provenance, 'workloads'> & { workloads: Provenance['workloads'] | null }>(
    `SELECT c.path, c.nar_size, c.job_id, j.key AS job, c.version, (j.current_version = c.version) AS current,
       (SELECT json_agg(json_build_object('id', w.id, 'status', w.status, 'node', n.name) ORDER BY w.id)
          FROM workloads w LEFT JOIN nodes n ON n.id = w.node_id
         WHERE w.job_id = c.job_id AND w.job_version = c.version
           AND w.status IN ('pending', 'starting', 'running', 'stopping')) AS workloads,
       p.pushed_by, p.pushed_at
     FROM job_closure c JOIN jobs j ON j.id = c.job_id
     LEFT JOIN cache_pushes p ON p.path = c.path
     WHERE c.path = $1 OR c.path LIKE '/nix/store/%' || $2 || '%'
     ORDER BY c.path, j.key, c.version DESC
     LIMIT 1000`,
    [needle, needle.replace(/[\\%_]/g, (m) => `\\${m}`)],
  );
  return rows.map((r) => ({ ...r, workloads: r.workloads ?? [] }));
}
