/** `/api/nodes`: list, show (with its workloads), drain, undrain, remove. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import type { Coordinator } from '../../coordinator.js';
import { errors } from '../../errors.js';
import * as closures from '../../store/closures.js';
import * as nodes from '../../store/nodes.js';
import * as wl from '../../store/workloads.js';
import { data, errorResponses, IdParams, typed } from '../contract.js';

const tags = ['nodes'];

export async function nodeRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  const db = coordinator.db;
  const r = typed(app);
  const present = async (rows: nodes.NodeRow[]) => {
    const [usage, paths, connected] = await Promise.all([
      wl.usageByNode(db),
      closures.nodePathCounts(db),
      coordinator.connectedNodeIds(),
    ]);
    return rows.map((n) => ({
      ...n,
      // Connected to any live coordinator, not only the one answering.
      connected: connected.has(n.id),
      used: usage.get(n.id) ?? { cpu: 0, memory_mb: 0, disk_mb: 0 },
      store: { paths: paths.get(n.id) ?? 0 },
    }));
  };
  const presentOne = async (n: nodes.NodeRow) => (await present([n]))[0]!;

  r.get(
    '/api/nodes',
    {
      schema: { summary: 'List nodes', tags, response: { 200: data(z.array(api.Node)), ...errorResponses } },
    },
    async () => ({ data: await present(await nodes.listNodes(db)) }),
  );

  r.get(
    '/api/nodes/:id',
    {
      schema: {
        summary: 'A node and its workloads',
        tags,
        params: IdParams,
        response: { 200: data(api.NodeDetail), ...errorResponses },
      },
    },
    async (req) => {
      const n = await nodes.getNode(db, req.params.id);
      if (!n) throw errors.notFound('node', req.params.id);
      const view = await presentOne(n);
      return { data: { ...view, workloads: await wl.listWorkloads(db, { nodeId: n.id, limit: 1000 }) } };
    },
  );

  r.post(
    '/api/nodes/:id/drain',
    {
      schema: {
        summary: 'Move workloads off a node; take no new ones',
        tags,
        params: IdParams,
        response: { 200: data(api.Node), ...errorResponses },
      },
    },
    async (req) => ({ data: await presentOne(await coordinator.drainNode(req.params.id)) }),
  );

  r.post(
    '/api/nodes/:id/undrain',
    {
      schema: {
        summary: 'End a drain',
        tags,
        params: IdParams,
        response: { 200: data(api.Node), ...errorResponses },
      },
    },
    async (req) => ({ data: await presentOne(await coordinator.undrainNode(req.params.id)) }),
  );

  r.delete(
    '/api/nodes/:id',
    {
      schema: {
        summary: 'Remove a node (its secret too, so a reinstalled machine can join again)',
        tags,
        params: IdParams,
        response: { 200: data(api.RemovedNode), ...errorResponses },
      },
    },
    async (req) => ({ data: await coordinator.removeNode(req.params.id) }),
  );
}
