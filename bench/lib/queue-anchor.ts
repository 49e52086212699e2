/**
 * The anchor of submit → placed: what a PostgreSQL job queue does for "add → a worker starts it" on
 * this machine, measured beside the figure. As graphile-worker: the add is one INSERT with NOTIFY in
 * its transaction; a worker LISTENing takes the job with one UPDATE … RETURNING. Also the bare
 * round trip of `SELECT 1`.
 */
import pg from 'pg';

export interface QueueAnchor {
  /** One `SELECT 1` on a connected client, in ms. */
  roundTrip(): Promise<number>;
  /** INSERT + NOTIFY → the listener's notification → its UPDATE … RETURNING answered, in ms. */
  addToStart(): Promise<number>;
  close(): Promise<void>;
}

export async function queueAnchor(url: string): Promise<QueueAnchor> {
  const adder = new pg.Client({ connectionString: url });
  const worker = new pg.Client({ connectionString: url });
  await adder.connect();
  await worker.connect();
  await adder.query(
    `CREATE TABLE IF NOT EXISTS bench_anchor_jobs (
       id bigserial PRIMARY KEY, task text NOT NULL, payload jsonb NOT NULL,
       run_at timestamptz NOT NULL DEFAULT now(), locked_at timestamptz, attempts int NOT NULL DEFAULT 0)`,
  );
  await worker.query('LISTEN bench_anchor_jobs');
  let started: ((at: number) => void) | null = null;
  worker.on('notification', () => {
    // The worker takes the oldest runnable job, as graphile-worker's get_job does.
    void worker
      .query(
        `UPDATE bench_anchor_jobs SET locked_at = now(), attempts = attempts + 1
          WHERE id = (SELECT id FROM bench_anchor_jobs WHERE locked_at IS NULL AND run_at <= now()
                      ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING *`,
      )
      .then(() => started?.(performance.now()));
  });
  return {
    async roundTrip() {
      const t0 = performance.now();
      await adder.query('SELECT 1');
      return performance.now() - t0;
    },
    async addToStart() {
      const at = new Promise<number>((resolve) => {
        started = resolve;
      });
      const t0 = performance.now();
      await adder.query(
        `WITH j AS (INSERT INTO bench_anchor_jobs (task, payload) VALUES ('start', $1) RETURNING id)
         SELECT pg_notify('bench_anchor_jobs', id::text) FROM j`,
        [JSON.stringify({ n: t0 })],
      );
      return (await at) - t0;
    },
    async close() {
      await adder.end().catch(() => {});
      await worker.end().catch(() => {});
    },
  };
}
