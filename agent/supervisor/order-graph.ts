/**
 * The task's `order` constraints as a predecessor map, validated up front so the runner never
 * waits forever on a name that does not exist or on a cycle.
 */
import { findOrderCycle, type Task } from '../../spec/job.js';

/** Process name → the names that must have succeeded before it may start. */
export type Predecessors = Map<string, Set<string>>;

/** Builds the predecessor map; throws an Error naming the problem for bad constraints. */
export function buildPredecessors(task: Pick<Task, 'processes' | 'constraints'>): Predecessors {
  const byName = new Map<string, Task['processes'][number]>();
  for (const p of task.processes) {
    if (byName.has(p.name))
      throw new Error(`task has two processes named "${p.name}"; process names must be unique`);
    byName.set(p.name, p);
  }
  const preds: Predecessors = new Map(task.processes.map((p) => [p.name, new Set<string>()]));
  for (const [i, c] of task.constraints.entries()) {
    for (const name of c.order) {
      if (!byName.has(name)) {
        throw new Error(`constraints[${i}].order names process "${name}", which the task does not have`);
      }
    }
    for (let j = 0; j + 1 < c.order.length; j++) {
      const before = byName.get(c.order[j]!)!;
      const after = byName.get(c.order[j + 1]!)!;
      if (before.final && !after.final) {
        throw new Error(
          `constraints[${i}].order puts non-final process "${after.name}" after final process "${before.name}"; ` +
            'final processes run at teardown, so only final processes may follow them',
        );
      }
      preds.get(after.name)!.add(before.name);
    }
  }
  const cycle = findOrderCycle(task.constraints.map((c) => c.order));
  if (cycle) throw new Error(`order constraints form a cycle: ${cycle.join(' → ')}`);
  return preds;
}
