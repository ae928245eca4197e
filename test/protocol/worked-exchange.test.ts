// The worked exchange of docs/protocol.md ("Worked exchange (TCP, bytes)"),
// read from the doc itself: every annotated hex block is parsed, its
// annotations are checked against its bytes, its bytes decode (with the
// generated code) to the frame the doc describes and are what the project's
// encoder writes; then the client blocks are sent verbatim (the token aside)
// to a real server, over TCP and over WebSocket, and every server block is
// compared byte for byte with what the server answers, except the bytes the
// doc marks as varying.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { equals, type DescMessage } from '@bufbuild/protobuf';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import {
  FrameSchema, decodeFrame, encodeFrame, lengthPrefixed, makeFrame,
  type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import { ADMIN_KEY, startTestServer, type TestServer } from '../helpers/server.js';

const T = { timeout: 60_000 };

// ---- the doc ---------------------------------------------------------------

const DOC = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/** The text of the `## heading` section, up to the next `## `. */
function section(heading: string): string {
  const start = DOC.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs/protocol.md has a "## ${heading}" section`);
  const end = DOC.indexOf('\n## ', start + 1);
  return DOC.slice(start, end < 0 ? undefined : end);
}

const EXCHANGE = section('Worked exchange (TCP, bytes)');

type Party = 'alice' | 'bob' | 'server';

interface DocLine {
  /** Nesting: 3 spaces a level. */
  level: number;
  /** The bytes, or the token's place. */
  bytes: number[] | 'token';
  /** The annotation, without " (varies)". */
  comment: string;
  varies: boolean;
}

interface DocFrame {
  /** The `### ` step it is shown under. */
  step: string;
  from: Party;
  to: Party;
  lines: DocLine[];
}

/** Every hex block of the worked exchange, in order. */
function docFrames(): DocFrame[] {
  const out: DocFrame[] = [];
  const re = /^### (.+)$|^```text\n([\s\S]*?)^```$/gm;
  let step = '';
  for (let m = re.exec(EXCHANGE); m; m = re.exec(EXCHANGE)) {
    if (m[1] !== undefined) {
      step = m[1];
      continue;
    }
    const [title, ...rows] = m[2]!.trimEnd().split('\n');
    const t = /^(alice|bob|server) → (alice|bob|server)$/.exec(title ?? '');
    assert.ok(t, `a hex block's first line says who sends it to whom ("alice → server"): ${JSON.stringify(title)}`);
    const lines = rows.map((row) => {
      const l = /^( *)(<token>|[0-9a-f]{2}(?: [0-9a-f]{2})*)(?: {2,}(.*))?$/.exec(row);
      assert.ok(l, `${step}: a hex line is bytes, two spaces or more, then a comment: ${JSON.stringify(row)}`);
      assert.equal(l[1]!.length % 3, 0, `${step}: nesting is 3 spaces a level: ${JSON.stringify(row)}`);
      const comment = l[3] ?? '';
      return {
        level: l[1]!.length / 3,
        bytes: l[2] === '<token>' ? 'token' as const : l[2]!.split(' ').map((h) => parseInt(h, 16)),
        comment: comment.replace(/ \(varies\)$/, ''),
        varies: comment.endsWith('(varies)'),
      };
    });
    out.push({ step, from: t[1] as Party, to: t[2] as Party, lines });
  }
  return out;
}

/** How many bytes the doc's token stands for: what the length prefix leaves for it. */
function docTokenLength(f: DocFrame): number {
  const [prefix, ...rest] = f.lines;
  assert.ok(prefix && prefix.bytes !== 'token' && prefix.bytes.length === 4, `${f.step}: the first line is the 4-byte length prefix`);
  const declared = Buffer.from(prefix.bytes).readUInt32BE(0);
  return declared - rest.reduce((n, l) => n + (l.bytes === 'token' ? 0 : l.bytes.length), 0);
}

/** A block's bytes (length prefix included) with `token` in the token's place, and which bytes vary. */
function bytesOf(f: DocFrame, token?: Uint8Array): { bytes: Buffer; varies: boolean[] } {
  const bytes: number[] = [];
  const varies: boolean[] = [];
  for (const l of f.lines) {
    let b: number[];
    if (l.bytes === 'token') {
      assert.ok(token, `${f.step}: this block needs a token`);
      b = [...token];
    } else b = l.bytes;
    bytes.push(...b);
    varies.push(...b.map(() => l.varies));
  }
  return { bytes: Buffer.from(bytes), varies };
}

/** A stand-in token of the doc's length (for reading the doc's bytes alone). */
function dummyToken(f: DocFrame): Uint8Array {
  return Buffer.alloc(docTokenLength(f), 'x');
}

const FRAMES = docFrames();

// What the doc says each frame is (its prose and annotations), as the generated code builds it.
const UUID = '6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b';
const LIMITS = { pingIntervalMs: 25_000, nodeId: 'node-1a2b3c', maxFrameBytes: 65_536, maxTextBytes: 16_384, maxPayloadBytes: 16_384, maxFileBytes: 10_485_760n };
const MESSAGE = {
  conversationId: 'u:alice:bob', seq: 1n, serverMsgId: UUID, fromUser: 'alice', fromDevice: 'phone',
  clientMsgId: 'alice-phone-1', text: 'hi bob', sentAtMs: 1_767_225_600_500n,
};
const EXPECTED: { from: Party; to: Party; id: number; body: FrameBodyInit; token?: number }[] = [
  { from: 'alice', to: 'server', id: 1, body: { case: 'login', value: {} }, token: 233 },
  { from: 'server', to: 'alice', id: 1, body: { case: 'loginResult', value: { userId: 'alice', deviceId: 'phone', platform: 'ios', serverTimeMs: 1_767_225_600_250n, ...LIMITS } } },
  { from: 'alice', to: 'server', id: 2, body: { case: 'sync', value: { limit: 100 } } },
  { from: 'server', to: 'alice', id: 2, body: { case: 'syncResult', value: {} } },
  { from: 'bob', to: 'server', id: 1, body: { case: 'login', value: {} }, token: 237 },
  { from: 'server', to: 'bob', id: 1, body: { case: 'loginResult', value: { userId: 'bob', deviceId: 'laptop', platform: 'desktop', serverTimeMs: 1_767_225_600_300n, ...LIMITS } } },
  { from: 'alice', to: 'server', id: 3, body: { case: 'send', value: { clientMsgId: 'alice-phone-1', toUser: 'bob', text: 'hi bob' } } },
  {
    from: 'server', to: 'alice', id: 3,
    body: { case: 'sendAck', value: { clientMsgId: 'alice-phone-1', serverMsgId: UUID, conversationId: 'u:alice:bob', seq: 1n, sentAtMs: 1_767_225_600_500n } },
  },
  { from: 'server', to: 'bob', id: 0, body: { case: 'push', value: { messages: [MESSAGE] } } },
  { from: 'bob', to: 'server', id: 3, body: { case: 'sync', value: { conversationIds: ['u:alice:bob'], limit: 100 } } },
  { from: 'server', to: 'bob', id: 3, body: { case: 'syncResult', value: { messages: [MESSAGE], cursors: [{ conversationId: 'u:alice:bob', seq: 1n }] } } },
  { from: 'bob', to: 'server', id: 4, body: { case: 'pushAck', value: { conversationId: 'u:alice:bob', seq: 1n } } },
];

/** The doc's blocks by what they are. */
const B = {
  aliceLogin: 0, aliceLoginResult: 1, sync: 2, emptySyncResult: 3, bobLogin: 4, bobLoginResult: 5,
  send: 6, sendAck: 7, push: 8, bobSync: 9, bobSyncResult: 10, pushAck: 11,
} as const;

// ---- checking the annotations ------------------------------------------------

/** Reads one line's bytes as the annotation says they are, in the message `desc`. */
function checkLine(f: DocFrame, i: number, desc: DescMessage, tokenLength: number): DescMessage | undefined {
  const l = f.lines[i]!;
  const where = `${f.step}, line ${JSON.stringify(l.comment)}`;
  assert.ok(l.bytes !== 'token', `${where}: the token stands alone, under its field`);
  const r = new BinaryReader(Uint8Array.from(l.bytes));
  const [no, wt] = r.tag();
  const named = /^(\w+) \((\d+)\)(.*)$/.exec(l.comment);
  assert.ok(named, `${where}: a field line names the field and its number`);
  const field = desc.fields.find((x) => x.name === named[1]);
  assert.ok(field, `${where}: ${desc.name} has a field ${named[1]}`);
  assert.equal(field.number, Number(named[2]), `${where}: ${desc.name}.${field.name} is field ${field.number}`);
  assert.equal(no, field.number, `${where}: the tag names field ${field.number}`);
  const rest = named[3]!;
  // The bytes nested under this line (deeper levels, until the next line at this level or above).
  const nested = (): number => {
    let n = 0;
    for (let j = i + 1; j < f.lines.length && f.lines[j]!.level > l.level; j++) {
      const b = f.lines[j]!.bytes;
      n += b === 'token' ? tokenLength : b.length;
    }
    return n;
  };
  let m: RegExpExecArray | null;
  if ((m = /^: (\w+), (\d+) bytes?$/.exec(rest))) {
    // An embedded message: tag, length; its fields follow, one level deeper.
    assert.equal(wt, WireType.LengthDelimited, where);
    const sub = field.fieldKind === 'message' ? field.message : field.fieldKind === 'list' && field.listKind === 'message' ? field.message : undefined;
    assert.ok(sub, `${where}: ${field.name} holds a message`);
    assert.equal(sub.name, m[1], `${where}: ${field.name} is a ${sub.name}`);
    assert.equal(r.uint32(), Number(m[2]), `${where}: the length is written as said`);
    assert.equal(r.pos, r.len, `${where}: nothing else on the line`);
    assert.equal(nested(), Number(m[2]), `${where}: the lines under it hold ${m[2]} bytes`);
    return sub;
  }
  if ((m = /^: (\d+) bytes$/.exec(rest))) {
    // A string too long for one line: the lines under it hold its bytes (or the token).
    assert.equal(wt, WireType.LengthDelimited, where);
    assert.equal(r.uint32(), Number(m[1]), `${where}: the length is written as said`);
    assert.equal(r.pos, r.len, `${where}: nothing else on the line`);
    assert.equal(nested(), Number(m[1]), `${where}: the lines under it hold ${m[1]} bytes`);
    let text = '';
    let raw: number[] = [];
    for (let j = i + 1; j < f.lines.length && f.lines[j]!.level > l.level; j++) {
      const c = f.lines[j]!;
      if (c.bytes === 'token') {
        assert.equal(field.name, 'token', `${where}: only a token is elided`);
        assert.match(c.comment, new RegExp(`^the token's ${tokenLength} bytes`), `${where}: the token's line says its length`);
        continue;
      }
      const chunk = /^"(.*)"$/.exec(c.comment);
      assert.ok(chunk, `${where}: a string's line shows its text in quotes`);
      text += JSON.parse(`"${chunk[1]}"`) as string;
      raw = raw.concat(c.bytes);
    }
    assert.equal(Buffer.from(raw).toString('utf8'), text, `${where}: the bytes are the text shown`);
    return undefined;
  }
  m = /^ = (.+)$/.exec(rest);
  assert.ok(m, `${where}: a value line says "= value"`);
  const shown = m[1]!;
  if (wt === WireType.Varint) {
    const v = r.uint64();
    assert.equal(v.toString(), shown, `${where}: the varint is ${shown}`);
  } else {
    assert.equal(wt, WireType.LengthDelimited, where);
    assert.equal(new TextDecoder().decode(r.bytes()), JSON.parse(shown) as string, `${where}: the string is ${shown}`);
  }
  assert.equal(r.pos, r.len, `${where}: nothing else on the line`);
  return undefined;
}

function checkAnnotations(f: DocFrame): void {
  const tokenLength = docTokenLength(f);
  const { bytes } = bytesOf(f, dummyToken(f));
  assert.match(f.lines[0]!.comment, new RegExp(`^length prefix: ${bytes.length - 4} bytes follow`), `${f.step}: the prefix's comment says its value`);
  const stack: DescMessage[] = [FrameSchema];
  for (let i = 1; i < f.lines.length; i++) {
    const l = f.lines[i]!;
    if (l.bytes === 'token') continue; // checked with its field
    const desc = stack[l.level];
    if (!desc) continue; // a line of a string (checked with its field)
    stack.length = l.level + 1;
    const sub = checkLine(f, i, desc, tokenLength);
    if (sub) stack[l.level + 1] = sub;
  }
}

// ---- a connection that keeps the server's bytes as they came ------------------

class Wire {
  /** Each frame as received: length prefix and payload (WebSocket: the prefix its length would have). */
  private readonly frames: Buffer[] = [];
  private read = 0;
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(private readonly socket: net.Socket | undefined, private readonly ws: WebSocket | undefined) {}

  static async open(s: TestServer, transport: 'tcp' | 'ws'): Promise<Wire> {
    if (transport === 'tcp') {
      const u = new URL(s.tcpUrl);
      const socket = net.connect({ host: u.hostname, port: Number(u.port) });
      const wire = new Wire(socket, undefined);
      let pending = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
          const n = 4 + pending.readUInt32BE(0);
          wire.got(Buffer.from(pending.subarray(0, n)));
          pending = pending.subarray(n);
        }
      });
      socket.on('close', () => wire.gone());
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      return wire;
    }
    const ws = new WebSocket(s.wsUrl, { perMessageDeflate: false });
    const wire = new Wire(undefined, ws);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      assert.ok(isBinary, 'the server sends binary messages');
      wire.got(lengthPrefixed(data));
    });
    ws.on('close', () => wire.gone());
    await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
    return wire;
  }

  private got(frame: Buffer): void {
    this.frames.push(frame);
    this.wake();
  }

  private gone(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** TCP: the bytes as they are; WebSocket: without the length prefix, as one binary message. */
  write(bytes: Buffer): void {
    if (this.socket) this.socket.write(bytes);
    else {
      assert.equal(bytes.readUInt32BE(0), bytes.length - 4);
      this.ws!.send(bytes.subarray(4), { binary: true });
    }
  }

  /** The next frame the server sent on this connection. */
  async next(timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.read >= this.frames.length) {
      if (this.closed) assert.fail('the connection closed before the frame the doc shows');
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.frames[this.read++]!;
  }

  /** Frames received and not yet read. */
  get unread(): Buffer[] {
    return this.frames.slice(this.read);
  }

  async close(): Promise<void> {
    if (this.socket) this.socket.destroy();
    else this.ws!.terminate();
    while (!this.closed) await new Promise((r) => setTimeout(r, 10));
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex').replace(/(..)(?!$)/g, '$1 ');

/** The server's frame is the doc's, byte for byte, but where the doc says the bytes vary. */
function assertAsDoc(actual: Buffer, f: DocFrame): Frame {
  const { bytes, varies } = bytesOf(f);
  const what = `${f.step} (${f.from} → ${f.to})`;
  const decoded = decodeFrame(actual.subarray(4));
  const detail = `\n  doc:    ${hex(bytes)}\n  server: ${hex(actual)}\n  (${JSON.stringify(decoded.body.case)})`;
  assert.equal(actual.length, bytes.length, `${what}: the server's frame is ${actual.length} bytes, the doc's ${bytes.length}${detail}`);
  for (let i = 0; i < bytes.length; i++) {
    if (!varies[i] && actual[i] !== bytes[i]) assert.fail(`${what}: byte ${i} differs${detail}`);
  }
  return decoded;
}

/** The doc's client frame, to send: verbatim, the token in its place (the lengths re-encoded only if it is not the doc's length). */
function clientBytes(f: DocFrame, token?: string): Buffer {
  if (token === undefined || Buffer.byteLength(token) === docTokenLength(f)) {
    return bytesOf(f, token === undefined ? undefined : Buffer.from(token)).bytes;
  }
  const frame = decodeFrame(bytesOf(f, dummyToken(f)).bytes.subarray(4));
  assert.ok(frame.body.case === 'login');
  frame.body.value.token = token;
  return lengthPrefixed(encodeFrame(frame));
}

/** A token from POST /api/v1/tokens, for the body the doc's step shows. */
async function issue(s: TestServer, json: string): Promise<string> {
  const res = await fetch(`${s.httpUrl}/api/v1/tokens`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: json,
  });
  assert.equal(res.status, 200);
  return ((await res.json()) as { token: string }).token;
}

/** The token request bodies the doc names in its steps, alice's then bob's. */
function tokenBodies(): { alice: string; bob: string } {
  const find = (user: string) => {
    const m = new RegExp(`\`(\\{"user_id": "${user}"[^\`]*\\})\``).exec(EXCHANGE);
    assert.ok(m, `the worked exchange says how ${user}'s token was asked for`);
    return m[1]!;
  };
  return { alice: find('alice'), bob: find('bob') };
}

// ---- the tests ----------------------------------------------------------------

describe('the worked exchange of docs/protocol.md', () => {
  test('shows the frames of the session it tells, in order', () => {
    assert.deepEqual(FRAMES.map((f) => `${f.from} → ${f.to}`), EXPECTED.map((e) => `${e.from} → ${e.to}`));
  });

  test('every annotation says what its bytes are (field names and numbers, lengths, values)', () => {
    for (const f of FRAMES) checkAnnotations(f);
  });

  test('every block decodes, with the generated code, to the frame the doc describes, as the encoder writes it', () => {
    FRAMES.forEach((f, i) => {
      const e = EXPECTED[i]!;
      const { bytes } = bytesOf(f, e.token === undefined ? undefined : Buffer.alloc(e.token, 'x'));
      assert.equal(bytes.readUInt32BE(0), bytes.length - 4, `${f.step}: the length prefix counts the rest`);
      const payload = bytes.subarray(4);
      const decoded = decodeFrame(payload);
      const body = e.token === undefined ? e.body : { case: 'login' as const, value: { token: 'x'.repeat(e.token) } };
      const want = makeFrame(e.id, body);
      assert.ok(equals(FrameSchema, decoded, want), `${f.step}: decodes to ${JSON.stringify(want.body, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))}`);
      assert.equal(hex(encodeFrame(want)), hex(payload), `${f.step}: the encoder writes exactly these bytes`);
    });
  });

  test('its claims about sizes hold: a login frame is T + 8 bytes; a ms time is a 6-byte varint from 1971 to 2109', () => {
    for (const t of [128, 233, 1000, 8184]) {
      const frame = encodeFrame(makeFrame(1, { case: 'login', value: { token: 'x'.repeat(t) } }));
      assert.equal(frame.length, t + 8, `a ${t}-byte token`);
      assert.deepEqual([...frame.subarray(0, 3)], [0x08, 0x01, 0x52]);
    }
    for (const ms of [Date.UTC(1972, 0, 1), Date.now(), Date.UTC(2109, 0, 1)]) {
      const frame = encodeFrame(makeFrame(0, { case: 'pong', value: { serverTimeMs: BigInt(ms) } }));
      assert.equal(frame.length, 2 + 1 + 6, `${new Date(ms).toISOString()}: tag, length, tag, 6 bytes`);
    }
    // The doc's sync request and empty result, which bob sends and gets too.
    assert.equal(bytesOf(FRAMES[B.sync]!).bytes.length, 11);
    assert.equal(bytesOf(FRAMES[B.emptySyncResult]!).bytes.length, 9);
  });

  test('the tokens the doc asked for are as long as it says (233 and 237 bytes)', T, async () => {
    const s = await startTestServer();
    try {
      const bodies = tokenBodies();
      assert.equal((await issue(s, bodies.alice)).length, docTokenLength(FRAMES[B.aliceLogin]!));
      assert.equal((await issue(s, bodies.bob)).length, docTokenLength(FRAMES[B.bobLogin]!));
    } finally {
      await s.close();
    }
  });

  for (const transport of ['tcp', 'ws'] as const) {
    test(`a server answers the doc's client bytes with the doc's server bytes (${transport})`, T, async () => {
      const s = await startTestServer({ 'node-id': 'node-1a2b3c' });
      const wires: Wire[] = [];
      try {
        const bodies = tokenBodies();
        const t0 = Date.now();
        const F = (k: keyof typeof B) => FRAMES[B[k]]!;

        // 1-2. alice logs in and syncs.
        const alice = await Wire.open(s, transport);
        wires.push(alice);
        alice.write(clientBytes(F('aliceLogin'), await issue(s, bodies.alice)));
        const aliceLogin = assertAsDoc(await alice.next(), F('aliceLoginResult'));
        alice.write(clientBytes(F('sync')));
        assertAsDoc(await alice.next(), F('emptySyncResult'));

        // 3. bob logs in and syncs with alice's bytes.
        const bob = await Wire.open(s, transport);
        wires.push(bob);
        bob.write(clientBytes(F('bobLogin'), await issue(s, bodies.bob)));
        const bobLogin = assertAsDoc(await bob.next(), F('bobLoginResult'));
        bob.write(clientBytes(F('sync')));
        assertAsDoc(await bob.next(), F('emptySyncResult'));

        // 4. alice sends; 5. bob gets the push.
        alice.write(clientBytes(F('send')));
        const ack = assertAsDoc(await alice.next(), F('sendAck'));
        const push = assertAsDoc(await bob.next(), F('push'));

        // 6. bob syncs the conversation; 7. he acks, and nothing answers.
        bob.write(clientBytes(F('bobSync')));
        const page = assertAsDoc(await bob.next(), F('bobSyncResult'));
        bob.write(clientBytes(F('pushAck')));
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(bob.unread.map(hex), [], 'no reply to a PushAck');
        // It moved bob's delivered mark past alice's message: alice hears of it, as the doc's last paragraph says.
        const delivery = decodeFrame((await alice.next()).subarray(4));
        assert.equal(delivery.id, 0);
        assert.ok(delivery.body.case === 'event' && delivery.body.value.body.case === 'delivery', `an Event.delivery, got ${delivery.body.case}`);
        assert.deepEqual({ ...delivery.body.value.body.value }, { $typeName: 'longlink.v1.Delivery', conversationId: 'u:alice:bob', userId: 'bob', seq: 1n });

        // What varies is what the doc says: times of this run, one server_msg_id throughout.
        const t1 = Date.now();
        assert.ok(aliceLogin.body.case === 'loginResult' && bobLogin.body.case === 'loginResult');
        assert.ok(ack.body.case === 'sendAck' && push.body.case === 'push' && page.body.case === 'syncResult');
        for (const ms of [aliceLogin.body.value.serverTimeMs, bobLogin.body.value.serverTimeMs, ack.body.value.sentAtMs]) {
          assert.ok(ms >= BigInt(t0) && ms <= BigInt(t1), `a time of this run: ${ms}`);
        }
        assert.match(ack.body.value.serverMsgId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        for (const m of [push.body.value.messages[0]!, page.body.value.messages[0]!]) {
          assert.equal(m.serverMsgId, ack.body.value.serverMsgId, 'the push and the sync carry the acked server_msg_id');
          assert.equal(m.sentAtMs, ack.body.value.sentAtMs, 'and its sent_at_ms');
        }

        // The ack moved bob's delivered cursor: his next sync, on this connection or a new one, is empty.
        bob.write(clientBytes(F('sync')));
        assertAsDoc(await bob.next(), F('emptySyncResult'));
        await bob.close();
        const again = await Wire.open(s, transport);
        wires.push(again);
        again.write(clientBytes(F('bobLogin'), await issue(s, bodies.bob)));
        assertAsDoc(await again.next(), F('bobLoginResult'));
        again.write(clientBytes(F('sync')));
        assertAsDoc(await again.next(), F('emptySyncResult'));
      } finally {
        for (const w of wires) await w.close();
        await s.close();
      }
    });
  }
});
