// Attacks 4-8 of the security review, embedded mode, over real sockets and
// HTTP, asserting what users see:
//
//   4. targeted login lockout: 100 forged tokens (HS256, wrong secret,
//      sub=victim) from 127.0.0.1, then the victim's valid token still logs in;
//   5. a resend of an old client_msg_id in a group after a new member joined:
//      the resender gets SendAck duplicate=true, the new member no push of the
//      old message;
//   6. group spam: with the default group-add policy ('contacts': a user may
//      add someone only if that someone has written to them in a conversation
//      both share) an attacker who never talked with the victim cannot put the
//      victim in a group; with 'anyone', a per-user groups cap
//      ('max-groups-per-user') stops the flood with a coded error;
//   7. presence 'contacts': sharing a group with the victim, or writing to
//      the victim, does not make the attacker a contact; the victim writing to
//      the attacker does;
//   8. dev login off when a token secret is configured (no 'dev-login' flag);
//      a foreign Host header on the HTTP API and a foreign Origin on the
//      WebSocket upgrade are refused (DNS rebinding / cross-site WebSocket).
//
// Options being implemented with these fixes: 'group-add-policy'
// (anyone|contacts|nobody), 'max-groups-per-user', 'presence-visibility',
// 'dev-login'. Refusals are checked as "an Error frame with a non-zero code"
// (FORBIDDEN, NOT_CONTACT, TOO_MANY_GROUPS… any), not one particular code.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import {
  ErrorCode, decodeFrame, directConversationId, encodeFrame, errorName, makeFrame, type Frame, type FrameBodyInit,
} from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { ADMIN_KEY, TOKEN_SECRET, gatewayUrl, startTestServer, type TestServer } from '../helpers/server.js';
import { forgeToken, sleep } from './attacks.js';

const T = { timeout: 60_000 };

/**
 * startTestServer's own defaults set 'group-add-policy' to 'anyone' (most
 * tests make groups of strangers): an override of `undefined` takes that
 * entry out again, so the server runs with its real default.
 */
const SERVER_DEFAULT = undefined as unknown as string;

/** A server, its clients closed and the server stopped afterwards whatever happens. */
async function withServer(overrides: Record<string, string>, fn: (s: TestServer, login: (user: string, kind?: 'tcp' | 'ws', device?: string) => Promise<RawClient>) => Promise<void>): Promise<void> {
  const s = await startTestServer(overrides);
  const clients: RawClient[] = [];
  const login = async (user: string, kind: 'tcp' | 'ws' = 'tcp', device = 'd1') => {
    const c = await RawClient.connect(gatewayUrl(s, kind));
    clients.push(c);
    await c.login(await s.token(user, device));
    return c;
  };
  try {
    await fn(s, login);
  } finally {
    for (const c of clients) c.close();
    await s.close();
  }
}

/** Send a request and wait for its reply (matched by frame id). */
async function request(c: RawClient, body: FrameBodyInit, timeoutMs = 5000): Promise<Frame> {
  const from = c.frames.length;
  const id = c.send(body);
  return c.next((f) => f.id === id, timeoutMs, from);
}

function describeReply(f: Frame): string {
  if (f.body.case === 'error') return `error ${errorName(f.body.value.code)} (${f.body.value.message})`;
  return f.body.case ?? 'empty';
}

/** The reply must be an Error with a non-zero code (any code) that keeps the connection; returns the code. */
function assertRefused(reply: Frame, what: string): ErrorCode {
  assert.equal(reply.body.case, 'error', `${what}: expected a coded refusal, got ${describeReply(reply)}`);
  if (reply.body.case !== 'error') throw new Error('unreachable');
  assert.notEqual(reply.body.value.code, ErrorCode.ERROR_CODE_UNSPECIFIED, `${what}: an error without a code`);
  assert.equal(reply.body.value.fatal, false, `${what}: a refusal must not close the connection`);
  return reply.body.value.code;
}

function assertOk(reply: Frame, kind: string, what: string): void {
  assert.equal(reply.body.case, kind, `${what}: expected ${kind}, got ${describeReply(reply)}`);
}

async function sendOk(c: RawClient, value: { toUser?: string; conversationId?: string; text?: string; clientMsgId: string }, what: string): Promise<Frame> {
  const reply = await request(c, { case: 'send', value: { text: `text of ${value.clientMsgId}`, ...value } });
  assertOk(reply, 'sendAck', what);
  return reply;
}

function createGroup(c: RawClient, name: string, memberIds: string[]): Promise<Frame> {
  return request(c, { case: 'group', value: { op: { case: 'create', value: { name, memberIds } } } });
}

function addMembers(c: RawClient, groupId: string, userIds: string[]): Promise<Frame> {
  return request(c, { case: 'group', value: { op: { case: 'add', value: { groupId, userIds } } } });
}

function groupIdOfReply(reply: Frame): string {
  assert.ok(reply.body.case === 'groupResult' && reply.body.value.group, `expected a GroupResult, got ${describeReply(reply)}`);
  return reply.body.case === 'groupResult' ? reply.body.value.group!.groupId : '';
}

/** Every conversation id on the user's list (all pages, whatever the page size). */
async function conversationIds(c: RawClient): Promise<string[]> {
  const reply = await request(c, { case: 'conversations', value: {} });
  assertOk(reply, 'conversationsResult', 'conversation list');
  const out: string[] = [];
  if (reply.body.case === 'conversationsResult') for (const s of reply.body.value.conversations) out.push(s.conversationId);
  return out;
}

/** Pushed messages a client received (every frame so far). */
function pushedMessages(c: RawClient) {
  return c.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages : []));
}

// ---- 4 ----------------------------------------------------------------------

describe('attack 4: targeted login lockout with forged tokens', () => {
  test('100 forged tokens claiming the victim, from 127.0.0.1, then the victim\'s valid token logs in (TCP and WebSocket)', T, async () => {
    await withServer({}, async (s) => {
      const wrongSecret = 'not-the-server-secret-0123456789abcdef';
      assert.notEqual(wrongSecret, TOKEN_SECRET);
      const codes = new Map<string, number>();
      let accepted = 0;
      for (let wave = 0; wave < 10; wave++) {
        await Promise.all(Array.from({ length: 10 }, async (_, i) => {
          const kind = (wave * 10 + i) % 2 === 0 ? 'tcp' : 'ws';
          const c = await RawClient.connect(gatewayUrl(s, kind));
          try {
            const id = c.send({ case: 'login', value: { token: await forgeToken('victim', wrongSecret, `d${i}`) } });
            const reply = await c.next((f) => f.id === id || f.body.case === 'error' || f.body.case === 'kick', 5000).catch(() => undefined);
            if (reply?.body.case === 'loginResult') accepted++;
            const key = reply?.body.case === 'error' ? errorName(reply.body.value.code) : reply ? reply.body.case ?? 'empty' : c.closed ? 'closed' : 'nothing';
            codes.set(key, (codes.get(key) ?? 0) + 1);
          } finally {
            c.close();
          }
        }));
      }
      const summary = [...codes].map(([k, n]) => `${k}×${n}`).join(', ');
      console.log(`[4] 100 forged logins for the victim: ${summary}`);
      assert.equal(accepted, 0, `a forged token logged in: ${summary}`);
      for (const kind of ['tcp', 'ws'] as const) {
        const c = await RawClient.connect(gatewayUrl(s, kind));
        try {
          const id = c.send({ case: 'login', value: { token: await s.token('victim', `real-${kind}`) } });
          const reply = await c.next((f) => f.id === id, 5000);
          console.log(`[4] then the victim's valid token over ${kind}: ${describeReply(reply)}`);
          assert.equal(reply.body.case, 'loginResult', `the victim's valid token over ${kind} after 100 forged ones: ${describeReply(reply)}`);
          await sendOk(c, { toUser: 'friend', clientMsgId: `after-lockout-${kind}` }, 'the victim sends once logged in');
        } finally {
          c.close();
        }
      }
    });
  });
});

// ---- 5 ----------------------------------------------------------------------

describe('attack 5: resending an old client_msg_id after a new member joined', () => {
  test('the resender gets SendAck duplicate=true; the new member gets no push of the old message', T, async () => {
    await withServer({}, async (_s, login) => {
      const alice = await login('alice', 'tcp');
      const bob = await login('bob', 'ws');
      const carol = await login('carol', 'tcp');
      // bob and carol have written to alice, so she may add them whatever the group-add policy.
      await sendOk(bob, { toUser: 'alice', clientMsgId: 'bob-hi' }, 'bob → alice');
      await sendOk(carol, { toUser: 'alice', clientMsgId: 'carol-hi' }, 'carol → alice');
      const groupId = groupIdOfReply(await createGroup(alice, 'old secrets', ['bob']));
      const conversationId = `g:${groupId}`;
      const first = await sendOk(alice, { conversationId, clientMsgId: 'old-1', text: 'said before carol joined' }, 'the old message');
      assert.ok(first.body.case === 'sendAck');
      const oldSeq = first.body.value.seq;

      assertOk(await addMembers(alice, groupId, ['carol']), 'groupResult', 'alice adds carol');
      // carol sees her own arrival (the MEMBERS_ADDED event is pushed to her).
      await carol.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.conversationId === conversationId), 5000);
      const mark = carol.frames.length;

      // The resend: same client_msg_id, same text.
      const again = await request(alice, { case: 'send', value: { conversationId, clientMsgId: 'old-1', text: 'said before carol joined' } });
      assertOk(again, 'sendAck', 'the resend');
      assert.ok(again.body.case === 'sendAck' && first.body.case === 'sendAck');
      assert.equal(again.body.value.duplicate, true, 'the resend is acked as a duplicate');
      assert.equal(again.body.value.seq, oldSeq, 'the duplicate ack names the original seq');
      assert.equal(again.body.value.serverMsgId, first.body.value.serverMsgId);

      // A new message after it, as a barrier: once carol has it, anything the resend caused has arrived too.
      await sendOk(alice, { conversationId, clientMsgId: 'new-1', text: 'said after carol joined' }, 'a new message');
      await carol.next((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.clientMsgId === 'new-1'), 5000, mark);
      await sleep(200);
      const leaked = pushedMessages(carol).filter((m) => m.conversationId === conversationId && (m.clientMsgId === 'old-1' || m.seq === oldSeq));
      assert.deepEqual(leaked.map((m) => `${m.clientMsgId}@${m.seq}: ${m.text}`), [], 'carol, added after it, must never be pushed the old message');
    });
  });
});

// ---- 6 ----------------------------------------------------------------------

describe('attack 6: group spam', () => {
  test('default policy: a stranger cannot put the victim in a group (create or add); the victim\'s list shows no group; a contact can be added', T, async () => {
    await withServer({ 'group-add-policy': SERVER_DEFAULT }, async (_s, login) => {
      const spammer = await login('spammer', 'tcp');
      const victim = await login('victim', 'ws');
      const friend = await login('friend', 'tcp');
      const victimMark = victim.frames.length;

      const codes: string[] = [];
      codes.push(errorName(assertRefused(await createGroup(spammer, 'buy now', ['victim']), 'a stranger creates a group with the victim')));
      // Writing to the victim first does not help: the victim has not written back.
      await sendOk(spammer, { toUser: 'victim', clientMsgId: 'spam-dm' }, 'a 1:1 to anyone is allowed');
      codes.push(errorName(assertRefused(await createGroup(spammer, 'buy now 2', ['victim']), 'after writing to the victim')));
      codes.push(errorName(assertRefused(await createGroup(spammer, 'buy now 3', ['friend', 'victim']), 'the victim among others')));

      // A group of the spammer's own, then adding the victim to it: refused too.
      await sendOk(friend, { toUser: 'spammer', clientMsgId: 'friend-hi' }, 'friend → spammer');
      const groupId = groupIdOfReply(await createGroup(spammer, 'friends', ['friend']));
      codes.push(errorName(assertRefused(await addMembers(spammer, groupId, ['victim']), 'adding the victim to an existing group')));
      console.log(`[6] default policy refusals: ${codes.join(', ')}`);

      // What the victim sees: the 1:1 only, no group, no group event pushed.
      await sleep(200);
      const list = await conversationIds(victim);
      assert.deepEqual(list.filter((id) => id.startsWith('g:')), [], 'no group on the victim\'s conversation list');
      assert.deepEqual(list, [directConversationId('spammer', 'victim')], 'the victim\'s list: the 1:1 only');
      const groupPushes = victim.frames.slice(victimMark).flatMap((f) => (f.body.case === 'push' ? f.body.value.messages : []))
        .filter((m) => m.conversationId.startsWith('g:'));
      assert.deepEqual(groupPushes.map((m) => m.conversationId), [], 'the victim was pushed nothing of a group');

      // Once the victim writes to the spammer, the spammer may add the victim (the policy is 'contacts', not 'nobody').
      await sendOk(victim, { toUser: 'spammer', clientMsgId: 'victim-reply' }, 'victim → spammer');
      assertOk(await addMembers(spammer, groupId, ['victim']), 'groupResult', 'adding a user who wrote to you');
    });
  });

  test('\'anyone\' with max-groups-per-user 20: the 21st group with the victim is refused with a code, by any creator', T, async () => {
    const CAP = 20;
    await withServer({ 'group-add-policy': 'anyone', 'max-groups-per-user': String(CAP) }, async (_s, login) => {
      const spammer = await login('spammer', 'tcp');
      const spammer2 = await login('spammer2', 'ws');
      const victim = await login('victim', 'ws');
      for (let i = 0; i < CAP; i++) {
        assertOk(await createGroup(spammer, `spam ${i}`, ['victim']), 'groupResult', `group ${i + 1} of ${CAP} with the victim`);
      }
      const over = assertRefused(await createGroup(spammer, 'spam over the cap', ['victim']), `group ${CAP + 1} with the victim`);
      // Another account gets no fresh budget: the cap is the victim's.
      const over2 = assertRefused(await createGroup(spammer2, 'spam from a second account', ['victim']), 'a second spammer, the victim at the cap');
      const g = groupIdOfReply(await createGroup(spammer2, 'no victim', ['someone-else']));
      const over3 = assertRefused(await addMembers(spammer2, g, ['victim']), 'adding the victim at the cap to an existing group');
      console.log(`[6] past max-groups-per-user ${CAP}: ${errorName(over)}, ${errorName(over2)}, ${errorName(over3)}`);
      const groups = (await conversationIds(victim)).filter((id) => id.startsWith('g:'));
      assert.ok(groups.length <= CAP, `the victim is in ${groups.length} groups, over the cap of ${CAP}`);
    });
  });
});

// ---- 7 ----------------------------------------------------------------------

describe('attack 7: presence \'contacts\' is earned by the victim writing, not by the attacker', () => {
  const OPTS = { 'presence-visibility': 'contacts', 'group-add-policy': 'anyone' };

  async function presenceOf(c: RawClient, user: string): Promise<Frame> {
    return request(c, { case: 'presenceQuery', value: { userIds: [user] } });
  }

  test('a group with the victim, or a message to the victim, does not reveal the victim\'s presence; the victim\'s reply does', T, async () => {
    await withServer(OPTS, async (_s, login) => {
      const stalker = await login('stalker', 'tcp');
      const victim = await login('victim', 'ws');
      groupIdOfReply(await createGroup(stalker, 'watching you', ['victim']));
      assertRefused(await presenceOf(stalker, 'victim'), 'presence query after creating a group with the victim');
      assertRefused(await request(stalker, { case: 'presenceSubscribe', value: { userIds: ['victim'] } }), 'presence subscribe after creating a group with the victim');

      await sendOk(stalker, { toUser: 'victim', clientMsgId: 'stalker-dm' }, 'stalker → victim');
      assertRefused(await presenceOf(stalker, 'victim'), 'presence query after writing to the victim');
      assertRefused(await request(stalker, { case: 'presenceSubscribe', value: { userIds: ['victim'] } }), 'presence subscribe after writing to the victim');

      await sendOk(victim, { toUser: 'stalker', clientMsgId: 'victim-reply' }, 'victim → stalker');
      const seen = await presenceOf(stalker, 'victim');
      assertOk(seen, 'presenceResult', 'presence query once the victim wrote back');
      assert.ok(seen.body.case === 'presenceResult');
      assert.deepEqual(seen.body.value.users.map((p) => [p.userId, p.online]), [['victim', true]]);
      // The victim may see whom it wrote to.
      assertOk(await presenceOf(victim, 'stalker'), 'presenceResult', 'the victim sees the user it wrote to');
    });
  });

  test('in a shared group, the victim writing in the group makes its fellow members contacts', T, async () => {
    await withServer(OPTS, async (_s, login) => {
      const owner = await login('owner', 'tcp');
      const member = await login('member', 'ws');
      const victim = await login('victim', 'tcp');
      const groupId = groupIdOfReply(await createGroup(owner, 'club', ['member', 'victim']));
      assertRefused(await presenceOf(member, 'victim'), 'a fellow member, before the victim wrote anything');
      await sendOk(victim, { conversationId: `g:${groupId}`, clientMsgId: 'victim-in-group' }, 'the victim writes in the group');
      const seen = await presenceOf(member, 'victim');
      assertOk(seen, 'presenceResult', 'a fellow member once the victim wrote in the group');
    });
  });
});

// ---- 8 ----------------------------------------------------------------------

interface HttpResult { status: number; body: string }

/** An HTTP request with the headers exactly as given (Host included). */
function rawHttp(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, setHost: false }, (res) => {
      let data = '';
      res.setEncoding('utf8').on('data', (d: string) => (data += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A WebSocket upgrade to /ws with (or without) an Origin: 'open' and a login result, or how it was refused. */
async function wsWithOrigin(s: TestServer, origin: string | undefined): Promise<string> {
  const ws = new WebSocket(s.wsUrl, { perMessageDeflate: false, ...(origin === undefined ? {} : { origin }) });
  return new Promise<string>((resolve) => {
    const timer = setTimeout(() => {
      ws.terminate();
      resolve('no answer within 5 s');
    }, 5000);
    const done = (what: string) => {
      clearTimeout(timer);
      ws.terminate();
      resolve(what);
    };
    ws.on('unexpected-response', (_req, res) => done(`refused: HTTP ${res.statusCode}`));
    ws.on('error', (err) => done(`refused: ${err.message}`));
    ws.on('close', (code) => done(`closed: ${code}`));
    ws.on('open', () => {
      void (async () => {
        ws.on('message', (data: Buffer) => {
          const f = decodeFrame(data);
          done(f.body.case === 'loginResult' ? 'open, logged in' : `open, then ${describeReply(f)}`);
        });
        ws.send(encodeFrame(makeFrame(1, { case: 'login', value: { token: await s.token('webuser', 'web') } })), { binary: true });
      })();
    });
  });
}

describe('attack 8: dev login, Host and Origin', () => {
  test('dev login is off when a token secret is configured and no dev-login flag is given (admin key generated or configured)', T, async () => {
    // A production-like start: LONGLINK_TOKEN_SECRET set, no admin key (generated), on loopback.
    for (const [what, overrides] of [
      ['token secret configured, admin key generated', { 'admin-key': SERVER_DEFAULT }],
      ['token secret and admin key configured', {}],
    ] as const) {
      await withServer(overrides, async (s) => {
        const r = await rawHttp(s.httpPort, 'POST', '/api/v1/dev/token',
          { host: `127.0.0.1:${s.httpPort}`, 'content-type': 'application/json' }, JSON.stringify({ user_id: 'alice' }));
        console.log(`[8] ${what}: POST /api/v1/dev/token → ${r.status} ${r.body.slice(0, 120)}`);
        assert.ok(r.status >= 400, `${what}: dev login handed out a token: ${r.status} ${r.body}`);
        assert.ok(!r.body.includes('"token"'), `${what}: a token in the refusal`);
      });
    }
  });

  test('a foreign Host header on the HTTP API is refused (DNS rebinding); the server\'s own host works', T, async () => {
    await withServer({ 'dev-login': '1' }, async (s) => {
      const own = `127.0.0.1:${s.httpPort}`;
      const devToken = (host: string) => rawHttp(s.httpPort, 'POST', '/api/v1/dev/token', { host, 'content-type': 'application/json' }, JSON.stringify({ user_id: 'alice' }));
      const ok = await devToken(own);
      assert.equal(ok.status, 200, `own host: ${ok.body}`);
      const evil = await devToken('evil.example');
      console.log(`[8] Host: evil.example → POST /api/v1/dev/token ${evil.status} ${evil.body.slice(0, 120)}`);
      assert.ok(evil.status >= 400, `Host: evil.example got a dev token: ${evil.status} ${evil.body}`);
      assert.ok(!evil.body.includes('"token"'));
      const evilPort = await devToken(`evil.example:${s.httpPort}`);
      assert.ok(evilPort.status >= 400, `Host: evil.example:${s.httpPort} got a dev token: ${evilPort.status}`);

      const admin = (host: string) => rawHttp(s.httpPort, 'POST', '/api/v1/tokens',
        { host, 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` }, JSON.stringify({ user_id: 'alice' }));
      assert.equal((await admin(own)).status, 200);
      const gateways = (host: string) => rawHttp(s.httpPort, 'GET', '/api/v1/gateways', { host });
      assert.equal((await gateways(own)).status, 200);
      const g = await gateways('evil.example');
      console.log(`[8] Host: evil.example → GET /api/v1/gateways ${g.status}`);
      assert.ok(g.status >= 400, `Host: evil.example → GET /api/v1/gateways answered ${g.status}`);
    });
  });

  test('a WebSocket upgrade with Origin http://evil.example is refused; no Origin (native clients) and the server\'s own origin log in', T, async () => {
    await withServer({ 'dev-login': '1' }, async (s) => {
      const none = await wsWithOrigin(s, undefined);
      const own = await wsWithOrigin(s, `http://127.0.0.1:${s.httpPort}`);
      const evil = await wsWithOrigin(s, 'http://evil.example');
      console.log(`[8] WebSocket upgrade: no Origin → ${none}; own Origin → ${own}; Origin http://evil.example → ${evil}`);
      assert.equal(none, 'open, logged in');
      assert.equal(own, 'open, logged in');
      assert.ok(evil.startsWith('refused') || (evil.startsWith('closed') && !evil.includes('logged in')), `Origin http://evil.example: ${evil}`);
    });
  });
});
