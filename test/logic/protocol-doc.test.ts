// Claims of docs/protocol.md that a client written only from the doc relies
// on, checked against the server: sync cursors cover every conversation the
// request names (through `cursors` too), client_msg_id is counted in
// characters, a malformed conversation id is told apart from one that is not
// yours, and the HTTP API refuses an empty text with TEXT_EMPTY like the wire.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/protocol/index.js';
import { ADMIN_KEY } from '../helpers/server.js';
import { expectError, online, sendOk, syncOnce, withServer } from './support.js';

const T = { timeout: 60_000 };

describe('the protocol doc and the server agree', () => {
  test('SyncResult.cursors covers a conversation named only through cursors, with nothing new in it', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const bob = await online(s, 'ws', 'bob');
      await sendOk(alice, { toUser: 'bob', text: 'one' });
      await sendOk(alice, { toUser: 'carol', text: 'two' });
      // bob has read u:alice:bob up to 1: nothing new; it is named only in cursors.
      const page = await syncOnce(bob, new Map([['u:alice:bob', 1]]));
      assert.deepEqual(page.messages, []);
      assert.equal(page.cursors.get('u:alice:bob'), 1, `cursors: ${JSON.stringify([...page.cursors])}`);
      alice.close();
      bob.close();
    });
  });

  test('client_msg_id is 1-128 characters, counted as characters (an emoji is one)', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      const emoji = '😀'; // two UTF-16 units
      const ack = await sendOk(alice, { toUser: 'bob', clientMsgId: emoji.repeat(128), text: '128 characters of id' });
      assert.equal(ack.clientMsgId, emoji.repeat(128));
      await expectError(alice, { case: 'send', value: { toUser: 'bob', clientMsgId: emoji.repeat(129), text: 'too long' } }, ErrorCode.BAD_REQUEST);
      alice.close();
    });
  });

  test('a conversation id spelled wrong is BAD_REQUEST saying how ids are spelled; one well formed but not yours, FORBIDDEN', T, async () => {
    await withServer(async (s) => {
      const alice = await online(s, 'tcp', 'alice');
      await sendOk(alice, { toUser: 'bob', text: 'hi' });
      const unsorted = await expectError(alice, { case: 'history', value: { conversationId: 'u:bob:alice', beforeSeq: 0n, limit: 0 } }, ErrorCode.BAD_REQUEST);
      assert.match(unsorted.message, /sorted \(u:alice:bob\)/);
      for (const id of ['alice', 'bob:alice', 'team']) {
        const e = await expectError(alice, { case: 'markRead', value: { conversationId: id, seq: 0n } }, ErrorCode.BAD_REQUEST);
        assert.match(e.message, /is not a conversation id: u:\{a\}:\{b\}/);
      }
      await expectError(alice, { case: 'history', value: { conversationId: 'u:bob:carol', beforeSeq: 0n, limit: 0 } }, ErrorCode.FORBIDDEN);
      alice.close();
    });
  });

  test('POST /api/v1/messages with an empty text: 400 TEXT_EMPTY, as on the wire', T, async () => {
    await withServer(async (s) => {
      const res = await fetch(`${s.httpUrl}/api/v1/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ to: 'bob', text: '' }),
      });
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'TEXT_EMPTY');
    });
  });
});
