// Sessions on Redis, shared by every gateway and logic node of a cluster.
//
// Key layout ({p} is the key prefix, 'll:' by default):
//   {p}sess:{user}        hash: deviceId → JSON SessionInfo (the source of truth)
//   {p}node-sess:{node}   set: one member per session bound on that node, the index dropNode walks
//   {p}node-drop:{node}   set: the part of a node's index a running dropNode() is still removing
//   {p}sess-nodes         set: nodes that may hold sessions (added by bind, removed when a
//                         dropNode() finds the node's index and drop set both empty)
//   {p}revoked:{user}     hash: deviceId or '*' (every device) → revocation time, ms;
//                         expires with the longest token lifetime
// A set member names (user, device) as `{byte length of user}:{user}{device}`,
// which no user or device id can make ambiguous.
//
// Every write is one Lua script, so it is atomic and one round trip:
// - bind: read the previous session of (user, device), move the device from its
//   old node's index to the new one, write the new session, return the old one.
// - unbind: remove only if the stored session still has that node and connId.
// - dropNode: first moves the node's index to {p}node-drop:{node} (binds that
//   come later land in a fresh index and are not dropped), then removes it in
//   batches (SPOP n), each session only if it is still on that node, so a large
//   node never blocks Redis for long. bind and unbind also take their member out
//   of the old node's drop set, so a device that re-bound elsewhere (or on the
//   same, restarted node) while a drop runs is never removed. A dropNode that
//   died half-way is finished by the next dropNode of that node.
// lookup is one pipeline of HGETALL.
//
// On a Redis Cluster a script's keys must share a slot, and these touch keys
// they compute (the old node's index, a dropped member's hash). So there every
// key above is kept per bucket of users (256 buckets, by a hash of the user
// id), under the bucket's hash tag: `{p}{s17}sess:{user}`, `{p}{s17}node-sess:{node}`
// (the node's sessions of that bucket's users), `{p}{s17}sess-nodes`, … A
// user's scripts stay in the user's bucket; dropNode() walks the buckets, and
// nodes() is their union. On one server there is one bucket and no tag: the
// layout above, unchanged.
//
// Ownership: a client passed in belongs to the caller, and close() leaves it
// open; with options {url} this class creates its own client and close() quits it.
import { Script, engineClient, isCluster, releaseClient, shardOf, type RedisClient, type RedisConnectionOptions } from './redis-shared.js';
import type { BindResult, SessionInfo, Sessions } from './sessions.js';

export interface RedisSessionsOptions extends RedisConnectionOptions {
  /** Sessions removed per dropNode() script call. @default 1000 */
  dropBatch?: number;
}

// Decodes a stored session's JSON, or nil when it is not a session.
const DECODE = `
local function decode(raw)
  local ok, s = pcall(cjson.decode, raw)
  if ok and type(s) == 'table' then return s end
  return nil
end
`;

// The bind itself, shared by BIND and BIND_UNLESS_REVOKED: takes the device out of its old node's
// index, writes the new session; leaves the replaced session's JSON (or false) in `old`.
// KEYS: user hash, new node's index, the node list. ARGV: device, session JSON, member, the user's bucket's
// key prefix (scope()), new node.
const BIND_BODY = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local s = decode(old)
  if s and type(s.node) == 'string' then
    redis.call('SREM', ARGV[4] .. 'node-sess:' .. s.node, ARGV[3])
    redis.call('SREM', ARGV[4] .. 'node-drop:' .. s.node, ARGV[3])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
`;

// KEYS and ARGV: as BIND_BODY. Returns the replaced session's JSON, or nil.
const BIND = new Script(`${DECODE}${BIND_BODY}
return old
`);

// bind, unless a revocation of the user ('*') or the device is at or after the token's issue time.
// KEYS: as BIND_BODY, then the user's revocations. ARGV: as BIND_BODY, then the issue time.
// Returns {0, revoked before} or {1, the previous session or nil, the user's sessions as HGETALL}.
const BIND_UNLESS_REVOKED = new Script(`${DECODE}
local before = 0
for _, v in ipairs(redis.call('HMGET', KEYS[4], '*', ARGV[1])) do
  local n = v and tonumber(v)
  if n and n > before then before = n end
end
if tonumber(ARGV[6]) <= before then return {0, tostring(before)} end
${BIND_BODY}
return {1, old or false, redis.call('HGETALL', KEYS[1])}
`);

// KEYS: user hash, node's index, node's drop set. ARGV: device, node, connId, member.
const UNBIND = new Script(`${DECODE}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local s = decode(cur)
if not s or s.node ~= ARGV[2] or s.connId ~= tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('SREM', KEYS[3], ARGV[4])
return 1
`);

// KEYS: node's index, node's drop set, the node list (one bucket's). ARGV: the bucket's key prefix, node, batch
// size, '1' on the first call.
// Returns {removed, left in the drop set}.
const DROP = new Script(`${DECODE}
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
  redis.call('DEL', KEYS[1])
end
local removed = 0
local members = redis.call('SPOP', KEYS[2], tonumber(ARGV[3]))
for _, m in ipairs(members) do
  local colon = string.find(m, ':', 1, true)
  if colon then
    local len = tonumber(string.sub(m, 1, colon - 1))
    if len then
      local user = string.sub(m, colon + 1, colon + len)
      local device = string.sub(m, colon + len + 1)
      local key = ARGV[1] .. 'sess:' .. user
      local cur = redis.call('HGET', key, device)
      if cur then
        local s = decode(cur)
        if s and s.node == ARGV[2] then
          redis.call('HDEL', key, device)
          removed = removed + 1
        end
      end
    end
  end
end
local left = redis.call('SCARD', KEYS[2])
if left == 0 and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return {removed, left}
`);

// KEYS: the user's revocation hash. ARGV: field, time, ttl ms. The time only moves forward, the TTL only grows.
const REVOKE = new Script(`
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
`);

/** Buckets of users on a Redis Cluster (see the top of this file). */
const SESSION_BUCKETS = 256;

/** `f` over `items`, at most `limit` at a time; results in order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!);
    }
  }));
  return out;
}

/** Only the fields of a SessionInfo, in a fixed order. */
function encode(s: SessionInfo): string {
  const { userId, deviceId, platform, node, connId, loginAtMs } = s;
  return JSON.stringify({ userId, deviceId, platform, node, connId, loginAtMs });
}

export class RedisSessions implements Sessions {
  private readonly client: RedisClient;
  private readonly owned: boolean;
  private readonly prefix: string;
  private readonly dropBatch: number;
  /** Buckets of users, each its own hash tag (see the top of this file): 1 (no tag) on one server. */
  private readonly buckets: number;
  private closed = false;

  /**
   * @param client an ioredis client, which stays the caller's (close() does not
   *   close it), or options, from which this instance creates and owns its client.
   * @param prefix key prefix when a client is passed (options carry their own). @default 'll:'
   */
  constructor(client: RedisClient | RedisSessionsOptions, prefix?: string) {
    ({ client: this.client, owned: this.owned, prefix: this.prefix } = engineClient(client, prefix));
    this.dropBatch = this.owned ? Math.max(1, Math.floor((client as RedisSessionsOptions).dropBatch ?? 1000)) : 1000;
    this.buckets = isCluster(this.client) ? SESSION_BUCKETS : 1;
  }

  /** The key prefix of bucket b: where its users' keys and its part of each node's index are. */
  private scope(b: number): string {
    return this.buckets === 1 ? this.prefix : `${this.prefix}{s${b}}`;
  }

  private bucketOf(userId: string): number {
    return this.buckets === 1 ? 0 : shardOf(userId, this.buckets);
  }

  private userKey(userId: string): string {
    return `${this.scope(this.bucketOf(userId))}sess:${userId}`;
  }

  private revokedKey(userId: string): string {
    return `${this.scope(this.bucketOf(userId))}revoked:${userId}`;
  }

  private nodeKey(node: string, b: number): string {
    return `${this.scope(b)}node-sess:${node}`;
  }

  private dropKey(node: string, b: number): string {
    return `${this.scope(b)}node-drop:${node}`;
  }

  private nodesKey(b: number): string {
    return `${this.scope(b)}sess-nodes`;
  }

  private member(userId: string, deviceId: string): string {
    return `${Buffer.byteLength(userId)}:${userId}${deviceId}`;
  }

  private check(): void {
    if (this.closed) throw new Error('sessions closed');
  }

  async bind(session: SessionInfo): Promise<SessionInfo | undefined> {
    this.check();
    const b = this.bucketOf(session.userId);
    const previous = await BIND.run(
      this.client,
      [this.userKey(session.userId), this.nodeKey(session.node, b), this.nodesKey(b)],
      [session.deviceId, encode(session), this.member(session.userId, session.deviceId), this.scope(b), session.node],
    );
    return typeof previous === 'string' ? (JSON.parse(previous) as SessionInfo) : undefined;
  }

  async bindUnlessRevoked(session: SessionInfo, issuedAtMs: number): Promise<BindResult> {
    this.check();
    const b = this.bucketOf(session.userId);
    const reply = await BIND_UNLESS_REVOKED.run(
      this.client,
      [this.userKey(session.userId), this.nodeKey(session.node, b), this.nodesKey(b), this.revokedKey(session.userId)],
      [session.deviceId, encode(session), this.member(session.userId, session.deviceId), this.scope(b), session.node, Math.floor(issuedAtMs)],
    ) as [number, string | null, string[]?];
    if (Number(reply[0]) === 0) return { bound: false, revokedBeforeMs: Number(reply[1]) };
    const sessions: SessionInfo[] = [];
    const all = reply[2] ?? [];
    for (let i = 1; i < all.length; i += 2) {
      try {
        sessions.push(JSON.parse(all[i]!) as SessionInfo);
      } catch {
        // not a session (written by something else): skipped, as lookup() does
      }
    }
    return { bound: true, previous: typeof reply[1] === 'string' ? (JSON.parse(reply[1]) as SessionInfo) : undefined, sessions };
  }

  async unbind(userId: string, deviceId: string, node: string, connId: number): Promise<boolean> {
    this.check();
    const b = this.bucketOf(userId);
    const removed = await UNBIND.run(
      this.client,
      [this.userKey(userId), this.nodeKey(node, b), this.dropKey(node, b)],
      [deviceId, node, connId, this.member(userId, deviceId)],
    );
    return removed === 1;
  }

  async lookup(userIds: readonly string[]): Promise<Map<string, SessionInfo[]>> {
    this.check();
    const out = new Map<string, SessionInfo[]>();
    const users = [...new Set(userIds)];
    if (users.length === 0) return out;
    // One HGETALL per user, sent together (a pipeline on one server; in a cluster the users' keys are in many slots).
    const results = isCluster(this.client)
      ? await Promise.all(users.map((userId) => this.client.hgetall(this.userKey(userId)).then((d): [null, unknown] => [null, d])))
      : (await this.client.pipeline(users.map((userId) => ['hgetall', this.userKey(userId)])).exec()) ?? [];
    for (const [i, userId] of users.entries()) {
      const [err, devices] = results[i] ?? [new Error('no reply'), null];
      if (err) throw err;
      const list: SessionInfo[] = [];
      for (const raw of Object.values((devices ?? {}) as Record<string, string>)) {
        try {
          list.push(JSON.parse(raw) as SessionInfo);
        } catch {
          /* not a session: skip */
        }
      }
      if (list.length > 0) out.set(userId, list.sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0)));
    }
    return out;
  }

  async revoke(userId: string, deviceId: string | undefined, beforeMs: number, ttlMs: number): Promise<void> {
    this.check();
    await REVOKE.run(this.client, [this.revokedKey(userId)], [deviceId ?? '*', Math.floor(beforeMs), Math.max(1, Math.ceil(ttlMs))]);
  }

  async revokedBefore(userId: string, deviceId: string): Promise<number> {
    this.check();
    const [all, device] = await this.client.hmget(this.revokedKey(userId), '*', deviceId);
    return Math.max(Number(all ?? 0) || 0, Number(device ?? 0) || 0);
  }

  async nodes(): Promise<string[]> {
    this.check();
    const all = await Promise.all(Array.from({ length: this.buckets }, (_, b) => this.client.smembers(this.nodesKey(b))));
    return [...new Set(all.flat())].sort();
  }

  async dropNode(node: string): Promise<number> {
    this.check();
    // The buckets a few at a time (each its own scripts, in its own slot).
    const dropped = await mapLimited(Array.from({ length: this.buckets }, (_, b) => b), 16, (b) => this.dropBucket(node, b));
    return dropped.reduce((a, n) => a + n, 0);
  }

  private async dropBucket(node: string, b: number): Promise<number> {
    let dropped = 0;
    for (let first = true; ; first = false) {
      const reply = (await DROP.run(this.client, [this.nodeKey(node, b), this.dropKey(node, b), this.nodesKey(b)], [this.scope(b), node, this.dropBatch, first ? '1' : '0'])) as [
        number,
        number,
      ];
      dropped += reply[0];
      if (reply[1] === 0) return dropped;
    }
  }

  /** Quits the client if this instance created it; a client passed in stays open (the caller's). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await releaseClient(this.client, this.owned);
  }
}
