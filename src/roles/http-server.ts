// The HTTP server every role listens with: request timeouts, a plain 400
// (never a crash) for bytes that are not HTTP, TLS (https, wss) when the
// configuration names a certificate and key, and the Host and Origin checks
// (HostPolicy: against DNS rebinding and pages on other origins) before any
// route sees a request. (/ws upgrades are checked by the gateway, likewise.)
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { ConfigError, type ServerConfig, type TlsFiles } from '../config.js';
import { httpError } from '../protocol/http-errors.js';
import { HostPolicy, type HostAccess } from '../gateway/listeners.js';

/** The certificate and key the configuration names, read once at start. */
export function loadTls(files: TlsFiles | undefined): SecureContextOptions | undefined {
  if (!files) return undefined;
  try {
    return { cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) };
  } catch (err) {
    throw new ConfigError(`cannot read the TLS certificate or key: ${(err as Error).message}`);
  }
}

/** The names and origins a role's HTTP port answers to, from the configuration (see HostPolicy). */
export function hostAccess(config: Pick<ServerConfig, 'host' | 'publicHost' | 'allowedOrigins'>): HostAccess {
  return { hostNames: [config.host, config.publicHost], allowedOrigins: config.allowedOrigins };
}

/** `handler`, answering first a request whose Host or Origin the policy refuses (421 HOST_NOT_ALLOWED, 403 ORIGIN_NOT_ALLOWED). */
export function checkingHost(handler: http.RequestListener, access: HostAccess): http.RequestListener {
  const policy = new HostPolicy(access);
  return (req, res) => {
    const refusal = policy.check(req.headers.host, req.headers.origin);
    if (!refusal) {
      handler(req, res);
      return;
    }
    const { status, body } = httpError(refusal.code, refusal.message);
    res.shouldKeepAlive = false;
    sendJson(res, status, body);
  };
}

/** `access`: check every request's Host and Origin against it (every role passes hostAccess(config)). */
export async function listenHttp(
  handler: http.RequestListener, port: number, host: string, tls?: SecureContextOptions, access?: HostAccess,
): Promise<{ server: http.Server; port: number }> {
  if (access) handler = checkingHost(handler, access);
  // https.Server extends tls.Server, not http.Server, but serves the same request and upgrade events.
  const server = tls ? (https.createServer({ ...tls, handshakeTimeout: 10_000 }, handler) as unknown as http.Server) : http.createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // Bytes that are not HTTP (or headers past Node's 16 KiB): a coded JSON answer, then close.
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const { status, body: error } = tooLarge
      ? httpError('HEADERS_TOO_LARGE', 'request headers are over 16 KiB')
      : httpError('BAD_REQUEST', 'malformed HTTP request');
    const body = JSON.stringify(error);
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`
      + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    setTimeout(() => socket.destroy(), 1000).unref();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: 4096 }, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}

export async function closeHttp(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}
