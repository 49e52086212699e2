/**
 * A submit's scheduling pass, which reads the cluster while the new job's insert commits (placement.ts,
 * SchedulerState.expectNewJob), on both engines: it places a new job its pending read ran too early to
 * see, from what the submit inserted; plans a job its read did see once; and, when another coordinator
 * placed the new job's workloads first, leaves them where they are.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NewJobInsert, recordSubmission } from '../../scheduler/job-submit.js';
import { SchedulerState, type StartedWorkload, schedulePass } from '../../scheduler/placement.js';
import type { Db } from '../../scheduler/store/db.js';
import * as jobs from '../../scheduler/store/jobs.js';
import * as nodes from '../../scheduler/store/nodes.js';
import * as wl from '../../scheduler/store/workloads.js';
import { newWorkloads } from '../../scheduler/workload-changes.js';
import { JobSpec } from '../../spec/job.js';
import { plainJob } from '../helpers/coordinator.js';
import { ENGINES, freshDb } from '../helpers/db.js';
import { passDeps } from '../helpers/pass.js';
import { PLAIN_CAPABILITIES } from '../helpers/protocol-agent.js';

const MiB = 1024 * 1024;

/** A db whose pending-list reads are counted, so a test can act once a pass has read its list. */
function watchingPendingReads(db: Db): { db: Db; pendingRead: Promise<void> } {
  let answered!: () => void;
  const pendingRead = new Promise<void>((resolve) => {
    answered = resolve;
  });
  return {
    db: {
      ...db,
      async query(sql, params, name) {
        const rows = await db.query(sql, params, name);
        if (name === 'mxc_list_pending') answered();
        return rows as never;
      },
    },
    pendingRead,
  };
}

let submitted = 0;
const specOf = (instances: number) =>
  JobSpec.parse(
    plainJob({
      name: `early-${submitted++}`,
      instances,
      task: { ...plainJob().task, resources: { cpu: 1, ram: 256 * MiB, disk: MiB } },
    }),
  );

for (const engine of ENGINES) {
  describe(`a submit's pass, reading beside the insert, on ${engine}`, () => {
    let db: Awaited<ReturnType<typeof freshDb>>;
    beforeAll(async () => {
      db = await freshDb(engine);
      await nodes.upsertNode(db, {
        id: 'node-early',
        name: 'node-early',
        resources: { cpu: 64, memory_mb: 64 * 1024, disk_mb: 100_000 },
        capabilities: PLAIN_CAPABILITIES,
        version: 'test',
      });
    });
    afterAll(async () => {
      await db?.close();
    });

    it('places a new job whose insert committed after the pass read its pending list', async () => {
      const spec = specOf(3);
      const jobId = `job-${submitted}`;
      const workloads = newWorkloads(jobId, 1, spec, 0);
      const watched = watchingPendingReads(db);
      const state = new SchedulerState();
      // The insert is sent only once the pass has its pending list: the list cannot hold the new job.
      const insert: NewJobInsert = {
        jobId,
        workloads,
        inserted: watched.pendingRead.then(async () => {
          const row = await jobs.insertNewJob(db, {
            id: jobId,
            key: `test/www/prod/${spec.name}`,
            spec,
            specHash: 'h',
            closure: [],
            workloads,
            reason: 'submitted (version 1)',
            nextRunAt: null,
          });
          return row !== null;
        }),
      };
      state.expectNewJob(insert);
      const started: StartedWorkload[] = [];
      await schedulePass(passDeps(watched.db, state, started));
      expect(started.map((w) => w.id).sort()).toEqual(workloads.map((w) => w.id).sort());
      for (const w of workloads) expect((await wl.getWorkload(db, w.id))?.status).toBe('starting');
    });

    it('plans a new job its read did see once', async () => {
      const state = new SchedulerState();
      const spec = specOf(2);
      // Committed before the pass: its read sees the workloads, and the expectation must not add them again.
      await recordSubmission(db, `test/www/prod/${spec.name}`, spec, [], new Date(), (insert) =>
        state.expectNewJob(insert),
      );
      const before = (await nodes.getNode(db, 'node-early'))!;
      const started: StartedWorkload[] = [];
      await schedulePass(passDeps(db, state, started));
      expect(started).toHaveLength(2);
      expect(new Set(started.map((w) => w.id)).size).toBe(2);
      const after = (await nodes.getNode(db, 'node-early'))!;
      expect(after.used_cpu - before.used_cpu).toBeCloseTo(2, 9);
    });

    it('leaves a new job that another coordinator placed before the read where it is', async () => {
      const spec = specOf(2);
      const state = new SchedulerState();
      let expected: NewJobInsert | null = null;
      await recordSubmission(db, `test/www/prod/${spec.name}`, spec, [], new Date(), (insert) => {
        expected = insert;
      });
      // Another coordinator's pass places both first; this one's read then finds nothing pending.
      const elsewhere: StartedWorkload[] = [];
      await schedulePass(passDeps(db, new SchedulerState(), elsewhere));
      expect(elsewhere).toHaveLength(2);
      state.expectNewJob(expected!);
      const before = (await nodes.getNode(db, 'node-early'))!;
      const started: StartedWorkload[] = [];
      await schedulePass(passDeps(db, state, started));
      expect(started).toEqual([]);
      const after = (await nodes.getNode(db, 'node-early'))!;
      expect(after.used_cpu).toBeCloseTo(before.used_cpu, 9);
      const events = await wl.listEvents(db, elsewhere[0]!.id);
      expect(events.filter((e) => e.to_status === 'starting')).toHaveLength(1);
    });
  });
}

/**
 * A db that registers a new job with the pass's state as the pass's first apply is sent (a submit
 * arriving while it runs), and counts the pass's pending-list reads.
 */
function submittingDuringApply(db: Db, state: SchedulerState, spec: JobSpec) {
  const jobId = `job-during-${submitted}`;
  const workloads = newWorkloads(jobId, 1, spec, 0);
  const seen = { pendingReads: 0, workloads };
  let sent = false;
  const watched: Db = {
    ...db,
    query(sql, params, name) {
      if (name === 'mxc_list_pending') seen.pendingReads++;
      if (!sent && sql.includes('INSERT INTO agent_commands') && sql.includes('moved AS')) {
        sent = true;
        state.expectNewJob({
          jobId,
          workloads,
          inserted: jobs
            .insertNewJob(db, {
              id: jobId,
              key: `test/www/prod/${spec.name}`,
              spec,
              specHash: 'h',
              closure: [],
              workloads,
              reason: 'submitted (version 1)',
              nextRunAt: null,
            })
            .then((row) => row !== null),
        });
      }
      return db.query(sql, params, name);
    },
  };
  return { db: watched, seen };
}

/** `n` nodes of `cpu` cores named `${prefix}-i`. */
async function addNodes(db: Db, prefix: string, n: number, cpu: number) {
  for (let i = 0; i < n; i++) {
    await nodes.upsertNode(db, {
      id: `${prefix}-${i}`,
      name: `${prefix}-${i}`,
      resources: { cpu, memory_mb: 64 * 1024, disk_mb: 100_000 },
      capabilities: PLAIN_CAPABILITIES,
      version: 'test',
    });
  }
}

async function expectFirst(db: Db, state: SchedulerState, spec: JobSpec) {
  await recordSubmission(db, `test/www/prod/${spec.name}`, spec, [], new Date(), (insert) =>
    state.expectNewJob(insert),
  );
}

for (const engine of ENGINES) {
  describe(`jobs submitted while a pass applies, on ${engine}`, () => {
    it('are planned beside the apply, counting what it places, when they are at least as many as the nodes', async () => {
      const db = await freshDb(engine);
      try {
        await addNodes(db, 'ahead', 1, 4);
        const state = new SchedulerState();
        await expectFirst(db, state, specOf(3));
        // Three more workloads of one core for one node with one core left: one fits, two wait.
        const during = submittingDuringApply(db, state, specOf(3));
        const started: StartedWorkload[] = [];
        await schedulePass(passDeps(during.db, state, started));
        expect(started).toHaveLength(4);
        expect(during.seen.pendingReads).toBe(1);
        expect((await nodes.getNode(db, 'ahead-0'))!.used_cpu).toBeCloseTo(4, 9);
        const later = during.seen.workloads.map((w) => w.id);
        const rows = await Promise.all(later.map((id) => wl.getWorkload(db, id)));
        expect(rows.filter((w) => w?.status === 'starting')).toHaveLength(1);
        const waiting = rows.filter((w) => w?.status === 'pending');
        expect(waiting).toHaveLength(2);
        for (const w of waiting) expect(w?.pending_reason).toMatch(/cpu/);
      } finally {
        await db.close();
      }
    });

    it('are planned from memory after the apply when fewer than the nodes', async () => {
      const db = await freshDb(engine);
      try {
        await addNodes(db, 'after', 4, 4);
        const state = new SchedulerState();
        await expectFirst(db, state, specOf(3));
        const during = submittingDuringApply(db, state, specOf(2));
        const started: StartedWorkload[] = [];
        await schedulePass(passDeps(during.db, state, started));
        expect(started).toHaveLength(5);
        expect(during.seen.pendingReads).toBe(1);
        const used = await Promise.all([0, 1, 2, 3].map((i) => nodes.getNode(db, `after-${i}`)));
        expect(used.reduce((a, n) => a + n!.used_cpu, 0)).toBeCloseTo(5, 9);
      } finally {
        await db.close();
      }
    });
  });
}
