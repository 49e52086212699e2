// Orphan NARs (stored, but their narinfo was never published) are collected by the leader's retention
// pass once older than the grace period; referenced NARs, young orphans and foreign files stay.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatSha256 } from '../../lib/nix-base32.js';
import { WHOLE_NAR_MAX } from '../../scheduler/cache/ingest.js';
import { ORPHAN_NAR_GRACE_MS } from '../../scheduler/cache/store.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { eventually } from '../helpers/protocol-agent.js';
import { dumpNar, rawUpload } from './fixtures.js';

let work: string;
let db: { url: string; name: string };
let c: TestCoordinator | undefined;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-orphan-nars-'));
  db = await createPostgresDb();
});
afterAll(async () => {
  await c?.stop();
  if (db) await dropPostgresDb(db.name);
  await rm(work, { recursive: true, force: true });
});

describe('orphan NARs', () => {
  test('the retention pass at start deletes old NARs no narinfo references, and nothing else', async () => {
    const dataDir = join(work, 'coordinator');
    const narDir = join(dataDir, 'cache', 'nar');
    const start = () => startTestCoordinator('postgres', { databaseUrl: db.url, dataDir });

    // A published path, its NAR as old as an orphan would be: large enough (over WHOLE_NAR_MAX) to be
    // a file of its own in nar/ (smaller ones go into a pack, never collected on their own).
    c = await start();
    await writeFile(join(work, 'content'), randomBytes(WHOLE_NAR_MAX + 4096));
    const nar = await dumpNar(join(work, 'content'));
    const path = `/nix/store/${'f'.repeat(32)}-published`;
    const put = await rawUpload(
      `${c.url}/api/cache/nar/${path.slice(11)}`,
      {
        'content-type': 'application/octet-stream',
        'x-nix-nar-hash': formatSha256(createHash('sha256').update(nar).digest()),
        'x-nix-nar-size': nar.length,
      },
      nar,
    );
    expect(put.status).toBe(201);
    await c.stop();
    c = undefined;
    const [published] = await readdir(narDir);
    expect(published).toMatch(/^[0-9a-z]{52}\.nar(\.br)?$/);

    // Stored by uploads whose narinfo never came: one past the grace period, one within it; and a
    // file the cache did not write.
    const oldOrphan = `${'2'.repeat(52)}.nar`;
    const youngOrphan = `${'3'.repeat(52)}.nar.br`;
    const foreign = 'notes.txt';
    for (const f of [oldOrphan, youngOrphan, foreign]) await writeFile(join(narDir, f), 'bytes');
    const past = (Date.now() - ORPHAN_NAR_GRACE_MS - 3_600_000) / 1000;
    for (const f of [published!, oldOrphan, foreign]) await utimes(join(narDir, f), past, past);

    c = await start();
    await eventually(async () => !(await readdir(narDir)).includes(oldOrphan), 20_000);
    expect((await readdir(narDir)).sort()).toEqual([published!, youngOrphan, foreign].sort());
    // The published path is served whole.
    const info = await c.api('GET', `/cache/${path.slice(11, 43)}.narinfo`);
    expect(info.status).toBe(200);
    expect(info.body).toContain(`URL: nar/${published}`);
    expect((await fetch(`${c.url}/cache/nar/${published}`)).status).toBe(200);
  });
});
