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
 * through a bare spawn (+2.3 ms a call).
 */
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
  const child = execa(file, args, options);
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  if (opts.onStderrLine && child.stderr) void readLines(child.stderr, opts.onStderrLine);
  return { child };
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
  return new CommandError(
    `${file} ${reason}${stderr.trim() ? `:\n${stderr.trim()}` : ''}`,
    [file, ...args].join(' '),
    err.exitCode,
    stderr,
    { cause: err },
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

/** True when `file` can be found on PATH (or is an existing absolute path) and runs `--version`. */
export async function hasCommand(file: string, args: readonly string[] = ['--version']): Promise<boolean> {
  try {
    await run(file, args, { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}
