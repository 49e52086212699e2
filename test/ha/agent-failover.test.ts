/**
 * Agents fail over: a real agent given two coordinators moves to the other within seconds when its
 * coordinator goes away, and finds coordinators by DNS (SRV and A records) from a resolver run here
 * (node:dgram + dns-packet), keeping its node identity throughout.
 */
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { afterAll, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

/** A tiny authoritative DNS server answering from a fixed table; returns its `ip:port`. */
async function dnsServer(records: dnsPacket.Answer[]): Promise<string> {
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    const answers = records.filter((r) => question && r.name === question.name && r.type === question.type);
    const reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER,
      questions: q.questions,
      answers,
    });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  cleanup.push(async () => sock.close());
  return `127.0.0.1:${sock.address().port}`;
}

async function twoCoordinators(): Promise<[TestCoordinator, TestCoordinator]> {
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const a = await startTestCoordinator('postgres', { databaseUrl, heartbeatTtlMs: 5000 });
  const b = await startTestCoordinator('postgres', { databaseUrl, heartbeatTtlMs: 5000 });
  cleanup.push(
    () => a.stop(),
    () => b.stop(),
  );
  return [a, b];
}

async function agent(
  dir: string,
  name: string,
  opts: { coordinator: string; dnsQuery?: string; dnsServer?: string },
) {
  const a = new Agent({ ...opts, name, stateDir: join(dir, name), logger: testLogger(), cgroups: false });
  cleanup.push(() => a.close({ stopWorkloads: false }));
  await a.start();
  await a.ready;
  return a;
}

it('moves to another coordinator on the list within seconds when its coordinator goes away', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-failover-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const [a, b] = await twoCoordinators();
  const roamer = await agent(dir, 'roamer', { coordinator: `${a.url},${b.url}` });
  const holder = a.coordinator.isConnected(roamer.nodeId!) ? a : b;
  const other = holder === a ? b : a;
  const nodeId = roamer.nodeId;
  const gone = Date.now();
  await holder.coordinator.close();
  await holder.app.close();
  await eventually(async () => other.coordinator.isConnected(nodeId!), 10_000, 'reconnect to the other');
  const took = Date.now() - gone;
  console.log(`agent failover to the other coordinator took ${took} ms`);
  expect(took).toBeLessThan(5000);
  expect(roamer.nodeId).toBe(nodeId); // same node: its secret was accepted
  expect((await other.api('GET', `/api/nodes/${nodeId}`)).body.data.status).toBe('ready');
});

it('finds coordinators by DNS: SRV records, and A records with a port', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-dns-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const [a, b] = await twoCoordinators();
  const portA = Number(new URL(a.url).port);
  const portB = Number(new URL(b.url).port);
  const server = await dnsServer([
    {
      name: '_mxc._tcp.cluster.test',
      type: 'SRV',
      ttl: 5,
      data: { priority: 1, weight: 1, port: portB, target: 'localhost' },
    },
    { name: 'coordinators.cluster.test', type: 'A', ttl: 5, data: '127.0.0.1' },
  ]);
  // The static URL points nowhere: only DNS can lead the agents to a coordinator.
  const dead = 'http://127.0.0.1:9';
  const bySrv = await agent(dir, 'by-srv', {
    coordinator: dead,
    dnsQuery: '_mxc._tcp.cluster.test',
    dnsServer: server,
  });
  expect(b.coordinator.isConnected(bySrv.nodeId!)).toBe(true);
  const byA = await agent(dir, 'by-a', {
    coordinator: dead,
    dnsQuery: `coordinators.cluster.test:${portA}`,
    dnsServer: server,
  });
  expect(a.coordinator.isConnected(byA.nodeId!)).toBe(true);
});
