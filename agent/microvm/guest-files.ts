/**
 * The per-VM part of the guest's root filesystem: one small cpio appended to the cached base
 * initramfs (the kernel unpacks concatenated archives in order). It carries the process scripts and
 * the environment, so nothing about the task has to travel through the writable work share.
 */
import type { Task } from '../../spec/job.js';
import { buildCpio, type CpioEntry } from './cpio.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Single-quotes a value for sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function envScript(env: Record<string, string>): string {
  const lines = Object.entries(env).map(([k, v]) => {
    if (!ENV_NAME.test(k))
      throw new Error(`environment variable name ${JSON.stringify(k)} is not [A-Za-z_][A-Za-z0-9_]*`);
    return `export ${k}=${shQuote(v)}`;
  });
  return `${lines.join('\n')}\n`;
}

/**
 * Each process is `sh /mxc/proc/<name>`: the environment, cwd /work, then its cmdline under
 * `exec sh -c`, as on the host. The exec matters: busybox sh execs a simple command in place, so
 * the process the guest signals is the program itself, and its TERM trap gets to run.
 */
export function guestOverlay(task: Task, env: Record<string, string>, network: boolean): Buffer {
  const entries: CpioEntry[] = [
    { kind: 'dir', path: 'mxc' },
    { kind: 'dir', path: 'mxc/proc' },
    { kind: 'file', path: 'mxc/env', data: envScript(env) },
  ];
  if (network) entries.push({ kind: 'file', path: 'mxc/net', data: '' });
  for (const p of task.processes) {
    entries.push({
      kind: 'file',
      path: `mxc/proc/${p.name}`,
      data: `. /mxc/env\ncd /work\nexec sh -c ${shQuote(p.cmdline)}\n`,
      mode: 0o755,
    });
  }
  return buildCpio(entries);
}
