/**
 * The CLI's HTTP client: the coordinator URL and token, coded API errors turned into CliErrors, and
 * answers parsed with the same spec/ schemas the coordinator serialises them through.
 */
import http from 'node:http';
import type { z } from 'zod';
import { answerOf, type EarlyRequest, type HttpAnswer } from '../lib/http-answer.js';
import { readSettings, SettingsError } from '../lib/settings.js';
import { page } from '../spec/api.js';
import { CliError } from './errors.js';

/** Statuses that redirect, and how many redirects a request follows (fetch follows 20). */
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

export interface ClientOptions {
  coordinator?: string;
  token?: string;
  /** A file holding the token (--token-file; MXC_API_TOKEN_FILE in the environment). */
  tokenFile?: string;
  /** Give up on a request after this long (shell completion must not hang on a dead coordinator). */
  timeoutMs?: number;
  /** The request bin/mxc.js sent before the CLI loaded (bin/client-early.js), taken over if it is this one's. */
  early?: EarlyRequest;
}

/** The coordinator URL and token from flags and the environment, checked (bad values exit 2). */
function clientSettings(opts: ClientOptions) {
  try {
    return readSettings({
      roles: ['client'],
      flags: {
        MXC_COORDINATOR: { value: opts.coordinator, flag: '--coordinator' },
        MXC_API_TOKEN: { value: opts.token, flag: '--token' },
        MXC_API_TOKEN_FILE: { value: opts.tokenFile, flag: '--token-file' },
      },
    });
  } catch (err) {
    if (err instanceof SettingsError)
      throw new CliError(err.message.replace('refusing to start', 'stopped'), 2, undefined, { cause: err });
    throw err;
  }
}

/**
 * The CLI's exit code for a refusal: 3 for authentication and permission (401, 403), 2 for input the
 * coordinator refused as bad (400, 413, 414, 422), 1 for anything else (a conflict, a missing thing,
 * the coordinator's own trouble).
 */
export function exitCodeOf(status: number): number {
  if (status === 401 || status === 403) return 3;
  if (status === 400 || status === 413 || status === 414 || status === 422) return 2;
  return 1;
}

/** Errors that say a request never reached a coordinator: nothing was applied, any request may go elsewhere. */
const NOT_SENT = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);

/** A change waits this many times the answer timeout: it is never sent twice, so giving up costs more. */
const CHANGE_TIMEOUT_FACTOR = 6;

/** One coordinator did not answer in time; `sent` when the request reached it (it may still apply it). */
class NoAnswer extends Error {
  constructor(
    readonly ms: number,
    readonly sent: boolean,
  ) {
    super(`no answer within ${ms / 1000} s`);
  }
}

/** Whether a failed attempt may be made again at the next coordinator. */
function movesOn(err: unknown, method: string, sent: boolean): boolean {
  if (method === 'GET' || method === 'HEAD') return true;
  if (err instanceof NoAnswer) return !err.sent;
  const code =
    (err as { code?: string; cause?: { code?: string } }).code ??
    (err as { cause?: { code?: string } }).cause?.code;
  return !sent || (code !== undefined && NOT_SENT.has(code));
}

/**
 * The coordinator that answered last, per coordinator list, for the whole command: a command's lookup
 * (resolveId) and its change are made by clients of their own, and the change must not go back to the
 * frozen coordinator the lookup went past.
 */
const answeredLast = new Map<string, number>();

export class ApiClient {
  /** Every coordinator of MXC_COORDINATOR, in order; requests go to the first that answers. */
  readonly coordinators: readonly string[];
  readonly token?: string;
  readonly timeoutMs?: number;
  /** How long a read waits for its answer (MXC_REQUEST_TIMEOUT); a change waits CHANGE_TIMEOUT_FACTOR times that. */
  readonly answerMs: number;
  private early?: EarlyRequest;
  /** The coordinator that answered last (where the next request goes first). */
  private current = 0;

  constructor(opts: ClientOptions) {
    this.early = opts.early;
    const s = clientSettings(opts);
    this.timeoutMs = opts.timeoutMs;
    this.coordinators = s.MXC_COORDINATOR!.map((u) => u.replace(/\/+$/, ''));
    this.token = s.MXC_API_TOKEN;
    this.answerMs = opts.timeoutMs ?? s.MXC_REQUEST_TIMEOUT! * 1000;
    this.current = answeredLast.get(this.coordinators.join(',')) ?? 0;
  }

  /** The coordinator requests go to: the first of the list until one did not answer. */
  get base(): string {
    return this.coordinators[this.current]!;
  }

  /**
   * The first coordinator of the list that answers (one GET /healthz when there are several), for a
   * request made elsewhere (`mxc push` streams its upload through compiler/push.ts).
   */
  async answering(): Promise<string> {
    if (this.coordinators.length > 1) await this.send('GET', '/healthz');
    return this.base;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  private waitFor(method: string): number {
    return method === 'GET' || method === 'HEAD' || this.timeoutMs !== undefined
      ? this.answerMs
      : this.answerMs * CHANGE_TIMEOUT_FACTOR;
  }

  /**
   * Runs `attempt` against the current coordinator, then the next ones while a failure allows it
   * (`movesOn`): a coordinator that refuses connections, or does not answer a read in time, is skipped.
   * `attempt` reports through `sent` whether its request reached the coordinator.
   */
  private async failOver<T>(
    method: string,
    attempt: (base: string, ms: number, sent: { value: boolean }) => Promise<T>,
  ): Promise<T> {
    const failures: string[] = [];
    const ms = this.waitFor(method);
    for (let i = this.current; i < this.coordinators.length; i++) {
      const sent = { value: false };
      try {
        const out = await attempt(this.coordinators[i]!, ms, sent);
        this.current = i;
        answeredLast.set(this.coordinators.join(','), i);
        return out;
      } catch (err) {
        failures.push(`${this.coordinators[i]} (${reasonOf(err)})`);
        if (i + 1 < this.coordinators.length && movesOn(err, method, sent.value)) continue;
        this.current = i;
        throw this.unreachable(err, method, failures);
      }
    }
    throw new Error('unreachable: the coordinator list is never empty');
  }

  /** The request as fetch's Response, for an answer read as a stream (followed logs). */
  async raw(method: string, path: string, body?: unknown): Promise<Response> {
    return this.failOver(method, async (base, ms, sent) => {
      const aborter = new AbortController();
      const timer = setTimeout(() => aborter.abort(new NoAnswer(ms, true)), ms);
      try {
        return await fetch(`${base}${path}`, {
          method,
          headers: this.headers(body !== undefined ? { 'content-type': 'application/json' } : {}),
          body: body !== undefined ? JSON.stringify(body) : undefined,
          signal: aborter.signal,
        });
      } catch (err) {
        // fetch does not say whether its request went out: a refused connection says it did not.
        sent.value = !NOT_SENT.has((err as { cause?: { code?: string } }).cause?.code ?? '');
        throw aborter.signal.aborted ? aborter.signal.reason : err;
      } finally {
        clearTimeout(timer);
      }
    });
  }

  /**
   * The request's status and whole answer, through node:http(s) rather than fetch: fetch loads undici,
   * whose WebAssembly HTTP parser V8 compiles in every fresh process, and an exit waits for its
   * background compilation to end. `mxc jobs list` against a coordinator on this machine (chrt -f 1,
   * load ~13, medians of 15): 205 → 116 ms, `node -e 0` ~60.
   */
  private send(method: string, path: string, body?: unknown): Promise<HttpAnswer> {
    return this.failOver(method, (base, ms, sent) => this.sendTo(base, ms, sent, method, path, body));
  }

  private async sendTo(
    base: string,
    ms: number,
    sent: { value: boolean },
    method: string,
    path: string,
    body: unknown,
  ): Promise<HttpAnswer> {
    let payload = body !== undefined ? Buffer.from(JSON.stringify(body)) : undefined;
    let url = new URL(`${base}${path}`);
    const origin = url.origin;
    // Redirects are followed as fetch follows them (a coordinator behind a proxy that moves it, or
    // sends http to https): 303, and 301/302 after a POST, turn into a GET without the body; the
    // token goes only to the coordinator's own origin.
    for (let hops = 0; ; hops++) {
      const early = this.takeEarly(method, url, payload);
      const res = await (early
        ? withDeadline(early.answer, ms, early.abort)
        : this.once(url, method, payload, url.origin === origin, ms, sent));
      const location = res.location;
      if (!REDIRECTS.has(res.status) || location === undefined) return res;
      if (hops === MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new Error(`a redirect to ${url.protocol} is not followed`);
      }
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) {
        if (method !== 'HEAD') method = 'GET';
        payload = undefined;
      }
    }
  }

  /**
   * The answer to the request bin/mxc.js sent early, when that request is exactly this one (method,
   * URL, headers, no body); otherwise that request is aborted. Once per client.
   */
  private takeEarly(method: string, url: URL, payload: Buffer | undefined): EarlyRequest | undefined {
    const early = this.early;
    if (!early) return undefined;
    this.early = undefined;
    const headers = this.headers();
    const same =
      early.method === method &&
      early.href === url.href &&
      payload === undefined &&
      Object.keys(early.headers).length === Object.keys(headers).length &&
      Object.entries(headers).every(([k, v]) => early.headers[k] === v);
    if (same) return early;
    early.abort();
    return undefined;
  }

  /** One request and its whole answer (and where a redirect points), given up after `ms`. */
  private async once(
    url: URL,
    method: string,
    payload: Buffer | undefined,
    withToken: boolean,
    ms: number,
    sent: { value: boolean },
  ): Promise<HttpAnswer> {
    const { request } = url.protocol === 'https:' ? await import('node:https') : http;
    const type: Record<string, string> = payload
      ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
      : {};
    const req = request(url, { method, headers: withToken ? this.headers(type) : type });
    // The request reached the coordinator once its connection is up (a reused one already is).
    const connected = url.protocol === 'https:' ? 'secureConnect' : 'connect';
    req.once('socket', (socket) => {
      if (!socket.connecting) sent.value = true;
      else socket.once(connected, () => (sent.value = true));
    });
    const answer = answerOf(req);
    req.end(payload);
    return withDeadline(answer, ms, () => req.destroy(new NoAnswer(ms, sent.value)));
  }

  private unreachable(err: unknown, method: string, failures: string[]): CliError {
    const sentChange = err instanceof NoAnswer && err.sent && method !== 'GET' && method !== 'HEAD';
    const where =
      failures.length === 1 ? `the coordinator at ${failures[0]}` : `any coordinator: ${failures.join(', ')}`;
    return new CliError(
      sentChange
        ? `the coordinator at ${failures.at(-1)} took the request but did not answer; it may still apply it: look (mxc jobs list, mxc workloads list…) before sending it again`
        : `cannot reach ${where}; start one with \`mxc up\` or set --coordinator / MXC_COORDINATOR`,
      1,
      undefined,
      { cause: err },
    );
  }

  /** Calls the API and parses the answer's `data` with `schema` (a spec/api.ts shape). */
  async request<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    body?: unknown,
  ): Promise<z.output<S>> {
    return (await this.requestBody(method, path, schema, body, (p) => p.data)) as z.output<S>;
  }

  /**
   * Every item of a paged list (`{data, next_cursor}`), page after page, or the first `max` of them.
   */
  async getAll<S extends z.ZodType>(path: string, item: S, max?: number): Promise<z.output<S>[]> {
    const out: z.output<S>[] = [];
    let cursor: string | null = null;
    do {
      const q = new URLSearchParams({
        limit: String(Math.min(1000, max === undefined ? 1000 : max - out.length)),
      });
      if (cursor) q.set('cursor', cursor);
      const p = await this.requestBody(
        'GET',
        `${path}${path.includes('?') ? '&' : '?'}${q}`,
        page(item),
        undefined,
        (x) => x,
      );
      out.push(...(p.data as z.output<S>[]));
      cursor = p.next_cursor;
    } while (cursor !== null && (max === undefined || out.length < max));
    return out;
  }

  private async requestBody<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    body: unknown,
    pick: (parsed: { data?: unknown }) => unknown,
  ): Promise<z.output<S>> {
    const res = await this.send(method, path, body);
    const text = res.text;
    let parsed: {
      data?: unknown;
      error?: { code: string; message: string; details?: { missing?: string[] } };
    } = {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch (err) {
      throw new CliError(
        `the coordinator answered ${res.status} with something that is not JSON: ${text.slice(0, 200)}`,
        1,
        undefined,
        { cause: err },
      );
    }
    if (res.status < 200 || res.status > 299) {
      // Coded as every mxc error is; anything else (a proxy's page, say) is shown as it came.
      const e = typeof parsed.error?.message === 'string' ? parsed.error : undefined;
      const extra = e?.details?.missing ? `\n${e.details.missing.slice(0, 20).join('\n')}` : '';
      throw new CliError(
        // The coordinator's words, exact for --json; shown escaped and indented (cli/main.ts fail).
        e ? `${e.message} [${e.code}]${extra}` : `HTTP ${res.status}: ${text.slice(0, 200)}`,
        // A name several jobs share is a usage error, as an ambiguous prefix is.
        e?.code === 'AMBIGUOUS' ? 2 : exitCodeOf(res.status),
        e?.code,
        { details: e?.details, remote: true },
      );
    }
    const checked = schema.safeParse(pick(parsed));
    if (!checked.success) {
      const first = checked.error.issues[0];
      throw new CliError(
        `the coordinator's answer to ${method} ${path} does not match this CLI's schema (${first?.path.join('.') || '(root)'}: ${first?.message}); are the CLI and the coordinator the same version?`,
      );
    }
    return checked.data;
  }

  get<S extends z.ZodType>(path: string, schema: S) {
    return this.request('GET', path, schema);
  }
  /** A GET whose whole answer (not only its `data`) is parsed with `schema`. */
  getWhole<S extends z.ZodType>(path: string, schema: S) {
    return this.requestBody('GET', path, schema, undefined, (x) => x);
  }
  post<S extends z.ZodType>(path: string, schema: S, body?: unknown) {
    return this.request('POST', path, schema, body ?? {});
  }
  delete<S extends z.ZodType>(path: string, schema: S) {
    return this.request('DELETE', path, schema);
  }
}

/** What went wrong with one attempt, short (the cause's message when fetch wrapped it). */
function reasonOf(err: unknown): string {
  const e = err as Error & { cause?: Error };
  return e instanceof NoAnswer ? e.message : (e.cause?.message ?? e.message);
}

/** `answer`, or a NoAnswer after `ms` (then `giveUp` drops the request). */
function withDeadline(answer: Promise<HttpAnswer>, ms: number, giveUp: () => void): Promise<HttpAnswer> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      giveUp();
      reject(new NoAnswer(ms, true));
    }, ms);
  });
  return Promise.race([answer, deadline]).finally(() => clearTimeout(timer));
}
