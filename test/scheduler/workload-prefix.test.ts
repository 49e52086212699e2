/**
 * A workload id prefix (GET /api/workloads?id_prefix=, what the CLI resolves a shortened id with) finds
 * exactly the workloads whose id starts with it, on both engines, whatever `-` and `_` the job names
 * hold: the lookup narrows by the jobs whose names the prefix can begin (listWorkloads).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as wl from '../../scheduler/store/workloads.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { submitPending } from '../helpers/placement-store.js';

for (const engine of ENGINES) {
  describe(`workload id prefixes on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    beforeAll(async () => {
      db = await freshDb(engine);
    });
    afterAll(async () => {
      await db?.close();
    });

    it('match exactly the ids that start with them', async () => {
      for (const name of ['a', 'a-b', 'a-b-1', 'ab', 'a_b', 'b']) await submitPending(db, name, 2);
      const all = (await wl.listWorkloads(db, { limit: 1000 })).map((w) => w.id).sort();
      expect(all).toHaveLength(12);
      const prefixes = [
        'a',
        'a-',
        'a-0',
        'a-0-',
        'a-b',
        'a-b-',
        'a-b-1',
        'a-b-1-1',
        'ab',
        'a_',
        'a_b-1',
        'b-',
        'x',
      ];
      for (const w of all) prefixes.push(w, w.slice(0, -3));
      for (const prefix of prefixes) {
        const got = (await wl.listWorkloads(db, { idPrefix: prefix, limit: 1000 })).map((w) => w.id).sort();
        expect(got, prefix).toEqual(all.filter((id) => id.startsWith(prefix)));
      }
    });
  });
}
