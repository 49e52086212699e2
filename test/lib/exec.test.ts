/** lib/exec.ts (helper commands through execa) and lib/line-reader.ts, with real processes. */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CommandError, hasCommand, run, runStreaming } from '../../lib/exec.js';
import { readLines } from '../../lib/line-reader.js';
import { repoPath } from '../../scheduler/paths.js';
import { isAlive } from '../agent/helpers.js';
import { eventually } from '../helpers/protocol-agent.js';

const node = process.execPath;
const script = (js: string) => ['-e', js];

describe('run', () => {
  it('captures stdout unchanged (no trailing newline stripped) and passes input and env', async () => {
    const r = await run(
      node,
      script('process.stdin.pipe(process.stdout); process.stderr.write(process.env.MXC_T_ENV)'),
      { input: 'a\nb\n', env: { MXC_T_ENV: 'from-env' } },
    );
    expect(r.stdout).toBe('a\nb\n');
    expect(r.stderr).toBe('from-env');
  });

  it('turns a non-zero exit into a CommandError with the code, the command line and stderr', async () => {
    const err = await run(node, script('process.stderr.write("bad thing\\n"); process.exit(3)')).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CommandError);
    const e = err as CommandError;
    expect(e.exitCode).toBe(3);
    expect(e.stderr).toBe('bad thing\n');
    expect(e.message).toBe(`${node} exited with code 3:\nbad thing`);
    expect(e.command).toContain('process.exit(3)');
    expect(e.cause).toBeDefined();
  });

  it('says when the command does not exist', async () => {
    const e = (await run('mxc-no-such-command', []).catch((x: unknown) => x)) as CommandError;
    expect(e).toBeInstanceOf(CommandError);
    expect(e.exitCode).toBeUndefined();
    expect(e.message).toBe('mxc-no-such-command was not found on PATH');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(await hasCommand('mxc-no-such-command')).toBe(false);
    expect(await hasCommand(node)).toBe(true);
  });

  it('kills on timeout and on abort, saying which', async () => {
    const forever = script('setInterval(() => {}, 1000)');
    const t = (await run(node, forever, { timeoutMs: 200 }).catch((x: unknown) => x)) as CommandError;
    expect(t.message).toMatch(/ timed out after 200 ms$/);
    const ac = new AbortController();
    const pending = run(node, [...forever], { signal: ac.signal }).catch((x: unknown) => x);
    ac.abort();
    expect(((await pending) as CommandError).message).toMatch(/ was cancelled$/);
  });

  it('hands stderr line by line to onStderrLine, a character split across chunks intact', async () => {
    const lines: string[] = [];
    // "é" is two bytes; the child writes them in separate writes.
    await run(
      node,
      script(
        'const b = Buffer.from("caf\\u00e9 1\\nsecond\\nlast"); process.stderr.write(b.subarray(0, 4)); setTimeout(() => process.stderr.write(b.subarray(4)), 50)',
      ),
      { onStderrLine: (l) => lines.push(l) },
    );
    expect(lines).toEqual(['café 1', 'second', 'last']);
  });
});

describe('runStreaming', () => {
  it('streams stdout and settles done like run', async () => {
    const s = await runStreaming(node, script('process.stdout.write("x".repeat(300000))'));
    let n = 0;
    for await (const chunk of s.stdout) n += (chunk as Buffer).length;
    await s.done;
    expect(n).toBe(300_000);
    const failing = await runStreaming(node, script('process.exit(4)'));
    failing.stdout.resume();
    await expect(failing.done).rejects.toMatchObject({ exitCode: 4 });
  });
});

describe('readLines', () => {
  it('cuts over-long lines into bounded pieces and drops the CR of CRLF', async () => {
    const stream = new PassThrough();
    const lines: string[] = [];
    const done = readLines(stream, (l) => lines.push(l), 4);
    stream.end('abcdefghij\r\nxy\r\n');
    await done;
    expect(lines).toEqual(['abcd', 'efgh', 'ij', 'xy']);
  });

  it('bounds a line without a newline and never cuts a character in two', async () => {
    const stream = new PassThrough();
    const lines: string[] = [];
    const done = readLines(stream, (l) => lines.push(l), 4);
    const text = `abc\u{1F600}def\u{1F600}`; // U+1F600 is a surrogate pair in UTF-16, four bytes in UTF-8
    const bytes = Buffer.from(text);
    for (let i = 0; i < bytes.length; i++) stream.write(bytes.subarray(i, i + 1)); // byte by byte
    stream.end();
    await done;
    expect(lines.join('')).toBe(text);
    expect(lines.every((l) => l.length <= 4 && !l.includes('\uFFFD'))).toBe(true);
    expect(lines.every((l) => Buffer.from(l).toString() === l)).toBe(true);
  });
});

describe('dieWithParent', () => {
  it('a helper started so dies with its parent, even when the parent is SIGKILLed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mxc-pdeath-'));
    try {
      const pidFile = join(dir, 'pid');
      // A parent process (the built lib/exec.js, as a daemon runs it) whose helper records its pid.
      const parent = spawn(
        node,
        [
          '--input-type=module',
          '-e',
          `const { run } = await import(${JSON.stringify(repoPath('dist', 'lib', 'exec.js'))});
           await run('sh', ['-c', 'echo $$ > ${pidFile}; exec sleep 1000'], { dieWithParent: true });`,
        ],
        { stdio: 'ignore' },
      );
      const pid = await eventually(async () =>
        Number((await readFile(pidFile, 'utf8').catch(() => '')).trim()),
      );
      expect(isAlive(pid)).toBe(true);
      parent.kill('SIGKILL');
      await eventually(async () => !isAlive(pid), 5000, 'the helper to die with its parent');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
