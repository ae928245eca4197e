// fast-check arbitraries for Longlink frames, built from the protobuf schema
// itself (so a frame type or field added to the .proto is fuzzed without a
// change here), with field values chosen to hurt: empty, huge, negative,
// unicode, other users' ids, ids with bad characters, conversation ids of
// every shape, seqs near 2^63, and repeated fields with thousands of entries.
import fc from 'fast-check';
import { create, ScalarType, type DescEnum, type DescField, type DescMessage, type DescOneof } from '@bufbuild/protobuf';
import { FrameSchema, type Frame, type FrameBodyInit, type FrameCase } from '../../src/protocol/index.js';

/**
 * Every property in test/fuzz reports the failing run's error with its
 * counterexample. LONGLINK_FUZZ_SEED replays a failure (with the seed a
 * report printed); LONGLINK_FUZZ_SCALE multiplies every property's number of
 * runs (e.g. 20 for a long exploratory run; the default keeps CI quick).
 */
fc.configureGlobal({
  includeErrorInReport: true,
  ...(process.env.LONGLINK_FUZZ_SEED ? { seed: Number(process.env.LONGLINK_FUZZ_SEED) } : {}),
});

/** A property's number of runs, scaled by LONGLINK_FUZZ_SCALE. */
export function runs(n: number): number {
  return Math.max(1, Math.round(n * Number(process.env.LONGLINK_FUZZ_SCALE ?? 1)));
}

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);
const UINT32_MAX = 2 ** 32 - 1;

/** What the generated values may refer to: ids and conversation ids that exist on the server under test. */
export interface Pools {
  users: readonly string[];
  groups: readonly string[];
  conversations: readonly string[];
  /**
   * Allow strings that do not survive a UTF-8 round trip (lone surrogates):
   * fine for a server, which sees U+FFFD, not for a round-trip property.
   */
  loneSurrogates?: boolean;
  /** Generate huge strings and thousand-entry lists (never nested: a list of huge strings would be gigabytes). @default true */
  big?: boolean;
}

export const NO_POOLS: Pools = { users: [], groups: [], conversations: [] };

/** Valid-looking ids: 1-64 chars of [A-Za-z0-9_.@-]. */
export const validId = fc.stringMatching(/^[A-Za-z0-9_.@-]{1,64}$/);

/** Strings that are meant to break parsers, queries and logs. */
const NASTY = [
  '', ' ', '\u0000', 'a\u0000b', '\n', '\r\n', '\t', '%00', '%', '\\', '/', '..', '../../etc/passwd',
  "' OR 1=1 --", '"; DROP TABLE messages; --', '__proto__', 'constructor', 'prototype', 'toString',
  'null', 'undefined', 'NaN', '-1', '0', '1e309', 'system', 'System', 'SYSTEM', '\u202Eevil', '\uFEFF',
  '\u200B', 'ｕ', 'alice ', ' alice', 'ALICE', 'a'.repeat(64), 'a'.repeat(65), 'é', '👩‍👩‍👧‍👦', '${jndi:ldap://x}',
  '<script>alert(1)</script>', '{}', '[]', ':', '::', 'g:', 'u:', 'user:', 'down:*',
];

function text(pools: Pools): fc.Arbitrary<string> {
  const unit = pools.loneSurrogates
    ? fc.oneof({ weight: 9, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
      { weight: 1, arbitrary: fc.constantFrom('\uD800', '\uDFFF', '\uDBFF') })
    : fc.string({ unit: 'binary', minLength: 1, maxLength: 1 });
  return fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.string({ unit, maxLength: 40 }),
    fc.string({ unit: 'binary-ascii', maxLength: 40 }),
  );
}

/** A user id: a real one, a valid random one, or one with bad characters. */
function userish(pools: Pools): fc.Arbitrary<string> {
  const arbs: fc.MaybeWeightedArbitrary<string>[] = [
    { weight: 2, arbitrary: validId },
    { weight: 1, arbitrary: fc.constantFrom(...NASTY) },
    { weight: 1, arbitrary: text(pools) },
  ];
  if (pools.users.length > 0) arbs.push({ weight: 4, arbitrary: fc.constantFrom(...pools.users) });
  return fc.oneof(...arbs);
}

/** Conversation ids of every shape: real ones, 1:1 ids in either order, groups, malformed. */
function conversationish(pools: Pools): fc.Arbitrary<string> {
  const groupish = pools.groups.length > 0 ? fc.oneof(fc.constantFrom(...pools.groups), userish(pools)) : userish(pools);
  const arbs: fc.MaybeWeightedArbitrary<string>[] = [
    { weight: 3, arbitrary: fc.tuple(userish(pools), userish(pools)).map(([a, b]) => `u:${a}:${b}`) },
    { weight: 2, arbitrary: groupish.map((g) => `g:${g}`) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('u', 'g', 'U', 'G', 'x', '', 'user'), fc.array(userish(pools), { maxLength: 4 })).map(([p, parts]) => [p, ...parts].join(':')) },
    { weight: 1, arbitrary: fc.constantFrom(...NASTY) },
  ];
  if (pools.conversations.length > 0) arbs.push({ weight: 4, arbitrary: fc.constantFrom(...pools.conversations) });
  return fc.oneof(...arbs);
}

/** A string for any string field: ids, conversation ids, text, nasty constants, or a huge one. */
export function hostileString(pools: Pools): fc.Arbitrary<string> {
  let arb = hostileCache.get(pools);
  if (!arb) hostileCache.set(pools, (arb = buildHostileString(pools)));
  return arb;
}

/** Building string arbitraries is slow (grapheme tables, regexes): one per pools object, shared by every field. */
const hostileCache = new WeakMap<Pools, fc.Arbitrary<string>>();

function buildHostileString(pools: Pools): fc.Arbitrary<string> {
  const arbs: fc.MaybeWeightedArbitrary<string>[] = [
    { weight: 3, arbitrary: userish(pools) },
    { weight: 3, arbitrary: conversationish(pools) },
    { weight: 3, arbitrary: text(pools) },
    { weight: 1, arbitrary: fc.constant('') },
  ];
  // Huge: up to past the default 64 KiB frame limit, in one or in multi-byte characters.
  if (pools.big !== false) {
    arbs.push({
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 1000, max: 70_000 }), fc.constantFrom('x', 'é', '🙂', '\u0000'))
        .map(([n, c]) => c.repeat(Math.ceil(n / Buffer.byteLength(c)))),
    });
  }
  return fc.oneof(...arbs);
}

export const int64 = fc.oneof(
  fc.constantFrom(0n, 1n, -1n, INT64_MAX, INT64_MIN, INT64_MAX - 1n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 31n),
  fc.bigInt(1n, 50n),
  fc.bigInt(INT64_MAX - 1000n, INT64_MAX),
  fc.bigInt(INT64_MIN, INT64_MAX),
);

const uint32 = fc.oneof(fc.constantFrom(0, 1, UINT32_MAX, 2 ** 31, 2 ** 31 - 1), fc.integer({ min: 1, max: 500 }), fc.integer({ min: 0, max: UINT32_MAX }));
const int32 = fc.oneof(fc.constantFrom(0, 1, -1, 2 ** 31 - 1, -(2 ** 31)), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));

function scalar(type: ScalarType, pools: Pools): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING: return hostileString(pools);
    case ScalarType.BYTES: return fc.uint8Array({ maxLength: 64 });
    case ScalarType.BOOL: return fc.boolean();
    case ScalarType.INT64: case ScalarType.SINT64: case ScalarType.SFIXED64: return int64;
    case ScalarType.UINT64: case ScalarType.FIXED64: return fc.bigInt(0n, 2n ** 64n - 1n);
    case ScalarType.UINT32: case ScalarType.FIXED32: return uint32;
    case ScalarType.INT32: case ScalarType.SINT32: case ScalarType.SFIXED32: return int32;
    case ScalarType.FLOAT: return fc.float({ noNaN: true });
    case ScalarType.DOUBLE: return fc.double({ noNaN: true });
  }
}

/** A known value of the enum, or any int32 (an unknown value: proto3 enums are open). */
function enumValue(e: DescEnum): fc.Arbitrary<number> {
  return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...e.values.map((v) => v.number)) }, { weight: 1, arbitrary: int32 });
}

/**
 * A repeated field: usually a few entries, sometimes thousands (a few
 * distinct values repeated, which is cheap to generate and hurts as much).
 */
function list<T>(item: fc.Arbitrary<T>, pools: Pools): fc.Arbitrary<T[]> {
  if (pools.big === false) return fc.array(item, { maxLength: 5 });
  return fc.oneof(
    { weight: 6, arbitrary: fc.array(item, { maxLength: 5 }) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 1000, max: 8000 }), fc.array(item, { minLength: 1, maxLength: 6 }))
        .map(([n, sample]) => Array.from({ length: n }, (_, i) => sample[i % sample.length]!)),
    },
  );
}

function fieldValue(field: DescField, pools: Pools, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case 'scalar': return scalar(field.scalar, pools);
    case 'enum': return enumValue(field.enum);
    case 'message': return messageInit(field.message, pools, depth + 1);
    case 'list': {
      const small = smallPools(pools);
      if (field.listKind === 'scalar') return list(scalar(field.scalar, small), pools);
      if (field.listKind === 'enum') return list(enumValue(field.enum), pools);
      return list(messageInit(field.message, small, depth + 1), pools);
    }
    case 'map': return fc.constant({}); // the schema has no maps
  }
}

const smallCache = new WeakMap<Pools, Pools>();

/** The same pools without huge values (for list entries), one object per pools so its arbitraries are cached. */
function smallPools(pools: Pools): Pools {
  if (pools.big === false) return pools;
  let small = smallCache.get(pools);
  if (!small) smallCache.set(pools, (small = { ...pools, big: false }));
  return small;
}

function oneofInit(oneof: DescOneof, pools: Pools, depth: number): fc.Arbitrary<[string, unknown]> {
  return fc.oneof(
    fc.constant<[string, unknown]>([oneof.localName, { case: undefined }]),
    ...oneof.fields.map((f) => fieldValue(f, pools, depth).map((value): [string, unknown] => [oneof.localName, { case: f.localName, value }])),
  );
}

/** An init object for `desc` (as `create()` takes it), each field set or left at its default. */
export function messageInit(desc: DescMessage, pools: Pools, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  if (depth > 4) return fc.constant({});
  const parts = desc.members.map((m): fc.Arbitrary<[string, unknown] | undefined> => (m.kind === 'oneof'
    ? oneofInit(m, pools, depth)
    : fc.option(fieldValue(m, pools, depth).map((v): [string, unknown] => [m.localName, v]), { nil: undefined, freq: 3 })));
  return fc.tuple(...parts).map((entries) => Object.fromEntries(entries.filter((e) => e !== undefined)));
}

/** Every body case of Frame. */
export const ALL_CASES: FrameCase[] = FrameSchema.oneofs[0]!.fields.map((f) => f.localName as FrameCase);

/** Cases a client may send once logged in (the gateway forwards them, or answers them itself). */
export const CLIENT_CASES: FrameCase[] = [
  'ping', 'send', 'pushAck', 'sync', 'history', 'markRead', 'typing', 'recall',
  'presenceQuery', 'presenceSubscribe', 'conversations', 'group', 'edit', 'delete', 'block', 'react', 'hide', 'setProfile', 'profileQuery',
  'search', 'pushRegister', 'notifySettings',
];

/** A frame with a body of one of `cases` (or, rarely, no body), id 0 (the caller sets ids). */
export function frameOf(cases: readonly FrameCase[], pools: Pools): fc.Arbitrary<Frame> {
  const bodies = cases.map((c) => ({ weight: 30, arbitrary: fieldValue(FrameSchema.field[c]!, pools, 0).map((value) => ({ case: c, value })) }));
  return fc.oneof<fc.MaybeWeightedArbitrary<{ case: FrameCase | undefined; value?: unknown }>[]>(
    ...bodies,
    { weight: cases.length, arbitrary: fc.constant({ case: undefined }) },
  ).map((body) => printable(create(FrameSchema, { id: 0, body: body as FrameBodyInit })));
}

/**
 * A short JSON-ish view of a frame: long strings and lists abridged, int64
 * as strings, so a counterexample of thousands of entries stays readable.
 */
export function describeFrame(f: Frame): string {
  return describe({ id: f.id, case: f.body.case, value: f.body.value });
}

/** JSON with long strings, lists and buffers abridged, int64 as `123n`. */
export function describe(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => {
    if (key === '$typeName') return undefined;
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'string' && v.length > 60) return `${JSON.stringify(v.slice(0, 20)).slice(1, -1)}…(${v.length} chars)`;
    if (Array.isArray(v) && v.length > 6) return [...v.slice(0, 3), `…(${v.length} entries)`];
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer') {
      const data = (v as { data: number[] }).data;
      return `<${data.length} bytes: ${Buffer.from(data.slice(0, 40)).toString('latin1')}${data.length > 40 ? '…' : ''}>`;
    }
    return v === undefined ? null : v;
  }) ?? 'undefined';
}

/** The same value, printed abridged in fast-check's reports (a counterexample can hold 70 KB strings). */
export function abridged<T extends object>(value: T): T {
  Object.defineProperty(value, fc.toStringMethod, { value: () => describe(value), enumerable: false });
  return value;
}

/** fast-check prints a value through its toStringMethod: frames print abridged. */
function printable(f: Frame): Frame {
  Object.defineProperty(f, fc.toStringMethod, { value: () => describeFrame(f), enumerable: false });
  return f;
}

/** Any frame of any type, with a random id. */
export function anyFrame(pools: Pools): fc.Arbitrary<Frame> {
  return fc.tuple(uint32, frameOf(ALL_CASES, pools)).map(([id, f]) => printable({ ...f, id }));
}

/**
 * One of a list that may grow while the property runs (groups the fuzzer
 * created): read when a value is generated, which fast-check does run by run.
 */
function live(list: readonly string[]): fc.Arbitrary<string> {
  return fc.nat().map((i) => (list.length === 0 ? '' : list[i % list.length]!));
}

/** Mostly `good`, sometimes a hostile string instead. */
function mostly(good: fc.Arbitrary<string>, pools: Pools): fc.Arbitrary<string> {
  return fc.oneof({ weight: 6, arbitrary: good }, { weight: 1, arbitrary: hostileString(pools) });
}

/**
 * Client requests that make sense (real users, groups and conversations,
 * small seqs, real text) with a hostile value here and there, so the
 * handlers' success paths and the authorization checks behind them are
 * fuzzed too, not only their input validation.
 */
export function plausibleFrame(pools: Pools): fc.Arbitrary<Frame> {
  const user = mostly(live(pools.users), pools);
  const group = mostly(live(pools.groups), pools);
  const conv = mostly(fc.oneof(live(pools.conversations), live(pools.groups).map((g) => `g:${g}`)), pools);
  const seq = fc.oneof({ weight: 6, arbitrary: fc.bigInt(0n, 40n) }, { weight: 1, arbitrary: int64 });
  const limit = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 300 }) }, { weight: 1, arbitrary: uint32 });
  const text = mostly(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 80 }), pools);
  const clientMsgId = mostly(fc.uuid(), pools);
  // List entries never huge (see list()), but a list may have thousands of them.
  const small = smallPools(pools);
  const users = list(mostly(live(pools.users), small), pools);
  const convs = list(mostly(live(pools.conversations), small), pools);
  const groupOp = fc.oneof(
    fc.record({ name: text, memberIds: users }).map((value) => ({ case: 'create' as const, value })),
    fc.record({ groupId: group, userIds: users }).map((value) => ({ case: 'add' as const, value })),
    fc.record({ groupId: group, userIds: users }).map((value) => ({ case: 'remove' as const, value })),
    fc.record({ groupId: group }).map((value) => ({ case: 'leave' as const, value })),
    fc.record({ groupId: group }).map((value) => ({ case: 'info' as const, value })),
    { weight: 1, arbitrary: fc.record({ groupId: group }).map((value) => ({ case: 'dismiss' as const, value })) },
    fc.record({ groupId: group, userId: user, role: fc.oneof(fc.integer({ min: 0, max: 3 }), int32) }).map((value) => ({ case: 'setRole' as const, value })),
    fc.record({ groupId: group, userId: fc.oneof(user, fc.constant('')), muted: fc.boolean() }).map((value) => ({ case: 'mute' as const, value })),
  );
  const body = fc.oneof(
    { weight: 4, arbitrary: fc.record({ clientMsgId, toUser: user, text }).map((value) => ({ case: 'send' as const, value })) },
    { weight: 4, arbitrary: fc.record({ clientMsgId, conversationId: conv, text, fromUser: fc.oneof(fc.constant(''), user) }).map((value) => ({ case: 'send' as const, value })) },
    fc.record({ conversationId: conv, seq }).map((value) => ({ case: 'pushAck' as const, value })),
    fc.record({ cursors: list(fc.record({ conversationId: mostly(live(pools.conversations), small), seq }), pools), conversationIds: convs, limit })
      .map((value) => ({ case: 'sync' as const, value })),
    fc.record({ conversationId: conv, beforeSeq: seq, limit }).map((value) => ({ case: 'history' as const, value })),
    fc.record({ conversationId: conv, seq }).map((value) => ({ case: 'markRead' as const, value })),
    fc.record({ conversationId: conv, seq }).map((value) => ({ case: 'recall' as const, value })),
    fc.record({ conversationId: conv, seq, text }).map((value) => ({ case: 'edit' as const, value })),
    fc.record({ conversationId: conv, seq }).map((value) => ({ case: 'delete' as const, value })),
    fc.record({ conversationId: conv, seq }).map((value) => ({ case: 'hide' as const, value })),
    fc.record({ name: text, avatarUrl: fc.oneof(fc.constant(''), fc.constant('https://example.com/a.png'), text) }).map((value) => ({ case: 'setProfile' as const, value })),
    fc.record({ userIds: users }).map((value) => ({ case: 'profileQuery' as const, value })),
    fc.record({ query: text, conversationId: fc.oneof(fc.constant(''), conv), limit, cursor: fc.oneof(fc.constant(''), fc.constant('s1.20'), text) })
      .map((value) => ({ case: 'search' as const, value })),
    fc.record({ platform: fc.oneof(fc.constantFrom('apns', 'fcm', 'webhook'), text), token: fc.oneof(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 }), text), remove: fc.boolean() })
      .map((value) => ({ case: 'pushRegister' as const, value })),
    fc.record({ conversationId: conv, muted: fc.boolean() }).map((value) => ({ case: 'notifySettings' as const, value })),
    { weight: 1, arbitrary: fc.record({
      clientMsgId, toUser: user, text,
      content: fc.record({ attachments: list(fc.record({ fileId: mostly(fc.constantFrom('f-missing', 'AAAAAAAAAAAAAAAAAAAAAA'), small) }), pools) }),
    }).map((value) => ({ case: 'send' as const, value })) },
    fc.record({ conversationId: conv, seq, emoji: mostly(fc.constantFrom('👍', '❤️', '😂'), pools), remove: fc.boolean() })
      .map((value) => ({ case: 'react' as const, value })),
    fc.record({ userId: fc.oneof(user, fc.constant('')), blocked: fc.boolean() }).map((value) => ({ case: 'block' as const, value })),
    { weight: 2, arbitrary: fc.record({
      clientMsgId, toUser: user, text,
      content: fc.record({ type: fc.oneof(fc.constant(''), fc.constant('app.card'), text), mentions: users, replyToSeq: seq, mentionAll: fc.boolean() }),
    }).map((value) => ({ case: 'send' as const, value })) },
    fc.record({ conversationId: conv }).map((value) => ({ case: 'typing' as const, value })),
    fc.record({ userIds: users }).map((value) => ({ case: 'presenceQuery' as const, value })),
    fc.record({ userIds: users }).map((value) => ({ case: 'presenceSubscribe' as const, value })),
    { weight: 4, arbitrary: groupOp.map((op) => ({ case: 'group' as const, value: { op } })) },
  );
  return body.map((b) => printable(create(FrameSchema, { id: 0, body: b as FrameBodyInit })));
}

/** Cut `bytes` at the given points (taken modulo its length, in order, no empty pieces): how a stream may arrive. */
export function cutAt(bytes: Buffer, cuts: number[]): Buffer[] {
  if (bytes.length === 0) return [];
  const points = [...new Set(cuts.map((c) => c % bytes.length))].filter((p) => p > 0).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  out.push(bytes.subarray(from));
  return out;
}
