// TLS on the cluster roles: a logic node (https API) and a gateway node (tls://
// and wss://) on real Redis and PostgreSQL, in this process. Discovery over
// https lists the gateway's TLS URLs from the registry, and SDK clients that
// trust the CA find the gateway and exchange messages through it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, gatewayPicker, listGateways, nodeFetch, requestToken, type LonglinkClient } from '../../src/client/index.js';
import { loadServerConfig } from '../../src/config.js';
import { startGateway, type RunningGateway } from '../../src/roles/gateway.js';
import { startLogic, type RunningLogic } from '../../src/roles/logic.js';
import { ADMIN_KEY, TOKEN_SECRET, waitFor } from '../helpers/server.js';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../helpers/services.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/tls.js';

const T = { timeout: 90_000 };

let certs: TestCertificates;
let redis: RedisServer;
let postgres: PostgresServer;
let logic: RunningLogic;
let gateway: RunningGateway;
let dataDir: string;

before(async () => {
  certs = makeTestCertificates();
  dataDir = mkdtempSync(join(tmpdir(), 'longlink-cluster-tls-'));
  [redis, postgres] = await Promise.all([startRedis(), startPostgres()]);
  const config = (nodeId: string) => loadServerConfig({
    'node-id': nodeId, 'http-port': '0', 'tcp-port': '0', 'data-dir': dataDir,
    'admin-key': ADMIN_KEY, 'token-secret': TOKEN_SECRET, 'redis-url': redis.url, 'postgres-url': postgres.url,
    'bus-shards': '4', 'log-level': 'warn', ...certs.serverFlags,
  }, {});
  logic = await startLogic(config('lg-tls'));
  gateway = await startGateway(config('gw-tls'));
});

after(async () => {
  await gateway?.stop();
  await logic?.stop();
  await redis?.stop();
  await postgres?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  certs?.remove();
});

test('cluster roles with TLS: discovery over https lists tls:// and wss://; clients trusting the CA exchange messages', T, async () => {
  assert.match(logic.httpUrl, /^https:\/\//);
  const http = { fetch: nodeFetch({ ca: certs.ca }) };
  // The gateway registers itself at start; the registry is read through the logic node's API.
  let gateways: Awaited<ReturnType<typeof listGateways>> = [];
  const deadline = Date.now() + 10_000;
  while (gateways.length === 0 && Date.now() < deadline) {
    gateways = await listGateways(logic.httpUrl, http);
    if (gateways.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(gateways.map((g) => [g.id, g.tcp_url, g.ws_url]), [['gw-tls', gateway.tcpUrl, gateway.wsUrl]]);
  assert.match(gateway.tcpUrl, /^tls:\/\//);
  assert.match(gateway.wsUrl, /^wss:\/\//);

  const clients: LonglinkClient[] = [];
  const got: Record<string, string[]> = { alice: [], bob: [] };
  for (const [user, transport] of [['alice', 'tcp'], ['bob', 'ws']] as const) {
    const client = createClient({
      url: gatewayPicker(logic.httpUrl, transport, http),
      token: async () => (await requestToken(logic.httpUrl, ADMIN_KEY, { user_id: user, device_id: 'd' }, http)).token,
      ca: certs.ca,
      reconnect: false,
    });
    client.on('message', (m) => got[user]!.push(m.text));
    clients.push(client);
  }
  const [alice, bob] = clients as [LonglinkClient, LonglinkClient];
  try {
    assert.equal((await alice.connect()).nodeId, 'gw-tls');
    assert.equal((await bob.connect()).nodeId, 'gw-tls');
    await alice.send({ to: 'bob', text: 'tls through the cluster' });
    await bob.send({ to: 'alice', text: 'wss through the cluster' });
    await waitFor(() => got.alice!.length > 0 && got.bob!.length > 0, 10_000, 'both messages');
    assert.deepEqual(got, { alice: ['wss through the cluster'], bob: ['tls through the cluster'] });
  } finally {
    await alice.close();
    await bob.close();
  }
});
