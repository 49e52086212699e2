/**
 * Boot and routing: checks whether a token is needed (a 401 on /api/cluster/status), shows the login
 * form or the app, maps `#/path?query` to a page, and hands the page live changes.
 */
import { ApiError, api, onUnauthorized, token } from './api.js';
import { errorBox, html, render } from './html.js';
import { setLiveListener, startLive, stopLive } from './live.js';
import { showJob, showJobs } from './pages/jobs.js';
import { showLogin } from './pages/login.js';
import { showNode, showNodes } from './pages/nodes.js';
import { showOverview } from './pages/overview.js';
import { showSubmit } from './pages/submit.js';
import { showWhere } from './pages/where.js';
import { showWorkload } from './pages/workload.js';
import { showWorkloads } from './pages/workloads.js';

const ROUTES = [
  [/^\/$/, showOverview],
  [/^\/nodes$/, showNodes],
  [/^\/nodes\/([^/]+)$/, showNode],
  [/^\/jobs$/, showJobs],
  [/^\/jobs\/([^/]+)$/, showJob],
  [/^\/workloads$/, showWorkloads],
  [/^\/workloads\/([^/]+)$/, showWorkload],
  [/^\/where$/, showWhere],
  [/^\/submit$/, showSubmit],
];

const view = document.getElementById('view');
const banner = document.getElementById('banner');
const liveIndicator = document.getElementById('live');
const logoutButton = document.getElementById('logout');

let current = null;
let generation = 0;
let started = false;

function parseHash() {
  const h = location.hash.replace(/^#/, '') || '/';
  const [path, qs = ''] = h.split('?');
  return { path: path || '/', query: new URLSearchParams(qs) };
}

function showBanner(err) {
  if (!err) {
    banner.hidden = true;
    return;
  }
  render(banner, errorBox(err));
  banner.hidden = false;
}

async function route() {
  if (!started) return;
  const gen = ++generation;
  current?.dispose?.();
  current = null;
  setLiveListener(null);
  showBanner(null);
  const { path, query } = parseHash();
  for (const a of document.querySelectorAll('[data-nav]')) {
    const base = a.dataset.nav;
    a.classList.toggle('active', base === '/' ? path === '/' : path.startsWith(base));
  }
  const hit = ROUTES.map(([re, fn]) => [re.exec(path), fn]).find(([m]) => m);
  if (!hit) {
    render(
      view,
      html`<h1>Not found</h1><p>No page at <code>${path}</code>. <a href="#/">Back to the overview</a>.</p>`,
    );
    return;
  }
  const [match, show] = hit;
  const params = match.slice(1).map(decodeURIComponent);
  render(view, html`<p class="muted">Loading…</p>`);
  const page = document.createElement('section');
  page.className = 'page';
  try {
    const handle = (await show(page, { params, query })) ?? {};
    if (gen !== generation) {
      handle.dispose?.();
      return;
    }
    view.replaceChildren(page);
    current = handle;
    if (handle.refresh) {
      setLiveListener({
        wants: handle.wants ?? ((e) => e.kind !== 'log'),
        refresh: async (events) => {
          if (gen !== generation) return;
          try {
            await handle.refresh(events);
            showBanner(null);
          } catch (err) {
            if (gen === generation && err?.status !== 401) showBanner(err);
          }
        },
      });
    }
  } catch (err) {
    if (gen !== generation || err?.status === 401) return;
    render(view, html`<h1>Could not load this page</h1>${errorBox(err)}`);
  }
}

function startApp() {
  started = true;
  document.body.classList.remove('locked');
  logoutButton.hidden = !token.get();
  startLive(liveIndicator);
  route();
}

function lock(message) {
  started = false;
  generation++;
  current?.dispose?.();
  current = null;
  stopLive();
  setLiveListener(null);
  showBanner(null);
  document.body.classList.add('locked');
  logoutButton.hidden = true;
  liveIndicator.textContent = 'offline';
  liveIndicator.className = 'live';
  showLogin(view, { message, onToken: tryToken });
}

/** Checks a token against the API; on success keeps it and opens the app. Returns an error text or null. */
async function tryToken(t) {
  token.set(t);
  try {
    await api('GET', '/api/cluster/status');
  } catch (err) {
    token.clear();
    return err.status === 401 ? 'That token was not accepted.' : err.message;
  }
  startApp();
  return null;
}

onUnauthorized(() => {
  if (started) {
    token.clear();
    lock('The coordinator no longer accepts your token; enter it again.');
  }
});

logoutButton.addEventListener('click', () => {
  token.clear();
  lock('Logged out.');
});

window.addEventListener('hashchange', route);

async function boot() {
  try {
    await api('GET', '/api/cluster/status');
    startApp();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const had = Boolean(token.get());
      token.clear();
      lock(had ? 'The saved token was not accepted; enter it again.' : '');
    } else render(view, html`<h1>Cannot reach the coordinator</h1>${errorBox(err)}`);
  }
}

boot();
