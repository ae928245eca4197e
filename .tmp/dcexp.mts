import { startDatacenters } from '../src/dev/datacenters.ts';
import { createClient, gatewayPicker, requestToken } from '../src/client/index.ts';
const lines: string[] = [];
const dcs = await startDatacenters({ names: ['a', 'b'], delayMs: 20, gateways: 1, logic: 1, services: { sync: 1 }, routing: 'targeted', shards: 8, leaseMs: 1500, nodeTtlMs: 1500, durable: false,
  env: { LONGLINK_DC_ACK: process.env.ACK ?? 'replicated', LONGLINK_GROUP_ADD_POLICY: 'anyone', LONGLINK_LOG_LEVEL: 'info' }, onLine: (n, l) => lines.push(`[${n}] ${l}`) });
try {
  const a = dcs.dc('a').cluster;
  const mk = async (user: string, api: string) => {
    const c = createClient({ url: gatewayPicker([api], 'tcp'), clientVersion: 'x', token: async () => (await requestToken(api, dcs.adminKey, { user_id: user, device_id: 'd1', platform: 'cli' })).token });
    await c.connect(); return c;
  };
  const alice = await mk('alice', a.apiUrl());
  for (const to of ['bob', 'zed', 'yan', 'kim']) {
    const t0 = Date.now();
    for (let i = 0; i < 5; i++) await alice.send({ to, text: `hi ${i}` });
    console.log(to, 'avg ack ms', (Date.now() - t0) / 5);
  }
  console.log('cut'); dcs.cut('a', 'b');
  const during = (async () => { const t0 = Date.now(); await alice.send({ to: 'bob', text: 'during' }); console.log('during acked after', Date.now() - t0); })();
  await new Promise((r) => setTimeout(r, Number(process.env.CUT_MS ?? 10000)));
  dcs.heal('a', 'b'); console.log('healed');
  await during;
  for (const to of ['bob', 'zed', 'yan', 'kim']) {
    const t0 = Date.now();
    for (let i = 0; i < 3; i++) await Promise.race([alice.send({ to, text: `after ${i}` }), new Promise((_, rej) => setTimeout(() => rej(new Error('stuck ' + to)), 20000))]);
    console.log(to, 'after heal avg ack ms', (Date.now() - t0) / 3);
  }
  await alice.close();
} finally {
  await dcs.stop();
  console.log(lines.filter((l) => /warn|error|"level":(40|50)/.test(l)).map((l) => l.slice(0, 300)).slice(0, 60).join('\n'));
}
