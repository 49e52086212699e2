/** Bearer-token checks: client (MXC_API_TOKEN) and agent (MXC_AGENT_TOKEN) tokens, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

export interface Tokens {
  /** Clients (CLI, dashboard). Unset: the API is open. */
  api?: string;
  /** Agents joining. Unset: falls back to the API token, else open. */
  agent?: string;
}

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

export function isClient(req: FastifyRequest, tokens: Tokens): boolean {
  return tokens.api === undefined || tokenMatches(bearer(req), tokens.api);
}

export function isAgent(req: FastifyRequest, tokens: Tokens): boolean {
  const expected = tokens.agent ?? tokens.api;
  return expected === undefined || tokenMatches(bearer(req), expected);
}
