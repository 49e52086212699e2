/** `/api/jobs`: submit (create or replace), list, show, versions, stop. */
import type { FastifyInstance } from 'fastify';
import type { Coordinator } from '../../coordinator.js';
import { jobEndpoints } from '../../core/endpoints.js';
import { emptyCounts, jobState, type StateCounts } from '../../core/lifecycle.js';
import { errors } from '../../errors.js';
import * as closures from '../../store/closures.js';
import * as jobs from '../../store/jobs.js';
import * as nodesStore from '../../store/nodes.js';
import * as updates from '../../store/updates.js';
import * as wl from '../../store/workloads.js';
import { presentWorkloads } from '../views.js';

/** A job with what it is doing (running / complete / failed / stopped) and its workloads per state. */
function withState<J extends jobs.JobRow>(
  job: J,
  spec: { cron_schedule?: string | null } | undefined,
  s: { counts: StateCounts; latest: StateCounts } | undefined,
) {
  const counts = s?.counts ?? emptyCounts();
  return {
    ...job,
    state: jobState({ status: job.status, cron: !!spec?.cron_schedule }, s?.latest ?? emptyCounts()),
    counts,
  };
}

export async function jobRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  const db = coordinator.db;

  app.post('/api/jobs', async (req, reply) => {
    if (req.body === undefined || req.body === null || typeof req.body !== 'object') {
      throw errors.badRequest('send the job spec as a JSON object (Content-Type: application/json)');
    }
    const res = await coordinator.submitJob(req.body);
    return reply.status(res.changed ? 201 : 200).send({
      data: { job: res.job, version: res.version, changed: res.changed, workloads: res.workloads },
    });
  });

  // A dry run changes nothing: reading the cluster is all it needs.
  app.post('/api/jobs/plan', { config: { access: 'read' } }, async (req) => ({
    data: await coordinator.planJob(req.body),
  }));

  app.get('/api/jobs', async () => {
    const list = await jobs.listJobs(db);
    const states = await wl.jobStateCounts(
      db,
      list.map((j) => j.id),
    );
    return { data: list.map((j) => withState(j, j.spec, states.get(j.id))) };
  });

  app.get<{ Params: { id: string } }>('/api/jobs/:id', async (req) => {
    const job = await jobs.getJob(db, req.params.id);
    if (!job) throw errors.notFound('job', req.params.id);
    const v = await jobs.getJobVersion(db, job.id, job.current_version);
    const workloads = await presentWorkloads(db, await wl.listWorkloads(db, { jobId: job.id, limit: 1000 }));
    const [update] = await updates.listUpdates(db, job.id);
    const states = await wl.jobStateCounts(db, [job.id]);
    return {
      data: {
        ...withState(job, v?.spec, states.get(job.id)),
        spec: v?.spec,
        workloads,
        update: update ?? null,
      },
    };
  });

  // Service discovery: the instances that serve, with host and named ports (Aurora's Announcer).
  app.get<{ Params: { id: string } }>('/api/jobs/:id/endpoints', async (req) => {
    const job = await jobs.getJob(db, req.params.id);
    if (!job) throw errors.notFound('job', req.params.id);
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
  });

  app.get<{ Params: { id: string } }>('/api/jobs/:id/versions', async (req) => {
    const job = await jobs.getJob(db, req.params.id);
    if (!job) throw errors.notFound('job', req.params.id);
    return { data: await jobs.listJobVersions(db, job.id) };
  });

  app.get<{ Params: { id: string } }>('/api/jobs/:id/updates', async (req) => {
    const job = await jobs.getJob(db, req.params.id);
    if (!job) throw errors.notFound('job', req.params.id);
    return { data: await updates.listUpdates(db, job.id) };
  });

  app.post<{ Params: { id: string } }>('/api/jobs/:id/prewarm', async (req) => ({
    data: await coordinator.prewarm(req.params.id, req.body),
  }));

  app.get<{ Params: { id: string }; Querystring: { version?: string } }>(
    '/api/jobs/:id/closure',
    async (req) => {
      const job = await jobs.getJob(db, req.params.id);
      if (!job) throw errors.notFound('job', req.params.id);
      const version = req.query.version ? Number(req.query.version) : job.current_version;
      if (!Number.isInteger(version) || version < 1)
        throw errors.badRequest('version must be a positive integer');
      return { data: await closures.jobClosure(db, job.id, version) };
    },
  );

  app.get<{ Querystring: { contains?: string } }>('/api/store-paths', async (req) => {
    const needle = req.query.contains?.trim();
    if (!needle)
      throw errors.badRequest('give ?contains=<store path or part of a name>, e.g. ?contains=openssl');
    return { data: await closures.whereUsed(db, needle) };
  });

  app.post<{ Params: { id: string } }>('/api/jobs/:id/restart', async (req) => ({
    data: await coordinator.restartJob(req.params.id),
  }));

  app.post<{ Params: { id: string } }>('/api/jobs/:id/stop', async (req) => {
    const res = await coordinator.stopJob(req.params.id);
    return { data: res };
  });
}
