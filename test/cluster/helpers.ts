// Helpers for the distributed-mode tests: a real local cluster (the same
// launcher as `npm run cluster`: Redis with AOF and PostgreSQL on free ports,
// gateway and logic processes of the built binary) and SDK clients on it
// that keep a ledger of what they received.
import assert from 'node:assert/strict';
import { startCluster, type Cluster, type ClusterOptions } from '../../src/dev/cluster.js';
import { createClient, gatewayPicker, requestToken, type LonglinkClient, type ChatMessage, type SendResult } from '../../src/client/index.js';

export type { Cluster } from '../../src/dev/cluster.js';

export interface TestCluster extends Cluster {
  /** The last lines each node printed (for failure messages). */
  logs(node?: string): string;
  /** The last lines the nodes printed at info level and above (leases taken and lost, warnings, errors, anything not JSON). */
  warnings(): string;
}

/**
 * A cluster with short liveness times, so faults are noticed in about a
 * second: leases of 1.5 s, registry TTL of 1.5 s, 8 shards.
 */
export async function startTestCluster(options: Partial<ClusterOptions> & Pick<ClusterOptions, 'routing'>): Promise<TestCluster> {
  const lines: string[] = [];
  const cluster = await startCluster({
    gateways: 2,
    logic: 2,
    shards: 8,
    leaseMs: 1500,
    nodeTtlMs: 1500,
    durable: false,
    ...options,
    // Tests make groups of users who never wrote to each other: anyone may add anyone.
    env: { LONGLINK_GROUP_ADD_POLICY: 'anyone', LONGLINK_PING_INTERVAL_MS: '1000', LONGLINK_RATE_LIMIT: '5000', LONGLINK_RATE_BURST: '10000', ...options.env },
    onLine: (node, line) => {
      lines.push(`[${node}] ${line}`);
      if (lines.length > 2000) lines.splice(0, 1000);
    },
  });
  return Object.assign(cluster, {
    logs(node?: string) {
      return lines.filter((l) => node === undefined || l.startsWith(`[${node}]`)).slice(-60).join('\n');
    },
    warnings() {
      return lines.filter((l) => !/"level":(10|20),/.test(l)).slice(-80).join('\n');
    },
  });
}

export interface ClientOptions {
  /** Connect to this gateway (name, e.g. 'gw-2') only; otherwise pick a live one on every (re)connect. */
  gateway?: string;
  transport?: 'tcp' | 'ws';
  device?: string;
}

/** An SDK client on the cluster, with everything it received in `inbox`. */
export interface TestClient {
  client: LonglinkClient;
  inbox: ChatMessage[];
  /** Messages received in one conversation, in arrival order. */
  in(conversationId: string): ChatMessage[];
  close(): Promise<void>;
}

export async function connectClient(cluster: Cluster, user: string, options: ClientOptions = {}): Promise<TestClient> {
  const transport = options.transport ?? 'tcp';
  const device = options.device ?? 'd1';
  let url: string | ((avoid: string | undefined) => Promise<string>);
  if (options.gateway) {
    const gw = cluster.node(options.gateway);
    url = (transport === 'tcp' ? gw.tcpUrl : gw.wsUrl)!;
  } else {
    url = gatewayPicker(cluster.apiUrl(), transport);
  }
  const client = createClient({
    url,
    clientVersion: 'cluster-test',
    initialBackoffMs: 200,
    maxBackoffMs: 2000,
    resendAfterMs: 3000,
    // Any running logic node's API hands out tokens (the first may be dead).
    token: async () => (await requestToken(cluster.apiUrl(), cluster.adminKey, { user_id: user, device_id: device, platform: 'cli' })).token,
  });
  const inbox: ChatMessage[] = [];
  client.on('message', (m) => inbox.push(m));
  await client.connect();
  return {
    client,
    inbox,
    in: (conversationId) => inbox.filter((m) => m.conversationId === conversationId),
    close: () => client.close(),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until true; on timeout fails with `describe()` (evaluated then). */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms: ${describe()}`);
    await sleep(20);
  }
}

/**
 * The ledger check: `received` holds exactly the `expected` texts, once each,
 * in the order given, with seqs strictly increasing.
 */
export function assertExactlyOnceInOrder(received: readonly ChatMessage[], expected: readonly string[], what: string): void {
  const texts = received.map((m) => m.text);
  const seen = new Map<string, number>();
  for (const t of texts) seen.set(t, (seen.get(t) ?? 0) + 1);
  const duplicated = [...seen].filter(([, n]) => n > 1).map(([t]) => t);
  const missing = expected.filter((t) => !seen.has(t));
  assert.deepEqual({ duplicated: duplicated.slice(0, 10), missing: missing.slice(0, 10) }, { duplicated: [], missing: [] }, `${what}: ledger`);
  assert.deepEqual(texts, [...expected], `${what}: order`);
  for (let i = 1; i < received.length; i++) {
    assert.ok(received[i]!.seq > received[i - 1]!.seq, `${what}: seq ${received[i]!.seq} after ${received[i - 1]!.seq}`);
  }
}

/** Rejects when `promise` has not settled within `ms` (a send never acked fails the test instead of hanging it). */
export async function within<T>(promise: Promise<T>, ms: number, describe: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms: ${describe()}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `n` distinct message texts: prefix-1 … prefix-n. */
export function texts(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${i + 1}`);
}

export interface Outgoing {
  /** Every ack, in send order (rejects if any send is refused). */
  done: Promise<SendResult[]>;
  acked(): number;
  sent(): number;
}

/**
 * Pipeline `items` from one client without waiting for acks, `perTick` at a
 * time every `tickMs` (so the stream is still running when a fault hits).
 * `onAck` sees the running count of acks.
 */
export function sendAll(
  from: TestClient,
  items: readonly { to: string; text: string }[],
  options: { perTick?: number; tickMs?: number; onAck?: (acked: number) => void } = {},
): Outgoing {
  const perTick = options.perTick ?? items.length;
  const tickMs = options.tickMs ?? 0;
  let acked = 0;
  let sent = 0;
  const promises: Promise<SendResult>[] = [];
  const done = (async () => {
    for (let i = 0; i < items.length; i += perTick) {
      for (const item of items.slice(i, i + perTick)) {
        sent++;
        const p = from.client.send(item).then((r) => {
          acked++;
          options.onAck?.(acked);
          return r;
        });
        p.catch(() => undefined); // reported through `done`
        promises.push(p);
      }
      if (tickMs > 0 && i + perTick < items.length) await sleep(tickMs);
    }
    return Promise.all(promises);
  })();
  return { done, acked: () => acked, sent: () => sent };
}

/** The sender's acks: one conversation, seqs consecutive in send order (each message stored once, in order). */
export function assertAckedInOrder(acks: readonly SendResult[], conversationId: string, what: string): void {
  assert.ok(acks.length > 0, `${what}: no acks`);
  const other = acks.find((a) => a.conversationId !== conversationId);
  assert.equal(other, undefined, `${what}: an ack of another conversation`);
  const first = acks[0]!.seq;
  const bad = acks.findIndex((a, i) => a.seq !== first + i);
  assert.equal(bad, -1, `${what}: ack ${bad} has seq ${acks[bad]?.seq}, expected ${first + bad} (seqs ${acks.slice(Math.max(0, bad - 3), bad + 3).map((a) => a.seq).join(',')})`);
}
