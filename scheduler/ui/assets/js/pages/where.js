/**
 * "Where is…": which jobs (and which of their live workloads) have a store path in their closure,
 * searched by part of a name or a full /nix/store path. The search term lives in the URL hash.
 */
import { api } from '../api.js';
import { badge, bytes, empty, errorBox, html, link, render, table } from '../html.js';

/** The coordinator answers at most this many rows; say so when the answer is cut. */
const LIMIT = 1000;

function workloads(ws) {
  if (!ws.length) return html`<span class="muted">none live</span>`;
  return html`<span class="chips">${ws.map(
    (w) =>
      html`<span class="nowrap">${link(w.id, 'workloads', w.id)} ${badge(w.status)}${w.node ? html` <span class="muted small">on ${w.node}</span>` : ''}</span>`,
  )}</span>`;
}

function results(rows, needle) {
  if (!rows.length) return empty(`No job's closure has a store path matching "${needle}".`);
  const paths = new Set(rows.map((r) => r.path));
  const jobs = new Set(rows.map((r) => r.job_id));
  const live = rows.reduce((n, r) => n + r.workloads.length, 0);
  // Rows come sorted by path: the path is printed once per group, so the jobs under it stand out.
  return html`<p class="muted" id="where-summary">${paths.size} store path${paths.size === 1 ? '' : 's'} in
      ${jobs.size} job${jobs.size === 1 ? '' : 's'}, ${live} live workload${live === 1 ? '' : 's'}${rows.length >= LIMIT ? ` (first ${LIMIT} rows only: narrow the search)` : ''}.</p>
    ${table(
      ['Store path', 'Size', 'Job', 'Version', 'Workloads'],
      rows.map((r, i) => [
        i > 0 && rows[i - 1].path === r.path
          ? html`<span class="muted small" title="the same store path as above">↑ same</span>`
          : html`<code class="wrap">${r.path}</code>`,
        html`<span class="nowrap">${bytes(r.nar_size)}</span>`,
        link(r.job, 'jobs', r.job_id),
        html`v${r.version}${r.current ? html` <span class="chip">current</span>` : ''}`,
        workloads(r.workloads),
      ]),
    )}`;
}

export async function showWhere(page, { query }) {
  const needle = (query.get('q') ?? '').trim();
  render(
    page,
    html`<h1>Where is…</h1>
    <p class="muted">Which jobs have a store path in their closure, and where their workloads run. Search by part
      of a name (<code>openssl</code>, <code>busybox</code>) or paste a full <code>/nix/store/…</code> path.</p>
    <form class="filters" id="where-form">
      <label>Store path <input name="q" type="search" placeholder="openssl or /nix/store/…" value="${needle}" autocomplete="off"></label>
      <button type="submit" class="primary">Search</button>
    </form>
    <div id="where-results"></div>`,
  );
  const form = page.querySelector('#where-form');
  const region = page.querySelector('#where-results');
  const load = async () => {
    if (!needle) return;
    const rows = await api('GET', `/api/store-paths?contains=${encodeURIComponent(needle)}`);
    render(region, results(rows, needle));
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = form.q.value.trim();
    // The hash carries the term, so a search can be bookmarked; the same term again just reloads.
    const next = `#/where${q ? `?q=${encodeURIComponent(q)}` : ''}`;
    if (location.hash === next) load().catch((err) => render(region, errorBox(err)));
    else location.hash = next;
  });
  await load();
  if (!needle) form.q.focus();
  return { refresh: load, wants: (e) => Boolean(needle) && (e.kind === 'job' || e.kind === 'workload') };
}
