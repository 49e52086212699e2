/**
 * Runs the real coordinator (`node bin/mxc.js coordinator`, or `up` for coordinator + agent) as a child
 * process, so its CPU and memory can be read from /proc apart from the load generator. Optionally under
 * `--cpu-prof`, whose profile is written when it exits on SIGINT.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { repoPath } from '../../scheduler/paths.js';
import { sleep } from './stats.js';

export interface CoordinatorProcessOptions {
  /** `coordinator` (alone) or `up` (coordinator + one in-process agent, no demo). */
  command?: 'coordinator' | 'up';
  dataDir: string;
  databaseUrl?: string;
  env?: Record<string, string>;
  /**
   * Write a V8 CPU profile into this directory. The coordinator then runs from the plain tsc output
   * (dist/cli) rather than the minified bundle, so the profile names the project's functions.
   */
  cpuProfDir?: string;
  /** The client token it is given (MXC_API_TOKEN in env), sent with the probe that waits for it to answer. */
  token?: string;
  /** How long to wait for it to answer. */
  startTimeoutMs?: number;
  /** Measure its event loop's longest stall (stall-probe.ts): `stallWindow()` then answers. */
  stallProbe?: boolean;
}

export interface CoordinatorProcess {
  pid: number;
  url: string;
  logFile: string;
  child: ChildProcess;
  /** SIGINT, wait for exit (SIGKILL after 20 s); returns the CPU profile path when one was asked for. */
  stop(): Promise<string | null>;
  /**
   * The longest event-loop stall since the previous call (or since start), and a new window from now:
   * in wall ms, and in ms of the main thread's CPU (see stall-probe.ts). Only with `stallProbe`.
   */
  stallWindow(): Promise<{ wallMs: number; cpuMs: number }>;
}

const STALL_PROBE = fileURLToPath(new URL('./stall-probe.js', import.meta.url));

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function startCoordinatorProcess(opts: CoordinatorProcessOptions): Promise<CoordinatorProcess> {
  const entry = repoPath('bin', 'mxc.js');
  if (!existsSync(repoPath('dist', 'cli', 'main.js')))
    throw new Error('the CLI is not built: run `npm run setup` (npm run bench does it) first');
  await mkdir(opts.dataDir, { recursive: true });
  const port = await freePort();
  const logFile = join(opts.dataDir, 'coordinator.log');
  const log = createWriteStream(logFile);
  const nodeArgs = opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir] : [];
  const stallFile = join(opts.dataDir, 'stalls.txt');
  if (opts.stallProbe) nodeArgs.push('--import', pathToFileURL(STALL_PROBE).href);
  // -e: process.argv is [node, ...the arguments after the code], main() wants [node, script, ...].
  const unbundled = [
    '--input-type=module',
    '-e',
    `import(${JSON.stringify(pathToFileURL(repoPath('dist', 'cli', 'main.js')).href)}).then((m) => m.main(['node', 'mxc', ...process.argv.slice(1)]))`,
  ];
  const args = [
    ...nodeArgs,
    ...(opts.cpuProfDir ? unbundled : [entry]),
    opts.command ?? 'coordinator',
    '--port',
    String(port),
    '--data-dir',
    opts.dataDir,
  ];
  if (opts.command === 'up') args.push('--no-demo');
  const child = spawn(process.execPath, args, {
    cwd: repoPath(),
    env: {
      ...process.env,
      MXC_LOG_FORMAT: 'json',
      MXC_LOG_LEVEL: process.env.MXC_LOG_LEVEL ?? 'warn',
      ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
      ...(opts.stallProbe ? { MXC_BENCH_STALL_FILE: stallFile } : {}),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`the coordinator exited with code ${child.exitCode} on start; see ${logFile}`);
    try {
      const res = await fetch(`${url}/api/cluster/status`, {
        headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
      });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the coordinator did not answer on ${url} within the start timeout; see ${logFile}`);
    }
    await sleep(100);
  }
  let stallWindows = 0;
  return {
    pid: child.pid!,
    url,
    logFile,
    child,
    async stallWindow() {
      if (!opts.stallProbe) throw new Error('stallWindow: the coordinator was started without stallProbe');
      const n = ++stallWindows;
      child.kill('SIGUSR2');
      for (;;) {
        const line = existsSync(stallFile)
          ? readFileSync(stallFile, 'utf8')
              .split('\n')
              .find((l) => l.startsWith(`${n} `))
          : undefined;
        if (line) {
          const [, wall, cpu] = line.split(' ');
          return { wallMs: Number(wall), cpuMs: Number(cpu) };
        }
        if (child.exitCode !== null) throw new Error(`the coordinator exited; see ${logFile}`);
        await sleep(20);
      }
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGINT');
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(t);
      }
      log.end();
      if (!opts.cpuProfDir) return null;
      const profiles = readdirSync(opts.cpuProfDir).filter((f) => f.endsWith('.cpuprofile'));
      return profiles.length ? join(opts.cpuProfDir, profiles.sort().at(-1)!) : null;
    },
  };
}
