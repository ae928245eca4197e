// Shared helpers for the logic and client tests: raw logged-in clients,
// request/reply over real sockets, and readers of what the server pushed.
import assert from 'node:assert/strict';
import net from 'node:net';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  ErrorCode, LonglinkError, errorName, messageFromWire, type BodyOf, type ChatMessage, type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';

export type Transport = 'tcp' | 'ws';
export const TRANSPORTS: readonly Transport[] = ['tcp', 'ws'];

export function urlOf(server: TestServer, transport: Transport): string {
  return transport === 'tcp' ? server.tcpUrl : server.wsUrl;
}

/** A raw client logged in as user/device. */
export async function online(server: TestServer, transport: Transport, user: string, device = 'd1'): Promise<RawClient> {
  const c = await RawClient.connect(urlOf(server, transport));
  await c.login(await server.token(user, device));
  return c;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until true; on timeout throws with `describe()` (evaluated then). */
export async function until(check: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await sleep(10);
  }
}

/** Every message the server pushed to this client, in arrival order. */
export function pushed(c: RawClient): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const f of c.frames) if (f.body.case === 'push') out.push(...f.body.value.messages.map(messageFromWire));
  return out;
}

/** Waits until at least `count` messages were pushed; returns all pushed so far. */
export async function waitPushed(c: RawClient, count: number, timeoutMs = 10_000): Promise<ChatMessage[]> {
  await until(() => pushed(c).length >= count, timeoutMs, () => `${count} pushed messages; got ${pushed(c).length} (${c.describe().slice(0, 300)})`);
  return pushed(c);
}

/** Frames of one kind received so far. */
export function framesOf<C extends NonNullable<Frame['body']['case']>>(c: RawClient, kind: C): BodyOf<C>[] {
  const out: BodyOf<C>[] = [];
  for (const f of c.frames) if (f.body.case === kind) out.push(f.body.value as BodyOf<C>);
  return out;
}

/** Sends a request and waits for the frame answering it (same id). */
export async function request(c: RawClient, body: FrameBodyInit, timeoutMs = 10_000): Promise<Frame> {
  const from = c.frames.length;
  const id = c.send(body);
  return c.next((f) => f.id === id, timeoutMs, from);
}

export interface SendInit {
  clientMsgId?: string;
  toUser?: string;
  conversationId?: string;
  text?: string;
  fromUser?: string;
}

let counter = 0;
export function uniqueId(prefix = 'c'): string {
  return `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;
}

/** A Send that must be acked; returns the SendAck. */
export async function sendOk(c: RawClient, send: SendInit, timeoutMs = 10_000): Promise<BodyOf<'sendAck'>> {
  const reply = await request(c, { case: 'send', value: { clientMsgId: uniqueId(), text: 'hello', ...send } }, timeoutMs);
  if (reply.body.case !== 'sendAck') assert.fail(`expected a SendAck, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  return reply.body.value;
}

/** A request that must be refused with an Error frame; returns it. */
export async function expectError(c: RawClient, body: FrameBodyInit, code: ErrorCode, timeoutMs = 10_000): Promise<BodyOf<'error'>> {
  const reply = await request(c, body, timeoutMs);
  if (reply.body.case !== 'error') assert.fail(`expected an Error ${errorName(code)}, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  assert.equal(errorName(reply.body.value.code), errorName(code), reply.body.value.message);
  return reply.body.value;
}

/** Round trip through the gateway: every frame written before it has been read by the server. */
export async function barrier(c: RawClient): Promise<void> {
  const reply = await request(c, { case: 'ping', value: {} });
  assert.equal(reply.body.case, 'pong');
}

export async function history(
  c: RawClient, conversationId: string, beforeSeq = 0, limit = 0,
): Promise<{ messages: ChatMessage[]; hasMore: boolean }> {
  const reply = await request(c, { case: 'history', value: { conversationId, beforeSeq: BigInt(beforeSeq), limit } });
  if (reply.body.case !== 'historyResult') assert.fail(`expected a HistoryResult, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  assert.equal(reply.body.value.conversationId, conversationId);
  return { messages: reply.body.value.messages.map(messageFromWire), hasMore: reply.body.value.hasMore };
}

export interface SyncPage {
  messages: ChatMessage[];
  cursors: Map<string, number>;
  hasMore: boolean;
  /** '' when the reply has none (a request without sync_token, or of conversation_ids). */
  syncToken: string;
}

/** One sync page; `syncToken` undefined: a request without the field (a client before sync tokens). */
export async function syncOnce(
  c: RawClient, cursors: Map<string, number> = new Map(), conversationIds: string[] = [], limit = 0, syncToken?: string,
): Promise<SyncPage> {
  const reply = await request(c, {
    case: 'sync',
    value: {
      cursors: [...cursors].map(([conversationId, seq]) => ({ conversationId, seq: BigInt(seq) })), conversationIds, limit,
      ...(syncToken === undefined ? {} : { syncToken }),
    },
  });
  if (reply.body.case !== 'syncResult') assert.fail(`expected a SyncResult, got ${reply.body.case}: ${JSON.stringify(reply.body.value, bigintJson)}`);
  const r = reply.body.value;
  return {
    messages: r.messages.map(messageFromWire),
    cursors: new Map(r.cursors.map((x) => [x.conversationId, Number(x.seq)])),
    hasMore: r.hasMore,
    syncToken: r.syncToken,
  };
}

/** Syncs page after page, carrying the cursors, until has_more is false. */
export async function syncAll(
  c: RawClient, options: { conversationIds?: string[]; limit?: number; maxPages?: number } = {},
): Promise<{ messages: ChatMessage[]; pages: SyncPage[]; cursors: Map<string, number> }> {
  const cursors = new Map<string, number>();
  const pages: SyncPage[] = [];
  const messages: ChatMessage[] = [];
  for (let i = 0; i < (options.maxPages ?? 100); i++) {
    const page = await syncOnce(c, cursors, options.conversationIds ?? [], options.limit ?? 0);
    pages.push(page);
    messages.push(...page.messages);
    for (const [id, seq] of page.cursors) cursors.set(id, seq);
    if (!page.hasMore) return { messages, pages, cursors };
  }
  assert.fail(`sync still had more after ${options.maxPages ?? 100} pages`);
}

export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

export function bigintJson(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/**
 * Pipelines `count` sends (written back to back, no waiting), then waits for
 * every reply; each must be a SendAck. Returns the acks in send order.
 */
export async function sendMany(
  c: RawClient, count: number, make: (i: number) => SendInit, timeoutMs = 60_000,
): Promise<BodyOf<'sendAck'>[]> {
  const ids: number[] = [];
  for (let i = 0; i < count; i++) {
    ids.push(c.send({ case: 'send', value: { clientMsgId: uniqueId(), text: `m${i}`, ...make(i) } }));
  }
  const wanted = new Set(ids);
  const replies = new Map<number, Frame>();
  let scanned = 0;
  await until(() => {
    for (; scanned < c.frames.length; scanned++) {
      const f = c.frames[scanned]!;
      if (wanted.has(f.id)) replies.set(f.id, f);
    }
    return replies.size === wanted.size || c.closed;
  }, timeoutMs, () => `${count} replies; got ${replies.size}`);
  return ids.map((id) => {
    const f = replies.get(id);
    if (!f) assert.fail(`no reply to send ${id}; connection closed: ${c.describe().slice(-300)}`);
    if (f.body.case !== 'sendAck') assert.fail(`send ${id} answered with ${f.body.case}: ${JSON.stringify(f.body.value, bigintJson)}`);
    return f.body.value;
  });
}

/** Starts a fresh server for one test and always closes it. */
export async function withServer<T>(fn: (s: TestServer) => Promise<T>, overrides: Record<string, string> = {}): Promise<T> {
  const s = await startTestServer(overrides);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

/**
 * A TCP proxy in front of a gateway port (TCP or the HTTP port for WS), so a
 * test can break the network under a client: cut every connection at once,
 * refuse new ones for a while, or take connections and reset them.
 */
export class TcpProxy {
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private server: net.Server | undefined;
  /** Accept connections but reset them at once (a gateway that dies in the handshake). */
  resetNew = false;
  /** Accept connections, answer nothing, and drop them after this long (a gateway that dies mid-login). */
  dropNewAfterMs: number | undefined;
  /** Keep what the server sends from the client (an ack lost on the way), counting the bytes. */
  swallowDown = false;
  swallowed = 0;
  accepted = 0;

  private constructor(private readonly targetPort: number, public port: number) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const p = new TcpProxy(targetPort, 0);
    await p.listen();
    return p;
  }

  url(kind: Transport): string {
    return kind === 'tcp' ? `tcp://127.0.0.1:${this.port}` : `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Listen again (on the same port after stopListening). */
  listen(): Promise<void> {
    const server = net.createServer((client) => this.onClient(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: this.port, host: '127.0.0.1' }, () => {
        this.port = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  /** Refuse new connections (ECONNREFUSED) until listen(). Live ones stay. */
  async stopListening(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    // close() stops accepting at once; its callback would wait for live connections.
    server?.close();
    await new Promise((r) => setImmediate(r));
  }

  /** Destroy every live connection, both sides. */
  cut(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
  }

  get live(): number {
    return this.pairs.size;
  }

  async close(): Promise<void> {
    this.cut();
    await this.stopListening();
  }

  private onClient(client: net.Socket): void {
    this.accepted++;
    if (this.resetNew) {
      client.resetAndDestroy();
      return;
    }
    if (this.dropNewAfterMs !== undefined) {
      client.on('error', () => undefined);
      client.resume();
      setTimeout(() => client.destroy(), this.dropNewAfterMs);
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const done = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', done);
    upstream.on('error', done);
    client.on('close', done);
    upstream.on('close', done);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (this.swallowDown) this.swallowed += chunk.length;
      else client.write(chunk);
    });
  }
}

/** Resolves like `p`, or rejects if `p` takes longer than `ms` (promptness, not just eventual success). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Awaits `p`, which must reject with a LonglinkError of `code` (an SDK call refused by the server); returns it. */
export async function rejected(p: Promise<unknown>, code: ErrorCode, what: string): Promise<LonglinkError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof LonglinkError, `${what}: a LonglinkError, got ${String(err)}`);
    assert.equal(errorName(err.code), errorName(code), `${what}: ${err.message}`);
    return err;
  }
  assert.fail(`${what}: expected ${errorName(code)}, but it succeeded`);
}
