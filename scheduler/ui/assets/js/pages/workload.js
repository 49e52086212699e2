/**
 * One workload: status, why it is pending, ports, the process table, status history, stop, and the
 * live logs of one or all processes (a followed NDJSON stream, restarted when the process choice changes).
 */
import { api, apiAll, followLogs } from '../api.js';
import { ago, badge, bytes, cpu, errorBox, healthBadge, html, link, mb, render, table } from '../html.js';

const TERMINAL = ['stopped', 'failed', 'lost'];
const MAX_LOG_LINES = 5000;

function processTable(w, spec) {
  const reported = Array.isArray(w.processes) ? w.processes : [];
  const names = new Set(reported.map((p) => p.name));
  // Processes the agent has not reported yet still show, from the spec.
  const planned = (spec?.task?.processes ?? [])
    .filter((p) => !names.has(p.name))
    .map((p) => ({ name: p.name }));
  return table(
    ['Process', 'State', 'Runs', 'Failures', 'Exit code'],
    [...reported, ...planned].map((p) => [
      html`<span class="mono">${p.name}</span>`,
      p.state ? badge(p.state) : html`<span class="muted">not reported</span>`,
      p.runs ?? '',
      p.failures ?? '',
      p.exit_code ?? '',
    ]),
    'No processes.',
  );
}

function eventsTable(events) {
  return table(
    ['When', 'From', 'To', 'Reason'],
    [...events]
      .reverse()
      .map((e) => [ago(e.ts), e.from_status ? badge(e.from_status) : '', badge(e.to_status), e.reason]),
    'No events.',
  );
}

/** What realising the closure cost: the paths and bytes fetched from the coordinator's cache. */
function fetched(w) {
  if (w.fetched_paths === null || w.fetched_paths === undefined)
    return html`<span class="muted">not reported</span>`;
  const n = Number(w.fetched_paths);
  if (n === 0) return 'nothing: the closure was already on the node';
  return `fetched ${n} path${n === 1 ? '' : 's'}, ${bytes(w.fetched_bytes)}`;
}

function ports(w) {
  const entries = Object.entries(w.ports ?? {});
  return entries.length
    ? entries.map(([k, v]) => html`<span class="chip">${k}: ${v}</span>`)
    : html`<span class="muted">none</span>`;
}

export async function showWorkload(page, { params: [id] }) {
  const enc = encodeURIComponent(id);
  let w = await api('GET', `/api/workloads/${enc}`);
  const versions = await apiAll(`/api/jobs/${encodeURIComponent(w.job_id)}/versions`).catch(() => []);
  const spec = versions.find((v) => v.version === w.job_version)?.spec;
  const processNames = (spec?.task?.processes ?? []).map((p) => p.name);
  let problem = null;

  render(
    page,
    html`<div id="workload-info"></div>
    <section class="logs-panel">
      <div class="title-row"><h2>Logs</h2>
        <label class="inline">Process <select id="log-process">
          <option value="">all</option>${processNames.map((n) => html`<option value="${n}">${n}</option>`)}
        </select></label>
        <span class="muted small" id="log-state"></span>
      </div>
      <pre class="logs" id="logs" tabindex="0"></pre>
    </section>`,
  );
  const info = page.querySelector('#workload-info');
  const draw = () => {
    const stoppable = !TERMINAL.includes(w.status) && w.status !== 'stopping';
    render(
      info,
      html`<div class="title-row"><h1 class="mono">${w.id}</h1><span id="workload-status">${badge(w.status)}</span><span id="workload-health">${healthBadge(w.health)}</span>
        <span class="spacer"></span>
        <button type="button" class="action danger" id="stop-workload" ${stoppable ? '' : 'disabled'}>Stop</button>
      </div>
      ${problem ? errorBox(problem) : ''}
      ${w.status === 'pending' && w.pending_reason ? html`<p class="pending" id="pending-reason"><strong>Why pending:</strong> ${w.pending_reason}</p>` : ''}
      ${w.error ? html`<p class="error"><strong>Error:</strong> ${w.error}</p>` : ''}
      <div class="cards">
        <article class="card">
          <h2>Placement</h2>
          <dl class="facts">
            <dt>Job</dt><dd>${link(w.job ?? w.job_id, 'jobs', w.job_id)} v${w.job_version}</dd>
            <dt>Instance</dt><dd>${w.instance}</dd>
            <dt>Node</dt><dd>${w.node_id ? link(w.node ?? w.node_id, 'nodes', w.node ?? w.node_id) : html`<span class="muted">not placed</span>`}</dd>
            <dt>Isolation</dt><dd>${w.isolation}</dd>
            <dt>Resources</dt><dd>${cpu(w.cpu)} cpu · ${mb(w.memory_mb)} memory · ${mb(w.disk_mb)} disk</dd>
            <dt>Ports</dt><dd>${ports(w)}</dd>
            <dt>Closure</dt><dd id="fetched">${fetched(w)}</dd>
            <dt>Restarts</dt><dd>${w.restarts}</dd>
            <dt>Started</dt><dd>${ago(w.started_at)}</dd>
            <dt>Finished</dt><dd>${ago(w.finished_at)}</dd>
          </dl>
        </article>
        <article class="card wide">
          <h2>Processes</h2>
          <div id="processes">${processTable(w, spec)}</div>
        </article>
      </div>
      <h2>Status history</h2>
      <div id="events">${eventsTable(w.events ?? [])}</div>`,
    );
  };
  draw();

  info.addEventListener('click', async (ev) => {
    const button = ev.target.closest('#stop-workload');
    if (!button || !confirm(`Stop workload ${w.id}?`)) return;
    button.disabled = true;
    try {
      await api('POST', `/api/workloads/${enc}/stop`);
      problem = null;
      w = await api('GET', `/api/workloads/${enc}`);
    } catch (err) {
      problem = err;
    }
    draw();
  });

  // Logs: one followed stream at a time; changing the process restarts it from the beginning.
  const logsEl = page.querySelector('#logs');
  const logState = page.querySelector('#log-state');
  let abort = null;
  const follow = (process) => {
    abort?.abort();
    const ctl = new AbortController();
    abort = ctl;
    logsEl.replaceChildren();
    logState.textContent = 'following…';
    followLogs(id, {
      process,
      signal: ctl.signal,
      onLines: (rows) => {
        const atBottom = logsEl.scrollHeight - logsEl.scrollTop - logsEl.clientHeight < 40;
        const frag = document.createDocumentFragment();
        for (const r of rows) {
          const line = document.createElement('div');
          line.className = `log ${r.stream}`;
          // textContent: log lines are untrusted program output.
          line.textContent = `${new Date(r.ts).toLocaleTimeString()} ${process ? '' : `[${r.process}] `}${r.line}`;
          frag.append(line);
        }
        logsEl.append(frag);
        while (logsEl.childElementCount > MAX_LOG_LINES) logsEl.firstElementChild.remove();
        if (atBottom) logsEl.scrollTop = logsEl.scrollHeight;
      },
    }).then(
      () => {
        if (abort === ctl) logState.textContent = logsEl.childElementCount ? 'ended' : 'no output';
      },
      (err) => {
        if (abort === ctl && err.name !== 'AbortError')
          logState.textContent = `log stream failed: ${err.message}`;
      },
    );
  };
  page.querySelector('#log-process').addEventListener('change', (ev) => follow(ev.target.value));
  follow('');

  return {
    // Log events count too: the coordinator announces status changes only, and process states
    // (runs, failures) change within `running`, usually together with output.
    wants: (e) => (e.kind === 'workload' || e.kind === 'log') && e.id === w.id,
    refresh: async () => {
      w = await api('GET', `/api/workloads/${enc}`);
      draw();
    },
    dispose: () => abort?.abort(),
  };
}
