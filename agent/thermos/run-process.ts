/**
 * Starts one run of one process: spawn without a shell, leading its own process group, stdin
 * closed, stdout/stderr split into lines. Reports how the run ended, including spawn failures.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { readLines } from '../../lib/line-reader.js';
import type { LaunchSpec } from './cmdline.js';

export interface RunExit {
  /** Exit code; 128+signal number when killed by a signal (the shell's convention); 127 when it never started. */
  code: number;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (missing file, bad cwd, …). */
  error?: Error;
}

export interface RunHandle {
  /** Pid of the group leader, which is also the group id. Null when spawning failed. */
  pid: number | null;
  exited: Promise<RunExit>;
}

/** How long to wait, after the leader exits, for its output pipes to drain before reporting the exit. */
const DRAIN_MS = 100;

/** Spawns `spec`; `onLine` gets each output line. Never throws: failures arrive through `exited`. */
export function startRun(
  spec: LaunchSpec,
  onLine: (stream: 'stdout' | 'stderr', line: string) => void,
): RunHandle {
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(spec.file, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      // detached: setsid(), so the run leads a new session and process group that we can signal as a whole.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
    });
  } catch (err) {
    const error = new Error(`cannot start ${spec.file}: ${(err as Error).message}`, { cause: err });
    return { pid: null, exited: Promise.resolve({ code: 127, signal: null, error }) };
  }
  const drained = Promise.all([
    readLines(child.stdout!, (l) => onLine('stdout', l)),
    readLines(child.stderr!, (l) => onLine('stderr', l)),
  ]);
  const exited = new Promise<RunExit>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      // 'error' without a pid means the spawn itself failed; otherwise 'exit' still follows.
      if (child.pid !== undefined) return;
      const hint =
        err.code === 'ENOENT' ? ` (does ${spec.file} exist, and the working directory ${spec.cwd}?)` : '';
      resolve({
        code: 127,
        signal: null,
        error: new Error(`cannot start ${spec.file}: ${err.message}${hint}`, { cause: err }),
      });
    });
    child.once('exit', (code, signal) => {
      const result: RunExit =
        signal !== null
          ? { code: 128 + (constants.signals[signal] ?? 0), signal }
          : { code: code ?? 0, signal: null };
      // Leftover children may hold the pipes open forever; give the output a moment, not more. The
      // moment ends after one more poll of the event loop (setImmediate): on a busy host the timer came
      // due in the same turn as the last output, ran first (timers before I/O) and lost it.
      const timer = setTimeout(() => setImmediate(() => resolve(result)), DRAIN_MS);
      void drained.then(() => {
        clearTimeout(timer);
        resolve(result);
      });
    });
  });
  return { pid: child.pid ?? null, exited };
}
