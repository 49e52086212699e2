/**
 * The agent's HTTP health checker against a real local HTTP server whose answer the tests flip:
 * Aurora's matching rules, the consecutive-failure threshold, timeouts, and stopping.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  type HealthCheckConfig as Config,
  type Health,
  HealthChecker,
  healthCheckPort,
  probe,
} from '../../agent/health.js';
import { HealthCheckConfig, JobSpec } from '../../spec/job.js';

/** A server answering `/health` with whatever `answer` says at the time; counts requests. */
interface FlipServer {
  port: number;
  answer: { status: number; body: string; hang?: boolean };
  requests: number[];
  close(): Promise<void>;
}

async function flipServer(): Promise<FlipServer> {
  const srv = http.createServer((req, res) => {
    s.requests.push(Date.now());
    if (s.answer.hang) return; // never answers
    res.writeHead(s.answer.status, { 'content-type': 'text/plain' });
    res.end(req.url === '/health' ? s.answer.body : 'wrong endpoint');
  });
  const s: FlipServer = {
    port: 0,
    answer: { status: 200, body: 'ok\n' },
    requests: [],
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  s.port = (srv.address() as AddressInfo).port;
  return s;
}

const config = (over: Partial<Config> = {}): Config =>
  HealthCheckConfig.parse({ initial_interval_secs: 0.05, interval_secs: 0.05, timeout_secs: 0.5, ...over });

interface Watch {
  checker: HealthChecker;
  changes: Health[];
  logs: string[];
  unhealthy: Promise<string>;
  until(pred: () => boolean, ms?: number): Promise<void>;
}

function watch(port: number, c: Config): Watch {
  const changes: Health[] = [];
  const logs: string[] = [];
  let onUnhealthy!: (r: string) => void;
  const unhealthy = new Promise<string>((r) => {
    onUnhealthy = r;
  });
  const checker = new HealthChecker({
    config: c,
    port,
    onChange: (h) => changes.push(h),
    onUnhealthy,
    onLog: (l) => logs.push(l),
  });
  const until = async (pred: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end)
        throw new Error(`timed out; changes ${changes.join(',')}; logs:\n${logs.join('\n')}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { checker, changes, logs, unhealthy, until };
}

describe('HealthChecker', () => {
  let srv: FlipServer;
  let checkers: HealthChecker[] = [];
  const track = (w: Watch) => {
    checkers.push(w.checker);
    return w;
  };
  beforeEach(async () => {
    srv = await flipServer();
  });
  afterEach(async () => {
    for (const c of checkers) c.stop();
    checkers = [];
    await srv.close();
  });

  test('waits the initial interval, turns healthy on the first success, and logs only changes', async () => {
    const w = track(watch(srv.port, config({ initial_interval_secs: 0.3 })));
    const t0 = Date.now();
    w.checker.start();
    expect(w.checker.health).toBe('unknown');
    await w.until(() => w.changes.length === 1);
    expect(srv.requests[0]! - t0).toBeGreaterThanOrEqual(290);
    expect(w.changes).toEqual(['healthy']);
    expect(w.checker.health).toBe('healthy');
    await w.until(() => srv.requests.length >= 5);
    // Many probes, one change, two lines (what is checked, then the first pass).
    expect(w.changes).toEqual(['healthy']);
    expect(w.logs).toHaveLength(2);
    expect(w.logs[0]).toMatch(/^health check: GET http:\/\/127\.0\.0\.1:\d+\/health every 0\.05 s/);
    expect(w.logs[1]).toBe('health check passed: GET /health → 200');
  });

  test('more than max_consecutive_failures failures in a row make it unhealthy, then it stops probing', async () => {
    const w = track(watch(srv.port, config({ max_consecutive_failures: 2 })));
    w.checker.start();
    await w.until(() => w.checker.health === 'healthy');
    srv.answer = { status: 503, body: 'down' };
    const flippedAt = srv.requests.length;
    const reason = await w.unhealthy;
    expect(reason).toBe('health check failed 3 times: GET /health → 503');
    expect(srv.requests.length - flippedAt).toBe(3);
    expect(w.changes).toEqual(['healthy', 'unhealthy']);
    expect(w.logs).toContain('health check failed (1 of 2 tolerated): GET /health → 503');
    const seen = srv.requests.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(srv.requests.length).toBe(seen);
  });

  test('tolerated failures followed by a success keep it healthy', async () => {
    const w = track(watch(srv.port, config({ max_consecutive_failures: 5 })));
    w.checker.start();
    await w.until(() => w.checker.health === 'healthy');
    srv.answer = { status: 500, body: 'oops' };
    const n = srv.requests.length;
    await w.until(() => srv.requests.length >= n + 2);
    srv.answer = { status: 200, body: 'ok' };
    await w.until(() => w.logs.some((l) => l.startsWith('health check recovered')));
    expect(w.changes).toEqual(['healthy']);
    expect(w.logs.filter((l) => l.startsWith('health check failed'))).toHaveLength(1);
  });

  test('max_consecutive_failures 0: the first failure is fatal, even before any success', async () => {
    srv.answer = { status: 404, body: 'not here' };
    const w = track(watch(srv.port, config()));
    w.checker.start();
    expect(await w.unhealthy).toBe('health check failed 1 time: GET /health → 404');
    expect(w.changes).toEqual(['unhealthy']);
  });

  test('stop() ends probing', async () => {
    const w = track(watch(srv.port, config()));
    w.checker.start();
    await w.until(() => srv.requests.length >= 2);
    w.checker.stop();
    const seen = srv.requests.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(srv.requests.length).toBeLessThanOrEqual(seen + 1);
  });
});

describe('probe (Aurora matching rules)', () => {
  let srv: FlipServer;
  beforeEach(async () => {
    srv = await flipServer();
  });
  afterEach(async () => srv.close());
  const url = () => `http://127.0.0.1:${srv.port}/health`;

  test('the trimmed body must equal expected_response', async () => {
    srv.answer = { status: 200, body: '  ok \n' };
    expect(await probe(url(), config())).toEqual({ ok: true, detail: '200' });
    srv.answer = { status: 200, body: 'okay' };
    expect(await probe(url(), config())).toEqual({
      ok: false,
      detail: '200 with body "okay", expected "ok"',
    });
  });

  test('an empty expected_response accepts any body', async () => {
    srv.answer = { status: 201, body: 'whatever' };
    expect((await probe(url(), config({ expected_response: '' }))).ok).toBe(true);
  });

  test('expected_response_code 0 means any 2xx; otherwise exactly that code', async () => {
    srv.answer = { status: 299, body: 'ok' };
    expect((await probe(url(), config())).ok).toBe(true);
    srv.answer = { status: 302, body: 'ok' };
    expect(await probe(url(), config())).toEqual({ ok: false, detail: '302' });
    srv.answer = { status: 418, body: 'ok' };
    expect((await probe(url(), config({ expected_response_code: 418 }))).ok).toBe(true);
    srv.answer = { status: 200, body: 'ok' };
    expect((await probe(url(), config({ expected_response_code: 418 }))).ok).toBe(false);
  });

  test('a server that does not answer in timeout_secs fails the probe', async () => {
    srv.answer = { status: 200, body: 'ok', hang: true };
    const t0 = Date.now();
    expect(await probe(url(), config({ timeout_secs: 0.2 }))).toEqual({
      ok: false,
      detail: 'no answer within 0.2 s',
    });
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test('nothing listening: connection refused', async () => {
    await srv.close();
    expect(await probe(url(), config())).toEqual({ ok: false, detail: 'connection refused' });
    srv = await flipServer();
  });
});

describe('healthCheckPort', () => {
  const spec = (over: Record<string, unknown>) =>
    JobSpec.parse({
      name: 'j',
      role: 'r',
      cluster: 'c',
      environment: 'e',
      task: { name: 't', processes: [{ name: 'p', cmdline: 'true' }] },
      health_check_config: {},
      ...over,
    });

  test('the check port, else the primary port, else the first declared port', () => {
    const ports = { http: 1000, admin: 2000 };
    expect(healthCheckPort(spec({ mxc: { ports: ['http', 'admin'] } }), ports)).toBe(1000);
    expect(healthCheckPort(spec({ mxc: { ports: ['http', 'admin'], health_port: 'admin' } }), ports)).toBe(
      2000,
    );
    expect(
      healthCheckPort(
        spec({ mxc: { ports: ['http', 'admin'] }, announce: { primary_port: 'admin' } }),
        ports,
      ),
    ).toBe(2000);
    expect(healthCheckPort(spec({ mxc: { ports: ['admin', 'http'] } }), ports)).toBe(2000);
  });

  test('a port the job does not declare is a clear error', () => {
    expect(() => healthCheckPort(spec({}), {})).toThrow(/no port to check: declare one in mxc\.ports/);
    expect(() =>
      healthCheckPort(spec({ mxc: { ports: ['http'] }, announce: { primary_port: 'admin' } }), {
        http: 1,
      }),
    ).toThrow(/port "admin", which the job does not declare: add it to mxc\.ports \(declared: http\)/);
  });
});
