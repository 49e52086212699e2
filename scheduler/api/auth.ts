/**
 * Who may call what. Client tokens (CLI, dashboard) and agent join tokens come from the environment
 * (MXC_API_TOKEN, MXC_AGENT_TOKEN) and from the `api_tokens` table (`mxc tokens create`), stored as
 * SHA-256 digests and compared in constant time. With no client token at all the API is open; with no
 * agent token, agents join with a client token (or freely when the API is open).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import type { Queryable } from '../store/db.js';
import * as tokensTable from '../store/tokens.js';

export interface Tokens {
  /** Clients (CLI, dashboard). */
  api?: string;
  /** Agents joining. */
  agent?: string;
  /**
   * The standalone process's own credential (`mxc up`: its agent and its demo submit). Accepted for
   * clients and agents alike, so creating a token can never lock `mxc up` out of itself; it never closes
   * an open API.
   */
  local?: string;
}

export type TokenKind = 'client' | 'agent';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time equality that does not leak the expected length. */
export function tokenMatches(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  return timingSafeEqual(digest(given), digest(expected));
}

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (h?.startsWith('Bearer ')) return h.slice('Bearer '.length).trim();
  // Nix substituters authenticate with HTTP basic auth from a netrc file: the password is the token.
  if (h?.startsWith('Basic ')) {
    const decoded = Buffer.from(h.slice('Basic '.length), 'base64').toString('utf8');
    return decoded.slice(decoded.indexOf(':') + 1);
  }
  // EventSource and WebSocket in browsers cannot set headers: accept ?token= as well.
  const q = (req.query as Record<string, unknown> | undefined)?.token;
  return typeof q === 'string' ? q : undefined;
}

/** The coordinator's token checks; the table's digests are kept in memory and reloaded on change. */
export class Auth {
  private stored: { kind: TokenKind; digest: Buffer }[] = [];

  constructor(
    readonly env: Tokens,
    private readonly db?: Queryable,
  ) {}

  /** Reads the stored tokens (at start, and periodically so that several coordinators agree). */
  async load(): Promise<void> {
    if (!this.db) return;
    const rows = await tokensTable.listTokens(this.db);
    this.stored = rows.map((r) => ({ kind: r.kind, digest: Buffer.from(r.token_hash, 'hex') }));
  }

  private matchesStored(given: string | undefined, kind: TokenKind): boolean {
    if (given === undefined) return false;
    const d = digest(given);
    let hit = false;
    for (const t of this.stored) if (t.kind === kind && timingSafeEqual(d, t.digest)) hit = true;
    return hit;
  }

  private hasClientTokens(): boolean {
    return this.env.api !== undefined || this.stored.some((t) => t.kind === 'client');
  }

  private hasAgentTokens(): boolean {
    return this.env.agent !== undefined || this.stored.some((t) => t.kind === 'agent');
  }

  /** A CLI or dashboard request. */
  isClient(req: FastifyRequest): boolean {
    if (!this.hasClientTokens()) return true;
    const given = bearer(req);
    if (this.env.local !== undefined && tokenMatches(given, this.env.local)) return true;
    return (
      (this.env.api !== undefined && tokenMatches(given, this.env.api)) || this.matchesStored(given, 'client')
    );
  }

  /** An agent joining or reading the cache. */
  isAgent(req: FastifyRequest): boolean {
    if (!this.hasAgentTokens()) return this.isClient(req);
    const given = bearer(req);
    if (this.env.local !== undefined && tokenMatches(given, this.env.local)) return true;
    return (
      (this.env.agent !== undefined && tokenMatches(given, this.env.agent)) ||
      this.matchesStored(given, 'agent')
    );
  }

  /** Creates a named token and returns it; only its digest is kept. */
  async create(name: string, kind: TokenKind): Promise<{ name: string; kind: TokenKind; token: string }> {
    if (!this.db) throw errors.badRequest('this coordinator has no database for tokens');
    const token = `mxc_${kind === 'agent' ? 'a' : 'c'}_${randomBytes(24).toString('base64url')}`;
    try {
      await tokensTable.insertToken(this.db, {
        id: randomBytes(8).toString('hex'),
        name,
        kind,
        hash: digest(token).toString('hex'),
      });
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw errors.conflict(
          'TOKEN_EXISTS',
          `a token named "${name}" exists; revoke it first or pick another name`,
        );
      }
      throw err;
    }
    await this.load();
    return { name, kind, token };
  }

  async revoke(name: string): Promise<void> {
    if (!this.db || !(await tokensTable.deleteToken(this.db, name))) throw errors.notFound('token', name);
    await this.load();
  }
}
