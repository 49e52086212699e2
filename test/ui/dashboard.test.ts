/**
 * The dashboard in headless Chromium against a real coordinator with protocol-level agents: pages show
 * real cluster state (health, fetched bytes, store paths, closures with sizes, pre-warm, rolling updates,
 * cron, where a store path runs), live updates arrive without a reload, stop works, bad submits show their
 * errors, and a token-protected coordinator shows only the login until the token is given.
 * Screenshots go to test-artifacts/ui/.
 */
import { mkdir } from 'node:fs/promises';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { closureOf } from '../../lib/nix.js';
import { buildClosure } from '../cache/fixtures.js';
import { plainJob, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { eventually, ProtocolAgent } from '../helpers/protocol-agent.js';

const ARTIFACTS = 'test-artifacts/ui';
const XSS = '<img src=x onerror="window.__xss=1">';

let browser: Browser;
const openPages = new Set<Page>();

/** Open pages hold the change feed and log streams open; the coordinator waits for those on close. */
async function closePages() {
  for (const p of openPages) await p.close().catch(() => {});
  openPages.clear();
}

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
});

/** A page that fails the test on any script error and accepts confirm() dialogs (stop, drain). */
async function openPage(
  url: string,
  viewport = { width: 1280, height: 860 },
): Promise<Page & { errors: string[] }> {
  const page = (await browser.newPage({ viewport })) as Page & { errors: string[] };
  page.errors = [];
  openPages.add(page);
  page.on('pageerror', (err) => page.errors.push(err.message));
  // Failed requests the test provokes on purpose (401, 422) are logged as console errors too; skip those.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.errors.push(m.text());
  });
  page.on('dialog', (d) => void d.accept());
  await page.goto(url);
  return page;
}

/** The dashboard's byte format (html.js `bytes`), to check sizes against the API's numbers. */
const fmtBytes = (v: number) =>
  v < 1024 ? `${v} B` : v < 1024 ** 2 ? `${(v / 1024).toFixed(1)} KiB` : `${(v / 1024 ** 2).toFixed(1)} MiB`;

const shot = (page: Page, name: string) =>
  page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });

describe('dashboard', () => {
  let c: TestCoordinator;
  const agents: ProtocolAgent[] = [];
  // A real closure (script → lib, script → busybox), which alpha already holds and beta does not.
  let closure: Awaited<ReturnType<typeof buildClosure>>;
  let closurePaths: string[];

  beforeAll(async () => {
    [c, closure] = await Promise.all([startTestCoordinator('postgres'), buildClosure('ui-dashboard')]);
    closurePaths = await closureOf([closure.root]);
    const alpha = new ProtocolAgent({ url: c.url, name: 'alpha', cpu: 4, attributes: { rack: 'r1' } });
    // Alpha's hello reports its store, as a real agent's does.
    const send = alpha.send.bind(alpha);
    alpha.send = (m: unknown) =>
      send((m as { type: string }).type === 'hello' ? { ...(m as object), store_paths: closurePaths } : m);
    agents.push(
      await alpha.connect(),
      await new ProtocolAgent({ url: c.url, name: 'beta', cpu: 2, attributes: { rack: XSS } }).connect(),
    );
  });

  afterAll(async () => {
    await closePages();
    for (const a of agents) a.close();
    await c?.stop();
  });

  it('shows the cluster, follows it live, stops a workload, and explains bad submits', async () => {
    // The closure in the cache, so the job page has store paths (with sizes) to list.
    await pushClosure({ coordinator: c.url, paths: [closure.root] });
    const web = await c.api('POST', '/api/jobs', {
      ...plainJob({ name: 'web', instances: 2 }),
      mxc: { closure: [closure.root], ports: ['http'] },
    });
    expect(web.status).toBe(201);
    const huge = await c.api(
      'POST',
      '/api/jobs',
      plainJob({ name: 'huge', task: { ...plainJob().task, resources: { cpu: 64, ram: 1, disk: 0 } } }),
    );
    const [hugeId] = huge.body.data.workloads as string[];
    await eventually(
      async () => (await c.api('GET', '/api/workloads?status=running')).body.data.length === 2,
      5000,
      'web running',
    );

    const page = await openPage(`${c.url}/#/`);
    // Overview: node and workload counts, capacity, cache.
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    expect(await page.textContent('#node-count')).toBe('2');
    expect(await page.textContent('#workload-counts')).toContain('2 running');
    expect(await page.textContent('#workload-counts')).toContain('1 pending');
    expect(Number(await page.textContent('#cache-paths'))).toBeGreaterThanOrEqual(3);
    // The coordinator registry: this one, as leader, at its URL.
    expect(await page.textContent('#coordinators')).toContain('leader');
    expect(await page.textContent('#coordinators')).toContain(c.url);
    await shot(page, 'overview');

    // Nodes: names, resource bars, attributes shown as text (never as markup).
    await page.click('nav >> text=Nodes');
    await page.locator('td >> text=alpha').waitFor();
    expect(await page.textContent('#nodes-table')).toContain('beta');
    expect(await page.textContent('#nodes-table')).toContain(XSS);
    expect(await page.locator('#nodes-table img').count()).toBe(0);
    expect(await page.evaluate(() => (window as { __xss?: number }).__xss)).toBeUndefined();
    // The store column counts what each agent reported holding.
    expect(await page.textContent('[data-store-of="alpha"]')).toBe('nix 2.8 · 3 store paths');
    expect(await page.textContent('[data-store-of="beta"]')).toBe('nix 2.8 · 0 store paths');
    await shot(page, 'nodes');

    // The pending workload says why.
    await page.goto(`${c.url}/#/workloads/${hugeId}`);
    await page.locator('#pending-reason').waitFor();
    expect(await page.textContent('#pending-reason')).toMatch(/insufficient cpu/);

    // Live: a job submitted through the API shows up on the open workloads page, then turns running.
    await page.goto(`${c.url}/#/workloads`);
    await page.locator('#workloads-table table').waitFor();
    await page.evaluate(() => {
      (window as { __sameDocument?: boolean }).__sameDocument = true;
    });
    const api = await c.api('POST', '/api/jobs', plainJob({ name: 'api' }));
    const [apiId] = api.body.data.workloads as string[];
    await page.locator(`[data-status-of="${apiId}"] >> text=running`).waitFor({ timeout: 5000 });
    expect(await page.evaluate(() => (window as { __sameDocument?: boolean }).__sameDocument)).toBe(true);
    await shot(page, 'workloads');
    // Filters go through the URL and the API.
    await page.selectOption('#workload-filters select[name="status"]', 'pending');
    await page.waitForURL(/status=pending/);
    await page.locator(`#workloads-table a[href="#/workloads/${apiId}"]`).waitFor({ state: 'detached' });
    expect(await page.textContent('#workloads-table')).toContain(hugeId);
    await page.goto(`${c.url}/#/workloads`);

    // Workload page: history, processes, live logs, then stop from the page.
    await page.click(`a[href="#/workloads/${apiId}"]`);
    await page.locator('#workload-status >> text=running').waitFor();
    expect(await page.textContent('#events')).toContain('starting');
    const agent = agents.find((a) => a.running.has(apiId))!;
    agent.send({
      type: 'workload_status',
      workload_id: apiId,
      status: 'running',
      processes: [{ name: 'web', state: 'running', runs: 1, failures: 0, exit_code: null }],
      health: 'healthy',
      fetched: { paths: 2, bytes: 1234 },
    });
    agent.send({
      type: 'logs',
      workload_id: apiId,
      lines: [
        { process: 'web', stream: 'stdout', run: 1, ts: Date.now(), line: 'listening on :8080' },
        { process: 'web', stream: 'stderr', run: 1, ts: Date.now(), line: `warning ${XSS}` },
      ],
    });
    await page.locator('#logs >> text=listening on :8080').waitFor({ timeout: 5000 });
    expect(await page.textContent('#logs')).toContain(XSS);
    await page.locator('#processes >> text=running').waitFor();
    // The agent's health verdict and what realising the closure fetched, live.
    await page.locator('#workload-health >> text=healthy').waitFor({ timeout: 5000 });
    expect(await page.textContent('#fetched')).toBe('fetched 2 paths, 1.2 KiB');
    await shot(page, 'workload');
    await page.click('#stop-workload');
    await agent.waitFor((m) => m.type === 'stop' && m.workload_id === apiId, 5000);
    await page.locator('#workload-status >> text=stopped').waitFor({ timeout: 5000 });
    expect((await c.api('GET', `/api/workloads/${apiId}`)).body.data.status).toBe('stopped');

    // Job page: spec, the full closure with sizes and its total, versions.
    const webId = web.body.data.job.id as string;
    await page.goto(`${c.url}/#/jobs/${webId}`);
    await page.locator('#closure').waitFor();
    const sizes = (await c.api('GET', `/api/jobs/${webId}/closure`)).body.data as { nar_size: number }[];
    const total = sizes.reduce((a, p) => a + p.nar_size, 0);
    expect(total).toBeGreaterThan(1024);
    for (const p of closurePaths) expect(await page.textContent('#closure')).toContain(p);
    expect(await page.textContent('#closure-total')).toBe(`(3 store paths, ${fmtBytes(total)})`);
    expect(await page.locator('#closure .chip >> text=root').count()).toBe(1);
    expect(await page.textContent('#spec')).toContain('"instances": 2');
    expect(await page.textContent('.page')).toContain('v1 (current)');
    // Pre-warm: every node the job runs on or would go to, with what it lacks.
    await page.click('button[data-action="prewarm"]');
    await page.locator('#prewarm-result table').waitFor({ timeout: 5000 });
    const prewarmText = await page.textContent('#prewarm-result');
    expect(prewarmText).toContain(`Pre-warm of 3 paths (${fmtBytes(total)})`);
    expect(prewarmText).toMatch(/alpha\s*0 B\s*has the closure/);
    // Every node running the job is listed; beta (if it runs one) lacks the closure and is told to fetch it.
    const webNodes = (await c.api('GET', `/api/workloads?job=${webId}`)).body.data.map(
      (w: { node: string }) => w.node,
    );
    for (const n of webNodes) expect(prewarmText).toContain(n);
    if (webNodes.includes('beta')) {
      expect(prewarmText).toMatch(new RegExp(`beta\\s*${fmtBytes(total)}\\s*fetching`));
      await agents[1]!.waitFor((m) => m.type === 'prewarm', 5000);
    }
    await shot(page, 'job');

    // A rolling update to v2, followed live on the job page to its end, with its history.
    const v2 = await c.api('POST', '/api/jobs', {
      ...plainJob({
        name: 'web',
        instances: 2,
        update_config: { batch_size: 1, watch_secs: 0, max_total_failures: 0, rollback_on_failure: true },
      }),
      task: { ...plainJob().task, processes: [{ name: 'web', cmdline: 'sleep 2000' }] },
      mxc: { closure: [closure.root], ports: ['http'] },
    });
    expect(v2.status).toBe(201);
    await page.locator('#update-status >> text=succeeded').waitFor({ timeout: 10_000 });
    expect(await page.textContent('#update')).toContain('v1 → v2');
    expect(await page.textContent('#update-message')).toBe('all 2 instance(s) run version 2');
    expect(await page.textContent('#updates')).toContain('succeeded');
    expect(await page.locator('#prewarm-result').count()).toBe(0);
    await shot(page, 'job-updated');

    // A cron job shows its schedule and the next run, in the future.
    const cron = await c.api(
      'POST',
      '/api/jobs',
      plainJob({
        name: 'nightly',
        service: false,
        cron_schedule: '0 3 * * *',
        production: true,
        priority: 2,
      }),
    );
    expect(cron.status).toBe(201);
    await page.goto(`${c.url}/#/jobs/${cron.body.data.job.id}`);
    await page.locator('#cron').waitFor();
    expect(await page.textContent('#cron')).toContain('0 3 * * *');
    expect(await page.textContent('#next-run')).toMatch(/^in \d+[smh]/);
    // Its rank (Aurora's production and priority), what scheduling order and preemption go by.
    expect((await page.textContent('#rank'))?.replace(/\s+/g, ' ').trim()).toBe('production priority 2');

    // Where is…: which jobs and live workloads have busybox in their closure; search terms stay text.
    await page.click('nav >> text=Where is');
    await page.fill('#where-form input[name="q"]', closure.busybox.split('-').slice(1).join('-'));
    await page.click('#where-form button');
    await page.locator('#where-results table').waitFor();
    const whereText = await page.textContent('#where-results');
    expect(whereText).toContain(closure.busybox);
    expect(whereText).toContain('test/www/prod/web');
    const live = (await c.api('GET', `/api/workloads?job=${webId}&status=running`)).body.data as {
      id: string;
    }[];
    expect(live.length).toBe(2);
    for (const w of live) expect(whereText).toContain(w.id);
    expect(await page.textContent('#where-summary')).toMatch(/^1 store path in\s+1 job, 2 live workloads/);
    await shot(page, 'where');
    await page.fill('#where-form input[name="q"]', XSS);
    await page.click('#where-form button');
    await page.locator('#where-results .empty').waitFor();
    expect(await page.textContent('#where-results')).toContain(XSS);
    expect(await page.locator('#where-results img').count()).toBe(0);

    // Submit: a JSON syntax error locally, then the coordinator's problems, then a good submit.
    await page.click('nav >> text=Submit');
    await page.fill('#spec', '{\n  "name": "x",\n  oops\n}');
    expect(await page.textContent('#syntax')).toMatch(/Not valid JSON: .*line 3/);
    await page.fill('#spec', JSON.stringify({ ...plainJob({ name: 'bad' }), colour: 'blue' }, null, 2));
    expect(await page.isHidden('#syntax')).toBe(true);
    await page.click('#submit-button');
    await page.locator('#result .problems').waitFor();
    expect(await page.textContent('#result')).toContain('VALIDATION_FAILED');
    expect(await page.textContent('#result .problems')).toMatch(/colour/);
    await shot(page, 'submit-errors');
    await page.fill('#spec', JSON.stringify(plainJob({ name: 'good' })));
    await page.click('#submit-button');
    await page.locator('#result >> text=Submitted').waitFor();
    expect((await c.api('GET', '/api/jobs')).body.data.map((j: { name: string }) => j.name)).toContain(
      'good',
    );

    // Node page: drain from the button, undrain again.
    await page.goto(`${c.url}/#/nodes/beta`);
    await page.click('button[data-action="drain"]');
    await page.locator('button[data-action="undrain"]').waitFor();
    expect((await c.api('GET', '/api/nodes/beta')).body.data.status).toBe('draining');
    await shot(page, 'node');
    await page.click('button[data-action="undrain"]');
    await page.locator('button[data-action="drain"]').waitFor();

    // A phone-sized view of the overview, for the layout.
    const phone = await openPage(`${c.url}/#/`, { width: 390, height: 844 });
    await phone.locator('#node-count').waitFor();
    await shot(phone, 'overview-phone');
    await phone.goto(`${c.url}/#/workloads/${apiId}`);
    await phone.locator('#workload-status').waitFor();
    await shot(phone, 'workload-phone');
    await phone.goto(`${c.url}/#/jobs/${webId}`);
    await phone.locator('#closure').waitFor();
    await shot(phone, 'job-phone');
    await phone.close();

    expect(page.errors).toEqual([]);
    await page.close();
  });
});

describe('dashboard with a client token', () => {
  let c: TestCoordinator;
  let agent: ProtocolAgent;

  beforeAll(async () => {
    c = await startTestCoordinator('postgres', { tokens: { api: 'sesame' } });
    agent = await new ProtocolAgent({ url: c.url, name: 'gamma', token: 'sesame' }).connect();
  });

  afterAll(async () => {
    await closePages();
    agent?.close();
    await c?.stop();
  });

  it('serves the shell and assets without a token, with their types, and nothing outside the folder', async () => {
    const shell = await fetch(`${c.url}/`);
    expect(shell.status).toBe(200);
    expect(shell.headers.get('content-type')).toMatch(/^text\/html/);
    expect(shell.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    const js = await fetch(`${c.url}/ui/js/main.js`);
    expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
    const css = await fetch(`${c.url}/ui/style.css`);
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    const again = await fetch(`${c.url}/ui/style.css`, {
      headers: { 'if-none-match': css.headers.get('etag')! },
    });
    expect(again.status).toBe(304);
    for (const bad of ['/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/nope.js', '/ui/index.ts'])
      expect((await fetch(`${c.url}${bad}`)).status).toBe(404);
  });

  it('shows only the login until the right token is entered, then the live app', async () => {
    const page = await openPage(`${c.url}/#/nodes`);
    await page.locator('#login-form').waitFor();
    expect(await page.isVisible('nav')).toBe(false);
    expect(await page.textContent('body')).not.toContain('gamma');
    await shot(page, 'login');

    await page.fill('#token', 'wrong');
    await page.click('#login-form button');
    await page.locator('#login-error >> text=not accepted').waitFor();
    expect(await page.evaluate(() => localStorage.getItem('mxc.token'))).toBeNull();

    await page.fill('#token', 'sesame');
    await page.click('#login-form button');
    await page.locator('td >> text=gamma').waitFor();
    expect(await page.isVisible('nav')).toBe(true);
    // The change feed works with the token too: a submit shows up live.
    await page.locator('#live.state-live').waitFor();
    await page.click('nav >> text=Workloads');
    await page.locator('#workloads-table').waitFor();
    const sub = await c.api('POST', '/api/jobs', plainJob(), { authorization: 'Bearer sesame' });
    const [id] = sub.body.data.workloads as string[];
    await page.locator(`[data-status-of="${id}"] >> text=running`).waitFor({ timeout: 5000 });

    // Logging out locks the app again.
    await page.click('#logout');
    await page.locator('#login-form').waitFor();
    expect(await page.textContent('body')).not.toContain(id);
    expect(page.errors).toEqual([]);
    await page.close();
  });
});
