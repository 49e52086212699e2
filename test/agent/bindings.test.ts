/**
 * Thermos bindings in cmdlines (issue 16): expanded by a real agent at launch with the port it
 * allocated, the workload id, the instance and its hostname; unknown ones refused at submit, and a
 * binding that still cannot be expanded fails the workload with a message naming it.
 */
import { readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { expandTask } from '../../agent/workload-launch.js';
import { JobSpec, type JobSpecInput } from '../../spec/job.js';
import type { WorkloadAssignment } from '../../spec/messages.js';
import { agentWithFakeCoordinator, until } from '../security/workload-tree.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

const job = (cmdline: string, ports: string[] = ['http']): JobSpecInput => ({
  name: 'bindings',
  role: 'test',
  cluster: 'test',
  environment: 'test',
  task: { name: 'b', processes: [{ name: 'main', cmdline }] },
  mxc: { ports },
});

describe('Thermos bindings', () => {
  test('the agent expands ports, task id, instance and hostname at launch', async () => {
    const { agent, coord, stateDir } = await agentWithFakeCoordinator();
    cleanups.push(async () => {
      await agent.close();
      await coord.close();
      await rm(stateDir, { recursive: true, force: true });
    });
    const a: WorkloadAssignment = {
      id: 'w-bindings-1',
      job_id: 'j-bindings',
      instance: 3,
      spec: JobSpec.parse(
        job(
          'echo "{{thermos.ports[http]}} {{ thermos.task_id }} {{mesos.instance}} {{mesos.hostname}}" > bindings.txt',
        ),
      ),
    };
    coord.send({ type: 'start', workload: a });
    const done = await until(
      () => coord.statuses(a.id).find((s) => s.status === 'stopped' || s.status === 'failed'),
      30_000,
      'the workload to end',
    );
    expect(done).toMatchObject({ status: 'stopped', reason: 'task finished successfully' });
    const port = coord.statuses(a.id).find((s) => s.ports?.http)!.ports!.http;
    expect(port).toBeGreaterThan(0);
    const text = await readFile(join(stateDir, 'workloads', a.id, 'work', 'bindings.txt'), 'utf8');
    expect(text).toBe(`${port} w-bindings-1 3 ${os.hostname()}\n`);
  }, 60_000);

  test('a binding the agent cannot expand fails the start, naming the process and the binding', () => {
    // Submit (and the agent's own parsing of the start message) refuse it first; this is the last line.
    const spec = JobSpec.parse(job('echo hello'));
    spec.task.processes[0]!.cmdline = 'echo {{thermos.ports[admin]}}';
    const a: WorkloadAssignment = { id: 'w-bindings-2', job_id: 'j-bindings', instance: 0, spec };
    expect(() => expandTask(a, { http: 8080 })).toThrow(
      'process main: binding {{thermos.ports[admin]}}: the workload has no port "admin"',
    );
    expect(
      expandTask({ ...a, spec: JobSpec.parse(job('x {{thermos.ports[http]}}')) }, { http: 8080 })
        .processes[0]!.cmdline,
    ).toBe('x 8080');
  });

  test('submit refuses unknown bindings and undeclared ports, naming the cmdline', () => {
    const r = JobSpec.safeParse(job('serve --port {{thermos.ports[admin]}} --id {{thermos.taskid}}'));
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => [i.path.join('.'), i.message])).toEqual([
      [
        'task.processes.0.cmdline',
        'binding {{thermos.ports[admin]}} names port "admin", which the job does not declare (mxc ports: http)',
      ],
      [
        'task.processes.0.cmdline',
        'unknown binding {{thermos.taskid}} (known: {{thermos.ports[<port>]}}, {{thermos.task_id}}, {{mesos.instance}}, {{mesos.hostname}})',
      ],
    ]);
    expect(JobSpec.safeParse(job('serve --port {{thermos.ports[http]}}')).success).toBe(true);
  });
});
