// The HTTP server every role listens with: request timeouts, and a plain 400
// (never a crash) for bytes that are not HTTP.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export async function listenHttp(handler: http.RequestListener, port: number, host: string): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('clientError', (_err, socket) => {
    if (socket.writable) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      setTimeout(() => socket.destroy(), 1000).unref();
    } else socket.destroy();
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
