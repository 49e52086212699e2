/**
 * Paged `GET /api/nodes` (issue 17: 413 ms unpaged at 10k nodes; goal ≤ 50 ms a page): a coordinator
 * process on PostgreSQL with N nodes (default 10,000), the median time of a page (first and middle, 100
 * and 1,000 nodes) over HTTP. Anchors in the same run: a bare `SELECT * FROM nodes ORDER BY name` of all
 * N rows (what one unpaged read has to fetch before presenting anything), and reading every page (what
 * `mxc nodes list` does). Options: MXC_BENCH_NODES, MXC_BENCH_ROUNDS (default 30).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { PROCESS_ONLY_CAPABILITIES } from './lib/capabilities.js';
import { startCoordinatorProcess } from './lib/coordinator-process.js';
import { createBenchDb, queryOnce } from './lib/pg.js';
import { Report } from './lib/report.js';
import { envInt, fmt, median, nowMs } from './lib/stats.js';

interface Page {
  data: { name: string }[];
  next_cursor: string | null;
}

/** The whole answer (`getJson` returns only `data`; paging needs `next_cursor` too). */
async function getPage(url: string): Promise<Page> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Page;
}

const CAPS = JSON.stringify(PROCESS_ONLY_CAPABILITIES);

export async function main(): Promise<void> {
  const n = envInt('MXC_BENCH_NODES', 10_000);
  const rounds = envInt('MXC_BENCH_ROUNDS', 30);
  const r = new Report('nodes');
  r.say(`  ${fmt(n, 0)} nodes, ${rounds} rounds per figure (median)`);
  const db = await createBenchDb();
  const dataDir = await mkdtemp(join(tmpdir(), 'mxc-bench-nodes-'));
  const coord = await startCoordinatorProcess({ dataDir, databaseUrl: db.url });
  try {
    await queryOnce(
      db.url,
      `INSERT INTO nodes (id, name, status, cpu, memory_mb, disk_mb, capabilities, version, last_seen_at)
       SELECT 'bench-' || i, 'node-' || lpad(i::text, 6, '0'), 'down', 4, 8192, 0, $1::jsonb, 'bench', now()
       FROM generate_series(1, $2::int) AS i`,
      [CAPS, n],
    );
    r.progress(`${fmt(n, 0)} nodes inserted`);
    const time = async (f: () => Promise<unknown>) => {
      const xs: number[] = [];
      await f(); // warm
      for (let i = 0; i < rounds; i++) {
        const t = nowMs();
        await f();
        xs.push(nowMs() - t);
      }
      return median(xs);
    };
    // One connected client, so the anchor is the query alone (no connection set-up).
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const bare = await time(() => client.query('SELECT * FROM nodes ORDER BY name'));
    const firstPageSql = await time(() => client.query('SELECT * FROM nodes ORDER BY name LIMIT 100'));
    await client.end();
    const anchor = { value: bare, label: `bare SELECT of all ${fmt(n, 0)} rows`, higherIsBetter: false };
    // The cursor half way: walk there a page of 1000 at a time.
    let middle: string | null = null;
    for (let seen = 0; seen < n / 2; ) {
      const p = await getPage(`${coord.url}/api/nodes?limit=1000${middle ? `&cursor=${middle}` : ''}`);
      seen += p.data.length;
      middle = p.next_cursor;
    }
    for (const limit of [100, 1000]) {
      r.figure({
        name: `GET /api/nodes first page of ${limit}`,
        value: await time(() => getPage(`${coord.url}/api/nodes?limit=${limit}`)),
        unit: 'ms',
        anchor,
      });
      r.figure({
        name: `GET /api/nodes middle page of ${limit}`,
        value: await time(() => getPage(`${coord.url}/api/nodes?limit=${limit}&cursor=${middle}`)),
        unit: 'ms',
        anchor,
      });
    }
    const all = async () => {
      let cursor: string | null = null;
      let count = 0;
      do {
        const p: Page = await getPage(
          `${coord.url}/api/nodes?limit=1000${cursor ? `&cursor=${cursor}` : ''}`,
        );
        count += p.data.length;
        cursor = p.next_cursor;
      } while (cursor);
      if (count !== n) throw new Error(`paging saw ${count} nodes, not ${n}`);
    };
    r.figure({ name: 'every page of 1000 (mxc nodes list)', value: await time(all), unit: 'ms', anchor });
    r.note(`the page's own SELECT (LIMIT 100) alone takes ${fmt(firstPageSql, 2)} ms`);
    r.note('goal (issue 17): ≤ 50 ms a page at 10k nodes; before paging one unpaged read took 413 ms');
    r.save({ nodes: n });
  } finally {
    await coord.stop();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
