/** Times external commands side by side: wall-clock milliseconds of one run, failing loudly on a non-zero exit. */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Runs `file args…` (no shell) and resolves with its wall time in ms; rejects with its stderr on failure. */
export function timeCommand(
  file: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve(ms);
      else reject(new Error(`${file} ${args.join(' ')} exited with ${code}:\n${stderr.trim()}`));
    });
  });
}

/** User + system CPU of this process's reaped children so far, in ms (/proc, clock ticks of 10 ms). */
export function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  // Fields after the command name (which may hold spaces): cutime and cstime are fields 16 and 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) * 10;
}

/**
 * Like timeCommand, also giving the CPU time (user + system, its children included) the command used:
 * unlike wall time, it hardly moves when other work shares the machine.
 */
export async function timeCommandCpu(
  file: string,
  args: readonly string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ wallMs: number; cpuMs: number }> {
  const before = childrenCpuMs();
  const wallMs = await timeCommand(file, args, opts);
  return { wallMs, cpuMs: childrenCpuMs() - before };
}
