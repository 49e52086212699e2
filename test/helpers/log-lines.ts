/**
 * Log lines of a script printing `line 0`, `line 1`, …: the numbers stored for a workload, and the
 * check that each number up to the last arrived exactly once (none lost, none stored twice).
 */
import { expect } from 'vitest';
import type { Queryable } from '../../scheduler/store/db.js';
import * as logs from '../../scheduler/store/logs.js';

/** The numbers N of the `line N` stdout lines stored for workload `id`. */
export async function storedLineNumbers(db: Queryable, id: string): Promise<number[]> {
  return (await logs.readLogs(db, id, { limit: 100_000 }))
    .filter((l) => l.stream === 'stdout')
    .map((l) => Number(l.line.slice('line '.length)));
}

/** Every number from 0 to the highest is there, once. */
export function expectEachLineOnce(got: readonly number[]): void {
  const last = Math.max(...got);
  expect(got.filter((n, i) => got.indexOf(n) !== i)).toEqual([]);
  expect(Array.from({ length: last + 1 }, (_, i) => i).filter((n) => !got.includes(n))).toEqual([]);
}
