/**
 * The workloads this agent runs, each from assignment to end: realises its closure (or only roots it
 * when already realised here), starts it with its health check, reports its status, stops it and cleans up.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { closureOf } from '../lib/nix.js';
import {
  type AgentWorkloadStatus,
  type LogLine,
  MAX_RUNNING_PER_NODE,
  type WorkloadAssignment,
  type WorkloadStatus,
} from '../spec/messages.js';
import { removeWorkloadCgroup } from './cgroups.js';
import type { CoordinatorConnection } from './connection.js';
import { addIndirectRoots, prepareWorkloadRoot, removeWorkloadRoots } from './gc.js';
import { HealthChecker, healthCheckPort } from './health.js';
import { WorkloadLogStore } from './logs/log-store.js';
import type { AgentOptions } from './options.js';
import { RealiseError, type RealiseProgress, realiseClosure } from './realise.js';
import type { Running } from './running.js';
import { removeSecrets } from './secrets.js';
import type { TaskSnapshot } from './thermos/process-executor.js';
import type { SupervisorPool } from './thermos/supervisor-pool.js';
import {
  freePort,
  launchWorkload,
  prepareLaunch,
  processSupervisorPool,
  workloadEnv,
} from './workload-launch.js';

export type { Running } from './running.js';

export interface WorkloadRunsOptions {
  agent: AgentOptions;
  log: Logger;
  conn: Pick<
    CoordinatorConnection,
    | 'send'
    | 'sendStorePaths'
    | 'queueLog'
    | 'flushLogs'
    | 'cache'
    | 'sessions'
    | 'whenJoined'
    | 'onNewSession'
  >;
  /** `<cgroup2>/mxc` when task limits are enforced, else null (known once the agent started). */
  cgroupRoot: () => string | null;
  /** Collects garbage now if the store runs short of space. */
  gcIfLow: () => void;
}

/**
 * How long an ended workload's last report is kept, and how many are: each hello lists them and each
 * welcome sends them again, so an end the coordinator missed (it was away, or died before applying it)
 * is not taken for a loss and run again. Sent again to a coordinator that has it, it changes nothing.
 */
const ENDED_KEPT_MS = 30 * 60_000;
const MAX_ENDED_KEPT = 1000;

export class WorkloadRuns {
  private readonly running = new Map<string, Running>();
  /** The last report of workloads that ended here, oldest first (see ENDED_KEPT_MS). */
  private readonly ended = new Map<string, { at: number; report: AgentWorkloadStatus }>();
  /**
   * Closure roots this agent realised (and Nix verified) since it started. Starting them again skips
   * nix: only the GC roots are added. Forgotten when the agent collects garbage.
   */
  private readonly realised = new Set<string>();
  /** Full closures (`nix-store -qR`) of root sets realised here, by their sorted roots; forgotten with them. */
  private readonly closures = new Map<string, string[]>();
  private readonly opts: AgentOptions;
  private readonly log: Logger;
  /** Idle supervisors for `process` tasks; null until started, or when tasks cannot have them. */
  private pool: SupervisorPool | null = null;
  private poolClosed = false;

  constructor(private readonly w: WorkloadRunsOptions) {
    this.opts = w.agent;
    this.log = w.log;
  }

  /** Starts the pool of idle task supervisors (once the supervisor binary is built). */
  async startPool(): Promise<void> {
    const pool = await processSupervisorPool({
      storeRoot: this.opts.storeRoot,
      size: this.opts.supervisorPool ?? 1,
      onDiagnostic: (line) => this.log.warn({ line }, 'idle task supervisor'),
    });
    if (this.poolClosed) await pool?.close();
    else this.pool = pool;
  }

  /** Ends the idle task supervisors (agent shutdown); tasks started later create their own. */
  async closePool(): Promise<void> {
    this.poolClosed = true;
    const pool = this.pool;
    this.pool = null;
    await pool?.close();
  }

  /** Forgets what was realised here (the store was collected): the next start asks nix again. */
  forgetRealised(): void {
    this.realised.clear();
    this.closures.clear();
  }

  /** The full closure of `roots`, asked of nix once per root set while nothing is collected. */
  private async fullClosureOf(roots: string[]): Promise<string[]> {
    const key = closureKey(roots);
    const known = this.closures.get(key);
    if (known) return known;
    const closure = await closureOf(roots, { store: this.opts.storeRoot });
    this.closures.set(key, closure);
    return closure;
  }

  has(id: string): boolean {
    return this.running.has(id);
  }

  /** Whether `id` ended here lately: a start for it is answered with its end, not run again. */
  hasEnded(id: string): boolean {
    this.pruneEnded();
    return this.ended.has(id);
  }

  /** Sends the last report of every workload that ended lately again (after a welcome). */
  reportEnded(): void {
    this.pruneEnded();
    for (const { report } of this.ended.values()) this.w.conn.send(report);
  }

  /** Sends one ended workload's last report again. */
  reportEndOf(id: string): void {
    const e = this.ended.get(id);
    if (e) this.w.conn.send(e.report);
  }

  private pruneEnded(now = Date.now()): void {
    for (const [id, e] of this.ended) {
      if (now - e.at < ENDED_KEPT_MS && this.ended.size <= MAX_ENDED_KEPT) break;
      this.ended.delete(id);
    }
  }

  ids(): IterableIterator<string> {
    return this.running.keys();
  }

  /** What runs now, and what ended lately (stopped or failed), as the hello reports it. */
  statuses(): { workload_id: string; status: WorkloadStatus }[] {
    this.pruneEnded();
    const out = [...this.running.entries()].map(([id, r]) => ({ workload_id: id, status: r.status }));
    // Newest ends first when the hello has no room for all of them.
    for (const [id, e] of [...this.ended].reverse()) {
      if (out.length >= MAX_RUNNING_PER_NODE) break;
      if (!this.running.has(id)) out.push({ workload_id: id, status: e.report.status });
    }
    return out;
  }

  report(id: string, reason?: string, processes?: TaskSnapshot['processes']): void {
    const r = this.running.get(id);
    if (!r) return;
    // An ended workload's last lines (exit codes included) reach the coordinator before its end does, so
    // a follower that stops at the end has seen them all.
    const ended = r.status === 'stopped' || r.status === 'failed';
    if (ended) this.w.conn.flushLogs();
    const report: AgentWorkloadStatus = {
      type: 'workload_status',
      workload_id: id,
      status: r.status,
      reason,
      ports: r.ports,
      fetched: r.fetched,
      health: r.health,
      processes: processes?.map(({ pid: _pid, ...p }) => p),
    };
    this.w.conn.send(report);
    if (ended) {
      this.ended.delete(id);
      this.ended.set(id, { at: Date.now(), report });
      this.pruneEnded();
    }
  }

  /** Whether every root was realised by this agent before and is still in its store. */
  private async alreadyRealised(roots: string[]): Promise<boolean> {
    if (!roots.every((p) => this.realised.has(p))) return false;
    const base = this.opts.storeRoot ?? '/';
    const present = await Promise.all(
      roots.map((p) =>
        stat(join(base, p)).then(
          () => true,
          () => false,
        ),
      ),
    );
    return present.every(Boolean);
  }

  /**
   * Runs the workload unless it already runs here: a second `start` for the same id (a duplicate
   * message, a reconnect racing a start) only re-reports its status. The entry is registered before
   * the first await, so no interleaving can run the task twice.
   */
  async start(a: WorkloadAssignment): Promise<void> {
    if (this.running.has(a.id)) {
      this.report(a.id);
      return;
    }
    const dir = join(this.opts.stateDir, 'workloads', a.id);
    const workDir = join(dir, 'work');
    const logs = new WorkloadLogStore(join(dir, 'logs'));
    const entry: Running = {
      assignment: a,
      status: 'starting',
      stop: async () => {},
      logs,
      ports: {},
      stopping: false,
    };
    this.running.set(a.id, entry);
    const system = (line: string) => {
      const l: LogLine = { process: 'mxc', stream: 'system', run: 0, ts: Date.now(), line };
      logs.append(l);
      this.w.conn.queueLog(a.id, l);
    };
    const abort = new AbortController();
    entry.stop = async () => abort.abort();
    const onLog = (l: LogLine) => {
      logs.append(l);
      this.w.conn.queueLog(a.id, l);
    };
    const workReady = mkdir(workDir, { recursive: true });
    const closure = a.spec.mxc.closure;
    const warmCheck = closure.length ? this.alreadyRealised(closure) : Promise.resolve(false);
    const prepare = () =>
      prepareLaunch(entry, {
        agent: this.opts,
        cgroupRoot: this.w.cgroupRoot(),
        workDir,
        onLog,
        fullClosure: () => this.fullClosureOf(closure),
        pool: this.pool,
      });
    // A plain task's namespace comes up while its closure is checked and rooted (its launcher needs
    // nothing of the closure), so a warm start finds the task supervisor running. A sandbox mounts
    // every path of the closure: it comes up early only when they are all known to be here.
    const prepared =
      a.spec.mxc.isolation === 'process'
        ? workReady.then(prepare)
        : a.spec.mxc.isolation === 'sandbox' && this.closures.has(closureKey(closure))
          ? Promise.all([workReady, warmCheck]).then(([, warm]) => (warm ? prepare() : null))
          : null;
    prepared?.catch(() => {}); // its failure fails the launch below
    let launched = false;
    try {
      const cache = this.w.conn.cache;
      system(`realising ${closure.length} store path(s)${cache ? ` from ${cache.url}` : ''}`);
      const t0 = Date.now();
      // Independent file work side by side: each await is a trip through the thread pool.
      // The assignment is kept beside the workload for people to read; nothing waits for it.
      void workReady
        .then(() => writeFile(join(dir, 'assignment.json'), JSON.stringify(a)))
        .catch((err: Error) => system(`could not write assignment.json: ${err.message}`));
      const [gcRoot, warm] = await Promise.all([
        closure.length ? prepareWorkloadRoot(this.opts.stateDir, a.id) : undefined,
        warmCheck,
        workReady,
      ]);
      const fetched =
        warm && gcRoot !== undefined
          ? await addIndirectRoots(gcRoot, closure, this.opts.storeRoot).then(() => ({
              pathsDone: 0,
              pathsTotal: 0,
              bytesDone: 0,
              bytesTotal: 0,
            }))
          : await this.realiseFromCoordinator(closure, gcRoot, dir, abort.signal, system);
      for (const p of closure) this.realised.add(p);
      system(
        `closure ready in ${Date.now() - t0} ms` +
          (fetched.pathsTotal ? `: fetched ${progressText(fetched)}` : ': every path already in the store'),
      );
      entry.fetched = { paths: fetched.pathsDone, bytes: fetched.bytesDone };
      // Computed once: the coordinator learns what the store gained, isolated launches expose all of it.
      if (fetched.pathsDone > 0) this.closures.delete(closureKey(closure));
      const fullClosure =
        fetched.pathsDone > 0 || a.spec.mxc.isolation !== 'process'
          ? await this.fullClosureOf(closure)
          : undefined;
      if (fetched.pathsDone > 0) this.w.conn.sendStorePaths(fullClosure!, []);
      if (entry.stopping) throw new Error('stopped before start');

      for (const port of a.spec.mxc.ports) entry.ports[port] = await freePort();
      // Resolved before anything starts, so a check naming an undeclared port fails the start clearly.
      const healthPort = a.spec.health_check_config ? healthCheckPort(a.spec, entry.ports) : null;
      const env = await workloadEnv(a, workDir, entry.ports, this.opts.secretsDir);
      // The processes' first states go out with the running report below, in one message, not in
      // a `starting` report of their own just before it: held until then, reported as they come after.
      let holding = true;
      let firstStates: TaskSnapshot['processes'] | undefined;
      const { done } = await launchWorkload(entry, {
        agent: this.opts,
        cgroupRoot: this.w.cgroupRoot(),
        dir,
        workDir,
        env,
        fullClosure,
        prepared,
        onLog,
        onChange: (processes) => {
          if (holding) firstStates = processes;
          else this.report(a.id, undefined, processes);
        },
      });
      launched = true;
      entry.status = 'running';
      if (a.spec.health_check_config && healthPort !== null) {
        entry.health = 'unknown';
        entry.checker = this.healthChecker(a.id, entry, a.spec.health_check_config, healthPort, system);
      }
      holding = false;
      this.report(a.id, 'processes started', firstStates);
      entry.checker?.start();
      const result = await done;
      await this.finish(a.id, result);
    } catch (err) {
      if (!launched)
        await prepared?.then(
          (p) => p?.supervisor?.close(),
          () => {},
        );
      const why = err instanceof RealiseError ? err.message : `could not start: ${(err as Error).message}`;
      const reason = entry.stopping ? 'stopped' : why;
      system(reason);
      entry.status = entry.stopping ? 'stopped' : 'failed';
      this.report(a.id, reason);
      await this.cleanup(a.id);
    }
  }

  /**
   * Realises the closure from the cache of the coordinator joined now. When its session ended meanwhile
   * (the coordinator killed or frozen mid-fetch, its cache with it), the fetch is tried once more from
   * the cache of the next one joined (within a minute): the workload failed for good otherwise, and a
   * rolling update counted it as a failed instance of the new version. A fetch still going when the
   * agent joins another session is given up at once and begun again from that session's cache: from a
   * frozen cache, nix waited out its stalled-download timeout (5 minutes) before failing.
   */
  private async realiseFromCoordinator(
    closure: string[],
    gcRoot: string | undefined,
    dir: string,
    signal: AbortSignal,
    system: (line: string) => void,
  ) {
    const realise = (attempt: AbortSignal) =>
      realiseClosure({
        paths: closure,
        storeRoot: this.opts.storeRoot,
        stateDir: this.opts.stateDir,
        cache: this.w.conn.cache,
        gcRoot,
        scratchDir: dir,
        signal: attempt,
        onLine: (line) => {
          if (line.startsWith('copying path') || line.startsWith('warning:')) system(line);
        },
        onProgress: (p, finished) => {
          if (finished) system(`fetched ${finished} (${progressText(p)})`);
        },
      });
    const session = this.w.conn.sessions;
    const url = this.w.conn.cache?.url;
    const first = new AbortController();
    const giveUp = () => first.abort();
    signal.addEventListener('abort', giveUp, { once: true });
    let moved = false;
    const unsubscribe = this.w.conn.onNewSession(() => {
      moved = true;
      first.abort();
    });
    try {
      return await realise(first.signal);
    } catch (err) {
      if (signal.aborted) throw err;
      if (moved) {
        system(
          `fetching from ${url ?? 'the cache'} was given up: the agent lost that coordinator meanwhile; trying again from ${this.w.conn.cache?.url ?? 'the cache'}`,
        );
        return realise(signal);
      }
      if (!(err instanceof RealiseError)) throw err;
      const joined = await this.w.conn.whenJoined(60_000);
      if (!joined || this.w.conn.sessions === session || signal.aborted) throw err;
      system(
        `fetching from ${url ?? 'the cache'} failed: the agent lost that coordinator meanwhile; trying again from ${this.w.conn.cache?.url ?? 'the cache'}`,
      );
      return realise(signal);
    } finally {
      unsubscribe();
      signal.removeEventListener('abort', giveUp);
    }
  }

  /** The workload's health checker: reports each verdict change, and fails the workload when unhealthy. */
  private healthChecker(
    id: string,
    entry: Running,
    config: NonNullable<WorkloadAssignment['spec']['health_check_config']>,
    port: number,
    system: (line: string) => void,
  ): HealthChecker {
    return new HealthChecker({
      config,
      port,
      onLog: system,
      onChange: (health) => {
        entry.health = health;
        this.report(id);
      },
      onUnhealthy: (reason) => {
        if (entry.stopping) return;
        entry.healthFailure = reason;
        void entry.stop(reason);
      },
    });
  }

  private async finish(id: string, result: TaskSnapshot) {
    const r = this.running.get(id);
    if (!r) return;
    r.checker?.stop();
    r.status =
      r.healthFailure !== undefined
        ? 'failed'
        : r.stopping || result.status === 'stopped'
          ? 'stopped'
          : result.status === 'success'
            ? 'stopped'
            : 'failed';
    const reason =
      r.healthFailure ??
      (result.status === 'success'
        ? 'task finished successfully'
        : (result.reason ?? `task ${result.status}`));
    this.report(id, reason, result.processes);
    await this.cleanup(id);
  }

  private async cleanup(id: string) {
    const r = this.running.get(id);
    r?.checker?.stop();
    this.w.conn.flushLogs();
    this.running.delete(id);
    await r?.logs.close();
    await rm(join(this.opts.stateDir, 'workloads', id, 'pids.json'), { force: true });
    await removeSecrets(join(this.opts.stateDir, 'workloads', id, 'work'));
    if (r?.cgroup)
      await removeWorkloadCgroup(r.cgroup).catch((err) => this.log.warn({ err }, 'cgroup removal failed'));
    // The closure is collectable from now on; collect at once if space is short.
    await removeWorkloadRoots(this.opts.stateDir, id);
    this.w.gcIfLow();
  }

  async stop(id: string, reason: string): Promise<void> {
    const r = this.running.get(id);
    if (!r || r.stopping) return;
    r.stopping = true;
    r.checker?.stop(); // probes of a stopping workload would only fail
    if (r.status === 'running') {
      r.status = 'stopping';
      this.report(id, reason);
    }
    await r.stop(reason);
  }
}

/** The key of a root set in `WorkloadRuns.closures`. */
function closureKey(roots: string[]): string {
  return [...roots].sort().join('\n');
}

function progressText(p: RealiseProgress): string {
  const mib = (n: number) => (n / 1048576).toFixed(2);
  return `${p.pathsDone}/${p.pathsTotal} paths, ${mib(p.bytesDone)}/${mib(p.bytesTotal)} MiB`;
}
