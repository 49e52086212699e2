/**
 * `mxc`: the command definitions, only. Each command's work lives in `cli/commands/`, imported lazily so
 * `--help` stays fast. This is the only module that turns errors into exit codes.
 */
import type { Command } from 'commander';
import { config as zodConfig } from 'zod/v4/core';
import type { StartedCommand } from '../lib/exec.js';
import type { EarlyRequest } from '../lib/http-answer.js';
import { MXC_VERSION } from '../lib/version.js';
import { CliError, printable } from './errors.js';
import { madeStreams, watchStdio, writeOut } from './stdio.js';

export const VERSION = MXC_VERSION;

/**
 * commander, loaded by main() when the command line needs it: a plain `mxc build` or `mxc cluster
 * status` (read by the launcher, bin/build-early.js and bin/client-early.js) and `mxc version` do not. Its module, the program, the command's
 * definition and their part of the code cache cost `mxc build` ~3 ms of CPU (the node process's own,
 * 84.3 -> 81.2 ms, medians of 30 interleaved runs at chrt -f 1), of its ~22 ms over `node -e 0`.
 */
let commander: typeof import('commander') | undefined;
let Option: typeof import('commander').Option;
let program: Command;

async function loadProgram(): Promise<void> {
  commander = await import('commander');
  Option = commander.Option;
  program = new commander.Command('mxc')
    .description('mxc: a Nix-native workload orchestrator')
    .version(VERSION, '-V, --version')
    // Usage errors are thrown to main(), which exits 2 (commander would exit 1).
    .exitOverride()
    .enablePositionalOptions()
    // The client options work before the command too: `mxc -c URL nodes list`.
    .addOption(new Option('-c, --coordinator <url>', 'coordinator URL').env('MXC_COORDINATOR'))
    .addOption(new Option('--token <token>', 'API token').env('MXC_API_TOKEN'))
    .addOption(new Option('--token-file <file>', 'file holding the API token (MXC_API_TOKEN_FILE)'))
    .option('--json', 'print JSON for scripts (errors too)')
    .addOption(
      new Option('-f, --format <format>', 'output format (json is --json)').choices(['table', 'json']),
    )
    .showHelpAfterError('(run with --help for usage)')
    // Help and --version on a pipe without making process.stdout (cli/stdio.ts).
    .configureOutput({ writeOut })
    .addHelpText(
      'after',
      `
Examples:
  $ npx mxc up                                                   # coordinator + agent + demo on :4000
  $ nix-build examples/hello_world --no-out-link | npx mxc submit --wait
  $ npx mxc workloads list
  $ npx mxc workloads logs <id> -f

Environment: MXC_COORDINATOR (default http://127.0.0.1:4000), MXC_API_TOKEN (or MXC_API_TOKEN_FILE),
MXC_AGENT_TOKEN(_FILE), DATABASE_URL or DATABASE_HOST/… (PostgreSQL; embedded PGlite when unset),
MXC_HEARTBEAT_TTL (seconds), MXC_MODE (for \`mxc serve\`): every variable is in the README's table.`,
    );
}

const clientCommands = new WeakSet<Command>();

/**
 * Options every client command takes. `-f table|json` is samrose/mxc's spelling of `--json` (`logs`,
 * where `-f` is --follow as in `tail -f`, takes `--format` only).
 */
function client(cmd: Command, opts: { formatShort?: boolean } = {}): Command {
  clientCommands.add(cmd);
  return cmd
    .addOption(new Option('-c, --coordinator <url>', 'coordinator URL').env('MXC_COORDINATOR'))
    .addOption(new Option('--token <token>', 'API token').env('MXC_API_TOKEN'))
    .addOption(new Option('--token-file <file>', 'file holding the API token (MXC_API_TOKEN_FILE)'))
    .option('--json', 'print JSON for scripts')
    .addOption(
      new Option(
        opts.formatShort === false ? '--format <format>' : '-f, --format <format>',
        'output format (json is --json)',
      ).choices(['table', 'json']),
    );
}

/** A subcommand's help ends with an example. */
const example = (cmd: Command, text: string) => cmd.addHelpText('after', `\nExample:\n  $ ${text}`);

/**
 * A command that ends when its work is done parses each shape about once: zod's compiled fast path
 * (JavaScript generated per object shape, then compiled by V8) costs more than it saves there. Set
 * before the command's module builds its schemas, which read it then (spec/job.ts parses one while it
 * builds JobSpec). The daemons parse messages for as long as they run and keep it. `mxc jobs list`'s
 * parse of 4 jobs: 8 -> 3 ms; `mxc build`: 101.2 -> 99.2 ms CPU (A/B of 60 at chrt -f 1, load 10).
 */
function parseOnce(): void {
  if (!daemon) zodConfig({ jitless: true });
}

const lazy =
  <M, K extends keyof M>(load: () => Promise<M>, name: K) =>
  async (...args: unknown[]) => {
    parseOnce();
    const mod = await load();
    // Commander passes (args…, options, command); our functions take (args…, options), the options
    // given before the command name included.
    const cmd = args.at(-1) as Command;
    return (mod[name] as (...a: unknown[]) => Promise<void>)(...args.slice(0, -2), withGlobals(cmd));
  };

/** A client command's options with the program-level ones (given before the command name) filled in. */
function withGlobals(cmd: Command): Record<string, unknown> {
  const out: Record<string, unknown> = { ...cmd.opts() };
  if (!clientCommands.has(cmd)) return out;
  for (const [k, v] of Object.entries(program.opts())) {
    if (v === undefined) continue;
    // Given on the command line before the command, it beats the command's environment default.
    const before = program.getOptionValueSource(k) === 'cli' && cmd.getOptionValueSource(k) !== 'cli';
    if (out[k] === undefined || before) out[k] = v;
  }
  // `-f json` / `--format json` (samrose/mxc's flag) is `--json`.
  if (out.format === 'json') out.json = true;
  return out;
}

const daemons = () => import('./commands/daemons.js');

/**
 * Set by the daemon commands (up, coordinator, serve, agent): they return once a signal has stopped
 * them, and then the process ends as their handles close. Every other command's process exits as soon
 * as it has returned and its output is written (main).
 */
let daemon = false;
const untilSignal =
  (action: (...args: unknown[]) => Promise<void>) =>
  (...args: unknown[]) => {
    daemon = true;
    return action(...args);
  };
/**
 * The top-level commands, each with its subcommands, in the order help lists them. A command's
 * definition (its options, help texts, subcommands) is made only when main() needs it: all of them
 * took ~3 ms of `mxc version`'s ~8 ms over `node -e 0`, most of it building commands it never runs.
 */
const commands: { names: string[]; define: () => void; needsAll?: boolean }[] = [];
function command(names: string[], define: () => void, opts: { needsAll?: boolean } = {}): void {
  commands.push({ names, define, ...opts });
}

const workloads = () => import('./commands/workloads.js');
const nodes = () => import('./commands/nodes.js');
const jobs = () => import('./commands/jobs.js');
const store = () => import('./commands/store.js');

command(['up'], () => {
  program
    .command('up')
    .description('run a standalone cluster (coordinator + one agent) and submit the hello_world demo')
    .option('-p, --port <port>', 'HTTP port (PORT, default 4000)')
    .option('--host <host>', 'address to listen on (MXC_LISTEN_ADDRESS, default 127.0.0.1)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate chain (MXC_TLS_CERT)')
    .option('--tls-key <file>', 'the PEM key for --tls-cert (MXC_TLS_KEY)')
    .option('--insecure', 'allow an open API (no token) on a non-loopback address (MXC_INSECURE)')
    .option('-d, --data-dir <dir>', 'state directory (MXC_DATA_DIR, default .mxc)')
    .option('--no-demo', 'do not build and submit examples/hello_world')
    .addHelpText('after', '\nExample:\n  $ npx mxc up --port 4000 --data-dir ./.mxc')
    .action(untilSignal(lazy(daemons, 'up')));
});

command(['coordinator'], () => {
  program
    .command('coordinator')
    .description(
      'run the coordinator alone (PostgreSQL from DATABASE_URL or DATABASE_HOST, else embedded PGlite)',
    )
    .option('-p, --port <port>', 'HTTP port (PORT, default 4000)')
    .option('--host <host>', 'address to listen on (MXC_LISTEN_ADDRESS, default 127.0.0.1)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate chain (MXC_TLS_CERT)')
    .option('--tls-key <file>', 'the PEM key for --tls-cert (MXC_TLS_KEY)')
    .option('--insecure', 'allow an open API (no token) on a non-loopback address (MXC_INSECURE)')
    .option('-d, --data-dir <dir>', 'state directory (MXC_DATA_DIR, default .mxc)')
    .option('--advertise-url <url>', 'the URL others reach this coordinator at (MXC_ADVERTISE_URL)')
    .option('--cache-dir <dir>', 'binary cache directory, shareable by coordinators (MXC_CACHE_DIR)')
    .option(
      '--cache-s3 <url>',
      'binary cache in an S3-compatible bucket: s3://bucket/prefix?endpoint=…&region=… (MXC_CACHE_S3_URL)',
    )
    .option(
      '--cache-key-file <file>',
      'cache signing key file, the same for every coordinator (MXC_CACHE_KEY_FILE)',
    )
    .option(
      '--cache-compression <none|br>',
      'how the cache stores NARs (MXC_CACHE_COMPRESSION, default none)',
    )
    .addHelpText(
      'after',
      '\nExample:\n  $ MXC_API_TOKEN_FILE=/run/secrets/api DATABASE_URL=postgres://127.0.0.1/mxc npx mxc coordinator --port 4000',
    )
    .action(untilSignal(lazy(daemons, 'coordinator')));
});

command(['serve'], () => {
  program
    .command('serve')
    .description(
      'run the role MXC_MODE names (standalone, coordinator or agent), configured by the environment only',
    )
    .addHelpText(
      'after',
      '\nExample:\n  $ MXC_MODE=agent MXC_COORDINATOR=http://10.0.0.1:4000 MXC_AGENT_TOKEN_FILE=/run/secrets/join npx mxc serve',
    )
    .action(untilSignal(lazy(daemons, 'serve')));
});

command(['agent'], () => {
  const agentCommand = program
    .command('agent')
    .description('run an agent that joins a coordinator and runs workloads')
    .addOption(new Option('-c, --coordinator <url>', 'coordinator URL').env('MXC_COORDINATOR'))
    .addOption(new Option('--token-file <file>', 'file holding the agent join token (MXC_AGENT_TOKEN_FILE)'))
    .addOption(
      new Option('--token <token>', 'agent join token (MXC_AGENT_TOKEN; visible in ps: prefer --token-file)'),
    )
    .addOption(new Option('--name <name>', 'node name (default: hostname)').env('MXC_AGENT_NAME'))
    .addOption(new Option('--cpu <n>', 'cpu cores offered (0 or unset: detected)').env('MXC_AGENT_CPU'))
    .addOption(
      new Option('--memory <mb>', 'memory offered in MiB (0 or unset: detected)').env('MXC_AGENT_MEMORY'),
    )
    .addOption(
      new Option('--disk <mb>', 'disk offered in MiB (0 or unset: free space)').env('MXC_AGENT_DISK'),
    )
    .addOption(
      new Option('--state-dir <dir>', 'agent state directory')
        .env('MXC_AGENT_STATE_DIR')
        .default('.mxc/agent'),
    )
    .addOption(
      new Option('--store-root <dir>', 'run on a chroot nix store under DIR').env('MXC_AGENT_STORE_ROOT'),
    )
    .option('--attr <key=value...>', 'node attributes for placement constraints')
    .addOption(
      new Option('--secrets-dir <dir>', 'one file per secret that jobs reference by name').env(
        'MXC_AGENT_SECRETS_DIR',
      ),
    )
    .addOption(
      new Option('--cache-key <name:key>', 'trust this cache key instead of asking the coordinator').env(
        'MXC_CACHE_PUBLIC_KEY',
      ),
    )
    .addOption(
      new Option('--gc-min-free <mb>', 'collect garbage when the store has less free space (0: never)').env(
        'MXC_AGENT_GC_MIN_FREE',
      ),
    )
    .addOption(
      new Option('--log-retention <days>', 'keep logs of ended workloads this long (default 7)').env(
        'MXC_AGENT_LOG_RETENTION',
      ),
    )
    .addHelpText(
      'after',
      '\nExample:\n  $ npx mxc agent --coordinator http://10.0.0.1:4000 --token-file /run/secrets/join --attr rack=a1',
    )
    .action(untilSignal(lazy(daemons, 'agent')));
  example(
    agentCommand
      .command('gc')
      .description(
        "delete store paths this agent fetched that no workload needs (with --store-root: whatever its own store's roots do not keep); the host store's other paths are left alone",
      )
      .addOption(
        new Option('--state-dir <dir>', 'agent state directory')
          .env('MXC_AGENT_STATE_DIR')
          .default('.mxc/agent'),
      )
      .addOption(new Option('--store-root <dir>', 'the agent’s chroot store').env('MXC_AGENT_STORE_ROOT'))
      .option('--json', 'print JSON for scripts'),
    'npx mxc agent gc --state-dir /var/lib/mxc/agent',
  ).action(lazy(daemons, 'agentGc'));
});

command(['submit'], () => {
  client(program.command('submit [file]'))
    .description('submit a job: the store path nix-build printed, a JSON file, or JSON on stdin')
    .option('-w, --wait', 'wait until the workloads run (non-zero exit with the reason if they cannot)')
    .option('--timeout <seconds>', 'how long --wait waits', '300')
    .option('--no-push', 'do not upload the closure to the coordinator cache')
    .addHelpText(
      'after',
      '\nExample:\n  $ nix-build examples/hello_world --no-out-link | npx mxc submit --wait',
    )
    .action(async (file: string | undefined, _opts, cmd: Command) =>
      (await import('./commands/submit.js')).submit(file, withGlobals(cmd)),
    );
});

command(['push'], () => {
  client(program.command('push [paths...]'))
    .description(
      'upload the closures of store paths (arguments, or stdin) to the coordinator cache: only what it lacks',
    )
    .addHelpText(
      'after',
      '\nExample:\n  $ nix-build examples/web --no-out-link | npx mxc push\n(needs a token with push scope when the coordinator has tokens)',
    )
    .action(async (paths: string[], _opts, cmd: Command) =>
      (await import('./commands/push-closure.js')).push(paths, withGlobals(cmd), early.pathInfo),
    );
});

command(['build'], () => {
  program
    .command('build <file>')
    .description('nix-build a job expression, validate it, print the store path of its JSON')
    .option('-A, --attr <attr>', 'attribute to build')
    .option('--json', 'print the job spec instead of its store path')
    .addHelpText(
      'after',
      '\nExamples:\n  $ npx mxc build examples/web\n  $ npx mxc build ./job.nix --argstr env staging   # a job file taking { env ? "prod", ... }:\n(--arg NAME EXPR and --argstr NAME VALUE are passed to nix-build)',
    )
    .action((file: string, opts) => build(file, { ...opts, ...nixArgs }));
});

/** `mxc build`: from commander's action, or from main() for the command line the launcher read. */
async function build(
  file: string,
  opts: { attr?: string; json?: boolean; arg?: string[]; argstr?: string[] },
): Promise<void> {
  parseOnce();
  return (await import('./commands/build.js')).build(file, opts, early.nixBuild);
}

command(['workloads', 'wl'], () => {
  const wl = program.command('workloads').alias('wl').description('workloads (placed instances of jobs)');
  example(
    client(wl.command('list'))
      .description('list live workloads (pending, starting, running, stopping); --all for history too')
      .option('-a, --all', 'ended workloads too (stopped, failed, lost)')
      .option('--status <s,...>', 'filter by status')
      .option('--job <job>', 'filter by job id or key')
      .option('--node <node>', 'filter by node id or name'),
    'npx mxc workloads list --status pending,failed',
  ).action(lazy(workloads, 'list'));
  example(
    client(wl.command('show <id>')).description(
      'a workload: status, why it is pending, processes, event history',
    ),
    'npx mxc workloads show hello_world-0-1a2b3c4d',
  ).action(lazy(workloads, 'show'));
  example(
    client(wl.command('create <file>').alias('deploy')).description(
      'run one command (samrose/mxc): FILE.json is {type, command, args, env, cpu, memory_mb, constraints}',
    ),
    'npx mxc workloads create workload.json',
  ).action(lazy(workloads, 'create'));
  example(
    client(wl.command('stop <id>')).description('stop a workload'),
    'npx mxc workloads stop hello_world-0-1a2b3c4d',
  ).action(lazy(workloads, 'stop'));
  example(
    client(wl.command('events <id>')).description('a workload’s status history'),
    'npx mxc workloads events hello_world-0-1a2b3c4d',
  ).action(lazy(workloads, 'events'));
  example(
    client(wl.command('logs <id>'), { formatShort: false })
      .description('output of a workload’s processes')
      .option('-p, --process <name>', 'only this process')
      .option('-f, --follow', 'keep printing new lines until the workload ends')
      .option('-n, --tail <lines>', 'how many recent lines', '1000')
      .option('-t, --timestamps', 'prefix each line with its time (UTC, ISO 8601)'),
    'npx mxc workloads logs hello_world-0-1a2b3c4d -p hello_world -f',
  ).action(lazy(workloads, 'logs'));
});

command(['nodes'], () => {
  const nd = program.command('nodes').description('nodes (agents) of the cluster');
  example(
    client(nd.command('list'))
      .description('list nodes by name (every page, or the first --limit)')
      .option('--limit <n>', 'only the first n nodes'),
    'npx mxc nodes list --json',
  ).action(lazy(nodes, 'list'));
  example(
    client(nd.command('show <id>')).description('a node, its resources and workloads'),
    'npx mxc nodes show local',
  ).action(lazy(nodes, 'show'));
  example(
    client(nd.command('drain <id>'))
      .description('move a node’s workloads elsewhere and take no new ones')
      .option('--undo', 'end the drain'),
    'npx mxc nodes drain worker-3        # later: npx mxc nodes drain worker-3 --undo',
  ).action(lazy(nodes, 'drain'));
  example(
    client(nd.command('remove <id>')).description(
      'forget a node (reinstalled machine): its workloads move, its next join gets a new node secret',
    ),
    'npx mxc nodes remove worker-3',
  ).action(lazy(nodes, 'remove'));
});

command(['jobs'], () => {
  const jb = program.command('jobs').description('submitted jobs and their versions');
  example(client(jb.command('list')).description('list jobs'), 'npx mxc jobs list').action(
    lazy(jobs, 'list'),
  );
  example(
    client(jb.command('show <id>')).description(
      'a job and its workloads (id, cluster/role/env/name, or name)',
    ),
    'npx mxc jobs show devcluster/www-data/devel/hello_world',
  ).action(lazy(jobs, 'show'));
  example(
    client(jb.command('restart <id>')).description(
      'restart a job’s workloads without a config change (batch by batch with an update_config)',
    ),
    'npx mxc jobs restart web',
  ).action(lazy(jobs, 'restart'));
  example(
    client(jb.command('plan [file]')).description(
      'what a submit would do, changing nothing: new/changed/unchanged, instances, closure diff, fit',
    ),
    'npx mxc jobs plan $(nix-build examples/web --no-out-link)',
  ).action(lazy(jobs, 'plan'));
  for (const [name, fn, what] of [
    ['pause', 'pauseUpdate', 'pause the job’s rolling update: no batch moves on until it is resumed'],
    ['resume', 'resumeUpdate', 'resume the job’s paused update'],
    [
      'abort',
      'abortUpdate',
      'abort the job’s rolling or paused update; instances stay on the versions they run',
    ],
  ] as const)
    example(client(jb.command(`${name} <id>`)).description(what), `npx mxc jobs ${name} web`).action(
      lazy(jobs, fn),
    );
  example(
    client(jb.command('run <id>')).description(
      'launch a cron job’s run now, outside its schedule (its cron_collision_policy applies)',
    ),
    'npx mxc jobs run nightly-report',
  ).action(lazy(jobs, 'runNow'));
  example(
    client(jb.command('revert <id> <version>')).description(
      'submit an earlier version’s spec again (a new version with that spec)',
    ),
    'npx mxc jobs revert web 1',
  ).action(lazy(jobs, 'revert'));
  example(
    client(jb.command('stop <id>')).description('stop every workload of a job'),
    'npx mxc jobs stop hello_world',
  ).action(lazy(jobs, 'stop'));
  example(
    client(jb.command('endpoints <id>')).description(
      'service discovery: the job’s running (and healthy) instances with host and named ports',
    ),
    'npx mxc jobs endpoints devcluster/www-data/devel/web',
  ).action(lazy(jobs, 'endpoints'));
  example(
    client(jb.command('versions <id>')).description('every submitted version of a job'),
    'npx mxc jobs versions hello_world',
  ).action(lazy(jobs, 'versions'));
  example(
    client(jb.command('prewarm <id> [file]')).description(
      'realise a job’s closure (or its next version’s, from FILE) on the nodes where it runs or would go',
    ),
    'npx mxc jobs prewarm hello_world $(nix-build examples/hello_world --no-out-link)',
  ).action(lazy(store, 'prewarm'));
});

command(['where'], () => {
  example(
    client(program.command('where <path-or-name>')).description(
      'which jobs and workloads have a store path (or a name part such as "openssl") in their closure',
    ),
    'npx mxc where busybox',
  ).action(lazy(store, 'where'));
});

command(['tokens'], () => {
  const tk = program.command('tokens').description('named client and agent tokens');
  const tokens = () => import('./commands/tokens.js');
  example(
    client(tk.command('create <name>'))
      .description('create a token (printed once; only its digest is kept)')
      .option('--kind <kind>', 'client (CLI, dashboard) or agent (joining)', 'client')
      .option('--scope <scope>', 'client tokens: read, push (read + cache uploads) or admin (everything)'),
    'npx mxc tokens create ci --scope push',
  ).action(lazy(tokens, 'create'));
  example(
    client(tk.command('list')).description('list token names, kinds and scopes'),
    'npx mxc tokens list',
  ).action(lazy(tokens, 'list'));
  example(
    client(tk.command('revoke <name>')).description('revoke a token'),
    'npx mxc tokens revoke rack-a-agents',
  ).action(lazy(tokens, 'revoke'));
});

command(['cluster'], () => {
  const cl = program.command('cluster').description('the cluster as a whole');
  example(
    client(cl.command('status')).description('nodes, workloads, resources and cache key at a glance'),
    'npx mxc cluster status --json',
  ).action((_opts, cmd: Command) => clusterStatus(withGlobals(cmd)));
});

/** `mxc cluster status`: from commander's action, or from main() for the command line the launcher read. */
async function clusterStatus(opts: Record<string, unknown>): Promise<void> {
  parseOnce();
  return (await import('./commands/cluster.js')).status(opts, early.request);
}

/**
 * The options commander gives a client command that was given none (`mxc cluster status [--json]`):
 * the environment's, as Option.env reads it (a variable that is set, even empty), and --json.
 */
function plainClientOptions(argv: string[]): Record<string, unknown> {
  const opts: Record<string, unknown> = {};
  if ('MXC_COORDINATOR' in process.env) opts.coordinator = process.env.MXC_COORDINATOR;
  if ('MXC_API_TOKEN' in process.env) opts.token = process.env.MXC_API_TOKEN;
  if (argv.includes('--json')) opts.json = true;
  return opts;
}

command(
  ['completion'],
  () => {
    example(
      program.command('completion <shell>').description('print a completion script for bash, zsh or fish'),
      'eval "$(npx mxc completion bash)"',
    ).action(async (shell: string) => (await import('./commands/completion.js')).completion(shell, program));
  },
  { needsAll: true },
);

command(['__complete'], () => {
  // For the completion scripts: live ids, one a line, nothing when the coordinator is not there.
  client(program.command('__complete <kind>', { hidden: true }))
    .description('live workload ids, job keys or node names for shell completion')
    .action(lazy(() => import('./commands/completion.js'), 'complete'));
});

command(['version'], () => {
  example(
    program
      .command('version')
      .description('print the mxc version')
      .option('--json', 'as {"version": …}')
      .option('-f, --format <format>', 'table (the default) or json'),
    'npx mxc version',
  ).action((opts: { json?: boolean; format?: string }) => {
    // Given before the command too (`mxc --json version`), as for every other command.
    const g = program.opts() as { json?: boolean; format?: string };
    const json = opts.json || opts.format === 'json' || g.json || g.format === 'json';
    writeOut(json ? `${JSON.stringify({ version: VERSION })}\n` : `mxc ${VERSION}\n`);
  });
});

/** `--arg NAME EXPR` / `--argstr NAME VALUE` take two values, which commander cannot express: lift them out first. */
const nixArgs: { arg: string[]; argstr: string[] } = { arg: [], argstr: [] };
function liftNixArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === '--arg' || a === '--argstr') && argv[2] === 'build') {
      if (i + 2 >= argv.length) throw new CliError(`${a} takes a name and a value`, 2);
      nixArgs[a === '--arg' ? 'arg' : 'argstr'].push(argv[i + 1]!, argv[i + 2]!);
      i += 2;
    } else out.push(a);
  }
  return out;
}

/** The subcommands of `workloads` and `nodes`: any other word after them is an id (samrose/mxc's forms). */
const SUBCOMMANDS: Record<string, string[]> = {
  workloads: ['list', 'show', 'create', 'deploy', 'stop', 'events', 'logs', 'help'],
  nodes: ['list', 'show', 'drain', 'remove', 'help'],
};

/**
 * samrose/mxc's command forms, as its users type them: `mxc workloads` and `mxc nodes` list,
 * `mxc workloads ID` and `mxc nodes ID` show, `mxc workloads ID stop` stops (`workloads deploy FILE`
 * is `create`'s alias). Rewritten into ours before commander reads the line.
 */
function seedForms(argv: string[]): string[] {
  let i = 2;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(a)) i++;
    else if (!(GLOBAL_FLAGS.has(a) || /^--(coordinator|token|token-file|format)=/.test(a))) break;
  }
  const group = argv[i] === 'wl' ? 'workloads' : argv[i];
  const subs = group === undefined ? undefined : SUBCOMMANDS[group];
  if (!subs) return argv;
  const next = argv[i + 1];
  const head = argv.slice(0, i + 1);
  // `mxc workloads`, `mxc nodes -f json`: the list (help stays help).
  if (next === undefined || (next.startsWith('-') && next !== '-h' && next !== '--help'))
    return [...head, 'list', ...argv.slice(i + 1)];
  if (next.startsWith('-') || subs.includes(next)) return argv;
  if (group === 'workloads' && argv[i + 2] === 'stop') return [...head, 'stop', next, ...argv.slice(i + 3)];
  return [...head, 'show', ...argv.slice(i + 1)];
}

/**
 * Ends a finished command's process once stdout and stderr have taken what it wrote (on Linux they
 * write synchronously, so at once): it does not wait for idle handles to close (a finished child's
 * pipes, a kept-alive connection) nor tear the heap down, as returning to the event loop does.
 * A/B on the 2-core VM at real-time priority (medians of 40 alternating runs): `mxc build` 101.4 →
 * 100.6 ms, `mxc version` 67.7 → 67.0 ms. Only the streams that were made (cli/stdio.ts): making one
 * here to find it empty cost ~1.5 ms (stderr) after `mxc build` had printed.
 */
async function exitWhenWritten(): Promise<never> {
  for (const stream of madeStreams())
    if (stream.writableLength > 0) await new Promise((done) => stream.write('', done));
  process.exit();
}

/** The program's own options that take a value (their `--name=value` forms are one word). */
const GLOBAL_VALUE_OPTIONS = new Set(['-c', '--coordinator', '--token', '--token-file', '-f', '--format']);
const GLOBAL_FLAGS = new Set(['--json']);

/**
 * The command the command line names, when it is plain: the first word after the program's own
 * options. undefined when there is none or anything else comes first (help, version, an unknown
 * option): then every command is defined, as help, suggestions and errors need.
 */
function commandName(argv: string[]): string | undefined {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(a)) i++;
    else if (GLOBAL_FLAGS.has(a) || /^--(coordinator|token|token-file|format)=/.test(a)) continue;
    else return a.startsWith('-') ? undefined : a;
  }
  return undefined;
}

/**
 * Defines the command `argv` names, or every command when it names none plainly (commandName); none
 * for `mxc --version` alone, which commander answers from the program.
 */
function defineCommands(argv: string[]): void {
  if (argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V')) return;
  const name = commandName(argv);
  const named = name === undefined ? undefined : commands.find((c) => c.names.includes(name));
  for (const c of named && !named.needsAll ? [named] : commands) c.define();
}

/**
 * What the launcher (bin/mxc.js) started before loading this: `mxc build`'s nix-build, `mxc push`'s
 * nix path-info, `mxc cluster status`'s GET.
 */
export interface Early {
  nixBuild?: StartedCommand;
  /** The plain `mxc build` command line that nix-build was started for (bin/build-early.js). */
  build?: BuildCommandLine;
  pathInfo?: StartedCommand;
  /** `mxc cluster status`'s GET (bin/client-early.js), sent for a plain `mxc cluster status [--json]`. */
  request?: EarlyRequest;
}
let early: Early = {};

/** `mxc build FILE [-A ATTR] [--arg N V]… [--argstr N V]… [--json]`, as bin/build-early.js read it. */
export interface BuildCommandLine {
  file: string;
  attr?: string;
  json: boolean;
  arg: Record<string, string>;
  argstr: Record<string, string>;
}

/** The NAME VALUE pairs of --arg / --argstr, one after the other, as liftNixArgs collects them. */
const flatPairs = (pairs: Record<string, string>) => Object.entries(pairs).flat();

export async function main(argv = process.argv, started: Early = {}): Promise<void> {
  early = started;
  // `mxc … | head` closes our stdout early: that is the reader's choice, not an error. Attached when
  // process.stdout is made, if ever (output to a pipe or a file is written without it).
  watchStdio((stdout) =>
    stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    }),
  );
  // `-f json` / `--format json` is `--json` here too.
  const json =
    argv.includes('--json') ||
    argv.includes('--format=json') ||
    argv.some((a, i) => (a === '-f' || a === '--format') && argv[i + 1] === 'json');
  /** An error for people on stderr, or with --json an API-shaped error on stdout for scripts. */
  const fail = (
    code: string,
    message: string,
    exitCode: number,
    details?: unknown,
    remote = false,
  ): never => {
    // The human message ends with the code in brackets (and may list details after it); the JSON
    // error has the code and the details as fields of their own.
    const plain = (details === undefined ? message : message.split('\n')[0]!).replace(` [${code}]`, '');
    const error = details === undefined ? { code, message: plain } : { code, message: plain, details };
    if (json) writeOut(`${JSON.stringify({ error }, null, 2)}\n`);
    // Line by line: control characters escaped (cli/errors.ts printable), line breaks kept; the
    // coordinator's lines after its first indented, so none reads as a line of the CLI's own.
    else
      process.stderr.write(
        `mxc: ${message
          .split('\n')
          .map(printable)
          .join(remote ? '\n  ' : '\n')}\n`,
      );
    process.exit(exitCode);
  };
  try {
    const line = started.build;
    // What commander would make of these command lines, without it (the commands' actions, as
    // defined below; test/compiler/build.test.ts and test/cli/client-early.test.ts hold the
    // launcher's readings of build and cluster status to commander's).
    if (line)
      await build(line.file, {
        ...(line.attr === undefined ? {} : { attr: line.attr }),
        ...(line.json ? { json: true } : {}),
        arg: flatPairs(line.arg),
        argstr: flatPairs(line.argstr),
      });
    else if (started.request) await clusterStatus(plainClientOptions(argv));
    else if (argv.length === 3 && argv[2] === 'version') writeOut(`mxc ${VERSION}\n`);
    else {
      const args = seedForms(liftNixArgs(argv));
      await loadProgram();
      defineCommands(args);
      await program.parseAsync(args);
    }
    if (!daemon) await exitWhenWritten();
  } catch (err) {
    if (commander && err instanceof commander.CommanderError) {
      // Help and version end here too; commander already printed what it had to say.
      if (err.exitCode === 0) process.exit(0);
      if (json) fail('USAGE', err.message.replace(/^error: /, ''), 2);
      process.exit(2);
    }
    if (err instanceof CliError) {
      const code =
        err.code ?? (err.exitCode === 2 ? 'USAGE' : err.exitCode === 3 ? 'UNAUTHORIZED' : 'FAILED');
      fail(code, err.message, err.exitCode, err.details, err.remote);
    }
    // A helper command (nix, nix-store, …) that failed or is missing: its own words, not a bug in mxc.
    // By name: lib/exec.ts is not loaded by every command, and importing it here would make it so.
    if ((err as Error | undefined)?.name === 'CommandError')
      fail('COMMAND_FAILED', (err as Error).message, 1);
    process.stderr.write(
      `mxc: internal error: ${(err as Error).stack ?? String(err)}\nThis is a bug in mxc; please report it with the command you ran.\n`,
    );
    process.exit(70);
  }
}
