/** `/api/workloads`: list, show (with pending reason and events), stop, events, logs (optionally followed). */

import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import * as api from '../../../spec/api.js';
import { WorkloadStatus } from '../../../spec/messages.js';
import type { ChangeEvent, Coordinator } from '../../coordinator.js';
import { isTerminal } from '../../core/lifecycle.js';
import { errors } from '../../errors.js';
import * as jobs from '../../store/jobs.js';
import * as logs from '../../store/logs.js';
import * as nodes from '../../store/nodes.js';
import * as wl from '../../store/workloads.js';
import { data, decodeCursor, encodeCursor, errorResponses, IdParams, typed } from '../contract.js';
import { isSeedJobKey, seedJobSpec, seedView } from '../seed-workloads.js';
import type { StreamSlots } from '../stream-slots.js';
import { presentWorkloads } from '../views.js';

const tags = ['workloads'];

/** The list query, with `status` split into known statuses. */
const ListQuery = api.WorkloadListQuery.extend({
  status: z
    .string()
    .transform((v) => v.split(','))
    .pipe(z.array(WorkloadStatus))
    .optional(),
});

export async function workloadRoutes(
  app: FastifyInstance,
  { coordinator, streams }: { coordinator: Coordinator; streams: StreamSlots },
) {
  const db = coordinator.db;
  const r = typed(app);

  const present = (ws: wl.WorkloadRow[]) => presentWorkloads(db, ws);

  /**
   * A page of log lines after `after`, oldest first: at most `limit` lines and LOG_PAGE_BYTES of them
   * as JSON (at least one), each checked by its schema; `text` is the page as ndjson, `more` true when
   * lines may follow it.
   */
  const readPage = async (workloadId: string, process: string | undefined, after: number, limit: number) => {
    const read = await logs.readLogPage(db, workloadId, {
      process,
      afterId: after,
      limit,
      maxBytes: api.LOG_PAGE_BYTES,
    });
    const rows: logs.LogRow[] = [];
    let text = '';
    let bytes = 0;
    for (const r of read.rows) {
      const line = `${JSON.stringify(api.LogEntry.parse(r))}\n`;
      bytes += Buffer.byteLength(line);
      if (rows.length > 0 && bytes > api.LOG_PAGE_BYTES) break;
      rows.push(r);
      text += line;
    }
    return { rows, text, more: read.more || rows.length < read.rows.length };
  };

  r.get(
    '/api/workloads',
    {
      schema: {
        summary: 'List workloads, newest first',
        tags,
        querystring: ListQuery,
        response: { 200: data(z.array(api.Workload)), ...errorResponses },
      },
    },
    async (req) => {
      const q = req.query;
      let jobId: string | undefined;
      if (q.job) {
        const job = await jobs.getJob(db, q.job);
        if (!job) throw errors.notFound('job', q.job);
        jobId = job.id;
      }
      let nodeId: string | undefined;
      if (q.node) {
        const node = await nodes.getNode(db, q.node);
        if (!node) throw errors.notFound('node', q.node);
        nodeId = node.id;
      }
      return {
        data: await present(
          await wl.listWorkloads(db, {
            status: q.status,
            jobId,
            nodeId,
            idPrefix: q.id_prefix,
            limit: q.limit,
          }),
        ),
      };
    },
  );

  // samrose/mxc's API: one command as a run-once, one-process job (see seed-workloads.ts).
  r.post(
    '/api/workloads',
    {
      schema: {
        summary: 'Run one command (samrose/mxc): a one-process job that runs once; 201 with its workload',
        tags,
        body: api.SeedWorkloadRequest,
        response: { 201: data(api.SeedWorkload), ...errorResponses },
      },
    },
    async (req, reply) => {
      const res = await coordinator.submitJob(seedJobSpec(req.body));
      const w = await wl.getWorkload(db, res.workloads[0]!);
      if (!w) throw new Error(`job ${res.job.key} made no workload`);
      return reply.status(201).send({ data: seedView(w, res.job, req.body) });
    },
  );

  r.delete(
    '/api/workloads/:id',
    {
      schema: {
        summary:
          'Stop and remove a workload made by POST /api/workloads (its job stops; history stays until retention)',
        tags,
        params: IdParams,
        response: { 204: z.null().describe('stopping or already ended'), ...errorResponses },
      },
    },
    async (req, reply) => {
      const w = await load(req.params.id);
      const job = await jobs.getJob(db, w.job_id);
      if (!job || !isSeedJobKey(job.key)) {
        throw errors.conflict(
          'NOT_A_SINGLE_WORKLOAD',
          `workload ${w.id} belongs to job ${job?.key ?? w.job_id}, which would replace it; stop the job instead (mxc jobs stop ${job?.key ?? w.job_id})`,
        );
      }
      if (job.status === 'active') await coordinator.stopJob(job.id);
      return reply.status(204).send(null);
    },
  );

  const load = async (id: string) => {
    const w = await wl.getWorkload(db, id);
    if (!w) throw errors.notFound('workload', id);
    return w;
  };

  r.get(
    '/api/workloads/:id',
    {
      schema: {
        summary: 'A workload with pending reason and events',
        tags,
        params: IdParams,
        response: { 200: data(api.WorkloadDetail), ...errorResponses },
      },
    },
    async (req) => {
      const w = await load(req.params.id);
      const [view] = await present([w]);
      const events = await wl.listEvents(db, w.id);
      return { data: { ...view!, events } };
    },
  );

  r.get(
    '/api/workloads/:id/events',
    {
      schema: {
        summary: 'Status history',
        tags,
        params: IdParams,
        response: { 200: data(z.array(api.WorkloadEvent)), ...errorResponses },
      },
    },
    async (req) => {
      const w = await load(req.params.id);
      return { data: await wl.listEvents(db, w.id) };
    },
  );

  r.post(
    '/api/workloads/:id/stop',
    {
      schema: {
        summary: 'Stop a workload (pending, starting or running)',
        tags,
        params: IdParams,
        response: { 200: data(api.Workload), ...errorResponses },
      },
    },
    async (req) => {
      const w = await coordinator.stopWorkload(req.params.id);
      const [view] = await present([w]);
      return { data: view! };
    },
  );

  r.get(
    '/api/workloads/:id/logs',
    {
      schema: {
        summary:
          'Process output, a page at a time (follow next_cursor); with follow=1 an ndjson stream of log entries until the workload ends',
        tags,
        params: IdParams,
        querystring: api.LogsQuery,
        response: {
          200: api.LogsPage.describe(
            'without follow; with follow=1 the answer is application/x-ndjson, one LogEntry a line',
          ),
          ...errorResponses,
        },
      },
    },
    async (req, reply) => {
      const q = req.query;
      const w = await load(req.params.id);
      const follow = q.follow === '1' || q.follow === 'true';
      if (follow && q.cursor !== undefined)
        throw errors.badRequest('cursor pages a read without follow; a follow takes after');
      if (!follow) {
        // The lines asked for: the newest `limit` (after `after`), or what a cursor says is left of them.
        let after: number;
        let wanted: number;
        if (q.cursor !== undefined) {
          const [a, n] = decodeCursor(q.cursor, /^(0|[1-9]\d{0,15})\.[1-9]\d{0,5}$/).split('.');
          after = Number(a);
          wanted = Number(n);
          // A cursor is the client's to keep, and to forge: it asks no more than a limit may.
          if (wanted > api.MAX_LOG_LINES_ASKED)
            throw errors.badRequest(`a cursor asks for at most ${api.MAX_LOG_LINES_ASKED} lines`);
        } else {
          wanted = q.limit ?? 1000;
          after = await logs.tailStart(db, w.id, { process: q.process, afterId: q.after, lines: wanted });
        }
        const page = await readPage(w.id, q.process, after, Math.min(wanted, api.LOG_PAGE_LINES));
        const left = wanted - page.rows.length;
        const last = page.rows[page.rows.length - 1];
        return {
          data: page.rows,
          next_cursor: left > 0 && page.more && last ? encodeCursor(`${last.id}.${left}`) : null,
          dropped: await logs.droppedLines(db, w.id),
        };
      }

      // Follow: newline-delimited JSON, one log line per line, until the workload ends or the client leaves.
      streams.take(req, reply.raw);
      reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
      // Sent now, not with the first line: a follow of a workload with nothing logged yet is answered.
      reply.raw.flushHeaders();
      let after = q.after ?? 0;
      let first = true;
      let ended = false;
      let busy = false;
      /** Set while the client has not taken what was written: the database holds the rest meanwhile. */
      let waiting = false;
      const pump = async () => {
        if (busy || ended || waiting) return;
        busy = true;
        try {
          // The end is read before the lines: agents send an ended workload's last lines before its end,
          // so the lines read after seeing it are all there are.
          const now = await wl.getWorkload(db, w.id);
          // Without `after`, reading starts at the tail (-n): the newest `limit` lines.
          if (first && q.after === undefined)
            after = await logs.tailStart(db, w.id, { process: q.process, lines: q.limit ?? 1000 });
          first = false;
          for (;;) {
            // One page at a time, each written whole, and none while the client has not taken the last.
            const page = await readPage(w.id, q.process, after, 1000);
            if (page.rows.length) {
              reply.raw.write(page.text);
              after = page.rows[page.rows.length - 1]!.id;
            }
            if (reply.raw.writableNeedDrain) {
              // Read on from `after` once the client has taken these, not into the coordinator's memory.
              waiting = true;
              req.log.debug({ workload: w.id, after }, 'a log follow waits for its client to read');
              reply.raw.once('drain', () => {
                waiting = false;
                void pump();
              });
              return;
            }
            if (!page.more) break;
          }
          if (!now || isTerminal(now.status)) finish();
        } catch (err) {
          req.log.warn({ err }, 'log follow ended by an error');
          finish();
        } finally {
          busy = false;
        }
      };
      const onChange = (e: ChangeEvent) => {
        if (e.id === w.id) void pump();
      };
      const timer = setInterval(() => void pump(), 1000);
      const finish = () => {
        if (ended) return;
        ended = true;
        clearInterval(timer);
        coordinator.events.off('change', onChange);
        reply.raw.end();
      };
      coordinator.events.on('change', onChange);
      req.raw.on('close', finish);
      await pump();
      return reply;
    },
  );
}
