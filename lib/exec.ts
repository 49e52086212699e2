/**
 * The one way mxc runs its own helper commands (nix, nix-store, nix-build, bwrap probes, qemu-img, …):
 * execa without a shell, an abort signal and a timeout (SIGKILL), output captured or streamed,
 * stderr lines through lib/line-reader.ts, failures turned into `CommandError` with the command line
 * and its stderr. Workload processes are not helper commands: agent/thermos spawns those itself.
 * execa is imported on the first call, so commands that spawn nothing never load it. Measured on this
 * 2-core machine while other work loaded it (medians of 11 fresh processes, CPU time user+sys): a
 * bundle importing node:child_process 6.5 ms, the same importing execa 9 as ESM 46 ms (+33 ms over its
 * spawn-only ESM twin) and as the CommonJS bundle bin/mxc.js loads with its V8 code cache 22 ms
 * (+15 ms); per call, `true` run 40 times costs 4.0 ms CPU in the parent through execa against 1.7 ms
 * through a bare spawn (+2.3 ms a call). One exception: bin/build-early.js starts `mxc build`'s
 * nix-build itself before anything loads (see there why), and `settleStarted` below takes it over.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ExecaError, Options, ResultPromise } from 'execa';
import { readLines } from './line-reader.js';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called with each stderr line as it arrives (progress output). */
  onStderrLine?: (line: string) => void;
  /**
   * Kill the command when this process dies, even by SIGKILL (`setpriv --pdeathsig KILL`, when util-linux
   * has it): a daemon's long helper (an agent's `nix-store --realise`) must not run on, orphaned, and
   * race the one the restarted daemon starts.
   */
  dieWithParent?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000;

let execaModule: Promise<typeof import('execa')> | undefined;
/** execa, loaded once per process on the first helper command. */
const loadExeca = () => {
  execaModule ??= import('execa');
  return execaModule;
};

/**
 * Loads the runner now. A caller that wants a helper running while it does other start-up work
 * awaits this first: then `run` spawns in its first step, before anything the caller starts next.
 */
export async function loadRunner(): Promise<void> {
  await loadExeca();
}

/**
 * Starts `file args…` (no shell); stdout is buffered unless `streamStdout`. The subprocess comes back
 * wrapped: it is a thenable, which an async function would otherwise await.
 */
async function start(
  file: string,
  args: readonly string[],
  opts: RunOptions,
  streamStdout: boolean,
): Promise<{ child: ResultPromise }> {
  const { execa } = await loadExeca();
  const options: Options = {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    shell: false,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    cancelSignal: opts.signal,
    killSignal: 'SIGKILL',
    stripFinalNewline: false,
    buffer: { stdout: !streamStdout, stderr: true },
  };
  const setpriv = opts.dieWithParent ? findOnPath('setpriv') : null;
  const child = setpriv
    ? execa(setpriv, ['--pdeathsig', 'KILL', '--', file, ...args], options)
    : execa(file, args, options);
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  if (opts.onStderrLine && child.stderr) void readLines(child.stderr, opts.onStderrLine);
  return { child };
}

const foundOnPath = new Map<string, string>();

/**
 * Absolute path of `name` on this process's PATH (a child's env may have no PATH at all), or null; a
 * path found is remembered for the process, one not found is looked for again next time.
 */
export function findOnPath(name: string): string | null {
  const known = foundOnPath.get(name);
  if (known) return known;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      foundOnPath.set(name, candidate);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Awaits `child`, turning execa's failure into a CommandError. */
async function settle(
  child: ResultPromise,
  file: string,
  args: readonly string[],
  opts: RunOptions,
): Promise<RunResult> {
  try {
    const r = await child;
    return { stdout: typeof r.stdout === 'string' ? r.stdout : '', stderr: String(r.stderr ?? '') };
  } catch (err) {
    throw commandError(err as ExecaError, file, args, opts);
  }
}

function commandError(
  err: ExecaError,
  file: string,
  args: readonly string[],
  opts: RunOptions,
): CommandError {
  const stderr = typeof err.stderr === 'string' ? err.stderr : '';
  const reason = err.timedOut
    ? `timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`
    : err.isCanceled
      ? 'was cancelled'
      : err.exitCode !== undefined
        ? `exited with code ${err.exitCode}`
        : err.signal
          ? `was killed by ${err.signal}`
          : `failed: ${err.originalMessage ?? err.message}`;
  return failure(file, args, reason, stderr, err.exitCode, err);
}

/**
 * The one shape of a helper command's failure: what happened, then its stderr. A command that is not
 * there says so in words (and what to install for Nix's), not as "spawn nix ENOENT".
 */
function failure(
  file: string,
  args: readonly string[],
  reason: string,
  stderr: string,
  exitCode?: number,
  cause?: unknown,
): CommandError {
  if ((cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    reason = `was not found on PATH${file.startsWith('nix') ? ' (Nix is needed: on Debian, apt-get install nix-bin)' : ''}`;
  }
  return new CommandError(
    `${file} ${reason}${stderr.trim() ? `:\n${stderr.trim()}` : ''}`,
    [file, ...args].join(' '),
    exitCode,
    stderr,
    { cause },
  );
}

/** Runs `file args…` without a shell; rejects with CommandError on a non-zero exit. */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const { child } = await start(file, args, opts, false);
  return settle(child, file, args, opts);
}

/** Runs `file args…` with its stdout as a stream (NAR dumps); `done` settles like `run`. */
export async function runStreaming(
  file: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<{ stdout: Readable; done: Promise<RunResult>; kill: () => void }> {
  const { child } = await start(file, args, opts, true);
  const done = settle(child, file, args, opts);
  done.catch(() => {}); // the caller awaits it; avoid an unhandled rejection meanwhile
  return { stdout: child.stdout!, done, kill: () => child.kill('SIGKILL') };
}

/**
 * A helper command a launcher started before this module was loaded: bin/build-early.js starts the
 * nix-build of `mxc build` first thing (see there why not with execa; bin/early.js spawns it), and this
 * module takes it over. `done` resolves once the process has exited and its output is read, or failed to start.
 */
export interface StartedCommand {
  file: string;
  args: readonly string[];
  /** When it was spawned, in ms on process.hrtime's clock (`monotonicMs`): the timeout counts from there. */
  startedAt: number;
  done: Promise<
    | { exitCode: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
    | { error: Error }
  >;
  kill(): void;
  /** Calls `listener` with the stdout read so far, then with each further chunk as it arrives. */
  onStdout?(listener: (chunk: Buffer) => void): void;
}

/**
 * Milliseconds on process.hrtime's monotonic clock, as bin/early.js stamps `startedAt`: not
 * performance.now(), whose first use loads perf_hooks (~0.9 ms) on `mxc build`'s path.
 */
const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;

/** Whether `started` is the command `file args…` would run. */
export function isSameCommand(started: StartedCommand, file: string, args: readonly string[]): boolean {
  return (
    started.file === file &&
    started.args.length === args.length &&
    started.args.every((a, i) => a === args[i])
  );
}

/**
 * Settles a started command as `run` does: its output, or a CommandError with the same message, and
 * killed (SIGKILL) when it outlives the timeout (counted from its start) or `signal` aborts.
 */
export async function settleStarted(started: StartedCommand, opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      started.kill();
    },
    Math.max(0, timeoutMs - (monotonicMs() - started.startedAt)),
  );
  let cancelled = false;
  const cancel = () => {
    cancelled = true;
    started.kill();
  };
  if (opts.signal?.aborted) cancel();
  opts.signal?.addEventListener('abort', cancel, { once: true });
  const r = await started.done.finally(() => {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', cancel);
  });
  const { file, args } = started;
  const fail = (reason: string, stderr: string, exitCode?: number, cause?: unknown) =>
    failure(file, args, reason, stderr, exitCode, cause);
  if ('error' in r) throw fail(`failed: ${r.error.message}`, '', undefined, r.error);
  if (timedOut) throw fail(`timed out after ${timeoutMs} ms`, r.stderr);
  if (cancelled) throw fail('was cancelled', r.stderr);
  if (r.exitCode !== 0)
    throw r.signal
      ? fail(`was killed by ${r.signal}`, r.stderr)
      : fail(`exited with code ${r.exitCode}`, r.stderr, r.exitCode ?? undefined);
  return { stdout: r.stdout, stderr: r.stderr };
}

/** True when `file` can be found on PATH (or is an existing absolute path) and runs `--version`. */
export async function hasCommand(file: string, args: readonly string[] = ['--version']): Promise<boolean> {
  try {
    await run(file, args, { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}
