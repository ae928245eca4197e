import { startDatacenters } from '../src/dev/datacenters.ts';
import { linkCut, dcLoss } from '../faults/dc/scenarios.ts';
const lines: string[] = [];
const dcs = await startDatacenters({ names: ['a', 'b'], delayMs: 20, gateways: 1, logic: 1, services: { sync: 1 }, routing: 'targeted', shards: 8, leaseMs: 1500, nodeTtlMs: 1500, durable: false,
  env: { LONGLINK_DC_ACK: process.env.ACK ?? 'replicated', LONGLINK_GROUP_ADD_POLICY: 'anyone', LONGLINK_PING_INTERVAL_MS: '1000', LONGLINK_RATE_LIMIT: '5000', LONGLINK_RATE_BURST: '10000' }, onLine: (n, l) => lines.push(`[${n}] ${l}`) });
try {
  const t0 = Date.now();
  const v = process.env.WHAT === 'loss' ? await dcLoss(dcs, (process.env.ACK ?? 'replicated') as 'replicated' | 'local', (l) => console.log(Date.now() - t0, l))
    : await linkCut(dcs, 'replicated', Number(process.env.CUT_MS ?? 10000), (l) => console.log(Date.now() - t0, l));
  console.log(Date.now() - t0, JSON.stringify(v));
  for (const d of dcs.dcs) for (const n of d.cluster.nodes) {
    if (n.role === 'gateway') continue;
    const text = await (await fetch(`${n.httpUrl}/metrics`)).text();
    console.log(n.name, text.split('\n').filter((l) => /^longlink_(dc_|consumer_lag|dead)/.test(l)).join(' | '));
  }
  const pg = (await import('pg')).default;
  for (const d of dcs.dcs) {
    const db = new pg.Client({ connectionString: d.cluster.postgres.url }); await db.connect();
    const r = await db.query("SELECT conversation_id, count(*)::int n, max(seq)::int m FROM messages GROUP BY 1 ORDER BY 1");
    console.log(d.name, JSON.stringify(r.rows));
    await db.end();
  }
} finally {
  await dcs.stop();
  console.log(lines.filter((l) => /warn|error|"level":(40|50)/.test(l)).map((l) => l.slice(0, 400)).slice(0, 60).join('\n'));
}
