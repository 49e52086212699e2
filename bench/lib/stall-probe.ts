/**
 * Loaded into a benchmark's coordinator process with `node --import` (see coordinator-process.ts):
 * measures its event loop's longest stall two ways. Wall: `monitorEventLoopDelay`'s longest delay, which
 * on a busy machine also counts the time the process waited for a core. CPU: the main thread's CPU time
 * (/proc schedstat, in ns) between two turns of a 5 ms timer, at most: the longest run of work that held
 * the loop, whatever else the machine was doing. Each SIGUSR2 appends one line, `<n> <wall ms> <cpu ms>`
 * (the longest since the previous signal), to $MXC_BENCH_STALL_FILE and starts a new window. The signal
 * is handled on the loop itself, so a stall under way ends before its line is written.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const file = process.env.MXC_BENCH_STALL_FILE;
if (file) {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const schedstat = `/proc/self/task/${process.pid}/schedstat`;
  const cpuNs = () => Number(readFileSync(schedstat, 'utf8').split(' ')[0]);
  let last = cpuNs();
  let maxCpuNs = 0;
  const tick = () => {
    const now = cpuNs();
    maxCpuNs = Math.max(maxCpuNs, now - last);
    last = now;
  };
  setInterval(tick, 5).unref();
  let n = 0;
  process.on('SIGUSR2', () => {
    tick();
    appendFileSync(file, `${++n} ${(h.max / 1e6).toFixed(1)} ${(maxCpuNs / 1e6).toFixed(1)}\n`);
    h.reset();
    maxCpuNs = 0;
  });
}
