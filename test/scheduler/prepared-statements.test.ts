/**
 * Prepared statements on PostgreSQL: a schema change under a statement prepared on a connection (a
 * migration during a rolling upgrade) must not break that statement for good; it runs unprepared.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type Db, openPostgres } from '../../scheduler/store/db.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';

let db: Db;
let name: string;

beforeAll(async () => {
  const created = await createPostgresDb();
  name = created.name;
  db = await openPostgres(created.url, { max: 1 }); // one connection: the statement is prepared on it
});
afterAll(async () => {
  await db?.close();
  if (name) await dropPostgresDb(name);
});

test('a prepared statement whose table changed columns still answers, with the new columns', async () => {
  await db.exec('CREATE TABLE things (id int PRIMARY KEY); INSERT INTO things VALUES (1)');
  const read = () => db.query<Record<string, unknown>>('SELECT * FROM things', [], 'test_read_things');
  expect(await read()).toEqual([{ id: 1 }]);
  expect(await read()).toEqual([{ id: 1 }]);
  await db.exec("ALTER TABLE things ADD COLUMN label text NOT NULL DEFAULT 'x'");
  expect(await read()).toEqual([{ id: 1, label: 'x' }]);
  expect(await read()).toEqual([{ id: 1, label: 'x' }]);
});
