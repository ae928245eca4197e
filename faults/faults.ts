// The faults of the suite. Each is injected into a running cluster while the
// load keeps sending; run.ts measures around it (ledger, recovery, memory).
// A fault may prepare (before the traffic's baseline), inject (the fault
// itself; recovery is measured from when it starts), restore (after
// recovery: start again what it killed) and clean up (after the ledger).
import { readFileSync } from 'node:fs';
import type { Cluster as RedisClusterClient } from 'ioredis';
import pg from 'pg';
import type { Cluster, NodeProcess } from '../src/dev/cluster.js';
import type { AppendFsync } from '../src/dev/services.js';
import { shardOf } from '../src/engines/bus-redis.js';
import { openRedis, slotOf, type RedisClient } from '../src/engines/redis-shared.js';
import { directConversationId } from '../src/protocol/ids.js';
import { Fleet } from './lib/fleet.js';

/** Uplink shards of the suite's cluster. */
export const SHARDS = 16;

export interface Options {
  quick: boolean;
  json: boolean;
  only: string[] | undefined;
  users: number;
  rate: number;
  /** Groups of the traffic, their messages per second (all together), a membership change per group every churnMs (0: none). */
  groups: number;
  groupRate: number;
  churnMs: number;
  /** HTTP business pushes per second (0: none). */
  httpRate: number;
  crowd: number;
  gateways: number;
  logic: number;
  /**
   * The split layout (`--split`): a process per service of the logic tier
   * (auth, message × `messages`, group, storage, risk) instead of `logic`
   * combined ones; the logic faults then target the message process owning
   * the watched conversation's send-path shard, and the group and storage
   * processes have faults of their own.
   */
  split: boolean;
  messages: number;
  /** On a Redis Cluster (3 masters, 3 replicas) instead of one Redis (`--redis-cluster`): its master fails over instead of a Redis restart. */
  redisCluster: boolean;
  leaseMs: number;
  nodeTtlMs: number;
  appendfsync: AppendFsync;
  routing: 'targeted' | 'broadcast';
  /** Traffic before the fault (baseline) and after recovery, ms. */
  warmMs: number;
  afterMs: number;
}

export interface Context {
  cluster: Cluster;
  fleet: Fleet;
  options: Options;
  progress(message: string): void;
  /** Extra figures for this row's report. */
  note: Record<string, string | number | boolean>;
  /** Fleets that hold devices for this row only (their status counts for recovery, their ledger for delivery). */
  extraFleets: Fleet[];
  /** Nodes that do not survive this fault (left out of the memory comparison). */
  victims: Set<string>;
  /** Recovery is measured from this moment when set (by inject), else from the injection's start. */
  recoveryFrom: number | undefined;
}

export interface Fault {
  name: string;
  /** What it does, for the README and --help. */
  what: string;
  prepare?(ctx: Context): Promise<void>;
  inject(ctx: Context): Promise<void>;
  restore?(ctx: Context): Promise<void>;
  cleanup?(ctx: Context): Promise<void>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Wait (2 min at most) until no send has waited 2 s for its ack, 3 s in a row (after a crowd's first logins and syncs). */
export async function settle(fleet: Fleet): Promise<void> {
  for (let calm = 0, end = Date.now() + 120_000; calm < 3 && Date.now() < end; await sleep(1000)) {
    calm = (await fleet.status()).oldestWaitMs < 2000 ? calm + 1 : 0;
  }
}

/** Resident memory of a process in bytes (0 when it is gone). */
export function rssOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The connections each running gateway holds (its /healthz). */
async function connectionsByGateway(cluster: Cluster): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(cluster.gateways().filter((g) => g.running).map(async (g) => {
    const res = await fetch(`${g.httpUrl}/healthz`, { signal: AbortSignal.timeout(3000) });
    out.set(g.name, ((await res.json()) as { connections?: number }).connections ?? 0);
  }));
  return out;
}

/** The connections the gateways hold, added up. */
async function gatewayConnections(cluster: Cluster): Promise<number> {
  return [...(await connectionsByGateway(cluster)).values()].reduce((s, n) => s + n, 0);
}

/** The nodes serving the HTTP API: the logic nodes (combined layout) or the auth ones (split). */
export function apiNodes(cluster: Cluster): NodeProcess[] {
  return cluster.nodes.filter((n) => n.role === 'logic' || n.role === 'auth');
}

/** The layout in one line, for the report's header: every process by role. */
export function layoutOf(cluster: Cluster, options: Options): string {
  const byRole = new Map<string, string[]>();
  for (const n of cluster.nodes) byRole.set(n.role, [...(byRole.get(n.role) ?? []), n.name]);
  const roles = [...byRole].map(([role, names]) => `${role} ×${names.length} (${names.join(', ')})`).join(', ');
  return `${options.split ? 'split' : 'combined'}: ${roles}; ${SHARDS} uplink shards, lease ${options.leaseMs} ms; send path on ${
    options.split ? 'the message processes' : 'the logic processes'} (ll:lease:{shard})${options.redisCluster ? '; on a Redis Cluster of 3 masters and 3 replicas' : ''}`;
}

/**
 * The conversation whose send-path shard the split layout's message faults
 * follow: the first HTTP push conversation (client sends and business pushes
 * ordered together by its owner), else the first group's, else u0 ↔ u1.
 */
function watchedConversation(ctx: Context): string {
  const o = ctx.fleet.options;
  const pair = o.http?.pairs[0];
  if (pair) return directConversationId(`${o.prefix}${pair[0]}`, `${o.prefix}${pair[1]}`);
  return ctx.fleet.groups[0]?.conversationId ?? directConversationId(`${o.prefix}0`, `${o.prefix}1`);
}

/** A short-lived client of the cluster's Redis (one server, or the Redis Cluster). */
async function redisOf<T>(ctx: Context, f: (redis: RedisClient) => Promise<T>): Promise<T> {
  const redis = openRedis(ctx.cluster.redisCluster?.url ?? ctx.cluster.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return await f(redis);
  } finally {
    redis.disconnect();
  }
}

/** Who holds a send-path shard's lease now (`ll:lease:{shard}`), or undefined. */
async function leaseHolder(ctx: Context, shard: number): Promise<string | undefined> {
  return redisOf(ctx, async (redis) => (await redis.get(`ll:lease:${shard}`)) ?? undefined);
}

/** How many send-path shards each process holds now, e.g. "message-1:8 message-2:8". */
async function leaseCounts(ctx: Context): Promise<string> {
  return redisOf(ctx, async (redis) => {
    const owners = await Promise.all(Array.from({ length: SHARDS }, (_, s) => redis.get(`ll:lease:${s}`)));
    const counts = new Map<string, number>();
    for (const o of owners) counts.set(o ?? 'none', (counts.get(o ?? 'none') ?? 0) + 1);
    return [...counts].sort().map(([o, n]) => `${o}:${n}`).join(' ');
  });
}

/**
 * The victim of a "logic" fault: logic-1 in the combined layout (as always);
 * in the split layout the message process holding the watched conversation's
 * send-path shard (waits up to 15 s for a live one to hold it, e.g. while
 * shards rebalance after an earlier fault). Notes the conversation, its shard
 * and who held which shards.
 */
async function sendPathVictim(ctx: Context): Promise<string> {
  if (!ctx.options.split) return 'logic-1';
  const conversation = watchedConversation(ctx);
  const shard = shardOf(conversation, SHARDS);
  ctx.note.conversation = conversation;
  ctx.note.shard = shard;
  for (const end = Date.now() + 15_000; ;) {
    const holder = await leaseHolder(ctx, shard);
    if (holder && ctx.cluster.ofRole('message').some((n) => n.name === holder && n.running)) {
      ctx.note.leases_before = await leaseCounts(ctx);
      return holder;
    }
    if (Date.now() > end) throw new Error(`no running message process holds ll:lease:${shard} (holder: ${holder ?? 'none'})`);
    await sleep(250);
  }
}

/**
 * After the split layout's message process was killed or stopped: wait (up to
 * 2 leases + 5 s) until another running message process holds the watched
 * shard, and note how long that took. Recovery is measured from the fault
 * anyway; waiting here keeps the recovery window from closing before the
 * sends stuck on the dead owner's shards have waited past the limit.
 */
async function awaitTakeover(ctx: Context, victim: string, started: number): Promise<void> {
  if (!ctx.options.split || typeof ctx.note.shard !== 'number') return;
  for (const end = Date.now() + ctx.options.leaseMs * 2 + 5000; Date.now() < end; await sleep(100)) {
    const holder = await leaseHolder(ctx, ctx.note.shard).catch(() => undefined);
    if (holder && holder !== victim && ctx.cluster.ofRole('message').some((n) => n.name === holder && n.running)) {
      ctx.note.takeover_s = Number(((Date.now() - started) / 1000).toFixed(2));
      return;
    }
  }
  ctx.note.takeover_s = 'none';
}

/** After a message fault: who holds the watched shard now, and the shards of each process (the takeover). */
async function noteTakeover(ctx: Context, key: string): Promise<void> {
  if (!ctx.options.split || typeof ctx.note.shard !== 'number') return;
  ctx.note[key] = (await leaseHolder(ctx, ctx.note.shard)) ?? 'none';
  ctx.note.leases_after = await leaseCounts(ctx);
}

/**
 * SIGSTOP `node` while it is inside a write transaction, before its commit
 * (PostgreSQL shows a transaction with an xid for its connections, named by
 * PGAPPNAME), so the zombie holds a batch: tries pause, look, resume until it catches one (each
 * miss pauses it for a few ms only). Returns whether it did; paused either way.
 */
async function pauseWhileWriting(ctx: Context, node: string): Promise<string | false> {
  const client = new pg.Client({ connectionString: ctx.cluster.postgres.url });
  await client.connect();
  try {
    for (let attempt = 0; attempt < 300; attempt++) {
      ctx.cluster.signal(node, 'SIGSTOP');
      const { rows } = await client.query<{ state: string; query: string }>(
        // Not in its COMMIT: that write would land (rightly: it was made while the lease was valid).
        `SELECT state, query FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL
           AND (state = 'idle in transaction' OR query NOT LIKE 'COMMIT%')`, [node],
      );
      if (rows.length > 0) return `${rows[0]!.state}: ${rows[0]!.query.replace(/\s+/g, ' ').slice(0, 40)}`;
      ctx.cluster.signal(node, 'SIGCONT');
      await sleep(5 + Math.random() * 30);
    }
    ctx.cluster.signal(node, 'SIGSTOP');
    return false;
  } finally {
    await client.end();
  }
}

async function writingTransactions(ctx: Context, node: string): Promise<number> {
  const client = new pg.Client({ connectionString: ctx.cluster.postgres.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL', [node],
    );
    return rows[0]?.n ?? 0;
  } finally {
    await client.end();
  }
}

/**
 * Kill (or stop) a node and start it again at restore. The gateway is the one
 * holding the most clients then (earlier faults moved clients around); the
 * logic node is logic-1 (started again by earlier faults, it has its share of
 * the shards back by then); in the split layout, the message process holding
 * the watched conversation's send-path shard (so the other message process
 * takes it over).
 */
function nodeFault(name: string, what: string, role: 'gateway' | 'logic', signal: NodeJS.Signals): Fault {
  let victim = 'logic-1';
  return {
    name,
    what,
    async inject(ctx) {
      if (role === 'gateway') {
        const held = [...(await connectionsByGateway(ctx.cluster))].sort((a, b) => b[1] - a[1]);
        victim = held[0]![0];
        ctx.note.victim_clients = held[0]![1];
      } else victim = await sendPathVictim(ctx);
      ctx.note.victim = victim;
      ctx.victims.add(victim);
      const started = Date.now();
      const exit = await ctx.cluster.kill(victim, signal);
      ctx.note.exit = String(exit);
      ctx.note.exit_s = Number(((Date.now() - started) / 1000).toFixed(2));
      if (role === 'logic') await awaitTakeover(ctx, victim, started);
    },
    async restore(ctx) {
      if (role === 'logic') await noteTakeover(ctx, 'new_owner');
      await ctx.cluster.restart(victim);
      ctx.progress(`${victim} started again`);
    },
  };
}

/**
 * The split layout's single group or storage process is killed (SIGKILL),
 * stays down `downMs`, and is started again (same node id: it takes its
 * shards back when its old leases run out). Its service's requests wait on
 * its streams meanwhile; the other services go on.
 */
function serviceOutage(role: 'group' | 'storage', what: string): Fault {
  return {
    name: `sigkill-${role}`,
    what,
    async inject(ctx) {
      const victim = ctx.cluster.ofRole(role).find((n) => n.running)?.name;
      if (!victim) throw new Error(`no running ${role} process`);
      ctx.note.victim = victim;
      ctx.victims.add(victim);
      const downMs = ctx.options.quick ? 3000 : 5000;
      ctx.note.down_s = downMs / 1000;
      const exit = await ctx.cluster.kill(victim, 'SIGKILL');
      ctx.note.exit = String(exit);
      await sleep(downMs);
      const t = Date.now();
      await ctx.cluster.restart(victim);
      ctx.note.start_s = Number(((Date.now() - t) / 1000).toFixed(2));
      ctx.progress(`${victim} started again`);
    },
  };
}

/**
 * Pause the send path's node (logic-1, or the split layout's message process
 * holding the watched shard) inside a write, past its lease, then resume it.
 */
function sigstopFault(name: string, what: string): Fault {
  return {
    name,
    what,
    async inject(ctx) {
      const victim = await sendPathVictim(ctx);
      if (ctx.options.split) ctx.note.victim = victim;
      const pauseMs = ctx.options.leaseMs * 2 + 1000;
      ctx.note.paused_s = pauseMs / 1000;
      ctx.note.caught_writing = await pauseWhileWriting(ctx, victim);
      ctx.recoveryFrom = Date.now(); // the pause that counts starts now
      await sleep(pauseMs);
      // PostgreSQL ends a transaction idle that long (PostgresStore's idleInTransactionMs), so its locks are free.
      ctx.note.zombie_transactions_at_resume = await writingTransactions(ctx, victim);
      await noteTakeover(ctx, 'owner_during_pause');
      ctx.cluster.signal(victim, 'SIGCONT');
    },
  };
}

function redisRestart(policy: AppendFsync): Fault {
  return {
    name: `redis-restart-${policy}`,
    what: `Redis with AOF appendfsync ${policy} is killed (SIGKILL: a crash) under load and started again on its AOF`,
    async prepare(ctx) {
      await ctx.cluster.redis.setAppendfsync(policy);
      ctx.note.appendfsync = policy;
    },
    async inject(ctx) {
      await ctx.cluster.redis.restart('SIGKILL');
    },
    async cleanup(ctx) {
      await ctx.cluster.redis.setAppendfsync(ctx.options.appendfsync);
    },
  };
}

/**
 * On a Redis Cluster: the master serving the watched conversation's
 * send-path shard is killed (SIGKILL) under load; its replica is promoted
 * after the node timeout, and the killed node is started again (it rejoins
 * as a replica).
 */
function redisMasterFailover(): Fault {
  let victim: { kill(): Promise<void>; start(): Promise<void>; port: number } | undefined;
  return {
    name: 'redis-master-failover',
    what: 'the Redis Cluster master serving the watched conversation\'s send-path shard is killed (SIGKILL) under load: its replica takes over; the node rejoins as a replica',
    async prepare(ctx) {
      const rc = ctx.cluster.redisCluster!;
      const shard = shardOf(watchedConversation(ctx), SHARDS);
      const master = await redisOf(ctx, async (redis) => (redis as RedisClusterClient).slots[slotOf(`ll:up:${shard}`)]?.[0]);
      victim = rc.nodes.find((n) => `127.0.0.1:${n.port}` === master);
      if (!victim) throw new Error(`no node serves shard ${shard}'s slot (${master})`);
      ctx.note.master = victim.port;
    },
    async inject(ctx) {
      await victim!.kill();
      const killedAt = Date.now();
      await ctx.cluster.redisCluster!.waitHealthy(30_000);
      ctx.note.promoted_after_s = Math.round((Date.now() - killedAt) / 100) / 10;
    },
    async restore(ctx) {
      await victim!.start();
      await ctx.cluster.redisCluster!.waitHealthy(30_000);
    },
  };
}

const gatewayFaults = (): Fault[] => [
  nodeFault('sigkill-gateway', 'a gateway is killed (SIGKILL): its clients reconnect to the others and sync', 'gateway', 'SIGKILL'),
  nodeFault('sigterm-gateway', 'a gateway stops gracefully (SIGTERM): it kicks its clients with SERVER_SHUTDOWN; they reconnect elsewhere', 'gateway', 'SIGTERM'),
];

/** The faults every layout runs after its node faults: Redis, PostgreSQL, a slow consumer, a crowd. */
const sharedFaults: Fault[] = [
  redisRestart('everysec'),
  redisRestart('always'),
  {
    name: 'postgres-restart',
    what: 'PostgreSQL stops at once (immediate shutdown, like a crash: WAL replay at start) and starts again',
    async inject(ctx) {
      await ctx.cluster.postgres.restart('immediate');
    },
  },
  {
    name: 'slow-consumer',
    what: 'one client stops reading while others send it large messages: the gateway drops it (SLOW_CONSUMER); others are unaffected; it gets everything at its next sync',
    async inject(ctx) {
      const before = await gatewayConnections(ctx.cluster);
      const reconnectsBefore = (await ctx.fleet.status()).reconnects;
      await ctx.fleet.stall(true);
      const started = Date.now();
      let blasted = 0;
      let dropped = false;
      // Waves of 12 KB messages until a gateway holds one connection less (bounded).
      while (Date.now() - started < 60_000) {
        blasted += await ctx.fleet.blast(100, 12 * 1024);
        await sleep(300);
        if ((await gatewayConnections(ctx.cluster)) < before) {
          dropped = true;
          break;
        }
      }
      ctx.note.slow_dropped = dropped;
      ctx.note.slow_dropped_s = Number(((Date.now() - started) / 1000).toFixed(1));
      ctx.note.sent_to_slow = blasted;
      const s = await ctx.fleet.status();
      ctx.note.others_reconnects = s.reconnects - reconnectsBefore;
      // Recovery is measured from when the client reads again.
      ctx.recoveryFrom = Date.now();
      await ctx.fleet.stall(false);
    },
  },
  {
    name: 'reconnect-crowd',
    what: 'a gateway holding a crowd of extra clients (10,000 by default) is killed: they all reconnect at once to the others and sync',
    async prepare(ctx) {
      const gw = ctx.cluster.node('gw-1');
      const perProcess = 3500;
      const crowd = await Fleet.start({
        prefix: 'c', users: ctx.options.crowd, processes: Math.max(1, Math.ceil(ctx.options.crowd / perProcess)),
        apiUrls: apiNodes(ctx.cluster).map((n) => n.httpUrl), tokenSecret: ctx.cluster.tokenSecret, transports: ['tcp'],
        pinUrl: gw.tcpUrl, concurrency: 200,
      });
      ctx.extraFleets.push(crowd);
      const t0 = Date.now();
      let shown = 0;
      const r = await crowd.connect((n) => {
        if (Date.now() - shown < 2000) return;
        shown = Date.now();
        ctx.progress(`crowd: ${n}/${ctx.options.crowd} connected to gw-1`);
      });
      ctx.note.crowd = r.connected;
      ctx.note.crowd_connect_s = Number(((Date.now() - t0) / 1000).toFixed(1));
      if (r.failed > 0) throw new Error(`${r.failed} crowd clients could not connect: ${JSON.stringify(r.errors)}`);
      // Their first syncs queue in logic for a while: let the traffic settle before the baseline.
      await settle(ctx.fleet);
    },
    async inject(ctx) {
      ctx.victims.add('gw-1');
      await ctx.cluster.kill('gw-1', 'SIGKILL');
    },
    async restore(ctx) {
      await ctx.cluster.restart('gw-1');
    },
    async cleanup(ctx) {
      for (const f of ctx.extraFleets) {
        await f.close();
        await f.stop();
      }
    },
  },
];

/** The faults of the combined layout (gateways and `longlink logic` processes). */
export const FAULTS: Fault[] = [
  ...gatewayFaults(),
  nodeFault('sigkill-logic', 'a logic node is killed (SIGKILL): its shards move after their lease; pending batches are claimed', 'logic', 'SIGKILL'),
  nodeFault('sigterm-logic', 'a logic node stops gracefully (SIGTERM): it acks the batch in hand and releases its shards at once', 'logic', 'SIGTERM'),
  sigstopFault('sigstop-logic', 'a logic node is paused (SIGSTOP) in the middle of a write, past its lease, then resumed (SIGCONT): the other takes its shards; the zombie\'s write is refused (fenced)'),
  ...sharedFaults,
];

/**
 * The faults of the split layout (`--split`): the same gateway, Redis,
 * PostgreSQL, slow-consumer and crowd faults; the logic ones aimed at the
 * message process holding the watched conversation's send-path shard (the
 * other message process takes it over, with its push shards); and an outage
 * of the group and of the storage process each.
 */
export const SPLIT_FAULTS: Fault[] = [
  ...gatewayFaults(),
  nodeFault('sigkill-message', 'the message process holding the watched conversation\'s send-path shard is killed (SIGKILL): the other takes its send-path and push shards after their lease', 'logic', 'SIGKILL'),
  nodeFault('sigterm-message', 'that message process stops gracefully (SIGTERM): it acks the batch in hand and releases its shards at once', 'logic', 'SIGTERM'),
  sigstopFault('sigstop-message', 'that message process is paused (SIGSTOP) in the middle of a write, past its lease, then resumed (SIGCONT): the other takes its shards; the zombie\'s write is refused (fenced)'),
  serviceOutage('group', 'the group process is killed (SIGKILL) and started again after a few seconds: membership changes wait on its streams, messages go on'),
  serviceOutage('storage', 'the storage process is killed (SIGKILL) and started again after a few seconds: syncs, PushAcks and cursors wait on its streams, sends and pushes go on'),
  ...sharedFaults,
];

/** On a Redis Cluster (`--redis-cluster`): a master's failover instead of the restarts of one Redis. */
function onRedisCluster(faults: Fault[]): Fault[] {
  const at = faults.findIndex((f) => f.name.startsWith('redis-restart-'));
  return [...faults.slice(0, at), redisMasterFailover(), ...faults.slice(at).filter((f) => !f.name.startsWith('redis-restart-'))];
}

/** The faults of a layout. */
export function faultsFor(split: boolean, redisCluster = false): Fault[] {
  const faults = split ? SPLIT_FAULTS : FAULTS;
  return redisCluster ? onRedisCluster(faults) : faults;
}
