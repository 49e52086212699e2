/**
 * Test helpers for the agent: store scripts built with real nix (busybox-static only, no nixpkgs),
 * task specs with test-friendly defaults, process liveness checks, and the compiled task supervisor.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { taskSupervisorBinary } from '../../agent/thermos/task-supervisor.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { type Process, Task } from '../../spec/job.js';

const BUSYBOX =
  'builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; }';

/**
 * Builds `/nix/store/…-<name>`, an executable `#!busybox sh` script running `body` with PATH set to
 * a store directory of busybox applets. Returns its path and its closure (script, applets, busybox).
 */
export async function buildScript(name: string, body: string): Promise<{ path: string; closure: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'mxc-script-'));
  const bodyFile = join(dir, 'body.sh');
  writeFileSync(bodyFile, body);
  const expr = `
    let
      bb = ${BUSYBOX};
      tools = derivation {
        name = "busybox-applets"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" "\${bb}/busybox mkdir -p $out/bin; for a in $(\${bb}/busybox --list); do \${bb}/busybox ln -s \${bb}/busybox $out/bin/$a; done" ];
      };
    in derivation {
      name = ${JSON.stringify(name)}; system = builtins.currentSystem; builder = "\${bb}/busybox";
      text = "#!\${bb}/busybox sh\\nexport PATH=\${tools}/bin\\n" + builtins.readFile ${JSON.stringify(bodyFile)};
      passAsFile = [ "text" ];
      args = [ "sh" "-c" "\${bb}/busybox cp $textPath $out; \${bb}/busybox chmod 555 $out" ];
    }`;
  const [path] = await nixBuild(['-E', expr]).finally(() => rmSync(dir, { recursive: true, force: true }));
  if (!path) throw new Error(`nix-build of script ${name} printed no store path`);
  return { path, closure: await closureOf([path]) };
}

type ProcessInput = Partial<Process> & Pick<Process, 'name' | 'cmdline'>;

/** A parsed Task; processes default to min_duration 0 so restarts are immediate in tests. */
export function makeTask(processes: ProcessInput[], extra: Partial<Omit<Task, 'processes'>> = {}): Task {
  return Task.parse({ name: 'test', ...extra, processes: processes.map((p) => ({ min_duration: 0, ...p })) });
}

/** Whether `pid` is a live process (zombies count as dead: nobody may be reaping them here). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `mxc-${prefix}-`));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The compiled task supervisor; a test that needs one fails, saying why, when it cannot be built. */
export async function requiredTaskSupervisor(): Promise<string> {
  const binary = await taskSupervisorBinary();
  if (!binary)
    throw new Error('the task supervisor could not be compiled (is cc with a static libc installed?)');
  return binary;
}
