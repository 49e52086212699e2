// An agent repeating a report the coordinator refuses, in every message, does not write a warning per
// message into the coordinator's log: the refusals of a node are said at most once a minute, counted.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const REFUSED = 'refused invalid transition reported by agent';
const log = captureLogger('warn');
let c: TestCoordinator;
beforeAll(async () => {
  c = await startTestCoordinator('postgres', { logger: log.logger });
});
afterAll(async () => {
  await c?.stop();
});

test('refused reports repeated in a flood are logged once, with their count', async () => {
  const agent = await new ProtocolAgent({
    url: c.url,
    name: 'noisy',
    attributes: { host: 'noisy' },
  }).connect();
  try {
    expect((await c.api('POST', '/api/jobs', plainJob({ constraints: { host: 'noisy' } }))).status).toBe(201);
    const start = await agent.waitFor((m) => m.type === 'start');
    const id = start.type === 'start' ? start.workload.id : '';
    await eventually(async () => {
      const [w] = await c.db.query<{ status: string }>('SELECT status FROM workloads WHERE id = $1', [id]);
      return w?.status === 'running';
    });
    // running → starting is no transition: refused, each time.
    for (let i = 0; i < 500; i++)
      agent.send({ type: 'workload_status', workload_id: id, status: 'starting' });
    // Messages are handled in order: once this one is answered, every report before it was handled.
    agent.send({ type: 'not-a-message' });
    await agent.waitFor((m) => m.type === 'error', 30_000);
    const said = log.records.filter((r) => r.msg === REFUSED);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ workload: id, from: 'running', to: 'starting' });
    const [w] = await c.db.query<{ status: string }>('SELECT status FROM workloads WHERE id = $1', [id]);
    expect(w!.status).toBe('running');
  } finally {
    agent.close();
  }
}, 60_000);
