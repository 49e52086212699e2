/** `/api/nodes`: list, show (with its workloads), drain, undrain, remove. */
import type { FastifyInstance } from 'fastify';
import * as api from '../../../spec/api.js';
import type { Coordinator } from '../../coordinator.js';
import { errors } from '../../errors.js';
import * as closures from '../../store/closures.js';
import * as nodes from '../../store/nodes.js';
import * as wl from '../../store/workloads.js';
import { data, decodeCursor, encodeCursor, errorResponses, IdParams, typed } from '../contract.js';

const tags = ['nodes'];

export async function nodeRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  const db = coordinator.db;
  const r = typed(app);
  const present = async (rows: nodes.NodeRow[]) => {
    const ids = rows.map((n) => n.id);
    const [paths, connected] = await Promise.all([
      closures.nodePathCounts(db, ids),
      coordinator.connectedNodeIds(),
    ]);
    return rows.map((n) => ({
      ...n,
      // Connected to any live coordinator, not only the one answering.
      connected: connected.has(n.id),
      used: nodes.usedOf(n),
      store: { paths: paths.get(n.id) ?? 0 },
    }));
  };
  const presentOne = async (n: nodes.NodeRow) => (await present([n]))[0]!;

  // Paged in name order (keyset on the unique name): a page costs the same at 10 or 10,000 nodes.
  r.get(
    '/api/nodes',
    {
      schema: {
        summary: 'List nodes by name, a page at a time (follow next_cursor)',
        tags,
        querystring: api.PageQuery,
        response: { 200: api.page(api.Node), ...errorResponses },
      },
    },
    async (req) => {
      const after = req.query.cursor === undefined ? undefined : decodeCursor(req.query.cursor);
      const rows = await nodes.listNodesPage(db, { after, limit: req.query.limit + 1 });
      const more = rows.length > req.query.limit;
      const pageRows = more ? rows.slice(0, req.query.limit) : rows;
      return {
        data: await present(pageRows),
        next_cursor: more ? encodeCursor(pageRows[pageRows.length - 1]!.name) : null,
      };
    },
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
