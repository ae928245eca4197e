// A baseline server: the floor the benchmarks compare Longlink against.
// Three kinds, each as bare as a Node team would write it:
//   raw-net   `net` server, frames = u32 BE length + body
//   raw-ws    `ws` server (no deflate), one binary message = one body
//   socketio  Socket.IO 4, websocket transport only, per-user rooms
// Bodies (raw-net, raw-ws), client -> server:
//   0x01 login  + user id            -> 0x01
//   0x02 send   u32 msgId, u8 toLen, to, u8 isGroup, payload
//               -> 0x05 + payload to the user / every other group member, then 0x02 + u32 msgId
//   0x03 join   + group id           -> 0x03
//   0x04 ping                        -> 0x04
// Socket.IO: auth { user }, socket.join(user); events send(to, isGroup, payload, ack),
// join(group, ack), ping(ack); deliveries are 'msg'(payload).
//
// Run by the harness with fork(..., ['--kind', K, '--port', P, '--host', H]);
// IPC (./ipc.ts): { type: 'ready', port } once listening; a report (memory
// after GC, open connections, frames relayed) on request; exits on { type:
// 'stop' } or when the parent goes away. No logging on hot paths.

import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { Server as IoServer, type Socket as IoSocket } from 'socket.io';
import { memoryReport, serveIpc } from './ipc.js';
import { LengthFrames, MAX_BODY } from '../lib/length-frames.js';

type Kind = 'raw-net' | 'raw-ws' | 'socketio';

const OP_LOGIN = 0x01;
const OP_SEND = 0x02;
const OP_JOIN = 0x03;
const OP_PING = 0x04;
const OP_DELIVER = 0x05;

function argValue(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  return v ?? fallback;
}

const kindArg = argValue('--kind', '');
if (kindArg !== 'raw-net' && kindArg !== 'raw-ws' && kindArg !== 'socketio') {
  console.error(`baseline: --kind must be raw-net, raw-ws or socketio (got "${kindArg}")`);
  process.exit(2);
}
const kind: Kind = kindArg;
const port = Number(argValue('--port', '0'));
const host = argValue('--host', '127.0.0.1');
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`baseline: bad --port`);
  process.exit(2);
}

/** Open client connections (incremented on connect, decremented on close). */
let connections = 0;
/** Frames (deliveries) written to recipients. */
let relayed = 0;

// ---------------------------------------------------------------------------
// Shared relay state for raw-net and raw-ws: one Conn per client connection.

interface Conn {
  user: string | null;
  groups: string[] | null;
  /** Write one complete outgoing frame (already framed for the transport). */
  write(frame: Buffer): void;
  kill(): void;
}

const users = new Map<string, Conn>();
const groups = new Map<string, Set<Conn>>();

function forget(c: Conn): void {
  if (c.user !== null && users.get(c.user) === c) users.delete(c.user);
  if (c.groups !== null) {
    for (const g of c.groups) {
      const set = groups.get(g);
      if (set !== undefined) {
        set.delete(c);
        if (set.size === 0) groups.delete(g);
      }
    }
    c.groups = null;
  }
}

/**
 * The transport-specific framing: `head` bytes reserved before the body
 * (4 for the net length prefix, 0 for ws) and how to fill them.
 */
interface Framing {
  head: number;
  seal(frame: Buffer): Buffer;
}

const netFraming: Framing = {
  head: 4,
  seal(frame) {
    frame.writeUInt32BE(frame.length - 4, 0);
    return frame;
  },
};
const wsFraming: Framing = { head: 0, seal: (frame) => frame };

/** Handle one body; returns false when it is malformed (the caller closes the connection). */
function handleBody(c: Conn, body: Buffer, f: Framing): boolean {
  if (body.length === 0) return false;
  const op = body[0];
  switch (op) {
    case OP_LOGIN: {
      if (body.length < 2) return false;
      const user = body.toString('utf8', 1);
      if (c.user !== null && c.user !== user && users.get(c.user) === c) users.delete(c.user);
      c.user = user;
      users.set(user, c);
      c.write(reply(f, OP_LOGIN));
      return true;
    }
    case OP_SEND: {
      if (body.length < 7) return false;
      const msgId = body.readUInt32BE(1);
      const toLen = body[5] as number;
      const flagAt = 6 + toLen;
      if (body.length < flagAt + 1) return false;
      const isGroup = body[flagAt];
      if (isGroup !== 0 && isGroup !== 1) return false;
      const to = body.toString('utf8', 6, flagAt);
      const payloadAt = flagAt + 1;
      const out = Buffer.allocUnsafe(f.head + 1 + body.length - payloadAt);
      out[f.head] = OP_DELIVER;
      body.copy(out, f.head + 1, payloadAt);
      f.seal(out);
      if (isGroup === 1) {
        const members = groups.get(to);
        if (members !== undefined) {
          for (const m of members) {
            if (m !== c) {
              m.write(out);
              relayed++;
            }
          }
        }
      } else {
        const dest = users.get(to);
        if (dest !== undefined) {
          dest.write(out);
          relayed++;
        }
      }
      const ack = Buffer.allocUnsafe(f.head + 5);
      ack[f.head] = OP_SEND;
      ack.writeUInt32BE(msgId, f.head + 1);
      c.write(f.seal(ack));
      return true;
    }
    case OP_JOIN: {
      if (body.length < 2) return false;
      const g = body.toString('utf8', 1);
      let set = groups.get(g);
      if (set === undefined) {
        set = new Set();
        groups.set(g, set);
      }
      if (!set.has(c)) {
        set.add(c);
        if (c.groups === null) c.groups = [g];
        else c.groups.push(g);
      }
      c.write(reply(f, OP_JOIN));
      return true;
    }
    case OP_PING:
      c.write(reply(f, OP_PING));
      return true;
    default:
      return false;
  }
}

// One-byte replies never change: build them once per framing.
const netReplies = new Map<number, Buffer>();
const wsReplies = new Map<number, Buffer>();
for (const op of [OP_LOGIN, OP_JOIN, OP_PING]) {
  const n = Buffer.alloc(5);
  n.writeUInt32BE(1, 0);
  n[4] = op;
  netReplies.set(op, n);
  wsReplies.set(op, Buffer.from([op]));
}
function reply(f: Framing, op: number): Buffer {
  return (f === netFraming ? netReplies : wsReplies).get(op) as Buffer;
}

// ---------------------------------------------------------------------------
// raw-net

class NetConn implements Conn {
  user: string | null = null;
  groups: string[] | null = null;
  private readonly frames = new LengthFrames();

  constructor(private readonly sock: Socket) {}

  write(frame: Buffer): void {
    this.sock.write(frame);
  }

  kill(): void {
    this.sock.destroy();
  }

  onData(chunk: Buffer): void {
    if (!this.frames.push(chunk, (body) => handleBody(this, body, netFraming), () => this.sock.destroyed)) this.kill();
  }
}

function startNet(): Promise<{ port: number; close(): void }> {
  const server = createNetServer({ noDelay: true }, (sock) => {
    connections++;
    const c = new NetConn(sock);
    sock.on('data', (chunk: Buffer) => c.onData(chunk));
    sock.on('error', () => {
      /* 'close' follows */
    });
    sock.on('close', () => {
      connections--;
      forget(c);
    });
  });
  return listen(server, () => server.close());
}

// ---------------------------------------------------------------------------
// raw-ws

class WsConn implements Conn {
  user: string | null = null;
  groups: string[] | null = null;
  constructor(private readonly ws: WebSocket) {}
  write(frame: Buffer): void {
    this.ws.send(frame);
  }
  kill(): void {
    this.ws.terminate();
  }
}

function startWs(): Promise<{ port: number; close(): void }> {
  const http = createHttpServer();
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false, maxPayload: MAX_BODY });
  wss.on('connection', (ws) => {
    connections++;
    const c = new WsConn(ws);
    ws.on('message', (data, isBinary) => {
      if (!isBinary || !Buffer.isBuffer(data) || !handleBody(c, data, wsFraming)) c.kill();
    });
    ws.on('error', () => {
      /* 'close' follows */
    });
    ws.on('close', () => {
      connections--;
      forget(c);
    });
  });
  wss.on('error', () => {
    /* the http server reports listen errors */
  });
  return listen(http, () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    http.close();
  });
}

// ---------------------------------------------------------------------------
// socketio

function startIo(): Promise<{ port: number; close(): void }> {
  const http = createHttpServer();
  const io = new IoServer(http, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });
  const rooms = io.of('/').adapter.rooms;
  io.on('connection', (socket: IoSocket) => {
    connections++;
    socket.on('disconnect', () => {
      connections--;
    });
    const auth: unknown = socket.handshake.auth;
    const user = typeof auth === 'object' && auth !== null ? (auth as { user?: unknown }).user : undefined;
    if (typeof user !== 'string' || user === '') {
      socket.disconnect(true);
      return;
    }
    void socket.join(user);
    socket.on('send', (to: unknown, isGroup: unknown, payload: unknown, ack: unknown) => {
      if (typeof to !== 'string' || typeof payload !== 'string' || typeof isGroup !== 'boolean') {
        socket.disconnect(true);
        return;
      }
      const size = rooms.get(to)?.size ?? 0;
      if (isGroup) {
        socket.to(to).emit('msg', payload);
        relayed += socket.rooms.has(to) ? size - 1 : size;
      } else {
        io.to(to).emit('msg', payload);
        relayed += size;
      }
      if (typeof ack === 'function') (ack as () => void)();
    });
    socket.on('join', (group: unknown, ack: unknown) => {
      if (typeof group !== 'string' || group === '') {
        socket.disconnect(true);
        return;
      }
      void socket.join(group);
      if (typeof ack === 'function') (ack as () => void)();
    });
    socket.on('ping', (ack: unknown) => {
      if (typeof ack === 'function') (ack as () => void)();
    });
  });
  return listen(http, () => {
    io.disconnectSockets(true);
    void io.close();
  });
}

// ---------------------------------------------------------------------------

function listen(
  server: NetServer,
  close: () => void,
): Promise<{ port: number; close(): void }> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: 4096 }, () => {
      server.off('error', reject);
      const addr = server.address();
      const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
      resolve({ port: bound, close });
    });
  });
}

async function main(): Promise<void> {
  const started = kind === 'raw-net' ? await startNet() : kind === 'raw-ws' ? await startWs() : await startIo();

  serveIpc({
    ready: { port: started.port },
    report: () => ({ ...memoryReport(), connections, relayed }),
    stop: async () => started.close(),
  });
}

main().catch((err: unknown) => {
  console.error('baseline: failed to start:', err);
  process.exit(1);
});
