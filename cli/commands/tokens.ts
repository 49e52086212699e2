/** `mxc tokens create|list|revoke`: named client and agent tokens kept (as digests) by the coordinator. */
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import { printJson, printTable } from '../output.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

export async function create(name: string, opts: Opts & { kind: string }) {
  if (opts.kind !== 'client' && opts.kind !== 'agent')
    throw new CliError(`--kind is client or agent, not "${opts.kind}"`, 2);
  const t = await new ApiClient(opts).post<{ name: string; kind: string; token: string }>('/api/tokens', {
    name,
    kind: opts.kind,
  });
  if (opts.json) return printJson(t);
  process.stdout.write(`${t.token}\n`);
  process.stderr.write(`created ${t.kind} token "${t.name}"; it is shown only now, keep it safe\n`);
}

export async function list(opts: Opts) {
  const rows = await new ApiClient(opts).get<{ name: string; kind: string; created_at: string }[]>(
    '/api/tokens',
  );
  if (opts.json) return printJson(rows);
  printTable(
    ['name', 'kind', 'created'],
    rows.map((t) => [t.name, t.kind, new Date(t.created_at).toISOString()]),
  );
}

export async function revoke(name: string, opts: Opts) {
  await new ApiClient(opts).request('DELETE', `/api/tokens/${encodeURIComponent(name)}`);
  if (opts.json) return printJson({ revoked: name });
  process.stdout.write(`revoked token "${name}"\n`);
}
