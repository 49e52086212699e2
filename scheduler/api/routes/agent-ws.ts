/**
 * `/api/agent/ws`: the agent connection. The agent authenticates with its join token, sends `hello`
 * within 10 s, then heartbeats and reports, handled one at a time in order; a connection whose backlog
 * of unhandled messages is full is read no further until it drains. Bad frames get an `error` message;
 * they never crash the coordinator. A message the database is out of reach for ends the connection: the
 * agent reconnects (here or to another coordinator) and its hello says again what it runs.
 */

import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { FailureStreak } from '../../../lib/failure-streak.js';
import { TokenQuery } from '../../../spec/api.js';
import { describeIssues } from '../../../spec/job.js';
import {
  AgentMessage,
  type CoordinatorMessage,
  LOG_STREAM_HEADER,
  LogStreamId,
} from '../../../spec/messages.js';
import type { AgentSession, Coordinator } from '../../coordinator.js';
import { MxcError } from '../../errors.js';
import { isDatabaseUnavailable } from '../../store/db.js';
import { type Auth, bearer } from '../auth.js';
import { errorResponses } from '../contract.js';
import { badTextError, crowdedObjectError, findBadText, findCrowdedObject } from '../input-check.js';

const HELLO_TIMEOUT_MS = 10_000;
/**
 * Messages of one agent read and not yet handled (and their bytes) at which its socket is no longer
 * read, so TCP holds the agent back instead of the coordinator's memory growing with whatever it sends
 * faster than the database takes it; read again once half of that is handled.
 */
export const AGENT_BACKLOG_MESSAGES = 256;
export const AGENT_BACKLOG_BYTES = 16 * 1024 * 1024;
/**
 * Bytes written to an agent and not yet taken by it at which its socket is no longer read, until it
 * has taken them all: every frame may be answered (a bad one by an error), so an agent that sent
 * frames and never read the answers grew the coordinator's memory by more than it sent (a one-byte
 * frame got a hundred-byte error).
 */
export const AGENT_UNREAD_BYTES = 4 * 1024 * 1024;
/** Problems a BAD_MESSAGE error names; the rest are counted (20,000 wrong entries made a 1 MiB error). */
const MAX_PROBLEMS_NAMED = 20;

/** What is wrong with a frame, in at most MAX_PROBLEMS_NAMED problems. */
function problemsOf(error: z.ZodError): string {
  const all = describeIssues(error);
  const named = all.slice(0, MAX_PROBLEMS_NAMED).join('; ');
  return all.length > MAX_PROBLEMS_NAMED ? `${named}; … and ${all.length - MAX_PROBLEMS_NAMED} more` : named;
}

/** A received frame's size in bytes. */
function frameBytes(raw: Buffer | ArrayBuffer | Buffer[]): number {
  if (Array.isArray(raw)) return raw.reduce((n, b) => n + b.length, 0);
  return raw instanceof ArrayBuffer ? raw.byteLength : raw.length;
}

export async function agentSocketRoutes(
  app: FastifyInstance,
  opts: { coordinator: Coordinator; auth: Auth },
) {
  const { coordinator } = opts;
  /** Agent messages refused because the database is out of reach: logged once a minute, not each. */
  const outage = new FailureStreak();
  const schema = {
    summary:
      'The agent connection (WebSocket): messages are spec/messages.ts AgentMessage and CoordinatorMessage',
    tags: ['agents'],
    querystring: TokenQuery,
    response: {
      101: z.null().describe('switching protocols to WebSocket'),
      ...errorResponses,
    },
  };
  app.get(
    '/api/agent/ws',
    { websocket: true, schema, config: { access: 'agent-socket' } },
    (socket: WebSocket, req) => {
      // Messages sent in one turn of the event loop (a pass's starts for this node) leave in one write:
      // the TCP socket is corked at the first and uncorked once the turn's synchronous work is done.
      const tcp = req.socket;
      let corked = false;
      const uncork = () => {
        corked = false;
        tcp.uncork();
      };
      const sendText = (text: string) => {
        if (socket.readyState !== socket.OPEN) return;
        if (!corked) {
          corked = true;
          tcp.cork();
          process.nextTick(uncork);
        }
        socket.send(text);
      };
      const session: AgentSession = {
        send: (msg: CoordinatorMessage) => sendText(JSON.stringify(msg)),
        sendText,
        close: (code = 1000, reason = '') => socket.close(code, reason),
      };
      // An agent that numbers its log messages (a malformed stream id is taken as none: unnumbered).
      const stream = LogStreamId.safeParse(req.headers[LOG_STREAM_HEADER]);
      if (stream.success) session.logStream = stream.data;
      // A refused peer gets a second to answer the close before its socket is ended: one that never
      // answers otherwise held it for the close handshake's 30 s.
      const refuse = (code: number, reason: string) => {
        socket.close(code, reason);
        setTimeout(() => socket.terminate(), 1000).unref();
      };
      if (!opts.auth.isAgent(req)) {
        session.send({
          type: 'error',
          code: 'UNAUTHORIZED',
          message: 'wrong or missing agent token: start the agent with --token (MXC_AGENT_TOKEN)',
        });
        refuse(4401, 'unauthorized');
        return;
      }
      // Revoking the token the agent joined with ends its session; so does closing the open API that an
      // agent joined without a token (the first client token): said so, on both sides.
      const untrack = opts.auth.track(
        () => opts.auth.isAgent(req),
        () => {
          if (bearer(req) !== undefined) return refuse(4401, 'agent token revoked');
          req.log.warn(
            { node: nodeId ?? undefined },
            'an agent that joined the open API without a token is disconnected: the API now needs one (give the agent an agent token: mxc tokens create NAME --kind agent)',
          );
          refuse(4401, 'the API now needs a token');
        },
      );
      let nodeId: string | null = null;
      const helloTimer = setTimeout(() => {
        if (!nodeId) refuse(4408, 'no hello within 10 s');
      }, HELLO_TIMEOUT_MS);
      // Messages are handled one at a time, in order, per connection.
      let chain: Promise<void> = Promise.resolve();
      let backlog = 0;
      let backlogBytes = 0;
      let heldBack = false;

      let notReading = false;
      /**
       * Reads the socket while the agent's unhandled messages and the bytes it has not taken are few:
       * past either bound it is read no further (TCP holds the agent back) until both are low again.
       */
      const flow = () => {
        const unread = tcp.writableLength;
        const full = backlog >= AGENT_BACKLOG_MESSAGES || backlogBytes >= AGENT_BACKLOG_BYTES;
        if (!socket.isPaused) {
          if (!full && unread < AGENT_UNREAD_BYTES) return;
          socket.pause();
          // Once a connection: a flood would pause and resume it many times.
          if (full && !heldBack)
            req.log.warn(
              { node: nodeId, messages: backlog, bytes: backlogBytes },
              'an agent sends faster than its messages are handled; its socket is read as they are',
            );
          heldBack ||= full;
        }
        if (backlog > AGENT_BACKLOG_MESSAGES / 2 || backlogBytes > AGENT_BACKLOG_BYTES / 2) return;
        if (unread < AGENT_UNREAD_BYTES / 2) {
          socket.resume();
          return;
        }
        // Paused for what the agent has not taken: read again at the socket's drain.
        if (!notReading)
          req.log.warn(
            { node: nodeId, unread },
            'an agent does not read what the coordinator sends; its socket is read no further until it does',
          );
        notReading = true;
      };
      tcp.on('drain', flow);

      socket.on('message', (raw) => {
        const bytes = frameBytes(raw);
        backlog++;
        backlogBytes += bytes;
        flow();
        const handled = () => {
          backlog--;
          backlogBytes -= bytes;
          flow();
        };
        chain = chain.then(async () => {
          let msg: AgentMessage;
          try {
            const json: unknown = JSON.parse(raw.toString());
            const crowded = findCrowdedObject(json);
            if (crowded) {
              session.send({
                type: 'error',
                code: 'BAD_MESSAGE',
                message: crowdedObjectError('the message', crowded).message,
              });
              return;
            }
            const parsed = AgentMessage.safeParse(json);
            if (!parsed.success) {
              session.send({
                type: 'error',
                code: 'BAD_MESSAGE',
                message: problemsOf(parsed.error),
              });
              return;
            }
            const bad = findBadText(parsed.data);
            if (bad) {
              session.send({
                type: 'error',
                code: 'BAD_MESSAGE',
                message: badTextError('the message', bad).message,
              });
              return;
            }
            msg = parsed.data;
          } catch (err) {
            session.send({
              type: 'error',
              code: 'BAD_MESSAGE',
              message: `not JSON: ${(err as Error).message}`,
            });
            return;
          }
          try {
            if (!nodeId) {
              if (msg.type !== 'hello') {
                session.send({
                  type: 'error',
                  code: 'HELLO_FIRST',
                  message: 'send hello before anything else',
                });
                return;
              }
              clearTimeout(helloTimer);
              try {
                nodeId = await coordinator.agentConnected(session, msg);
              } catch (err) {
                // A refused identity (node secret) ends the connection; nothing was changed.
                if (err instanceof MxcError && err.status === 403) {
                  session.send({ type: 'error', code: err.code, message: err.message });
                  req.log.warn({ node: msg.name, code: err.code }, 'refused an agent hello');
                  refuse(4403, err.code);
                  return;
                }
                throw err;
              }
              return;
            }
            await coordinator.agentMessage(nodeId, msg, session);
            outage.ended();
          } catch (err) {
            if (err instanceof MxcError)
              session.send({ type: 'error', code: err.code, message: err.message });
            else if (isDatabaseUnavailable(err)) {
              // What the message said is not stored: the connection ends, and the agent says it again in
              // its hello once it reconnects (here once the database is back, or to another coordinator).
              if (outage.failed(performance.now()))
                req.log.warn(
                  { node: nodeId, err: (err as Error).message },
                  'the database is unreachable: agents whose reports cannot be stored are disconnected, to report again on reconnect',
                );
              socket.close(1011, 'the coordinator cannot reach its database');
            } else req.log.error({ err }, 'agent message failed');
          }
        });
        chain = chain.then(handled, (err: unknown) => {
          req.log.error({ err }, 'agent message failed');
          handled();
        });
      });
      socket.on('close', () => {
        untrack();
        clearTimeout(helloTimer);
        // After the messages before the close: a hello still being handled has registered the
        // session by then, and it must not outlive its socket.
        const disconnect = () => {
          if (nodeId) coordinator.agentDisconnected(nodeId, session);
        };
        chain = chain.then(disconnect, disconnect);
      });
      socket.on('error', (err) => req.log.warn({ err }, 'agent socket error'));
    },
  );
}
