/**
 * JSON Schema of the job spec, generated from the zod schema (`npm run gen:schema` writes
 * spec/job.schema.json; a test fails when the committed copy is stale).
 */
import * as z from 'zod';
import { JobSpec } from './job.js';

export function jobJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(JobSpec, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return {
    $id: 'https://mxc.dev/schemas/job.schema.json',
    title: 'mxc job spec',
    description:
      'A job as nix-build of a nixlib expression produces it: nix-aurora Job/Task/Process shape plus mxc fields under "mxc".',
    ...schema,
  };
}

export function jobJsonSchemaText(): string {
  return `${JSON.stringify(jobJsonSchema(), null, 2)}\n`;
}
