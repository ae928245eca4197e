// Offline push notifications end to end on an embedded server: messages to a
// user with no device online reach the business's push webhook once per
// burst (collapsed per conversation, the unread count as the badge, signed),
// never while one of its devices is online, never for a muted conversation;
// a failing receiver is retried with the same notification; APNs and FCM
// devices get theirs from the (local fake) providers, and a token a provider
// says is dead is forgotten.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type LonglinkClient } from '../../src/client/index.js';
import { verifySignature } from '../../src/risk/webhooks.js';
import type { TestServer } from '../helpers/server.js';
import { FakeApns, FakeFcm } from '../helpers/fake-push.js';
import { sleep, until, urlOf, withServer } from './support.js';

const T = { timeout: 120_000 };
const SECRET = 'push-webhook-secret-0123456789';
const COLLAPSE_MS = 400;

interface Received {
  id: string;
  body: Record<string, unknown>;
  raw: string;
  signed: boolean;
}

/** The business's push service: records every POST; answers `failures` 503s first. */
class Receiver {
  readonly received: Received[] = [];
  failures = 0;
  private server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void read(req).then((raw) => {
        if (this.failures > 0) {
          this.failures--;
          this.received.push({ id: String(req.headers['x-longlink-event-id']), body: JSON.parse(raw) as Record<string, unknown>, raw, signed: false });
          res.writeHead(503).end();
          return;
        }
        const signed = verifySignature(SECRET, {
          timestamp: req.headers['x-longlink-timestamp'] as string | undefined, signature: req.headers['x-longlink-signature'] as string | undefined,
        }, raw);
        this.received.push({ id: String(req.headers['x-longlink-event-id']), body: JSON.parse(raw) as Record<string, unknown>, raw, signed });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/push`;
  }

  /** The notifications delivered (answered 200). */
  delivered(): Received[] {
    return this.received.filter((r) => r.signed);
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

async function read(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function connect(s: TestServer, user: string, device = 'd1'): Promise<LonglinkClient> {
  const client = createClient({ url: urlOf(s, 'tcp'), token: await s.token(user, device), reconnect: false, autoSync: false });
  await client.connect();
  return client;
}

/** Waits long enough for any notification of what was sent before to have gone (collapse window, a poll, slack). */
async function settle(): Promise<void> {
  await sleep(COLLAPSE_MS + 1200);
}

describe('offline push notifications (webhook provider)', () => {
  const receiver = new Receiver();
  before(() => receiver.start());
  after(() => receiver.stop());

  function server(fn: (s: TestServer) => Promise<void>): Promise<void> {
    receiver.received.length = 0;
    receiver.failures = 0;
    return withServer(fn, { 'push-webhook-url': receiver.url, 'push-webhook-secret': SECRET, 'push-collapse-ms': String(COLLAPSE_MS) });
  }

  test('a burst to an offline user is one signed notification with the count, the newest preview and the unread badge', T, async () => {
    await server(async (s) => {
      const alice = await connect(s, 'alice');
      try {
        await alice.setProfile({ name: 'Alice L' });
        for (const text of ['one', 'two', 'three']) await alice.send({ to: 'bob', text });
        await until(() => receiver.delivered().length >= 1, 10_000, () => 'a notification');
        await settle();
        const got = receiver.delivered();
        assert.equal(got.length, 1, `one notification for the burst: ${JSON.stringify(got.map((g) => g.body))}`);
        const n = got[0]!.body;
        assert.equal(got[0]!.signed, true);
        assert.equal(got[0]!.id, 'bob:u:alice:bob:3');
        assert.deepEqual(
          [n.user_id, n.conversation_id, n.seq, n.count, n.from_user, n.title, n.body, n.badge],
          ['bob', 'u:alice:bob', 3, 3, 'alice', 'Alice L', '(3) three', 3],
        );
        // A later message is a new burst: one more notification, for it alone.
        await alice.send({ to: 'bob', text: 'four' });
        await until(() => receiver.delivered().length >= 2, 10_000, () => 'the second notification');
        assert.deepEqual([receiver.delivered()[1]!.body.count, receiver.delivered()[1]!.body.body, receiver.delivered()[1]!.body.badge], [1, 'four', 4]);
      } finally {
        await alice.close();
      }
    });
  });

  test('none while one of the user\'s devices is online, none for the sender, none for a muted conversation', T, async () => {
    await server(async (s) => {
      const alice = await connect(s, 'alice');
      const carol = await connect(s, 'carol');
      let bob = await connect(s, 'bob', 'phone');
      try {
        await alice.send({ to: 'bob', text: 'while bob listens' });
        await carol.send({ to: 'bob', text: 'carol too' });
        await settle();
        assert.deepEqual(receiver.received, [], 'bob is online: nothing');
        await bob.muteNotifications('u:alice:bob');
        await bob.close();
        await alice.send({ to: 'bob', text: 'muted conversation' });
        await carol.send({ to: 'bob', text: 'not muted' });
        await until(() => receiver.delivered().length >= 1, 10_000, () => 'carol\'s notification');
        await settle();
        assert.deepEqual(receiver.delivered().map((r) => [r.body.user_id, r.body.conversation_id, r.body.body]), [['bob', 'u:bob:carol', 'not muted']]);
        bob = await connect(s, 'bob', 'phone');
        await bob.muteNotifications('u:alice:bob', false);
        await bob.close();
        await alice.send({ to: 'bob', text: 'unmuted again' });
        await until(() => receiver.delivered().length >= 2, 10_000, () => 'alice\'s notification after unmuting');
        assert.equal(receiver.delivered()[1]!.body.body, 'unmuted again');
      } finally {
        await alice.close();
        await carol.close();
        await bob.close();
      }
    });
  });

  test('a receiver that fails gets the same notification again, byte for byte, until it takes it: delivered once', T, async () => {
    await server(async (s) => {
      receiver.failures = 2;
      const alice = await connect(s, 'alice');
      try {
        await alice.send({ to: 'bob', text: 'retry me' });
        await until(() => receiver.delivered().length >= 1, 20_000, () => 'delivered after two failures');
        await settle();
        assert.equal(receiver.received.length, 3, 'two failures, then delivered');
        assert.equal(new Set(receiver.received.map((r) => r.id)).size, 1, 'one id over the retries');
        assert.equal(new Set(receiver.received.map((r) => r.raw)).size, 1, 'the same body');
        assert.equal(receiver.delivered().length, 1);
      } finally {
        await alice.close();
      }
    });
  });

  test('a group message notifies its offline members but its sender; bad registrations are refused', T, async () => {
    await server(async (s) => {
      const alice = await connect(s, 'alice');
      try {
        const g = await alice.createGroup('Crew', ['bob', 'carol']);
        await alice.send({ groupId: g.groupId, text: 'hello crew' });
        await until(() => receiver.delivered().length >= 2, 10_000, () => 'two notifications');
        await settle();
        const got = receiver.delivered().map((r) => [r.body.user_id, r.body.title, r.body.body]).sort();
        assert.deepEqual(got, [['bob', 'alice in Crew', 'hello crew'], ['carol', 'alice in Crew', 'hello crew']]);
        await assert.rejects(alice.registerPush('sms' as 'apns', 'x'), /platform must be one of/);
        await assert.rejects(alice.registerPush('apns', ''), /token must be/);
        await assert.rejects(alice.registerPush('apns', 'has space'), /token must be/);
      } finally {
        await alice.close();
      }
    });
  });
});

describe('offline push notifications (APNs and FCM, local fakes)', () => {
  const apns = new FakeApns();
  const fcm = new FakeFcm();
  let dir = '';
  let flags: Record<string, string> = {};
  before(async () => {
    await Promise.all([apns.start(), fcm.start()]);
    dir = mkdtempSync(join(tmpdir(), 'longlink-push-'));
    writeFileSync(join(dir, 'AuthKey.p8'), apns.privateKeyPem);
    writeFileSync(join(dir, 'service-account.json'), JSON.stringify(fcm.serviceAccount()));
    flags = {
      'apns-key-file': join(dir, 'AuthKey.p8'), 'apns-key-id': apns.keyId, 'apns-team-id': apns.teamId, 'apns-topic': apns.topic, 'apns-url': apns.url,
      'fcm-service-account-file': join(dir, 'service-account.json'), 'fcm-url': fcm.url,
      'push-collapse-ms': String(COLLAPSE_MS),
    };
  });
  after(async () => {
    await Promise.all([apns.stop(), fcm.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('each registered device gets one notification per burst from its platform\'s provider, none while online; a dead token is forgotten', T, async () => {
    apns.script.set('iphone-old', [{ status: 410, reason: 'Unregistered' }]);
    await withServer(async (s) => {
      const alice = await connect(s, 'alice');
      const devices = [['iphone', 'apns', 'iphone-token'], ['iphone-old', 'apns', 'iphone-old'], ['pixel', 'fcm', 'pixel-token']] as const;
      const bobs = await Promise.all(devices.map(([device]) => connect(s, 'bob', device)));
      try {
        await Promise.all(bobs.map((b, i) => b.registerPush(devices[i]![1], devices[i]![2])));
        await alice.send({ to: 'bob', text: 'while bob is here' });
        await settle();
        assert.deepEqual([apns.requests.length, fcm.requests.length], [0, 0], 'a device online: nothing');

        await Promise.all(bobs.map((b) => b.close()));
        await alice.send({ to: 'bob', text: 'dinner?' });
        await alice.send({ to: 'bob', text: 'at 8' });
        await until(() => apns.requests.length >= 2 && fcm.requests.length >= 1, 10_000, () => 'the notifications');
        await settle();
        assert.deepEqual(apns.requests.map((r) => [r.token, r.status]).sort(), [['iphone-old', 410], ['iphone-token', 200]]);
        assert.deepEqual(fcm.requests.map((r) => [r.token, r.status]), [['pixel-token', 200]]);
        const a = apns.delivered('iphone-token')[0]!;
        assert.deepEqual([a.payload.aps.alert.title, a.payload.aps.alert.body, a.payload.aps.badge, a.headers['apns-collapse-id']], ['alice', '(2) at 8', 3, 'u:alice:bob']);
        const f = fcm.delivered('pixel-token')[0]!;
        assert.deepEqual([f.message.notification.body, f.message.apns.payload.aps.badge, f.message.data.seq], ['(2) at 8', 3, '3']);

        // The next burst: the dead token is no longer sent to.
        await alice.send({ to: 'bob', text: 'ok?' });
        await until(() => apns.requests.length >= 3 && fcm.requests.length >= 2, 10_000, () => 'the next notifications');
        await settle();
        assert.deepEqual(apns.requests.slice(2).map((r) => [r.token, r.payload.aps.alert.body, r.payload.aps.badge]), [['iphone-token', 'ok?', 4]]);
        assert.deepEqual(fcm.requests.slice(1).map((r) => r.token), ['pixel-token']);
      } finally {
        await alice.close();
        await Promise.all(bobs.map((b) => b.close()));
      }
    }, flags);
  });
});
