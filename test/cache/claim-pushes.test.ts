// Claims of a batch upload's group, one statement for many paths (scheduler/store/cache-pushes.ts): the
// first claim of each path wins, a stale one is taken over only by a different upload, and two
// uploads claiming the same paths at once, listed in opposite orders, both finish and agree.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { claimPushes } from '../../scheduler/store/cache-pushes.js';
import type { Db } from '../../scheduler/store/db.js';
import { ENGINES, freshDb } from '../helpers/db.js';

const path = (i: number) => `/nix/store/${String(i).padStart(32, '0')}-p${i}`;
const push = (i: number, narHash: string, pushedBy = 'ci') => ({ path: path(i), narHash, pushedBy });

describe.each(ENGINES)('claiming paths in one statement, on %s', (engine) => {
  let db: Db;
  beforeAll(async () => {
    db = await freshDb(engine);
  });
  afterAll(async () => {
    await db?.close();
  });

  test('each path answers the NarHash of its first claim, in the order asked', async () => {
    expect(await claimPushes(db, [push(1, 'sha256:a'), push(2, 'sha256:b')])).toEqual([
      'sha256:a',
      'sha256:b',
    ]);
    // Path 2 again with another hash (refused: the first stands), path 3 new, path 1 the same again.
    expect(
      await claimPushes(db, [push(2, 'sha256:other', 'eve'), push(3, 'sha256:c'), push(1, 'sha256:a')]),
    ).toEqual(['sha256:b', 'sha256:c', 'sha256:a']);
    const rows = await db.query<{ path: string; nar_hash: string; pushed_by: string }>(
      'SELECT path, nar_hash, pushed_by FROM cache_pushes ORDER BY path',
    );
    expect(rows.map((r) => [r.path, r.nar_hash, r.pushed_by])).toEqual([
      [path(1), 'sha256:a', 'ci'],
      [path(2), 'sha256:b', 'ci'],
      [path(3), 'sha256:c', 'ci'],
    ]);
    expect(await claimPushes(db, [])).toEqual([]);
  });

  test('a claim older than the TTL is taken over by a different upload, not by the same one', async () => {
    await db.query(`UPDATE cache_pushes SET pushed_at = now() - interval '1 hour' WHERE path = $1`, [
      path(3),
    ]);
    expect(await claimPushes(db, [push(3, 'sha256:c', 'again')], 60_000)).toEqual(['sha256:c']);
    expect(await claimPushes(db, [push(3, 'sha256:new', 'later'), push(1, 'sha256:x')], 60_000)).toEqual([
      'sha256:new',
      'sha256:a',
    ]);
  });

  test('two uploads of the same paths at once, listed in opposite orders, agree on every first claim', async () => {
    const ids = Array.from({ length: 300 }, (_, i) => 100 + i);
    const [a, b] = await Promise.all([
      claimPushes(
        db,
        ids.map((i) => push(i, 'sha256:from-a', 'a')),
      ),
      claimPushes(
        db,
        [...ids].reverse().map((i) => push(i, 'sha256:from-b', 'b')),
      ),
    ]);
    const held = await db.query<{ path: string; nar_hash: string }>(
      'SELECT path, nar_hash FROM cache_pushes WHERE path = ANY($1::text[])',
      [ids.map(path)],
    );
    const first = new Map(held.map((r) => [r.path, r.nar_hash]));
    expect(a).toEqual(ids.map((i) => first.get(path(i))));
    expect(b).toEqual([...ids].reverse().map((i) => first.get(path(i))));
  });
});
