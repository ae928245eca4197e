// The APNs and FCM adapters against local fake servers that check what the
// real services check (test/helpers/fake-push.ts): each device gets one
// request with the provider's signed credentials; a token the service calls
// dead is reported; an expired provider token or access token is renewed and
// the send goes through; a failure is retried with backoff for the devices
// that do not have the notification yet, never again for those that do.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApnsProvider, apnsId } from '../../src/push/apns.js';
import { FcmProvider } from '../../src/push/fcm.js';
import { PushError, sendWithRetry, type PushDevice, type PushNotification, type PushPlatform, type RetryOptions } from '../../src/push/provider.js';
import { FakeApns, FakeFcm } from '../helpers/fake-push.js';

const RETRY: RetryOptions = { attempts: 4, firstBackoffMs: 20, maxBackoffMs: 200 };

function notification(platform: PushPlatform, tokens: string[], over: Partial<PushNotification> = {}): PushNotification {
  const devices: PushDevice[] = tokens.map((token, i) => ({ deviceId: `d${i}`, platform, token }));
  return {
    id: 'bob:u:alice:bob:7', userId: 'bob', conversationId: 'u:alice:bob', lastSeq: 7, count: 2, fromUser: 'alice',
    title: 'Alice', body: '(2) see you at 6', badge: 5, devices, sentAtMs: Date.now(), ...over,
  };
}

describe('APNs adapter', () => {
  const apns = new FakeApns();
  let provider: ApnsProvider;
  before(async () => {
    await apns.start();
    provider = new ApnsProvider({ teamId: apns.teamId, keyId: apns.keyId, privateKeyPem: apns.privateKeyPem, topic: apns.topic, url: apns.url });
  });
  after(async () => {
    await provider.close();
    await apns.stop();
  });

  test('one request per device, with the team\'s signed provider token, the topic, a stable apns-id and the conversation as collapse id', async () => {
    const before = apns.requests.length;
    const result = await provider.send(notification('apns', ['a1', 'a2']));
    assert.deepEqual(result.invalidTokens, []);
    const got = apns.requests.slice(before);
    assert.deepEqual(got.map((r) => [r.token, r.status]), [['a1', 200], ['a2', 200]]);
    const r = got[0]!;
    assert.equal(r.headers['apns-topic'], apns.topic);
    assert.equal(r.headers['apns-collapse-id'], 'u:alice:bob');
    assert.equal(r.headers['apns-id'], apnsId('bob:u:alice:bob:7', 'a1'));
    assert.notEqual(got[1]!.headers['apns-id'], r.headers['apns-id'], 'each device its own id');
    assert.deepEqual(r.payload.aps.alert, { title: 'Alice', body: '(2) see you at 6' });
    assert.equal(r.payload.aps.badge, 5);
    assert.equal(r.payload.aps['thread-id'], 'u:alice:bob');
    assert.deepEqual([r.payload.conversation_id, r.payload.seq, r.payload.notification_id], ['u:alice:bob', 7, 'bob:u:alice:bob:7']);
    assert.equal(apns.authRefused, 0);
  });

  test('a token APNs calls dead (410 Unregistered, 400 BadDeviceToken) is reported, not retried', async () => {
    apns.script.set('gone', [{ status: 410, reason: 'Unregistered' }]);
    apns.script.set('bad', [{ status: 400, reason: 'BadDeviceToken' }]);
    const out = await sendWithRetry(provider, notification('apns', ['gone', 'live', 'bad']), RETRY);
    assert.deepEqual([out.outcome, out.attempts, out.invalidTokens.sort()], ['delivered', 1, ['bad', 'gone']]);
    assert.equal(apns.delivered('live').length, 1);
  });

  test('an expired provider token is signed again and the notification goes through', async () => {
    apns.expireProviderTokens = 1;
    const refusedBefore = apns.authRefused;
    const result = await provider.send(notification('apns', ['renewed']));
    assert.deepEqual(result.invalidTokens, []);
    assert.equal(apns.authRefused, refusedBefore + 1);
    assert.equal(apns.delivered('renewed').length, 1);
  });

  test('a 503 for one device is retried for that device alone, with the same apns-id; the other is sent once', async () => {
    apns.script.set('flaky', [{ status: 503, reason: 'ServiceUnavailable' }, { status: 429, reason: 'TooManyRequests', retryAfter: '0' }]);
    const out = await sendWithRetry(provider, notification('apns', ['steady', 'flaky']), RETRY);
    assert.deepEqual([out.outcome, out.attempts], ['delivered', 3]);
    assert.equal(apns.delivered('steady').length, 1, 'never twice to a device that has it');
    const flaky = apns.requests.filter((r) => r.token === 'flaky');
    assert.deepEqual(flaky.map((r) => r.status), [503, 429, 200]);
    assert.equal(new Set(flaky.map((r) => r.headers['apns-id'])).size, 1);
  });

  test('a refusal (400 PayloadTooLarge) is not retried; a wrong key is refused by APNs and not retried', async () => {
    apns.script.set('big', [{ status: 400, reason: 'PayloadTooLarge' }]);
    const out = await sendWithRetry(provider, notification('apns', ['big']), RETRY);
    assert.deepEqual([out.outcome, out.attempts], ['refused', 1]);
    const other = new FakeApns();
    const wrongKey = new ApnsProvider({ teamId: apns.teamId, keyId: apns.keyId, privateKeyPem: other.privateKeyPem, topic: apns.topic, url: apns.url });
    try {
      const before = apns.authRefused;
      const refused = await sendWithRetry(wrongKey, notification('apns', ['x']), RETRY);
      assert.equal(refused.outcome, 'refused');
      // Told InvalidProviderToken, it signs once more (the key may have been rotated), then gives up.
      assert.equal(apns.authRefused, before + 2);
      assert.equal(apns.delivered('x').length, 0);
    } finally {
      await wrongKey.close();
    }
  });

  test('APNs out of reach is a retryable failure', async () => {
    const down = new ApnsProvider({ teamId: apns.teamId, keyId: apns.keyId, privateKeyPem: apns.privateKeyPem, topic: apns.topic, url: 'http://127.0.0.1:9' });
    try {
      await assert.rejects(down.send(notification('apns', ['t'])), (err: unknown) => err instanceof PushError && err.retryable);
      const out = await sendWithRetry(down, notification('apns', ['t']), { attempts: 2, firstBackoffMs: 10, maxBackoffMs: 20 });
      assert.deepEqual([out.outcome, out.attempts], ['failed', 2]);
    } finally {
      await down.close();
    }
  });
});

describe('FCM adapter', () => {
  const fcm = new FakeFcm();
  let provider: FcmProvider;
  before(async () => {
    await fcm.start();
    provider = new FcmProvider({ serviceAccount: fcm.serviceAccount(), url: fcm.url });
  });
  after(() => fcm.stop());

  test('one message per device after one token exchange, with collapse key, tag, badge and data', async () => {
    const issued = fcm.tokensIssued;
    const result = await provider.send(notification('fcm', ['f1', 'f2']));
    await provider.send(notification('fcm', ['f3'], { id: 'bob:u:alice:bob:8', lastSeq: 8 }));
    assert.deepEqual(result.invalidTokens, []);
    assert.equal(fcm.tokensIssued, issued + 1, 'the access token is kept and reused');
    assert.deepEqual(fcm.requests.map((r) => [r.token, r.status]), [['f1', 200], ['f2', 200], ['f3', 200]]);
    const m = fcm.requests[0]!.message;
    assert.deepEqual(m.notification, { title: 'Alice', body: '(2) see you at 6' });
    assert.deepEqual(m.android, { collapse_key: 'u:alice:bob', notification: { tag: 'u:alice:bob', notification_count: 5 } });
    assert.equal(m.apns.payload.aps.badge, 5);
    assert.deepEqual(m.data, { conversation_id: 'u:alice:bob', seq: '7', notification_id: 'bob:u:alice:bob:7' });
  });

  test('a token FCM calls UNREGISTERED is reported; an access token FCM no longer takes is renewed', async () => {
    fcm.script.set('old-phone', [{ status: 404, reason: 'NOT_FOUND/UNREGISTERED' }]);
    fcm.revokeAccessTokens();
    const issued = fcm.tokensIssued;
    const out = await sendWithRetry(provider, notification('fcm', ['old-phone', 'new-phone']), RETRY);
    assert.deepEqual([out.outcome, out.attempts, out.invalidTokens], ['delivered', 1, ['old-phone']]);
    assert.equal(fcm.tokensIssued, issued + 1);
    assert.equal(fcm.delivered('new-phone').length, 1);
  });

  test('a 503 for one device is retried for that device alone; a 400 refusal is not retried', async () => {
    fcm.script.set('busy', [{ status: 503, reason: 'UNAVAILABLE/' }]);
    const out = await sendWithRetry(provider, notification('fcm', ['calm', 'busy']), RETRY);
    assert.deepEqual([out.outcome, out.attempts], ['delivered', 2]);
    assert.equal(fcm.delivered('calm').length, 1);
    assert.deepEqual(fcm.requests.filter((r) => r.token === 'busy').map((r) => r.status), [503, 200]);
    fcm.script.set('odd', [{ status: 400, reason: 'INVALID_ARGUMENT/' }]);
    const refused = await sendWithRetry(provider, notification('fcm', ['odd']), RETRY);
    assert.deepEqual([refused.outcome, refused.attempts], ['refused', 1]);
  });

  test('a service account whose key FCM does not know gets no access token: nothing is sent', async () => {
    const other = new FakeFcm();
    const stranger = new FcmProvider({ serviceAccount: { ...fcm.serviceAccount(), private_key: other.privateKeyPem }, url: fcm.url });
    const before = fcm.requests.length;
    const out = await sendWithRetry(stranger, notification('fcm', ['f9']), RETRY);
    assert.equal(out.outcome, 'refused');
    assert.equal(fcm.requests.length, before);
  });
});
