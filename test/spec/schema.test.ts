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
    expect(msgs.sort()).toEqual([
      'task.constraints.2.order.1: order names process "ghost", which the task does not have',
      'task.constraints: order constraints form a cycle: a → b → a',
      'task.processes.1.name: duplicate process name "a"',
      'task.resources.cpu: must be more than 0 (a workload needs some CPU)',
      'task.resources.ram: must be more than 0 bytes',
    ]);
  });
});

describe('protocol', () => {
  it('refuses workload ids and pre-warm paths that could escape the agent state dir or read as options', async () => {
    const { CoordinatorMessage } = await import('../../spec/messages.js');
    expect(CoordinatorMessage.safeParse({ type: 'stop', workload_id: '..' }).success).toBe(false);
    expect(CoordinatorMessage.safeParse({ type: 'stop', workload_id: '../etc' }).success).toBe(false);
    expect(CoordinatorMessage.safeParse({ type: 'stop', workload_id: 'web-0-1a2b3c4d' }).success).toBe(true);
    const prewarm = (p: string) =>
      CoordinatorMessage.safeParse({ type: 'prewarm', job_id: 'abc-1', paths: [p] }).success;
    expect(prewarm('--option')).toBe(false);
    expect(prewarm('/nix/store/00000000000000000000000000000000-x/../../etc')).toBe(false);
    expect(prewarm('/nix/store/0c1sljyc8rj96fl6wkj8q0hfqc2s6n1l-busybox')).toBe(true);
  });
});

describe('health checks', () => {
  it('are refused for a job whose network is none', () => {
    const r = JobSpec.safeParse({
      name: 'j',
      role: 'r',
      cluster: 'c',
      environment: 'e',
      task: { name: 't', processes: [{ name: 'p', cmdline: 'x' }] },
      health_check_config: {},
      mxc: { isolation: 'sandbox', network: 'none', ports: ['http'] },
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]!.message).toMatch(/cannot be health-checked over HTTP/);
  });
});
