/** `mxc where STORE_PATH|NAME` (which jobs and workloads run a store path) and `mxc jobs prewarm`. */

import * as z from 'zod';
import { readJobInput } from '../../compiler/job-input.js';
import * as api from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { color, printJson, printTable, statusColor } from '../output.js';
import { resolveId } from '../resolve.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

const size = (b: number) =>
  b >= 1048576 ? `${(b / 1048576).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`;

export async function where(needle: string, opts: Opts) {
  const rows = await new ApiClient(opts).get(
    `/api/store-paths?contains=${encodeURIComponent(needle)}`,
    z.array(api.StorePathUse),
  );
  if (opts.json) return printJson(rows);
  if (rows.length === 0) {
    process.stdout.write(`no job's closure has a store path matching "${needle}"\n`);
    return;
  }
  printTable(
    ['store path', 'size', 'pushed by', 'job', 'version', 'workloads'],
    rows.map((r) => [
      // The name part, which the search matched, first: a narrow table cuts the end of a column.
      `${r.path.slice(44)} ${color.dim(`(${r.path.slice(11, 19)}…)`)}`,
      size(r.nar_size),
      r.pushed_by ?? '-',
      r.job,
      `${r.version}${r.current ? '' : color.dim(' (old)')}`,
      r.workloads.map((w) => `${w.id} ${statusColor(w.status)}${w.node ? ` on ${w.node}` : ''}`).join(', ') ||
        '-',
    ]),
  );
}

export async function prewarm(id: string, file: string | undefined, opts: Opts) {
  const body = file ? (await readJobInput(file, file)).spec : undefined;
  const client = new ApiClient(opts);
  id = await resolveId(client, 'job', id);
  const r = await client.post(`/api/jobs/${encodeURIComponent(id)}/prewarm`, api.PrewarmResult, body);
  if (opts.json) return printJson(r);
  process.stdout.write(`closure: ${r.paths} path(s), ${size(r.bytes)}\n`);
  printTable(
    ['node', 'missing', 'action'],
    r.nodes.map((n) => [
      n.node,
      size(n.missing_bytes),
      n.sent ? 'realising now' : n.missing_bytes ? 'not connected' : 'already warm',
    ]),
  );
}
