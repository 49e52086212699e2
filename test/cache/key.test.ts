// The signing key: created in nix's key file format, readable by nix, signing exactly as nix does.
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { run } from '../../lib/exec.js';
import { fingerprint, parseNarInfo } from '../../lib/nar-info.js';
import { queryPathInfos } from '../../lib/path-info.js';
import { ensureCacheKey } from '../../scheduler/cache/index.js';
import { loadOrCreateKey, signFingerprint } from '../../scheduler/cache/key.js';
import { buildClosure, NIX_COMMAND } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mxc-cache-key-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ensureCacheKey', () => {
  test('creates a 0600 secret in nix format once, then reuses it', async () => {
    const data = join(dir, 'a');
    const first = await ensureCacheKey(data);
    expect(first.name).toBe('mxc-1');
    expect(first.publicKey).toMatch(/^mxc-1:[A-Za-z0-9+/]{43}=$/);
    const secret = await readFile(join(data, 'cache', 'secret.key'), 'utf8');
    expect(Buffer.from(secret.split(':')[1], 'base64')).toHaveLength(64);
    expect((await stat(join(data, 'cache', 'secret.key'))).mode & 0o777).toBe(0o600);
    expect((await readFile(join(data, 'cache', 'public.key'), 'utf8')).trim()).toBe(first.publicKey);
    expect(await ensureCacheKey(data)).toEqual(first);
    const concurrent = await Promise.all([1, 2, 3].map(() => ensureCacheKey(join(dir, 'b'))));
    expect(new Set(concurrent.map((k) => k.publicKey)).size).toBe(1);
  });

  test('refuses a configured name that differs from the stored key, and a corrupt file', async () => {
    const data = join(dir, 'c');
    await ensureCacheKey(data, 'site-a');
    await expect(ensureCacheKey(data, 'site-b')).rejects.toThrow(/holds key "site-a"/);
    await writeFile(join(data, 'cache', 'secret.key'), 'site-a:bm90IGEga2V5');
    await expect(ensureCacheKey(data, 'site-a')).rejects.toThrow(/not a nix binary cache secret key/);
  });

  test('loads a key made by nix-store --generate-binary-cache-key and signs as nix does', async () => {
    const data = join(dir, 'd');
    const cache = join(data, 'cache');
    await run('mkdir', ['-p', cache]);
    await run('nix-store', [
      '--generate-binary-cache-key',
      'nixmade-1',
      join(cache, 'secret.key'),
      join(cache, 'public.key'),
    ]);
    const nixPublic = (await readFile(join(cache, 'public.key'), 'utf8')).trim();
    const key = await loadOrCreateKey(cache, 'nixmade-1');
    expect(key.publicKey).toBe(nixPublic);

    // ed25519 is deterministic: nix signing the same fingerprint must give our signature.
    const { lib } = await buildClosure('key');
    const out = join(dir, 'filecache');
    await run('nix', [
      ...NIX_COMMAND,
      'copy',
      '--option',
      'substituters',
      '',
      '--to',
      `file://${out}?secret-key=${join(cache, 'secret.key')}&compression=none`,
      lib,
    ]);
    const hash = lib.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const nixInfo = parseNarInfo(await readFile(join(out, `${hash}.narinfo`), 'utf8'));
    const [local] = await queryPathInfos([lib]);
    expect(nixInfo.narSize).toBe(local.narSize);
    expect(nixInfo.sigs).toContain(signFingerprint(key, fingerprint(nixInfo)));
  });
});
