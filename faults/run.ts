// npm run faults [-- --quick] [--json] [--only name,name] [...]: a local
// cluster under steady traffic, one fault after another, and for each a row:
// what was acked, delivered, lost, duplicated or reordered (from the load
// processes' ledger), how long until every client was back online with
// traffic flowing, and the memory of the processes that survived it.
// The load also sends into a few groups whose membership changes, and makes
// HTTP business pushes; their deliveries are checked the same way (and a
// removed member must get nothing stored after its removal). With --split the
// logic tier runs as separate services (auth, message ×2, group, storage,
// risk), and the logic faults aim at its processes (faults.ts SPLIT_FAULTS).
// Progress goes to stderr; the table (or, with --json, one JSON document) to
// stdout. Exits 1 when a row lost, duplicated, reordered or leaked anything,
// left a send unacked, or failed to run. See faults/README.md.
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SPLIT, startCluster, type Cluster } from '../src/dev/cluster.js';
import { stopAll } from '../bench/lib/procs.js';
import { FAULTS, SHARDS, SPLIT_FAULTS, apiNodes, faultsFor, layoutOf, rssOf, settle, sleep, type Context, type Fault, type Options } from './faults.js';
import { Fleet, type Status } from './lib/fleet.js';
import { readTimelines } from './lib/groups.js';

const USAGE = `usage: npm run faults -- [options]
  --quick               a smaller run (fewer clients, a crowd of 2,000): a few minutes
  --json                print {"layout":"…","faults":[...]} on stdout (progress stays on stderr)
  --only a,b            run only these faults: ${FAULTS.map((f) => f.name).join(', ')}
                        (--split: ${SPLIT_FAULTS.map((f) => f.name).join(', ')})
  --split               the split layout: auth, message ×2, group, storage, risk processes instead of logic ones
  --redis-cluster       on a Redis Cluster (3 masters, 3 replicas) instead of one Redis: redis-master-failover
                        replaces the Redis restarts
  --message N           message processes of the split layout (default 2)
  --users N             clients sending steady 1:1 traffic (default 1500, quick 400)
  --rate N              messages per second in all (default 300, quick 150)
  --groups N            groups of 10 users sending into them, membership changing (default 5; 0: none)
  --group-rate N        group messages per second, all groups together (default 20, quick 10)
  --churn-ms N          a member removed or added back in each group every N ms (default 2000; 0: none)
  --http-rate N         HTTP business pushes per second, 5 conversations together (default 10, quick 5; 0: none)
  --crowd N             clients of reconnect-crowd (default 10000, quick 2000)
  --gateways N          gateway processes (default 3)
  --logic N             logic processes (default 2)
  --lease-ms N          shard lease (default 6000)
  --node-ttl-ms N       registry TTL of a node (default 8000)
  --appendfsync P       Redis AOF fsync policy of the cluster: everysec (default), always, no
  --routing R           targeted (default) or broadcast
  --dcs 2               the faults of two datacenters instead (faults/dc/run.ts): the link between them cut for 30 s
                        (--quick: 10 s), and all of one killed under load, failed over, back and handed its homes back;
                        in both acknowledgement modes (--ack replicated|local to run one)`;

function parseOptions(argv: string[]): Options {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}\n${USAGE}`);
    const [name, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    if (name === 'quick' || name === 'json' || name === 'help' || name === 'split' || name === 'redis-cluster') flags.set(name, 'true');
    else {
      const value = inline ?? argv[++i];
      if (value === undefined) throw new Error(`--${name} needs a value\n${USAGE}`);
      flags.set(name, value);
    }
  }
  if (flags.has('help')) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const known = new Set(['quick', 'json', 'only', 'users', 'rate', 'crowd', 'gateways', 'logic', 'lease-ms', 'node-ttl-ms', 'appendfsync', 'routing',
    'groups', 'group-rate', 'churn-ms', 'http-rate', 'split', 'message', 'redis-cluster']);
  for (const name of flags.keys()) if (!known.has(name)) throw new Error(`unknown option --${name}\n${USAGE}`);
  const quick = flags.has('quick');
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = flags.get(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}`);
    return n;
  };
  const split = flags.has('split');
  if (split && flags.has('logic')) throw new Error('--logic is for the combined layout; with --split, --message N sets the message processes');
  if (!split && flags.has('message')) throw new Error('--message N is for the split layout (--split)');
  const redisCluster = flags.has('redis-cluster');
  const only = flags.get('only')?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const name of only ?? []) {
    if (!faultsFor(split, redisCluster).some((f) => f.name === name)) {
      throw new Error(`no fault named ${name} in the ${split ? 'split' : 'combined'} layout${redisCluster ? ' on a Redis Cluster' : ''}\n${USAGE}`);
    }
  }
  const appendfsync = flags.get('appendfsync') ?? 'everysec';
  if (appendfsync !== 'everysec' && appendfsync !== 'always' && appendfsync !== 'no') throw new Error('--appendfsync must be everysec, always or no');
  const routing = flags.get('routing') ?? 'targeted';
  if (routing !== 'targeted' && routing !== 'broadcast') throw new Error('--routing must be targeted or broadcast');
  return {
    quick, json: flags.has('json'), only,
    users: int('users', quick ? 400 : 1500, 200, 15_000),
    rate: int('rate', quick ? 150 : 300, 1, 5000),
    groups: int('groups', 5, 0, 10),
    groupRate: int('group-rate', quick ? 10 : 20, 0, 500),
    churnMs: int('churn-ms', 2000, 0, 600_000),
    httpRate: int('http-rate', quick ? 5 : 10, 0, 200),
    crowd: int('crowd', quick ? 2000 : 10_000, 100, 30_000),
    gateways: int('gateways', 3, 2, 16),
    logic: split ? 0 : int('logic', 2, 2, 16),
    split,
    messages: split ? int('message', 2, 2, 10) : 0,
    redisCluster,
    leaseMs: int('lease-ms', 6000, 1000, 60_000),
    nodeTtlMs: int('node-ttl-ms', 8000, 1000, 60_000),
    appendfsync, routing,
    warmMs: quick ? 2000 : 3000,
    afterMs: quick ? 2000 : 4000,
  };
}

function progress(message: string): void {
  process.stderr.write(`[faults ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
  trace(`[faults] ${message}`);
}

/** A line in the run's log file (with the nodes' output). */
let trace: (line: string) => void = () => undefined;

export interface Row {
  fault: string;
  acked: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  recovery_s: number;
  /** Sends still not acked when the row ended (should be 0). */
  unacked: number;
  refused: number;
  /** Client reconnections during the row; sends written again (new connection or no ack in time). */
  reconnects: number;
  resent: number;
  /** Uplink batches the store refused from a node that had lost their shard (logged by the bus). */
  fenced: number;
  ack_p99_ms: number;
  /** The longest a send waited for its ack from the fault to recovery, s. */
  max_wait_s: number;
  /** Resident memory of the server processes that survived the fault, before it and after the row, MB. */
  rss_before_mb: number;
  rss_after_mb: number;
  /** Group traffic: messages acked, deliveries owed (members of each message's moment but its sender), lost, duplicated, reordered, and leaked (to a non-member). */
  g_acked: number;
  g_due: number;
  g_lost: number;
  g_dup: number;
  g_reord: number;
  leaked: number;
  /** HTTP business pushes answered (counted in acked and checked like 1:1 sends). */
  http: number;
  error?: string;
  [extra: string]: string | number | boolean | undefined;
}

/**
 * Not recovered: a client is offline, or a send has waited for its ack longer
 * than `waitLimitMs` (twice the longest wait seen before the fault, at least 2 s:
 * on a busy machine an ack can take a while without any fault).
 */
function disrupted(s: Status, waitLimitMs: number): boolean {
  return s.online < s.total || s.oldestWaitMs > waitLimitMs;
}

async function statusOf(fleets: Fleet[]): Promise<Status> {
  const all = await Promise.all(fleets.map((f) => f.status()));
  return all.reduce((a, b) => ({
    ...a,
    online: a.online + b.online, total: a.total + b.total, oldestWaitMs: Math.max(a.oldestWaitMs, b.oldestWaitMs),
    offlineForMs: Math.max(a.offlineForMs, b.offlineForMs), waiting: a.waiting + b.waiting,
    reconnects: a.reconnects + b.reconnects, resent: a.resent + b.resent,
  }));
}

/** Resident memory of the gateway and logic processes now running, by name (and pid, to tell a restarted one). */
function serverMemory(cluster: Cluster): Map<string, { pid: number; rss: number }> {
  const out = new Map<string, { pid: number; rss: number }>();
  for (const n of cluster.nodes) if (n.running && n.child.pid !== undefined) out.set(n.name, { pid: n.child.pid, rss: rssOf(n.child.pid) });
  return out;
}

const MB = 1024 * 1024;
/** Members of each group of the traffic (the owner, 8 other senders, and the one the churn removes and adds back). */
const GROUP_SIZE = 10;
/** Conversations of the HTTP business pushes. */
const HTTP_PAIRS = 5;
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

async function runRow(fault: Fault, phase: number, cluster: Cluster, fleet: Fleet, options: Options, fenced: () => number): Promise<Row> {
  const ctx: Context = { cluster, fleet, options, progress, note: {}, extraFleets: [], victims: new Set(), recoveryFrom: undefined };
  const fencedBefore = fenced();
  const row: Row = {
    fault: fault.name, acked: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0, recovery_s: 0, unacked: 0, refused: 0,
    reconnects: 0, resent: 0, fenced: 0, ack_p99_ms: 0, max_wait_s: 0, rss_before_mb: 0, rss_after_mb: 0, ...emptyExtras(),
  };
  const fleets = () => [fleet, ...ctx.extraFleets];
  // A process that ends without being this fault's victim is a failure (a crash).
  const crashed: string[] = [];
  for (const n of cluster.nodes) {
    if (n.running) void n.exited.then((code) => (ctx.victims.has(n.name) ? undefined : crashed.push(`${n.name} (${code})`)));
  }
  try {
    if (fault.prepare) {
      progress(`${fault.name}: preparing`);
      await fault.prepare(ctx);
    }
    await fleet.traffic(phase, options.rate, 64);
    let normalWaitMs = 0;
    for (const end = Date.now() + options.warmMs; Date.now() < end;) {
      normalWaitMs = Math.max(normalWaitMs, (await statusOf(fleets())).oldestWaitMs);
      await sleep(250);
    }
    const waitLimitMs = Math.max(2000, 2 * normalWaitMs);
    row.wait_limit_ms = waitLimitMs;
    const base = await statusOf(fleets());
    const memoryBefore = serverMemory(cluster);

    // Sample while the fault runs and until it is over.
    const samples: { at: number; bad: boolean; s: Status }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await statusOf(fleets()).catch(() => undefined); // a load process gone: the row fails below
        if (!s) {
          await sleep(250);
          continue;
        }
        samples.push({ at: Date.now(), bad: disrupted(s, waitLimitMs), s });
        trace(`[sample] ${fault.name} online ${s.online}/${s.total} oldest-wait ${s.oldestWaitMs} ms offline-for ${s.offlineForMs} ms waiting ${s.waiting}`);
        await sleep(250);
      }
    })();
    const t0 = Date.now();
    progress(`${fault.name}: injecting`);
    try {
      await fault.inject(ctx);
      const from = ctx.recoveryFrom ?? t0;
      // Recovered: every sample fine for longer than the wait limit (a stuck send would show within it).
      const deadline = Date.now() + 180_000;
      const windowMs = waitLimitMs + 1000;
      for (;;) {
        const recent = samples.filter((x) => x.at >= from && x.at >= Date.now() - windowMs);
        if (Date.now() - from >= windowMs && recent.length >= windowMs / 1000 && recent.every((x) => !x.bad)) break;
        if (Date.now() > deadline) throw new Error(`not recovered within 180 s: ${JSON.stringify(samples.at(-1)?.s)}`);
        await sleep(250);
      }
      const lastBad = samples.filter((x) => x.at >= from && x.bad).at(-1);
      row.recovery_s = lastBad ? round((lastBad.at - from) / 1000 + 0.25, 2) : 0;
      row.max_wait_s = round(Math.max(0, ...samples.filter((x) => x.at >= from).map((x) => x.s.oldestWaitMs)) / 1000, 2);
    } finally {
      sampling = false;
      await sampler;
    }
    progress(`${fault.name}: recovered in ${row.recovery_s} s`);
    if (fault.restore) await fault.restore(ctx);
    await sleep(options.afterMs);

    // Stop new sends; every waiting one must be acked; then every device syncs.
    await fleet.traffic(phase, 0, 64);
    const drainEnd = Date.now() + 60_000;
    while ((await statusOf(fleets())).waiting > 0 && Date.now() < drainEnd) await sleep(250);
    await sleep(1000);
    await Promise.all(fleets().map((f) => f.syncAll()));
    await sleep(500);
    const end = await statusOf(fleets());
    const timelines = fleet.groups.length > 0 ? await readTimelines(cluster.postgres.url, fleet.groups.map((g) => g.conversationId)) : undefined;
    const tally = await fleet.tally(phase, ctx.extraFleets, timelines);
    Object.assign(row, {
      acked: tally.acked, delivered: tally.delivered, lost: tally.lost, duplicated: tally.duplicated, reordered: tally.reordered,
      unacked: end.waiting, refused: tally.refused, reconnects: end.reconnects - base.reconnects, resent: end.resent - base.resent,
      ack_p99_ms: round(tally.ackP99Ms),
    });
    if (tally.lostSamples.length > 0) row.lost_samples = tally.lostSamples.join(' ');
    row.http = tally.http;
    if (tally.http > 0) {
      row.http_retries = tally.httpRetries;
      row.http_duplicate_answers = tally.httpDuplicateAnswers;
      if (tally.httpSeqMismatch > 0) row.http_seq_mismatch = tally.httpSeqMismatch;
    }
    const g = tally.groups;
    if (g) {
      Object.assign(row, { g_acked: g.acked, g_due: g.due, g_lost: g.lost, g_dup: g.duplicated, g_reord: g.reordered, leaked: g.leaked });
      row.g_delivered = g.delivered;
      row.group_ops = g.ops;
      if (g.opsLost > 0) row.group_ops_lost = g.opsLost;
      if (g.seqMismatch > 0) row.group_seq_mismatch = g.seqMismatch;
      if (g.samples.length > 0) row.group_samples = g.samples.join('; ');
    }
    if (tally.refused > 0) row.refused_codes = JSON.stringify(tally.refusedCodes);
    if (fault.cleanup) await fault.cleanup(ctx);
    // Memory of the survivors (same process before and after), once the row's load is gone.
    await sleep(1000);
    const memoryAfter = serverMemory(cluster);
    let before = 0;
    let after = 0;
    for (const [name, m] of memoryBefore) {
      const now = memoryAfter.get(name);
      if (ctx.victims.has(name) || !now || now.pid !== m.pid) continue;
      before += m.rss;
      after += now.rss;
    }
    row.rss_before_mb = round(before / MB);
    row.rss_after_mb = round(after / MB);
    if (crashed.length > 0) throw new Error(`exited unexpectedly: ${crashed.join(', ')}`);
  } catch (err) {
    row.error = (err as Error).message.slice(0, 500);
    progress(`${fault.name}: ERROR ${row.error}`);
    await fleet.traffic(phase, 0, 64).catch(() => undefined);
    for (const f of ctx.extraFleets) await f.stop().catch(() => undefined);
    // Leave the cluster whole for the next fault (a paused node resumes).
    for (const n of cluster.nodes) if (n.running) cluster.signal(n.name, 'SIGCONT');
    for (const n of cluster.nodes) if (!n.running) await cluster.restart(n.name).catch(() => undefined);
  }
  row.fenced = fenced() - fencedBefore;
  Object.assign(row, ctx.note);
  return row;
}

function emptyExtras(): Pick<Row, 'g_acked' | 'g_due' | 'g_lost' | 'g_dup' | 'g_reord' | 'leaked' | 'http'> {
  return { g_acked: 0, g_due: 0, g_lost: 0, g_dup: 0, g_reord: 0, leaked: 0, http: 0 };
}

function failed(r: Row): boolean {
  return r.error !== undefined || r.lost > 0 || r.duplicated > 0 || r.reordered > 0 || r.unacked > 0
    || r.g_lost > 0 || r.g_dup > 0 || r.g_reord > 0 || r.leaked > 0 || Number(r.group_ops_lost ?? 0) > 0;
}

function table(rows: Row[]): string {
  const cols: [string, (r: Row) => string][] = [
    ['fault', (r) => r.fault],
    ['acked', (r) => String(r.acked)],
    ['delivered', (r) => String(r.delivered)],
    ['lost', (r) => String(r.lost)],
    ['duplicated', (r) => String(r.duplicated)],
    ['reordered', (r) => String(r.reordered)],
    ['http', (r) => String(r.http)],
    ['g_acked', (r) => String(r.g_acked)],
    ['g_due', (r) => String(r.g_due)],
    ['g_lost', (r) => String(r.g_lost)],
    ['g_dup', (r) => String(r.g_dup)],
    ['g_reord', (r) => String(r.g_reord)],
    ['leaked', (r) => String(r.leaked)],
    ['recovery_s', (r) => r.recovery_s.toFixed(2)],
    ['reconnects', (r) => String(r.reconnects)],
    ['resent', (r) => String(r.resent)],
    ['unacked', (r) => String(r.unacked)],
    ['fenced', (r) => String(r.fenced)],
    ['max_wait_s', (r) => r.max_wait_s.toFixed(2)],
    ['ack_p99_ms', (r) => r.ack_p99_ms.toFixed(1)],
    ['rss_mb before→after', (r) => `${r.rss_before_mb}→${r.rss_after_mb}`],
    ['ok', (r) => (failed(r) ? 'FAIL' : 'ok')],
  ];
  const cells = [cols.map(([h]) => h), ...rows.map((r) => cols.map(([, f]) => f(r)))];
  const widths = cols.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => `| ${c.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join(' | ')} |`;
  const out = [line(cells[0]!), `|${widths.map((w, i) => (i === 0 ? ':' : '-') + '-'.repeat(w) + (i === 0 ? '-' : ':')).join('|')}|`];
  for (const c of cells.slice(1)) out.push(line(c));
  const std = new Set(['fault', 'acked', 'delivered', 'lost', 'duplicated', 'reordered', 'recovery_s', 'reconnects', 'resent', 'unacked',
    'fenced', 'ack_p99_ms', 'max_wait_s', 'rss_before_mb', 'rss_after_mb', 'refused', 'http', 'g_acked', 'g_due', 'g_lost', 'g_dup', 'g_reord', 'leaked']);
  for (const r of rows) {
    const extra = Object.entries(r).filter(([k, v]) => !std.has(k) && v !== undefined && !(k === 'refused' && v === 0));
    if (r.refused > 0) extra.unshift(['refused', r.refused]);
    if (extra.length > 0) out.push(`  ${r.fault}: ${extra.map(([k, v]) => `${k}=${String(v)}`).join(', ')}`);
  }
  return out.join('\n');
}

async function main(): Promise<number> {
  if (process.argv.includes('--dcs')) return (await import('./dc/run.js')).runDcFaults(process.argv.slice(2));
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    return 2;
  }
  const faults = faultsFor(options.split, options.redisCluster).filter((f) => !options.only || options.only.includes(f.name));
  const logPath = join(tmpdir(), `longlink-faults-${process.pid}.log`);
  const log = createWriteStream(logPath);
  trace = (line) => log.write(`${new Date().toISOString()} ${line}\n`);
  let fencedLines = 0;
  progress(`${faults.length} faults, ${options.users} clients at ${options.rate} msg/s, ${options.groups} groups of ${GROUP_SIZE} at `
    + `${options.groupRate} msg/s (membership change every ${options.churnMs} ms), ${options.httpRate} HTTP pushes/s, ${options.gateways} gateways, `
    + `${options.split ? `split layout (auth, ${options.messages} message, group, storage, risk)` : `${options.logic} logic nodes`}, lease ${options.leaseMs} ms, `
    + `Redis appendfsync ${options.appendfsync}; node logs in ${logPath}`);

  let cluster: Cluster | undefined;
  let stopping: Promise<void> | undefined;
  let cleaned = false;
  const shutdown = () => (stopping ??= (async () => {
    await stopAll().catch(() => undefined);
    await cluster?.stop().catch((err: unknown) => progress(`cluster stop failed: ${String(err)}`));
    cleaned = true;
    log.end();
  })());
  process.on('SIGINT', () => {
    progress('interrupted: stopping everything');
    void shutdown().finally(() => process.exit(130));
  });
  process.on('SIGTERM', () => void shutdown().finally(() => process.exit(143)));
  // While stopping, the row in progress fails in many ways: none of them may end us before the cleanup.
  process.on('unhandledRejection', (err) => {
    if (!stopping) progress(`unexpected: ${String(err)}`);
  });
  // Last resort (an exit before the cleanup finished): nothing is left running.
  process.on('exit', () => {
    if (!cluster || cleaned) return;
    for (const n of cluster.nodes) if (n.running) n.child.kill('SIGKILL');
    const redisPids = cluster.redisCluster ? cluster.redisCluster.nodes.map((n) => n.pid) : [cluster.redis.pid];
    for (const [pid, signal] of [...redisPids.map((pid) => [pid, 'SIGKILL'] as const), [cluster.postgres.pid, 'SIGQUIT'] as const]) {
      try {
        process.kill(pid, signal); // SIGQUIT: PostgreSQL's immediate shutdown also ends its backends
      } catch {
        /* already gone */
      }
    }
  });

  const rows: Row[] = [];
  let layout = options.split ? 'split' : 'combined';
  try {
    progress('starting Redis, PostgreSQL and the nodes');
    cluster = await startCluster({
      gateways: options.gateways, logic: options.logic, routing: options.routing, shards: SHARDS,
      services: options.split ? { ...SPLIT, message: options.messages } : undefined,
      leaseMs: options.leaseMs, nodeTtlMs: options.nodeTtlMs, appendfsync: options.appendfsync, durable: true, redisCluster: options.redisCluster,
      env: {
        // Every client comes from 127.0.0.1; the slow consumer is dropped past 256 KB unread.
        LONGLINK_LOGIN_ATTEMPTS_PER_MINUTE: '1000000',
        // ...and so does the crowd (10,000 at once): no per-address or pending-login cap for this load.
        LONGLINK_MAX_CONNECTIONS_PER_ADDRESS: '10000000',
        LONGLINK_MAX_PENDING_LOGINS: '10000000',
        LONGLINK_MAX_OUTBOUND_BYTES: String(256 * 1024),
        LONGLINK_LOG_LEVEL: 'warn',
        // The load makes groups of users who never wrote to each other.
        LONGLINK_GROUP_ADD_POLICY: 'anyone',
      },
      onLine: (node, line) => {
        if (line.includes('(fenced)')) fencedLines++;
        log.write(`${new Date().toISOString()} [${node}] ${line}\n`);
      },
    });
    layout = layoutOf(cluster, options);
    progress(`layout: ${layout}`);
    // Business pushes into 1:1 conversations that carry client traffic too (sender g sends to g + 1).
    const step = Math.floor(options.users / HTTP_PAIRS);
    const pairs = Array.from({ length: HTTP_PAIRS }, (_, i): [number, number] => [i * step + 2, (i * step + 3) % options.users]);
    const fleet = await Fleet.start({
      prefix: 'u', users: options.users, processes: options.quick ? 2 : 3, apiUrls: apiNodes(cluster).map((n) => n.httpUrl),
      tokenSecret: cluster.tokenSecret, transports: ['tcp', 'ws'], slow: true,
      groupRate: options.groups > 0 ? options.groupRate : 0, churnMs: options.churnMs,
      http: options.httpRate > 0 ? { adminKey: cluster.adminKey, pairs, rate: options.httpRate } : undefined,
    });
    let shown = 0;
    const c = await fleet.connect((n) => {
      if (Date.now() - shown < 1000) return;
      shown = Date.now();
      progress(`connected ${n}/${options.users + 1}`);
    });
    if (c.failed > 0) throw new Error(`${c.failed} clients could not connect: ${JSON.stringify(c.errors)}`);
    if (options.groups > 0) {
      const groups = await fleet.setupGroups(options.groups, GROUP_SIZE);
      progress(`created ${groups.length} groups: ${groups.map((g) => g.conversationId).join(' ')}`);
    }
    progress('warming up');
    await fleet.traffic(0, options.rate, 64);
    await sleep(options.warmMs);
    await settle(fleet);
    for (const [i, fault] of faults.entries()) {
      progress(`── ${fault.name} (${i + 1}/${faults.length}): ${fault.what}`);
      const row = await runRow(fault, i + 1, cluster, fleet, options, () => fencedLines);
      rows.push(row);
      progress(`${fault.name}: acked ${row.acked}, delivered ${row.delivered}, lost ${row.lost}, duplicated ${row.duplicated}, `
        + `reordered ${row.reordered}, http ${row.http}; groups: acked ${row.g_acked}, due ${row.g_due}, lost ${row.g_lost}, `
        + `duplicated ${row.g_dup}, reordered ${row.g_reord}, leaked ${row.leaked}; recovery ${row.recovery_s} s${row.error ? `, ERROR ${row.error}` : ''}`);
    }
  } catch (err) {
    progress(`harness error: ${(err as Error).stack ?? String(err)}`);
    rows.push({
      fault: 'harness', acked: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0, recovery_s: 0, unacked: 0, refused: 0,
      reconnects: 0, resent: 0, fenced: 0, ack_p99_ms: 0, max_wait_s: 0, rss_before_mb: 0, rss_after_mb: 0, ...emptyExtras(),
      error: (err as Error).message.slice(0, 500),
    });
  } finally {
    progress('stopping everything');
    await shutdown();
  }
  if (options.json) process.stdout.write(`${JSON.stringify({ layout, faults: rows })}\n`);
  else process.stdout.write(`layout: ${layout}\n${table(rows)}\n`);
  progress(`node logs: ${logPath}`);
  return rows.some(failed) ? 1 : 0;
}

main().then((code) => process.exit(code), (err: unknown) => {
  progress(`harness error: ${String(err)}`);
  process.exit(1);
});
