/**
 * A node whose agent's socket closed keeps its workloads until the heartbeat TTL passes (a reconnect
 * finds them), but nothing new is placed on it meanwhile: a submit goes to the connected nodes, or waits
 * with the reason, and is placed there once the agent says hello again. On both engines, through a real
 * coordinator and real agent sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

interface Workload {
  id: string;
  status: string;
  node_id: string | null;
  pending_reason: string | null;
}

for (const engine of ENGINES) {
  describe(`a disconnected node on ${engine}`, () => {
    let c: TestCoordinator;
    const agents: ProtocolAgent[] = [];
    beforeAll(async () => {
      // A long TTL: the nodes stay `ready` throughout, only their sockets come and go.
      c = await startTestCoordinator(engine, { heartbeatTtlMs: 600_000 });
    });
    afterAll(async () => {
      for (const a of agents) a.close();
      await c?.stop();
    });

    const agent = async (name: string) => {
      const a = await new ProtocolAgent({ url: c.url, name }).connect();
      agents.push(a);
      return a;
    };
    const connected = async (nodeId: string) =>
      (
        await c.coordinator.db.query<{ connected: boolean }>('SELECT connected FROM nodes WHERE id = $1', [
          nodeId,
        ])
      )[0]!.connected;
    const workloadsOf = async (job: string) =>
      (await c.api<{ data: Workload[] }>('GET', `/api/workloads?job=${encodeURIComponent(job)}`)).body.data;

    it('places nothing on it while its agent is away, and places there again once it is back', async () => {
      const gone = await agent('away');
      const here = await agent('here');
      gone.close();
      await eventually(async () => !(await connected(gone.nodeId)), 10_000, 'the node marked disconnected');
      expect((await c.api('GET', `/api/nodes/${gone.nodeId}`)).body.data.status).toBe('ready');

      const sub = await c.api('POST', '/api/jobs', plainJob({ name: 'while-away', instances: 2 }));
      expect(sub.status).toBeLessThan(300);
      const placed = await eventually(
        async () => {
          const ws = await workloadsOf(sub.body.data.job.key);
          return ws.length === 2 && ws.every((w) => w.node_id !== null) ? ws : null;
        },
        10_000,
        'both instances placed',
      );
      for (const w of placed) expect(w.node_id).toBe(here.nodeId);

      // Nowhere connected left: the next job waits, saying why.
      here.close();
      await eventually(
        async () => !(await connected(here.nodeId)),
        10_000,
        'the second node marked disconnected',
      );
      const waits = await c.api('POST', '/api/jobs', plainJob({ name: 'nowhere', instances: 1 }));
      const key = waits.body.data.job.key as string;
      const pending = await eventually(
        async () => {
          const [w] = await workloadsOf(key);
          return w?.pending_reason ? w : null;
        },
        10_000,
        'a pending reason',
      );
      expect(pending.status).toBe('pending');
      expect(pending.pending_reason).toBe('2 nodes: agent disconnected');

      // The agent says hello again: connected, and the waiting workload goes there.
      const back = await new ProtocolAgent({ url: c.url, name: 'away' }).connect();
      agents.push(back);
      expect(back.nodeId).toBe(gone.nodeId);
      expect(await connected(back.nodeId)).toBe(true);
      const [w] = await eventually(
        async () => {
          const ws = await workloadsOf(key);
          return ws[0]?.node_id ? ws : null;
        },
        10_000,
        'the waiting workload placed on the node that came back',
      );
      expect(w!.node_id).toBe(back.nodeId);
    });
  });
}
