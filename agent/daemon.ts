/**
 * The agent daemon: joins the coordinator (see connection.ts), runs each assigned workload (see
 * workload-run.ts) and keeps its store and state tidy. Processes keep running while the coordinator
 * is away; on reconnect the agent reports what it runs and the coordinator reconciles.
 */
import { chmod, mkdir } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { lockFolder } from '../lib/pid-lock.js';
import type { CoordinatorMessage } from '../spec/messages.js';
import { prepareCgroupRoot } from './cgroups.js';
import { CoordinatorConnection } from './connection.js';
import { prepareWorkloadRoot, removeStaleRoots } from './gc.js';
import { Housekeeping } from './housekeeping.js';
import { stopOrphans } from './orphans.js';
import { initStore, realiseClosure } from './realise.js';
import { taskSupervisorBinary, taskSupervisorUnusable } from './thermos/task-supervisor.js';
import { WorkloadRuns } from './workload-run.js';

export { AGENT_VERSION } from './version.js';
export { freePort } from './workload-launch.js';

import { type AgentOptions, DEFAULT_LOG_RETENTION_MS } from './options.js';

export { type AgentOptions, DEFAULT_LOG_RETENTION_MS, type MicroVmSupport } from './options.js';

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

  private unlockState: () => Promise<void> = async () => {};

  async start(): Promise<void> {
    // Only the agent's user may reach its workloads' folders: a job runs as that user (root, on most
    // hosts; in a sandbox or a microVM too, as far as the files it writes go), so a file it leaves with
    // the setuid bit in its work folder would otherwise be a root shell for every local user.
    const workloads = join(this.opts.stateDir, 'workloads');
    await mkdir(workloads, { recursive: true, mode: 0o700 });
    await chmod(workloads, 0o700);
    // One agent a state dir: a second one took the first one's live workloads for a previous run's
    // orphans and killed them, and joined as the same node.
    this.unlockState = await lockFolder(this.opts.stateDir);
    // Workloads of a previous agent run: their supervisor is gone and their output pipes with it, so
    // stop what is left of them. The coordinator hears `running: []` and replaces them.
    for (const o of await stopOrphans(workloads)) {
      if (o.damaged)
        this.log.error(
          o,
          "a previous agent run's record of this workload's processes (pids.json) is unreadable: what it ran may still run; the record is removed",
        );
      else this.log.warn(o, 'stopped an orphaned process group from a previous agent run');
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
        this.workloads.forgetRealised();
        this.conn.sendStorePaths([], r.paths);
      },
      logger: this.log,
    });
    this.housekeeping.start(this.opts.housekeepingIntervalMs ?? 60_000);
    // Compiled (once per version) while the agent joins, so the first start does not wait for it.
    void taskSupervisorBinary().then((binary) => {
      if (binary) this.log.debug({ binary }, 'task supervisor ready');
      else
        this.log.warn(
          { reason: taskSupervisorUnusable() },
          'no task supervisor (it needs cc and a static libc): each process starts in a namespace of its own, ~5 ms slower',
        );
    });
    // Idle supervisors in fresh namespaces for plain tasks, started once the binary exists.
    void this.workloads.startPool().catch((err) => this.log.warn({ err }, 'no task supervisor pool'));
    this.conn.connect();
  }

  private onMessage(msg: CoordinatorMessage) {
    switch (msg.type) {
      case 'welcome':
        this.nodeId = msg.node_id;
        this.log.info({ node: msg.node_id, coordinator: this.conn.current }, 'joined coordinator');
        // Ends the coordinator may have missed (it was away when they came), after the hello that listed them.
        this.workloads.reportEnded();
        this.connectedOnce?.();
        return;
      case 'start':
        if (this.workloads.has(msg.workload.id)) {
          this.workloads.report(msg.workload.id);
          return;
        }
        // Ended here already (a start sent again after a reconnect): its end again, not a second run.
        if (this.workloads.hasEnded(msg.workload.id)) {
          this.workloads.reportEndOf(msg.workload.id);
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
      stateDir: this.opts.stateDir,
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
    await this.workloads.closePool();
    if (opts.stopWorkloads !== false) await this.stopAll();
    await this.unlockState();
  }
}
