/**
 * Service discovery, Aurora's way (its Announcer writes a ServerSet per instance): from a job's spec
 * and its workloads, the instances that serve — running, and healthy when the job has a health
 * check — each with its host and named ports. Announcer `portmap` aliases resolve to the port they
 * name (`aurora = "{{primary_port}}"`, `health = "http"`) or to a static port (`https = "443"`). Pure.
 */
import type { JobSpec } from '../../spec/job.js';

export interface EndpointWorkload {
  id: string;
  instance: number;
  status: string;
  health: 'unknown' | 'healthy' | 'unhealthy' | null;
  node_id: string | null;
  ports: Record<string, number>;
}

export interface EndpointNode {
  name: string;
  /** Node attributes; `host` (as Aurora's) names the address to dial, else the node name is used. */
  attributes: Record<string, string>;
}

export interface InstanceEndpoint {
  instance: number;
  workload_id: string;
  node: string;
  host: string;
  /** The announcer's primary port, when the job announces one and it resolves. */
  primary_port: number | null;
  /** Every named port, allocated or aliased through the portmap. */
  ports: Record<string, number>;
}

/** The named ports of one instance: its allocated ones plus the portmap's aliases that resolve. */
export function namedPorts(
  spec: Pick<JobSpec, 'announce'>,
  allocated: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = { ...allocated };
  const primary = spec.announce?.primary_port;
  for (const [alias, target] of Object.entries(spec.announce?.portmap ?? {})) {
    const name = target === '{{primary_port}}' ? primary : target;
    if (name !== undefined && allocated[name] !== undefined) out[alias] = allocated[name]!;
    else if (/^[0-9]{1,5}$/.test(target) && Number(target) > 0 && Number(target) < 65536)
      out[alias] = Number(target);
  }
  return out;
}

/** The serving instances of a job, by instance number. */
export function jobEndpoints(
  spec: Pick<JobSpec, 'announce' | 'health_check_config'>,
  workloads: EndpointWorkload[],
  nodes: Map<string, EndpointNode>,
): InstanceEndpoint[] {
  const checked = spec.health_check_config !== undefined;
  const out: InstanceEndpoint[] = [];
  for (const w of workloads) {
    if (w.status !== 'running' || w.node_id === null) continue;
    if (checked && w.health !== 'healthy') continue;
    const node = nodes.get(w.node_id);
    if (!node) continue;
    const ports = namedPorts(spec, w.ports);
    const primary = spec.announce ? ports[spec.announce.primary_port] : undefined;
    out.push({
      instance: w.instance,
      workload_id: w.id,
      node: node.name,
      host: node.attributes.host ?? node.name,
      primary_port: primary ?? null,
      ports,
    });
  }
  return out.sort((a, b) => a.instance - b.instance);
}
