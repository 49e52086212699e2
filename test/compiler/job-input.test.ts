/**
 * `mxc submit`'s input: an Aurora job joined with the sidecar its nix_init processes name, an Aurora
 * job without one (mxc's fields from its cmdlines), or a spec that already carries `mxc`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type DirectoryResult, dir as tmpDir } from 'tmp-promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJobInput } from '../../compiler/job-input.js';
import { repoPath } from '../../scheduler/paths.js';

const S = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz';
const aurora = (processes: { name: string; cmdline: string }[]) => ({
  name: 'j',
  role: 'r',
  cluster: 'c',
  environment: 'e',
  task: { name: 'j', processes },
});
let tmp: DirectoryResult;
let dir = '';
beforeAll(async () => {
  tmp = await tmpDir({ prefix: 'mxc-job-input-', unsafeCleanup: true });
  dir = tmp.path;
});
afterAll(async () => {
  await tmp.cleanup();
});

describe('readJobInput', () => {
  it('an Aurora job without a sidecar: closure roots and bound ports come from its cmdlines', async () => {
    const doc = aurora([
      { name: 'web', cmdline: `${S}-httpd/bin/httpd -p {{thermos.ports[http]}} -h ${S}-site/www` },
    ]);
    const { spec } = await readJobInput(JSON.stringify(doc));
    expect(spec.mxc).toMatchObject({
      closure: [`${S}-httpd`, `${S}-site`],
      ports: ['http'],
      isolation: 'process',
    });
  });

  it('a Nix expression (a .nix file, or a folder with default.nix) is said to need building first', async () => {
    const examples = repoPath('examples', 'web');
    for (const path of [examples, join(examples, 'default.nix')])
      await expect(readJobInput(path)).rejects.toThrow(
        `${path} is a Nix expression, not a job spec: build it first and pass the store path \`mxc build ${path}\` (or nix-build) prints`,
      );
    // A folder without one is only a folder.
    await expect(readJobInput(dir)).rejects.toThrow(`${dir} is a directory; pass the job JSON file`);
  });

  it('a spec that carries mxc is taken as is', async () => {
    const { spec } = await readJobInput(
      JSON.stringify({ ...aurora([{ name: 'p', cmdline: 'true' }]), mxc: { isolation: 'sandbox' } }),
    );
    expect(spec.mxc.isolation).toBe('sandbox');
  });

  it('a sidecar named by nix_init but missing from the store is a clear error', async () => {
    const doc = aurora([
      { name: 'nix_init_p', cmdline: `${S}-mxc-nix-init p ${S}-script ${S}-mxc-job-c-r-e-j.mxc.json` },
      { name: 'p', cmdline: `${S}-script` },
    ]);
    const file = join(dir, 'job.json');
    await writeFile(file, JSON.stringify(doc));
    await expect(readJobInput(file)).rejects.toThrow(
      /processes name the sidecar .*\.mxc\.json .*not in this store/,
    );
  });

  it('Aurora-unknown attributes are refused with their path', async () => {
    const doc = { ...aurora([{ name: 'p', cmdline: 'true', env: {} } as never]), colour: 'red' };
    await expect(readJobInput(JSON.stringify(doc))).rejects.toThrow(
      /not a valid Aurora job:[\s\S]*task\.processes\.0: Unrecognized key: "env"[\s\S]*Unrecognized key: "colour"/,
    );
  });
});
