/**
 * The one way mxc runs its own helper commands (nix, nix-store, bwrap probes, qemu-img, …):
 * execa with no shell, an abort signal and a timeout, output captured, failures turned into
 * `CommandError` with the command line and its stderr.
 */
import { execa } from 'execa';

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

/** Runs `file args…` without a shell; rejects with CommandError on a non-zero exit. */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const child = execa(file, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    input: opts.input,
    timeout: opts.timeoutMs ?? 10 * 60_000,
    cancelSignal: opts.signal,
    reject: false,
    stripFinalNewline: false,
    shell: false,
  });
  if (opts.onStderrLine && child.stderr) {
    let buf = '';
    child.stderr.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        opts.onStderrLine?.(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
    });
  }
  const r = await child;
  const stdout = String(r.stdout ?? '');
  const stderr = String(r.stderr ?? '');
  if (r.failed) {
    const command = [file, ...args].join(' ');
    const why = r.timedOut
      ? `timed out after ${opts.timeoutMs ?? 600_000} ms`
      : r.isCanceled
        ? 'was cancelled'
        : r.exitCode !== undefined
          ? `exited with code ${r.exitCode}`
          : `failed: ${r.originalMessage ?? r.shortMessage}`;
    throw new CommandError(
      `${file} ${why}${stderr.trim() ? `:\n${stderr.trim()}` : ''}`,
      command,
      r.exitCode,
      stderr,
    );
  }
  return { stdout, stderr };
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
