// The maps of a job spec have a maximum, as its lists do. An announcer's `portmap` had none: a 4 MiB
// spec carried 300,000 aliases, copied into the ports of every serving instance, and each read of the
// job's endpoints then held the event loop ~1.7 s per instance; `task_links` had none either. A cron
// schedule's length had none: 2 MiB of list items held the event loop ~3 s at submit. Waits (seconds)
// had none either: one past a Node timer's 24.8 days fired at once on the agent.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MAX_CRON_CHARS, MAX_PORTMAP_ENTRIES, MAX_TASK_LINKS, MAX_WAIT_SECS } from '../../spec/job.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { snapshot } from './helpers.js';

const ADMIN = 'maps-admin';
const auth = { authorization: `Bearer ${ADMIN}` };
const entries = (n: number, value: (i: number) => string) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`a${i}`, value(i)]));

describe('job spec maps', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN } });
  });
  afterAll(async () => {
    await c?.stop();
  });

  test('portmap and task_links are bounded: one past is a coded 4xx that changes nothing', async () => {
    const before = await snapshot(c.db);
    const tooMany = [
      plainJob({ name: 'pm', announce: { primary_port: 'http', portmap: entries(300_000, () => '1') } }),
      plainJob({
        name: 'pm',
        announce: { primary_port: 'http', portmap: entries(MAX_PORTMAP_ENTRIES + 1, () => '80') },
      }),
      plainJob({ name: 'tl', task_links: entries(MAX_TASK_LINKS + 1, (i) => `http://x/${i}`) }),
      plainJob({ name: 'tl', task_links: { a: 'x'.repeat(100_000) } }),
    ];
    for (const [i, spec] of tooMany.entries()) {
      const r = await c.api('POST', '/api/jobs', spec, auth);
      // 300,000 keys are past what any object of a request may have: refused before the schemas.
      const refusal = i === 0 ? [400, 'TOO_MANY_KEYS'] : [422, 'VALIDATION_FAILED'];
      expect([spec.name, r.status, r.body.error?.code]).toEqual([spec.name, ...refusal]);
    }
    expect(await snapshot(c.db)).toBe(before);
    // At the maximum the job is taken: the limit, not something else, refused the others.
    const atMax = plainJob({
      name: 'pm',
      announce: { primary_port: 'http', portmap: entries(MAX_PORTMAP_ENTRIES, () => '80') },
      task_links: entries(MAX_TASK_LINKS, (i) => `http://x/${i}`),
    });
    expect((await c.api('POST', '/api/jobs', atMax, auth)).status).toBe(201);
  });

  test('a cron schedule is at most MAX_CRON_CHARS characters: a longer one is a coded 422', async () => {
    // Valid cron, padded with list items: "0 0 1,1,1,… * *".
    const cron = (chars: number) => `0 0 ${'1,'.repeat((chars - 9) / 2)}1 * *`;
    expect(cron(MAX_CRON_CHARS + 1)).toHaveLength(MAX_CRON_CHARS + 1);
    const before = await snapshot(c.db);
    for (const chars of [MAX_CRON_CHARS + 1, 2_000_001]) {
      const r = await c.api(
        'POST',
        '/api/jobs',
        plainJob({ name: 'cron', service: false, cron_schedule: cron(chars) }),
        auth,
      );
      expect([chars, r.status, r.body.error?.code]).toEqual([chars, 422, 'VALIDATION_FAILED']);
    }
    expect(await snapshot(c.db)).toBe(before);
    const ok = await c.api(
      'POST',
      '/api/jobs',
      plainJob({ name: 'cron', service: false, cron_schedule: cron(MAX_CRON_CHARS - 1) }),
      auth,
    );
    expect(ok.status).toBe(201);
  });

  test('a wait is at most MAX_WAIT_SECS (24 days): one past it is a coded 422, as a Node timer would fire at once', async () => {
    const proc = (min_duration: number) => ({ name: 'web', cmdline: 'sleep 1000', min_duration });
    const task = plainJob().task;
    const specs = (secs: number) => [
      plainJob({ name: 'w1', task: { ...task, processes: [proc(secs)] } }),
      plainJob({ name: 'w2', task: { ...task, finalization_wait: secs } }),
      plainJob({ name: 'w3', update_config: { watch_secs: secs } }),
      plainJob({ name: 'w4', health_check_config: { interval_secs: secs } }),
      plainJob({ name: 'w5', health_check_config: { timeout_secs: secs } }),
    ];
    const before = await snapshot(c.db);
    for (const spec of specs(MAX_WAIT_SECS + 1)) {
      const r = await c.api('POST', '/api/jobs', spec, auth);
      expect([spec.name, r.status, r.body.error?.code]).toEqual([spec.name, 422, 'VALIDATION_FAILED']);
    }
    expect(await snapshot(c.db)).toBe(before);
    for (const spec of specs(MAX_WAIT_SECS))
      expect([spec.name, (await c.api('POST', '/api/jobs', spec, auth)).status]).toEqual([spec.name, 201]);
  });
});
