/**
 * Where an agent finds coordinators: a comma-separated URL list (MXC_COORDINATOR), and DNS
 * (MXC_DNS_QUERY): SRV records for a `_service._proto.name` query (each target:port), else A/AAAA
 * records of `host[:port]` (port 4000 by default). DNS-found coordinators are reached over http.
 */
import { Resolver } from 'node:dns/promises';

export function parseCoordinators(list: string): string[] {
  return list
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
}

/** Fisher-Yates: agents spread over the coordinators instead of all joining the first. */
export function shuffle<T>(xs: T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

const hostPort = (host: string, port: number) =>
  `http://${host.includes(':') ? `[${host}]` : host.replace(/\.$/, '')}:${port}`;

/** Resolves MXC_DNS_QUERY into coordinator URLs (SRV ordered by priority, then weight). */
export async function resolveCoordinators(query: string, server?: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  if (server) resolver.setServers([server]);
  if (query.startsWith('_')) {
    const srv = await resolver.resolveSrv(query);
    return srv
      .sort((a, b) => a.priority - b.priority || b.weight - a.weight)
      .map((r) => hostPort(r.name, r.port));
  }
  const m = /^(.+?)(?::(\d+))?$/.exec(query)!;
  const name = m[1]!;
  const port = m[2] ? Number(m[2]) : 4000;
  const [v4, v6] = await Promise.all([
    resolver.resolve4(name).catch(() => [] as string[]),
    resolver.resolve6(name).catch(() => [] as string[]),
  ]);
  const all = [...v4, ...v6];
  if (all.length === 0) throw new Error(`no A or AAAA records for ${name}`);
  return all.map((ip) => hostPort(ip, port));
}
