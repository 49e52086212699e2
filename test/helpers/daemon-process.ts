/**
 * Runs mxc's daemons as real processes (the built CLI, or any command line such as a NixOS unit's
 * ExecStart) and follows their JSON log lines: wait for a message, read the coordinator's URL.
 */
import { execa, type ResultPromise } from 'execa';
import { repoPath } from '../../scheduler/paths.js';

export interface DaemonProcess {
  proc: ResultPromise;
  /** Every log line so far (JSON objects; other lines as { raw }). */
  lines: Record<string, unknown>[];
  /** Resolves with the first log line matching `pred` (or rejects when the process exits or time runs out). */
  waitFor(
    pred: (l: Record<string, unknown>) => boolean,
    what: string,
    ms?: number,
  ): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Starts `file args…` with `env` added to a clean environment (PATH and HOME kept). */
export function startDaemon(
  file: string,
  args: string[],
  env: Record<string, string>,
  opts: { cwd?: string } = {},
): DaemonProcess {
  const proc = execa(file, args, {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      MXC_LOG_FORMAT: 'json',
      ...env,
    },
    extendEnv: false,
    reject: false,
    cwd: opts.cwd ?? repoPath(),
    stdin: 'ignore',
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let exited = false;
  let buf = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(line));
      } catch {
        lines.push({ raw: line });
      }
      nl = buf.indexOf('\n');
    }
    for (const w of waiters) w();
  });
  void proc.then(() => {
    exited = true;
    for (const w of waiters) w();
  });
  return {
    proc,
    lines,
    waitFor(pred, what, ms = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = lines.find(pred);
          if (hit) return done(() => resolve(hit));
          if (exited)
            return done(() =>
              reject(
                new Error(
                  `${file} exited before ${what}:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`,
                ),
              ),
            );
        };
        const timer = setTimeout(
          () =>
            done(() =>
              reject(
                new Error(`no ${what} within ${ms} ms:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`),
              ),
            ),
          ms,
        );
        const done = (f: () => void) => {
          clearTimeout(timer);
          const i = waiters.indexOf(check);
          if (i >= 0) waiters.splice(i, 1);
          f();
        };
        waiters.push(check);
        check();
      });
    },
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await proc;
      clearTimeout(t);
    },
  };
}

/** The URL a coordinator logged when it started listening. */
export async function listeningUrl(d: DaemonProcess): Promise<string> {
  const l = await d.waitFor((l) => l.msg === 'coordinator listening', 'coordinator listening');
  return l.url as string;
}

/** The built CLI, as a user runs it. */
export const MXC_BIN = repoPath('bin', 'mxc.js');

/** Splits a systemd command line (whitespace, '…' and "…" quoting, backslash escapes). */
export function splitExecStart(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unbalanced quote in ExecStart: ${line}`);
      cur += line.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}
