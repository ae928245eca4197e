// `longlink admin shards [--grow N]`: the bus shards of a cluster, through a
// logic node's admin API (GET /api/v1/shards, POST /api/v1/shards): every
// shard's owner, lag and state per topic, one JSON line each; --grow N grows
// the count on the live cluster.
import { UsageError } from './args.js';
import { adminApi } from './admin-api.js';

interface ShardsBody {
  count: number;
  previous: number;
  epoch: number;
  topics: { topic: string; shards: { shard: number; owner: string | null; lag: number; state: string }[] }[];
}

export async function runAdmin(sub: string | undefined, flags: Record<string, string | undefined>): Promise<number> {
  if (sub !== 'shards') throw new UsageError(sub === undefined ? 'admin needs a command: shards' : `unknown admin command ${sub}: shards`);
  const { server, fetcher, headers } = adminApi(flags);
  if (flags.grow !== undefined) {
    const count = Number(flags.grow);
    const res = await fetcher(`${server}/api/v1/shards`, { method: 'POST', headers, body: JSON.stringify({ count }) });
    const body = await res.json() as Record<string, unknown>;
    if (!res.ok) {
      console.error(JSON.stringify(body));
      return 1;
    }
    console.log(JSON.stringify({ type: 'grown', ...body }));
    return 0;
  }
  const res = await fetcher(`${server}/api/v1/shards`, { headers });
  const body = await res.json() as ShardsBody;
  if (!res.ok) {
    console.error(JSON.stringify(body));
    return 1;
  }
  console.log(JSON.stringify({ type: 'shards', count: body.count, previous: body.previous, epoch: body.epoch }));
  for (const t of body.topics) {
    for (const s of t.shards) console.log(JSON.stringify({ type: 'shard', topic: t.topic, shard: s.shard, owner: s.owner, lag: s.lag, state: s.state }));
  }
  return 0;
}
