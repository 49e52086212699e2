/**
 * The agent daemon: joins the coordinator over a WebSocket (reconnecting with backoff and jitter),
 * heartbeats, and for each assigned workload realises its closure, runs its task (plain, sandboxed or
 * in a microVM), keeps and streams its logs and reports its status. Processes keep running while the
 * coordinator is away; on reconnect the agent reports what it runs and the coordinator reconciles.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { closureOf } from '../compiler/nix.js';
import {
  CoordinatorMessage,
  type LogLine,
  type WorkloadAssignment,
  type WorkloadStatus,
} from '../spec/messages.js';
import { detectCapabilities, detectResources } from './capabilities.js';
import { cgroupLaunch, createWorkloadCgroup, prepareCgroupRoot, removeWorkloadCgroup } from './cgroups.js';
import { addIndirectRoots, prepareWorkloadRoot, removeStaleRoots, removeWorkloadRoots } from './gc.js';
import { type Health, HealthChecker, healthCheckPort } from './health.js';
import { Housekeeping } from './housekeeping.js';
import { WorkloadLogStore } from './logs/log-store.js';
import { stopOrphans, writePids } from './orphans.js';
import { type CacheTrust, initStore, RealiseError, type RealiseProgress, realiseClosure } from './realise.js';
import { bubblewrapAvailable, sandboxLaunch, storeViewLaunch } from './sandbox.js';
import { provideSecrets, removeSecrets } from './secrets.js';
import { listStorePaths } from './store-report.js';
import { plainLaunch } from './supervisor/cmdline.js';
import { TaskRunner, type TaskSnapshot } from './supervisor/task-runner.js';

export const AGENT_VERSION = '0.1.0';

export interface AgentOptions {
  coordinator: string;
  token?: string;
  name?: string;
  cpu?: number;
  memoryMb?: number;
  stateDir: string;
  storeRoot?: string;
  attributes?: Record<string, string>;
  logger: Logger;
  gracePeriodMs?: number;
  /** One file per secret, named as jobs reference them (`mxc.secrets`). */
  secretsDir?: string;
  /** Hooks for the microVM runner (set by the microVM module when present). */
  microvm?: MicroVmSupport;
  /**
   * The cache key to trust (`name:base64`), pinned out of band. Unset: the key the coordinator
   * serves at /api/cache/key (trust on first use of the connection).
   */
  cachePublicKey?: string;
  /**
   * Garbage-collect the store when its filesystem has less free space than this (MiB), checked
   * periodically and after each workload ends. Default: 1024 with `storeRoot` (the agent's own
   * store), 0 (never) on the host store, whose other users the agent does not know.
   */
  gcMinFreeMb?: number;
  /** How long an ended workload's logs are kept (ms); default 7 days. */
  logRetentionMs?: number;
  /** How often the housekeeping (low-space GC, log pruning) runs (ms); default 60 s. */
  housekeepingIntervalMs?: number;
  /** Enforce task memory/cpu limits with cgroup v2 when usable (default true). */
  cgroups?: boolean;
}

export const DEFAULT_LOG_RETENTION_MS = 7 * 24 * 3600_000;

/** What the agent needs from the microVM module; kept as an interface so the daemon does not depend on QEMU. */
export interface MicroVmSupport {
  detect(): Promise<{ qemu: boolean; kvm: boolean }>;
  run(args: {
    assignment: WorkloadAssignment;
    workDir: string;
    storeDir: string;
    closure: string[];
    env: Record<string, string>;
    ports: { name: string; hostPort: number; guestPort: number }[];
    onLog: (l: LogLine) => void;
    gracePeriodMs: number;
  }): Promise<{ done: Promise<TaskSnapshot>; stop(): Promise<unknown> }>;
}

interface Running {
  assignment: WorkloadAssignment;
  status: WorkloadStatus;
  stop: (reason: string) => Promise<unknown>;
  logs: WorkloadLogStore;
  ports: Record<string, number>;
  stopping: boolean;
  /** The workload's cgroup directory, when limits are enforced. */
  cgroup?: string;
  /** What realising its closure fetched from the cache. */
  fetched?: { paths: number; bytes: number };
  /** The HTTP health check, for jobs with a health_check_config, and its verdict. */
  checker?: HealthChecker;
  health?: Health;
  /** Set when the health check failed the workload: it ends `failed` with this reason. */
  healthFailure?: string;
}

export class Agent {
  private ws: WebSocket | null = null;
  private readonly running = new Map<string, Running>();
  /**
   * Closure roots this agent realised (and Nix verified) since it started. Starting them again skips
   * nix: only the GC roots are added. Forgotten when the agent collects garbage.
   */
  private readonly realised = new Set<string>();
  private heartbeat: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;
  private cache: CacheTrust | null = null;
  private pendingLogs = new Map<string, LogLine[]>();
  private logFlush: NodeJS.Timeout | null = null;
  private housekeeping: Housekeeping | null = null;
  /** `<cgroup2>/mxc` when task limits are enforced, else null. */
  private cgroupRoot: string | null = null;
  nodeId: string | null = null;
  readonly name: string;
  private readonly log: Logger;
  private connectedOnce: (() => void) | null = null;
  /** Resolves once the agent has been welcomed the first time. */
  readonly ready: Promise<void>;

  constructor(readonly opts: AgentOptions) {
    this.name = opts.name ?? os.hostname();
    this.log = opts.logger.child({ agent: this.name });
    this.ready = new Promise((r) => {
      this.connectedOnce = r;
    });
  }

  async start(): Promise<void> {
    await mkdir(join(this.opts.stateDir, 'workloads'), { recursive: true });
    // Workloads of a previous agent run: their supervisor is gone and their output pipes with it, so
    // stop what is left of them. The coordinator hears `running: []` and replaces them.
    for (const o of await stopOrphans(join(this.opts.stateDir, 'workloads'))) {
      this.log.warn(o, 'stopped an orphaned process group from a previous agent run');
    }
    await removeStaleRoots(this.opts.stateDir);
    if (this.opts.storeRoot) await initStore(this.opts.storeRoot);
    if (this.opts.cgroups !== false) this.cgroupRoot = await prepareCgroupRoot();
    this.housekeeping = new Housekeeping({
      stateDir: this.opts.stateDir,
      storeRoot: this.opts.storeRoot,
      gcMinFreeMb: this.opts.gcMinFreeMb ?? (this.opts.storeRoot ? 1024 : 0),
      logRetentionMs: this.opts.logRetentionMs ?? DEFAULT_LOG_RETENTION_MS,
      live: () => this.running.keys(),
      onCollected: (r) => {
        this.realised.clear();
        this.send({ type: 'store_paths', added: [], removed: r.paths });
      },
      logger: this.log,
    });
    this.housekeeping.start(this.opts.housekeepingIntervalMs ?? 60_000);
    this.connect();
  }

  private wsUrl() {
    const u = new URL(this.opts.coordinator);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = '/api/agent/ws';
    return u.toString();
  }

  private connect() {
    if (this.closed) return;
    const ws = new WebSocket(this.wsUrl(), {
      headers: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
      handshakeTimeout: 10_000,
    });
    this.ws = ws;
    ws.on('open', () => {
      this.onOpen(ws).catch((err) => {
        this.log.error({ err }, 'could not introduce the agent to the coordinator; reconnecting');
        ws.close(1011, 'hello failed');
      });
    });
    ws.on('message', (raw) => {
      this.onMessage(raw.toString()).catch((err) =>
        this.log.error({ err }, 'handling a coordinator message failed'),
      );
    });
    ws.on('close', (code, reason) => {
      if (this.ws === ws) this.ws = null;
      if (this.heartbeat) clearInterval(this.heartbeat);
      this.heartbeat = null;
      if (code === 4401)
        this.log.error('the coordinator refused the agent token; check --token / MXC_AGENT_TOKEN');
      if (!this.closed) {
        this.log.warn({ code, reason: reason.toString() }, 'disconnected from coordinator; reconnecting');
        this.scheduleReconnect();
      }
    });
    ws.on('error', (err) => this.log.debug({ err }, 'coordinator connection error'));
  }

  private scheduleReconnect() {
    if (this.reconnectTimer || this.closed) return;
    // Exponential backoff with full jitter, capped at 10 s.
    const base = Math.min(10_000, 250 * 2 ** this.attempt++);
    const delay = Math.random() * base;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private async onOpen(ws: WebSocket) {
    const [resources, capabilities] = await Promise.all([
      detectResources(this.opts.stateDir, { cpu: this.opts.cpu, memory_mb: this.opts.memoryMb }),
      detectCapabilities({
        attributes: this.opts.attributes,
        bubblewrap: bubblewrapAvailable,
        hypervisor: this.opts.microvm?.detect,
        cgroups: this.cgroupRoot !== null,
      }),
    ]);
    await this.refreshCacheTrust();
    const storePaths = await listStorePaths(this.opts.storeRoot);
    ws.send(
      JSON.stringify({
        type: 'hello',
        name: this.name,
        version: AGENT_VERSION,
        resources,
        capabilities,
        running: [...this.running.entries()].map(([id, r]) => ({ workload_id: id, status: r.status })),
        store_paths: storePaths,
      }),
    );
  }

  /** Learns the coordinator's cache key; the agent trusts that key and nothing else. */
  private async refreshCacheTrust() {
    try {
      const res = await fetch(new URL('/api/cache/key', this.opts.coordinator), {
        headers: this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {},
      });
      if (!res.ok) return;
      const body = (await res.json()) as { data: { public_key: string } };
      let publicKey = body.data.public_key;
      if (this.opts.cachePublicKey && this.opts.cachePublicKey !== publicKey) {
        this.log.warn(
          { served: publicKey, pinned: this.opts.cachePublicKey },
          'the coordinator serves a cache key other than the pinned one; trusting only the pinned key',
        );
        publicKey = this.opts.cachePublicKey;
      }
      const url = new URL('/cache', this.opts.coordinator);
      let netrcFile: string | undefined;
      if (this.opts.token) {
        netrcFile = join(this.opts.stateDir, 'netrc');
        await writeFile(netrcFile, `machine ${url.hostname} login mxc password ${this.opts.token}\n`, {
          mode: 0o600,
        });
      }
      this.cache = { url: url.toString(), publicKey, netrcFile };
    } catch (err) {
      this.log.debug({ err }, 'no cache key from the coordinator');
    }
  }

  private send(msg: unknown) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private async onMessage(raw: string) {
    let msg: CoordinatorMessage;
    try {
      msg = CoordinatorMessage.parse(JSON.parse(raw));
    } catch (err) {
      this.log.error({ err }, 'unreadable message from coordinator');
      return;
    }
    switch (msg.type) {
      case 'welcome':
        this.nodeId = msg.node_id;
        this.attempt = 0;
        if (this.heartbeat) clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => this.send({ type: 'heartbeat' }), msg.heartbeat_interval_ms);
        this.log.info({ node: msg.node_id }, 'joined coordinator');
        this.connectedOnce?.();
        return;
      case 'start':
        if (this.running.has(msg.workload.id)) {
          this.report(msg.workload.id);
          return;
        }
        void this.startWorkload(msg.workload).catch((err) => this.log.error({ err }, 'start failed'));
        return;
      case 'stop': {
        const r = this.running.get(msg.workload_id);
        if (!r) {
          this.send({
            type: 'workload_status',
            workload_id: msg.workload_id,
            status: 'stopped',
            reason: 'not running on this agent',
          });
          return;
        }
        this.stopWorkload(msg.workload_id, msg.reason ?? 'stop requested').catch((err) =>
          this.log.error({ err, workload: msg.workload_id }, 'stopping a workload failed'),
        );
        return;
      }
      case 'prewarm':
        void this.prewarm(msg.job_id, msg.paths).catch((err) =>
          this.log.warn({ err, job: msg.job_id }, 'pre-warm failed'),
        );
        return;
      case 'error':
        this.log.error({ code: msg.code }, msg.message);
        return;
    }
  }

  private report(id: string, reason?: string, processes?: TaskSnapshot['processes']) {
    const r = this.running.get(id);
    if (!r) return;
    this.send({
      type: 'workload_status',
      workload_id: id,
      status: r.status,
      reason,
      ports: r.ports,
      fetched: r.fetched,
      health: r.health,
      processes: processes?.map(({ pid: _pid, ...p }) => p),
    });
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
   * Realises a closure ahead of a rollout (the coordinator's pre-warm), rooted under
   * gcroots/prewarm-<job> until the next pre-warm of that job, and reports what the store gained.
   */
  private async prewarm(jobId: string, paths: string[]) {
    const scratchDir = join(this.opts.stateDir, 'prewarm');
    await mkdir(scratchDir, { recursive: true });
    const fetched = await realiseClosure({
      paths,
      storeRoot: this.opts.storeRoot,
      cache: this.cache,
      gcRoot: await prepareWorkloadRoot(this.opts.stateDir, `prewarm-${jobId}`),
      scratchDir,
    });
    this.log.info(
      { job: jobId, paths: fetched.pathsTotal, bytes: fetched.bytesTotal },
      'pre-warmed a closure',
    );
    this.send({ type: 'store_paths', added: paths, removed: [] });
  }

  private queueLog(id: string, line: LogLine) {
    const q = this.pendingLogs.get(id) ?? [];
    this.pendingLogs.set(id, q);
    q.push(line);
    if (q.length >= 5000) this.flushLogs();
    if (!this.logFlush) this.logFlush = setTimeout(() => this.flushLogs(), 100);
  }

  private flushLogs() {
    if (this.logFlush) clearTimeout(this.logFlush);
    this.logFlush = null;
    if (this.ws?.readyState !== WebSocket.OPEN) return; // kept on disk; the coordinator misses lines while away
    for (const [id, lines] of this.pendingLogs) {
      for (let i = 0; i < lines.length; i += 5000) {
        this.send({ type: 'logs', workload_id: id, lines: lines.slice(i, i + 5000) });
      }
    }
    this.pendingLogs.clear();
  }

  private async startWorkload(a: WorkloadAssignment) {
    const dir = join(this.opts.stateDir, 'workloads', a.id);
    const workDir = join(dir, 'work');
    await mkdir(workDir, { recursive: true });
    await writeFile(join(dir, 'assignment.json'), JSON.stringify(a));
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
      this.queueLog(a.id, l);
    };
    const abort = new AbortController();
    entry.stop = async () => abort.abort();
    try {
      const closure = a.spec.mxc.closure;
      system(`realising ${closure.length} store path(s)${this.cache ? ` from ${this.cache.url}` : ''}`);
      const t0 = Date.now();
      const gcRoot = closure.length ? await prepareWorkloadRoot(this.opts.stateDir, a.id) : undefined;
      const warm = gcRoot !== undefined && (await this.alreadyRealised(closure));
      const fetched = warm
        ? await addIndirectRoots(gcRoot, closure, this.opts.storeRoot).then(() => ({
            pathsDone: 0,
            pathsTotal: 0,
            bytesDone: 0,
            bytesTotal: 0,
          }))
        : await realiseClosure({
            paths: closure,
            storeRoot: this.opts.storeRoot,
            cache: this.cache,
            gcRoot,
            scratchDir: dir,
            signal: abort.signal,
            onLine: (line) => {
              if (line.startsWith('copying path') || line.startsWith('warning:')) system(line);
            },
            onProgress: (p, finished) => {
              if (finished) system(`fetched ${finished} (${progressText(p)})`);
            },
          });
      for (const p of closure) this.realised.add(p);
      system(
        `closure ready in ${Date.now() - t0} ms` +
          (fetched.pathsTotal ? `: fetched ${progressText(fetched)}` : ': every path already in the store'),
      );
      entry.fetched = { paths: fetched.pathsDone, bytes: fetched.bytesDone };
      if (fetched.pathsDone > 0) {
        this.send({
          type: 'store_paths',
          added: await closureOf(closure, { store: this.opts.storeRoot }),
          removed: [],
        });
      }
      if (entry.stopping) throw new Error('stopped before start');

      for (const port of a.spec.mxc.ports) entry.ports[port] = await freePort();
      // Resolved before anything starts, so a check naming an undeclared port fails the start clearly.
      const healthPort = a.spec.health_check_config ? healthCheckPort(a.spec, entry.ports) : null;
      const env: Record<string, string> = {
        PATH: '/run/current-system/sw/bin:/usr/bin:/bin',
        HOME: workDir,
        ...a.spec.mxc.env,
        MXC_WORKLOAD_ID: a.id,
        MXC_JOB: a.spec.name,
        MXC_INSTANCE: String(a.instance),
        ...Object.fromEntries(
          Object.entries(entry.ports).map(([n, p]) => [`MXC_PORT_${n.toUpperCase()}`, String(p)]),
        ),
        ...(await provideSecrets(
          a.spec.mxc.secrets,
          this.opts.secretsDir,
          workDir,
          a.spec.mxc.isolation === 'microvm' ? '/work' : workDir,
        )),
      };
      const onLog = (l: LogLine) => {
        logs.append(l);
        this.queueLog(a.id, l);
      };
      const grace = this.opts.gracePeriodMs ?? 5000;
      let done: Promise<TaskSnapshot>;
      if (a.spec.mxc.isolation === 'microvm') {
        if (!this.opts.microvm) throw new Error('this agent cannot run microVM workloads');
        const vm = await this.opts.microvm.run({
          assignment: a,
          workDir,
          storeDir: join(this.opts.storeRoot ?? '/', 'nix', 'store'),
          closure: await closureOf(closure, { store: this.opts.storeRoot }),
          env,
          ports: Object.entries(entry.ports).map(([name, hostPort]) => ({
            name,
            hostPort,
            guestPort: hostPort,
          })),
          onLog,
          gracePeriodMs: grace,
        });
        done = vm.done;
        entry.stop = () => vm.stop();
      } else {
        const isolated =
          a.spec.mxc.isolation === 'sandbox'
            ? sandboxLaunch({
                storeRoot: this.opts.storeRoot,
                closure: await closureForSandbox(closure, this.opts.storeRoot),
                workDir,
                network: a.spec.mxc.network,
              })
            : this.opts.storeRoot
              ? storeViewLaunch({ storeRoot: this.opts.storeRoot })
              : plainLaunch;
        let launch = isolated;
        if (this.cgroupRoot) {
          const r = a.spec.task.resources;
          entry.cgroup = await createWorkloadCgroup(this.cgroupRoot, a.id, { ramBytes: r?.ram, cpu: r?.cpu });
          launch = cgroupLaunch(isolated, entry.cgroup);
        }
        const runner = new TaskRunner({
          workloadId: a.id,
          task: a.spec.task,
          workDir,
          env,
          launch,
          gracePeriodMs: grace,
          onLog,
          onChange: (snap) => {
            void writePids(dir, runner.pids()).catch(() => {});
            this.report(a.id, undefined, snap.processes);
          },
        });
        runner.start();
        done = runner.done;
        entry.stop = (reason: string) => runner.stop(reason);
      }
      entry.status = 'running';
      if (a.spec.health_check_config && healthPort !== null) {
        entry.health = 'unknown';
        entry.checker = this.healthChecker(a.id, entry, a.spec.health_check_config, healthPort, system);
      }
      this.report(a.id, 'processes started');
      entry.checker?.start();
      const result = await done;
      await this.finish(a.id, result);
    } catch (err) {
      const why = err instanceof RealiseError ? err.message : `could not start: ${(err as Error).message}`;
      const reason = entry.stopping ? 'stopped' : why;
      system(reason);
      entry.status = entry.stopping ? 'stopped' : 'failed';
      this.report(a.id, reason);
      await this.cleanup(a.id);
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
    this.flushLogs();
    this.running.delete(id);
    await r?.logs.close();
    await rm(join(this.opts.stateDir, 'workloads', id, 'pids.json'), { force: true });
    await removeSecrets(join(this.opts.stateDir, 'workloads', id, 'work'));
    if (r?.cgroup)
      await removeWorkloadCgroup(r.cgroup).catch((err) => this.log.warn({ err }, 'cgroup removal failed'));
    // The closure is collectable from now on; collect at once if space is short.
    await removeWorkloadRoots(this.opts.stateDir, id);
    void this.housekeeping?.gcIfLow();
  }

  private async stopWorkload(id: string, reason: string) {
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

  /** Stops every workload (agent shutdown with --stop-workloads) — by default workloads are left running. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((id) => this.stopWorkload(id, 'agent shutting down')));
  }

  runningIds(): string[] {
    return [...this.running.keys()];
  }

  /**
   * Leaves the cluster. The connection closes first, so the coordinator does not record the workloads
   * as stopped by request: it sees them lost (after reconnect or the TTL) and reschedules them.
   */
  async close(opts: { stopWorkloads?: boolean } = {}): Promise<void> {
    this.closed = true;
    this.housekeeping?.stop();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.flushLogs();
    if (this.heartbeat) clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'agent shutting down');
    if (opts.stopWorkloads !== false) await this.stopAll();
  }
}

function progressText(p: RealiseProgress): string {
  const mib = (n: number) => (n / 1048576).toFixed(2);
  return `${p.pathsDone}/${p.pathsTotal} paths, ${mib(p.bytesDone)}/${mib(p.bytesTotal)} MiB`;
}

/** The full closure of the roots, as the sandbox must expose every path of it. */
async function closureForSandbox(roots: string[], storeRoot?: string): Promise<string[]> {
  return closureOf(roots, { store: storeRoot });
}

/** A free TCP port on the loopback (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
