/**
 * The job page's store side: the job's full closure with NAR sizes (as the cache knows it) and the
 * result of a pre-warm, node by node.
 */
import { bytes, errorBox, href, html, table } from '../html.js';

/**
 * `closure` is `[{ path, nar_size }]` from /api/jobs/:id/closure (null when unavailable); `roots` are the
 * spec's `mxc.closure`. Without recorded sizes the roots are listed on their own.
 */
export function closureCard(closure, roots, prewarm) {
  const rootSet = new Set(roots);
  const known = Array.isArray(closure) && closure.length > 0;
  const rows = known ? closure : roots.map((path) => ({ path, nar_size: null }));
  // Biggest first: that is what a cold node spends its time fetching.
  const sorted = [...rows].sort((a, b) => (Number(b.nar_size) || 0) - (Number(a.nar_size) || 0));
  const total = rows.reduce((sum, p) => sum + (Number(p.nar_size) || 0), 0);
  const count = `${rows.length} store path${rows.length === 1 ? '' : 's'}`;
  return html`<article class="card wide">
    <div class="title-row"><h2>Closure <span class="muted small" id="closure-total">(${count}${known ? `, ${bytes(total)}` : ''})</span></h2>
      <span class="spacer"></span>
      <button type="button" class="action" data-action="prewarm" ${known && !prewarm?.running ? '' : 'disabled'}
        title="tell the nodes this job runs on, or would be placed on, to fetch the closure now">Pre-warm</button>
    </div>
    ${
      rows.length
        ? html`<div class="scroll" id="closure">${table(
            ['Store path', 'Size', ''],
            sorted.map((p) => [
              html`<code class="wrap">${p.path}</code>${rootSet.has(p.path) ? html` <span class="chip iso" title="named in the spec's mxc.closure">root</span>` : ''}`,
              html`<span class="nowrap">${p.nar_size === null ? '' : bytes(p.nar_size)}</span>`,
              html`<a class="small nowrap" href="${href('where')}?q=${encodeURIComponent(p.path)}" title="which jobs and workloads use this path">where used</a>`,
            ]),
          )}</div>`
        : html`<p class="muted">No store paths: the processes use only what the node has.</p>`
    }
    ${known ? '' : rows.length ? html`<p class="muted small">Sizes are unknown: the coordinator has no closure record for this version.</p>` : ''}
    ${prewarmResult(prewarm)}
  </article>`;
}

/** `prewarm`: null, `{ running: true }`, `{ error }` or the API's `{ paths, bytes, nodes }`. */
function prewarmResult(prewarm) {
  if (!prewarm) return '';
  if (prewarm.running) return html`<p class="muted" id="prewarm-result">Pre-warming…</p>`;
  if (prewarm.error) return html`<div id="prewarm-result">${errorBox(prewarm.error)}</div>`;
  const r = prewarm.result;
  const told = r.nodes.filter((n) => n.sent).length;
  return html`<div class="note" id="prewarm-result">
    <p>Pre-warm of ${r.paths} path${r.paths === 1 ? '' : 's'} (${bytes(r.bytes)}):
      ${told ? `${told} node${told === 1 ? '' : 's'} told to fetch what they lack.` : 'no node needed to fetch anything.'}</p>
    ${table(
      ['Node', 'Missing', 'Result'],
      r.nodes.map((n) => [
        html`<a href="${href('nodes', n.node)}">${n.node}</a>`,
        bytes(n.missing_bytes),
        n.sent
          ? html`<span class="badge s-starting">fetching</span>`
          : n.missing_bytes > 0
            ? html`<span class="badge s-stopping" title="the node is not connected; it fetches when the workload starts">not connected</span>`
            : html`<span class="badge s-running">has the closure</span>`,
      ]),
      'No node to pre-warm: nothing runs and no node fits this job.',
    )}
  </div>`;
}
