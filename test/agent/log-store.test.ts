import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { WorkloadLogStore } from '../../agent/logs/log-store.js';
import { pruneLogs } from '../../agent/logs/prune.js';
import type { LogLine } from '../../spec/messages.js';
import { makeTask, tempDir } from './helpers.js';
import { harness } from './task-runner-harness.js';

const line = (i: number, process = 'web'): LogLine => ({
  process,
  stream: 'stdout',
  run: 1,
  ts: 1000 + i,
  line: `line ${i}`,
});

describe('WorkloadLogStore', () => {
  test('reads back what was appended, filtered by process and time, limited to the newest lines', async () => {
    const store = new WorkloadLogStore(tempDir('logs'));
    for (let i = 0; i < 10; i++) store.append(line(i, i % 2 ? 'worker' : 'web'));
    expect((await store.read()).map((l) => l.line)).toEqual([...Array(10)].map((_, i) => `line ${i}`));
    expect((await store.read({ process: 'worker' })).map((l) => l.ts)).toEqual([
      1001, 1003, 1005, 1007, 1009,
    ]);
    expect((await store.read({ sinceTs: 1007 })).map((l) => l.ts)).toEqual([1007, 1008, 1009]);
    expect((await store.read({ process: 'web', limit: 2 })).map((l) => l.ts)).toEqual([1006, 1008]);
    await store.close();
  });

  test('output faster than the disk: lines past the backlog bound are dropped and counted, not held', async () => {
    const store = new WorkloadLogStore(tempDir('logs'), {
      maxBacklogBytes: 64 * 1024,
      maxBytesPerFile: 1 << 30,
    });
    // 20,000 lines in one turn of the event loop (~1.6 MB): nothing reaches the disk meanwhile.
    for (let i = 0; i < 20_000; i++) store.append(line(i));
    store.append(line(20_000));
    await store.close();
    const got = await new WorkloadLogStore(store.dir).read();
    const kept = got.filter((l) => l.stream === 'stdout');
    const notices = got.filter((l) => l.stream === 'system');
    // Held at most the bound: ~800 lines of ~80 bytes; the rest counted.
    expect(kept.length).toBeLessThan(1000);
    expect(notices).toHaveLength(1);
    const dropped = Number(/^(\d+) line\(s\) of output were not kept/.exec(notices[0]!.line)![1]);
    expect(kept.length + dropped).toBe(20_001);
    // The first lines are kept in order; the counting line comes where the dropping ended.
    expect(kept.slice(0, 3).map((l) => l.ts)).toEqual([1000, 1001, 1002]);
  });

  test('rotates by size and drops the oldest file beyond maxFiles', async () => {
    const dir = tempDir('logs');
    const bytesPerLine = Buffer.byteLength(`${JSON.stringify(line(10))}\n`);
    const store = new WorkloadLogStore(dir, { maxBytesPerFile: bytesPerLine * 4, maxFiles: 3 });
    for (let i = 10; i < 40; i++) {
      store.append(line(i));
      if (i % 7 === 0) await store.flush(); // several flushes, several batch sizes
    }
    await store.close();
    expect(readdirSync(dir).sort()).toEqual(['log.1.jsonl', 'log.2.jsonl', 'log.jsonl']);
    for (const f of readdirSync(dir))
      expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(bytesPerLine * 4);
    const kept = (
      await new WorkloadLogStore(dir, { maxBytesPerFile: bytesPerLine * 4, maxFiles: 3 }).read()
    ).map((l) => l.ts);
    // The newest lines survive, contiguous and in order; the oldest were dropped with the oldest file.
    expect(kept.at(-1)).toBe(1039);
    expect(kept).toEqual([...Array(kept.length)].map((_, i) => 1040 - kept.length + i));
    expect(kept.length).toBeGreaterThan(8);
    expect(kept.length).toBeLessThanOrEqual(12);
  });

  test('close() writes every pending line; the files stay and a new store continues them', async () => {
    const dir = tempDir('logs');
    const first = new WorkloadLogStore(dir, { flushIntervalMs: 60_000 });
    for (let i = 0; i < 1000; i++) first.append(line(i));
    await first.close();
    expect(() => first.append(line(1))).toThrow(/closed/);
    const second = new WorkloadLogStore(dir);
    second.append(line(1000));
    const all = await second.read();
    expect(all).toHaveLength(1001);
    expect(all[1000]).toEqual(line(1000));
    await second.close();
  });

  test('a torn or foreign line in a file is skipped, not fatal', async () => {
    const dir = tempDir('logs');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'log.jsonl'), `${JSON.stringify(line(1))}\n{"process":"x"}\nnot json\n`);
    appendFileSync(join(dir, 'log.jsonl'), '{"process":"web","str');
    const store = new WorkloadLogStore(dir);
    expect(await store.read()).toEqual([line(1)]);
  });

  test('bad options are refused', () => {
    expect(() => new WorkloadLogStore(tempDir('logs'), { maxFiles: 0 })).toThrow(
      /maxFiles must be an integer of at least 1/,
    );
    expect(() => new WorkloadLogStore(tempDir('logs'), { maxBytesPerFile: 0 })).toThrow(/maxBytesPerFile/);
  });

  test('takes a task runner output, system lines included', async () => {
    const store = new WorkloadLogStore(tempDir('logs'));
    const h = harness({ task: makeTask([{ name: 'hello', cmdline: 'echo hi; echo err >&2' }]) });
    h.runner.start();
    await h.runner.done;
    for (const l of h.logs) store.append(l);
    await store.close();
    const got = await store.read({ process: 'hello' });
    // stdout and stderr are separate pipes: their relative order is not defined.
    const output = got.filter((l) => l.stream !== 'system').map((l) => `${l.stream} ${l.line} ${l.run}`);
    expect(output.sort()).toEqual(['stderr err 1', 'stdout hi 1']);
    expect(got.some((l) => l.stream === 'system' && /exited with code 0/.test(l.line))).toBe(true);
  });
});

describe('pruneLogs', () => {
  test('removes workload log dirs older than the retention, keeps recent and listed ones', async () => {
    const root = tempDir('logroot');
    const now = Date.now();
    const make = (name: string, ageMs: number): void => {
      const dir = join(root, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'log.jsonl'), '');
      const t = new Date(now - ageMs);
      utimesSync(join(dir, 'log.jsonl'), t, t);
      utimesSync(dir, t, t);
    };
    make('old', 10 * 3600_000);
    make('recent', 60_000);
    make('old-but-running', 10 * 3600_000);
    const removed = await pruneLogs(root, 3600_000, { keep: ['old-but-running'], now });
    expect(removed).toEqual(['old']);
    expect(readdirSync(root).sort()).toEqual(['old-but-running', 'recent']);
    expect(await pruneLogs(join(root, 'missing'), 1000)).toEqual([]);
    expect(existsSync(join(root, 'recent', 'log.jsonl'))).toBe(true);
  });
});
