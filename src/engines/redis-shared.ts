// What the Redis engines share: how to reach Redis (one server, or a Redis
// Cluster), Lua scripts run by SHA, who owns the client, and the hash tags
// that keep a script's keys in one slot.
//
// An address is `redis://…` (or `rediss://…`) for one server, or
// `redis-cluster://host:port,host:port,…` for a Redis Cluster, named by some
// of its nodes (seeds: the client finds the others). Every engine takes the
// same string, so a role is pointed at a cluster by its configuration alone
// (LONGLINK_REDIS_CLUSTER).
//
// Redis Cluster runs a script or a multi-key command only when all its keys
// hash to one slot. A key's slot is that of its hash tag, the part between
// the first `{` and the next `}`: keys that must meet carry the same tag
// (`tagged()`), and the key prefix may hold no braces of its own.
import { createHash } from 'node:crypto';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { clusterNodesOf } from './redis-address.js';

export { clusterNodesOf, clusterUrl } from './redis-address.js';

/** A client of one Redis server or of a Redis Cluster: the same commands. */
export type RedisClient = Redis | Cluster;

export function isCluster(client: RedisClient): client is Cluster {
  return (client as Cluster).isCluster === true;
}

/**
 * A client for `url`. For a cluster, the options are each node's
 * connection's, and the cluster retries a command through a failover
 * (a node that went away, CLUSTERDOWN, TRYAGAIN) for several seconds before
 * failing it, long enough for a replica to be promoted.
 */
export function openRedis(url: string, options: RedisOptions = {}): RedisClient {
  const nodes = clusterNodesOf(url);
  if (!nodes) return new Redis(url, options);
  const { enableOfflineQueue, enableAutoPipelining, lazyConnect, retryStrategy, ...redisOptions } = options;
  const cluster: ClusterOptions = {
    enableOfflineQueue: enableOfflineQueue ?? true,
    enableAutoPipelining: enableAutoPipelining ?? false,
    lazyConnect: lazyConnect ?? false,
    redisOptions,
    clusterRetryStrategy: retryStrategy ? (times) => retryStrategy(times) : (times) => Math.min(100 + times * 50, 2000),
    retryDelayOnFailover: 250,
    retryDelayOnClusterDown: 250,
    retryDelayOnTryAgain: 100,
    maxRedirections: 64,
    slotsRefreshTimeout: 2000,
  };
  return new Cluster(nodes, cluster);
}

/**
 * `{prefix}{tag}rest`: keys with the same tag hash to the same slot. The
 * prefix is the caller's (checked by `checkPrefix`), the tag ours.
 */
export function tagged(prefix: string, tag: string, rest = ''): string {
  return `${prefix}{${tag}}${rest}`;
}

/** A key prefix with braces would move every key's hash tag: refused. */
export function checkPrefix(prefix: string): string {
  if (/[{}]/.test(prefix)) throw new Error(`Redis key prefix ${JSON.stringify(prefix)}: no braces (they would change which keys share a slot)`);
  return prefix;
}

/** A Lua script run with EVALSHA, falling back to EVAL when Redis lost its script cache (restart, SCRIPT FLUSH, another cluster node). */
export class Script {
  readonly sha: string;
  constructor(readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(client: RedisClient, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return client.eval(this.lua, keys.length, ...keys, ...args);
      throw err;
    }
  }
}

/** Options from which an engine creates (and then owns) its client. */
export interface RedisConnectionOptions {
  /** `redis://…` for one server, `redis-cluster://host:port,…` for a Redis Cluster. */
  url: string;
  /** Key prefix, so several clusters (or tests) can share one Redis. No braces. @default 'll:' */
  prefix?: string;
  /** Extra options for the client the engine creates. */
  redis?: RedisOptions;
}

/**
 * An engine's client: a client passed in stays the caller's (`owned` false:
 * close() leaves it open); from options the engine creates its own.
 */
export function engineClient(client: RedisClient | RedisConnectionOptions, prefix?: string): { client: RedisClient; owned: boolean; prefix: string } {
  if (typeof (client as RedisClient).evalsha === 'function') return { client: client as RedisClient, owned: false, prefix: checkPrefix(prefix ?? 'll:') };
  const options = client as RedisConnectionOptions;
  const created = openRedis(options.url, { ...options.redis });
  created.on('error', () => {
    /* reconnects by itself; commands wait in the offline queue */
  });
  return { client: created, owned: true, prefix: checkPrefix(options.prefix ?? prefix ?? 'll:') };
}

/** Quits the client if the engine created it. */
export async function releaseClient(client: RedisClient, owned: boolean): Promise<void> {
  if (owned) await client.quit().catch(() => client.disconnect());
}

/** FNV-1a: the same shard for a key in every process. */
export function shardOf(key: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/** CRC16 (XMODEM), as Redis Cluster hashes a key to one of its 16,384 slots. */
const CRC16 = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let k = 0; k < 8; k++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    table[i] = c;
  }
  return table;
})();

/** The Redis Cluster slot of a key (its hash tag's, when it has one). */
export function slotOf(key: string): number {
  let s = key;
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) s = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(s)) crc = ((crc << 8) & 0xffff) ^ CRC16[((crc >> 8) ^ byte) & 0xff]!;
  return crc % 16384;
}
