// Prometheus metrics, one registry per running role (several roles can run in
// one process, as in tests), served at GET /metrics by every role.
//
// The hot path (a frame in, a push out) only adds to plain numbers in a Map:
// GatewayMetrics and LogicMetrics below. prom-client's counters and gauges
// are filled from those numbers when Prometheus scrapes (collect()), and the
// bus gauges (lag, pending entries, shards owned) are read from the engines
// then too. The push latency histogram is a bucket array of our own (a
// prom-client observe() costs ~0.6 µs, this ~0.02 µs); the store's, per call
// of a millisecond or more, are prom-client's.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type MetricValue } from 'prom-client';
import { errorName, type ErrorCode } from '../protocol/index.js';
import type { BusCounters } from '../engines/bus.js';

export type TransportName = 'tcp' | 'ws';

/** The configured limits whose breaches are counted (longlink_limit_breaches_total{limit}). */
export const LIMITS = ['frame_size', 'rate', 'user_rate', 'connections_per_user', 'login_attempts', 'group_size', 'groups_per_user', 'reads_queued',
  'connections_per_address', 'pending_logins'] as const;
export type LimitName = (typeof LIMITS)[number];

/** What the gateway reports: one call per event, each a Map update. */
export interface GatewayMetrics {
  /** A connection accepted (before login). */
  connectionOpened(transport: TransportName): void;
  /** A connection gone, for whatever reason (one call per connectionOpened). */
  connectionClosed(transport: TransportName): void;
  /** A login's outcome: 'ok', or the code it was refused with. */
  login(result: 'ok' | ErrorCode): void;
  /** A decoded client frame, by its body case ('send', 'pushAck', …; undefined counts as 'unknown'). */
  frameIn(type: string | undefined): void;
  /** Frames written to connections (a push to 100 devices is 100). */
  framesOut(n: number): void;
  /** A PushAck from a client (before they gather and go up). */
  pushAck(): void;
  /** Seconds from a message's server time (sentAtMs) to its write to connections; once per push frame. */
  pushLatency(seconds: number): void;
  /** An Error frame the gateway itself sent. */
  error(code: ErrorCode): void;
  /** A Kick the gateway sent, by its code. */
  kick(code: ErrorCode): void;
  limitBreach(limit: LimitName): void;
  /** The node binds its sessions again after missing part of the cluster (`check`: the pass after one). */
  rejoin(check: boolean): void;
  /** Users a rejoin looked up in the session registry. */
  rejoinLookups(users: number): void;
}

/** What logic reports. */
export interface LogicMetrics {
  /** An uplink batch handled, with its size. */
  batch(size: number): void;
  /** One request of a batch, by frame type ('send', 'sync', …; session events as 'session'). */
  request(type: string | undefined): void;
  /** An Error reply logic sent. */
  error(code: ErrorCode): void;
  limitBreach(limit: LimitName): void;
}

const noop = (): void => undefined;

/** For a gateway built without metrics (benchmarks, unit tests). */
export const noGatewayMetrics: GatewayMetrics = {
  connectionOpened: noop, connectionClosed: noop, login: noop, frameIn: noop, framesOut: noop, pushAck: noop,
  pushLatency: noop, error: noop, kick: noop, limitBreach: noop, rejoin: noop, rejoinLookups: noop,
};

export const noLogicMetrics: LogicMetrics = { batch: noop, request: noop, error: noop, limitBreach: noop };

/** What the bus holds right now, read at scrape time (see bus-stats.ts). Absent parts are not reported. */
export interface BusStats {
  /** Uplink entries per shard not yet read by logic's consumer group (memory bus: its one queue, shard "0"). */
  upLag?: Map<string, number>;
  /** Uplink entries per shard read by logic but not yet acked. */
  upPending?: Map<string, number>;
  /** Entries kept in this gateway's downlink streams ('own', 'broadcast'). */
  downLength?: Map<string, number>;
  /** Uplink shards this logic node holds the lease of. */
  shardsOwned?: number;
  /** Entries in the dead letters (cluster-wide for a distributed bus). */
  deadLetters?: number;
  /** Per uplink shard this logic node owns: seconds since the oldest entry not yet acked was added (0: none). */
  upOldestUnprocessedAge?: Map<string, number>;
  /** The configured stream max age per direction ('up', 'down'), seconds: past it entries are trimmed, read or not. */
  maxAgeSeconds?: Map<string, number>;
  /** The configured max bytes of one stream per direction. */
  maxBytes?: Map<string, number>;
  /** Redis memory of each stream this node trims (`up:3`, `down:gw-1`, `down:*`), bytes. */
  streamBytes?: Map<string, number>;
  /** Entries not yet handled per consumer group: each uplink service's, each committed-stream group's (Bus.consumerLag). */
  consumerLag?: Map<string, number>;
}

const SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];
/** Distinct label values one counter keeps; past them, new values count as 'other' (a bound on series). */
const MAX_LABEL_VALUES = 200;

/** Label value → count, added to on the hot path and copied into a prom-client metric at scrape time. */
class Tally<K extends string | number> {
  readonly counts = new Map<K | 'other', number>();
  constructor(seed: readonly K[] = []) {
    for (const k of seed) this.counts.set(k, 0);
  }
  add(key: K, n = 1): void {
    const had = this.counts.get(key);
    if (had !== undefined) this.counts.set(key, had + n);
    else if (this.counts.size < MAX_LABEL_VALUES) this.counts.set(key, n);
    else this.counts.set('other', (this.counts.get('other') ?? 0) + n);
  }
}

/** Risk control's events (src/risk): what the content rules did, the webhooks' calls, the risk service's actions. */
export interface RiskMetrics {
  /** A send refused, by rule id (block_words, a regex rule's id, links, before_send_webhook). */
  blocked(rule: string): void;
  /** A send stored masked, by rule id. */
  masked(rule: string): void;
  /** A webhook call, by hook (before-send, after-send, ...): its time (undefined: not timed), and why it failed if it did. */
  webhook(hook: string, seconds: number | undefined, failure?: string): void;
  /** An action the risk service took, by kind (flag, recall, mute, revoke). */
  action(kind: string): void;
}

/** What /metrics reads of a logic node's read queue (src/logic/read-queue.ts). */
export interface ReadQueueStats {
  readonly waiting: number;
  readonly counters: { readonly throttled: number; readonly overran: number };
}

export class Metrics {
  readonly registry = new Registry();
  readonly gateway: GatewayMetrics;
  readonly logic: LogicMetrics;
  readonly risk: RiskMetrics;
  private readonly storeLatency: Histogram<'op'>;
  private readonly pushNotifications: Histogram<'provider' | 'outcome'>;
  private readonly storeBatch: Histogram<'op'>;
  private readonly storeErrors = new Tally<string>();
  private busStats: (() => Promise<BusStats>) | undefined;
  private busCounters: BusCounters | undefined;
  private reads: ReadQueueStats | undefined;

  /** @param processMetrics add prom-client's default process metrics (CPU, memory, event loop lag). @default true */
  constructor(options: { processMetrics?: boolean } = {}) {
    const r = this.registry;
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: r });

    const connections = new Tally<TransportName>(['tcp', 'ws']);
    const logins = new Tally<'ok' | ErrorCode>(['ok']);
    const framesIn = new Tally<string>();
    const errors = new Tally<ErrorCode>();
    const kicks = new Tally<ErrorCode>();
    const breaches = new Tally<LimitName>(LIMITS);
    const requests = new Tally<string>();
    const totals = { framesOut: 0, pushAcks: 0, batches: 0, rejoinLookups: 0 };
    const rejoins = new Tally<'rejoin' | 'check'>(['rejoin', 'check']);
    const pushLatency = new FastHistogram(r, 'longlink_push_latency_seconds',
      'From a message\'s server time to its write to the connections holding its recipients', SECONDS);

    gauge(r, 'longlink_connections', 'Open client connections', 'transport', connections);
    counter(r, 'longlink_logins_total', 'Login attempts by result: ok, or the error code', 'result', logins, codeOrWord);
    counter(r, 'longlink_frames_in_total', 'Client frames received, by type', 'type', framesIn);
    total(r, 'longlink_frames_out_total', 'Frames written to client connections', () => totals.framesOut);
    total(r, 'longlink_push_acks_total', 'PushAcks received from clients', () => totals.pushAcks);
    counter(r, 'longlink_gateway_rejoins_total',
      'Times this gateway bound its sessions again after missing part of the cluster (rejoin), and the checks after one (check)', 'kind', rejoins);
    total(r, 'longlink_gateway_rejoin_lookups_total', 'Users this gateway looked up in the session registry to bind them again', () => totals.rejoinLookups);
    counter(r, 'longlink_errors_total', 'Error frames sent to clients, by code', 'code', errors, codeOrWord);
    counter(r, 'longlink_kicks_total', 'Kicks sent to clients, by reason code', 'code', kicks, codeOrWord);
    counter(r, 'longlink_limit_breaches_total', 'Requests refused by a configured limit, by limit', 'limit', breaches);
    total(r, 'longlink_logic_batches_total', 'Uplink batches handled by logic', () => totals.batches);
    counter(r, 'longlink_logic_requests_total', 'Uplink requests handled by logic, by type', 'type', requests);
    const reads = () => this.reads;
    new Gauge({
      name: 'longlink_reads_waiting', help: 'Reads waiting for their turn on this logic node (all users)', registers: [r],
      collect() {
        this.set(reads()?.waiting ?? 0);
      },
    });
    total(r, 'longlink_reads_throttled_total', 'Times a user\'s reads waited for its byte budget to refill', () => reads()?.counters.throttled ?? 0);
    total(r, 'longlink_reads_overran_total', 'Reads that ran past the deadline and gave their slot back', () => reads()?.counters.overran ?? 0);

    this.gateway = {
      connectionOpened: (t) => connections.add(t, 1),
      connectionClosed: (t) => connections.add(t, -1),
      login: (result) => logins.add(result),
      frameIn: (type) => framesIn.add(type ?? 'unknown'),
      framesOut: (n) => {
        totals.framesOut += n;
      },
      pushAck: () => {
        totals.pushAcks++;
      },
      pushLatency: (seconds) => pushLatency.observe(seconds > 0 ? seconds : 0),
      error: (code) => errors.add(code),
      kick: (code) => kicks.add(code),
      limitBreach: (limit) => breaches.add(limit),
      rejoin: (check) => rejoins.add(check ? 'check' : 'rejoin'),
      rejoinLookups: (users) => {
        totals.rejoinLookups += users;
      },
    };
    this.logic = {
      batch: () => {
        totals.batches++;
      },
      request: (type) => requests.add(type ?? 'unknown'),
      error: (code) => errors.add(code),
      limitBreach: (limit) => breaches.add(limit),
    };

    const blocked = new Tally<string>();
    const masked = new Tally<string>();
    const webhookFailures = new Tally<string>();
    const riskActions = new Tally<string>();
    counter(r, 'longlink_risk_blocked_total', 'Sends refused CONTENT_BLOCKED, by rule', 'rule', blocked);
    counter(r, 'longlink_risk_masked_total', 'Sends stored masked, by rule', 'rule', masked);
    new Counter({
      name: 'longlink_webhook_failures_total', help: 'Webhook calls that failed, by hook and reason (timeout, status, invalid, network)',
      labelNames: ['hook', 'reason'], registers: [r],
      collect() {
        this.reset();
        for (const [k, v] of webhookFailures.counts) {
          const [hook, reason] = k === 'other' ? ['other', 'other'] : k.split('\t');
          this.inc({ hook, reason }, v);
        }
      },
    });
    counter(r, 'longlink_risk_actions_total', 'Actions the risk service took, by kind', 'action', riskActions);
    const webhookLatency = new Histogram({
      name: 'longlink_webhook_latency_seconds', help: 'Webhook calls, by hook (before-send, after-send, after-group-change, after-recall)',
      labelNames: ['hook'], buckets: SECONDS, registers: [r],
    });
    this.risk = {
      blocked: (rule) => blocked.add(rule),
      masked: (rule) => masked.add(rule),
      webhook: (hook, seconds, failure) => {
        if (seconds !== undefined) webhookLatency.observe({ hook }, seconds);
        if (failure !== undefined) webhookFailures.add(`${hook}\t${failure}`);
      },
      action: (kind) => riskActions.add(kind),
    };

    this.pushNotifications = new Histogram({
      name: 'longlink_push_notifications_seconds', help: 'Push notifications sent, by provider and outcome: their time, retries included',
      labelNames: ['provider', 'outcome'], buckets: SECONDS, registers: [r],
    });

    this.storeLatency = new Histogram({
      name: 'longlink_store_latency_seconds', help: 'Store calls, by operation', labelNames: ['op'], buckets: SECONDS, registers: [r],
    });
    this.storeBatch = new Histogram({
      name: 'longlink_store_batch_size', help: 'Items per store write (messages per append, cursors per advance_delivered)',
      labelNames: ['op'], buckets: BATCH, registers: [r],
    });
    counter(r, 'longlink_store_errors_total', 'Store calls that failed, by operation', 'op', this.storeErrors);

    this.busGauges();
  }

  /** A store call finished (see InstrumentedStore). */
  storeCall(op: string, seconds: number, batch?: number): void {
    this.storeLatency.observe({ op }, seconds);
    if (batch !== undefined) this.storeBatch.observe({ op }, batch);
  }

  /** A push notification handed to a provider, by provider and outcome (delivered, refused, failed), with its time (retries included). */
  pushSent(provider: string, outcome: string, seconds: number): void {
    this.pushNotifications.observe({ provider, outcome }, seconds);
  }

  storeFailed(op: string): void {
    this.storeErrors.add(op);
  }

  /** Read the bus's state at each scrape (lag, pending, shards owned). A failing read leaves those series out (shards owned: 0). */
  watchBus(stats: () => Promise<BusStats>, counters?: BusCounters): void {
    this.busStats = memo(stats, 250);
    this.busCounters = counters;
  }

  /**
   * A committed-stream group's counters (kept with its acks, cluster-wide), as
   * longlink_consumer_handled_total{group, kind}, read at each scrape.
   */
  watchConsumerCounts(group: string, read: () => Promise<Map<string, number>>): void {
    const counts = memo(read, 250);
    new Gauge({
      name: 'longlink_consumer_handled_total',
      help: 'Committed messages a consumer group handled, by kind (messages, events), cluster-wide; kept in the same step as its acks, so exact across restarts',
      labelNames: ['group', 'kind'], registers: [this.registry],
      async collect() {
        let values: Map<string, number>;
        try {
          values = await counts();
        } catch {
          return;
        }
        this.reset();
        for (const [kind, v] of values) this.set({ group, kind }, v);
      },
    });
  }

  /**
   * The sync service (src/dc/sync.ts), per peer datacenter, read at each
   * scrape: entries of the peer's committed stream not copied here yet, how
   * far behind in seconds, messages copied, writes forwarded to their homes.
   */
  watchDatacenters(read: {
    lag?: () => Promise<Map<string, number>>;
    progress?: () => ReadonlyMap<string, { applied: number; filled: number; lagSeconds: number }>;
    forwarded?: () => { forwarded: number; timedOut: number };
    replication?: () => { confirmedByNotice: number; confirmedByAsking: number; unreplicated: number; failed: number };
    marks?: () => ReadonlyMap<string, { merged: number; upToMs: number }>;
  }): void {
    const r = this.registry;
    const { lag, progress, forwarded, replication, marks } = read;
    if (marks) {
      new Counter({
        name: 'longlink_dc_marks_copied_total', help: 'Read marks, delivered cursors and revocations copied here from a peer datacenter',
        labelNames: ['peer'], registers: [r],
        collect() {
          this.reset();
          for (const [peer, p] of marks()) this.inc({ peer }, p.merged);
        },
      });
      new Gauge({
        name: 'longlink_dc_marks_behind_seconds', help: "How far behind now the peer's marks are copied up to (its clock against this one's; absent before the first copy)",
        labelNames: ['peer'], registers: [r],
        collect() {
          this.reset();
          for (const [peer, p] of marks()) if (p.upToMs > 0) this.set({ peer }, Math.max(0, (Date.now() - p.upToMs) / 1000));
        },
      });
    }
    if (replication) {
      new Counter({
        name: 'longlink_dc_replicated_acks_total',
        help: 'Batches of writes under LONGLINK_DC_ACK=replicated, by outcome: notice or asked (another datacenter holds them), '
          + 'unreplicated (acked with no other datacenter serving), failed (not copied in time: handed again)',
        labelNames: ['outcome'], registers: [r],
        collect() {
          this.reset();
          const c = replication();
          this.inc({ outcome: 'notice' }, c.confirmedByNotice);
          this.inc({ outcome: 'asked' }, c.confirmedByAsking);
          this.inc({ outcome: 'unreplicated' }, c.unreplicated);
          this.inc({ outcome: 'failed' }, c.failed);
        },
      });
    }
    if (lag) {
      const entries = memo(lag, 250);
      new Gauge({
        name: 'longlink_dc_sync_lag_entries', help: "Entries of a peer datacenter's committed stream not copied here yet (absent while the peer is unreachable)",
        labelNames: ['peer'], registers: [r],
        async collect() {
          this.reset();
          for (const [peer, n] of await entries().catch(() => new Map<string, number>())) this.set({ peer }, n);
        },
      });
    }
    if (progress) {
      new Gauge({
        name: 'longlink_dc_sync_lag_seconds', help: 'From the last copied message\'s commit in its home datacenter to its copy here, seconds',
        labelNames: ['peer'], registers: [r],
        collect() {
          for (const [peer, p] of progress()) this.set({ peer }, p.lagSeconds);
        },
      });
      new Counter({
        name: 'longlink_dc_sync_copied_total', help: "Messages copied here from a peer datacenter (those read from its store to fill a gap included)",
        labelNames: ['peer'], registers: [r],
        collect() {
          this.reset();
          for (const [peer, p] of progress()) this.inc({ peer }, p.applied);
        },
      });
    }
    if (forwarded) {
      total(r, 'longlink_dc_forwarded_total', 'Writes forwarded to the home datacenter of their conversation', () => forwarded().forwarded);
      total(r, 'longlink_dc_forward_timeouts_total', 'Forwarded writes answered UNAVAILABLE: no reply from their home in time', () => forwarded().timedOut);
    }
  }

  /** Read the logic node's read queue at each scrape. */
  watchReads(queue: ReadQueueStats): void {
    this.reads = queue;
  }

  /** A gateway's large groups (src/gateway/groups.ts): what it keeps of their membership, read at each scrape. */
  watchLargeGroups(read: () => { groups: number; bytes: number; held: number; loadsAsked: number; dropped: number }): void {
    const r = this.registry;
    const g = (name: string, help: string, pick: (s: ReturnType<typeof read>) => number) => new Gauge({
      name, help, registers: [r],
      collect() {
        this.set(pick(read()));
      },
    });
    g('longlink_gateway_large_groups', 'Large groups whose membership this gateway keeps', (s) => s.groups);
    g('longlink_gateway_large_group_bytes', 'Estimated bytes of the large groups\' membership this gateway keeps', (s) => s.bytes);
    g('longlink_gateway_large_group_held', 'Large groups\' messages waiting for a member load or a gap', (s) => s.held);
    total(r, 'longlink_gateway_large_group_loads_total', 'Member loads this gateway asked for', () => read().loadsAsked);
    total(r, 'longlink_gateway_large_group_dropped_total', 'Large groups\' messages dropped unwritten (their devices sync them)', () => read().dropped);
  }

  /** The Prometheus text exposition. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private busGauges(): void {
    const r = this.registry;
    const stats = async (): Promise<BusStats> => {
      try {
        return (await this.busStats?.()) ?? {};
      } catch {
        return {}; // the engine does not answer: /readyz says so; the scrape still succeeds
      }
    };
    const perKey = (name: string, help: string, label: string, pick: (s: BusStats) => Map<string, number> | undefined) => {
      new Gauge({
        name, help, labelNames: [label], registers: [r],
        async collect() {
          const values = pick(await stats());
          this.reset();
          if (values) for (const [k, v] of values) this.set({ [label]: k }, v);
        },
      });
    };
    perKey('longlink_bus_up_lag', 'Uplink entries not yet read by logic, per shard (cluster-wide: the same on every logic node)', 'shard', (s) => s.upLag);
    perKey('longlink_bus_up_pending', 'Uplink entries read by logic but not yet acked, per shard (cluster-wide)', 'shard', (s) => s.upPending);
    perKey('longlink_bus_down_length', 'Entries kept in this gateway\'s downlink streams (own, broadcast)', 'stream', (s) => s.downLength);
    perKey('longlink_bus_oldest_unprocessed_age_seconds',
      'Age of the oldest uplink entry not yet acked, per shard this logic node owns; at longlink_bus_max_age_seconds{direction="up"} it is trimmed unprocessed',
      'shard', (s) => s.upOldestUnprocessedAge);
    perKey('longlink_bus_max_age_seconds', 'Stream entries older than this are trimmed, read or not, per direction (up, down)', 'direction', (s) => s.maxAgeSeconds);
    perKey('longlink_bus_max_bytes', 'Redis memory one stream may take before its oldest entries are trimmed, per direction (up, down)', 'direction', (s) => s.maxBytes);
    perKey('longlink_consumer_lag',
      'Entries not yet handled (read but not acked, or not read yet) per consumer group: each uplink service (message, presence, group, storage) and each committed-stream group (push, risk), cluster-wide',
      'group', (s) => s.consumerLag);
    perKey('longlink_bus_stream_bytes', 'Redis memory of each stream this node trims (its uplink shards; its downlink streams), after the last trim', 'stream', (s) => s.streamBytes);
    /** A gauge of one value from the stats, left out while the engine does not say. */
    const single = (name: string, help: string, pick: (s: BusStats) => number | undefined) => {
      new Gauge({
        name, help, registers: [r],
        async collect() {
          const value = pick(await stats());
          this.reset();
          if (value !== undefined) this.set(value);
        },
      });
    };
    single('longlink_bus_shards_owned', 'Uplink shards this logic node owns (0 while the bus cannot be read)', (s) => s.shardsOwned);
    single('longlink_dead_letters', 'Uplink entries set aside in the dead letters (see `longlink dead list`), cluster-wide', (s) => s.deadLetters);
    const moved = (name: string, help: string, pick: (c: BusCounters) => number) => {
      total(r, name, help, () => (this.busCounters ? pick(this.busCounters) : 0));
    };
    moved('longlink_dead_letters_total', 'Uplink entries this process moved to the dead letters', (c) => c.deadLettered);
    moved('longlink_bus_trimmed_unprocessed_total',
      'Uplink entries trimmed (age, bytes or length bound) before logic acked them, seen by this process: never acked, so their senders resend them',
      (c) => c.upTrimmedUnprocessed);
    moved('longlink_bus_down_trimmed_unread_total',
      'Downlink entries trimmed from a stream this process reads before it read them: their pushes and replies are lost (clients heal by timeout, gap and sync)',
      (c) => c.downTrimmedUnread);
    moved('longlink_bus_unknown_skipped_total', 'Downlink messages of a kind this process does not know (a newer publisher), skipped', (c) => c.unknownSkipped);
    moved('longlink_bus_up_published_total', 'Uplink messages this process published', (c) => c.upPublished);
    moved('longlink_bus_up_read_total', 'Uplink messages handed to this process\'s consumer', (c) => c.upRead);
    moved('longlink_bus_down_published_total', 'Downlink entries this process wrote', (c) => c.downPublished);
    moved('longlink_bus_down_read_total', 'Downlink messages this process read', (c) => c.downMessagesRead);
  }
}

function codeOrWord(k: string | number): string {
  return typeof k === 'number' ? errorName(k) : k;
}

/** A labelled counter filled from a tally at scrape time. */
function counter<K extends string | number>(
  r: Registry, name: string, help: string, label: string, tally: Tally<K>, labelOf: (k: K | 'other') => string = String,
): void {
  new Counter({
    name, help, labelNames: [label], registers: [r],
    collect() {
      this.reset();
      for (const [k, v] of tally.counts) this.inc({ [label]: labelOf(k) }, v);
    },
  });
}

/** A labelled gauge filled from a tally (of +1/-1) at scrape time. */
function gauge<K extends string>(r: Registry, name: string, help: string, label: string, tally: Tally<K>): void {
  new Gauge({
    name, help, labelNames: [label], registers: [r],
    collect() {
      for (const [k, v] of tally.counts) this.set({ [label]: k }, v);
    },
  });
}

/** An unlabelled counter read from a number at scrape time. */
function total(r: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name, help, registers: [r],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/**
 * An unlabelled histogram for the hot path: observe() is a bucket search and
 * three additions. Registered as a metric object of its own (what the
 * registry reads of a metric: name, help, type, get(), reset()).
 */
class FastHistogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(registry: Registry, private readonly name: string, private readonly help: string, private readonly bounds: readonly number[]) {
    this.counts = bounds.map(() => 0);
    const metric = {
      name, help, type: 'histogram', aggregator: 'sum',
      get: async () => this.get(),
      reset: () => this.reset(),
    };
    registry.registerMetric(metric as unknown as Histogram); // the registry only reads the fields above
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }

  private get() {
    const values: (MetricValue<'le'> & { metricName: string })[] = [];
    let cumulative = 0;
    this.bounds.forEach((le, i) => {
      cumulative += this.counts[i]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le }, value: cumulative });
    });
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }

  private reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

/** One call's result shared by the calls made within `ms` (one Redis round per scrape, not one per gauge). */
function memo<T>(fn: () => Promise<T>, ms: number): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    const now = Date.now();
    if (!last || now - last.at > ms) last = { at: now, value: fn() };
    return last.value;
  };
}
