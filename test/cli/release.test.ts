/**
 * The self-contained release (scripts/release.mjs): copied away from the checkout, with no
 * node_modules above it, it needs Node alone. `mxc up` from it starts on embedded PGlite (whose wasm
 * files ship beside the bundle), builds its own hello_world and runs it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { eventually } from '../helpers/protocol-agent.js';
import { UpProcess } from './up-harness.js';

describe('the release folder', () => {
  let dir: string;
  let release: string;
  let up: UpProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-release-'));
    release = join(dir, 'mxc');
    execFileSync(process.execPath, [repoPath('scripts', 'release.mjs'), release], { stdio: 'pipe' });
  }, 120_000);

  afterAll(async () => {
    await up?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('holds the bundle, the assets and only the runtime packages the bundle leaves external', async () => {
    for (const f of [
      'bin/mxc.js',
      'dist/bundle/mxc.cjs',
      'bin/package.json',
      'scheduler/store/migrations',
      'nixlib',
      'examples',
    ])
      expect(existsSync(join(release, f)), f).toBe(true);
    const modules = await readdir(join(release, 'node_modules'));
    expect(modules).toContain('pino');
    expect(modules).toContain('@electric-sql');
    // Bundled, so absent: the server framework, the database client, the CLI parser, zod.
    for (const bundled of ['fastify', 'pg', 'commander', 'zod', 'ws']) expect(modules).not.toContain(bundled);
    // Nothing above the release could lend it a module.
    expect(existsSync(join(dir, 'node_modules'))).toBe(false);
  });

  it('runs mxc up on PGlite from the copy: hello_world is built and running', async () => {
    const bin = join(release, 'bin', 'mxc.js');
    const version = await execa(process.execPath, [bin, '--version'], { cwd: dir });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    up = await UpProcess.start({
      bin,
      cwd: dir,
      dataDir: join(dir, 'data'),
      databaseUrl: '',
      args: [],
      timeoutMs: 120_000,
    });
    const url = up.url;
    const running = await eventually(
      async () => {
        const r = await execa(process.execPath, [bin, '-c', url, 'workloads', 'list', '--json'], {
          cwd: dir,
          env: { MXC_API_TOKEN: '' },
          reject: false,
        });
        if (r.exitCode !== 0) return null;
        const rows = JSON.parse(r.stdout) as { job: string; status: string }[];
        return rows.find((w) => w.job.endsWith('/hello_world') && w.status === 'running') ?? null;
      },
      60_000,
      'hello_world to run from the release',
    );
    expect(running.status).toBe('running');
  }, 240_000);
});
