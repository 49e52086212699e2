/**
 * Why a workload waits (pending_reason), on both engines: a pass records it, a later pass over the same
 * unplaceable backlog (the leader sweeps every 10 s) leaves the rows alone when the reason has not
 * changed (no new row version: its xmin stays), and rewrites them when it has.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { SchedulerState, schedulePass } from '../../scheduler/placement.js';
import * as nodes from '../../scheduler/store/nodes.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from '../helpers/coordinator.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { passDeps } from '../helpers/pass.js';
import { PLAIN_CAPABILITIES } from '../helpers/protocol-agent.js';

const MiB = 1024 * 1024;

for (const engine of ENGINES) {
  describe(`pending reasons across passes on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    beforeAll(async () => {
      db = await freshDb(engine);
    });
    afterAll(async () => {
      await db?.close();
    });

    /** Each workload's reason and row version (xmin: a new one for every UPDATE that wrote the row). */
    const rows = () =>
      db.query<{ id: string; pending_reason: string | null; version: string }>(
        `SELECT id, pending_reason, xmin::text AS version FROM workloads ORDER BY id`,
      );

    it('rewrites a waiting workload only when its reason changes', async () => {
      const spec = JobSpec.parse(
        plainJob({
          name: 'too-big',
          instances: 3,
          task: { ...plainJob().task, resources: { cpu: 4, ram: 256 * MiB, disk: MiB } },
        }),
      );
      await recordSubmission(db, 'test/www/prod/too-big', spec, []);
      const state = new SchedulerState();
      await schedulePass(passDeps(db, state));
      const first = await rows();
      expect(first).toHaveLength(3);
      for (const w of first) expect(w.pending_reason).toBe('no nodes have joined the cluster');

      await schedulePass(passDeps(db, state));
      expect(await rows()).toEqual(first);

      await nodes.upsertNode(db, {
        id: 'node-small',
        name: 'node-small',
        resources: { cpu: 2, memory_mb: 8192, disk_mb: 10_000 },
        capabilities: PLAIN_CAPABILITIES,
        version: 'test',
      });
      await schedulePass(passDeps(db, state));
      const second = await rows();
      for (const [i, w] of second.entries()) {
        expect(w.pending_reason).toBe('1 node: insufficient cpu (need 4, max free 2)');
        expect(w.version).not.toBe(first[i]!.version);
      }
      await schedulePass(passDeps(db, state));
      expect(await rows()).toEqual(second);
    });
  });
}
