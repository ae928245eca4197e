// Attacks 2 and 3 of the security review, on a real cluster (the built
// binary, dist/: 2 gateways, 2 logic nodes, Redis with AOF, PostgreSQL), with
// the test cluster's liveness times (lease and registry TTL 1.5 s).
//
//   2. One user on gw-1 opens 300 conversations and fills one with 100
//      messages of 16 KB, then pipelines 200 reads on one connection
//      (150 ConversationsRequest asking for 1,000 conversations, 50
//      HistoryRequest limit 100, interleaved) and reads the replies. Honest
//      users on gw-2 (4 pairs, TCP and WebSocket) chat one message at a time:
//      their SendAck p99 stays < 1 s and their median within 4 × the baseline
//      median + 50 ms (baseline measured first, same test); nobody is kicked
//      (no honest connection on gw-2, nor a bystander pair on gw-1, is kicked
//      or closed, and no connection at all gets NODE_EXPIRED); every
//      pipelined read gets one reply (result or coded error) or the
//      attacker is closed with a code, within 20 s.
//   3. Redis memory. (a) 200 frames each padded with ~60 KB of unknown
//      protobuf fields (100 at the Frame level, 100 inside the body message):
//      Redis must not keep the padding (growth < a quarter of 200 × 60 KB).
//      (b) A user writes 120 HistoryRequest frames (limit 100, on a
//      conversation of 100 messages of 16 KB) in one write and never reads
//      (the socket is paused), on a new connection every second for 6 s:
//      Redis used_memory after the attack is < 50 MiB over before it (peak
//      printed). The attack stops early past 4 × that bound (it already failed).
//
// Run with the cluster built from the current sources (npm run build first).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { TokenService } from '../../src/auth/tokens.js';
import { ErrorCode, directConversationId, errorName } from '../../src/protocol/index.js';
import { RawClient } from '../helpers/raw.js';
import { startTestCluster, type TestCluster } from '../cluster/helpers.js';
import {
  Attacker, HonestTraffic, MiB, fmtStats, mib, paddedConversationsBody, paddedFrame, sleep, stats, trouble, usedMemory,
  type HonestPair,
} from './attacks.js';

const T = { timeout: 120_000 };
const PAIRS = 4;
const CONVERSATIONS = 300;
const BIG_MESSAGES = 100;
const TEXT_16K = 'x'.repeat(16 * 1024);
const PIPELINE = 200;
const ATTACK_DEADLINE_MS = 20_000;
const PADDED_FRAMES = 200;
const PAD_BYTES = 60 * 1024;
const HISTORY_FLOOD = 120;
const FLOOD_MS = 6000;
const REDIS_GROWTH_BOUND = 50 * MiB;

describe('attacks 2 and 3 (cluster): expensive reads and Redis memory', () => {
  let cluster: TestCluster;
  let redis: Redis;
  let tokens: TokenService;
  const clients: RawClient[] = [];
  const attackers: Attacker[] = [];

  before(async () => {
    cluster = await startTestCluster({
      routing: 'targeted',
      gateways: 2,
      logic: 2,
      // Honest receivers only receive: a 25 s ping interval keeps them from being evicted as silent.
      env: { LONGLINK_PING_INTERVAL_MS: '25000' },
    });
    redis = new Redis(cluster.redis.url);
    tokens = new TokenService(cluster.tokenSecret);
  });

  after(async () => {
    for (const a of attackers) a.close();
    for (const c of clients) c.close();
    redis?.disconnect();
    await cluster?.stop();
  });

  const token = async (user: string, device = 'd1') => (await tokens.issue(user, device, 'cli', 3600)).token;
  const gw = (name: 'gw-1' | 'gw-2', kind: 'tcp' | 'ws') => (kind === 'tcp' ? cluster.node(name).tcpUrl! : cluster.node(name).wsUrl!);

  async function login(user: string, url: string): Promise<RawClient> {
    const c = await RawClient.connect(url);
    clients.push(c);
    await c.login(await token(user));
    return c;
  }

  async function attacker(user: string, device = 'd1'): Promise<Attacker> {
    const a = await Attacker.open(gw('gw-1', 'tcp'), await token(user, device));
    attackers.push(a);
    return a;
  }

  async function pairs(tag: string, name: 'gw-1' | 'gw-2', n: number): Promise<HonestPair[]> {
    const out: HonestPair[] = [];
    for (let i = 0; i < n; i++) {
      const a = i % 2 === 0 ? 'tcp' : 'ws';
      const b = a === 'tcp' ? 'ws' : 'tcp';
      const sender = await login(`${tag}-a${i}`, gw(name, a));
      const receiver = await login(`${tag}-b${i}`, gw(name, b));
      out.push({ sender, receiver, to: `${tag}-b${i}`, name: `${tag}${i}-${a}` });
    }
    return out;
  }

  /** Sends from an attacker connection, pipelined (the gateway paces them), every one acked. */
  async function sends(a: Attacker, count: number, make: (i: number) => { toUser: string; text: string }): Promise<void> {
    let i = 0;
    const ids = a.pipeline(count, (id) => ({ case: 'send', value: { clientMsgId: `setup-${id}`, ...make(i++) } }));
    await a.until(() => a.answeredOrClosed(ids), 60_000);
    const acked = ids.filter((id) => a.replies.get(id)?.[0]?.kind === 'sendAck').length;
    assert.equal(acked, count, `setup sends acked: ${a.judge(ids, 'sendAck').summary}\n${cluster.logs()}`);
    for (const id of ids) a.replies.delete(id);
  }

  async function redisUsed(): Promise<number> {
    return usedMemory(await redis.info('memory'));
  }

  test(`2: ${PIPELINE} reads pipelined on gw-1 (lists of ${CONVERSATIONS} conversations, 16 KB history) while honest users chat on gw-2`, T, async (t) => {
    const mallory = await attacker('mallory');
    await sends(mallory, CONVERSATIONS, (i) => ({ toUser: `peer-${i}`, text: 'hi' }));
    await sends(mallory, BIG_MESSAGES, () => ({ toUser: 'sink', text: TEXT_16K }));
    const conversationId = directConversationId('mallory', 'sink');

    const honest = await pairs('h', 'gw-2', PAIRS);
    const bystanders = await pairs('by', 'gw-1', 1);
    const traffic = new HonestTraffic(honest);
    const bystanderTraffic = new HonestTraffic(bystanders);
    await traffic.rounds(5);
    traffic.reset();
    await traffic.rounds(25);
    const base = stats(traffic.send);
    const basePing = stats(traffic.ping);
    traffic.reset();

    const kindOf = new Map<number, string>();
    let n = 0;
    const t0 = Date.now();
    const ids = mallory.pipeline(PIPELINE, (id) => {
      const history = n++ % 4 === 3;
      kindOf.set(id, history ? 'historyResult' : 'conversationsResult');
      return history
        ? { case: 'history', value: { conversationId, limit: 100 } }
        : { case: 'conversations', value: { limit: 1000 } };
    });
    let settledAt = 0;
    const settled = mallory.until(() => mallory.answeredOrClosed(ids), ATTACK_DEADLINE_MS).then((ok) => {
      settledAt = Date.now();
      return ok;
    });
    await Promise.all([
      traffic.until(() => settledAt > 0, 20, ATTACK_DEADLINE_MS + 5000),
      bystanderTraffic.until(() => settledAt > 0, 5, ATTACK_DEADLINE_MS + 5000),
    ]);
    const inTime = await settled;
    const during = stats(traffic.send);
    const duringPing = stats(traffic.ping);
    const bystander = stats(bystanderTraffic.send);
    const verdict = mallory.judge(ids, (id) => kindOf.get(id) ?? '?');
    const lines = [
      `[cluster reads] honest (gw-2) SendAck baseline ${fmtStats(base)}; under attack ${fmtStats(during)}`,
      `[cluster reads] honest (gw-2) Pong baseline ${fmtStats(basePing)}; under attack ${fmtStats(duringPing)}; timeouts ${traffic.timeouts}`,
      `[cluster reads] bystander (gw-1) SendAck under attack ${fmtStats(bystander)}`,
      `[cluster reads] attacker: ${ids.length} pipelined, ${inTime ? `settled after ${settledAt - t0} ms` : `NOT settled within ${ATTACK_DEADLINE_MS} ms`}: ${verdict.summary}`,
    ];
    for (const l of lines) {
      console.log(l);
      t.diagnostic(l);
    }

    const problems: string[] = [];
    problems.push(...traffic.problems().map((p) => `honest (gw-2): ${p}`));
    problems.push(...bystanderTraffic.problems().map((p) => `bystander (gw-1): ${p}`));
    if (mallory.closingCode === ErrorCode.NODE_EXPIRED) problems.push('the attacker\'s gateway lost its registration (NODE_EXPIRED)');
    if (traffic.timeouts > 0) problems.push(`${traffic.timeouts} honest requests (SendAck or Pong) unanswered for ${traffic.replyTimeoutMs} ms`);
    if (during.p99 >= 1000) problems.push(`honest SendAck p99 under attack ${during.p99.toFixed(0)} ms >= 1000 ms`);
    const allowed = 4 * base.p50 + 50;
    if (during.p50 > allowed) problems.push(`honest SendAck median under attack ${during.p50.toFixed(1)} ms > 4 × ${base.p50.toFixed(1)} + 50 ms`);
    if (!inTime) problems.push(`attacker's requests not all settled within ${ATTACK_DEADLINE_MS} ms`);
    problems.push(...verdict.problems.slice(0, 5).map((p) => `attacker: ${p}`));
    mallory.close();
    assert.deepEqual(problems, [], `what users saw\n${cluster.logs().split('\n').slice(-15).join('\n')}`);
  });

  test(`3a: ${PADDED_FRAMES} frames padded with ${PAD_BYTES / 1024} KB of unknown fields do not end up in Redis`, T, async (t) => {
    const padder = await attacker('padder');
    await sleep(500);
    const before = await redisUsed();
    const ids: number[] = [];
    const payloads: Buffer[] = [];
    for (let i = 0; i < PADDED_FRAMES; i++) {
      const id = padder.takeId();
      ids.push(id);
      payloads.push(i % 2 === 0 ? paddedFrame(id, { case: 'conversations', value: {} }, PAD_BYTES) : paddedConversationsBody(id, PAD_BYTES));
    }
    // In writes of 20 frames (~1.2 MB each).
    for (let i = 0; i < payloads.length; i += 20) padder.writePayloads(payloads.slice(i, i + 20));
    const settled = await padder.until(() => padder.answeredOrClosed(ids), 20_000);
    await sleep(500);
    const afterBytes = await redisUsed();
    const growth = afterBytes - before;
    const verdict = padder.judge(ids, 'conversationsResult');
    const line = `[redis unknown fields] ${PADDED_FRAMES} frames × ${PAD_BYTES / 1024} KB padding (${mib(PADDED_FRAMES * PAD_BYTES)} in all): `
      + `used_memory ${mib(before)} → ${mib(afterBytes)} (${growth >= 0 ? '+' : ''}${mib(growth)}); ${settled ? 'settled' : 'NOT settled in 20 s'}: ${verdict.summary}`;
    console.log(line);
    t.diagnostic(line);
    padder.close();
    assert.ok(growth < (PADDED_FRAMES * PAD_BYTES) / 4,
      `Redis grew by ${mib(growth)} for ${PADDED_FRAMES} padded frames: the unknown fields were forwarded (bound ${mib((PADDED_FRAMES * PAD_BYTES) / 4)})`);
  });

  test(`3b: ${HISTORY_FLOOD} HistoryRequest (limit 100, 16 KB messages) per write, replies never read, for ${FLOOD_MS / 1000} s: Redis grows < 50 MiB`, T, async (t) => {
    const setup = await attacker('hoarder', 'setup');
    await sends(setup, BIG_MESSAGES, () => ({ toUser: 'sink2', text: TEXT_16K }));
    setup.close();
    const conversationId = directConversationId('hoarder', 'sink2');
    const honest = await pairs('h3', 'gw-2', 2);
    const traffic = new HonestTraffic(honest);
    await sleep(1000);
    const before = await redisUsed();
    let peak = before;
    let aborted = false;
    const sampler = setInterval(() => {
      void redisUsed().then((u) => {
        peak = Math.max(peak, u);
      }, () => undefined);
    }, 250);
    const t0 = Date.now();
    let rounds = 0;
    const closings: string[] = [];
    const flood = (async () => {
      while (Date.now() - t0 < FLOOD_MS) {
        if (peak - before > 4 * REDIS_GROWTH_BOUND) {
          aborted = true;
          break;
        }
        const a = await attacker('hoarder', `flood-${rounds}`);
        a.socket.pause(); // never read a reply
        a.pipeline(HISTORY_FLOOD, () => ({ case: 'history', value: { conversationId, limit: 100 } }));
        rounds++;
        for (let waited = 0; waited < 1000 && peak - before <= 4 * REDIS_GROWTH_BOUND; waited += 100) await sleep(100);
        closings.push(a.closed ? `closed(${a.closingCode === undefined ? '?' : errorName(a.closingCode)})` : 'open');
        a.close();
      }
    })();
    await Promise.all([flood, traffic.until(() => Date.now() - t0 >= FLOOD_MS || aborted, 5, FLOOD_MS + 10_000)]);
    await sleep(1000);
    clearInterval(sampler);
    const afterBytes = await redisUsed();
    peak = Math.max(peak, afterBytes);
    const honestStats = stats(traffic.send);
    const line = `[redis history flood] ${rounds} rounds × ${HISTORY_FLOOD} requests${aborted ? ' (stopped early: past 4× the bound)' : ''}: used_memory before ${mib(before)}, `
      + `peak ${mib(peak)} (+${mib(peak - before)}), after ${mib(afterBytes)} (+${mib(afterBytes - before)}); attacker connections after 1 s: ${closings.join(', ')}; `
      + `honest (gw-2) SendAck during ${fmtStats(honestStats)}`;
    console.log(line);
    t.diagnostic(line);
    const problems = traffic.problems().map((p) => `honest (gw-2): ${p}`);
    for (const c of clients) {
      const tr = trouble(c, 'a client');
      if (tr?.includes(`kick(${ErrorCode.NODE_EXPIRED})`)) problems.push(`NODE_EXPIRED: ${tr}`);
    }
    if (afterBytes - before >= REDIS_GROWTH_BOUND) problems.push(`Redis used_memory grew by ${mib(afterBytes - before)} (bound ${mib(REDIS_GROWTH_BOUND)})`);
    assert.deepEqual(problems, []);
  });
});
