// Nix base-32 and hash notations, checked against nix's own `nix-hash` conversions.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { run } from '../../lib/exec.js';
import { isStoreBasename, storeBasename } from '../../lib/nar-info.js';
import { formatSha256, fromNixBase32, parseSha256, toNixBase32 } from '../../lib/nix-base32.js';

describe('nix base32', () => {
  test('round-trips any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (bytes) => {
        const text = toNixBase32(bytes);
        expect(fromNixBase32(text, bytes.length)).toEqual(Buffer.from(bytes));
      }),
    );
  });

  test('agrees with nix-hash --to-base32 and parses every notation', async () => {
    const digest = createHash('sha256').update('mxc').digest();
    const { stdout } = await run('nix-hash', ['--type', 'sha256', '--to-base32', digest.toString('hex')]);
    expect(toNixBase32(digest)).toBe(stdout.trim());
    expect(parseSha256(formatSha256(digest))).toEqual(digest);
    expect(parseSha256(`sha256:${digest.toString('hex')}`)).toEqual(digest);
    expect(parseSha256(`sha256-${digest.toString('base64')}`)).toEqual(digest);
  });

  test('rejects malformed hashes', () => {
    expect(parseSha256('sha256:xyz')).toBeNull();
    expect(parseSha256('md5:0123')).toBeNull();
    expect(fromNixBase32('e'.repeat(52), 32)).toBeNull(); // 'e' is not in nix's alphabet
    expect(fromNixBase32('z'.repeat(52), 32)).toBeNull(); // overflows 32 bytes
    expect(fromNixBase32(`${'0'.repeat(51)}é`, 32)).toBeNull(); // not ASCII
    expect(fromNixBase32(`${'0'.repeat(51)}\u0130`, 32)).toBeNull(); // a code unit past the table
  });
});

describe('store path names', () => {
  test.each([
    ['/nix/store/8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox', '8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox'],
    ['8hzbz17vcmw97w1wpqpadxhfkj7crcps-a+b=c?d_e.f', '8hzbz17vcmw97w1wpqpadxhfkj7crcps-a+b=c?d_e.f'],
    ['/nix/store/8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox/bin/sh', null],
    ['../../etc/passwd', null],
    ['8hzbz17vcmw97w1wpqpadxhfkj7crcps-..', null],
    ['8hzbz17vcmw97w1wpqpadxhfkj7crcpe-busybox', null],
    ['/other/store/8hzbz17vcmw97w1wpqpadxhfkj7crcps-busybox', null],
  ])('%s → %s', (input, expected) => {
    expect(storeBasename(input)).toBe(expected);
    if (expected) expect(isStoreBasename(expected)).toBe(true);
  });
});
