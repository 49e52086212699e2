/**
 * A node:http(s) request's whole answer (status, body text, where a redirect points), for the CLI's
 * clients, which use node:http rather than fetch: fetch loads undici, whose WebAssembly HTTP parser V8
 * compiles in every fresh process.
 */
import type http from 'node:http';

export interface HttpAnswer {
  status: number;
  text: string;
  /** The Location header (a redirect's target), when there is one. */
  location?: string;
}

/**
 * A request bin/mxc.js sent before the CLI loaded (bin/client-early.js): the CLI's client takes it
 * over when it is exactly the request it would send, else aborts it.
 */
export interface EarlyRequest {
  method: string;
  href: string;
  headers: Record<string, string>;
  answer: Promise<HttpAnswer>;
  abort(): void;
}

/** Collects the answer to `req`; call it before ending the request. Rejects on a request or answer error. */
export function answerOf(req: http.ClientRequest): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString('utf8'),
          location: res.headers.location,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}
