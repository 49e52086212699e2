/**
 * The placement apply as one statement (store/placement-apply.ts), on both engines: it moves only the
 * pending workloads whose node still fits on its locked usage plus what the batch put there before
 * (placement order), refuses a node that is not ready, queues one outbox row of starts per node in
 * placement order, records the events, and the usage triggers count what moved. Node rows keep room
 * on their pages, so those usage updates are HOT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as commands from '../../scheduler/store/agent-commands.js';
import * as nodes from '../../scheduler/store/nodes.js';
import { applyStarts } from '../../scheduler/store/placement-apply.js';
import * as wl from '../../scheduler/store/workloads.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { addNode, plannedStart, submitPending } from '../helpers/placement-store.js';

for (const engine of ENGINES) {
  describe(`the one-statement placement apply on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    beforeAll(async () => {
      db = await freshDb(engine);
    });
    afterAll(async () => {
      await db?.close();
    });

    it('moves what fits in placement order, refuses the rest, and queues one start row per node', async () => {
      for (const [id, cpu] of [
        ['node-a', 2],
        ['node-b', 8],
        ['node-c', 8],
      ] as const)
        await addNode(db, id, { cpu, memory_mb: 8192, disk_mb: 10_000 });
      await nodes.setNodeStatus(db, 'node-c', 'draining');
      const pending = await submitPending(db, 'apply', 6);
      expect(pending).toHaveLength(6);
      const [w0, w1, w2, w3, w4, w5] = pending as [wl.PendingWorkload, ...wl.PendingWorkload[]];
      // w5 is stopped before the apply: it still counts towards node-b's demand but does not move.
      await wl.transition(db, { id: w5!.id, status: 'pending' }, 'stopped', 'test');
      const plan = [
        { w: w0, nodeId: 'node-a' },
        { w: w1!, nodeId: 'node-b' },
        { w: w2!, nodeId: 'node-a' },
        { w: w3!, nodeId: 'node-a' }, // node-a has 2 cores: the third does not fit
        { w: w4!, nodeId: 'node-c' }, // draining
        { w: w5!, nodeId: 'node-b' },
      ];
      const r = await applyStarts(
        db,
        plan.map(({ w, nodeId }) => plannedStart(w, nodeId)),
      );
      expect(r.fitted).toBe(4);
      expect(r.moved.map((m) => m.index)).toEqual([0, 1, 2]);

      const status = async (id: string) => (await wl.getWorkload(db, id))?.status;
      expect(await status(w0.id)).toBe('starting');
      expect(await status(w1!.id)).toBe('starting');
      expect(await status(w2!.id)).toBe('starting');
      expect(await status(w3!.id)).toBe('pending');
      expect(await status(w4!.id)).toBe('pending');
      expect(await status(w5!.id)).toBe('stopped');
      expect((await wl.getWorkload(db, w2!.id))?.node_id).toBe('node-a');
      expect((await wl.listEvents(db, w0.id)).at(-1)).toMatchObject({
        from_status: 'pending',
        to_status: 'starting',
        reason: 'placed on node-a',
      });

      // Usage kept by the triggers.
      expect(Number((await nodes.getNode(db, 'node-a'))!.used_cpu)).toBe(2);
      expect(Number((await nodes.getNode(db, 'node-b'))!.used_cpu)).toBe(1);

      // One outbox row per node, the starts in placement order; each moved workload names its node's row.
      const rows = await db.query<{ id: number; node_id: string; message: commands.OutboxMessage }>(
        'SELECT id, node_id, message FROM agent_commands ORDER BY id',
      );
      expect(rows.map((c) => [c.node_id, c.message])).toEqual([
        ['node-a', { type: 'start_ref', workload_ids: [w0.id, w2!.id] }],
        ['node-b', { type: 'start_ref', workload_ids: [w1!.id] }],
      ]);
      const rowOf = new Map(rows.map((c) => [c.node_id, Number(c.id)]));
      expect(r.moved.map((m) => m.commandId)).toEqual([
        rowOf.get('node-a'),
        rowOf.get('node-b'),
        rowOf.get('node-a'),
      ]);

      // Applied again: nothing is pending any more where it fits, so nothing moves and nothing is queued.
      const again = await applyStarts(db, [
        { id: w0.id, nodeId: 'node-b', cpu: 1, memory_mb: 256, disk_mb: 1 },
      ]);
      expect(again).toEqual({ fitted: 1, moved: [] });
      expect(await db.query('SELECT 1 FROM agent_commands')).toHaveLength(2);
    });

    it('changes a node row in place: its usage update leaves every row on its page (HOT)', async () => {
      // Enough rows to fill pages; at the default fillfactor a full page has no room for a new version.
      for (let i = 0; i < 200; i++) {
        const id = `hot-${String(i).padStart(3, '0')}`;
        await addNode(db, id, { cpu: 64, memory_mb: 65536, disk_mb: 100_000 });
      }
      const pages = async () =>
        db.query<{ id: string; page: string }>(
          "SELECT id, (ctid::text::point)[0]::text AS page FROM nodes WHERE id LIKE 'hot-%' ORDER BY id",
        );
      const before = await pages();
      // What an apply's usage trigger does to every node it placed on.
      await db.query("UPDATE nodes SET used_cpu = used_cpu + 1 WHERE id LIKE 'hot-%'");
      expect(await pages()).toEqual(before);
    });
  });
}
