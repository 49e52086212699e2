/**
 * Turns a process's cmdline into an argv. nix-aurora cmdlines are normally one store path of an
 * executable script; those (and plain `path arg arg` lines) are exec'd directly, with no shell.
 */
import type { Process } from '../../spec/job.js';

export interface LaunchSpec {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /**
   * The group leader is a monitor (bubblewrap) rather than the payload: SIGTERM goes to the other
   * members only, because the monitor would die on it and SIGKILL the payload before its grace period.
   */
  leaderIsMonitor?: boolean;
}

export interface LaunchContext {
  workDir: string;
  env: Record<string, string>;
}

/**
 * How a task's processes start through one task supervisor (thermos/task-supervisor.ts) living in
 * the isolation for the whole task, instead of one isolation per process.
 */
export interface SupervisedLaunch {
  /** The argv of one process as the supervisor execs it inside the isolation; throws when it cannot run there. */
  argv(proc: Process): string[];
  /** The command that starts the task supervisor inside the isolation. */
  supervisor(ctx: LaunchContext): LaunchSpec;
}

/** Turns a process into a command; isolation wraps here. `supervised`: the one-namespace-per-task way. */
export type Launcher = ((proc: Process, ctx: LaunchContext) => LaunchSpec) & {
  supervised?: SupervisedLaunch;
};

// Words made only of these characters mean the same to a shell and to a plain split on whitespace.
const PLAIN_WORD = /^[A-Za-z0-9_./=:,+@%-]+$/;

/**
 * `{file, args}` when the cmdline can be exec'd without a shell: whitespace-separated plain words
 * (no quotes, `$`, globs, redirections, `;`, …) whose first word is an absolute path. Otherwise null.
 */
export function directArgv(cmdline: string): { file: string; args: string[] } | null {
  const words = cmdline.trim().split(/\s+/);
  if (words.length === 0 || !words[0]!.startsWith('/')) return null;
  if (!words.every((w) => PLAIN_WORD.test(w))) return null;
  return { file: words[0]!, args: words.slice(1) };
}

/**
 * The plain (isolation `process`) launcher. Direct exec when possible: the process itself then
 * leads its group and gets our signals first-hand, and no shell sits between it and its exit code.
 * Any other cmdline (Aurora cmdlines are shell lines: `$VAR`, pipes, `&&`) runs under `/bin/sh -c`,
 * which Thermos does too (it uses bash); that needs a host /bin/sh, which the plain isolation has.
 */
export const plainLaunch: Launcher = (proc, ctx) => {
  const direct = directArgv(proc.cmdline);
  if (direct) return { ...direct, env: ctx.env, cwd: ctx.workDir };
  return { file: '/bin/sh', args: ['-c', proc.cmdline], env: ctx.env, cwd: ctx.workDir };
};
