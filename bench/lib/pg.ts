/**
 * A throwaway PostgreSQL database per benchmark run (`mxc_bench_<random>` on the local server, trust
 * auth), dropped afterwards. The coordinator migrates it itself on start.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const PG_ADMIN_URL =
  process.env.MXC_BENCH_PG_URL ??
  process.env.MXC_TEST_PG_URL ??
  'postgres://postgres@127.0.0.1:5432/postgres';

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  try {
    await c.connect();
  } catch (err) {
    throw new Error(
      `cannot reach PostgreSQL at ${PG_ADMIN_URL} (${(err as Error).message}); start it, or point MXC_BENCH_PG_URL at a server where you may create databases`,
      { cause: err },
    );
  }
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export interface BenchDb {
  name: string;
  url: string;
  drop(): Promise<void>;
}

/** Creates an empty database; its URL goes to the coordinator as DATABASE_URL. */
export async function createBenchDb(): Promise<BenchDb> {
  const name = `mxc_bench_${randomBytes(5).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return {
    name,
    url: u.toString(),
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}

/** Runs one query against a bench database (counts during a run) with a short-lived client. */
export async function queryOnce<T>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as T[];
  } finally {
    await c.end();
  }
}
