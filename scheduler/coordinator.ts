/**
 * The coordinator's domain service: accepts jobs, runs scheduling passes (snapshot → pure plan →
 * transactional apply), talks to connected agents, tracks their liveness in memory and reconciles
 * what agents report with what the store wants. The API layer only calls into this.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { nextRun, parseCron } from '../spec/cron.js';
import { DEFAULT_RESOURCES, describeIssues, JobSpec, jobKey } from '../spec/job.js';
import type { AgentMessage, CoordinatorMessage, WorkloadStatus } from '../spec/messages.js';
import { ACTIVE_STATUSES, canTransition, isTerminal } from './core/lifecycle.js';
import { type Demand, type NodeView, type PlacedInstance, place, type Strategy } from './core/place.js';
import { errors, MxcError } from './errors.js';
import { advanceRollouts, type RolloutHost, startRollout } from './rollout.js';
import * as closures from './store/closures.js';
import type { Db, Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as logs from './store/logs.js';
import * as nodes from './store/nodes.js';
import * as updates from './store/updates.js';
import * as wl from './store/workloads.js';

export interface AgentSession {
  send(msg: CoordinatorMessage): void;
  close(code?: number, reason?: string): void;
}

export interface CoordinatorOptions {
  heartbeatTtlMs: number;
  heartbeatIntervalMs: number;
  strategy: Strategy;
  /**
   * The full closure of a job (paths and NAR sizes) from the cache; throws a coded error listing what
   * is missing, so a job that could never start is refused before anything is replaced.
   */
  closureOf?: (spec: JobSpec) => Promise<closures.ClosurePath[]>;
}

/** What changed, for live views (dashboard, `--wait`). */
export interface ChangeEvent {
  kind: 'workload' | 'node' | 'job' | 'log';
  id: string;
  status?: string;
}

const MB = 1024 * 1024;

interface JobInfo {
  constraints: Record<string, string>;
  closure: { path: string; size: number }[];
}
/** Placements committed per transaction. */
const APPLY_CHUNK = 2000;

export class Coordinator {
  readonly events = new EventEmitter();
  private readonly sessions = new Map<string, AgentSession>();
  private readonly lastSeen = new Map<string, number>();
  private readonly unflushedSeen = new Set<string>();
  private evaluating: Promise<void> | null = null;
  private evaluateAgain = false;
  private timers: NodeJS.Timeout[] = [];
  private readonly startedAt = Date.now();
  private closed = false;

  constructor(
    readonly db: Db,
    readonly log: Logger,
    readonly opts: CoordinatorOptions,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Starts the liveness timer and a first scheduling pass. */
  start(): void {
    const every = Math.max(100, Math.min(this.opts.heartbeatTtlMs / 4, 5000));
    this.timers.push(
      setInterval(
        () => void this.tick().catch((e) => this.log.error({ err: e }, 'liveness tick failed')),
        every,
      ),
    );
    this.requestEvaluation();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const s of this.sessions.values()) s.close(1001, 'coordinator shutting down');
    this.sessions.clear();
    await this.evaluating;
    await this.rolloutRunning;
    await this.flushSeen().catch(() => {});
  }

  private emit(e: ChangeEvent) {
    this.events.emit('change', e);
  }

  // ---------------------------------------------------------------- jobs

  /** Validates and stores a job; a new identity or a changed spec gets new workloads, an identical one is a no-op. */
  async submitJob(
    body: unknown,
  ): Promise<{ job: jobs.JobRow; version: number; changed: boolean; workloads: string[] }> {
    const parsed = JobSpec.safeParse(body);
    if (!parsed.success) throw errors.validation('job spec', describeIssues(parsed.error));
    const spec = parsed.data;
    const closure = (await this.opts.closureOf?.(spec)) ?? [];
    const key = jobKey(spec);
    const hash = createHash('sha256').update(JSON.stringify(spec)).digest('hex');
    const res = await this.db.tx(async (q) => {
      let job = await jobs.getJobByKey(q, key, true);
      let version = 1;
      let previous: number | null = null;
      if (!job) {
        job = await jobs.insertJob(q, { id: randomUUID(), key, spec, specHash: hash });
      } else {
        const current = await jobs.getJobVersion(q, job.id, job.current_version);
        if (current?.spec_hash === hash && job.status === 'active') {
          return {
            job,
            version: job.current_version,
            changed: false,
            workloads: [] as string[],
            stopped: [],
            rolling: false,
          };
        }
        previous = job.status === 'active' ? job.current_version : null;
        version = job.current_version + 1;
        await jobs.insertJobVersion(q, job.id, version, spec, hash);
        await jobs.setJobVersion(q, job.id, version);
        job = { ...job, current_version: version, status: 'active' };
      }
      await closures.insertJobClosure(q, job.id, version, closure);
      // With an update_config, a running job is updated batch by batch instead of all at once.
      if (previous !== null && spec.update_config && !spec.cron_schedule) {
        const live = await wl.listWorkloads(q, { jobId: job.id, status: ['starting', 'running'], limit: 1 });
        if (live.length > 0) {
          await startRollout(q, job.id, previous, version);
          return { job, version, changed: true, workloads: [] as string[], stopped: [], rolling: true };
        }
      }
      await updates.cancelRolling(q, job.id, `superseded by version ${version}`);
      const stopped = await this.stopJobWorkloads(q, job.id, `replaced by version ${version}`);
      // A cron job runs on its schedule, not on submit.
      const created = spec.cron_schedule ? [] : newWorkloads(job.id, version, spec, 0);
      await wl.insertWorkloads(q, created, `submitted (version ${version})`);
      await jobs.setNextRun(
        q,
        job.id,
        spec.cron_schedule ? nextRun(parseCron(spec.cron_schedule), new Date()) : null,
      );
      return { job, version, changed: true, workloads: created.map((w) => w.id), stopped, rolling: false };
    });
    this.dispatchStops(res.stopped);
    if (res.changed) {
      this.log.info({ job: key, version: res.version, workloads: res.workloads.length }, 'job submitted');
      this.emit({ kind: 'job', id: res.job.id });
      // Like Nomad's job register, submit returns once the job is committed; placement follows in the
      // next scheduling pass (coalesced with other submits), visible through the workloads' status.
      this.requestEvaluation();
      if (res.rolling) this.requestRolloutStep();
    }
    const { stopped: _s, ...out } = res;
    return out;
  }

  async stopJob(idOrKey: string): Promise<{ job: jobs.JobRow; stopped: number }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    const stopped = await this.db.tx(async (q) => {
      await jobs.setJobStatus(q, job.id, 'stopped');
      await updates.cancelRolling(q, job.id, 'job stopped');
      await jobs.setNextRun(q, job.id, null);
      return this.stopJobWorkloads(q, job.id, 'job stopped');
    });
    this.dispatchStops(stopped);
    this.emit({ kind: 'job', id: job.id });
    return { job: { ...job, status: 'stopped' }, stopped: stopped.length };
  }

  /** Moves every non-terminal workload of a job towards stopped; returns those an agent must stop. */
  private async stopJobWorkloads(q: Queryable, jobId: string, reason: string): Promise<wl.WorkloadRow[]> {
    const live = await wl.listWorkloads(q, {
      jobId,
      status: ['pending', 'starting', 'running'],
      limit: 100_000,
    });
    const toAgents: wl.WorkloadRow[] = [];
    for (const w of live) {
      if (w.status === 'pending') {
        await wl.transition(q, w, 'stopped', reason);
      } else {
        await wl.transition(q, w, 'stopping', reason);
        toAgents.push(w);
      }
    }
    return toAgents;
  }

  async stopWorkload(id: string): Promise<wl.WorkloadRow> {
    const stopped = await this.db.tx(async (q) => {
      const w = await wl.getWorkload(q, id, true);
      if (!w) throw errors.notFound('workload', id);
      if (w.status === 'pending') {
        await wl.transition(q, w, 'stopped', 'stopped by request');
        return [] as wl.WorkloadRow[];
      }
      if (w.status !== 'starting' && w.status !== 'running') {
        throw errors.conflict(
          'NOT_STOPPABLE',
          `workload ${id} is ${w.status}; only pending, starting or running workloads can be stopped`,
        );
      }
      await wl.transition(q, w, 'stopping', 'stopped by request');
      return [w];
    });
    this.dispatchStops(stopped);
    const w = await wl.getWorkload(this.db, id);
    this.emit({ kind: 'workload', id, status: w?.status });
    return w!;
  }

  private dispatchStops(ws: wl.WorkloadRow[]) {
    for (const w of ws) {
      this.emit({ kind: 'workload', id: w.id, status: 'stopping' });
      if (w.node_id)
        this.sessions.get(w.node_id)?.send({ type: 'stop', workload_id: w.id, reason: 'stop requested' });
    }
  }

  /**
   * Pre-warm: tells the nodes where a job's workloads run or would go to realise its closure now, so
   * a later rollout does not wait for downloads. `body` may carry the next version's spec.
   */
  async prewarm(
    idOrKey: string,
    body?: unknown,
  ): Promise<{
    paths: number;
    bytes: number;
    nodes: { node: string; missing_bytes: number; sent: boolean }[];
  }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    let spec: JobSpec;
    let closure: closures.ClosurePath[];
    if (
      body !== undefined &&
      body !== null &&
      !(typeof body === 'object' && Object.keys(body).length === 0)
    ) {
      const parsed = JobSpec.safeParse(body);
      if (!parsed.success) throw errors.validation('job spec', describeIssues(parsed.error));
      spec = parsed.data;
      if (jobKey(spec) !== job.key) {
        throw errors.badRequest(
          `the spec is for ${jobKey(spec)}, not ${job.key}; pre-warm it under its own job`,
        );
      }
      closure = (await this.opts.closureOf?.(spec)) ?? [];
    } else {
      spec = (await this.specOf(job.id, job.current_version))!;
      closure = await closures.jobClosure(this.db, job.id, job.current_version);
    }
    const snapshot = await this.snapshot();
    const held = await closures.holders(
      this.db,
      closure.map((p) => p.path),
    );
    for (const n of snapshot.nodes) n.storePaths = held.get(n.id) ?? new Set();
    // Where it runs now, and where a fresh placement of every instance would go.
    const targets = new Set(
      (await wl.listWorkloads(this.db, { jobId: job.id, status: ['starting', 'running'] }))
        .map((w) => w.node_id)
        .filter((n): n is string => n !== null),
    );
    const r = spec.task.resources ?? DEFAULT_RESOURCES;
    const plan = place(
      snapshot,
      Array.from({ length: spec.instances }, (_, i) => ({
        workloadId: `prewarm-${i}`,
        jobId: job.id,
        cpu: r.cpu,
        memory_mb: Math.ceil(r.ram / MB),
        disk_mb: Math.ceil(r.disk / MB),
        isolation: spec.mxc.isolation,
        constraints: spec.constraints ?? {},
        closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
      })),
      { strategy: this.opts.strategy, seed: job.id },
    );
    for (const p of plan.placements) targets.add(p.nodeId);
    const paths = closure.map((p) => p.path);
    const out: { node: string; missing_bytes: number; sent: boolean }[] = [];
    for (const nodeId of targets) {
      const node = snapshot.nodes.find((n) => n.id === nodeId);
      if (!node) continue;
      const missing = closure.filter((p) => !node.storePaths?.has(p.path));
      const session = this.sessions.get(nodeId);
      if (session && missing.length) session.send({ type: 'prewarm', job_id: job.id, paths });
      out.push({
        node: node.name,
        missing_bytes: missing.reduce((a, p) => a + p.nar_size, 0),
        sent: !!session && missing.length > 0,
      });
    }
    return { paths: paths.length, bytes: closure.reduce((a, p) => a + p.nar_size, 0), nodes: out };
  }

  // ---------------------------------------------------------------- rolling updates

  private rolloutRunning: Promise<void> | null = null;
  private rolloutAgain = false;

  /** Advances rolling updates soon; concurrent requests coalesce. */
  requestRolloutStep(): void {
    if (this.closed) return;
    if (this.rolloutRunning) {
      this.rolloutAgain = true;
      return;
    }
    this.rolloutRunning = (async () => {
      try {
        do {
          this.rolloutAgain = false;
          await this.stepRollouts();
        } while (this.rolloutAgain && !this.closed);
      } catch (err) {
        this.log.error({ err }, 'advancing rolling updates failed');
      } finally {
        this.rolloutRunning = null;
      }
    })();
  }

  /** One step of every rolling update, in one transaction. */
  async stepRollouts(now = new Date()): Promise<void> {
    const host: RolloutHost = {
      stopWorkloads: async (q, ws, reason) => {
        const toAgents: wl.WorkloadRow[] = [];
        for (const w of ws) {
          if (w.status === 'pending') await wl.transition(q, w, 'stopped', reason);
          else if (w.status === 'starting' || w.status === 'running') {
            await wl.transition(q, w, 'stopping', reason);
            toAgents.push(w);
          }
        }
        return toAgents;
      },
      createWorkloads: async (q, jobId, version, spec, instances, reason) => {
        await wl.insertWorkloads(q, newWorkloads(jobId, version, spec, 0, instances), reason);
      },
    };
    const r = await retryOnConflict(() => this.db.tx((q) => advanceRollouts(q, host, now)));
    this.dispatchStops(r.stops);
    for (const id of r.changedJobs) this.emit({ kind: 'job', id });
    if (r.created) this.requestEvaluation();
  }

  // ---------------------------------------------------------------- nodes

  async drainNode(idOrName: string): Promise<nodes.NodeRow> {
    const node = await nodes.getNode(this.db, idOrName);
    if (!node) throw errors.notFound('node', idOrName);
    const moved = await this.db.tx(async (q) => {
      await nodes.setNodeStatus(q, node.id, 'draining');
      const active = await wl.listWorkloads(q, {
        nodeId: node.id,
        status: ['starting', 'running'],
        limit: 100_000,
      });
      for (const w of active) await wl.transition(q, w, 'stopping', `node ${node.name} draining`);
      await this.replace(q, active, `moved off draining node ${node.name}`);
      return active;
    });
    this.dispatchStops(moved);
    this.emit({ kind: 'node', id: node.id, status: 'draining' });
    this.requestEvaluation();
    return (await nodes.getNode(this.db, node.id))!;
  }

  /** Ends a drain: the node takes work again. */
  async undrainNode(idOrName: string): Promise<nodes.NodeRow> {
    const node = await nodes.getNode(this.db, idOrName);
    if (!node) throw errors.notFound('node', idOrName);
    const status = this.sessions.has(node.id) ? 'ready' : 'down';
    const row = (await nodes.setNodeStatus(this.db, node.id, status))!;
    this.emit({ kind: 'node', id: node.id, status });
    this.requestEvaluation();
    return row;
  }

  /** Creates pending replacements for workloads whose job is still active (same instance, next attempt). */
  private async replace(
    q: Queryable,
    ws: wl.WorkloadRow[],
    reason: string,
    countAsFailure = false,
  ): Promise<number> {
    let n = 0;
    for (const w of ws) {
      const job = await jobs.getJob(q, w.job_id);
      if (!job || job.status !== 'active' || job.current_version !== w.job_version) continue;
      const v = await jobs.getJobVersion(q, w.job_id, w.job_version);
      if (!v) continue;
      const restarts = w.restarts + (countAsFailure ? 1 : 0);
      const [created] = newWorkloads(job.id, w.job_version, v.spec, restarts, [w.instance]);
      await wl.insertWorkloads(q, [created!], `${reason} (replaces ${w.id})`);
      n++;
    }
    return n;
  }

  // ---------------------------------------------------------------- scheduling

  /** Schedules soon; concurrent requests coalesce into one more pass. */
  requestEvaluation(): void {
    void this.evaluate().catch((err) => this.log.error({ err }, 'scheduling pass failed'));
  }

  /** Runs a scheduling pass (or waits for the running one and runs once more). */
  async evaluate(): Promise<void> {
    if (this.closed) return;
    if (this.evaluating) {
      this.evaluateAgain = true;
      return this.evaluating;
    }
    this.evaluating = (async () => {
      try {
        do {
          this.evaluateAgain = false;
          await this.schedulePass();
        } while (this.evaluateAgain && !this.closed);
      } finally {
        this.evaluating = null;
      }
    })();
    return this.evaluating;
  }

  private async schedulePass(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const pending = await wl.listWorkloads(this.db, { status: ['pending'], limit: 100_000 });
      if (pending.length === 0) return;
      pending.sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.instance - b.instance);
      const snapshot = await this.snapshot();
      const jobInfo = await this.jobInfoFor(pending);
      const demands: Demand[] = pending.map((w) => {
        const info = jobInfo.get(`${w.job_id}/${w.job_version}`);
        return {
          workloadId: w.id,
          jobId: w.job_id,
          cpu: w.cpu,
          memory_mb: w.memory_mb,
          disk_mb: w.disk_mb,
          isolation: w.isolation,
          constraints: info?.constraints ?? {},
          closure: info?.closure,
        };
      });
      const wanted = [...new Set([...jobInfo.values()].flatMap((i) => i.closure.map((p) => p.path)))];
      const held = await closures.holders(this.db, wanted);
      for (const n of snapshot.nodes) n.storePaths = held.get(n.id) ?? new Set();
      const evalId = randomUUID();
      const plan = place(snapshot, demands, { strategy: this.opts.strategy, seed: evalId });
      await wl.setPendingReasons(
        this.db,
        plan.failures.map((f) => ({ id: f.workloadId, reason: f.summary })),
      );
      if (plan.placements.length === 0) return;
      const { applied, conflicts } = await this.applyPlacements(plan.placements);
      for (const a of applied) {
        this.emit({ kind: 'workload', id: a.id, status: 'starting' });
        this.sendStart(a.node_id!, a);
      }
      if (conflicts === 0) return;
      this.log.info({ conflicts, attempt }, 'plan partly rejected on fresh state; replanning');
    }
  }

  /** Constraints and closure (with sizes) of each job version among the workloads. */
  private async jobInfoFor(ws: wl.WorkloadRow[]): Promise<Map<string, JobInfo>> {
    const out = new Map<string, JobInfo>();
    for (const w of ws) {
      const k = `${w.job_id}/${w.job_version}`;
      if (out.has(k)) continue;
      const [spec, closure] = await Promise.all([
        this.specOf(w.job_id, w.job_version),
        closures.jobClosure(this.db, w.job_id, w.job_version),
      ]);
      out.set(k, {
        constraints: spec?.constraints ?? {},
        closure: closure.map((p) => ({ path: p.path, size: p.nar_size })),
      });
    }
    return out;
  }

  /** The cluster as the pure core sees it. */
  async snapshot(q: Queryable = this.db): Promise<{ nodes: NodeView[]; placed: PlacedInstance[] }> {
    const [rows, usage, placed] = await Promise.all([
      nodes.listNodes(q),
      wl.usageByNode(q),
      wl.activePlacements(q),
    ]);
    return {
      nodes: rows.map((n) => toNodeView(n, usage.get(n.id))),
      placed: placed.map((p) => ({ jobId: p.job_id, nodeId: p.node_id, count: p.n })),
    };
  }

  /**
   * Applies placements in transactions of at most APPLY_CHUNK, re-checking capacity under row locks
   * (nodes, then workloads, in id order). A placement that no longer fits is a conflict, left pending.
   */
  private async applyPlacements(
    placements: { workloadId: string; nodeId: string }[],
  ): Promise<{ applied: wl.WorkloadRow[]; conflicts: number }> {
    const applied: wl.WorkloadRow[] = [];
    let conflicts = 0;
    for (let i = 0; i < placements.length; i += APPLY_CHUNK) {
      const r = await this.applyChunk(placements.slice(i, i + APPLY_CHUNK));
      applied.push(...r.applied);
      conflicts += r.conflicts;
    }
    return { applied, conflicts };
  }

  private async applyChunk(
    placements: { workloadId: string; nodeId: string }[],
  ): Promise<{ applied: wl.WorkloadRow[]; conflicts: number }> {
    return retryOnConflict(() => this.applyChunkOnce(placements));
  }

  private async applyChunkOnce(
    placements: { workloadId: string; nodeId: string }[],
  ): Promise<{ applied: wl.WorkloadRow[]; conflicts: number }> {
    return this.db.tx(async (q) => {
      const nodeIds = [...new Set(placements.map((p) => p.nodeId))];
      const locked = new Map((await nodes.lockNodes(q, nodeIds)).map((n) => [n.id, n]));
      const usage = await wl.usageByNode(q, nodeIds);
      const pending = new Map(
        (
          await wl.lockPending(
            q,
            placements.map((p) => p.workloadId),
          )
        ).map((w) => [w.id, w]),
      );
      const accepted: { w: wl.WorkloadRow; node: nodes.NodeRow }[] = [];
      let conflicts = 0;
      for (const p of placements) {
        const node = locked.get(p.nodeId);
        const w = pending.get(p.workloadId);
        if (!w) continue; // stopped or placed meanwhile
        const used = usage.get(p.nodeId) ?? { cpu: 0, memory_mb: 0, disk_mb: 0 };
        if (
          !node ||
          node.status !== 'ready' ||
          used.cpu + w.cpu > node.cpu + 1e-9 ||
          used.memory_mb + w.memory_mb > node.memory_mb ||
          used.disk_mb + w.disk_mb > node.disk_mb
        ) {
          conflicts++;
          continue;
        }
        used.cpu += w.cpu;
        used.memory_mb += w.memory_mb;
        used.disk_mb += w.disk_mb;
        usage.set(p.nodeId, used);
        accepted.push({ w, node });
      }
      await wl.transitionMany(
        q,
        accepted.map(({ w, node }) => ({ id: w.id, node_id: node.id, reason: `placed on ${node.name}` })),
        'pending',
        'starting',
      );
      return {
        applied: accepted.map(({ w, node }) => ({ ...w, status: 'starting' as const, node_id: node.id })),
        conflicts,
      };
    });
  }

  private sendStart(nodeId: string, w: wl.WorkloadRow) {
    const session = this.sessions.get(nodeId);
    if (!session) return; // sent again when the agent reconnects
    void this.specOf(w.job_id, w.job_version)
      .then((spec) => {
        if (spec)
          session.send({
            type: 'start',
            workload: { id: w.id, job_id: w.job_id, instance: w.instance, spec },
          });
      })
      .catch((err) =>
        this.log.error({ err, workload: w.id }, 'could not send a start; it is sent again on reconnect'),
      );
  }

  /** Job versions never change once written, so they are cached. */
  private readonly specs = new Map<string, Promise<JobSpec | null>>();
  private specOf(jobId: string, version: number): Promise<JobSpec | null> {
    const k = `${jobId}/${version}`;
    let p = this.specs.get(k);
    if (!p) {
      p = jobs.getJobVersion(this.db, jobId, version).then((v) => v?.spec ?? null);
      p.catch(() => this.specs.delete(k));
      if (this.specs.size > 10_000) this.specs.clear();
      this.specs.set(k, p);
    }
    return p;
  }

  // ---------------------------------------------------------------- agents

  /** An agent said hello: register it, then reconcile what it runs with what we want. */
  async agentConnected(
    session: AgentSession,
    hello: Extract<AgentMessage, { type: 'hello' }>,
  ): Promise<string> {
    const existing = await nodes.getNode(this.db, hello.name);
    const node = await nodes.upsertNode(this.db, {
      id: existing?.id ?? randomUUID(),
      name: hello.name,
      resources: hello.resources,
      capabilities: hello.capabilities,
      version: hello.version,
    });
    const previous = this.sessions.get(node.id);
    if (previous && previous !== session)
      previous.close(4000, 'replaced by a newer connection from the same node');
    this.sessions.set(node.id, session);
    this.lastSeen.set(node.id, Date.now());
    if (hello.store_paths) await closures.setNodePaths(this.db, node.id, hello.store_paths);
    session.send({ type: 'welcome', node_id: node.id, heartbeat_interval_ms: this.opts.heartbeatIntervalMs });
    this.log.info({ node: node.name, id: node.id }, 'agent connected');
    await this.reconcileAgent(node, hello.running);
    this.emit({ kind: 'node', id: node.id, status: node.status });
    this.requestEvaluation();
    return node.id;
  }

  private async reconcileAgent(
    node: nodes.NodeRow,
    running: { workload_id: string; status: WorkloadStatus }[],
  ) {
    const session = this.sessions.get(node.id);
    const reported = new Map(running.map((r) => [r.workload_id, r.status]));
    const wanted = await wl.listWorkloads(this.db, {
      nodeId: node.id,
      status: [...ACTIVE_STATUSES],
      limit: 100_000,
    });
    const wantedIds = new Set(wanted.map((w) => w.id));
    // Running on the agent but no longer wanted here: stop it.
    for (const id of reported.keys()) {
      if (!wantedIds.has(id))
        session?.send({ type: 'stop', workload_id: id, reason: 'not wanted by the coordinator' });
    }
    const lost: wl.WorkloadRow[] = [];
    for (const w of wanted) {
      const st = reported.get(w.id);
      if (w.status === 'stopping') {
        if (st) session?.send({ type: 'stop', workload_id: w.id, reason: 'stop requested' });
        else await this.applyStatus(node.id, w.id, 'stopped', 'agent no longer runs it');
      } else if (st) {
        if (st !== w.status && !isTerminal(st))
          await this.applyStatus(node.id, w.id, st, 'reported on reconnect');
      } else if (w.status === 'starting') {
        this.sendStart(node.id, w);
      } else {
        lost.push(w);
      }
    }
    if (lost.length) {
      await this.db.tx(async (q) => {
        for (const w of lost) await wl.transition(q, w, 'lost', `agent ${node.name} no longer runs it`);
        await this.replace(q, lost, 'rescheduled after loss');
      });
      for (const w of lost) this.emit({ kind: 'workload', id: w.id, status: 'lost' });
    }
  }

  /** A message from a connected agent. */
  async agentMessage(nodeId: string, msg: AgentMessage): Promise<void> {
    this.markSeen(nodeId);
    switch (msg.type) {
      case 'heartbeat':
        return;
      case 'hello':
        throw errors.badRequest('hello sent twice on one connection');
      case 'store_paths':
        await closures.addNodePaths(this.db, nodeId, msg.added);
        await closures.removeNodePaths(this.db, nodeId, msg.removed);
        this.emit({ kind: 'node', id: nodeId });
        return;
      case 'workload_status': {
        if (msg.ports || msg.processes || msg.fetched || msg.health) {
          const w = await wl.getWorkload(this.db, msg.workload_id);
          if (!w || w.node_id !== nodeId) return;
          await wl.setWorkloadRuntime(this.db, msg.workload_id, {
            ports: msg.ports,
            processes: msg.processes,
            fetched: msg.fetched,
            health: msg.health,
          });
          this.emit({ kind: 'workload', id: msg.workload_id, status: w.status });
        }
        await this.applyStatus(nodeId, msg.workload_id, msg.status, msg.reason ?? `reported by agent`);
        return;
      }
      case 'logs': {
        const w = await wl.getWorkload(this.db, msg.workload_id);
        if (!w || w.node_id !== nodeId) return;
        await logs.insertLogs(this.db, msg.workload_id, msg.lines);
        this.emit({ kind: 'log', id: msg.workload_id });
        return;
      }
    }
  }

  /** Applies a status an agent reported, when the state machine allows it; follows up failures. */
  private async applyStatus(
    nodeId: string,
    id: string,
    status: WorkloadStatus,
    reason: string,
  ): Promise<void> {
    const outcome = await this.db.tx(async (q) => {
      const w = await wl.getWorkload(q, id, true);
      if (!w || w.node_id !== nodeId) return 'ignored' as const;
      if (w.status === status) return 'same' as const;
      if (!canTransition(w.status, status)) {
        // A late "running" for a workload we are stopping, or a report after loss: keep ours.
        this.log.warn(
          { workload: id, from: w.status, to: status },
          'refused invalid transition reported by agent',
        );
        if (w.status === 'stopping' && status === 'running') {
          this.sessions.get(nodeId)?.send({ type: 'stop', workload_id: id, reason: 'stop requested' });
        }
        return 'refused' as const;
      }
      const wasStopping = w.status === 'stopping';
      const to = wasStopping && status === 'failed' ? 'stopped' : status;
      await wl.transition(q, w, to, reason, status === 'failed' ? { error: reason } : {});
      if (to === 'failed') {
        const v = await jobs.getJobVersion(q, w.job_id, w.job_version);
        const max = v?.spec.max_task_failures ?? 1;
        if (max === -1 || w.restarts + 1 < max) {
          await this.replace(
            q,
            [w],
            `restarted after failure ${w.restarts + 1}${max === -1 ? '' : ` of ${max}`}`,
            true,
          );
        }
      }
      return 'applied' as const;
    });
    if (outcome === 'applied') {
      this.emit({ kind: 'workload', id, status });
      this.requestRolloutStep();
      if (isTerminal(status)) this.requestEvaluation();
    }
  }

  agentDisconnected(nodeId: string, session: AgentSession): void {
    if (this.sessions.get(nodeId) === session) {
      this.sessions.delete(nodeId);
      this.log.warn(
        { node: nodeId },
        'agent disconnected; its workloads are kept until the heartbeat TTL passes',
      );
      this.emit({ kind: 'node', id: nodeId });
    }
  }

  isConnected(nodeId: string): boolean {
    return this.sessions.has(nodeId);
  }

  private markSeen(nodeId: string) {
    this.lastSeen.set(nodeId, Date.now());
    this.unflushedSeen.add(nodeId);
  }

  private async flushSeen() {
    if (this.unflushedSeen.size === 0) return;
    const seen = [...this.unflushedSeen].map((id) => ({
      id,
      at: new Date(this.lastSeen.get(id) ?? Date.now()),
    }));
    this.unflushedSeen.clear();
    await nodes.touchNodes(this.db, seen);
  }

  /**
   * Launches the cron jobs that are due: each run places `instances` new workloads, after applying the
   * job's collision policy to a previous run still alive (KILL_EXISTING stops it, CANCEL_NEW skips this
   * run, RUN_OVERLAP lets both run).
   */
  async runDueCronJobs(now = new Date()): Promise<number> {
    const { launched, stops } = await this.db.tx(async (q) => {
      let launched = 0;
      const stops: wl.WorkloadRow[] = [];
      for (const job of await jobs.dueCronJobs(q, now)) {
        const spec = (await jobs.getJobVersion(q, job.id, job.current_version))?.spec;
        if (!spec?.cron_schedule) {
          await jobs.setNextRun(q, job.id, null);
          continue;
        }
        await jobs.setNextRun(q, job.id, nextRun(parseCron(spec.cron_schedule), now));
        const live = await wl.listWorkloads(q, {
          jobId: job.id,
          status: ['pending', 'starting', 'running'],
          limit: 100_000,
        });
        if (live.length > 0 && spec.cron_collision_policy === 'CANCEL_NEW') {
          this.log.info({ job: job.key }, 'cron run skipped: the previous run is still going (CANCEL_NEW)');
          continue;
        }
        if (live.length > 0 && spec.cron_collision_policy === 'KILL_EXISTING') {
          stops.push(
            ...(await this.stopJobWorkloads(q, job.id, 'a new cron run replaces it (KILL_EXISTING)')),
          );
        }
        const created = newWorkloads(job.id, job.current_version, spec, 0);
        await wl.insertWorkloads(q, created, `cron run for ${now.toISOString().slice(0, 16)}Z`);
        launched++;
      }
      return { launched, stops };
    });
    this.dispatchStops(stops);
    if (launched > 0) this.requestEvaluation();
    return launched;
  }

  /** Liveness: a node silent for longer than the TTL is down, its workloads lost and replaced. */
  async tick(now = Date.now()): Promise<void> {
    await this.runDueCronJobs(new Date(now)).catch((err) =>
      this.log.error({ err }, 'launching cron jobs failed'),
    );
    this.requestRolloutStep();
    await this.flushSeen();
    const all = await nodes.listNodes(this.db);
    let changed = false;
    for (const n of all) {
      if (n.status === 'down') continue;
      const seen = this.lastSeen.get(n.id) ?? this.startedAt;
      if (now - seen <= this.opts.heartbeatTtlMs) continue;
      changed = true;
      this.sessions.get(n.id)?.close(4001, 'heartbeat TTL expired');
      this.sessions.delete(n.id);
      const lost = await this.db.tx(async (q) => {
        await nodes.setNodeStatus(q, n.id, 'down');
        const active = await wl.listWorkloads(q, {
          nodeId: n.id,
          status: [...ACTIVE_STATUSES],
          limit: 100_000,
        });
        for (const w of active) {
          if (w.status === 'stopping')
            await wl.transition(q, w, 'stopped', `node ${n.name} went down while stopping`);
          else
            await wl.transition(
              q,
              w,
              'lost',
              `node ${n.name} missed heartbeats for ${this.opts.heartbeatTtlMs} ms`,
            );
        }
        await this.replace(
          q,
          active.filter((w) => w.status !== 'stopping'),
          `rescheduled: node ${n.name} down`,
        );
        return active;
      });
      this.log.warn({ node: n.name, lost: lost.length }, 'node down');
      this.emit({ kind: 'node', id: n.id, status: 'down' });
      for (const w of lost) this.emit({ kind: 'workload', id: w.id, status: 'lost' });
    }
    if (changed) await this.evaluate();
  }
}

/** Retries a transaction that PostgreSQL aborted for a deadlock or a serialization failure. */
async function retryOnConflict<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (i >= attempts || (code !== '40P01' && code !== '40001')) throw err;
      await new Promise((r) => setTimeout(r, 5 * i + Math.random() * 20));
    }
  }
}

function toNodeView(n: nodes.NodeRow, used?: { cpu: number; memory_mb: number; disk_mb: number }): NodeView {
  return {
    id: n.id,
    name: n.name,
    status: n.status,
    cpu: n.cpu,
    memory_mb: n.memory_mb,
    disk_mb: n.disk_mb,
    used: used ?? { cpu: 0, memory_mb: 0, disk_mb: 0 },
    isolation: n.capabilities.isolation ?? ['process'],
    attributes: {
      ...(n.capabilities.attributes ?? {}),
      host: n.name,
      os: n.capabilities.os,
      arch: n.capabilities.arch,
    },
  };
}

/** The workload rows for a job version (all instances, or the given ones). */
function newWorkloads(
  jobId: string,
  version: number,
  spec: JobSpec,
  restarts: number,
  instances?: number[],
): wl.NewWorkload[] {
  const r = spec.task.resources ?? DEFAULT_RESOURCES;
  const list = instances ?? Array.from({ length: spec.instances }, (_, i) => i);
  return list.map((instance) => ({
    id: `${spec.name}-${instance}-${randomBytes(4).toString('hex')}`,
    job_id: jobId,
    job_version: version,
    instance,
    cpu: r.cpu,
    memory_mb: Math.ceil(r.ram / MB),
    disk_mb: Math.ceil(r.disk / MB),
    isolation: spec.mxc.isolation,
    restarts,
  }));
}

export { MxcError };
