// The push scheduler: every path goes after its references, never more than `limit` at once,
// and a failure stops new uploads.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { uploadInOrder } from '../../compiler/push.js';
import type { PathInfo } from '../../lib/path-info.js';

/** A random DAG: path i may only reference paths with a smaller index (and itself). */
const dag = fc.array(fc.array(fc.nat(), { maxLength: 4 }), { minLength: 1, maxLength: 40 }).map((refLists) =>
  refLists.map(
    (refs, i): PathInfo => ({
      path: `/nix/store/${String(i).padStart(32, '0')}-p`,
      narHash: '',
      narSize: 1,
      references: [
        ...new Set(
          [...refs.filter((r) => r < i), ...(i % 3 === 0 ? [i] : [])].map(
            (r) => `/nix/store/${String(r).padStart(32, '0')}-p`,
          ),
        ),
      ],
    }),
  ),
);

describe('uploadInOrder', () => {
  test('references first, bounded parallelism, everything once', async () => {
    await fc.assert(
      fc.asyncProperty(
        dag,
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.nat(3)),
        async (infos, limit, delays) => {
          const shuffled = [...infos].reverse();
          const done = new Set<string>();
          let active = 0;
          let peak = 0;
          const order = await uploadInOrder(shuffled, limit, async (info) => {
            for (const r of info.references) if (r !== info.path) expect(done.has(r)).toBe(true);
            active++;
            peak = Math.max(peak, active);
            await new Promise((r) => setTimeout(r, delays[done.size % Math.max(1, delays.length)] ?? 0));
            active--;
            done.add(info.path);
          });
          expect(new Set(order).size).toBe(infos.length);
          expect(peak).toBeLessThanOrEqual(limit);
        },
      ),
      { numRuns: 30 },
    );
  });

  test('runs independent paths in parallel', async () => {
    const infos = [0, 1, 2, 3].map(
      (i): PathInfo => ({
        path: `/nix/store/${String(i).padStart(32, '0')}-p`,
        narHash: '',
        narSize: 1,
        references: [],
      }),
    );
    let active = 0;
    let peak = 0;
    await uploadInOrder(infos, 4, async () => {
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setTimeout(r, 10));
      active--;
    });
    expect(peak).toBe(4);
  });

  test('a failure stops the paths that depend on it', async () => {
    const a: PathInfo = {
      path: '/nix/store/a'.padEnd(43, 'a') + '-a',
      narHash: '',
      narSize: 1,
      references: [],
    };
    const b: PathInfo = { ...a, path: '/nix/store/b'.padEnd(43, 'b') + '-b', references: [a.path] };
    const started: string[] = [];
    await expect(
      uploadInOrder([b, a], 2, async (info) => {
        started.push(info.path);
        throw new Error(`boom ${info.path}`);
      }),
    ).rejects.toThrow(/boom/);
    expect(started).toEqual([a.path]);
  });
});
