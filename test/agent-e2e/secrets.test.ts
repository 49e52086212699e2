/**
 * Secrets by name: the value lives only on the agent, reaches the process as a 0400 file named by
 * MXC_SECRET_<NAME>_FILE (also inside the sandbox), never enters the store or the coordinator, and is
 * gone with the workload; a secret the agent lacks fails the start with what to do.
 */
import { existsSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildScript } from '../agent/helpers.js';
import {
  type Cluster,
  eventually,
  logLines,
  push,
  scriptJob,
  startCluster,
  submit,
  waitWorkloads,
} from './harness.js';

let cluster: Cluster;
let secrets: string;
beforeAll(async () => {
  cluster = await startCluster();
  secrets = join(cluster.dir, 'secrets');
  await mkdir(secrets, { recursive: true });
  await writeFile(join(secrets, 'db.password'), 's3cr3t-value\n', { mode: 0o600 });
});
afterAll(async () => {
  await cluster?.stop();
});

it('hands a named secret to the process as a file, and removes it with the workload', async () => {
  await cluster.agent('sec', { secretsDir: secrets });
  const s = await buildScript(
    'secret-reader',
    'echo "secret: $(cat "$MXC_SECRET_DB_PASSWORD_FILE")"\nexec sleep 1000\n',
  );
  await push(cluster.c, [s.path]);
  for (const isolation of ['process', 'sandbox'] as const) {
    const jobId = await submit(
      cluster.c,
      scriptJob(`sec-${isolation}`, s.path, {
        constraints: { host: 'sec' },
        mxc: { closure: [s.path], secrets: ['db.password'], isolation },
      }),
    );
    const [w] = await waitWorkloads(
      cluster.c,
      jobId,
      (ws) => ws[0]?.status === 'running',
      `${isolation} to run`,
    );
    await eventually(async () =>
      (await logLines(cluster.c, w!.id)).some((l) => l.line === 'secret: s3cr3t-value'),
    );
    const copy = join(cluster.dir, 'sec', 'state', 'workloads', w!.id, 'work', '.mxc-secrets', 'db.password');
    expect((await stat(copy)).mode & 0o777).toBe(0o400);
    // The coordinator knows the name, never the value.
    const dump = JSON.stringify(
      (await cluster.c.api('GET', `/api/jobs/${jobId}`, undefined, { authorization: 'Bearer client-token' }))
        .body,
    );
    expect(dump).toContain('db.password');
    expect(dump).not.toContain('s3cr3t-value');
    await cluster.c.coordinator.stopJob(jobId);
    await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'stopped', `${isolation} to stop`);
    await eventually(async () => !existsSync(copy), 10_000, 'the secret copy to go');
  }
});

it('fails the start clearly when the agent lacks the secret', async () => {
  await cluster.agent('nosec', { secretsDir: secrets });
  const s = await buildScript('secret-missing', 'exec sleep 1000\n');
  await push(cluster.c, [s.path]);
  const jobId = await submit(
    cluster.c,
    scriptJob('sec-missing', s.path, {
      constraints: { host: 'nosec' },
      mxc: { closure: [s.path], secrets: ['api_key'] },
    }),
  );
  const [w] = await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'failed', 'the start to fail');
  expect(w!.error).toBe(
    `could not start: secret "api_key" is not available on this agent: put its value in ${join(secrets, 'api_key')}`,
  );
});
