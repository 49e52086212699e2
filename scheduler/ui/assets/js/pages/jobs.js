/**
 * Jobs: the filterable list, and one job's page with its spec, schedule, rolling updates, closure
 * (with sizes and a pre-warm button), versions and workloads.
 */
import { api, apiAll, optional } from '../api.js';
import { ago, badge, errorBox, html, link, render, table } from '../html.js';
import { closureCard } from './job-closure.js';
import { scheduleFacts, updateCard, updatesTable } from './job-updates.js';
import { workloadTable } from './workload-table.js';

function counts(ws) {
  const by = {};
  for (const w of ws) by[w.status] = (by[w.status] ?? 0) + 1;
  return html`<span class="counts">${Object.entries(by).map(([st, n]) => html`<span class="badge s-${st}">${n} ${st}</span>`)}</span>`;
}

export async function showJobs(page, { query }) {
  render(
    page,
    html`<h1>Jobs</h1>
    <form class="filters" id="job-filters">
      <label>Search <input name="q" type="search" placeholder="cluster/role/env/name" value="${query.get('q') ?? ''}"></label>
      <label>Status <select name="status">
        ${['', 'active', 'stopped'].map((s) => html`<option value="${s}" ${query.get('status') === s ? 'selected' : ''}>${s || 'any'}</option>`)}
      </select></label>
    </form>
    <div id="jobs-table"></div>`,
  );
  const form = page.querySelector('#job-filters');
  const region = page.querySelector('#jobs-table');
  let jobs = [];
  let byJob = new Map();
  const draw = () => {
    const q = form.q.value.trim().toLowerCase();
    const status = form.status.value;
    const shown = jobs.filter(
      (j) => (!q || j.key.toLowerCase().includes(q)) && (!status || j.status === status),
    );
    render(
      region,
      table(
        ['Job', 'Status', 'Version', 'Instances', 'Isolation', 'Workloads', 'Updated'],
        shown.map((j) => [
          link(j.key, 'jobs', j.id),
          badge(j.status),
          `v${j.current_version}`,
          j.spec?.instances ?? '',
          j.spec?.mxc?.isolation ?? 'process',
          counts(byJob.get(j.id) ?? []),
          ago(j.updated_at),
        ]),
        jobs.length
          ? 'No job matches the filters.'
          : 'No jobs yet. Submit one on the Submit page or with `mxc submit`.',
      ),
    );
  };
  // Filters are local: the list is small, and typing should not cost a request per key.
  form.addEventListener('input', draw);
  form.addEventListener('submit', (ev) => ev.preventDefault());
  const load = async () => {
    const [js, ws] = await Promise.all([apiAll('/api/jobs'), api('GET', '/api/workloads?limit=10000')]);
    jobs = js;
    byJob = new Map();
    for (const w of ws) byJob.set(w.job_id, [...(byJob.get(w.job_id) ?? []), w]);
    draw();
  };
  await load();
  return { refresh: load, wants: (e) => e.kind === 'job' || e.kind === 'workload' };
}

function processList(spec) {
  const ps = spec?.task?.processes ?? [];
  return table(
    ['Process', 'Command line', 'Max failures', 'Flags'],
    ps.map((p) => [
      p.name,
      html`<code class="wrap">${p.cmdline}</code>`,
      p.max_failures ?? 1,
      [p.daemon && 'daemon', p.ephemeral && 'ephemeral', p.final && 'final'].filter(Boolean).join(', '),
    ]),
  );
}

export async function showJob(page, { params: [id] }) {
  let job = null;
  let versions = [];
  let closure = null;
  let updates = [];
  let problem = null;
  // The last pre-warm's outcome stays on the page across live repaints.
  let prewarm = null;
  const draw = () => {
    const spec = job.spec ?? {};
    // A live repaint keeps the version specs the reader has opened.
    const open = new Set(
      [...page.querySelectorAll('details[data-version][open]')].map((d) => d.dataset.version),
    );
    const active = job.workloads.some((w) => !['stopped', 'failed', 'lost'].includes(w.status));
    render(
      page,
      html`<div class="title-row"><h1>Job ${job.key}</h1>${badge(job.status)}
        <span class="spacer"></span>
        <button type="button" class="action danger" data-action="stop-job" ${job.status === 'stopped' && !active ? 'disabled' : ''}>Stop job</button>
      </div>
      ${problem ? errorBox(problem) : ''}
      <div class="cards">
        <article class="card">
          <h2>Job</h2>
          <dl class="facts">
            <dt>Id</dt><dd><code>${job.id}</code></dd>
            <dt>Cluster</dt><dd>${job.cluster}</dd><dt>Role</dt><dd>${job.role}</dd>
            <dt>Environment</dt><dd>${job.environment}</dd><dt>Name</dt><dd>${job.name}</dd>
            <dt>Version</dt><dd>v${job.current_version}</dd>
            <dt>Instances</dt><dd>${spec.instances ?? 1}${spec.service ? ' (service)' : ''}</dd>
            <dt>Isolation</dt><dd>${spec.mxc?.isolation ?? 'process'}</dd>
            <dt>Rank</dt><dd id="rank">${spec.production ? html`<span class="chip">production</span> ` : ''}priority ${spec.priority ?? 0}</dd>
            ${scheduleFacts(job, spec)}
            ${spec.health_check_config ? html`<dt>Health check</dt><dd><code>${spec.health_check_config.endpoint ?? '/health'}</code></dd>` : ''}
            <dt>Updated</dt><dd>${ago(job.updated_at)}</dd>
          </dl>
        </article>
        ${updateCard(job.update, spec.instances ?? 1)}
        ${closureCard(closure, spec.mxc?.closure ?? [], prewarm)}
      </div>
      <h2>Workloads</h2>
      ${workloadTable(job.workloads, { job: false }, 'No workloads.')}
      ${updatesTable(updates)}
      <h2>Processes</h2>
      ${processList(spec)}
      <h2>Versions</h2>
      ${table(
        ['Version', 'Submitted', 'Spec hash', 'Spec'],
        versions.map((v) => [
          v.version === job.current_version
            ? html`<strong>v${v.version}</strong> (current)`
            : `v${v.version}`,
          ago(v.created_at),
          html`<code>${String(v.spec_hash ?? '').slice(0, 16)}</code>`,
          html`<details data-version="${v.version}" ${open.has(String(v.version)) ? 'open' : ''}><summary>show</summary><pre class="json">${JSON.stringify(v.spec, null, 2)}</pre></details>`,
        ]),
      )}
      <h2>Spec</h2>
      <pre class="json" id="spec">${JSON.stringify(spec, null, 2)}</pre>`,
    );
  };
  const load = async () => {
    const enc = encodeURIComponent(id);
    // Closure and updates are newer endpoints: an older coordinator answers 404, and the page still works.
    [job, versions, closure, updates] = await Promise.all([
      api('GET', `/api/jobs/${enc}`),
      apiAll(`/api/jobs/${enc}/versions`),
      optional(`/api/jobs/${enc}/closure`),
      optional(`/api/jobs/${enc}/updates`).then((u) => u ?? []),
    ]);
    // A pre-warm result speaks of the version it ran for; a new version makes it stale.
    if (prewarm?.version !== undefined && prewarm.version !== job.current_version) prewarm = null;
    draw();
  };
  const runPrewarm = async (button) => {
    button.disabled = true;
    const version = job.current_version;
    prewarm = { running: true, version };
    draw();
    try {
      prewarm = { result: await api('POST', `/api/jobs/${encodeURIComponent(job.id)}/prewarm`), version };
    } catch (err) {
      prewarm = { error: err, version };
    }
    draw();
  };
  page.addEventListener('click', async (ev) => {
    const pre = ev.target.closest('button[data-action="prewarm"]');
    if (pre) return runPrewarm(pre);
    const button = ev.target.closest('button[data-action="stop-job"]');
    if (!button || !confirm(`Stop every workload of ${job.key}?`)) return;
    button.disabled = true;
    try {
      await api('POST', `/api/jobs/${encodeURIComponent(job.id)}/stop`);
      problem = null;
      await load();
    } catch (err) {
      problem = err;
      draw();
    }
  });
  await load();
  return {
    refresh: load,
    wants: (e) =>
      (e.kind === 'job' && e.id === job?.id) ||
      (e.kind === 'workload' && job?.workloads.some((w) => w.id === e.id)),
  };
}
