/**
 * A backlog that fits nowhere is re-planned only when something changed that could make some of it fit
 * (scheduler/placement.ts, SettledBacklog), on both engines: an unchanged one is not read again, and a
 * pending workload is placed by the first pass after room appears (a node joins, grows, or something on
 * it ends) or pending work is inserted behind the pass's back (another coordinator's submit).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordSubmission } from '../../scheduler/job-submit.js';
import { SchedulerState, type StartedWorkload, schedulePass } from '../../scheduler/placement.js';
import type { Db } from '../../scheduler/store/db.js';
import * as nodes from '../../scheduler/store/nodes.js';
import * as wl from '../../scheduler/store/workloads.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from '../helpers/coordinator.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { passDeps } from '../helpers/pass.js';
import { PLAIN_CAPABILITIES } from '../helpers/protocol-agent.js';

const MiB = 1024 * 1024;

/** A job of `instances` workloads of `cpu` cores each. */
const job = (name: string, cpu: number, instances = 1) =>
  JobSpec.parse(
    plainJob({ name, instances, task: { ...plainJob().task, resources: { cpu, ram: 64 * MiB, disk: MiB } } }),
  );

for (const engine of ENGINES) {
  describe(`a settled backlog on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    /** How many times a pass read the pending list. */
    let pendingReads = 0;
    /** The database, counting the pending list's reads. */
    let counted: Db;
    beforeAll(async () => {
      db = await freshDb(engine);
      counted = {
        engine: db.engine,
        query: (sql, params, name) => {
          if (name === 'mxc_list_pending') pendingReads++;
          return db.query(sql, params, name);
        },
        exec: (sql) => db.exec(sql),
        tx: (fn) => db.tx(fn),
        listen: (channel, onNotify) => db.listen(channel, onNotify),
        close: () => db.close(),
      };
    });
    afterAll(async () => {
      await db?.close();
    });

    const node = (name: string, cpu: number) =>
      nodes.upsertNode(db, {
        id: name,
        name,
        resources: { cpu, memory_mb: 8192, disk_mb: 10_000 },
        capabilities: PLAIN_CAPABILITIES,
        version: 'test',
      });
    const statusOf = async (jobId: string) =>
      (await db.query<{ status: string }>('SELECT status FROM workloads WHERE job_id = $1', [jobId])).map(
        (r) => r.status,
      );

    it('is read again only once room appears or pending work is inserted, and then placed', async () => {
      const state = new SchedulerState();
      const started: StartedWorkload[] = [];
      const pass = async () => {
        const before = pendingReads;
        await schedulePass(passDeps(counted, state, started));
        return pendingReads - before;
      };
      await node('n1', 4);
      const small = (await recordSubmission(db, 'test/www/prod/small', job('small', 3), [])).job.id;
      const big = (await recordSubmission(db, 'test/www/prod/big', job('big', 6, 3), [])).job.id;
      expect(await pass()).toBe(1);
      expect(await statusOf(small)).toEqual(['starting']);
      expect(await statusOf(big)).toEqual(['pending', 'pending', 'pending']);

      // Its own placement took room: nothing that could fit changed, the backlog is not read.
      expect(await pass()).toBe(0);
      expect(await pass()).toBe(0);

      // Another coordinator's submit (not expected here) is seen, planned and placed.
      const other = (await recordSubmission(db, 'test/www/prod/other', job('other', 1), [])).job.id;
      expect(await pass()).toBe(1);
      expect(await statusOf(other)).toEqual(['starting']);
      expect(await pass()).toBe(0);

      // A node that joins can take a workload of the backlog: placed at the next pass.
      await node('n2', 6);
      expect(await pass()).toBe(1);
      expect((await statusOf(big)).sort()).toEqual(['pending', 'pending', 'starting']);
      expect(await pass()).toBe(0);

      // A node that grows is looked at again (n1: 7 cores, 4 taken, too few for big's 6), and a workload
      // that ends frees its room (small's 3: n1 then has 6 free and takes one of big).
      await node('n1', 7);
      expect(await pass()).toBe(1);
      expect(await pass()).toBe(0);
      const [ended] = await db.query<{ id: string }>('SELECT id FROM workloads WHERE job_id = $1', [small]);
      await wl.transition(db, { id: ended!.id, status: 'starting' }, 'stopped', 'test');
      expect(await pass()).toBe(1);
      expect((await statusOf(big)).sort()).toEqual(['pending', 'starting', 'starting']);
      expect(started.map((w) => w.job_id).sort()).toEqual([big, big, other, small].sort());
    });

    it('is read again by a pass that expects a new job submitted here', async () => {
      const state = new SchedulerState();
      await schedulePass(passDeps(counted, state));
      const before = pendingReads;
      await schedulePass(passDeps(counted, state));
      expect(pendingReads).toBe(before);
      state.expectNewJob({
        jobId: 'test/www/prod/none',
        workloads: [],
        inserted: Promise.resolve(false),
      } as never);
      await schedulePass(passDeps(counted, state));
      expect(pendingReads).toBe(before + 1);
    });
  });
}
