/**
 * The API contract: every route fastify registered appears in the generated OpenAPI document with the
 * schemas it declares; every JSON route answers through its schema (a tour with a protocol agent, each
 * answer parsed by the spec/ schema the CLI uses); an answer that breaks its schema is caught (coded 500,
 * logged), and bad input is a coded VALIDATION_FAILED naming the JSON path.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { type ZodObject, type ZodType, z } from 'zod';
import {
  HEADERS_TIMEOUT_MS,
  MAX_PATH_PARAM_CHARS,
  maxConnectionsFor,
  openFileLimit,
} from '../../scheduler/api/app.js';
import { data, installContract, isJsonApiRoute, typed } from '../../scheduler/api/contract.js';
import { installErrorHandler } from '../../scheduler/api/error-handler.js';
import { JOB_PAGE_BYTES } from '../../scheduler/api/routes/jobs.js';
import * as nodesStore from '../../scheduler/store/nodes.js';
import * as api from '../../spec/api.js';
import * as apiJobs from '../../spec/api-jobs.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, PLAIN_CAPABILITIES, ProtocolAgent } from '../helpers/protocol-agent.js';

type Doc = {
  paths: Record<
    string,
    Record<
      string,
      {
        parameters?: { in: string; name: string }[];
        requestBody?: { content: Record<string, { schema: unknown }> };
        responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>;
      }
    >
  >;
};

/** fastify's `/a/:id/*` as OpenAPI's `/a/{id}/{*}`. */
const docPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*/g, '{*}');

const keysOf = (s: unknown) => Object.keys((s as ZodObject).shape ?? {}).sort();

const DASHBOARD = 'the dashboard: HTML, JavaScript and CSS files, not JSON';

/**
 * The only routes allowed to declare no schemas, each with its reason. A new route missing from this list
 * without params, body and response schemas fails the walk below; an entry whose route has schemas now
 * (or is gone) fails too, so the list stays true.
 */
const UNSCHEMATISED: Record<string, string> = {
  'GET /': DASHBOARD,
  'GET /ui/*': DASHBOARD,
};

/** Uploads whose body is NAR bytes (checked as they stream in, never parsed as JSON): no body schema. */
const RAW_BODY = new Set(['PUT /api/cache/nar/*', 'POST /api/cache/nars']);

/** POST routes that act on the resource their path names and read no request body. */
const TAKES_NO_BODY = new Set([
  'POST /api/jobs/:id/restart',
  'POST /api/jobs/:id/stop',
  'POST /api/jobs/:id/update/pause',
  'POST /api/jobs/:id/update/resume',
  'POST /api/jobs/:id/update/abort',
  'POST /api/jobs/:id/run',
  'POST /api/workloads/:id/stop',
  'POST /api/nodes/:id/drain',
  'POST /api/nodes/:id/undrain',
]);

/** Path parameters of a fastify URL (`*` for a wildcard). */
const paramsOf = (url: string) => [...url.matchAll(/:([A-Za-z0-9_]+)|\*/g)].map((m) => m[1] ?? '*').sort();

describe('API contract', () => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) a.close();
    await c?.stop();
  });

  it('documents every route in the route table with the schemas it declares', async () => {
    c = await startTestCoordinator('pglite');
    const doc = (await c.api<Doc>('GET', '/api/openapi.json')).body;
    const routes = c.app.routeTable.filter((r) => r.method !== 'HEAD');
    expect(routes.length).toBeGreaterThan(30);
    const keys = new Set(routes.map((r) => `${r.method} ${r.url}`));
    for (const excluded of [...Object.keys(UNSCHEMATISED), ...TAKES_NO_BODY, ...RAW_BODY])
      expect(keys.has(excluded), `${excluded} (listed as an exception) is a route`).toBe(true);
    let jsonRoutes = 0;
    for (const r of routes) {
      const where = `${r.method} ${r.url}`;
      const op = doc.paths[docPath(r.url)]?.[r.method.toLowerCase()];
      expect(op, `${where} is in the document`).toBeDefined();
      const schema = r.schema as
        | {
            params?: ZodType;
            querystring?: ZodType;
            body?: ZodType;
            response?: Record<string, ZodType | { content: Record<string, { schema: ZodType }> }>;
          }
        | undefined;
      if (UNSCHEMATISED[where]) {
        expect(
          schema?.response,
          `${where} declares response schemas now: remove it from UNSCHEMATISED (${UNSCHEMATISED[where]})`,
        ).toBeUndefined();
        continue;
      }
      // The cache's read side speaks Nix's text formats, declared as content types.
      expect(
        isJsonApiRoute(r.url) || r.url.startsWith('/cache/'),
        `${where} is a JSON route, a cache route, or listed in UNSCHEMATISED`,
      ).toBe(true);
      if (isJsonApiRoute(r.url)) jsonRoutes++;
      // Every part of the request that carries data has a schema; so has every answer, errors included.
      expect(schema?.response, `${where} declares its answers`).toBeDefined();
      if (!schema?.response) continue;
      expect(schema.params ? keysOf(schema.params) : [], `${where} params schema`).toEqual(paramsOf(r.url));
      if (['POST', 'PUT', 'PATCH'].includes(r.method))
        expect(
          schema.body !== undefined || TAKES_NO_BODY.has(where) || RAW_BODY.has(where),
          `${where} declares a body schema, or is listed in TAKES_NO_BODY or RAW_BODY`,
        ).toBe(true);
      else expect(schema.body, `${where} takes no body`).toBeUndefined();
      if (TAKES_NO_BODY.has(where))
        expect(schema.body, `${where} is listed in TAKES_NO_BODY`).toBeUndefined();
      expect(Object.keys(schema.response), `${where} documents its coded errors`).toEqual(
        expect.arrayContaining(['4XX', '5XX']),
      );
      // Every path parameter and query field is a documented parameter.
      const params = (op!.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
      const query = (op!.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
      expect(params.sort(), `${where} path parameters`).toEqual(schema.params ? keysOf(schema.params) : []);
      expect(params.length, `${where} declares its path parameters`).toBe(
        (r.url.match(/:|\*/g) ?? []).length,
      );
      expect(query.sort(), `${where} query`).toEqual(schema.querystring ? keysOf(schema.querystring) : []);
      expect(op!.requestBody !== undefined, `${where} body`).toBe(schema.body !== undefined);
      // Every declared answer is a zod schema (JSON is serialised through it) or a documented other
      // content type (streams); every one is in the document, JSON objects with their fields.
      for (const [code, s] of Object.entries(schema.response)) {
        const documented = op!.responses[code];
        expect(documented, `${where} answer ${code}`).toBeDefined();
        expect('_zod' in (s as object) || 'content' in (s as object), `${where} answer ${code} schema`).toBe(
          true,
        );
        if ('content' in (s as object) && !('_zod' in (s as object))) {
          const types = Object.keys((s as { content: object }).content);
          expect(Object.keys(documented!.content ?? {}), `${where} ${code} content types`).toEqual(types);
          continue;
        }
        const json = documented!.content?.['application/json']?.schema;
        if ((s as ZodType)._zod.def.type === 'object') {
          expect(Object.keys((json?.properties as object) ?? {}).sort(), `${where} ${code} fields`).toEqual(
            keysOf(s),
          );
        }
      }
    }
    expect(jsonRoutes).toBeGreaterThanOrEqual(27);
    // The binary cache's routes are part of the contract too (none is an exception above).
    expect(routes.map((r) => `${r.method} ${r.url}`)).toEqual(
      expect.arrayContaining([
        'GET /cache/nix-cache-info',
        'GET /cache/:file',
        'GET /cache/nar/:file',
        'GET /api/cache/key',
        'POST /api/cache/missing',
        'PUT /api/cache/nar/*',
        'POST /api/cache/nars',
      ]),
    );
    expect((doc as { openapi?: string }).openapi).toBe('3.1.0');
    const submit = doc.paths['/api/jobs']!.post!.requestBody!.content['application/json']!.schema as {
      required: string[];
    };
    expect(submit.required).toEqual(
      expect.arrayContaining(['name', 'role', 'cluster', 'environment', 'task']),
    );
    // Timestamps are documented as what goes over the wire.
    const list = doc.paths['/api/nodes']!.get!.responses['200']!.content!['application/json']!.schema as {
      properties: { data: { items: { properties: Record<string, unknown> } } };
    };
    expect(list.properties.data.items.properties.last_seen_at).toMatchObject({
      type: 'string',
      format: 'date-time',
    });
    // The first PGlite of a run compiles its WebAssembly: slow on a loaded machine.
  }, 180_000);

  it('answers every JSON route through its schema, parsed as the CLI parses it', async () => {
    c = await startTestCoordinator('pglite');
    const call = async <T extends ZodType>(
      method: string,
      path: string,
      schema: T,
      body?: unknown,
      status = 200,
    ): Promise<z.output<T>> => {
      const r = await c.api(method, path, body);
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(status);
      return schema.parse(r.body);
    };
    const a = await new ProtocolAgent({ url: c.url, name: 'n1' }).connect();
    agents.push(a);

    const submitted = (await call('POST', '/api/jobs', data(api.SubmitResult), plainJob(), 201)).data;
    expect(submitted.job.created_at).toBeInstanceOf(Date);
    const jobId = submitted.job.id;
    const wid = submitted.workloads[0]!;
    await eventually(
      async () => (await c.api('GET', `/api/workloads/${wid}`)).body.data.status === 'running',
    );

    await call('GET', '/api/jobs', api.page(apiJobs.JobWithSpec));
    const detail = (await call('GET', `/api/jobs/${jobId}`, data(apiJobs.JobDetail))).data;
    expect(detail.workloads[0]!.node).toBe('n1');
    await call('GET', `/api/jobs/${jobId}/versions`, api.page(apiJobs.JobVersion));
    await call('GET', `/api/jobs/${jobId}/updates`, data(z.array(api.JobUpdate)));
    await call('GET', `/api/jobs/${jobId}/closure`, data(z.array(api.ClosurePath)));
    await call('GET', `/api/jobs/${jobId}/closure?version=1`, data(z.array(api.ClosurePath)));
    await call('POST', `/api/jobs/${jobId}/prewarm`, data(api.PrewarmResult), {});
    // With no body at all (the dashboard's button) as well.
    const bare = await fetch(`${c.url}/api/jobs/${jobId}/prewarm`, { method: 'POST' });
    expect(bare.status).toBe(200);
    data(api.PrewarmResult).parse(await bare.json());
    await call('GET', '/api/store-paths?contains=busybox', data(z.array(api.StorePathUse)));
    await call('GET', '/api/workloads', data(z.array(api.Workload)));
    await call(
      'GET',
      `/api/workloads?status=running&job=${jobId}&node=n1&limit=5`,
      data(z.array(api.Workload)),
    );
    const w = (await call('GET', `/api/workloads/${wid}`, data(api.WorkloadDetail))).data;
    expect(w.events.length).toBeGreaterThan(0);
    await call('GET', `/api/workloads/${wid}/events`, data(z.array(api.WorkloadEvent)));
    await call('GET', `/api/workloads/${wid}/logs`, data(z.array(api.LogEntry)));
    const nodes = (await call('GET', '/api/nodes', data(z.array(api.Node)))).data;
    await call('GET', `/api/nodes/${nodes[0]!.id}`, data(api.NodeDetail));
    await call('GET', '/api/cluster/status', data(api.ClusterStatus));
    await call('GET', '/healthz', z.object({ status: z.literal('ok') }));
    expect((await c.api('GET', '/metrics')).body).toMatch(/^mxc_nodes\{status="ready"\} 1$/m);

    // The actions whose answers broke their documentation: stop, drain and undrain answer the documented views.
    const stopped = (await call('POST', `/api/workloads/${wid}/stop`, data(api.Workload), {})).data;
    expect(stopped).toMatchObject({ id: wid, status: 'stopping', job: detail.key, node: 'n1' });
    const drained = (await call('POST', '/api/nodes/n1/drain', data(api.Node), {})).data;
    expect(drained).toMatchObject({ name: 'n1', status: 'draining', connected: true });
    expect(drained.used).toBeDefined();
    const undrained = (await call('POST', '/api/nodes/n1/undrain', data(api.Node))).data;
    expect(undrained).toMatchObject({ name: 'n1', status: 'ready', connected: true });
    await call('POST', `/api/jobs/${jobId}/restart`, data(api.RestartJobResult), {});
    const jobStopped = (await call('POST', `/api/jobs/${jobId}/stop`, data(api.StopJobResult), {})).data;
    expect(jobStopped.job.status).toBe('stopped');

    const token = (
      await call('POST', '/api/tokens', data(api.CreatedToken), { name: 'ci', kind: 'client' }, 201)
    ).data;
    expect(token.token).toMatch(/^mxc_c_/);
    const tokens = (await c.api('GET', '/api/tokens', undefined, { authorization: `Bearer ${token.token}` }))
      .body;
    expect(
      data(z.array(api.Token))
        .parse(tokens)
        .data.map((t) => t.name),
    ).toEqual(['ci']);
    expect(JSON.stringify(tokens)).not.toMatch(/hash/);
    const del = await c.api('DELETE', '/api/tokens/ci', undefined, {
      authorization: `Bearer ${token.token}`,
    });
    expect(del.status).toBe(204);

    // The event stream still streams, each event in its spec/ shape.
    const ctl = new AbortController();
    const res = await fetch(`${c.url}/api/events`, { signal: ctl.signal });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    expect(decoder.decode((await reader.read()).value)).toMatch(/connected/);
    await call('POST', '/api/nodes/n1/drain', data(api.Node));
    // Every event on the way parses; the drain's own one comes (other changes may come first).
    let text = '';
    const events: z.output<typeof api.ChangeEvent>[] = [];
    const drainEvent = { kind: 'node', id: nodes[0]!.id, status: 'draining' };
    while (!events.some((e) => e.kind === 'node' && e.status === 'draining')) {
      text += decoder.decode((await reader.read()).value, { stream: true });
      for (let end = text.indexOf('\n\n'); end >= 0; end = text.indexOf('\n\n')) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        if (block.startsWith('data: ')) events.push(api.ChangeEvent.parse(JSON.parse(block.slice(6))));
      }
    }
    expect(events).toContainEqual(drainEvent);
    ctl.abort();
  });

  it('a job name several jobs share names none of them: 409 AMBIGUOUS with their keys, nothing changed', async () => {
    c = await startTestCoordinator('pglite');
    for (const environment of ['devel', 'prod', 'staging'])
      expect((await c.api('POST', '/api/jobs', plainJob({ name: 'cron', environment }))).status).toBe(201);
    const only = (await c.api('POST', '/api/jobs', plainJob({ name: 'solo' }))).body.data.job;
    for (const [method, path] of [
      ['GET', '/api/jobs/cron'],
      ['POST', '/api/jobs/cron/stop'],
      ['POST', '/api/jobs/cron/restart'],
    ] as const) {
      const r = await c.api(method, path);
      expect([path, r.status, r.body.error?.code]).toEqual([path, 409, 'AMBIGUOUS']);
      expect(r.body.error.message).toContain(
        'test/www/devel/cron, test/www/prod/cron, test/www/staging/cron',
      );
    }
    const jobs = (await c.api('GET', '/api/jobs')).body.data as { key: string; status: string }[];
    expect(jobs.filter((j) => j.status === 'stopped')).toEqual([]);
    // A key or an id names one job; a name only one job has still names it.
    expect((await c.api('GET', `/api/jobs/${encodeURIComponent('test/www/prod/cron')}`)).status).toBe(200);
    expect((await c.api('GET', '/api/jobs/solo')).body.data.id).toBe(only.id);
  });

  /** Every page of a paged GET (`path` holds its query), following next_cursor; `eachPage` checks each. */
  async function everyPage<T extends ZodType>(
    path: string,
    item: T,
    eachPage: (data: z.infer<T>[]) => void,
  ): Promise<{ items: z.infer<T>[]; pages: number }> {
    const items: z.infer<T>[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await c.api('GET', `${path}${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      const p = api.page(item).parse(r.body);
      eachPage(p.data);
      items.push(...p.data);
      cursor = p.next_cursor;
      pages++;
    } while (cursor);
    return { items, pages };
  }

  it('pages /api/nodes in name order: every node once, a bad cursor or page size refused', async () => {
    c = await startTestCoordinator('pglite');
    const capabilities = PLAIN_CAPABILITIES;
    const names = Array.from({ length: 7 }, (_, i) => `node-${String(6 - i).padStart(2, '0')}`);
    for (const [i, name] of names.entries())
      await nodesStore.upsertNode(c.db, {
        id: `id-${i}`,
        name,
        resources: { cpu: 1, memory_mb: 64, disk_mb: 0 },
        capabilities,
        version: 'test',
      });
    const { items, pages } = await everyPage('/api/nodes?limit=3', api.Node, (data) =>
      expect(data.length).toBeLessThanOrEqual(3),
    );
    const seen = items.map((n) => n.name);
    expect(pages).toBe(3);
    expect(seen).toEqual([...names].sort());
    // Default page: all 7 (default size 100), no next page.
    const all = api.page(api.Node).parse((await c.api('GET', '/api/nodes')).body);
    expect(all.data.length).toBe(7);
    expect(all.next_cursor).toBeNull();
    expect((await c.api('GET', '/api/nodes?limit=1001')).body.error.code).toBe('VALIDATION_FAILED');
    expect((await c.api('GET', '/api/nodes?cursor=%2F%2F')).body.error.code).toBe('BAD_REQUEST');
  });

  it('pages /api/jobs by key, and ends a page early when its specs are large', async () => {
    c = await startTestCoordinator('pglite');
    // Jobs of ~1.5 MiB of env each (cron, so they never run): 8 MiB of specs is 5 of them a page.
    const env = Object.fromEntries(
      Array.from({ length: 24 }, (_, i) => [`BIG_${i}`, String(i % 10).repeat(64 * 1024)]),
    );
    const names = Array.from({ length: 12 }, (_, i) => `big-${String(11 - i).padStart(2, '0')}`);
    for (const name of names) {
      const job = plainJob({ name, service: false, cron_schedule: '0 0 1 1 *', mxc: { env } });
      const r = await c.api('POST', '/api/jobs', job);
      expect(r.status, JSON.stringify(r.body.error)).toBe(201);
    }
    const { items, pages } = await everyPage('/api/jobs?limit=1000', apiJobs.JobWithSpec, (data) =>
      expect(Buffer.byteLength(JSON.stringify(data))).toBeLessThan(JOB_PAGE_BYTES + 2 * 1024 * 1024),
    );
    const seen = items.map((j) => j.name);
    expect(seen).toEqual([...names].sort());
    expect(pages).toBeGreaterThanOrEqual(3);
    // A page size is honoured as well, and the CLI reads every page.
    const two = api.page(apiJobs.JobWithSpec).parse((await c.api('GET', '/api/jobs?limit=2')).body);
    expect([two.data.length, two.next_cursor !== null]).toEqual([2, true]);
    expect((await c.api('GET', '/api/jobs?cursor=%2F%2F')).body.error.code).toBe('BAD_REQUEST');
  }, 60_000);

  it('refuses bad input with a coded error naming the JSON path', async () => {
    c = await startTestCoordinator('pglite');
    const q = await c.api('GET', '/api/workloads?limit=0&status=running,bogus');
    expect(q.status).toBe(422);
    expect(q.body.error.code).toBe('VALIDATION_FAILED');
    expect(q.body.error.details.problems.join('\n')).toMatch(/^limit: /m);
    expect(q.body.error.details.problems.join('\n')).toMatch(/^status\.1: /m);
    const t = await c.api('POST', '/api/tokens', { name: 'a b', kind: 'root' });
    expect(t.status).toBe(422);
    expect(t.body.error.message).toMatch(/request body is invalid/);
    expect(t.body.error.details.problems.join('\n')).toMatch(/^kind: /m);
    const v = await c.api('GET', '/api/jobs/x/closure?version=-1');
    expect(v.status).toBe(422);
    expect(v.body.error.details.problems).toEqual([expect.stringMatching(/^version: /)]);
  });

  it('an unknown route is 404 NOT_FOUND for every method, with a body or without', async () => {
    c = await startTestCoordinator('pglite');
    const seen: unknown[] = [];
    const expected: unknown[] = [];
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      for (const body of [undefined, { a: 1 }]) {
        if (body && (method === 'GET' || method === 'HEAD')) continue;
        const r = await c.api(method, '/api/nope', body);
        // A HEAD answer has no body to carry the code.
        seen.push([method, body !== undefined, r.status, method === 'HEAD' ? '' : r.body.error?.code]);
        expected.push([method, body !== undefined, 404, method === 'HEAD' ? '' : 'NOT_FOUND']);
      }
    }
    expect(seen).toEqual(expected);
  });

  it("samrose/mxc's routes mxc has none of say what to do instead (404 NOT_FOUND), with a body or without", async () => {
    c = await startTestCoordinator('pglite');
    const cases: [string, string, unknown, RegExp][] = [
      [
        'POST',
        '/api/nodes',
        { hostname: 'n1', cpu_total: 4 },
        /a node joins when its agent starts, `mxc agent/,
      ],
      ['PUT', '/api/nodes/n1', { status: 'draining' }, /POST \/api\/nodes\/:id\/drain and \/undrain/],
      ['GET', '/api/rules', undefined, /placement follows each job's constraints/],
      ['POST', '/api/rules', { name: 'r', rule_text: 'x' }, /no scheduling-rule objects/],
      ['DELETE', '/api/rules/7', undefined, /MXC_SCHEDULER_STRATEGY/],
    ];
    for (const [method, path, body, instead] of cases) {
      const r = await c.api(method, path, body);
      expect([method, path, r.status, r.body.error.code]).toEqual([method, path, 404, 'NOT_FOUND']);
      expect(r.body.error.message).toMatch(new RegExp(`^no route ${method} ${path}; `));
      expect(r.body.error.message).toMatch(instead);
    }
    // Other unknown routes are answered as before.
    expect((await c.api('GET', '/api/nope')).body.error.message).toBe('no route GET /api/nope');
  });

  it('addresses names at their longest; a path the router cannot read is a coded 400 or 414', async () => {
    c = await startTestCoordinator('pglite');
    // Four names of 128 characters: the job key is 515, its workload ids ~140 (fastify's default bound
    // on a path parameter, 100, refused both with an uncoded 414).
    const name = (ch: string) => ch.repeat(128);
    const job = plainJob({ cluster: name('c'), role: name('r'), environment: name('e'), name: name('n') });
    const submitted = await c.api('POST', '/api/jobs', job);
    expect(submitted.status).toBe(201);
    const key = [name('c'), name('r'), name('e'), name('n')].join('/');
    const byKey = await c.api('GET', `/api/jobs/${encodeURIComponent(key)}`);
    expect([byKey.status, byKey.body.data?.key, byKey.body.error]).toEqual([200, key, undefined]);
    const [id] = submitted.body.data.workloads as string[];
    expect(id!.length).toBeGreaterThan(128);
    const w = await c.api('GET', `/api/workloads/${id}`);
    expect([w.status, w.body.data.id]).toEqual([200, id]);
    expect((await c.api('GET', `/api/workloads/${id}/events`)).status).toBe(200);
    const bad = await c.api('GET', '/api/workloads/%ff');
    expect([bad.status, bad.body.error.code]).toEqual([400, 'BAD_URL']);
    const long = await c.api('GET', `/api/nodes/${'x'.repeat(MAX_PATH_PARAM_CHARS + 1)}`);
    expect([long.status, long.body.error.code]).toEqual([414, 'URL_TOO_LONG']);
    // The router takes a parameter of the bound; the route's schema then refuses what no id can be.
    const most = await c.api('GET', `/api/nodes/${'x'.repeat(MAX_PATH_PARAM_CHARS)}`);
    expect([most.status, most.body.error.code]).toEqual([422, 'VALIDATION_FAILED']);
  });

  it("what Node's HTTP parser refuses is coded too; a client that never ends its headers is let go", async () => {
    c = await startTestCoordinator('pglite');
    const port = Number(new URL(c.url).port);
    /** Sends raw bytes and reads what comes back until the server closes the connection. */
    const raw = (bytes: string) =>
      new Promise<{ text: string; ms: number }>((resolve, reject) => {
        const t0 = Date.now();
        let text = '';
        const s = connect(port, '127.0.0.1', () => s.write(bytes));
        s.on('data', (d) => {
          text += d;
        });
        s.on('error', reject);
        s.on('close', () => resolve({ text, ms: Date.now() - t0 }));
      });
    const bodyOf = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
    const big = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big.text).toMatch(/^HTTP\/1\.1 431 /);
    expect(bodyOf(big.text).error.code).toBe('HEADERS_TOO_LARGE');
    const bad = await raw('BLAH\r\n\r\n');
    expect(bad.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(bodyOf(bad.text).error.code).toBe('BAD_REQUEST');
    const slow = await raw('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(bodyOf(slow.text).error.code).toBe('REQUEST_TIMEOUT');
    expect(slow.ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100);
    expect(slow.ms).toBeLessThan(HEADERS_TIMEOUT_MS + 3000);
  }, 30_000);

  it('a body nobody takes is refused before it is read, and forged cursors are a coded 400', async () => {
    c = await startTestCoordinator('pglite', { tokens: { api: 'contract-admin' } });
    const port = Number(new URL(c.url).port);
    /** Sends `request` raw and reads the answer until the server closes the connection (or 8 s pass). */
    const ended = (request: string) =>
      new Promise<{ text: string; ms: number }>((resolve, reject) => {
        const t0 = Date.now();
        let text = '';
        const s = connect(port, '127.0.0.1', () => s.write(request));
        const give = setTimeout(() => {
          s.destroy();
          resolve({ text, ms: Date.now() - t0 });
        }, 8000);
        s.on('data', (d) => {
          text += d.toString('latin1');
        });
        s.on('error', reject);
        s.on('close', () => {
          clearTimeout(give);
          resolve({ text, ms: Date.now() - t0 });
        });
      });
    // Headers that announce a large body, then nothing: answered at once and closed, token or not.
    const held = (method: string, path: string) =>
      ended(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000000\r\n\r\nx`);
    const unmatched = await held('POST', '/nope');
    expect(unmatched.text).toMatch(/^HTTP\/1\.1 404 /);
    expect(unmatched.ms).toBeLessThan(2000);
    const pub = await held('POST', '/healthz');
    expect(pub.text).toMatch(/^HTTP\/1\.1 (400|404) /);
    expect(pub.ms).toBeLessThan(2000);
    const getWithBody = await held('GET', '/healthz');
    expect(getWithBody.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(getWithBody.text).toContain('BODY_NOT_ALLOWED');
    // Without a token, on routes that need one (an attacker pass held 800 connections so, each up to
    // the 30-minute request timeout, and locked every client out): refused at once, and closed.
    for (const path of ['/api/nodes', '/cache/nix-cache-info', '/cache/nar/x.nar', '/api/agent/ws']) {
      const r = await held('GET', path);
      expect([path, r.text.slice(0, 12), r.text.includes('BODY_NOT_ALLOWED')]).toEqual([
        path,
        'HTTP/1.1 400',
        true,
      ]);
      expect(r.ms).toBeLessThan(2000);
    }
    // A refused upload (no token) is closed too rather than read.
    const upload = await held('POST', '/api/jobs');
    expect(upload.text).toMatch(/^HTTP\/1\.1 401 /);
    expect(upload.ms).toBeLessThan(2000);
    // Refused upgrades end with their answer, and so does any refused request (a second attacker pass:
    // an upgrade with a body, or to a route that needs a token, stayed open for minutes; a refused
    // agent socket whose peer never answered the close, 30 s).
    const upgrade =
      'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    for (const [request, status] of [
      [`GET /api/agent/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgrade}Content-Length: 100000\r\n\r\nx`, '400'],
      [`GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgrade}\r\n`, '401'],
      ['GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', '401'],
      // Welcomed as a WebSocket, refused for its token, and never answering the close.
      [`GET /api/agent/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n${upgrade}\r\n`, '101'],
    ] as const) {
      const r = await ended(request);
      expect([request.split('\r\n')[0], r.text.slice(9, 12)]).toEqual([request.split('\r\n')[0], status]);
      expect(r.ms).toBeLessThan(3000);
    }

    const auth = { authorization: 'Bearer contract-admin' };
    const job = (await c.api('POST', '/api/jobs', plainJob(), auth)).body.data.job.id;
    const b64 = (key: string) => Buffer.from(key, 'utf8').toString('base64url');
    for (const path of [
      `/api/jobs?cursor=${b64('\u0000')}`,
      `/api/jobs?cursor=${b64('a\u0000b')}`,
      `/api/nodes?cursor=${b64('\u0001')}`,
      `/api/jobs/${job}/versions?cursor=${b64('99999999999')}`,
      `/api/jobs/${job}/versions?cursor=${b64('1e300')}`,
      `/api/jobs/${job}/versions?cursor=${b64('-1')}`,
    ]) {
      const r = await c.api('GET', path, undefined, auth);
      expect([path, r.status, r.body.error?.code]).toEqual([path, 400, 'BAD_REQUEST']);
    }
    // Numbers past what the database's columns hold are refused as input, not a 500 from the database.
    const wid = (await c.api('GET', `/api/workloads?job=${job}`, undefined, auth)).body.data[0].id;
    for (const path of [
      `/api/jobs/${job}/closure?version=2147483648`,
      `/api/jobs/${job}/closure?version=9007199254740991`,
      `/api/workloads/${wid}/logs?after=100000000000000000000`,
    ]) {
      const r = await c.api('GET', path, undefined, auth);
      expect([path, r.status, r.body.error?.code]).toEqual([path, 422, 'VALIDATION_FAILED']);
    }
  }, 30_000);

  it('takes as many connections as its descriptors allow, keeping room for the database and files', () => {
    expect(maxConnectionsFor(1024)).toBe(768);
    expect(maxConnectionsFor(20_000)).toBe(17_500);
    expect(maxConnectionsFor(100)).toBe(64);
    expect(openFileLimit()).toBe(
      Number(
        readFileSync('/proc/self/limits', 'utf8')
          .split('\n')
          .find((l) => l.startsWith('Max open files'))!
          .split(/\s+/)[3],
      ),
    );
  });

  it('catches an answer that does not match its schema: a coded 500, the reason in the log', async () => {
    const log = captureLogger('error');
    const app = Fastify({ loggerInstance: log.logger as FastifyBaseLogger });
    installErrorHandler(app);
    await installContract(app, 'test');
    typed(app).get(
      '/api/broken',
      { schema: { response: { 200: data(z.object({ id: z.string() })) } } },
      // A handler that drifted from its contract (typed code cannot even say this without a cast).
      async () => ({ data: { id: 5 } }) as unknown as { data: { id: string } },
    );
    // The contract refuses a JSON route without a response schema at start.
    expect(() => app.get('/api/unchecked', async () => ({}))).toThrow(/declares no response schema/);
    const r = await app.inject({ method: 'GET', url: '/api/broken' });
    expect(r.statusCode).toBe(500);
    expect(r.json().error.code).toBe('INTERNAL');
    expect(r.body).not.toContain('"id":5');
    const lines = JSON.stringify(log.records);
    expect(lines).toMatch(/response does not match its schema/);
    expect(lines).toMatch(/expected string/);
    await app.close();
  });
});
