/**
 * Every setting mxc reads from its environment, as one table: the variable, who reads it, its
 * default, what it means, and the zod schema that turns its text into a value or refuses it. The
 * README's configuration table, the daemons' start-up validation and the NixOS modules follow it.
 */
import { isIP } from 'node:net';
import * as z from 'zod';
import { MAX_CPU_CORES, MAX_RESOURCE_MB, MAX_WAIT_SECS } from './job.js';
import { NodeName } from './messages.js';
import { s3LocationSchema } from './s3-location.js';

/** Who reads a setting: the coordinator, the agent, or every client command (`mxc jobs list`, …). */
export type SettingRole = 'coordinator' | 'agent' | 'client';

/** The log levels pino knows. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
/** `standalone`: coordinator and one agent in one process (the seed's default). */
export const MODES = ['standalone', 'coordinator', 'agent'] as const;
export type Mode = (typeof MODES)[number];
export const STRATEGIES = ['spread', 'pack'] as const;
/**
 * The hypervisors mxc can run microVMs with. `none` turns microVM workloads off. The seed's
 * cloud-hypervisor, firecracker and vfkit are refused with a message (see HYPERVISOR_UNSUPPORTED).
 */
export const HYPERVISORS = ['qemu', 'none'] as const;
export const HYPERVISOR_UNSUPPORTED = [
  'cloud-hypervisor',
  'cloud_hypervisor',
  'firecracker',
  'vfkit',
  'crosvm',
];

/**
 * A setting's schema, built the first time it is used: a command reads a few settings (a client
 * command three), and building every setting's schema took ~3.5 ms of each client command's start.
 */
const lazily = <T extends z.ZodType>(build: () => T): (() => T) => {
  let schema: T | undefined;
  return () => (schema ??= build());
};

const text = lazily(() => z.string().min(1, 'must not be empty'));

const integer = (what: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  lazily(() =>
    z
      .string()
      .trim()
      .regex(/^\d+$/, `must be ${what}`)
      .transform(Number)
      .pipe(z.number().int().min(min, `must be ${what}`).max(max, `must be ${what}`)),
  );

const number = (what: string, min: number, exclusive = false, max = Number.MAX_VALUE) =>
  lazily(() =>
    z
      .string()
      .trim()
      .regex(/^\d+(\.\d+)?$/, `must be ${what}`)
      .transform(Number)
      .pipe(
        (exclusive ? z.number().gt(min, `must be ${what}`) : z.number().min(min, `must be ${what}`)).max(
          max,
          `must be ${what}`,
        ),
      ),
  );

const boolean = lazily(() =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((s) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(s), {
      message: 'must be true or false',
    })
    .transform((s) => ['true', '1', 'yes', 'on'].includes(s)),
);

const oneOf = <T extends readonly [string, ...string[]]>(values: T) =>
  lazily(() =>
    z
      .string()
      .trim()
      .pipe(z.enum(values, { error: `must be one of ${values.join(', ')}` })),
  );

const httpUrl = lazily(() =>
  z
    .string()
    .trim()
    .refine(
      (s) => {
        try {
          return ['http:', 'https:'].includes(new URL(s).protocol);
        } catch {
          return false;
        }
      },
      { message: 'must be an http:// or https:// URL' },
    ),
);

/** One URL, or several separated by commas (agents fail over along the list). */
const urlList = lazily(() =>
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean),
    )
    .pipe(z.array(httpUrl()).min(1, 'must name at least one URL').max(64, 'at most 64 URLs')),
);

/** `ip`, `ip:port` or `[ipv6]:port`: what node:dns's setServers takes. */
function isDnsServer(v: string): boolean {
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(v) ?? /^([^:]+):(\d{1,5})$/.exec(v);
  if (!m) return isIP(v) !== 0;
  const port = m[2] === undefined ? 53 : Number(m[2]);
  return isIP(m[1]!) !== 0 && port >= 1 && port <= 65_535;
}

const dnsServer = lazily(() =>
  z
    .string()
    .trim()
    .refine(isDnsServer, 'must be an IP address, optionally with a port (10.0.0.2:53, [fd00::2]:53)'),
);

const postgresUrl = lazily(() =>
  z
    .string()
    .trim()
    .refine((s) => /^(postgres|postgresql|ecto):\/\//.test(s), {
      message: 'must be a postgres://user[:password]@host[:port]/database URL (ecto:// is accepted too)',
    })
    // The seed writes Ecto URLs; pg reads the same URL under its own scheme.
    .transform((s) => s.replace(/^ecto:\/\//, 'postgres://')),
);

const hypervisor = lazily(() =>
  z
    .string()
    .trim()
    .toLowerCase()
    .superRefine((s, ctx) => {
      if (HYPERVISOR_UNSUPPORTED.includes(s))
        ctx.addIssue({
          code: 'custom',
          message: `"${s}" is not supported: mxc runs microVMs with QEMU (KVM when usable, else TCG); use qemu, or none to turn microVMs off`,
        });
      else if (!(HYPERVISORS as readonly string[]).includes(s))
        ctx.addIssue({ code: 'custom', message: `must be one of ${HYPERVISORS.join(', ')}` });
    })
    .transform((s) => s as (typeof HYPERVISORS)[number]),
);

const cacheKey = lazily(() =>
  z
    .string()
    .trim()
    .regex(/^[^:\s]+:[A-Za-z0-9+/]+={0,2}$/, 'must be a Nix public key, name:base64'),
);

export interface Setting {
  /** The environment variable. */
  env: string;
  roles: SettingRole[];
  /** The default as the README shows it (text, not always a literal value). */
  default: string;
  /** The literal default the parser receives when the variable is unset, if any. */
  value?: string;
  doc: string;
  schema: () => z.ZodType;
  /** A secret: `<env>_FILE` names a file holding it (systemd credentials, agenix, …). */
  secret?: boolean;
  /** The command-line flag that sets the same thing (it wins over the variable). */
  flag?: string;
}

const C: SettingRole[] = ['coordinator'];
const A: SettingRole[] = ['agent'];

/** Every variable, in the order the README lists them. */
export const SETTINGS = [
  {
    env: 'MXC_MODE',
    roles: ['coordinator', 'agent'],
    default: 'standalone',
    value: 'standalone',
    doc: 'the role `mxc serve` runs: `standalone` (coordinator + one agent in one process), `coordinator` or `agent`',
    schema: oneOf(MODES),
  },
  {
    env: 'PORT',
    roles: C,
    default: '4000',
    value: '4000',
    flag: '--port',
    doc: 'HTTP port of the coordinator (API, dashboard, binary cache, agent WebSocket)',
    schema: integer('a TCP port (0-65535)', 0, 65535),
  },
  {
    env: 'MXC_LISTEN_ADDRESS',
    roles: C,
    default: '127.0.0.1',
    value: '127.0.0.1',
    flag: '--host',
    doc: 'address the coordinator listens on (`0.0.0.0` for every interface)',
    schema: text,
  },
  {
    env: 'MXC_DATA_DIR',
    roles: C,
    default: '.mxc',
    value: '.mxc',
    flag: '--data-dir',
    doc: 'coordinator state: PGlite database (without PostgreSQL), cache signing key, NARs',
    schema: text,
  },
  {
    env: 'DATABASE_URL',
    roles: C,
    default: 'unset → `DATABASE_HOST`…, else PGlite in `<data-dir>/db`',
    doc: 'PostgreSQL connection string (`postgres://`, or the seed’s `ecto://`); a password missing from it comes from `DATABASE_PASSWORD`',
    schema: postgresUrl,
  },
  {
    env: 'DATABASE_HOST',
    roles: C,
    default: 'unset (PGlite)',
    doc: 'PostgreSQL host, or a socket directory such as `/run/postgresql`; setting it selects PostgreSQL',
    schema: text,
  },
  {
    env: 'DATABASE_PORT',
    roles: C,
    default: '5432',
    value: '5432',
    doc: 'PostgreSQL port',
    schema: integer('a TCP port (1-65535)', 1, 65535),
  },
  {
    env: 'DATABASE_USER',
    roles: C,
    default: 'mxc',
    value: 'mxc',
    doc: 'PostgreSQL user',
    schema: text,
  },
  {
    env: 'DATABASE_PASSWORD',
    roles: C,
    default: 'none',
    secret: true,
    doc: 'PostgreSQL password (prefer `DATABASE_PASSWORD_FILE`)',
    schema: text,
  },
  {
    env: 'DATABASE_NAME',
    roles: C,
    default: 'mxc',
    value: 'mxc',
    doc: 'PostgreSQL database',
    schema: text,
  },
  {
    env: 'POOL_SIZE',
    roles: C,
    default: '10',
    value: '10',
    doc: 'PostgreSQL connections per coordinator',
    schema: integer('a whole number from 1 to 1000', 1, 1000),
  },
  {
    env: 'MXC_API_TOKEN',
    roles: ['coordinator', 'client'],
    default: 'unset → API open (until a client token is created with `mxc tokens create`)',
    secret: true,
    flag: '--token',
    doc: 'token for clients (CLI, dashboard); the CLI sends it',
    schema: text,
  },
  {
    env: 'MXC_AGENT_TOKEN',
    roles: ['coordinator', 'agent'],
    default: '`MXC_API_TOKEN`',
    secret: true,
    doc: 'token agents join with (agent flag: `--token-file`, or `--token`, which `ps` shows)',
    schema: text,
  },
  {
    env: 'MXC_HEARTBEAT_TTL',
    roles: C,
    default: '30',
    value: '30',
    doc: 'seconds of agent silence before its node is down and its workloads rescheduled',
    schema: number('a number of seconds > 0', 0, true),
  },
  {
    env: 'MXC_FLAPPING_TASK_THRESHOLD',
    roles: C,
    default: '300',
    value: '300',
    doc: "seconds: a task that ran for less than this is flapping and restarts after a back-off (Aurora's `-flapping_task_threshold`)",
    schema: number('a number of seconds ≥ 0', 0),
  },
  {
    env: 'MXC_INITIAL_FLAPPING_TASK_DELAY',
    roles: C,
    default: '30',
    value: '30',
    doc: 'seconds a flapping task first waits before it restarts; the wait doubles with each flapping restart',
    schema: number('a number of seconds ≥ 0', 0),
  },
  {
    env: 'MXC_MAX_FLAPPING_TASK_DELAY',
    roles: C,
    default: '300',
    value: '300',
    doc: 'seconds a flapping task waits at most before it restarts',
    schema: number('a number of seconds ≥ 0', 0),
  },
  {
    env: 'MXC_PREEMPTION_DELAY',
    roles: C,
    default: '180',
    value: '180',
    doc: "seconds a pending workload of a production job or of priority above 0 waits before the leader stops lower-ranked workloads to make room for it (Aurora's preemption); `off` never preempts",
    schema: lazily(() =>
      z
        .string()
        .trim()
        .regex(/^(off|\d+(\.\d+)?)$/, 'must be a number of seconds ≥ 0, or off')
        .transform((s) => (s === 'off' ? null : Number(s)))
        .pipe(z.number().max(MAX_WAIT_SECS, 'must be a number of seconds ≥ 0, or off').nullable()),
    ),
  },
  {
    env: 'MXC_RETENTION_HOURS',
    roles: C,
    default: '168',
    value: '168',
    doc: 'hours an ended workload, its events and logs are kept (Nomad core GC); the newest of each instance stays',
    schema: number('a number of hours > 0', 0, true),
  },
  {
    env: 'MXC_RETENTION_PER_JOB',
    roles: C,
    default: '100',
    value: '100',
    doc: 'ended workloads kept per job (the newest); older ones go with their events and logs',
    schema: integer('a whole number ≥ 1', 1),
  },
  {
    env: 'MXC_LOG_LINES_KEPT',
    roles: C,
    default: '100000',
    value: '100000',
    doc: "the newest lines of a workload's log the coordinator keeps (at least 1000); older ones are deleted as new ones come (the logs API says how many went)",
    schema: integer('a whole number ≥ 1000', 1000),
  },
  {
    env: 'MXC_LEADER_LEASE',
    roles: C,
    default: '15',
    value: '15',
    doc: 'seconds of the leader lease (several coordinators on one PostgreSQL); the leader renews within 2/3 of it, others retry every 2/15',
    schema: number('a number of seconds ≥ 0.3', 0.3),
  },
  {
    env: 'MXC_ADVERTISE_URL',
    roles: C,
    default: 'the listen address',
    flag: '--advertise-url',
    doc: 'the URL others reach this coordinator at, as `GET /api/cluster/status` lists it',
    schema: httpUrl,
  },
  {
    env: 'MXC_CACHE_DIR',
    roles: C,
    default: '`<data-dir>/cache`',
    flag: '--cache-dir',
    doc: 'the binary cache directory (paths and signing key); several coordinators may share one (e.g. NFS): NARs arrive by temp file + rename, narinfos by link (never replacing another’s)',
    schema: text,
  },
  {
    env: 'MXC_CACHE_S3_URL',
    roles: C,
    default: 'unset (the cache directory)',
    flag: '--cache-s3',
    doc: 'keep the binary cache in an S3-compatible bucket instead: `s3://bucket/prefix?endpoint=https://…&region=…&force_path_style=true` (AWS, MinIO, R2, Garage); coordinators may share one; credentials from the AWS variables below or the SDK’s usual chain',
    schema: lazily(() => s3LocationSchema),
  },
  {
    env: 'AWS_ACCESS_KEY_ID',
    roles: C,
    default: 'unset (the AWS SDK’s chain: profile, instance role)',
    secret: true,
    doc: 'access key of the cache bucket (`MXC_CACHE_S3_URL`); prefer `AWS_ACCESS_KEY_ID_FILE`',
    schema: text,
  },
  {
    env: 'AWS_SECRET_ACCESS_KEY',
    roles: C,
    default: 'unset',
    secret: true,
    doc: 'secret key of the cache bucket; prefer `AWS_SECRET_ACCESS_KEY_FILE`',
    schema: text,
  },
  {
    env: 'AWS_SESSION_TOKEN',
    roles: C,
    default: 'unset',
    secret: true,
    doc: 'session token for temporary bucket credentials',
    schema: text,
  },
  {
    env: 'MXC_CACHE_COMPRESSION',
    roles: C,
    default: '`none`',
    flag: '--cache-compression',
    doc: 'how the cache stores NARs: `none` (as uploaded; the least CPU per push, measured by the cache bench) or `br` (brotli quality 2: about half the bytes for binaries, several times the CPU); changes only new uploads, nix reads both',
    schema: oneOf(['none', 'br'] as const),
  },
  {
    env: 'MXC_CACHE_KEY_FILE',
    roles: C,
    default:
      'unset → `<cache dir>/secret.key` if present, else one key in PostgreSQL, else created in the cache dir',
    flag: '--cache-key-file',
    doc: 'the cache signing key, in the format of `nix-store --generate-binary-cache-key`; give all coordinators the same file, or leave it unset to share one key through PostgreSQL',
    schema: text,
  },
  {
    env: 'MXC_SCHEDULER_STRATEGY',
    roles: C,
    default: 'spread',
    value: 'spread',
    doc: '`spread` (most free capacity first) or `pack` (fill the fullest node that fits)',
    schema: oneOf(STRATEGIES),
  },
  {
    env: 'MXC_TLS_CERT',
    roles: C,
    default: 'unset (plain HTTP)',
    flag: '--tls-cert',
    doc: 'PEM certificate chain: serve HTTPS, agents connect with `https://` and `wss://` (trust a private CA with `NODE_EXTRA_CA_CERTS`)',
    schema: text,
  },
  {
    env: 'MXC_TLS_KEY',
    roles: C,
    default: 'unset',
    flag: '--tls-key',
    doc: 'PEM private key for `MXC_TLS_CERT`',
    schema: text,
  },
  {
    env: 'MXC_INSECURE',
    roles: C,
    default: 'false',
    value: 'false',
    flag: '--insecure',
    doc: 'allow an open API (no client token) on a non-loopback `MXC_LISTEN_ADDRESS`; without it such a start is refused',
    schema: boolean,
  },
  {
    env: 'MXC_MAX_CONNECTIONS_PER_ADDRESS',
    roles: C,
    default: 'half the connection limit',
    doc: 'connections the coordinator takes from one client address (agents behind one NAT share one); past it, a new one from that address takes the place of the connection of that address that has waited longest for a request, else it is refused and logged',
    schema: integer('a whole number ≥ 1', 1),
  },
  {
    env: 'MXC_UI_ENABLED',
    roles: C,
    default: 'true',
    value: 'true',
    doc: '`false` serves no dashboard (the API and cache stay)',
    schema: boolean,
  },
  {
    env: 'MXC_COORDINATOR',
    roles: ['agent', 'client'],
    default: 'http://127.0.0.1:4000',
    value: 'http://127.0.0.1:4000',
    flag: '--coordinator',
    doc: 'coordinator URL for the CLI and agents; both take a comma-separated list (or one load-balancer URL) and fail over along it',
    schema: urlList,
  },
  {
    env: 'MXC_REQUEST_TIMEOUT',
    roles: ['client'],
    default: '10',
    value: '10',
    doc: 'seconds the CLI waits for a coordinator to answer (at most 86400): a read not answered in time goes to the next coordinator of `MXC_COORDINATOR`; a change (POST, DELETE) waits 6 times as long and is never sent twice (it fails, saying the coordinator may still apply it)',
    schema: lazily(() =>
      number('a number of seconds > 0', 0, true)().pipe(
        z.number().max(86_400, 'must be at most 86400 seconds (a day)'),
      ),
    ),
  },
  {
    env: 'MXC_DNS_QUERY',
    roles: A,
    default: 'unset',
    doc: 'find coordinators by DNS: `_mxc._tcp.example.org` (SRV: target and port) or `host[:port]` (A/AAAA, port 4000 by default); joined with `MXC_COORDINATOR`',
    schema: text,
  },
  {
    env: 'MXC_DNS_SERVER',
    roles: A,
    default: 'the system resolver',
    doc: 'the DNS server (`ip[:port]`) `MXC_DNS_QUERY` asks',
    schema: dnsServer,
  },
  {
    env: 'MXC_AGENT_NAME',
    roles: A,
    default: 'hostname',
    flag: '--name',
    doc: 'node name',
    schema: lazily(() => z.string().trim().pipe(NodeName)),
  },
  {
    env: 'MXC_AGENT_CPU',
    roles: A,
    default: '0 (detect)',
    value: '0',
    flag: '--cpu',
    doc: 'CPU cores offered to workloads; 0 = all detected cores',
    schema: number(`a number of cores from 0 (detect) to ${MAX_CPU_CORES}`, 0, false, MAX_CPU_CORES),
  },
  {
    env: 'MXC_AGENT_MEMORY',
    roles: A,
    default: '0 (detect)',
    value: '0',
    flag: '--memory',
    doc: 'memory offered to workloads in MiB; 0 = all detected memory',
    schema: integer(`a whole number of MiB from 0 (detect) to ${MAX_RESOURCE_MB}`, 0, MAX_RESOURCE_MB),
  },
  {
    env: 'MXC_AGENT_DISK',
    roles: A,
    default: '0 (detect)',
    value: '0',
    flag: '--disk',
    doc: 'disk offered to workloads in MiB; 0 = free space of the state directory',
    schema: integer(`a whole number of MiB from 0 (detect) to ${MAX_RESOURCE_MB}`, 0, MAX_RESOURCE_MB),
  },
  {
    env: 'MXC_AGENT_STATE_DIR',
    roles: A,
    default: '.mxc/agent',
    value: '.mxc/agent',
    flag: '--state-dir',
    doc: 'agent state: workload directories, logs, GC roots',
    schema: text,
  },
  {
    env: 'MXC_AGENT_STORE_ROOT',
    roles: A,
    default: 'unset (host store)',
    flag: '--store-root',
    doc: 'run on a chroot Nix store under this directory',
    schema: text,
  },
  {
    env: 'MXC_AGENT_SECRETS_DIR',
    roles: A,
    default: 'none',
    flag: '--secrets-dir',
    doc: 'one file per secret; a job’s `mxc.secrets = [ "db.password" ]` gets `MXC_SECRET_DB_PASSWORD_FILE` (a 0400 copy in its work dir); values never reach the store or the coordinator',
    schema: text,
  },
  {
    env: 'MXC_CACHE_PUBLIC_KEY',
    roles: A,
    default: 'asked of the coordinator',
    flag: '--cache-key',
    doc: 'pin the cache key the agent trusts (`name:base64`)',
    schema: cacheKey,
  },
  {
    env: 'MXC_AGENT_GC_MIN_FREE',
    roles: A,
    default: '1024 with a store root, else 0',
    flag: '--gc-min-free',
    doc: 'MiB of free store space under which the agent collects garbage (0: never)',
    schema: integer('a whole number of MiB ≥ 0', 0),
  },
  {
    env: 'MXC_AGENT_SUPERVISOR_POOL',
    roles: A,
    default: '1',
    value: '1',
    doc: "idle task supervisors kept in fresh PID namespaces, so a `process` task's start does not create its namespace (0: none)",
    schema: integer('a whole number from 0 to 16', 0, 16),
  },
  {
    env: 'MXC_AGENT_LOG_RETENTION',
    roles: A,
    default: '7',
    value: '7',
    flag: '--log-retention',
    doc: 'days the logs of ended workloads are kept',
    schema: number('a number of days ≥ 0', 0),
  },
  {
    env: 'MXC_HYPERVISOR',
    roles: A,
    default: 'qemu when installed',
    doc: '`qemu` (microVM workloads; KVM when usable, else TCG) or `none` (no microVMs); cloud-hypervisor, firecracker and vfkit are refused',
    schema: hypervisor,
  },
  {
    env: 'MXC_MICROVM_ASSETS',
    roles: A,
    default: '`$XDG_CACHE_HOME/mxc/microvm` (`~/.cache/mxc/microvm`)',
    doc: 'kernel and initramfs for microVM workloads (downloaded once with apt)',
    schema: text,
  },
  {
    env: 'MXC_LOG_LEVEL',
    roles: ['coordinator', 'agent'],
    default: 'info',
    value: 'info',
    doc: `structured logs (pino) on stderr: ${LOG_LEVELS.join(', ')}`,
    schema: oneOf(LOG_LEVELS),
  },
  {
    env: 'MXC_LOG_FORMAT',
    roles: ['coordinator', 'agent'],
    default: 'pretty on a TTY, else json',
    doc: '`json` or `pretty`',
    schema: oneOf(['json', 'pretty'] as const),
  },
] as const satisfies readonly Setting[];

export type SettingName = (typeof SETTINGS)[number]['env'];

/** The seed's variables mxc does not need, and why (the README lists them; setting them is harmless). */
export const SEED_ONLY_SETTINGS: { env: string; why: string }[] = [
  {
    env: 'MXC_CLUSTER_STRATEGY, MXC_GOSSIP_PORT, MXC_GOSSIP_SECRET, MXC_CLUSTER_HOSTS',
    why: 'Erlang clustering: agents join coordinators over HTTP/WebSocket with a token, coordinators share PostgreSQL',
  },
  {
    env: 'SECRET_KEY_BASE, PHX_HOST, PHX_SERVER, RELEASE_COOKIE',
    why: 'Phoenix and Erlang release settings',
  },
];
