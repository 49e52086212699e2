/**
 * SQL for `mxc_leader`, the leader lease (Oban's peers table judged by the database clock, never a
 * coordinator's own): acquire when expired, renew only as the owner at the same epoch, release at once.
 */
import type { Queryable } from './db.js';

const NAME = 'leader';

/**
 * Takes the lease when it is free or expired, or was ours before a restart (same id, new epoch), or
 * `steal` (PGlite: one process owns the database).
 */
export async function acquireLease(
  q: Queryable,
  holder: string,
  leaseMs: number,
  steal = false,
): Promise<number | null> {
  const rows = await q.query<{ epoch: number }>(
    `INSERT INTO mxc_leader (name, holder, epoch, expires_at)
     VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond')
     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = mxc_leader.epoch + 1,
       expires_at = EXCLUDED.expires_at
     WHERE mxc_leader.expires_at < clock_timestamp() OR mxc_leader.holder = EXCLUDED.holder OR $4::boolean
     RETURNING epoch`,
    [NAME, holder, leaseMs, steal],
  );
  return rows[0]?.epoch ?? null;
}

/** Extends the lease; false when it is no longer ours (expired, taken, or a newer epoch). */
export async function renewLease(
  q: Queryable,
  holder: string,
  epoch: number,
  leaseMs: number,
): Promise<boolean> {
  const rows = await q.query(
    `UPDATE mxc_leader SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
     WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp() RETURNING epoch`,
    [NAME, holder, epoch, leaseMs],
  );
  return rows.length > 0;
}

/** Gives the lease up now, so another coordinator takes over without waiting for expiry. */
export async function releaseLease(q: Queryable, holder: string, epoch: number): Promise<void> {
  await q.query(
    `UPDATE mxc_leader SET expires_at = clock_timestamp() - interval '1 millisecond'
     WHERE name = $1 AND holder = $2 AND epoch = $3`,
    [NAME, holder, epoch],
  );
}

/**
 * Fencing: true when `holder` still holds the lease at `epoch`. Run inside a leader-only transaction;
 * the row is share-locked, so the lease cannot change hands before that transaction ends.
 */
export async function holdsLease(
  q: Queryable,
  holder: string,
  epoch: number,
  leaseMs: number,
): Promise<boolean> {
  // A leader frozen mid-transaction (SIGSTOP, a VM pause) would keep the share lock and block every
  // election; the server ends such a session after one lease, so its writes fail and others take over.
  await q.query(`SELECT set_config('idle_in_transaction_session_timeout', $1, true)`, [
    String(Math.ceil(leaseMs)),
  ]);
  const rows = await q.query(
    `SELECT 1 FROM mxc_leader WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
     FOR SHARE`,
    [NAME, holder, epoch],
  );
  return rows.length > 0;
}

export async function currentLeader(
  q: Queryable,
): Promise<{ holder: string; epoch: number; expires_at: Date } | null> {
  const rows = await q.query<{ holder: string; epoch: number; expires_at: Date }>(
    'SELECT holder, epoch, expires_at FROM mxc_leader WHERE name = $1 AND expires_at > clock_timestamp()',
    [NAME],
  );
  return rows[0] ?? null;
}
