/**
 * examples/microvm end to end: built with nix, pushed to the coordinator's cache, placed on a real agent
 * that can run microVMs, substituted into the agent's store and run in a QEMU microVM (TCG here) that
 * sees only the job's closure; its output reaches `workloads logs`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { microVmSupport } from '../../agent/microvm-support.js';
import { readJobInput } from '../../compiler/job-input.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

process.env.MXC_MICROVM_CACHE ??= repoPath('.mxc', 'microvm-assets');

describe('microVM workload end to end', () => {
  let c: TestCoordinator;
  let agent: Agent;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-e2e-vm-'));
    c = await startTestCoordinator('pglite');
    agent = new Agent({
      coordinator: c.url,
      name: 'vm-node',
      stateDir: join(dir, 'agent'),
      storeRoot: join(dir, 'store'),
      logger: testLogger(),
      gracePeriodMs: 1000,
      microvm: microVmSupport(join(dir, 'agent')),
    });
    await agent.start();
    await agent.ready;
  });

  afterAll(async () => {
    await agent?.close();
    await c?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs the job in a microVM that sees only its closure, and logs the guest output', async () => {
    const node = (await c.api('GET', '/api/nodes')).body.data[0];
    expect(node.capabilities.isolation).toContain('microvm');
    expect(node.capabilities.qemu).toBe(true);

    const [jobPath] = await nixBuild([repoPath('examples', 'microvm')]);
    const submit = await execa('node', [repoPath('bin', 'mxc.js'), 'submit', '--json', jobPath!], {
      env: { MXC_COORDINATOR: c.url },
    });
    const { workloads } = JSON.parse(submit.stdout) as { workloads: string[] };
    const id = workloads[0]!;
    const done = await eventually(
      async () => {
        const w = (await c.api('GET', `/api/workloads/${id}`)).body.data;
        return ['stopped', 'failed'].includes(w.status) ? w : null;
      },
      120_000,
      'the microVM job to finish',
    );
    const logs = (await c.api('GET', `/api/workloads/${id}/logs?limit=5000`)).body.data as {
      process: string;
      line: string;
    }[];
    const guest = logs.filter((l) => l.process === 'guest').map((l) => l.line);
    expect(done.status, `${done.error}\n${logs.map((l) => l.line).join('\n')}`).toBe('stopped');
    const release = guest.find((l) => l.startsWith('microvm: kernel '))!.slice('microvm: kernel '.length);
    expect(release).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/);
    // The guest's /nix/store is exactly the job's closure.
    const { spec } = await readJobInput(jobPath!);
    const closure = (await closureOf(spec.mxc.closure)).map((p) => p.slice('/nix/store/'.length)).sort();
    const start = guest.indexOf('microvm: /nix/store holds:');
    const end = guest.indexOf('microvm: done');
    expect(guest.slice(start + 1, end).sort()).toEqual(closure);
  }, 180_000);
});
