/** `mxc cluster status`. */

import type { EarlyRequest } from '../../lib/http-answer.js';
import { ClusterStatus } from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { ago, color, printField, printJson } from '../output.js';

export async function status(opts: ClientOptions & { json?: boolean }, early?: EarlyRequest) {
  // The GET bin/mxc.js sent before the CLI loaded, taken over when it is this one (ApiClient).
  const client = new ApiClient({ ...opts, early });
  const s = await client.get('/api/cluster/status', ClusterStatus);
  if (opts.json) return printJson({ coordinator: client.base, ...s });
  const out = (k: string, v: unknown) => printField(k, String(v), 14);
  out('coordinator', client.base);
  out('database', s.database);
  out(
    'nodes',
    `${s.node_count} (${s.nodes_ready} ready, ${s.nodes_draining} draining, ${s.nodes_down} down${
      s.nodes_not_connected ? `; ${s.nodes_not_connected} not connected` : ''
    })`,
  );
  out(
    'workloads',
    `${s.workload_count}${
      Object.keys(s.workloads_by_status).length
        ? ` (${Object.entries(s.workloads_by_status)
            .map(([k, v]) => `${v} ${k}`)
            .join(', ')})`
        : ''
    }`,
  );
  out('cpu', `${s.used_cpu} of ${s.total_cpu} reserved`);
  out('memory', `${s.used_memory_mb} of ${s.total_memory_mb} MiB reserved`);
  if (s.cache_public_key) out('cache key', s.cache_public_key);
  const coords = s.coordinators ?? [];
  out('leader', s.leader ?? 'none (election under way)');
  for (const c of coords)
    out(
      c.leader ? 'coordinator *' : 'coordinator',
      `${c.url || '-'}  ${color.dim(c.id)}  seen ${ago(c.last_seen_at)}`,
    );
}
