/** The OpenAPI 3.1 document of the REST API, generated from the zod schemas in spec/. */
import { type ZodType, z } from 'zod';
import * as api from '../../spec/api.js';
import { JobSpec } from '../../spec/job.js';

const schema = (s: ZodType) => z.toJSONSchema(s, { io: 'output', unrepresentable: 'any' });
const data = (s: ZodType) => ({
  description: 'OK',
  content: { 'application/json': { schema: schema(z.object({ data: s })) } },
});
const errorResponse = {
  description: 'coded error',
  content: { 'application/json': { schema: schema(api.ApiError) } },
};
const idParam = (what: string) => [
  { name: 'id', in: 'path', required: true, description: `${what} id`, schema: { type: 'string' } },
];
const queryParams = (s: z.ZodObject) =>
  Object.entries(s.shape).map(([name, t]) => ({
    name,
    in: 'query',
    required: false,
    schema: schema(t as ZodType),
  }));

interface Op {
  summary: string;
  params?: unknown[];
  body?: ZodType;
  ok: ZodType | null;
}

const routes: Record<string, Record<string, Op>> = {
  '/api/jobs': {
    get: { summary: 'List jobs with their current spec', ok: z.array(api.JobWithSpec) },
    post: {
      summary: 'Submit a job spec (201: new version; 200: identical spec, no-op)',
      body: JobSpec,
      ok: api.SubmitResult,
    },
  },
  '/api/jobs/{id}': {
    get: { summary: 'A job, its spec and workloads', params: idParam('job'), ok: api.JobDetail },
  },
  '/api/jobs/{id}/versions': {
    get: { summary: 'Every submitted version', params: idParam('job'), ok: z.array(z.unknown()) },
  },
  '/api/jobs/{id}/stop': {
    post: { summary: 'Stop every workload of a job', params: idParam('job'), ok: z.unknown() },
  },
  '/api/workloads': {
    get: { summary: 'List workloads', params: queryParams(api.WorkloadListQuery), ok: z.array(api.Workload) },
  },
  '/api/workloads/{id}': {
    get: {
      summary: 'A workload with pending reason and events',
      params: idParam('workload'),
      ok: api.WorkloadDetail,
    },
  },
  '/api/workloads/{id}/events': {
    get: { summary: 'Status history', params: idParam('workload'), ok: z.array(api.WorkloadEvent) },
  },
  '/api/workloads/{id}/logs': {
    get: {
      summary: 'Process output (ndjson stream with follow=1)',
      params: [...idParam('workload'), ...queryParams(api.LogsQuery)],
      ok: z.array(api.LogEntry),
    },
  },
  '/api/workloads/{id}/stop': {
    post: { summary: 'Stop a workload', params: idParam('workload'), ok: api.Workload },
  },
  '/api/nodes': { get: { summary: 'List nodes', ok: z.array(api.Node) } },
  '/api/nodes/{id}': {
    get: { summary: 'A node and its workloads', params: idParam('node'), ok: api.NodeDetail },
  },
  '/api/nodes/{id}/drain': {
    post: { summary: 'Move workloads off a node; take no new ones', params: idParam('node'), ok: api.Node },
  },
  '/api/nodes/{id}/undrain': { post: { summary: 'End a drain', params: idParam('node'), ok: api.Node } },
  '/api/cluster/status': { get: { summary: 'Cluster totals', ok: api.ClusterStatus } },
  '/api/jobs/{id}/closure': {
    get: {
      summary: 'The job closure with NAR sizes',
      params: idParam('job'),
      ok: z.array(z.object({ path: z.string(), nar_size: z.number() })),
    },
  },
  '/api/jobs/{id}/prewarm': {
    post: {
      summary: 'Realise the closure where the job runs or would go',
      params: idParam('job'),
      body: JobSpec,
      ok: z.unknown(),
    },
  },
  '/api/jobs/plan': {
    post: {
      summary: 'What a submit of the spec would do, changing nothing (mxc jobs plan)',
      body: api.JobPlanRequest,
      ok: api.JobPlan,
    },
  },
  '/api/jobs/{id}/restart': {
    post: {
      summary: 'Restart without a config change (rolling with an update_config)',
      params: idParam('job'),
      ok: z.unknown(),
    },
  },
  '/api/jobs/{id}/updates': {
    get: { summary: 'Rolling updates of the job', params: idParam('job'), ok: z.array(api.JobUpdate) },
  },
  '/api/store-paths': {
    get: {
      summary: 'Jobs and live workloads whose closure has a matching store path',
      params: [{ name: 'contains', in: 'query', required: true, schema: { type: 'string' } }],
      ok: z.array(z.unknown()),
    },
  },
  '/api/tokens': {
    get: { summary: 'Token names and kinds', ok: z.array(z.unknown()) },
    post: {
      summary: 'Create a named token (returned once)',
      body: z.object({ name: z.string(), kind: z.enum(['client', 'agent']) }),
      ok: z.object({ name: z.string(), kind: z.string(), token: z.string() }),
    },
  },
};

export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [path, ops] of Object.entries(routes)) {
    paths[path] = {};
    for (const [method, op] of Object.entries(ops)) {
      paths[path][method] = {
        summary: op.summary,
        parameters: op.params,
        requestBody: op.body
          ? { required: true, content: { 'application/json': { schema: schema(op.body) } } }
          : undefined,
        responses: { '200': op.ok ? data(op.ok) : { description: 'OK' }, '4XX': errorResponse },
        security: [{ bearer: [] }],
      };
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'mxc coordinator API', version },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}
