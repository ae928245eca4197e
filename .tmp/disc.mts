import { startDatacenters } from '../src/dev/datacenters.ts';
import { discover, createClient, gatewayPicker, requestToken } from '../src/client/index.ts';
const dcs = await startDatacenters({ names: ['a', 'b'], delayMs: 20, gateways: 1, logic: 1, services: { sync: 1 }, routing: 'targeted', shards: 8, leaseMs: 1500, nodeTtlMs: 1500, durable: false,
  env: { LONGLINK_DC_ACK: 'replicated', LONGLINK_GROUP_ADD_POLICY: 'anyone' }, onLine: () => undefined });
try {
  for (const d of dcs.dcs) console.log(d.name, d.cluster.apiUrl(), JSON.stringify(await discover(d.cluster.apiUrl())));
  const mk = async (user: string, apis: string[]) => {
    const c = createClient({ url: gatewayPicker(apis, 'tcp'), clientVersion: 'x', resendAfterMs: 3000, token: async () => (await requestToken(apis[0]!, dcs.adminKey, { user_id: user, device_id: 'd1', platform: 'cli' })).token });
    c.on('message', (m) => console.log(user, 'got', m.text, m.seq));
    await c.connect(); await c.sync(); return c;
  };
  const A = dcs.dc('a').cluster.apiUrl(), B = dcs.dc('b').cluster.apiUrl();
  const x = await mk('cuta-a6', [A, B]);
  const y = await mk('cuta-b6', [B, A]);
  const loop = async (c: typeof x, to: string, tag: string) => {
    for (let i = 0; i < 6; i++) {
      const t0 = Date.now();
      const a = await Promise.race([c.send({ to, text: `${tag}${i}` }), new Promise<never>((_, j) => setTimeout(() => j(new Error(tag + ' stuck at ' + i)), 20000))]);
      console.log(tag, 'acked', a.seq, Date.now() - t0);
    }
  };
  await Promise.all([loop(x, 'cuta-b6', 'x'), loop(y, 'cuta-a6', 'y')]);
  await new Promise((r) => setTimeout(r, 2000));
  for (const d of dcs.dcs) for (const n of d.cluster.nodes) {
    if (n.role === 'gateway') continue;
    const text = await (await fetch(`${n.httpUrl}/metrics`)).text();
    console.log(n.name, text.split('\n').filter((l) => /^longlink_dc_/.test(l)).join(' | '));
  }
} catch (e) { console.log('ERR', e); } finally { await dcs.stop(); }
