// Bus on Redis Streams, for gateways and logic nodes in separate processes.
//
// Uplink: `{p}up:{shard}` streams, a conversation's requests always on the
// same shard (hash of the partition key). Each shard is owned by one live
// logic node at a time through a lease (`{p}lease:{shard}`, SET NX PX,
// renewed by its owner); live logic nodes heartbeat into `{p}logic-nodes`
// and each takes its fair share, so shards rebalance when nodes join or die.
// The owner reads with a consumer group, acks (XACK) only after its handler
// settled (the work is durable), claims what a previous owner left pending
// (XAUTOCLAIM). A store that is unavailable pauses the shard's consumption
// (the same batch is handed again, not counted as a failure); any other
// failure is retried entry by entry, and an entry that failed `maxDeliveries`
// times moves alone to the dead-letter stream `{p}dead` with its error (listed
// and replayed through `bus.dead`). Handlers are idempotent (dedupe in the
// store), so redelivery never duplicates.
//
// Entries are protobuf (proto/longlink/internal/v1/envelope.proto): one field
// `e` holding an UpEnvelope uplink, `d` holding a DownBatch downlink, `x`
// holding a DeadLetter in the dead-letter stream. A field or kind this node
// does not know is skipped, so roles of two versions run side by side.
//
// A lease alone cannot stop a node paused past it from writing once it wakes:
// the handler runs under a write fence (store.ts) naming the batch's shards,
// and a shared store refuses a writer that lost one (FencedError). The batch
// is then left pending, not acked: the shard's owner handles it.
//
// Services: the send path's requests (service `message`) are on `{p}up:{shard}`
// as above; every other service's are on streams of its own,
// `{p}up:{service}:{shard}`, leased as `{p}lease:{service}:{shard}` among the
// processes that run it (`{p}{service}-nodes`). The store's fence numbers a
// service's shards apart (FENCE_BASE), so owners of different services never
// fence each other out. A process consumes the services it runs; a handler
// takes any request it is given (an entry on the wrong stream is still served).
//
// Committed stream: `{p}committed:{shard}`, a message's conversation always on
// the same shard, field `c` holding a Committed. Each consumer group (push,
// risk, …) shares its shards among its live members with the same leases
// (`{p}lease:committed:{group}:{shard}`, `{p}committed:{group}-nodes`) and
// reads with a Redis consumer group of its name: its own offsets. A group's
// counters (CommittedEffects) are `{p}committed:{group}:counters`, added in
// the MULTI that acks. The stream is trimmed below the oldest entry any group
// has not acked, and by the same age and byte bounds as the uplink.
//
// Downlink: `{p}down:{node}` per gateway (targeted routing) and `{p}down:*`
// read by every gateway (broadcast routing, publishDown(ALL_GATEWAYS, …)).
// Read without a group from when the gateway subscribed: a downlink message
// lost to a crash is healed by the client (request timeout, gap → sync).
// A gateway's own stream expires an hour after the gateway stopped reading it.
//
// Bounds (faults/README.md, "Stream bounds"). One XADD takes one trim
// strategy, so:
// - every write trims its stream by length (XADD MAXLEN ~: 200,000 entries
//   per uplink shard, 20,000 per downlink stream): a burst cannot outgrow it;
// - every second each stream's reader (a shard's owner; a gateway, for the
//   streams it reads) runs a script on Redis's clock (UP_BOUNDS, DOWN_BOUNDS)
//   that trims what was handled (uplink: below the oldest entry not acked;
//   a node's own downlink stream: what it read), then by age (XTRIM MINID =
//   now - max age: 10 min uplink, 30 s downlink), then from the oldest entry
//   while MEMORY USAGE is over the byte bound (64 MiB per stream). The reader
//   knows what it had not read yet: entries trimmed before they were read
//   are counted (BusCounters.upTrimmedUnprocessed, downTrimmedUnread) and
//   logged. An uplink entry trimmed unread was never acked, so its sender
//   resends it;
// - every 5 s a writer applies the age and byte bounds to the streams it
//   writes (WRITE_BOUNDS): the backstop for a stream whose reader is stuck
//   or gone.
// Downlink entries are split at ~64 KiB (packDown), so an entry is at most
// that or one message.
//
// Growing the shards on a live cluster (growShards, `longlink admin shards
// --grow N`): the count is in `{p}shardmap` (count, previous count, epoch),
// read by every bus every second; a new count is a multiple of the old, so a
// partition of old shard p goes to a new shard s with s % previous == p: p
// keeps its stream and the others are new. A conversation moving from p to a
// new shard must not have its new requests handled before its old ones still
// in p: every bus reports the epoch it publishes with (`{p}shard-publishers`);
// once every live one publishes with the new count, p's owner appends a marker
// to p's stream, and the new shards of p are read only once each group reading
// p has handled everything before the marker (`{p}split:{topic}:{p}:{epoch}`).
// Meanwhile their requests wait in their streams. A request a stale publisher
// (one not heard from) still writes to p after the marker, for a conversation
// that moved, is forwarded to its new shard (uplink); a committed message is
// handled where it is (the push is idempotent per device).
//
// On a Redis Cluster (a `redis-cluster://` address) every stream is in a slot
// of its own, so no command names two of them: a shard's owner reads each
// shard with its own blocking read on its own connection (ShardReads), a
// gateway its two downlink streams on two; the live sets share the tag
// `{live}` (counted in one script), and a committed shard's counters share its
// stream's tag (`{p}{committed:3}`, `{p}{committed:3}counters:push`). Redis
// replicates asynchronously: a write a master answered and lost in a failover
// would be an acked publish gone (and a sender's later message stored before
// its resent earlier one), so every publish waits for `replicas` replicas
// (WAIT, on the connection the writes went through) and fails otherwise.
import type { Cluster } from 'ioredis';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  CommittedSchema, DeadLetterSchema, DownBatchSchema, DownSchema, UpEnvelopeSchema, type DeadLetter,
} from '../protocol/gen/longlink/internal/v1/envelope_pb.js';
import { operationName } from '../protocol/operations.js';
import { DEFAULTS } from '../config.js';
import { log as rootLog } from '../observability/log.js';
import { Script, checkPrefix, clusterNodesOf, isCluster, openRedis, shardOf, slotOf, tagged, type RedisClient } from './redis-shared.js';
import { isFencedError, isUnavailable, withWriteFence, type ShardClaim } from './store.js';
import {
  ALL_GATEWAYS, SeenWindow, UP_SERVICES, newBusCounters, serviceOfUp,
  type Bus, type BusCounters, type Committed, type CommittedEffects, type CommittedHandler, type ConsumeDownOptions,
  type ConsumeUpOptions, type DeadLetterInfo, type DeadLetters, type Down, type DownHandler, type Service, type ShardAdmin, type Subscription,
  type UpEnvelope, type UpHandler,
} from './bus.js';

const log = rootLog.child({ component: 'bus' });

export interface RedisBusOptions {
  url: string;
  /** This process's node id (the consumer name in the uplink group). */
  nodeId: string;
  /** Key prefix, so several clusters can share one Redis. @default 'll:' */
  prefix?: string;
  /** Uplink shards; the same for every node of a cluster. @default 16 */
  shards?: number;
  /** Shard lease time; an owner silent this long loses its shards. @default 10000 */
  leaseMs?: number;
  /** Entries per uplink batch. @default 512 */
  batch?: number;
  /** Approximate length each stream is trimmed to at every write (XADD MAXLEN ~). @default 200000 uplink (per shard), 20000 downlink (per stream) */
  maxUpLength?: number;
  maxDownLength?: number;
  /**
   * Entries older than this (by their id: Redis's clock when they were
   * added) are trimmed by the stream's reader, read or not. @default 600000 uplink, 30000 downlink
   */
  maxUpAgeMs?: number;
  maxDownAgeMs?: number;
  /**
   * Redis memory (MEMORY USAGE) one stream may take before its reader trims
   * it from the oldest entry. 0: no byte bound. @default 64 MiB uplink (per shard), 64 MiB downlink (per stream)
   */
  maxUpBytes?: number;
  maxDownBytes?: number;
  /** How often each stream's reader applies the age and byte bounds. @default 1000 */
  trimIntervalMs?: number;
  /** Handler failures of one entry before it goes to the dead-letter stream. @default 5 */
  maxDeliveries?: number;
  /** Longest pause between tries of a batch while the store is unavailable (the pause doubles from 100 ms). @default 2000 */
  unavailablePauseMaxMs?: number;
  /** How long one blocking read waits. @default 1000 */
  blockMs?: number;
  /**
   * On a Redis Cluster: replicas that must hold a write before a publish is
   * done (WAIT). 0: none (a failover may lose what a master had answered).
   * @default 1
   */
  replicas?: number;
}

const GROUP = 'logic';

/**
 * Where each uplink service's shards start in the store's write fence
 * (shard_fences): owners of different services never fence each other out.
 * The send path keeps 0, so its fences are those of a single-service cluster.
 */
const FENCE_BASE: Record<Service, number> = { message: 0, presence: 10_000, group: 20_000, storage: 30_000 };

/** RedisBus.boundsStats(): what /metrics shows of the stream bounds (see BusStats). */
export interface RedisBusStats {
  /** The configured max age per direction ('up', 'down'), seconds. */
  maxAgeSeconds: Map<string, number>;
  /** The configured max bytes per stream, per direction. */
  maxBytes: Map<string, number>;
  /** Per uplink shard this node owns: seconds since the oldest entry not yet acked was added (0: none). */
  upOldestUnprocessedAge: Map<string, number>;
  /** Redis memory of each stream this node trims (`up:3`, `down:gw-1`, `down:*`), after its last trim. */
  streamBytes: Map<string, number>;
}

/** Downlink entries are split at about this many bytes (one message larger than it goes alone). */
export const DOWN_ENTRY_BYTES = 64 * 1024;

/** The bounds RedisBus applies when the options do not say (src/config.ts has the settings' defaults). */
export const STREAM_BOUNDS = {
  maxUpLength: DEFAULTS.busUpMaxLength,
  maxDownLength: DEFAULTS.busDownMaxLength,
  maxUpAgeMs: DEFAULTS.busUpMaxAgeMs,
  maxDownAgeMs: DEFAULTS.busDownMaxAgeMs,
  maxUpBytes: DEFAULTS.busUpMaxBytes,
  maxDownBytes: DEFAULTS.busDownMaxBytes,
  trimIntervalMs: 1000,
} as const;

/** Fault injection for the exactly-once tests (see ShardConsumer.killBeforeAck); never set in production. */
const KILL_BEFORE_ACK = process.env.LONGLINK_FAULT_KILL_BEFORE_ACK === '1';

export { shardOf };

// KEYS: the live logic nodes. ARGV: node id, lease ms. Heartbeat on Redis's clock; returns the live count.
const HEARTBEAT = new Script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
`);

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;

// Take (SET NX) or renew a shard's lease; on success, Redis's time [s, µs]: when the lease was proven
// ours (ShardClaim.heldAt, which orders the owners of a shard in the store's fence), else 0.
const TAKE = `if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return redis.call('TIME') else return 0 end`;
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return redis.call('TIME') else return 0 end`;

// Make a consumer group reading from the stream's oldest entry, with what was trimmed before it counted as read.
// KEYS: the stream. ARGV: the group.
const CREATE_GROUP = new Script(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
end
local s = redis.call('XINFO', 'STREAM', KEYS[1])
local added, len = 0, 0
for i = 1, #s, 2 do
  if s[i] == 'entries-added' then added = s[i + 1] elseif s[i] == 'length' then len = s[i + 1] end
end
return redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'ENTRIESREAD', string.format('%d', added - len))
`);

// Ack a committed batch and add its counters, only if every entry was still pending here (an entry another
// consumer acked meanwhile was counted by it). KEYS: the stream, the counters hash. ARGV: group, n ids, ids…,
// then counter name/increment pairs. Returns the entries acked.
const ACK_COUNTING = new Script(`
local n = tonumber(ARGV[2])
local ids = {}
for i = 1, n do ids[i] = ARGV[2 + i] end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if acked == n then
  for i = 3 + n, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
return acked
`);

// How many live members a set has, on Redis's clock. KEYS: the live sets. Returns a count per set.
const LIVE_COUNTS = new Script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do out[i] = redis.call('ZCOUNT', KEYS[i], now, '+inf') end
return out
`);

/** A TAKE or RENEW reply as µs on Redis's clock, or undefined when the lease is not ours. */
function heldAt(reply: unknown): number | undefined {
  if (!Array.isArray(reply) || reply.length !== 2) return undefined;
  return Number(reply[0]) * 1_000_000 + Number(reply[1]);
}

// What the bounds scripts share: stream ids compared as numbers, Redis's clock in ms.
const LUA_IDS = `
local function parse(id) local m, q = string.match(id, '^(%d+)-(%d+)$') return tonumber(m), tonumber(q) end
local function before(a, b) local am, aq = parse(a) local bm, bq = parse(b) return am < bm or (am == bm and aq < bq) end
local function fields(flat) local o = {} for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end return o end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function usage() return redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0') or 0 end
-- Trim from the oldest entry while the stream takes more than maxBytes (a few rounds: entries differ in size).
local function trimBytes(maxBytes, bytes)
  local n = 0
  for _ = 1, 4 do
    if maxBytes <= 0 or bytes <= maxBytes then break end
    local len = redis.call('XLEN', KEYS[1])
    if len == 0 then break end
    n = n + redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', string.format('%d', math.floor(len * maxBytes / bytes * 0.9)))
    bytes = usage()
  end
  return n, bytes
end
`;

// A shard's bounds, by its owner. KEYS: the stream. ARGV: max age ms, max bytes (0: none), the group, '1' when
// the stream is read by that group alone (uplink: what it acked goes), '0' when other groups read it too
// (committed: only what every group acked goes).
// 1. Trims by age (MINID =, exact), then what the group has acked (below the oldest entry not yet acked:
//    nothing reads it again), then by bytes.
// 2. If the trims (this one, a writer's length bound, one while nobody owned the shard) took entries the
//    group had not been delivered, counts them: Redis 7 counts the entries added to a stream (entries-added)
//    and those delivered to a group (entries-read), so with every entry left undelivered the gap is
//    added - read - length. The group's entries-read then takes the gap in (XGROUP SETID … ENTRIESREAD), so
//    it is counted once, by whoever sees it first, and the lag XINFO GROUPS reports stays what is left to read.
// Returns [now ms, trimmed by age, trimmed acked, trimmed by bytes, bytes after, undelivered entries lost,
// the oldest id not yet acked ('' when none)].
const UP_BOUNDS = new Script(`${LUA_IDS}
if redis.call('EXISTS', KEYS[1]) == 0 then return {now, 0, 0, 0, 0, 0, ''} end
local function state()
  local g
  local all = {}
  for _, flat in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local x = fields(flat)
    all[#all + 1] = x
    if x['name'] == ARGV[3] then g = x end
  end
  local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
  return g, s, s['length'], s['first-entry'] and s['first-entry'][1], all
end
-- The oldest entry a group has not acked: its oldest pending, or the first not delivered to it ('' when none).
local function oldestUnacked(g, len, first)
  local d, oldest, nxt = g['last-delivered-id'], '', nil
  local p = redis.call('XPENDING', KEYS[1], g['name'])
  if p[1] > 0 then oldest = p[2] end
  if len > 0 then
    if before(d, first) then nxt = first
    else
      local r = redis.call('XRANGE', KEYS[1], '(' .. d, '+', 'COUNT', 1)
      if r[1] then nxt = r[1][1] end
    end
  end
  if nxt and (oldest == '' or before(nxt, oldest)) then oldest = nxt end
  return oldest
end
local byAge, acked = 0, 0
local cutoff = now - tonumber(ARGV[1])
if cutoff > 0 then byAge = redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('%d-0', cutoff)) end
local g, s, len, first, all = state()
if g then
  local oldest = ''
  if ARGV[4] == '1' then oldest = oldestUnacked(g, len, first)
  else
    for _, x in ipairs(all) do
      local o = oldestUnacked(x, len, first)
      if o ~= '' and (oldest == '' or before(o, oldest)) then oldest = o end
    end
  end
  if oldest ~= '' then acked = redis.call('XTRIM', KEYS[1], 'MINID', '=', oldest)
  elseif len > 0 then acked = redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', 0) end
end
local byBytes, bytes = trimBytes(tonumber(ARGV[2]), usage())
if not g then return {now, byAge, acked, byBytes, bytes, 0, ''} end
g, s, len, first = state()
local d, lost = g['last-delivered-id'], 0
if (len == 0 or before(d, first)) and s['entries-added'] then
  local read = g['entries-read']
  if not read and d == '0-0' then read = 0 end
  if read then
    local gap = s['entries-added'] - read - len
    if gap > 0 then
      lost = gap
      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[3], d, 'ENTRIESREAD', string.format('%d', s['entries-added'] - len))
    end
  end
end
return {now, byAge, acked, byBytes, bytes, lost, oldestUnacked(g, len, first)}
`);

// A downlink stream's bounds, by one of its readers. KEYS: the stream. ARGV: max age ms, max bytes (0: none),
// the last id this reader read, '1' when it is the stream's only reader (a node's own stream: what it read
// goes at once). Under the age and byte bounds, what it read goes first; what is trimmed after that it had
// not read (counted). Returns [now ms, entries trimmed this reader had not read, bytes after].
const DOWN_BOUNDS = new Script(`${LUA_IDS}
if redis.call('EXISTS', KEYS[1]) == 0 then return {now, 0, 0} end
local rm, rq = parse(ARGV[3])
local unread = string.format('%d-%d', rm, rq + 1)
if ARGV[4] == '1' then redis.call('XTRIM', KEYS[1], 'MINID', '=', unread) end
local lost = 0
local cutoff = now - tonumber(ARGV[1])
if cutoff > 0 then
  local cut = string.format('%d-0', cutoff)
  if before(unread, cut) then
    redis.call('XTRIM', KEYS[1], 'MINID', '=', unread)
    lost = redis.call('XTRIM', KEYS[1], 'MINID', '=', cut)
  else
    redis.call('XTRIM', KEYS[1], 'MINID', '=', cut)
  end
end
local maxBytes = tonumber(ARGV[2])
local bytes = usage()
if maxBytes > 0 and bytes > maxBytes then
  redis.call('XTRIM', KEYS[1], 'MINID', '=', unread)
  local n
  n, bytes = trimBytes(maxBytes, usage())
  lost = lost + n
end
return {now, lost, bytes}
`);

// A stream's age and byte bounds, by a writer (every few seconds per stream it writes): the backstop for a
// stream whose reader is stuck or gone. KEYS: the stream. ARGV: max age ms, max bytes (0: none).
// Returns [now ms, trimmed by age, trimmed by bytes, bytes after].
const WRITE_BOUNDS = new Script(`${LUA_IDS}
if redis.call('EXISTS', KEYS[1]) == 0 then return {now, 0, 0, 0} end
local byAge = 0
local cutoff = now - tonumber(ARGV[1])
if cutoff > 0 then byAge = redis.call('XTRIM', KEYS[1], 'MINID', '=', string.format('%d-0', cutoff)) end
local byBytes, bytes = trimBytes(tonumber(ARGV[2]), usage())
return {now, byAge, byBytes, bytes}
`);

/** The shard count of a cluster and the growth it is in (see the top of this file). */
export interface ShardMap {
  count: number;
  /** The count before the last growth (== count when it never grew). */
  previous: number;
  /** 0 until the first growth, then +1 each. */
  epoch: number;
}

/** RedisBus.shardStatus(): one topic's shards. */
export interface ShardTopicStatus {
  /** `up` (the send path), `up:group`, …, `committed:push`, … */
  topic: string;
  shards: { shard: number; owner: string | undefined; lag: number; state: 'ready' | 'waiting' }[];
}

/** What a shard consumer knows of the shard map (RedisBus's). */
interface Shards {
  now(): ShardMap;
  load(): Promise<void>;
  keys: { map: string; publishers: string };
}

/** Set once a group has handled an old shard up to the marker of a growth: its new shards may be read. */
function drainedKey(prefix: string, topic: string, parent: number, epoch: number): string {
  return `${prefix}split:${topic}:${parent}:${epoch}`;
}

/** How often every bus reads the shard map and reports the epoch it publishes with. */
const MAP_REFRESH_MS = 1000;
/** A request for a service thought down waits for a look at its live set at most this old (Bus.recheck). */
const LIVENESS_FRESH_MS = 250;
/** A publisher not heard from for this long is not waited for before a marker. */
const PUBLISHER_FRESH_MS = 5000;
/** After every live publisher switched, this long before the marker (a publish already sent may still be on its way). */
const MARKER_GRACE_MS = 1000;

function parseShardMap(raw: Record<string, string>): ShardMap | undefined {
  const count = Number(raw.count);
  const previous = Number(raw.previous);
  const epoch = Number(raw.epoch);
  if (!Number.isInteger(count) || !Number.isInteger(previous) || !Number.isInteger(epoch) || count < 1 || previous < 1 || epoch < 1) return undefined;
  return { count, previous, epoch };
}

// KEYS: the publishers' hash. ARGV: this bus's instance, the epoch it publishes with. On Redis's clock.
const REPORT_EPOCH = new Script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
return 1
`);

// KEYS: the publishers' hash. ARGV: epoch, fresh ms, grace ms. 1 when every publisher heard from within
// `fresh` reported `epoch` (or later) and the latest of those switches is `grace` old; publishers not
// heard from for a minute are removed.
const ALL_SWITCHED = new Script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local epoch, at = string.match(flat[i + 1], '^(%d+) (%d+)$')
  epoch, at = tonumber(epoch), tonumber(at)
  if not at or at < now - 60000 then redis.call('HDEL', KEYS[1], flat[i])
  elseif at >= now - tonumber(ARGV[2]) and epoch < tonumber(ARGV[1]) then return 0 end
end
local since = tonumber(redis.call('HGET', KEYS[2], 'at') or '0')
if now - since < tonumber(ARGV[3]) then return 0 end
return 1
`);

// KEYS: the shard map. ARGV: the epoch it must have now (0: none yet), new count, previous, new epoch.
const GROW = new Script(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'count', ARGV[2], 'previous', ARGV[3], 'epoch', ARGV[4], 'at', now)
return 1
`);

/** A writer applies a stream's age and byte bounds every this many reader intervals (its readers do it more often). */
const WRITER_TRIM_EVERY = 5;

/**
 * Loss warnings, at most one per stream every 10 s with what was lost since
 * the last one (a reader lagging for minutes would otherwise warn at every
 * trim). The counters have the exact totals.
 */
class LossLog {
  private readonly streams = new Map<string, { at: number; entries: number }>();
  note(stream: string, entries: number, warn: (entries: number) => void): void {
    const now = Date.now();
    const s = this.streams.get(stream) ?? { at: 0, entries: 0 };
    s.entries += entries;
    if (now - s.at >= 10_000) {
      warn(s.entries);
      s.entries = 0;
      s.at = now;
    }
    this.streams.set(stream, s);
  }
}

/** A stream id's time part (ms on Redis's clock when it was added). */
function idMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

/** Downlink messages as DownBatch entries of about `cap` bytes at most (field 1 of DownBatch, repeated: concatenated). */
export function packDown(messages: readonly Down[], cap = DOWN_ENTRY_BYTES): Buffer[] {
  const entries: Buffer[] = [];
  let parts: Uint8Array[] = [];
  let size = 0;
  for (const m of messages) {
    const body = toBinary(DownSchema, m);
    const head = lengthDelimited(1, body.length);
    if (size > 0 && size + head.length + body.length > cap) {
      entries.push(Buffer.concat(parts, size));
      parts = [];
      size = 0;
    }
    parts.push(head, body);
    size += head.length + body.length;
  }
  if (size > 0 || entries.length === 0) entries.push(Buffer.concat(parts, size));
  return entries;
}

/** A protobuf tag of a length-delimited field and its length varint. */
function lengthDelimited(fieldNo: number, length: number): Uint8Array {
  const out = [(fieldNo << 3) | 2];
  let n = length;
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Uint8Array.from(out);
}

// Entries as read with the *Buffer commands: flat [field, value, …] lists of bytes.
type Fields = Buffer[];
type StreamEntries = [Buffer, Fields | null][];

/** The *Buffer variants of the stream commands ioredis has but does not type. */
interface BufferCommands {
  xreadgroupBuffer(...args: (string | number)[]): Promise<[Buffer, StreamEntries][] | null>;
  xreadBuffer(...args: (string | number)[]): Promise<[Buffer, StreamEntries][] | null>;
  xautoclaimBuffer(...args: (string | number)[]): Promise<[Buffer, StreamEntries, Buffer[]?]>;
  xrangeBuffer(...args: (string | number)[]): Promise<StreamEntries>;
}

function bytes(redis: RedisClient): BufferCommands {
  return redis as unknown as BufferCommands;
}

function field(fields: Fields, name: string): Buffer | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]!.toString() === name) return fields[i + 1];
  return undefined;
}

function decodeCommitted(fields: Fields): Committed {
  const c = field(fields, 'c');
  if (!c) throw new Error('no committed field');
  return fromBinary(CommittedSchema, c);
}

/**
 * What one kind of shard consumer reads: its streams, leases, live set and
 * consumer group, and how it decodes, fences and acks an entry.
 */
interface Topic<T> {
  /** For logs: `up`, `up:group`, `committed:push`. */
  name: string;
  stream(s: number): string;
  lease(s: number): string;
  /** The live members' set (heartbeats). */
  live: string;
  group: string;
  /** The shard's number in the store's write fence; undefined: its handler writes nothing fenced. */
  fence: ((s: number) => number) | undefined;
  /** A shard's label in the stats (`3` for the send path, `group:3`, `committed:3`). */
  label(s: number): string;
  /** The stream is this group's alone (what it acked is trimmed), or shared by several groups. */
  ownStream: boolean;
  /** The field holding an entry. */
  field: string;
  decode(fields: Fields): T;
  /** Entries that keep failing go to the dead letters (uplink), or are logged and skipped (committed). */
  deadLetters: boolean;
  /** Log fields naming an entry. */
  describe(t: T | undefined): Record<string, unknown>;
  requestId(t: T): string;
  /** Drops what the group handled already (before the handler). */
  unseen?(batch: T[]): T[];
  /** After the ack. */
  acked?(batch: T[]): void;
  /** An uplink request's partition (the key of its shard): what is forwarded after a growth. Undefined: nothing is. */
  partitionOf?(t: T): string;
  /** Where the counters of CommittedEffects of shard s go (in the stream's slot). */
  countersKey?: (s: number) => string;
  read(n: number): void;
  lost(n: number): void;
}

function decodeUp(fields: Fields): UpEnvelope {
  const e = field(fields, 'e');
  if (!e) throw new Error('no envelope field');
  return fromBinary(UpEnvelopeSchema, e);
}

/** The messages of one downlink entry (nothing from a field this node does not know). */
function decodeDown(fields: Fields): Down[] {
  const d = field(fields, 'd');
  return d ? fromBinary(DownBatchSchema, d).messages : [];
}

export class RedisBus implements Bus {
  private readonly o: Required<RedisBusOptions>;
  private readonly writer: RedisClient;
  private readonly readers = new Set<RedisClient>();
  /** On a Redis Cluster (see the top of this file). */
  private readonly cluster: boolean;
  private readonly replicas: Replicas | undefined;
  private readonly consumers = new Set<ShardConsumer<UpEnvelope> | ShardConsumer<Committed>>();
  private closed = false;
  readonly counters = newBusCounters();
  private readonly downQueue = new Map<string, { messages: Down[]; waiters: { resolve: () => void; reject: (err: unknown) => void }[] }>();
  readonly dead: DeadLetters;
  private downFlushScheduled = false;
  /** Bytes of each downlink stream read here, after its last trim. */
  private readonly downBytes = new Map<string, number>();
  /** When this node last trimmed each stream it writes (Date.now()). */
  private readonly writtenBoundedAt = new Map<string, number>();
  private readonly lossLog = new LossLog();

  /** The shard map this bus publishes and consumes with (see the top of this file). */
  private map: ShardMap;
  /** This bus among the publishers reporting their epoch. */
  private readonly instance = `${Math.random().toString(36).slice(2, 10)}`;
  private mapLoaded: Promise<void> | undefined;
  private mapTimer: NodeJS.Timeout | undefined;

  constructor(options: RedisBusOptions) {
    this.o = {
      prefix: 'll:', shards: 16, leaseMs: 10_000, batch: 512, ...STREAM_BOUNDS, maxDeliveries: 5, unavailablePauseMaxMs: 2000, blockMs: 1000, replicas: 1, ...options,
    };
    checkPrefix(this.o.prefix);
    this.cluster = clusterNodesOf(this.o.url) !== undefined;
    this.writer = this.connect();
    this.replicas = isCluster(this.writer) && this.o.replicas > 0 ? new Replicas(this.writer, this.o.replicas) : undefined;
    this.dead = new RedisDeadLetters(this.writer, this.key('dead'), this.o.maxUpLength, () => this.stats(), this.cluster);
    this.map = { count: this.o.shards, previous: this.o.shards, epoch: 0 };
    this.mapKeys = this.cluster
      ? { map: tagged(this.o.prefix, 'shards', 'map'), publishers: tagged(this.o.prefix, 'shards', 'publishers') }
      : { map: this.key('shardmap'), publishers: this.key('shard-publishers') };
  }

  /** The shard map's keys (one slot in a cluster: ALL_SWITCHED reads both). */
  private readonly mapKeys: { map: string; publishers: string };

  /** What a shard consumer knows of the shard map. */
  private shardsAccess(): Shards {
    return { now: () => this.map, load: () => this.loadMap(), keys: this.mapKeys };
  }

  /** The shard map, read now and then every second (the first publish or consume waits for the first read). */
  private loadMap(): Promise<void> {
    if (!this.mapLoaded) {
      this.mapLoaded = this.refreshMap().catch(() => undefined);
      this.mapTimer = setInterval(() => void this.refreshMap().catch(() => undefined), MAP_REFRESH_MS).unref();
    }
    return this.mapLoaded;
  }

  private async refreshMap(): Promise<void> {
    if (this.closed) return;
    const raw = await this.writer.hgetall(this.mapKeys.map);
    const next = parseShardMap(raw);
    if (next && next.epoch > this.map.epoch) {
      log.info({ node: this.o.nodeId, shards: next.count, previous: next.previous, epoch: next.epoch }, 'the shard count grew');
      this.map = next;
    }
    // After switching: what this bus publishes from now on goes by the new count.
    await REPORT_EPOCH.run(this.writer, [this.mapKeys.publishers], [this.instance, this.map.epoch]);
  }

  /** `longlink admin shards`: see ShardAdmin. */
  readonly shards: ShardAdmin = {
    shardMap: () => this.shardMap(),
    shardStatus: () => this.shardStatus(),
    growShards: (count) => this.growShards(count),
  };

  /** The shard count and its history, as this bus uses them now. */
  shardMap(): ShardMap {
    return { ...this.map };
  }

  /**
   * Grow the shard count to `count` (a multiple of the current one) on the
   * live cluster. Refused while the last growth is still under way (some
   * group has not drained an old shard up to its marker yet).
   */
  async growShards(count: number): Promise<ShardMap> {
    await this.loadMap();
    await this.refreshMap();
    const now = this.map;
    if (!Number.isInteger(count) || count <= now.count || count % now.count !== 0 || count > 4096) {
      throw new Error(`the shard count grows to a multiple of ${now.count}, at most 4096: not ${count}`);
    }
    if (now.epoch > 0 && !(await this.splitDone())) throw new Error(`the growth to ${now.count} shards is still under way`);
    const next: ShardMap = { count, previous: now.count, epoch: now.epoch + 1 };
    const ok = await GROW.run(this.writer, [this.mapKeys.map], [now.epoch, next.count, next.previous, next.epoch]);
    if (Number(ok) !== 1) throw new Error('another growth of the shard count came first');
    await this.refreshMap();
    return next;
  }

  /** Whether every group reading the old shards of a growth has handled them up to the marker. */
  private async splitDone(): Promise<boolean> {
    const status = await this.shardStatus();
    return status.every((t) => t.shards.every((x) => x.state !== 'waiting'));
  }

  /**
   * Per topic (each uplink service's streams, each committed-stream group):
   * every shard's owner, lag (entries not yet read plus read and not acked)
   * and state: `ready`, or `waiting` (a new shard whose old one is not
   * drained up to the marker yet).
   */
  async shardStatus(): Promise<ShardTopicStatus[]> {
    await this.loadMap();
    const client = await this.stats();
    const map = this.map;
    const topics: { name: string; lease: (s: number) => string; stream: (s: number) => string; group: string }[] = [
      ...UP_SERVICES.map((service) => ({ ...this.upTopic(service), group: GROUP })),
    ];
    const committedGroups = new Set<string>();
    for (let s = 0; s < map.count; s++) {
      try {
        for (const g of ((await client.call('XINFO', 'GROUPS', this.committedStream(s))) as unknown[][]).map(flatFields)) committedGroups.add(String(g.name));
      } catch {
        /* no stream yet */
      }
    }
    for (const group of [...committedGroups].sort()) topics.push(this.committedTopic(group));
    const out: ShardTopicStatus[] = [];
    for (const t of topics) {
      const shards = await Promise.all(Array.from({ length: map.count }, async (_, s) => {
        const [owner, info, drained] = await Promise.all([
          client.get(t.lease(s)),
          client.call('XINFO', 'GROUPS', t.stream(s)).then((r) => (r as unknown[][]).map(flatFields).find((g) => g.name === t.group), () => undefined),
          map.epoch > 0 && s >= map.previous ? client.get(drainedKey(this.o.prefix, t.name, s % map.previous, map.epoch)) : Promise.resolve('1'),
        ]);
        const lag = info ? (typeof info.lag === 'number' ? info.lag : 0) + (typeof info.pending === 'number' ? info.pending : 0) : 0;
        return { shard: s, owner: owner ?? undefined, lag, state: drained ? 'ready' as const : 'waiting' as const };
      }));
      out.push({ topic: t.name, shards });
    }
    return out;
  }

  /**
   * The connection of the reads for metrics and tests (lag, counters): no
   * offline queue and a command timeout, so a scrape while Redis is down
   * fails in about a second instead of waiting for it.
   */
  private statsClient: RedisClient | undefined;

  private async stats(): Promise<RedisClient> {
    if (this.closed) throw new Error('bus closed');
    if (!this.statsClient) {
      this.statsClient = openRedis(this.o.url, {
        enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000, connectTimeout: 2000,
        retryStrategy: (times) => Math.min(times * 100, 1000),
      });
      this.statsClient.on('error', () => {
        /* reconnects by itself; reads fail meanwhile */
      });
    }
    const client = this.statsClient;
    if (client.status !== 'ready') {
      // Just made, or reconnecting: wait a little for it rather than fail the first read.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          client.off('ready', done);
          resolve();
        };
        const timer = setTimeout(done, 2000).unref();
        client.once('ready', done);
      });
    }
    return client;
  }

  private connect(): RedisClient {
    // In a cluster a blocking read queued for a node that died can wait forever (the cluster does not reconnect to
    // it): past its BLOCK time and a grace it fails instead, and is sent again (to the promoted replica).
    const blocking = this.cluster ? { blockingTimeout: 5000, blockingTimeoutGrace: 2000 } : {};
    const r = openRedis(this.o.url, { maxRetriesPerRequest: null, enableAutoPipelining: true, lazyConnect: false, ...blocking });
    r.on('error', () => {
      /* reconnects by itself; commands wait */
    });
    return r;
  }

  private key(name: string): string {
    return `${this.o.prefix}${name}`;
  }

  /** A live set (heartbeats): in a cluster all of them in one slot, counted together by LIVE_COUNTS. */
  private liveKey(name: string): string {
    return this.cluster ? tagged(this.o.prefix, 'live', name) : this.key(name);
  }

  /** The live set of an uplink service's consumers (the send path's is the logic nodes'). */
  private serviceLiveKey(service: Service): string {
    return this.liveKey(service === 'message' ? 'logic-nodes' : `${service}-nodes`);
  }

  /** The committed stream of shard s. */
  private committedStream(s: number): string {
    return this.cluster ? tagged(this.o.prefix, `committed:${s}`) : this.key(`committed:${s}`);
  }

  /** Where a committed-stream group's counters go: one hash; in a cluster one per shard, in its stream's slot (ACK_COUNTING names both). */
  private countersKey(group: string, s: number): string {
    return this.cluster ? tagged(this.o.prefix, `committed:${s}`, `counters:${group}`) : this.key(`committed:${group}:counters`);
  }

  /** An uplink service's stream of shard s: the send path's is `up:{s}`, another service's `up:{service}:{s}`. */
  private upStream(service: Service, s: number): string {
    return this.key(service === 'message' ? `up:${s}` : `up:${service}:${s}`);
  }

  private upTopic(service: Service): Topic<UpEnvelope> {
    const own = service === 'message' ? '' : `${service}:`;
    return {
      name: service === 'message' ? 'up' : `up:${service}`,
      stream: (s) => this.upStream(service, s),
      lease: (s) => this.key(`lease:${own}${s}`),
      live: this.serviceLiveKey(service),
      group: GROUP,
      fence: (s) => FENCE_BASE[service] + s,
      label: (s) => `${own}${s}`,
      ownStream: true,
      field: 'e',
      decode: decodeUp,
      deadLetters: true,
      describe: (up) => ({ op: up?.body.case === 'frame' ? operationName(up.body.value) : up?.body.case, partition: up?.partition }),
      requestId: (up) => up.requestId,
      partitionOf: (up) => up.partition,
      read: (n) => (this.counters.upRead += n),
      lost: (n) => (this.counters.upTrimmedUnprocessed += n),
    };
  }

  private committedTopic(group: string): Topic<Committed> {
    const seen = new SeenWindow();
    return {
      name: `committed:${group}`,
      stream: (s) => this.committedStream(s),
      lease: (s) => this.key(`lease:committed:${group}:${s}`),
      live: this.liveKey(`committed:${group}-nodes`),
      group,
      fence: undefined,
      label: (s) => `committed:${s}`,
      ownStream: false,
      field: 'c',
      decode: decodeCommitted,
      deadLetters: false,
      describe: (c) => ({ conversation: c?.message?.conversationId, seq: c?.message ? Number(c.message.seq) : undefined }),
      requestId: (c) => c.requestId,
      unseen: (batch) => {
        const fresh = seen.unseen(batch);
        this.counters.committedRepeats += batch.length - fresh.length;
        return fresh;
      },
      acked: (batch) => seen.add(batch),
      countersKey: (s) => this.countersKey(group, s),
      read: (n) => (this.counters.committedRead += n),
      lost: (n) => (this.counters.committedSkipped += n),
    };
  }

  async publishUp(message: UpEnvelope): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    if (!this.mapLoaded) await this.loadMap();
    const stream = this.upStream(serviceOfUp(message), shardOf(message.partition, this.map.count));
    this.counters.upPublished++;
    const added = this.writer.xadd(stream, 'MAXLEN', '~', this.o.maxUpLength, '*', 'e', Buffer.from(toBinary(UpEnvelopeSchema, message)));
    this.boundWritten(stream, this.o.maxUpAgeMs, this.o.maxUpBytes);
    await added;
    await this.replicas?.wait(stream);
  }

  /**
   * The backstop for a stream whose reader is stuck or gone: every few
   * seconds, a stream this node writes is trimmed by age and bytes here too
   * (WRITE_BOUNDS, sent after the XADD on the same connection). Losses are
   * counted by readers (an uplink shard's owner sees what its group lost
   * whoever trimmed it); a stuck gateway's are not.
   */
  private boundWritten(stream: string, maxAgeMs: number, maxBytes: number): void {
    const now = Date.now();
    const at = this.writtenBoundedAt.get(stream);
    if (at !== undefined && now - at < this.o.trimIntervalMs * WRITER_TRIM_EVERY) return;
    if (this.writtenBoundedAt.size >= 10_000) this.writtenBoundedAt.clear(); // streams of long-gone gateways
    this.writtenBoundedAt.set(stream, now);
    WRITE_BOUNDS.run(this.writer, [stream], [maxAgeMs, maxBytes]).catch((err: unknown) => {
      if (!this.closed) log.warn({ reason: (err as Error).message, stream: this.label(stream) }, 'stream trim failed');
    });
  }

  /**
   * Messages published for one gateway in the same turn of the event loop
   * (a batch's acks, its pushes) go in one stream entry: one XADD to write,
   * one entry for the gateway to read. Order per gateway is call order.
   */
  publishDown(node: string, message: Down): Promise<void> {
    if (this.closed) return Promise.resolve();
    let lane = this.downQueue.get(node);
    if (!lane) {
      lane = { messages: [], waiters: [] };
      this.downQueue.set(node, lane);
    }
    lane.messages.push(message);
    const done = new Promise<void>((resolve, reject) => lane.waiters.push({ resolve, reject }));
    if (!this.downFlushScheduled) {
      this.downFlushScheduled = true;
      setImmediate(() => this.flushDown());
    }
    return done;
  }

  private flushDown(): void {
    this.downFlushScheduled = false;
    if (this.downQueue.size === 0) return;
    const lanes = [...this.downQueue];
    this.downQueue.clear();
    for (const [node, { messages, waiters }] of lanes) {
      // A turn's messages in entries of ~64 KiB at most, so an entry's size is bounded (faults/README.md, "Stream bounds").
      const entries = packDown(messages);
      this.counters.downPublished += entries.length;
      const stream = this.key(`down:${node}`);
      Promise.all(entries.map((entry) => this.writer.xadd(stream, 'MAXLEN', '~', this.o.maxDownLength, '*', 'd', entry)))
        .then(() => this.replicas?.wait(stream)).then(
        () => { for (const w of waiters) w.resolve(); },
        (err: unknown) => { for (const w of waiters) w.reject(err); },
      );
      this.boundWritten(stream, this.o.maxDownAgeMs, this.o.maxDownBytes);
    }
  }

  /** One consumer per service, each with its own streams, leases and blocking reader. */
  consumeUp(handler: UpHandler, options: ConsumeUpOptions = {}): Subscription {
    const consumers = (options.services ?? UP_SERVICES).map((service) =>
      new ShardConsumer(this.o, this.reads(), this.writer, this.upTopic(service), handler, (n) => this.key(n), this.counters, this.shardsAccess(), this.replicas, options.onTakeover));
    return this.run(consumers);
  }

  async publishCommitted(entries: readonly Committed[]): Promise<void> {
    if (this.closed) throw new Error('bus closed');
    if (entries.length === 0) return;
    this.counters.committedPublished += entries.length;
    if (!this.mapLoaded) await this.loadMap();
    const written = new Set<string>();
    const added = entries.map((c) => {
      const stream = this.committedStream(shardOf(c.message?.conversationId ?? '', this.map.count));
      written.add(stream);
      return this.writer.xadd(stream, 'MAXLEN', '~', this.o.maxUpLength, '*', 'c', Buffer.from(toBinary(CommittedSchema, c)));
    });
    for (const stream of written) this.boundWritten(stream, this.o.maxUpAgeMs, this.o.maxUpBytes);
    await Promise.all(added);
    if (this.replicas) await Promise.all([...written].map((stream) => this.replicas!.wait(stream)));
  }

  consumeCommitted(group: string, handler: CommittedHandler): Subscription {
    if (!/^[a-z][a-z0-9-]{0,31}$/.test(group)) throw new Error(`consumer group name ${JSON.stringify(group)}: lowercase letters, digits and -`);
    return this.run([new ShardConsumer(this.o, this.reads(), this.writer, this.committedTopic(group), handler, (n) => this.key(n), this.counters, this.shardsAccess(), this.replicas)]);
  }

  /** How a consumer reads its shards: one connection for all on one server, one per shard in a cluster. */
  private reads(): ShardReads {
    return this.cluster ? new PerShardReads(() => this.connect()) : new OneRead(this.connect());
  }

  private run(list: ShardConsumer<UpEnvelope>[] | ShardConsumer<Committed>[]): Subscription {
    for (const c of list) {
      this.consumers.add(c);
      c.start();
    }
    return {
      close: async () => {
        for (const c of list) this.consumers.delete(c);
        await Promise.all(list.map((c) => c.stop()));
      },
    };
  }

  /**
   * Per service asked about: whether its live set had a member at the last
   * looks (every second, in the background). Down only after two looks in a
   * row found none, so one late heartbeat does not refuse requests.
   */
  private readonly liveness = new Map<Service, { live: boolean; emptyLooks: number }>();
  private livenessTimer: NodeJS.Timeout | undefined;

  readonly splitsServices = true;

  get publishInTurn(): boolean {
    return this.replicas !== undefined;
  }

  isDown(service: Service): boolean {
    let l = this.liveness.get(service);
    if (!l) {
      this.liveness.set(service, (l = { live: true, emptyLooks: 0 })); // until the looks say otherwise
      this.livenessTimer ??= setInterval(() => void this.lookAtServices(), 1000).unref();
      void this.lookAtServices();
    }
    return !l.live;
  }

  /** The look under way, and when the last one started. */
  private look: Promise<void> | undefined;
  private lookStartedMs = -Infinity;

  async recheck(service: Service): Promise<void> {
    this.isDown(service); // asked about from now on
    const since = Date.now() - LIVENESS_FRESH_MS;
    if (this.look && this.lookStartedMs >= since) return this.look;
    await this.look;
    if (this.lookStartedMs < since) await this.lookAtServices();
  }

  /** One round trip: how many live members each service asked about has, on Redis's clock (members are scored by their lease's end). */
  private lookAtServices(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.look ??= (async () => {
      this.lookStartedMs = Date.now();
      try {
        const services = [...this.liveness.keys()];
        const keys = services.map((service) => this.serviceLiveKey(service));
        const counts = (await LIVE_COUNTS.run(await this.stats(), keys, [])) as number[];
        services.forEach((service, i) => {
          const l = this.liveness.get(service)!;
          l.emptyLooks = Number(counts[i]) === 0 ? l.emptyLooks + 1 : 0;
          l.live = l.emptyLooks < 2;
        });
      } catch {
        for (const l of this.liveness.values()) Object.assign(l, { live: true, emptyLooks: 0 });
      } finally {
        this.look = undefined;
      }
    })();
    return this.look;
  }

  async committedCounters(group: string): Promise<Map<string, number>> {
    const client = await this.stats();
    const keys = this.cluster ? Array.from({ length: this.map.count }, (_, s) => this.countersKey(group, s)) : [this.countersKey(group, 0)];
    const out = new Map<string, number>();
    for (const flat of await Promise.all(keys.map((k) => client.hgetall(k)))) {
      for (const [k, v] of Object.entries(flat)) out.set(k, (out.get(k) ?? 0) + Number(v));
    }
    return out;
  }

  /**
   * Per uplink service and per committed-stream group: entries read but not
   * acked plus entries not read yet, over every shard (XINFO GROUPS, one
   * round trip).
   */
  async consumerLag(): Promise<Map<string, number>> {
    const streams: { stream: string; name?: string }[] = [];
    for (let s = 0; s < this.map.count; s++) {
      for (const service of UP_SERVICES) streams.push({ stream: this.upStream(service, s), name: service });
      streams.push({ stream: this.committedStream(s) });
    }
    // One command per stream (a cluster has them in different slots), sent in one go (auto-pipelined on one server).
    const client = await this.stats();
    const replies = await Promise.all(streams.map(({ stream }) => client.call('XINFO', 'GROUPS', stream).then(
      (reply): [Error | null, unknown] => [null, reply],
      (err: unknown): [Error | null, unknown] => [err as Error, undefined],
    )));
    const lag = new Map<string, number>();
    replies.forEach(([err, reply], i) => {
      if (err) return; // no stream yet: nothing published to the shard
      for (const g of (reply as unknown[][]).map(flatFields)) {
        const name = streams[i]!.name ?? String(g.name);
        const behind = (typeof g.lag === 'number' ? g.lag : 0) + (typeof g.pending === 'number' ? g.pending : 0);
        lag.set(name, (lag.get(name) ?? 0) + behind);
      }
    });
    return lag;
  }

  consumeDown(node: string, handler: DownHandler, options: ConsumeDownOptions = {}): Subscription {
    const own = this.key(`down:${node}`);
    const streams = [own];
    if (options.broadcast ?? true) streams.push(this.key(`down:${ALL_GATEWAYS}`));
    // One read for both on one server; in a cluster (each stream in a slot of its own) a read, and a connection, per stream.
    const lanes = this.cluster ? streams.map((stream) => [stream]) : [streams];
    const stops = lanes.map((lane) => this.readDown(node, own, lane, handler, options));
    return {
      close: async () => {
        for (const stop of stops) stop();
        for (const stream of streams) this.downBytes.delete(this.label(stream));
      },
    };
  }

  /** Read downlink streams (this node's own, `own`, and/or the broadcast one) on a connection of their own until stopped. */
  private readDown(node: string, own: string, streams: string[], handler: DownHandler, options: ConsumeDownOptions): () => void {
    const reader = this.connect();
    this.readers.add(reader);
    // From when we subscribed, on Redis's clock (a second back, so nothing published just now is missed).
    const last: string[] = [];
    let running = true;
    const loop = async () => {
      while (running && !this.closed && last.length === 0) {
        try {
          const [seconds] = await reader.time();
          const start = `${Number(seconds) * 1000 - 1000}-0`;
          last.push(...streams.map(() => start));
        } catch {
          if (!running) return;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      let expiresRefreshedAt = 0;
      let boundedAt = 0;
      while (running && !this.closed) {
        if (streams.includes(own) && Date.now() - expiresRefreshedAt > 60_000) {
          // This node's own stream outlives it by an hour at most (node ids of dead gateways do not pile up).
          expiresRefreshedAt = Date.now();
          this.writer.pexpire(own, 3_600_000).catch(() => undefined);
        }
        if (Date.now() - boundedAt >= this.o.trimIntervalMs) {
          // Between two reads, so `last` is exactly what this reader has read.
          boundedAt = Date.now();
          try {
            await this.boundDown(reader, node, own, streams, last, options.onTrimmed);
          } catch (err) {
            if (!running) return;
            log.warn({ reason: (err as Error).message, node }, 'downlink stream trim failed; retrying');
          }
        }
        let result: [Buffer, StreamEntries][] | null;
        try {
          result = await bytes(reader).xreadBuffer('COUNT', 1000, 'BLOCK', this.o.blockMs, 'STREAMS', ...streams, ...last);
        } catch {
          if (!running) return;
          await new Promise((r) => setTimeout(r, 200));
          continue;
        }
        if (!running || !result) continue;
        const batch: Down[] = [];
        for (const [key, entries] of result) {
          this.counters.downRead += entries.length;
          const i = streams.indexOf(key.toString());
          for (const [id, fields] of entries) {
            last[i] = id.toString();
            if (!fields) continue;
            try {
              batch.push(...decodeDown(fields));
            } catch (err) {
              log.error({ err, node }, 'undecodable downlink entry dropped');
            }
          }
        }
        this.counters.downMessagesRead += batch.length;
        if (batch.length > 0) {
          try {
            handler(batch);
          } catch (err) {
            log.error({ err, node }, 'downlink handler failed');
          }
        }
      }
    };
    void loop();
    return () => {
      running = false;
      this.readers.delete(reader);
      reader.disconnect();
    };
  }

  /** A stream's key without the prefix (the label of its gauges). */
  private label(stream: string): string {
    return stream.slice(this.o.prefix.length);
  }

  /**
   * Apply the age and byte bounds to the downlink streams one reader reads
   * (DOWN_BOUNDS): what it read goes first; what it had not read yet and is
   * trimmed all the same is counted, logged and reported to `onTrimmed`.
   */
  private async boundDown(reader: RedisClient, node: string, own: string, streams: string[], last: string[], onTrimmed: ((entries: number) => void) | undefined): Promise<void> {
    for (let i = 0; i < streams.length; i++) {
      const stream = streams[i]!;
      // A node's own stream has one reader, this one: what it read goes at once. The broadcast one waits for the age.
      const onlyReader = stream === own ? '1' : '0';
      const [, lost, bytesAfter] = (await DOWN_BOUNDS.run(reader, [stream], [this.o.maxDownAgeMs, this.o.maxDownBytes, last[i]!, onlyReader])) as number[];
      this.downBytes.set(this.label(stream), Number(bytesAfter));
      if (Number(lost) > 0) {
        this.counters.downTrimmedUnread += Number(lost);
        this.lossLog.note(stream, Number(lost), (entries) => log.warn({
          node, stream: this.label(stream), entries, maxAgeMs: this.o.maxDownAgeMs, maxBytes: this.o.maxDownBytes,
        }, 'downlink entries trimmed before this node read them (it lagged past the stream\'s age or byte bound): their pushes and replies are lost'));
        try {
          onTrimmed?.(Number(lost));
        } catch (err) {
          log.error({ err, node }, 'onTrimmed failed');
        }
      }
    }
  }

  /**
   * What the bounds look like now, for /metrics (from memory: filled by the
   * readers' trims, so a scrape costs Redis nothing): the configured max
   * ages and bytes, the age of the oldest uplink entry not yet acked on each
   * shard this node owns, and the bytes of each stream this node trims.
   */
  boundsStats(): RedisBusStats {
    const upOldestUnprocessedAge = new Map<string, number>();
    const streamBytes = new Map<string, number>(this.downBytes);
    for (const c of this.consumers) c.stats(upOldestUnprocessedAge, streamBytes);
    return {
      maxAgeSeconds: new Map([['up', this.o.maxUpAgeMs / 1000], ['down', this.o.maxDownAgeMs / 1000]]),
      maxBytes: new Map([['up', this.o.maxUpBytes], ['down', this.o.maxDownBytes]]),
      upOldestUnprocessedAge,
      streamBytes,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const c of this.consumers) await c.stop();
    this.consumers.clear();
    for (const r of this.readers) r.disconnect();
    this.readers.clear();
    clearInterval(this.livenessTimer);
    clearInterval(this.mapTimer);
    this.statsClient?.disconnect();
    if (this.downFlushScheduled) this.flushDown(); // written before QUIT, on the same connection
    await this.writer.quit().catch(() => this.writer.disconnect());
  }
}

/** One shard's decodable entries read in one go, and their messages. */
interface Decoded<T> {
  s: number;
  stream: string;
  /** Entry ids, in stream order. */
  ids: string[];
  /** The raw entries (kept for a dead letter). */
  raw: Buffer[];
  batch: T[];
}

/** A flat [name, value, name, value, …] reply as an object. */
function flatFields(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

/** How a shard consumer reads the shards it holds: the entries its group has not been given yet. */
interface ShardReads {
  /** The next entries of any of `shards` (waiting up to `blockMs`), per shard; null when none came. */
  read(group: string, consumer: string, count: number, blockMs: number, shards: readonly { s: number; stream: string }[]): Promise<[number, StreamEntries][] | null>;
  /** A shard no longer held: a read of it still in flight is left to Redis (what it brings is pending, claimed by the shard's next owner). */
  forget(s: number): void;
  close(): void;
}

/** On one server: one blocking XREADGROUP over every stream held, on one connection. */
class OneRead implements ShardReads {
  constructor(private readonly reader: RedisClient) {}

  async read(group: string, consumer: string, count: number, blockMs: number, shards: readonly { s: number; stream: string }[]): Promise<[number, StreamEntries][] | null> {
    const streams = shards.map((x) => x.stream);
    const result = await bytes(this.reader).xreadgroupBuffer(
      'GROUP', group, consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', ...streams, ...streams.map(() => '>'),
    );
    return result && result.map(([key, entries]) => [shards[streams.indexOf(key.toString())]!.s, entries]);
  }

  forget(): void {}

  close(): void {
    this.reader.disconnect();
  }
}

/** A read of one shard under way: settled once Redis answered. */
interface InFlight {
  done: Promise<void>;
  settled: boolean;
  entries: StreamEntries | null;
  error: unknown;
}

/**
 * On a Redis Cluster, where no command names two streams: a blocking
 * XREADGROUP per shard, each on a connection of its own (a blocking read
 * holds its connection), and whichever answer first. A read still waiting
 * when another answered stays in flight for the next call, so nothing it
 * brings is dropped; one of a shard let go is forgotten, its entries left
 * pending for the shard's next owner (or for us, claimed before the shard is
 * read on, should we take it back).
 */
class PerShardReads implements ShardReads {
  private readonly readers = new Map<number, RedisClient>();
  private readonly inFlight = new Map<number, InFlight>();

  constructor(private readonly connect: () => RedisClient) {}

  async read(group: string, consumer: string, count: number, blockMs: number, shards: readonly { s: number; stream: string }[]): Promise<[number, StreamEntries][] | null> {
    for (const { s, stream } of shards) {
      if (this.inFlight.has(s)) continue;
      let reader = this.readers.get(s);
      if (!reader) this.readers.set(s, (reader = this.connect()));
      const f: InFlight = { settled: false, entries: null, error: undefined, done: Promise.resolve() };
      f.done = bytes(reader).xreadgroupBuffer('GROUP', group, consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', stream, '>').then(
        (r) => { f.entries = r?.[0]?.[1] ?? null; },
        (err: unknown) => { f.error = err; },
      ).finally(() => { f.settled = true; });
      this.inFlight.set(s, f);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      ...shards.map(({ s }) => this.inFlight.get(s)!.done),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, blockMs + 50); }),
    ]);
    clearTimeout(timer);
    const out: [number, StreamEntries][] = [];
    let error: unknown;
    for (const { s } of shards) {
      const f = this.inFlight.get(s)!;
      if (!f.settled) continue;
      this.inFlight.delete(s);
      if (f.error !== undefined) error ??= f.error;
      else if (f.entries && f.entries.length > 0) out.push([s, f.entries]);
    }
    // Entries read with a failed one are handled first; the failure shows at the next call (the shard is read again then).
    if (out.length > 0) return out;
    if (error !== undefined) throw error;
    return null;
  }

  forget(s: number): void {
    this.inFlight.delete(s);
  }

  close(): void {
    for (const r of this.readers.values()) r.disconnect();
    this.readers.clear();
    this.inFlight.clear();
  }
}

/** Owns a fair share of a topic's shards (an uplink service's, a committed-stream group's) and feeds their entries to the handler. */
class ShardConsumer<T> {
  private readonly owned = new Set<number>();
  /**
   * Each owned shard's claim, shared with the store through the write fence.
   * Its `validUntil` is the lease's local deadline: when the request that set
   * or renewed it was sent, plus 80% of the lease. Past it this node neither
   * reads nor handles the shard, even before a renewal tells it the lease is
   * gone (a paused or stalled node must not serve next to the new owner), and
   * the store refuses its writes.
   */
  private readonly claims = new Map<number, ShardClaim>();
  private lastOrphanScanMs = Date.now();
  private running = false;
  private leaseTimer: NodeJS.Timeout | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly attempts = new Map<string, number>();
  private readonly groupsMade = new Set<number>();
  private boundsTimer: NodeJS.Timeout | undefined;
  private readonly lossLog = new LossLog();
  /** Per owned shard, from its last trim: the oldest entry not yet acked (ms, Redis's clock; 0: none), Redis's time then, ours then, its bytes. */
  private readonly bounds = new Map<number, { oldestMs: number; redisNowMs: number; at: number; bytes: number }>();

  constructor(
    private readonly o: Required<RedisBusOptions>,
    private readonly reads: ShardReads,
    private readonly redis: RedisClient,
    private readonly topic: Topic<T>,
    private readonly handler: (batch: T[]) => Promise<CommittedEffects | void>,
    private readonly key: (name: string) => string,
    private readonly counters: BusCounters,
    private readonly shards: Shards,
    private readonly replicas: Replicas | undefined,
    private readonly onTakeover: () => void = () => undefined,
  ) {}

  /** Old shards whose marker of the current growth is in their stream (placed here or by another group's owner). */
  private readonly marked = new Set<number>();
  /** Old shards this group handled up to the marker of the current growth (their new shards may be read). */
  private readonly drained = new Set<number>();
  private drainedEpoch = 0;
  private lastDrainedLook = 0;
  private lastMarkerLook = 0;

  /** A new shard of the current growth whose old shard this group has not drained yet is not read. */
  private readable(s: number): boolean {
    const map = this.shards.now();
    if (map.epoch === 0 || s < map.previous) return true;
    return this.drained.has(s % map.previous);
  }

  /** Look (now and then) whether the old shards of the new shards held are drained by this group. */
  private async lookDrained(held: readonly number[]): Promise<void> {
    const map = this.shards.now();
    if (map.epoch !== this.drainedEpoch) {
      this.drained.clear();
      this.marked.clear();
      this.drainedEpoch = map.epoch;
    }
    const parents = [...new Set(held.filter((s) => !this.readable(s)).map((s) => s % map.previous))];
    if (parents.length === 0 || Date.now() - this.lastDrainedLook < 100) return;
    this.lastDrainedLook = Date.now();
    const done = await Promise.all(parents.map((p) => this.redis.get(drainedKey(this.o.prefix, this.topic.name, p, map.epoch))));
    parents.forEach((p, i) => { if (done[i]) this.drained.add(p); });
  }

  /**
   * Once every live publisher uses the new count, append the growth's marker
   * to each old shard held (one marker per stream, whoever places it: the
   * committed stream is read by several groups).
   */
  private async placeMarkers(): Promise<void> {
    const map = this.shards.now();
    if (map.epoch === 0) return;
    const parents = [...this.owned].filter((s) => s < map.previous && !this.marked.has(s));
    if (parents.length === 0) return;
    const switched = await ALL_SWITCHED.run(this.redis, [this.shards.keys.publishers, this.shards.keys.map], [map.epoch, PUBLISHER_FRESH_MS, MARKER_GRACE_MS]);
    if (Number(switched) !== 1) return;
    for (const s of parents) {
      const stream = this.topic.stream(s);
      const key = this.markedKey(stream, map.epoch);
      // Added, then recorded (with its id): a crash between the two leaves a marker that the next try adds again
      // (two markers of one growth are harmless: the second only finds the old shard drained already).
      if ((await this.redis.get(key)) === null) {
        const id = await this.redis.xadd(stream, '*', 'm', String(map.epoch));
        await this.replicas?.wait(stream);
        await this.redis.set(key, String(id), 'NX');
        log.info({ node: this.o.nodeId, topic: this.topic.name, shard: s, shards: map.count, epoch: map.epoch }, 'the shard count grew: marker placed');
      }
      this.marked.add(s);
    }
  }

  /** Holds the id of the marker of growth `epoch` in `stream`, once placed. */
  private markedKey(stream: string, epoch: number): string {
    return `${this.o.prefix}split-marked:${stream.slice(this.o.prefix.length)}:${epoch}`;
  }

  start(): void {
    this.running = true;
    let ticking = false;
    const tick = () => {
      if (ticking) return; // a slow Redis must not pile ticks up
      ticking = true;
      this.rebalance().catch((err: unknown) => {
        if (this.running) log.warn({ reason: (err as Error).message, node: this.o.nodeId, topic: this.topic.name }, 'lease upkeep failed');
      }).finally(() => {
        ticking = false;
      });
    };
    tick();
    this.leaseTimer = setInterval(tick, Math.max(100, Math.floor(this.o.leaseMs / 3)));
    let bounding = false;
    this.boundsTimer = setInterval(() => {
      if (bounding) return;
      bounding = true;
      this.boundAll().finally(() => {
        bounding = false;
      });
    }, this.o.trimIntervalMs);
    this.loopDone = this.loop();
  }

  /** Apply the age and byte bounds to every shard held (a separate timer: a slow batch does not hold them up). */
  private async boundAll(): Promise<void> {
    for (const s of [...this.owned]) {
      if (!this.running) return;
      if (!this.holds(s)) continue;
      try {
        await this.bound(s);
      } catch (err) {
        if (this.running) log.warn({ reason: (err as Error).message, node: this.o.nodeId, topic: this.topic.name, shard: s }, 'stream trim failed; retrying');
      }
    }
  }

  /**
   * One shard's bounds (UP_BOUNDS): trim it by age and bytes, count what the
   * group lost undelivered (whoever trimmed it: this trim, a writer's length
   * bound, while no node owned the shard), note the oldest entry not yet acked.
   */
  private async bound(s: number): Promise<void> {
    const stream = this.topic.stream(s);
    const reply = (await UP_BOUNDS.run(this.redis, [stream], [this.o.maxUpAgeMs, this.o.maxUpBytes, this.topic.group, this.topic.ownStream ? '1' : '0'])) as [number, number, number, number, number, number, string];
    const [now, byAge, , byBytes, bytesAfter, lost, oldest] = reply;
    if (this.owned.has(s)) this.bounds.set(s, { oldestMs: oldest ? idMs(String(oldest)) : 0, redisNowMs: Number(now), at: Date.now(), bytes: Number(bytesAfter) });
    if (Number(lost) > 0) {
      this.topic.lost(Number(lost));
      this.lossLog.note(stream, Number(lost), (entries) => log.warn({
        node: this.o.nodeId, topic: this.topic.name, shard: s, entries, trimmedByAge: Number(byAge), trimmedByBytes: Number(byBytes),
        maxAgeMs: this.o.maxUpAgeMs, maxBytes: this.o.maxUpBytes, maxLength: this.o.maxUpLength,
      }, this.topic.deadLetters
        ? 'uplink entries trimmed before logic read them (it lagged past the stream\'s bounds): never acked, so their senders resend them'
        : 'committed entries trimmed before this consumer group read them (it lagged past the stream\'s bounds): it never sees them'));
    }
  }

  /** This consumer's part of RedisBus.boundsStats(). */
  stats(oldestAge: Map<string, number>, streamBytes: Map<string, number>): void {
    for (const [s, b] of this.bounds) {
      if (this.topic.deadLetters) oldestAge.set(this.topic.label(s), b.oldestMs > 0 ? Math.max(0, b.redisNowMs - b.oldestMs + (Date.now() - b.at)) / 1000 : 0);
      streamBytes.set(this.topic.stream(s).slice(this.o.prefix.length), b.bytes);
    }
  }

  /**
   * Stop taking batches. The batch in hand may finish and be acked (waited
   * for a while, so a graceful stop acks what it holds); then the leases are
   * released so another node takes the shards over at once.
   */
  async stop(): Promise<void> {
    this.running = false;
    clearInterval(this.leaseTimer);
    clearInterval(this.boundsTimer);
    const waitMs = Math.min(5000, Math.floor(this.o.leaseMs / 2));
    await Promise.race([this.loopDone, new Promise((r) => setTimeout(r, waitMs).unref())]);
    // Leave the live set first, so the others' fair share counts without us and they take every shard released here.
    await this.redis.zrem(this.topic.live, this.o.nodeId).catch(() => 0);
    for (const s of this.owned) await this.redis.eval(RELEASE, 1, this.topic.lease(s), this.o.nodeId).catch(() => 0);
    for (const s of [...this.owned]) this.drop(s);
    // The read loop may still sit in a blocking read or the handler; it ends by itself.
    void this.loopDone.finally(() => this.reads.close());
  }

  /** Heartbeat, renew owned leases, give back extras, take free shards up to the fair share. */
  private async rebalance(): Promise<void> {
    if (!this.running) return;
    await this.shards.load();
    const count = this.shards.now().count;
    const live = Math.max(1, Number(await HEARTBEAT.run(this.redis, [this.topic.live], [this.o.nodeId, this.o.leaseMs])));
    const fair = Math.ceil(count / live);
    // Renewed together (one round trip in all): with many shards, one after another could outlast the lease.
    await Promise.all([...this.owned].map(async (s) => {
      const sentAt = Date.now();
      const at = heldAt(await this.redis.eval(RENEW, 1, this.topic.lease(s), this.o.nodeId, this.o.leaseMs));
      const claim = this.claims.get(s);
      if (at === undefined) this.drop(s); // lost it (we were paused past the lease)
      else if (claim) {
        claim.validUntil = sentAt + this.o.leaseMs * 0.8;
        claim.heldAt = at;
      }
    }));
    // Shards are given back between batches by the read loop (see `surplus`).
    this.surplus = Math.max(0, this.owned.size - fair);
    if (this.owned.size >= fair) return;
    const order = Array.from({ length: count }, (_, i) => (i + shardOf(this.o.nodeId, count)) % count).filter((s) => !this.owned.has(s));
    // As many tried at once as are missing, in this node's order, until the fair share is held or none is left.
    while (this.owned.size < fair && order.length > 0 && this.running) {
      const tried = order.splice(0, fair - this.owned.size);
      const won = (await Promise.all(tried.map(async (s) => {
        const sentAt = Date.now();
        const at = heldAt(await this.redis.eval(TAKE, 1, this.topic.lease(s), this.o.nodeId, this.o.leaseMs));
        return at === undefined ? undefined : { s, sentAt, at };
      }))).filter((x) => x !== undefined);
      await Promise.all(won.map(async ({ s, sentAt, at }) => {
        // No epoch yet: the store takes the shard's next one with this node's first write.
        this.claims.set(s, { shard: this.topic.fence?.(s) ?? s, epoch: undefined, validUntil: sentAt + this.o.leaseMs * 0.8, heldAt: at });
        await this.ensureGroup(s);
        // Before the first read: what is past the bounds goes, and what was lost while nobody owned the shard is counted.
        await this.bound(s).catch((err: unknown) => log.warn({ reason: (err as Error).message, node: this.o.nodeId, topic: this.topic.name, shard: s }, 'stream trim failed'));
      }));
      if (won.length === 0) continue;
      // Before the first batch of these shards: whatever we cached about their conversations may be stale.
      this.onTakeover();
      for (const { s } of won) {
        this.owned.add(s);
        this.claimFrom.add(s);
      }
    }
  }

  private drop(s: number): void {
    const claim = this.claims.get(s);
    if (claim) claim.validUntil = 0; // a write of this shard still in flight is refused
    this.claims.delete(s);
    this.owned.delete(s);
    this.claimFrom.delete(s);
    this.bounds.delete(s);
    this.reads.forget(s);
  }

  /** Owned, and the lease is certainly still ours. */
  private holds(s: number): boolean {
    return this.owned.has(s) && Date.now() < (this.claims.get(s)?.validUntil ?? 0);
  }

  /**
   * After the store refused a write of shard s: ask Redis whether the lease is
   * still ours. If it is (the write only outlived the local deadline, or Redis
   * lost and gave back the lease meanwhile), the next write takes a new epoch;
   * if not, the shard is dropped. When Redis cannot tell, the lease timer will.
   */
  private async confirm(s: number): Promise<void> {
    const claim = this.claims.get(s);
    if (!claim) return;
    const sentAt = Date.now();
    let at: number | undefined;
    try {
      at = heldAt(await this.redis.eval(RENEW, 1, this.topic.lease(s), this.o.nodeId, this.o.leaseMs));
    } catch {
      return;
    }
    if (at === undefined) this.drop(s);
    else if (this.claims.get(s) === claim) {
      claim.validUntil = sentAt + this.o.leaseMs * 0.8;
      claim.heldAt = at;
      claim.epoch = undefined;
    }
  }

  private surplus = 0;
  /** Shards just taken: first claim what earlier owners left pending. */
  private readonly claimFrom = new Set<number>();
  /**
   * Per shard, the newest entry handled through a claim. A blocking read of
   * the shard can be answered while the loop is busy elsewhere; its entries
   * wait, pending under this node, until the shard is read again, and a claim
   * meanwhile (the orphan scan takes anything idle long enough, ours included)
   * may handle them first. Such a read's entries at or below this were
   * handled: they are dropped, not handled twice.
   */
  private readonly claimedUpTo = new Map<number, string>();

  private async ensureGroup(s: number): Promise<void> {
    if (this.groupsMade.has(s)) return;
    let made = false;
    try {
      // From the oldest entry kept; what was trimmed before the group existed was never its to read (not counted lost).
      await CREATE_GROUP.run(this.redis, [this.topic.stream(s)], [this.topic.group]);
      made = true;
    } catch (err) {
      if (!String(err).includes('BUSYGROUP')) throw err;
    }
    this.groupsMade.add(s);
    if (made) await this.drainedIfMarkerGone(s);
  }

  /**
   * A group made on an old shard after the growth's marker was trimmed away
   * (a consumer group added long after a growth) never reads that marker:
   * nothing before it was this group's to read, so the shard counts as drained.
   */
  private async drainedIfMarkerGone(s: number): Promise<void> {
    const map = this.shards.now();
    if (map.epoch === 0 || s >= map.previous) return;
    const stream = this.topic.stream(s);
    const id = await this.redis.get(this.markedKey(stream, map.epoch));
    if (id === null) return; // not placed yet: this group reads it
    if ((await this.redis.xrange(stream, id, id)).length > 0) return; // still there: this group reads it
    await this.redis.set(drainedKey(this.o.prefix, this.topic.name, s, map.epoch), '1');
  }

  private async loop(): Promise<void> {
    while (this.running) {
      try {
        await this.giveBackSurplus();
        if (this.owned.size === 0) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        // A shard just taken is read only after what earlier owners left pending was
        // handled, so a sender's older messages are not overtaken by its newer ones.
        for (const s of [...this.claimFrom]) {
          if (!this.holds(s)) continue;
          if (await this.claim(s, 0)) this.claimFrom.delete(s);
        }
        if (Date.now() - this.lastOrphanScanMs > this.o.leaseMs) {
          // Entries a stalled consumer read after its lease ran out stay pending under it: take them.
          this.lastOrphanScanMs = Date.now();
          for (const s of [...this.owned]) if (this.holds(s) && !this.claimFrom.has(s)) await this.claim(s, this.o.leaseMs * 2);
        }
        if (this.shards.now().epoch > 0) {
          if (Date.now() - this.lastMarkerLook >= 200) {
            this.lastMarkerLook = Date.now();
            await this.placeMarkers();
          }
          await this.lookDrained([...this.owned]);
        }
        const shards = [...this.owned].filter((s) => this.holds(s) && !this.claimFrom.has(s) && this.readable(s));
        if (shards.length === 0) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        const result = await this.reads.read(
          this.topic.group, this.o.nodeId, this.o.batch, Math.min(this.o.blockMs, 250), shards.map((s) => ({ s, stream: this.topic.stream(s) })),
        );
        if (!result) continue;
        let groups: [number, StreamEntries][] = [];
        for (const [s, entries] of result) {
          this.topic.read(entries.length);
          const claimed = this.claimedUpTo.get(s);
          const fresh = claimed === undefined ? entries : entries.filter(([id]) => compareEntryIds(id.toString(), claimed) > 0);
          if (fresh.length > 0) groups.push([s, fresh]);
        }
        // Older entries still pending (another consumer took them meanwhile) come first: this read is claimed with them, in order.
        const behind = await this.olderPending(groups);
        if (behind.size > 0) {
          for (const s of behind) this.claimFrom.add(s);
          groups = groups.filter(([s]) => !behind.has(s));
        }
        // Not handled (the lease went, or we are stopping): claim before reading on, so nothing overtakes these.
        for (const s of await this.processShards(groups)) if (this.owned.has(s)) this.claimFrom.add(s);
      } catch (err) {
        if (!this.running) return;
        if (String(err).includes('NOGROUP')) {
          // Redis lost the stream or its group (restarted without persistence): make them again.
          this.groupsMade.clear();
          for (const s of this.owned) await this.ensureGroup(s).catch(() => undefined);
        }
        log.warn({ reason: (err as Error).message, node: this.o.nodeId, topic: this.topic.name }, 'stream read failed; retrying');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  /**
   * The shards of `groups` where entries older than the ones just read are
   * still pending (not acked). A former owner's blocking read, sent just
   * before its lease ran out (it stalled between its lease check and the
   * read), is served by Redis after we took the shard over: it takes an entry
   * (m1) and our read gets the next (m2). Handling m2 now would store a
   * sender's later message before its earlier one, so m1 is claimed first.
   * Redis serves reads in arrival order, so by the time ours returns, any such
   * entry is already pending under the other consumer. One XPENDING per shard
   * read, in one round trip.
   */
  private async olderPending(groups: readonly [number, StreamEntries][]): Promise<Set<number>> {
    const behind = new Set<number>();
    if (groups.length === 0) return behind;
    // A command per stream (in a cluster each is in a slot of its own), sent together (auto-pipelined).
    const replies = await Promise.all(groups.map(([s, entries]) =>
      this.redis.xpending(this.topic.stream(s), this.topic.group, '-', `(${entries[0]![0].toString()}`, 1)));
    groups.forEach(([s], i) => {
      if ((replies[i] as unknown[]).length > 0) behind.add(s);
    });
    return behind;
  }

  private async giveBackSurplus(): Promise<void> {
    while (this.surplus > 0 && this.owned.size > 0) {
      const s = Math.max(...this.owned);
      this.drop(s);
      this.surplus--;
      await this.redis.eval(RELEASE, 1, this.topic.lease(s), this.o.nodeId);
    }
  }

  /**
   * Take over (and handle) entries a consumer of the group read but never
   * acked, idle at least `minIdleMs`. True when the shard's pending entries
   * were all handled; false when it stopped early (lease, stop).
   */
  private async claim(s: number, minIdleMs: number): Promise<boolean> {
    let cursor = '0-0';
    for (let round = 0; round < 10_000 && this.running && this.holds(s); round++) {
      const [next, entries, deleted] = await bytes(this.redis).xautoclaimBuffer(
        this.topic.stream(s), this.topic.group, this.o.nodeId, Math.floor(minIdleMs), cursor, 'COUNT', this.o.batch,
      );
      if (deleted && deleted.length > 0) {
        // Read by a consumer that never acked them (it died or stalled), then trimmed: Redis drops them from the pending list.
        this.topic.lost(deleted.length);
        log.warn({ node: this.o.nodeId, topic: this.topic.name, shard: s, entries: deleted.length }, 'entries a previous consumer read but never acked were trimmed before they could be claimed');
      }
      const live = entries.filter(([, fields]) => fields !== null && fields !== undefined);
      if (live.length > 0) {
        if (!(await this.process(s, live))) return false;
        const last = live[live.length - 1]![0].toString();
        const before = this.claimedUpTo.get(s);
        if (before === undefined || compareEntryIds(before, last) < 0) this.claimedUpTo.set(s, last);
      }
      cursor = next.toString();
      if (cursor === '0-0') return true;
    }
    return false;
  }

  /**
   * Wait while the lease is owned but not certainly ours (a renewal is late):
   * the renewal either confirms it (true) or finds it gone (false). Handling
   * entries meanwhile could run next to a new owner; skipping them would let
   * newer entries overtake them.
   */
  private async waitForLease(s: number): Promise<boolean> {
    while (this.running && this.owned.has(s) && !this.holds(s)) await new Promise((r) => setTimeout(r, 20));
    return this.running && this.holds(s);
  }

  /**
   * Hand one shard's entries to the handler; ack once it settled; retry, then
   * dead-letter. False when they were left pending (the lease is gone or we
   * are stopping): whoever owns the shard next claims them first.
   */
  private async process(s: number, entries: StreamEntries): Promise<boolean> {
    return (await this.processShards([[s, entries]])).length === 0;
  }

  /**
   * Hand the entries of several shards to the handler as one batch (one store
   * transaction for all of them; each shard's entries stay in order), then
   * ack them. Returns the shards not handled because their lease is not
   * certainly ours (they are claimed again before being read on).
   */
  private async processShards(groups: [number, StreamEntries][]): Promise<number[]> {
    const decoded: Decoded<T>[] = [];
    const markers: { s: number; stream: string; id: string; epoch: number }[] = [];
    const map = this.shards.now();
    for (const [s, entries] of groups) {
      const stream = this.topic.stream(s);
      const d: Decoded<T> = { s, stream, ids: [], raw: [], batch: [] };
      const forward: { id: string; raw: Buffer; to: number }[] = [];
      for (const [idBytes, fields] of entries) {
        const id = idBytes.toString();
        if (!fields) continue;
        const marker = field(fields, 'm');
        if (marker) {
          // A growth's marker: what came before it is handled in this round, what comes after in the next (claimed).
          markers.push({ s, stream, id, epoch: Number(marker.toString()) });
          break;
        }
        try {
          const entry = this.topic.decode(fields);
          const to = this.movedTo(s, entry, map);
          if (to !== undefined) {
            forward.push({ id, raw: field(fields, this.topic.field)!, to });
            continue;
          }
          d.batch.push(entry);
          d.ids.push(id);
          d.raw.push(field(fields, this.topic.field)!);
        } catch (err) {
          await this.deadLetter(stream, id, field(fields, this.topic.field), `undecodable: ${(err as Error).message}`, 1, undefined);
        }
      }
      if (forward.length > 0) await this.forward(s, stream, forward);
      if (d.batch.length > 0) decoded.push(d);
    }
    const notHandled = await this.handleDecoded(decoded);
    for (const m of markers) {
      if (notHandled.includes(m.s) || !this.holds(m.s)) continue;
      // Everything before the marker is handled: this group's new shards of s may be read.
      await this.redis.set(drainedKey(this.o.prefix, this.topic.name, m.s, m.epoch), '1');
      await this.redis.xack(m.stream, this.topic.group, m.id);
      if (m.epoch === map.epoch) this.drained.add(m.s);
      log.info({ node: this.o.nodeId, topic: this.topic.name, shard: m.s, epoch: m.epoch }, 'the shard count grew: old shard drained up to its marker');
      notHandled.push(m.s); // the entries after the marker: claimed and handled next
    }
    return notHandled;
  }

  /**
   * The new shard of an uplink request found in old shard s after this group
   * drained s up to the growth's marker (a stale publisher wrote it there):
   * undefined when it stays.
   */
  private movedTo(s: number, entry: T, map: ShardMap): number | undefined {
    if (!this.topic.partitionOf || map.epoch === 0 || s >= map.previous || !this.drained.has(s)) return undefined;
    const to = shardOf(this.topic.partitionOf(entry), map.count);
    return to === s ? undefined : to;
  }

  /** Requests of conversations that moved, to their new shard's stream (then acked here). */
  private async forward(s: number, stream: string, entries: readonly { id: string; raw: Buffer; to: number }[]): Promise<void> {
    for (const e of entries) {
      const target = this.topic.stream(e.to);
      await this.redis.xadd(target, 'MAXLEN', '~', this.o.maxUpLength, '*', this.topic.field, e.raw);
      await this.replicas?.wait(target);
      await this.redis.xack(stream, this.topic.group, e.id);
    }
    log.warn({ node: this.o.nodeId, topic: this.topic.name, shard: s, entries: entries.length }, 'requests written to an old shard after the shard count grew (a publisher not heard from): forwarded to their new shard');
  }

  /**
   * Hand held shards' entries to the handler and ack them. Returns the
   * shards not handled (their lease is not certainly ours).
   * - Fenced: nothing acked; shards still ours are handled again, the others left to their owner.
   * - The store unavailable: the same batch again after a pause, not counted.
   * - Any other failure: entry by entry, so one bad entry is found and dead-lettered alone.
   */
  private async handleDecoded(decoded: Decoded<T>[]): Promise<number[]> {
    const notHeld: number[] = [];
    let pending = decoded;
    for (let pause = 100; ; ) {
      const held = await this.stillHeld(pending, notHeld);
      if (held.length === 0) return notHeld;
      pending = held;
      try {
        await this.runHandler(held);
        return notHeld;
      } catch (err) {
        if (isFencedError(err)) {
          await this.fenced(held, err);
          continue;
        }
        if (isUnavailable(err)) {
          if (pause === 100 || pause >= this.o.unavailablePauseMaxMs) log.warn({ reason: (err as Error).message, node: this.o.nodeId }, 'store unavailable; uplink paused');
          await new Promise((r) => setTimeout(r, pause));
          pause = Math.min(pause * 2, this.o.unavailablePauseMaxMs);
          continue;
        }
        const one = held.length === 1 && held[0]!.batch.length === 1;
        if (!one) {
          for (const d of held) notHeld.push(...(await this.oneByOne(d)));
          return notHeld;
        }
        if (await this.failedOnce(held[0]!, err)) return notHeld;
      }
    }
  }

  /** The shards of `pending` whose lease is certainly ours (waiting for a late renewal); the others go to `notHeld`. */
  private async stillHeld(pending: Decoded<T>[], notHeld: number[]): Promise<Decoded<T>[]> {
    const checked: Decoded<T>[] = [];
    for (const d of pending) {
      if (await this.waitForLease(d.s)) checked.push(d);
      else notHeld.push(d.s);
    }
    // Checked one after another: make sure none lapsed while waiting on another.
    const held: Decoded<T>[] = [];
    for (const d of checked) {
      if (this.holds(d.s)) held.push(d);
      else notHeld.push(d.s);
    }
    return held;
  }

  /**
   * Hand the batch to the handler (under a write fence when the topic's
   * handler writes), then ack it; the counters it returns are added in the
   * same MULTI as the ack.
   */
  private async runHandler(held: Decoded<T>[]): Promise<void> {
    if (this.topic.countersKey) {
      // A committed-stream group: shard by shard, so each ack carries exactly the counts of its entries.
      for (const d of held) {
        const batch = this.topic.unseen?.(d.batch) ?? d.batch;
        const effects = batch.length > 0 ? await this.handler(batch) : undefined;
        if (KILL_BEFORE_ACK) await this.killBeforeAck([d]);
        const counters = Object.entries(effects?.counters ?? {}).flat();
        await ACK_COUNTING.run(this.redis, [d.stream, this.topic.countersKey(d.s)], [this.topic.group, d.ids.length, ...d.ids, ...counters]);
        this.topic.acked?.(batch);
        for (const id of d.ids) this.attempts.delete(id);
      }
      return;
    }
    const batch = held.flatMap((d) => d.batch);
    if (this.topic.fence) {
      const fence = { owner: this.o.nodeId, claims: held.map((d) => this.claims.get(d.s)!) };
      await withWriteFence(fence, () => this.handler(batch));
    } else {
      await this.handler(batch);
    }
    if (KILL_BEFORE_ACK) await this.killBeforeAck(held);
    await Promise.all(held.map((d) => this.redis.xack(d.stream, this.topic.group, ...d.ids)));
    for (const d of held) for (const id of d.ids) this.attempts.delete(id);
  }

  /**
   * Not the batch's fault: we lost (or may have lost) a shard. Nothing was
   * acked; shards still ours are handled again (the first write takes a new
   * epoch), the others go to their new owner, who claims what is left pending here.
   */
  private async fenced(held: Decoded<T>[], err: unknown): Promise<void> {
    log.warn({ node: this.o.nodeId, shards: held.map((d) => d.s), reason: (err as Error).message }, 'the store refused a batch (fenced)');
    this.counters.fenced++;
    for (const d of held) await this.confirm(d.s);
  }

  /** A shard's entries one at a time, in order (after its batch failed). Returns the shard if it was not handled to the end. */
  private async oneByOne(d: Decoded<T>): Promise<number[]> {
    for (let i = 0; i < d.batch.length; i++) {
      const single: Decoded<T> = { s: d.s, stream: d.stream, ids: [d.ids[i]!], raw: [d.raw[i]!], batch: [d.batch[i]!] };
      const left = await this.handleDecoded([single]);
      if (left.length > 0) return left;
    }
    return [];
  }

  /**
   * Fault injection for tests (LONGLINK_FAULT_KILL_BEFORE_ACK=1): a request
   * whose id starts with `kill-before-ack:` SIGKILLs this process after its
   * batch was handled and before the stream ack, once per request cluster-wide.
   */
  private async killBeforeAck(held: Decoded<T>[]): Promise<void> {
    for (const d of held) {
      for (const entry of d.batch) {
        const requestId = this.topic.requestId(entry);
        if (!requestId.startsWith('kill-before-ack:')) continue;
        if (await this.redis.set(this.key(`fault:${this.topic.name}:${requestId}`), this.o.nodeId, 'EX', 3600, 'NX')) {
          log.warn({ node: this.o.nodeId, topic: this.topic.name, request: requestId }, 'fault injection: SIGKILL between the handler and the stream ack');
          process.kill(process.pid, 'SIGKILL');
          await new Promise(() => undefined);
        }
      }
    }
  }

  /** One entry failed: count it; dead-letter it at the limit (true: done with it), else pause (false: try again). */
  private async failedOnce(d: Decoded<T>, err: unknown): Promise<boolean> {
    const id = d.ids[0]!;
    const n = (this.attempts.get(id) ?? 0) + 1;
    this.attempts.set(id, n);
    if (n < this.o.maxDeliveries) {
      await new Promise((r) => setTimeout(r, 100 * n));
      return false;
    }
    await this.deadLetter(d.stream, id, d.raw[0], String((err as Error | undefined)?.message ?? err), n, d.batch[0]);
    this.attempts.delete(id);
    return true;
  }

  /**
   * Move one entry to the dead letters, alone, with why (a committed-stream
   * group logs and skips it: pushes heal by sync, and a replay would hand it
   * to every group); then ack it where it was.
   */
  private async deadLetter(stream: string, id: string, envelope: Buffer | undefined, error: string, attempts: number, entry: T | undefined): Promise<void> {
    if (!this.topic.deadLetters) {
      log.error({ node: this.o.nodeId, topic: this.topic.name, stream, entry: id, attempts, error: error.slice(0, 500), ...this.topic.describe(entry) },
        'a committed entry kept failing in this consumer group; skipped');
      await this.redis.xack(stream, this.topic.group, id);
      this.topic.lost(1);
      return;
    }
    const letter = create(DeadLetterSchema, {
      stream, entryId: id, error: error.slice(0, 500), failedAtMs: BigInt(Date.now()), attempts, envelope: envelope ?? new Uint8Array(),
    });
    log.error({
      node: this.o.nodeId, stream, entry: id, attempts, error: letter.error, ...this.topic.describe(entry),
    }, 'an uplink entry kept failing; moved to the dead letters');
    await this.redis.xadd(this.key('dead'), 'MAXLEN', '~', 100_000, '*', 'x', Buffer.from(toBinary(DeadLetterSchema, letter)));
    await this.redis.xack(stream, this.topic.group, id);
    this.counters.deadLettered++;
  }
}

// Replays one dead letter once: only the call that deletes it re-adds it. KEYS: dead stream, its
// original stream. ARGV: dead id, envelope bytes, max length.
const REPLAY = `if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
end
return false`;

/** The dead-letter stream `{p}dead`: list, count, replay into the original shard stream. */
class RedisDeadLetters implements DeadLetters {
  constructor(
    private readonly redis: RedisClient,
    private readonly stream: string,
    private readonly maxUpLength: number,
    /** The fail-fast connection: count() is read by /metrics, which must answer while Redis is down. */
    private readonly fast: () => Promise<RedisClient>,
    /** On a Redis Cluster the dead letters and the shard streams are in different slots: no script names both. */
    private readonly cluster: boolean,
  ) {}

  async list(limit: number): Promise<DeadLetterInfo[]> {
    return (await this.read('-', '+', limit)).map((d) => d.info);
  }

  async count(): Promise<number> {
    return (await this.fast()).xlen(this.stream);
  }

  async replay(ids: readonly string[]): Promise<string[]> {
    const chosen = ids.length > 0
      ? (await Promise.all(ids.map((id) => this.read(id, id, 1)))).flat()
      : await this.read('-', '+', 10_000);
    const replayed: string[] = [];
    for (const { info, letter } of chosen) {
      if (letter.envelope.length === 0) continue; // nothing that could be handled again
      if (this.cluster) {
        // The dead letters and the shard's stream are in different slots: the replay that deletes the letter adds it
        // back (so of two at once, one does), and a letter it could not add is put back among the dead letters.
        if ((await this.redis.xdel(this.stream, info.id)) !== 1) continue;
        try {
          await this.redis.xadd(letter.stream, 'MAXLEN', '~', this.maxUpLength, '*', 'e', Buffer.from(letter.envelope));
        } catch (err) {
          await this.redis.xadd(this.stream, 'MAXLEN', '~', 100_000, '*', 'x', Buffer.from(toBinary(DeadLetterSchema, letter)));
          throw err;
        }
        replayed.push(info.id);
        continue;
      }
      const added = await this.redis.eval(REPLAY, 2, this.stream, letter.stream, info.id, Buffer.from(letter.envelope), this.maxUpLength);
      if (added) replayed.push(info.id);
    }
    return replayed;
  }

  /** The dead letters with ids from `start` to `end`, at most `count`, oldest first. */
  private async read(start: string, end: string, count: number): Promise<Described[]> {
    if (count <= 0) return [];
    const entries = await bytes(this.redis).xrangeBuffer(this.stream, start, end, 'COUNT', count);
    const out: Described[] = [];
    for (const [idBytes, fields] of entries) {
      const d = describe(idBytes.toString(), fields);
      if (d) out.push(d);
    }
    return out;
  }
}

interface Described {
  info: DeadLetterInfo;
  letter: DeadLetter;
}

function describe(id: string, fields: Fields | null): Described | undefined {
  const x = fields ? field(fields, 'x') : undefined;
  if (!x) return undefined;
  const letter = fromBinary(DeadLetterSchema, x);
  let up: UpEnvelope | undefined;
  try {
    up = fromBinary(UpEnvelopeSchema, letter.envelope);
  } catch {
    up = undefined;
  }
  return {
    letter,
    info: {
      id, stream: letter.stream, entryId: letter.entryId, partition: up?.partition ?? '',
      operation: up?.body.case === 'frame' ? operationName(up.body.value) : up?.body.case ?? '',
      userId: up?.origin?.userId ?? '', error: letter.error, failedAtMs: Number(letter.failedAtMs), attempts: letter.attempts,
    },
  };
}

/**
 * On a Redis Cluster: a publish is done once the replicas of the stream's
 * master hold it, `replicas` of them at most (a master the cluster lists
 * without a replica, such as a replica just promoted whose old master is
 * down, is not waited for: writes go on, unreplicated, until it has one).
 * WAIT goes on the connection the writes went through (the cluster's
 * connection to that master), so it covers them; the waits of one turn share
 * one WAIT per master. Fewer replicas than that within the timeout fails the
 * publish (its caller answers UNAVAILABLE and the client sends again): a write
 * a failover could still lose is not called done.
 */
class Replicas {
  /** Per master: a slot it serves (its replicas are listed with it) and the publishes waiting. */
  private readonly queued = new Map<string, { slot: number; waiters: { resolve: () => void; reject: (err: unknown) => void }[] }>();
  private scheduled = false;

  constructor(private readonly cluster: Cluster, private readonly replicas: number, private readonly timeoutMs = 2000) {}

  /** After a write to `key` was answered: resolves once enough replicas have it. */
  wait(key: string): Promise<void> {
    const slot = slotOf(key);
    const nodes = this.cluster.slots[slot];
    const master = nodes?.[0];
    if (!master) return Promise.reject(new Error(`no master known for ${key}'s slot`));
    if (nodes.length < 2) return Promise.resolve(); // no replica listed: nothing to wait for
    return new Promise<void>((resolve, reject) => {
      let q = this.queued.get(master);
      if (!q) this.queued.set(master, (q = { slot, waiters: [] }));
      q.waiters.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const byMaster = [...this.queued];
    this.queued.clear();
    for (const [master, { slot, waiters }] of byMaster) {
      const node = this.cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === master);
      // The replicas the cluster lists now for a slot the master serves.
      const nodes = this.cluster.slots[slot];
      const want = nodes?.[0] === master ? Math.min(this.replicas, nodes.length - 1) : this.replicas;
      const done = want === 0
        ? Promise.resolve()
        : node
          ? node.call('WAIT', want, this.timeoutMs).then((acked) => {
            if (Number(acked) < want) throw new Error(`only ${Number(acked)} of ${want} replicas of ${master} acknowledged the write in ${this.timeoutMs} ms`);
          })
          : Promise.reject(new Error(`no connection to master ${master}`));
      done.then(() => { for (const w of waiters) w.resolve(); }, (err: unknown) => { for (const w of waiters) w.reject(err); });
    }
  }
}

/** Stream entry ids ("ms-seq") in stream order: negative, 0 or positive. */
export function compareEntryIds(a: string, b: string): number {
  const [am, as] = a.split('-') as [string, string?];
  const [bm, bs] = b.split('-') as [string, string?];
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(as ?? '0') - BigInt(bs ?? '0');
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}
