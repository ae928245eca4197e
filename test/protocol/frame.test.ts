// The codec is pure: these tests feed it buffers, hand-written hex fixtures
// and seeded random bytes, with no sockets.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { equals } from '@bufbuild/protobuf';
import {
  DEFAULT_MAX_FRAME_BYTES, DecodeError, ErrorCode, FrameSchema, LengthPrefixedReader,
  decodeFrame, encodeFrame, lengthPrefixed, makeFrame,
  type FrameBodyInit, type FrameCase,
} from '../../src/protocol/index.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const message = (seq: bigint, text: string) => ({
  conversationId: 'u:alice:bob',
  seq,
  serverMsgId: `srv-${seq}`,
  fromUser: 'alice',
  fromDevice: 'phone',
  clientMsgId: `c-${seq}`,
  text,
  sentAtMs: 1_700_000_000_000n + seq,
});

/** One frame of every type, every field set to something other than its default. */
const SAMPLES: { [C in FrameCase]: Extract<FrameBodyInit, { case: C }> } = {
  login: { case: 'login', value: { token: 'eyJhbGciOiJIUzI1NiJ9.e30.sig', clientVersion: 'longlink-js/0.1.0' } },
  loginResult: {
    case: 'loginResult',
    value: {
      userId: 'alice', deviceId: 'phone', platform: 'ios', pingIntervalMs: 30_000, serverTimeMs: 1_700_000_000_123n,
      nodeId: 'gw-1', maxFrameBytes: 65_536, maxTextBytes: 4096,
    },
  },
  ping: { case: 'ping', value: {} },
  pong: { case: 'pong', value: { serverTimeMs: 1_700_000_000_456n } },
  send: { case: 'send', value: { clientMsgId: 'c-1', toUser: 'bob', conversationId: 'u:alice:bob', text: 'héllo 👋', fromUser: 'alice' } },
  sendAck: {
    case: 'sendAck',
    value: { clientMsgId: 'c-1', serverMsgId: 'srv-1', conversationId: 'u:alice:bob', seq: 42n, sentAtMs: 1_700_000_000_789n, duplicate: true },
  },
  push: { case: 'push', value: { messages: [message(1n, 'one'), message(2n, 'two')] } },
  pushAck: { case: 'pushAck', value: { conversationId: 'u:alice:bob', seq: 2n } },
  sync: { case: 'sync', value: { cursors: [{ conversationId: 'u:alice:bob', seq: 3n }], conversationIds: ['u:alice:bob', 'u:alice:carol'], limit: 100 } },
  syncResult: {
    case: 'syncResult',
    value: { messages: [message(4n, 'four')], cursors: [{ conversationId: 'u:alice:bob', seq: 4n }], hasMore: true },
  },
  history: { case: 'history', value: { conversationId: 'u:alice:bob', beforeSeq: 10n, limit: 20 } },
  historyResult: { case: 'historyResult', value: { conversationId: 'u:alice:bob', messages: [message(8n, 'eight'), message(9n, 'nine')], hasMore: true } },
  kick: { case: 'kick', value: { code: ErrorCode.REPLACED, reason: 'logged in elsewhere', reconnect: true } },
  error: { case: 'error', value: { code: ErrorCode.RATE_LIMITED, message: 'slow down', reconnect: true, fatal: true } },
  markRead: { case: 'markRead', value: { conversationId: 'g:team', seq: 7n } },
  done: { case: 'done', value: {} },
  typing: { case: 'typing', value: { conversationId: 'u:alice:bob' } },
  presenceQuery: { case: 'presenceQuery', value: { userIds: ['bob', 'carol'] } },
  presenceSubscribe: { case: 'presenceSubscribe', value: { userIds: ['bob'] } },
  presenceResult: { case: 'presenceResult', value: { users: [{ userId: 'bob', online: true, platforms: ['ios', 'web'] }] } },
  conversations: { case: 'conversations', value: {} },
  conversationsResult: {
    case: 'conversationsResult',
    value: {
      conversations: [{
        conversationId: 'g:team', kind: 'group', groupId: 'team', name: 'Team', peerUser: 'bob', lastSeq: 9n,
        lastMessage: message(9n, 'nine'), readSeq: 7n, unread: 2n, peerReadSeq: 8n, lastAtMs: 1_700_000_000_999n,
      }],
    },
  },
  search: { case: 'search', value: { query: 'lunch', conversationId: 'g:team', limit: 10, cursor: 'c1' } },
  searchResult: { case: 'searchResult', value: { hits: [{ message: message(3n, 'lunch at noon'), snippet: '[lunch] at noon' }], nextCursor: 'c2' } },
  pushRegister: { case: 'pushRegister', value: { platform: 'apns', token: 'abc123', remove: true } },
  notifySettings: { case: 'notifySettings', value: { conversationId: 'g:team', muted: true } },
  group: { case: 'group', value: { op: { case: 'add', value: { groupId: 'team', userIds: ['dave'] } } } },
  groupResult: {
    case: 'groupResult',
    value: {
      group: {
        groupId: 'team', conversationId: 'g:team', name: 'Team', owner: 'alice', mutedAll: true, dismissed: true,
        createdAtMs: 1_700_000_000_001n, members: [{ userId: 'alice', role: 3, muted: true }],
      },
    },
  },
  recall: { case: 'recall', value: { conversationId: 'g:team', seq: 3n } },
  edit: {
    case: 'edit',
    value: { conversationId: 'g:team', seq: 4n, text: 'fixed', content: { type: 'app.card', payload: new Uint8Array([1, 2]), mentions: ['bob'], mentionAll: true } },
  },
  delete: { case: 'delete', value: { conversationId: 'g:team', seq: 5n } },
  block: { case: 'block', value: { userId: 'mallory', blocked: true } },
  blockResult: { case: 'blockResult', value: { blocked: ['mallory', 'trudy'] } },
  react: { case: 'react', value: { conversationId: 'g:team', seq: 4n, emoji: '👍', remove: true } },
  hide: { case: 'hide', value: { conversationId: 'g:team', seq: 9n } },
  setProfile: { case: 'setProfile', value: { name: 'Alice A.', avatarUrl: 'https://example.com/a.png' } },
  profileQuery: { case: 'profileQuery', value: { userIds: ['alice', 'bob'] } },
  profileResult: { case: 'profileResult', value: { profiles: [{ userId: 'alice', name: 'Alice', avatarUrl: 'https://x.test/a', updatedAtMs: 5n }] } },
  event: { case: 'event', value: { body: { case: 'receipt', value: { conversationId: 'g:team', userId: 'bob', seq: 5n } } } },
};

const CASES = Object.keys(SAMPLES) as FrameCase[];

/** Deterministic PRNG (mulberry32), so a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(random: () => number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/** Runs `fn`; anything it throws must be a DecodeError with one of `codes`. */
function onlyDecodeErrors<T>(fn: () => T, codes: ErrorCode[], what: string): T | undefined {
  try {
    return fn();
  } catch (err) {
    assert.ok(err instanceof DecodeError, `${what} threw ${String(err)}, not a DecodeError`);
    assert.ok(codes.includes(err.code), `${what} threw code ${err.code}`);
    return undefined;
  }
}

function assertDecodeError(fn: () => unknown, code: ErrorCode): void {
  assert.throws(fn, (err: unknown) => err instanceof DecodeError && err.code === code);
}

describe('encodeFrame / decodeFrame', () => {
  test('the samples cover every frame type in the schema', () => {
    const oneof = FrameSchema.oneofs.find((o) => o.name === 'body');
    assert.ok(oneof);
    assert.deepEqual([...CASES].sort(), oneof.fields.map((f) => f.localName).sort());
  });

  for (const c of CASES) {
    test(`round-trips ${c}`, () => {
      const body = SAMPLES[c];
      assert.equal(body.case, c);
      const frame = makeFrame(7, body);
      const bytes = encodeFrame(frame);
      const decoded = decodeFrame(bytes);
      assert.equal(decoded.id, 7);
      assert.equal(decoded.body.case, c);
      assert.ok(equals(FrameSchema, decoded, frame), 'decoded frame equals the original');
      assert.deepEqual(decoded, frame);
      assert.equal(toHex(encodeFrame(decoded)), toHex(bytes), 're-encoding gives the same bytes');
    });
  }

  test('round-trips the largest request id and empty bodies', () => {
    const frame = makeFrame(0xffff_ffff, { case: 'send', value: {} });
    const decoded = decodeFrame(encodeFrame(frame));
    assert.equal(decoded.id, 0xffff_ffff);
    assert.equal(decoded.body.case, 'send');
    assert.ok(equals(FrameSchema, decoded, frame));
  });

  test('encodes to the bytes the schema defines (hand-written fixtures)', () => {
    // id=1 (field 1 varint), ping (field 12, empty message)
    assert.equal(toHex(encodeFrame(makeFrame(1, { case: 'ping', value: {} }))), '08016200');
    // id=2, pong (field 13) { server_time_ms (1) = 5 }
    assert.equal(toHex(encodeFrame(makeFrame(2, { case: 'pong', value: { serverTimeMs: 5n } }))), '08026a020805');
    // id=3, send (field 14) { client_msg_id "c1", to_user "bob", text "hi" }
    assert.equal(
      toHex(encodeFrame(makeFrame(3, { case: 'send', value: { clientMsgId: 'c1', toUser: 'bob', text: 'hi' } }))),
      '0803720d0a0263311203626f6222026869',
    );
  });

  test('decodes hand-written bytes', () => {
    const send = decodeFrame(hex('08 03 72 0d 0a 02 63 31 12 03 62 6f 62 22 02 68 69'));
    assert.equal(send.id, 3);
    assert.equal(send.body.case, 'send');
    assert.equal(send.body.value.clientMsgId, 'c1');
    assert.equal(send.body.value.toUser, 'bob');
    assert.equal(send.body.value.text, 'hi');
    assert.equal(send.body.value.conversationId, '');
  });

  test('an empty buffer is a frame with id 0 and no body', () => {
    const frame = decodeFrame(new Uint8Array(0));
    assert.equal(frame.id, 0);
    assert.equal(frame.body.case, undefined);
  });

  test('malformed bytes throw DecodeError(BAD_FRAME)', () => {
    const fixtures = {
      'varint longer than 10 bytes': 'ff ff ff ff ff ff ff ff ff ff 01',
      'truncated varint': '08',
      'length past the end': '72 05 0a',
      'nested message truncated': '62 01',
      'illegal wire type 7': '0f',
      'lone high byte': 'ff',
    };
    for (const [what, bytes] of Object.entries(fixtures)) {
      assert.throws(
        () => decodeFrame(hex(bytes)),
        (err: unknown) => err instanceof DecodeError && err.code === ErrorCode.BAD_FRAME && err instanceof Error,
        what,
      );
    }
  });

  test('unknown fields are skipped: a frame with no body, never another error', () => {
    // field 100, varint 1
    const frame = decodeFrame(hex('a0 06 01'));
    assert.equal(frame.body.case, undefined);
    // field 1 (id) with the length-delimited wire type: protobuf treats it as unknown
    assert.equal(decodeFrame(hex('0a 00')).body.case, undefined);
  });

  test('garbage either throws DecodeError(BAD_FRAME) or decodes', () => {
    const garbage = ['deadbeef', '00', '0000', 'ffffffff', '7a ff ff ff ff 0f', '62 00 62 00 ff', '0a 80 80 80 80 10'];
    for (const g of garbage) onlyDecodeErrors(() => decodeFrame(hex(g)), [ErrorCode.BAD_FRAME], `decodeFrame(${g})`);
  });
});

describe('lengthPrefixed', () => {
  test('prefixes the payload with its 4-byte big-endian length', () => {
    assert.equal(toHex(lengthPrefixed(hex('08016200'))), '0000000408016200');
    assert.equal(toHex(lengthPrefixed(new Uint8Array(0))), '00000000');
    assert.equal(toHex(lengthPrefixed(Buffer.alloc(300)).subarray(0, 4)), '0000012c');
  });
});

describe('LengthPrefixedReader', () => {
  // [length 4] ping id=1, [length 6] pong id=2 time=5, [length 17] send id=3
  const PING = '00000004 08016200';
  const PONG = '00000006 08026a020805';
  const SEND = '00000011 0803720d0a0263311203626f6222026869';

  function drain(reader: LengthPrefixedReader): Buffer[] {
    const out: Buffer[] = [];
    for (let p = reader.next(); p !== undefined; p = reader.next()) out.push(p);
    return out;
  }

  test('returns nothing until a whole frame has arrived', () => {
    const reader = new LengthPrefixedReader();
    assert.equal(reader.next(), undefined);
    assert.equal(reader.pending, 0);
    reader.push(Buffer.alloc(0));
    assert.equal(reader.next(), undefined);
  });

  test('reassembles a frame fed one byte at a time', () => {
    const reader = new LengthPrefixedReader();
    const bytes = hex(SEND);
    for (let i = 0; i < bytes.length; i++) {
      assert.equal(reader.next(), undefined, `a payload after only ${i} bytes`);
      reader.push(bytes.subarray(i, i + 1));
      assert.equal(reader.pending, i + 1);
    }
    const payload = reader.next();
    assert.ok(payload);
    assert.equal(toHex(payload), '0803720d0a0263311203626f6222026869');
    assert.equal(reader.next(), undefined);
    assert.equal(reader.pending, 0);
    const frame = decodeFrame(payload);
    assert.equal(frame.body.case, 'send');
  });

  test('splits several frames out of one chunk', () => {
    const reader = new LengthPrefixedReader();
    reader.push(hex(PING + PONG + SEND));
    const payloads = drain(reader);
    assert.deepEqual(payloads.map(toHex), ['08016200', '08026a020805', '0803720d0a0263311203626f6222026869']);
    assert.deepEqual(payloads.map((p) => decodeFrame(p).body.case), ['ping', 'pong', 'send']);
    assert.equal(reader.pending, 0);
  });

  test('handles frames split at every possible point across two chunks', () => {
    const stream = hex(PING + PONG + SEND);
    for (let cut = 0; cut <= stream.length; cut++) {
      const reader = new LengthPrefixedReader();
      reader.push(stream.subarray(0, cut));
      const first = drain(reader);
      reader.push(stream.subarray(cut));
      const all = first.concat(drain(reader));
      assert.deepEqual(all.map(toHex), ['08016200', '08026a020805', '0803720d0a0263311203626f6222026869'], `cut at ${cut}`);
    }
  });

  test('keeps a partial frame buffered after complete ones', () => {
    const reader = new LengthPrefixedReader();
    const send = hex(SEND);
    reader.push(Buffer.concat([hex(PING), send.subarray(0, 6)]));
    assert.deepEqual(drain(reader).map(toHex), ['08016200']);
    assert.equal(reader.pending, 6);
    reader.push(send.subarray(6));
    assert.deepEqual(drain(reader).map((p) => decodeFrame(p).id), [3]);
  });

  test('returns a zero-length payload for a zero length prefix', () => {
    const reader = new LengthPrefixedReader();
    reader.push(hex('00000000' + PING));
    const payloads = drain(reader);
    assert.deepEqual(payloads.map(toHex), ['', '08016200']);
  });

  test('an oversized length prefix throws FRAME_TOO_LARGE before the payload arrives', () => {
    const reader = new LengthPrefixedReader(16);
    reader.push(hex('00 00 00'));
    assert.equal(reader.next(), undefined, 'three bytes are not yet a prefix');
    reader.push(hex('11')); // 17 > 16, and not one payload byte sent
    assertDecodeError(() => reader.next(), ErrorCode.FRAME_TOO_LARGE);
    assertDecodeError(() => reader.next(), ErrorCode.FRAME_TOO_LARGE);
  });

  test('a frame exactly at the limit passes', () => {
    const reader = new LengthPrefixedReader(17);
    reader.push(hex(SEND));
    assert.equal(decodeFrame(reader.next()!).id, 3);
  });

  test('the default limit is 64 KiB', () => {
    assert.equal(DEFAULT_MAX_FRAME_BYTES, 65_536);
    const atLimit = new LengthPrefixedReader();
    atLimit.push(hex('00 01 00 00'));
    assert.equal(atLimit.next(), undefined, 'waits for the 65,536-byte payload');
    const over = new LengthPrefixedReader();
    over.push(hex('00 01 00 01'));
    assertDecodeError(() => over.next(), ErrorCode.FRAME_TOO_LARGE);
    const huge = new LengthPrefixedReader();
    huge.push(hex('ff ff ff ff'));
    assertDecodeError(() => huge.next(), ErrorCode.FRAME_TOO_LARGE);
  });

  test('an oversized frame after good ones: the good ones come out first', () => {
    const reader = new LengthPrefixedReader(16);
    reader.push(hex(PING + PONG + '00 00 10 00'));
    assert.equal(toHex(reader.next()!), '08016200');
    assert.equal(toHex(reader.next()!), '08026a020805');
    assertDecodeError(() => reader.next(), ErrorCode.FRAME_TOO_LARGE);
  });

  test('round-trips every sample through lengthPrefixed and the reader', () => {
    const frames = CASES.map((c, i) => makeFrame(i + 1, SAMPLES[c]));
    const stream = Buffer.concat(frames.map((f) => lengthPrefixed(encodeFrame(f))));
    const reader = new LengthPrefixedReader();
    // Odd chunk sizes so boundaries fall everywhere.
    for (let i = 0; i < stream.length; i += 7) reader.push(stream.subarray(i, i + 7));
    const decoded = drain(reader).map((p) => decodeFrame(p));
    assert.equal(decoded.length, frames.length);
    for (const [i, f] of decoded.entries()) assert.ok(equals(FrameSchema, f, frames[i]!), `frame ${CASES[i]}`);
  });
});

describe('fuzz', () => {
  const ITERATIONS = 5_000;

  test(`decodeFrame on ${ITERATIONS} random inputs throws nothing but DecodeError(BAD_FRAME)`, () => {
    const random = prng(0x10e61e);
    let decoded = 0;
    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = randomBytes(random, Math.floor(random() * 96));
      const frame = onlyDecodeErrors(() => decodeFrame(bytes), [ErrorCode.BAD_FRAME], `iteration ${i} (${toHex(bytes)})`);
      if (frame) decoded++;
    }
    // Sanity: the loop exercised both paths.
    assert.ok(decoded > 0 && decoded < ITERATIONS, `${decoded} of ${ITERATIONS} decoded`);
  });

  test(`decodeFrame on ${ITERATIONS} mutated valid frames throws nothing but DecodeError(BAD_FRAME)`, () => {
    const random = prng(0xfeed);
    const valid = CASES.map((c) => Buffer.from(encodeFrame(makeFrame(9, SAMPLES[c]))));
    for (let i = 0; i < ITERATIONS; i++) {
      const bytes = Buffer.from(valid[i % valid.length]!);
      const flips = 1 + Math.floor(random() * 4);
      for (let f = 0; f < flips; f++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      const cut = random() < 0.3 ? Math.floor(random() * bytes.length) : bytes.length;
      const input = bytes.subarray(0, cut);
      onlyDecodeErrors(() => decodeFrame(input), [ErrorCode.BAD_FRAME], `iteration ${i} (${toHex(input)})`);
    }
  });

  test(`the reader on ${ITERATIONS} random streams throws nothing but DecodeError`, () => {
    const random = prng(0xc0ffee);
    let payloads = 0;
    for (let i = 0; i < ITERATIONS; i++) {
      const reader = new LengthPrefixedReader(64);
      // Small length prefixes most of the time, so payloads do come out.
      const stream = randomBytes(random, Math.floor(random() * 200));
      for (let j = 0; j + 3 < stream.length; j += 1 + Math.floor(random() * 40)) {
        if (random() < 0.7) stream[j] = stream[j + 1] = stream[j + 2] = 0;
      }
      let at = 0;
      let dead = false;
      while (at < stream.length && !dead) {
        const size = 1 + Math.floor(random() * 16);
        reader.push(stream.subarray(at, at + size));
        at += size;
        for (;;) {
          let payload: Buffer | undefined;
          try {
            payload = reader.next();
          } catch (err) {
            assert.ok(err instanceof DecodeError && err.code === ErrorCode.FRAME_TOO_LARGE, `iteration ${i}: ${String(err)}`);
            dead = true;
            break;
          }
          if (payload === undefined) break;
          assert.ok(payload.length <= 64);
          payloads++;
          onlyDecodeErrors(() => decodeFrame(payload), [ErrorCode.BAD_FRAME], `iteration ${i}`);
        }
      }
    }
    assert.ok(payloads > 0, 'the fuzz produced payloads');
  });
});
