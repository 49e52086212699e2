/** Minimal JSON-over-HTTP helpers for talking to the coordinator's API from a benchmark. */
import http from 'node:http';
import { answerOf } from '../../lib/http-answer.js';

export async function getJson<T>(url: string, token?: string): Promise<T> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const body = (await res.json()) as { data?: T; error?: { message: string } };
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${body.error?.message ?? ''}`);
  return body.data as T;
}

/** Every item of a paged list (`{ data, next_cursor }`), following the cursor 1,000 at a time. */
export async function getAllPages<T>(url: string, token?: string): Promise<T[]> {
  const all: T[] = [];
  let cursor: string | null = null;
  do {
    const u = new URL(url);
    u.searchParams.set('limit', '1000');
    if (cursor) u.searchParams.set('cursor', cursor);
    const res = await fetch(u, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const body = (await res.json()) as {
      data?: T[];
      next_cursor?: string | null;
      error?: { message: string };
    };
    if (!res.ok) throw new Error(`GET ${u}: ${res.status} ${body.error?.message ?? ''}`);
    all.push(...(body.data ?? []));
    cursor = body.next_cursor ?? null;
  } while (cursor);
  return all;
}

export async function postJson<T>(url: string, payload: unknown, token?: string): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(payload),
  });
  const body = (await res.json()) as { data?: T; error?: { message: string } };
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${body.error?.message ?? JSON.stringify(body)}`);
  return body.data as T;
}

/** Runs `fn(i)` for i in 0..count-1 with at most `concurrency` in flight. */
export async function pool(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
}

/**
 * POSTs over node:http on kept-alive connections (`maxSockets` of them, one by default), for a benchmark
 * that shares this 2-core machine with what it measures: undici's fetch spends 0.6-0.9 ms of the
 * client's CPU on a POST (node:http 0.23-0.31 ms, same payload, a server in another process), time taken
 * from the coordinator and PostgreSQL. Give it as many sockets as requests are in flight, or they queue.
 */
export class KeptAliveClient {
  private readonly agent: http.Agent;

  constructor(maxSockets = 1) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  async postJson<T>(url: string, payload: unknown): Promise<T> {
    const body = JSON.stringify(payload);
    const req = http.request(url, {
      method: 'POST',
      agent: this.agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    const answer = answerOf(req);
    req.end(body);
    const { status, text } = await answer;
    let parsed: { data?: T; error?: { message: string } };
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new Error(`POST ${url}: ${status} ${text}`, { cause: err });
    }
    if (status >= 300) throw new Error(`POST ${url}: ${status} ${parsed.error?.message ?? text}`);
    return parsed.data as T;
  }

  close(): void {
    this.agent.destroy();
  }
}
