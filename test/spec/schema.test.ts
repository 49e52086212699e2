/** spec/: the committed JSON Schema matches the zod schema, and the glossary-level invariants of the spec hold. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { findOrderCycle, JobSpec } from '../../spec/job.js';
import { jobJsonSchemaText } from '../../spec/json-schema.js';

describe('spec', () => {
  it('has an up-to-date spec/job.schema.json (run `npm run gen:schema` when this fails)', () => {
    expect(readFileSync(repoPath('spec', 'job.schema.json'), 'utf8')).toBe(jobJsonSchemaText());
  });

  it('finds cycles in order constraints and names them', () => {
    expect(
      findOrderCycle([
        ['a', 'b'],
        ['b', 'c'],
        ['c', 'a'],
      ]),
    ).toEqual(['a', 'b', 'c', 'a']);
    expect(
      findOrderCycle([
        ['a', 'b'],
        ['a', 'c'],
        ['b', 'c'],
      ]),
    ).toBeNull();
  });

  it('refuses a cyclic or dangling order, duplicate processes and negative resources, naming the path', () => {
    const r = JobSpec.safeParse({
      name: 'j',
      role: 'r',
      cluster: 'c',
      environment: 'e',
      task: {
        name: 't',
        processes: [
          { name: 'a', cmdline: 'x' },
          { name: 'a', cmdline: 'y' },
          { name: 'b', cmdline: 'z' },
        ],
        constraints: [{ order: ['a', 'b'] }, { order: ['b', 'a'] }, { order: ['a', 'ghost'] }],
        resources: { cpu: -1, ram: 0, disk: 0 },
      },
    });
    expect(r.success).toBe(false);
    const msgs = r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    expect(msgs).toContain('task.resources.cpu: must not be negative');
  });
});
