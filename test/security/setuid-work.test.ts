/**
 * A job runs as the agent's user (root here), in a sandbox too as far as the files it writes go: a
 * setuid copy of a shell it leaves in its work folder must not be reachable by other local users, or
 * it is their root shell. The agent keeps its workloads' folders to itself (0700).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
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
} from '../agent-e2e/harness.js';

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster();
});
afterAll(async () => {
  await cluster?.stop();
});

it('a setuid file a job leaves in its work folder is out of reach of an unprivileged user', async () => {
  await cluster.agent('suid');
  const s = await buildScript(
    'setuid-dropper',
    'cp /proc/$$/exe ./rootshell && chmod 4755 ./rootshell && echo dropped\nexec sleep 1000\n',
  );
  await push(cluster.c, [s.path]);
  const workloads = join(cluster.dir, 'suid', 'state', 'workloads');
  expect((await stat(workloads)).mode & 0o777).toBe(0o700);
  for (const isolation of ['process', 'sandbox'] as const) {
    const jobId = await submit(
      cluster.c,
      scriptJob(`suid-${isolation}`, s.path, {
        constraints: { host: 'suid' },
        mxc: { closure: [s.path], isolation },
      }),
    );
    const [w] = await waitWorkloads(cluster.c, jobId, (ws) => ws[0]?.status === 'running', isolation);
    await eventually(async () => {
      const lines = (await logLines(cluster.c, w!.id)).map((l) => l.line);
      if (lines.includes('dropped')) return true;
      throw new Error(`no "dropped" yet: ${JSON.stringify(lines)}`);
    });
    const file = join(workloads, w!.id, 'work', 'rootshell');
    // The file is there, setuid, owned by the agent's user: what must not be reached.
    const st = await stat(file);
    expect([st.mode & 0o4000, st.uid]).toEqual([0o4000, process.getuid!()]);
    // runuser, not setpriv: setpriv execs its target before the new user's permissions apply.
    const asNobody = await execa('runuser', ['-u', 'nobody', '--', file], { reject: false });
    expect(asNobody.exitCode, `${isolation}: ${asNobody.stdout}`).not.toBe(0);
    expect(asNobody.stderr).toMatch(/Permission denied/);
  }
}, 120_000);
