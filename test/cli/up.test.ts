/**
 * `mxc up` cannot lock itself out, with the real CLI: after `mxc tokens create alice` (which warns that
 * the API now needs a token) the next `mxc up` comes up, its agent joins with the credential kept 0600
 * in the data dir, and the banner prints the token a user needs. The dashboard's sign-in survives a new
 * tab (headless Chromium).
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/protocol-agent.js';
import { mxc, UpProcess, upDatabase } from './up-harness.js';

describe('mxc up after a token is created', () => {
  let dir: string;
  let db: Awaited<ReturnType<typeof upDatabase>>;
  let up: UpProcess | undefined;
  let browser: Browser | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-up-'));
    db = await upDatabase();
  });

  afterAll(async () => {
    await browser?.close();
    await up?.stop();
    await db?.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('comes up again, its agent joins, and it prints the token to use', async () => {
    const dataDir = join(dir, 'data');
    up = await UpProcess.start({ dataDir, databaseUrl: db.url });
    expect(up.stdout).not.toMatch(/needs a token/);
    // Its log, written to a pipe here, is one readable line per entry, not JSON.
    const logLines = up.stderr.trim().split('\n');
    expect(logLines.length).toBeGreaterThan(2);
    for (const l of logLines) expect(l).toMatch(/^\d\d:\d\d:\d\d (INFO |WARN |ERROR|DEBUG) \S/);
    expect(up.stderr).toMatch(/ INFO {2}coordinator listening {2}url=http:\/\/127\.0\.0\.1:\d+/);
    const open = { MXC_COORDINATOR: up.url, MXC_API_TOKEN: '' };

    const created = await mxc(['tokens', 'create', 'alice'], { env: open });
    expect(created.exitCode).toBe(0);
    const alice = created.stdout.trim();
    expect(alice).toMatch(/^mxc_c_/);
    expect(created.stderr).toMatch(/the API was open and now needs a token/);
    expect(created.stderr).toMatch(/export MXC_API_TOKEN=/);
    // Creating a second one with the token: no warning, the API was closed already.
    const second = await mxc(['tokens', 'create', 'bob'], { env: { ...open, MXC_API_TOKEN: alice } });
    expect(second.exitCode).toBe(0);
    expect(second.stderr).not.toMatch(/was open/);

    const refused = await mxc(['nodes', 'list'], { env: open });
    expect(refused.exitCode).toBe(3);

    expect(await up.stop()).toBe(0);
    // MXC_LOG_FORMAT=json: JSON lines for machines.
    up = await UpProcess.start({ dataDir, databaseUrl: db.url, env: { MXC_LOG_FORMAT: 'json' } });
    for (const l of up.stderr.trim().split('\n')) expect(JSON.parse(l)).toHaveProperty('msg');
    const file = join(dataDir, 'local-token');
    const local = (await readFile(file, 'utf8')).trim();
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(up.stdout).toMatch(/the API needs a token/);
    expect(up.stdout).toContain(local);
    expect(up.stdout).toContain(`export MXC_API_TOKEN=$(cat ${file})`);

    // Its own agent joined; alice's token and the printed one both work.
    for (const token of [alice, local]) {
      const env = { MXC_COORDINATOR: up.url, MXC_API_TOKEN: token };
      const nodes = await eventually(
        async () => {
          const r = await mxc(['nodes', 'list', '--json'], { env });
          const list = JSON.parse(r.stdout) as { name: string; status: string; connected: boolean }[];
          return list.find((n) => n.name === 'local' && n.connected && n.status === 'ready') ? list : null;
        },
        15_000,
        'the local node to be ready',
      );
      expect(nodes.map((n) => n.name)).toEqual(['local']);
    }
  }, 120_000);

  it('the dashboard stays signed in in a new tab', async () => {
    if (!up) throw new Error('mxc up did not start');
    const alice = (
      await mxc(['tokens', 'create', 'carol'], {
        env: {
          MXC_COORDINATOR: up.url,
          MXC_API_TOKEN: (await readFile(join(dir, 'data', 'local-token'), 'utf8')).trim(),
        },
      })
    ).stdout.trim();
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-quic'],
    });
    const context = await browser.newContext();
    const first = await context.newPage();
    await first.goto(`${up.url}/#/nodes`);
    await first.locator('#login-form').waitFor();
    await first.fill('#token', alice);
    await first.click('#login-form button');
    await first.locator('td >> text=local').waitFor();

    const second = await context.newPage();
    await second.goto(`${up.url}/#/nodes`);
    await second.locator('td >> text=local').waitFor({ timeout: 10_000 });
    expect(await second.isVisible('#login-form')).toBe(false);
    await context.close();
  }, 60_000);
});
