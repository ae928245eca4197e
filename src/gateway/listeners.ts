// Where clients come in: the TCP (or TLS) server and WebSocket upgrades at
// /ws, each accepted socket wrapped in its transport and admitted as a
// connection awaiting its login. The addresses they listen on are the ones
// the gateway announces.
import net from 'node:net';
import tls from 'node:tls';
import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { log as rootLog } from '../observability/log.js';
import type { Connection } from './connection.js';
import type { Hub } from './hub.js';
import type { GatewayOptions } from './options.js';
import { TcpTransport } from './tcp.js';
import type { Transport, TransportSink } from './transport.js';
import { WsTransport } from './ws.js';

const log = rootLog.child({ component: 'gateway' });

export class Listeners {
  private tcpServer: net.Server | undefined;
  private wss: WebSocketServer | undefined;
  publicTcpUrl: string | undefined;
  publicWsUrl: string | undefined;

  constructor(
    private readonly options: Pick<GatewayOptions, 'maxFrameBytes' | 'loginTimeoutMs'>,
    private readonly hub: Hub,
    /** A frame's bytes from a connection; false pauses reading from it (see Inbound.onPayload). */
    private readonly onPayload: (conn: Connection, payload: Uint8Array) => boolean,
  ) {}

  /**
   * Listen for TCP clients (TLS when `secure` holds a certificate and key: the
   * address becomes tls://); `publicHost` is the host written into the announced address.
   */
  listenTcp(port: number, host: string, publicHost = host, secure?: tls.SecureContextOptions): Promise<net.AddressInfo> {
    const onSocket = (socket: net.Socket) => this.accept(new TcpTransport(socket, this.options.maxFrameBytes));
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

  /** Serve WebSocket at /ws on an HTTP server (upgrade requests only). */
  attachWebSocket(http: HttpServer, publicWsUrl: string): void {
    this.publicWsUrl = publicWsUrl;
    this.wss = new WebSocketServer({
      noServer: true,
      // Frames up to 4x the limit are read and answered with FRAME_TOO_LARGE;
      // past that ws closes the socket itself with close code 1009.
      maxPayload: this.options.maxFrameBytes * 4,
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
      socket.on('error', () => socket.destroy());
      this.wss!.handleUpgrade(request, socket, head, (ws) => {
        this.accept(new WsTransport(ws, request, this.options.maxFrameBytes));
      });
    });
  }

  private accept(transport: Transport): void {
    if (this.hub.stopping) {
      transport.destroy();
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
