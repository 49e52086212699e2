/** Overview: node health, workloads by status, capacity used, the binary cache, coordinators, recent changes. */
import { api, optional } from '../api.js';
import { ago, badge, bar, cpu, empty, html, link, mb, render } from '../html.js';
import { recentChanges } from '../live.js';

const STATUSES = ['pending', 'starting', 'running', 'stopping', 'stopped', 'failed', 'lost'];
const KIND_PAGES = { workload: 'workloads', node: 'nodes', job: 'jobs' };

const CACHE_LABELS = {
  cache_paths: 'Store paths',
  cache_bytes: 'Size',
  cache_size_bytes: 'Size',
  cache_nar_bytes: 'NAR bytes',
};

function cacheValue(k, v) {
  if (/bytes/.test(k)) return mb(Number(v) / 1048576);
  return typeof v === 'object' ? JSON.stringify(v) : v;
}

function cacheCard(status, key) {
  // Size fields are whatever the cache adds to the cluster status (cache_*), when it exists; the key
  // endpoint already gives the public key.
  const fields = Object.entries(status).filter(
    ([k]) => k.startsWith('cache_') && !(key && k === 'cache_public_key'),
  );
  if (!key && !fields.length) return html`<p class="muted">No binary cache on this coordinator.</p>`;
  return html`<dl class="facts">
    ${key ? html`<dt>Key</dt><dd><code>${key.name}</code></dd><dt>Public key</dt><dd><code class="wrap">${key.public_key}</code></dd>` : ''}
    ${fields.map(([k, v]) => html`<dt>${CACHE_LABELS[k] ?? k.replace(/^cache_/, '').replace(/_/g, ' ')}</dt><dd id="${k.replace(/_/g, '-')}">${cacheValue(k, v)}</dd>`)}
  </dl>`;
}

/** High availability: every live coordinator on this database, the leader marked. */
function coordinatorsCard(s) {
  const cs = s.coordinators ?? [];
  if (!cs.length) return html`<p class="muted">No coordinator registry.</p>`;
  return html`<ul class="changes" id="coordinators">${cs.map(
    (c) => html`<li>${c.leader ? html`<span class="badge s-running">leader</span>` : ''}
      <code>${c.url || c.id}</code> <span class="muted">${c.id.slice(0, 8)} · seen ${ago(c.last_seen_at)}</span></li>`,
  )}</ul>`;
}

function changeRow(c) {
  const page = KIND_PAGES[c.kind];
  return html`<li><span class="kind">${c.kind}</span> ${page ? link(c.name ?? c.id, page, c.id) : c.id}
    ${c.status ? badge(c.status) : ''} <span class="muted">${ago(c.at)}</span></li>`;
}

export async function showOverview(page) {
  let workloads = [];
  const draw = (s, key) => {
    const byStatus = s.workloads_by_status ?? {};
    // Seed "recent" with the latest workload updates, then prepend what the live feed has seen.
    const seen = new Set(recentChanges.map((c) => `${c.kind}:${c.id}`));
    const seeded = workloads
      .filter((w) => !seen.has(`workload:${w.id}`))
      .slice(0, 10)
      .map((w) => ({ kind: 'workload', id: w.id, status: w.status, at: w.updated_at }));
    const recent = [...recentChanges, ...seeded].slice(0, 15);
    render(
      page,
      html`<h1>Overview</h1>
      <div class="cards overview">
        <article class="card">
          <h2>${link('Nodes', 'nodes')}</h2>
          <p class="big" id="node-count">${s.node_count}</p>
          <p class="counts"><span class="badge s-ready">${s.nodes_ready} ready</span>
            <span class="badge s-draining">${s.nodes_draining} draining</span>
            <span class="badge s-down">${s.nodes_down} down</span></p>
        </article>
        <article class="card">
          <h2>${link('Workloads', 'workloads')}</h2>
          <p class="big">${s.workload_count}</p>
          <p class="counts" id="workload-counts">${STATUSES.filter((st) => byStatus[st]).map(
            (st) => html`<a class="badge s-${st}" href="#/workloads?status=${st}">${byStatus[st]} ${st}</a>`,
          )}${s.workload_count ? '' : html`<span class="muted">none yet</span>`}</p>
        </article>
        <article class="card wide">
          <h2>Capacity <span class="muted small">(live nodes)</span></h2>
          <div class="meter"><span>CPU</span>${bar(s.used_cpu, s.total_cpu, cpu)}</div>
          <div class="meter"><span>Memory</span>${bar(s.used_memory_mb, s.total_memory_mb, mb)}</div>
          <div class="meter"><span>Disk</span>${bar(s.used_disk_mb, s.total_disk_mb, mb)}</div>
        </article>
        <article class="card wide">
          <h2>Binary cache</h2>
          ${cacheCard(s, key)}
        </article>
        <article class="card wide">
          <h2>Coordinators <span class="muted small">(${s.leader ? 'leader elected' : 'election under way'})</span></h2>
          ${coordinatorsCard(s)}
        </article>
        <article class="card wide">
          <h2>Recent changes</h2>
          ${recent.length ? html`<ul class="changes" id="recent">${recent.map(changeRow)}</ul>` : empty('No changes yet.')}
        </article>
      </div>
      <p class="muted small">Database: ${s.database}</p>`,
    );
  };
  let key = null;
  const load = async (withKey) => {
    const [s, ws, k] = await Promise.all([
      api('GET', '/api/cluster/status'),
      api('GET', '/api/workloads?limit=10'),
      withKey ? optional('/api/cache/key') : key,
    ]);
    workloads = [...ws].sort((a, b) => new Date(b.updated_at) - new Date(a.updated_at));
    key = k;
    draw(s, key);
  };
  await load(true);
  return { refresh: () => load(false) };
}
