/** Workloads: the list, filtered by status, job and node through the API (filters live in the URL hash). */
import { api, apiAll } from '../api.js';
import { html, render } from '../html.js';
import { workloadTable } from './workload-table.js';

const STATUSES = ['pending', 'starting', 'running', 'stopping', 'stopped', 'failed', 'lost'];

function options(values, selected, anyLabel) {
  return html`<option value="">${anyLabel}</option>${values.map(
    ([value, label]) =>
      html`<option value="${value}" ${value === selected ? 'selected' : ''}>${label}</option>`,
  )}`;
}

export async function showWorkloads(page, { query }) {
  const filter = {
    status: query.get('status') ?? '',
    job: query.get('job') ?? '',
    node: query.get('node') ?? '',
  };
  const [jobs, nodes] = await Promise.all([apiAll('/api/jobs'), apiAll('/api/nodes')]);
  render(
    page,
    html`<h1>Workloads</h1>
    <form class="filters" id="workload-filters">
      <label>Status <select name="status">${options(
        STATUSES.map((s) => [s, s]),
        filter.status,
        'any',
      )}</select></label>
      <label>Job <select name="job">${options(
        jobs.map((j) => [j.id, j.key]),
        filter.job,
        'any',
      )}</select></label>
      <label>Node <select name="node">${options(
        nodes.map((n) => [n.name, n.name]),
        filter.node,
        'any',
      )}</select></label>
    </form>
    <div id="workloads-table"></div>`,
  );
  const form = page.querySelector('#workload-filters');
  // The hash carries the filters, so a filtered view can be bookmarked and shared.
  form.addEventListener('change', () => {
    const q = new URLSearchParams();
    for (const k of ['status', 'job', 'node']) if (form[k].value) q.set(k, form[k].value);
    location.hash = `#/workloads${q.size ? `?${q}` : ''}`;
  });
  const region = page.querySelector('#workloads-table');
  const load = async () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    const ws = await api('GET', `/api/workloads${q.size ? `?${q}` : ''}`);
    render(
      region,
      workloadTable(
        ws,
        {},
        Object.values(filter).some(Boolean) ? 'No workload matches the filters.' : 'No workloads yet.',
      ),
    );
  };
  await load();
  return { refresh: load, wants: (e) => e.kind === 'workload' };
}
