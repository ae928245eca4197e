// A Redis connection of its own for /readyz and /metrics: PING, the uplink
// consumer group's lag and pending entries, downlink stream lengths and the
// shard leases. Read-only, and failing fast: no offline queue and a command
// timeout, so a probe of a stopped or frozen Redis answers "not ready" in
// about a second instead of waiting for it.
//
// Key names are RedisBus's (src/engines/bus-redis.ts): `{p}up:{shard}` read
// by the consumer group `logic`, `{p}down:{node}` and `{p}down:*`,
// `{p}lease:{shard}` holding the owner's node id. One command per key (on a
// Redis Cluster each is in a slot of its own), sent together.
import { openRedis, type RedisClient } from '../engines/redis-shared.js';
import type { BusStats } from './metrics.js';

const GROUP = 'logic';

export class RedisProbe {
  private readonly client: RedisClient;

  constructor(url: string, private readonly prefix = 'll:') {
    this.client = openRedis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1000,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(times * 100, 1000),
    });
    this.client.on('error', () => {
      /* reconnects by itself; probes fail meanwhile */
    });
  }

  async ping(): Promise<void> {
    const answer = await this.client.ping();
    if (answer !== 'PONG') throw new Error(`PING answered ${answer}`);
  }

  /** The shard count once it grew (RedisBus's shard map, one server's key or a cluster's), else undefined. */
  async shardCount(): Promise<number | undefined> {
    const [plain, tagged] = await Promise.all([this.client.hget(`${this.prefix}shardmap`, 'count'), this.client.hget(`${this.prefix}{shards}map`, 'count')]);
    const n = Number(plain ?? tagged);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  }

  /** Owner node id of each shard's lease (null: nobody holds it); `lease` names the kind (`lease:group:` …). */
  async leases(shards: number, lease = 'lease:'): Promise<(string | null)[]> {
    return Promise.all(Array.from({ length: shards }, (_, s) => this.client.get(`${this.prefix}${lease}${s}`)));
  }

  /** What a logic node reports: the uplink group's lag and pending entries per shard, and the shards it owns. */
  async logicStats(shards: number, nodeId: string): Promise<BusStats> {
    const xinfo = Promise.all(Array.from({ length: shards }, (_, s) => this.client.call('XINFO', 'GROUPS', `${this.prefix}up:${s}`).then(
      (reply): [Error | null, unknown] => [null, reply],
      (err: unknown): [Error | null, unknown] => [err as Error, undefined],
    )));
    const [replies, owners] = await Promise.all([xinfo, this.leases(shards)]);
    const upLag = new Map<string, number>();
    const upPending = new Map<string, number>();
    (replies ?? []).forEach(([err, reply], s) => {
      if (err) return; // no stream yet (nothing published to the shard)
      const group = (reply as unknown[][]).map(fields).find((g) => g.name === GROUP);
      if (!group) return;
      if (typeof group.lag === 'number') upLag.set(String(s), group.lag);
      if (typeof group.pending === 'number') upPending.set(String(s), group.pending);
    });
    return { upLag, upPending, shardsOwned: owners.filter((o) => o === nodeId).length };
  }

  /** What a gateway reports: how many entries its downlink streams keep. */
  async gatewayStats(nodeId: string): Promise<BusStats> {
    const [own, broadcast] = await Promise.all([
      this.client.xlen(`${this.prefix}down:${nodeId}`),
      this.client.xlen(`${this.prefix}down:*`),
    ]);
    return { downLength: new Map([['own', own], ['broadcast', broadcast]]) };
  }

  async close(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }
}

/** A flat [name, value, name, value, …] reply as an object. */
function fields(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}
