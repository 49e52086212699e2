/**
 * An operator's node removal (liveness.ts removeNodeRecord) against placements, now that no foreign key
 * checks workloads.node_id (migration 015): the removed node's workloads are lost and no longer name it,
 * a placement on it afterwards moves nothing, and (PostgreSQL, two connections) a placement racing the
 * removal either commits first and is lost with the rest, or finds the node gone: no workload is left
 * naming a node that does not exist.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeNodeRecord } from '../../scheduler/liveness.js';
import type { Db, Queryable } from '../../scheduler/store/db.js';
import { openPostgres } from '../../scheduler/store/db.js';
import * as nodes from '../../scheduler/store/nodes.js';
import { applyStarts } from '../../scheduler/store/placement-apply.js';
import * as wl from '../../scheduler/store/workloads.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { addNode, plannedStart, submitPending } from '../helpers/placement-store.js';

/** Workloads naming a node that does not exist (what the foreign key refused). */
async function dangling(db: Db): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    'SELECT w.id FROM workloads w WHERE w.node_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = w.node_id)',
  );
  return rows.map((r) => r.id);
}

for (const engine of ENGINES) {
  describe(`node removal on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    beforeAll(async () => {
      db = await freshDb(engine);
    });
    afterAll(async () => {
      await db?.close();
    });

    it('loses the node’s workloads, clears their node, and refuses a later placement on it', async () => {
      await addNode(db, 'gone-a');
      const [w0, w1] = (await submitPending(db, 'removal', 2)) as [wl.PendingWorkload, wl.PendingWorkload];
      const placed = await applyStarts(db, [plannedStart(w0, 'gone-a')]);
      expect(placed.moved).toHaveLength(1);

      const lost = await db.tx((q) => removeNodeRecord(q, { id: 'gone-a', name: 'gone-a' }, 'test removal'));
      expect(lost.map((w) => w.id)).toEqual([w0.id]);
      expect(await nodes.getNode(db, 'gone-a')).toBeNull();
      const after = await wl.getWorkload(db, w0.id);
      expect(after).toMatchObject({ status: 'lost', node_id: null });

      // A plan made before the removal: the node is gone, so nothing moves and the workload waits.
      const late = await applyStarts(db, [plannedStart(w1, 'gone-a')]);
      expect(late).toEqual({ fitted: 0, moved: [] });
      expect(await wl.getWorkload(db, w1.id)).toMatchObject({ status: 'pending', node_id: null });
      expect(await dangling(db)).toEqual([]);
    });
  });
}

describe('node removal racing a placement on postgres', () => {
  let db: Awaited<ReturnType<typeof freshDb>>;
  let other: Db;
  beforeAll(async () => {
    db = await freshDb('postgres');
    other = await openPostgres(db.url!, { max: 2 });
  });
  afterAll(async () => {
    await other?.close();
    await db?.close();
  });

  /** Resolves once some backend of this database waits for a lock (the other transaction's). */
  async function someoneWaitsForALock(): Promise<void> {
    for (;;) {
      const rows = await db.query(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
      );
      if (rows.length > 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Runs `work` in a transaction on the other connection and keeps that transaction open (its locks
   * held) once `work` is done, until `release` is called; `held` resolves at that point.
   */
  function holdOpen<T>(work: (q: Queryable) => Promise<T>) {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let holding!: () => void;
    const held = new Promise<void>((r) => {
      holding = r;
    });
    const result = other.tx(async (q) => {
      const r = await work(q);
      holding();
      await gate;
      return r;
    });
    return { held, release, result };
  }

  it('a placement committed first is lost with the node’s other workloads', async () => {
    await addNode(db, 'race-a');
    const [w] = await submitPending(db, 'race-first', 1);
    const placement = holdOpen((q) => applyStarts(q, [plannedStart(w!, 'race-a')]));
    await placement.held;
    const removing = db.tx((q) => removeNodeRecord(q, { id: 'race-a', name: 'race-a' }, 'test removal'));
    await someoneWaitsForALock();
    placement.release();
    expect((await placement.result).moved).toHaveLength(1);
    const lost = await removing;
    expect(lost.map((x) => x.id)).toEqual([w!.id]);
    expect(await wl.getWorkload(db, w!.id)).toMatchObject({ status: 'lost', node_id: null });
    expect(await dangling(db)).toEqual([]);
  });

  it('a placement after the removal locked the node finds it gone and leaves the workload pending', async () => {
    await addNode(db, 'race-b');
    const [w] = await submitPending(db, 'race-after', 1);
    const removal = holdOpen((q) => removeNodeRecord(q, { id: 'race-b', name: 'race-b' }, 'test removal'));
    await removal.held;
    const placing = applyStarts(db, [plannedStart(w!, 'race-b')]);
    await someoneWaitsForALock();
    removal.release();
    expect(await removal.result).toEqual([]);
    expect(await placing).toEqual({ fitted: 0, moved: [] });
    expect(await wl.getWorkload(db, w!.id)).toMatchObject({ status: 'pending', node_id: null });
    expect(await dangling(db)).toEqual([]);
  });
});
