// One hostile client must not lock other users out through the login
// throttle. What it can forge (a token's claimed user, an X-Forwarded-For
// header) must not pick whose logins are throttled: forged and garbage tokens
// count against the address they come from; a user's own counter only moves
// for tokens whose signature verified (expired, revoked). X-Forwarded-For is
// believed only from a configured trusted proxy, and then only its right-most
// address that is not itself a trusted proxy.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { ErrorCode, decodeFrame, encodeFrame, errorName, makeFrame, type Frame } from '../../src/protocol/index.js';
import { TRANSPORTS, expectFatal, pingPong, withServer, type Ctx } from './gw-helpers.js';

const ATTACKER_SECRET = new TextEncoder().encode('the-attacker-made-this-secret-0123456789');

/** A well-formed token claiming `sub`, signed with a secret the server does not know. */
function forgedToken(sub: string, device = 'd1'): Promise<string> {
  return new SignJWT({ dev: device, plt: 'other' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer('longlink').setSubject(sub).setIssuedAt().setExpirationTime('1h')
    .sign(ATTACKER_SECRET);
}

/** Log in with `token` on a new connection of `kind`; the code of the fatal error it gets, or 'ok'. */
async function attempt(ctx: Ctx, kind: 'tcp' | 'ws', token: string): Promise<string> {
  const c = await ctx.connect(kind);
  const id = c.send({ case: 'login', value: { token } });
  const reply = await c.next((f) => f.id === id);
  if (reply.body.case === 'loginResult') {
    c.close();
    return 'ok';
  }
  assert.equal(reply.body.case, 'error', c.describe());
  const code = reply.body.case === 'error' ? reply.body.value.code : ErrorCode.ERROR_CODE_UNSPECIFIED;
  await c.waitClosed();
  return errorName(code);
}

for (const kind of TRANSPORTS) {
  describe(`hostile logins over ${kind}`, () => {
    test("100 forged tokens claiming the victim from the victim's address: forged ones past the limit get LOGIN_THROTTLED, the victim's valid token still logs in", () =>
      withServer({ 'login-attempts-per-minute': '60' }, async (ctx) => {
        const codes: string[] = [];
        for (let i = 0; i < 100; i++) codes.push(await attempt(ctx, kind, await forgedToken('victim', `d${i}`)));
        assert.deepEqual(codes.slice(0, 60), Array<string>(60).fill('TOKEN_INVALID'), 'the first 60 forged tokens are each refused as invalid');
        assert.deepEqual(codes.slice(60), Array<string>(40).fill('LOGIN_THROTTLED'), 'past the limit the forging address is throttled');
        // Garbage from the same address is throttled too: the address is what forged.
        assert.equal(await attempt(ctx, kind, 'not-a-token'), 'LOGIN_THROTTLED');
        // The victim (same address: the attacker shares its NAT) logs in with its valid token, every time.
        for (let i = 0; i < 3; i++) {
          const victim = await ctx.login(kind, 'victim', `phone-${i}`);
          await pingPong(victim);
          victim.close();
        }
        // And so does anyone else there.
        await pingPong(await ctx.login(kind, 'bystander'));
      }));

    test('tokens whose signature verifies but that fail (expired) count per user and address: that user waits, the address does not', () =>
      withServer({ 'login-attempts-per-minute': '5' }, async (ctx) => {
        for (let i = 0; i < 5; i++) assert.equal(await attempt(ctx, kind, await ctx.server.token('mallory', 'd1', -10)), 'TOKEN_EXPIRED');
        // mallory's logins from this address wait, even with a valid token...
        assert.equal(await attempt(ctx, kind, await ctx.server.token('mallory', 'd1')), 'LOGIN_THROTTLED');
        assert.equal(await attempt(ctx, kind, await ctx.server.token('mallory', 'd1', -10)), 'LOGIN_THROTTLED');
        // ...other users' do not, and the address's own (forged-token) budget is untouched.
        await pingPong(await ctx.login(kind, 'alice'));
        assert.equal(await attempt(ctx, kind, await forgedToken('alice')), 'TOKEN_INVALID');
        assert.equal(await attempt(ctx, kind, 'garbage'), 'TOKEN_INVALID');
      }));

    test('a forged token for a user throttled by its expired tokens is still answered as forged (no user counter is read for it)', () =>
      withServer({ 'login-attempts-per-minute': '2' }, async (ctx) => {
        for (let i = 0; i < 2; i++) assert.equal(await attempt(ctx, kind, await ctx.server.token('erin', 'd1', -10)), 'TOKEN_EXPIRED');
        assert.equal(await attempt(ctx, kind, await forgedToken('erin')), 'TOKEN_INVALID');
        assert.equal(await attempt(ctx, kind, await forgedToken('erin')), 'TOKEN_INVALID');
        assert.equal(await attempt(ctx, kind, await forgedToken('erin')), 'LOGIN_THROTTLED');
        assert.equal(await attempt(ctx, kind, await ctx.server.token('erin')), 'LOGIN_THROTTLED', 'erin itself is throttled by its expired tokens');
        await pingPong(await ctx.login(kind, 'frank'));
      }));
  });
}

// ---- X-Forwarded-For ---------------------------------------------------------

/** A WebSocket client with the request headers a test chooses (RawClient sets none). */
class HeaderClient {
  readonly frames: Frame[] = [];
  closed = false;
  private constructor(readonly ws: WebSocket) {}

  static open(url: string, headers: Record<string, string>): Promise<HeaderClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, headers });
      const c = new HeaderClient(ws);
      ws.on('message', (data: Buffer) => c.frames.push(decodeFrame(data)));
      ws.on('close', () => (c.closed = true));
      ws.on('open', () => resolve(c));
      ws.on('error', reject);
    });
  }

  async login(token: string): Promise<string> {
    this.ws.send(encodeFrame(makeFrame(1, { case: 'login', value: { token } })), { binary: true });
    const deadline = Date.now() + 5000;
    for (;;) {
      const f = this.frames.find((x) => x.id === 1 || x.body.case === 'error');
      if (f) {
        this.ws.terminate();
        if (f.body.case === 'loginResult') return 'ok';
        return f.body.case === 'error' ? errorName(f.body.value.code) : String(f.body.case);
      }
      if (Date.now() > deadline) throw new Error('no answer to the login');
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

describe('X-Forwarded-For and trusted proxies', () => {
  test('from a trusted proxy, the right-most address that is not a proxy is the client: the throttle keys on it', () =>
    withServer({ 'login-attempts-per-minute': '3', 'trusted-proxies': '127.0.0.1' }, async (ctx) => {
      const as = async (xff: string, token = 'garbage') => (await HeaderClient.open(ctx.server.wsUrl, { 'x-forwarded-for': xff })).login(token);
      for (let i = 0; i < 3; i++) assert.equal(await as('203.0.113.7'), 'TOKEN_INVALID');
      assert.equal(await as('203.0.113.7'), 'LOGIN_THROTTLED', 'the client behind the proxy is throttled');
      // A client may put anything left of what the proxy appended: only the right-most untrusted entry counts.
      assert.equal(await as('198.51.100.1, 203.0.113.7'), 'LOGIN_THROTTLED');
      // A chain of trusted proxies is walked from the right.
      assert.equal(await as('203.0.113.7, 127.0.0.1'), 'LOGIN_THROTTLED');
      // Another client behind the same proxy is not affected, nor is the proxy's own address (TCP: no header).
      assert.equal(await as('203.0.113.8'), 'TOKEN_INVALID');
      assert.equal(await as('::ffff:203.0.113.9'), 'TOKEN_INVALID');
      const tcp = await ctx.connect('tcp');
      const id = tcp.send({ case: 'login', value: { token: 'garbage' } });
      await expectFatal(tcp, ErrorCode.TOKEN_INVALID, id);
      // A valid token from the throttled client logs in.
      assert.equal(await as('203.0.113.7', await ctx.server.token('carol')), 'ok');
    }));

  test('without a trusted proxy the header is ignored: a client cannot pick the address it is throttled as', () =>
    withServer({ 'login-attempts-per-minute': '3' }, async (ctx) => {
      const as = async (xff: string) => (await HeaderClient.open(ctx.server.wsUrl, { 'x-forwarded-for': xff })).login('garbage');
      for (let i = 0; i < 3; i++) assert.equal(await as(`203.0.113.${i + 1}`), 'TOKEN_INVALID');
      assert.equal(await as('203.0.113.99'), 'LOGIN_THROTTLED', 'a fresh X-Forwarded-For does not escape the throttle');
    }));

  test('a proxy that is not the trusted one is not believed either', () =>
    withServer({ 'login-attempts-per-minute': '2', 'trusted-proxies': '10.9.8.7,192.0.2.0/24' }, async (ctx) => {
      const as = async (xff: string) => (await HeaderClient.open(ctx.server.wsUrl, { 'x-forwarded-for': xff })).login('garbage');
      assert.equal(await as('203.0.113.1'), 'TOKEN_INVALID');
      assert.equal(await as('203.0.113.2'), 'TOKEN_INVALID');
      assert.equal(await as('203.0.113.3'), 'LOGIN_THROTTLED');
    }));
});

describe('the login throttle table', () => {
  test('keys are forgotten after their minute, and the table keeps at most its bound (oldest first)', async () => {
    const { LoginThrottle } = await import('../../src/gateway/login-throttle.js');
    const t = new LoginThrottle(2, 3);
    t.failed('a', 0);
    t.failed('a', 1);
    assert.equal(t.allowed('a', 2), false);
    assert.equal(t.allowed('a', 60_000), true, 'a new minute');
    for (const k of ['b', 'c', 'd']) {
      t.failed(k, 10);
      t.failed(k, 10);
    }
    assert.equal(t.size, 3);
    t.failed('e', 20);
    assert.equal(t.size, 3, 'bounded');
    assert.equal(t.allowed('b', 30), true, 'the oldest key went first');
    assert.equal(t.allowed('d', 30), false);
    t.sweep(60_020);
    assert.equal(t.size, 0);
  });
});
