// A gateway cut off from the cluster past its registry TTL and past the
// downlink's age bound (SIGSTOP) comes back without kicking its clients: it
// binds their sessions again and tells them to sync — except a client whose
// token was revoked meanwhile (the announcement was trimmed before the
// gateway could read it): that one is kicked TOKEN_REVOKED.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenService } from '../../src/auth/tokens.js';
import { openRedis } from '../../src/engines/redis-shared.js';
import { RedisSessions } from '../../src/engines/sessions-redis.js';
import { ErrorCode } from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { sendOk } from '../logic/support.js';
import { sleep, startTestCluster, until, type TestCluster } from './helpers.js';

const T = { timeout: 120_000 };

/** A raw client logged in on `gateway` as `user` (device d1). */
async function loginOn(cluster: TestCluster, gateway: string, user: string): Promise<RawClient> {
  const c = await RawClient.connect(cluster.node(gateway).tcpUrl!);
  await c.login((await new TokenService(cluster.tokenSecret).issue(user, 'd1', 'cli', 3600)).token);
  return c;
}

describe('a gateway that rejoins the cluster', () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startTestCluster({
      routing: 'targeted', gateways: 2, logic: 1,
      env: { LONGLINK_BUS_DOWN_MAX_AGE_MS: '5000' },
    });
  });

  after(async () => {
    await cluster?.stop();
  });

  test('keeps its clients (resync, pushes go on), and kicks one revoked while it was away', T, async () => {
    const login = (gateway: string, user: string) => loginOn(cluster, gateway, user);
    const alice = await login('gw-1', 'alice');
    const bob = await login('gw-1', 'bob');
    const carol = await login('gw-2', 'carol');
    // Clients ping every 300 ms (the gateways want one within 3 s); gw-1 reads what they sent while it was held only once it runs again.
    const pinger = setInterval(() => {
      for (const c of [alice, bob, carol]) if (!c.closed) c.send({ case: 'ping', value: {} });
    }, 300);

    try {
      cluster.signal('gw-1', 'SIGSTOP');
      try {
        await sleep(2500); // past the registry TTL (1.5 s): the reaper drops gw-1's sessions
        const res = await fetch(`${cluster.apiUrl()}/api/v1/revoke`, {
          method: 'POST', headers: { authorization: `Bearer ${cluster.adminKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ user_id: 'alice' }),
        });
        assert.equal(res.status, 200);
        await sleep(7000); // the revocation's announcement is past the downlink's 5 s age bound: trimmed
      } finally {
        cluster.signal('gw-1', 'SIGCONT');
      }
      await until(() => alice.frames.some((f) => f.body.case === 'kick'), 15_000, () => `alice is kicked: ${alice.describe().slice(-300)} ${cluster.logs('gw-1')}`);
      const kick = alice.frames.find((f) => f.body.case === 'kick')!;
      assert.ok(kick.body.case === 'kick');
      assert.equal(kick.body.value.code, ErrorCode.TOKEN_REVOKED, 'revoked while the gateway was away');
      assert.equal(kick.body.value.reconnect, false);

      await until(() => bob.frames.some((f) => f.body.case === 'event' && f.body.value.body.case === 'resync'), 15_000,
        () => `bob is told to sync: ${bob.describe().slice(-300)}`);
      assert.ok(!bob.frames.some((f) => f.body.case === 'kick'), `bob is not kicked: ${bob.describe().slice(-300)}`);
      assert.equal(bob.closed, false);
      await sendOk(carol, { toUser: 'bob', text: 'after the pause' });
      await until(() => bob.frames.some((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'after the pause')), 10_000,
        () => `bob gets the push through gw-1 again: ${bob.describe().slice(-300)}`);
      assert.ok(!bob.frames.some((f) => f.body.case === 'error' && f.body.value.code === ErrorCode.HEARTBEAT_TIMEOUT), 'not timed out for the silence of its own gateway');
      // Its /metrics count the rejoin and the users it looked up (alice and bob), and the other gateway none.
      const metric = async (gateway: string, line: string) => {
        const body = await (await fetch(`${cluster.node(gateway).httpUrl}/metrics`)).text();
        return Number(body.split('\n').find((l) => l.startsWith(`${line} `))?.split(' ')[1] ?? NaN);
      };
      assert.ok(await metric('gw-1', 'longlink_gateway_rejoins_total{kind="rejoin"}') >= 1, 'gw-1 counts its rejoin');
      assert.ok(await metric('gw-1', 'longlink_gateway_rejoin_lookups_total') >= 2, 'gw-1 counts the users it looked up');
      assert.equal(await metric('gw-2', 'longlink_gateway_rejoins_total{kind="rejoin"}'), 0, 'gw-2 did not rejoin');
    } finally {
      clearInterval(pinger);
      for (const c of [alice, bob, carol]) c.close();
    }
  });
});

describe('a reaper pass that lands after a gateway rejoined', () => {
  let cluster: TestCluster;

  before(async () => {
    cluster = await startTestCluster({ routing: 'targeted', gateways: 2, logic: 1 });
  });

  after(async () => {
    await cluster?.stop();
  });

  test('its dropped sessions are bound again at the next announce, and the clients told to sync', T, async () => {
    const login = (gateway: string, user: string) => loginOn(cluster, gateway, user);
    const alice = await login('gw-1', 'alice');
    const carol = await login('gw-2', 'carol');
    const redis = openRedis(cluster.redis.url);
    redis.on('error', () => undefined);
    const sessions = new RedisSessions(redis);
    const pinger = setInterval(() => {
      for (const c of [alice, carol]) if (!c.closed) c.send({ case: 'ping', value: {} });
    }, 300);
    const resyncs = () => carol.frames.filter((f) => f.body.case === 'event' && f.body.value.body.case === 'resync').length;
    try {
      // gw-2's registry entry is gone (as when Redis lost it): its next announce finds it so and it rejoins.
      await redis.del('ll:node:gw-2');
      await until(() => resyncs() >= 1, 15_000, () => `carol is told to sync: ${carol.describe().slice(-300)} ${cluster.logs('gw-2')}`);
      // A reaper pass that read the registry before gw-2's entry came back drops its sessions only now, after the rejoin looked.
      assert.equal(await sessions.dropNode('gw-2'), 1, 'the late drop took carol\'s session');
      await until(async () => ((await sessions.lookup(['carol'])).get('carol')?.length ?? 0) === 1, 10_000,
        () => `carol's session is bound again: ${cluster.logs('gw-2')}`);
      await until(() => resyncs() >= 2, 10_000, () => `carol is told to sync again: ${carol.describe().slice(-300)}`);
      await sendOk(alice, { toUser: 'carol', text: 'after the late drop' });
      await until(() => carol.frames.some((f) => f.body.case === 'push' && f.body.value.messages.some((m) => m.text === 'after the late drop')), 10_000,
        () => `carol gets pushes again: ${carol.describe().slice(-300)}`);
      assert.equal(carol.closed, false);
    } finally {
      clearInterval(pinger);
      for (const c of [alice, carol]) c.close();
      redis.disconnect();
    }
  });
});
