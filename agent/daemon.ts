/**
 * The agent daemon: joins the coordinator (see connection.ts), runs each assigned workload (see
 * workload-run.ts) and keeps its store and state tidy. Processes keep running while the coordinator
 * is away; on reconnect the agent reports what it runs and the coordinator reconciles.
 */
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { CoordinatorMessage, LogLine, WorkloadAssignment } from '../spec/messages.js';
import { prepareCgroupRoot } from './cgroups.js';
import { CoordinatorConnection } from './connection.js';
import { prepareWorkloadRoot, removeStaleRoots } from './gc.js';
import { Housekeeping } from './housekeeping.js';
import { stopOrphans } from './orphans.js';
import { initStore, realiseClosure } from './realise.js';
import type { TaskSnapshot } from './thermos/process-executor.js';
import { WorkloadRuns } from './workload-run.js';

export { AGENT_VERSION } from './version.js';
export { freePort } from './workload-launch.js';

export interface AgentOptions {
  /** One coordinator URL, or several separated by commas (failover in list order, shuffled). */
  coordinator: string;
  /** MXC_DNS_QUERY: find coordinators by DNS (`_mxc._tcp.example.org` SRV, or `host[:port]` A/AAAA). */
  dnsQuery?: string;
  /** A resolver to ask instead of the system's (`host:port`), e.g. for tests. */
  dnsServer?: string;
  token?: string;
  name?: string;
  cpu?: number;
  memoryMb?: number;
  /** Disk offered (MiB); default the free space of the state directory. */
  diskMb?: number;
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

export class Agent {
  private readonly conn: CoordinatorConnection;
  private readonly workloads: WorkloadRuns;
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
    this.conn = new CoordinatorConnection({
      agent: opts,
      name: this.name,
      log: this.log,
      running: () => this.workloads.statuses(),
      cgroups: () => this.cgroupRoot !== null,
      onMessage: (msg) => this.onMessage(msg),
    });
    this.workloads = new WorkloadRuns({
      agent: opts,
      log: this.log,
      conn: this.conn,
      cgroupRoot: () => this.cgroupRoot,
      gcIfLow: () => void this.housekeeping?.gcIfLow(),
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
      live: () => this.workloads.ids(),
      onCollected: (r) => {
        this.workloads.realised.clear();
        this.conn.sendStorePaths([], r.paths);
      },
      logger: this.log,
    });
    this.housekeeping.start(this.opts.housekeepingIntervalMs ?? 60_000);
    this.conn.connect();
  }

  private onMessage(msg: CoordinatorMessage) {
    switch (msg.type) {
      case 'welcome':
        this.nodeId = msg.node_id;
        this.log.info({ node: msg.node_id }, 'joined coordinator');
        this.connectedOnce?.();
        return;
      case 'start':
        if (this.workloads.has(msg.workload.id)) {
          this.workloads.report(msg.workload.id);
          return;
        }
        void this.workloads.start(msg.workload).catch((err) => this.log.error({ err }, 'start failed'));
        return;
      case 'stop': {
        if (!this.workloads.has(msg.workload_id)) {
          this.conn.send({
            type: 'workload_status',
            workload_id: msg.workload_id,
            status: 'stopped',
            reason: 'not running on this agent',
          });
          return;
        }
        this.workloads
          .stop(msg.workload_id, msg.reason ?? 'stop requested')
          .catch((err) => this.log.error({ err, workload: msg.workload_id }, 'stopping a workload failed'));
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
      cache: this.conn.cache,
      gcRoot: await prepareWorkloadRoot(this.opts.stateDir, `prewarm-${jobId}`),
      scratchDir,
    });
    this.log.info(
      { job: jobId, paths: fetched.pathsTotal, bytes: fetched.bytesTotal },
      'pre-warmed a closure',
    );
    this.conn.sendStorePaths(paths, []);
  }

  /** Stops every workload (agent shutdown with --stop-workloads) — by default workloads are left running. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.workloads.ids()].map((id) => this.workloads.stop(id, 'agent shutting down')));
  }

  runningIds(): string[] {
    return [...this.workloads.ids()];
  }

  /**
   * Leaves the cluster. The connection closes first, so the coordinator does not record the workloads
   * as stopped by request; when they are stopped, a goodbye tells it to reschedule them now (else it
   * sees them lost after reconnect or the TTL).
   */
  async close(opts: { stopWorkloads?: boolean } = {}): Promise<void> {
    this.housekeeping?.stop();
    this.conn.close({ goodbye: opts.stopWorkloads !== false });
    if (opts.stopWorkloads !== false) await this.stopAll();
  }
}
