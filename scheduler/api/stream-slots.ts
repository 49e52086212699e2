/**
 * Live streams (the event stream, followed logs) per caller and in all. A stream holds its connection
 * for as long as the client likes and never gives its place up to another (see guardConnections), so
 * without a bound one read token took every connection the coordinator would take, agents' included.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { MxcError } from '../errors.js';

/** Live streams one token (or, on an open API, one client address) may hold at once. */
export const MAX_STREAMS_PER_CALLER = 64;

/** Streams in all: half the connections the coordinator takes, so the other half stays for the rest. */
export function maxStreamsFor(maxConnections: number): number {
  return Math.max(1, Math.floor(maxConnections / 2));
}

/** Counts open streams by caller; `take` answers a coded 429 past either bound. */
export class StreamSlots {
  private total = 0;
  private readonly byCaller = new Map<string, number>();

  constructor(
    readonly maxTotal: number,
    readonly maxPerCaller = MAX_STREAMS_PER_CALLER,
  ) {}

  /** Who a stream counts against: its token by kind and name, or its address when the API is open. */
  private static callerOf(req: FastifyRequest): string {
    const p = req.principal;
    if (p && p.kind !== 'anonymous') return `${p.kind}:${p.name}`;
    return `address:${req.socket.remoteAddress ?? ''}`;
  }

  /**
   * Takes a slot for `req`'s stream, freed when its response `res` closes (the stream ended, the
   * client left, its token was revoked); throws TOO_MANY_STREAMS (429) when none is left.
   */
  take(req: FastifyRequest, res: ServerResponse): void {
    const caller = StreamSlots.callerOf(req);
    const mine = this.byCaller.get(caller) ?? 0;
    if (mine >= this.maxPerCaller)
      throw new MxcError(
        'TOO_MANY_STREAMS',
        429,
        `this token already holds ${mine} live streams (event streams and followed logs), the most one may: close one first`,
      );
    if (this.total >= this.maxTotal)
      throw new MxcError(
        'TOO_MANY_STREAMS',
        429,
        `the coordinator already serves ${this.total} live streams (event streams and followed logs), the most it takes: try again later`,
      );
    this.total++;
    this.byCaller.set(caller, mine + 1);
    let freed = false;
    res.once('close', () => {
      if (freed) return;
      freed = true;
      this.total--;
      const left = (this.byCaller.get(caller) ?? 1) - 1;
      if (left === 0) this.byCaller.delete(caller);
      else this.byCaller.set(caller, left);
    });
  }

  /** Streams open now (for tests and metrics). */
  get open(): number {
    return this.total;
  }
}
