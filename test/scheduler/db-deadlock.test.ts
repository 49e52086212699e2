/**
 * Two transactions that wait on each other: PostgreSQL ends one with a deadlock (40P01), and the store
 * runs that one again, whole, so both commit. A stop racing a placement pass got a 500 so
 * (test/scheduler/job-races.test.ts, under load).
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type Db, openPostgres } from '../../scheduler/store/db.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';

let db: Db;
let name = '';
beforeAll(async () => {
  const created = await createPostgresDb();
  name = created.name;
  db = await openPostgres(created.url);
  await db.exec('CREATE TABLE dl (id int PRIMARY KEY, n int NOT NULL)');
  await db.exec('INSERT INTO dl VALUES (1, 0), (2, 0)');
});
afterAll(async () => {
  await db?.close();
  if (name) await dropPostgresDb(name);
});

test('a transaction ended by a deadlock is run again, and both commit', async () => {
  // Each takes its first row, then waits until the other has taken its own, then asks for the other's.
  let taken = 0;
  let bothTaken!: () => void;
  const both = new Promise<void>((r) => {
    bothTaken = r;
  });
  let runs = 0;
  const crossing = (first: number, second: number) =>
    db.tx(async (q) => {
      runs++;
      await q.query('UPDATE dl SET n = n + 1 WHERE id = $1', [first]);
      if (++taken === 2) bothTaken();
      await both;
      await q.query('UPDATE dl SET n = n + 1 WHERE id = $1', [second]);
      return first;
    });
  expect((await Promise.all([crossing(1, 2), crossing(2, 1)])).sort()).toEqual([1, 2]);
  // One of them ran twice: the deadlock happened and was retried.
  expect(runs).toBe(3);
  const rows = await db.query<{ id: number; n: number }>('SELECT id, n FROM dl ORDER BY id');
  expect(rows).toEqual([
    { id: 1, n: 2 },
    { id: 2, n: 2 },
  ]);
});
