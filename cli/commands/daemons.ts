/**
 * The long-running commands: `mxc coordinator`, `mxc agent` and `mxc up` (standalone: coordinator and one
 * agent in one process, state under ./.mxc, then builds and submits examples/hello_world).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Agent } from '../../agent/daemon.js';
import { BuildError, buildJob } from '../../compiler/build.js';
import { FolderInUseError } from '../../lib/pid-lock.js';
import {
  databaseUrl,
  type ReadSettingsOptions,
  readSettings,
  type Settings,
  SettingsError,
} from '../../lib/settings.js';
import { CacheError } from '../../scheduler/cache/errors.js';
import { MxcError } from '../../scheduler/errors.js';
import { repoPath } from '../../scheduler/paths.js';
import { startCoordinator } from '../../scheduler/server.js';
import { SubmitResult } from '../../spec/api.js';
import { describeIssues } from '../../spec/job.js';
import { NodeAttributes } from '../../spec/messages.js';
import { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { createLogger } from '../logger.js';
import { color } from '../output.js';

interface CoordinatorOpts {
  port?: string;
  host?: string;
  tlsCert?: string;
  tlsKey?: string;
  insecure?: boolean;
  dataDir?: string;
  advertiseUrl?: string;
  cacheDir?: string;
  cacheS3?: string;
  cacheKeyFile?: string;
  cacheCompression?: string;
}

/**
 * Reads and checks every setting the roles use (flags win over the environment); bad values stop
 * the start with one line per problem (exit 2), before anything listens or joins.
 */
function settings(
  roles: ('coordinator' | 'agent')[],
  flags: ReadSettingsOptions['flags'] = {},
  only?: ReadSettingsOptions['only'],
) {
  try {
    return readSettings({ roles, flags, only });
  } catch (err) {
    if (err instanceof SettingsError) throw new CliError(err.message, 2, undefined, { cause: err });
    throw err;
  }
}

const coordinatorFlags = (opts: CoordinatorOpts) => ({
  PORT: { value: opts.port, flag: '--port' },
  MXC_LISTEN_ADDRESS: { value: opts.host, flag: '--host' },
  MXC_TLS_CERT: { value: opts.tlsCert, flag: '--tls-cert' },
  MXC_TLS_KEY: { value: opts.tlsKey, flag: '--tls-key' },
  MXC_INSECURE: { value: opts.insecure ? 'true' : undefined, flag: '--insecure' },
  MXC_DATA_DIR: { value: opts.dataDir, flag: '--data-dir' },
  MXC_ADVERTISE_URL: { value: opts.advertiseUrl, flag: '--advertise-url' },
  MXC_CACHE_DIR: { value: opts.cacheDir, flag: '--cache-dir' },
  MXC_CACHE_S3_URL: { value: opts.cacheS3, flag: '--cache-s3' },
  MXC_CACHE_KEY_FILE: { value: opts.cacheKeyFile, flag: '--cache-key-file' },
  MXC_CACHE_COMPRESSION: { value: opts.cacheCompression, flag: '--cache-compression' },
});

/** The coordinator's start options from its settings. */
function coordinatorOptions(s: Settings) {
  return {
    port: s.PORT!,
    host: s.MXC_LISTEN_ADDRESS!,
    dataDir: resolve(s.MXC_DATA_DIR!),
    databaseUrl: databaseUrl(s),
    poolSize: s.POOL_SIZE,
    tokens: { api: s.MXC_API_TOKEN, agent: s.MXC_AGENT_TOKEN },
    heartbeatTtlMs: s.MXC_HEARTBEAT_TTL! * 1000,
    strategy: s.MXC_SCHEDULER_STRATEGY,
    ui: s.MXC_UI_ENABLED,
    leaderLeaseMs: s.MXC_LEADER_LEASE === undefined ? undefined : Math.round(s.MXC_LEADER_LEASE * 1000),
    advertiseUrl: s.MXC_ADVERTISE_URL,
    retention: {
      periodMs: Math.round(s.MXC_RETENTION_HOURS! * 3_600_000),
      perJob: s.MXC_RETENTION_PER_JOB!,
    },
    logLinesKept: s.MXC_LOG_LINES_KEPT,
    preemptionDelayMs: s.MXC_PREEMPTION_DELAY === null ? null : Math.round(s.MXC_PREEMPTION_DELAY! * 1000),
    flapping: {
      thresholdMs: Math.round(s.MXC_FLAPPING_TASK_THRESHOLD! * 1000),
      initialDelayMs: Math.round(s.MXC_INITIAL_FLAPPING_TASK_DELAY! * 1000),
      maxDelayMs: Math.max(
        Math.round(s.MXC_INITIAL_FLAPPING_TASK_DELAY! * 1000),
        Math.round(s.MXC_MAX_FLAPPING_TASK_DELAY! * 1000),
      ),
    },
    cacheDir: s.MXC_CACHE_DIR ? resolve(s.MXC_CACHE_DIR) : undefined,
    cacheS3: s.MXC_CACHE_S3_URL ? { location: s.MXC_CACHE_S3_URL, credentials: s3Credentials(s) } : undefined,
    cacheKeyFile: s.MXC_CACHE_KEY_FILE ? resolve(s.MXC_CACHE_KEY_FILE) : undefined,
    cacheCompression: s.MXC_CACHE_COMPRESSION,
    insecure: s.MXC_INSECURE === true,
    maxConnectionsPerAddress: s.MXC_MAX_CONNECTIONS_PER_ADDRESS,
    tls: tlsOptions(s),
  };
}

/** Bucket credentials from the AWS variables (or their _FILE twins); unset: the SDK's own chain. */
function s3Credentials(s: Settings) {
  const { AWS_ACCESS_KEY_ID: id, AWS_SECRET_ACCESS_KEY: secret, AWS_SESSION_TOKEN: token } = s;
  if (!id && !secret) return undefined;
  if (!id || !secret)
    throw new CliError('AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or their _FILE twins) go together', 2);
  return { accessKeyId: id, secretAccessKey: secret, sessionToken: token };
}

function tlsOptions(s: Settings) {
  const cert = s.MXC_TLS_CERT as string | undefined;
  const key = s.MXC_TLS_KEY as string | undefined;
  if (!cert && !key) return undefined;
  if (!cert || !key)
    throw new CliError('--tls-cert and --tls-key (MXC_TLS_CERT, MXC_TLS_KEY) go together', 2);
  return { certFile: resolve(cert), keyFile: resolve(key) };
}

const logger = (name: string, s: Settings) =>
  createLogger(name, { level: s.MXC_LOG_LEVEL, format: s.MXC_LOG_FORMAT });

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
        1,
        undefined,
        { cause: err },
      );
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') {
      throw new CliError(
        `cannot listen on that address: this machine has no such address (${(err as Error).message}); set --host / MXC_LISTEN_ADDRESS to one of its own`,
        2,
        'LISTEN_ADDRESS_NOT_AVAILABLE',
        { cause: err },
      );
    }
    // A coded refusal (an unreachable database or cache bucket, a data dir in use, an unreadable key
    // file, …) is a message ending with its code, not a crash; a refused configuration exits 2, as a
    // bad setting does.
    if (err instanceof MxcError || err instanceof CacheError) {
      const exit = err.code === 'OPEN_API_NOT_LOOPBACK' ? 2 : 1;
      throw new CliError(`${err.message} [${err.code}]`, exit, err.code, { cause: err });
    }
    throw err;
  }
}

/** Starts an agent; its state dir held by another agent is a message, not a crash. */
async function startAgent(agent: Agent): Promise<void> {
  try {
    await agent.start();
  } catch (err) {
    if (err instanceof FolderInUseError)
      throw new CliError(`agent state dir: ${err.message} [${err.code}]`, 1, err.code, { cause: err });
    throw err;
  }
}

export async function coordinator(opts: CoordinatorOpts) {
  const s = settings(['coordinator'], coordinatorFlags(opts));
  const log = logger('mxc-coordinator', s);
  keepRunningOnUnhandled(log);
  const o = coordinatorOptions(s);
  const server = await listenOrExplain(o.port, () => startCoordinator({ ...o, logger: log }));
  await untilSignal();
  log.info('shutting down');
  await server.close();
}

interface AgentOpts {
  coordinator?: string;
  token?: string;
  tokenFile?: string;
  name?: string;
  cpu?: string;
  memory?: string;
  disk?: string;
  stateDir?: string;
  storeRoot?: string;
  attr?: string[];
  cacheKey?: string;
  secretsDir?: string;
  gcMinFree?: string;
  logRetention?: string;
}

function parseAttributes(list: string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of list) {
    const eq = a.indexOf('=');
    if (eq <= 0) throw new CliError(`--attr takes key=value, got "${a}"`, 2);
    out[a.slice(0, eq)] = a.slice(eq + 1);
  }
  // The coordinator refuses a hello whose attributes are out of bounds: say so here, before joining.
  const checked = NodeAttributes.safeParse(out);
  if (!checked.success) throw new CliError(`--attr: ${describeIssues(checked.error).join('; ')}`, 2);
  return out;
}

const agentFlags = (opts: AgentOpts) => ({
  MXC_COORDINATOR: { value: opts.coordinator, flag: '--coordinator' },
  MXC_AGENT_TOKEN: { value: opts.token, flag: '--token' },
  MXC_AGENT_TOKEN_FILE: { value: opts.tokenFile, flag: '--token-file' },
  MXC_AGENT_NAME: { value: opts.name, flag: '--name' },
  MXC_AGENT_CPU: { value: opts.cpu, flag: '--cpu' },
  MXC_AGENT_MEMORY: { value: opts.memory, flag: '--memory' },
  MXC_AGENT_DISK: { value: opts.disk, flag: '--disk' },
  MXC_AGENT_STATE_DIR: { value: opts.stateDir, flag: '--state-dir' },
  MXC_AGENT_STORE_ROOT: { value: opts.storeRoot, flag: '--store-root' },
  MXC_CACHE_PUBLIC_KEY: { value: opts.cacheKey, flag: '--cache-key' },
  MXC_AGENT_SECRETS_DIR: { value: opts.secretsDir, flag: '--secrets-dir' },
  MXC_AGENT_GC_MIN_FREE: { value: opts.gcMinFree, flag: '--gc-min-free' },
  MXC_AGENT_LOG_RETENTION: { value: opts.logRetention, flag: '--log-retention' },
});

/** 0 means "detect", as in the seed (MXC_AGENT_CPU=0). */
const detectWhenZero = (n: number | undefined) => (n ? n : undefined);

/** The agent's options from its settings (coordinator, token and name are the caller's in standalone). */
async function agentOptions(s: Settings, stateDir: string) {
  return {
    cpu: detectWhenZero(s.MXC_AGENT_CPU),
    memoryMb: detectWhenZero(s.MXC_AGENT_MEMORY),
    diskMb: detectWhenZero(s.MXC_AGENT_DISK),
    cachePublicKey: s.MXC_CACHE_PUBLIC_KEY,
    secretsDir: s.MXC_AGENT_SECRETS_DIR ? resolve(s.MXC_AGENT_SECRETS_DIR) : undefined,
    gcMinFreeMb: s.MXC_AGENT_GC_MIN_FREE,
    supervisorPool: s.MXC_AGENT_SUPERVISOR_POOL,
    logRetentionMs: s.MXC_AGENT_LOG_RETENTION! * 86_400_000,
    stateDir,
    storeRoot: s.MXC_AGENT_STORE_ROOT ? resolve(s.MXC_AGENT_STORE_ROOT) : undefined,
    microvm: s.MXC_HYPERVISOR === 'none' ? undefined : await loadMicroVm(stateDir),
  };
}

export async function agent(opts: AgentOpts) {
  const s = settings(['agent'], agentFlags(opts));
  // Several URLs: the agent fails over along the (shuffled) list.
  const coordinators = s.MXC_COORDINATOR!;
  const attributes = parseAttributes(opts.attr);
  const log = logger('mxc-agent', s);
  keepRunningOnUnhandled(log);
  const a = new Agent({
    ...(await agentOptions(s, resolve(s.MXC_AGENT_STATE_DIR!))),
    coordinator: coordinators.join(','),
    dnsQuery: s.MXC_DNS_QUERY,
    dnsServer: s.MXC_DNS_SERVER,
    token: s.MXC_AGENT_TOKEN,
    name: s.MXC_AGENT_NAME,
    attributes,
    logger: log,
  });
  await startAgent(a);
  await untilSignal();
  log.info('shutting down; stopping workloads');
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

/**
 * `mxc serve`: the one entry point of a deployment, as the seed's releases have. MXC_MODE picks the
 * role (standalone: coordinator + one agent in one process, without the demo); every other setting
 * comes from the environment.
 */
export async function serve() {
  const { MXC_MODE: mode } = settings(['coordinator', 'agent'], {}, ['MXC_MODE']);
  if (mode === 'coordinator') return coordinator({});
  if (mode === 'agent') return agent({});
  return up({ demo: false });
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
  const s = settings(['coordinator', 'agent'], coordinatorFlags(opts));
  // A person runs `mxc up`: readable lines on a terminal or in a file unless MXC_LOG_FORMAT=json.
  const logger = createLogger('mxc', {
    level: s.MXC_LOG_LEVEL,
    format: process.env.MXC_LOG_FORMAT ? s.MXC_LOG_FORMAT : 'pretty',
  });
  keepRunningOnUnhandled(logger);
  const o = coordinatorOptions(s);
  const { dataDir } = o;
  const local = await localToken(dataDir);
  const tokens = { ...o.tokens, local: local.token };
  const server = await listenOrExplain(o.port, () => startCoordinator({ ...o, tokens, logger }));
  const agent = new Agent({
    // Standalone keeps the agent's state inside the data dir unless told otherwise.
    ...(await agentOptions(
      s,
      process.env.MXC_AGENT_STATE_DIR ? resolve(s.MXC_AGENT_STATE_DIR!) : `${dataDir}/agent`,
    )),
    coordinator: server.url,
    token: local.token,
    name: s.MXC_AGENT_NAME ?? 'local',
    logger,
  });
  await startAgent(agent);
  await agent.ready;

  const url = server.url.replace('127.0.0.1', 'localhost');
  // The banner is written in one piece, after the demo, so log lines never cut through it.
  const banner: string[] = [];
  const say = (s = '') => banner.push(s);
  say();
  say(
    `${color.bold('mxc is up')}  (standalone: coordinator + agent "${s.MXC_AGENT_NAME ?? 'local'}", ${server.db.engine} state in ${dataDir})`,
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
      const res = await client.post('/api/jobs', SubmitResult, spec);
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
  if (server.url !== 'http://127.0.0.1:4000') say(`  ${color.dim('$')} export MXC_COORDINATOR=${server.url}`);
  say(`  ${color.dim('$')} npx mxc workloads list`);
  say(`  ${color.dim('$')} npx mxc workloads logs <id>`);
  say(`  ${color.dim('$')} nix-build examples/web --no-out-link | npx mxc submit --wait`);
  say(`  ${color.dim('$')} npx mxc nodes list; npx mxc cluster status`);
  say();
  say(`Ctrl-C stops everything; the next start with this data dir (${dataDir}) finds this state again.`);
  process.stdout.write(`${banner.join('\n')}\n`);
  await untilSignal();
  process.stdout.write('\nstopping…\n');
  await agent.close();
  await server.close();
}

/** `mxc agent gc`: delete what this agent fetched and no workload needs (live closures are rooted and kept). */
export async function agentGc(opts: { stateDir: string; storeRoot?: string; json?: boolean }) {
  const stateDir = resolve(opts.stateDir);
  // A mistyped or relative state dir (the default is .mxc/agent under the current folder) has nothing
  // to collect: said, rather than "deleted 0" as if the agent's store were clean. An agent that ran
  // there left its lock file, and once joined its node secret.
  const marks = await Promise.all(
    ['mxc.lock', 'node-secret.json'].map((f) =>
      stat(join(stateDir, f)).then(
        () => true,
        () => false,
      ),
    ),
  );
  if (!marks.includes(true))
    throw new CliError(
      `${stateDir} is not an agent's state directory (no agent has run there): pass the agent's --state-dir (MXC_AGENT_STATE_DIR; the default, .mxc/agent, is under the current folder)`,
      2,
    );
  const { runAgentGc } = await import('../../agent/gc.js');
  const r = await runAgentGc({
    stateDir,
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
