// Node connectors: TCP (length-prefixed frames), the same over TLS (tls://),
// and WebSocket (ws:// and wss://, with ws). TLS always verifies the server's
// certificate: against Node's default roots, or against the CAs given in `ca`.
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';
import { ErrorCode, LengthPrefixedReader, LonglinkError, lengthPrefixed } from '../protocol/index.js';
import { failureText } from './net-errors.js';
import type { ClientConnection, ConnectionEvents, Connector } from './transport.js';

/** Frames from the server can be large (a sync page); this bounds them. */
const MAX_INBOUND_FRAME = 16 * 1024 * 1024;

/** PEM text or bytes of one or more certificates. */
export type PemInput = string | Uint8Array | (string | Uint8Array)[];

/** How a Node client checks a TLS server (tls://, wss://, https://). */
export interface NodeTlsOptions {
  /**
   * The certificate authorities (PEM) to trust, for a private deployment whose
   * certificate no public CA signed. Replaces Node's default root list, as
   * Node's own `ca` option does. @default Node's default roots
   */
  ca?: PemInput;
}

/** Node's `ca` option from ours (Node takes strings or Buffers, not plain Uint8Arrays). */
export function nodeCa(ca: PemInput | undefined): (string | Buffer)[] | undefined {
  if (ca === undefined) return undefined;
  return (Array.isArray(ca) ? ca : [ca]).map((c) => (typeof c === 'string' ? c : Buffer.from(c)));
}

/** A host as sockets want it: `[::1]` in a URL is `::1` to connect to. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** A connect failure as a coded error naming the URL and the cause. */
function connectError(url: string, err: Error): LonglinkError {
  return new LonglinkError(ErrorCode.UNAVAILABLE, `cannot connect to ${url}: ${failureText(err)}`);
}

function connectTcp(url: string, parsed: URL, secure: tls.ConnectionOptions | undefined, events: ConnectionEvents): Promise<ClientConnection> {
  return new Promise((resolve, reject) => {
    const host = hostOf(parsed);
    const port = Number(parsed.port);
    // SNI takes names, not addresses; the certificate is still checked against an address.
    const socket = secure
      ? tls.connect({ ...secure, host, port, servername: net.isIP(host) ? undefined : host })
      : net.connect({ host, port });
    const reader = new LengthPrefixedReader(MAX_INBOUND_FRAME);
    let open = false;
    socket.setNoDelay(true);
    // Over TLS the connection is usable once the handshake (and the certificate check) is done.
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      open = true;
      resolve({
        send: (frame) => {
          if (!socket.destroyed) socket.write(lengthPrefixed(frame));
        },
        close: () => socket.end(),
      });
    });
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      try {
        for (let p = reader.next(); p; p = reader.next()) events.onFrame(p);
      } catch (err) {
        socket.destroy(err as Error);
      }
    });
    socket.on('error', (err) => {
      if (!open) reject(connectError(url, err));
    });
    socket.on('close', () => {
      if (open) events.onClose('connection closed');
      else reject(new LonglinkError(ErrorCode.UNAVAILABLE, `cannot connect to ${url}: closed during the handshake`));
    });
  });
}

function connectWs(url: string, secure: tls.ConnectionOptions, events: ConnectionEvents): Promise<ClientConnection> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...secure, perMessageDeflate: false, maxPayload: MAX_INBOUND_FRAME });
    ws.binaryType = 'nodebuffer';
    let open = false;
    ws.once('open', () => {
      open = true;
      resolve({
        send: (frame) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: true });
        },
        close: () => ws.close(1000),
      });
    });
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) events.onFrame(data);
    });
    ws.on('error', (err) => {
      if (!open) reject(connectError(url, err));
    });
    ws.on('close', (code) => {
      if (open) events.onClose(`websocket closed (${code})`);
    });
  });
}

/**
 * A connector for Node that trusts the given CAs for tls:// and wss://
 * (`nodeConnector` is this with Node's default roots).
 */
export function createNodeConnector(options: NodeTlsOptions = {}): Connector {
  const ca = nodeCa(options.ca);
  // Verification is never turned off: rejectUnauthorized is Node's default, said aloud. No `ca`: Node's roots.
  const secure: tls.ConnectionOptions = { ca, rejectUnauthorized: true };
  return (url, events) => {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return Promise.reject(new LonglinkError(ErrorCode.BAD_REQUEST, `bad gateway URL ${url}`));
    }
    switch (parsed.protocol) {
      case 'tcp:':
        return connectTcp(url, parsed, undefined, events);
      case 'tls:':
        return connectTcp(url, parsed, secure, events);
      case 'ws:':
      case 'wss:':
        return connectWs(url, secure, events);
      default:
        return Promise.reject(new LonglinkError(
          ErrorCode.BAD_REQUEST, `unsupported gateway URL ${url}: use tcp:// or tls://host:port, or ws:// or wss://host:port/ws`,
        ));
    }
  };
}

/** TCP, TLS and WebSocket by the URL's scheme; TLS verified against Node's default roots. */
export const nodeConnector: Connector = createNodeConnector();
