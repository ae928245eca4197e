// Client adapters for the baseline servers (bench/servers/baseline.ts):
// raw `net` (u32 BE length-prefixed frames), raw `ws` (one binary message per
// body) and Socket.IO. Kept light: the load generator opens up to 18,000 of
// these per process, so no per-connection timers and no per-frame allocation
// beyond the frame itself.

import { connect as netConnect, type Socket } from 'node:net';
import { WebSocket } from 'ws';
import { io, type Socket as IoClientSocket } from 'socket.io-client';
import type { Adapter, BenchConn, ConnEvents, ConnectTarget } from './adapter.js';
import { LengthFrames } from '../lib/length-frames.js';

const OP_LOGIN = 0x01;
const OP_SEND = 0x02;
const OP_JOIN = 0x03;
const OP_PING = 0x04;
const OP_DELIVER = 0x05;

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/** Encode a body with `head` bytes reserved in front (4 for the net length prefix, 0 for ws). */
function sendFrame(head: number, to: string, msgId: number, payload: string, group: boolean): Buffer {
  const toLen = Buffer.byteLength(to);
  if (toLen > 255) throw new RangeError(`recipient id longer than 255 bytes: ${to}`);
  const payLen = Buffer.byteLength(payload);
  const buf = Buffer.allocUnsafe(head + 7 + toLen + payLen);
  if (head === 4) buf.writeUInt32BE(7 + toLen + payLen, 0);
  buf[head] = OP_SEND;
  buf.writeUInt32BE(msgId >>> 0, head + 1);
  buf[head + 5] = toLen;
  buf.write(to, head + 6, 'utf8');
  buf[head + 6 + toLen] = group ? 1 : 0;
  buf.write(payload, head + 7 + toLen, 'utf8');
  return buf;
}

function textFrame(head: number, op: number, text: string): Buffer {
  const len = Buffer.byteLength(text);
  const buf = Buffer.allocUnsafe(head + 1 + len);
  if (head === 4) buf.writeUInt32BE(1 + len, 0);
  buf[head] = op;
  buf.write(text, head + 1, 'utf8');
  return buf;
}

const NET_PING = Buffer.from([0, 0, 0, 1, OP_PING]);
const WS_PING = Buffer.from([OP_PING]);

/**
 * What the raw-net and raw-ws clients share: the login/join handshakes and
 * handling of server bodies. Subclasses provide the transport.
 */
abstract class RawConn implements BenchConn {
  /** close() was called: no onDrop. */
  protected closing = false;
  /** The connection is gone (dropped or closed); onDrop has been called if it was due. */
  private done = false;
  /** Set until the login reply arrives. */
  private login: Waiter | null = null;
  /** Join replies still due, in order (the server answers in order). */
  private joins: Waiter[] | null = null;
  /** The last transport error, used as the drop reason. */
  protected lastError: string | null = null;

  constructor(
    private readonly events: ConnEvents,
    private readonly head: number,
  ) {}

  protected abstract writeFrame(frame: Buffer): void;
  /** Tear the transport down now (protocol error). */
  protected abstract kill(): void;
  abstract close(): void;

  /** Resolves after the login reply; rejects if the connection ends first. */
  start(user: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.login = { resolve, reject };
      this.onOpen = () => {
        this.onOpen = null;
        this.writeFrame(textFrame(this.head, OP_LOGIN, user));
      };
    });
  }

  /** Called by the subclass once the transport is open. */
  protected onOpen: (() => void) | null = null;

  send(to: string, msgId: number, payload: string, group: boolean): void {
    if (this.done) return;
    this.writeFrame(sendFrame(this.head, to, msgId, payload, group));
  }

  ping(): void {
    if (this.done) return;
    this.writeFrame(this.head === 4 ? NET_PING : WS_PING);
  }

  join(group: string): Promise<void> {
    if (this.done) return Promise.reject(new Error('connection closed'));
    return new Promise<void>((resolve, reject) => {
      (this.joins ??= []).push({ resolve, reject });
      this.writeFrame(textFrame(this.head, OP_JOIN, group));
    });
  }

  /** One body from the server; returns false on a protocol error. */
  protected onBody(body: Buffer): boolean {
    switch (body[0]) {
      case OP_DELIVER:
        this.events.onDeliver(body.toString('utf8', 1));
        return true;
      case OP_SEND:
        if (body.length !== 5) return false;
        this.events.onAck(body.readUInt32BE(1));
        return true;
      case OP_PING:
        return true;
      case OP_LOGIN: {
        const w = this.login;
        if (w === null) return false;
        this.login = null;
        w.resolve();
        return true;
      }
      case OP_JOIN: {
        const w = this.joins?.shift();
        if (w === undefined) return false;
        w.resolve();
        return true;
      }
      default:
        return false;
    }
  }

  protected protocolError(): void {
    this.lastError = 'malformed frame from server';
    this.kill();
  }

  /** Called by the subclass when the transport has closed, whatever the cause. */
  protected onClosed(reason: string): void {
    if (this.done) return;
    this.done = true;
    const why = this.lastError ?? reason;
    const err = new Error(why);
    const joins = this.joins;
    this.joins = null;
    if (joins !== null) for (const w of joins) w.reject(err);
    const login = this.login;
    if (login !== null) {
      this.login = null;
      login.reject(err);
      return;
    }
    if (!this.closing) this.events.onDrop(why);
  }

  protected markClosing(): boolean {
    if (this.closing || this.done) return false;
    this.closing = true;
    return true;
  }
}

// ---------------------------------------------------------------------------
// raw-net

class RawNetConn extends RawConn {
  private readonly frames = new LengthFrames();

  constructor(
    private readonly sock: Socket,
    events: ConnEvents,
  ) {
    super(events, 4);
    sock.on('connect', () => this.onOpen?.());
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (err: Error) => {
      this.lastError ??= err.message;
    });
    sock.on('close', () => this.onClosed('closed by server'));
  }

  protected writeFrame(frame: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(frame);
  }

  protected kill(): void {
    this.sock.destroy();
  }

  close(): void {
    if (this.markClosing()) this.sock.destroy();
  }

  private onData(chunk: Buffer): void {
    if (!this.frames.push(chunk, (body) => this.onBody(body), () => this.sock.destroyed)) this.protocolError();
  }
}

function hostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const port = Number(u.port);
  if (!Number.isInteger(port) || port <= 0) throw new Error(`no port in ${url}`);
  return { host, port };
}

export const rawNetAdapter: Adapter = {
  async connect(target: ConnectTarget, user: string, events: ConnEvents): Promise<BenchConn> {
    const { host, port } = hostPort(target.url);
    const conn = new RawNetConn(netConnect({ host, port, noDelay: true }), events);
    await conn.start(user);
    return conn;
  },
  join(conn: BenchConn, group: string): Promise<void> {
    if (!(conn instanceof RawNetConn)) return Promise.reject(new TypeError('not a raw-net connection'));
    return conn.join(group);
  },
};

// ---------------------------------------------------------------------------
// raw-ws

class RawWsConn extends RawConn {
  constructor(
    private readonly ws: WebSocket,
    events: ConnEvents,
  ) {
    super(events, 0);
    ws.on('open', () => this.onOpen?.());
    ws.on('message', (data, isBinary) => {
      if (!isBinary || !Buffer.isBuffer(data) || data.length === 0 || !this.onBody(data)) this.protocolError();
    });
    ws.on('error', (err: Error) => {
      this.lastError ??= err.message;
    });
    ws.on('close', (code: number) => this.onClosed(`closed by server (${code})`));
  }

  protected writeFrame(frame: Buffer): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
  }

  protected kill(): void {
    this.ws.terminate();
  }

  close(): void {
    if (this.markClosing()) this.ws.close();
  }
}

export const rawWsAdapter: Adapter = {
  async connect(target: ConnectTarget, user: string, events: ConnEvents): Promise<BenchConn> {
    const conn = new RawWsConn(new WebSocket(target.url, { perMessageDeflate: false }), events);
    await conn.start(user);
    return conn;
  },
  join(conn: BenchConn, group: string): Promise<void> {
    if (!(conn instanceof RawWsConn)) return Promise.reject(new TypeError('not a raw-ws connection'));
    return conn.join(group);
  },
};

// ---------------------------------------------------------------------------
// socketio

const noop = (): void => {};

class IoConn implements BenchConn {
  private closing = false;

  constructor(
    private readonly socket: IoClientSocket,
    private readonly events: ConnEvents,
  ) {}

  send(to: string, msgId: number, payload: string, group: boolean): void {
    if (!this.socket.connected) return;
    const events = this.events;
    this.socket.emit('send', to, group, payload, () => events.onAck(msgId));
  }

  ping(): void {
    if (this.socket.connected) this.socket.emit('ping', noop);
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.socket.disconnect();
  }

  async join(group: string): Promise<void> {
    if (!this.socket.connected) throw new Error('connection closed');
    await this.socket.emitWithAck('join', group);
  }

  /** Resolves on 'connect'; afterwards a disconnect not caused by close() calls onDrop once. */
  start(): Promise<void> {
    const s = this.socket;
    const events = this.events;
    return new Promise<void>((resolve, reject) => {
      s.once('connect', () => {
        s.off('connect_error');
        s.on('msg', (payload: unknown) => {
          if (typeof payload === 'string') events.onDeliver(payload);
        });
        s.once('disconnect', (reason: string) => {
          if (!this.closing) {
            this.closing = true;
            events.onDrop(reason);
          }
        });
        resolve();
      });
      s.once('connect_error', (err: Error) => {
        s.off('connect');
        s.disconnect();
        reject(err);
      });
    });
  }
}

export const socketioAdapter: Adapter = {
  async connect(target: ConnectTarget, user: string, events: ConnEvents): Promise<BenchConn> {
    const socket = io(target.url, {
      transports: ['websocket'],
      auth: { user },
      reconnection: false,
      forceNew: true,
    });
    const conn = new IoConn(socket, events);
    await conn.start();
    return conn;
  },
  join(conn: BenchConn, group: string): Promise<void> {
    if (!(conn instanceof IoConn)) return Promise.reject(new TypeError('not a Socket.IO connection'));
    return conn.join(group);
  },
};
