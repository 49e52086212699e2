/**
 * Realisation refuses what the agent cannot trust: a real coordinator, real Agents with their own
 * chroot stores, closures pushed to the signed cache and then tampered with on the coordinator's
 * disk, or an agent pinned to another key. The workload fails with Nix's reason and nothing of it runs.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../../agent/daemon.js';
import { run } from '../../lib/exec.js';
import { parseNarInfo } from '../../lib/nar-info.js';
import { isValidPath } from '../../lib/nix.js';
import { buildScript } from '../agent/helpers.js';
import { packedAt } from '../cache/fixtures.js';
import {
  type Cluster,
  eventually,
  logLines,
  push,
  scriptJob,
  startCluster,
  submit,
  TOKENS,
  waitWorkloads,
} from './harness.js';

// Leaves a mark in its work dir ($HOME) and on stdout the moment it runs.
const body = (tag: string) => `touch "$HOME/ran"\necho "started ${tag}"\nexec sleep 1000\n`;

let cluster: Cluster;
let agent: Agent;
const stateOf = (name: string) => join(cluster.dir, name, 'state');
const storeOf = (name: string) => join(cluster.dir, name, 'store');
const cacheDir = () => join(cluster.c.dataDir, 'cache');

/** Overwrites bytes of a file in place (a pack: its index stays right as long as the length does). */
async function overwrite(file: string, at: number, bytes: Buffer): Promise<void> {
  const whole = await readFile(file);
  bytes.copy(whole, at);
  await writeFile(file, whole);
}

beforeAll(async () => {
  cluster = await startCluster();
  agent = await cluster.agent('trusting');
});
afterAll(async () => {
  await cluster?.stop();
});

/** Submits a job running `script`, waits for its one workload to fail, and checks nothing of it ran. */
async function expectRefused(name: string, script: string, agentName: string): Promise<string> {
  const jobId = await submit(cluster.c, scriptJob(name, script, { constraints: { host: agentName } }));
  const [w] = await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'failed', `${name} to fail`);
  const workDir = join(stateOf(agentName), 'workloads', w!.id, 'work');
  expect(existsSync(join(workDir, 'ran')), 'the script must not have run').toBe(false);
  const lines = await logLines(cluster.c, w!.id);
  expect(lines.filter((l) => l.stream !== 'system')).toEqual([]);
  expect(lines.map((l) => l.line).join('\n')).not.toMatch(/run 1 started/);
  expect(await isValidPath(script, { store: storeOf(agentName) })).toBe(false);
  return w!.error ?? '';
}

describe('realisation from the signed cache', () => {
  it('runs an untampered closure, reporting paths and bytes fetched of the total', async () => {
    const good = await buildScript('refusal-good', body('good'));
    await push(cluster.c, [good.path]);
    const jobId = await submit(cluster.c, scriptJob('good', good.path));
    const [w] = await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'running', 'good to run');
    const text = await eventually(async () => {
      const t = (await logLines(cluster.c, w!.id)).map((l) => l.line).join('\n');
      return t.includes('started good') ? t : null;
    });
    expect(text).toMatch(
      /copying path '\/nix\/store\/[a-z0-9]{32}-busybox' from 'http:\/\/127\.0\.0\.1:\d+\/cache'/,
    );
    // One line per path as it lands, counting paths and bytes against the totals; then a summary.
    const n = good.closure.length;
    expect(text).toMatch(new RegExp(`fetched /nix/store/\\S+ \\(1/${n} paths, [0-9.]+/[0-9.]+ MiB\\)`));
    const total = /closure ready in \d+ ms: fetched (\d+)\/(\d+) paths, ([0-9.]+)\/([0-9.]+) MiB/.exec(text);
    expect(total, text).not.toBeNull();
    expect(total!.slice(1, 3)).toEqual([String(n), String(n)]);
    expect(total![3]).toBe(total![4]);
    expect(Number(total![4])).toBeGreaterThan(0.5); // busybox alone is ~1.9 MiB unpacked
    expect(existsSync(join(stateOf('trusting'), 'workloads', w!.id, 'work', 'ran'))).toBe(true);
    await cluster.c.coordinator.stopJob(jobId);
  });

  it('a narinfo edited after signing (NarSize) is no longer served: the submit says so, a push repairs it', async () => {
    const s = await buildScript('refusal-edited', body('edited'));
    await push(cluster.c, [s.path]);
    const where = await packedAt(cacheDir(), 'narinfo', s.path.slice(11, 43));
    const original = (await readFile(where.file)).subarray(where.at, where.at + where.size).toString('utf8');
    const size = parseNarInfo(original).narSize;
    const edited = original.replace(`NarSize: ${size}`, `NarSize: ${size + 1}`);
    expect(edited.length).toBe(original.length);
    await overwrite(where.file, where.at, Buffer.from(edited));
    // Narinfos are served from memory and revalidated by stat: once the edit is seen, the coordinator
    // checks its signature and no longer serves it (CACHE_STORAGE_CORRUPT in its log).
    await eventually(
      async () => {
        const r = await cluster.c.api('GET', `/cache/${s.path.slice(11, 43)}.narinfo`, undefined, {
          authorization: `Bearer ${TOKENS.api}`,
        });
        return r.status === 404 ? true : null;
      },
      10_000,
      'the coordinator to stop serving the edited narinfo',
    );
    const job = scriptJob('edited', s.path, { constraints: { host: 'trusting' } });
    await expect(submit(cluster.c, job)).rejects.toThrow(/closure is not complete/);
    await push(cluster.c, [s.path]);
    const jobId = await submit(cluster.c, job);
    await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'running', 'the repaired job to run');
    await cluster.c.coordinator.stopJob(jobId);
  });

  it('refuses a swapped NAR (the cache checks it: a coded 500), and keeps the bad import out of the store', async () => {
    const s = await buildScript('refusal-swapped', body('swapped'));
    const other = await buildScript('refusal-swapped-other', body('other'));
    await push(cluster.c, [s.path, other.path]);
    const mine = await packedAt(cacheDir(), 'narinfo', s.path.slice(11, 43));
    const info = parseNarInfo(
      (await readFile(mine.file)).subarray(mine.at, mine.at + mine.size).toString('utf8'),
    );
    // Still a NAR of the same length, with other contents: the script says "started swappex".
    const where = await packedAt(cacheDir(), 'nar', info.url.slice('nar/'.length));
    const nar = Buffer.from((await readFile(where.file)).subarray(where.at, where.at + where.size));
    const at = nar.indexOf('started swapped');
    expect(at).toBeGreaterThan(0);
    nar.write('x', at + 'started swappe'.length);
    await overwrite(where.file, where.at, nar);
    const error = await expectRefused('swapped', s.path, 'trusting');
    expect(error).toMatch(/nix could not realise the closure/);
    expect(error).toContain(s.path);
  });

  it('refuses everything when the agent is pinned to a key other than the cache’s', async () => {
    const keyDir = join(cluster.dir, 'other-key');
    await run('mkdir', ['-p', keyDir]);
    await run('nix-store', [
      '--generate-binary-cache-key',
      'other-1',
      join(keyDir, 'sec'),
      join(keyDir, 'pub'),
    ]);
    const pinned = (await readFile(join(keyDir, 'pub'), 'utf8')).trim();
    await cluster.agent('pinned', { cachePublicKey: pinned });
    const s = await buildScript('refusal-pinned', body('pinned'));
    await push(cluster.c, [s.path]);
    const error = await expectRefused('pinned', s.path, 'pinned');
    expect(error).toMatch(/is not signed by any of the keys in 'trusted-public-keys'/);
    // The trusting agent runs the very same closure: the refusal came from the key alone.
    const control = await submit(
      cluster.c,
      scriptJob('pinned-control', s.path, { constraints: { host: 'trusting' } }),
    );
    const [w] = await waitWorkloads(
      cluster.c,
      control,
      (ws) => ws[0]?.status === 'running',
      'the control to run',
    );
    expect(agent.runningIds()).toContain(w!.id);
    await cluster.c.coordinator.stopJob(control);
  });
});
