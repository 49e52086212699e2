/**
 * Placement that knows the store, on a real coordinator and cache: closure completeness on submit,
 * closure locality, pre-warm and provenance (`/api/store-paths`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { closureOf } from '../../lib/nix.js';
import { buildClosure } from '../cache/fixtures.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

describe('store-aware scheduling', () => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
  });

  const jobWith = (root: string, over = {}) =>
    plainJob({
      name: 'locality',
      task: { name: 't', processes: [{ name: 'p', cmdline: root }] },
      mxc: { closure: [root] },
      ...over,
    });

  it('refuses a job whose closure is not in the cache, listing what is missing, and replaces nothing', async () => {
    c = await startTestCoordinator('postgres');
    const { root } = await buildClosure(`missing-${Date.now()}`);
    const r = await c.api('POST', '/api/jobs', jobWith(root));
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('CLOSURE_INCOMPLETE');
    expect(r.body.error.details.missing).toEqual([root]);
    expect((await c.api('GET', '/api/jobs')).body.data).toEqual([]);
  });

  it('places on the node holding the closure, pre-warms where it would go, and answers where a path runs', async () => {
    c = await startTestCoordinator('postgres');
    const { root, busybox } = await buildClosure(`locality-${Date.now()}`);
    await pushClosure({ coordinator: c.url, paths: [root] });
    const closure = await closureOf([root]);
    const cold = await new ProtocolAgent({ url: c.url, name: 'cold' }).connect();
    agents.push(cold);
    const warm = new ProtocolAgent({ url: c.url, name: 'warm' });
    // The warm node reports the whole closure in its hello.
    const origSend = warm.send.bind(warm);
    warm.send = (m: unknown) =>
      origSend((m as { type: string }).type === 'hello' ? { ...(m as object), store_paths: closure } : m);
    agents.push(await warm.connect());

    const sub = await c.api('POST', '/api/jobs', jobWith(root));
    expect(sub.status).toBe(201);
    const [id] = sub.body.data.workloads;
    const w = await eventually(async () => {
      const x = (await c.api('GET', `/api/workloads/${id}`)).body.data;
      return x.status === 'running' ? x : null;
    });
    expect(w.node).toBe('warm');

    const jobClosure = (await c.api('GET', `/api/jobs/${sub.body.data.job.id}/closure`)).body.data;
    expect(jobClosure.map((p: { path: string }) => p.path).sort()).toEqual([...closure].sort());
    expect(jobClosure.every((p: { nar_size: number }) => p.nar_size > 0)).toBe(true);

    // Pre-warm with two instances: the cold node is told to fetch what it lacks.
    const pre = await c.api(
      'POST',
      `/api/jobs/${sub.body.data.job.id}/prewarm`,
      jobWith(root, { instances: 2 }),
    );
    expect(pre.status).toBe(200);
    const coldEntry = pre.body.data.nodes.find((n: { node: string }) => n.node === 'cold');
    expect(coldEntry.sent).toBe(true);
    expect(coldEntry.missing_bytes).toBeGreaterThan(0);
    const msg = await cold.waitFor((m) => m.type === 'prewarm');
    expect(msg.type === 'prewarm' && [...msg.paths].sort()).toEqual([...closure].sort());
    // The agent reports what it realised; locality follows.
    cold.send({ type: 'store_paths', added: closure, removed: [] });

    const where = (
      await c.api(
        'GET',
        `/api/store-paths?contains=${encodeURIComponent(busybox.split('-').slice(1).join('-'))}`,
      )
    ).body.data;
    expect(where.length).toBeGreaterThan(0);
    expect(where[0]).toMatchObject({ path: busybox, job: 'test/www/prod/locality', current: true });
    expect(where[0].workloads).toEqual([{ id, status: 'running', node: 'warm' }]);
    const bad = await c.api('GET', '/api/store-paths');
    expect(bad.status).toBe(422);
    expect(bad.body.error.code).toBe('VALIDATION_FAILED');
  });
});
