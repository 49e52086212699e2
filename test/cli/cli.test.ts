/** The CLI itself: help with an example everywhere, completion scripts, exit codes, JSON output. */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const mxc = (args: string[], env: Record<string, string> = {}) =>
  execa('node', [repoPath('bin', 'mxc.js'), ...args], { reject: false, env });

const COMMANDS = [
  ['up'],
  ['coordinator'],
  ['agent'],
  ['submit'],
  ['build'],
  ['workloads', 'list'],
  ['workloads', 'show'],
  ['workloads', 'stop'],
  ['workloads', 'logs'],
  ['workloads', 'events'],
  ['nodes', 'list'],
  ['nodes', 'show'],
  ['nodes', 'drain'],
  ['jobs', 'list'],
  ['jobs', 'show'],
  ['jobs', 'stop'],
  ['jobs', 'versions'],
  ['jobs', 'restart'],
  ['jobs', 'prewarm'],
  ['jobs', 'pause'],
  ['jobs', 'resume'],
  ['jobs', 'abort'],
  ['jobs', 'run'],
  ['cluster', 'status'],
  ['tokens', 'create'],
  ['tokens', 'list'],
  ['tokens', 'revoke'],
  ['where'],
  ['completion'],
  ['version'],
];

describe('mxc CLI', () => {
  it.each(COMMANDS.map((c) => [c.join(' '), c]))('mxc %s --help shows an example', async (_name, cmd) => {
    const r = await mxc([...(cmd as string[]), '--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/Examples?:\n {2}\$ /);
  });

  it('prints its version, as JSON with --json or -f json, before the command or after it', async () => {
    expect((await mxc(['version'])).stdout).toMatch(/^mxc \d+\.\d+\.\d+$/);
    for (const args of [
      ['version', '--json'],
      ['--json', 'version'],
      ['version', '-f', 'json'],
      ['-f', 'json', 'version'],
    ]) {
      const r = await mxc(args);
      expect([args.join(' '), r.exitCode, JSON.parse(r.stdout)]).toEqual([
        args.join(' '),
        0,
        { version: expect.stringMatching(/^\d+\.\d+\.\d+$/) },
      ]);
    }
  });

  it('prints completion scripts that name every command', async () => {
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await mxc(['completion', shell]);
      expect(r.exitCode).toBe(0);
      for (const c of ['workloads', 'nodes', 'jobs', 'submit', 'where']) expect(r.stdout).toContain(c);
    }
    const bash = await mxc(['completion', 'bash']);
    const check = await execa('bash', ['-n'], { input: bash.stdout, reject: false });
    expect(check.exitCode).toBe(0);
    const bad = await mxc(['completion', 'tcsh']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/unknown shell "tcsh"; choose bash, zsh or fish/);
  });

  it('exits 2 with a hint on usage errors, as the README says', async () => {
    const r = await mxc(['frobnicate']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
    const missing = await mxc(['workloads', 'show']);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/missing required argument 'id'/);
    const json = await mxc(['workloads', 'show', '--json']);
    expect(json.exitCode).toBe(2);
    expect(JSON.parse(json.stdout)).toEqual({
      error: { code: 'USAGE', message: expect.stringMatching(/missing required argument 'id'/) },
    });
    expect((await mxc(['--help'])).exitCode).toBe(0);
  });

  it('refuses node attributes the coordinator would refuse, before joining', async () => {
    const base = ['agent', '--coordinator', 'http://127.0.0.1:9', '--token', 't', '--attr'];
    const many = Array.from({ length: 65 }, (_, i) => `a${i}=x`);
    const r = await mxc([...base, ...many]);
    expect([r.exitCode, r.stderr]).toEqual([2, expect.stringMatching(/--attr: .*at most 64 attributes/)]);
    const long = await mxc([...base, `rack=${'x'.repeat(1025)}`]);
    expect([long.exitCode, long.stderr]).toEqual([2, expect.stringMatching(/--attr: rack: /)]);
  });

  it("refuses a second agent on a running agent's state dir, with the reason", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mxc-cli-state-'));
    const args = ['agent', '--coordinator', 'http://127.0.0.1:9', '--token', 't', '--state-dir', dir];
    // The first keeps trying to reach a coordinator that is not there, holding its state dir.
    const first = execa('node', [repoPath('bin', 'mxc.js'), ...args, '--name', 'one'], {
      reject: false,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      await eventually(
        async () => existsSync(join(dir, 'mxc.lock')),
        20_000,
        'the first agent to hold its dir',
      );
      const second = await mxc([...args, '--name', 'two']);
      expect(second.exitCode).toBe(1);
      expect(second.stderr).toMatch(
        /^mxc: agent state dir: .* is in use by another process \(pid \d+\).*\[DATA_DIR_IN_USE\]$/m,
      );
      expect(second.stderr).not.toMatch(/internal error/);
    } finally {
      first.kill('SIGKILL');
      await first;
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('agent gc in a folder no agent ran in says so (exit 2), not "deleted 0"; in an agent\'s, it collects', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mxc-cli-gc-'));
    try {
      for (const stateDir of [join(dir, 'typo'), dir]) {
        const r = await mxc(['agent', 'gc', '--state-dir', stateDir]);
        expect([r.exitCode, r.stdout]).toEqual([2, '']);
        expect(r.stderr).toContain(
          `mxc: ${stateDir} is not an agent's state directory (no agent has run there)`,
        );
      }
      // An agent that ran there (it cannot reach its coordinator) leaves its lock file.
      const agent = execa(
        'node',
        [repoPath('bin', 'mxc.js'), 'agent', '-c', 'http://127.0.0.1:9', '--token', 't', '--state-dir', dir],
        { reject: false, stdio: 'ignore' },
      );
      await eventually(async () => existsSync(join(dir, 'mxc.lock')), 20_000, 'the agent to take its dir');
      agent.kill('SIGKILL');
      await agent;
      const ok = await mxc(['agent', 'gc', '--state-dir', dir]);
      expect([ok.exitCode, ok.stdout]).toEqual([0, 'deleted 0 store path(s), freed 0.0 MiB']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  describe('against a coordinator', () => {
    let c: TestCoordinator;
    let agent: ProtocolAgent;
    let env: Record<string, string>;
    beforeAll(async () => {
      c = await startTestCoordinator('postgres');
      agent = await new ProtocolAgent({ url: c.url, name: 'cli-node' }).connect();
      env = { MXC_COORDINATOR: c.url };
    });
    afterAll(async () => {
      agent?.close();
      await c?.stop();
    });

    it('lists, shows, drains and stops in tables and JSON', async () => {
      const r = await execa('node', [repoPath('bin', 'mxc.js'), 'submit', '--wait', '--json'], {
        input: JSON.stringify(plainJob({ name: 'clijob', instances: 2 })),
        env,
        reject: false,
      });
      expect(r.exitCode).toBe(0);
      const submitted = JSON.parse(r.stdout);
      expect(submitted.workloads.map((w: { status: string }) => w.status)).toEqual(['running', 'running']);

      const jobs = JSON.parse((await mxc(['jobs', 'list', '--json'], env)).stdout);
      expect(jobs[0].key).toBe('test/www/prod/clijob');
      const table = (await mxc(['jobs', 'list'], env)).stdout;
      expect(table).toMatch(
        /^JOB\s+STATE\s+VERSION\s+TYPE\s+INSTANCES\s+RUNNING\s+PENDING\s+FINISHED\s+FAILED\s+LOST/,
      );
      expect(table).toMatch(
        /test\/www\/prod\/clijob\s+running\s+1\s+service\s+2\s+2\s+0\s+0\s+0\s+0\s+process/,
      );
      expect(jobs[0]).toMatchObject({ state: 'running', counts: { running: 2, pending: 0, failed: 0 } });
      const versions = JSON.parse(
        (await mxc(['jobs', 'versions', 'test/www/prod/clijob', '--json'], env)).stdout,
      );
      expect(versions).toHaveLength(1);

      // No line of a table ends in blanks, its header included (the last column, ID, is wider than it).
      const nodeTable = (await mxc(['nodes', 'list'], env)).stdout;
      expect(nodeTable).toMatch(/^NAME +STATUS .* ID\n/);
      for (const line of nodeTable.split('\n')) expect(line).toBe(line.trimEnd());
      const node = JSON.parse((await mxc(['nodes', 'show', 'cli-node', '--json'], env)).stdout);
      expect(node.workloads).toHaveLength(2);
      const drained = await mxc(['nodes', 'drain', 'cli-node'], env);
      expect(drained.stdout).toMatch(/cli-node: draining/);
      await eventually(async () => {
        const ws = JSON.parse(
          (await mxc(['workloads', 'list', '--json', '--status', 'pending'], env)).stdout,
        );
        return ws.length === 2 && ws[0].pending_reason === '1 node: node draining';
      });
      const undo = await mxc(['nodes', 'drain', 'cli-node', '--undo'], env);
      expect(undo.stdout).toMatch(/cli-node: ready/);
      await eventually(
        async () =>
          JSON.parse((await mxc(['workloads', 'list', '--json', '--status', 'running'], env)).stdout)
            .length === 2,
      );
      // One instance's process fails and the service starts it again: the job's table counts its two
      // instances by what they do now (both running), not its five workloads by what they ever did.
      const live = JSON.parse(
        (await mxc(['workloads', 'list', '--json', '--status', 'running'], env)).stdout,
      );
      agent.send({ type: 'workload_status', workload_id: live[0].id, status: 'failed', reason: 'crashed' });
      const now = await eventually(
        async () => {
          const j = JSON.parse((await mxc(['jobs', 'list', '--json'], env)).stdout)[0];
          return j.counts.failed === 1 && j.latest.running === 2 ? j : null;
        },
        15_000,
        'the failed instance running again',
      );
      expect(now.latest).toMatchObject({ running: 2, pending: 0, failed: 0, lost: 0 });
      expect(Object.values(now.counts as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(5);
      expect((await mxc(['jobs', 'list'], env)).stdout).toMatch(
        /test\/www\/prod\/clijob\s+running\s+1\s+service\s+2\s+2\s+0\s+0\s+0\s+0\s+process/,
      );

      const stop = await mxc(['jobs', 'stop', 'test/www/prod/clijob'], env);
      expect(stop.stdout).toMatch(/stopped \(2 workload\(s\) stopping\)/);
      // Every ended workload's NOTE says why it ended: its error, else its last status change's reason.
      const ended = await eventually(async () => {
        const ws = JSON.parse(
          (await mxc(['workloads', 'list', '--json', '--all', '--job', 'test/www/prod/clijob'], env)).stdout,
        ) as { status: string; reason: string; error: string | null }[];
        return ws.every((w) => ['stopped', 'failed', 'lost'].includes(w.status)) ? ws : null;
      });
      expect(ended.every((w) => w.reason !== '')).toBe(true);
      const rows = (await mxc(['workloads', 'list', '--all', '--job', 'test/www/prod/clijob'], env)).stdout
        .split('\n')
        .slice(1);
      expect(rows).toHaveLength(5);
      for (const row of rows) expect(row).toMatch(/ (stopped|failed) .* ago +\S/);
      expect(rows.some((r) => r.endsWith('crashed'))).toBe(true);
      expect(rows.some((r) => r.endsWith('job stopped'))).toBe(true);
      const show = await mxc(['workloads', 'show', submitted.workloads[0].id], env);
      expect(show.stdout).toMatch(/events/);
      // A unique prefix of a workload id names it; an ambiguous one lists the candidates.
      const [w0, w1] = submitted.workloads.map((w: { id: string }) => w.id).sort();
      const byPrefix = await mxc(['workloads', 'show', w0.slice(0, w0.length - 4), '--json'], env);
      expect(byPrefix.exitCode, byPrefix.stderr).toBe(0);
      expect(JSON.parse(byPrefix.stdout).id).toBe(w0);
      const ambiguous = await mxc(['workloads', 'events', 'clijob-'], env);
      expect(ambiguous.exitCode).toBe(2);
      // (the drain above replaced both, and a failed one was started again: the history holds five)
      expect(ambiguous.stderr).toMatch(/"clijob-" names 5 workloads; say which:\n {2}clijob-/);
      expect(ambiguous.stderr).toContain(w0);
      expect(ambiguous.stderr).toContain(w1);
      // Client options work before the command too, and with --json errors are JSON on stdout.
      const early = await mxc(['-c', c.url, '--json', 'nodes', 'list'], {});
      expect(early.exitCode, early.stderr).toBe(0);
      expect(JSON.parse(early.stdout)[0].name).toBe('cli-node');
      const jsonErr = await mxc(['workloads', 'show', 'nope', '--json'], env);
      expect(jsonErr.exitCode).toBe(1);
      expect(JSON.parse(jsonErr.stdout).error.code).toBe('NOT_FOUND');
      const bogus = await mxc(['workloads', 'show', 'nope'], env);
      expect(bogus.exitCode).toBe(1);
      expect(bogus.stderr).toMatch(
        /workload "nope" not found; list them with `mxc workloads list` \[NOT_FOUND\]/,
      );
      // Input the coordinator refuses is a usage error (2), as the CLI's own checks are.
      const badStatus = await mxc(['workloads', 'list', '--status', 'sleeping'], env);
      expect(badStatus.exitCode).toBe(2);
      expect(badStatus.stderr).toMatch(/VALIDATION_FAILED/);
    });

    it('a refusal with details: --json carries them as a field, people get them as lines', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'mxc-cli-missing-'));
      try {
        const missing = '/nix/store/00000000000000000000000000000000-not-in-the-cache';
        const file = join(dir, 'job.json');
        await writeFile(file, JSON.stringify(plainJob({ name: 'incomplete', mxc: { closure: [missing] } })));
        const r = await mxc(['submit', file, '--no-push', '--json'], env);
        expect(r.exitCode).toBe(2);
        const { error } = JSON.parse(r.stdout);
        expect(error.code).toBe('CLOSURE_INCOMPLETE');
        expect(error.details.missing).toEqual([missing]);
        expect(error.message).not.toContain(missing);
        const human = await mxc(['submit', file, '--no-push'], env);
        expect(human.stderr).toMatch(new RegExp(`\\[CLOSURE_INCOMPLETE\\]\\n {2}${missing}`));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('resolves unique prefixes of job and node ids; ambiguous ones list the candidates', async () => {
      const other = await execa('node', [repoPath('bin', 'mxc.js'), 'submit', '--wait', '--json'], {
        input: JSON.stringify(plainJob({ name: 'other', instances: 1 })),
        env,
        reject: false,
      });
      expect(other.exitCode, other.stderr).toBe(0);
      const jobs = JSON.parse((await mxc(['jobs', 'list', '--json'], env)).stdout) as {
        id: string;
        key: string;
      }[];
      const otherJob = jobs.find((j) => j.key === 'test/www/prod/other')!;
      // By a prefix of its id, of its key or of its name.
      for (const prefix of [otherJob.id.slice(0, 8), 'test/www/prod/oth', 'oth']) {
        const r = await mxc(['jobs', 'show', prefix, '--json'], env);
        expect(r.exitCode, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout).key).toBe('test/www/prod/other');
      }
      const versions = await mxc(['jobs', 'versions', 'oth', '--json'], env);
      expect(JSON.parse(versions.stdout)).toHaveLength(1);
      const ambiguousJob = await mxc(['jobs', 'stop', 'test/www/prod/'], env);
      expect(ambiguousJob.exitCode).toBe(2);
      expect(ambiguousJob.stderr).toMatch(
        /"test\/www\/prod\/" names 2 jobs; say which:\n {2}test\/www\/prod\/clijob {2}[0-9a-f-]{36} {2}v1 {2}stopped {2}updated \d+s ago\n {2}test\/www\/prod\/other {3}[0-9a-f-]{36} {2}v1 {2}active {3}updated \d+s ago$/,
      );
      const stillRunning = JSON.parse((await mxc(['jobs', 'show', 'other', '--json'], env)).stdout);
      expect(stillRunning.status).toBe('active');
      const noJob = await mxc(['jobs', 'endpoints', 'zzz', '--json'], env);
      expect(noJob.exitCode).toBe(1);
      expect(JSON.parse(noJob.stdout).error.code).toBe('NOT_FOUND');

      const second = await new ProtocolAgent({ url: c.url, name: 'cli-node-2' }).connect();
      try {
        const nodes = JSON.parse((await mxc(['nodes', 'list', '--json'], env)).stdout) as {
          id: string;
          name: string;
        }[];
        const n2 = nodes.find((n) => n.name === 'cli-node-2')!;
        const byId = await mxc(['nodes', 'show', n2.id.slice(0, 8), '--json'], env);
        expect(byId.exitCode, byId.stderr).toBe(0);
        expect(JSON.parse(byId.stdout).name).toBe('cli-node-2');
        const ambiguousNode = await mxc(['nodes', 'drain', 'cli-'], env);
        expect(ambiguousNode.exitCode).toBe(2);
        expect(ambiguousNode.stderr).toMatch(
          /"cli-" names 2 nodes; say which:\n {2}cli-node {4}[0-9a-f-]{36} {2}ready {2}seen \d+s ago\n {2}cli-node-2 {2}[0-9a-f-]{36} {2}ready {2}seen \d+s ago$/,
        );
        const after = JSON.parse((await mxc(['nodes', 'list', '--json'], env)).stdout) as {
          status: string;
        }[];
        expect(after.map((n) => n.status)).toEqual(['ready', 'ready']);
        const drained = await mxc(['nodes', 'drain', 'cli-node-'], env);
        expect(drained.stdout).toMatch(/cli-node-2: draining/);
        expect((await mxc(['nodes', 'drain', 'cli-node-', '--undo'], env)).stdout).toMatch(
          /cli-node-2: ready/,
        );
        const noNode = await mxc(['nodes', 'remove', 'nope'], env);
        expect(noNode.exitCode).toBe(1);
        expect(noNode.stderr).toMatch(/node "nope" not found; list them with `mxc nodes list` \[NOT_FOUND\]/);
      } finally {
        second.close();
      }
      // Gone within the heartbeat TTL: still ready (it may come back), and said to be not connected.
      const listed = await eventually(
        async () => {
          const r = await mxc(['nodes', 'list'], env);
          return /cli-node-2 +ready \(not connected\)/.test(r.stdout) ? r.stdout : null;
        },
        10_000,
        'cli-node-2 listed as not connected',
      );
      expect(listed).toMatch(/cli-node +ready +\S+ .* connected /);
      const status = await mxc(['cluster', 'status'], env);
      expect(status.stdout).toMatch(/nodes +2 \(2 ready, 0 draining, 0 down; 1 not connected\)/);
      const metrics = await fetch(`${c.url}/metrics`);
      expect(await metrics.text()).toMatch(/^mxc_nodes_not_connected 1$/m);
    });

    it('completes live workload ids, job keys and node names in bash', async () => {
      const script = (await mxc(['completion', 'bash'])).stdout;
      const live = JSON.parse((await mxc(['workloads', 'list', '--json'], env)).stdout) as { id: string }[];
      expect(live.length).toBeGreaterThan(0);
      /** COMPREPLY after completing `mxc WORDS…` (the last word is the one being completed). */
      const complete = async (words: string[], extraEnv: Record<string, string> = env) => {
        const r = await execa(
          'bash',
          [
            '-c',
            `eval "$SCRIPT"; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _mxc; printf '%s\\n' "\${COMPREPLY[@]}"`,
            'bash',
            repoPath('bin', 'mxc.js'),
            ...words,
          ],
          { env: { ...extraEnv, SCRIPT: script }, reject: false },
        );
        expect(r.exitCode, r.stderr).toBe(0);
        return r.stdout.split('\n').filter(Boolean);
      };
      expect(await complete(['workloads', 'logs', ''])).toEqual(expect.arrayContaining([live[0]!.id]));
      expect(await complete(['workloads', 'show', live[0]!.id.slice(0, -3)])).toEqual([live[0]!.id]);
      expect(await complete(['jobs', 'show', 'test/www/prod/o'])).toEqual(['test/www/prod/other']);
      // (the node of the test before is down now; it is still a node to show or remove)
      expect(await complete(['nodes', 'drain', 'cli'])).toEqual(['cli-node', 'cli-node-2']);
      expect(await complete(['workloads', 'list', '--job', 'test/www/prod/c'])).toEqual([
        'test/www/prod/clijob',
      ]);
      // Options still complete as before, and `-c URL` on the line is the coordinator asked.
      expect(await complete(['jobs', 'show', '--js'])).toEqual(['--json']);
      expect(await complete(['nodes', 'show', '-c', c.url, ''], {})).toEqual(['cli-node', 'cli-node-2']);
      expect(await complete(['nodes', 'show', '-c', ''], {})).not.toContain('cli-node');
      // Options before the command, and the `wl` alias, do not confuse it.
      expect(await complete(['-c', c.url, 'wl', 'events', live[0]!.id.slice(0, -3)], {})).toEqual([
        live[0]!.id,
      ]);
      expect(await complete(['-c', c.url, 'jo'], {})).toEqual(['jobs']);
      expect(await complete(['jobs', '--json', 'show', 'test/www/prod/o'])).toEqual(['test/www/prod/other']);
      expect(await complete(['jobs', 'revert', 'test/www/prod/other', ''])).not.toContain(
        'test/www/prod/other',
      );
      // No coordinator there: nothing offered, no error shown.
      expect(await complete(['jobs', 'show', ''], { MXC_COORDINATOR: 'http://127.0.0.1:9' })).toEqual([]);
      const quiet = await mxc(['__complete', 'jobs'], { MXC_COORDINATOR: 'http://127.0.0.1:9' });
      expect([quiet.exitCode, quiet.stdout, quiet.stderr]).toEqual([0, '', '']);
      expect((await mxc(['__complete', 'nodes'], env)).stdout).toBe('cli-node\ncli-node-2');
    });

    it('a job name several jobs share is a usage error (exit 2) for every command, listing their keys', async () => {
      for (const environment of ['devel', 'prod'])
        expect((await c.api('POST', '/api/jobs', plainJob({ name: 'twin', environment }))).status).toBe(201);
      for (const args of [
        ['jobs', 'show', 'twin'],
        ['jobs', 'stop', 'twin'],
        ['workloads', 'list', '--job', 'twin'],
      ]) {
        const r = await mxc(args, env);
        expect([args.join(' '), r.exitCode]).toEqual([args.join(' '), 2]);
        expect(r.stderr).toMatch(
          /2 jobs are named "twin": test\/www\/devel\/twin, test\/www\/prod\/twin.*\[AMBIGUOUS\]/,
        );
      }
      for (const key of ['test/www/devel/twin', 'test/www/prod/twin'])
        expect((await mxc(['jobs', 'stop', key], env)).exitCode).toBe(0);
    });

    it('a stopped cron job shows as descheduled (Aurora cron deschedule), not "next run -"', async () => {
      const cron = plainJob({
        name: 'ticker',
        environment: 'cron',
        service: false,
        cron_schedule: '*/5 * * * *',
      });
      expect((await c.api('POST', '/api/jobs', cron)).status).toBe(201);
      expect((await mxc(['jobs', 'show', 'ticker'], env)).stdout).toMatch(
        /^schedule +\*\/5 \* \* \* \* \(UTC\); next run \d{4}-\d\d-\d\dT\d\d:\d[05]:00\.000Z$/m,
      );
      expect((await mxc(['jobs', 'stop', 'ticker'], env)).exitCode).toBe(0);
      expect((await mxc(['jobs', 'show', 'ticker'], env)).stdout).toMatch(
        /^schedule +\*\/5 \* \* \* \* \(UTC\); descheduled: the job is stopped \(submit it again to schedule it\)$/m,
      );
    });
  });
});

describe('mxc on hostile text from an agent', () => {
  let c: TestCoordinator;
  let agent: ProtocolAgent;
  let env: Record<string, string>;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres');
    agent = await new ProtocolAgent({ url: c.url, name: 'esc-node', autoRun: false }).connect();
    env = { MXC_COORDINATOR: c.url };
  });
  afterAll(async () => {
    agent?.close();
    await c?.stop();
  });

  it('escapes control characters in tables, show fields, events and errors; --json stays exact', async () => {
    const hostile = 'boom\u001b]0;pwned\u0007\u001b[2J\r\nfake-node   ready\u009b';
    const sub = await c.api('POST', '/api/jobs', plainJob({ name: 'esc', service: false }));
    expect(sub.status).toBe(201);
    const [id] = sub.body.data.workloads as string[];
    await agent.waitFor((m) => m.type === 'start' && m.workload.id === id);
    agent.send({ type: 'workload_status', workload_id: id, status: 'running' });
    agent.send({ type: 'workload_status', workload_id: id, status: 'failed', reason: hostile });
    await eventually(async () => (await c.api('GET', `/api/workloads/${id}`)).body.data.status === 'failed');
    const shown = 'boom\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x0afake-node   ready\\x9b';
    for (const args of [
      ['workloads', 'show', id],
      ['workloads', 'events', id],
      ['workloads', 'list', '--all'],
    ]) {
      const r = await mxc(args, env);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout, args.join(' ')).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
      expect(r.stdout, args.join(' ')).not.toMatch(/^\s*fake-node/m);
      expect(r.stdout, args.join(' ')).toContain(args[1] === 'list' ? 'boom\\x1b]0;pwned' : shown);
    }
    const json = await mxc(['workloads', 'show', id, '--json'], env);
    expect(JSON.parse(json.stdout).error).toBe(hostile);
    // The coordinator's own words echo what it was asked: escaped on stderr too.
    const missing = await mxc(['workloads', 'show', 'x\u001b[2Jy'], env);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('x\\x1b[2Jy');
    expect(missing.stderr).not.toContain('\u001b');
    // A line break the coordinator echoes stays on its line: no forged `mxc:` line follows.
    const forged = await mxc(['workloads', 'show', 'x\nmxc: forged'], env);
    expect(forged.stderr).toContain('x\n  mxc: forged');
    expect(forged.stderr).not.toMatch(/^mxc: forged/m);
    // With --json the coordinator's words are exact (JSON escapes them itself).
    const exact = await mxc(['workloads', 'show', 'x\nmxc: forged', '--json'], env);
    expect(JSON.parse(exact.stdout).error.message).toContain('x\nmxc: forged');
  });

  it('escapes an agent’s reason in submit --wait’s progress and its answer', async () => {
    const hostile = '\u001b]0;PWNED\u0007\u001b[2J\rOVERWRITE\nmxc: forged line';
    const waiting = execa('node', [repoPath('bin', 'mxc.js'), 'submit', '--wait'], {
      input: JSON.stringify(plainJob({ name: 'esc-wait', service: false })),
      env,
      reject: false,
    });
    const start = await agent.waitFor(
      (m) => m.type === 'start' && m.workload.job_id !== undefined && m.workload.id.startsWith('esc-wait'),
    );
    if (start.type !== 'start') throw new Error('not a start');
    agent.send({ type: 'workload_status', workload_id: start.workload.id, status: 'running' });
    agent.send({
      type: 'workload_status',
      workload_id: start.workload.id,
      status: 'failed',
      reason: hostile,
    });
    const r = await waiting;
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('\\x1b]0;PWNED\\x07\\x1b[2J\\x0dOVERWRITE\\x0amxc: forged line');
    expect(r.stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(r.stderr).not.toMatch(/^mxc: forged/m);
  });
});

describe('mxc naming workloads of a restarted job by prefix', () => {
  let c: TestCoordinator;
  let agent: ProtocolAgent;
  let env: Record<string, string>;
  beforeAll(async () => {
    c = await startTestCoordinator('postgres');
    agent = await new ProtocolAgent({ url: c.url, name: 'prefix-node' }).connect();
    env = { MXC_COORDINATOR: c.url };
  });
  afterAll(async () => {
    agent?.close();
    await c?.stop();
  });

  const statuses = async () =>
    Object.fromEntries(
      (
        JSON.parse((await mxc(['workloads', 'list', '--all', '--json'], env)).stdout) as {
          id: string;
          status: string;
        }[]
      ).map((w) => [w.id, w.status]),
    );

  it('stop takes the one live workload a name starts; show lists each candidate with its status', async () => {
    expect((await c.api('POST', '/api/jobs', plainJob({ name: 'hello_world' }))).status).toBe(201);
    const [first] = Object.keys(
      await eventually(async () => {
        const s = await statuses();
        return Object.values(s).includes('running') && s;
      }),
    );
    expect((await mxc(['jobs', 'restart', 'hello_world'], env)).exitCode).toBe(0);
    const after = await eventually(async () => {
      const s = await statuses();
      return s[first!] === 'stopped' && Object.values(s).filter((v) => v === 'running').length === 1 && s;
    });
    const second = Object.keys(after).find((id) => after[id] === 'running')!;

    const show = await mxc(['workloads', 'show', 'hello_world'], env);
    expect(show.exitCode).toBe(2);
    expect(show.stderr).toContain('"hello_world" names 2 workloads; say which:');
    // Each candidate with what tells it apart: its job, node, status and age.
    for (const [id, status] of [
      [first, 'stopped'],
      [second, 'running'],
    ])
      expect(show.stderr).toMatch(
        new RegExp(
          `\\n {2}${id} {2}test/www/prod/hello_world {2}\\S+ +${status} +created \\d+[sm] ago(\\n|$)`,
        ),
      );

    const stop = await mxc(['workloads', 'stop', 'hello_world'], env);
    expect([stop.exitCode, stop.stderr]).toEqual([0, '']);
    expect(stop.stdout).toMatch(new RegExp(`^${second}: stopping`));
    // Now none is live: stop too finds two, ended both.
    await eventually(async () => (await statuses())[second] === 'stopped');
    const again = await mxc(['workloads', 'stop', 'hello_world'], env);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(
      new RegExp(`\\n {2}${second} {2}test/www/prod/hello_world {2}\\S+ +stopped +created`),
    );
    // An `_` in the prefix is itself, not a wildcard; the prefix is bounded.
    const none = await c.api('GET', '/api/workloads?id_prefix=hello%5Fworld-&limit=10');
    expect(none.body.data.map((w: { id: string }) => w.id).sort()).toEqual([first, second].sort());
    expect((await c.api('GET', '/api/workloads?id_prefix=helloxworld')).body.data).toEqual([]);
    const long = await c.api('GET', `/api/workloads?id_prefix=${'h'.repeat(201)}`);
    expect([long.status, long.body.error.code]).toEqual([422, 'VALIDATION_FAILED']);
  });
});

describe('mxc when a helper command fails', () => {
  /** A PATH with node and nothing else: no nix, nix-build or nix-store. */
  const nodeOnly = async () => {
    const { mkdtemp, symlink } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'mxc-node-only-'));
    await symlink(process.execPath, join(dir, 'node'));
    return dir;
  };

  it('says that Nix is missing, not "spawn ENOENT" or an internal error', async () => {
    const path = await nodeOnly();
    const build = await mxc(['build', repoPath('examples', 'hello_world')], { PATH: path });
    expect(build.exitCode).not.toBe(0);
    expect(build.stderr).toContain('nix-build was not found on PATH (Nix is needed');
    const push = await mxc(['push', '/nix/store/00000000000000000000000000000000-x', '--json'], {
      PATH: path,
    });
    expect(push.exitCode).toBe(1);
    expect(JSON.parse(push.stdout).error).toEqual({
      code: 'COMMAND_FAILED',
      message: expect.stringContaining('nix was not found on PATH'),
    });
    expect(push.stderr).not.toContain('internal error');
  });

  it('says plainly that a pushed path does not exist or is not in the store (exit 2), not in nix’s words', async () => {
    const gone = await mxc(['push', '/nix/store/not-a-store-path']);
    expect(gone.exitCode).toBe(2);
    expect(gone.stderr).toMatch(
      /\/nix\/store\/not-a-store-path is not in this machine's Nix store: build it here first .*\[PUSH_PATH_MISSING\]/,
    );
    const nowhere = await mxc(['push', './no-such-result']);
    expect(nowhere.exitCode).toBe(2);
    expect(nowhere.stderr).toContain('/no-such-result does not exist: build it here first');
    const dir = await mkdtemp(join(tmpdir(), 'mxc-push-'));
    try {
      await writeFile(join(dir, 'f'), 'x');
      const outside = await mxc(['push', '--json', join(dir, 'f')]);
      expect(outside.exitCode).toBe(2);
      expect(JSON.parse(outside.stdout).error).toEqual({
        code: 'PUSH_NOT_A_STORE_PATH',
        message: expect.stringContaining(`${join(dir, 'f')} is not in the Nix store (/nix/store)`),
      });
      for (const r of [gone, outside]) {
        expect(r.stderr).not.toContain('flake.nix');
        expect(r.stderr).not.toContain('internal error');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
