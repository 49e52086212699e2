/**
 * The long-running commands: `mxc coordinator`, `mxc agent` and `mxc up` (standalone: coordinator and one
 * agent in one process, state under ./.mxc, then builds and submits examples/hello_world).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Agent } from '../../agent/daemon.js';
import { BuildError, buildJob } from '../../compiler/build.js';
import { repoPath } from '../../scheduler/paths.js';
import { startCoordinator } from '../../scheduler/server.js';
import { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { createLogger } from '../logger.js';
import { color } from '../output.js';

interface CoordinatorOpts {
  port: string;
  host: string;
  dataDir: string;
}

const envTokens = () => ({
  api: process.env.MXC_API_TOKEN || undefined,
  agent: process.env.MXC_AGENT_TOKEN || undefined,
});

const ttl = () => (process.env.MXC_HEARTBEAT_TTL ? Number(process.env.MXC_HEARTBEAT_TTL) * 1000 : undefined);

function parsePort(p: string): number {
  const n = Number(p);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new CliError(`--port must be a TCP port number, got "${p}"`, 2);
  return n;
}

/**
 * A daemon logs an unexpected rejection instead of dying with every workload it supervises; the code
 * paths that can fail handle their errors, this is the last line.
 */
function keepRunningOnUnhandled(logger: { error: (o: object, msg: string) => void }) {
  process.on('unhandledRejection', (err) =>
    logger.error({ err }, 'unhandled rejection (a bug in mxc): kept running'),
  );
}

/** Resolves when SIGINT or SIGTERM arrives. */
const untilSignal = () =>
  new Promise<string>((r) => {
    process.once('SIGINT', () => r('SIGINT'));
    process.once('SIGTERM', () => r('SIGTERM'));
  });

async function listenOrExplain<T>(port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new CliError(
        `port ${port} is in use: is another mxc running? Stop it, or pick another with --port`,
      );
    }
    throw err;
  }
}

export async function coordinator(opts: CoordinatorOpts) {
  const logger = createLogger('mxc-coordinator');
  keepRunningOnUnhandled(logger);
  const port = parsePort(opts.port);
  const server = await listenOrExplain(port, () =>
    startCoordinator({
      port,
      host: opts.host,
      dataDir: resolve(opts.dataDir),
      databaseUrl: process.env.DATABASE_URL || undefined,
      tokens: envTokens(),
      heartbeatTtlMs: ttl(),
      logger,
    }),
  );
  await untilSignal();
  logger.info('shutting down');
  await server.close();
}

interface AgentOpts {
  coordinator?: string;
  token?: string;
  name?: string;
  cpu?: string;
  memory?: string;
  stateDir: string;
  storeRoot?: string;
  attr?: string[];
  cacheKey?: string;
  secretsDir?: string;
  gcMinFree?: string;
  logRetention?: string;
}

function positive(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw new CliError(`${flag} must be a non-negative number, got "${v}"`, 2);
  return n;
}

function parseAttributes(list: string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const eq = a.indexOf('=');
    if (eq <= 0) throw new CliError(`--attr takes key=value, got "${a}"`, 2);
    out[a.slice(0, eq)] = a.slice(eq + 1);
  }
  return out;
}

export async function agent(opts: AgentOpts) {
  const logger = createLogger('mxc-agent');
  keepRunningOnUnhandled(logger);
  const a = new Agent({
    coordinator: opts.coordinator ?? process.env.MXC_COORDINATOR ?? 'http://127.0.0.1:4000',
    token: opts.token ?? process.env.MXC_AGENT_TOKEN ?? undefined,
    name: opts.name ?? process.env.MXC_AGENT_NAME,
    cpu: positive(opts.cpu, '--cpu'),
    memoryMb: positive(opts.memory, '--memory'),
    cachePublicKey: opts.cacheKey,
    secretsDir: opts.secretsDir ? resolve(opts.secretsDir) : undefined,
    gcMinFreeMb: positive(opts.gcMinFree, '--gc-min-free'),
    logRetentionMs: opts.logRetention
      ? positive(opts.logRetention, '--log-retention')! * 86_400_000
      : undefined,
    stateDir: resolve(opts.stateDir),
    storeRoot: opts.storeRoot ? resolve(opts.storeRoot) : undefined,
    attributes: parseAttributes(opts.attr),
    logger,
    microvm: await loadMicroVm(resolve(opts.stateDir)),
  });
  await a.start();
  await untilSignal();
  logger.info('shutting down; stopping workloads');
  await a.close();
}

/** The microVM runner, when its module is present. */
async function loadMicroVm(stateDir: string) {
  try {
    const { microVmSupport } = await import('../../agent/microvm-support.js');
    return microVmSupport(stateDir);
  } catch {
    return undefined;
  }
}

interface UpOpts extends CoordinatorOpts {
  demo: boolean;
}

/**
 * The standalone process's own credential, kept 0600 in the data dir (created on first start): its
 * agent joins and its demo submits with it, so `mxc tokens create` can never lock `mxc up` out of itself,
 * and a user on this machine can read it to reach a token-protected API.
 */
export async function localToken(dataDir: string): Promise<{ token: string; file: string }> {
  const file = join(dataDir, 'local-token');
  await mkdir(dataDir, { recursive: true });
  try {
    const token = (await readFile(file, 'utf8')).trim();
    if (token) {
      await chmod(file, 0o600);
      return { token, file };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = `mxc_l_${randomBytes(24).toString('base64url')}`;
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return { token, file };
}

/** Whether the API refuses a request without a token (a client token exists, in the env or the table). */
async function apiNeedsToken(url: string): Promise<boolean> {
  const res = await fetch(`${url}/api/cluster/status`).catch(() => null);
  return res?.status === 401;
}

export async function up(opts: UpOpts) {
  const logger = createLogger('mxc');
  keepRunningOnUnhandled(logger);
  const dataDir = resolve(opts.dataDir);
  const port = parsePort(opts.port);
  const local = await localToken(dataDir);
  const tokens = { ...envTokens(), local: local.token };
  const server = await listenOrExplain(port, () =>
    startCoordinator({
      port,
      host: opts.host,
      dataDir,
      databaseUrl: process.env.DATABASE_URL || undefined,
      tokens,
      heartbeatTtlMs: ttl(),
      logger,
    }),
  );
  const agent = new Agent({
    coordinator: server.url,
    token: local.token,
    name: process.env.MXC_AGENT_NAME ?? 'local',
    stateDir: `${dataDir}/agent`,
    logger,
    microvm: await loadMicroVm(`${dataDir}/agent`),
  });
  await agent.start();
  await agent.ready;

  const url = server.url.replace('127.0.0.1', 'localhost');
  // The banner is written in one piece, after the demo, so log lines never cut through it.
  const banner: string[] = [];
  const say = (s = '') => banner.push(s);
  say();
  say(
    `${color.bold('mxc is up')}  (standalone: coordinator + agent "local", ${server.db.engine} state in ${dataDir})`,
  );
  say(`  dashboard   ${url}/`);
  say(`  API         ${url}/api/cluster/status`);
  if (await apiNeedsToken(server.url)) {
    say(`  token       the API needs a token; this one is kept in ${local.file}:`);
    say(`              ${local.token}`);
    say(
      `              ${color.dim('$')} export MXC_API_TOKEN=$(cat ${local.file})   # the dashboard asks for it once`,
    );
  }
  if (opts.demo) {
    try {
      const { storePath, spec } = await buildJob(repoPath('examples', 'hello_world'));
      const client = new ApiClient({ coordinator: server.url, token: local.token });
      const { pushJobClosure } = await import('./push-closure.js');
      await pushJobClosure(client, spec, { quiet: true });
      const res = await client.post<{ job: { key: string }; changed: boolean; workloads: string[] }>(
        '/api/jobs',
        spec,
      );
      say(`  demo        examples/hello_world → ${storePath}`);
      say(
        `              ${res.changed ? `submitted ${res.job.key}` : `${res.job.key} already submitted (unchanged)`}`,
      );
    } catch (err) {
      const msg = err instanceof BuildError || err instanceof CliError ? err.message : String(err);
      say(color.yellow(`  demo        could not build or submit examples/hello_world: ${msg}`));
    }
  }
  say();
  say('Try, in another terminal:');
  say(`  ${color.dim('$')} npx mxc workloads list`);
  say(`  ${color.dim('$')} npx mxc workloads logs <id>`);
  say(`  ${color.dim('$')} nix-build examples/web --no-out-link | npx mxc submit --wait`);
  say(`  ${color.dim('$')} npx mxc nodes list; npx mxc cluster status`);
  say();
  say('Ctrl-C stops everything; the next `npm start` finds this state again.');
  process.stdout.write(`${banner.join('\n')}\n`);
  await untilSignal();
  process.stdout.write('\nstopping…\n');
  await agent.close();
  await server.close();
}

/** `mxc agent gc`: collect what no workload of this agent needs (live closures are rooted and kept). */
export async function agentGc(opts: { stateDir: string; storeRoot?: string; json?: boolean }) {
  const { runAgentGc } = await import('../../agent/gc.js');
  const r = await runAgentGc({
    stateDir: resolve(opts.stateDir),
    storeRoot: opts.storeRoot ? resolve(opts.storeRoot) : undefined,
  });
  if (opts.json)
    process.stdout.write(
      `${JSON.stringify({ freed_bytes: r.freedBytes, deleted: r.deleted, paths: r.paths }, null, 2)}\n`,
    );
  else
    process.stdout.write(
      `deleted ${r.deleted} store path(s), freed ${(r.freedBytes / 1048576).toFixed(1)} MiB\n`,
    );
}
