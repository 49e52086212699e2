/** The workload table shared by the workloads, job and node pages. */
import { ago, badge, cpu, healthBadge, html, link, mb, table } from '../html.js';

function why(w) {
  if (w.status === 'pending' && w.pending_reason)
    return html`<span class="reason">${w.pending_reason}</span>`;
  if (w.error) return html`<span class="reason bad">${w.error}</span>`;
  // Ending or ended: why (lost with its node, stopped by request, replaced by an update).
  if (w.reason && !['pending', 'starting', 'running'].includes(w.status))
    return html`<span class="reason">${w.reason}</span>`;
  return '';
}

/** Columns `job` and `node` can be left out where the page already says which. */
export function workloadTable(workloads, { node = true, job = true } = {}, emptyText = 'No workloads.') {
  const columns = [
    ['Workload', (w) => html`<a class="mono" href="#/workloads/${encodeURIComponent(w.id)}">${w.id}</a>`],
    job && ['Job', (w) => link(w.job ?? w.job_id, 'jobs', w.job_id)],
    [
      'Status',
      // Health only while it matters: a stopped workload's last verdict is history.
      (w) =>
        html`<span class="chips"><span data-status-of="${w.id}">${badge(w.status)}</span>${w.status === 'running' ? healthBadge(w.health) : ''}</span>`,
    ],
    node && [
      'Node',
      (w) =>
        w.node_id
          ? link(w.node ?? w.node_id, 'nodes', w.node ?? w.node_id)
          : html`<span class="muted">—</span>`,
    ],
    [
      'Resources',
      (w) =>
        html`<span class="nowrap">${cpu(w.cpu)} cpu · ${mb(w.memory_mb)}</span> <span class="chip iso">${w.isolation}</span>`,
    ],
    ['Restarts', (w) => w.restarts],
    ['Updated', (w) => ago(w.updated_at)],
    ['Why', why],
  ].filter(Boolean);
  return table(
    columns.map(([h]) => h),
    workloads.map((w) => columns.map(([, cell]) => cell(w))),
    emptyText,
  );
}
