// Roles built from an older and a newer envelope schema side by side, as in a
// rolling upgrade (proto/longlink/internal/v1/envelope.proto: "a role
// tolerates fields and kinds it does not know").
//
// The other versions are test fixtures: test/fixtures/proto/{newer,older}
// (what each adds or lacks is listed at their top), generated into
// test/fixtures/gen/{newer,older} and committed; after editing them, or when
// the first test below says the current schema outgrew them, regenerate with
// `node test/fixtures/generate.mjs`. A newer or older role is played by
// writing (or reading) the Redis stream entries its RedisBus would: field `d`
// holding a DownBatch in `{prefix}down:{node}`, field `e` holding an
// UpEnvelope in `{prefix}up:{shard}`.
//
// Checked over a real Redis with the current RedisBus, both directions:
// - downlink: a newer publisher's entries (an unknown kind, known kinds with
//   extra fields) reach a current consumer with every known message intact and
//   in order, the unknown kind decoded as unset; re-encoding keeps what it did
//   not know; a newer or older reader of the current publisher's entries reads
//   the known fields;
// - uplink: a newer envelope (extra fields, an unknown body kind) and an older
//   one (no request_id, no trusted) reach the current consumer with every known
//   field intact (request_id '' and trusted false for the older one), and an
//   older reader of the current publisher's envelopes keeps request_id and
//   trusted when it re-encodes;
// and on a running cluster (one gateway, one logic node): a newer DownBatch
// with an unknown kind does not stop the gateway (the message after it in the
// same entry is delivered, the skip is counted), and newer and older uplink
// envelopes are served by the current logic node.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { create, fromBinary, toBinary, toJson, type DescField, type DescFile, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { Redis } from 'ioredis';
import { RedisBus, shardOf } from '../../src/engines/bus-redis.js';
import { down, type Down, type UpEnvelope } from '../../src/engines/bus.js';
import * as current from '../../src/protocol/gen/longlink/internal/v1/envelope_pb.js';
import * as newer from '../fixtures/gen/newer/longlink/internal/v1/envelope_pb.js';
import * as older from '../fixtures/gen/older/longlink/internal/v1/envelope_pb.js';
import {
  ErrorCode, decodeFrame, directConversationId, encodeFrame, makeFrame, messageToWire, type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import { requestToken } from '../../src/client/index.js';
import { startRedis, type RedisServer } from '../helpers/services.js';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, type TestCluster } from '../cluster/helpers.js';

const SHARDS = 4;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(check: () => boolean | Promise<boolean>, what: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what()}`);
    await sleep(20);
  }
}

/** Entries of a stream as a role of another version reads them: the bytes of one field. */
async function readStream(redis: Redis, key: string, field: string): Promise<Uint8Array[]> {
  const r = redis as unknown as { xrangeBuffer(key: string, start: string, end: string): Promise<[Buffer, Buffer[]][]> };
  const out: Uint8Array[] = [];
  for (const [, fields] of await r.xrangeBuffer(key, '-', '+')) {
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.toString() === field) out.push(new Uint8Array(fields[i + 1]!));
  }
  return out;
}

/** A field as the wire sees it: number, type, cardinality, oneof. */
function wireShape(f: DescField): string {
  let type: string;
  switch (f.fieldKind) {
    case 'scalar': type = `scalar ${f.scalar}`; break;
    case 'enum': type = `enum ${f.enum.typeName}`; break;
    case 'message': type = `message ${f.message.typeName}`; break;
    case 'list':
      type = `repeated ${f.listKind === 'scalar' ? `scalar ${f.scalar}` : f.listKind === 'enum' ? `enum ${f.enum.typeName}` : `message ${f.message.typeName}`}`;
      break;
    case 'map': type = `map ${f.mapKey} ${f.mapKind}`; break;
  }
  return `${f.number} ${f.name}: ${type}${f.oneof ? ` (oneof ${f.oneof.name})` : ''}`;
}

/** Every field of every message of `a` is in `b`, with the same number, name and type (b is a superset of a). */
function missingFrom(a: DescFile, b: DescFile): string[] {
  const byName = new Map<string, DescMessage>(b.messages.map((m) => [m.typeName, m]));
  const missing: string[] = [];
  for (const m of a.messages) {
    const other = byName.get(m.typeName);
    if (!other) {
      missing.push(`message ${m.typeName}`);
      continue;
    }
    const shapes = new Set(other.fields.map(wireShape));
    for (const f of m.fields) if (!shapes.has(wireShape(f))) missing.push(`${m.typeName} field ${wireShape(f)}`);
  }
  return missing;
}

/** The known fields of a downlink message, as JSON (no unknown fields). */
const downJson = (m: Down) => toJson(current.DownSchema, m);
const upJson = (m: UpEnvelope) => toJson(current.UpEnvelopeSchema, m);

const pong = (id: number) => encodeFrame(makeFrame(id, { case: 'pong', value: { serverTimeMs: BigInt(id) } }));

function pushOf(conversationId: string, seq: number, text: string): Uint8Array {
  return encodeFrame(makeFrame(0, {
    case: 'push',
    value: {
      messages: [messageToWire({
        conversationId, seq, serverMsgId: `srv-${seq}`, fromUser: 'compat-a', fromDevice: 'd1', clientMsgId: `c-${seq}`, text, sentAtMs: Date.now(),
      })],
    },
  }));
}

type NewerDownInit = MessageInitShape<typeof newer.DownSchema>;
type CurrentDownInit = MessageInitShape<typeof current.DownSchema>;

describe('envelope schemas of three versions side by side', () => {
  test('the fixtures are what they claim: the newer schema keeps every field of the current one, the older one has nothing the current does not', () => {
    assert.deepEqual(missingFrom(current.file_longlink_internal_v1_envelope, newer.file_longlink_internal_v1_envelope), [],
      'the current schema has fields the newer fixture lacks (or differs in): add them to test/fixtures/proto/newer and run node test/fixtures/generate.mjs');
    assert.deepEqual(missingFrom(older.file_longlink_internal_v1_envelope, current.file_longlink_internal_v1_envelope), [],
      'the older fixture has fields the current schema lacks (or has differently): numbers must never be reused');
    // What the tests below lean on.
    const numbers = (m: DescMessage) => m.fields.map((f) => f.number);
    assert.ok(!numbers(current.UpEnvelopeSchema).some((n) => n === 8 || n === 9 || n === 12), 'UpEnvelope 8, 9 and 12 are new in the newer fixture');
    assert.ok(!numbers(current.DownSchema).includes(8), 'Down kind 8 is new in the newer fixture');
    assert.ok(!numbers(older.UpEnvelopeSchema).some((n) => n === 3 || n === 4), 'the older fixture has no request_id (3) nor trusted (4)');
    assert.ok(!numbers(older.DownSchema).includes(7), 'the older fixture has no revoke kind (7)');
  });

  describe('over Redis, with the current RedisBus', () => {
    let redis: RedisServer;
    let raw: Redis;
    let n = 0;
    const buses: RedisBus[] = [];
    const bus = (prefix: string, nodeId: string) => {
      const b = new RedisBus({ url: redis.url, nodeId, prefix, shards: SHARDS, leaseMs: 2000, blockMs: 100 });
      buses.push(b);
      return b;
    };
    before(async () => {
      redis = await startRedis();
      raw = new Redis(redis.url);
    });
    after(async () => {
      await Promise.all(buses.map((b) => b.close()));
      raw?.disconnect();
      await redis?.stop();
    });

    test('downlink from a newer publisher: known kinds intact and in order (extra fields kept on re-encoding), an unknown kind decodes as unset', async () => {
      const prefix = `down${++n}:`;
      const gateway = bus(prefix, 'gw-x');
      const got: Down[] = [];
      const sub = gateway.consumeDown('gw-x', (batch) => got.push(...batch));
      try {
        await sleep(200); // the reader is in place
        const push = pushOf('u:compat-a:compat-b', 1, 'hello');
        // What a newer logic node writes for this gateway in one turn, and the same known fields as the current schema has them.
        const newerMessages: NewerDownInit['kind'][] = [
          { case: 'reply', value: { connId: 7n, frame: pong(7), priority: 5 } },
          { case: 'nudge', value: { userId: 'u1', reason: 'sync now' } },
          { case: 'deliver', value: { targets: [{ userId: 'u1', badge: 3 }, { userId: 'u2', exceptDevice: 'd1' }], frame: push, traceId: 'trace-1' } },
          { case: 'kick', value: { userId: 'u3', deviceId: 'd3', connId: 9n, code: ErrorCode.SERVER_SHUTDOWN, reason: 'bye', reconnect: true, retryAfterMs: 1500 } },
          { case: 'revoke', value: { userId: 'u4', deviceId: 'd4', beforeMs: 99n } },
        ];
        const known: (CurrentDownInit['kind'] | undefined)[] = [
          { case: 'reply', value: { connId: 7n, frame: pong(7) } },
          undefined,
          { case: 'deliver', value: { targets: [{ userId: 'u1' }, { userId: 'u2', exceptDevice: 'd1' }], frame: push } },
          { case: 'kick', value: { userId: 'u3', deviceId: 'd3', connId: 9n, code: ErrorCode.SERVER_SHUTDOWN, reason: 'bye', reconnect: true } },
          { case: 'revoke', value: { userId: 'u4', deviceId: 'd4', beforeMs: 99n } },
        ];
        const batch = create(newer.DownBatchSchema, { publishedAtMs: 1234n, messages: newerMessages.map((kind) => ({ kind })) });
        await raw.xadd(`${prefix}down:gw-x`, '*', 'd', Buffer.from(toBinary(newer.DownBatchSchema, batch)));
        // An entry holding nothing but an unknown kind, then one from a current publisher: the stream goes on.
        const lone = create(newer.DownBatchSchema, { messages: [{ kind: { case: 'nudge', value: { userId: 'u5' } } }] });
        await raw.xadd(`${prefix}down:gw-x`, '*', 'd', Buffer.from(toBinary(newer.DownBatchSchema, lone)));
        const currentPublisher = bus(prefix, 'logic-current');
        await currentPublisher.publishDown('gw-x', down({ case: 'announce', value: { frame: pong(42) } }));

        await waitFor(() => got.length >= 7, () => `7 downlink messages; got ${got.length}`);
        await sleep(200);
        assert.equal(got.length, 7, 'nothing more');
        assert.deepEqual(got.map((m) => m.kind.case), ['reply', undefined, 'deliver', 'kick', 'revoke', undefined, 'announce'], 'in publish order, unknown kinds unset');
        assert.equal(gateway.counters.downRead, 3, 'three entries');
        assert.equal(gateway.counters.downMessagesRead, 7);
        for (let i = 0; i < known.length; i++) {
          assert.deepEqual(downJson(got[i]!), downJson(create(current.DownSchema, { kind: known[i] })), `message ${i}: known fields intact`);
        }
        assert.deepEqual(downJson(got[6]!), downJson(down({ case: 'announce', value: { frame: pong(42) } })));
        // Frames inside are whole.
        assert.equal(got[0]!.kind.case === 'reply' && decodeFrame(got[0]!.kind.value.frame).body.case, 'pong');
        assert.equal(got[2]!.kind.case === 'deliver' && decodeFrame(got[2]!.kind.value.frame).body.case, 'push');
        // What this version did not know travels on: re-encoded (forwarded, stored), a newer role reads it all again.
        assert.ok(got[1]!.$unknown?.some((u) => u.no === 8), 'the unknown kind is kept as an unknown field');
        for (let i = 0; i < newerMessages.length; i++) {
          const again = fromBinary(newer.DownSchema, toBinary(current.DownSchema, got[i]!));
          assert.deepEqual(toJson(newer.DownSchema, again), toJson(newer.DownSchema, batch.messages[i]!), `message ${i}: re-encoded by the current schema, read by the newer one`);
        }
        // The same for a whole batch (its own new field included).
        const batchAgain = fromBinary(newer.DownBatchSchema, toBinary(current.DownBatchSchema, fromBinary(current.DownBatchSchema, toBinary(newer.DownBatchSchema, batch))));
        assert.deepEqual(toJson(newer.DownBatchSchema, batchAgain), toJson(newer.DownBatchSchema, batch));
      } finally {
        await sub.close();
      }
    });

    test('downlink from the current publisher, read by a newer and an older gateway: known fields intact, new fields at their "as before" defaults', async () => {
      const prefix = `down${++n}:`;
      const publisher = bus(prefix, 'logic-current');
      const sent: Down[] = [
        down({ case: 'reply', value: { connId: 3n, frame: pong(3) } }),
        down({ case: 'revoke', value: { userId: 'u1', beforeMs: 5n } }),
        down({ case: 'deliver', value: { targets: [{ userId: 'u2', exceptDevice: 'd2' }], frame: pong(4) } }),
        down({ case: 'kick', value: { userId: 'u3', deviceId: 'd3', code: ErrorCode.REPLACED, reason: 'elsewhere' } }),
      ];
      await Promise.all(sent.map((m) => publisher.publishDown('gw-y', m)));
      const entries = await readStream(raw, `${prefix}down:gw-y`, 'd');
      assert.equal(entries.length, 1, 'one turn, one entry');

      const forNewer = fromBinary(newer.DownBatchSchema, entries[0]!);
      assert.equal(forNewer.publishedAtMs, 0n);
      assert.deepEqual(forNewer.messages.map((m) => m.kind.case), ['reply', 'revoke', 'deliver', 'kick']);
      const reply = forNewer.messages[0]!.kind;
      assert.ok(reply.case === 'reply' && reply.value.priority === 0 && reply.value.connId === 3n);
      const deliver = forNewer.messages[2]!.kind;
      assert.ok(deliver.case === 'deliver' && deliver.value.traceId === '' && deliver.value.targets[0]!.badge === 0);
      const kick = forNewer.messages[3]!.kind;
      assert.ok(kick.case === 'kick' && kick.value.retryAfterMs === 0);
      // Each message, back in the current schema from the newer one's bytes, is what was sent.
      for (let i = 0; i < sent.length; i++) {
        assert.deepEqual(downJson(fromBinary(current.DownSchema, toBinary(newer.DownSchema, forNewer.messages[i]!))), downJson(sent[i]!), `message ${i}`);
      }

      const forOlder = fromBinary(older.DownBatchSchema, entries[0]!);
      assert.deepEqual(forOlder.messages.map((m) => m.kind.case), ['reply', undefined, 'deliver', 'kick'], 'an older gateway does not know revoke');
      for (const i of [0, 2, 3]) {
        assert.deepEqual(downJson(fromBinary(current.DownSchema, toBinary(older.DownSchema, forOlder.messages[i]!))), downJson(sent[i]!), `message ${i} through the older schema`);
      }
      assert.deepEqual(downJson(fromBinary(current.DownSchema, toBinary(older.DownSchema, forOlder.messages[1]!))), downJson(sent[1]!), 'the revoke survives the older role re-encoding it');
    });

    const origin = { node: 'gw-1', connId: 17n, userId: 'compat-a', deviceId: 'd1', platform: 'ios' };
    const sendFrame = (clientMsgId: string): Frame => makeFrame(5, { case: 'send', value: { clientMsgId, toUser: 'compat-b', text: `text of ${clientMsgId}` } });

    test('uplink from a newer gateway (extra fields, an unknown body kind) and an older one (no request_id, no trusted): every known field intact, in order', async () => {
      const prefix = `up${++n}:`;
      const consumer = bus(prefix, 'logic-current');
      const got: UpEnvelope[] = [];
      const sub = consumer.consumeUp(async (batch) => {
        got.push(...batch);
      });
      try {
        const partition = directConversationId('compat-a', 'compat-b');
        const stream = `${prefix}up:${shardOf(partition, SHARDS)}`;
        const newerUp = create(newer.UpEnvelopeSchema, {
          origin, partition, requestId: 'req-newer', trusted: true, publishedAtMs: 1000n, traceId: 'trace-7', hops: 2,
          body: { case: 'frame', value: sendFrame('m-newer') },
        });
        const heartbeat = create(newer.UpEnvelopeSchema, {
          origin, partition, requestId: 'req-heartbeat', publishedAtMs: 1001n, hops: 1, body: { case: 'heartbeat', value: { node: 'gw-1', atMs: 1001n } },
        });
        const olderUp = create(older.UpEnvelopeSchema, { origin, partition, publishedAtMs: 1002n, body: { case: 'frame', value: sendFrame('m-older') } });
        await raw.xadd(stream, '*', 'e', Buffer.from(toBinary(newer.UpEnvelopeSchema, newerUp)));
        await raw.xadd(stream, '*', 'e', Buffer.from(toBinary(newer.UpEnvelopeSchema, heartbeat)));
        await raw.xadd(stream, '*', 'e', Buffer.from(toBinary(older.UpEnvelopeSchema, olderUp)));
        const publisher = bus(prefix, 'gw-current');
        const currentUp = create(current.UpEnvelopeSchema, {
          origin, partition, requestId: 'req-current', publishedAtMs: 1003n, body: { case: 'frame', value: sendFrame('m-current') },
        });
        await publisher.publishUp(currentUp);

        await waitFor(() => got.length >= 4, () => `4 uplink envelopes; got ${got.length}`, 15_000);
        await sleep(200);
        assert.equal(got.length, 4, 'each once');
        assert.equal(consumer.counters.deadLettered, 0, 'nothing was set aside');
        assert.deepEqual(got.map((m) => m.publishedAtMs), [1000n, 1001n, 1002n, 1003n], 'in publish order');

        // The newer envelope: every known field as sent.
        assert.deepEqual(upJson(got[0]!), upJson(create(current.UpEnvelopeSchema, {
          origin, partition, requestId: 'req-newer', trusted: true, publishedAtMs: 1000n, body: { case: 'frame', value: sendFrame('m-newer') },
        })));
        assert.equal(got[0]!.requestId, 'req-newer');
        assert.equal(got[0]!.trusted, true);
        const frame = got[0]!.body.case === 'frame' ? got[0]!.body.value : undefined;
        assert.equal(frame?.body.case === 'send' && frame.body.value.clientMsgId, 'm-newer');
        // The unknown body kind: unset, the rest of the envelope readable (logic skips it).
        assert.equal(got[1]!.body.case, undefined);
        assert.equal(got[1]!.requestId, 'req-heartbeat');
        assert.equal(got[1]!.origin?.userId, 'compat-a');
        // Re-encoded, nothing the newer role wrote is lost.
        for (const [i, sent] of [[0, newerUp], [1, heartbeat]] as const) {
          const again = fromBinary(newer.UpEnvelopeSchema, toBinary(current.UpEnvelopeSchema, got[i]!));
          assert.deepEqual(toJson(newer.UpEnvelopeSchema, again), toJson(newer.UpEnvelopeSchema, sent), `envelope ${i} re-encoded`);
        }
        // The older envelope: request_id and trusted at their defaults, the rest as sent.
        assert.equal(got[2]!.requestId, '');
        assert.equal(got[2]!.trusted, false);
        assert.deepEqual(upJson(got[2]!), upJson(create(current.UpEnvelopeSchema, {
          origin, partition, publishedAtMs: 1002n, body: { case: 'frame', value: sendFrame('m-older') },
        })));
        assert.equal(got[2]!.$unknown, undefined, 'an older envelope has nothing this version does not know');
        assert.deepEqual(upJson(got[3]!), upJson(currentUp));
      } finally {
        await sub.close();
      }
    });

    test('uplink from the current publisher, read by an older logic node: known fields intact; request_id and trusted survive its re-encoding', async () => {
      const prefix = `up${++n}:`;
      const publisher = bus(prefix, 'gw-current');
      const partition = 'g:compat-group';
      const sent = create(current.UpEnvelopeSchema, {
        origin, partition, requestId: 'req-1', trusted: true, publishedAtMs: 77n, body: { case: 'frame', value: sendFrame('m-1') },
      });
      await publisher.publishUp(sent);
      const [bytes] = await readStream(raw, `${prefix}up:${shardOf(partition, SHARDS)}`, 'e');
      assert.ok(bytes, 'the entry');
      const seen = fromBinary(older.UpEnvelopeSchema, bytes);
      assert.equal(seen.partition, partition);
      assert.equal(seen.publishedAtMs, 77n);
      assert.deepEqual(seen.origin && toJson(older.OriginSchema, seen.origin), toJson(current.OriginSchema, sent.origin!));
      assert.ok(seen.body.case === 'frame' && seen.body.value.body.case === 'send' && seen.body.value.body.value.clientMsgId === 'm-1');
      assert.deepEqual((seen.$unknown ?? []).map((u) => u.no).sort(), [3, 4], 'request_id and trusted kept as unknown fields');
      assert.deepEqual(upJson(fromBinary(current.UpEnvelopeSchema, toBinary(older.UpEnvelopeSchema, seen))), upJson(sent));
    });
  });

  describe('on a running cluster (1 gateway, 1 logic node)', () => {
    let cluster: TestCluster;
    let redis: Redis;
    const clients: RawClient[] = [];
    /** Pings every client: the cluster closes a connection silent for 3 ping intervals (1 s here). */
    let keepalive: NodeJS.Timeout | undefined;
    before(async () => {
      cluster = await startTestCluster({ routing: 'targeted', gateways: 1, logic: 1, shards: SHARDS });
      redis = new Redis(cluster.redis.url);
      keepalive = setInterval(() => {
        for (const c of clients) if (!c.closed) c.send({ case: 'ping', value: {} });
      }, 400);
    });
    after(async () => {
      clearInterval(keepalive);
      for (const c of clients) c.close();
      redis?.disconnect();
      await cluster?.stop();
    });

    async function connect(user: string): Promise<RawClient> {
      // The token first: the keepalive pings every client it holds, and a ping before the login closes the connection (NOT_LOGGED_IN).
      const token = (await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: 'd1' })).token;
      const c = await RawClient.connect(cluster.node('gw-1').tcpUrl!);
      // RawClient.login waits 5 s at most; a busy machine may need longer.
      const login = await request(c, { case: 'login', value: { token } });
      assert.equal(login.body.case, 'loginResult', c.describe());
      clients.push(c);
      return c;
    }

    async function request(c: RawClient, body: FrameBodyInit): Promise<Frame> {
      const from = c.frames.length;
      const id = c.send(body);
      return c.next((f) => f.id === id, 15_000, from);
    }

    const pushedTexts = (c: RawClient) => c.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages.map((m) => m.text) : []));

    async function unknownSkipped(): Promise<number> {
      const text = await (await fetch(`${cluster.node('gw-1').httpUrl}/metrics`)).text();
      const line = /^longlink_bus_unknown_skipped_total (\S+)$/m.exec(text);
      assert.ok(line, 'the gateway exports longlink_bus_unknown_skipped_total');
      return Number(line[1]);
    }

    test('a newer DownBatch with an unknown kind: the gateway skips it, counts it, delivers what follows in the same entry and goes on answering', async () => {
      const bob = await connect('compat-b');
      const skippedBefore = await unknownSkipped();
      const conversationId = directConversationId('compat-a', 'compat-b');
      const batch = create(newer.DownBatchSchema, {
        publishedAtMs: BigInt(Date.now()),
        messages: [
          { kind: { case: 'nudge', value: { userId: 'compat-b', reason: 'newer kind' } } },
          { kind: { case: 'deliver', value: { targets: [{ userId: 'compat-b', badge: 1 }], frame: pushOf(conversationId, 900, 'after-the-nudge'), traceId: 'tr' } } },
          { kind: { case: 'kick', value: { userId: 'nobody-here', deviceId: 'd1', code: ErrorCode.REPLACED, reason: 'x', retryAfterMs: 10 } } },
        ],
      });
      await redis.xadd('ll:down:gw-1', '*', 'd', Buffer.from(toBinary(newer.DownBatchSchema, batch)));
      await waitFor(() => pushedTexts(bob).includes('after-the-nudge'), () => `the push after the unknown kind; bob got ${bob.describe()}`);
      const pong1 = await request(bob, { case: 'ping', value: {} });
      assert.equal(pong1.body.case, 'pong');
      assert.equal(bob.closed, false);
      assert.ok(cluster.node('gw-1').running, 'the gateway is running');
      assert.equal(await unknownSkipped(), skippedBefore + 1, 'the unknown kind was counted once');
      // The cluster still carries messages end to end.
      const alice = await connect('compat-a');
      const ack = await request(alice, { case: 'send', value: { clientMsgId: 'after-newer-down', toUser: 'compat-b', text: 'still here' } });
      assert.equal(ack.body.case, 'sendAck', alice.describe());
      await waitFor(() => pushedTexts(bob).includes('still here'), () => `bob gets the message sent after; got ${bob.describe()}`);
    });

    test('newer and older uplink envelopes of a send are served by the current logic node: stored once each, pushed with sender and text intact', async () => {
      const carol = await connect('compat-c');
      const partition = directConversationId('compat-c', 'compat-d');
      const stream = `ll:up:${shardOf(partition, SHARDS)}`;
      // From gateways of other versions, for a connection nobody holds here (its reply goes nowhere); carol is the recipient.
      const from = { node: 'gw-other', connId: 4242n, userId: 'compat-d', deviceId: 'd9', platform: 'ios' };
      const send = (clientMsgId: string, text: string): Frame => makeFrame(1, { case: 'send', value: { clientMsgId, toUser: 'compat-c', text } });
      const newerUp = create(newer.UpEnvelopeSchema, {
        origin: from, partition, requestId: 'n-1', publishedAtMs: BigInt(Date.now()), traceId: 'trace', hops: 3, body: { case: 'frame', value: send('n-1', 'from a newer gateway') },
      });
      const heartbeat = create(newer.UpEnvelopeSchema, { origin: from, partition, body: { case: 'heartbeat', value: { node: 'gw-other', atMs: 1n } } });
      const olderUp = create(older.UpEnvelopeSchema, { origin: from, partition, publishedAtMs: BigInt(Date.now()), body: { case: 'frame', value: send('o-1', 'from an older gateway') } });
      await redis.xadd(stream, '*', 'e', Buffer.from(toBinary(newer.UpEnvelopeSchema, newerUp)));
      await redis.xadd(stream, '*', 'e', Buffer.from(toBinary(newer.UpEnvelopeSchema, heartbeat)));
      await redis.xadd(stream, '*', 'e', Buffer.from(toBinary(older.UpEnvelopeSchema, olderUp)));
      // The older envelope once more (no request_id: the send's client_msg_id still makes it one message).
      await redis.xadd(stream, '*', 'e', Buffer.from(toBinary(older.UpEnvelopeSchema, olderUp)));
      await waitFor(() => pushedTexts(carol).includes('from an older gateway'), () => `carol gets both; got ${carol.describe()}`, 15_000);
      const pushed = carol.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages : [])).filter((m) => m.conversationId === partition);
      const byText = new Map(pushed.map((m) => [m.text, m]));
      assert.deepEqual([...byText.keys()], ['from a newer gateway', 'from an older gateway'], 'in order');
      assert.equal(byText.get('from a newer gateway')!.fromUser, 'compat-d');
      assert.equal(byText.get('from a newer gateway')!.fromDevice, 'd9');
      assert.equal(byText.get('from an older gateway')!.clientMsgId, 'o-1');
      const history = await request(carol, { case: 'history', value: { conversationId: partition, limit: 10 } });
      assert.equal(history.body.case, 'historyResult', carol.describe());
      const stored = history.body.case === 'historyResult' ? history.body.value.messages : [];
      assert.deepEqual(stored.map((m) => [Number(m.seq), m.text]), [[1, 'from a newer gateway'], [2, 'from an older gateway']], 'stored once each, the heartbeat skipped');
      assert.equal(await redis.xlen('ll:dead'), 0, 'nothing dead-lettered');
    });
  });
});
