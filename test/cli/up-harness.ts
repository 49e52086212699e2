/**
 * The real `mxc up` for end-to-end CLI tests: the built CLI (bin/mxc.js) as a child process on an
 * ephemeral port with its own data dir and a fresh PostgreSQL database; its output is kept for checks.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { execa } from 'execa';
import { dir as tmpDir } from 'tmp-promise';
import { repoPath } from '../../scheduler/paths.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { eventually } from '../helpers/protocol-agent.js';

/** Runs the real CLI; never rejects (check exitCode). */
export const mxc = (
  args: string[],
  opts: { env?: Record<string, string>; input?: string; cwd?: string } = {},
) =>
  execa('node', [repoPath('bin', 'mxc.js'), ...args], {
    reject: false,
    env: opts.env,
    input: opts.input,
    cwd: opts.cwd ?? repoPath(),
    extendEnv: true,
  });

export class UpProcess {
  stdout = '';
  stderr = '';
  url = '';
  exitCode: number | null = null;
  private exited: Promise<void>;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((r) =>
      child.on('exit', (code) => {
        this.exitCode = code;
        r();
      }),
    );
  }

  /** Starts `mxc up --port 0` and resolves once its banner is out (the agent joined). */
  static async start(opts: {
    dataDir: string;
    databaseUrl: string;
    args?: string[];
    env?: Record<string, string>;
    timeoutMs?: number;
    /** Another mxc executable (a release) and the folder it runs in; the checkout's by default. */
    bin?: string;
    cwd?: string;
  }): Promise<UpProcess> {
    const child = spawn(
      process.execPath,
      [
        opts.bin ?? repoPath('bin', 'mxc.js'),
        'up',
        '--port',
        '0',
        '--data-dir',
        opts.dataDir,
        ...(opts.args ?? ['--no-demo']),
      ],
      {
        cwd: opts.cwd ?? repoPath(),
        env: {
          ...process.env,
          DATABASE_URL: opts.databaseUrl,
          MXC_API_TOKEN: '',
          MXC_AGENT_TOKEN: '',
          ...opts.env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const up = new UpProcess(child);
    await eventually(
      async () => {
        if (up.exitCode !== null)
          throw new Error(`mxc up exited ${up.exitCode}:\n${up.stdout}\n${up.stderr}`);
        return /Ctrl-C stops everything/.test(up.stdout) ? true : null;
      },
      opts.timeoutMs ?? 60_000,
      `mxc up to print its banner (stderr so far: ${up.stderr.slice(-2000)})`,
    );
    const m = up.stdout.match(/dashboard\s+(http:\/\/\S+?)\/?\n/);
    if (!m) throw new Error(`no dashboard URL in the banner:\n${up.stdout}`);
    up.url = m[1]!.replace('localhost', '127.0.0.1');
    return up;
  }

  /** Ctrl-C, then waits for the process to end. */
  async stop(): Promise<number | null> {
    if (this.exitCode === null) {
      this.child.kill('SIGINT');
      await this.exited;
    }
    return this.exitCode;
  }
}

/** A fresh PostgreSQL database for one `mxc up`; `drop()` removes it. */
export async function upDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const { url, name } = await createPostgresDb();
  return { url, drop: () => dropPostgresDb(name) };
}

/** A real `mxc up` on its own PostgreSQL database and temp dir, with the env the CLI needs to reach it. */
export interface UpCluster {
  dir: string;
  up: UpProcess;
  env: Record<string, string>;
  stop: () => Promise<void>;
}

export async function startUpCluster(prefix: string, upEnv: Record<string, string> = {}): Promise<UpCluster> {
  const { path: dir, cleanup } = await tmpDir({ prefix: `mxc-${prefix}-`, unsafeCleanup: true });
  const db = await upDatabase();
  const up = await UpProcess.start({ dataDir: join(dir, 'data'), databaseUrl: db.url, env: upEnv });
  return {
    dir,
    up,
    env: { MXC_COORDINATOR: up.url, MXC_API_TOKEN: '' },
    async stop() {
      await up.stop();
      await db.drop();
      await cleanup();
    },
  };
}
