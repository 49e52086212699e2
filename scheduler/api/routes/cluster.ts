/** `/api/cluster/status`, `/healthz` and `/metrics` (Prometheus text). */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ClusterStatus } from '../../../spec/api.js';
import type { Coordinator } from '../../coordinator.js';
import * as coordinatorsStore from '../../store/coordinators.js';
import * as leader from '../../store/leader.js';
import * as nodes from '../../store/nodes.js';
import * as wl from '../../store/workloads.js';
import { data, errorResponses, typed } from '../contract.js';

export async function clusterStatus(coordinator: Coordinator) {
  const db = coordinator.db;
  const [all, byStatus, lease, coords] = await Promise.all([
    nodes.listNodes(db),
    wl.countByStatus(db),
    leader.currentLeader(db),
    coordinatorsStore.listCoordinators(db, coordinator.coordinatorDeadMs),
  ]);
  const live = all.filter((n) => n.status !== 'down');
  const ready = (ns: nodes.NodeRow[]) => ns.filter((n) => n.status === 'ready');
  const sum = (f: (n: nodes.NodeRow) => number) => live.reduce((a, n) => a + f(n), 0);
  const used = (k: 'cpu' | 'memory_mb' | 'disk_mb') => live.reduce((a, n) => a + nodes.usedOf(n)[k], 0);
  return {
    node_count: all.length,
    nodes_ready: all.filter((n) => n.status === 'ready').length,
    nodes_down: all.filter((n) => n.status === 'down').length,
    nodes_draining: all.filter((n) => n.status === 'draining').length,
    nodes_not_connected: live.filter((n) => !n.connected).length,
    workload_count: Object.values(byStatus).reduce((a, b) => a + b, 0),
    workloads_by_status: byStatus,
    workloads_running: byStatus.running ?? 0,
    total_cpu: sum((n) => n.cpu),
    total_memory_mb: sum((n) => n.memory_mb),
    total_disk_mb: sum((n) => n.disk_mb),
    used_cpu: used('cpu'),
    used_memory_mb: used('memory_mb'),
    used_disk_mb: used('disk_mb'),
    // samrose/mxc's names: free capacity of the nodes that take work (ready ones; memory in MiB).
    nodes_healthy: all.filter((n) => n.status === 'ready').length,
    available_cpu: ready(all).reduce((a, n) => a + n.cpu - n.used_cpu, 0),
    available_memory: ready(all).reduce((a, n) => a + n.memory_mb - n.used_memory_mb, 0),
    database: db.engine,
    /** The id of the coordinator holding the leader lease (null during an election). */
    leader: lease?.holder ?? null,
    leader_epoch: lease?.epoch ?? null,
    coordinators: coords.map((c) => ({
      id: c.id,
      url: c.url,
      leader: c.id === lease?.holder,
      last_seen_at: c.last_seen_at,
    })),
    /** The coordinator that answered. */
    coordinator_id: coordinator.opts.id,
  };
}

export async function clusterRoutes(
  app: FastifyInstance,
  opts: { coordinator: Coordinator; extra?: () => Promise<Record<string, unknown>> },
) {
  const r = typed(app);
  r.get(
    '/api/cluster/status',
    {
      schema: {
        summary: 'Cluster totals',
        tags: ['cluster'],
        response: { 200: data(ClusterStatus), ...errorResponses },
      },
    },
    async () => ({
      data: { ...(await clusterStatus(opts.coordinator)), ...((await opts.extra?.()) ?? {}) },
    }),
  );

  /** How long /healthz waits for the database before it answers 503 DATABASE_UNAVAILABLE. */
  const HEALTH_TIMEOUT_MS = 3000;
  r.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness: the coordinator answers and reaches its database',
        tags: ['meta'],
        security: [],
        response: { 200: z.object({ status: z.literal('ok') }), ...errorResponses },
      },
      config: { access: 'public' },
    },
    async () => {
      // Answered within HEALTH_TIMEOUT_MS whatever the database does: a load balancer or a probe that
      // waits on a database that stopped answering learns nothing.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              Object.assign(
                new Error(`the database did not answer SELECT 1 within ${HEALTH_TIMEOUT_MS} ms`),
                { code: 'ETIMEDOUT' },
              ),
            ),
          HEALTH_TIMEOUT_MS,
        );
      });
      try {
        await Promise.race([opts.coordinator.db.query('SELECT 1'), late]);
      } finally {
        clearTimeout(timer);
      }
      return { status: 'ok' as const };
    },
  );

  r.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics (text exposition format 0.0.4)',
        tags: ['meta'],
        response: {
          200: { description: 'Prometheus text', content: { 'text/plain': { schema: z.string() } } },
          ...errorResponses,
        },
      },
    },
    async (_req, reply) => {
      const s = await clusterStatus(opts.coordinator);
      const lines = [
        '# HELP mxc_nodes Nodes by status.',
        '# TYPE mxc_nodes gauge',
        `mxc_nodes{status="ready"} ${s.nodes_ready}`,
        `mxc_nodes{status="draining"} ${s.nodes_draining}`,
        `mxc_nodes{status="down"} ${s.nodes_down}`,
        '# HELP mxc_nodes_not_connected Nodes not down whose agent is not connected (within the heartbeat TTL).',
        '# TYPE mxc_nodes_not_connected gauge',
        `mxc_nodes_not_connected ${s.nodes_not_connected}`,
        '# HELP mxc_workloads Workloads by status.',
        '# TYPE mxc_workloads gauge',
        ...['pending', 'starting', 'running', 'stopping', 'stopped', 'failed', 'lost'].map(
          (st) => `mxc_workloads{status="${st}"} ${s.workloads_by_status[st] ?? 0}`,
        ),
        '# HELP mxc_cpu_cores CPU cores of live nodes, total and reserved.',
        '# TYPE mxc_cpu_cores gauge',
        `mxc_cpu_cores{kind="total"} ${s.total_cpu}`,
        `mxc_cpu_cores{kind="used"} ${s.used_cpu}`,
        '# HELP mxc_memory_bytes Memory of live nodes, total and reserved.',
        '# TYPE mxc_memory_bytes gauge',
        `mxc_memory_bytes{kind="total"} ${s.total_memory_mb * 1048576}`,
        `mxc_memory_bytes{kind="used"} ${s.used_memory_mb * 1048576}`,
        '# HELP process_resident_memory_bytes Coordinator resident memory.',
        '# TYPE process_resident_memory_bytes gauge',
        `process_resident_memory_bytes ${process.memoryUsage().rss}`,
      ];
      return reply.type('text/plain; version=0.0.4').send(`${lines.join('\n')}\n`);
    },
  );
}
