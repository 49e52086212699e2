/**
 * Several agents on one machine, each with its own chroot store: a two-instance job limited to one
 * instance per host lands once on each, and each agent substitutes the closure into its own store
 * from the coordinator's cache and runs it from there.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isValidPath } from '../../lib/nix.js';
import { buildScript } from '../agent/helpers.js';
import {
  type Cluster,
  eventually,
  logLines,
  push,
  scriptJob,
  startCluster,
  submit,
  waitWorkloads,
} from './harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

it('places one instance on each agent, and each realises the closure into its own store', async () => {
  const [a, b] = [await cluster.agent('multi-a'), await cluster.agent('multi-b')];
  // The script reports the store it sees: its own path must be there, under /nix/store.
  const s = await buildScript(
    'multi-agent',
    'echo "instance $MXC_INSTANCE sees $(ls /nix/store | wc -l) paths"\nexec sleep 1000\n',
  );
  await push(cluster.c, [s.path]);
  const jobId = await submit(
    cluster.c,
    scriptJob('multi', s.path, { instances: 2, constraints: { host: 'limit:1' } }),
  );
  const ws = await waitWorkloads(
    cluster.c,
    jobId,
    (list) => list.length === 2 && list.every((w) => w.status === 'running'),
    'both instances to run',
  );
  const nodes = new Set(ws.map((w) => w.node_id));
  expect(nodes.size).toBe(2);
  expect(new Set([...a.runningIds(), ...b.runningIds()])).toEqual(new Set(ws.map((w) => w.id)));
  expect(a.runningIds()).toHaveLength(1);
  expect(b.runningIds()).toHaveLength(1);

  for (const name of ['multi-a', 'multi-b']) {
    const store = join(cluster.dir, name, 'store');
    for (const p of s.closure) expect(await isValidPath(p, { store }), `${p} in ${name}'s store`).toBe(true);
  }
  for (const w of ws) {
    const text = await eventually(async () => {
      const t = (await logLines(cluster.c, w.id)).map((l) => l.line).join('\n');
      return /instance \d sees \d+ paths/.test(t) ? t : null;
    });
    // Each process sees its agent's store, which holds this closure and nothing else.
    expect(text).toMatch(new RegExp(`instance ${w.instance} sees ${s.closure.length} paths`));
    expect(text).toMatch(/copying path .*busybox/);
  }
});

it('pre-warms a new closure on the nodes where the job runs, before any rollout', async () => {
  const a = await cluster.agent('warm-a');
  const s1 = await buildScript('prewarm-v1', 'exec sleep 1000\n');
  await push(cluster.c, [s1.path]);
  const jobId = await submit(cluster.c, scriptJob('prewarmed', s1.path, { constraints: { host: 'warm-a' } }));
  await waitWorkloads(cluster.c, jobId, (l) => l.some((w) => w.status === 'running'), 'v1 to run');

  // The next version's closure is pushed and pre-warmed: the node fetches it while v1 keeps running.
  const s2 = await buildScript('prewarm-v2', 'exec sleep 1000\n');
  await push(cluster.c, [s2.path]);
  const res = await cluster.c.api(
    'POST',
    `/api/jobs/${jobId}/prewarm`,
    scriptJob('prewarmed', s2.path, { constraints: { host: 'warm-a' } }),
    { authorization: 'Bearer client-token' },
  );
  expect(res.status).toBe(200);
  expect(res.body.data.nodes).toEqual([{ node: 'warm-a', missing_bytes: expect.any(Number), sent: true }]);
  const store = join(cluster.dir, 'warm-a', 'store');
  await eventually(async () => isValidPath(s2.path, { store }), 20_000, 'the pre-warmed path in the store');
  expect(a.runningIds()).toHaveLength(1);
  // The coordinator learnt it: a second pre-warm finds nothing missing.
  const again = await eventually(async () => {
    const r = await cluster.c.api(
      'POST',
      `/api/jobs/${jobId}/prewarm`,
      scriptJob('prewarmed', s2.path, { constraints: { host: 'warm-a' } }),
      { authorization: 'Bearer client-token' },
    );
    return r.body.data.nodes[0].missing_bytes === 0 ? r : null;
  });
  expect(again.body.data.nodes[0].sent).toBe(false);
});
