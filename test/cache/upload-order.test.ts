// The push order: every path after its references, each once, in bounded batches that keep the order.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { batchesOf, PushError, referencesFirst } from '../../compiler/push.js';
import type { PathInfo } from '../../lib/path-info.js';

const storePath = (i: number) => `/nix/store/${String(i).padStart(32, '0')}-p`;

/** A random DAG: path i may only reference paths with a smaller index (and itself). */
const dag = fc.array(fc.array(fc.nat(), { maxLength: 4 }), { minLength: 1, maxLength: 60 }).map((refLists) =>
  refLists.map(
    (refs, i): PathInfo => ({
      path: storePath(i),
      narHash: '',
      narSize: 1 + ((i * 7) % 5),
      references: [...new Set([...refs.filter((r) => r < i), ...(i % 3 === 0 ? [i] : [])].map(storePath))],
    }),
  ),
);

describe('push order', () => {
  test('references first, everything once, whatever the input order', () => {
    fc.assert(
      fc.property(dag, fc.boolean(), (infos, reverse) => {
        const order = referencesFirst(reverse ? [...infos].reverse() : infos);
        expect(order.map((i) => i.path).sort()).toEqual(infos.map((i) => i.path).sort());
        const at = new Map(order.map((info, k) => [info.path, k]));
        for (const info of order)
          for (const r of info.references)
            if (r !== info.path) expect(at.get(r)!).toBeLessThan(at.get(info.path)!);
      }),
      { numRuns: 100 },
    );
  });

  test('batches keep the order and stay within their bounds (a larger NAR alone)', () => {
    fc.assert(
      fc.property(
        dag,
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 12 }),
        (infos, maxPaths, maxBytes) => {
          const ordered = referencesFirst(infos);
          const batches = batchesOf(ordered, maxPaths, maxBytes);
          expect(batches.flat()).toEqual(ordered);
          for (const b of batches) {
            expect(b.length).toBeGreaterThan(0);
            expect(b.length).toBeLessThanOrEqual(maxPaths);
            const bytes = b.reduce((n, i) => n + i.narSize, 0);
            if (b.length > 1) expect(bytes).toBeLessThanOrEqual(maxBytes);
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  test('a cycle is refused', () => {
    const a: PathInfo = { path: storePath(1), narHash: '', narSize: 1, references: [storePath(2)] };
    const b: PathInfo = { path: storePath(2), narHash: '', narSize: 1, references: [storePath(1)] };
    const c: PathInfo = { path: storePath(3), narHash: '', narSize: 1, references: [] };
    expect(() => referencesFirst([a, b, c])).toThrow(PushError);
    expect(() => referencesFirst([a, b, c])).toThrow(/cycle/);
  });
});
