/**
 * The coordinator's domain service and the façade the API calls: accepts jobs, requests scheduling
 * passes and rollout steps, talks to connected agents and tracks their liveness in memory. Its
 * background work runs as kinds of one evaluation queue (engine/) on an injectable clock; the work
 * itself lives in job-submit, placement, prewarm, cron-runner, agent-reports, liveness and workload-changes.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { type JobPlan, JobPlanRequest } from '../spec/api.js';
import { describeIssues, JobSpec, jobKey } from '../spec/job.js';
import { type AgentMessage, MAX_STORE_PATHS_PER_NODE } from '../spec/messages.js';
import { type AgentReportDeps, applyStatus, reconcileAgent } from './agent-reports.js';
import type { AgentSession, ChangeEvent, CoordinatorOptions } from './coordinator-types.js';
import { collisionAction } from './core/cron.js';
import type { Preemptor } from './core/preempt.js';
import { AURORA_FLAPPING } from './core/restart.js';
import { launchDueCronJobs } from './cron-runner.js';
import { type Clock, systemClock } from './engine/clock.js';
import { EvaluationQueue } from './engine/evaluation-queue.js';
import { errors, MxcError } from './errors.js';
import { planJob } from './job-plan.js';
import { type RecordedSubmission, recordSubmission, type SubmitPlacement } from './job-submit.js';
import { judgeSilentNodes, nodeLeft, removeNodeRecord } from './liveness.js';
import { LogIntake } from './log-intake.js';
import { admitNode } from './node-identity.js';
import { HolderCache, planSubmitted, SUBMIT_PLACES_AT_MOST } from './placed-submit.js';
import {
  type ClusterSnapshot,
  clusterSnapshot,
  retryOnConflict,
  SchedulerState,
  type StartedWorkload,
  schedulePass,
} from './placement.js';
import { DEFAULT_PREEMPTION_DELAY_MS, preemptFor } from './preemption.js';
import { type PrewarmResult, prewarmJob } from './prewarm.js';
import { advanceRollouts, startRollout } from './rollout.js';
import { type StartTarget, startMessageText } from './start-message.js';
import * as commands from './store/agent-commands.js';
import * as closures from './store/closures.js';
import * as coordinatorsStore from './store/coordinators.js';
import type { Db, Queryable } from './store/db.js';
import * as jobs from './store/jobs.js';
import * as logsStore from './store/logs.js';
import * as nodes from './store/nodes.js';
import * as retention from './store/retention.js';
import * as updates from './store/updates.js';
import * as wl from './store/workloads.js';
import {
  newWorkloads,
  queueStops,
  replaceWorkloads,
  rolloutHost,
  stopJobWorkloads,
  stopWorkloads,
} from './workload-changes.js';

export type { AgentSession, ChangeEvent, CoordinatorOptions };

/** The kinds of background work, each coalescing on its own (see engine/evaluation-queue). */
type WorkKindName = 'schedule' | 'sweep' | 'rollout' | 'drain' | 'poll' | 'liveness' | 'cron' | 'retention';

/** How often the leader runs a scheduling pass that no event asked for (see the `sweep` work). */
const SWEEP_MS = 10_000;
/**
 * A log stream's mark is kept this long after its last message: an agent resends only what a
 * coordinator had not acknowledged when its socket ended, moments later, never a week later.
 */
const LOG_STREAM_KEPT_MS = 7 * 86_400_000;

/**
 * Outbox rows taken and sent per round of a drain (an apply transaction writes one row of starts per
 * node): a whole pass's starts in one round, so each agent gets them in one write.
 */
const DRAIN_BATCH = 5000;

/** A cached job version: its spec once read, and its JSON text once a start carried it. */
interface SpecEntry {
  promise: Promise<JobSpec | null>;
  value?: JobSpec | null;
  json?: string;
}

export class Coordinator {
  readonly events = new EventEmitter();
  private readonly sessions = new Map<string, AgentSession>();
  /** The socket-ownership epoch of each local session (node_sessions.conn_epoch). */
  private readonly sessionEpochs = new Map<AgentSession, number>();
  /** Sockets whose reports were dropped as superseded (logged once each). */
  private readonly supersededSessions = new WeakSet<AgentSession>();
  /**
   * Sessions whose hello is being reconciled: no drain takes their outbox rows meanwhile (a start
   * queued before the hello would go out while its workload still reads `starting`, though the agent
   * said it runs it); the reconcile's own drain follows it.
   */
  private readonly reconciling = new Set<AgentSession>();
  /**
   * The workloads whose start a session's hello settled (the agent runs them, or the reconcile sent
   * their start): a start queued for one of them before the hello is not sent again on that session.
   * A workload is placed once, so it never needs a second start on one connection.
   */
  private readonly settledOnHello = new WeakMap<AgentSession, ReadonlySet<string>>();
  /** How many store paths each node connected here holds (MAX_STORE_PATHS_PER_NODE), once known. */
  private readonly storePathCounts = new Map<string, number>();
  /** Sessions told their node's store reached MAX_STORE_PATHS_PER_NODE (said once a session). */
  private readonly storePathsFull = new WeakSet<AgentSession>();
  /** Agents' log lines into the database, each workload's log bounded. */
  private readonly logIntake: LogIntake;
  /** Monotonic time of each node's last message here, not yet written to the database. */
  private readonly unflushedSeen = new Map<string, number>();
  private closed = false;
  /** No liveness verdict before this monotonic time: one TTL after start, an election or a stall. */
  private graceUntil = 0;
  private lastTickAt = 0;
  /** Monotonic time of the last registry beat that reached the database (see releaseAgentsIfCut). */
  private lastBeatAt = 0;
  /** When releaseAgentsIfCut last looked: a look long after the one before follows a stall, not an outage. */
  private lastCutCheckAt = 0;
  private cutCheck: NodeJS.Timeout | null = null;
  /** What the agent-report handlers need from the coordinator. */
  private readonly agentDeps: AgentReportDeps;
  /** Wall, monotonic time and timers: the real clock, or a test's manual one. */
  readonly clock: Clock;
  /** Every kind of background work, coalesced: one request during a run makes exactly one re-run. */
  private readonly queue: EvaluationQueue<WorkKindName>;

  constructor(
    readonly db: Db,
    readonly log: Logger,
    readonly opts: CoordinatorOptions,
  ) {
    this.events.setMaxListeners(0);
    this.clock = opts.clock ?? systemClock;
    this.logIntake = new LogIntake(db, opts.logLinesKept);
    this.queue = new EvaluationQueue<WorkKindName>(
      {
        // A failed pass (the database away a moment, say) is retried by itself: pending workloads must
        // not wait for the next submit or agent event to be placed.
        schedule: {
          run: () => this.schedulePass(),
          failure: 'scheduling pass failed',
          retry: { firstMs: 500, maxMs: 30_000 },
        },
        // The leader's safety net: a pass every SWEEP_MS places what no event asked for (a job another
        // coordinator committed just before it died, before its own pass placed it).
        sweep: {
          run: async () => {
            if (this.isLeader()) this.requestEvaluation();
          },
          failure: 'periodic scheduling pass failed',
        },
        rollout: { run: () => this.stepRollouts(), failure: 'advancing rolling updates failed' },
        drain: {
          run: () => this.drainRequested(),
          failure: 'taking queued agent commands failed; retried at the next poll',
          level: 'warn',
        },
        // The fallback for a lost NOTIFY: every agent whose socket we hold.
        poll: {
          run: () => this.drainCommands(),
          failure: 'polling queued agent commands failed',
          level: 'warn',
        },
        liveness: { run: () => this.tick(), failure: 'liveness tick failed' },
        cron: {
          run: async () => {
            await this.runDueCronJobs();
          },
          failure: 'launching cron jobs failed',
        },
        retention: {
          run: async () => {
            if (!this.isLeader()) return;
            await this.collectGarbage();
            await coordinatorsStore.pruneCoordinators(this.db, 3_600_000);
            await logsStore.deleteStaleLogStreams(this.db, LOG_STREAM_KEPT_MS);
            await this.collectCache();
          },
          failure: 'retention pass failed',
        },
      },
      this.clock,
      log,
    );
    this.agentDeps = {
      db,
      log,
      refusedReports: new Map(),
      sessionOf: (nodeId) => this.sessions.get(nodeId),
      emit: (e) => this.emit(e),
      sendStart: (nodeId, w) => this.sendStart(nodeId, w),
      requestRolloutStep: () => this.requestRolloutStep(),
      requestEvaluation: () => this.requestEvaluation(),
      flapping: opts.flapping ?? AURORA_FLAPPING,
      wakeAt: (at) => this.wakeAt(at),
      now: () => this.clock.now(),
    };
  }

  /** How often heartbeats are flushed, the registry beaten and (on the leader) silence judged. */
  get tickMs(): number {
    return Math.max(50, Math.min(this.opts.heartbeatTtlMs / 4, 500));
  }

  /** Silence of a coordinator's registry row after which it counts as dead. */
  get coordinatorDeadMs(): number {
    return Math.max(2000, this.tickMs * 8);
  }

  /**
   * Starts the periodic work and a first scheduling pass: the liveness tick every `tickMs`; on the
   * leader, cron launches and rollout steps about once a second, a scheduling pass every 10 s and
   * retention once a minute (and at once when elected); the outbox poll every second.
   */
  start(): void {
    this.lastTickAt = this.clock.monotonic();
    this.lastBeatAt = this.lastTickAt;
    this.lastCutCheckAt = this.lastTickAt;
    // Not a queue task: the queue waits on the very database this watches.
    this.cutCheck = setInterval(() => this.releaseAgentsIfCut(), this.tickMs);
    this.cutCheck.unref();
    this.grace('coordinator started');
    this.opts.lease.events.on('elected', () => {
      this.grace('became leader');
      void this.queue.request('retention');
    });
    this.queue.every('liveness', this.tickMs);
    this.queue.every('cron', 1000);
    this.queue.every('rollout', 1000);
    this.queue.every('retention', 60_000);
    this.queue.every('sweep', SWEEP_MS);
    // Outbox: NOTIFY wakes us when a command for one of our agents is queued; polling covers a lost one.
    this.queue.every('poll', 1000);
    void this.db
      .listen(commands.COMMANDS_CHANNEL, (nodeId) => {
        if (this.sessions.has(nodeId)) this.deliverQueued([nodeId]);
      })
      .then((unlisten) => {
        if (this.closed) void unlisten();
        else this.unlistenCommands = unlisten;
      })
      .catch((err) => this.log.warn({ err }, 'LISTEN for agent commands failed; polling only'));
    void this.queue.request('retention');
    this.requestEvaluation();
  }

  private unlistenCommands: (() => Promise<void>) | null = null;

  /** Gives agents one TTL before any liveness verdict (Nomad's failover heartbeat TTL). */
  private grace(why: string) {
    this.graceUntil = Math.max(this.graceUntil, this.clock.monotonic() + this.opts.heartbeatTtlMs);
    this.log.info({ why, ms: this.opts.heartbeatTtlMs }, 'agents get one heartbeat TTL of grace');
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.cutCheck) clearInterval(this.cutCheck);
    const stopped = this.queue.close();
    for (const s of this.sessions.values()) s.close(1001, 'coordinator shutting down');
    this.sessions.clear();
    await stopped;
    await Promise.all(this.forgetting);
    await this.unlistenCommands?.().catch(() => {});
    await this.flushSeen().catch(() => {});
    await coordinatorsStore.removeCoordinator(this.db, this.opts.id).catch(() => {});
  }

  isLeader(): boolean {
    return this.opts.lease.isLeader();
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
    return this.submitSpec(parsed.data);
  }

  /** `submitJob` of a spec already validated against JobSpec (the route's body schema did it). */
  async submitSpec(
    spec: JobSpec,
  ): Promise<{ job: jobs.JobRow; version: number; changed: boolean; workloads: string[] }> {
    const closure = (await this.opts.closureOf?.(spec)) ?? [];
    const key = jobKey(spec);
    const placement = await this.submitPlacement(spec, closure);
    // A small new job is placed by its own insert when the plan on the view finds room (submitPlacement).
    // Otherwise a new job's pass is asked for as its insert is sent: the pass reads the cluster meanwhile
    // and plans the new workloads from memory once the insert has committed (no wake-up after the commit,
    // no read of what was just written). Its spec and closure are known here, so it reads neither.
    let passFor: string | null = null;
    let res: RecordedSubmission;
    try {
      res = await recordSubmission(
        this.db,
        key,
        spec,
        closure,
        new Date(this.clock.now()),
        (insert) => {
          if (insert.workloads.length === 0) return;
          this.rememberSpec(insert.jobId, 1, spec);
          this.schedulerState.primeJob(insert.jobId, 1, spec, closure);
          this.schedulerState.expectNewJob(insert);
          passFor = insert.jobId;
          this.requestEvaluation();
        },
        placement ?? undefined,
      );
    } finally {
      if (placement) this.submitsPlacing--;
    }
    const passAsked = res.job.id === passFor;
    // Placed by its own insert, every workload: no pass to ask for.
    const allPlaced = res.placed.length > 0 && res.placed.length === res.workloads.length;
    if (res.changed && !passAsked) {
      // The pass that follows needs neither read back: versions never change once written.
      this.rememberSpec(res.job.id, res.version, spec);
      if (!allPlaced) this.schedulerState.primeJob(res.job.id, res.version, spec, closure);
    }
    if (res.placed.length > 0) {
      // Sent in the turn of the event loop that handled the commit, as a pass's starts are.
      for (const p of res.placed) this.schedulerState.view.took(p.nodeId, p.workload, res.viewReads!);
      const commandOf = new Map(res.placed.map((p) => [p.nodeId, p.commandId]));
      this.placedStarted(
        res.placed.map((p) => ({
          ...p.workload,
          not_before: null,
          restart_delay_ms: 0,
          status: 'starting' as const,
          node_id: p.nodeId,
        })),
        commandOf,
      );
    }
    // The guard refused part of the plan: the view was stale, and a pass places what is left.
    if (res.placed.length < res.planned) this.schedulerState.view.invalidate();
    this.announceStops(res.stopped);
    if (res.changed) {
      this.log.info({ job: key, version: res.version, workloads: res.workloads.length }, 'job submitted');
      this.emit({ kind: 'job', id: res.job.id });
      // Like Nomad's job register, submit returns once the job is committed; placement follows in the
      // next scheduling pass (coalesced with other submits), visible through the workloads' status,
      // unless the insert placed every workload itself.
      if (!passAsked && !allPlaced) this.requestEvaluation();
      if (res.rolling) this.requestRolloutStep();
    }
    if (passAsked) {
      // The pass was waiting for this commit: its apply is sent before the reply is built (the reply's
      // serialisation otherwise ran first; start bench: submit → placed p50 0.25 ms less).
      await new Promise((resolve) => setImmediate(resolve));
    } else if (res.placed.length > 0) {
      // The events of its placements go out before the reply is built: a chunk of the events stream is
      // held (corked) until the next tick, which otherwise came after the reply's serialisation and write.
      await new Promise((resolve) => process.nextTick(resolve));
    }
    const { stopped: _s, ...out } = res;
    return out;
  }

  /** A dry run of `submitJob`: what it would do (`mxc jobs plan`); changes nothing. */
  async planJob(body: unknown): Promise<z.infer<typeof JobPlan>> {
    const req = JobPlanRequest.safeParse(body);
    if (!req.success) throw errors.validation('plan request', describeIssues(req.error));
    const parsed = JobSpec.safeParse(req.data.spec);
    if (!parsed.success) throw errors.validation('job spec', describeIssues(parsed.error));
    const spec = parsed.data;
    let closure: closures.ClosurePath[] | null = req.data.closure ?? null;
    let missing: string[] = [];
    try {
      const cached = (await this.opts.closureOf?.(spec)) ?? null;
      closure ??= cached;
    } catch (err) {
      const m = (err as MxcError).details as { missing?: string[] } | undefined;
      if ((err as MxcError).code !== 'CLOSURE_INCOMPLETE' || !m?.missing) throw err;
      missing = m.missing;
    }
    return planJob(this.db, { spec, closure, missing }, this.opts.strategy);
  }

  async stopJob(idOrKey: string): Promise<{ job: jobs.JobRow; stopped: number }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    const stopped = await this.db.tx(async (q) => {
      // After a restart or a run holding the job: what they created is stopped too.
      await jobs.lockJobState(q, job.id);
      await jobs.setJobStatus(q, job.id, 'stopped');
      await updates.cancelRolling(q, job.id, 'job stopped');
      await jobs.setNextRun(q, job.id, null);
      return stopJobWorkloads(q, job.id, 'job stopped');
    });
    this.announceStops(stopped);
    this.emit({ kind: 'job', id: job.id });
    return { job: { ...job, status: 'stopped' }, stopped: stopped.length };
  }

  /**
   * Locks the job for the transaction and refuses (409) when it changed since `job` was read: stopped
   * (JOB_STOPPED) or given another version (JOB_CHANGED) by a request that committed in between.
   * Concurrent restarts and runs of one job then take turns, and none outlives a stop.
   */
  private async stillAsRead(q: Queryable, job: jobs.JobRow): Promise<void> {
    const now = await jobs.lockJobState(q, job.id);
    if (!now) throw errors.notFound('job', job.key);
    if (now.status !== 'active')
      throw errors.conflict('JOB_STOPPED', `job ${job.key} is stopped; submit it again to run it`);
    if (now.current_version !== job.current_version)
      throw errors.conflict(
        'JOB_CHANGED',
        `job ${job.key} moved to version ${now.current_version} meanwhile; look at it again (mxc jobs show ${job.key})`,
      );
  }

  /**
   * Restarts a job's workloads without a config change: batch by batch through the rollout machinery
   * when the job has an update_config, else all at once.
   */
  async restartJob(idOrKey: string): Promise<{ job: jobs.JobRow; rolling: boolean; workloads: string[] }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    if (job.status !== 'active')
      throw errors.conflict('JOB_STOPPED', `job ${job.key} is stopped; submit it again to run it`);
    const spec = (await this.specOf(job.id, job.current_version))!;
    if (spec.cron_schedule) {
      throw errors.conflict(
        'CRON_JOB',
        `job ${job.key} runs on its schedule; there is nothing to restart between runs`,
      );
    }
    const res = await this.db.tx(async (q) => {
      await this.stillAsRead(q, job);
      const live = await wl.listWorkloads(q, { jobId: job.id, status: ['starting', 'running'], limit: 1 });
      if (spec.update_config && live.length > 0) {
        await startRollout(q, job.id, job.current_version, job.current_version, 'restart');
        return { rolling: true, workloads: [] as string[], stops: [] as wl.WorkloadRow[] };
      }
      await updates.cancelRolling(q, job.id, 'superseded by a restart');
      const stops = await stopJobWorkloads(q, job.id, 'restarted');
      const created = newWorkloads(job.id, job.current_version, spec, 0);
      await wl.insertWorkloads(q, created, 'restart');
      return { rolling: false, workloads: created.map((w) => w.id), stops };
    });
    this.announceStops(res.stops);
    this.emit({ kind: 'job', id: job.id });
    if (res.rolling) this.requestRolloutStep();
    else this.requestEvaluation();
    return { job, rolling: res.rolling, workloads: res.workloads };
  }

  /**
   * Pauses, resumes or aborts a job's rolling update (Aurora's `update pause|resume|abort`): paused, no
   * batch moves on; aborted, the instances stay on the versions they have and the update ends.
   */
  async moveJobUpdate(
    idOrKey: string,
    action: 'pause' | 'resume' | 'abort',
    by: string,
  ): Promise<{ job: jobs.JobRow; update: updates.UpdateRow }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    const [from, to, message]: [updates.UpdateStatus[], updates.UpdateStatus, string] =
      action === 'pause'
        ? [['rolling'], 'paused', `paused by ${by}`]
        : action === 'resume'
          ? [['paused'], 'rolling', `resumed by ${by}`]
          : [['rolling', 'paused'], 'cancelled', `aborted by ${by}; instances stay on the versions they run`];
    const update = await updates.moveUpdate(this.db, job.id, from, to, message);
    if (!update)
      throw errors.conflict(
        'NO_UPDATE',
        `job ${job.key} has no ${from.join(' or ')} update to ${action}; see its updates with \`mxc jobs show ${job.key}\``,
      );
    this.emit({ kind: 'job', id: job.id });
    if (action === 'resume') this.requestRolloutStep();
    return { job, update };
  }

  /**
   * Launches a cron job's run now, outside its schedule (Aurora's `cron start`), under its collision
   * policy: KILL_EXISTING stops a previous run still going, CANCEL_NEW refuses (409), RUN_OVERLAP lets
   * both run. The schedule's next run stays as it was.
   */
  async runCronNow(
    idOrKey: string,
    by: string,
  ): Promise<{ job: jobs.JobRow; workloads: string[]; stopped: number }> {
    const job = await jobs.getJob(this.db, idOrKey);
    if (!job) throw errors.notFound('job', idOrKey);
    if (job.status !== 'active')
      throw errors.conflict('JOB_STOPPED', `job ${job.key} is stopped; submit it again to run it`);
    const spec = (await this.specOf(job.id, job.current_version))!;
    if (!spec.cron_schedule)
      throw errors.conflict('NOT_CRON', `job ${job.key} has no cron_schedule; it runs when submitted`);
    const res = await this.db.tx(async (q) => {
      await this.stillAsRead(q, job);
      const live = await wl.listWorkloads(q, {
        jobId: job.id,
        status: ['pending', 'starting', 'running'],
        limit: 100_000,
      });
      const action = collisionAction(spec.cron_collision_policy, live.length > 0);
      if (action === 'skip')
        throw errors.conflict(
          'RUN_IN_PROGRESS',
          `job ${job.key}'s previous run is still going and its cron_collision_policy is CANCEL_NEW`,
        );
      const kill = action === 'kill_and_launch';
      // The agents are told to stop what runs; what was still pending just ends.
      const stops = kill
        ? await stopJobWorkloads(q, job.id, `a run started by ${by} replaces it (KILL_EXISTING)`)
        : [];
      const created = newWorkloads(job.id, job.current_version, spec, 0);
      await wl.insertWorkloads(q, created, `cron run started now by ${by}`);
      return { workloads: created.map((w) => w.id), stops, stopped: kill ? live.length : 0 };
    });
    this.announceStops(res.stops);
    this.emit({ kind: 'job', id: job.id });
    this.requestEvaluation();
    return { job, workloads: res.workloads, stopped: res.stopped };
  }

  async stopWorkload(id: string): Promise<wl.WorkloadRow> {
    const stopped = await this.db.tx(async (q) => {
      const w = await wl.getWorkload(q, id);
      if (!w) throw errors.notFound('workload', id);
      let ended: wl.WorkloadRow = w;
      const moved = await wl.transitionWith(q, w, (cur) => {
        ended = cur;
        return cur.status === 'pending'
          ? { to: 'stopped', reason: 'stopped by request' }
          : cur.status === 'starting' || cur.status === 'running'
            ? { to: 'stopping', reason: 'stopped by request' }
            : null;
      });
      if (moved?.status === 'stopping') await queueStops(q, [moved]);
      if (!moved) {
        throw errors.conflict(
          'NOT_STOPPABLE',
          `workload ${id} is ${ended.status}; only pending, starting or running workloads can be stopped`,
        );
      }
      return moved.status === 'stopping' ? [moved] : [];
    });
    this.announceStops(stopped);
    const w = await wl.getWorkload(this.db, id);
    this.emit({ kind: 'workload', id, status: w?.status });
    return w!;
  }

  /** After a commit that moved workloads to stopping (their stops queued with it): tell views, deliver. */
  private announceStops(ws: wl.WorkloadRow[]) {
    for (const w of ws) this.emit({ kind: 'workload', id: w.id, status: 'stopping' });
    this.deliverQueued(ws.flatMap((w) => (w.node_id ? [w.node_id] : [])));
  }

  /**
   * Pre-warm: tells the nodes where a job's workloads run or would go to realise its closure now, so
   * a later rollout does not wait for downloads. `body` may carry the next version's spec.
   */
  async prewarm(idOrKey: string, body?: unknown): Promise<PrewarmResult> {
    return prewarmJob(
      {
        db: this.db,
        strategy: this.opts.strategy,
        closureOf: this.opts.closureOf,
        specOf: (jobId, version) => this.specOf(jobId, version),
        deliverQueued: (nodeIds) => this.deliverQueued(nodeIds),
      },
      idOrKey,
      body,
    );
  }

  // ---------------------------------------------------------------- rolling updates

  /** Advances rolling updates soon; concurrent requests coalesce. */
  requestRolloutStep(): void {
    void this.queue.request('rollout');
  }

  /** One step of every rolling update, in one transaction (leader only, fenced). */
  async stepRollouts(now = new Date(this.clock.now())): Promise<void> {
    if (!this.isLeader()) return;
    const r = await retryOnConflict(() =>
      this.db.tx(async (q) => {
        await this.opts.lease.fence(q);
        return advanceRollouts(q, rolloutHost, now);
      }),
    );
    this.announceStops(r.stops);
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
      const moved = await stopWorkloads(q, active, `node ${node.name} draining`);
      await replaceWorkloads(q, moved, `moved off draining node ${node.name}`);
      return moved;
    });
    this.announceStops(moved);
    this.emit({ kind: 'node', id: node.id, status: 'draining' });
    this.requestEvaluation();
    return (await nodes.getNode(this.db, node.id))!;
  }

  /**
   * Removes a node (an operator's decision, e.g. after reinstalling a machine): its active workloads
   * are lost and replaced, and the next hello under its name is a first join with a new node secret.
   */
  async removeNode(idOrName: string): Promise<{ id: string; name: string; lost: number }> {
    const node = await nodes.getNode(this.db, idOrName);
    if (!node) throw errors.notFound('node', idOrName);
    const lost = await this.db.tx((q) => removeNodeRecord(q, node, `node ${node.name} removed`));
    this.sessions.get(node.id)?.close(4410, 'node removed by an operator');
    this.sessions.delete(node.id);
    this.log.warn({ node: node.name, lost: lost.length }, 'node removed');
    this.emit({ kind: 'node', id: node.id });
    for (const w of lost) this.emit({ kind: 'workload', id: w.id, status: 'lost' });
    this.requestEvaluation();
    return { id: node.id, name: node.name, lost: lost.length };
  }

  /** Ends a drain: the node takes work again. */
  async undrainNode(idOrName: string): Promise<nodes.NodeRow> {
    const node = await nodes.getNode(this.db, idOrName);
    if (!node) throw errors.notFound('node', idOrName);
    const status = (await this.connectedNodeIds()).has(node.id) ? 'ready' : 'down';
    const row = (await nodes.setNodeStatus(this.db, node.id, status))!;
    this.emit({ kind: 'node', id: node.id, status });
    this.requestEvaluation();
    return row;
  }

  // ---------------------------------------------------------------- scheduling

  /** Schedules soon; concurrent requests coalesce into one more pass. */
  requestEvaluation(): void {
    void this.queue.request('schedule');
  }

  /**
   * Runs a scheduling pass (or waits for the running one and runs once more); resolves once a pass
   * that began after this call has ended. A failed pass is logged, not thrown.
   */
  evaluate(): Promise<void> {
    return this.queue.request('schedule');
  }

  /** Schedules a pass at wall time `at` (restarts waiting out their back-off); keeps only the earliest wake. */
  private wakeAt(at: number): void {
    this.queue.requestAt('schedule', at);
  }

  /** The cluster view and job-version caches the scheduling passes keep between them. */
  private readonly schedulerState = new SchedulerState();

  private async schedulePass(): Promise<void> {
    await schedulePass({
      state: this.schedulerState,
      now: () => this.clock.now(),
      wakeAt: (at) => this.wakeAt(at),
      db: this.db,
      log: this.log,
      strategy: this.opts.strategy,
      specOf: (jobId, version) => this.specOf(jobId, version),
      holder: this.opts.id,
      started: (ws, commandOf) => this.placedStarted(ws, commandOf),
      preempt: this.preemptionDelayMs() === null || !this.isLeader() ? undefined : (c) => this.preempt(c),
    });
  }

  /** The preemption delay in ms, null when preemption is off. */
  private preemptionDelayMs(): number | null {
    return this.opts.preemptionDelayMs === undefined
      ? DEFAULT_PREEMPTION_DELAY_MS
      : this.opts.preemptionDelayMs;
  }

  /** The leader's preemptions after a pass (preemption.ts). */
  private preempt(candidates: Preemptor[]): Promise<{ reserved: string[]; due: number }> {
    return preemptFor(
      {
        db: this.db,
        log: this.log,
        delayMs: this.preemptionDelayMs()!,
        now: () => this.clock.now(),
        nodes: () => this.schedulerState.view.refresh(this.db),
        stopped: (ws) => this.announceStops(ws),
      },
      candidates,
    );
  }

  /**
   * After a commit that moved workloads to starting (a pass's apply, a submit's placed insert), in the
   * same turn of the event loop: tell views, and send the starts of the agents whose sockets we hold.
   */
  private placedStarted(ws: StartedWorkload[], commandOf: ReadonlyMap<string, number>): void {
    const byNode = new Map<string, StartedWorkload[]>();
    for (const a of ws) {
      this.emit({ kind: 'workload', id: a.id, status: 'starting' });
      const list = byNode.get(a.node_id);
      if (list) list.push(a);
      else byNode.set(a.node_id, [a]);
    }
    const toDrain: string[] = [];
    for (const [nodeId, list] of byNode) {
      if (!this.sessions.has(nodeId)) continue; // its holder takes the starts (NOTIFY, poll)
      if (this.sendPlacedStarts(nodeId, list, commandOf.get(nodeId)!)) continue;
      for (const a of list) void this.specOf(a.job_id, a.job_version).catch(() => {}); // read while taken
      toDrain.push(nodeId);
    }
    this.deliverQueued(toDrain);
  }

  /** Submits placing their new job's workloads in their own insert right now (see submitPlacement). */
  private submitsPlacing = 0;
  /**
   * Nodes whose hello was answered while the node view did not hold them: a submit placing its own job
   * would rank only the nodes the view knows (the newcomer may hold the closure), so it leaves the job to
   * the pass the join asks for until the view has read them.
   */
  private readonly joinedOutsideView = new Set<string>();

  /** Whether a node that joined is still missing from the view (those the view has read are forgotten). */
  private viewMissesJoinedNode(): boolean {
    for (const id of this.joinedOutsideView)
      if (this.schedulerState.view.capabilitiesOf(id) !== undefined || !this.sessions.has(id))
        this.joinedOutsideView.delete(id);
    return this.joinedOutsideView.size > 0;
  }
  /** Who holds which closure paths, for those submits. */
  private readonly holders = new HolderCache();

  /**
   * Whether a submit places its new job itself, in its insert (placed-submit.ts), and how: only a small
   * job, not a cron job, while no pass runs or is owed (older pending work is placed first) and no other
   * submit is placing (each plans on the view without the other's placements). Who holds the closure
   * comes from the holder cache (read when unknown or old), for the locality a pass would score. Counted
   * in submitsPlacing when not null.
   */
  private async submitPlacement(
    spec: JobSpec,
    closure: closures.ClosurePath[],
  ): Promise<SubmitPlacement | null> {
    if (
      spec.cron_schedule ||
      spec.instances === 0 ||
      spec.instances > SUBMIT_PLACES_AT_MOST ||
      this.submitsPlacing > 0 ||
      this.queue.isRunning('schedule') ||
      this.schedulerState.view.current() === null ||
      this.viewMissesJoinedNode()
    ) {
      return null;
    }
    this.submitsPlacing++;
    try {
      const paths = closure.map((p) => p.path);
      let held = this.holders.lookup(paths, this.clock.monotonic());
      if (!held) {
        const mark = this.holders.mark();
        held = await closures.holders(this.db, paths);
        this.holders.record(paths, held, this.clock.monotonic(), mark);
      }
      return {
        plan: (created) =>
          planSubmitted(this.schedulerState.view, spec, closure, created, held, this.opts.strategy),
        holder: this.opts.id,
        failed: (err) =>
          this.log.warn({ err, job: jobKey(spec) }, 'a submit could not place its job; a pass places it'),
      };
    } catch (err) {
      this.submitsPlacing--;
      throw err;
    }
  }

  /** The cluster as the pure core sees it. */
  async snapshot(q: Queryable = this.db): Promise<ClusterSnapshot> {
    return clusterSnapshot(q);
  }

  // ---------------------------------------------------------------- command delivery

  /** Nodes whose queued commands to take at the next drain ('all': every socket we hold). */
  private drainTargets: Set<string> | 'all' = new Set();

  /**
   * After a commit that queued commands (or a NOTIFY saying another coordinator did): take and send
   * those of the agents whose sockets we hold. Agents held elsewhere get theirs from their holder.
   */
  private deliverQueued(nodeIds: Iterable<string>): void {
    const held = [...nodeIds].filter((id) => this.sessions.has(id));
    if (held.length > 0) void this.drainCommands(held);
  }

  /**
   * Takes the outbox commands for the agents whose sockets we hold (`nodeIds`, or all when omitted)
   * and sends them in order; requests during a drain add their nodes to one more round (the queue's
   * 'drain' kind).
   */
  drainCommands(nodeIds?: Iterable<string>): Promise<void> {
    if (nodeIds === undefined) this.drainTargets = 'all';
    else if (this.drainTargets !== 'all') for (const id of nodeIds) this.drainTargets.add(id);
    return this.queue.request('drain');
  }

  /** One round of the 'drain' kind: the nodes asked for since the last round. */
  private async drainRequested(): Promise<void> {
    const targets = this.drainTargets;
    this.drainTargets = new Set();
    if (targets === 'all' || targets.size > 0) await this.drainOnce(targets);
  }

  private async drainOnce(targets: Set<string> | 'all') {
    const nodeIds = targets === 'all' ? [...this.sessions.keys()] : [...targets];
    const held = nodeIds.flatMap((nodeId) => {
      const session = this.sessions.get(nodeId);
      const epoch = session && !this.reconciling.has(session) ? this.sessionEpochs.get(session) : undefined;
      return epoch === undefined ? [] : [{ nodeId, epoch }];
    });
    if (held.length === 0) return;
    for (;;) {
      const rows = await commands.takeCommands(this.db, this.opts.id, held, DRAIN_BATCH);
      // Specs first (cached; read concurrently), then every message in outbox order: a workload's
      // start always goes out before its stop.
      const specs = new Map<string, JobSpec | null>();
      await Promise.all(
        rows.map(async (r) => {
          if (r.workload?.status !== 'starting') return;
          const k = `${r.workload.job_id}/${r.workload.job_version}`;
          specs.set(k, await this.specOf(r.workload.job_id, r.workload.job_version).catch(() => null));
        }),
      );
      for (const r of rows) {
        // Sent straight after its placement's commit (and deleted here instead of by forgetSent).
        if (this.sentDirectly.has(r.id)) continue;
        const session = this.sessions.get(r.node_id);
        if (!session) continue; // gone meanwhile: reconcile on its reconnect repairs it
        if (r.message.type !== 'start_ref') {
          session.send(r.message);
          continue;
        }
        const w = r.workload;
        // Stopped, failed or moved since it was queued: nothing to start (a queued stop follows).
        if (!w || w.status !== 'starting' || w.node_id !== r.node_id) continue;
        // Queued before the agent's hello, which settled it: the agent has it, or was just sent it.
        if (this.settledOnHello.get(session)?.has(r.message.workload_id)) continue;
        const spec = specs.get(`${w.job_id}/${w.job_version}`);
        if (!spec) {
          this.log.error(
            { workload: r.message.workload_id },
            'no spec for a queued start; sent on reconnect',
          );
          continue;
        }
        session.sendText(this.startText({ ...w, id: r.message.workload_id }, spec));
      }
      for (const r of rows) this.sentDirectly.delete(r.id); // taken: nothing left for forgetSent
      if (rows.length < DRAIN_BATCH) return;
    }
  }

  /** Sends a start over our own socket to the agent (reconcile on hello); nothing when we hold none. */
  private sendStart(nodeId: string, w: wl.WorkloadRow) {
    const session = this.sessions.get(nodeId);
    if (!session) return;
    void this.specOf(w.job_id, w.job_version)
      .then((spec) => {
        if (spec) session.sendText(this.startText(w, spec));
      })
      .catch((err) =>
        this.log.error({ err, workload: w.id }, 'could not send a start; it is sent again on reconnect'),
      );
  }

  /**
   * Job versions never change once written, so they are cached (`value` once read; `json`, its text,
   * once a start carried it).
   */
  private readonly specs = new Map<string, SpecEntry>();
  private specOf(jobId: string, version: number): Promise<JobSpec | null> {
    const k = `${jobId}/${version}`;
    let e = this.specs.get(k);
    if (!e) {
      const entry: SpecEntry = {
        promise: jobs.getJobVersion(this.db, jobId, version).then((v) => {
          entry.value = v?.spec ?? null;
          return entry.value;
        }),
      };
      entry.promise.catch(() => this.specs.delete(k));
      if (this.specs.size > 10_000) this.specs.clear();
      this.specs.set(k, entry);
      e = entry;
    }
    return e.promise;
  }

  /** The JSON text of a cached spec (`jobId/version`), serialised once; undefined when not in memory. */
  private specText(key: string): string | undefined {
    const e = this.specs.get(key);
    if (!e?.value) return undefined;
    e.json ??= JSON.stringify(e.value);
    return e.json;
  }

  /** A start's text, around its job version's spec serialised once (cached with the spec). */
  private startText(w: StartTarget & { job_version: number }, spec: JobSpec): string {
    return startMessageText(w, this.specText(`${w.job_id}/${w.job_version}`) ?? JSON.stringify(spec));
  }

  /** A spec this coordinator just stored: its own passes and sends need not read it back. */
  private rememberSpec(jobId: string, version: number, spec: JobSpec): void {
    if (this.specs.size > 10_000) this.specs.clear();
    this.specs.set(`${jobId}/${version}`, { promise: Promise.resolve(spec), value: spec });
  }

  // ---------------------------------------------------------------- starts sent after the commit

  /**
   * Outbox rows this coordinator sent itself right after the placement that queued them committed: a
   * drain that takes one before it is deleted skips it.
   */
  private readonly sentDirectly = new Set<number>();
  /** Sent rows whose delete is owed (one statement for a pass's worth). */
  private unforgotten: { id: number; nodeId: string; epoch: number }[] = [];

  /**
   * Sends the starts of the workloads just placed on an agent whose socket we hold (all of one outbox
   * row, `commandId`), from what the pass already has (the specs cached, the rows it moved), without
   * taking the row first; the row is deleted afterwards, fenced by the socket epoch. Called in the turn
   * of the event loop that handled the commit, so nothing queued after the placement (a stop) can have
   * been sent before these starts. Returns false, sending nothing, when a spec is not in memory or the
   * agent's hello is being reconciled: the drain sends them.
   */
  private sendPlacedStarts(nodeId: string, ws: StartedWorkload[], commandId: number): boolean {
    const session = this.sessions.get(nodeId);
    const epoch = session && this.sessionEpochs.get(session);
    // An agent whose hello is being reconciled gets its starts from the drain that follows.
    if (!session || epoch === undefined || this.reconciling.has(session)) return false;
    const texts: string[] = [];
    let last: { key: string; json: string | undefined } = { key: '', json: undefined };
    for (const w of ws) {
      const key = `${w.job_id}/${w.job_version}`;
      // A pass places a job's instances next to each other: one lookup for each run of them.
      if (key !== last.key) last = { key, json: this.specText(key) };
      if (last.json === undefined) return false;
      texts.push(startMessageText(w, last.json));
    }
    for (const text of texts) session.sendText(text);
    if (this.sentDirectly.size > 100_000) this.sentDirectly.clear();
    this.sentDirectly.add(commandId);
    if (this.unforgotten.length === 0) queueMicrotask(() => this.forgetSent());
    this.unforgotten.push({ id: commandId, nodeId, epoch });
    return true;
  }

  /**
   * Deletes the rows sent directly. A row not deleted (the socket is held elsewhere by now, or the
   * delete failed) stays: its holder sends it, and an agent answers a start it already has with its
   * status.
   */
  private forgetSent(): void {
    const sent = this.unforgotten;
    this.unforgotten = [];
    const done = this.deleteSent(sent).finally(() => this.forgetting.delete(done));
    this.forgetting.add(done);
  }

  /** Deletes of sent rows in flight (close waits for them). */
  private readonly forgetting = new Set<Promise<void>>();

  private async deleteSent(sent: { id: number; nodeId: string; epoch: number }[]): Promise<void> {
    try {
      const deleted = await commands.deleteSent(this.db, this.opts.id, sent);
      for (const id of deleted) this.sentDirectly.delete(id);
    } catch (err) {
      this.log.warn(
        { err, commands: sent.length },
        'could not delete sent start commands; a drain takes them',
      );
    }
  }

  // ---------------------------------------------------------------- agents

  /** An agent said hello: register it, then reconcile what it runs with what we want. */
  async agentConnected(
    session: AgentSession,
    hello: Extract<AgentMessage, { type: 'hello' }>,
  ): Promise<string> {
    // A refused hello (wrong or missing node secret) throws here, before anything changes. The claim
    // bumps the socket epoch, fencing out whichever coordinator held this node's socket before.
    const { node, issuedSecret, epoch } = await this.db.tx(async (q) => {
      const admitted = await admitNode(q, hello, randomUUID());
      return { ...admitted, epoch: await nodes.claimSession(q, admitted.node.id, this.opts.id) };
    });
    const previous = this.sessions.get(node.id);
    if (previous && previous !== session)
      previous.close(4000, 'replaced by a newer connection from the same node');
    this.sessions.set(node.id, session);
    this.sessionEpochs.set(session, epoch);
    this.reconciling.add(session);
    try {
      if (this.schedulerState.view.capabilitiesOf(node.id) === undefined) this.joinedOutsideView.add(node.id);
      if (hello.store_paths) {
        this.storePathCounts.set(node.id, await closures.setNodePaths(this.db, node.id, hello.store_paths));
        this.holders.clear();
      } else this.storePathCounts.delete(node.id);
      session.send({
        type: 'welcome',
        node_id: node.id,
        heartbeat_interval_ms: this.opts.heartbeatIntervalMs,
        ...(issuedSecret ? { node_secret: issuedSecret } : {}),
        ...(session.logStream ? { log_acks: true as const } : {}),
      });
      this.log.info({ node: node.name, id: node.id }, 'agent connected');
      this.settledOnHello.set(session, await reconcileAgent(this.agentDeps, node, hello.running));
    } finally {
      this.reconciling.delete(session);
    }
    this.log.debug({ node: node.name, id: node.id }, 'agent hello reconciled');
    // What was queued while the agent was away or connected elsewhere.
    void this.drainCommands([node.id]);
    this.emit({ kind: 'node', id: node.id, status: node.status });
    this.requestEvaluation();
    return node.id;
  }

  /** A message from a connected agent. */
  async agentMessage(nodeId: string, msg: AgentMessage, session?: AgentSession): Promise<void> {
    if (msg.type === 'heartbeat') {
      this.markSeen(nodeId);
      return;
    }
    // Fencing: reports over a socket whose ownership epoch is no longer current (the agent has since
    // said hello to another coordinator) are stale; drop them and end that socket.
    const epoch = session ? this.sessionEpochs.get(session) : undefined;
    if (
      session &&
      (epoch === undefined || !(await nodes.holdsSession(this.db, nodeId, this.opts.id, epoch)))
    ) {
      // Said once a socket: an agent may have queued many reports before it learns it was superseded.
      if (!this.supersededSessions.has(session)) {
        this.supersededSessions.add(session);
        this.log.warn({ node: nodeId, type: msg.type }, 'dropped a report from a superseded connection');
      }
      session.close(4409, 'superseded by a newer connection of this node');
      return;
    }
    this.markSeen(nodeId);
    switch (msg.type) {
      case 'hello':
        throw errors.badRequest('hello sent twice on one connection');
      case 'store_paths':
        await this.storePathsChanged(nodeId, msg.added, msg.removed, session);
        return;
      case 'workload_status': {
        const runtime =
          msg.ports || msg.processes || msg.fetched || msg.health
            ? { ports: msg.ports, processes: msg.processes, fetched: msg.fetched, health: msg.health }
            : undefined;
        await applyStatus(
          this.agentDeps,
          nodeId,
          msg.workload_id,
          msg.status,
          msg.reason ?? `reported by agent`,
          runtime,
        );
        return;
      }
      case 'goodbye':
        await this.agentLeft(nodeId);
        return;
      case 'logs': {
        // A numbered message is acknowledged once committed: the agent keeps it until then and sends it
        // again to whichever coordinator it joins next (a coordinator killed after reading it lost it).
        if (msg.seq !== undefined && session?.logStream) {
          const n = await this.logIntake.takeNumbered(
            { stream: session.logStream, nodeId, seq: msg.seq },
            msg.workload_id,
            msg.lines,
          );
          session.send({ type: 'logs_ack', seq: msg.seq });
          if (n > 0) this.emit({ kind: 'log', id: msg.workload_id });
          return;
        }
        const w = await wl.getWorkload(this.db, msg.workload_id);
        if (!w || w.node_id !== nodeId) return;
        if ((await this.logIntake.take(w, msg.lines)) > 0) this.emit({ kind: 'log', id: msg.workload_id });
        return;
      }
    }
  }

  /**
   * A node's store changed: what it holds now is at most MAX_STORE_PATHS_PER_NODE paths. Past that its
   * further additions are not kept (said once a session, to the agent and the log): an agent cannot
   * grow the table without bound, and a node that big still ranks by what was kept.
   */
  private async storePathsChanged(
    nodeId: string,
    added: string[],
    removed: string[],
    session: AgentSession | undefined,
  ): Promise<void> {
    let count = this.storePathCounts.get(nodeId) ?? (await closures.nodePathCount(this.db, nodeId));
    const room = Math.max(0, MAX_STORE_PATHS_PER_NODE - count);
    const { added: kept, refused } = await closures.addNodePaths(this.db, nodeId, added, room);
    count += kept - (await closures.removeNodePaths(this.db, nodeId, removed));
    this.storePathCounts.set(nodeId, count);
    const full = refused > 0;
    // Which of them were kept only the database knows: the cache of holders reads it again.
    this.holders.changed(nodeId, full ? [] : added, removed);
    if (full && session && !this.storePathsFull.has(session)) {
      this.storePathsFull.add(session);
      const message = `a node's store is known up to ${MAX_STORE_PATHS_PER_NODE} paths: the paths reported past that are not kept (placement ranks this node by the ones kept)`;
      this.log.warn({ node: nodeId, code: 'STORE_PATHS_LIMIT', paths: count }, message);
      session.send({ type: 'error', code: 'STORE_PATHS_LIMIT', message });
    }
    this.emit({ kind: 'node', id: nodeId });
  }

  /** A clean stop of an agent: its node is down and its workloads are replaced now, not after the TTL. */
  private async agentLeft(nodeId: string): Promise<void> {
    const node = await nodes.getNode(this.db, nodeId);
    if (!node) return;
    const lost = await nodeLeft(this.db, node);
    this.log.info({ node: node.name, replaced: lost.length }, 'agent said goodbye');
    this.emit({ kind: 'node', id: node.id, status: 'down' });
    for (const w of lost) this.emit({ kind: 'workload', id: w.id, status: 'lost' });
    this.requestEvaluation();
  }

  agentDisconnected(nodeId: string, session: AgentSession): void {
    const epoch = this.sessionEpochs.get(session);
    this.sessionEpochs.delete(session);
    if (epoch !== undefined) void nodes.releaseSession(this.db, nodeId, this.opts.id, epoch).catch(() => {});
    if (this.sessions.get(nodeId) === session) {
      this.sessions.delete(nodeId);
      this.storePathCounts.delete(nodeId);
      // What we heard last is written now, so the leader's clock starts from the real last heartbeat.
      void this.flushSeen().catch(() => {});
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

  /** Nodes connected to any live coordinator (ours, or held by another per node_sessions). */
  async connectedNodeIds(): Promise<Set<string>> {
    const held = await nodes.heldNodeIds(this.db, this.coordinatorDeadMs);
    for (const id of this.sessions.keys()) held.add(id);
    return held;
  }

  private markSeen(nodeId: string) {
    this.unflushedSeen.set(nodeId, this.clock.monotonic());
  }

  /**
   * Writes the batched last-seen times; closes local sockets of nodes the leader declared down, and of
   * nodes an operator removed through another coordinator (their rows are gone).
   */
  private async flushSeen() {
    if (this.unflushedSeen.size === 0) return;
    const now = this.clock.monotonic();
    const seen = [...this.unflushedSeen].map(([id, at]) => ({ id, ageMs: now - at }));
    this.unflushedSeen.clear();
    const rows = await nodes.touchNodes(this.db, seen);
    const present = new Set(rows.map((r) => r.id));
    for (const { id } of seen) {
      if (present.has(id)) continue;
      // Removed elsewhere: the agent's next hello is a first join, and what it still runs is stopped then.
      this.sessions.get(id)?.close(4410, 'node removed by an operator');
      this.sessions.delete(id);
    }
    for (const r of rows) {
      if (r.status !== 'down') continue;
      // Declared down (while silent, or by a leader that could not hear us): the agent says hello again.
      this.sessions.get(r.id)?.close(4001, 'node was declared down; reconnect');
      this.sessions.delete(r.id);
    }
  }

  /**
   * A coordinator whose registry beats have not reached the database for half a heartbeat TTL closes its
   * agents' sockets (1011), so they join another coordinator before the leader, which counts their
   * silence from this coordinator's last beat, declares them down and starts their workloads elsewhere:
   * held here, they kept running beside their replacements, and the stops for them waited in this
   * coordinator's outbox. A lone coordinator's agents come back once its database does.
   */
  private releaseAgentsIfCut(): void {
    const now = this.clock.monotonic();
    const sinceCheck = now - this.lastCutCheckAt;
    this.lastCutCheckAt = now;
    // The event loop stalled: the liveness tick did not run either; it runs now and beats if it can.
    if (sinceCheck > this.tickMs * 2 + 1000) return;
    const cutFor = now - this.lastBeatAt;
    if (this.closed || this.sessions.size === 0 || cutFor <= this.opts.heartbeatTtlMs / 2) return;
    this.log.warn(
      { agents: this.sessions.size, ms: Math.round(cutFor) },
      'no registry beat has reached the database for half a heartbeat TTL: closing the agent sockets so the agents join another coordinator',
    );
    for (const s of this.sessions.values()) s.close(1011, 'this coordinator cannot reach its database');
    this.sessions.clear();
  }

  /**
   * Launches the cron jobs that are due: each run places `instances` new workloads, after applying the
   * job's collision policy to a previous run still alive (KILL_EXISTING stops it, CANCEL_NEW skips this
   * run, RUN_OVERLAP lets both run).
   */
  async runDueCronJobs(now = new Date(this.clock.now())): Promise<number> {
    if (!this.isLeader()) return 0;
    const { launched, stops } = await launchDueCronJobs(this.db, this.log, now, (q) =>
      this.opts.lease.fence(q),
    );
    this.announceStops(stops);
    if (launched > 0) this.requestEvaluation();
    return launched;
  }

  /** Runs a liveness tick soon (coalesced with the periodic one); resolves once one that began after this call has ended. */
  requestLiveness(): Promise<void> {
    return this.queue.request('liveness');
  }

  /**
   * The liveness tick: flush heartbeats, then beat the registry (in that order: the leader counts
   * silence up to our last beat); on the leader, outside grace, judge silent nodes. An event-loop
   * stall (a tick far later than its interval) grants one TTL of grace.
   */
  async tick(): Promise<void> {
    const stallMs = this.tickMs * 2 + 1000;
    const mono = this.clock.monotonic();
    const gap = mono - this.lastTickAt;
    this.lastTickAt = mono;
    if (gap > stallMs) this.grace(`event loop stalled for ${Math.round(gap)} ms`);
    await this.flushSeen();
    await coordinatorsStore.beatCoordinator(this.db, this.opts.id, this.opts.url ?? '');
    const beatAt = this.clock.monotonic();
    // The database was out of reach (restarted, say) for longer than a stall: no heartbeat heard
    // meanwhile could be stored, and the agents, let go, are still coming back (their backoff grown).
    // The silence is ours: without grace the first tick back declared every node down.
    if (beatAt - this.lastBeatAt > stallMs)
      this.grace(`no registry beat reached the database for ${Math.round(beatAt - this.lastBeatAt)} ms`);
    this.lastBeatAt = beatAt;
    // A stall (or a stuck database) between the flush and the beat: the beat claims we heard everyone
    // up to now, but heartbeats read since the flush are not written yet. Judge no one on that.
    const checkStall = () => {
      const took = this.clock.monotonic() - mono;
      if (took > stallMs) this.grace(`a liveness tick took ${Math.round(took)} ms`);
    };
    checkStall();
    if (!this.isLeader() || this.closed) return;
    await this.judgeSilence(checkStall);
  }

  /**
   * Retention (leader only): deletes ended workloads, their events and logs beyond the period or the
   * per-job count, in bounded passes. Returns how many went.
   */
  async collectGarbage(now = new Date(this.clock.now())): Promise<number> {
    if (!this.isLeader()) return 0;
    const policy = this.opts.retention ?? { periodMs: 7 * 86_400_000, perJob: 100 };
    let total = 0;
    for (let pass = 0; pass < 20; pass++) {
      const n = await this.db.tx(async (q) => {
        await this.opts.lease.fence(q);
        return retention.deleteExpiredWorkloads(q, policy, now);
      });
      total += n;
      if (n < 5000) break;
    }
    if (total > 0) this.log.info({ deleted: total }, 'deleted ended workloads past retention');
    return total;
  }

  /** Collects the cache's orphan NARs (leader only), at most once an hour. */
  private async collectCache(): Promise<void> {
    const now = this.clock.now();
    if (!this.opts.collectCache || !this.isLeader() || now < this.nextCacheCollection) return;
    this.nextCacheCollection = now + 3_600_000;
    const gone = await this.opts.collectCache();
    if (gone.length > 0) this.log.info({ deleted: gone.length }, 'deleted orphan NARs from the cache');
  }

  private nextCacheCollection = 0;

  /** Declares nodes down whose silence the database clock says exceeds the TTL (leader only). */
  private async judgeSilence(checkStall: () => void): Promise<void> {
    const downed = await judgeSilentNodes(this.db, {
      heartbeatTtlMs: this.opts.heartbeatTtlMs,
      coordinatorDeadMs: this.coordinatorDeadMs,
      // A stall anywhere in this tick, up to each verdict, grants grace and stops the verdict.
      graceRemainingMs: () => {
        checkStall();
        return this.graceUntil - this.clock.monotonic();
      },
      fence: (q) => this.opts.lease.fence(q),
    });
    for (const { node, active } of downed) {
      this.sessions.get(node.id)?.close(4001, 'heartbeat TTL expired');
      this.sessions.delete(node.id);
      this.log.warn({ node: node.name, lost: active.length }, 'node down');
      this.emit({ kind: 'node', id: node.id, status: 'down' });
      for (const w of active) this.emit({ kind: 'workload', id: w.id, status: 'lost' });
    }
    if (downed.length > 0) this.requestEvaluation();
  }
}

export { MxcError };
