/** `mxc nodes list|show|drain|undrain|remove`. */
import * as api from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import {
  ago,
  color,
  printable,
  printField,
  printJson,
  printTable,
  statusColor,
  workloadStatus,
} from '../output.js';
import { resolveId } from '../resolve.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

/** Every node, page after page (`--limit N`: the first N by name). */
export async function list(opts: Opts & { limit?: string }) {
  if (opts.limit !== undefined && !(Number.isInteger(Number(opts.limit)) && Number(opts.limit) > 0))
    throw new CliError(`--limit is a positive number, not "${opts.limit}"`, 2);
  const rows = await new ApiClient(opts).getAll(
    '/api/nodes',
    api.Node,
    opts.limit === undefined ? undefined : Number(opts.limit),
  );
  if (opts.json) return printJson(rows);
  printTable(
    ['name', 'status', 'cpu', 'memory', 'isolation', 'seen', 'id'],
    rows.map((n) => [
      n.name,
      // Within the heartbeat TTL a node whose agent left keeps its status (it may come back).
      `${statusColor(n.status)}${n.connected || n.status === 'down' ? '' : ' (not connected)'}`,
      `${round(n.used.cpu)}/${n.cpu}`,
      `${n.used.memory_mb}/${n.memory_mb} MiB`,
      n.capabilities.isolation.join(','),
      n.connected ? 'connected' : ago(n.last_seen_at),
      n.id,
    ]),
  );
}

const round = (x: number) => Math.round(x * 100) / 100;

export async function show(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'node', id);
  const n = await new ApiClient(opts).get(`/api/nodes/${encodeURIComponent(id)}`, api.NodeDetail);
  if (opts.json) return printJson(n);
  const out = (k: string, v: string) => printField(k, v, 14);
  out('name', printable(n.name));
  out('id', n.id);
  out('status', `${statusColor(n.status)}${n.connected ? '' : ' (not connected)'}`);
  out('cpu', `${round(n.used.cpu)} of ${n.cpu} reserved`);
  out('memory', `${n.used.memory_mb} of ${n.memory_mb} MiB reserved`);
  out('disk', `${n.used.disk_mb} of ${n.disk_mb} MiB reserved`);
  out('isolation', n.capabilities.isolation.join(', '));
  out('nix', n.capabilities.nix ?? 'not found');
  out('kvm', n.capabilities.kvm ? 'usable' : 'not usable');
  out(
    'attributes',
    Object.entries(n.capabilities.attributes)
      .map(([k, v]) => printable(`${k}=${v}`))
      .join(', ') || '-',
  );
  out('agent', n.version);
  out('last seen', ago(n.last_seen_at));
  process.stdout.write(`\n${color.bold('workloads')}\n`);
  printTable(
    ['id', 'status'],
    (n.workloads ?? []).map((w) => [w.id, workloadStatus(w)]),
  );
}

export async function drain(id: string, opts: Opts & { undo?: boolean }) {
  id = await resolveId(new ApiClient(opts), 'node', id);
  const n = await new ApiClient(opts).post(
    `/api/nodes/${encodeURIComponent(id)}/${opts.undo ? 'undrain' : 'drain'}`,
    api.Node,
  );
  if (opts.json) return printJson(n);
  process.stdout.write(`${printable(n.name)}: ${statusColor(n.status)}\n`);
}

/** Forgets a node, e.g. after reinstalling its machine: its next join gets a new node secret. */
export async function remove(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'node', id);
  const r = await new ApiClient(opts).delete(`/api/nodes/${encodeURIComponent(id)}`, api.RemovedNode);
  if (opts.json) return printJson(r);
  process.stdout.write(`${printable(r.name)}: removed (${r.lost} workload(s) replaced elsewhere)
`);
}
