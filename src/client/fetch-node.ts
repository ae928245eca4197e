// A fetch for Node that trusts given CAs (Node's built-in fetch takes no `ca`
// and this package has no undici to configure it with): enough of fetch for
// the SDK's HTTP calls (token, discovery), on node:https and node:http.
import http from 'node:http';
import https from 'node:https';
import { nodeCa, type NodeTlsOptions } from './transport-node.js';
import type { HttpFetch } from './http.js';

/** API answers are small JSON; a larger body is refused rather than buffered. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;
const TIMEOUT_MS = 30_000;

/**
 * A fetch for `requestToken`, `listGateways` and `gatewayPicker` (their
 * `fetch` option) that verifies https:// servers against the given CAs.
 */
export function nodeFetch(options: NodeTlsOptions = {}): HttpFetch {
  const ca = nodeCa(options.ca);
  // One agent per fetch function: the CA is parsed once, not per request.
  const agent = new https.Agent({ ca, rejectUnauthorized: true });
  return (url, init = {}) => new Promise<Response>((resolve, reject) => {
    const target = new URL(url);
    const body = init.body;
    if (body !== undefined && body !== null && typeof body !== 'string' && !(body instanceof Uint8Array)) {
      reject(new TypeError('nodeFetch sends string or byte bodies only'));
      return;
    }
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, name) => (headers[name] = value));
    const request = target.protocol === 'https:'
      ? https.request(target, { method: init.method ?? 'GET', headers, agent, timeout: TIMEOUT_MS })
      : http.request(target, { method: init.method ?? 'GET', headers, timeout: TIMEOUT_MS });
    request.on('timeout', () => request.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    request.on('error', reject);
    request.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) request.destroy(new Error(`response body over ${MAX_BODY_BYTES} bytes`));
        else chunks.push(chunk);
      });
      res.on('error', reject);
      res.on('end', () => {
        const out = new Headers();
        for (const [name, value] of Object.entries(res.headers)) {
          for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) out.append(name, v);
        }
        const status = res.statusCode ?? 500;
        // A Response may not carry a body with these statuses.
        const empty = status === 204 || status === 205 || status === 304;
        resolve(new Response(empty ? null : Buffer.concat(chunks), { status, statusText: res.statusMessage ?? '', headers: out }));
      });
    });
    request.end(body ?? undefined);
  });
}
