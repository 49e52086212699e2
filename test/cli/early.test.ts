/**
 * bin/early.js, which starts `mxc build`'s nix-build and `mxc push`'s nix path-info before the CLI
 * loads: on Node's process handles or, where those are missing, through node:child_process, with the
 * same outcome either way (output, exit code, signal, a missing command), and lib/exec.ts's
 * settleStarted turning it into run()'s result or error.
 */
import { createRequire } from 'node:module';
import { describe, expect, test } from 'vitest';
import { CommandError, type StartedCommand, settleStarted } from '../../lib/exec.js';

const require = createRequire(import.meta.url);
const early = require('../../bin/early.js') as {
  spawnEarly(file: string, args: string[], opts?: { childProcess?: boolean }): StartedCommand;
};

/** Node printing to stdout and stderr, then exiting with `code`. */
const script = (code: number) => [
  '-e',
  `process.stdout.write('out ' + 'x'.repeat(70000) + '\\n'); process.stderr.write('err\\n'); process.exitCode = ${code};`,
];

describe.each([
  ['process handles', false],
  ['node:child_process', true],
])('spawnEarly through %s', (_way, childProcess) => {
  const spawn = (file: string, args: string[]) => early.spawnEarly(file, args, { childProcess });

  test('collects stdout (more than a pipe holds) and stderr, with the exit code', async () => {
    const started = spawn(process.execPath, script(3));
    const r = await started.done;
    expect(r).toEqual({
      exitCode: 3,
      signal: null,
      stdout: `out ${'x'.repeat(70000)}\n`,
      stderr: 'err\n',
    });
  });

  test('onStdout gets what was read so far, then the rest', async () => {
    const started = spawn(process.execPath, [
      '-e',
      "process.stdout.write('a\\n'); setTimeout(() => process.stdout.write('b\\n'), 50);",
    ]);
    const seen: string[] = [];
    started.onStdout?.((c) => seen.push(c.toString()));
    const r = await started.done;
    expect(seen.join('')).toBe('a\nb\n');
    expect(r).toMatchObject({ exitCode: 0, stdout: 'a\nb\n' });
  });

  test('kill ends it with SIGKILL, which settleStarted reports', async () => {
    const started = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    started.kill();
    expect(await started.done).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
    await expect(settleStarted(started)).rejects.toThrow(/was killed by SIGKILL/);
  });

  test('a command that is not there fails as node:child_process says it', async () => {
    const started = spawn('mxc-no-such-command', ['--version']);
    const r = await started.done;
    expect('error' in r && r.error.message).toBe('spawn mxc-no-such-command ENOENT');
    const err = await settleStarted(started).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).message).toBe('mxc-no-such-command was not found on PATH');
    expect(((err as CommandError).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  test('settleStarted gives the output of a success and the stderr of a failure', async () => {
    expect(await settleStarted(spawn(process.execPath, ['-e', "console.log('ok')"]))).toEqual({
      stdout: 'ok\n',
      stderr: '',
    });
    const err = await settleStarted(spawn(process.execPath, script(3))).catch((e: unknown) => e);
    expect(err).toMatchObject({ exitCode: 3, stderr: 'err\n' });
  });

  test('output past 100,000,000 bytes kills the command, and settleStarted says so', async () => {
    // Writes until it is killed: 1 MiB chunks, forever (EPIPE ends it too, once its reader is gone).
    const started = spawn(process.execPath, [
      '-e',
      "const b = Buffer.alloc(1 << 20, 120); const w = () => process.stdout.write(b, w); w(); process.stdout.on('error', () => process.exit(0));",
    ]);
    const r = await started.done;
    expect('error' in r && r.error.message).toBe('its stdout exceeded 100000000 bytes');
    await expect(settleStarted(started)).rejects.toThrow(/its stdout exceeded 100000000 bytes/);
  });

  test('a timeout counts from the spawn', async () => {
    const started = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
    await expect(settleStarted(started, { timeoutMs: 100 })).rejects.toThrow(/timed out after 100 ms/);
  });
});

test('--pending-deprecation: nothing more on stderr (process.binding warns there)', async () => {
  const { execa } = await import('execa');
  const r = await execa(
    process.execPath,
    [
      '--pending-deprecation',
      '-e',
      `const s = require(${JSON.stringify(require.resolve('../../bin/early.js'))}).spawnEarly(process.execPath, ['-e', '0']); s.done.then((r) => console.log(r.exitCode));`,
    ],
    { reject: false },
  );
  expect(r.stderr).toBe('');
  expect(r.stdout).toBe('0');
});
