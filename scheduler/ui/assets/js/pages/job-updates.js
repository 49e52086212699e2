/**
 * The job page's time side: the cron schedule with its next run, and rolling updates (the latest
 * one as a card with its progress, all of them as a history table).
 */
import { ago, badge, bar, html, table } from '../html.js';

/** Facts rows (`<dt>`/`<dd>`) for a cron job; nothing for a job without a schedule. */
export function scheduleFacts(job, spec) {
  if (!spec.cron_schedule) return '';
  return html`<dt>Schedule</dt><dd id="cron"><code>${spec.cron_schedule}</code>
      <span class="muted small">${spec.cron_collision_policy ?? 'KILL_EXISTING'}</span></dd>
    <dt>Next run</dt><dd id="next-run">${
      job.next_run_at
        ? html`${ago(job.next_run_at)} <span class="muted small">${new Date(job.next_run_at).toLocaleString()}</span>`
        : html`<span class="muted">none scheduled${job.status === 'stopped' ? ' (job stopped)' : ''}</span>`
    }</dd>`;
}

function versions(u) {
  return html`<span class="nowrap">v${u.from_version} → v${u.to_version}</span>${u.rollback ? html` <span class="chip warn">rollback</span>` : ''}`;
}

/** The latest rolling update (`update` from /api/jobs/:id), or nothing when the job never had one. */
export function updateCard(update, instances) {
  if (!update) return '';
  const done = Math.min(update.next_instance ?? 0, instances);
  return html`<article class="card" id="update">
    <h2>Rolling update</h2>
    <dl class="facts">
      <dt>Status</dt><dd id="update-status">${badge(update.status)}</dd>
      <dt>Versions</dt><dd>${versions(update)}</dd>
      ${
        update.status === 'rolling' || update.status === 'paused'
          ? html`<dt>Progress</dt><dd>${bar(done, instances, (n) => `${n}`)}<span class="muted small">instances done</span></dd>`
          : ''
      }
      <dt>Message</dt><dd id="update-message">${update.message || html`<span class="muted">—</span>`}</dd>
      <dt>Started</dt><dd>${ago(update.created_at)}</dd>
      <dt>Updated</dt><dd>${ago(update.updated_at)}</dd>
    </dl>
  </article>`;
}

/** Every rolling update of the job, newest first (from /api/jobs/:id/updates). */
export function updatesTable(updates) {
  if (!updates.length) return '';
  return html`<h2>Rolling updates</h2>
    <div id="updates">${table(
      ['Started', 'Versions', 'Status', 'Message', 'Updated'],
      updates.map((u) => [ago(u.created_at), versions(u), badge(u.status), u.message, ago(u.updated_at)]),
    )}</div>`;
}
