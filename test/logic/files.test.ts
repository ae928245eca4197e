// Files over real sockets: uploads checked by their bytes (type, size, quota,
// images decoded with a preview), sent in messages (the server's record of a
// file, whatever the send said), and downloads answered only to the uploader
// and to those who may read a message holding the file — refused to others,
// to a removed member for what was sent after its removal, and after a recall.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import {
  createClient, downloadFile, uploadFile, ErrorCode, HttpApiError,
  type ChatMessage, type LonglinkClient,
} from '../../src/client/index.js';
import type { TestServer } from '../helpers/server.js';
import { online, rejected, request, until, urlOf, waitPushed, withServer } from './support.js';

const T = { timeout: 120_000 };

async function png(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: '#3366cc' } }).png().toBuffer();
}

interface User {
  client: LonglinkClient;
  token: string;
  messages: ChatMessage[];
}

async function user(s: TestServer, id: string): Promise<User> {
  const token = await s.token(id, 'd1');
  const client = createClient({ url: urlOf(s, 'ws'), token, reconnect: false });
  const u: User = { client, token, messages: [] };
  client.on('message', (m) => u.messages.push(m));
  await client.connect();
  return u;
}

/** The API's error code of a refused call. */
async function apiCode(p: Promise<unknown>): Promise<{ status: number; code: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof HttpApiError, `an HttpApiError, got ${String(err)}`);
    return { status: err.status, code: err.apiCode };
  }
  assert.fail('expected a refusal, but it succeeded');
}

async function post(s: TestServer, body: Uint8Array | string, headers: Record<string, string>): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${s.httpUrl}/api/v1/files`, { method: 'POST', headers, body });
  return { status: res.status, json: await res.json() as Record<string, unknown> };
}

async function withUsers<U extends string>(ids: readonly U[], fn: (u: Record<U, User>, s: TestServer) => Promise<void>, overrides: Record<string, string> = {}): Promise<void> {
  await withServer(async (s) => {
    const users = {} as Record<U, User>;
    try {
      for (const id of ids) users[id] = await user(s, id);
      await fn(users, s);
    } finally {
      for (const u of Object.values<User>(users)) await u.client.close();
    }
  }, overrides);
}

describe('files', () => {
  test('an image is stored with its type from its bytes, its size and a preview; sent to bob, who downloads it, while carol cannot', T, async () => {
    await withUsers(['alice', 'bob', 'carol'], async ({ alice, bob, carol }, s) => {
      const bytes = await png(640, 480);
      const progress: number[] = [];
      const file = await alice.client.uploadFile(bytes, { name: 'trip.txt', onProgress: (sent) => progress.push(sent) });
      assert.equal(file.mime, 'image/png', 'the bytes say PNG, whatever the name');
      assert.equal(file.name, 'trip.txt');
      assert.equal(file.size, bytes.length);
      assert.deepEqual([file.width, file.height], [640, 480]);
      assert.equal(file.hasPreview, true);
      assert.equal(progress.at(-1), bytes.length, 'progress reaches the whole file');

      await alice.client.send({ to: 'bob', text: '', attachments: [file] });
      await until(() => bob.messages.length === 1, 10_000, () => 'bob gets the message');
      const [a] = bob.messages[0]!.content!.attachments!;
      assert.deepEqual(a, { fileId: file.fileId, name: 'trip.txt', mime: 'image/png', size: bytes.length, width: 640, height: 480, hasPreview: true });

      const got = await bob.client.downloadFile(file.fileId);
      assert.deepEqual(Buffer.from(got.bytes), bytes);
      assert.equal(got.mime, 'image/png');
      const preview = await bob.client.downloadFile(file.fileId, { preview: true });
      assert.equal(preview.mime, 'image/webp');
      const meta = await sharp(Buffer.from(preview.bytes)).metadata();
      assert.deepEqual([meta.width, meta.height], [320, 240], 'the preview fits 320×320, proportions kept');

      assert.deepEqual(await apiCode(carol.client.downloadFile(file.fileId)), { status: 404, code: 'FILE_NOT_FOUND' });
      assert.deepEqual(await apiCode(downloadFile(s.httpUrl, carol.token, 'no-such-file')), { status: 404, code: 'FILE_NOT_FOUND' }, 'the same as a file that is not there');
      await rejected(carol.client.send({ to: 'dave', text: 'steal', attachments: [file.fileId] }), ErrorCode.FILE_NOT_FOUND, 'carol sending alice\'s file');
      // bob may send on what he may read: then carol may read it too.
      await bob.client.send({ to: 'carol', text: 'look', attachments: [file.fileId] });
      assert.equal((await carol.client.downloadFile(file.fileId)).bytes.length, bytes.length);
    });
  });

  test('the message carries the server\'s record of a file, not what the send claimed', T, async () => {
    await withUsers(['alice'], async ({ alice }, s) => {
      const file = await alice.client.uploadFile(Buffer.from('just some notes\n'), { name: 'notes.txt' });
      assert.equal(file.mime, 'text/plain');
      const raw = await online(s, 'tcp', 'alice', 'raw');
      const bob = await online(s, 'tcp', 'bob');
      try {
        const reply = await request(raw, {
          case: 'send',
          value: { clientMsgId: 'lie-1', toUser: 'bob', text: '', content: { attachments: [{ fileId: file.fileId, name: 'evil.exe', mime: 'application/x-msdownload', size: 1n, width: 9, height: 9 }] } },
        });
        assert.equal(reply.body.case, 'sendAck');
        const [m] = await waitPushed(bob, 1);
        const a = m!.content!.attachments![0]!;
        assert.deepEqual([a.name, a.mime, a.size, a.width, a.height], ['notes.txt', 'text/plain', 16, 0, 0]);
      } finally {
        raw.close();
        bob.close();
      }
    });
  });

  test('a member removed from a group keeps the files sent before, not those after; a recall ends access', T, async () => {
    await withUsers(['alice', 'bob'], async ({ alice, bob }) => {
      const g = await alice.client.createGroup('team', ['bob']);
      const before = await alice.client.uploadFile(Buffer.from('before the removal'), { name: 'a.txt' });
      await alice.client.send({ groupId: g.groupId, text: 'first', attachments: [before] });
      await alice.client.removeMembers(g.groupId, ['bob']);
      const after = await alice.client.uploadFile(Buffer.from('after the removal'), { name: 'b.txt' });
      await alice.client.send({ groupId: g.groupId, text: 'second', attachments: [after] });
      assert.equal(new TextDecoder().decode((await bob.client.downloadFile(before.fileId)).bytes), 'before the removal');
      assert.deepEqual(await apiCode(bob.client.downloadFile(after.fileId)), { status: 404, code: 'FILE_NOT_FOUND' });

      const recalled = await alice.client.uploadFile(Buffer.from('oops'), { name: 'c.txt' });
      const sent = await alice.client.send({ to: 'bob', text: '', attachments: [recalled] });
      assert.equal((await bob.client.downloadFile(recalled.fileId)).bytes.length, 4);
      await alice.client.recall(sent.conversationId, sent.seq);
      assert.deepEqual(await apiCode(bob.client.downloadFile(recalled.fileId)), { status: 404, code: 'FILE_NOT_FOUND' }, 'recalled: bob no longer may');
      assert.equal((await alice.client.downloadFile(recalled.fileId)).bytes.length, 4, 'the uploader still may');
    });
  });

  test('uploads are refused with stable codes: no or bad token, too large (declared or streamed), empty, a type the bytes are not, an image that does not decode, over the quota', T, async () => {
    await withUsers(['alice'], async ({ alice }, s) => {
      assert.deepEqual((await post(s, 'x', {})).json.error, { code: 'UNAUTHORIZED', message: 'missing Authorization: Bearer <login token>' });
      assert.equal((await post(s, 'x', { authorization: 'Bearer nope' })).json.error !== undefined, true);
      assert.equal(((await post(s, 'x', { authorization: 'Bearer nope' })).json.error as { code: string }).code, 'TOKEN_INVALID');
      const auth = { authorization: `Bearer ${alice.token}` };
      const big = await post(s, new Uint8Array(4096), auth);
      assert.deepEqual([big.status, (big.json.error as { code: string }).code], [413, 'FILE_TOO_LARGE']);
      // Streamed without a length: stopped once past the limit.
      const stream = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < 8; i++) c.enqueue(new Uint8Array(1024));
          c.close();
        },
      });
      const res = await fetch(`${s.httpUrl}/api/v1/files`, { method: 'POST', headers: auth, body: stream, duplex: 'half' } as RequestInit);
      assert.equal(res.status, 413);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'FILE_TOO_LARGE');
      assert.equal(((await post(s, new Uint8Array(0), auth)).json.error as { code: string }).code, 'FILE_EMPTY');
      const lie = await post(s, 'plain text, not a picture', { ...auth, 'content-type': 'image/png' });
      assert.deepEqual([lie.status, (lie.json.error as { code: string }).code], [415, 'TYPE_MISMATCH']);
      const broken = (await png(20, 20)).subarray(0, 60);
      const bad = await post(s, broken, auth);
      assert.deepEqual([bad.status, (bad.json.error as { code: string }).code], [422, 'IMAGE_UNREADABLE']);
      // The quota counts what was stored (3 an hour here); the 4th is refused.
      for (let i = 0; i < 3; i++) assert.equal((await post(s, `file ${i}`, auth)).status, 201);
      const over = await post(s, 'one more', auth);
      assert.deepEqual([over.status, (over.json.error as { code: string }).code], [429, 'UPLOAD_QUOTA']);
      const other = await uploadFile(s.httpUrl, await s.token('bob'), Buffer.from('bob has his own quota'));
      assert.equal(other.mime, 'text/plain');
    }, { 'max-file-bytes': '2048', 'uploads-per-hour': '3' });
  });

  test('downloads need a token of a user, and are served so a browser never runs them', T, async () => {
    await withUsers(['alice'], async ({ alice }, s) => {
      const html = await alice.client.uploadFile(Buffer.from('<script>alert(1)</script>'), { name: 'x.html' });
      assert.equal(html.mime, 'text/plain', 'HTML is stored as text');
      const noAuth = await fetch(`${s.httpUrl}/api/v1/files/${html.fileId}`);
      assert.equal(noAuth.status, 401);
      const res = await fetch(`${s.httpUrl}/api/v1/files/${html.fileId}`, { headers: { authorization: `Bearer ${alice.token}` } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'text/plain');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename\*=UTF-8''x\.html$/);
      assert.match(res.headers.get('content-security-policy') ?? '', /sandbox/);
      const traversal = await fetch(`${s.httpUrl}/api/v1/files/..%2F..%2Flonglink.db`, { headers: { authorization: `Bearer ${alice.token}` } });
      assert.equal(traversal.status, 404);
    });
  });
});
