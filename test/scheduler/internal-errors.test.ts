/**
 * 5xx answers keep their details in the log: a real failure (a table made unreadable, the database
 * dropped under a running coordinator) answers the coded INTERNAL with a generic message and the request
 * id, while the log line under that id has the real message, its causes and the stack. Nothing internal
 * (SQL, table or database names, paths, buckets, stacks) reaches the client; a cache 5xx keeps its code.
 */
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { installContract, typed } from '../../scheduler/api/contract.js';
import { installErrorHandler } from '../../scheduler/api/error-handler.js';
import { CacheError, sendCacheError } from '../../scheduler/cache/errors.js';
import { openPostgres } from '../../scheduler/store/db.js';
import { ApiError } from '../../spec/api.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb, ENGINES } from '../helpers/db.js';
import { captureLogger, type LogRecord } from '../helpers/logger.js';

/** The INTERNAL answer, with the request id it names. */
const InternalAnswer = ApiError.extend({
  error: z.object({
    code: z.literal('INTERNAL'),
    message: z.string(),
    details: z.object({ request_id: z.string().min(1) }),
  }),
});

/** What must never reach a client: SQL, PostgreSQL's wording, file paths, stack frames. */
const INTERNAL_TEXT =
  /relation|does not exist|database|SELECT|FROM |\/work\/|\/tmp\/|node_modules|\.ts:\d|\.js:\d|\n\s+at /i;

function expectInternal(status: number, body: unknown): string {
  expect(status).toBe(500);
  const answer = InternalAnswer.parse(body);
  const id = answer.error.details.request_id;
  expect(answer.error.message).toBe(`internal error; the coordinator log has the details (request id ${id})`);
  expect(JSON.stringify(body)).not.toMatch(INTERNAL_TEXT);
  return id;
}

/** The error record logged for request `id`. */
function loggedFor(records: LogRecord[], id: string) {
  const hit = records.find((r) => r.reqId === id && r.level >= 50);
  expect(hit, `an error record for ${id} in ${JSON.stringify(records.slice(-5))}`).toBeDefined();
  return hit as LogRecord & { err: { message: string; stack: string; type: string }; url: string };
}

describe('internal errors', () => {
  let c: TestCoordinator | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it.each(ENGINES)(
    'a table made unreadable (%s): generic INTERNAL to the client, the SQL error in the log',
    async (engine) => {
      const log = captureLogger('error');
      c = await startTestCoordinator(engine, { logger: log.logger });
      expect((await c.api('GET', '/api/jobs')).status).toBe(200);
      await c.db.exec('ALTER TABLE jobs RENAME TO jobs_unreadable');
      const r = await c.api('GET', '/api/jobs');
      const id = expectInternal(r.status, r.body);
      const record = loggedFor(log.records, id);
      expect(record.msg).toBe('internal error');
      expect(record.url).toBe('/api/jobs');
      expect(record.err.message).toMatch(/relation "jobs" does not exist/);
      expect(record.err.stack).toMatch(/\n\s+at /);
      // A second failure has its own id and its own record.
      const again = await c.api('GET', '/api/jobs');
      const id2 = expectInternal(again.status, again.body);
      expect(id2).not.toBe(id);
      loggedFor(log.records, id2);
    },
    // The first PGlite of a run compiles its WebAssembly: slow on a loaded machine.
    180_000,
  );

  it('the database dropped under a running coordinator: generic INTERNAL, the reason in the log', async () => {
    const log = captureLogger('error');
    c = await startTestCoordinator('postgres', { logger: log.logger });
    await dropPostgresDb(c.dbName!);
    const r = await c.api('GET', '/api/workloads');
    const id = expectInternal(r.status, r.body);
    expect(loggedFor(log.records, id).err.message).toMatch(
      new RegExp(`database "${c.dbName}" does not exist`),
    );
  });

  it('a connection lost inside a transaction fails that transaction, never the process', async () => {
    const { url, name } = await createPostgresDb();
    const db = await openPostgres(url, { max: 2 });
    try {
      const killed = db.tx(async (q) => {
        const [{ pid }] = await q.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        // Terminated while the transaction waits between two statements: the 'error' event arrives on
        // a checked-out client, which has no pool listener.
        const admin = await openPostgres(url, { max: 1 });
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        await admin.close();
        await new Promise((resolve) => setImmediate(resolve));
        await q.query('SELECT 1');
      });
      await expect(killed).rejects.toThrow(/terminat|Connection/i);
      // The pool goes on with a new connection.
      expect(await db.query<{ one: number }>('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    } finally {
      await db.close();
      await dropPostgresDb(name);
    }
  });

  it('logs the whole cause chain of a wrapped error, and sends none of it', async () => {
    const log = captureLogger('error');
    const app = Fastify({ loggerInstance: log.logger as FastifyBaseLogger });
    installErrorHandler(app);
    await installContract(app, 'test');
    typed(app).get('/api/wrapped', { schema: { response: { 200: z.object({}) } } }, async () => {
      const low = new Error('EACCES: permission denied, open /var/lib/mxc/cache/narinfo/x.narinfo');
      throw new Error('cannot read the narinfo', { cause: low });
    });
    const r = await app.inject({ method: 'GET', url: '/api/wrapped' });
    const id = expectInternal(r.statusCode, r.json());
    expect(r.body).not.toMatch(/narinfo|EACCES|var\/lib/);
    const record = loggedFor(log.records, id);
    expect(record.err.message).toBe(
      'cannot read the narinfo: EACCES: permission denied, open /var/lib/mxc/cache/narinfo/x.narinfo',
    );
    expect(record.err.stack).toMatch(/caused by: Error: EACCES/);
    await app.close();
  });

  it("keeps a cache storage failure's code, and its bucket and reason in the log", async () => {
    const log = captureLogger('error');
    const app = Fastify({ loggerInstance: log.logger as FastifyBaseLogger });
    installErrorHandler(app);
    app.get('/cache/x.narinfo', async (_req, reply) =>
      sendCacheError(
        reply,
        new CacheError(
          'CACHE_STORAGE_UNAVAILABLE',
          503,
          'cannot read a narinfo in the cache bucket s3://private-bucket/cache/ (ECONNREFUSED): check the endpoint',
          { cause: new Error('connect ECONNREFUSED 10.1.2.3:9000') },
        ),
      ),
    );
    app.get('/cache/bad', async (_req, reply) =>
      sendCacheError(reply, new CacheError('CACHE_BAD_REQUEST', 400, 'X-Nix-NarHash is missing')),
    );
    const r = await app.inject({ method: 'GET', url: '/cache/x.narinfo' });
    expect(r.statusCode).toBe(503);
    const answer = ApiError.parse(r.json());
    expect(answer.error.code).toBe('CACHE_STORAGE_UNAVAILABLE');
    expect(r.body).not.toMatch(/private-bucket|ECONNREFUSED|10\.1\.2\.3/);
    const id = (answer.error.details as { request_id: string }).request_id;
    expect(answer.error.message).toContain(`request id ${id}`);
    const record = loggedFor(log.records, id);
    expect(record.err.message).toMatch(/s3:\/\/private-bucket\/cache\/.*ECONNREFUSED 10\.1\.2\.3:9000/);
    // A 4xx of the cache still tells the client what to do.
    const bad = await app.inject({ method: 'GET', url: '/cache/bad' });
    expect(bad.json().error.message).toBe('X-Nix-NarHash is missing');
    await app.close();
  });
});
