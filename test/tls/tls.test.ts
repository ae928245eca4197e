// TLS end to end on the embedded server, with a CA and server certificate made
// at test time: raw clients and the SDK over tls:// and wss://, discovery and
// the token API over https, clients that do not trust the CA refused (and the
// server unharmed), and plain bytes on the TLS ports dropped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import {
  createClient, gatewayPicker, listGateways, nodeFetch, requestToken, ErrorCode, LonglinkError,
  type ChatMessage, type NodeClientOptions,
} from '../../src/client/index.js';
import { encodeFrame, lengthPrefixed, makeFrame, messageFromWire } from '../../src/protocol/index.js';
import { ADMIN_KEY, startTestServer, waitFor, type TestServer } from '../helpers/server.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/tls.js';
import { RawTlsClient } from './raw-tls.js';

const T = { timeout: 60_000 };

let certs: TestCertificates;
let server: TestServer;

before(async () => {
  certs = makeTestCertificates();
  server = await startTestServer(certs.serverFlags);
});

after(async () => {
  await server?.close();
  certs?.remove();
});

/** Messages pushed to a raw client. */
function pushedTo(c: RawTlsClient): ChatMessage[] {
  return c.frames.flatMap((f) => (f.body.case === 'push' ? f.body.value.messages.map(messageFromWire) : []));
}

async function rawOnline(url: string, user: string): Promise<RawTlsClient> {
  const c = await RawTlsClient.connect(url, certs.ca);
  await c.login(await server.token(user, 'raw'));
  return c;
}

/** A raw send that must be acked. */
async function rawSend(c: RawTlsClient, toUser: string, text: string): Promise<void> {
  const id = c.send({ case: 'send', value: { clientMsgId: `${text}-${Math.random()}`, toUser, text } });
  const reply = await c.next((f) => f.id === id);
  assert.equal(reply.body.case, 'sendAck', `send of ${text} acked`);
}

/** The connect error of a client, which must fail. */
async function refusal(options: NodeClientOptions): Promise<LonglinkError> {
  const client = createClient({ reconnect: false, ...options });
  try {
    await client.connect();
  } catch (err) {
    assert.ok(err instanceof LonglinkError, `a coded error, got ${String(err)}`);
    return err;
  } finally {
    await client.close();
  }
  assert.fail(`${String(options.url)}: the connection was not refused`);
}

/** Proof the server still serves: a trusted client over each transport logs in and gets a message. */
async function stillServing(): Promise<void> {
  const a = await rawOnline(server.tcpUrl, 'after-a');
  const b = await rawOnline(server.wsUrl, 'after-b');
  try {
    await rawSend(a, 'after-b', 'still here');
    await waitFor(() => pushedTo(b).some((m) => m.text === 'still here'), 5000, 'the message after the refusals');
  } finally {
    a.close();
    b.close();
  }
}

describe('TLS on the embedded server', () => {
  test('it announces https, tls:// and wss://, and discovery over https lists only TLS URLs', T, async () => {
    assert.match(server.httpUrl, /^https:\/\//);
    assert.match(server.tcpUrl, /^tls:\/\/127\.0\.0\.1:\d+$/);
    assert.match(server.wsUrl, /^wss:\/\/127\.0\.0\.1:\d+\/ws$/);
    const gateways = await listGateways(server.httpUrl, { fetch: nodeFetch({ ca: certs.ca }) });
    assert.deepEqual(gateways.map((g) => [g.tcp_url, g.ws_url]), [[server.tcpUrl, server.wsUrl]]);
  });

  test('raw clients over tls:// and wss:// log in and exchange messages', T, async () => {
    const alice = await rawOnline(server.tcpUrl, 'raw-alice');
    const bob = await rawOnline(server.wsUrl, 'raw-bob');
    try {
      await rawSend(alice, 'raw-bob', 'over tls');
      await rawSend(bob, 'raw-alice', 'over wss');
      await waitFor(() => pushedTo(bob).length > 0 && pushedTo(alice).length > 0, 5000, 'both pushes');
      assert.deepEqual(pushedTo(bob).map((m) => [m.fromUser, m.text]), [['raw-alice', 'over tls']]);
      assert.deepEqual(pushedTo(alice).map((m) => [m.fromUser, m.text]), [['raw-bob', 'over wss']]);
    } finally {
      alice.close();
      bob.close();
    }
  });

  test('the SDK trusting the CA: tokens and discovery over https, messages over tls:// and wss://', T, async () => {
    const http = { fetch: nodeFetch({ ca: certs.ca }) };
    const token = (user: string) => async () => (await requestToken(server.httpUrl, ADMIN_KEY, { user_id: user, device_id: 'sdk' }, http)).token;
    const alice = createClient({ url: gatewayPicker(server.httpUrl, 'tcp', http), token: token('sdk-alice'), ca: certs.ca, reconnect: false });
    const bob = createClient({ url: gatewayPicker(server.httpUrl, 'ws', http), token: token('sdk-bob'), ca: certs.ca, reconnect: false });
    const got: Record<string, string[]> = { alice: [], bob: [] };
    alice.on('message', (m) => got.alice!.push(m.text));
    bob.on('message', (m) => got.bob!.push(m.text));
    try {
      assert.equal((await alice.connect()).userId, 'sdk-alice');
      assert.equal((await bob.connect()).userId, 'sdk-bob');
      assert.equal((await alice.send({ to: 'sdk-bob', text: 'hello over tls' })).seq, 1);
      assert.equal((await bob.send({ to: 'sdk-alice', text: 'hello over wss' })).seq, 2);
      await waitFor(() => got.alice!.length > 0 && got.bob!.length > 0, 5000, 'both messages');
      assert.deepEqual(got, { alice: ['hello over wss'], bob: ['hello over tls'] });
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('the https token API: a token it issues logs in over tls://; a wrong admin key is FORBIDDEN', T, async () => {
    const http = { fetch: nodeFetch({ ca: certs.ca }) };
    const issued = await requestToken(server.httpUrl, ADMIN_KEY, { user_id: 'api-user', device_id: 'api-dev' }, http);
    assert.equal(issued.user_id, 'api-user');
    const c = await RawTlsClient.connect(server.tcpUrl, certs.ca);
    try {
      const login = await c.login(issued.token);
      assert.equal(login.body.case === 'loginResult' && login.body.value.userId, 'api-user');
    } finally {
      c.close();
    }
    await assert.rejects(requestToken(server.httpUrl, 'wrong-admin-key', { user_id: 'api-user' }, http),
      (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.FORBIDDEN);
  });

  test('clients that do not trust the CA are refused with a certificate error; the server keeps serving', T, async () => {
    const token = () => server.token('untrusting');
    for (const url of [server.tcpUrl, server.wsUrl]) {
      // Node's default roots, then a CA that did not sign the server's certificate.
      for (const ca of [undefined, certs.otherCa]) {
        const err = await refusal({ url, token, ca });
        assert.equal(err.code, ErrorCode.UNAVAILABLE);
        assert.match(err.message, /certificate/, err.message);
        assert.match(err.message, /--ca/, 'it says how to trust the server');
      }
    }
    for (const http of [{}, { fetch: nodeFetch({ ca: certs.otherCa }) }]) {
      await assert.rejects(requestToken(server.httpUrl, ADMIN_KEY, { user_id: 'untrusting' }, http),
        (e: unknown) => e instanceof LonglinkError && e.code === ErrorCode.UNAVAILABLE && /certificate.*--ca/.test(e.message));
    }
    // The raw handshake fails the same way: no session is opened without a trusted certificate.
    const raw = tls.connect({ host: '127.0.0.1', port: server.tcpPort });
    const [rawError] = await new Promise<[Error]>((resolve) => raw.once('error', (e) => resolve([e])));
    assert.match((rawError as NodeJS.ErrnoException).code ?? '', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/);
    await stillServing();
  });

  test('plain TCP and plain HTTP on the TLS ports are dropped; the server keeps serving', T, async () => {
    const login = lengthPrefixed(encodeFrame(makeFrame(1, { case: 'login', value: { token: await server.token('plain') } })));
    const httpRequest = Buffer.from('GET /api/v1/gateways HTTP/1.1\r\nhost: localhost\r\n\r\n');
    for (const [port, bytes] of [[server.tcpPort, login], [server.httpPort, httpRequest]] as const) {
      const socket = net.connect({ host: '127.0.0.1', port });
      const received: Buffer[] = [];
      socket.on('data', (d: Buffer) => received.push(d));
      socket.on('error', () => undefined);
      await new Promise((r) => socket.once('connect', r));
      socket.write(bytes);
      let closed = false;
      socket.once('close', () => (closed = true));
      await waitFor(() => closed, 5000, `the server to drop plain bytes on port ${port}`);
      // Whatever came back is a TLS alert at most, never a login result or an API answer in the clear.
      assert.ok(!Buffer.concat(received).toString('latin1').includes('gateways'), 'no plain HTTP answer');
      assert.ok(Buffer.concat(received).length < 64, 'no frames in the clear');
    }
    // The SDK on tcp:// against the TLS port: refused with a coded error, not a hang.
    const err = await refusal({ url: server.tcpUrl.replace('tls:', 'tcp:'), token: () => server.token('plain'), requestTimeoutMs: 5000 });
    assert.equal(err.code, ErrorCode.UNAVAILABLE, err.message);
    await stillServing();
  });
});
