// Registry on Redis: the live nodes of a cluster, shared by every process.
//
// Key layout ({p} is the key prefix, 'll:' by default):
//   {p}node:{id}       string: JSON NodeInfo, SET … PX ttl, so Redis itself expires it
//   {p}nodes:{role}    sorted set: node id, scored by its expiry time (ms, Redis clock),
//                      one per role of NODE_ROLES (gateway, logic, auth, message, …)
// The node key is the truth (a node is live while its key exists); the sorted
// set is the per-role index live() walks (all() walks every role's), and
// entries whose score has passed (or whose key is gone) are pruned on the way.
// A node is in one role's index only: announcing it under a role takes it out
// of every other role's index. Expiry times come from Redis's own clock (TIME
// inside the scripts), so processes with skewed clocks agree. announce(),
// live() and all() are each one Lua script: atomic and one round trip.
//
// The scripts touch keys they compute, so on a Redis Cluster every key above
// carries the hash tag `{reg}` after the prefix (`{p}{reg}node:{id}`): one slot.
//
// Ownership: a client passed in belongs to the caller, and close() leaves it
// open; with options {url} this class creates its own client and close() quits it.
import { Script, engineClient, isCluster, releaseClient, type RedisClient, type RedisConnectionOptions } from './redis-shared.js';
import { NODE_ROLES, byRoleThenId, type NodeInfo, type NodeRole, type Registry } from './registry.js';

export type RedisRegistryOptions = RedisConnectionOptions;

const ROLES: readonly NodeRole[] = NODE_ROLES;

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: node key, its role's index, then the other roles' indexes. ARGV: id, JSON, ttl ms.
// Returns 1 when the node was live before (its key existed), else 0.
const ANNOUNCE = new Script(`${NOW}
local ttl = tonumber(ARGV[3])
local was = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return was
`);

// KEYS: one or more roles' indexes. ARGV: prefix. Returns the JSON of every
// live node listed in them (live(): one role's index; all(): every role's).
const LIVE = new Script(`${NOW}
local out = {}
for _, index in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  for _, id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local v = redis.call('GET', ARGV[1] .. 'node:' .. id)
    if v then out[#out + 1] = v else redis.call('ZREM', index, id) end
  end
end
return out
`);

/** Only the fields of a NodeInfo; absent addresses and services stay absent. */
function encode(n: NodeInfo): string {
  const out: NodeInfo = { id: n.id, role: n.role, load: n.load, startedAtMs: n.startedAtMs };
  if (n.tcpUrl !== undefined) out.tcpUrl = n.tcpUrl;
  if (n.wsUrl !== undefined) out.wsUrl = n.wsUrl;
  if (n.httpUrl !== undefined) out.httpUrl = n.httpUrl;
  if (n.services !== undefined) out.services = [...n.services];
  return JSON.stringify(out);
}

/** The nodes among raw JSON entries, each once (by id); what does not parse, or names a role this version does not know, is skipped. */
function decode(raw: string[], role?: NodeRole): NodeInfo[] {
  const seen = new Set<string>();
  const out: NodeInfo[] = [];
  for (const json of raw) {
    let node: NodeInfo;
    try {
      node = JSON.parse(json) as NodeInfo;
    } catch {
      continue; // not a node
    }
    if (typeof node !== 'object' || node === null || typeof node.id !== 'string' || seen.has(node.id)) continue;
    if (role !== undefined ? node.role !== role : !ROLES.includes(node.role)) continue;
    seen.add(node.id);
    out.push(node);
  }
  return out;
}

export class RedisRegistry implements Registry {
  private readonly client: RedisClient;
  private readonly owned: boolean;
  private readonly prefix: string;
  private closed = false;

  /**
   * @param client an ioredis client, which stays the caller's (close() does not
   *   close it), or options, from which this instance creates and owns its client.
   * @param prefix key prefix when a client is passed (options carry their own). @default 'll:'
   */
  constructor(client: RedisClient | RedisRegistryOptions, prefix?: string) {
    ({ client: this.client, owned: this.owned, prefix: this.prefix } = engineClient(client, prefix));
    // On a Redis Cluster every key of the registry is in one slot (the scripts name several): a few keys per node, written every few seconds.
    this.scope = isCluster(this.client) ? `${this.prefix}{reg}` : this.prefix;
  }

  private readonly scope: string;

  private nodeKey(id: string): string {
    return `${this.scope}node:${id}`;
  }

  private roleKey(role: NodeRole): string {
    return `${this.scope}nodes:${role}`;
  }

  private check(): void {
    if (this.closed) throw new Error('registry closed');
  }

  async announce(node: NodeInfo, ttlMs: number): Promise<boolean> {
    this.check();
    // A node that changed role leaves the other roles' indexes.
    const others = ROLES.filter((r) => r !== node.role).map((r) => this.roleKey(r));
    const ttl = Math.max(1, Math.ceil(ttlMs));
    return (await ANNOUNCE.run(this.client, [this.nodeKey(node.id), this.roleKey(node.role), ...others], [node.id, encode(node), ttl])) === 1;
  }

  async remove(id: string): Promise<void> {
    this.check();
    const multi = this.client.multi().del(this.nodeKey(id));
    for (const role of ROLES) multi.zrem(this.roleKey(role), id);
    await multi.exec();
  }

  async live(role: NodeRole): Promise<NodeInfo[]> {
    this.check();
    const raw = (await LIVE.run(this.client, [this.roleKey(role)], [this.scope])) as string[];
    return decode(raw, role).sort((a, b) => a.load - b.load || a.id.localeCompare(b.id));
  }

  async all(): Promise<NodeInfo[]> {
    this.check();
    const raw = (await LIVE.run(this.client, ROLES.map((r) => this.roleKey(r)), [this.scope])) as string[];
    return decode(raw).sort(byRoleThenId);
  }

  /** Quits the client if this instance created it; a client passed in stays open (the caller's). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await releaseClient(this.client, this.owned);
  }
}
