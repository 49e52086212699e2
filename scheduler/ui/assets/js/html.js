/**
 * Safe HTML building: the `html` tag escapes every interpolated value unless it is itself built by `html`,
 * so no string from the API ever reaches the DOM as markup. Plus small formatters shared by the pages.
 */

class SafeHtml {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}

const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

export function escapeHtml(value) {
  return String(value).replace(/[&<>"'`]/g, (c) => ENTITIES[c]);
}

function part(value) {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.text;
  if (Array.isArray(value)) return value.map(part).join('');
  return escapeHtml(value);
}

/** Tagged template: html`<b>${name}</b>` escapes `name`; arrays and nested html`` are joined as markup. */
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new SafeHtml(out);
}

/** Replaces an element's content with markup built by `html`. */
export function render(el, markup) {
  el.innerHTML = part(markup);
  // The CSP forbids inline style attributes; bar widths are set through the DOM instead.
  for (const fill of el.querySelectorAll('[data-pct]')) fill.style.width = `${fill.dataset.pct}%`;
}

/** `#/path` links with each segment URL-encoded, so ids with odd characters still route. */
export function href(...segments) {
  return `#/${segments.map((s) => encodeURIComponent(String(s))).join('/')}`;
}

export function link(label, ...segments) {
  return html`<a href="${href(...segments)}">${label}</a>`;
}

export function badge(status) {
  return html`<span class="badge s-${String(status).replace(/[^a-z]/g, '')}">${status}</span>`;
}

export function mb(n) {
  const v = Number(n) || 0;
  if (v >= 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} TiB`;
  if (v >= 1024) return `${(v / 1024).toFixed(1)} GiB`;
  return `${Math.round(v)} MiB`;
}

/** Byte counts (NAR sizes, fetched bytes): one decimal up to GiB, where closures live. */
export function bytes(n) {
  const v = Number(n) || 0;
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return v < 1024 ** 3 ? `${(v / 1024 / 1024).toFixed(1)} MiB` : mb(v / 1024 / 1024);
}

export function cpu(n) {
  const v = Number(n) || 0;
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

/** A usage bar: `used of total` with a fill that turns amber, then red, as it fills. */
export function bar(used, total, fmt = String) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  const level = pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
  return html`<div class="bar" title="${pct}%"><div class="fill ${level}" data-pct="${pct}"></div>
    <span class="bar-label">${fmt(used)} / ${fmt(total)}</span></div>`;
}

/** A short relative time: "3m ago" for the past, "in 3m" for the future (next cron runs). */
export function ago(when) {
  if (!when) return html`<span class="muted">—</span>`;
  const t = new Date(when);
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  const span = (a) =>
    a < 60
      ? `${a}s`
      : a < 3600
        ? `${Math.floor(a / 60)}m`
        : a < 86400
          ? `${Math.floor(a / 3600)}h`
          : `${Math.floor(a / 86400)}d`;
  const text = Math.abs(s) < 5 ? 'just now' : s > 0 ? `${span(s)} ago` : `in ${span(-s)}`;
  return html`<time datetime="${t.toISOString()}" title="${t.toLocaleString()}">${text}</time>`;
}

/** The agent's HTTP health check verdict (null: the job has no check, so nothing is shown). */
export function healthBadge(health) {
  if (!health) return '';
  return html`<span class="badge s-${String(health).replace(/[^a-z]/g, '')}" title="the agent's HTTP health check">${health === 'unknown' ? 'health unknown' : health}</span>`;
}

export function empty(text) {
  return html`<p class="empty">${text}</p>`;
}

/** A table inside a scroll wrapper, so wide tables scroll on phones instead of breaking the layout. */
export function table(headers, rows, emptyText = 'Nothing here yet.') {
  if (!rows.length) return empty(emptyText);
  return html`<div class="table-wrap"><table><thead><tr>${headers.map((h) => html`<th>${h}</th>`)}</tr></thead>
    <tbody>${rows.map((r) => html`<tr>${r.map((c) => html`<td>${c}</td>`)}</tr>`)}</tbody></table></div>`;
}

export function errorBox(err) {
  const problems = Array.isArray(err?.details?.problems) ? err.details.problems : [];
  // A validation message repeats its problems after the first line; the list shows them instead.
  const message = String(err?.message ?? err);
  const list = problems.length
    ? html`<ul class="problems">${problems.map((p) => html`<li>${p}</li>`)}</ul>`
    : '';
  // One line of markup: the box keeps the message's own line breaks (white-space: pre-line).
  return html`<div class="error" role="alert"><strong>${err?.code ?? 'ERROR'}</strong><span class="msg">${problems.length ? message.split('\n')[0] : message}</span>${list}</div>`;
}
