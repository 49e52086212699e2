/**
 * Cron expressions for `cron_schedule` (five fields: minute hour day-of-month month day-of-week, UTC),
 * with `*`, lists, ranges, steps and month/day names. Pure: parse once, ask for the next run.
 */

interface Field {
  name: string;
  min: number;
  max: number;
  names?: string[];
}

const FIELDS: Field[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  {
    name: 'month',
    min: 1,
    max: 12,
    names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'],
  },
  { name: 'day of week', min: 0, max: 7, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] },
];

const MACROS: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

export interface CronSchedule {
  minutes: Set<number>;
  hours: Set<number>;
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  /** Both day fields restricted: a day matches when either matches (Vixie cron). */
  dayOr: boolean;
}

export class CronError extends Error {}

function value(s: string, f: Field): number {
  const named = f.names?.indexOf(s.toLowerCase()) ?? -1;
  const n = named >= 0 ? named + (f.min === 1 ? 1 : 0) : /^\d+$/.test(s) ? Number(s) : Number.NaN;
  if (!Number.isInteger(n) || n < f.min || n > f.max) {
    throw new CronError(`${f.name} "${s}" is not in ${f.min}-${f.max}${f.names ? ` or ${f.names[0]}…` : ''}`);
  }
  return n;
}

function field(text: string, f: Field): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/');
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1)
      throw new CronError(`${f.name} step "${stepText}" must be a positive integer`);
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = f.min;
      hi = f.max;
    } else if (range?.includes('-')) {
      const [a, b] = range.split('-');
      lo = value(a ?? '', f);
      hi = value(b ?? '', f);
      if (lo > hi) throw new CronError(`${f.name} range "${range}" runs backwards`);
    } else {
      lo = value(range ?? '', f);
      hi = stepText === undefined ? lo : f.max;
    }
    for (let v = lo; v <= hi; v += step) out.add(f.name === 'day of week' && v === 7 ? 0 : v);
  }
  return out;
}

/** Parses a cron expression; throws CronError saying which field is wrong. */
export function parseCron(expr: string): CronSchedule {
  const text = MACROS[expr.trim().toLowerCase()] ?? expr.trim();
  const parts = text.split(/\s+/);
  if (parts.length !== 5) {
    throw new CronError(
      `"${expr}" has ${parts.length} field(s); a cron schedule has 5: minute hour day-of-month month day-of-week`,
    );
  }
  const [m, h, dom, mon, dow] = parts.map((p, i) => field(p, FIELDS[i]!));
  return {
    minutes: m!,
    hours: h!,
    days: dom!,
    months: mon!,
    weekdays: dow!,
    dayOr: parts[2] !== '*' && parts[4] !== '*',
  };
}

function dayMatches(c: CronSchedule, d: Date): boolean {
  const dom = c.days.has(d.getUTCDate());
  const dow = c.weekdays.has(d.getUTCDay());
  return c.dayOr ? dom || dow : dom && dow;
}

/** The first minute strictly after `after` that the schedule matches (UTC), within five years. */
export function nextRun(c: CronSchedule, after: Date): Date {
  const t = new Date(after.getTime());
  t.setUTCSeconds(0, 0);
  t.setUTCMinutes(t.getUTCMinutes() + 1);
  const limit = after.getTime() + 5 * 366 * 86_400_000;
  while (t.getTime() <= limit) {
    if (!c.months.has(t.getUTCMonth() + 1)) {
      t.setUTCMonth(t.getUTCMonth() + 1, 1);
      t.setUTCHours(0, 0);
      continue;
    }
    if (!dayMatches(c, t)) {
      t.setUTCDate(t.getUTCDate() + 1);
      t.setUTCHours(0, 0);
      continue;
    }
    if (!c.hours.has(t.getUTCHours())) {
      t.setUTCHours(t.getUTCHours() + 1, 0);
      continue;
    }
    if (!c.minutes.has(t.getUTCMinutes())) {
      t.setUTCMinutes(t.getUTCMinutes() + 1);
      continue;
    }
    return t;
  }
  throw new CronError('the schedule never matches (e.g. 30 February)');
}
