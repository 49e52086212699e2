/**
 * microVM workloads end to end: a real nix closure, a real QEMU microvm (TCG here), the guest's
 * kernel and store as the processes see them, task semantics run through the guest, and stop().
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  detectHypervisor,
  kvmBootsKernel,
  type MicroVmAssets,
  type MicroVmOptions,
  startMicroVm,
} from '../../agent/microvm/index.js';
import { microVmSupport } from '../../agent/microvm-support.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import type { LogLine } from '../../spec/messages.js';
import { ASSET_CACHE_DIR, testAssets } from './assets-helper.js';
import { Task, type TaskInput } from './task-input.js';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'scripts.nix');

let assets: MicroVmAssets;
let scripts: Record<'bb' | 'probe' | 'flaky' | 'service', string>;
let closure: string[];
const dirs: string[] = [];

beforeAll(async () => {
  assets = await testAssets();
  const [probe, flaky, service] = await nixBuild([FIXTURE, '-A', 'probe', '-A', 'flaky', '-A', 'service']);
  closure = await closureOf([probe!, flaky!, service!]);
  // The busybox import is a source path, not a derivation: take it from the closure.
  const bb = closure.find((p) => p.endsWith('-busybox'));
  scripts = { bb: bb!, probe: probe!, flaky: flaky!, service: service! };
}, 600_000);

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function workDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mxc-microvm-test-'));
  dirs.push(d);
  return d;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, logs: LogLine[]): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (!(await cond())) {
    if (Date.now() > deadline)
      throw new Error(`${what} never happened:\n${logs.map((l) => `${l.process}: ${l.line}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function boot(task: TaskInput, extra: Partial<MicroVmOptions> = {}) {
  const logs: LogLine[] = [];
  const exits: { process: string; run: number; exitCode: number }[] = [];
  const handle = await startMicroVm({
    assets,
    storeDir: '/nix/store',
    closure,
    workDir: await workDir(),
    task: Task.parse(task),
    env: { GREETING: "it's here" },
    cpus: 1,
    memoryMb: 256,
    onLog: (l) => logs.push(l),
    onProcessExit: (e) => exits.push(e),
    gracePeriodMs: 2_000,
    ...extra,
  });
  const lines = (process: string, stream: LogLine['stream'] = 'stdout') =>
    logs.filter((l) => l.process === process && l.stream === stream).map((l) => l.line);
  return { handle, logs, exits, lines };
}

describe('microVM', () => {
  test('detectHypervisor finds QEMU and picks an accelerator that works', async () => {
    const hv = await detectHypervisor();
    expect(hv.qemu).toBe(true);
    expect(hv.accel).toBe(hv.kvm ? 'kvm' : 'tcg');
  });

  test("the node's capabilities say KVM is usable only if this host's verdict on the kernel says so", async () => {
    const hv = await detectHypervisor();
    const verdict = hv.kvm && (await kvmBootsKernel(assets.kernel));
    const before = process.env.MXC_MICROVM_ASSETS;
    process.env.MXC_MICROVM_ASSETS = ASSET_CACHE_DIR;
    try {
      expect(await microVmSupport(tmpdir()).detect()).toEqual({ qemu: true, kvm: verdict });
    } finally {
      if (before === undefined) delete process.env.MXC_MICROVM_ASSETS;
      else process.env.MXC_MICROVM_ASSETS = before;
    }
  });

  test('KVM is only used for a kernel that prints its banner under it; a file that is no kernel never does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mxc-kvm-verdict-'));
    try {
      const notKernel = join(dir, 'vmlinux');
      await writeFile(notKernel, 'not an ELF kernel');
      expect(await kvmBootsKernel(notKernel)).toBe(false);
      // The verdict is kept beside the file for this boot of the host.
      const kept = JSON.parse(await readFile(`${notKernel}.kvm-verdict.json`, 'utf8'));
      expect(kept).toEqual({ bootId: expect.stringMatching(/\S/), kvm: false });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('the guest runs its own kernel and sees exactly the closure in /nix/store', async () => {
    const wd = await workDir();
    const vm = await boot(
      {
        name: 'probe',
        processes: [{ name: 'probe', cmdline: `echo "greeting=$GREETING"; ${scripts.probe}` }],
      },
      { workDir: wd, closure: await closureOf([scripts.probe]) },
    );
    const result = await vm.handle.done;
    const out = vm.lines('probe');
    expect(out).toContain(`kernel=${assets.kernelRelease}`);
    expect(out).toContain("greeting=it's here");
    const seen = out.filter((l) => l.startsWith('store=')).map((l) => l.slice('store='.length));
    expect(seen.sort()).toEqual([basename(scripts.bb), basename(scripts.probe)].sort());
    expect(vm.lines('probe', 'stderr')).toEqual(['to stderr']);
    expect(vm.exits).toEqual([{ process: 'probe', run: 1, exitCode: 7 }]);
    expect(result.status).toBe('failed');
    expect(await readFile(join(wd, 'from-guest.txt'), 'utf8')).toBe('written in the guest\n');
    expect(alive(vm.handle.pid)).toBe(false);
  }, 120_000);

  test('order, restarts, ephemeral and final processes follow the task', async () => {
    const vm = await boot({
      name: 'semantics',
      processes: [
        { name: 'first', cmdline: 'echo first' },
        { name: 'flaky', cmdline: scripts.flaky, max_failures: 3, min_duration: 0 },
        { name: 'after', cmdline: 'echo after' },
        { name: 'sidecar', cmdline: 'echo sidecar up; exec sleep 1000', ephemeral: true },
        { name: 'cleanup', cmdline: 'echo cleanup', final: true },
      ],
      constraints: [{ order: ['first', 'flaky', 'after'] }],
    });
    const result = await vm.handle.done;
    expect(result).toEqual({ status: 'success' });
    const exitOrder = vm.exits.map((e) => `${e.process}#${e.run}=${e.exitCode}`);
    expect(exitOrder.filter((e) => !e.startsWith('sidecar'))).toEqual([
      'first#1=0',
      'flaky#1=1',
      'flaky#2=0',
      'after#1=0',
      'cleanup#1=0',
    ]);
    // The ephemeral sidecar is not waited for: it is stopped (TERM) before the final process runs.
    expect(exitOrder.indexOf('sidecar#1=143')).toBeLessThan(exitOrder.indexOf('cleanup#1=0'));
    expect(vm.lines('flaky')).toEqual(['flaky run 1', 'flaky run 2']);
    expect(vm.logs.find((l) => l.process === 'flaky' && l.line === 'flaky run 2')?.run).toBe(2);
    expect(vm.handle.processes()).toEqual([
      { name: 'first', state: 'success', runs: 1, failures: 0, exit_code: 0 },
      { name: 'flaky', state: 'success', runs: 2, failures: 1, exit_code: 0 },
      { name: 'after', state: 'success', runs: 1, failures: 0, exit_code: 0 },
      { name: 'sidecar', state: 'killed', runs: 1, failures: 0, exit_code: 143 },
      { name: 'cleanup', state: 'success', runs: 1, failures: 0, exit_code: 0 },
    ]);
  }, 120_000);

  test('stop() shuts a long-running daemon down cleanly and leaves no QEMU behind', async () => {
    const vm = await boot({
      name: 'service',
      processes: [
        { name: 'service', cmdline: scripts.service, daemon: true },
        { name: 'goodbye', cmdline: 'echo goodbye', final: true },
      ],
    });
    await waitFor('service up', () => vm.lines('service').includes('service up'), vm.logs);
    const t0 = Date.now();
    await vm.handle.stop();
    const result = await vm.handle.done;
    expect(result.status).toBe('stopped');
    expect(vm.lines('service')).toContain('service got TERM');
    expect(vm.lines('goodbye')).toEqual(['goodbye']);
    // Clean: the guest powered off by itself, well before the kill deadline (grace + 10 s).
    expect(Date.now() - t0).toBeLessThan(11_000);
    expect(vm.logs.some((l) => l.line.includes('killing QEMU'))).toBe(false);
    expect(alive(vm.handle.pid)).toBe(false);
  }, 120_000);

  test('ports are forwarded from the host to the guest over user-mode networking', async () => {
    const wd = await workDir();
    await writeFile(join(wd, 'index.html'), 'served from the microVM\n');
    const hostPort = await freePort();
    const vm = await boot(
      {
        name: 'web',
        processes: [
          {
            name: 'web',
            cmdline: `exec ${scripts.bb}/busybox httpd -f -v -p $MXC_PORT_HTTP -h /work`,
            daemon: true,
          },
        ],
      },
      { workDir: wd, ports: [{ name: 'http', hostPort, guestPort: 8080 }] },
    );
    try {
      let body = '';
      await waitFor(
        'an HTTP answer through the forwarded port',
        async () => {
          // Until the guest listens, slirp may hold the connection: retry with a short timeout.
          body = await fetch(`http://127.0.0.1:${hostPort}/index.html`, {
            signal: AbortSignal.timeout(1_000),
          }).then(
            (r) => r.text(),
            () => '',
          );
          return body !== '';
        },
        vm.logs,
      );
      expect(body).toBe('served from the microVM\n');
    } finally {
      await vm.handle.stop();
    }
    expect((await vm.handle.done).status).toBe('stopped');
  }, 120_000);

  test('stop() before the guest is ready kills QEMU at once', async () => {
    const vm = await boot({ name: 'early', processes: [{ name: 'never', cmdline: 'echo never' }] });
    await vm.handle.stop();
    expect(await vm.handle.done).toMatchObject({ status: 'stopped' });
    expect(vm.lines('never')).toEqual([]);
    expect(alive(vm.handle.pid)).toBe(false);
  }, 60_000);

  test('a closure path missing from the store is refused with a message saying what to do', async () => {
    const missing = '/nix/store/00000000000000000000000000000000-not-realised';
    await expect(
      boot({ name: 'bad', processes: [{ name: 'p', cmdline: 'true' }] }, { closure: [...closure, missing] }),
    ).rejects.toThrow(
      /closure paths missing from \/nix\/store: 00000000000000000000000000000000-not-realised; realise the closure/,
    );
    await expect(
      boot({ name: 'bad', processes: [{ name: 'p', cmdline: 'true' }] }, { closure: ['/etc/passwd'] }),
    ).rejects.toThrow(/closure entries must be full \/nix\/store/);
  });
});
