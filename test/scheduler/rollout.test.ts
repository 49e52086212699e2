/**
 * Rolling updates against a real coordinator and database with protocol-level agents: batch by batch
 * with a watch period, and a failing new version rolled back to the previous one.
 */
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import type { JobSpecInput } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

/** A job of three instances whose process runs `cmd`, updated two at a time (rolled back on failure). */
const job = (cmd: string, over: Partial<JobSpecInput> = {}) =>
  plainJob({
    name: 'rolling',
    instances: 3,
    task: {
      name: 't',
      processes: [{ name: 'p', cmdline: cmd }],
      resources: { cpu: 0.5, ram: 64 << 20, disk: 1 << 20 },
    },
    update_config: { batch_size: 2, watch_secs: 1, max_total_failures: 0, rollback_on_failure: true },
    ...over,
  });

describe('rolling updates', () => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
  });

  const byVersion = async (jobId: string) => {
    const ws = (await c.api('GET', `/api/workloads?job=${jobId}`)).body.data as {
      job_version: number;
      status: string;
      instance: number;
    }[];
    const out: Record<string, number> = {};
    for (const w of ws)
      out[`v${w.job_version}:${w.status}`] = (out[`v${w.job_version}:${w.status}`] ?? 0) + 1;
    return out;
  };

  it('replaces instances batch by batch, each batch watched before the next', async () => {
    c = await startTestCoordinator('postgres');
    // Every start after the first three is recorded with the instances still running the old version.
    const a = new ProtocolAgent({ url: c.url, name: 'n', cpu: 8 });
    agents.push(await a.connect());
    const v1 = await c.api('POST', '/api/jobs', job('v1'));
    const jobId = v1.body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 3);

    const v2 = await c.api('POST', '/api/jobs', job('v2'));
    expect(v2.status).toBe(201);
    expect(v2.body.data.version).toBe(2);
    expect(v2.body.data.workloads).toEqual([]);
    // First batch: two instances move, the third keeps running version 1 during the watch.
    await eventually(async () => {
      const v = await byVersion(jobId);
      return v['v2:running'] === 2 && v['v1:running'] === 1 ? v : null;
    }, 10_000);
    const midway = (await c.api('GET', `/api/jobs/${jobId}`)).body.data.update;
    expect(midway).toMatchObject({ status: 'rolling', from_version: 1, to_version: 2 });
    const done = await eventually(async () => {
      const u = (await c.api('GET', `/api/jobs/${jobId}`)).body.data.update;
      return u.status === 'succeeded' ? u : null;
    }, 20_000);
    expect(done.message).toBe('all 3 instance(s) run version 2');
    expect(await byVersion(jobId)).toEqual({ 'v2:running': 3, 'v1:stopped': 3 });
  });

  it('rolls back to the previous version when the new one fails', async () => {
    c = await startTestCoordinator('postgres');
    const a = new ProtocolAgent({
      url: c.url,
      name: 'n',
      cpu: 8,
      onStart: (m) => (m.workload.spec.task.processes[0]!.cmdline === 'broken' ? 'failed' : 'running'),
    });
    agents.push(await a.connect());
    const v1 = await c.api('POST', '/api/jobs', job('good'));
    const jobId = v1.body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 3);

    await c.api('POST', '/api/jobs', job('broken'));
    const history = await eventually(async () => {
      const us = (await c.api('GET', `/api/jobs/${jobId}/updates`)).body.data;
      return us.length === 2 && us[0].status === 'succeeded' ? us : null;
    }, 20_000);
    expect(history[1]).toMatchObject({ status: 'rolled_back', from_version: 1, to_version: 2 });
    expect(history[1].message).toMatch(
      /[12] instance\(s\) of version 2 failed \(max_total_failures 0\); rolled back to version 1/,
    );
    expect(history[0]).toMatchObject({ rollback: true, from_version: 2, to_version: 1 });
    const jobNow = (await c.api('GET', `/api/jobs/${jobId}`)).body.data;
    expect(jobNow.current_version).toBe(1);
    const v = await eventually(async () => {
      const x = await byVersion(jobId);
      return x['v1:running'] === 3 ? x : null;
    });
    expect(v['v2:running']).toBeUndefined();

    // The next submit is version 3 (version 2 is still in the history), and it rolls out. It was a 500
    // (duplicate key) for every later submit, revert and resubmit after a stop: the job was stuck for good.
    const v3 = await c.api('POST', '/api/jobs', job('fixed'));
    expect([v3.status, v3.body.data?.version]).toEqual([201, 3]);
    await eventually(async () => (await byVersion(jobId))['v3:running'] === 3, 20_000);
    // `mxc jobs revert` submits an earlier version's spec again: a new version.
    const versions = (await c.api('GET', `/api/jobs/${jobId}/versions`)).body.data as {
      version: number;
      spec: unknown;
    }[];
    const revert = await c.api('POST', '/api/jobs', versions.find((x) => x.version === 1)!.spec);
    expect([revert.status, revert.body.data?.version]).toEqual([201, 4]);
  });

  it('mxc submit --wait follows a rolling update to its end; a cron job reports its schedule', async () => {
    c = await startTestCoordinator('postgres');
    agents.push(
      await new ProtocolAgent({
        url: c.url,
        name: 'n',
        cpu: 8,
        onStart: (m) => (m.workload.spec.task.processes[0]!.cmdline === 'broken' ? 'failed' : 'running'),
      }).connect(),
    );
    const env = { MXC_COORDINATOR: c.url };
    const submit = (spec: unknown) =>
      execa('node', [repoPath('bin', 'mxc.js'), 'submit', '--wait', '--no-push'], {
        input: JSON.stringify(spec),
        env,
        reject: false,
      });
    const v1 = await submit(job('v1'));
    expect(v1.exitCode).toBe(0);
    const v2 = await submit(job('v2'));
    expect(v2.exitCode).toBe(0);
    expect(v2.stdout).toBe(
      'test/www/prod/rolling: rolling update to version 2 succeeded: all 3 instance(s) run version 2',
    );
    // An update that is rolled back fails the wait (it exited 0: the rollback's own update succeeded).
    const v3 = await submit(job('broken'));
    expect(v3.exitCode, v3.stderr).toBe(1);
    expect(v3.stderr).toMatch(
      /mxc: version 3 is no longer the job's: .*rolled back to version 2|version 3 is no longer the job's: rolling back to version 2/,
    );
    const cron = await submit(plainJob({ name: 'nightly', service: false, cron_schedule: '0 3 * * *' }));
    expect(cron.exitCode).toBe(0);
    expect(cron.stdout).toBe('test/www/prod/nightly version 1 runs on its schedule "0 3 * * *" (UTC)');
  });

  it('restarts a job without a config change: batch by batch with an update_config, else all at once', async () => {
    c = await startTestCoordinator('postgres');
    agents.push(await new ProtocolAgent({ url: c.url, name: 'n', cpu: 8 }).connect());
    const rolling = (await c.api('POST', '/api/jobs', job('r'))).body.data.job.id;
    const plain = (await c.api('POST', '/api/jobs', job('p', { name: 'plain', update_config: undefined })))
      .body.data.job.id;
    await eventually(
      async () =>
        (await byVersion(rolling))['v1:running'] === 3 && (await byVersion(plain))['v1:running'] === 3,
    );
    const before = new Set(
      (await c.api('GET', '/api/workloads?status=running')).body.data.map((w: { id: string }) => w.id),
    );

    const r1 = await c.api('POST', `/api/jobs/${rolling}/restart`);
    expect(r1.body.data).toMatchObject({ rolling: true, workloads: [] });
    const r2 = await c.api('POST', `/api/jobs/${plain}/restart`);
    expect(r2.body.data.rolling).toBe(false);
    expect(r2.body.data.workloads).toHaveLength(3);

    const done = await eventually(async () => {
      const u = (await c.api('GET', `/api/jobs/${rolling}`)).body.data.update;
      return u?.status === 'succeeded' ? u : null;
    }, 20_000);
    expect(done).toMatchObject({
      restart: true,
      from_version: 1,
      to_version: 1,
      message: 'all 3 instance(s) restarted',
    });
    await eventually(async () => (await byVersion(plain))['v1:running'] === 3);
    const now = (await c.api('GET', '/api/workloads?status=running')).body.data.map(
      (w: { id: string }) => w.id,
    );
    expect(now).toHaveLength(6);
    for (const id of now) expect(before.has(id)).toBe(false);
    expect((await byVersion(rolling))['v1:stopped']).toBe(3);

    const missing = await c.api('POST', '/api/jobs/nope/restart');
    expect(missing.status).toBe(404);
    await c.api('POST', `/api/jobs/${plain}/stop`);
    const stopped = await c.api('POST', `/api/jobs/${plain}/restart`);
    expect(stopped.status).toBe(409);
    expect(stopped.body.error.code).toBe('JOB_STOPPED');
  });

  it('keeps serving with the old version where the rollout has not arrived yet, when a node is lost', async () => {
    c = await startTestCoordinator('postgres', { heartbeatTtlMs: 800 });
    const steady = await new ProtocolAgent({ url: c.url, name: 'steady', cpu: 8 }).connect();
    const fragile = await new ProtocolAgent({ url: c.url, name: 'fragile', cpu: 8 }).connect();
    agents.push(steady, fragile);
    // One instance per node (spread), without a limit, so the survivor can take both.
    const v1 = await c.api('POST', '/api/jobs', job('v1', { instances: 2 }));
    const jobId = v1.body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 2);
    // A slow rollout (one instance at a time, watched for a minute) starts with instance 0.
    await c.api(
      'POST',
      '/api/jobs',
      job('v2', {
        instances: 2,
        update_config: { batch_size: 1, watch_secs: 60, max_total_failures: 0, rollback_on_failure: true },
      }),
    );
    const ws = (await c.api('GET', `/api/workloads?job=${jobId}&status=running`)).body.data;
    const lost = ws.find(
      (w: { instance: number; job_version: number }) => w.instance === 1 && w.job_version === 1,
    );
    expect(lost).toBeDefined();
    (lost.node === 'fragile' ? fragile : steady).stopHeartbeats();
    const survivor = lost.node === 'fragile' ? 'steady' : 'fragile';
    // Instance 1 still runs version 1, on the node that is left, while the rollout waits.
    const replacement = await eventually(async () => {
      const all = (await c.api('GET', `/api/workloads?job=${jobId}`)).body.data;
      return all.find(
        (w: { id: string; instance: number; job_version: number; status: string }) =>
          w.instance === 1 && w.job_version === 1 && w.status === 'running' && w.id !== lost.id,
      );
    }, 15_000);
    expect(replacement.node).toBe(survivor);
    expect((await c.api('GET', `/api/jobs/${jobId}`)).body.data.update.status).toBe('rolling');
  });

  it('an instance of the new version lost with its node is placed again, not counted as failed', async () => {
    c = await startTestCoordinator('postgres', { heartbeatTtlMs: 800 });
    // The node's agent dies while it starts version 2: the version is not at fault.
    let startedV2 = false;
    const fragile = new ProtocolAgent({
      url: c.url,
      name: 'fragile',
      cpu: 8,
      onStart: (m) => {
        if (m.workload.spec.task.processes[0]!.cmdline !== 'v2') return 'running';
        startedV2 = true;
        return null;
      },
    });
    agents.push(await fragile.connect());
    const jobId = (await c.api('POST', '/api/jobs', job('v1', { instances: 1 }))).body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 1);
    await c.api(
      'POST',
      '/api/jobs',
      job('v2', {
        instances: 1,
        update_config: { batch_size: 1, watch_secs: 1, max_total_failures: 0, rollback_on_failure: true },
      }),
    );
    await eventually(async () => startedV2, 10_000, 'version 2 sent to the fragile node');
    agents.push(await new ProtocolAgent({ url: c.url, name: 'steady', cpu: 8 }).connect());
    fragile.stopHeartbeats();
    const history = await eventually(async () => {
      const us = (await c.api('GET', `/api/jobs/${jobId}/updates`)).body.data;
      return us[0].status !== 'rolling' ? us : null;
    }, 20_000);
    // Counted as a failed instance, the lost one rolled the update back (max_total_failures 0).
    expect(history).toHaveLength(1);
    expect(history[0]).toMatchObject({
      status: 'succeeded',
      to_version: 2,
      message: 'all 1 instance(s) run version 2',
    });
    expect(await byVersion(jobId)).toMatchObject({ 'v2:lost': 1, 'v2:running': 1 });
    expect((await c.api('GET', `/api/jobs/${jobId}`)).body.data.current_version).toBe(2);
  });

  it('retries an instance up to max_per_shard_failures before counting it failed', async () => {
    c = await startTestCoordinator('postgres');
    const seen = new Set<number>();
    // Each instance of the new version fails on its first start, then runs.
    const a = new ProtocolAgent({
      url: c.url,
      name: 'n',
      cpu: 8,
      onStart: (m) => {
        if (m.workload.spec.task.processes[0]!.cmdline !== 'flaky') return 'running';
        if (seen.has(m.workload.instance)) return 'running';
        seen.add(m.workload.instance);
        return 'failed';
      },
    });
    agents.push(await a.connect());
    const jobId = (await c.api('POST', '/api/jobs', job('good'))).body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 3);
    await c.api(
      'POST',
      '/api/jobs',
      job('flaky', {
        update_config: { batch_size: 2, watch_secs: 1, max_per_shard_failures: 1, max_total_failures: 0 },
      }),
    );
    const done = await eventually(async () => {
      const u = (await c.api('GET', `/api/jobs/${jobId}`)).body.data.update;
      return u && u.status !== 'rolling' ? u : null;
    }, 20_000);
    expect(done).toMatchObject({ status: 'succeeded', to_version: 2 });
    const v = await byVersion(jobId);
    expect(v, JSON.stringify(v)).toMatchObject({ 'v2:running': 3, 'v2:failed': 3 });
  });

  it.each([
    {
      instances: 1,
      ends: 'succeeded',
      message: '0 of 1 instance(s) run version 2; 1 instance(s) failed (max_total_failures 1)',
    },
    {
      instances: 2,
      ends: 'rolled_back',
      message: '2 instance(s) of version 2 failed (max_total_failures 1); rolled back to version 1',
    },
  ])(
    'an always-failing version with $instances instance(s) and a window no larger than max_total_failures ends $ends',
    async ({ instances, ends, message }) => {
      // Each instance is tried max_per_shard_failures + 1 times, then the update moves past it; it used
      // to retry the first instance for ever, since one failed instance never exceeded the limit. Not a
      // service, so every new workload is the update's own (a service's are restarted on failure too).
      c = await startTestCoordinator('postgres');
      const a = new ProtocolAgent({
        url: c.url,
        name: 'n',
        cpu: 8,
        onStart: (m) => (m.workload.spec.task.processes[0]!.cmdline === 'broken' ? 'failed' : 'running'),
      });
      agents.push(await a.connect());
      const cfg = {
        batch_size: 1,
        watch_secs: 1, // the agent reports running just before failed
        max_per_shard_failures: 1,
        max_total_failures: 1,
        rollback_on_failure: true,
      };
      const jobId = (
        await c.api('POST', '/api/jobs', job('good', { instances, service: false, update_config: cfg }))
      ).body.data.job.id;
      await eventually(async () => (await byVersion(jobId))['v1:running'] === instances);
      await c.api('POST', '/api/jobs', job('broken', { instances, service: false, update_config: cfg }));
      const history = await eventually(async () => {
        const us = (await c.api('GET', `/api/jobs/${jobId}/updates`)).body.data;
        const update = us.find((u: { to_version: number }) => u.to_version === 2);
        return update && update.status !== 'rolling' ? us : null;
      }, 20_000);
      const update = history.find((u: { to_version: number }) => u.to_version === 2);
      expect(update).toMatchObject({ status: ends, message });
      // Each instance of version 2 was started twice (max_per_shard_failures + 1), no more.
      const tries = (await c.api('GET', `/api/workloads?job=${jobId}`)).body.data.filter(
        (w: { job_version: number }) => w.job_version === 2,
      );
      const perInstance = new Map<number, number>();
      for (const w of tries as { instance: number }[])
        perInstance.set(w.instance, (perInstance.get(w.instance) ?? 0) + 1);
      expect([...perInstance.values()]).toEqual(Array.from({ length: instances }, () => 2));
      if (ends === 'rolled_back') {
        expect(history[0]).toMatchObject({ rollback: true, from_version: 2, to_version: 1 });
        await eventually(async () => (await byVersion(jobId))['v1:running'] === instances);
      }
    },
  );

  it.each([true, false])(
    'wait_for_batch_completion %s: a stuck instance holds its batch, or the window slides past it; restart_threshold fails it and it is retried',
    async (waitForBatch) => {
      c = await startTestCoordinator('postgres');
      const stuck = new Set<string>();
      const a = new ProtocolAgent({
        url: c.url,
        name: 'n',
        cpu: 8,
        // Version 2's instance 1 never reports running on its first attempt.
        onStart: (m) => {
          const first = m.workload.spec.task.processes[0]!.cmdline === 'v2' && m.workload.instance === 1;
          if (first && stuck.size === 0) {
            stuck.add(m.workload.id);
            return null;
          }
          return 'running';
        },
      });
      agents.push(await a.connect());
      const cfg = {
        batch_size: 2,
        watch_secs: 0,
        max_total_failures: 0,
        max_per_shard_failures: 1,
        rollback_on_failure: true,
        restart_threshold: 3,
        wait_for_batch_completion: waitForBatch,
      };
      const v1 = await c.api('POST', '/api/jobs', job('v1', { update_config: cfg }));
      const jobId = v1.body.data.job.id;
      await eventually(async () => (await byVersion(jobId))['v1:running'] === 3);
      await c.api('POST', '/api/jobs', job('v2', { update_config: cfg }));
      const starts = async () => {
        const ws = (await c!.api('GET', `/api/workloads?job=${jobId}`)).body.data as {
          id: string;
          job_version: number;
          instance: number;
          status: string;
          error: string | null;
        }[];
        return ws.filter((w) => w.job_version === 2);
      };
      // Instance 0 is done while instance 1 is stuck starting.
      await eventually(async () => {
        const v2 = await starts();
        return v2.some((w) => w.instance === 0 && w.status === 'running') &&
          v2.some((w) => w.instance === 1 && w.status === 'starting')
          ? v2
          : null;
      });
      // Sliding: instance 2 starts while instance 1 is still stuck.
      if (!waitForBatch)
        await eventually(async () => {
          const v2 = await starts();
          return (
            v2.some((w) => w.instance === 2) && v2.some((w) => stuck.has(w.id) && w.status === 'starting')
          );
        });
      // After restart_threshold the stuck one fails, is retried, and the update completes.
      const done = await eventually(async () => {
        const u = (await c!.api('GET', `/api/jobs/${jobId}`)).body.data.update;
        return u.status === 'succeeded' ? u : null;
      }, 20_000);
      expect(done.message).toBe('all 3 instance(s) run version 2');
      const failed = (await starts()).find((w) => stuck.has(w.id))!;
      expect(failed.status).toBe('failed');
      expect(failed.error).toMatch(/did not reach running within restart_threshold \(3 s\)/);
      // Batch by batch: instance 2 started only after the stuck instance 1 was settled (failed, retried, done).
      const third = (await starts()).find((w) => w.instance === 2)!;
      const thirdCreated = Date.parse(
        (await c.api('GET', `/api/workloads/${third.id}`)).body.data.created_at as string,
      );
      const stuckEnded = Date.parse(
        (await c.api('GET', `/api/workloads/${failed.id}`)).body.data.finished_at,
      );
      expect(thirdCreated > stuckEnded).toBe(waitForBatch);
      expect(
        (await starts())
          .filter((w) => w.status === 'running')
          .map((w) => w.instance)
          .sort(),
      ).toEqual([0, 1, 2]);
    },
  );

  it('replaces everything at once without an update_config, as before', async () => {
    c = await startTestCoordinator('pglite');
    agents.push(await new ProtocolAgent({ url: c.url, name: 'n', cpu: 8 }).connect());
    const v1 = await c.api('POST', '/api/jobs', job('v1', { update_config: undefined }));
    const jobId = v1.body.data.job.id;
    await eventually(async () => (await byVersion(jobId))['v1:running'] === 3);
    const v2 = await c.api('POST', '/api/jobs', job('v2', { update_config: undefined }));
    expect(v2.body.data.workloads).toHaveLength(3);
    await eventually(async () => (await byVersion(jobId))['v2:running'] === 3);
  });
});

describe('an update paused, resumed and aborted (Aurora update pause|resume|abort)', () => {
  let c: TestCoordinator;
  let a: ProtocolAgent;
  afterEach(async () => {
    a?.close();
    await c?.stop();
  });

  it('holds a paused update through rollout steps, resumes it, and aborts another where it stands', async () => {
    c = await startTestCoordinator('pglite');
    a = await new ProtocolAgent({ url: c.url, name: 'n', cpu: 8 }).connect();
    const spec = (cmd: string) =>
      job(cmd, { name: 'paused', update_config: { batch_size: 1, watch_secs: 1, max_total_failures: 0 } });
    const versions = async (jobId: string) => {
      const ws = (await c.api('GET', `/api/workloads?job=${jobId}&status=running`)).body.data as {
        job_version: number;
      }[];
      return ws.map((w) => w.job_version).sort();
    };
    const jobId = (await c.api('POST', '/api/jobs', spec('v1'))).body.data.job.id;
    await eventually(async () => (await versions(jobId)).join() === '1,1,1');
    expect((await c.api('POST', `/api/jobs/${jobId}/update/pause`)).body.error.code).toBe('NO_UPDATE');

    await c.api('POST', '/api/jobs', spec('v2'));
    await eventually(async () => (await versions(jobId)).join() === '1,1,2');
    // The CLI says what was done, where the instances stand and what comes next.
    const cli = (...args: string[]) =>
      execa('node', [repoPath('bin', 'mxc.js'), ...args], { reject: false, env: { MXC_COORDINATOR: c.url } });
    const key = 'test/www/prod/paused';
    const paused = await cli('jobs', 'pause', 'paused');
    expect(paused.exitCode, paused.stderr).toBe(0);
    expect(paused.stdout).toMatch(
      new RegExp(
        `^${key}: update v1 → v2 paused by anonymous\n {2}instances: [12] on v2, [12] on v1; no instance moves until \`mxc jobs resume ${key}\` \\(or \`mxc jobs abort ${key}\` to end the update here\\)$`,
      ),
    );
    expect(paused.stdout).not.toMatch(/next\)/);
    expect((await cli('jobs', 'show', 'paused')).stdout).toMatch(/^update +v1 → v2: paused by anonymous$/m);
    // Rollout steps long past every watch period move nothing while it is paused.
    const before = await versions(jobId);
    for (let i = 1; i <= 3; i++) await c.coordinator.stepRollouts(new Date(Date.now() + i * 60_000));
    expect(await versions(jobId)).toEqual(before);
    expect((await c.api('GET', `/api/jobs/${jobId}`)).body.data.update.status).toBe('paused');
    const resumed = await cli('jobs', 'resume', 'paused');
    expect(resumed.stdout).toMatch(
      new RegExp(
        `^${key}: update v1 → v2 resumed by anonymous\n {2}instances: [12] on v2, [12] on v1; the rest move to v2 batch by batch; follow it with \`mxc jobs show ${key}\`$`,
      ),
    );
    expect((await c.api('GET', `/api/jobs/${jobId}`)).body.data.update.status).not.toBe('paused');
    await eventually(
      async () => (await c.api('GET', `/api/jobs/${jobId}`)).body.data.update.status === 'succeeded',
      20_000,
    );
    expect(await versions(jobId)).toEqual([2, 2, 2]);

    // Aborted: the update ends and the instances stay as they are, mixed.
    await c.api('POST', '/api/jobs', spec('v3'));
    await eventually(async () => (await versions(jobId)).join() === '2,2,3');
    const aborted = await cli('jobs', 'abort', 'paused');
    expect(aborted.stdout).toBe(
      `${key}: update v2 → v3 aborted by anonymous; instances stay on the versions they run\n` +
        `  instances: 1 on v3, 2 on v2; \`mxc jobs restart ${key}\` replaces every instance with the job's version, v3`,
    );
    expect((await c.api('GET', `/api/jobs/${jobId}`)).body.data.update.status).toBe('cancelled');
    const again = await cli('jobs', 'abort', 'paused');
    expect([again.exitCode, again.stderr]).toEqual([
      1,
      expect.stringContaining(`job ${key} has no rolling or paused update to abort`),
    ]);
    for (let i = 1; i <= 3; i++) await c.coordinator.stepRollouts(new Date(Date.now() + i * 60_000));
    expect(await versions(jobId)).toEqual([2, 2, 3]);
    expect((await c.api('POST', `/api/jobs/${jobId}/update/resume`)).body.error.code).toBe('NO_UPDATE');
  }, 60_000);
});
