// Node connectors: TCP (length-prefixed frames) and WebSocket (ws).
import net from 'node:net';
import WebSocket from 'ws';
import { LengthPrefixedReader, lengthPrefixed } from '../protocol/index.js';
import type { ClientConnection, ConnectionEvents, Connector } from './transport.js';

/** Frames from the server can be large (a sync page); this bounds them. */
const MAX_INBOUND_FRAME = 16 * 1024 * 1024;

function connectTcp(url: URL, events: ConnectionEvents): Promise<ClientConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: url.hostname, port: Number(url.port) });
    const reader = new LengthPrefixedReader(MAX_INBOUND_FRAME);
    let open = false;
    socket.setNoDelay(true);
    socket.once('connect', () => {
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
      if (!open) reject(err);
    });
    socket.on('close', () => {
      if (open) events.onClose('connection closed');
    });
  });
}

function connectWs(url: string, events: ConnectionEvents): Promise<ClientConnection> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_INBOUND_FRAME });
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
      if (!open) reject(err);
    });
    ws.on('close', (code) => {
      if (open) events.onClose(`websocket closed (${code})`);
    });
  });
}

export const nodeConnector: Connector = (url, events) => {
  const parsed = new URL(url);
  if (parsed.protocol === 'tcp:') return connectTcp(parsed, events);
  if (parsed.protocol === 'ws:' || parsed.protocol === 'wss:') return connectWs(url, events);
  return Promise.reject(new Error(`unsupported gateway URL ${url}: use tcp://host:port or ws://host:port/ws`));
};
