/**
 * HTTP health checks of a running workload, with Aurora's semantics: after initial_interval_secs, GET
 * `http://127.0.0.1:<port><endpoint>` every interval_secs; more than max_consecutive_failures failures
 * in a row make the workload unhealthy, and the agent then fails it.
 */
import http from 'node:http';
import type { JobSpec } from '../spec/job.js';

export type Health = 'unknown' | 'healthy' | 'unhealthy';

/** A parsed HealthCheckConfig (defaults applied). */
export type HealthCheckConfig = NonNullable<JobSpec['health_check_config']>;

export interface HealthCheckerOptions {
  config: HealthCheckConfig;
  /** The host port the check talks to. */
  port: number;
  host?: string;
  /** Health changed: `unknown` → `healthy` on the first success, → `unhealthy` past the threshold. */
  onChange: (health: Health) => void;
  /** The workload is unhealthy: `reason` says how many probes failed and how the last one did. */
  onUnhealthy: (reason: string) => void;
  /** One line for the workload's logs; only on changes, never per probe. */
  onLog: (line: string) => void;
}

/** How one probe went; `detail` reads after `GET /health → `. */
export interface ProbeResult {
  ok: boolean;
  detail: string;
}

/** Longest body read from a health endpoint; more is cut off (and then does not match). */
const MAX_BODY = 64 * 1024;
/** Floor for intervals, so a `0` in a spec cannot make a busy loop. */
const MIN_INTERVAL_MS = 10;

export class HealthChecker {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private failures = 0;
  private probing: AbortController | null = null;
  private state: Health = 'unknown';

  constructor(private readonly opts: HealthCheckerOptions) {}

  get health(): Health {
    return this.state;
  }

  /** Starts probing after the initial interval. Call once. */
  start(): void {
    const c = this.opts.config;
    this.opts.onLog(
      `health check: GET ${this.url()} every ${c.interval_secs} s after ${c.initial_interval_secs} s, ` +
        `expecting ${expectationText(c)}; unhealthy after ${c.max_consecutive_failures + 1} failure(s) in a row`,
    );
    this.schedule(c.initial_interval_secs * 1000);
  }

  /** Stops probing (the workload is stopping); an in-flight probe is abandoned. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.probing?.abort();
  }

  private url(): string {
    return `http://${this.opts.host ?? '127.0.0.1'}:${this.opts.port}${this.opts.config.endpoint}`;
  }

  private schedule(ms: number) {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), Math.max(MIN_INTERVAL_MS, ms));
  }

  private async tick() {
    this.timer = null;
    const c = this.opts.config;
    this.probing = new AbortController();
    const r = await probe(this.url(), c, this.probing.signal);
    this.probing = null;
    if (this.stopped) return;
    const what = `GET ${c.endpoint} → ${r.detail}`;
    if (r.ok) {
      if (this.failures > 0 && this.state === 'healthy')
        this.opts.onLog(`health check recovered after ${this.failures} failure(s): ${what}`);
      this.failures = 0;
      this.set('healthy', `health check passed: ${what}`);
    } else {
      this.failures++;
      if (this.failures > c.max_consecutive_failures) {
        const reason = `health check failed ${this.failures} time${this.failures === 1 ? '' : 's'}: ${what}`;
        this.set('unhealthy', reason);
        this.stop();
        this.opts.onUnhealthy(reason);
        return;
      }
      // The first failure of a streak is worth a line; the rest would repeat it.
      if (this.failures === 1)
        this.opts.onLog(
          `health check failed (${this.failures} of ${c.max_consecutive_failures} tolerated): ${what}`,
        );
    }
    this.schedule(c.interval_secs * 1000);
  }

  private set(health: Health, line: string) {
    if (this.state === health) return;
    this.state = health;
    this.opts.onLog(line);
    this.opts.onChange(health);
  }
}

function expectationText(c: HealthCheckConfig): string {
  const code = c.expected_response_code === 0 ? 'a 2xx status' : `status ${c.expected_response_code}`;
  return c.expected_response ? `${code} and body "${c.expected_response}"` : code;
}

/**
 * One probe: healthy when the status matches (expected_response_code 0 = any 2xx, else exactly it)
 * and, when expected_response is non-empty, the trimmed body equals it. A fresh connection each time.
 */
export function probe(url: string, c: HealthCheckConfig, signal?: AbortSignal): Promise<ProbeResult> {
  const timeoutMs = c.timeout_secs > 0 ? c.timeout_secs * 1000 : 1000;
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = http.get(url, { agent: false, signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        if (size < MAX_BODY) chunks.push(b);
        size += b.length;
      });
      res.on('error', (err) => done({ ok: false, detail: `error reading the response: ${err.message}` }));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        const body = Buffer.concat(chunks).toString('utf8').slice(0, MAX_BODY).trim();
        const codeOk =
          c.expected_response_code === 0
            ? status >= 200 && status < 300
            : status === c.expected_response_code;
        if (!codeOk) return done({ ok: false, detail: `${status}` });
        if (c.expected_response && body !== c.expected_response)
          return done({
            ok: false,
            detail: `${status} with body ${quote(body)}, expected "${c.expected_response}"`,
          });
        done({ ok: true, detail: `${status}` });
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({ ok: false, detail: `no answer within ${timeoutMs / 1000} s` });
    }, timeoutMs);
    req.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ECONNREFUSED' ? 'connection refused' : (err.code ?? err.message);
      done({ ok: false, detail: why });
    });
  });
}

function quote(body: string): string {
  const short = body.length > 80 ? `${body.slice(0, 80)}…` : body;
  return JSON.stringify(short);
}

/**
 * The host port a job's health check talks to: mxc.health_port, else the announcer's primary port, else
 * the first of mxc.ports. Throws a clear error when the job has no such port.
 */
export function healthCheckPort(spec: JobSpec, ports: Record<string, number>): number {
  const name = spec.mxc.health_port ?? spec.announce?.primary_port ?? spec.mxc.ports[0];
  if (name === undefined)
    throw new Error(
      'the job has a health_check_config but no port to check: declare one in mxc.ports (and name it in HealthCheckConfig { port = …; })',
    );
  const port = ports[name];
  if (port === undefined)
    throw new Error(
      `the health check talks to port "${name}", which the job does not declare: add it to mxc.ports` +
        (spec.mxc.ports.length ? ` (declared: ${spec.mxc.ports.join(', ')})` : ''),
    );
  return port;
}
