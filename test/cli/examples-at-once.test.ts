/**
 * Every example can run at once on the default standalone node (`mxc up`, whatever cores it detects,
 * 2 on the project's machine): their demands fit together, and submitted together (batch last, so it
 * frees nothing for the others) every workload is placed; none waits for capacity.
 */
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { eventually } from '../helpers/protocol-agent.js';
import { mxc, startUpCluster, type UpCluster } from './up-harness.js';

interface W {
  id: string;
  job: string;
  status: string;
  pending_reason: string | null;
  cpu: number;
}

describe('all examples at once on mxc up', () => {
  let cluster: UpCluster;
  let env: Record<string, string>;

  beforeAll(async () => {
    cluster = await startUpCluster('examples', { MXC_AGENT_CPU: '2' });
    ({ env } = cluster);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('places every workload of every example on the one 2-core node', async () => {
    const names = (await readdir(repoPath('examples'), { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort((a, b) => (a === 'batch' ? 1 : b === 'batch' ? -1 : a.localeCompare(b)));
    expect(names.length).toBeGreaterThanOrEqual(6);
    const outs = await nixBuild(names.map((n) => repoPath('examples', n)));

    // Their demands, cron's included (it runs every 5 minutes), fit in 2 cores.
    let cpu = 0;
    for (const out of outs) {
      const p = JSON.parse((await mxc(['jobs', 'plan', out, '--json'], { env })).stdout);
      expect(p.fits, `${p.job}: ${p.reasons}`).toBe(true);
    }
    for (const n of names) {
      const spec = JSON.parse((await mxc(['build', repoPath('examples', n), '--json'])).stdout);
      cpu += spec.task.resources.cpu * (spec.instances ?? 1);
    }
    expect(cpu).toBeLessThanOrEqual(2);

    for (const out of outs) {
      const r = await mxc(['submit', out], { env });
      expect(r.exitCode, r.stderr).toBe(0);
    }
    const node = JSON.parse((await mxc(['nodes', 'show', 'local', '--json'], { env })).stdout);
    const microvm = (node.capabilities.isolation as string[]).includes('microvm');
    const placed = await eventually(
      async () => {
        const ws = JSON.parse((await mxc(['workloads', 'list', '--all', '--json'], { env })).stdout) as W[];
        const waiting = ws.filter((w) => w.status === 'pending' && (microvm || !w.job.endsWith('/microvm')));
        return waiting.length === 0 && ws.length > 0 ? ws : null;
      },
      30_000,
      'every workload to be placed',
    );
    for (const w of placed) expect(w.pending_reason ?? '').not.toMatch(/insufficient/);
    expect(new Set(placed.map((w) => w.job.split('/').pop())).size).toBeGreaterThanOrEqual(names.length - 1);
  }, 180_000);
});
