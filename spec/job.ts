/**
 * The job spec. `nix-build` of a nixlib job produces an Apache Aurora job document (`AuroraJob`:
 * only Aurora's own fields, so `aurora job create --read-json` takes it) plus a sidecar store file
 * with mxc's extensions (`MxcFields`: closure, isolation, ports, env, secrets, network). `mxc submit`
 * joins the two into `JobSpec` (the Aurora job with the sidecar under `mxc`), which the API, the
 * store and the agents use. Every object is strict: unknown attributes are refused.
 */
import * as z from 'zod';
import { bindingProblems } from './bindings.js';
import { boundedRecord } from './bounded.js';
import { nextRun, parseCron } from './cron.js';

/** Most environment variables a job sets (`mxc.env`). */
export const MAX_ENV_VARS = 1024;
/**
 * Most aliases an announcer's `portmap` names, and most `task_links`: each is copied into every
 * endpoint of every instance (or every job answer), so an unbounded map made every read of them stall.
 */
export const MAX_PORTMAP_ENTRIES = 64;
/**
 * Longest cron schedule: one listing every minute, hour, day, month and weekday is under 400
 * characters. A schedule of 2 MiB of list items took the coordinator ~3 s of event loop to parse at submit.
 */
export const MAX_CRON_CHARS = 1024;
/**
 * The longest wait a spec may ask for, in seconds (24 days): the agent and the coordinator wait with
 * timers, and a Node timer past 2^31-1 ms (24.8 days) fires at once instead.
 */
export const MAX_WAIT_SECS = 24 * 24 * 3600;
const waitSecs = () => z.number().min(0).max(MAX_WAIT_SECS);
export const MAX_TASK_LINKS = 64;
/**
 * Node attributes and the placement constraints that match them: at most this many, each name and
 * value at most this long (`mxc agent --attr`, a job's `constraints`).
 */
export const MAX_NODE_ATTRIBUTES = 64;
export const MAX_ATTRIBUTE_NAME_CHARS = 128;
export const MAX_ATTRIBUTE_VALUE_CHARS = 1024;

/** A process name: used in file names and `nix_init_<name>`, so kept to a safe alphabet. */
export const ProcessName = z
  .string()
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, 'must be 1-128 characters of letters, digits, _ . -');

/**
 * The most a node offers and a task asks for: CPU cores, and MiB of memory or disk (what the database's
 * integer columns hold, about 2 PiB). Without a bound an agent offering 1e308 cores made the cluster's
 * totals Infinity (every status answer a 500), and a task of 8 PiB failed its submit with a 500.
 */
export const MAX_CPU_CORES = 65_536;
export const MAX_RESOURCE_MB = 2 ** 31 - 1;
const MiB = 1024 * 1024;

/** Task resources in Aurora units: cpu cores (fractional), ram and disk in bytes. */
export const Resources = z
  .object({
    cpu: z
      .number()
      .positive('must be more than 0 (a workload needs some CPU)')
      .max(MAX_CPU_CORES, `must be at most ${MAX_CPU_CORES} cores`),
    ram: z
      .number()
      .int()
      .positive('must be more than 0 bytes')
      .max(MAX_RESOURCE_MB * MiB, `must be at most ${MAX_RESOURCE_MB} MiB`),
    disk: z
      .number()
      .int()
      .min(0, 'must not be negative')
      .max(MAX_RESOURCE_MB * MiB, `must be at most ${MAX_RESOURCE_MB} MiB`),
    /** Aurora's GPU count: mxc places no GPUs, so only 0 is accepted. */
    gpu: z.literal(0, { error: 'mxc does not schedule GPUs; leave gpu out or 0' }).optional(),
  })
  .strict();

/** Thermos' Logger: accepted so Aurora documents parse; mxc's agent logs every process itself. */
const AuroraLogger = z
  .object({
    destination: z.enum(['file', 'console', 'both', 'none']).optional(),
    mode: z.enum(['standard', 'rotate']).optional(),
    rotate: z
      .object({ log_size: z.number().int().min(0).optional(), backups: z.number().int().min(0).optional() })
      .strict()
      .optional(),
  })
  .strict();

/**
 * Job, role, cluster and environment names and secret names: used in keys, file names and paths, so
 * they start with a letter, digit or _ (never `.`, `..` or `-…`) and hold no `/`.
 */
const SafeName = z
  .string()
  .regex(
    /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/,
    'must be 1-128 characters of letters, digits, _ . -, starting with a letter, digit or _',
  );

/** One command line, pinned to store paths (Thermos process). */
export const Process = z
  .object({
    name: ProcessName,
    cmdline: z.string().min(1, 'must not be empty'),
    /** Restarts allowed before the process counts as failed (0 = unlimited, as in Thermos). */
    max_failures: z.number().int().min(0).default(1),
    /** Restarted even after a successful exit. */
    daemon: z.boolean().default(false),
    /** Not waited for: the task may finish while it still runs. */
    ephemeral: z.boolean().default(false),
    /** Runs at teardown, after the other processes have stopped. */
    final: z.boolean().default(false),
    /** A run shorter than this (seconds) delays the restart until it has passed. */
    min_duration: waitSecs().default(5),
    /** Aurora's log destination settings; mxc keeps every process's output in its own log store. */
    logger: AuroraLogger.optional(),
    /** Reserved by Thermos ("currently unused"); accepted for Aurora documents, not enforced. */
    resources: Resources.optional(),
  })
  .strict();

/** `{ order = [ "a" "b" ] }`: b starts only after a has finished successfully. */
export const OrderConstraint = z
  .object({
    order: z.array(ProcessName).min(2, 'an order constraint names at least two processes').max(256),
  })
  .strict();

export const Task = z
  .object({
    name: ProcessName,
    processes: z.array(Process).min(1, 'a task needs at least one process').max(256),
    constraints: z.array(OrderConstraint).max(256).default([]),
    resources: Resources.optional(),
    max_failures: z.number().int().min(0).default(1),
    max_concurrency: z.number().int().min(0).default(0),
    finalization_wait: waitSecs().default(30),
    /** Aurora's task user (MESOS-3546 stop-gap); mxc runs a workload as the agent's user. */
    user: z.string().optional(),
  })
  .strict();

export const UpdateConfig = z
  .object({
    batch_size: z.number().int().min(1).default(1),
    restart_threshold: waitSecs().int().default(60),
    watch_secs: waitSecs().int().default(45),
    max_per_shard_failures: z.number().int().min(0).default(0),
    max_total_failures: z.number().int().min(0).default(0),
    rollback_on_failure: z.boolean().default(true),
    wait_for_batch_completion: z.boolean().default(false),
    /** Aurora's update heartbeat: an update with it pauses when no pulse arrives in time. */
    pulse_interval_secs: waitSecs().int().min(1).optional(),
  })
  .strict();

export const HealthCheckConfig = z
  .object({
    initial_interval_secs: waitSecs().default(15),
    interval_secs: waitSecs().default(10),
    timeout_secs: waitSecs().default(1),
    max_consecutive_failures: z.number().int().min(0).default(0),
    /** A plain path on the workload's own port: never `@host:port/…` or `//host/…`. */
    endpoint: z
      .string()
      .regex(
        /^\/(?!\/)[A-Za-z0-9._~!$&'()*+,;=:%/-]*(\?[A-Za-z0-9._~!$&'()*+,;=:%/?-]*)?$/,
        'must be a plain path such as /health (no host, no @, no //)',
      )
      .default('/health'),
    expected_response: z.string().default('ok'),
    expected_response_code: z.number().int().min(0).default(0),
  })
  .strict();

export const Announcer = z
  .object({
    primary_port: z.string().default('http'),
    /** Aurora's `portmap`: alias → port name (`aurora = "http"`) or a static port number as text. */
    portmap: boundedRecord(
      z.string().min(1).max(128),
      z.string().max(128),
      MAX_PORTMAP_ENTRIES,
      'portmap aliases',
    ).optional(),
  })
  .strict();

/** Aurora's LifecycleConfig: accepted so Aurora documents parse (mxc stops with SIGTERM + grace). */
const LifecycleConfig = z
  .object({
    http: z
      .object({
        port: z.string().optional(),
        graceful_shutdown_endpoint: z.string().optional(),
        shutdown_endpoint: z.string().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** A node attribute's name, as a node reports it and a constraint names it. */
export const AttributeName = z
  .string()
  .min(1)
  .max(MAX_ATTRIBUTE_NAME_CHARS)
  .regex(/^[A-Za-z0-9_.-]+$/, 'attribute names use letters, digits, _ . -');

/**
 * Control characters (C0, DEL, C1): none in a name or value that is printed, since a terminal acts on
 * them (an escape sequence retitles or clears it, a CR LF forges a row).
 */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Placement constraints, Aurora style: attribute → value. `"value"` must match the node attribute,
 * `"!value"` must not, `"limit:N"` allows at most N instances of the job per attribute value.
 * The attribute `dedicated` reserves nodes: a node with a `dedicated` attribute takes only jobs
 * that ask for that value.
 */
export const PlacementConstraints = boundedRecord(
  AttributeName,
  z.string().min(1).max(MAX_ATTRIBUTE_VALUE_CHARS),
  MAX_NODE_ATTRIBUTES,
  'constraints',
);

export const Isolation = z.enum(['process', 'sandbox', 'microvm']);

const StorePath = z
  .string()
  .regex(/^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/, 'must be a /nix/store path');

/**
 * mxc's own fields: the sidecar document nixlib writes next to the Aurora job (`…​.mxc.json`), joined
 * under `mxc` in the spec mxc's API takes. Aurora never sees them.
 */
export const MxcFields = z
  .object({
    isolation: Isolation.default('process'),
    /** Network for sandboxed and microVM workloads: `host` shares the host's, `none` unshares it. */
    network: z.enum(['host', 'none']).default('host'),
    env: boundedRecord(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are [A-Za-z_][A-Za-z0-9_]*'),
      z.string(),
      MAX_ENV_VARS,
      'environment variables',
    ).default({}),
    /** Named ports; the agent allocates each and exports `MXC_PORT_<NAME>`. */
    ports: z
      .array(z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, 'port names are 1-63 lower-case [a-z][a-z0-9_]*'))
      .max(64)
      .default([]),
    /** Store paths whose closure the job needs (the process scripts at least). */
    closure: z.array(StorePath).max(10_000).default([]),
    /** Secret names; values are delivered by the agent at start, never through the store. */
    secrets: z.array(SafeName).max(256).default([]),
    /** The named port the HTTP health check talks to (default: the announcer's primary port). */
    health_port: z.string().optional(),
  })
  .strict();

/** Apache Aurora's Job (config/schema/base.py, 0.10–0.11, the nix-aurora era): what nix-build outputs. */
export const AuroraJob = z
  .object({
    name: SafeName,
    role: SafeName,
    cluster: SafeName,
    environment: SafeName,
    contact: z.string().nullable().optional(),
    instances: z.number().int().min(1).max(10000).default(1),
    task: Task,
    announce: Announcer.nullable().optional(),
    cron_schedule: z
      .string()
      .max(MAX_CRON_CHARS, `must be at most ${MAX_CRON_CHARS} characters`)
      .nullable()
      .optional(),
    cron_collision_policy: z.enum(['KILL_EXISTING', 'CANCEL_NEW', 'RUN_OVERLAP']).default('KILL_EXISTING'),
    constraints: PlacementConstraints.nullable().optional(),
    service: z.boolean().default(false),
    update_config: UpdateConfig.optional(),
    max_task_failures: z.number().int().min(-1).default(1),
    production: z.boolean().default(false),
    priority: z.number().int().default(0),
    health_check_config: HealthCheckConfig.optional(),
    enable_hooks: z.boolean().default(false),
    tier: z.string().optional(),
    lifecycle: LifecycleConfig.optional(),
    /** Aurora's UI links ("unsupported" upstream, AURORA-739): stored, shown, not interpreted. */
    task_links: boundedRecord(
      z.string().max(128),
      z.string().max(4096),
      MAX_TASK_LINKS,
      'task links',
    ).optional(),
  })
  .strict();

/** The job as mxc's API takes it: the Aurora job plus the sidecar's fields under `mxc`. */
export const JobSpec = AuroraJob.extend({ mxc: MxcFields.default(MxcFields.parse({})) })
  .strict()
  .superRefine((job, ctx) => {
    const names = new Set<string>();
    job.task.processes.forEach((p, i) => {
      if (names.has(p.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['task', 'processes', i, 'name'],
          message: `duplicate process name "${p.name}"`,
        });
      }
      names.add(p.name);
    });
    job.task.constraints.forEach((c, i) => {
      c.order.forEach((n, j) => {
        if (!names.has(n)) {
          ctx.addIssue({
            code: 'custom',
            path: ['task', 'constraints', i, 'order', j],
            message: `order names process "${n}", which the task does not have`,
          });
        }
      });
    });
    job.task.processes.forEach((p, i) => {
      for (const message of bindingProblems(p.cmdline, job.mxc.ports)) {
        ctx.addIssue({ code: 'custom', path: ['task', 'processes', i, 'cmdline'], message });
      }
    });
    // Thermos runs final processes at teardown only: a regular process ordered after one could never run.
    const byName = new Map(job.task.processes.map((p) => [p.name, p]));
    job.task.constraints.forEach((c, i) => {
      for (let j = 0; j + 1 < c.order.length; j++) {
        const before = byName.get(c.order[j]!);
        const after = byName.get(c.order[j + 1]!);
        if (before?.final && after && !after.final) {
          ctx.addIssue({
            code: 'custom',
            path: ['task', 'constraints', i, 'order', j + 1],
            message:
              `non-final process "${after.name}" is ordered after final process "${before.name}"; ` +
              'final processes run at teardown, so only final processes may follow them',
          });
        }
      }
    });
    const cycle = findOrderCycle(job.task.constraints.map((c) => c.order));
    if (cycle) {
      ctx.addIssue({
        code: 'custom',
        path: ['task', 'constraints'],
        message: `order constraints form a cycle: ${cycle.join(' → ')}`,
      });
    }
    if (job.cron_schedule && job.service) {
      ctx.addIssue({
        code: 'custom',
        path: ['cron_schedule'],
        message: 'a service cannot have a cron_schedule',
      });
    }
    if (job.health_check_config && job.mxc.network === 'none' && job.mxc.isolation !== 'process') {
      ctx.addIssue({
        code: 'custom',
        path: ['health_check_config'],
        message:
          'a job with mxc.network = "none" cannot be health-checked over HTTP; give it network "host" or drop the check',
      });
    }
    if (job.mxc.health_port !== undefined && !job.mxc.ports.includes(job.mxc.health_port)) {
      ctx.addIssue({
        code: 'custom',
        path: ['mxc', 'health_port'],
        message: `names port "${job.mxc.health_port}", which mxc.ports does not declare`,
      });
    }
    if (job.cron_schedule) {
      try {
        nextRun(parseCron(job.cron_schedule), new Date(0));
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['cron_schedule'], message: (err as Error).message });
      }
    }
  });

export type JobSpec = z.infer<typeof JobSpec>;
export type AuroraJob = z.infer<typeof AuroraJob>;
export type MxcFields = z.infer<typeof MxcFields>;
export type JobSpecInput = z.input<typeof JobSpec>;
export type Task = z.infer<typeof Task>;
export type Process = z.infer<typeof Process>;
export type Resources = z.infer<typeof Resources>;
export type Isolation = z.infer<typeof Isolation>;

/** Default resources when a task names none (Aurora's defaults are per cluster; these are ours). */
export const DEFAULT_RESOURCES: Resources = { cpu: 1, ram: 256 * 1024 * 1024, disk: 1024 * 1024 * 1024 };

/** The stable identity of a job: resubmitting the same key replaces its workloads. */
export function jobKey(job: Pick<JobSpec, 'cluster' | 'role' | 'environment' | 'name'>): string {
  return `${job.cluster}/${job.role}/${job.environment}/${job.name}`;
}

/** Returns one cycle of the order graph (as a list of names, first repeated at the end), or null. */
export function findOrderCycle(orders: string[][]): string[] | null {
  const edges = new Map<string, Set<string>>();
  for (const order of orders) {
    for (let i = 0; i + 1 < order.length; i++) {
      const from = order[i]!;
      if (!edges.has(from)) edges.set(from, new Set());
      edges.get(from)!.add(order[i + 1]!);
    }
  }
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    if (state.get(n) === 'done') return null;
    if (state.get(n) === 'open') return [...stack.slice(stack.indexOf(n)), n];
    state.set(n, 'open');
    stack.push(n);
    for (const m of edges.get(n) ?? []) {
      const c = visit(m);
      if (c) return c;
    }
    stack.pop();
    state.set(n, 'done');
    return null;
  };
  for (const n of edges.keys()) {
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

const STORE_ROOT = /\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+/g;
const SIDECAR = /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]*\.mxc\.json$/;
const PORT_BINDING = /\{\{thermos\.ports\[([^\]{}]+)\]\}\}/g;

/** An Aurora job's processes, for the helpers below (only name and cmdline are read). */
type AuroraProcesses = { task?: { processes?: { name?: unknown; cmdline?: unknown }[] } };

/**
 * The sidecar (`….mxc.json`, mxc's fields) the `nix_init_*` processes of a nixlib-built Aurora job
 * name, or null for an Aurora job written without nixlib. Throws when they name different ones.
 */
export function sidecarPathOf(job: AuroraProcesses): string | null {
  const found = new Set<string>();
  for (const p of job.task?.processes ?? []) {
    if (typeof p.name !== 'string' || !p.name.startsWith('nix_init_') || typeof p.cmdline !== 'string')
      continue;
    for (const w of p.cmdline.trim().split(/\s+/)) if (SIDECAR.test(w)) found.add(w);
  }
  if (found.size > 1)
    throw new Error(`the nix_init processes name ${found.size} different sidecars: ${[...found].join(', ')}`);
  return found.size ? [...found][0]! : null;
}

/**
 * mxc's fields for an Aurora job that has no sidecar: its closure roots are the store paths its
 * cmdlines mention, its ports the ones they bind (`{{thermos.ports[NAME]}}`); the rest defaults.
 */
export function mxcFieldsFromAurora(job: AuroraProcesses): z.input<typeof MxcFields> {
  const closure = new Set<string>();
  const ports = new Set<string>();
  for (const p of job.task?.processes ?? []) {
    if (typeof p.cmdline !== 'string') continue;
    for (const m of p.cmdline.matchAll(STORE_ROOT)) closure.add(m[0]);
    for (const m of p.cmdline.matchAll(PORT_BINDING)) ports.add(m[1]!);
  }
  return { closure: [...closure], ports: [...ports] };
}

/** Every problem of a failed parse, as `path: message` lines. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
}
