// Faults of several datacenters (`npm run faults -- --dcs 2`, and
// test/cluster/datacenters.test.ts): a steady 1:1 and group chat between
// users of datacenters a and b while
//   - the link between them is cut for a while and healed;
//   - all of datacenter a (every process, its Redis and its PostgreSQL) is
//     killed, the operator fails its homes over to b, a's clients find b by
//     themselves, and later a is started again and takes its homes back.
// Each sender keeps a ledger of its acks, each receiver of what it got; the
// verdict counts acked messages never received (lost), received twice
// (duplicated) or out of seq order (reordered), and compares the two
// datacenters' stores table by table once everything settled.
import pg from 'pg';
import { createClient, gatewayPicker, requestToken, type ChatMessage, type LonglinkClient } from '../../src/client/index.js';
import { directConversationId } from '../../src/protocol/index.js';
import { directHome } from '../../src/dc/homes.js';
import type { Datacenters } from '../../src/dev/datacenters.js';

export interface DcVerdict {
  fault: string;
  /** The acknowledgement mode the datacenters ran. */
  ack: 'local' | 'replicated';
  sent: number;
  acked: number;
  lost: number;
  duplicated: number;
  reordered: number;
  /** Rows that differ between the datacenters' stores once settled (messages, members). */
  storeDiffs: number;
  /** dc-loss: acked messages lost, and the span of their acks before the kill (ms): the loss window. */
  lossWindowMs?: number;
  /** dc-loss: how long a's clients took from the kill to their first ack from b (ms). */
  recoveryMs?: number;
  /** dc-loss: what the hand-back reported (messages of a set aside as orphans, copied back). */
  failback?: { orphaned: number; copied: number; conversations: number };
  /** link-cut: datacenters whose homes another one took over during the cut (none: a cut is not a loss). */
  homesMoved?: string[];
  notes: string[];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Party {
  user: string;
  dc: string;
  client: LonglinkClient;
  inbox: ChatMessage[];
}

interface Ack {
  text: string;
  seq: number;
  atMs: number;
}

/** Clients of one run: each connects through its own datacenter's API first, the other's if it is gone. */
class Crowd {
  readonly parties: Party[] = [];

  constructor(private readonly dcs: Datacenters) {}

  apiOrder(dc: string): string[] {
    const own = this.dcs.dc(dc).cluster;
    return [own.apiUrl(), ...this.dcs.dcs.filter((d) => d.name !== dc).map((d) => d.cluster.apiUrl())];
  }

  async join(dc: string, user: string): Promise<Party> {
    const apis = this.apiOrder(dc);
    const client = createClient({
      url: gatewayPicker(apis, 'tcp'),
      clientVersion: 'dc-faults',
      initialBackoffMs: 200,
      maxBackoffMs: 1000,
      resendAfterMs: 3000,
      token: async () => {
        let failure: unknown;
        for (const api of apis) {
          try {
            return (await requestToken(api, this.dcs.adminKey, { user_id: user, device_id: 'd1', platform: 'cli' }, { timeoutMs: 3000 })).token;
          } catch (err) {
            failure = err;
          }
        }
        throw failure;
      },
    });
    const party: Party = { user, dc, client, inbox: [] };
    client.on('message', (m) => party.inbox.push(m));
    await client.connect();
    await client.sync();
    this.parties.push(party);
    return party;
  }

  async close(): Promise<void> {
    await Promise.all(this.parties.map((p) => p.client.close().catch(() => undefined)));
  }
}

/** A sender's steady stream: one message after another's ack, `gapMs` apart, until stopped or `max` sent. */
class Stream {
  readonly acks: Ack[] = [];
  readonly texts: string[] = [];
  private stopped = false;
  private done: Promise<void> | undefined;

  constructor(readonly from: Party, readonly to: { to?: string; conversationId?: string }, readonly tag: string, private readonly gapMs = 50, private readonly max = 2000) {}

  start(): void {
    this.done = (async () => {
      for (let i = 1; !this.stopped && i <= this.max; i++) {
        const text = `${this.tag}-${i}`;
        this.texts.push(text);
        const ack = await this.from.client.send({ ...this.to, text });
        this.acks.push({ text, seq: ack.seq, atMs: Date.now() });
        if (this.gapMs > 0) await sleep(this.gapMs);
      }
    })();
  }

  /** Stop after the message in flight is acked (the SDK resends it until it is). */
  async stop(timeoutMs = 60_000): Promise<void> {
    this.stopped = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }
}

/** What `receiver` got of `stream`'s messages, against what the stream had acked. */
function ledger(stream: Stream, receiver: Party, conversationId: string): { lost: string[]; duplicated: number; reordered: number } {
  const got = receiver.inbox.filter((m) => m.conversationId === conversationId && m.text.startsWith(`${stream.tag}-`));
  const counts = new Map<string, number>();
  for (const m of got) counts.set(m.text, (counts.get(m.text) ?? 0) + 1);
  const lost = stream.acks.filter((a) => !counts.has(a.text)).map((a) => a.text);
  const duplicated = [...counts.values()].filter((n) => n > 1).length;
  let reordered = 0;
  for (let i = 1; i < got.length; i++) if (got[i]!.seq <= got[i - 1]!.seq) reordered++;
  // The order they were sent in: a later message received before an earlier one is reordered too.
  const index = new Map(stream.texts.map((t, i) => [t, i]));
  for (let i = 1; i < got.length; i++) if ((index.get(got[i]!.text) ?? 0) < (index.get(got[i - 1]!.text) ?? 0)) reordered++;
  return { lost, duplicated, reordered };
}

/** Rows of these conversations that differ between the two datacenters' stores. */
async function storeDiffs(dcs: Datacenters, conversations: readonly string[]): Promise<{ diffs: number; detail: string[] }> {
  const read = async (dc: string) => {
    const db = new pg.Client({ connectionString: dcs.dc(dc).cluster.postgres.url });
    await db.connect();
    try {
      const m = await db.query<{ row: string }>(`SELECT conversation_id || ' ' || seq || ' ' || server_msg_id || ' ' || text || ' ' || coalesce(event, '') || ' ' || coalesce(recalled_by, '') AS row
        FROM messages WHERE conversation_id = ANY($1) ORDER BY conversation_id, seq`, [conversations]);
      const g = await db.query<{ row: string }>(`SELECT conversation_id || ' ' || user_id || ' ' || role || ' ' || joined_seq || ' ' || coalesce(left_seq::text, '-') || ' ' || muted AS row
        FROM members WHERE conversation_id = ANY($1) ORDER BY conversation_id, user_id`, [conversations]);
      return [...m.rows.map((r) => `m ${r.row}`), ...g.rows.map((r) => `g ${r.row}`)];
    } finally {
      await db.end();
    }
  };
  const [a, b] = await Promise.all([read('a'), read('b')]);
  const inB = new Set(b);
  const inA = new Set(a);
  const detail = [...a.filter((r) => !inB.has(r)).map((r) => `only a: ${r}`), ...b.filter((r) => !inA.has(r)).map((r) => `only b: ${r}`)];
  return { diffs: detail.length, detail: detail.slice(0, 10) };
}

/** Wait until every stream's acked messages reached its receivers and the stores agree (or the time is up). */
async function settle(dcs: Datacenters, pairs: readonly { stream: Stream; receivers: Party[]; conversationId: string }[], timeoutMs: number, compareStores = true): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const conversations = [...new Set(pairs.map((p) => p.conversationId))];
  while (Date.now() < deadline) {
    const received = pairs.every((p) => p.receivers.every((r) => ledger(p.stream, r, p.conversationId).lost.length === 0));
    if (received && (!compareStores || (await storeDiffs(dcs, conversations)).diffs === 0)) return;
    await sleep(250);
  }
}

/** Users x (in a) and y (in b) of a 1:1 conversation homed in `home`. */
function pairHomedIn(home: string, tag: string): [string, string] {
  for (let i = 0; i < 1000; i++) {
    const x = `${tag}-a${i}`;
    const y = `${tag}-b${i}`;
    if (directHome(directConversationId(x, y), ['a', 'b']) === home) return [x, y];
  }
  throw new Error('no pair found');
}

interface Setup {
  crowd: Crowd;
  pairs: { stream: Stream; receivers: Party[]; conversationId: string }[];
}

/**
 * Two 1:1 conversations (one homed in each datacenter), both ways, and a
 * group homed in a whose owner (in a) writes to members in a and in b.
 */
async function chatters(dcs: Datacenters, tag: string, gapMs: number): Promise<Setup> {
  const crowd = new Crowd(dcs);
  const pairs: Setup['pairs'] = [];
  for (const home of ['a', 'b']) {
    const [x, y] = pairHomedIn(home, `${tag}${home}`);
    const px = await crowd.join('a', x);
    const py = await crowd.join('b', y);
    const conversationId = directConversationId(x, y);
    pairs.push({ stream: new Stream(px, { to: y }, `${x}>${y}`, gapMs), receivers: [py], conversationId });
    pairs.push({ stream: new Stream(py, { to: x }, `${y}>${x}`, gapMs), receivers: [px], conversationId });
  }
  const owner = await crowd.join('a', `${tag}-owner`);
  const near = await crowd.join('a', `${tag}-near`);
  const far = await crowd.join('b', `${tag}-far`);
  const group = await owner.client.createGroup(`${tag} group`, [near.user, far.user]);
  // The member in b writes too once the group reached b (its writes are forwarded to a).
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const info = await far.client.conversations().catch(() => undefined);
    if (info?.some((c) => c.conversationId === group.conversationId)) break;
    await sleep(200);
  }
  pairs.push({ stream: new Stream(owner, { conversationId: group.conversationId }, `${tag}-owner-says`, gapMs), receivers: [near, far], conversationId: group.conversationId });
  pairs.push({ stream: new Stream(far, { conversationId: group.conversationId }, `${tag}-far-says`, gapMs), receivers: [owner, near], conversationId: group.conversationId });
  return { crowd, pairs };
}

function verdictOf(fault: string, ack: DcVerdict['ack'], setup: Setup, diffs: { diffs: number; detail: string[] }): DcVerdict {
  let lost = 0;
  let duplicated = 0;
  let reordered = 0;
  const notes: string[] = [];
  for (const p of setup.pairs) {
    for (const r of p.receivers) {
      const l = ledger(p.stream, r, p.conversationId);
      lost += l.lost.length;
      duplicated += l.duplicated;
      reordered += l.reordered;
      if (l.lost.length > 0) notes.push(`${r.user} never got ${l.lost.slice(0, 3).join(', ')}${l.lost.length > 3 ? ` (+${l.lost.length - 3})` : ''}`);
    }
  }
  notes.push(...diffs.detail);
  return {
    fault, ack,
    sent: setup.pairs.reduce((n, p) => n + p.stream.texts.length, 0),
    acked: setup.pairs.reduce((n, p) => n + p.stream.acks.length, 0),
    lost, duplicated, reordered, storeDiffs: diffs.diffs, notes,
  };
}

/** b's sync process SIGKILLed under load and started again: b ends with every message once, no gap. */
export async function syncKill(dcs: Datacenters, ack: DcVerdict['ack'], log: (line: string) => void = () => undefined): Promise<DcVerdict> {
  const setup = await chatters(dcs, `sync${ack[0]}`, 50);
  const b = dcs.dc('b').cluster;
  try {
    for (const p of setup.pairs) p.stream.start();
    await sleep(2000);
    const sync = b.ofRole('sync')[0]!;
    log(`SIGKILL ${sync.name}`);
    await b.kill(sync.name, 'SIGKILL');
    await sleep(2000);
    await b.restart(sync.name);
    log(`${sync.name} started again`);
    await sleep(3000);
    await Promise.all(setup.pairs.map((p) => p.stream.stop()));
    await settle(dcs, setup.pairs, 60_000);
    return verdictOf('sync-kill', ack, setup, await storeDiffs(dcs, [...new Set(setup.pairs.map((p) => p.conversationId))]));
  } finally {
    await setup.crowd.close();
  }
}

/** The link between a and b cut for `cutMs`, then healed: both sides converge, nothing acked is lost. */
export async function linkCut(dcs: Datacenters, ack: DcVerdict['ack'], cutMs: number, log: (line: string) => void = () => undefined): Promise<DcVerdict> {
  const setup = await chatters(dcs, 'cut', 100);
  try {
    for (const p of setup.pairs) p.stream.start();
    await sleep(2000);
    log(`cutting the link between a and b for ${cutMs} ms`);
    dcs.cut('a', 'b');
    await sleep(cutMs);
    dcs.heal('a', 'b');
    log('link healed');
    await sleep(5000);
    await Promise.all(setup.pairs.map((p) => p.stream.stop()));
    await settle(dcs, setup.pairs, 60_000);
    const diffs = await storeDiffs(dcs, [...new Set(setup.pairs.map((p) => p.conversationId))]);
    const verdict = verdictOf(`link-cut-${Math.round(cutMs / 1000)}s`, ack, setup, diffs);
    // Each side still serves its own homes: with a witness, the other saw their leases renewed all along.
    verdict.homesMoved = [];
    for (const d of dcs.dcs) {
      const status = await (await fetch(`${d.cluster.apiUrl()}/api/v1/dc`, { headers: { authorization: `Bearer ${dcs.adminKey}` } })).json() as
        { homes: Record<string, { served_by: string }> };
      for (const [home, r] of Object.entries(status.homes)) {
        if (r.served_by !== home && !verdict.homesMoved.includes(home)) verdict.homesMoved.push(home);
      }
    }
    return verdict;
  } finally {
    await setup.crowd.close();
  }
}

async function admin(dcs: Datacenters, api: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${api}${path}`, {
    method: 'POST', headers: { authorization: `Bearer ${dcs.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body), signal: AbortSignal.timeout(120_000),
  });
  const json = await res.json() as Record<string, unknown>;
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * All of a killed under load (its processes SIGKILLed, its Redis SIGKILLed,
 * its PostgreSQL stopped at once, without a checkpoint); the operator fails
 * a's homes over to b; a's clients reconnect to b by themselves and go on;
 * later a is started again, catches up, and takes its homes back.
 */
/**
 * All of datacenter a killed under load. `failover`: `operator` fails a over
 * to b by command a second later; `witness`, b takes a's homes over on its
 * own once a's lease at the witness ran out (the datacenters need one).
 */
export async function dcLoss(dcs: Datacenters, ack: DcVerdict['ack'], log: (line: string) => void = () => undefined, failover: 'operator' | 'witness' = 'operator'): Promise<DcVerdict> {
  const setup = await chatters(dcs, `loss${ack[0]}`, 50);
  const a = dcs.dc('a').cluster;
  const b = dcs.dc('b').cluster;
  try {
    for (const p of setup.pairs) p.stream.start();
    await sleep(3000);
    log('killing every process of datacenter a, its Redis and its PostgreSQL');
    const killedAt = Date.now();
    await Promise.all(a.nodes.filter((n) => n.running).map((n) => a.kill(n.name, 'SIGKILL')));
    await a.redis.kill();
    await a.postgres.kill();
    if (failover === 'operator') {
      await sleep(1000);
      log('failing a\'s homes over to b');
      await admin(dcs, b.apiUrl(), '/api/v1/dc/failover', { dc: 'a' });
    } else {
      log('waiting for b to take a\'s homes over on its own (a\'s lease at the witness runs out)');
    }
    // a's clients, on b now, go on for a while.
    const fromA = setup.pairs.filter((p) => p.stream.from.dc === 'a').map((p) => p.stream);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !fromA.every((s) => s.acks.some((x) => x.atMs > killedAt))) await sleep(100);
    const recoveryMs = Math.max(...fromA.map((s) => (s.acks.find((x) => x.atMs > killedAt)?.atMs ?? Date.now()) - killedAt));
    await sleep(4000);
    await Promise.all(setup.pairs.map((p) => p.stream.stop()));
    await settle(dcs, setup.pairs, 30_000, false); // a's store is down
    const verdict = verdictOf(failover === 'witness' ? 'dc-loss-auto' : 'dc-loss', ack, setup, { diffs: 0, detail: [] });
    verdict.recoveryMs = recoveryMs;
    // The loss window: from the first lost message's ack to the kill.
    const lostAcks = setup.pairs.flatMap((p) => p.stream.acks.filter((x) => p.receivers.some((r) => ledger(p.stream, r, p.conversationId).lost.includes(x.text))));
    verdict.lossWindowMs = lostAcks.length === 0 ? 0 : killedAt - Math.min(...lostAcks.map((x) => x.atMs));
    // a comes back: its engines, then its processes; then it takes its homes back.
    log('starting datacenter a again');
    await a.redis.start();
    await a.postgres.start();
    await Promise.all(a.nodes.map((n) => a.restart(n.name)));
    await sleep(3000);
    log('handing a\'s homes back');
    const back = await admin(dcs, b.apiUrl(), '/api/v1/dc/failback', { dc: 'a' });
    verdict.failback = { orphaned: Number(back.orphaned), copied: Number(back.copied), conversations: Number(back.conversations) };
    const conversations = [...new Set(setup.pairs.map((p) => p.conversationId))];
    let diffs = await storeDiffs(dcs, conversations);
    for (const until = Date.now() + 30_000; diffs.diffs > 0 && Date.now() < until;) {
      await sleep(500);
      diffs = await storeDiffs(dcs, conversations);
    }
    verdict.storeDiffs = diffs.diffs;
    verdict.notes.push(...diffs.detail);
    return verdict;
  } finally {
    await setup.crowd.close();
  }
}
