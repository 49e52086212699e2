/**
 * The coordinator's standing view of the cluster for scheduling passes: every node with its capacity,
 * what its active workloads hold and its attributes, kept in memory and brought up to date before each
 * pass by reading only the node rows changed since the previous read (a transaction-id watermark), so
 * placements by other coordinators on the same database are seen. A stale view can only cost a retry:
 * the apply re-checks capacity on the locked node rows.
 */
import type { NodeView } from './core/place.js';
import type { Queryable } from './store/db.js';
import * as nodes from './store/nodes.js';

export class ClusterView {
  private readonly byId = new Map<string, NodeView>();
  /** Nodes in name order, as a full snapshot lists them (null: rebuild from byId). */
  private ordered: NodeView[] | null = [];
  /** Position of each node id in `ordered`. */
  private readonly position = new Map<string, number>();
  private watermark: string | null = null;
  /** The capabilities each node's view was made from, as read (what a placement made without a read re-checks). */
  private readonly capabilities = new Map<string, nodes.SchedulingNodeRow['capabilities']>();

  /** Invalidations so far: one during a refresh's read makes the refresh keep no watermark. */
  private invalidations = 0;
  /** Refreshes applied so far (see `took`). */
  private applied = 0;
  /** Whether a refresh since the last takeRoomGrown read a change that could make room (see there). */
  private roomGrown = true;

  /** Forgets what was read: the next refresh reads every node (after a rejected plan, for instance). */
  invalidate(): void {
    this.watermark = null;
    this.invalidations++;
  }

  /** How many refreshes the view has taken in: what a plan on `current()` notes for `took`. */
  get reads(): number {
    return this.applied;
  }

  /** Reads the nodes changed since the last refresh (all on the first) and returns the view, in name order. */
  async refresh(q: Queryable): Promise<readonly NodeView[]> {
    const full = this.watermark === null;
    const invalidations = this.invalidations;
    const changes = await nodes.nodesChangedSince(q, this.watermark);
    if (full) {
      this.byId.clear();
      this.capabilities.clear();
      this.ordered = null;
    }
    if (full) this.roomGrown = true;
    for (const row of changes.rows) {
      const view = toNodeView(row);
      const before = this.byId.get(row.id);
      if (!this.roomGrown && (!before || mayHaveMoreRoom(before, this.capabilities.get(row.id), view, row))) {
        this.roomGrown = true;
      }
      this.byId.set(row.id, view);
      this.capabilities.set(row.id, row.capabilities);
      if (!this.ordered) continue;
      const at = this.position.get(row.id);
      if (before && before.name === view.name && at !== undefined) this.ordered[at] = view;
      else this.ordered = null;
    }
    // Invalidated meanwhile (a submit's placement could not tell what this read saw): read all next time.
    this.watermark = this.invalidations === invalidations ? changes.watermark : null;
    this.applied++;
    // A node was removed (its row is gone, so no change names it): read them all once.
    if (this.byId.size !== changes.total) {
      this.watermark = null;
      return this.refresh(q);
    }
    if (!this.ordered) {
      this.ordered = [...this.byId.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      this.position.clear();
      for (const [i, n] of this.ordered.entries()) this.position.set(n.id, i);
    }
    return this.ordered;
  }

  /**
   * Whether the refreshes since the last call read a change that could let a workload fit where it did
   * not: a node joined or was read afresh, its status, capacity or capabilities changed, or it holds
   * less than the view thought (something on it ended). A node that only took more cannot. A pass whose
   * backlog fit nowhere replans it only then (or when pending work was added).
   */
  takeRoomGrown(): boolean {
    const grown = this.roomGrown;
    this.roomGrown = false;
    return grown;
  }

  /**
   * The view as the last refresh left it, without reading anything (null before the first read or after
   * an invalidate): possibly stale, so what is planned on it must be applied under a guard that re-checks
   * the locked rows (store/placed-insert.ts).
   */
  current(): readonly NodeView[] | null {
    return this.watermark === null ? null : this.ordered;
  }

  /** The capabilities a node's view was made from, as JSON (undefined when it is not in the view). */
  capabilitiesOf(nodeId: string): string | undefined {
    const c = this.capabilities.get(nodeId);
    return c === undefined ? undefined : JSON.stringify(c);
  }

  /**
   * Adds what a committed placement takes to a node's view, the plan having been made when the view had
   * taken in `reads` refreshes. Only after a commit that placed there: the commit changed the node's row,
   * and a refresh that read before it committed has a watermark at most its transaction, so the next
   * refresh reads the row again and replaces this estimate. A refresh taken in since the plan may have
   * read the row after the commit (the usage counted twice): the view is then read afresh instead.
   */
  took(nodeId: string, demand: { cpu: number; memory_mb: number; disk_mb: number }, reads: number): void {
    if (reads !== this.applied) {
      this.invalidate();
      return;
    }
    const n = this.byId.get(nodeId);
    if (!n) return;
    const view: NodeView = {
      ...n,
      used: {
        cpu: n.used.cpu + demand.cpu,
        memory_mb: n.used.memory_mb + demand.memory_mb,
        disk_mb: n.used.disk_mb + demand.disk_mb,
      },
    };
    this.byId.set(nodeId, view);
    const at = this.position.get(nodeId);
    if (this.ordered && at !== undefined) this.ordered[at] = view;
  }
}

/** Whether a node's row, read again, could take a workload its view before could not (see takeRoomGrown). */
function mayHaveMoreRoom(
  before: NodeView,
  beforeCapabilities: nodes.SchedulingNodeRow['capabilities'] | undefined,
  after: NodeView,
  row: nodes.SchedulingNodeRow,
): boolean {
  return (
    before.name !== after.name ||
    before.status !== after.status ||
    before.connected !== after.connected ||
    before.cpu !== after.cpu ||
    before.memory_mb !== after.memory_mb ||
    before.disk_mb !== after.disk_mb ||
    after.used.cpu < before.used.cpu - 1e-9 ||
    after.used.memory_mb < before.used.memory_mb ||
    after.used.disk_mb < before.used.disk_mb ||
    JSON.stringify(beforeCapabilities) !== JSON.stringify(row.capabilities)
  );
}

/** A node row as the pure core sees it; `used` defaults to the row's trigger-kept usage. */
export function toNodeView(
  n: nodes.SchedulingNodeRow,
  used: { cpu: number; memory_mb: number; disk_mb: number } = nodes.usedOf(n),
): NodeView {
  return {
    id: n.id,
    name: n.name,
    status: n.status,
    connected: n.connected,
    cpu: n.cpu,
    memory_mb: n.memory_mb,
    disk_mb: n.disk_mb,
    used,
    isolation: n.capabilities.isolation ?? ['process'],
    attributes: {
      ...(n.capabilities.attributes ?? {}),
      host: n.name,
      os: n.capabilities.os,
      arch: n.capabilities.arch,
    },
  };
}
