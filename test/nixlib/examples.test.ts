/**
 * Every example builds with plain `nix-build` (no nixpkgs, no substituters) into one JSON file:
 * a valid Apache Aurora job (checked against a JSON Schema of Aurora's own fields) whose sidecar
 * carries mxc's fields, which spec/job.ts accepts joined; its process scripts run by themselves.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJobInput } from '../../compiler/job-input.js';
import { hasCommand, run } from '../../lib/exec.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import type { JobSpec } from '../../spec/job.js';
import { REPO } from './nix-eval.js';

const EXAMPLES = ['hello_world', 'web', 'pipeline', 'batch', 'cron', 'microvm', 'nix_aurora'];
const jobs = new Map<string, JobSpec>();
const auroraDocs = new Map<string, unknown>();
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
    auroraDocs.set(name, JSON.parse(await readFile(out, 'utf8')));
    jobs.set(name, (await readJobInput(out, `examples/${name}`)).spec);
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

/** What `GET /health` on the port answers once it answers `ok`, or the last answer after 5 s. */
async function healthAnswer(port: number): Promise<string> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const health = await fetch(`http://127.0.0.1:${port}/health`)
      .then((r) => r.text())
      .catch(() => '');
    if (health === 'ok' || Date.now() > deadline) return health;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('examples', () => {
  const auroraSchema = new Ajv({ allErrors: true }).compile(
    JSON.parse(readFileSync(join(REPO, 'test', 'fixtures', 'aurora-job.schema.json'), 'utf8')),
  );

  it.each(EXAMPLES)("%s builds into a valid Aurora job: only Aurora's fields, at every level", (name) => {
    const doc = auroraDocs.get(name);
    const ok = auroraSchema(doc);
    expect(auroraSchema.errors ?? [], JSON.stringify(doc)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('the Aurora schema check refuses what Aurora refuses (it can fail)', () => {
    const doc = structuredClone(auroraDocs.get('web')) as Record<string, unknown>;
    expect(auroraSchema({ ...doc, mxc: {} })).toBe(false);
    const task = doc.task as { processes: Record<string, unknown>[] };
    task.processes[0]!.env = {};
    expect(auroraSchema(doc)).toBe(false);
  });

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
        const init = j.task.processes.find((x) => x.name === `nix_init_${p.name}`);
        const script = init!.cmdline.split(' ')[2]!;
        expect(script).toMatch(/^\/nix\/store\/[0-9a-z]{32}-mxc-process-devcluster-www-data-devel-/);
        // The JSON runs the script, unless the cmdline has {{…}} bindings for the executor to bind.
        if (!p.cmdline.includes('{{')) expect(p.cmdline).toBe(script);
        expect(j.mxc.closure).toContain(script);
        const text = await readFile(script, 'utf8');
        expect(text).toMatch(/^#!\/nix\/store\/[0-9a-z]{32}-busybox\/busybox sh\n/);
        expect(init?.cmdline).toMatch(
          new RegExp(
            `^/nix/store/[0-9a-z]{32}-mxc-nix-init ${p.name} ${script} /nix/store/\\S+\\.mxc\\.json$`,
          ),
        );
        expect(j.mxc.closure).toContain(init!.cmdline.split(' ')[0]);
        expect(j.task.constraints).toContainEqual({ order: [`nix_init_${p.name}`, p.name] });
        // Under mxc's agent (MXC_WORKLOAD_ID set) the init command is a no-op, without a shell line.
        const [file, ...args] = init!.cmdline.split(' ');
        const cwd = await mkdtemp(join(scratch, 'init-'));
        await run(file!, args, { env: { MXC_WORKLOAD_ID: 'w' }, cwd });
        expect(await readdir(cwd)).toEqual([]);
      }
    },
  );

  it('nix_init_ realises the script and the sidecar and roots them in the sandbox, as nix-aurora', async () => {
    const init = job('web').task.processes.find((p) => p.name === 'nix_init_httpd')!;
    const [file, ...args] = init.cmdline.split(' ');
    const cwd = await mkdtemp(join(scratch, 'thermos-'));
    await run(file!, args, { env: { PATH: '/usr/bin:/bin', HOME: cwd }, cwd });
    expect((await readdir(join(cwd, '.gc'))).sort()).toEqual(['httpd', 'httpd-2']);
    const roots = await run('nix-store', ['--gc', '--print-roots']);
    expect(roots.stdout).toContain(join(cwd, '.gc', 'httpd'));
  });

  it('nix_init_ without nix-store checks the paths are there and fails when one is missing', async () => {
    const init = job('hello_world').task.processes.find((p) => p.name === 'nix_init_hello_world')!;
    const [file, ...args] = init.cmdline.split(' ');
    const env = { PATH: '/nonexistent', HOME: '/nonexistent' };
    await run(file!, args, { env, cwd: scratch });
    const missing = init.cmdline.replace(/-mxc-process-/, '-missing-process-').split(' ');
    await expect(run(file!, missing.slice(1), { env, cwd: scratch })).rejects.toThrow(
      /not in the store and nix-store is not available/,
    );
  });

  it('hello_world: its closure is the script, the init command and busybox, nothing from the host', async () => {
    const closure = await closureOf(job('hello_world').mxc.closure);
    expect(closure).toHaveLength(3);
    expect(closure.some((p) => p.endsWith('-busybox'))).toBe(true);
    expect(closure.some((p) => p.endsWith('-mxc-nix-init'))).toBe(true);
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
    expect(j.mxc.health_port).toBe('http');
    expect(j.health_check_config).toMatchObject({
      endpoint: '/health',
      expected_response: 'ok',
    });
    const port = await freePort();
    const child = spawn(scriptOf('web', 'httpd'), [], {
      env: { MXC_PORT_HTTP: String(port) },
      detached: true,
    });
    try {
      expect(await healthAnswer(port)).toBe('ok');
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

  it('nix_aurora: bound the way an executor binds it, it serves its expanded files on the bound port', async () => {
    const j = job('nix_aurora');
    expect(j.mxc.ports).toEqual(['http']);
    expect(j.announce).toEqual({ primary_port: 'http', portmap: { aurora: '{{primary_port}}' } });
    expect(j.update_config).toMatchObject({ restart_threshold: 30, pulse_interval_secs: 60 });
    const httpd = j.task.processes.find((p) => p.name === 'httpd')!;
    expect(httpd.cmdline).toContain('-p {{thermos.ports[http]}}');
    const port = await freePort();
    // What Thermos (or mxc's agent) does at launch: bind {{…}} in the cmdline, run it under a shell.
    const bound = httpd.cmdline
      .replaceAll('{{thermos.ports[http]}}', String(port))
      .replaceAll('{{mesos.instance}}', '1');
    const cwd = await mkdtemp(join(scratch, 'nix-aurora-'));
    const child = spawn('/bin/sh', ['-c', bound], { cwd, env: {}, detached: true });
    try {
      expect(await healthAnswer(port)).toBe('ok');
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain(
        `Instance 1 of a nix-aurora job, serving on port ${port}</h1>`,
      );
      // copiedExpandedFile wrote the bound copy into the sandbox, the template stays in the store.
      expect(await readFile(join(cwd, 'www', 'index.html'), 'utf8')).toContain(`port ${port}`);
    } finally {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    }
  });

  it('microvm: asks for microVM isolation without network', async () => {
    const j = job('microvm');
    expect(j.mxc).toMatchObject({ isolation: 'microvm', network: 'none' });
    const text = await readFile(scriptOf('microvm', 'guest'), 'utf8');
    expect(text).toContain('uname -r');
    expect(text).toContain('ls /nix/store');
  });
});
