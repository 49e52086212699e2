/**
 * The agent's periodic chores: garbage-collect the store when its filesystem runs low on space, and
 * drop the state (logs, work dir) of workloads that ended longer ago than the log retention.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { collectIfLow, type GcResult } from './gc.js';
import { pruneLogs } from './logs/prune.js';

export interface HousekeepingOptions {
  stateDir: string;
  storeRoot?: string;
  /** Collect when the store's filesystem has less free space than this (MiB); 0 or unset: never. */
  gcMinFreeMb?: number;
  /** How long an ended workload's directory (its logs) is kept, in ms. */
  logRetentionMs: number;
  /** Ids of the workloads that exist now: their directories are never pruned. */
  live: () => Iterable<string>;
  /** Told what a collection deleted (the agent reports it to the coordinator). */
  onCollected?: (r: GcResult) => void;
  logger: Logger;
}

export class Housekeeping {
  private timer: NodeJS.Timeout | null = null;
  private gcRunning: Promise<GcResult | null> | null = null;

  constructor(private readonly opts: HousekeepingOptions) {}

  /** Runs the chores now and then every `intervalMs`. */
  start(intervalMs: number): void {
    void this.runOnce();
    this.timer = setInterval(() => void this.runOnce(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async runOnce(): Promise<void> {
    await Promise.all([this.gcIfLow(), this.prune()]);
  }

  /** One collection at a time; a request while one runs shares its result. */
  gcIfLow(): Promise<GcResult | null> {
    const min = this.opts.gcMinFreeMb ?? 0;
    if (min <= 0) return Promise.resolve(null);
    this.gcRunning ??= collectIfLow({
      stateDir: this.opts.stateDir,
      storeRoot: this.opts.storeRoot,
      minFreeMb: min,
    })
      .then((r) => {
        if (r?.deleted) this.opts.onCollected?.(r);
        if (r)
          this.opts.logger.info(
            { freedBytes: r.freedBytes, deleted: r.deleted },
            'store low on space: garbage collected',
          );
        return r;
      })
      .catch((err) => {
        this.opts.logger.error({ err }, 'automatic garbage collection failed');
        return null;
      })
      .finally(() => {
        this.gcRunning = null;
      });
    return this.gcRunning;
  }

  async prune(): Promise<string[]> {
    try {
      const removed = await pruneLogs(join(this.opts.stateDir, 'workloads'), this.opts.logRetentionMs, {
        keep: this.opts.live(),
      });
      if (removed.length)
        this.opts.logger.info({ removed }, 'removed the logs of workloads past their retention');
      return removed;
    } catch (err) {
      this.opts.logger.error({ err }, 'pruning old workload logs failed');
      return [];
    }
  }
}
