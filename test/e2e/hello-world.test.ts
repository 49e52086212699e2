/**
 * The walking skeleton end to end, on PGlite and on PostgreSQL: `nix-build examples/hello_world | mxc submit
 * --wait` (the real CLI) against a real coordinator, and a real agent on its own chroot store that
 * substitutes the closure from the coordinator's signed cache and runs it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

const mxc = (args: string[], opts: { env?: Record<string, string>; input?: string } = {}) =>
  execa('node', [repoPath('bin', 'mxc.js'), ...args], {
    reject: false,
    env: opts.env,
    input: opts.input,
    cwd: repoPath(),
  });

describe.each(ENGINES)('hello_world end to end on %s', (engine) => {
  let c: TestCoordinator;
  let agent: Agent;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-e2e-'));
    c = await startTestCoordinator(engine, { tokens: { api: 'client-token', agent: 'join-token' } });
    agent = new Agent({
      coordinator: c.url,
      token: 'join-token',
      name: `e2e-${engine}`,
      stateDir: join(dir, 'agent'),
      storeRoot: join(dir, 'store'),
      logger: testLogger(),
      gracePeriodMs: 1000,
    });
    await agent.start();
    await agent.ready;
    env = { MXC_COORDINATOR: c.url, MXC_API_TOKEN: 'client-token' };
  });

  afterAll(async () => {
    await agent?.close();
    await c?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('submits the nix-build output, waits until it runs, and shows its logs', async () => {
    const [jobPath] = await nixBuild([repoPath('examples', 'hello_world')]);
    const submit = await mxc(['submit', '--wait', '--timeout', '60'], { env, input: jobPath });
    expect(submit.stderr).toMatch(/^uploaded 3 path\(s\), [0-9.]+ MiB; 0 already in the cache$/m);
    expect(submit.stderr).toMatch(/^hello_world-0-[0-9a-f]{8} {2}closure realised \(fetched 3 path\(s\)/m);
    expect(submit.exitCode).toBe(0);
    expect(submit.stdout).toMatch(/hello_world-0-[0-9a-f]{8}\s+running\s+on e2e-/);
    const id = submit.stdout.split(/\s+/)[0]!;

    // The agent substituted the closure into its own store from the signed cache.
    const status = JSON.parse((await mxc(['cluster', 'status', '--json'], { env })).stdout);
    expect(status.cache_paths).toBeGreaterThanOrEqual(3);
    expect(status.cache_public_key).toMatch(/^mxc-1:/);

    const logs = await eventually(
      async () => {
        const r = await mxc(['workloads', 'logs', id], { env });
        return r.stdout.includes('Hello, world!') ? r.stdout : null;
      },
      15_000,
      'Hello, world! in the logs',
    );
    expect(logs).toMatch(/copying path .*busybox/);

    // It says what it had to fetch, and the coordinator knows what runs where.
    const shown = JSON.parse((await mxc(['workloads', 'show', id, '--json'], { env })).stdout);
    expect(shown.fetched_paths).toBe(3);
    expect(shown.fetched_bytes).toBeGreaterThan(1_000_000);
    const where = JSON.parse((await mxc(['where', 'busybox', '--json'], { env })).stdout);
    expect(where[0].workloads).toEqual([{ id, status: 'running', node: `e2e-${engine}` }]);
    // For people the matched name comes first in its column, so a narrow table does not cut it off.
    expect((await mxc(['where', 'busybox'], { env })).stdout).toMatch(/^busybox \(\w{8}…\)/m);

    const list = JSON.parse((await mxc(['workloads', 'list', '--json'], { env })).stdout);
    expect(list.map((w: { id: string; status: string }) => [w.id, w.status])).toEqual([[id, 'running']]);
    const nodes = JSON.parse((await mxc(['nodes', 'list', '--json'], { env })).stdout);
    expect(nodes[0]).toMatchObject({ name: `e2e-${engine}`, status: 'ready', connected: true });
    // Service discovery: the running instance, where it runs (hello_world announces no ports).
    const ep = await mxc(['jobs', 'endpoints', 'devcluster/www-data/devel/hello_world'], { env });
    expect(ep.exitCode).toBe(0);
    expect(ep.stdout).toMatch(new RegExp(`^0\\s+e2e-${engine}\\s+-\\s+-\\s+e2e-${engine}\\s+${id}$`, 'm'));
    // The agent told the coordinator what its store holds: at least this closure.
    expect(nodes[0].store.paths).toBeGreaterThanOrEqual(2);

    // A resubmit of the same store path changes nothing.
    const again = await mxc(['submit', jobPath!], { env });
    expect(again.stdout).toMatch(/unchanged/);

    // Following the logs prints what is there, then new lines, and ends when the workload does.
    const follow = execa(
      'node',
      [repoPath('bin', 'mxc.js'), 'workloads', 'logs', id, '-f', '-p', 'hello_world'],
      {
        env,
        reject: false,
      },
    );
    // Stopped only once the follow printed what was there, so the stop is a new event it must see.
    let printed = '';
    follow.stdout!.on('data', (chunk: Buffer) => {
      printed += chunk.toString();
    });
    await eventually(
      async () => /Hello, world!/.test(printed),
      15_000,
      'the follow to print the existing lines',
    );
    const stop = await mxc(['workloads', 'stop', id], { env });
    const followed = await follow;
    expect(followed.exitCode).toBe(0);
    expect(followed.stdout).toMatch(/\[hello_world\] Hello, world!/);
    expect(followed.stdout).not.toMatch(/nix_init_hello_world/);
    expect(stop.exitCode).toBe(0);
    await eventually(
      async () =>
        JSON.parse((await mxc(['workloads', 'show', id, '--json'], { env })).stdout).status === 'stopped',
      15_000,
    );
    expect(agent.runningIds()).toEqual([]);
  });

  it('refuses bad input from the CLI before anything is sent, and a wrong token with a clear message', async () => {
    const notJson = await mxc(['submit'], { env, input: '{"name": ' });
    expect(notJson.exitCode).toBe(2);
    expect(notJson.stderr).toMatch(/stdin is not valid JSON/);

    const invalid = await mxc(['submit'], {
      env,
      input: JSON.stringify({
        name: 'x',
        role: 'r',
        cluster: 'c',
        environment: 'e',
        task: { name: 't', processes: [], extra: 1 },
      }),
    });
    expect(invalid.exitCode).toBe(2);
    expect(invalid.stderr).toMatch(/task\.processes: a task needs at least one process/);
    expect(invalid.stderr).toMatch(/task: Unrecognized key: "extra"/);

    const missing = await mxc(['submit', '/nix/store/00000000000000000000000000000000-nope.json'], { env });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/no such file/);

    const wrong = await mxc(['workloads', 'list'], { env: { ...env, MXC_API_TOKEN: 'nope' } });
    expect(wrong.exitCode).toBe(3);
    expect(wrong.stderr).toMatch(/missing or wrong API token/);

    const down = await mxc(['nodes', 'list'], { env: { MXC_COORDINATOR: 'http://127.0.0.1:9' } });
    expect(down.exitCode).toBe(1);
    expect(down.stderr).toMatch(/cannot reach the coordinator at http:\/\/127.0.0.1:9/);
  });
});
