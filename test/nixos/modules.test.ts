/**
 * The NixOS modules (nix/modules) evaluated with nixpkgs' real module system, then run: the test
 * renders what systemd would start for each unit (ExecStart, Environment, the credentials directory
 * filled from LoadCredential, %d and %S resolved) and runs exactly that against the real mxc and
 * PostgreSQL: the postgres module's set-up creates the role's password and grants, the coordinator
 * serves on that role's database with its token files, an agent joins with its token file, and a job
 * runs. What is not emulated: the `mxc` user (the processes run as the test's user), the sandboxing
 * directives (checked as values), and the package build (a stand-in runs this checkout's bin/mxc.js).
 *
 * Needs MXC_NIXPKGS_LIB = a checkout of github:nix-community/nixpkgs.lib (or nixpkgs); without it the
 * module tests are SKIPPED (the set-up has no network to fetch it) and only the parse check runs.
 */
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../lib/exec.js';
import { nixBuild } from '../../lib/nix.js';
import { readSettings } from '../../lib/settings.js';
import { repoPath } from '../../scheduler/paths.js';
import { SETTINGS } from '../../spec/settings.js';
import {
  type DaemonProcess,
  listeningUrl,
  MXC_BIN,
  splitExecStart,
  startDaemon,
} from '../helpers/daemon-process.js';
import { PG_ADMIN_URL } from '../helpers/db.js';

const LIB = process.env.MXC_NIXPKGS_LIB;
const MODULES = ['coordinator', 'agent', 'postgres', 'common'].map((m) =>
  repoPath('nix', 'modules', `${m}.nix`),
);

interface Unit {
  environment: Record<string, string>;
  serviceConfig: Record<string, unknown>;
  after: string[];
  requires: string[];
  wantedBy: string[];
  postStart: string;
}
interface Rendered {
  services: Record<string, Unit>;
  users: Record<string, Record<string, unknown>>;
  groups: string[];
  firewall: number[];
  postgresql: {
    enable: boolean;
    enableTCPIP: boolean;
    ensureDatabases: string[];
    ensureUsers: { name: string }[];
    authentication: string;
  };
}

describe('NixOS modules', () => {
  it('parse', async () => {
    for (const m of MODULES) await run('nix-instantiate', ['--parse', m]);
  });

  it('set every setting their daemon reads from an option or a fixed value, not extraEnvironment alone', async () => {
    // MXC_MODE picks what `mxc serve` runs; the units run `mxc coordinator` and `mxc agent` themselves.
    const notApplicable = new Set(['MXC_MODE']);
    const missing: string[] = [];
    for (const role of ['coordinator', 'agent'] as const) {
      const text = await readFile(repoPath('nix', 'modules', `${role}.nix`), 'utf8');
      for (const s of SETTINGS) {
        if (!(s.roles as readonly string[]).includes(role) || notApplicable.has(s.env)) continue;
        // Assigned in the unit's environment (`NAME = …`, `NAME_FILE = …`) or through setIf "NAME".
        if (!new RegExp(`\\b${s.env}(_FILE)? = |"${s.env}"`).test(text)) missing.push(`${role}: ${s.env}`);
      }
    }
    expect(missing).toEqual([]);
  });
});

if (!LIB) {
  describe('NixOS modules under lib.evalModules', () => {
    it.skip('SKIPPED: set MXC_NIXPKGS_LIB to a checkout of github:nix-community/nixpkgs.lib to run them', () => {});
  });
}

describe.skipIf(!LIB)('NixOS modules under lib.evalModules (MXC_NIXPKGS_LIB)', () => {
  let dir = '';
  const tag = randomBytes(4).toString('hex');
  const role = `mxc_nixos_${tag}`;
  const dbName = `mxc_nixos_${tag}`;
  const daemons: DaemonProcess[] = [];
  let pkg = '';
  let secrets: Record<'api' | 'agent' | 'dbpw', string>;

  const admin = async <T>(fn: (c: pg.Client) => Promise<T>, database?: string) => {
    const u = new URL(PG_ADMIN_URL);
    if (database) u.pathname = `/${database}`;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };

  /** Evaluates the modules with `configuration` (Nix module text) and returns what NixOS would get. */
  const evaluate = async (configuration: string): Promise<Rendered> => {
    const file = join(dir, `configuration-${randomBytes(3).toString('hex')}.nix`);
    await writeFile(file, configuration);
    const { stdout } = await run('nix-instantiate', [
      '--eval',
      '--strict',
      '--json',
      repoPath('test', 'nixos', 'eval.nix'),
      '--argstr',
      'nixpkgsLib',
      LIB!,
      '--arg',
      'configuration',
      file,
    ]);
    return JSON.parse(stdout) as Rendered;
  };

  /**
   * What systemd does before ExecStart: a credentials directory holding a copy of each LoadCredential
   * file (0400), the state directory, %d and %S resolved in Environment, WorkingDirectory and ExecStart.
   */
  const prepare = async (
    name: string,
    unit: Unit,
  ): Promise<{ env: Record<string, string>; argv: string[]; cwd: string; creds: string }> => {
    const creds = join(dir, 'credentials', name);
    await mkdir(creds, { recursive: true });
    for (const spec of (unit.serviceConfig.LoadCredential as string[]) ?? []) {
      const [id, source] = [spec.slice(0, spec.indexOf(':')), spec.slice(spec.indexOf(':') + 1)];
      await copyFile(source, join(creds, id));
      await chmod(join(creds, id), 0o400);
    }
    const stateRoot = join(dir, 'var-lib');
    if (unit.serviceConfig.StateDirectory)
      await mkdir(join(stateRoot, unit.serviceConfig.StateDirectory as string), { recursive: true });
    const expand = (s: string) => s.replaceAll('%d', creds).replaceAll('%S', stateRoot);
    const env = Object.fromEntries(Object.entries(unit.environment).map(([k, v]) => [k, expand(v)]));
    const argv = unit.serviceConfig.ExecStart
      ? splitExecStart(expand(unit.serviceConfig.ExecStart as string))
      : [];
    const cwd = expand((unit.serviceConfig.WorkingDirectory as string) ?? '/');
    return { env: { ...env, CREDENTIALS_DIRECTORY: creds }, argv, cwd, creds };
  };

  const nixString = (s: string) => JSON.stringify(s);
  const fakePackage = () => `{ type = "derivation"; name = "mxc"; outPath = ${nixString(pkg)}; }`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mxc-nixos-'));
    // Stand-in for the package: bin/mxc runs this checkout's CLI, as the package's wrapper runs its own.
    pkg = join(dir, 'mxc-pkg');
    await mkdir(join(pkg, 'bin'), { recursive: true });
    await writeFile(join(pkg, 'bin', 'mxc'), `#!/bin/sh\nexec ${process.execPath} ${MXC_BIN} "$@"\n`, {
      mode: 0o755,
    });
    secrets = {
      api: join(dir, 'api-token'),
      agent: join(dir, 'agent-token'),
      dbpw: join(dir, 'db-password'),
    };
    await writeFile(secrets.api, `api-${randomBytes(12).toString('hex')}\n`);
    await writeFile(secrets.agent, `join-${randomBytes(12).toString('hex')}\n`);
    await writeFile(secrets.dbpw, `pw'"${randomBytes(6).toString('hex')}\n`);
  });

  afterAll(async () => {
    for (const d of daemons.reverse()) await d.stop();
    await admin(async (c) => {
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.query(`DROP ROLE IF EXISTS ${role}`);
    }).catch(() => {});
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses a hypervisor mxc does not run, at evaluation', async () => {
    await expect(
      evaluate(
        `{ ... }: { services.mxc.agent = { enable = true; package = ${fakePackage()}; hypervisor = "firecracker"; }; }`,
      ),
    ).rejects.toThrow(/option `services\.mxc\.agent\.hypervisor' is not of type `value "qemu"/);
  });

  it('refuses an API open to the network unless a token file is given or insecure is set', async () => {
    await expect(
      evaluate(`{ ... }: { services.mxc.coordinator = { enable = true; package = ${fakePackage()}; }; }`),
    ).rejects.toThrow(/would open the API to the network/);
    const r = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; insecure = true; }; }`);
    expect(r.services['mxc-coordinator']!.environment).toMatchObject({ MXC_INSECURE: '1' });
    const local = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1"; }; }`);
    expect(local.services['mxc-coordinator']!.environment.MXC_INSECURE).toBeUndefined();
  });

  it('points the cache at a bucket and hands its credentials and the signing key over as credentials', async () => {
    const r = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1";
      cacheS3 = { url = "s3://mxc-cache/prod?region=eu-1"; accessKeyIdFile = "/run/secrets/id"; secretAccessKeyFile = "/run/secrets/key"; };
      cacheKeyFile = "/run/secrets/cache.key";
    }; }`);
    const unit = r.services['mxc-coordinator']!;
    expect(unit.environment).toMatchObject({
      MXC_CACHE_S3_URL: 's3://mxc-cache/prod?region=eu-1',
      AWS_ACCESS_KEY_ID_FILE: '%d/s3-access-key-id',
      AWS_SECRET_ACCESS_KEY_FILE: '%d/s3-secret-access-key',
      MXC_CACHE_KEY_FILE: '%d/cache-key',
    });
    expect(unit.serviceConfig.LoadCredential).toEqual([
      'cache-key:/run/secrets/cache.key',
      's3-access-key-id:/run/secrets/id',
      's3-secret-access-key:/run/secrets/key',
    ]);
  });

  it('sets the tuning, retention, DNS and log settings from options, in words mxc accepts', async () => {
    const token = join(dir, 's3-session-token');
    await writeFile(token, 'session\n');
    const c = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1";
      flappingTaskThreshold = 120; initialFlappingTaskDelay = 5; maxFlappingTaskDelay = 600;
      retention = { hours = 24; perJob = 20; }; logLinesKept = 5000; leaderLease = 7.5; preemptionDelay = "off";
      advertiseUrl = "https://c1.example.org:4000"; maxConnectionsPerAddress = 200;
      cacheS3 = { url = "s3://mxc-cache/prod?region=eu-1"; sessionTokenFile = ${nixString(token)}; };
    }; }`);
    const coordinator = c.services['mxc-coordinator']!;
    expect(coordinator.environment).toMatchObject({
      MXC_FLAPPING_TASK_THRESHOLD: '120',
      MXC_RETENTION_HOURS: '24',
      MXC_LOG_LINES_KEPT: '5000',
      MXC_MAX_CONNECTIONS_PER_ADDRESS: '200',
      AWS_SESSION_TOKEN_FILE: '%d/s3-session-token',
    });
    expect(coordinator.serviceConfig.LoadCredential).toEqual([`s3-session-token:${token}`]);
    const cs = readSettings({ roles: ['coordinator'], env: (await prepare('tuning-c', coordinator)).env });
    expect(cs).toMatchObject({
      MXC_FLAPPING_TASK_THRESHOLD: 120,
      MXC_INITIAL_FLAPPING_TASK_DELAY: 5,
      MXC_MAX_FLAPPING_TASK_DELAY: 600,
      MXC_RETENTION_HOURS: 24,
      MXC_RETENTION_PER_JOB: 20,
      MXC_LOG_LINES_KEPT: 5000,
      MXC_LEADER_LEASE: 7.5,
      MXC_PREEMPTION_DELAY: null,
      MXC_ADVERTISE_URL: 'https://c1.example.org:4000',
      MXC_MAX_CONNECTIONS_PER_ADDRESS: 200,
      AWS_SESSION_TOKEN: 'session',
    });
    // Left unset, each stays out of the environment and mxc's own default applies.
    const plain = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1"; }; }`);
    expect(Object.keys(plain.services['mxc-coordinator']!.environment)).not.toContain('MXC_LOG_LINES_KEPT');
    await expect(
      evaluate(`{ ... }: { services.mxc.coordinator = {
        enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1"; logLinesKept = 10; }; }`),
    ).rejects.toThrow(/logLinesKept/);

    const a = await evaluate(`{ ... }: { services.mxc.agent = {
      enable = true; package = ${fakePackage()}; microvm.enable = false;
      storeRoot = "/var/lib/mxc-agent/store"; logRetentionDays = 2;
      dns = { query = "_mxc._tcp.example.org"; server = "10.0.0.2:53"; }; logLevel = "debug";
    }; }`);
    const agent = a.services['mxc-agent']!;
    const as = readSettings({ roles: ['agent'], env: (await prepare('tuning-a', agent)).env });
    expect(as).toMatchObject({
      MXC_AGENT_STORE_ROOT: '/var/lib/mxc-agent/store',
      MXC_AGENT_LOG_RETENTION: 2,
      MXC_DNS_QUERY: '_mxc._tcp.example.org',
      MXC_DNS_SERVER: '10.0.0.2:53',
      MXC_LOG_LEVEL: 'debug',
    });
  });

  it('hands TLS files over as credentials, and refuses a certificate without its key', async () => {
    const r = await evaluate(`{ ... }: { services.mxc.coordinator = {
      enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1";
      tls = { certFile = "/run/secrets/cert.pem"; keyFile = "/run/secrets/key.pem"; };
    }; }`);
    const unit = r.services['mxc-coordinator']!;
    expect(unit.environment).toMatchObject({ MXC_TLS_CERT: '%d/tls-cert', MXC_TLS_KEY: '%d/tls-key' });
    expect(unit.serviceConfig.LoadCredential).toEqual([
      'tls-cert:/run/secrets/cert.pem',
      'tls-key:/run/secrets/key.pem',
    ]);
    await expect(
      evaluate(`{ ... }: { services.mxc.coordinator = {
        enable = true; package = ${fakePackage()}; listenAddress = "127.0.0.1";
        tls.certFile = "/run/secrets/cert.pem"; }; }`),
    ).rejects.toThrow(/set certFile and keyFile together/);
  });

  it('deploys PostgreSQL, a coordinator and an agent; a job runs', async () => {
    const coordinatorConfig = (extra = '') => `{ ... }: {
      networking.hostName = "nixos-host";
      services.mxc.postgres = {
        enable = true;
        databases = [ ${nixString(dbName)} ];
        users.${role} = { passwordFile = ${nixString(secrets.dbpw)}; databases = [ ${nixString(dbName)} ]; };
        allowedNetworks = [ "10.0.0.0/24" ];
      };
      services.mxc.coordinator = {
        enable = true;
        package = ${fakePackage()};
        port = 0;
        listenAddress = "127.0.0.1";
        openFirewall = true;
        database = { host = "127.0.0.1"; name = ${nixString(dbName)}; user = ${nixString(role)}; passwordFile = ${nixString(secrets.dbpw)}; };
        apiTokenFile = ${nixString(secrets.api)};
        agentTokenFile = ${nixString(secrets.agent)};
        schedulerStrategy = "pack";
        heartbeatTtl = 20;
        cacheCompression = "br";
      };
      ${extra}
    }`;
    const first = await evaluate(coordinatorConfig());

    // What the modules declare: hardening, secrets only as credentials, the user, the firewall, PostgreSQL.
    const c = first.services['mxc-coordinator']!;
    expect(c.serviceConfig).toMatchObject({
      User: 'mxc',
      StateDirectory: 'mxc',
      ProtectSystem: 'strict',
      NoNewPrivileges: true,
      PrivateTmp: true,
      Restart: 'on-failure',
      LimitNOFILE: 65536,
    });
    expect(c.serviceConfig.LoadCredential).toEqual([
      `api-token:${secrets.api}`,
      `agent-token:${secrets.agent}`,
      `database-password:${secrets.dbpw}`,
    ]);
    const unitText = JSON.stringify(first);
    for (const f of Object.values(secrets))
      expect(unitText).not.toContain((await readFile(f, 'utf8')).trim());
    expect(c.after).toContain('postgresql.service');
    expect(first.users.mxc).toMatchObject({ isSystemUser: true, group: 'mxc' });
    expect(first.firewall).toEqual([0]);
    expect(first.postgresql).toMatchObject({ enable: true, enableTCPIP: true, ensureDatabases: [dbName] });
    expect(first.postgresql.authentication).toBe(`host ${dbName} ${role} 10.0.0.0/24 scram-sha-256\n`);

    // PostgreSQL: NixOS's ensureDatabases/ensureUsers, then the module's postStart with its credentials.
    await admin(async (a) => {
      await a.query(`CREATE DATABASE ${dbName}`);
      await a.query(`CREATE ROLE ${role}`);
    });
    const pgUnit = await prepare('postgresql', first.services.postgresql!);
    const u = new URL(PG_ADMIN_URL);
    await execa('bash', ['-euo', 'pipefail', '-c', first.services.postgresql!.postStart], {
      env: { ...pgUnit.env, PGHOST: u.hostname, PGPORT: u.port || '5432', PGUSER: u.username || 'postgres' },
    });
    const [roleRow] = await admin((a) =>
      a
        .query(
          `SELECT rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%' AS scram,
             has_database_privilege($1, $2, 'CREATE') AS db_create FROM pg_authid WHERE rolname = $1`,
          [role, dbName],
        )
        .then((r) => r.rows),
    );
    expect(roleRow).toEqual({ rolcanlogin: true, scram: true, db_create: true });

    // The coordinator, as systemd would start it, migrates and serves as that (non-superuser) role.
    const cu = await prepare('mxc-coordinator', c);
    expect(basename(cu.argv[0]!)).toBe('mxc');
    expect(cu.env.DATABASE_PASSWORD_FILE).toBe(join(cu.creds, 'database-password'));
    expect(cu.env.MXC_CACHE_COMPRESSION).toBe('br');
    const coordinator = startDaemon(cu.argv[0]!, cu.argv.slice(1), cu.env, { cwd: cu.cwd });
    daemons.push(coordinator);
    const url = await listeningUrl(coordinator);
    const apiToken = (await readFile(secrets.api, 'utf8')).trim();
    expect((await fetch(`${url}/api/nodes`)).status).toBe(401);
    expect(
      (await fetch(`${url}/api/nodes`, { headers: { authorization: `Bearer ${apiToken}` } })).status,
    ).toBe(200);
    const tables = await admin(
      (a) => a.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'nodes'`).then((r) => r.rows),
      dbName,
    );
    expect(tables).toEqual([{ tableowner: role }]);

    // The agent, configured with the coordinator's URL now known.
    const second = await evaluate(
      coordinatorConfig(`services.mxc.agent = {
        enable = true;
        package = ${fakePackage()};
        coordinators = [ ${nixString(url)} ];
        tokenFile = ${nixString(secrets.agent)};
        stateDir = ${nixString(join(dir, 'agent-state'))};
        attributes = { rack = "a1"; };
        microvm.enable = false;
        supervisorPool = 0;
        extraEnvironment.MXC_AGENT_STORE_ROOT = ${nixString(join(dir, 'agent-store'))};
      };`),
    );
    const au = await prepare('mxc-agent', second.services['mxc-agent']!);
    expect(second.services['mxc-agent']!.serviceConfig.ExecStart).toBe(
      `${pkg}/bin/mxc agent --attr 'rack=a1'`,
    );
    expect(au.env).toMatchObject({
      MXC_AGENT_NAME: 'nixos-host',
      MXC_AGENT_CPU: '0',
      MXC_HYPERVISOR: 'none',
      MXC_AGENT_SUPERVISOR_POOL: '0',
    });
    const agent = startDaemon(au.argv[0]!, au.argv.slice(1), au.env, { cwd: au.cwd });
    daemons.push(agent);
    await agent.waitFor((l) => l.msg === 'joined coordinator', 'the agent joining');
    const joinToken = (await readFile(secrets.agent, 'utf8')).trim();
    for (const d of [coordinator, agent]) {
      // The wrapper's exec keeps the pid: this is the node process itself.
      expect(await readFile(`/proc/${d.proc.pid}/cmdline`, 'utf8')).not.toContain(joinToken);
    }

    // A job runs on it.
    const [jobPath] = await nixBuild([repoPath('examples', 'hello_world')]);
    const submit = await execa(process.execPath, [MXC_BIN, 'submit', '--wait', '--timeout', '60'], {
      env: { MXC_COORDINATOR: url, MXC_API_TOKEN_FILE: secrets.api },
      input: jobPath,
      reject: false,
      cwd: repoPath(),
    });
    expect(submit.stdout).toMatch(/running\s+on nixos-host/);
    expect(submit.exitCode).toBe(0);
  }, 180_000);
});
