/**
 * Every example builds with plain `nix-build` (no nixpkgs, no substituters) into one JSON file
 * that spec/job.ts accepts; its process scripts are real store scripts that run by themselves.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCommand, run } from '../../lib/exec.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { describeIssues, JobSpec } from '../../spec/job.js';
import { REPO } from './nix-eval.js';

const EXAMPLES = ['hello_world', 'web', 'pipeline', 'batch', 'cron', 'microvm'];
const jobs = new Map<string, JobSpec>();
const outPaths = new Map<string, string>();
let scratch = '';
const HAS_BWRAP = await hasCommand('bwrap', ['--version']);

beforeAll(async () => {
  const found = (await readdir(join(REPO, 'examples'), { withFileTypes: true })).filter((d) =>
    d.isDirectory(),
  );
  expect(found.map((d) => d.name).sort()).toEqual([...EXAMPLES].sort());
  const outs = await nixBuild(EXAMPLES.map((e) => join(REPO, 'examples', e)));
  expect(outs).toHaveLength(EXAMPLES.length);
  for (const [i, name] of EXAMPLES.entries()) {
    const out = outs[i]!;
    outPaths.set(name, out);
    const parsed = JobSpec.safeParse(JSON.parse(await readFile(out, 'utf8')));
    if (!parsed.success) throw new Error(`examples/${name}: ${describeIssues(parsed.error).join('; ')}`);
    jobs.set(name, parsed.data);
  }
  scratch = await mkdtemp(join(tmpdir(), 'mxc-nixlib-'));
}, 120_000);

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function job(name: string): JobSpec {
  const j = jobs.get(name);
  if (!j) throw new Error(`examples/${name} did not build`);
  return j;
}

function scriptOf(name: string, process: string): string {
  const p = job(name).task.processes.find((x) => x.name === process);
  if (!p) throw new Error(`examples/${name} has no process ${process}`);
  return p.cmdline;
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a store script with an empty environment (plus `env`), optionally until `until` shows up
 * (then kills its process group), optionally through a wrapper command such as bwrap.
 */
function runScript(
  file: string,
  opts: { env?: Record<string, string>; cwd?: string; until?: string; timeoutMs?: number } = {},
  wrapper?: { file: string; args: string[] },
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const [cmd, args] = wrapper ? [wrapper.file, [...wrapper.args, file]] : [file, []];
    const child = spawn(cmd, args, { env: opts.env ?? {}, cwd: opts.cwd, detached: true });
    let stdout = '';
    let stderr = '';
    const stop = () => {
      // The script's children (sleep, httpd) share its process group.
      if (child.pid) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {}
      }
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`${file} timed out; stdout: ${stdout}; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 10_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (opts.until && stdout.includes(opts.until)) stop();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

describe('examples', () => {
  it.each(EXAMPLES)(
    '%s builds into one JSON file that JobSpec accepts, named after its folder',
    async (name) => {
      expect((await stat(outPaths.get(name)!)).isFile()).toBe(true);
      const j = job(name);
      expect(j.name).toBe(name);
      expect([j.cluster, j.role, j.environment]).toEqual(['devcluster', 'www-data', 'devel']);
    },
  );

  it.each(EXAMPLES)(
    '%s: every process is a store script with a nix_init_ process ordered before it',
    async (name) => {
      const j = job(name);
      const mine = j.task.processes.filter((p) => !p.name.startsWith('nix_init_'));
      expect(mine.length).toBeGreaterThan(0);
      for (const p of mine) {
        expect(p.cmdline).toMatch(/^\/nix\/store\/[0-9a-z]{32}-mxc-process-devcluster-www-data-devel-/);
        expect(j.mxc.closure).toContain(p.cmdline);
        const text = await readFile(p.cmdline, 'utf8');
        expect(text).toMatch(/^#!\/nix\/store\/[0-9a-z]{32}-busybox\/busybox sh\n/);
        const init = j.task.processes.find((x) => x.name === `nix_init_${p.name}`);
        expect(init?.cmdline).toMatch(new RegExp(`^/nix/store/\\S+/busybox test -e ${p.cmdline}$`));
        expect(j.task.constraints).toContainEqual({ order: [`nix_init_${p.name}`, p.name] });
        // The init command must succeed on its own, split on spaces, without a shell or nix-store.
        const [file, ...args] = init!.cmdline.split(' ');
        await run(file!, args, { env: {} });
      }
    },
  );

  it('a nix_init_ command fails when its script is missing', async () => {
    const init = job('hello_world').task.processes.find((p) => p.name === 'nix_init_hello_world')!;
    const [file, ...args] = init.cmdline.replace(/-mxc-process-/, '-missing-process-').split(' ');
    await expect(run(file!, args, { env: {} })).rejects.toThrow();
  });

  it('hello_world: its closure is the script and busybox, nothing from the host', async () => {
    const closure = await closureOf(job('hello_world').mxc.closure);
    expect(closure).toHaveLength(2);
    expect(closure.some((p) => p.endsWith('-busybox'))).toBe(true);
  });

  it('hello_world: the process script prints Hello, world! and keeps running', async () => {
    const r = await runScript(scriptOf('hello_world', 'hello_world'), { until: 'Hello, world!' });
    expect(r.stdout).toBe('Hello, world!\n');
    // Killed by us after the greeting: it was still running.
    expect(r.code).toBeNull();
  });

  it.skipIf(!HAS_BWRAP)(
    'hello_world: the script runs with only its closure visible (bubblewrap)',
    async () => {
      const script = scriptOf('hello_world', 'hello_world');
      const binds = (await closureOf([script])).flatMap((p) => ['--ro-bind', p, p]);
      const r = await runScript(
        script,
        { until: 'Hello, world!' },
        {
          file: 'bwrap',
          args: ['--unshare-all', '--die-with-parent', ...binds, '--proc', '/proc', '--dev', '/dev', '--'],
        },
      );
      expect(r.stdout).toBe('Hello, world!\n');
    },
  );

  it('web: httpd serves the store site and answers the health check on MXC_PORT_HTTP', async () => {
    const j = job('web');
    expect(j.mxc.ports).toEqual(['http']);
    expect(j.health_check_config).toMatchObject({
      port: 'http',
      endpoint: '/health',
      expected_response: 'ok',
    });
    const port = await freePort();
    const child = spawn(scriptOf('web', 'httpd'), [], {
      env: { MXC_PORT_HTTP: String(port) },
      detached: true,
    });
    try {
      let health = '';
      for (let i = 0; i < 50 && health !== 'ok'; i++) {
        health = await fetch(`http://127.0.0.1:${port}/health`)
          .then((r) => r.text())
          .catch(() => '');
        if (health !== 'ok') await new Promise((r) => setTimeout(r, 100));
      }
      expect(health).toBe('ok');
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain(
        'busybox httpd from the Nix store',
      );
    } finally {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    }
  });

  it('web: without MXC_PORT_HTTP the process fails with a message saying what is missing', async () => {
    const r = await runScript(scriptOf('web', 'httpd'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('the agent exports MXC_PORT_HTTP');
  });

  it('pipeline: prepare writes the site, cleanup (final) removes it; sidecar is ephemeral', async () => {
    const j = job('pipeline');
    expect(j.task.constraints).toContainEqual({ order: ['prepare', 'serve'] });
    const flags = Object.fromEntries(j.task.processes.map((p) => [p.name, p]));
    expect(flags.sidecar?.ephemeral).toBe(true);
    expect(flags.cleanup?.final).toBe(true);
    expect(flags.nix_init_cleanup?.final).toBe(true);
    const cwd = await mkdtemp(join(scratch, 'pipeline-'));
    const prep = await runScript(scriptOf('pipeline', 'prepare'), {
      cwd,
      env: { GREETING: j.mxc.env.GREETING! },
    });
    expect(prep.code).toBe(0);
    expect(await readFile(join(cwd, 'www/index.html'), 'utf8')).toContain('Hello from the pipeline');
    const clean = await runScript(scriptOf('pipeline', 'cleanup'), { cwd });
    expect(clean.code).toBe(0);
    await expect(stat(join(cwd, 'www'))).rejects.toThrow();
  });

  it('batch: a run-to-completion job whose process exits 0', async () => {
    const j = job('batch');
    expect(j.service).toBe(false);
    expect(j.instances).toBe(2);
    const r = await runScript(scriptOf('batch', 'compute'));
    expect(r).toMatchObject({ code: 0, stdout: 'batch: 6 * 7 = 42\nbatch: done\n' });
  });

  it('cron: carries its schedule and collision policy', async () => {
    const j = job('cron');
    expect([j.cron_schedule, j.cron_collision_policy, j.service]).toEqual([
      '*/5 * * * *',
      'CANCEL_NEW',
      false,
    ]);
    const r = await runScript(scriptOf('cron', 'tick'));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^cron: tick at /);
  });

  it('microvm: asks for microVM isolation without network', async () => {
    const j = job('microvm');
    expect(j.mxc).toMatchObject({ isolation: 'microvm', network: 'none' });
    const text = await readFile(scriptOf('microvm', 'guest'), 'utf8');
    expect(text).toContain('uname -r');
    expect(text).toContain('ls /nix/store');
  });
});
