/**
 * The `start` message for a workload, as an object and as the text sent over the agent's socket. The
 * text is put together around its job version's spec serialised once (JSON.stringify of the whole
 * message, spec included, was most of a start's cost on the coordinator), and is exactly what
 * JSON.stringify of the object gives (a test holds the two together).
 */
import type { JobSpec } from '../spec/job.js';
import type { CoordinatorMessage } from '../spec/messages.js';
import type { WorkloadRow } from './store/workloads.js';

export type StartTarget = Pick<WorkloadRow, 'id' | 'job_id' | 'instance'>;

/** The start command for a workload, carrying its job version's spec. */
export function startMessage(w: StartTarget, spec: JobSpec): Extract<CoordinatorMessage, { type: 'start' }> {
  return { type: 'start', workload: { id: w.id, job_id: w.job_id, instance: w.instance, spec } };
}

/** `JSON.stringify(startMessage(w, spec))`, given `specJson = JSON.stringify(spec)`. */
export function startMessageText(w: StartTarget, specJson: string): string {
  return `{"type":"start","workload":{"id":${JSON.stringify(w.id)},"job_id":${JSON.stringify(w.job_id)},"instance":${JSON.stringify(w.instance)},"spec":${specJson}}}`;
}
