/**
 * GC roots and collection on an agent's own chroot store: a live workload's closure is rooted under
 * the state dir and survives `nix-store --gc`; an ended one's roots are gone and its paths collected,
 * on demand (`runAgentGc`) and automatically when the store's filesystem is short of space.
 */
import { existsSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgentGc, workloadRootDir } from '../../agent/gc.js';
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

const running = (ws: { status: string }[]) => ws[0]?.status === 'running';

describe('garbage collection of an agent store', () => {
  it('keeps the live closure through a gc and collects the ended one', async () => {
    const name = 'gc-manual';
    const agent = await cluster.agent(name, { gcMinFreeMb: 0 });
    const state = join(cluster.dir, name, 'state');
    const store = join(cluster.dir, name, 'store');
    const live = await buildScript('gc-live', 'echo live up\nexec sleep 1000\n');
    const ended = await buildScript('gc-ended', 'echo ended up\nexec sleep 1000\n');
    await push(cluster.c, [live.path, ended.path]);
    const liveJob = await submit(cluster.c, scriptJob('gc-live', live.path, { constraints: { host: name } }));
    const endedJob = await submit(
      cluster.c,
      scriptJob('gc-ended', ended.path, { constraints: { host: name } }),
    );
    const [lw] = await waitWorkloads(cluster.c, liveJob, running, 'the live job to run');
    const [ew] = await waitWorkloads(cluster.c, endedJob, running, 'the ended job to run');

    // Each workload's closure root is a link under <state>/gcroots/<workload>/.
    for (const [w, path] of [
      [lw!, live.path],
      [ew!, ended.path],
    ] as const) {
      const dir = workloadRootDir(state, w.id);
      expect(await readdir(dir)).toEqual(['root']);
      expect(await readlink(join(dir, 'root'))).toBe(path);
    }

    await cluster.c.coordinator.stopJob(endedJob);
    await waitWorkloads(cluster.c, endedJob, (ws) => ws[0]?.status === 'stopped', 'the ended job to stop');
    await eventually(async () => !existsSync(workloadRootDir(state, ew!.id)), 10_000, 'its roots to go');

    const r = await runAgentGc({ stateDir: state, storeRoot: store });
    // The ended script is collected; busybox and its applets stay: the live closure holds them too.
    expect(r.deleted).toBe(1);
    expect(r.freedBytes).toBeGreaterThan(0);
    expect(await isValidPath(ended.path, { store })).toBe(false);
    for (const p of live.closure) expect(await isValidPath(p, { store }), p).toBe(true);
    expect(existsSync(join(store, ended.path))).toBe(false);

    // The live workload ran through it untouched.
    expect(agent.runningIds()).toEqual([lw!.id]);
    expect((await waitWorkloads(cluster.c, liveJob, running, 'live still running'))[0]!.id).toBe(lw!.id);
    const lines = (await logLines(cluster.c, lw!.id)).map((l) => l.line);
    expect(lines).toContain('live up');

    // Once the live one ends too, nothing keeps its closure.
    await cluster.c.coordinator.stopJob(liveJob);
    await eventually(async () => !existsSync(workloadRootDir(state, lw!.id)), 10_000, 'the live roots to go');
    const all = await runAgentGc({ stateDir: state, storeRoot: store });
    // Its script goes. (Busybox may stay: Nix also keeps paths that running processes use, and other
    // agents' workloads on this machine run the same busybox path from their own stores.)
    expect(all.paths).toContain(live.path);
    expect(await isValidPath(live.path, { store })).toBe(false);
  });

  it('collects automatically after a workload ends when free space is under gcMinFreeMb', async () => {
    const name = 'gc-auto';
    // A threshold no disk meets: every check finds the store short of space.
    await cluster.agent(name, { gcMinFreeMb: Number.MAX_SAFE_INTEGER, housekeepingIntervalMs: 3_600_000 });
    const store = join(cluster.dir, name, 'store');
    const s = await buildScript('gc-auto', 'echo auto up\nexec sleep 1000\n');
    await push(cluster.c, [s.path]);
    const job = await submit(cluster.c, scriptJob('gc-auto', s.path, { constraints: { host: name } }));
    await waitWorkloads(cluster.c, job, running, 'the job to run');
    expect(await isValidPath(s.path, { store })).toBe(true);
    await cluster.c.coordinator.stopJob(job);
    await eventually(async () => !(await isValidPath(s.path, { store })), 15_000, 'the automatic collection');
  });
});

describe('warm starts', () => {
  it('start a closure the agent realised before without nix, and still root it against a gc', async () => {
    const name = 'gc-warm';
    await cluster.agent(name, { gcMinFreeMb: 0 });
    const state = join(cluster.dir, name, 'state');
    const store = join(cluster.dir, name, 'store');
    const s = await buildScript('gc-warm', 'echo warm up\nexec sleep 1000\n');
    await push(cluster.c, [s.path]);
    const first = await submit(cluster.c, scriptJob('warm-1', s.path, { constraints: { host: name } }));
    const [w1] = await waitWorkloads(cluster.c, first, running, 'the first run');
    await cluster.c.coordinator.stopJob(first);
    await waitWorkloads(cluster.c, first, (ws) => ws[0]?.status === 'stopped', 'the first run to stop');

    const second = await submit(cluster.c, scriptJob('warm-2', s.path, { constraints: { host: name } }));
    const [w2] = await waitWorkloads(cluster.c, second, running, 'the second run');
    const lines = await eventually(async () => {
      const ls = (await logLines(cluster.c, w2!.id)).map((l) => l.line);
      return ls.some((l) => l.startsWith('closure ready')) ? ls : null;
    });
    expect(lines.some((l) => /closure ready in \d+ ms: every path already in the store/.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith('copying path'))).toBe(false);
    expect(w1!.id).not.toBe(w2!.id);
    // Rooted exactly as nix would: the closure survives a collection while the workload lives.
    expect(await readlink(join(workloadRootDir(state, w2!.id), 'root'))).toBe(s.path);
    await runAgentGc({ stateDir: state, storeRoot: store });
    for (const p of s.closure) expect(await isValidPath(p, { store }), p).toBe(true);
    await cluster.c.coordinator.stopJob(second);
  });
});
