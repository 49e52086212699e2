/**
 * Several agents on one machine, each with its own chroot store: a two-instance job limited to one
 * instance per host lands once on each, and each agent substitutes the closure into its own store
 * from the coordinator's cache and runs it from there.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isValidPath } from '../../compiler/nix.js';
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
