// Files, search and offline push notifications on a real cluster (the built
// binary: 2 gateways and 2 logic nodes on Redis and PostgreSQL): a file
// uploaded through one logic node's API is stored in PostgreSQL and
// downloaded through the other's, by a member only; search reads PostgreSQL's
// index, fed from the committed stream, and finds only what the user may
// read; a notification for an offline user reaches the push webhook once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connectClient, startTestCluster, until, sleep, type TestClient, type TestCluster } from './helpers.js';
import { downloadFile, requestToken, uploadFile, HttpApiError } from '../../src/client/index.js';

const T = { timeout: 180_000 };
const SECRET = 'cluster-push-secret-0123456789';

describe('files, search and push notifications on a cluster', () => {
  let cluster: TestCluster;
  let hook: Server;
  const notifications: Record<string, unknown>[] = [];
  const clients: TestClient[] = [];
  before(async () => {
    hook = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        notifications.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    cluster = await startTestCluster({
      routing: 'targeted',
      env: {
        LONGLINK_PUSH_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/push`,
        LONGLINK_PUSH_WEBHOOK_SECRET: SECRET,
        LONGLINK_PUSH_COLLAPSE_MS: '300',
      },
    });
  });
  after(async () => {
    for (const c of clients) await c.close();
    await cluster?.stop();
    await new Promise<void>((r) => hook.close(() => r()));
  });
  async function connect(user: string, gateway: string): Promise<TestClient> {
    const c = await connectClient(cluster, user, { gateway, transport: 'tcp' });
    clients.push(c);
    return c;
  }
  async function token(user: string): Promise<string> {
    return (await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: 'files', platform: 'cli' })).token;
  }

  test('a file stored through one node is read through the other, by members only; search finds what each may read; an offline user is notified once', T, async () => {
    const [api1, api2] = [cluster.node('logic-1').httpUrl, cluster.node('logic-2').httpUrl];
    const alice = await connect('alice', 'gw-1');
    const bob = await connect('bob', 'gw-2');
    const bytes = Buffer.from('%PDF-1.4\n% a tiny pdf for the cluster\n');
    const file = await uploadFile(api1, await token('alice'), bytes, { name: 'plan.pdf' });
    assert.equal(file.mime, 'application/pdf');
    await alice.client.send({ to: 'bob', text: 'the quarterly plan', attachments: [file] });
    await until(() => bob.in('u:alice:bob').length === 1, 20_000, () => 'bob gets the file');
    assert.equal(bob.in('u:alice:bob')[0]!.content?.attachments?.[0]?.name, 'plan.pdf');
    const got = await downloadFile(api2, await token('bob'), file.fileId);
    assert.deepEqual(Buffer.from(got.bytes), bytes, 'read back from PostgreSQL through the other node');
    try {
      await downloadFile(api2, await token('carol'), file.fileId);
      assert.fail('carol downloaded it');
    } catch (err) {
      assert.ok(err instanceof HttpApiError);
      assert.equal(err.apiCode, 'FILE_NOT_FOUND');
    }

    const g = await alice.client.createGroup('ops', ['bob']);
    await alice.client.send({ groupId: g.groupId, text: 'quarterly numbers for the group' });
    await alice.client.removeMembers(g.groupId, ['bob']);
    await alice.client.send({ groupId: g.groupId, text: 'quarterly secrets after bob left' });
    await until(async () => (await alice.client.search('quarterly')).hits.length === 3, 20_000, () => 'alice finds all three');
    const bobs = (await bob.client.search('quarter')).hits.map((h) => h.message.text).sort();
    assert.deepEqual(bobs, ['quarterly numbers for the group', 'the quarterly plan'], 'not what was sent after his removal');
    assert.match((await bob.client.search('plan')).hits[0]!.snippet, /\[plan\]/);

    // Bob goes offline: alice's next two messages are one notification.
    await bob.close();
    await sleep(500);
    const before = notifications.length;
    await alice.client.send({ to: 'bob', text: 'are you there?' });
    await alice.client.send({ to: 'bob', text: 'call me' });
    await until(() => notifications.length > before, 20_000, () => 'a notification for bob');
    await sleep(1500);
    const mine = notifications.slice(before).filter((n) => n.user_id === 'bob');
    assert.equal(mine.length, 1, JSON.stringify(mine));
    assert.deepEqual([mine[0]!.conversation_id, mine[0]!.count, mine[0]!.body], ['u:alice:bob', 2, '(2) call me']);
  });
});
