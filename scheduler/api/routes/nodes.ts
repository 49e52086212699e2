/** `/api/nodes`: list, show (with its workloads), drain, undrain, remove. */
import type { FastifyInstance } from 'fastify';
import type { Coordinator } from '../../coordinator.js';
import { errors } from '../../errors.js';
import * as closures from '../../store/closures.js';
import * as nodes from '../../store/nodes.js';
import * as wl from '../../store/workloads.js';

export async function nodeRoutes(app: FastifyInstance, { coordinator }: { coordinator: Coordinator }) {
  const db = coordinator.db;
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

  app.get('/api/nodes', async () => ({ data: await present(await nodes.listNodes(db)) }));

  app.get<{ Params: { id: string } }>('/api/nodes/:id', async (req) => {
    const n = await nodes.getNode(db, req.params.id);
    if (!n) throw errors.notFound('node', req.params.id);
    const [view] = await present([n]);
    return { data: { ...view, workloads: await wl.listWorkloads(db, { nodeId: n.id, limit: 1000 }) } };
  });

  app.post<{ Params: { id: string } }>('/api/nodes/:id/drain', async (req) => ({
    data: await coordinator.drainNode(req.params.id),
  }));
  app.delete<{ Params: { id: string } }>('/api/nodes/:id', async (req) => ({
    data: await coordinator.removeNode(req.params.id),
  }));
  app.post<{ Params: { id: string } }>('/api/nodes/:id/undrain', async (req) => ({
    data: await coordinator.undrainNode(req.params.id),
  }));
}
