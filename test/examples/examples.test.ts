/**
 * The examples end to end: each is nix-built, its closure pushed to a real coordinator (PostgreSQL),
 * submitted over the HTTP API and run by a real agent on its own chroot store. Checks what each
 * example claims: web serves and turns healthy, pipeline's order / ephemeral / final rules hold,
 * batch runs to completion, cron is accepted; and a failing health check fails the workload.
 */
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readJobInput } from '../../compiler/job-input.js';
import { repoPath } from '../../scheduler/paths.js';
import type * as logs from '../../scheduler/store/logs.js';
import type { JobSpecInput } from '../../spec/job.js';
import { type Cluster, eventually, logLines, push, startCluster, TOKENS } from '../agent-e2e/harness.js';

const AUTH = { authorization: `Bearer ${TOKENS.api}` };

interface WorkloadView {
  id: string;
  status: string;
  error: string | null;
  restarts: number;
  ports: Record<string, number>;
  health?: string;
  events: { to_status: string; reason: string }[];
}

let cl: Cluster;

beforeAll(async () => {
  cl = await startCluster();
  await cl.agent('examples');
});

afterAll(async () => {
  await cl?.stop();
});

/** `nix-build examples/<x>`: the job JSON as nix wrote it (the raw input of `mxc submit`). */
async function buildExample(name: string): Promise<JobSpecInput> {
  const r = await execa('nix-build', [
    '--option',
    'substituters',
    '',
    repoPath('examples', name),
    '--no-out-link',
  ]);
  const path = r.stdout.trim();
  expect(path).toMatch(new RegExp(`^/nix/store/[a-z0-9]{32}-mxc-job-.*-${name}\\.json$`));
  // What nix built is an Aurora job; mxc submit joins the sidecar it names (mxc's fields).
  const raw = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  expect(raw).not.toHaveProperty('mxc');
  return (await readJobInput(path)).spec as JobSpecInput;
}

/** Pushes the job's closure and submits it, as `mxc submit` does; returns the job and its workloads. */
async function deploy(spec: JobSpecInput): Promise<{ jobId: string; workloads: string[] }> {
  await push(cl.c, spec.mxc?.closure ?? []);
  const r = await cl.c.api<{ data: { job: { id: string }; workloads: string[] } }>(
    'POST',
    '/api/jobs',
    spec,
    AUTH,
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return { jobId: r.body.data.job.id, workloads: r.body.data.workloads };
}

async function show(id: string): Promise<WorkloadView> {
  const r = await cl.c.api<{ data: WorkloadView }>('GET', `/api/workloads/${id}`, undefined, AUTH);
  expect(r.status).toBe(200);
  return r.body.data;
}

async function waitStatus(id: string, status: string, timeoutMs = 20_000): Promise<WorkloadView> {
  let last: WorkloadView | null = null;
  return eventually(
    async () => {
      last = await show(id);
      return last.status === status ? last : null;
    },
    timeoutMs,
    `workload ${id} ${status}`,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${JSON.stringify(last)}`);
  });
}

async function waitLog(id: string, pred: (l: logs.LogRow) => boolean, what: string, timeoutMs = 15_000) {
  return eventually(
    async () => {
      const ls = await logLines(cl.c, id);
      return ls.some(pred) ? ls : null;
    },
    timeoutMs,
    what,
  );
}

/** The first log line of `process` matching `re` (fails the test when there is none). */
function lineOf(ls: logs.LogRow[], process: string, re: RegExp): logs.LogRow {
  const l = ls.find((x) => x.process === process && re.test(x.line));
  if (!l) throw new Error(`no ${process} line matching ${re} in:\n${ls.map(fmt).join('\n')}`);
  return l;
}
const fmt = (l: logs.LogRow) => `${l.id} ${l.process}/${l.stream}: ${l.line}`;

async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

async function stopWorkload(id: string) {
  const r = await cl.c.api('POST', `/api/workloads/${id}/stop`, undefined, AUTH);
  expect(r.status).toBe(200);
}

describe('examples on a real coordinator and agent', () => {
  test('web: serves its site on the allocated port and its health check turns healthy', async () => {
    const spec = await buildExample('web');
    // The example's own check is short enough to wait for: first probe after 2 s.
    expect(spec.health_check_config).toMatchObject({ initial_interval_secs: 2, endpoint: '/health' });
    const { jobId, workloads } = await deploy(spec);
    expect(workloads).toHaveLength(1);
    const id = workloads[0]!;
    const w = await waitStatus(id, 'running');
    const port = w.ports.http;
    expect(port).toBeGreaterThan(0);

    const site = await eventually(
      async () => httpGet(port!, '/').catch(() => null),
      10_000,
      'the site answers',
    );
    expect(site.status).toBe(200);
    expect(site.body).toContain('Served by busybox httpd from the Nix store');
    expect(await httpGet(port!, '/health')).toEqual({ status: 200, body: 'ok' });

    const ls = await waitLog(
      id,
      (l) => l.process === 'mxc' && l.line.startsWith('health check passed'),
      'the health check passes',
    );
    expect(lineOf(ls, 'mxc', /^health check passed/).line).toBe('health check passed: GET /health → 200');
    expect(lineOf(ls, 'mxc', /^health check: GET/).line).toBe(
      `health check: GET http://127.0.0.1:${port}/health every 5 s after 2 s, expecting a 2xx status and ` +
        `body "ok"; unhealthy after 4 failure(s) in a row`,
    );
    // The coordinator keeps the verdict the agent sent.
    const after = await eventually(async () => {
      const w = await show(id);
      return w.health === 'healthy' ? w : null;
    });
    expect(after.status).toBe('running');

    // Service discovery (Aurora's Announcer): the healthy instance with its host and named ports.
    const ep = await cl.c.api<{ data: unknown }>('GET', `/api/jobs/${jobId}/endpoints`, undefined, AUTH);
    expect(ep.status).toBe(200);
    expect(ep.body.data).toEqual({
      job: 'devcluster/www-data/devel/web',
      primary_port: 'http',
      instances: [
        {
          instance: 0,
          workload_id: id,
          node: 'examples',
          host: 'examples',
          primary_port: port,
          ports: { http: port },
        },
      ],
    });

    await stopWorkload(id);
    await waitStatus(id, 'stopped');
  });

  test('nix_aurora: a nix-aurora job runs as written, bound at launch, and is discoverable', async () => {
    const spec = await buildExample('nix_aurora');
    const { jobId, workloads } = await deploy(spec);
    expect(workloads).toHaveLength(2);
    const ports: number[] = [];
    for (const [instance, id] of workloads.entries()) {
      const w = await waitStatus(id, 'running');
      const port = w.ports.http!;
      expect(port).toBeGreaterThan(0);
      ports.push(port);
      // The agent bound {{mesos.instance}} and {{thermos.ports[http]}} in the cmdline, and
      // copiedExpandedFile wrote the bound copy of the store file into the sandbox.
      const page = await eventually(async () => httpGet(port, '/').catch(() => null), 10_000, 'the page');
      expect(page.body).toContain(`Instance ${instance} of a nix-aurora job, serving on port ${port}</h1>`);
    }
    // Both instances turn healthy and are listed with their ports and the Announcer's alias.
    const ep = await eventually(async () => {
      const r = await cl.c.api<{ data: { instances: unknown[] } }>(
        'GET',
        `/api/jobs/${jobId}/endpoints`,
        undefined,
        AUTH,
      );
      return r.body.data.instances.length === 2 ? r.body.data : null;
    }, 20_000);
    expect(ep.instances).toEqual(
      ports.map((port, instance) => ({
        instance,
        workload_id: workloads[instance],
        node: 'examples',
        host: 'examples',
        primary_port: port,
        ports: { http: port, aurora: port },
      })),
    );
    await cl.c.api('POST', `/api/jobs/${jobId}/stop`, undefined, AUTH);
    for (const id of workloads) await waitStatus(id, 'stopped');
  });

  test('pipeline: prepare finishes before serve starts, and cleanup runs at teardown', async () => {
    const spec = await buildExample('pipeline');
    const { workloads } = await deploy(spec);
    const id = workloads[0]!;
    const w = await waitStatus(id, 'running');
    const port = w.ports.http!;

    // serve serves what prepare wrote: it cannot have started before prepare finished.
    const page = await eventually(
      async () => httpGet(port, '/').catch(() => null),
      10_000,
      'pipeline serves',
    );
    expect(page.body).toMatch(/<h1>Hello from the pipeline, prepared .*<\/h1>/);
    // The page can be served before the task's log lines reach the coordinator: wait for serve's start
    // (prepare's lines come before it), then for the sidecar's, which may be written before or after it.
    await waitLog(id, (l) => l.process === 'serve' && /^run 1 started/.test(l.line), 'serve started');
    const ls = await waitLog(
      id,
      (l) => l.process === 'sidecar' && l.line.startsWith('sidecar: alive'),
      'the sidecar runs',
    );
    const prepared = lineOf(ls, 'prepare', /^run 1 exited with code 0/);
    const served = lineOf(ls, 'serve', /^run 1 started/);
    expect(prepared.ts).toBeLessThanOrEqual(served.ts);
    expect(prepared.id).toBeLessThan(served.id);
    expect(lineOf(ls, 'prepare', /^prepare: wrote www\/index.html$/).stream).toBe('stdout');
    // The final process has not run while the task is up.
    expect(ls.some((l) => l.process === 'cleanup' && l.line.includes('started'))).toBe(false);

    await stopWorkload(id);
    const stopped = await waitStatus(id, 'stopped');
    expect(stopped.events.at(-1)?.reason).toBeTruthy();
    const end = await waitLog(
      id,
      (l) => l.process === 'cleanup' && l.line === 'cleanup: removed www',
      'cleanup ran',
    );
    // cleanup ran after serve was stopped.
    const serveKilled = lineOf(end, 'serve', /^run 1 (killed by|exited)/);
    const cleanupStarted = lineOf(end, 'cleanup', /^run 1 started/);
    expect(serveKilled.id).toBeLessThan(cleanupStarted.id);
    expect(serveKilled.ts).toBeLessThanOrEqual(cleanupStarted.ts);
  });

  test('pipeline: the ephemeral sidecar does not keep the task alive', async () => {
    // The example's serve never ends; make it exit after a second (busybox, already in the closure)
    // so the task is done while the sidecar still loops, having had the time to say it is alive.
    const spec = await buildExample('pipeline');
    spec.name = 'pipeline-ephemeral';
    const serveScript = spec.task.processes.find((p) => p.name === 'serve')!.cmdline;
    // The script's interpreter line: `#!/nix/store/…-busybox/busybox sh`.
    const busybox = (await readFile(serveScript, 'utf8')).split('\n')[0]!.slice(2).split(' ')[0]!;
    expect(busybox).toMatch(/^\/nix\/store\/.*-busybox\/busybox$/);
    spec.task.processes.find((p) => p.name === 'serve')!.cmdline = `${busybox} sleep 1`;
    const { workloads } = await deploy(spec);
    const id = workloads[0]!;
    const done = await waitStatus(id, 'stopped');
    expect(done.events.at(-1)?.reason).toBe('task finished successfully');
    const ls = await waitLog(
      id,
      (l) => l.process === 'cleanup' && l.line === 'cleanup: removed www',
      'cleanup',
    );
    // The sidecar ran, was still running when the task finished, and was stopped by the teardown.
    expect(lineOf(ls, 'sidecar', /^sidecar: alive/).stream).toBe('stdout');
    expect(lineOf(ls, 'sidecar', /^run 1 (killed by|exited)/).id).toBeGreaterThan(
      lineOf(ls, 'serve', /^run 1 exited with code 0/).id,
    );
  });

  test('batch: both instances run to completion, their output in the logs', async () => {
    const spec = await buildExample('batch');
    const { workloads } = await deploy(spec);
    expect(workloads).toHaveLength(2);
    for (const id of workloads) {
      const w = await waitStatus(id, 'stopped');
      expect(w.events.at(-1)?.reason).toBe('task finished successfully');
      expect(w.error).toBeNull();
      const ls = await waitLog(id, (l) => l.line === 'batch: done', 'batch output');
      expect(lineOf(ls, 'compute', /^batch: 6 \* 7 = 42$/).stream).toBe('stdout');
    }
  });

  test('cron: submitting it is accepted', async () => {
    const spec = await buildExample('cron');
    await push(cl.c, spec.mxc?.closure ?? []);
    const r = await cl.c.api<{ data: { job: { id: string } } }>('POST', '/api/jobs', spec, AUTH);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const job = await cl.c.api<{ data: { spec: JobSpecInput } }>(
      'GET',
      `/api/jobs/${r.body.data.job.id}`,
      undefined,
      AUTH,
    );
    expect(job.body.data.spec).toMatchObject({
      cron_schedule: '*/5 * * * *',
      cron_collision_policy: 'CANCEL_NEW',
    });
    await cl.c.api('POST', `/api/jobs/${r.body.data.job.id}/stop`, undefined, AUTH);
  });

  test('a health check naming a port the job does not declare fails the start, saying so', async () => {
    const spec = await buildExample('web');
    spec.name = 'web-wrong-port';
    spec.mxc = { ...spec.mxc, health_port: undefined };
    spec.announce = { primary_port: 'admin' };
    const { jobId, workloads } = await deploy(spec);
    const failed = await waitStatus(workloads[0]!, 'failed');
    expect(failed.error).toBe(
      'could not start: the health check talks to port "admin", which the job does not declare: ' +
        'add it to mxc.ports (declared: http)',
    );
    await cl.c.api('POST', `/api/jobs/${jobId}/stop`, undefined, AUTH);
  });

  test('a failing health check fails the workload with its reason, and the coordinator restarts it', async () => {
    const spec = await buildExample('web');
    spec.name = 'web-unhealthy';
    spec.max_task_failures = 2;
    spec.health_check_config = {
      ...spec.health_check_config,
      endpoint: '/missing',
      initial_interval_secs: 0.3,
      interval_secs: 0.2,
      max_consecutive_failures: 1,
    };
    const { jobId, workloads } = await deploy(spec);
    const id = workloads[0]!;
    const failed = await waitStatus(id, 'failed');
    expect(failed.error).toBe('health check failed 2 times: GET /missing → 404');
    const ls = await logLines(cl.c, id);
    expect(lineOf(ls, 'mxc', /^health check failed \(1 of 1 tolerated\)/).line).toBe(
      'health check failed (1 of 1 tolerated): GET /missing → 404',
    );
    // The agent stopped httpd before reporting the failure.
    expect(lineOf(ls, 'httpd', /^run 1 (killed by|exited)/)).toBeTruthy();
    await expect(httpGet(failed.ports.http!, '/')).rejects.toThrow();
    // max_task_failures 2: one replacement.
    const all = await eventually(
      async () => {
        const r = await cl.c.api<{ data: WorkloadView[] }>(
          'GET',
          `/api/workloads?job=${jobId}`,
          undefined,
          AUTH,
        );
        return r.body.data.length >= 2 ? r.body.data : null;
      },
      10_000,
      'a replacement workload',
    );
    expect(all.find((w) => w.id !== id)?.restarts).toBe(1);
    await cl.c.api('POST', `/api/jobs/${jobId}/stop`, undefined, AUTH);
  });
});
