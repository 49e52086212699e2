// mxc push's frame buffers (compiler/push.ts FramePool): a frame's memory is taken again once given back,
// and only buffers the pool made are ever taken back.
import { describe, expect, test } from 'vitest';
import { FramePool } from '../../compiler/push.js';

describe('frame pool', () => {
  test('a buffer given back is taken again for a frame of its size class, never while lent', () => {
    const pool = new FramePool();
    const a = pool.take(100_000);
    const b = pool.take(100_000);
    expect(a.length).toBe(100_000);
    expect(a.buffer).not.toBe(b.buffer);
    pool.give(a);
    const c = pool.take(70_000);
    expect(c.length).toBe(70_000);
    expect(c.buffer).toBe(a.buffer);
    // Given back twice (a second write callback): kept once.
    pool.give(a);
    expect(pool.take(100_000).buffer).not.toBe(a.buffer);
  });

  test('buffers it did not make are left alone', () => {
    const pool = new FramePool();
    const slab = Buffer.from('a header from the shared slab');
    const foreign = Buffer.alloc(128 * 1024);
    pool.give(slab);
    pool.give(foreign);
    const next = pool.take(100_000);
    expect(next.buffer).not.toBe(slab.buffer);
    expect(next.buffer).not.toBe(foreign.buffer);
  });
});
