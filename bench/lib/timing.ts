/** Times external commands side by side: wall-clock milliseconds of one run, failing loudly on a non-zero exit. */
import { spawn } from 'node:child_process';

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
