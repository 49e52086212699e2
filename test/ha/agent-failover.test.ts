/**
 * Agents fail over: a real agent given two coordinators moves to the other within seconds when its
 * coordinator goes away (or stops answering: its log lines then go to the other, once each, and a
 * closure it was fetching from the first is fetched from the other), and finds
 * coordinators by DNS (SRV and A records) from a resolver run here (node:dgram + dns-packet), keeping
 * its node identity throughout.
 */
import { createSocket } from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { afterAll, expect, it } from 'vitest';
import { Agent } from '../../agent/daemon.js';
import { pushClosure } from '../../compiler/push.js';
import * as logs from '../../scheduler/store/logs.js';
import { buildScript } from '../agent/helpers.js';
import { scriptJob } from '../agent-e2e/harness.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { expectEachLineOnce, storedLineNumbers } from '../helpers/log-lines.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

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

it('sends the log lines a coordinator that stopped answering never read to the next one, once each', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-failover-logs-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  // One cache for both; agents ping every 300 ms, so a silent coordinator is left after 2 s.
  const opts = { databaseUrl, heartbeatIntervalMs: 300, cache: { cacheDir: join(dir, 'cache') } };
  const cs = [await startTestCoordinator('postgres', opts), await startTestCoordinator('postgres', opts)];
  for (const c of cs) cleanup.push(() => c.stop());
  // The agent reaches each through a proxy that can go silent both ways (a frozen coordinator, as the
  // agent sees it).
  const proxies = await Promise.all(cs.map((c) => startTcpProxy(Number(new URL(c.url).port))));
  for (const p of proxies) cleanup.push(() => p.close());
  const script = await buildScript(
    'failover-logs',
    'i=0\nwhile true; do echo "line $i"; i=$((i+1)); sleep 0.02; done\n',
  );
  await pushClosure({ coordinator: cs[0]!.url, paths: [script.path] });
  const a = new Agent({
    coordinator: proxies.map((p) => `http://127.0.0.1:${p.port}`).join(','),
    name: 'chatty',
    stateDir: join(dir, 'state'),
    storeRoot: join(dir, 'store'),
    logger: testLogger(),
    gracePeriodMs: 500,
    cgroups: false,
  });
  cleanup.push(() => a.close());
  await a.start();
  await a.ready;
  const holder = cs.findIndex((c) => c.coordinator.isConnected(a.nodeId!));
  const other = cs[1 - holder]!;
  const job = await other.coordinator.submitJob(scriptJob('chatty', script.path));
  const id = job.workloads[0]!;
  const numbers = () => storedLineNumbers(other.db, id);
  await eventually(async () => (await numbers()).length >= 20, 30_000, 'the first lines');

  await proxies[holder]!.freeze();
  const frozenAt = Math.max(...(await numbers()));
  await eventually(async () => other.coordinator.isConnected(a.nodeId!), 15_000, 'the move to the other');
  // Lines printed while the agent still sent to the silent one, and after, are all there once.
  await eventually(
    async () => Math.max(...(await numbers())) > frozenAt + 150,
    20_000,
    'lines past the move',
  );
  expectEachLineOnce(await numbers());
});

/**
 * A real agent fetching a closure from its coordinator's cache (its requests arriving 1.5 s late, so the
 * fetch is still going) when that coordinator goes away (`cut`) or stops answering with its sockets left
 * open (`freeze`); the job was submitted on the other. Returns the workload once it left `starting`, and
 * its log lines.
 */
async function fetchWhileCoordinatorGoes(how: 'cut' | 'freeze', agentName: string) {
  const dir = await mkdtemp(join(tmpdir(), `mxc-failover-${how}-`));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const { url: databaseUrl, name } = await createPostgresDb();
  cleanup.push(() => dropPostgresDb(name));
  const opts = { databaseUrl, heartbeatIntervalMs: 1000, cache: { cacheDir: join(dir, 'cache') } };
  const cs = [await startTestCoordinator('postgres', opts), await startTestCoordinator('postgres', opts)];
  for (const c of cs) cleanup.push(() => c.stop());
  const proxies = await Promise.all(cs.map((c) => startTcpProxy(Number(new URL(c.url).port))));
  for (const p of proxies) cleanup.push(() => p.close());
  const script = await buildScript(`failover-${how}`, 'echo up\nexec sleep 1000\n');
  await pushClosure({ coordinator: cs[0]!.url, paths: [script.path] });
  const a = new Agent({
    coordinator: proxies.map((p) => `http://127.0.0.1:${p.port}`).join(','),
    name: agentName,
    stateDir: join(dir, 'state'),
    storeRoot: join(dir, 'store'),
    logger: testLogger(),
    gracePeriodMs: 500,
    cgroups: false,
  });
  cleanup.push(() => a.close());
  await a.start();
  await a.ready;
  const holder = cs.findIndex((c) => c.coordinator.isConnected(a.nodeId!));
  const other = cs[1 - holder]!;
  proxies[holder]!.slow(1500);
  const id = (await other.coordinator.submitJob(scriptJob(agentName, script.path))).workloads[0]!;
  await eventually(
    async () =>
      (await logs.readLogs(other.db, id, { limit: 100 })).some((l) => l.line.startsWith('realising ')),
    30_000,
    'the fetch to begin',
  );
  await (how === 'cut' ? proxies[holder]!.cut() : proxies[holder]!.freeze());
  const w = await eventually(
    async () => {
      const r = (await other.api('GET', `/api/workloads/${id}`)).body.data;
      return r.status !== 'starting' ? r : null;
    },
    60_000,
    'the workload to start or fail',
  );
  expect(other.coordinator.isConnected(a.nodeId!)).toBe(true);
  const said = (await logs.readLogs(other.db, id, { limit: 100 })).map((l) => l.line);
  return { w, said };
}

it('fetches a closure again from the next coordinator when the one it was fetching from goes away', async () => {
  const { w, said } = await fetchWhileCoordinatorGoes('cut', 'fetcher');
  expect([w.status, w.error ?? null]).toEqual(['running', null]);
  expect(said).toContainEqual(
    expect.stringMatching(
      /(failed|was given up): the agent lost that coordinator meanwhile; trying again from/,
    ),
  );
});

it('gives up a fetch from a coordinator that froze and fetches from the next one, not after nix’s 5-minute stall', async () => {
  const { w, said } = await fetchWhileCoordinatorGoes('freeze', 'frozen-fetcher');
  expect([w.status, w.error ?? null]).toEqual(['running', null]);
  expect(said).toContainEqual(
    expect.stringMatching(/was given up: the agent lost that coordinator meanwhile; trying again from/),
  );
});
