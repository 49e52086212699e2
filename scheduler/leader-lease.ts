/**
 * The leader lease loop (Kubernetes' timings: 15 s lease, renew deadline 10 s, retry 2 s; scaled by
 * MXC_LEADER_LEASE): every coordinator tries to take the lease, the holder renews it and stops leader
 * work the moment a renewal fails or its deadline passes on its own monotonic clock. Leader-only
 * transactions call `fence(q)`, which re-checks holder and epoch inside the transaction.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { FailureStreak } from '../lib/failure-streak.js';
import { type Clock, systemClock, type Timer } from './engine/clock.js';
import { MxcError } from './errors.js';
import type { Db, Queryable } from './store/db.js';
import * as leader from './store/leader.js';

export const LEADER_CHANNEL = 'mxc_leader';

export interface LeaseTimings {
  leaseMs: number;
  renewDeadlineMs: number;
  retryMs: number;
}

/** Kubernetes' defaults (15/10/2 s), scaled to the given lease. */
export function leaseTimings(leaseMs = 15_000): LeaseTimings {
  return {
    leaseMs,
    renewDeadlineMs: Math.round((leaseMs * 2) / 3),
    retryMs: Math.max(50, Math.round((leaseMs * 2) / 15)),
  };
}

export const notLeader = () =>
  new MxcError(
    'NOT_LEADER',
    503,
    'this coordinator no longer holds the leader lease; the leader does this work',
  );

export class LeaderLease {
  readonly events = new EventEmitter();
  private epoch: number | null = null;
  /**
   * Whether `epoch` was announced (elected): a lease taken only after the renew deadline (the acquire
   * waited on a row lock a frozen leader held) is renewed before it is led with.
   */
  private announced = false;
  /** Monotonic time of the last successful acquire or renew. */
  private renewedAt = 0;
  /** Rounds failed in a row, and which of them are logged (see round). */
  private readonly failedRounds = new FailureStreak();
  private timer: Timer | null = null;
  private running: Promise<void> | null = null;
  private unlisten: (() => Promise<void>) | null = null;
  private stopped = false;

  constructor(
    private readonly db: Db,
    readonly holder: string,
    readonly timings: LeaseTimings,
    private readonly log: Logger,
    /** Its monotonic clock and retry timer (the coordinator's clock). */
    private readonly clock: Clock = systemClock,
  ) {}

  private mono(): number {
    return this.clock.monotonic();
  }

  /** True while we hold the lease and renewed it within the renew deadline (our monotonic clock). */
  isLeader(): boolean {
    return (
      this.epoch !== null && this.announced && this.mono() - this.renewedAt < this.timings.renewDeadlineMs
    );
  }

  /** The epoch we lead at, or null. */
  get currentEpoch(): number | null {
    return this.isLeader() ? this.epoch : null;
  }

  /** Inside a leader-only transaction: throws NOT_LEADER unless the lease is still ours at our epoch. */
  async fence(q: Queryable): Promise<void> {
    const epoch = this.currentEpoch;
    // Past the renew deadline (not leading, the lease perhaps still ours): refused, and the next round
    // renews the lease or steps down. Stepping down here, a late renewal's lease was taken again at a
    // new epoch: a second election (and a TTL of grace) for a leader no one else could have replaced.
    if (epoch === null) throw notLeader();
    if (!(await leader.holdsLease(q, this.holder, epoch, this.timings.leaseMs))) {
      if (this.epoch === epoch) this.stepDown('a fenced write found the lease gone');
      throw notLeader();
    }
  }

  async start(): Promise<void> {
    // A clean shutdown elsewhere NOTIFYs: try at once instead of at the next retry.
    this.unlisten = await this.db.listen(LEADER_CHANNEL, () => this.kick()).catch(() => null);
    const began = this.mono();
    await this.cycle();
    this.schedule(Math.max(0, this.timings.retryMs - (this.mono() - began)));
  }

  /**
   * The next round comes a retry period after the last one began, at once when that one took longer:
   * a database answering each renewal in 3.4 s of a 4 s deadline (6 s lease) otherwise had renewals 4.2 s
   * apart, so its leader stepped down, took the lease again at a new epoch and stepped down again, each
   * election granting agents another TTL of grace.
   */
  private schedule(delayMs = this.timings.retryMs) {
    if (this.stopped) return;
    this.timer = this.clock.setTimer(delayMs, () => {
      this.timer = null;
      const began = this.mono();
      void this.cycle().finally(() =>
        this.schedule(Math.max(0, this.timings.retryMs - (this.mono() - began))),
      );
    });
  }

  private kick() {
    if (!this.stopped && !this.isLeader()) void this.cycle();
  }

  /** One election round: renew when leading, else try to acquire. */
  cycle(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async round() {
    if (this.stopped) return;
    const started = this.mono();
    try {
      await this.tryRound(started);
      const failedRounds = this.failedRounds.ended();
      if (failedRounds > 1) this.log.info({ failedRounds }, 'leader election rounds work again');
    } catch (err) {
      // The database away for a while: said at the first failed round, then once a minute, not each round.
      if (this.failedRounds.failed(started)) {
        const failedRounds = this.failedRounds.count;
        this.log.warn({ err, ...(failedRounds > 1 ? { failedRounds } : {}) }, 'leader election round failed');
      }
      // Past the deadline leader work already stopped; the lease may still be ours (the database back
      // within the lease renews it at the same epoch), but not after a whole lease without a renewal.
      if (this.epoch !== null && this.mono() - this.renewedAt >= this.timings.leaseMs)
        this.stepDown('renewals failed for a whole lease');
    }
  }

  /** One round: renew the lease held, or try to take it. */
  private async tryRound(started: number) {
    if (this.epoch !== null) {
      // Past the renew deadline leader work stopped (isLeader). The renewal still succeeds only while the
      // lease is ours at this epoch and unexpired, so no one else can have led meanwhile: leading resumes
      // at the same epoch. Stepping down instead, the lease was taken again at once (it names us) at a
      // new epoch: leadership bounced, and each election granted agents another TTL of grace.
      const late = this.announced && !this.isLeader();
      const ok = await leader.renewLease(this.db, this.holder, this.epoch, this.timings.leaseMs);
      if (!ok) return this.stepDown('the lease was lost');
      this.renewedAt = started;
      if (late && this.isLeader())
        this.log.warn(
          { epoch: this.epoch },
          'renewed the leader lease after the renew deadline; leading again',
        );
      this.announce();
      return;
    }
    const epoch = await leader.acquireLease(
      this.db,
      this.holder,
      this.timings.leaseMs,
      this.db.engine === 'pglite',
    );
    if (epoch !== null && !this.stopped) {
      this.epoch = epoch;
      this.announced = false;
      this.renewedAt = started;
      this.announce();
      // Taken too late to lead on: the next round, at once (see schedule), renews it first. Announced and
      // stepped down at once, it was taken again at a new epoch: two elections, each a TTL of grace.
      if (!this.announced)
        this.log.info({ epoch }, 'took the leader lease past the renew deadline; renewing it before leading');
    }
  }

  /** Announces the epoch held (once) when it was taken or renewed within the renew deadline. */
  private announce() {
    if (this.announced || this.epoch === null) return;
    if (this.mono() - this.renewedAt >= this.timings.renewDeadlineMs) return;
    this.announced = true;
    this.log.info({ epoch: this.epoch }, 'became leader');
    this.events.emit('elected', this.epoch);
  }

  private stepDown(why: string) {
    if (this.epoch === null) return;
    const epoch = this.epoch;
    this.epoch = null;
    if (!this.announced) {
      this.log.info({ epoch, why }, 'let go of a leader lease taken too late, before leading');
      return;
    }
    this.announced = false;
    this.log.warn({ epoch, why }, 'stepped down as leader');
    this.events.emit('lost', epoch);
  }

  /** Stops the loop; a leader releases the lease and tells the others at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    await this.running;
    await this.unlisten?.().catch(() => {});
    const epoch = this.epoch;
    this.epoch = null;
    this.announced = false;
    if (epoch !== null) {
      await leader.releaseLease(this.db, this.holder, epoch).catch(() => {});
      await this.db.query('SELECT pg_notify($1, $2)', [LEADER_CHANNEL, 'released']).catch(() => {});
    }
  }
}
