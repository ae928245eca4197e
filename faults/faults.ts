// The faults of the suite. Each is injected into a running cluster while the
// load keeps sending; run.ts measures around it (ledger, recovery, memory).
// A fault may prepare (before the traffic's baseline), inject (the fault
// itself; recovery is measured from when it starts), restore (after
// recovery: start again what it killed) and clean up (after the ledger).
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { Cluster } from '../src/dev/cluster.js';
import type { AppendFsync } from '../src/dev/services.js';
import { Fleet } from './lib/fleet.js';

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
 * the shards back by then).
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
      }
      ctx.note.victim = victim;
      ctx.victims.add(victim);
      const started = Date.now();
      const exit = await ctx.cluster.kill(victim, signal);
      ctx.note.exit = String(exit);
      ctx.note.exit_s = Number(((Date.now() - started) / 1000).toFixed(2));
    },
    async restore(ctx) {
      await ctx.cluster.restart(victim);
      ctx.progress(`${victim} started again`);
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

export const FAULTS: Fault[] = [
  nodeFault('sigkill-gateway', 'a gateway is killed (SIGKILL): its clients reconnect to the others and sync', 'gateway', 'SIGKILL'),
  nodeFault('sigterm-gateway', 'a gateway stops gracefully (SIGTERM): it kicks its clients with SERVER_SHUTDOWN; they reconnect elsewhere', 'gateway', 'SIGTERM'),
  nodeFault('sigkill-logic', 'a logic node is killed (SIGKILL): its shards move after their lease; pending batches are claimed', 'logic', 'SIGKILL'),
  nodeFault('sigterm-logic', 'a logic node stops gracefully (SIGTERM): it acks the batch in hand and releases its shards at once', 'logic', 'SIGTERM'),
  {
    name: 'sigstop-logic',
    what: 'a logic node is paused (SIGSTOP) in the middle of a write, past its lease, then resumed (SIGCONT): the other takes its shards; the zombie\'s write is refused (fenced)',
    async inject(ctx) {
      const pauseMs = ctx.options.leaseMs * 2 + 1000;
      ctx.note.paused_s = pauseMs / 1000;
      ctx.note.caught_writing = await pauseWhileWriting(ctx, 'logic-1');
      ctx.recoveryFrom = Date.now(); // the pause that counts starts now
      await sleep(pauseMs);
      // PostgreSQL ends a transaction idle that long (PostgresStore's idleInTransactionMs), so its locks are free.
      ctx.note.zombie_transactions_at_resume = await writingTransactions(ctx, 'logic-1');
      ctx.cluster.signal('logic-1', 'SIGCONT');
    },
  },
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
        apiUrls: ctx.cluster.logics().map((n) => n.httpUrl), tokenSecret: ctx.cluster.tokenSecret, transports: ['tcp'],
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
