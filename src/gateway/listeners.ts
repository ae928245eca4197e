// Where clients come in: the TCP (or TLS) server and WebSocket upgrades at
// /ws, each accepted socket wrapped in its transport and admitted as a
// connection awaiting its login (unless the gateway's connection caps refuse
// it). The addresses they listen on are the ones the gateway announces.
import net from 'node:net';
import tls from 'node:tls';
import { STATUS_CODES, type Server as HttpServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { httpError, type HttpErrorCode } from '../protocol/http-errors.js';
import { log as rootLog } from '../observability/log.js';
import type { Connection } from './connection.js';
import type { Hub } from './hub.js';
import { TrustedProxies } from './limits.js';
import type { GatewayOptions } from './options.js';
import { TcpTransport } from './tcp.js';
import type { Transport, TransportSink } from './transport.js';
import { WsTransport } from './ws.js';

const log = rootLog.child({ component: 'gateway' });

/**
 * What the ws library may hold of one unfinished message (after login; before
 * it, WsTransport holds a connection to far less): message fragments, and
 * socket reads of a frame not yet whole. Clients send a message in one frame
 * and a frame in a few reads; a trickle or a fragment storm is cut (1008).
 */
const WS_MAX_FRAGMENTS = 64;
const WS_MAX_BUFFERED_READS = 1024;

export class Listeners {
  private tcpServer: net.Server | undefined;
  private wss: WebSocketServer | undefined;
  private readonly proxies: TrustedProxies;
  private readonly hosts: HostPolicy;
  publicTcpUrl: string | undefined;
  publicWsUrl: string | undefined;

  constructor(
    private readonly options: Pick<
      GatewayOptions, 'maxFrameBytes' | 'maxLoginFrameBytes' | 'loginTimeoutMs' | 'trustedProxies' | 'hostNames' | 'allowedOrigins'
    >,
    private readonly hub: Hub,
    /** A frame's bytes from a connection; false pauses reading from it (see Inbound.onPayload). */
    private readonly onPayload: (conn: Connection, payload: Uint8Array) => boolean,
  ) {
    this.proxies = new TrustedProxies(options.trustedProxies);
    this.hosts = new HostPolicy({ hostNames: options.hostNames, allowedOrigins: options.allowedOrigins });
  }

  /**
   * Listen for TCP clients (TLS when `secure` holds a certificate and key: the
   * address becomes tls://); `publicHost` is the host written into the announced address.
   */
  listenTcp(port: number, host: string, publicHost = host, secure?: tls.SecureContextOptions): Promise<net.AddressInfo> {
    const { maxFrameBytes, maxLoginFrameBytes } = this.options;
    const onSocket = (socket: net.Socket) => this.accept(new TcpTransport(socket, maxFrameBytes, { maxLoginFrameBytes }));
    const server: net.Server = secure
      ? tls.createServer({ ...secure, handshakeTimeout: this.options.loginTimeoutMs }, onSocket)
      : net.createServer(onSocket);
    server.on('error', (err) => log.error({ err }, 'tcp server error'));
    // A failed TLS handshake (plain bytes, bad client hello) is the client's problem: drop the socket.
    server.on('tlsClientError', (_err: Error, socket: tls.TLSSocket) => socket.destroy());
    this.tcpServer = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, backlog: 4096 }, () => {
        const address = server.address() as net.AddressInfo;
        this.publicTcpUrl = `${secure ? 'tls' : 'tcp'}://${publicHost}:${address.port}`;
        resolve(address);
      });
    });
  }

  /**
   * Serve WebSocket at /ws on an HTTP server (upgrade requests only). An
   * upgrade with a Host this server does not answer to, or from a browser
   * page on an origin it does not allow, is refused before it is upgraded
   * (see HostPolicy).
   */
  attachWebSocket(http: HttpServer, publicWsUrl: string): void {
    this.publicWsUrl = publicWsUrl;
    this.wss = new WebSocketServer({
      noServer: true,
      // Frames up to 4x the limit are read and answered with FRAME_TOO_LARGE;
      // past that ws closes the socket itself with close code 1009.
      maxPayload: this.options.maxFrameBytes * 4,
      maxFragments: WS_MAX_FRAGMENTS,
      maxBufferedChunks: WS_MAX_BUFFERED_READS,
      perMessageDeflate: false,
      clientTracking: false,
    });
    http.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (request.url ?? '').split('?')[0];
      if (path !== '/ws' || this.hub.stopping) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      const refusal = this.hosts.check(request.headers.host, request.headers.origin);
      if (refusal) {
        const { status, body } = httpError(refusal.code, refusal.message);
        const json = JSON.stringify(body);
        socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n`
          + `Content-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`);
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
      socket.on('error', () => socket.destroy());
      this.wss!.handleUpgrade(request, socket, head, (ws) => {
        const clientAddress = this.proxies.clientAddress(request.socket.remoteAddress, request.headers['x-forwarded-for']);
        this.accept(new WsTransport(ws, request, this.options.maxFrameBytes, { maxLoginFrameBytes: this.options.maxLoginFrameBytes, clientAddress }));
      });
    });
  }

  private accept(transport: Transport): void {
    if (this.hub.stopping) {
      transport.destroy();
      return;
    }
    const refusal = this.hub.admissionRefusal(transport.clientAddress);
    if (refusal) {
      this.hub.refuse(transport, refusal);
      return;
    }
    const conn = this.hub.admit(transport);
    const sink: TransportSink = {
      onPayload: (payload) => this.onPayload(conn, payload),
      onFramingError: (code, message) => this.hub.fail(conn, 0, code, message, true),
      onActivity: () => {
        conn.lastSeenMs = Date.now();
      },
      onClose: () => this.hub.close(conn, true, 'peer closed'),
    };
    transport.attach(sink);
  }

  /** Stop accepting TCP clients; resolves once the server has closed (its connections gone). */
  closeTcp(): Promise<void> {
    return new Promise<void>((resolve) => (this.tcpServer ? this.tcpServer.close(() => resolve()) : resolve()));
  }

  closeWebSocket(): void {
    this.wss?.close();
  }
}

// ---- Host and Origin -----------------------------------------------------------

/** What the HTTP port answers to, from the configuration. */
export interface HostAccess {
  /** The configured host and public host (IP literals and the loopback names pass anyway). */
  hostNames: readonly string[];
  /** Origins of pages served elsewhere (`https://app.example.com`), or `*` for any. */
  allowedOrigins: readonly string[];
}

export interface HostRefusal {
  code: Extract<HttpErrorCode, 'HOST_NOT_ALLOWED' | 'ORIGIN_NOT_ALLOWED'>;
  message: string;
}

/** Names that always mean this machine: no DNS answer an attacker gives can point them elsewhere. */
const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]']);
/** A Host header as browsers send it: a DNS name or an IP literal, and a port. */
const HOST_SYNTAX = /^(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;

/**
 * Host and Origin checks against DNS rebinding and pages on other origins
 * (a browser is the only client that cannot choose these headers, so they
 * are what protects a developer's server from the pages that browser opens).
 *
 * Host (when sent): allowed when it is an IP literal or a loopback name (no
 * rebinding can produce those), a configured name (host, public host), or
 * the host of an allowed origin. A page on evil.example whose name was made
 * to resolve to 127.0.0.1 sends `Host: evil.example:8080` and is refused.
 *
 * Origin (when sent, i.e. by a browser): allowed when it is an allowed
 * origin, a page on a configured DNS name (any scheme and port: the
 * operator's own site, e.g. behind a TLS proxy), the request's own origin
 * (same host and port as its Host), or a loopback page on the same port as a
 * loopback Host (localhost vs 127.0.0.1). `null` and anything else are refused.
 *
 * `*` among the allowed origins turns both checks off.
 */
export class HostPolicy {
  private readonly any: boolean;
  /** Host names (lower case, IPv6 in brackets) a request may name besides IP literals and the loopback names. */
  private readonly names = new Set<string>();
  private readonly origins = new Set<string>();
  /** Configured DNS names: pages there are the operator's own. */
  private readonly sites = new Set<string>();

  constructor(access: HostAccess) {
    this.any = access.allowedOrigins.includes('*');
    for (const origin of access.allowedOrigins) {
      if (origin === '*') continue;
      const u = new URL(origin);
      this.origins.add(u.origin);
      this.names.add(u.hostname);
    }
    for (const name of access.hostNames) {
      const hostname = hostnameOf(name.includes(':') && !name.startsWith('[') ? `[${name}]` : name);
      if (hostname === undefined) continue;
      this.names.add(hostname);
      if (!LOOPBACK_NAMES.has(hostname) && !isIpLiteral(hostname)) this.sites.add(hostname);
    }
  }

  /** A refusal for a request with these Host and Origin headers, or undefined to let it in. */
  check(host: string | undefined, origin: string | undefined): HostRefusal | undefined {
    if (this.any) return undefined;
    if (host !== undefined && !this.hostAllowed(host)) {
      return {
        code: 'HOST_NOT_ALLOWED',
        message: `this server does not answer to Host ${JSON.stringify(host.slice(0, 100))}; `
          + 'name it in LONGLINK_PUBLIC_HOST or LONGLINK_ALLOWED_ORIGINS',
      };
    }
    if (origin === undefined || this.originAllowed(origin, host)) return undefined;
    return {
      code: 'ORIGIN_NOT_ALLOWED',
      message: `pages on ${JSON.stringify(origin.slice(0, 100))} may not use this server; add the origin to LONGLINK_ALLOWED_ORIGINS`,
    };
  }

  private hostAllowed(host: string): boolean {
    if (!HOST_SYNTAX.test(host)) return false;
    const hostname = hostnameOf(host);
    return hostname !== undefined && (LOOPBACK_NAMES.has(hostname) || isIpLiteral(hostname) || this.names.has(hostname));
  }

  private originAllowed(origin: string, host: string | undefined): boolean {
    let page: URL;
    try {
      page = new URL(origin);
    } catch {
      return false;
    }
    if (page.protocol !== 'http:' && page.protocol !== 'https:') return false;
    if (this.origins.has(page.origin) || this.sites.has(page.hostname)) return true;
    if (host === undefined || !HOST_SYNTAX.test(host)) return false;
    // The request's own origin: the Host it was sent to, read with the page's scheme (for its default port).
    let target: URL;
    try {
      target = new URL(`${page.protocol}//${host}`);
    } catch {
      return false;
    }
    if (target.host === page.host) return true;
    return LOOPBACK_NAMES.has(target.hostname) && LOOPBACK_NAMES.has(page.hostname) && portOf(target) === portOf(page);
  }
}

function hostnameOf(host: string): string | undefined {
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return undefined;
  }
}

function isIpLiteral(hostname: string): boolean {
  return net.isIP(hostname.startsWith('[') ? hostname.slice(1, -1) : hostname) !== 0;
}

function portOf(u: URL): string {
  return u.port || (u.protocol === 'https:' ? '443' : '80');
}
