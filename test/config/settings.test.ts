/**
 * Configuration: every setting is read and checked before a daemon starts (bad values refused with a
 * line naming the variable), secrets come from files, and the seed's settings work end to end through
 * the real CLI: `mxc serve` picks its role from MXC_MODE, the coordinator opens PostgreSQL from
 * DATABASE_HOST/… with DATABASE_PASSWORD_FILE, agents join with a token file and detect their
 * resources with MXC_AGENT_CPU=0, MXC_UI_ENABLED=false turns the dashboard off, and
 * MXC_SCHEDULER_STRATEGY=pack places a job on the fullest node that fits.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { databaseUrl, readSettings, SettingsError } from '../../lib/settings.js';
import { repoPath } from '../../scheduler/paths.js';
import { SETTINGS } from '../../spec/settings.js';
import { type DaemonProcess, listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb, PG_ADMIN_URL, urlFor } from '../helpers/db.js';
import { eventually } from '../helpers/protocol-agent.js';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mxc-settings-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const problems = (env: Record<string, string>, roles: ('coordinator' | 'agent' | 'client')[]) => {
  try {
    readSettings({ roles, env });
    return [];
  } catch (err) {
    if (err instanceof SettingsError) return err.problems;
    throw err;
  }
};

describe('readSettings', () => {
  it.each([
    [{ MXC_HEARTBEAT_TTL: 'abc' }, /^MXC_HEARTBEAT_TTL="abc": must be a number of seconds > 0$/],
    [{ MXC_HEARTBEAT_TTL: '0' }, /^MXC_HEARTBEAT_TTL="0"/],
    [{ PORT: '70000' }, /^PORT="70000": must be a TCP port/],
    [{ PORT: '80x' }, /^PORT="80x"/],
    [{ POOL_SIZE: '0' }, /^POOL_SIZE="0"/],
    [{ DATABASE_PORT: 'five' }, /^DATABASE_PORT="five"/],
    [{ DATABASE_URL: 'mysql://x/y' }, /^DATABASE_URL="mysql:\/\/x\/y": must be a postgres:\/\//],
    [{ MXC_UI_ENABLED: 'maybe' }, /^MXC_UI_ENABLED="maybe": must be true or false$/],
    [{ MXC_SCHEDULER_STRATEGY: 'binpack' }, /must be one of spread, pack$/],
    [{ MXC_MODE: 'leader' }, /^MXC_MODE="leader": must be one of standalone, coordinator, agent$/],
    [{ MXC_LOG_LEVEL: 'loud' }, /^MXC_LOG_LEVEL="loud"/],
  ])('refuses %o for the coordinator', (env, message) => {
    const p = problems(env, ['coordinator']);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(message);
  });

  it.each([
    [
      { MXC_AGENT_CPU: 'lots' },
      /^MXC_AGENT_CPU="lots": must be a number of cores from 0 \(detect\) to 65536$/,
    ],
    [{ MXC_AGENT_CPU: '1e308' }, /^MXC_AGENT_CPU="1e308"/],
    [{ MXC_AGENT_CPU: '70000' }, /^MXC_AGENT_CPU="70000": must be a number of cores from 0/],
    [
      { MXC_AGENT_DISK: '2147483648' },
      /^MXC_AGENT_DISK="2147483648": must be a whole number of MiB from 0 \(detect\) to 2147483647$/,
    ],
    [{ MXC_AGENT_MEMORY: '1.5' }, /^MXC_AGENT_MEMORY="1.5"/],
    [{ MXC_COORDINATOR: 'ftp://x' }, /^MXC_COORDINATOR="ftp:\/\/x": must be an http/],
    [{ MXC_HYPERVISOR: 'firecracker' }, /"firecracker" is not supported: mxc runs microVMs with QEMU/],
    [{ MXC_HYPERVISOR: 'cloud-hypervisor' }, /"cloud-hypervisor" is not supported/],
    [{ MXC_HYPERVISOR: 'xen' }, /^MXC_HYPERVISOR="xen": must be one of qemu, none$/],
    [{ MXC_AGENT_NAME: '../etc' }, /^MXC_AGENT_NAME="..\/etc"/],
    [{ MXC_CACHE_PUBLIC_KEY: 'nokey' }, /^MXC_CACHE_PUBLIC_KEY="nokey"/],
  ])('refuses %o for the agent', (env, message) => {
    const p = problems(env, ['agent']);
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(message);
  });

  it('reports every problem at once, and only those of the roles asked', () => {
    const env = { MXC_HEARTBEAT_TTL: 'x', PORT: 'y', MXC_AGENT_CPU: 'z' };
    expect(problems(env, ['coordinator'])).toHaveLength(2);
    expect(problems(env, ['agent'])).toHaveLength(1);
    // A client command does not care about a daemon's PORT in the same shell.
    expect(problems(env, ['client'])).toEqual([]);
  });

  it('gives defaults, and 0 for agent resources means detect', () => {
    const s = readSettings({ roles: ['coordinator', 'agent'], env: {} });
    expect(s.PORT).toBe(4000);
    expect(s.MXC_HEARTBEAT_TTL).toBe(30);
    expect(s.MXC_SCHEDULER_STRATEGY).toBe('spread');
    expect(s.MXC_UI_ENABLED).toBe(true);
    expect(s.MXC_MODE).toBe('standalone');
    expect(s.MXC_AGENT_CPU).toBe(0);
    expect(s.MXC_COORDINATOR).toEqual(['http://127.0.0.1:4000']);
    expect(databaseUrl(s)).toBeUndefined();
  });

  it('reads secrets from *_FILE, refuses both, names unreadable and empty files, never echoes a secret', async () => {
    const f = join(dir, 'api-token');
    await writeFile(f, 's3cret-value\n');
    expect(readSettings({ roles: ['client'], env: { MXC_API_TOKEN_FILE: f } }).MXC_API_TOKEN).toBe(
      's3cret-value',
    );
    const both = problems({ MXC_API_TOKEN: 'env-s3cret', MXC_API_TOKEN_FILE: f }, ['client']);
    expect(both[0]).toMatch(/MXC_API_TOKEN and MXC_API_TOKEN_FILE are both set/);
    // Neither value appears in what is said about them.
    expect(both.join('\n')).not.toMatch(/env-s3cret|s3cret-value/);
    expect(problems({ MXC_AGENT_TOKEN_FILE: join(dir, 'none') }, ['agent'])[0]).toMatch(
      /^MXC_AGENT_TOKEN_FILE=.*none: cannot read it \(ENOENT\)$/,
    );
    const empty = join(dir, 'empty');
    await writeFile(empty, '');
    expect(problems({ DATABASE_PASSWORD_FILE: empty }, ['coordinator'])[0]).toMatch(/the file is empty/);
    // A flag names its file too (--token-file), and wins over the environment.
    const s = readSettings({
      roles: ['agent'],
      env: { MXC_AGENT_TOKEN_FILE: join(dir, 'none') },
      flags: { MXC_AGENT_TOKEN_FILE: { value: f, flag: '--token-file' } },
    });
    expect(s.MXC_AGENT_TOKEN).toBe('s3cret-value');
    for (const p of problems({ MXC_API_TOKEN: ' ' }, ['client'])) expect(p).not.toContain('"');
    // commander fills --token from MXC_API_TOKEN: beside a token file (environment or flag) still refused.
    const filled = { MXC_API_TOKEN: { value: 'env-s3cret', flag: '--token' } };
    for (const [env, flags, label] of [
      [{ MXC_API_TOKEN: 'env-s3cret', MXC_API_TOKEN_FILE: f }, filled, 'MXC_API_TOKEN_FILE'],
      [
        { MXC_API_TOKEN: 'env-s3cret' },
        { ...filled, MXC_API_TOKEN_FILE: { value: f, flag: '--token-file' } },
        '--token-file',
      ],
    ] as const) {
      const refused = (() => {
        try {
          readSettings({ roles: ['client'], env, flags });
          return '';
        } catch (err) {
          return (err as Error).message;
        }
      })();
      expect(refused).toContain(`MXC_API_TOKEN and ${label} are both set`);
    }
  });

  it('never echoes the password of a refused URL', () => {
    const refused = [
      ...problems({ MXC_CACHE_S3_URL: 's3://keyid:hunter2@bucket/p' }, ['coordinator']),
      ...problems({ MXC_CACHE_S3_URL: 's3://bucket/p?endpoint=http://keyid:hunter2@h:9000' }, [
        'coordinator',
      ]),
      ...problems(
        { MXC_CACHE_S3_URL: 's3://bucket/p?endpoint=http%3A%2F%2Fkeyid%3Ahunter2%40h%3A9000&x=1' },
        ['coordinator'],
      ),
      ...problems({ DATABASE_URL: 'mysql://mxc:hunter2@db/mxc' }, ['coordinator']),
    ];
    expect(refused.length).toBeGreaterThanOrEqual(4);
    for (const p of refused) {
      expect(p).not.toMatch(/hunter2/);
      expect(p).toMatch(/\*\*\*/);
    }
  });

  it('builds the PostgreSQL URL from DATABASE_HOST/PORT/USER/NAME and the password file', async () => {
    const pw = join(dir, 'db-pw');
    await writeFile(pw, 'p@ss/word\n');
    const env = {
      DATABASE_HOST: 'db.example',
      DATABASE_PORT: '6543',
      DATABASE_USER: 'mxc',
      DATABASE_NAME: 'orchestra',
      DATABASE_PASSWORD_FILE: pw,
    };
    const url = databaseUrl(readSettings({ roles: ['coordinator'], env }))!;
    expect(url).toBe('postgres://mxc:p%40ss%2Fword@db.example:6543/orchestra');
    const socket = databaseUrl(
      readSettings({ roles: ['coordinator'], env: { DATABASE_HOST: '/run/postgresql' } }),
    );
    expect(socket).toBe('postgres://mxc@/mxc?host=%2Frun%2Fpostgresql&port=5432');
    // The seed's Ecto URL, and a password added to a URL without one.
    const ecto = databaseUrl(
      readSettings({
        roles: ['coordinator'],
        env: { DATABASE_URL: 'ecto://u@h/d', DATABASE_PASSWORD_FILE: pw },
      }),
    );
    expect(ecto).toBe('postgres://u:p%40ss%2Fword@h/d');
  });

  it('reads no variable of its own that the README does not name (a hidden knob is a setting nobody checks)', async () => {
    // Others' variables, read as their owners define them, and one that only bin/mxc.js's shebang sets.
    const others = new Set([
      'PATH',
      'HOME',
      'XDG_CACHE_HOME',
      'AWS_REGION',
      'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED',
      'MXC_NODE_EXTRA_CA_CERTS',
    ]);
    const readme = await readFile(repoPath('README.md'), 'utf8');
    const files = (
      await Promise.all(
        ['agent', 'cli', 'lib', 'scheduler', 'compiler', 'spec', 'bin'].map((d) =>
          readdir(repoPath(d), { recursive: true }),
        ),
      )
    ).flatMap((names, i) =>
      names
        .filter((n) => /\.(ts|js)$/.test(n))
        .map((n) => repoPath(['agent', 'cli', 'lib', 'scheduler', 'compiler', 'spec', 'bin'][i]!, n)),
    );
    const undocumented = new Set<string>();
    for (const f of files) {
      const text = await readFile(f, 'utf8');
      for (const m of text.matchAll(/(?:process\.env|\benv)(?:\.|\[['"])([A-Z][A-Z0-9_]+)/g)) {
        const name = m[1]!;
        if (!others.has(name) && !readme.includes(`\`${name}\``)) undocumented.add(name);
      }
    }
    expect([...undocumented]).toEqual([]);
  });

  it('documents every setting in the README configuration table with its default', async () => {
    const readme = await readFile(repoPath('README.md'), 'utf8');
    for (const s of SETTINGS) {
      expect(readme, s.env).toContain(`| \`${s.env}\``);
      if ('secret' in s && s.secret) expect(readme, `${s.env}_FILE`).toContain(`${s.env}_FILE`);
    }
  });
});

describe('through the real CLI', () => {
  const mxc = (args: string[], env: Record<string, string>) =>
    execa(process.execPath, [MXC_BIN, ...args], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      extendEnv: false,
      reject: false,
      cwd: repoPath(),
      timeout: 30_000,
    });

  it.each([
    [
      ['coordinator'],
      { MXC_HEARTBEAT_TTL: 'abc' },
      /MXC_HEARTBEAT_TTL="abc": must be a number of seconds > 0/,
    ],
    [['serve'], { MXC_MODE: 'leader' }, /MXC_MODE="leader"/],
    [
      ['serve'],
      { MXC_MODE: 'coordinator', MXC_SCHEDULER_STRATEGY: 'random' },
      /MXC_SCHEDULER_STRATEGY="random"/,
    ],
    [['agent'], { MXC_HYPERVISOR: 'firecracker' }, /"firecracker" is not supported/],
    [['agent'], { MXC_DNS_SERVER: 'notanip' }, /MXC_DNS_SERVER="notanip": must be an IP address/],
    [
      ['agent'],
      { MXC_DNS_SERVER: '10.0.0.2:70000' },
      /MXC_DNS_SERVER="10.0.0.2:70000": must be an IP address/,
    ],
    [['agent', '--token-file', '/nonexistent/join'], {}, /--token-file=\/nonexistent\/join: cannot read it/],
    [['up', '--no-demo'], { PORT: 'http' }, /PORT="http"/],
    [['jobs', 'list'], { MXC_API_TOKEN_FILE: '/nonexistent/api' }, /MXC_API_TOKEN_FILE=\/nonexistent\/api/],
    [
      ['nodes', 'list'],
      { MXC_REQUEST_TIMEOUT: '3000000' },
      /MXC_REQUEST_TIMEOUT="3000000": must be at most 86400/,
    ],
  ])('mxc %j with %o exits 2 before starting anything', async (args, env, message) => {
    const r = await mxc(args, { MXC_DATA_DIR: join(dir, 'never'), ...env });
    expect(r.stderr).toMatch(/^mxc: bad configuration/);
    expect(r.stderr).toMatch(message);
    expect(r.exitCode).toBe(2);
  });

  it('an open API on a non-loopback address is refused with its code, exit 2, before the database is made', async () => {
    const dataDir = join(dir, 'open-api');
    const r = await mxc(['coordinator', '--port', '0'], {
      MXC_DATA_DIR: dataDir,
      MXC_LISTEN_ADDRESS: '0.0.0.0',
    });
    expect(r.stderr).toMatch(
      /^mxc: refusing to listen on 0\.0\.0\.0 with an open API .*\[OPEN_API_NOT_LOOPBACK\]$/m,
    );
    expect(r.exitCode).toBe(2);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('an open API refused on PostgreSQL leaves its database as it was (not migrated)', async () => {
    const name = `mxc_test_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name} TEMPLATE template0`);
      const r = await mxc(['coordinator', '--port', '0', '--host', '0.0.0.0'], {
        MXC_DATA_DIR: join(dir, 'open-api-pg'),
        DATABASE_URL: urlFor(name),
      });
      expect(r.stderr).toMatch(/\[OPEN_API_NOT_LOOPBACK\]$/m);
      expect(r.exitCode).toBe(2);
      const db = new pg.Client({ connectionString: urlFor(name) });
      await db.connect();
      const tables = await db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
      await db.end();
      expect(tables.rows).toEqual([]);
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('an open API is said at start, as a warning naming how to close it; a token silences it', async () => {
    const warning = (l: Record<string, unknown>) => l.level === 40 && /^open API/.test(String(l.msg));
    const open = startDaemon(MXC_BIN, ['coordinator', '--port', '0'], {
      MXC_DATA_DIR: join(dir, 'open-warn'),
    });
    try {
      await open.waitFor((l) => l.msg === 'coordinator listening', 'listening', 90_000);
      const line = open.lines.find(warning);
      expect(line?.msg).toMatch(/every process on this machine.*run as root; `mxc tokens create` closes it/);
    } finally {
      await open.stop();
    }
    const closed = startDaemon(MXC_BIN, ['coordinator', '--port', '0'], {
      MXC_DATA_DIR: join(dir, 'open-warn'), // the same database, now closed by a token
      MXC_API_TOKEN: 'a-token-that-closes-the-api',
    });
    try {
      await closed.waitFor((l) => l.msg === 'coordinator listening', 'listening', 90_000);
      expect(closed.lines.filter(warning)).toEqual([]);
    } finally {
      await closed.stop();
    }
  }, 200_000);

  it('an address this machine does not have is said plainly (exit 2), not as an internal error', async () => {
    // 192.0.2.1 is TEST-NET-1: documentation only, never a local address.
    const r = await mxc(['coordinator', '--port', '0', '--host', '192.0.2.1'], {
      MXC_DATA_DIR: join(dir, 'no-such-address'),
      MXC_API_TOKEN: 'a-token-for-a-non-loopback-address',
    });
    expect(r.stderr).toMatch(
      /^mxc: cannot listen on that address: this machine has no such address .*192\.0\.2\.1/m,
    );
    expect(r.stderr).not.toMatch(/internal error|This is a bug/);
    expect(r.exitCode).toBe(2);
    // Said before a database is made (and migrated, seconds on PGlite) in the data dir.
    expect(existsSync(join(dir, 'no-such-address', 'db'))).toBe(false);
  });

  it('a port in use is said before a database is made in the data dir', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as AddressInfo).port;
      const r = await mxc(['coordinator', '--port', String(port)], { MXC_DATA_DIR: join(dir, 'port-taken') });
      expect(r.stderr).toMatch(new RegExp(`^mxc: port ${port} is in use: is another mxc running\\?`, 'm'));
      expect(r.exitCode).toBe(1);
      expect(existsSync(join(dir, 'port-taken', 'db'))).toBe(false);
    } finally {
      taken.close();
    }
  });

  it('a PostgreSQL that cannot be reached is named without its password: DATABASE_UNREACHABLE, exit 1', async () => {
    // A port nothing listens on: taken from the kernel, then let go.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const r = await mxc(['coordinator', '--port', '0'], {
      MXC_DATA_DIR: join(dir, 'no-db'),
      DATABASE_URL: `postgres://mxc:hunter2-secret@127.0.0.1:${port}/mxc`,
    });
    expect(r.stderr).toMatch(
      new RegExp(
        `^mxc: the database at postgres://mxc@127\\.0\\.0\\.1:${port}/mxc is unreachable: .*ECONNREFUSED.*\\[DATABASE_UNREACHABLE\\]$`,
        'm',
      ),
    );
    expect(r.exitCode).toBe(1);
    expect(r.stderr + r.stdout).not.toContain('hunter2');
    expect(r.stderr).not.toMatch(/internal error|This is a bug/);
    // pg also reads the password from the query: left out there too.
    const query = await mxc(['coordinator', '--port', '0'], {
      MXC_DATA_DIR: join(dir, 'no-db-query'),
      DATABASE_URL: `postgres://127.0.0.1:${port}/mxc?user=bob&password=S3cr3tQ&sslpassword=K3yPass`,
    });
    expect(query.stderr).toMatch(/\[DATABASE_UNREACHABLE\]$/m);
    expect(query.stderr).toContain('password=***');
    expect(query.stderr + query.stdout).not.toMatch(/S3cr3tQ|K3yPass/);
  });

  describe('mxc serve with the seed’s settings on PostgreSQL', () => {
    let db: { url: string; name: string };
    const daemons: DaemonProcess[] = [];
    let url = '';
    let files: Record<string, string> = {};

    beforeAll(async () => {
      db = await createPostgresDb();
      files = {
        api: join(dir, 'api.token'),
        agent: join(dir, 'agent.token'),
        dbpw: join(dir, 'db.password'),
      };
      await writeFile(files.api!, 'client-secret-1\n');
      await writeFile(files.agent!, 'join-secret-2\n');
      await writeFile(files.dbpw!, 'unused-under-trust\n');
      for (const f of Object.values(files)) await chmod(f, 0o400);
      const c = startDaemon(process.execPath, [MXC_BIN, 'serve'], {
        MXC_MODE: 'coordinator',
        PORT: '0',
        MXC_DATA_DIR: join(dir, 'coordinator'),
        DATABASE_HOST: '127.0.0.1',
        DATABASE_PORT: '5432',
        DATABASE_USER: 'postgres',
        DATABASE_NAME: db.name,
        DATABASE_PASSWORD_FILE: files.dbpw!,
        POOL_SIZE: '4',
        MXC_API_TOKEN_FILE: files.api!,
        MXC_AGENT_TOKEN_FILE: files.agent!,
        MXC_UI_ENABLED: 'false',
        MXC_SCHEDULER_STRATEGY: 'pack',
        MXC_HEARTBEAT_TTL: '10',
      });
      daemons.push(c);
      url = await listeningUrl(c);
      // Two agents: `big` offers more than `small`; pack fills the one with the least room that fits.
      const agent = (name: string, extra: Record<string, string>, args: string[] = []) =>
        startDaemon(process.execPath, [MXC_BIN, ...(args.length ? args : ['serve'])], {
          MXC_COORDINATOR: url,
          MXC_AGENT_NAME: name,
          MXC_AGENT_STATE_DIR: join(dir, name, 'state'),
          MXC_AGENT_STORE_ROOT: join(dir, name, 'store'),
          MXC_HYPERVISOR: 'none',
          ...extra,
        });
      daemons.push(
        agent('big', {
          MXC_MODE: 'agent',
          MXC_AGENT_TOKEN_FILE: files.agent!,
          MXC_AGENT_CPU: '0',
          MXC_AGENT_MEMORY: '0',
        }),
        agent('small', { MXC_AGENT_MEMORY: '256' }, ['agent', '--token-file', files.agent!, '--cpu', '1']),
      );
      await Promise.all(
        daemons.slice(1).map((d) => d.waitFor((l) => l.msg === 'joined coordinator', 'join')),
      );
    }, 120_000);

    afterAll(async () => {
      for (const d of daemons.reverse()) await d.stop();
      if (db) await dropPostgresDb(db.name);
    });

    const api = async (path: string, token?: string) => {
      const res = await fetch(`${url}${path}`, {
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });
      return { status: res.status, body: (await res.text()) as string };
    };

    it('runs the coordinator on that database with the token from its file, without the dashboard', async () => {
      expect((await api('/api/nodes')).status).toBe(401);
      const nodes = JSON.parse((await api('/api/nodes', 'client-secret-1')).body).data as {
        name: string;
        cpu: number;
        memory_mb: number;
      }[];
      const byName = Object.fromEntries(nodes.map((n) => [n.name, n]));
      // MXC_AGENT_CPU=0 / MXC_AGENT_MEMORY=0: detected, as the seed documents.
      expect(byName.big?.cpu).toBe(os.cpus().length);
      expect(byName.big?.memory_mb).toBe(Math.floor(os.totalmem() / 1048576));
      expect(byName.small).toMatchObject({ cpu: 1, memory_mb: 256 });
      expect((await api('/')).status).toBe(404);
      // The nodes are in the PostgreSQL database named by DATABASE_NAME.
      const { openPostgres } = await import('../../scheduler/store/db.js');
      const pg = await openPostgres(db.url, { max: 1 });
      const rows = await pg.query<{ name: string }>('SELECT name FROM nodes ORDER BY name');
      await pg.close();
      expect(rows.map((r) => r.name)).toEqual(['big', 'small']);
    });

    it('keeps the tokens out of every process’s argv', async () => {
      for (const d of daemons) {
        const argv = await readFile(`/proc/${d.proc.pid}/cmdline`, 'utf8');
        expect(argv).not.toContain('secret');
      }
    });

    it('places with MXC_SCHEDULER_STRATEGY=pack on the fullest node that fits, and the job runs', async () => {
      const [jobPath] = await nixBuild([repoPath('examples', 'hello_world')]);
      const submit = await execa(
        process.execPath,
        [MXC_BIN, 'submit', '--wait', '--timeout', '60', '--token-file', files.api!],
        {
          env: { MXC_COORDINATOR: url },
          input: jobPath,
          reject: false,
          cwd: repoPath(),
        },
      );
      expect(submit.stderr + submit.stdout).toMatch(/running\s+on small/);
      expect(submit.exitCode).toBe(0);
      await eventually(
        async () => {
          const r = await execa(process.execPath, [MXC_BIN, 'workloads', 'list', '--json'], {
            env: { MXC_COORDINATOR: url, MXC_API_TOKEN_FILE: files.api! },
            reject: false,
          });
          return r.stdout.includes('"running"') ? r.stdout : null;
        },
        15_000,
        'a running workload',
      );
    }, 90_000);
  });
});
