/**
 * Process-group signalling for the supervisor: every run leads its own group (spawned detached),
 * so a whole tree is stopped with one signal. Liveness is read from /proc because zombies (not yet
 * reaped by whoever inherited them) still count as group members for kill(-pgid, 0).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Pids of the group's members that are still alive (zombies excluded). Linux only (/proc). */
export function liveGroupMembers(pgid: number): number[] {
  // Fast path: no member at all, not even a zombie.
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return [];
  }
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [pgid];
  }
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we were scanning
    }
    // The command name may contain spaces and parentheses; the fields after the last ')' do not.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') out.push(Number(entry));
  }
  return out;
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export interface SignalGroupOptions {
  /**
   * Do not signal the group leader itself, only the other members. For a leader that is a monitor
   * (bubblewrap with --die-with-parent): it would die on SIGTERM and take the payload down with
   * SIGKILL at once, robbing it of its grace period.
   */
  spareLeader?: boolean;
}

/** Sends `signal` to every member of the group (atomically with kill(-pgid) unless the leader is spared). */
export function signalGroup(pgid: number, signal: NodeJS.Signals, opts: SignalGroupOptions = {}): void {
  if (!opts.spareLeader || signal === 'SIGKILL') {
    kill(-pgid, signal);
    return;
  }
  for (const pid of liveGroupMembers(pgid)) if (pid !== pgid) kill(pid, signal);
}

const POLL_MS = 25;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves true once the group has no live member, false when `timeoutMs` passes first. */
export async function waitGroupEmpty(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (liveGroupMembers(pgid).length === 0) return true;
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(POLL_MS, Math.max(1, deadline - Date.now())));
  }
}

export interface TerminateOptions extends SignalGroupOptions {
  /** SIGTERM → SIGKILL delay; 0 sends SIGKILL straight away. */
  graceMs: number;
}

/**
 * SIGTERM to the group, SIGKILL to whatever is left after the grace period, then waits until no
 * member is alive. Resolves how it ended; rejects only if members survive SIGKILL for 5 s
 * (uninterruptible sleep), which the caller should report.
 */
export async function terminateGroup(pgid: number, opts: TerminateOptions): Promise<'terminated' | 'killed'> {
  if (opts.graceMs > 0) {
    signalGroup(pgid, 'SIGTERM', opts);
    if (await waitGroupEmpty(pgid, opts.graceMs)) return 'terminated';
  }
  signalGroup(pgid, 'SIGKILL');
  if (await waitGroupEmpty(pgid, 5000)) return 'killed';
  throw new Error(
    `process group ${pgid} still has live members 5 s after SIGKILL: ${liveGroupMembers(pgid).join(', ')}`,
  );
}
