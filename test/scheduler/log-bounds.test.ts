/**
 * The coordinator's copy of workload logs is bounded: each workload keeps its newest MXC_LOG_LINES_KEPT
 * lines (what went is counted and said), a lost workload's lines from after it was declared lost are
 * not stored (an ended one's late lines are), and no logs answer holds more than LOG_PAGE_BYTES of
 * entries: the rest follow next_cursor, which the CLI pages through. Real coordinator on PostgreSQL.
 */
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import * as logs from '../../scheduler/store/logs.js';
import * as wl from '../../scheduler/store/workloads.js';
import * as api from '../../spec/api.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { MXC_BIN } from '../helpers/daemon-process.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const KEEP = 1000;
let c: TestCoordinator;
let agent: ProtocolAgent;

beforeAll(async () => {
  c = await startTestCoordinator('postgres', { logLinesKept: KEEP });
  agent = await new ProtocolAgent({ url: c.url, name: 'n1' }).connect();
}, 60_000);
afterAll(async () => {
  agent?.close();
  await c?.stop();
});

const line = (text: string, ts = Date.now()) => ({
  process: 'web',
  stream: 'stdout' as const,
  run: 1,
  ts,
  line: text,
});

async function runningWorkload(name: string): Promise<string> {
  const sub = await c.coordinator.submitJob(plainJob({ name }));
  const id = sub.workloads[0]!;
  await eventually(
    async () => (await wl.getWorkload(c.coordinator.db, id))?.status === 'running',
    10_000,
    'running',
  );
  return id;
}

const count = async (id: string) =>
  (
    await c.coordinator.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM workload_logs WHERE workload_id = $1',
      [id],
    )
  )[0]!.n;

describe('the coordinator keeps a bounded tail of each workload log', () => {
  it('keeps the newest lines of a chatty workload and says how many went', async () => {
    const id = await runningWorkload('chatty');
    const total = 5 * KEEP;
    for (let i = 0; i < total; i += 1000)
      agent.send({
        type: 'logs',
        workload_id: id,
        lines: Array.from({ length: 1000 }, (_, j) => line(`line ${i + j}`)),
      });
    // Its last line stored, and trimmed after it (the trim follows its batch's insert).
    await eventually(
      async () => (await logs.readLogs(c.coordinator.db, id, { limit: 1 }))[0]?.line === `line ${total - 1}`,
      20_000,
      'the last line stored',
    );
    await eventually(async () => (await count(id)) === KEEP, 10_000, `the log trimmed to ${KEEP}`);
    const kept = await logs.readLogs(c.coordinator.db, id, { limit: 10 * KEEP });
    expect(kept.map((l) => l.line)).toEqual(
      Array.from({ length: KEEP }, (_, j) => `line ${total - KEEP + j}`),
    );
    const r = await c.api('GET', `/api/workloads/${id}/logs?limit=100000`);
    const page = api.LogsPage.parse(r.body);
    expect(page.dropped).toBe(total - KEEP);
    expect(page.data[0]!.line).toBe(`line ${total - KEEP}`);
  }, 60_000);

  it("stores an ended workload's late lines, and a lost one's only from before it was lost", async () => {
    const lost = await runningWorkload('lost-one');
    const ended = await runningWorkload('ended-one');
    const before = Date.now() - 60_000;
    const w = (await wl.getWorkload(c.coordinator.db, lost))!;
    expect(
      await wl.transition(c.coordinator.db, w, 'lost', 'test: the coordinator gave up on it'),
    ).not.toBeNull();
    const e = (await wl.getWorkload(c.coordinator.db, ended))!;
    expect(await wl.transition(c.coordinator.db, e, 'stopped', 'test: it exited')).not.toBeNull();
    const after = Date.now() + 60_000;
    agent.send({
      type: 'logs',
      workload_id: lost,
      lines: [line('said before it was lost', before), line('said after it was lost', after)],
    });
    agent.send({ type: 'logs', workload_id: ended, lines: [line('printed, then exited', after)] });
    // An agent's messages are handled in order: once the second is stored, the first was handled.
    await eventually(async () => (await count(ended)) === 1, 10_000, "the ended workload's late line");
    expect((await logs.readLogs(c.coordinator.db, lost)).map((l) => l.line)).toEqual([
      'said before it was lost',
    ]);
  }, 30_000);
});

describe('a logs answer is bounded in bytes, the rest follows next_cursor', () => {
  let id: string;
  const LINES = 300;
  beforeAll(async () => {
    // 300 lines of 16 KiB (the most an agent sends): 4.7 MiB, in one answer before the bound.
    const sub = await c.coordinator.submitJob(plainJob({ name: 'wide' }));
    id = sub.workloads[0]!;
    const wide = 'x'.repeat(16 * 1024 - 10);
    await logs.insertLogs(
      c.coordinator.db,
      id,
      Array.from({ length: LINES }, (_, i) => line(`${String(i).padStart(6, '0')} ${wide}`)),
    );
  });

  it('pages through every line, no answer over the bound', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await fetch(
        `${c.url}/api/workloads/${id}/logs?limit=100000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      );
      expect(res.status).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      // The entries' bytes within the bound, plus the answer's envelope.
      expect(body.length).toBeLessThanOrEqual(api.LOG_PAGE_BYTES + 200);
      const page = api.LogsPage.parse(JSON.parse(body.toString('utf8')));
      seen.push(...page.data.map((l) => l.line.slice(0, 6)));
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBeGreaterThan(4);
    expect(seen).toEqual(Array.from({ length: LINES }, (_, i) => String(i).padStart(6, '0')));
  }, 30_000);

  it('a tail of n lines pages through those n only', async () => {
    let got = 0;
    let r = await c.api('GET', `/api/workloads/${id}/logs?limit=100`);
    let first: string | undefined;
    for (;;) {
      const page = api.LogsPage.parse(r.body);
      first ??= page.data[0]!.line.slice(0, 6);
      got += page.data.length;
      if (page.next_cursor === null) break;
      r = await c.api('GET', `/api/workloads/${id}/logs?cursor=${encodeURIComponent(page.next_cursor)}`);
    }
    expect(got).toBe(100);
    expect(first).toBe(String(LINES - 100).padStart(6, '0'));
  });

  it('refuses a cursor it did not give, and a cursor with follow', async () => {
    const bad = await c.api('GET', `/api/workloads/${id}/logs?cursor=bm9wZQ`);
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('BAD_REQUEST');
    const first = api.LogsPage.parse((await c.api('GET', `/api/workloads/${id}/logs?limit=1000`)).body);
    const withFollow = await c.api(
      'GET',
      `/api/workloads/${id}/logs?follow=1&cursor=${encodeURIComponent(first.next_cursor!)}`,
    );
    expect(withFollow.status).toBe(400);
    expect(withFollow.body.error.code).toBe('BAD_REQUEST');
    // A forged cursor asks no more than a limit may (100,000 lines).
    const forged = Buffer.from('0.999999').toString('base64url');
    const tooMany = await c.api('GET', `/api/workloads/${id}/logs?cursor=${forged}`);
    expect([tooMany.status, tooMany.body.error.code]).toEqual([400, 'BAD_REQUEST']);
    const most = Buffer.from('0.100000').toString('base64url');
    expect((await c.api('GET', `/api/workloads/${id}/logs?cursor=${most}`)).status).toBe(200);
  });

  it('mxc workloads logs -n gets every line across the pages', async () => {
    const res = await execa(process.execPath, [MXC_BIN, 'workloads', 'logs', id, '-n', '100000', '--json'], {
      env: { MXC_COORDINATOR: c.url },
      reject: false,
      timeout: 30_000,
    });
    expect(res.exitCode, res.stderr).toBe(0);
    const rows = z.array(api.LogEntry).parse(JSON.parse(res.stdout));
    expect(rows.map((l) => l.line.slice(0, 6))).toEqual(
      Array.from({ length: LINES }, (_, i) => String(i).padStart(6, '0')),
    );
  }, 30_000);
});
