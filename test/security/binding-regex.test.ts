// Thermos bindings are found by a regular expression that runs on every cmdline a spec carries, at a
// submit, at a dry-run plan (a read token's POST /api/jobs/plan) and at the agent's launch. Its old
// form backtracked cubically on a run of spaces after `{{`: a 5 KB cmdline held the coordinator's event
// loop ~40 s (8 KB: 160 s), and an unanswerable plan of a cmdline of 800,000 unknown bindings built a
// problem for each.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { expandBindings } from '../../spec/bindings.js';
import {
  clientTokens,
  plainJob,
  startTestCoordinator,
  type TestCoordinator,
} from '../helpers/coordinator.js';

const ADMIN = 'regex-admin';

describe('binding regex', () => {
  let c: TestCoordinator;
  let reader = '';
  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: ADMIN } });
    ({ reader } = (await clientTokens(c, ADMIN, { reader: 'read' })) as { reader: string });
  });
  afterAll(async () => {
    await c?.stop();
  });

  const plan = (cmdline: string) => {
    const spec = plainJob({ name: 'regex' });
    spec.task.processes = [{ name: 'main', cmdline }];
    return c.api('POST', '/api/jobs/plan', { spec }, { authorization: `Bearer ${reader}` });
  };

  test("a read token's plan of a cmdline built to backtrack is answered at once", async () => {
    const t0 = performance.now();
    const r = await plan(`echo {{${' '.repeat(5000)}x`);
    expect(r.status).toBe(200);
    expect(r.body.data.status).toBe('new');
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test('a cmdline of 800,000 unknown bindings is refused naming a few of them, at once', async () => {
    const t0 = performance.now();
    const r = await plan(`echo ${'{{a}}'.repeat(800_000)}`);
    expect([r.status, r.body.error?.code]).toEqual([422, 'VALIDATION_FAILED']);
    const problems = r.body.error.details.problems as string[];
    expect(problems.length).toBeLessThanOrEqual(21);
    expect(problems.at(-1)).toMatch(/and 799980 more unknown or undeclared bindings/);
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  test('the agent expands bindings as before, whitespace inside the braces included, and at once', () => {
    const values = { ports: { http: 8080 }, taskId: 'w-0-abc', instance: 3, hostname: 'n1' };
    expect(
      expandBindings('a {{ thermos.ports[http] }} {{thermos.task_id}} {{\tmesos.instance\n}}', values),
    ).toBe('a 8080 w-0-abc 3');
    const t0 = performance.now();
    expect(expandBindings(`{{${' '.repeat(20_000)}x`, values)).toHaveLength(20_003);
    expect(performance.now() - t0).toBeLessThan(100);
  });
});
