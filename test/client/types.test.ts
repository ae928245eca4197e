// Type tests of the SDK's public API: every server feature has a typed
// method or event, and wrong event names, payloads and arguments do not
// compile. `npx tsc -p tsconfig.check.json` checks this file: each
// `@ts-expect-error` fails the type check if its line ever compiles. The
// checks sit in a function that never runs; the runtime tests below only
// assert what the types promise about the entry points.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createClient, fileStore, memoryStore, LonglinkClient, LonglinkError,
  type BroadcastInfo, type ChatMessage, type ClientEvents, type ClientSnapshot, type ClientState, type ClientStore,
  type ConversationInfo, type GroupChange, type GroupInfo, type LoginInfo, type PendingSend, type PresenceInfo,
  type DeliveryInfo, type ReceiptInfo, type RecallInfo, type EditInfo, type ReactionsInfo, type SendResult, type StateDetail, type TypingInfo,
} from '../../src/client/index.js';
import * as browser from '../../src/client/browser.js';
import { Emitter } from '../../src/client/emitter.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
function expectType<T extends true>(_proof?: T): void {}
type Payload<K extends keyof ClientEvents> = Parameters<ClientEvents[K]>;
type Result<M extends keyof LonglinkClient> = LonglinkClient[M] extends (...args: never[]) => infer R ? Awaited<R> : never;

/** Never called: it only has to type-check. */
export function typeChecks(client: LonglinkClient): void {
  // ---- every event, with its payload ----------------------------------------
  expectType<Equal<Payload<'message'>, [message: ChatMessage]>>();
  expectType<Equal<Payload<'state'>, [state: ClientState, detail: StateDetail]>>();
  expectType<Equal<Payload<'login'>, [info: LoginInfo]>>();
  expectType<Equal<Payload<'restored'>, [sends: PendingSend[]]>>();
  expectType<Equal<Payload<'sent'>, [result: SendResult, send: PendingSend]>>();
  expectType<Equal<Payload<'failed'>, [error: LonglinkError, send: PendingSend]>>();
  expectType<Equal<Payload<'kick'>, [error: LonglinkError, reconnect: boolean]>>();
  expectType<Equal<Payload<'error'>, [error: LonglinkError]>>();
  expectType<Equal<Payload<'synced'>, []>>();
  expectType<Equal<Payload<'receipt'>, [receipt: ReceiptInfo]>>();
  expectType<Equal<Payload<'delivered'>, [delivery: DeliveryInfo]>>();
  expectType<Equal<Payload<'typing'>, [typing: TypingInfo]>>();
  expectType<Equal<Payload<'presence'>, [presence: PresenceInfo]>>();
  expectType<Equal<Payload<'recall'>, [recall: RecallInfo]>>();
  expectType<Equal<Payload<'edit'>, [edit: EditInfo]>>();
  expectType<Equal<Payload<'delete'>, [deletion: RecallInfo]>>();
  expectType<Equal<Payload<'reactions'>, [reactions: ReactionsInfo]>>();
  expectType<Equal<Payload<'hide'>, [hidden: { conversationId: string; seq: number }]>>();
  expectType<Equal<Payload<'group'>, [change: GroupChange]>>();
  expectType<Equal<Payload<'broadcast'>, [broadcast: BroadcastInfo]>>();
  expectType<Equal<keyof ClientEvents,
    'message' | 'state' | 'login' | 'restored' | 'sent' | 'failed' | 'kick' | 'error' | 'synced' | 'receipt' | 'delivered' | 'typing'
    | 'presence' | 'recall' | 'edit' | 'delete' | 'hide' | 'reactions' | 'group' | 'broadcast'>>();

  // Listeners get the payload types without annotations.
  client.on('message', (m) => m.seq.toFixed());
  client.on('sent', (r, s) => `${r.seq} ${r.conversationId} ${s.text}`);
  client.on('failed', (e, s) => `${e.codeName} ${s.clientMsgId}`);
  client.on('state', (state, d) => (state === 'reconnecting' ? d.retryInMs?.toFixed() : d.reason));
  client.on('group', (g) => g.event.type === 'members_added' && g.event.userIds?.join());
  const off: () => void = client.once('kick', (e, reconnect) => reconnect && e.code);
  off();

  // ---- wrong event names and payloads do not compile -------------------------
  // @ts-expect-error: no such event
  client.on('mesage', () => undefined);
  // @ts-expect-error: no such event
  client.once('presense', () => undefined);
  // @ts-expect-error: a message is not a string
  client.on('message', (m: string) => m);
  // @ts-expect-error: a receipt's seq is a number
  client.on('receipt', (r: { conversationId: string; userId: string; seq: string }) => r);
  // @ts-expect-error: the state is one of five names, not any string's subset like this
  client.on('state', (s: 'online' | 'offline') => s);
  // @ts-expect-error: a typing event has no text
  client.on('typing', (t) => t.text);
  // @ts-expect-error: 'sent' gives a SendResult, which has no 'ok'
  client.on('sent', (r) => r.ok);
  // @ts-expect-error: a kick's error is a LonglinkError, not a string
  client.on('kick', (e: string) => e);
  // @ts-expect-error: the app cannot emit the client's events
  client.emit('message', {} as ChatMessage);
  // @ts-expect-error: nor remove a listener of another event's type
  client.off('presence', (m: ChatMessage) => m);
  // @ts-expect-error: not a state
  const state: ClientState = 'busy';
  void state;

  // ---- every method, with its arguments and result --------------------------
  expectType<Equal<Result<'connect'>, LoginInfo>>();
  expectType<Equal<Result<'send'>, SendResult>>();
  expectType<Equal<Result<'history'>, { messages: ChatMessage[]; hasMore: boolean }>>();
  expectType<Equal<Result<'conversations'>, ConversationInfo[]>>();
  expectType<Equal<Result<'markRead'>, void>>();
  expectType<Equal<Result<'recall'>, void>>();
  expectType<Equal<Result<'typing'>, void>>();
  expectType<Equal<Result<'presence'>, PresenceInfo[]>>();
  expectType<Equal<Result<'watchPresence'>, PresenceInfo[]>>();
  type GroupMethods = 'createGroup' | 'groupInfo' | 'addMembers' | 'removeMembers' | 'leaveGroup' | 'dismissGroup' | 'setRole' | 'mute';
  expectType<Equal<{ [M in GroupMethods]: Result<M> }, { [M in GroupMethods]: GroupInfo }>>();
  expectType<Equal<Result<'restore'>, PendingSend[]>>();
  expectType<Equal<Result<'getPendingSends'>, PendingSend[]>>();
  expectType<Equal<Result<'sync'>, void>>();
  expectType<Equal<Result<'close'>, void>>();
  expectType<Equal<typeof client.state, ClientState>>();
  expectType<Equal<typeof client.nextRetryAtMs, number | undefined>>();
  expectType<Equal<typeof client.pendingSends, number>>();
  expectType<Equal<typeof client.session, LoginInfo | undefined>>();

  void client.send({ to: 'bob', text: 'hi' });
  void client.send({ groupId: 'g1', text: 'hi', clientMsgId: 'c1' });
  void client.send({ to: 'bob', type: 'app.order', payload: { id: 7 }, mentions: ['bob'], replyTo: 3 });
  void client.send({ groupId: 'g1', forward: { conversationId: 'u:alice:bob', seq: 2 } });
  // @ts-expect-error: replyTo is a seq (a number)
  void client.send({ to: 'bob', text: 'x', replyTo: '3' });
  // @ts-expect-error: text is a string
  void client.send({ to: 'bob', text: 5 });
  // @ts-expect-error: no such option
  void client.send({ to: 'bob', text: 'x', priority: 1 });
  // @ts-expect-error: seq is a number
  void client.markRead('u:alice:bob', '3');
  // @ts-expect-error: which message to recall
  void client.recall('u:alice:bob');
  // @ts-expect-error: a conversation id
  client.typing(42);
  // @ts-expect-error: a list of users
  void client.watchPresence('bob');
  // @ts-expect-error: members are a list
  void client.createGroup('team', 'bob');
  // @ts-expect-error: roles are owner, admin or member
  void client.setRole('g1', 'bob', 'king');
  // @ts-expect-error: muted is a boolean
  void client.mute('g1', 'yes');
  // @ts-expect-error: the option is beforeSeq
  void client.history('u:alice:bob', { before: 3 });
  // @ts-expect-error: the state is read-only
  client.state = 'online';

  // ---- options and stores ----------------------------------------------------
  const store: ClientStore = memoryStore();
  createClient({ url: 'tcp://127.0.0.1:1', token: 't', store });
  createClient({ url: (avoid) => Promise.resolve(avoid ?? 'ws://x/ws'), token: () => Promise.resolve('t'), store: fileStore('/tmp/x.json') });
  // @ts-expect-error: a token is required
  createClient({ url: 'tcp://127.0.0.1:1' });
  // @ts-expect-error: a store has load, save and flush
  createClient({ url: 'tcp://127.0.0.1:1', token: 't', store: {} });
  // @ts-expect-error: backoff is in milliseconds
  createClient({ url: 'tcp://127.0.0.1:1', token: 't', maxBackoffMs: '30s' });
  // @ts-expect-error: a path
  fileStore(42);
  // @ts-expect-error: snapshots have a version
  const bad: ClientSnapshot = { cursors: {}, outbox: [] };
  void bad;

  // The browser entry: the same client, IndexedDB instead of files.
  browser.createClient({ url: 'wss://example.test/ws', token: 't', store: browser.indexedDbStore('longlink-alice') });
  // @ts-expect-error: no file store in browsers
  browser.fileStore('/tmp/x.json');
}

class Probe extends Emitter<{ tick: (n: number) => void; done: () => void }> {
  fire(n: number): void {
    this.emit('tick', n);
  }
}

describe('typed API', () => {
  test('the entry points export what the types promise', () => {
    const c = createClient({ url: 'tcp://127.0.0.1:1', token: 't' });
    assert.ok(c instanceof LonglinkClient);
    assert.equal(c.state, 'idle');
    assert.equal(c.nextRetryAtMs, undefined);
    assert.deepEqual(c.getPendingSends(), []);
    assert.equal(typeof browser.indexedDbStore, 'function');
    assert.equal(typeof browser.createClient, 'function');
    assert.equal('fileStore' in browser, false, 'the browser entry has no file store');
    assert.equal(typeof typeChecks, 'function');
  });

  test('on/once/off deliver typed payloads', () => {
    const p = new Probe();
    const all: number[] = [];
    const first: number[] = [];
    const stop = p.on('tick', (n) => all.push(n));
    p.once('tick', (n) => first.push(n));
    p.fire(1);
    p.fire(2);
    stop();
    p.fire(3);
    assert.deepEqual(all, [1, 2]);
    assert.deepEqual(first, [1]);
    const cancel = p.once('tick', (n) => first.push(n));
    cancel();
    p.fire(4);
    assert.deepEqual(first, [1]);
  });
});
