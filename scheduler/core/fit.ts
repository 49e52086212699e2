/**
 * What a workload asks of a node and whether it fits: the one `demandOf` (spec → cpu, MiB, MiB) and the
 * one `fits` used by the planner's checkers (Nomad's `AllocsFit`, shared by rank.go and plan_apply.go).
 * The applier's re-check under locks is the same inequality in SQL (store/placement-apply.ts, cpu
 * tolerance included): change both together.
 */
import { DEFAULT_RESOURCES, type JobSpec } from '../../spec/job.js';

/** Resources in the units nodes report: cores, MiB of memory, MiB of disk. */
export interface Resources {
  cpu: number;
  memory_mb: number;
  disk_mb: number;
}

export const RESOURCE_KEYS = ['cpu', 'memory_mb', 'disk_mb'] as const;
export type ResourceKey = (typeof RESOURCE_KEYS)[number];

const MiB = 1024 * 1024;
// Tolerate float dust in fractional cpu sums (0.1 + 0.2).
const EPS = 1e-9;

/** What one instance of a job asks for: its task's resources (bytes rounded up to MiB), or the defaults. */
export function demandOf(spec: Pick<JobSpec, 'task'>): Resources {
  const r = spec.task.resources ?? DEFAULT_RESOURCES;
  return { cpu: r.cpu, memory_mb: Math.ceil(r.ram / MiB), disk_mb: Math.ceil(r.disk / MiB) };
}

/** Whether `demand` fits next to `used` within `capacity` on one resource. */
export function fitsOn(key: ResourceKey, capacity: Resources, used: Resources, demand: Resources): boolean {
  return used[key] + demand[key] <= capacity[key] + (key === 'cpu' ? EPS : 0);
}

/** Whether `demand` fits next to `used` within `capacity` on every resource. */
export function fits(capacity: Resources, used: Resources, demand: Resources): boolean {
  return RESOURCE_KEYS.every((k) => fitsOn(k, capacity, used, demand));
}

/** Adds `demand` to `used` in place (the plan took it). */
export function take(used: Resources, demand: Resources): void {
  for (const k of RESOURCE_KEYS) used[k] += demand[k];
}
