/** Nodes: the table with resource bars and capabilities, and one node's page with its workloads and drain. */
import { api, apiAll } from '../api.js';
import { ago, badge, bar, cpu, errorBox, html, link, mb, render, table } from '../html.js';
import { workloadTable } from './workload-table.js';

function capabilities(c) {
  if (!c) return '';
  const flags = [
    c.bubblewrap && 'bubblewrap',
    c.qemu && 'qemu',
    c.kvm && 'kvm',
    c.cgroups && 'cgroups',
  ].filter(Boolean);
  return html`<span class="chips">${(c.isolation ?? []).map((i) => html`<span class="chip iso">${i}</span>`)}${flags.map(
    (f) => html`<span class="chip">${f}</span>`,
  )}</span>`;
}

function attributes(c) {
  const a = Object.entries(c?.attributes ?? {});
  return a.length
    ? html`<span class="chips">${a.map(([k, v]) => html`<span class="chip attr">${k}=${v}</span>`)}</span>`
    : '';
}

/** What the node's Nix store holds: its Nix version, and the store totals when the agent reports them. */
function store(n) {
  const c = n.capabilities ?? {};
  const s = n.store ?? c.store;
  const parts = [c.nix ? `nix ${c.nix}` : 'no nix'];
  if (s && typeof s === 'object') {
    if (s.paths !== undefined) parts.push(`${s.paths} store path${Number(s.paths) === 1 ? '' : 's'}`);
    if (s.bytes !== undefined) parts.push(mb(Number(s.bytes) / 1048576));
  }
  return parts.join(' · ');
}

function nodeStatus(n) {
  return html`${badge(n.status)}${n.connected ? '' : html` <span class="chip warn" title="no agent connection">disconnected</span>`}`;
}

export async function showNodes(page) {
  render(page, html`<h1>Nodes</h1><div id="nodes-table"></div>`);
  const region = page.querySelector('#nodes-table');
  const load = async () => {
    const nodes = await apiAll('/api/nodes');
    render(
      region,
      table(
        ['Name', 'Status', 'CPU', 'Memory', 'Disk', 'Capabilities', 'Store', 'Seen'],
        nodes.map((n) => [
          link(n.name, 'nodes', n.name),
          nodeStatus(n),
          bar(n.used.cpu, n.cpu, cpu),
          bar(n.used.memory_mb, n.memory_mb, mb),
          bar(n.used.disk_mb, n.disk_mb, mb),
          html`${capabilities(n.capabilities)} ${attributes(n.capabilities)}`,
          html`<span class="nowrap" data-store-of="${n.name}">${store(n)}</span>`,
          html`<span class="nowrap">${ago(n.last_seen_at)}</span>`,
        ]),
        'No nodes have joined. Start an agent with `mxc agent --coordinator <url>`.',
      ),
    );
  };
  await load();
  return { refresh: load, wants: (e) => e.kind === 'node' || e.kind === 'workload' };
}

export async function showNode(page, { params: [id] }) {
  let node = null;
  const draw = (n, problem) => {
    node = n;
    const c = n.capabilities ?? {};
    render(
      page,
      html`<div class="title-row"><h1>Node ${n.name}</h1>${nodeStatus(n)}
        <span class="spacer"></span>
        ${
          n.status === 'draining'
            ? html`<button type="button" class="action" data-action="undrain">Undrain</button>`
            : html`<button type="button" class="action danger" data-action="drain" ${n.status === 'down' ? 'disabled' : ''}>Drain</button>`
        }
      </div>
      ${problem ? errorBox(problem) : ''}
      <div class="cards">
        <article class="card wide">
          <h2>Resources</h2>
          <div class="meter"><span>CPU</span>${bar(n.used.cpu, n.cpu, cpu)}</div>
          <div class="meter"><span>Memory</span>${bar(n.used.memory_mb, n.memory_mb, mb)}</div>
          <div class="meter"><span>Disk</span>${bar(n.used.disk_mb, n.disk_mb, mb)}</div>
        </article>
        <article class="card">
          <h2>Machine</h2>
          <dl class="facts">
            <dt>Id</dt><dd><code>${n.id}</code></dd>
            <dt>System</dt><dd>${c.os} / ${c.arch}</dd>
            <dt>Store</dt><dd id="node-store">${store(n)}</dd>
            <dt>Agent</dt><dd>${n.version}${n.connected ? '' : ' (disconnected)'}</dd>
            <dt>Capabilities</dt><dd>${capabilities(c)}</dd>
            <dt>Attributes</dt><dd>${attributes(c) || html`<span class="muted">none</span>`}</dd>
            <dt>Last seen</dt><dd>${ago(n.last_seen_at)}</dd>
            <dt>Joined</dt><dd>${ago(n.created_at)}</dd>
          </dl>
        </article>
      </div>
      <h2>Workloads</h2>
      ${workloadTable(n.workloads, { node: false }, 'No workloads on this node.')}`,
    );
  };
  const load = async () => {
    // The workload list of the node view carries job names; the node's own list has only ids.
    const [n, workloads] = await Promise.all([
      api('GET', `/api/nodes/${encodeURIComponent(id)}`),
      api('GET', `/api/workloads?node=${encodeURIComponent(id)}`),
    ]);
    draw({ ...n, workloads });
  };
  page.addEventListener('click', async (ev) => {
    const button = ev.target.closest('button[data-action]');
    if (!button || !node) return;
    const action = button.dataset.action;
    if (action === 'drain' && !confirm(`Drain ${node.name}? Its workloads move to other nodes.`)) return;
    button.disabled = true;
    try {
      await api('POST', `/api/nodes/${encodeURIComponent(node.id)}/${action}`);
      await load();
    } catch (err) {
      draw(node, err);
    }
  });
  await load();
  return { refresh: load, wants: (e) => e.kind === 'workload' || (e.kind === 'node' && e.id === node?.id) };
}
