// Shared harness of the SDK tests that use it: SDK clients that record what
// an app would see, and a connector (Wire) that records the frames a client
// writes and reads and lets a test drop, hold or cut them.
import {
  createClient, nodeConnector, type ChatMessage, type ClientConnection, type Connector, type ErrorCode, type ClientOptions,
  type ClientState, type LonglinkClient, type LonglinkError, type PendingSend, type SendResult, type StateDetail,
} from '../../src/client/index.js';
import { decodeFrame, type BodyOf, type Frame, type FrameCase } from '../../src/protocol/index.js';
import type { TestServer } from '../helpers/server.js';
import { until, urlOf, type Transport } from '../logic/support.js';

/** Everything an app would have seen of one client. */
export interface Handle {
  client: LonglinkClient;
  messages: ChatMessage[];
  states: ({ state: ClientState; atMs: number } & StateDetail)[];
  errors: LonglinkError[];
  sent: { result: SendResult; send: PendingSend }[];
  failed: { error: LonglinkError; send: PendingSend }[];
  restored: PendingSend[][];
  kicks: { code: ErrorCode; reconnect: boolean }[];
  logins: number;
  synced: number;
}

const opened = new Set<LonglinkClient>();

/** Have closeAll() close a client made elsewhere. */
export function track(client: LonglinkClient): LonglinkClient {
  opened.add(client);
  return client;
}

/** Close every client made here or tracked (for afterEach). */
export async function closeAll(): Promise<void> {
  for (const c of [...opened]) await c.close();
  opened.clear();
}

export function makeClient(
  s: TestServer, url: ClientOptions['url'], user: string, device: string, options: Partial<ClientOptions> = {},
): Handle {
  const client = createClient({
    url,
    token: () => s.token(user, device),
    initialBackoffMs: 50,
    maxBackoffMs: 400,
    ...options,
  });
  opened.add(client);
  const h: Handle = { client, messages: [], states: [], errors: [], sent: [], failed: [], restored: [], kicks: [], logins: 0, synced: 0 };
  client.on('message', (m) => h.messages.push(m));
  client.on('state', (state, d) => h.states.push({ state, atMs: Date.now(), ...d }));
  client.on('error', (e) => h.errors.push(e));
  client.on('sent', (result, send) => h.sent.push({ result, send }));
  client.on('failed', (error, send) => h.failed.push({ error, send }));
  client.on('restored', (sends) => h.restored.push(sends));
  client.on('kick', (e, reconnect) => h.kicks.push({ code: e.code, reconnect }));
  client.on('login', () => h.logins++);
  client.on('synced', () => h.synced++);
  return h;
}

/** A client logged in and through its first sync. */
export async function connected(
  s: TestServer, t: Transport | string, user: string, device: string, options: Partial<ClientOptions> = {},
): Promise<Handle> {
  const h = makeClient(s, t === 'tcp' || t === 'ws' ? urlOf(s, t) : t, user, device, options);
  await h.client.connect();
  await until(() => h.synced > 0, 10_000, () => `${user}/${device} initial sync`);
  return h;
}

export async function waitMessages(h: Handle, n: number, timeoutMs = 10_000): Promise<ChatMessage[]> {
  await until(() => h.messages.length >= n, timeoutMs, () => `${n} messages; got ${texts(h.messages).join(',')}`);
  return h.messages;
}

export const texts = (ms: readonly ChatMessage[]): string[] => ms.map((m) => m.text);
export const seqs = (ms: readonly ChatMessage[]): number[] => ms.map((m) => m.seq);

/** A port nothing listens on (it was free a moment ago): connections to it are refused. */
export { freePort as closedPort } from '../helpers/services.js';

/**
 * Wraps the Node connector: records every frame in and out, and lets a test
 * drop, hold or duplicate frames, or close the connection under the client.
 */
export class Wire {
  readonly incoming: Frame[] = [];
  readonly outgoing: Frame[] = [];
  connects = 0;
  /** Decides what the client gets of each incoming frame; default: as it came. */
  onIncoming: (frame: Frame, bytes: Uint8Array, deliver: (b: Uint8Array) => void) => void = (_f, b, deliver) => deliver(b);
  private readonly live = new Set<ClientConnection>();

  readonly connector: Connector = async (url, events) => {
    const self: { conn?: ClientConnection } = {};
    const inner = await nodeConnector(url, {
      onFrame: (bytes) => {
        const frame = decodeFrame(bytes);
        this.incoming.push(frame);
        this.onIncoming(frame, bytes, (b) => events.onFrame(b));
      },
      onClose: (reason) => {
        if (self.conn) this.live.delete(self.conn);
        events.onClose(reason);
      },
    });
    this.connects++;
    const conn: ClientConnection = {
      send: (bytes) => {
        this.outgoing.push(decodeFrame(bytes));
        inner.send(bytes);
      },
      close: () => inner.close(),
    };
    self.conn = conn;
    this.live.add(conn);
    return conn;
  };

  /** Close the live connection(s) from below, as a network failure would. */
  drop(): void {
    for (const c of this.live) c.close();
  }

  sent<C extends FrameCase>(kind: C): BodyOf<C>[] {
    return this.outgoing.filter((f) => f.body.case === kind).map((f) => f.body.value as BodyOf<C>);
  }
}
