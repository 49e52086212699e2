import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { bubblewrapAvailable, bwrapArgs, sandboxLaunch } from '../../agent/sandbox.js';
import { liveGroupMembers } from '../../agent/thermos/process-group.js';
import { run } from '../../lib/exec.js';
import { NIX_OFFLINE_OPTIONS } from '../../lib/nix.js';
import { buildScript, makeTask, sleep, tempDir } from './helpers.js';
import { harness } from './task-runner-harness.js';

/** Interface names listed in a /proc/net/dev dump. */
const interfaces = (lines: string[]): string[] =>
  lines.filter((l) => l.includes(':')).map((l) => l.split(':')[0]!.trim());

describe('bubblewrap sandbox', () => {
  let probe: { path: string; closure: string[] };

  beforeAll(async () => {
    probe = await buildScript(
      'sandbox-probe',
      [
        'echo "store: $(ls /nix/store | tr "\\n" " ")"',
        'if cat /etc/passwd >/dev/null 2>&1; then echo "passwd: readable"; else echo "passwd: hidden"; fi',
        'echo written > "$PWD/out.txt" && echo "cwd: $PWD"',
        'if touch /nix/store/x 2>/dev/null; then echo "store: writable"; else echo "store: read-only"; fi',
        'while read -r line; do echo "net $line"; done < /proc/net/dev',
        '',
      ].join('\n'),
    );
  });

  test('bubblewrapAvailable really starts a sandbox', async () => {
    expect(await bubblewrapAvailable()).toBe(true);
    expect(await bubblewrapAvailable('/nonexistent/bwrap')).toBe(false);
  });

  test('a sandboxed process sees only its closure, no host files, a writable work dir, and no network', async () => {
    const workDir = tempDir('sandbox');
    const launch = sandboxLaunch({ closure: probe.closure, workDir, network: 'none' });
    const h = harness({ task: makeTask([{ name: 'probe', cmdline: probe.path }]), workDir, launch, env: {} });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status, JSON.stringify(h.logs)).toBe('success');
    const out = h.stdout('probe');
    const names = probe.closure.map((p) => p.slice('/nix/store/'.length)).sort();
    expect(out[0]!.slice('store: '.length).trim().split(' ').sort()).toEqual(names);
    expect(out).toContain('passwd: hidden');
    expect(out).toContain(`cwd: ${workDir}`);
    expect(out).toContain('store: read-only');
    expect(readFileSync(join(workDir, 'out.txt'), 'utf8')).toBe('written\n');
    expect(interfaces(out.filter((l) => l.startsWith('net ')))).toEqual(['net lo']);
  });

  test('network host keeps the host interfaces', async () => {
    const hostIfs = interfaces(readFileSync('/proc/net/dev', 'utf8').split('\n'));
    expect(hostIfs.length).toBeGreaterThan(1);
    const workDir = tempDir('sandbox');
    const launch = sandboxLaunch({ closure: probe.closure, workDir, network: 'host' });
    const h = harness({ task: makeTask([{ name: 'probe', cmdline: probe.path }]), workDir, launch, env: {} });
    h.runner.start();
    await h.runner.done;
    const seen = interfaces(
      h
        .stdout('probe')
        .filter((l) => l.startsWith('net '))
        .map((l) => l.slice(4)),
    );
    expect(seen.sort()).toEqual(hostIfs.sort());
  });

  test('a shell cmdline runs with the closure busybox; paths outside the closure are refused', async () => {
    const workDir = tempDir('sandbox');
    const launch = sandboxLaunch({ closure: probe.closure, workDir, network: 'none' });
    const h = harness({
      task: makeTask([
        { name: 'shell', cmdline: 'echo "hello $WHO"' },
        { name: 'outside', cmdline: '/usr/bin/env' },
      ]),
      workDir,
      launch,
      env: { WHO: 'sandbox' },
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(h.stdout('shell')).toEqual(['hello sandbox']);
    expect(snap.processes.find((p) => p.name === 'outside')!.state).toBe('failed');
    expect(h.system('outside')).toContainEqual(
      expect.stringMatching(/\/usr\/bin\/env is not inside the workload's closure/),
    );
  });

  test('stop gives the sandboxed payload its grace period, then kills everything inside', async () => {
    const script = await buildScript(
      'sandbox-stubborn',
      [
        'trap "echo got TERM; sleep 0.1; echo bye; exit 3" TERM',
        'sh -c \'trap "" TERM; sleep 100\' &',
        'echo ready',
        'while true; do sleep 0.05; done',
        '',
      ].join('\n'),
    );
    const workDir = tempDir('sandbox');
    const launch = sandboxLaunch({ closure: script.closure, workDir, network: 'none' });
    const h = harness({
      task: makeTask([{ name: 'svc', cmdline: script.path }]),
      workDir,
      launch,
      gracePeriodMs: 1000,
    });
    h.runner.start();
    while (!h.stdout('svc').includes('ready')) await sleep(10);
    const pgid = h.runner.pids()[0]!;
    expect(liveGroupMembers(pgid).length).toBeGreaterThanOrEqual(3);
    const t0 = Date.now();
    const snap = await h.runner.stop();
    // The payload exited by itself on SIGTERM (exit 3); the TERM-ignoring child died with the sandbox.
    expect(h.stdout('svc')).toEqual(['ready', 'got TERM', 'bye']);
    expect(snap.processes[0]).toMatchObject({ state: 'killed', exit_code: 3 });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(liveGroupMembers(pgid)).toEqual([]);
  });

  test('storeRoot binds the closure from a separate store (as realised from the cache)', async () => {
    const storeRoot = tempDir('store');
    await run('nix', [
      '--extra-experimental-features',
      'nix-command',
      'copy',
      ...NIX_OFFLINE_OPTIONS,
      '--no-check-sigs',
      '--to',
      storeRoot,
      probe.path,
    ]);
    const workDir = tempDir('sandbox');
    const ok = harness({
      task: makeTask([{ name: 'probe', cmdline: probe.path }]),
      workDir,
      launch: sandboxLaunch({ storeRoot, closure: probe.closure, workDir, network: 'none' }),
    });
    ok.runner.start();
    expect((await ok.runner.done).status).toBe('success');
    // The same closure from a store that lacks it cannot start: the paths really come from storeRoot.
    const empty = tempDir('store');
    const bad = harness({
      task: makeTask([{ name: 'probe', cmdline: probe.path }]),
      workDir,
      launch: sandboxLaunch({
        storeRoot: empty,
        closure: probe.closure,
        workDir,
        network: 'none',
        shell: ['/none'],
      }),
    });
    bad.runner.start();
    expect((await bad.runner.done).status).toBe('failed');
    expect(
      bad.logs
        .filter((l) => l.stream === 'stderr')
        .map((l) => l.line)
        .join('\n'),
    ).toMatch(/bwrap: Can't find source path/);
  });

  test('bad sandbox options are refused with a clear message', () => {
    expect(() => bwrapArgs({ closure: ['/usr/bin'], workDir: '/tmp/x', network: 'none' })).toThrow(
      /closure entry "\/usr\/bin" is not a \/nix\/store/,
    );
    expect(() => bwrapArgs({ closure: [], workDir: 'relative', network: 'none' })).toThrow(
      /workDir must be an absolute/,
    );
    expect(existsSync('/usr/bin/bwrap')).toBe(true);
  });
});
