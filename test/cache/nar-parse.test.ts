// The streaming NAR validator: real `nix-store --dump` output passes in any chunking; every structural
// fault (truncation, trailing bytes, bad padding, unordered or unsafe names, unknown tags) is refused.
// checkNar (a NAR held whole) gives the streaming checker's answer, message and offset, for any input.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { narStream } from '../../lib/nar-dump.js';
import { checkNar, checkNarStreaming, NarFormatError, NarValidator } from '../../lib/nar-parse.js';
import { dumpNar } from './fixtures.js';

async function validate(nar: Buffer, chunk = 4096): Promise<void> {
  const parts: Buffer[] = [];
  for (let i = 0; i < nar.length; i += chunk) parts.push(nar.subarray(i, i + chunk));
  await pipeline(
    Readable.from(parts),
    new NarValidator(),
    new Writable({
      write(_c, _e, cb) {
        cb();
      },
    }),
  );
}

/** NAR strings, to build faulty archives by hand. */
const s = (x: string | Buffer) => {
  const b = typeof x === 'string' ? Buffer.from(x) : x;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
};
const nar = (...items: (string | Buffer)[]) => Buffer.concat(items.map(s));
const file = (contents: string) => ['(', 'type', 'regular', 'contents', contents, ')'];
const dir = (...entries: [string, string[]][]) => [
  '(',
  'type',
  'directory',
  ...entries.flatMap(([name, node]) => ['entry', '(', 'name', name, 'node', ...node, ')']),
  ')',
];

let work: string;
let sample: Buffer;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-nar-parse-'));
  const root = join(work, 'tree');
  await mkdir(join(root, 'bin'), { recursive: true });
  await writeFile(join(root, 'bin', 'run'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await writeFile(join(root, 'data'), Buffer.alloc(100_003, 7));
  await writeFile(join(root, 'empty'), '');
  await symlink('bin/run', join(root, 'link'));
  await mkdir(join(root, 'dir-empty'));
  sample = await dumpNar(root);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('valid NARs', () => {
  test('nix-store --dump output and our own dump pass, whatever the chunking', async () => {
    const ours = Buffer.concat(await narStream(join(work, 'tree')).toArray());
    expect(ours.equals(sample)).toBe(true);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 70_000 }), async (chunk) => {
        await validate(sample, chunk);
      }),
      { numRuns: 25 },
    );
    await validate(nar('nix-archive-1', ...file('')));
    await validate(nar('nix-archive-1', '(', 'type', 'symlink', 'target', '/x', ')'));
  });
});

describe('refused', () => {
  const refused = async (b: Buffer, re?: RegExp) => {
    const p = validate(b, 7);
    await expect(p).rejects.toBeInstanceOf(NarFormatError);
    if (re) await expect(p).rejects.toThrow(re);
  };

  test('truncated anywhere, or followed by anything', async () => {
    for (let cut = 0; cut < sample.length; cut += cut < 2000 ? 8 : 4093)
      await refused(sample.subarray(0, cut));
    await refused(Buffer.concat([sample, Buffer.alloc(8)]), /follow the end/);
  });

  test('structural faults', async () => {
    await refused(nar('nix-archive-2', ...file('x')), /expected "nix-archive-1"/);
    await refused(nar('nix-archive-1', '(', 'type', 'fifo', ')'), /unknown node type/);
    await refused(nar('nix-archive-1', ...dir(['b', file('')], ['a', file('')])), /ascending/);
    await refused(nar('nix-archive-1', ...dir(['a', file('')], ['a', file('')])), /ascending/);
    for (const bad of ['..', '.', 'a/b', '', 'a\0b'])
      await refused(nar('nix-archive-1', ...dir([bad, file('')])), /entry name/);
    await refused(nar('nix-archive-1', '(', 'type', 'symlink', 'target', '', ')'), /symlink/);
    await refused(nar('nix-archive-1', '(', 'type', 'regular', 'executable', 'x', 'contents', '', ')'));
    // Non-zero padding after a 1-byte string.
    const padded = nar('nix-archive-1', ...file('x'));
    const at = padded.indexOf(Buffer.from('x\0\0\0\0\0\0\0')) + 3;
    padded[at] = 1;
    await refused(padded, /padding/);
    // A length far beyond any token.
    const huge = Buffer.concat([s('nix-archive-1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x7f])]);
    await refused(huge, /too large|at most/);
  });

  test('random single-byte changes to the framing are refused or leave a valid NAR, never a crash', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 400 }), fc.integer({ min: 1, max: 255 }), async (i, x) => {
        const b = Buffer.from(sample);
        b[i] = b[i]! ^ x;
        await validate(b, 13).catch((err) => {
          expect(err).toBeInstanceOf(NarFormatError);
        });
      }),
      { numRuns: 200 },
    );
  });
});

describe('checkNar, a NAR held whole', () => {
  /** 'ok', or the refusal's message (which carries its offset). */
  const answer = (check: (b: Buffer) => void, b: Buffer): string => {
    try {
      check(b);
      return 'ok';
    } catch (err) {
      if (!(err instanceof NarFormatError)) throw err;
      return err.message;
    }
  };
  const same = (b: Buffer) => expect(answer(checkNar, b)).toBe(answer(checkNarStreaming, b));

  test('answers as the streaming checker: valid, hand-made faults, trailing bytes', () => {
    expect(answer(checkNar, sample)).toBe('ok');
    for (const b of [
      sample,
      Buffer.concat([sample, Buffer.alloc(8)]),
      Buffer.alloc(0),
      nar('nix-archive-1', ...file('')),
      nar('nix-archive-1', '(', 'type', 'symlink', 'target', '/x', ')'),
      nar('nix-archive-2', ...file('x')),
      nar('nix-archive-1', '(', 'type', 'fifo', ')'),
      nar('nix-archive-1', ...dir(['b', file('')], ['a', file('')])),
      nar('nix-archive-1', ...dir(['a', file('')], ['a', file('')])),
      ...['..', '.', 'a/b', '', 'a\0b'].map((bad) => nar('nix-archive-1', ...dir([bad, file('')]))),
      nar('nix-archive-1', '(', 'type', 'symlink', 'target', '', ')'),
      nar('nix-archive-1', '(', 'type', 'regular', 'executable', 'x', 'contents', '', ')'),
      Buffer.concat([s('nix-archive-1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x7f])]),
      Buffer.concat([s('nix-archive-1'), Buffer.from([0, 0, 0x20, 0, 0, 0, 0, 0])]),
    ])
      same(b);
  });

  test('answers as the streaming checker for any cut and any changed byte', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: sample.length }),
        fc.oneof(fc.nat({ max: 400 }), fc.nat({ max: sample.length - 1 })),
        fc.integer({ min: 0, max: 255 }),
        (cut, i, x) => {
          const b = Buffer.from(sample);
          b[i] = b[i]! ^ x;
          same(b);
          same(b.subarray(0, cut));
          same(sample.subarray(0, cut));
        },
      ),
      { numRuns: 2000 },
    );
  });
});
