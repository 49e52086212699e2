/**
 * Reads a process's cost from /proc: resident memory (VmRSS) and CPU time (utime + stime), and the
 * CPU time of one database's PostgreSQL backends, so a benchmark can say where the machine's time went.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (100 on Linux x86-64). */
const TICKS = 100;

/** Resident memory in bytes, or NaN when the process is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** User + system CPU seconds the process has used, or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name, which may itself hold spaces.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(rest[11]) + Number(rest[12])) / TICKS;
  } catch {
    return Number.NaN;
  }
}

/** User + system CPU seconds of the process's children it has reaped (their own reaped ones included). */
export function childrenCpuSeconds(pid: number | 'self'): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // cutime is field 16, cstime field 17.
    return (Number(rest[13]) + Number(rest[14])) / TICKS;
  } catch {
    return Number.NaN;
  }
}

/** PIDs of the PostgreSQL backends serving `dbName` (PostgreSQL puts the database in each backend's title). */
export function postgresBackends(dbName: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== 'postgres') continue;
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(` ${dbName} `)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * CPU used by one database's backends, sampled every `everyMs` so backends that come and go (pool
 * churn) are counted; other databases on the same server (other test runs) are left out.
 */
export class PostgresCpuMeter {
  total = 0;
  private readonly last = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly dbName: string,
    everyMs = 500,
  ) {
    for (const pid of postgresBackends(dbName)) this.last.set(pid, cpuSeconds(pid));
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  sample(): number {
    for (const pid of postgresBackends(this.dbName)) {
      const now = cpuSeconds(pid);
      if (!Number.isFinite(now)) continue;
      this.total += now - (this.last.get(pid) ?? 0);
      this.last.set(pid, now);
    }
    return this.total;
  }

  stop(): number {
    clearInterval(this.timer);
    return this.sample();
  }
}

/** Samples a process's RSS every `everyMs` and keeps the peak. */
export class RssSampler {
  peak = 0;
  last = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    everyMs = 250,
  ) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
    this.sample();
  }

  sample(): number {
    const r = rssBytes(this.pid);
    if (Number.isFinite(r)) {
      this.last = r;
      this.peak = Math.max(this.peak, r);
    }
    return r;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** CPU of the coordinator, its database's PostgreSQL backends and this process over a window, in seconds. */
export interface CpuSplit {
  coordinator: number;
  postgres: number;
  bench: number;
  wall: number;
}

/** Starts measuring; the returned function stops and gives the split. */
export function cpuMark(coordinatorPid: number, dbName: string): () => CpuSplit {
  const c0 = cpuSeconds(coordinatorPid);
  const pg = new PostgresCpuMeter(dbName);
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const u = process.cpuUsage(u0);
    return {
      coordinator: cpuSeconds(coordinatorPid) - c0,
      postgres: pg.stop(),
      bench: (u.user + u.system) / 1e6,
      wall: (performance.now() - t0) / 1000,
    };
  };
}
