/**
 * One namespace per task, not per process: a small supervisor (task-supervisor-source.ts, compiled
 * once) runs inside the task's PID namespace or sandbox for the task's whole life and forks + execs
 * each of its processes, so a process start costs about a bare spawn. This module compiles it, starts
 * it and speaks its frame protocol. Every frame is a u32 little-endian length of what follows, then:
 *
 *   agent → supervisor   'S' u32 id, u32 argc, u32 envc, then cwd, argv…, env… each NUL-terminated
 *                        'K' u32 id, u32 signal (TERM or KILL, to the run's whole process group)
 *                        'J' cgroup directory, NUL-terminated: the supervisor moves itself into it
 *                            (before any 'S'), so every process it forks is born inside; when it
 *                            cannot, it ends the task
 *   supervisor → agent   'R' 0, u32 own pid   ready
 *                        'P' u32 id, u32 pid   started (pid inside the namespace; it leads its group)
 *                        'F' u32 id, u32 errno, message   could not start
 *                        'O'/'E' u32 id, 0, bytes   stdout / stderr output
 *                        'X' u32 id, u32 wait status, ['L' when group members are left]   the leader exited
 *                        'G' u32 id, 0   the group of an exited leader has no member left
 *                        'C' u32 id, 0   the run is over, its output complete (after 'X', and 'G' if owed)
 *
 * Closing its stdin ends the task: it SIGKILLs everything left in the namespace and exits.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { isAbsolute, join } from 'node:path';
import { withDir } from 'tmp-promise';
import { run } from '../../lib/exec.js';
import { lineSplitter } from '../../lib/line-reader.js';
import type { LaunchSpec } from './cmdline.js';
import type { RunExit } from './run-process.js';
import { TASK_SUPERVISOR_C } from './task-supervisor-source.js';

/** The supervisor's one argument: it refuses to run anywhere but as pid 1 or 2 of a new PID namespace. */
export const SUPERVISOR_ARG = '--in-new-pid-namespace';

const SIGNALS = { TERM: 15, KILL: 9 } as const;

/** The largest event frame the supervisor writes (a 64 KiB output chunk and its head). */
const MAX_EVENT_FRAME = 65536 + 9;

/** The directory the compiled supervisor lives in: private to this user (it runs as the agent). */
function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(os.homedir(), '.cache');
  return join(base, 'mxc');
}

async function compile(): Promise<string> {
  const override = process.env.MXC_TASK_SUPERVISOR;
  if (override) {
    const ok =
      isAbsolute(override) &&
      (await lstat(override).then(
        (s) => s.isFile(),
        () => false,
      ));
    if (!ok) throw new Error(`MXC_TASK_SUPERVISOR=${override} is not an absolute path of a file`);
    return override;
  }
  const hash = createHash('sha256').update(TASK_SUPERVISOR_C).digest('hex').slice(0, 16);
  const dir = cacheDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // We run this binary (as root, often): a directory others may write to could hand us theirs.
  const st = await lstat(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0)
    throw new Error(`${dir} must be a directory of this user that no one else may write to`);
  const binary = join(dir, `task-supervisor-${hash}`);
  if (
    await lstat(binary).then(
      (b) => b.isFile() && b.uid === st.uid,
      () => false,
    )
  )
    return binary;
  // Built beside its final place (same file system), so the rename publishes it whole.
  return withDir(
    async ({ path: tmp }) => {
      await writeFile(join(tmp, 'task-supervisor.c'), TASK_SUPERVISOR_C);
      const out = join(tmp, 'task-supervisor');
      await run('cc', ['-O2', '-static', '-o', out, join(tmp, 'task-supervisor.c')], { timeoutMs: 60_000 });
      await chmod(out, 0o755);
      await rename(out, binary);
      return binary;
    },
    { tmpdir: dir, prefix: 'build-', unsafeCleanup: true },
  );
}

let compiled: Promise<string | null> | null = null;
let unusable: string | null = null;

/**
 * The task supervisor's path, compiled on first use (`cc -O2 -static`, about a second, once per
 * source version) or taken from MXC_TASK_SUPERVISOR. Null when it cannot be had (no C compiler or no
 * static libc): tasks then start each process in a namespace of its own, slower but the same.
 */
export function taskSupervisorBinary(): Promise<string | null> {
  compiled ??= compile().catch((err: Error) => {
    unusable = err.message;
    return null;
  });
  return compiled;
}

/** Why `taskSupervisorBinary()` gave null, for the log. */
export function taskSupervisorUnusable(): string | null {
  return unusable;
}

/** One run started through the supervisor. */
export interface SupervisedRun {
  /** How the run ended; `lingering`: members of its process group outlived it. */
  exited: Promise<RunExit & { lingering?: boolean }>;
}

/** What a run tells its starter, in order: its start (before any output), then its lines. */
export interface RunListener {
  /** The run runs, as `pid` inside the namespace. */
  onStart: (pid: number) => void;
  onLine: (stream: 'stdout' | 'stderr', line: string) => void;
}

interface RunState {
  file: string;
  onStart: (pid: number) => void;
  out: ReturnType<typeof lineSplitter>;
  err: ReturnType<typeof lineSplitter>;
  exited: (r: RunExit & { lingering?: boolean }) => void;
  groupEmpty: (() => void) | null;
  lingering: boolean;
  /** The supervisor reported its pid ('P'). */
  running: boolean;
  /** Reports the exit once the output is complete ('C'), or after DRAIN_MS when children hold the pipes. */
  finish: (() => void) | null;
}

/** How long to wait, after the leader exits, for its output to complete before reporting the exit. */
const DRAIN_MS = 100;

function waitStatus(st: number): RunExit {
  const sig = st & 0x7f;
  if (sig === 0) return { code: (st >> 8) & 0xff, signal: null };
  const name = (Object.entries(os.constants.signals).find(([, n]) => n === sig)?.[0] ??
    null) as NodeJS.Signals | null;
  return { code: 128 + sig, signal: name };
}

/**
 * A running task supervisor. `spec` runs it inside the isolation (bubblewrap, perhaps behind the
 * cgroup line); it is spawned detached, so its group leader's pid is what a restarted agent kills.
 */
export class TaskSupervisor {
  /** Host pid of the launcher's group leader (the isolation's monitor); null if it could not start. */
  readonly pid: number | null;
  /** Resolves once the supervisor (and with it the whole namespace) is gone. */
  readonly closed: Promise<void>;
  private readonly child: ReturnType<typeof spawn>;
  private readonly runs = new Map<number, RunState>();
  private readonly ids = new WeakMap<SupervisedRun, number>();
  private nextId = 1;
  private buf: Buffer = Buffer.alloc(0);
  private dead: string | null = null;
  private diagnostic: (line: string) => void;
  /** The supervisor said it is up ('R'). */
  private up = false;

  /** `onDiagnostic`: a stderr line of the supervisor or its launcher (bwrap's errors, say). */
  constructor(spec: LaunchSpec, onDiagnostic: (line: string) => void) {
    this.diagnostic = onDiagnostic;
    let closed!: () => void;
    this.closed = new Promise((r) => {
      closed = r;
    });
    this.child = spawn(spec.file, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      shell: false,
    });
    this.pid = this.child.pid ?? null;
    const diag = lineSplitter((line) => this.diagnostic(line));
    this.child.stderr!.on('data', (c: Buffer) => diag.write(c));
    this.child.stderr!.on('end', () => diag.end());
    this.child.stdout!.on('data', (c: Buffer) => this.onData(c));
    this.child.stdin!.on('error', () => {}); // EPIPE once it died: 'exit' reports that
    this.child.once('error', (err) => {
      if (this.child.pid === undefined) this.gone(`cannot start ${spec.file}: ${err.message}`, closed);
    });
    this.child.once('close', (code, signal) =>
      this.gone(`the task supervisor exited (${signal ?? `code ${code}`})`, closed),
    );
  }

  /** Whether it started and has not died: a pooled one is only handed out while this holds. */
  get alive(): boolean {
    return this.dead === null;
  }

  /** Whether the supervisor has said it is up (its namespace exists). */
  get ready(): boolean {
    return this.up;
  }

  /** From now on its diagnostics go to `onDiagnostic` (a pooled supervisor taken by a task). */
  adopt(onDiagnostic: (line: string) => void): void {
    this.diagnostic = onDiagnostic;
  }

  /**
   * Moves the supervisor into the cgroup `dir` (cgroup v2; it writes its own pid into
   * `cgroup.procs`), ahead of any run, so each process it forks is born there. When the move
   * fails the supervisor ends the task, saying why on its stderr.
   */
  joinCgroup(dir: string): void {
    if (this.dead) return;
    if (dir.includes('\0') || !isAbsolute(dir)) throw new Error(`bad cgroup directory ${dir}`);
    const body = Buffer.from(`${dir}\0`);
    const head = Buffer.alloc(5);
    head.writeUInt32LE(1 + body.length, 0);
    head.write('J', 4);
    this.child.stdin!.write(Buffer.concat([head, body]));
  }

  /** Starts `argv` (argv[0] an absolute path inside the isolation) in a new session and process group. */
  spawn(argv: string[], env: Record<string, string>, cwd: string, listener: RunListener): SupervisedRun {
    let exited!: (r: RunExit & { lingering?: boolean }) => void;
    const run: SupervisedRun = {
      exited: new Promise((r) => {
        exited = r;
      }),
    };
    const envList = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const strings = [cwd, ...argv, ...envList];
    const bad = strings.find((s) => s.includes('\0'));
    if (this.dead || bad !== undefined || !argv[0]?.startsWith('/')) {
      const why =
        this.dead ??
        (bad !== undefined
          ? 'an argument or variable holds a NUL byte'
          : `${argv[0]} is not an absolute path`);
      exited({ code: 127, signal: null, error: new Error(`cannot start ${argv[0]}: ${why}`) });
      return run;
    }
    const id = this.nextId++;
    this.ids.set(run, id);
    this.runs.set(id, {
      file: argv[0],
      onStart: listener.onStart,
      out: lineSplitter((l) => listener.onLine('stdout', l)),
      err: lineSplitter((l) => listener.onLine('stderr', l)),
      exited,
      groupEmpty: null,
      lingering: false,
      finish: null,
      running: false,
    });
    const body = Buffer.from(`${strings.join('\0')}\0`);
    const head = Buffer.alloc(17);
    head.writeUInt32LE(13 + body.length, 0);
    head.write('S', 4);
    head.writeUInt32LE(id, 5);
    head.writeUInt32LE(argv.length, 9);
    head.writeUInt32LE(envList.length, 13);
    this.child.stdin!.write(Buffer.concat([head, body]));
    return run;
  }

  /** Sends TERM or KILL to the whole process group of run `id` (also after its leader exited). */
  signal(run: SupervisedRun, signal: 'TERM' | 'KILL'): void {
    const id = this.idOf(run);
    if (id === null || this.dead) return;
    const f = Buffer.alloc(13);
    f.writeUInt32LE(9, 0);
    f.write('K', 4);
    f.writeUInt32LE(id, 5);
    f.writeUInt32LE(SIGNALS[signal], 9);
    this.child.stdin!.write(f);
  }

  /**
   * Stops what the run's leader left in its group: TERM, KILL after `graceMs` (0: KILL at once),
   * resolving once the group is empty. Rejects when members survive KILL for 5 s.
   */
  async terminateLeftovers(run: SupervisedRun, graceMs: number): Promise<'terminated' | 'killed'> {
    const id = this.idOf(run);
    const state = id === null ? undefined : this.runs.get(id);
    if (!state?.lingering) return 'terminated';
    const empty = new Promise<void>((r) => {
      state.groupEmpty = r;
    });
    const within = (ms: number) =>
      new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), ms);
        void empty.then(() => {
          clearTimeout(t);
          resolve(true);
        });
      });
    if (graceMs > 0) {
      this.signal(run, 'TERM');
      if (await within(graceMs)) return 'terminated';
    }
    this.signal(run, 'KILL');
    if (await within(5000)) return 'killed';
    throw new Error(`process group of run ${id} still has live members 5 s after SIGKILL`);
  }

  /** Ends the task: everything left in the namespace is killed; resolves once all is gone. */
  close(): Promise<void> {
    this.child.stdin!.end();
    return this.closed;
  }

  private idOf(run: SupervisedRun): number | null {
    return this.ids.get(run) ?? null;
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let at = 0;
    while (this.buf.length - at >= 4) {
      const len = this.buf.readUInt32LE(at);
      if (len < 9 || len > MAX_EVENT_FRAME) {
        // Not the supervisor speaking: stop listening to it and end the task's namespace.
        this.child.stdout!.removeAllListeners('data');
        this.buf = Buffer.alloc(0);
        try {
          if (this.pid !== null) process.kill(-this.pid, 'SIGKILL');
        } catch {} // already gone
        return;
      }
      if (this.buf.length - at < 4 + len) break;
      this.onFrame(this.buf.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    this.buf = at === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(at);
  }

  private onFrame(f: Buffer): void {
    const kind = String.fromCharCode(f[0]!);
    const id = f.readUInt32LE(1);
    const a = f.readUInt32LE(5);
    const data = f.subarray(9);
    if (kind === 'R') this.up = true;
    const r = this.runs.get(id);
    if (!r) return;
    switch (kind) {
      case 'P':
        r.running = true;
        r.onStart(a);
        break;
      case 'F':
        this.runs.delete(id);
        r.exited({ code: 127, signal: null, error: new Error(`cannot start ${r.file}: ${data.toString()}`) });
        break;
      case 'O':
        r.out.write(data);
        break;
      case 'E':
        r.err.write(data);
        break;
      case 'X': {
        r.lingering = data.length > 0;
        const result = { ...waitStatus(a), lingering: r.lingering };
        const timer = setTimeout(() => r.exited(result), DRAIN_MS);
        r.finish = () => {
          clearTimeout(timer);
          r.exited(result);
        };
        break;
      }
      case 'G':
        r.lingering = false;
        r.groupEmpty?.();
        break;
      case 'C':
        this.runs.delete(id);
        r.out.end();
        r.err.end();
        r.finish?.();
        break;
    }
  }

  private gone(why: string, closed: () => void): void {
    if (this.dead) return;
    this.dead = why;
    // The namespace died with it: every run in it is over.
    for (const r of this.runs.values()) {
      r.out.end();
      r.err.end();
      if (r.finish) r.finish();
      else if (r.running) r.exited({ code: 137, signal: 'SIGKILL' });
      else r.exited({ code: 127, signal: null, error: new Error(why) });
      r.groupEmpty?.();
    }
    this.runs.clear();
    closed();
  }
}
