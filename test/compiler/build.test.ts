/**
 * `mxc build` through the real CLI and real nix: same store path as nix-build, `--json` prints a
 * valid spec, `-A` / `--arg` / `--argstr` reach nix-build, and bad input is refused with exit code 2
 * and a message naming what is wrong (Nix's file and line, every schema problem with its path).
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { execa } from 'execa';
import { type DirectoryResult, dir as tmpDir } from 'tmp-promise';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { nixBuildArgs } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { JobSpec } from '../../spec/job.js';

const mxc = (args: string[]) => execa('node', [repoPath('bin', 'mxc.js'), ...args], { reject: false });

const early = createRequire(import.meta.url)('../../bin/build-early.js') as {
  nixBuildArgs(argv: string[]): string[] | null;
};

let tmp: DirectoryResult;
let dir: string;

beforeAll(async () => {
  tmp = await tmpDir({ prefix: 'mxc-build-', unsafeCleanup: true });
  dir = tmp.path;
  // Two jobs in one file (so -A matters), taking a string and a Nix value argument.
  await writeFile(
    join(dir, 'greet.nix'),
    `{ greeting ? "hi", n ? 1, mxc ? import ${repoPath('nixlib')} { } }:
let
  job = name: mxc.Service {
    inherit name;
    cluster = "c"; role = "r"; environment = "e";
    instances = n;
    task = mxc.Task { processes = [ (mxc.Process { name = "p"; cmdline = "echo $GREETING"; }) ]; };
    mxc.env.GREETING = greeting;
  };
in { a = job "a"; b = job "b"; }
`,
  );
  await writeFile(join(dir, 'syntax.nix'), '{ mxc ? import ./nowhere.nix }:\n{\n  name = ;\n}\n');
  // JSON written without nixlib's checks, so only the schema can refuse it.
  await writeFile(
    join(dir, 'invalid.nix'),
    `let mxc = import ${repoPath('nixlib')} { }; in
mxc.writeText "invalid-job.json" (builtins.toJSON {
  name = "has spaces"; role = "r"; cluster = "c"; environment = "e"; instances = 0;
  task = { name = "t"; processes = [ { name = "p"; cmdline = ""; colour = "blue"; } ]; };
})
`,
  );
});

afterAll(async () => {
  await tmp.cleanup();
});

describe.concurrent('mxc build', () => {
  test('prints the same store path as nix-build', async () => {
    const [ours, theirs] = await Promise.all([
      mxc(['build', repoPath('examples', 'hello_world')]),
      execa('nix-build', [
        '--option',
        'substituters',
        '',
        repoPath('examples', 'hello_world'),
        '--no-out-link',
      ]),
    ]);
    expect(ours.stderr).toBe('');
    expect(ours.exitCode).toBe(0);
    expect(ours.stdout).toMatch(/^\/nix\/store\/[a-z0-9]{32}-mxc-job-.*hello_world\.json$/);
    expect(ours.stdout).toBe(theirs.stdout.trim());
  });

  test('--json prints the spec, which validates', async () => {
    const r = await mxc(['build', repoPath('examples', 'web'), '--json']);
    expect(r.exitCode).toBe(0);
    const spec = JobSpec.parse(JSON.parse(r.stdout));
    expect(spec).toMatchObject({ name: 'web', service: true, mxc: { ports: ['http'] } });
    expect(spec.health_check_config?.endpoint).toBe('/health');
  });

  test('-A, --arg and --argstr pass through to nix-build', async () => {
    const r = await mxc([
      'build',
      join(dir, 'greet.nix'),
      '-A',
      'b',
      '--argstr',
      'greeting',
      'hello there',
      '--arg',
      'n',
      '1 + 2',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    const spec = JobSpec.parse(JSON.parse(r.stdout));
    expect(spec.name).toBe('b');
    expect(spec.instances).toBe(3);
    expect(spec.mxc.env).toEqual({ GREETING: 'hello there' });

    // The default argument when none is given, and --attr as the long form.
    const dflt = await mxc(['build', join(dir, 'greet.nix'), '--attr', 'a', '--json']);
    expect(JSON.parse(dflt.stdout)).toMatchObject({
      name: 'a',
      instances: 1,
      mxc: { env: { GREETING: 'hi' } },
    });
  });

  test('a file of several jobs without -A is refused and says to use -A', async () => {
    const r = await mxc(['build', join(dir, 'greet.nix')]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(
      /produced 2 outputs; a job expression must build exactly one JSON file \(use -A\)/,
    );
  });

  test('--arg without a value is refused', async () => {
    const r = await mxc(['build', join(dir, 'greet.nix'), '--arg', 'n']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--arg takes a name and a value/);
  });

  test('a Nix syntax error comes through with its file and line', async () => {
    const file = join(dir, 'syntax.nix');
    const r = await mxc(['build', file]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/syntax error, unexpected ';'/);
    expect(r.stderr).toContain(`at ${file}:3:10`);
  });

  test('a JSON that fails the schema is refused with every problem and its JSON path', async () => {
    const r = await mxc(['build', join(dir, 'invalid.nix')]);
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/invalid-job\.json is not a valid Aurora job:/);
    const problems = r.stderr.split('\n').filter((l) => l.startsWith('  '));
    expect(problems.map((l) => l.trim())).toEqual([
      'name: must be 1-128 characters of letters, digits, _ . -, starting with a letter, digit or _',
      'instances: Too small: expected number to be >=1',
      'task.processes.0.cmdline: must not be empty',
      'task.processes.0: Unrecognized key: "colour"',
    ]);
  });

  test('bin/mxc.js starts nix-build early for the usual spellings, never for help or a usage error', () => {
    const f = 'job.nix';
    const argv = (...rest: string[]) => ['node', 'mxc.js', 'build', ...rest];
    expect(early.nixBuildArgs(argv(f))).toEqual(nixBuildArgs([f]));
    expect(early.nixBuildArgs(argv('--json', '-A', 'a', f))).toEqual(nixBuildArgs([f, '-A', 'a']));
    for (const rest of [[], ['--help'], [f, '-h'], [f, 'extra'], [f, '--arg', 'n'], [f, '-A'], ['--', f]])
      expect(early.nixBuildArgs(argv(...rest)), rest.join(' ')).toBeNull();
    expect(early.nixBuildArgs(['node', 'mxc.js', 'submit', f])).toBeNull();
  });

  test('runs one nix-build, the one bin/mxc.js starts first or else its own, with the same arguments', async () => {
    // A nix-build first on PATH that logs its arguments (unit-separated, a line a run), then runs the real one.
    const real = (await execa('sh', ['-c', 'command -v nix-build'])).stdout.trim();
    const log = join(dir, 'nix-build.log');
    const wrapper = join(dir, 'wrapper');
    await execa('mkdir', ['-p', wrapper]);
    await writeFile(
      join(wrapper, 'nix-build'),
      `#!/bin/sh\nprintf '%s\\037' "$@" >> ${log}\nprintf '\\n' >> ${log}\nexec ${real} "$@"\n`,
    );
    await chmod(join(wrapper, 'nix-build'), 0o755);
    const greet = join(dir, 'greet.nix');
    const hello = repoPath('examples', 'hello_world');
    const cases: [string[], string[]][] = [
      [[hello], [hello]],
      [[hello, '--json'], [hello]],
      // Every option bin/mxc.js knows, in another order than nix-build gets them.
      [
        ['--argstr', 'greeting', 'a b', '--json', greet, '--arg', 'n', '2', '--attr', 'b'],
        [greet, '-A', 'b', '--arg', 'n', '2', '--argstr', 'greeting', 'a b'],
      ],
      // A spelling it leaves to commander: no early start, the command's own nix-build.
      [
        [greet, '--attr=a'],
        [greet, '-A', 'a'],
      ],
    ];
    for (const [argv, args] of cases) {
      await writeFile(log, '');
      const r = await execa('node', [repoPath('bin', 'mxc.js'), 'build', ...argv], {
        reject: false,
        env: { PATH: `${wrapper}:${process.env.PATH}` },
      });
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      const runs = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
      expect(runs.map((l) => l.split('\x1f').slice(0, -1))).toEqual([nixBuildArgs(args)]);
    }
  });

  test('a command line bin/mxc.js reads (no commander) does what commander makes of the same options', async () => {
    const greet = join(dir, 'greet.nix');
    // The same command, read by the launcher (-A b) and by commander (--attr=b, a spelling it leaves).
    const spellings = (...rest: string[]) => [
      [...rest, '-A', 'b'],
      [...rest, '--attr=b'],
    ];
    for (const rest of [
      ['--argstr', 'greeting', 'x y', '--json', greet, '--arg', 'n', '2'],
      // A name given twice keeps its last value; -A given twice, the last one.
      [greet, '--argstr', 'greeting', 'one', '--argstr', 'greeting', 'two', '-A', 'a', '--json'],
      [greet],
      [greet, '--json', '--arg', 'n', '0'],
      [greet, '--arg', 'n', '"not a number"'],
    ]) {
      const [byLauncher, byCommander] = await Promise.all(
        spellings(...rest).map((argv) => mxc(['build', ...argv])),
      );
      const seen = (r: typeof byLauncher) => ({ stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode });
      expect(seen(byLauncher), rest.join(' ')).toEqual(seen(byCommander));
    }
  });

  test('a file that does not exist gives a clear error', async () => {
    const file = join(dir, 'no-such-job.nix');
    const r = await mxc(['build', file]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toMatch(/No such file or directory/);
    expect(r.stderr).not.toMatch(/internal error|at .*\.js:\d+/);
  });
});
