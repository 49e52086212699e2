/**
 * Who may call what. Client tokens (CLI, dashboard, CI) and agent join tokens come from the environment
 * (MXC_API_TOKEN, MXC_AGENT_TOKEN) and from the `api_tokens` table (`mxc tokens create`), stored as
 * SHA-256 digests and compared in constant time. A client token has a scope: `read` (look), `push` (look
 * and upload to the cache) or `admin` (everything). With no client token at all the API is open (and the
 * coordinator listens on loopback only); with no agent token, agents join with an admin client token (or
 * freely when the API is open): a `read` or `push` token must not be able to take workloads, their
 * environment included. Every route declares its access level in its route config (`config.access`),
 * and one hook decides on the route fastify matched, never on the URL text.
 */
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { errors, MxcError } from '../errors.js';
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

/** What a client token may do; each includes the ones before it. */
export const SCOPES = ['read', 'push', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * A route's access level: `public` (anyone), `agent-socket` (the handler checks the agent token itself so
 * it can answer on the socket), `cache-read` (any client or agent token), or a client scope. A route that
 * declares nothing needs `read` for GET/HEAD and `admin` for anything else.
 */
export type Access = 'public' | 'agent-socket' | 'cache-read' | Scope;

/** Who is calling: the token's name and what it may do. `anonymous` only in open mode. */
export interface Principal {
  readonly kind: TokenKind | 'anonymous';
  readonly name: string;
  readonly scope: Scope;
}

/** Principals are made once per token (frozen, shared by its requests), not once per request. */
const principal = (kind: Principal['kind'], name: string, scope: Scope): Principal =>
  Object.freeze({ kind, name, scope });
const ANONYMOUS = principal('anonymous', 'anonymous', 'admin');

/** Proven tokens remembered between reloads (see Auth.proven); a deployment has a handful. */
const MAX_PROVEN = 1024;

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** Set by the access hook for every matched route. */
    principal: Principal | null;
  }
}

// One-shot: no Hash object per call (every request of the cache's read side hashes its token).
const digest = (s: string) => hash('sha256', s, 'buffer');

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

/** The access a route needs: its declared level, else by method. */
export function routeAccess(method: string, declared: Access | undefined): Access {
  if (declared) return declared;
  return method === 'GET' || method === 'HEAD' ? 'read' : 'admin';
}

const scopeRank = (s: Scope) => SCOPES.indexOf(s);

/** Whether a caller (null: no valid token) may use a route of the given access level. */
export function allows(p: Principal | null, access: Access): boolean {
  if (access === 'public' || access === 'agent-socket') return true;
  if (!p) return false;
  if (access === 'cache-read') return true;
  // Agent tokens reach the cache and the agent socket, nothing else.
  if (p.kind === 'agent') return false;
  return scopeRank(p.scope) >= scopeRank(access);
}

/** The coded refusal for a caller without the access a route needs. */
export function refusal(p: Principal | null, access: Access, cache: boolean): MxcError {
  if (!p) {
    if (cache)
      return new MxcError(
        'CACHE_UNAUTHORIZED',
        401,
        `this request needs ${access === 'cache-read' ? 'read' : 'write'} access to the binary cache; send "Authorization: Bearer <token>" with a valid token`,
      );
    return errors.unauthorized('API');
  }
  const what = p.kind === 'agent' ? 'an agent token' : `token "${p.name}" (scope ${p.scope})`;
  return new MxcError(
    cache ? 'CACHE_FORBIDDEN' : 'FORBIDDEN',
    403,
    `${what} may not do this: it needs scope ${access}; create one with \`mxc tokens create NAME --scope ${access}\``,
  );
}

interface StoredToken {
  kind: TokenKind;
  name: string;
  scope: Scope;
  digest: Buffer;
  principal: Principal;
}

/** A live stream opened under some token that closes in its own way (the agent socket). */
interface Stream {
  /** Whether the caller still has the access it was let in with. */
  allowed: () => boolean;
  close: () => void;
}

/** The coordinator's token checks; the table's digests are kept in memory and reloaded on change. */
export class Auth {
  private stored: StoredToken[] = [];
  private readonly streams = new Set<Stream>();
  /** Digests of the environment's tokens, made once: a request's token is hashed once and compared with these. */
  private readonly envDigests: { api?: Buffer; local?: Buffer; agent?: Buffer };
  private readonly envPrincipals = {
    api: principal('client', 'MXC_API_TOKEN', 'admin'),
    local: principal('client', 'local', 'admin'),
    agent: principal('agent', 'MXC_AGENT_TOKEN', 'read'),
  };
  /**
   * Open HTTP responses of non-public routes, by response (see watch): swept after each reload, so a
   * revoked token's live answers (event streams, followed logs, NAR downloads) end at once.
   */
  private readonly open = new Map<ServerResponse, FastifyRequest>();
  /**
   * Tokens proven since the last reload, by the token as sent: a request bringing one skips the hash
   * and the comparisons, which were most of the access hook's cost on a narinfo GET. Only tokens that
   * matched get in (bounded all the same), and it is emptied by every reload, in the same tick as the
   * new token list (each second, and at once by create and revoke): a revoked token stops working at
   * the same moment as without it. A lookup with any other string tells nothing but a miss.
   */
  private readonly proven = new Map<string, Principal>();
  /** One listener for every watched response ('close' comes after the end and after an abort alike). */
  private readonly unwatch: (this: ServerResponse) => void;

  constructor(
    readonly env: Tokens,
    private readonly db?: Queryable,
  ) {
    this.envDigests = {
      api: env.api === undefined ? undefined : digest(env.api),
      local: env.local === undefined ? undefined : digest(env.local),
      agent: env.agent === undefined ? undefined : digest(env.agent),
    };
    const open = this.open;
    this.unwatch = function (this: ServerResponse) {
      open.delete(this);
    };
  }

  /** Reads the stored tokens (at start, and periodically so that several coordinators agree). */
  async load(): Promise<void> {
    if (!this.db) return;
    const rows = await tokensTable.listTokens(this.db);
    this.stored = rows.map((r) => {
      const scope = r.scope ?? 'admin';
      return {
        kind: r.kind,
        name: r.name,
        scope,
        digest: Buffer.from(r.token_hash, 'hex'),
        principal: principal(r.kind, r.name, r.kind === 'agent' ? 'read' : scope),
      };
    });
    // In the same tick as the new list, before the sweep: a token no longer listed is proven by nothing.
    this.proven.clear();
    this.closeRevokedStreams();
  }

  private matchStored(d: Buffer | undefined, kind: TokenKind): StoredToken | undefined {
    if (d === undefined) return undefined;
    let hit: StoredToken | undefined;
    // Every digest is compared, so the time does not say which one matched.
    for (const t of this.stored) if (t.kind === kind && timingSafeEqual(d, t.digest)) hit = t;
    return hit;
  }

  /** Whether any client token exists; without one the API is open. */
  hasClientTokens(): boolean {
    return this.env.api !== undefined || this.stored.some((t) => t.kind === 'client');
  }

  private hasAgentTokens(): boolean {
    return this.env.agent !== undefined || this.stored.some((t) => t.kind === 'agent');
  }

  /** The caller of a request, or null when it has no valid token (and the API is not open). */
  identify(req: FastifyRequest): Principal | null {
    const given = bearer(req);
    if (given === undefined) return this.verify(undefined);
    const known = this.proven.get(given);
    if (known !== undefined) return known;
    const p = this.verify(given);
    if (p !== null && p !== ANONYMOUS && this.proven.size < MAX_PROVEN) this.proven.set(given, p);
    return p;
  }

  /** A token checked against every known digest (the slow path of identify). */
  private verify(given: string | undefined): Principal | null {
    // Hashed once per check.
    const d = given === undefined ? undefined : digest(given);
    const { api, local, agent: agentEnv } = this.envDigests;
    if (d && api && timingSafeEqual(d, api)) return this.envPrincipals.api;
    if (d && local && timingSafeEqual(d, local)) return this.envPrincipals.local;
    const client = this.matchStored(d, 'client');
    if (client) return client.principal;
    if (d && agentEnv && timingSafeEqual(d, agentEnv)) return this.envPrincipals.agent;
    const agent = this.matchStored(d, 'agent');
    if (agent) return agent.principal;
    if (!this.hasClientTokens()) return ANONYMOUS;
    return null;
  }

  /** An agent joining or reading the cache. */
  isAgent(req: FastifyRequest): boolean {
    if (!this.hasAgentTokens()) {
      const p = this.identify(req);
      return p !== null && p.kind !== 'agent' && p.scope === 'admin';
    }
    const given = bearer(req);
    const d = given === undefined ? undefined : digest(given);
    const { local, agent } = this.envDigests;
    if (d && local && timingSafeEqual(d, local)) return true;
    return (
      (d !== undefined && agent !== undefined && timingSafeEqual(d, agent)) ||
      this.matchStored(d, 'agent') !== undefined
    );
  }

  /**
   * Keeps a live stream under watch: when the token it was opened with is revoked (here, or on another
   * coordinator and seen at the next reload), `close` is called. Returns the function that stops watching.
   */
  track(allowed: () => boolean, close: () => void): () => void {
    const s: Stream = { allowed, close };
    this.streams.add(s);
    return () => this.streams.delete(s);
  }

  /**
   * Keeps an HTTP response of a non-public route under watch until it closes: when a reload finds its
   * request's token no longer allows the route and the answer is already streaming, its socket is
   * destroyed. An answer still being computed finishes as it would have. No closure or record is made
   * per request: the request is kept by its response, and one shared listener forgets it.
   */
  watch(req: FastifyRequest, res: ServerResponse): void {
    this.open.set(res, req);
    res.on('close', this.unwatch);
  }

  private closeRevokedStreams(): void {
    for (const [res, req] of [...this.open]) {
      if (
        !res.headersSent ||
        allows(this.identify(req), routeAccess(req.method, req.routeOptions.config.access))
      )
        continue;
      this.open.delete(res);
      req.raw.socket?.destroy();
    }
    for (const s of [...this.streams]) {
      if (s.allowed()) continue;
      this.streams.delete(s);
      try {
        s.close();
      } catch {
        // already closed
      }
    }
  }

  /** Creates a named token and returns it; only its digest is kept. */
  async create(
    name: string,
    kind: TokenKind,
    scope: Scope = 'admin',
  ): Promise<{ name: string; kind: TokenKind; scope: Scope; token: string }> {
    if (!this.db) throw errors.badRequest('this coordinator has no database for tokens');
    const token = `mxc_${kind === 'agent' ? 'a' : 'c'}_${randomBytes(24).toString('base64url')}`;
    try {
      await tokensTable.insertToken(this.db, {
        id: randomBytes(8).toString('hex'),
        name,
        kind,
        scope: kind === 'agent' ? 'read' : scope,
        hash: digest(token).toString('hex'),
      });
    } catch (err) {
      if ((err as { code?: string }).code === '23505') {
        throw errors.conflict(
          'TOKEN_EXISTS',
          `a token named "${name}" exists; revoke it first or pick another name`,
          err,
        );
      }
      throw err;
    }
    await this.load();
    return { name, kind, scope: kind === 'agent' ? 'read' : scope, token };
  }

  async revoke(name: string): Promise<void> {
    if (!this.db || !(await tokensTable.deleteToken(this.db, name))) throw errors.notFound('token', name);
    await this.load();
  }
}
