/**
 * Requests on one job racing each other on PostgreSQL (an attacker pass): concurrent restarts made one
 * live workload per restart for a one-instance service, and a run or restart racing a stop left a
 * stopped job with live workloads that never ended. Each now takes the job's lock and looks at the job
 * again under it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

describe('requests racing on one job', () => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
  });

  const live = async (jobId: string) =>
    ((await c.api('GET', `/api/workloads?job=${jobId}`)).body.data as { instance: number; status: string }[])
      .filter((w) => ['pending', 'starting', 'running'].includes(w.status))
      .map((w) => w.instance)
      .sort();

  it('concurrent restarts leave one live workload per instance, and one update at most', async () => {
    c = await startTestCoordinator('postgres');
    agents.push(await new ProtocolAgent({ url: c.url, name: 'n', cpu: 64 }).connect());
    const plain = (await c.api('POST', '/api/jobs', plainJob({ name: 'one' }))).body.data.job.id;
    const rolling = (
      await c.api(
        'POST',
        '/api/jobs',
        plainJob({ name: 'two', instances: 2, update_config: { batch_size: 1, watch_secs: 1 } }),
      )
    ).body.data.job.id;
    await eventually(async () => (await live(plain)).length === 1 && (await live(rolling)).length === 2);

    const answers = await Promise.all(
      [plain, rolling].flatMap((id) =>
        Array.from({ length: 8 }, () => c.api('POST', `/api/jobs/${id}/restart`)),
      ),
    );
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const updates = (await c.api('GET', `/api/jobs/${rolling}/updates`)).body.data as { status: string }[];
    expect(updates.filter((u) => u.status === 'rolling' || u.status === 'paused').length).toBeLessThanOrEqual(
      1,
    );
    await c.coordinator.evaluate();
    expect(await live(plain)).toEqual([0]);
    await eventually(async () => {
      const u = (await c.api('GET', `/api/jobs/${rolling}`)).body.data.update;
      return u?.status !== 'rolling';
    }, 30_000);
    expect(await live(rolling)).toEqual([0, 1]);
  });

  it('a restart or a run racing a stop never outlives it', async () => {
    c = await startTestCoordinator('postgres');
    agents.push(await new ProtocolAgent({ url: c.url, name: 'n', cpu: 64 }).connect());
    for (let trial = 0; trial < 5; trial++) {
      const svc = (await c.api('POST', '/api/jobs', plainJob({ name: `svc${trial}`, instances: 2 }))).body
        .data.job.id;
      const cron = (
        await c.api(
          'POST',
          '/api/jobs',
          plainJob({
            name: `cron${trial}`,
            service: false,
            cron_schedule: '0 3 * * *',
            cron_collision_policy: 'RUN_OVERLAP',
          }),
        )
      ).body.data.job.id;
      await eventually(async () => (await live(svc)).length === 2);
      const racing = [
        ...Array.from({ length: 6 }, () => c.api('POST', `/api/jobs/${svc}/restart`)),
        ...Array.from({ length: 6 }, () => c.api('POST', `/api/jobs/${cron}/run`)),
      ];
      const stops = [c.api('POST', `/api/jobs/${svc}/stop`), c.api('POST', `/api/jobs/${cron}/stop`)];
      const all = await Promise.all([...racing, ...stops]);
      for (const a of all) expect([200, 409]).toContain(a.status);
      expect(all.filter((a) => a.status === 409).every((a) => a.body.error.code === 'JOB_STOPPED')).toBe(
        true,
      );
      // Stopped is stopped: whatever a restart or run made before the stop ends with it.
      for (const id of [svc, cron]) {
        expect((await c.api('GET', `/api/jobs/${id}`)).body.data.status).toBe('stopped');
        await eventually(async () => (await live(id)).length === 0, 10_000, `job ${id} to have nothing live`);
      }
    }
  }, 120_000);
});
