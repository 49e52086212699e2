/** `/api/jobs`: submit (create or replace), list, show, versions, updates, closure, prewarm, restart, stop. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import * as apiJobs from '../../../spec/api-jobs.js';
import { JobSpec } from '../../../spec/job.js';
import type { Coordinator } from '../../coordinator.js';
import { jobEndpoints } from '../../core/endpoints.js';
import { emptyCounts, jobState, type StateCounts } from '../../core/lifecycle.js';
import { errors } from '../../errors.js';
import * as closures from '../../store/closures.js';
import * as jobs from '../../store/jobs.js';
import * as nodesStore from '../../store/nodes.js';
import * as updates from '../../store/updates.js';
import * as wl from '../../store/workloads.js';
import { data, decodeCursor, encodeCursor, errorResponses, IdParams, typed } from '../contract.js';
import { presentWorkloads } from '../views.js';

/**
 * A job with what it is doing (running / complete / failed / stopped) and its workloads per state: all
 * of them (`counts`) and each instance's newest (`latest`).
 */
function withState<J extends jobs.JobRow>(
  job: J,
  spec: { cron_schedule?: string | null } | undefined,
  s: { counts: StateCounts; latest: StateCounts } | undefined,
) {
  const latest = s?.latest ?? emptyCounts();
  return {
    ...job,
    state: jobState({ status: job.status, cron: !!spec?.cron_schedule }, latest),
    counts: s?.counts ?? emptyCounts(),
    latest,
  };
}

const tags = ['jobs'];

/** Bytes of specs in one page of jobs or versions (a page holds at least one). */
export const JOB_PAGE_BYTES = 8 * 1024 * 1024;

/**
 * How many of `rows` (fetched one past the page size) make the page: at most `limit`, and fewer when
 * their specs pass JOB_PAGE_BYTES. Specs may be megabytes each: a list of them all held the event loop
 * for seconds and the whole answer in memory.
 */
function pageLength(rows: readonly { spec_bytes: number }[], limit: number): number {
  let bytes = 0;
  let taken = 0;
  while (taken < Math.min(rows.length, limit)) {
    bytes += rows[taken]!.spec_bytes;
    if (taken > 0 && bytes > JOB_PAGE_BYTES) break;
    taken++;
  }
  return taken;
}

export async function jobRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  const db = coordinator.db;
  const r = typed(app);

  const load = async (id: string) => {
    const job = await jobs.getJob(db, id);
    if (!job) throw errors.notFound('job', id);
    return job;
  };

  r.post(
    '/api/jobs',
    {
      schema: {
        summary: 'Submit a job spec (201: new version; 200: identical spec, no-op)',
        tags,
        body: JobSpec,
        response: { 200: data(api.SubmitResult), 201: data(api.SubmitResult), ...errorResponses },
      },
    },
    async (req, reply) => {
      const res = await coordinator.submitSpec(req.body);
      return reply.status(res.changed ? 201 : 200).send({
        data: { job: res.job, version: res.version, changed: res.changed, workloads: res.workloads },
      });
    },
  );

  // A dry run changes nothing: reading the cluster is all it needs.
  r.post(
    '/api/jobs/plan',
    {
      schema: {
        summary: 'What a submit of the spec would do, changing nothing (mxc jobs plan)',
        tags,
        body: api.JobPlanRequest,
        response: { 200: data(api.JobPlan), ...errorResponses },
      },
      config: { access: 'read' },
    },
    async (req) => ({ data: await coordinator.planJob(req.body) }),
  );

  r.get(
    '/api/jobs',
    {
      schema: {
        summary: 'List jobs by key with their current spec, a page at a time (follow next_cursor)',
        tags,
        querystring: api.PageQuery,
        response: { 200: api.page(apiJobs.JobWithSpec), ...errorResponses },
      },
    },
    async (req) => {
      const after = req.query.cursor === undefined ? undefined : decodeCursor(req.query.cursor);
      const rows = await jobs.listJobsPage(db, { after, limit: req.query.limit + 1 });
      const taken = pageLength(rows, req.query.limit);
      const pageRows = rows.slice(0, taken);
      const states = await wl.jobStateCounts(
        db,
        pageRows.map((j) => j.id),
      );
      return {
        data: pageRows.map(({ spec_bytes: _, ...j }) => withState(j, j.spec, states.get(j.id))),
        next_cursor: taken < rows.length ? encodeCursor(pageRows[taken - 1]!.key) : null,
      };
    },
  );

  r.get(
    '/api/jobs/:id',
    {
      schema: {
        summary: 'A job, its spec, workloads and latest update',
        tags,
        params: IdParams,
        response: { 200: data(apiJobs.JobDetail), ...errorResponses },
      },
    },
    async (req) => {
      const job = await load(req.params.id);
      const v = await jobs.getJobVersion(db, job.id, job.current_version);
      if (!v) throw new Error(`job ${job.key} has no version ${job.current_version}`);
      const workloads = await presentWorkloads(
        db,
        await wl.listWorkloads(db, { jobId: job.id, limit: 1000 }),
      );
      const [update] = await updates.listUpdates(db, job.id);
      const states = await wl.jobStateCounts(db, [job.id]);
      return {
        data: {
          ...withState(job, v.spec, states.get(job.id)),
          spec: v.spec,
          workloads,
          update: update ?? null,
        },
      };
    },
  );

  // Service discovery: the instances that serve, with host and named ports (Aurora's Announcer).
  r.get(
    '/api/jobs/:id/endpoints',
    {
      schema: {
        summary: "The job's serving instances with host and named ports (Aurora's Announcer)",
        tags,
        params: IdParams,
        response: { 200: data(api.JobEndpoints), ...errorResponses },
      },
    },
    async (req) => {
      const job = await load(req.params.id);
      const v = await jobs.getJobVersion(db, job.id, job.current_version);
      if (!v) throw errors.notFound('job', req.params.id);
      const ws = await wl.listWorkloads(db, { jobId: job.id, status: ['running'], limit: 10000 });
      const nodes = new Map<string, { name: string; attributes: Record<string, string> }>();
      for (const id of new Set(ws.map((w) => w.node_id).filter((n): n is string => n !== null))) {
        const n = await nodesStore.getNode(db, id);
        if (n) nodes.set(n.id, { name: n.name, attributes: n.capabilities.attributes ?? {} });
      }
      return {
        data: {
          job: job.key,
          primary_port: v.spec.announce?.primary_port ?? null,
          instances: jobEndpoints(v.spec, ws, nodes),
        },
      };
    },
  );

  r.get(
    '/api/jobs/:id/versions',
    {
      schema: {
        summary: 'Submitted versions, newest first, a page at a time (follow next_cursor)',
        tags,
        params: IdParams,
        querystring: api.PageQuery,
        response: { 200: api.page(apiJobs.JobVersion), ...errorResponses },
      },
    },
    async (req) => {
      // A version number (PostgreSQL's integer: at most 2^31 - 1).
      const cursor =
        req.query.cursor === undefined ? undefined : Number(decodeCursor(req.query.cursor, /^[1-9]\d{0,8}$/));
      const id = (await load(req.params.id)).id;
      const rows = await jobs.listJobVersionsPage(db, id, { before: cursor, limit: req.query.limit + 1 });
      const taken = pageLength(rows, req.query.limit);
      const pageRows = rows.slice(0, taken).map(({ spec_bytes: _, ...v }) => v);
      return {
        data: pageRows,
        next_cursor: taken < rows.length ? encodeCursor(String(pageRows[taken - 1]!.version)) : null,
      };
    },
  );

  r.get(
    '/api/jobs/:id/updates',
    {
      schema: {
        summary: 'Rolling updates of the job, newest first',
        tags,
        params: IdParams,
        response: { 200: data(z.array(api.JobUpdate)), ...errorResponses },
      },
    },
    async (req) => ({ data: await updates.listUpdates(db, (await load(req.params.id)).id) }),
  );

  r.post(
    '/api/jobs/:id/prewarm',
    {
      schema: {
        summary: 'Realise the closure where the job runs or would go (of the spec sent, if any)',
        tags,
        params: IdParams,
        // No body (fastify passes null), or an empty object, means "no spec": the current version.
        body: z.preprocess(
          (v) => (v === null || (typeof v === 'object' && Object.keys(v).length === 0) ? undefined : v),
          JobSpec.optional(),
        ),
        response: { 200: data(api.PrewarmResult), ...errorResponses },
      },
    },
    async (req) => ({ data: await coordinator.prewarm(req.params.id, req.body) }),
  );

  r.get(
    '/api/jobs/:id/closure',
    {
      schema: {
        summary: 'The job closure with NAR sizes',
        tags,
        params: IdParams,
        querystring: api.ClosureQuery,
        response: { 200: data(z.array(api.ClosurePath)), ...errorResponses },
      },
    },
    async (req) => {
      const job = await load(req.params.id);
      return { data: await closures.jobClosure(db, job.id, req.query.version ?? job.current_version) };
    },
  );

  r.get(
    '/api/store-paths',
    {
      schema: {
        summary: 'Jobs and live workloads whose closure has a matching store path',
        tags,
        querystring: api.StorePathsQuery,
        response: { 200: data(z.array(api.StorePathUse)), ...errorResponses },
      },
    },
    async (req) => ({ data: await closures.whereUsed(db, req.query.contains) }),
  );

  r.post(
    '/api/jobs/:id/restart',
    {
      schema: {
        summary: 'Restart without a config change (rolling with an update_config)',
        tags,
        params: IdParams,
        response: { 200: data(api.RestartJobResult), ...errorResponses },
      },
    },
    async (req) => ({ data: await coordinator.restartJob(req.params.id) }),
  );

  for (const action of ['pause', 'resume', 'abort'] as const) {
    r.post(
      `/api/jobs/:id/update/${action}`,
      {
        schema: {
          summary:
            action === 'pause'
              ? "Pause the job's rolling update: no batch moves on until it is resumed"
              : action === 'resume'
                ? "Resume the job's paused update"
                : "Abort the job's rolling or paused update: instances stay on the versions they run",
          tags,
          params: IdParams,
          response: { 200: data(api.UpdateActionResult), ...errorResponses },
        },
      },
      async (req) => ({
        data: await coordinator.moveJobUpdate(req.params.id, action, req.principal?.name ?? 'anonymous'),
      }),
    );
  }

  r.post(
    '/api/jobs/:id/run',
    {
      schema: {
        summary: "Launch a cron job's run now, outside its schedule, under its collision policy",
        tags,
        params: IdParams,
        response: { 200: data(api.RunNowResult), ...errorResponses },
      },
    },
    async (req) => ({
      data: await coordinator.runCronNow(req.params.id, req.principal?.name ?? 'anonymous'),
    }),
  );

  r.post(
    '/api/jobs/:id/stop',
    {
      schema: {
        summary: 'Stop every workload of a job',
        tags,
        params: IdParams,
        response: { 200: data(api.StopJobResult), ...errorResponses },
      },
    },
    async (req) => ({ data: await coordinator.stopJob(req.params.id) }),
  );
}
