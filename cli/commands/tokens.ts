/** `mxc tokens create|list|revoke`: named client and agent tokens kept (as digests) by the coordinator. */
import * as z from 'zod';
import * as api from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import { color, printable, printJson, printTable } from '../output.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

export async function create(name: string, opts: Opts & { kind: string; scope?: string }) {
  if (opts.kind !== 'client' && opts.kind !== 'agent')
    throw new CliError(`--kind is client or agent, not "${opts.kind}"`, 2);
  if (opts.scope !== undefined && !['read', 'push', 'admin'].includes(opts.scope))
    throw new CliError(`--scope is read, push or admin, not "${opts.scope}"`, 2);
  if (opts.scope !== undefined && opts.kind === 'agent')
    throw new CliError('--scope is for client tokens; agent tokens join agents and read the cache', 2);
  const client = new ApiClient(opts);
  const t = await client.post('/api/tokens', api.CreatedToken, {
    name,
    kind: opts.kind,
    ...(opts.scope ? { scope: opts.scope } : {}),
  });
  // Accepted without a token: the API was open until now, and this token closes it.
  const closed = client.token ? undefined : openModeWarning(t.kind);
  if (opts.json) {
    printJson(t);
    if (closed) process.stderr.write(`mxc: ${closed}\n`);
    return;
  }
  process.stdout.write(`${t.token}\n`);
  const scope = t.kind === 'client' ? ` (scope ${t.scope})` : '';
  process.stderr.write(
    `created ${t.kind} token "${printable(t.name)}"${scope}; it is shown only now, keep it safe\n`,
  );
  if (closed) process.stderr.write(`${color.yellow('note:')} ${closed}\n`);
}

function openModeWarning(kind: string): string {
  if (kind === 'agent')
    return (
      'agents must now join with an agent token (mxc agent --token TOKEN, or MXC_AGENT_TOKEN); ' +
      'the agent of `mxc up` keeps its own credential'
    );
  return (
    'the API was open and now needs a token for every request. Pass it with --token TOKEN, or\n' +
    '  export MXC_API_TOKEN=TOKEN   (the token printed above)\n' +
    'The dashboard asks for it once. A running `mxc up` goes on working: its own credential is the file\n' +
    '`local-token` in its data dir, which it prints at its next start. Agents that joined without a token\n' +
    'are disconnected: start them with an agent token (mxc tokens create NAME --kind agent).'
  );
}

export async function list(opts: Opts) {
  const rows = await new ApiClient(opts).get('/api/tokens', z.array(api.Token));
  if (opts.json) return printJson(rows);
  printTable(
    ['name', 'kind', 'scope', 'created'],
    rows.map((t) => [t.name, t.kind, t.kind === 'client' ? t.scope : '-', t.created_at.toISOString()]),
  );
}

export async function revoke(name: string, opts: Opts) {
  await new ApiClient(opts).delete(`/api/tokens/${encodeURIComponent(name)}`, z.undefined());
  if (opts.json) return printJson({ revoked: name });
  process.stdout.write(`revoked token "${name}"\n`);
}
